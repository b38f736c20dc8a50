//! placeholder
pub mod command;
pub mod fs;

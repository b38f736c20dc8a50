//! placeholder
pub mod command;
pub mod fs;
pub mod sandbox;

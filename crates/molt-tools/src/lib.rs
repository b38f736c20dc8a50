//! placeholder
pub mod command;
pub mod fs;
pub mod html;
pub mod sandbox;

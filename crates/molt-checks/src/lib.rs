//! The checks behind `molt doctor`, `molt security audit` and `molt gateway check`. Each
//! takes a resolved [`molt_config::Context`] (and a plain option struct) and returns a
//! report; the CLI prints it. Host I/O goes through molt-host, parsing through molt-audit.

pub mod audit;
pub mod doctor;
pub mod preflight;

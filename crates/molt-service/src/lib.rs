//! molt as a service: the install layout (`versions/`, `current`), the systemd user unit
//! with its version labels, and `systemctl --user`. Used by `molt install`,
//! `molt service ...`, and later by update and doctor.

pub mod layout;
pub mod systemctl;
pub mod transient;
pub mod unit;
pub mod update_lock;

/// A service-management error, saying what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("systemctl --user {args} failed: {message}")]
    Systemctl { args: String, message: String },
    #[error("{0}")]
    Conflict(String),
}

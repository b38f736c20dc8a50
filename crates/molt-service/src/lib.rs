//! molt as a service: the install layout (`versions/`, `current`), the systemd user unit
//! with its version labels, and `systemctl --user`; for one profile, installing it, writing
//! its unit and reporting its status. Used by `molt install`, `molt service ...`, the updater
//! and doctor.

pub mod install;
pub mod layout;
pub mod logs;
pub mod status;
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
    /// The environment lacks what the install needs (HOME): fixed by the caller's setup, as a
    /// config error is.
    #[error("{0}")]
    Setup(String),
    /// The profile has no installed version yet.
    #[error("{0}")]
    NotInstalled(String),
}

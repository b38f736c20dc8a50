//! How an update command fails, and with which exit code at the CLI.

/// An update that could not start, or a job that ended badly.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The config or the request cannot drive an update (a config error at the CLI).
    #[error("{0}")]
    Config(String),
    /// Something failed on the way.
    #[error("{0}")]
    Failed(String),
    /// The job reached a final state whose report exits with `code`.
    #[error("{message}")]
    Ended { code: i32, message: String },
}

impl From<molt_service::ServiceError> for UpdateError {
    fn from(e: molt_service::ServiceError) -> Self {
        match e {
            molt_service::ServiceError::Setup(m) => Self::Config(m),
            other => Self::Failed(other.to_string()),
        }
    }
}

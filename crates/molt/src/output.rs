//! What every command shares for output: the failure that becomes the exit code and the
//! message on stderr, JSON printing, durations for people.

use molt_client::ClientError;
use molt_gateway::EXIT_CONFIG;
use molt_service::ServiceError;
use molt_update::UpdateError;
use serde_json::Value;

/// A command failure: the exit code and what to tell the user.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    /// A configuration error: exit 78 (EX_CONFIG).
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_CONFIG,
            message: message.into(),
        }
    }

    /// Any other failure: exit 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::failed(message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::failed(e.to_string())
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Setup(m) => Self::config(m),
            other => Self::failed(other.to_string()),
        }
    }
}

impl From<UpdateError> for Failure {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::Config(m) => Self::config(m),
            UpdateError::Failed(m) => Self::failed(m),
            UpdateError::Ended { code, message } => Self { code, message },
        }
    }
}

/// Prints `v` as pretty JSON on stdout, keys sorted (through `Value`, as the gateway's own
/// answers print).
pub fn print_json(v: &impl serde::Serialize) {
    let v = serde_json::to_value(v).unwrap_or_else(|e| Value::String(e.to_string()));
    println!(
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    );
}

/// `42s`, `3m5s`, `2h10m`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

//! Model providers for molt's agent: one streamed call of an OpenAI-compatible chat
//! completions API or the Anthropic Messages API, with timeouts and retries.
//!
//! The gateway builds one [`Provider`] per `[models.providers.<name>]` at start and calls
//! [`Provider::stream`] once per model step. Dropping the returned future closes the HTTP
//! stream at once: that is how a turn is aborted.

use molt_config::{ProviderApi, ProviderConfig};
use molt_protocol::transcript::{AssistantMessage, Message, Usage};
use serde_json::Value;

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// A JSON Schema object for the arguments.
    pub parameters: Value,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct CallRequest<'a> {
    /// The model id as the provider knows it (`fake-1`).
    pub model: &'a str,
    pub max_tokens: u64,
    pub system: &'a str,
    /// The conversation, oldest first. `System` markers are skipped.
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
}

/// What a call reports while it streams.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The request failed in a retryable way before any output; the call waits `delay_ms`
    /// and tries again.
    Retrying {
        attempt: u32,
        max_retries: u32,
        delay_ms: u64,
        reason: String,
    },
    /// New assistant text.
    TextDelta(String),
    /// The model began a tool call.
    ToolCallStarted { id: String, name: String },
    /// Usage as reported so far.
    Usage(Usage),
}

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The prompt is too long for the model (HTTP 400 `context_length_exceeded` and kin).
    ContextLength,
    /// 429 after every retry.
    RateLimit,
    /// Connect, first byte, idle gap or total time ran out.
    Timeout,
    /// 401/403: the key is wrong.
    Auth,
    /// The stream could not be parsed.
    Malformed,
    /// The connection dropped, or could not be made, after every retry.
    Connection,
    /// Any other HTTP error.
    Http,
}

impl ModelErrorKind {
    /// The chat event's `errorKind`: `context_length`, `rate_limit`, `timeout` or `unknown`.
    pub fn error_kind(self) -> &'static str {
        match self {
            Self::ContextLength => "context_length",
            Self::RateLimit => "rate_limit",
            Self::Timeout => "timeout",
            _ => "unknown",
        }
    }
}

/// A failed call. The message never contains the API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub kind: ModelErrorKind,
    pub message: String,
    pub http_status: Option<u16>,
    /// Whether output had already streamed when it failed (then a retry would repeat it).
    pub after_output: bool,
}

/// One configured provider, ready to call.
pub struct Provider {
    pub name: String,
    pub api: ProviderApi,
    config: ProviderConfig,
    api_key: String,
    client: reqwest::Client,
}

impl Provider {
    /// Builds the provider's HTTP client. `api_key` is resolved by the caller.
    pub fn new(name: &str, config: &ProviderConfig, api_key: String) -> Result<Self, ModelError> {
        let _ = (name, config, api_key);
        todo!("helper B")
    }

    /// Streams one call to its end. `on_event` sees deltas as they arrive.
    pub async fn stream(
        &self,
        request: &CallRequest<'_>,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<AssistantMessage, ModelError> {
        let _ = (request, on_event, &self.config, &self.api_key, &self.client);
        todo!("helper B")
    }
}

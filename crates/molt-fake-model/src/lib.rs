//! A scripted fake model server for molt's integration tests and benchmarks.
//!
//! [`FakeModel`] listens on loopback and speaks both model APIs molt talks to, streamed over
//! SSE the way the real services stream: OpenAI-compatible chat completions
//! (`POST /v1/chat/completions`, also `POST /chat/completions`) and Anthropic Messages
//! (`POST /v1/messages`). A test scripts the answers with [`Reply`] values in a FIFO queue,
//! then inspects what the client sent with [`FakeModel::requests`].
//!
//! ```no_run
//! use molt_fake_model::{FakeModel, Reply};
//! use serde_json::json;
//!
//! let model = FakeModel::start();
//! model.push(Reply::tool_call("call_1", "exec", json!({"command": "echo hi"})));
//! model.push(Reply::text("done"));
//! // ... point the client at model.openai_base_url() or model.anthropic_base_url() ...
//! assert!(model.wait_for_requests(2, std::time::Duration::from_secs(5)));
//! ```
//!
//! Error replies ([`Reply::status`], [`Reply::context_length`]) are JSON bodies in each
//! API's own error shape. Every request is recorded, including those answered with errors.
#![warn(missing_docs)]

mod reply;
mod server;
mod wire;

pub use reply::{DEFAULT_TEXT, Reply, ToolCall};
pub use server::{Api, ChunkSent, FakeModel, Recorded};

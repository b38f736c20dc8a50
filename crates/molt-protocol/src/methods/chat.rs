//! The conversation surface: `chat.*`, `agent` and `agent.wait`, and the `chat` and `agent`
//! event payloads their runs produce.
//!
//! A run's id is the client's `idempotencyKey`; a repeated key starts nothing and answers with
//! the first run's status. Each run numbers its `chat` and `agent` events with one `seq`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::transcript::{AssistantMessage, Message, Usage};

crate::declare_methods! {
    /// Sends a message to a session: a new turn, or input for the active one (`queueMode`).
    ChatSend = "chat.send", Write, dedupes, ChatSendParams => ChatSendResult;
    /// A page of a session's transcript, newest last.
    ChatHistory = "chat.history", Read, reads, ChatHistoryParams => ChatHistoryResult;
    /// Aborts a session's active turns (or one of them).
    ChatAbort = "chat.abort", Write, mutates, ChatAbortParams => ChatAbortResult;
    /// Appends an assistant note to a transcript without running the model.
    ChatInject = "chat.inject", Admin, mutates, ChatInjectParams => ChatInjectResult;
    /// Runs one turn: answers `accepted` at once, then the final result on the same request
    /// id. The schema's scope is "dynamic"; a turn needs write.
    Agent = "agent", Write, dedupes, AgentParams => AgentResult;
    /// Waits for a run to end, up to `timeoutMs`; never cancels it.
    AgentWait = "agent.wait", Write, reads, AgentWaitParams => AgentWaitResult;
}

/// What to do with a message for a session whose turn is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// Join the running turn at its next model call.
    #[default]
    Steer,
    /// Run as the next turn.
    Followup,
    /// molt treats `collect` as `followup`.
    Collect,
    /// Abort the running turn and start this one.
    Interrupt,
}

/// `ChatSendParams`: the fields molt acts on; others are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChatSendParams {
    pub session_key: String,
    pub message: String,
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_mode: Option<QueueMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `{runId, status}`: `started` for a new or steered run, or a repeated key's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSendResult {
    pub run_id: String,
    pub status: String,
}

/// `ChatHistoryParams`. Paging: `offset` counts messages back from the newest; molt also
/// accepts `cursor` as "messages before this seq".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChatHistoryParams {
    pub session_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `seq` of the oldest message the client has: the page ends before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
}

/// Run state of a session, as `chat.history` and `sessions.*` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub key: String,
    pub session_id: String,
    pub has_active_run: bool,
    pub active_run_ids: Vec<String>,
    pub effective_queue_mode: String,
}

/// The model a session's turns use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
}

/// Waiting inputs (followup messages not yet in the transcript).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PendingInputs {
    pub items: Vec<Value>,
    pub total: u64,
}

/// The plain `chat.history` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatHistoryResult {
    pub session_key: String,
    pub session_id: String,
    /// Transcript messages with their `__openclaw` metadata (id, seq, runId).
    pub messages: Vec<Value>,
    pub pending_inputs: PendingInputs,
    pub has_more: bool,
    pub total_messages: u64,
    pub defaults: ModelDefaults,
    pub session_info: SessionInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChatAbortParams {
    pub session_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatAbortResult {
    pub ok: bool,
    pub aborted: bool,
    pub run_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChatInjectParams {
    pub session_key: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatInjectResult {
    pub ok: bool,
    pub message_id: String,
}

/// `AgentParams`: the fields molt acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentParams {
    pub message: String,
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<bool>,
    /// Seconds the caller waits for the final answer; the turn itself is not limited by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One reply payload of a finished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyPayload {
    pub text: String,
    pub media_url: Option<String>,
}

/// Facts about a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentMeta {
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunMeta {
    pub duration_ms: u64,
    pub agent_meta: AgentMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    pub aborted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_assistant_visible_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunOutput {
    pub payloads: Vec<ReplyPayload>,
    pub meta: RunMeta,
}

/// Both answers of `agent`: first `status: "accepted"`, then `ok`, `error` or `timeout`
/// (an abort reports `timeout`, as OpenClaw does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentResult {
    pub run_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentWaitParams {
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The text a finished run leaves for the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalReply {
    pub disposition: String,
    pub text: String,
}

/// `{runId, status: "ok"|"error"|"timeout", ...}`. `timeout` also means "still running" or
/// "unknown run".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentWaitResult {
    pub run_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_reply: Option<TerminalReply>,
}

/// A `chat` event: one variant of the schema's `ChatEvent` union, by `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatEvent {
    pub run_id: String,
    pub session_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub seq: u64,
    #[serde(flatten)]
    pub state: ChatState,
}

/// The state-specific fields of a `chat` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ChatState {
    Status {
        /// `preparing_context` or `starting_model`.
        phase: String,
    },
    #[serde(rename_all = "camelCase")]
    Delta {
        delta_text: String,
        /// The assistant message so far.
        message: AssistantSnapshot,
    },
    #[serde(rename_all = "camelCase")]
    Final {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Box<AssistantMessage>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Aborted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        error_message: String,
        /// `context_length`, `rate_limit`, `timeout`, `refusal` or `unknown`.
        error_kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_detail: Option<Value>,
    },
}

/// The cumulative assistant text a delta carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantSnapshot {
    pub role: String,
    pub content: Vec<crate::transcript::TextBlock>,
    pub timestamp: i64,
}

/// An `agent` event (`AgentEvent`): `{runId, seq, stream, ts, data}`; molt adds the session
/// to `data` as OpenClaw's gateway does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvent {
    pub run_id: String,
    pub seq: u64,
    /// `lifecycle`, `assistant`, `run_status`, `usage`, `item`, `command_output` or `tool`.
    pub stream: String,
    pub ts: u64,
    pub data: Value,
}

/// A transcript message as clients see it: the message with `__openclaw` metadata.
pub fn message_view(message: &Message, id: i64, seq: i64, run_id: Option<&str>) -> Value {
    let mut v = serde_json::to_value(message).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        let mut meta = serde_json::Map::new();
        meta.insert("id".into(), Value::from(format!("msg_{id}")));
        meta.insert("seq".into(), Value::from(seq));
        if let Some(r) = run_id {
            meta.insert("runId".into(), Value::from(r));
        }
        if let Message::System(s) = message {
            meta.insert("kind".into(), Value::from(s.kind.clone()));
            o.remove("kind");
        }
        o.insert("__openclaw".into(), Value::Object(meta));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_events_flatten_their_state() {
        let e = ChatEvent {
            run_id: "r".into(),
            session_key: "agent:main:main".into(),
            agent_id: Some("main".into()),
            seq: 3,
            state: ChatState::Delta {
                delta_text: "lo".into(),
                message: AssistantSnapshot {
                    role: "assistant".into(),
                    content: vec![crate::transcript::TextBlock {
                        text: "hello".into(),
                    }],
                    timestamp: 1,
                },
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["state"], "delta");
        assert_eq!(v["deltaText"], "lo");
        assert_eq!(v["message"]["content"][0]["text"], "hello");
        let a = serde_json::to_value(ChatState::Aborted {
            stop_reason: Some("rpc".into()),
        })
        .unwrap();
        assert_eq!(a, json!({"state": "aborted", "stopReason": "rpc"}));
    }

    #[test]
    fn queue_mode_defaults_to_steer() {
        let p: ChatSendParams = serde_json::from_value(json!({
            "sessionKey": "k", "message": "m", "idempotencyKey": "i", "thinking": "off"
        }))
        .unwrap();
        assert_eq!(p.queue_mode.unwrap_or_default(), QueueMode::Steer);
    }
}

//! Sessions: `sessions.*`. A session key is `agent:<agentId>:<rest>`; a bare key given by a
//! client (`tui-1234`) belongs to the agent it names or the default one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::{ChatSendResult, ModelDefaults};

crate::declare_methods! {
    SessionsList = "sessions.list", Read, reads, SessionsListParams => SessionsListResult;
    SessionsDescribe = "sessions.describe", Read, reads, SessionKeyParams => SessionsDescribeResult;
    /// The whole current transcript of a session.
    SessionsGet = "sessions.get", Read, reads, SessionKeyParams => SessionsGetResult;
    /// Creates a session (idempotent on its key), and with `message` starts a turn in it. The
    /// schema's scope is "dynamic"; molt asks for write.
    SessionsCreate = "sessions.create", Write, dedupes, SessionsCreateParams => SessionsCreateResult;
    SessionsSend = "sessions.send", Write, dedupes, SessionsSendParams => ChatSendResult;
    /// Sets or clears (null) a session's label and model override.
    SessionsPatch = "sessions.patch", Write, mutates, SessionsPatchParams => SessionsPatchResult;
    /// Starts a new session id; the old transcript is kept.
    SessionsReset = "sessions.reset", Admin, mutates, SessionKeyParams => SessionsPatchResult;
    /// Aborts the session's turns, then deletes it and its transcripts.
    SessionsDelete = "sessions.delete", Write, mutates, SessionKeyParams => SessionsDeleteResult;
    SessionsAbort = "sessions.abort", Write, mutates, SessionsAbortParams => SessionsAbortResult;
    /// Subscribes this connection to `sessions.changed`.
    SessionsSubscribe = "sessions.subscribe", Read, reads, SessionsListParams => SubscribeResult;
    /// Subscribes this connection to `session.message` for one session.
    SessionsMessagesSubscribe = "sessions.messages.subscribe", Read, reads, SessionKeyParams => SubscribeResult;
    SessionsMessagesUnsubscribe = "sessions.messages.unsubscribe", Read, reads, SessionKeyParams => SubscribeResult;
}

/// `{key, agentId?}` and the other optional fields these methods accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionKeyParams {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionsListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// A session as `sessions.*` report it (the schema's `SessionRow`, the fields molt has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    pub key: String,
    /// `direct` for molt's sessions.
    pub kind: String,
    pub session_id: String,
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    /// `running` while a turn is active, else `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub has_active_run: bool,
    pub active_run_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionsListResult {
    pub ts: u64,
    pub count: u64,
    pub total_count: u64,
    pub limit_applied: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u32>,
    pub has_more: bool,
    pub defaults: ModelDefaults,
    pub sessions: Vec<SessionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsDescribeResult {
    pub session: SessionRow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionsGetResult {
    pub messages: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionsCreateParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `provider/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A first message: starts a turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionsCreateResult {
    pub ok: bool,
    pub key: String,
    pub session_id: String,
    pub entry: SessionRow,
    pub run_started: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionsSendParams {
    pub key: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A field that may be absent (leave it), `null` (clear it) or a value (set it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Keep | Self::Clear => s.serialize_none(),
            Self::Set(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Self::Set(v),
            None => Self::Clear,
        })
    }
}

impl<T> Patch<T> {
    pub fn is_keep(&self) -> bool {
        matches!(self, Self::Keep)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionsPatchParams {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub label: Patch<String>,
    /// `provider/model`, or null for the agent's default.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub model: Patch<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsPatchResult {
    pub ok: bool,
    pub key: String,
    pub entry: SessionRow,
    pub resolved: ModelDefaults,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsDeleteResult {
    pub ok: bool,
    pub key: String,
    pub deleted: bool,
    pub archived: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionsAbortParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsAbortResult {
    pub ok: bool,
    pub aborted_run_id: Option<String>,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubscribeResult {
    pub subscribed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<SessionsListResult>,
}

//! Transcript messages: what a session's history holds, in the shapes OpenClaw's clients read
//! (`chat.history`, `session.message`, `chat` events) and molt stores.
//!
//! A transcript is an ordered list of user, assistant and tool-result messages, plus reset
//! markers. Assistant content is text and tool-call blocks; a tool result answers one call by
//! its id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One transcript entry, tagged by `role` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "camelCase")]
pub enum Message {
    User(UserMessage),
    Assistant(AssistantMessage),
    ToolResult(ToolResultMessage),
    /// A marker, such as a reset (`__openclaw.kind = "reset"`). Never sent to a model.
    System(SystemMessage),
}

impl Message {
    /// The assistant message, if this is one.
    pub fn as_assistant(&self) -> Option<&AssistantMessage> {
        match self {
            Self::Assistant(a) => Some(a),
            _ => None,
        }
    }

    /// When the message was made, in ms since the epoch.
    pub fn timestamp(&self) -> i64 {
        match self {
            Self::User(m) => m.timestamp,
            Self::Assistant(m) => m.timestamp,
            Self::ToolResult(m) => m.timestamp,
            Self::System(m) => m.timestamp,
        }
    }
}

/// What a person (or a channel, or cron) said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserMessage {
    pub content: String,
    pub timestamp: i64,
    /// `<runId>:user` for a message that started or steered a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// One block of an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    /// A call of tool `name` with JSON `arguments`; `id` is the provider's call id.
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
}

/// A text block, as tool results carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "text")]
pub struct TextBlock {
    pub text: String,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// The model finished its answer.
    Stop,
    /// The model asked for tool calls.
    ToolUse,
    /// The output hit `max_tokens`.
    Length,
    Error,
    Aborted,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::ToolUse => "toolUse",
            Self::Length => "length",
            Self::Error => "error",
            Self::Aborted => "aborted",
        }
    }
}

/// Token costs in currency units; molt does not price models, so these stay 0.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
    pub total: f64,
}

/// Token usage of one model call (or a sum of them).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub total_tokens: u64,
    #[serde(default)]
    pub cost: Cost,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
        self.total_tokens += other.total_tokens;
    }
}

/// What the model answered in one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantMessage {
    pub content: Vec<ContentBlock>,
    /// `openai-completions` or `anthropic-messages`.
    pub api: String,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub stop_reason: StopReason,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

impl AssistantMessage {
    /// The text blocks, joined.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for b in &self.content {
            if let ContentBlock::Text { text } = b {
                out.push_str(text);
            }
        }
        out
    }

    /// The tool calls, in order: `(id, name, arguments)`.
    pub fn tool_calls(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.content.iter().filter_map(|b| match b {
            ContentBlock::ToolCall {
                id,
                name,
                arguments,
            } => Some((id.as_str(), name.as_str(), arguments)),
            ContentBlock::Text { .. } => None,
        })
    }
}

/// A tool's answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultMessage {
    pub tool_call_id: String,
    pub tool_name: String,
    pub content: Vec<TextBlock>,
    /// Tool-specific facts: for `exec`, `{status, exitCode, durationMs, aggregated, cwd}`.
    #[serde(default)]
    pub details: Value,
    pub is_error: bool,
    pub timestamp: i64,
}

impl ToolResultMessage {
    pub fn text(&self) -> String {
        self.content.iter().map(|b| b.text.as_str()).collect()
    }
}

/// A marker in the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemMessage {
    pub content: Vec<TextBlock>,
    pub timestamp: i64,
    /// `reset` for a reset marker; `event` for a system event (a cron job's note).
    pub kind: String,
}

impl SystemMessage {
    /// What the model reads of it: a system event is shown to the model as a user-role
    /// line (`System: …`) at its place in the conversation; markers are not shown.
    pub fn model_text(&self) -> Option<String> {
        (self.kind == "event").then(|| {
            let text: String = self.content.iter().map(|b| b.text.as_str()).collect();
            format!("System: {text}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_match_what_openclaw_clients_read() {
        let a = Message::Assistant(AssistantMessage {
            content: vec![
                ContentBlock::Text { text: "hi".into() },
                ContentBlock::ToolCall {
                    id: "call_1".into(),
                    name: "exec".into(),
                    arguments: json!({"command": "ls"}),
                },
            ],
            api: "openai-completions".into(),
            provider: "fake".into(),
            model: "fake-1".into(),
            usage: Usage::default(),
            stop_reason: StopReason::ToolUse,
            timestamp: 1,
            response_id: None,
        });
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["content"][1]["type"], "toolCall");
        assert_eq!(v["stopReason"], "toolUse");
        assert_eq!(v["usage"]["totalTokens"], 0);
        let t = Message::ToolResult(ToolResultMessage {
            tool_call_id: "call_1".into(),
            tool_name: "exec".into(),
            content: vec![TextBlock { text: "ok".into() }],
            details: json!({}),
            is_error: false,
            timestamp: 2,
        });
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["role"], "toolResult");
        assert_eq!(v["content"][0]["type"], "text");
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }
}

//! Frames: `{type:"req"|"res"|"event", ...}`. Every object rejects unknown fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Canonical error codes (the closed set of the published protocol package).
pub mod code {
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    pub const NOT_PAIRED: &str = "NOT_PAIRED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ReqTag {
    #[serde(rename = "req")]
    Req,
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFrame {
    #[serde(rename = "type")]
    tag: ReqTag,
    pub id: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl RequestFrame {
    pub fn new(id: impl Into<String>, method: impl Into<String>, params: Option<Value>) -> Self {
        Self {
            tag: ReqTag::Req,
            id: id.into(),
            method: method.into(),
            params,
            traceparent: None,
        }
    }
}

/// The error object of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorShape {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorShape {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
            retryable: None,
            retry_after_ms: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `INVALID_REQUEST` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_REQUEST, message)
    }

    /// `UNAVAILABLE`, retryable after `retry_after_ms`.
    pub fn unavailable(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            retryable: Some(true),
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(code::UNAVAILABLE, message)
        }
    }
}

/// Outgoing frames (responses and events); clients also parse them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    #[serde(rename = "res")]
    Res(ResponseFrame),
    #[serde(rename = "event")]
    Event(EventFrame),
}

/// A response to a request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseFrame {
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorShape>,
}

impl ResponseFrame {
    pub fn ok(id: impl Into<String>, payload: Value) -> Self {
        Self {
            id: id.into(),
            ok: true,
            payload: Some(payload),
            error: None,
        }
    }

    pub fn err(id: impl Into<String>, error: ErrorShape) -> Self {
        Self {
            id: id.into(),
            ok: false,
            payload: None,
            error: Some(error),
        }
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        ServerFrame::Res(self.clone()).to_text()
    }
}

/// A server-pushed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventFrame {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<Value>,
}

impl EventFrame {
    pub fn new(event: impl Into<String>, payload: Value, seq: Option<u64>) -> Self {
        Self {
            event: event.into(),
            payload: Some(payload),
            seq,
            state_version: None,
        }
    }

    /// The text of an event frame whose payload is already JSON text: a payload serialized
    /// once can go to many connections, each with its own `seq`. `event` must be a plain
    /// name (as every event molt sends is), and `payload_json` valid JSON.
    pub fn text_with_payload(event: &str, payload_json: &str, seq: u64) -> String {
        format!(r#"{{"type":"event","event":"{event}","payload":{payload_json},"seq":{seq}}}"#)
    }
}

impl ServerFrame {
    pub fn to_text(&self) -> String {
        // Serializing these types cannot fail: every field is a string, number, bool or Value.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// Why an incoming frame was rejected. `id` is the request id when one could be read, so the
/// error can be answered on it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<String>,
    pub message: String,
}

/// Parses a client frame strictly: it must be a `req` with exactly the known fields.
pub fn parse_request(text: &str) -> Result<RequestFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
        id: None,
        message: format!("invalid JSON: {e}"),
    })?;
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if value.get("type").and_then(Value::as_str) != Some("req") {
        return Err(FrameError {
            id,
            message: "expected a request frame ({\"type\":\"req\",...})".into(),
        });
    }
    let frame: RequestFrame = serde_json::from_value(value).map_err(|e| FrameError {
        id: id.clone(),
        message: format!("invalid request frame: {e}"),
    })?;
    if frame.id.is_empty() || frame.method.is_empty() {
        return Err(FrameError {
            id,
            message: "request id and method must be non-empty".into(),
        });
    }
    if frame.traceparent.as_ref().is_some_and(|t| t.len() > 128) {
        return Err(FrameError {
            id,
            message: "traceparent is longer than 128 characters".into(),
        });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_with_a_preserialized_payload_is_the_same_frame() {
        let payload =
            serde_json::json!({"runId": "r", "deltaText": "a \"quoted\" bit", "n": [1, 2]});
        let raw = EventFrame::text_with_payload("chat", &payload.to_string(), 7);
        let typed = ServerFrame::Event(EventFrame::new("chat", payload, Some(7))).to_text();
        let a: Value = serde_json::from_str(&raw).unwrap();
        let b: Value = serde_json::from_str(&typed).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn strict_requests() {
        let f = parse_request(r#"{"type":"req","id":"1","method":"health"}"#).unwrap();
        assert_eq!(f.method, "health");
        let e = parse_request(r#"{"type":"req","id":"1","method":"health","x":1}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("1"));
        assert!(e.message.contains("unknown field"), "{}", e.message);
        assert!(parse_request(r#"{"type":"event","event":"x"}"#).is_err());
        assert!(parse_request(r#"{"type":"req","id":"","method":"x"}"#).is_err());
        assert!(parse_request("not json").is_err());
        assert!(parse_request("[]").is_err());
        // Numbers survive a round trip exactly (fuzzing found drift without float_roundtrip).
        let text = r#"{"type":"req","id":"1","method":"m","params":0.00000000001111111111111}"#;
        let f = parse_request(text).unwrap();
        let again = parse_request(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(f, again);
    }

    #[test]
    fn server_frames_round_trip() {
        let r = ResponseFrame::err("7", ErrorShape::invalid("bad"));
        let text = r.to_text();
        assert!(
            text.starts_with(r#"{"type":"res","id":"7","ok":false"#),
            "{text}"
        );
        let back: ServerFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ServerFrame::Res(r));
    }
}

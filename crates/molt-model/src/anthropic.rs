//! Anthropic Messages: the request body and the typed event stream.

use std::collections::HashMap;

use molt_protocol::transcript::{Message, StopReason, Usage};
use serde_json::{Map, Value, json};

use crate::accum::{Blocks, Decoder, Emitter, Failure, Flow, Parts, num, preview};
use crate::sse::SseEvent;
use crate::{CallRequest, ModelErrorKind, StreamEvent};

/// The JSON body of `POST {base_url}/v1/messages`.
pub(crate) fn build_body(req: &CallRequest<'_>) -> Value {
    // Anthropic wants strictly alternating roles: consecutive same-role entries (several
    // tool results, or a tool result then a user message) become one message.
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in req.messages {
        let (role, content) = match m {
            Message::User(u) => ("user", text_block(&u.content).into_iter().collect()),
            Message::Assistant(a) => {
                let mut blocks = Vec::new();
                for b in &a.content {
                    match b {
                        molt_protocol::transcript::ContentBlock::Text { text } => {
                            blocks.extend(text_block(text));
                        }
                        molt_protocol::transcript::ContentBlock::ToolCall {
                            id,
                            name,
                            arguments,
                        } => blocks.push(json!({
                            "type": "tool_use",
                            "id": id,
                            "name": name,
                            // `input` must be an object.
                            "input": if arguments.is_object() { arguments.clone() } else { json!({}) },
                        })),
                    }
                }
                ("assistant", blocks)
            }
            Message::ToolResult(t) => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": t.tool_call_id,
                    "content": t.text(),
                    "is_error": t.is_error,
                })],
            ),
            Message::System(s) => match s.model_text() {
                Some(t) => ("user", vec![json!({"type": "text", "text": t})]),
                None => continue,
            },
        };
        if content.is_empty() {
            // Empty content is rejected; an empty turn says nothing anyway.
            continue;
        }
        match messages.last_mut() {
            Some((r, c)) if *r == role => c.extend(content),
            _ => messages.push((role, content)),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("messages".into(), Value::Array(messages));
    if !req.system.is_empty() {
        body.insert(
            "system".into(),
            json!([{"type": "text", "text": req.system}]),
        );
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters,
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    body.insert("max_tokens".into(), json!(req.max_tokens));
    body.insert("stream".into(), json!(true));
    Value::Object(body)
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// Accumulates a Messages event stream.
#[derive(Debug, Default)]
pub(crate) struct AnthropicDecoder {
    blocks: Blocks,
    /// The stream's block `index` → slot in `blocks`; blocks it does not keep (thinking)
    /// have none, so their deltas are dropped.
    slots: HashMap<u64, usize>,
    stop_reason: Option<String>,
    usage: Usage,
    response_id: Option<String>,
}

impl AnthropicDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a `usage` object in: fields present replace what was there.
    fn usage_from(&mut self, u: &Value, out: &mut Emitter<'_>) {
        if !u.is_object() {
            return;
        }
        let set = |field: &mut u64, key: &str| {
            if let Some(v) = u.get(key).and_then(Value::as_u64) {
                *field = v;
            }
        };
        set(&mut self.usage.input, "input_tokens");
        set(&mut self.usage.output, "output_tokens");
        set(&mut self.usage.cache_read, "cache_read_input_tokens");
        set(&mut self.usage.cache_write, "cache_creation_input_tokens");
        let us = &mut self.usage;
        us.total_tokens = us.input + us.output + us.cache_read + us.cache_write;
        out.emit(StreamEvent::Usage(self.usage));
    }
}

impl Decoder for AnthropicDecoder {
    fn on_event(&mut self, ev: &SseEvent, out: &mut Emitter<'_>) -> Result<Flow, Failure> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(Flow::More);
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            Failure::malformed(format!(
                "a stream event is not valid JSON ({e}): {}",
                preview(data, 200)
            ))
        })?;
        // The payload's `type` names the event; the `event:` line is the fallback.
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(ev.event.as_str());
        match kind {
            "message_start" => {
                let m = &v["message"];
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    self.response_id = Some(id.to_owned());
                }
                self.usage_from(&m["usage"], out);
            }
            "content_block_start" => {
                let index = num(&v["index"]);
                let b = &v["content_block"];
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let slot = self.blocks.open_text();
                        self.slots.insert(index, slot);
                        let text = b.get("text").and_then(Value::as_str).unwrap_or("");
                        self.blocks.text(Some(slot), text, out);
                    }
                    Some("tool_use") => {
                        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                        let initial = b.get("input").filter(|i| i.is_object()).cloned();
                        let slot = self.blocks.open_tool(s("id"), s("name"), initial, out);
                        self.slots.insert(index, slot);
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(&slot) = self.slots.get(&num(&v["index"])) else {
                    return Ok(Flow::More);
                };
                let d = &v["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = d.get("text").and_then(Value::as_str).unwrap_or("");
                        self.blocks.text(Some(slot), text, out);
                    }
                    Some("input_json_delta") => {
                        let piece = d.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        self.blocks.tool_update(slot, None, None, piece, out);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"].get("stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_owned());
                }
                self.usage_from(&v["usage"], out);
            }
            "message_stop" => return Ok(Flow::Done),
            "error" => {
                let e = &v["error"];
                let etype = e.get("type").and_then(Value::as_str).unwrap_or("error");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                let mut f = Failure::new(
                    if crate::retry::is_context_length(message, None) {
                        ModelErrorKind::ContextLength
                    } else {
                        ModelErrorKind::Http
                    },
                    format!("the stream reported {etype}: {}", preview(message, 200)),
                );
                // Overload is transient; the caller retries it only if nothing was output.
                if etype == "overloaded_error" {
                    f.retryable = true;
                    f.http_status = Some(529);
                }
                return Err(f);
            }
            // `ping`, `content_block_stop` and events added later.
            _ => {}
        }
        Ok(Flow::More)
    }

    fn finish(self, ended: bool) -> Result<Parts, Failure> {
        if !ended && self.stop_reason.is_none() {
            return Err(Failure::new(
                ModelErrorKind::Connection,
                "the stream ended before message_stop",
            ));
        }
        let stop_reason = match self.stop_reason.as_deref() {
            Some("max_tokens") => StopReason::Length,
            Some("tool_use") => StopReason::ToolUse,
            _ if self.blocks.has_tool_calls() => StopReason::ToolUse,
            _ => StopReason::Stop,
        };
        Ok(Parts {
            content: self.blocks.into_content()?,
            usage: self.usage,
            stop_reason,
            response_id: self.response_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolSpec;
    use molt_protocol::transcript::{
        AssistantMessage, ContentBlock, TextBlock, ToolResultMessage, UserMessage,
    };

    fn decode(body: &str, piece: usize) -> (Result<Parts, Failure>, Vec<StreamEvent>, bool) {
        crate::accum::decode_in_pieces(AnthropicDecoder::new(), body, piece)
    }

    fn sse(events: &[(&str, &str)]) -> String {
        events
            .iter()
            .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
            .collect()
    }

    const START: (&str, &str) = (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":20,"output_tokens":1}}}"#,
    );

    #[test]
    fn text_stream_with_usage() {
        let body = sse(&[
            START,
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"there"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            ("something_new", r#"{"type":"something_new","x":1}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        for piece in [1, 9, 4096] {
            let (r, events, output) = decode(&body, piece);
            let p = r.unwrap();
            assert_eq!(
                p.content,
                vec![ContentBlock::Text {
                    text: "Hi there".into()
                }]
            );
            assert_eq!(p.stop_reason, StopReason::Stop);
            assert_eq!(p.response_id.as_deref(), Some("msg_1"));
            assert_eq!(
                (p.usage.input, p.usage.output, p.usage.total_tokens),
                (20, 5, 25)
            );
            assert!(output);
            let texts: Vec<_> = events
                .iter()
                .filter_map(|e| match e {
                    StreamEvent::TextDelta(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(texts, ["Hi ", "there"]);
            assert_eq!(events.last(), Some(&StreamEvent::Usage(p.usage)));
        }
    }

    #[test]
    fn two_tool_calls_with_split_input() {
        let body = sse(&[
            START,
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":"Checking."}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"exec","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"command\":"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" \"ls\"}"}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_2","name":"read","input":{}}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":30}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        let (r, events, _) = decode(&body, 11);
        let p = r.unwrap();
        assert_eq!(p.stop_reason, StopReason::ToolUse);
        assert_eq!(
            p.content,
            vec![
                ContentBlock::Text {
                    text: "Checking.".into()
                },
                ContentBlock::ToolCall {
                    id: "toolu_1".into(),
                    name: "exec".into(),
                    arguments: json!({"command": "ls"}),
                },
                ContentBlock::ToolCall {
                    id: "toolu_2".into(),
                    name: "read".into(),
                    arguments: json!({}),
                },
            ]
        );
        assert!(events.contains(&StreamEvent::ToolCallStarted {
            id: "toolu_2".into(),
            name: "read".into()
        }));
        assert!(!events.contains(&StreamEvent::TextDelta("hmm".into())));
    }

    #[test]
    fn malformed_event_and_error_event() {
        let body = format!(
            "{}event: content_block_delta\ndata: {{oops\n\n",
            sse(&[START])
        );
        let (r, _, output) = decode(&body, 6);
        assert_eq!(r.unwrap_err().kind, ModelErrorKind::Malformed);
        assert!(!output, "usage alone is not output");

        let body = sse(&[
            START,
            (
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
        ]);
        let f = decode(&body, 4096).0.unwrap_err();
        assert!(f.retryable);
        assert_eq!(f.kind, ModelErrorKind::Http);
        assert!(f.message.contains("Overloaded"), "{}", f.message);

        let body = sse(&[START]);
        assert_eq!(
            decode(&body, 4096).0.unwrap_err().kind,
            ModelErrorKind::Connection
        );
    }

    fn result(id: &str, text: &str, is_error: bool) -> Message {
        Message::ToolResult(ToolResultMessage {
            tool_call_id: id.into(),
            tool_name: "exec".into(),
            content: vec![TextBlock { text: text.into() }],
            details: json!({}),
            is_error,
            timestamp: 0,
        })
    }

    fn user(text: &str) -> Message {
        Message::User(UserMessage {
            content: text.into(),
            timestamp: 0,
            idempotency_key: None,
        })
    }

    #[test]
    fn body_has_the_exact_keys_and_merges_same_role_messages() {
        let history = vec![
            user("go"),
            Message::Assistant(AssistantMessage {
                content: vec![
                    ContentBlock::Text { text: "".into() },
                    ContentBlock::Text {
                        text: "on it".into(),
                    },
                    ContentBlock::ToolCall {
                        id: "t1".into(),
                        name: "exec".into(),
                        arguments: json!({"command": "ls"}),
                    },
                    ContentBlock::ToolCall {
                        id: "t2".into(),
                        name: "exec".into(),
                        arguments: json!({"command": "pwd"}),
                    },
                ],
                api: "anthropic-messages".into(),
                provider: "p".into(),
                model: "m".into(),
                usage: Usage::default(),
                stop_reason: StopReason::ToolUse,
                timestamp: 0,
                response_id: None,
            }),
            result("t1", "a b", false),
            result("t2", "denied", true),
            user("and now?"),
        ];
        let tools = vec![ToolSpec {
            name: "exec".into(),
            description: "run".into(),
            parameters: json!({"type": "object"}),
        }];
        let req = CallRequest {
            model: "claude-x",
            max_tokens: 64,
            system: "sys",
            messages: &history,
            tools: &tools,
        };
        let body = build_body(&req);
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "max_tokens",
                "messages",
                "model",
                "stream",
                "system",
                "tools"
            ]
        );
        assert_eq!(body["system"], json!([{"type": "text", "text": "sys"}]));
        assert_eq!(
            body["tools"],
            json!([{"name": "exec", "description": "run", "input_schema": {"type": "object"}}])
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "go"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "on it"},
                    {"type": "tool_use", "id": "t1", "name": "exec", "input": {"command": "ls"}},
                    {"type": "tool_use", "id": "t2", "name": "exec", "input": {"command": "pwd"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "a b", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "denied", "is_error": true},
                    {"type": "text", "text": "and now?"},
                ]},
            ])
        );
        let bare = build_body(&CallRequest { tools: &[], ..req });
        assert!(bare.get("tools").is_none());
    }
}

//! OpenAI-compatible chat completions: the request body and the `chat.completion.chunk`
//! stream.

use std::collections::HashMap;

use molt_protocol::transcript::{Message, StopReason, Usage};
use serde_json::{Map, Value, json};

use crate::accum::{Blocks, Decoder, Emitter, Failure, Flow, Parts, num, preview};
use crate::sse::SseEvent;
use crate::{CallRequest, ModelErrorKind, StreamEvent};

/// The JSON body of `POST {base_url}/chat/completions`.
pub(crate) fn build_body(req: &CallRequest<'_>) -> Value {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if !req.system.is_empty() {
        messages.push(json!({"role": "system", "content": req.system}));
    }
    for m in req.messages {
        match m {
            Message::User(u) => messages.push(json!({"role": "user", "content": u.content})),
            Message::Assistant(a) => {
                let text = a.text();
                let calls: Vec<Value> = a
                    .tool_calls()
                    .map(|(id, name, args)| {
                        json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": args.to_string()},
                        })
                    })
                    .collect();
                if calls.is_empty() {
                    // An empty assistant turn (an aborted call) carries nothing and some
                    // servers reject it.
                    if !text.is_empty() {
                        messages.push(json!({"role": "assistant", "content": text}));
                    }
                } else {
                    let content = if text.is_empty() {
                        Value::Null
                    } else {
                        Value::String(text)
                    };
                    messages.push(
                        json!({"role": "assistant", "content": content, "tool_calls": calls}),
                    );
                }
            }
            Message::ToolResult(t) => messages.push(json!({
                "role": "tool",
                "content": t.text(),
                "tool_call_id": t.tool_call_id,
            })),
            Message::System(s) => {
                if let Some(t) = s.model_text() {
                    messages.push(json!({"role": "user", "content": t}));
                }
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        body.insert("tool_choice".into(), json!("auto"));
    }
    body.insert("max_completion_tokens".into(), json!(req.max_tokens));
    Value::Object(body)
}

/// Accumulates `chat.completion.chunk`s.
#[derive(Debug, Default)]
pub(crate) struct OpenAiDecoder {
    blocks: Blocks,
    /// Tool-call `index` → slot in `blocks`.
    tools: HashMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Usage,
    response_id: Option<String>,
}

impl OpenAiDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for OpenAiDecoder {
    fn on_event(&mut self, ev: &SseEvent, out: &mut Emitter<'_>) -> Result<Flow, Failure> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        if data.is_empty() {
            return Ok(Flow::More);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            Failure::malformed(format!(
                "a stream chunk is not valid JSON ({e}): {}",
                preview(data, 200)
            ))
        })?;
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            // Some servers report a failure inside a 200 stream.
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            let kind = if crate::retry::is_context_length(message, err.get("code")) {
                ModelErrorKind::ContextLength
            } else {
                ModelErrorKind::Http
            };
            return Err(Failure::new(
                kind,
                format!("the stream reported an error: {}", preview(message, 200)),
            ));
        }
        if let Some(id) = chunk.get("id").and_then(Value::as_str) {
            if !id.is_empty() && self.response_id.is_none() {
                self.response_id = Some(id.to_owned());
            }
        }
        if let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.blocks.text(None, text, out);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (pos, call) in calls.iter().enumerate() {
                    self.tool_piece(pos, call, out);
                }
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(r.to_owned());
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            let prompt = num(&u["prompt_tokens"]);
            let cached = num(&u["prompt_tokens_details"]["cached_tokens"]).min(prompt);
            let output = num(&u["completion_tokens"]);
            // `prompt_tokens` counts cached tokens; split them out as Anthropic does.
            self.usage = Usage {
                input: prompt - cached,
                output,
                cache_read: cached,
                cache_write: 0,
                total_tokens: u["total_tokens"].as_u64().unwrap_or(prompt + output),
                ..Usage::default()
            };
            out.emit(StreamEvent::Usage(self.usage));
        }
        Ok(Flow::More)
    }

    fn finish(self, ended: bool) -> Result<Parts, Failure> {
        if !ended && self.finish_reason.is_none() {
            return Err(Failure::new(
                ModelErrorKind::Connection,
                "the stream ended before the response was complete",
            ));
        }
        let has_tools = self.blocks.has_tool_calls();
        let stop_reason = match self.finish_reason.as_deref() {
            Some("length") => StopReason::Length,
            // Some servers say "stop" after tool calls; the calls decide.
            _ if has_tools => StopReason::ToolUse,
            Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
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

impl OpenAiDecoder {
    fn tool_piece(&mut self, pos: usize, call: &Value, out: &mut Emitter<'_>) {
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(pos as u64);
        let id = call.get("id").and_then(Value::as_str);
        let f = call.get("function").unwrap_or(&Value::Null);
        let name = f.get("name").and_then(Value::as_str);
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("");
        match self.tools.get(&index) {
            Some(&slot) => self.blocks.tool_update(slot, id, name, args, out),
            None => {
                let slot = self.blocks.open_tool(
                    id.unwrap_or("").to_owned(),
                    name.unwrap_or("").to_owned(),
                    None,
                    out,
                );
                self.blocks.tool_update(slot, None, None, args, out);
                self.tools.insert(index, slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolSpec;
    use molt_protocol::transcript::{
        AssistantMessage, ContentBlock, SystemMessage, TextBlock, ToolResultMessage, UserMessage,
    };

    fn decode(body: &str, piece: usize) -> (Result<Parts, Failure>, Vec<StreamEvent>, bool) {
        crate::accum::decode_in_pieces(OpenAiDecoder::new(), body, piece)
    }

    fn sse(chunks: &[&str]) -> String {
        chunks.iter().map(|c| format!("data: {c}\n\n")).collect()
    }

    #[test]
    fn text_stream_with_usage() {
        let body = sse(&[
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#,
            "[DONE]",
        ]);
        for piece in [1, 7, 4096] {
            let (r, events, output) = decode(&body, piece);
            let p = r.unwrap();
            assert_eq!(
                p.content,
                vec![ContentBlock::Text {
                    text: "Hello".into()
                }]
            );
            assert_eq!(p.stop_reason, StopReason::Stop);
            assert_eq!(p.response_id.as_deref(), Some("chatcmpl-1"));
            assert_eq!(
                (p.usage.input, p.usage.output, p.usage.total_tokens),
                (10, 2, 12)
            );
            assert!(output);
            assert_eq!(
                events,
                vec![
                    StreamEvent::TextDelta("Hel".into()),
                    StreamEvent::TextDelta("lo".into()),
                    StreamEvent::Usage(p.usage),
                ]
            );
        }
    }

    #[test]
    fn two_tool_calls_with_split_arguments() {
        let body = sse(&[
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Let me look."}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"exec","arguments":""}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"exec","arguments":"{\"comm"}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"and\": \"ls\"}"}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"read","arguments":""}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let (r, events, _) = decode(&body, 13);
        let p = r.unwrap();
        assert_eq!(p.stop_reason, StopReason::ToolUse);
        assert_eq!(
            p.content,
            vec![
                ContentBlock::Text {
                    text: "Let me look.".into()
                },
                ContentBlock::ToolCall {
                    id: "call_a".into(),
                    name: "exec".into(),
                    arguments: json!({"command": "ls"}),
                },
                ContentBlock::ToolCall {
                    id: "call_b".into(),
                    name: "read".into(),
                    arguments: json!({}),
                },
            ]
        );
        let started: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, StreamEvent::ToolCallStarted { .. }))
            .collect();
        assert_eq!(
            started,
            vec![
                &StreamEvent::ToolCallStarted {
                    id: "call_a".into(),
                    name: "exec".into()
                },
                &StreamEvent::ToolCallStarted {
                    id: "call_b".into(),
                    name: "read".into()
                },
            ]
        );
    }

    #[test]
    fn bad_final_arguments_are_malformed() {
        let body = sse(&[
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"x","function":{"name":"exec","arguments":"{\"a\":"}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let (r, _, output) = decode(&body, 4096);
        assert_eq!(r.unwrap_err().kind, ModelErrorKind::Malformed);
        assert!(output);
    }

    #[test]
    fn malformed_chunk_is_an_error_not_a_panic() {
        let body = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {not json\n\n";
        let (r, _, output) = decode(body, 5);
        let f = r.unwrap_err();
        assert_eq!(f.kind, ModelErrorKind::Malformed);
        assert!(f.message.contains("not valid JSON"), "{}", f.message);
        assert!(output);
        // Odd but valid JSON shapes are ignored, not fatal.
        let body = sse(&[
            "[]",
            "{\"choices\":\"x\"}",
            "{\"choices\":[{\"delta\":{\"content\":5,\"tool_calls\":{}}}]}",
            "[DONE]",
        ]);
        assert!(decode(&body, 3).0.is_ok());
    }

    #[test]
    fn unknown_fields_and_events_are_ignored_and_eof_without_done_is_an_error() {
        let body = ": keepalive\n\nevent: other\ndata: {\"id\":\"c\",\"object\":\"x\",\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\",\"content\":\"ok\"}}]}\n\n";
        let (r, events, _) = decode(body, 4096);
        assert_eq!(r.unwrap_err().kind, ModelErrorKind::Connection);
        assert_eq!(events, vec![StreamEvent::TextDelta("ok".into())]);
        // With a finish_reason, a missing [DONE] is forgiven.
        let body = sse(&[r#"{"choices":[{"delta":{"content":"ok"},"finish_reason":"length"}]}"#]);
        assert_eq!(
            decode(&body, 4096).0.unwrap().stop_reason,
            StopReason::Length
        );
    }

    #[test]
    fn body_has_the_exact_keys_and_converted_messages() {
        let history = vec![
            Message::System(SystemMessage {
                content: vec![],
                timestamp: 0,
                kind: "reset".into(),
            }),
            Message::User(UserMessage {
                content: "list files".into(),
                timestamp: 1,
                idempotency_key: None,
            }),
            Message::Assistant(AssistantMessage {
                content: vec![ContentBlock::ToolCall {
                    id: "call_1".into(),
                    name: "exec".into(),
                    arguments: json!({"command": "ls"}),
                }],
                api: "openai-completions".into(),
                provider: "p".into(),
                model: "m".into(),
                usage: Usage::default(),
                stop_reason: StopReason::ToolUse,
                timestamp: 2,
                response_id: None,
            }),
            Message::ToolResult(ToolResultMessage {
                tool_call_id: "call_1".into(),
                tool_name: "exec".into(),
                content: vec![TextBlock {
                    text: "a\nb".into(),
                }],
                details: json!({}),
                is_error: false,
                timestamp: 3,
            }),
            Message::Assistant(AssistantMessage {
                content: vec![ContentBlock::Text {
                    text: "two files".into(),
                }],
                api: "openai-completions".into(),
                provider: "p".into(),
                model: "m".into(),
                usage: Usage::default(),
                stop_reason: StopReason::Stop,
                timestamp: 4,
                response_id: None,
            }),
        ];
        let tools = vec![ToolSpec {
            name: "exec".into(),
            description: "run".into(),
            parameters: json!({"type": "object"}),
        }];
        let req = CallRequest {
            model: "gpt-x",
            max_tokens: 100,
            system: "be brief",
            messages: &history,
            tools: &tools,
        };
        let body = build_body(&req);
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "max_completion_tokens",
                "messages",
                "model",
                "stream",
                "stream_options",
                "tool_choice",
                "tools"
            ]
        );
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {"name": "exec", "description": "run", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": "{\"command\":\"ls\"}"}}
                ]},
                {"role": "tool", "content": "a\nb", "tool_call_id": "call_1"},
                {"role": "assistant", "content": "two files"},
            ])
        );
        let bare = build_body(&CallRequest { tools: &[], ..req });
        assert!(bare.get("tools").is_none() && bare.get("tool_choice").is_none());
    }
}

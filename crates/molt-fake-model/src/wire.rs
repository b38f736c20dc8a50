//! The bytes on the wire: SSE streams and JSON error bodies in each API's real shape.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::Api;
use crate::reply::{DEFAULT_TEXT, Kind, Reply, ToolCall, disconnect_chunks, split_chars};

/// One step of a planned response body.
#[derive(Debug)]
pub(crate) enum Piece {
    /// One complete SSE event, counted by `chunks_sent` when handed to the connection.
    Data(Bytes),
    /// Abort the connection mid-body.
    Abort,
}

/// What a streamed reply needs to know about its request.
pub(crate) struct StreamCtx<'a> {
    /// The request's number on this server, from 1; names the reply (`chatcmpl-N`, `msg_N`).
    pub seq: usize,
    /// The request's `model`, echoed back as real servers do.
    pub model: &'a str,
    /// Unix seconds, for OpenAI's `created`.
    pub created: u64,
    /// OpenAI only sends the usage chunk when `stream_options.include_usage` is true.
    pub include_usage: bool,
    /// The prompt tokens to report unless the reply overrides them.
    pub prompt_tokens: u64,
}

/// One SSE event before rendering: Anthropic's event name (OpenAI has none) and the data.
struct Event {
    name: Option<&'static str>,
    data: String,
}

impl Event {
    fn json(name: Option<&'static str>, value: &Value) -> Event {
        Event {
            name,
            data: value.to_string(),
        }
    }

    fn render(&self) -> Bytes {
        match self.name {
            Some(name) => Bytes::from(format!("event: {name}\ndata: {}\n\n", self.data)),
            None => Bytes::from(format!("data: {}\n\n", self.data)),
        }
    }
}

/// The body of a streamed reply (`Stream`, `Malformed`, `DisconnectAfter`) as SSE pieces.
pub(crate) fn stream_pieces(api: Api, reply: &Reply, ctx: &StreamCtx<'_>) -> Vec<Piece> {
    let (text, tool_calls): (Vec<String>, &[ToolCall]) = match &reply.kind {
        Kind::Stream { text, tool_calls } => (text.clone(), tool_calls),
        Kind::Malformed => (split_chars(DEFAULT_TEXT, 3), &[]),
        Kind::DisconnectAfter(n) => (disconnect_chunks(*n), &[]),
        Kind::Status(_) | Kind::ContextLength => (Vec::new(), &[]),
    };
    let args: Vec<Vec<String>> = tool_calls.iter().map(argument_pieces).collect();
    let (prompt, completion) = reply.usage.unwrap_or_else(|| {
        let chars: usize = text
            .iter()
            .chain(args.iter().flatten())
            .map(|s| s.len())
            .sum();
        (ctx.prompt_tokens, (chars as u64 / 4).max(1))
    });
    let mut events = match api {
        Api::OpenAi => openai_events(ctx, &text, tool_calls, &args, prompt, completion),
        Api::Anthropic => anthropic_events(ctx, &text, tool_calls, &args, prompt, completion),
    };
    let mut abort = false;
    match reply.kind {
        Kind::Malformed => {
            if let Some(second) = events.get_mut(1) {
                second.data = "{not json".to_owned();
            }
        }
        Kind::DisconnectAfter(n) => {
            events.truncate(n);
            abort = true;
        }
        _ => {}
    }
    let mut pieces: Vec<Piece> = events.iter().map(|e| Piece::Data(e.render())).collect();
    if abort {
        pieces.push(Piece::Abort);
    }
    pieces
}

/// A tool call's arguments as compact JSON, split into at least two pieces where the text
/// allows, so clients must join `arguments` / `partial_json` fragments.
fn argument_pieces(call: &ToolCall) -> Vec<String> {
    let json = call.input.to_string();
    let parts = (json.chars().count() / 8).clamp(2, 4);
    split_chars(&json, parts)
}

fn openai_events(
    ctx: &StreamCtx<'_>,
    text: &[String],
    tool_calls: &[ToolCall],
    args: &[Vec<String>],
    prompt: u64,
    completion: u64,
) -> Vec<Event> {
    let id = format!("chatcmpl-{}", ctx.seq);
    let chunk = |choices: Value, usage: Value| {
        let mut value = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "choices": choices,
        });
        // With include_usage the real API puts `"usage": null` on every chunk but the last.
        if ctx.include_usage {
            value["usage"] = usage;
        }
        Event::json(None, &value)
    };
    let delta = |delta: Value, finish: Value| {
        chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
            Value::Null,
        )
    };

    let mut events = Vec::new();
    let first_content = if text.is_empty() {
        Value::Null
    } else {
        json!("")
    };
    events.push(delta(
        json!({"role": "assistant", "content": first_content}),
        Value::Null,
    ));
    for piece in text {
        events.push(delta(json!({"content": piece}), Value::Null));
    }
    for (index, (call, pieces)) in tool_calls.iter().zip(args).enumerate() {
        events.push(delta(
            json!({"tool_calls": [{
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]}),
            Value::Null,
        ));
        for piece in pieces {
            events.push(delta(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    let finish = if tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    events.push(delta(json!({}), json!(finish)));
    if ctx.include_usage {
        events.push(chunk(
            json!([]),
            json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }),
        ));
    }
    events.push(Event {
        name: None,
        data: "[DONE]".to_owned(),
    });
    events
}

fn anthropic_events(
    ctx: &StreamCtx<'_>,
    text: &[String],
    tool_calls: &[ToolCall],
    args: &[Vec<String>],
    prompt: u64,
    completion: u64,
) -> Vec<Event> {
    let mut events = vec![Event::json(
        Some("message_start"),
        &json!({"type": "message_start", "message": {
            "id": format!("msg_{}", ctx.seq),
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }}),
    )];

    // Each block: its start value and its deltas.
    let mut blocks: Vec<(Value, Vec<Value>)> = Vec::new();
    if !text.is_empty() {
        blocks.push((
            json!({"type": "text", "text": ""}),
            text.iter()
                .map(|t| json!({"type": "text_delta", "text": t}))
                .collect(),
        ));
    }
    for (call, pieces) in tool_calls.iter().zip(args) {
        blocks.push((
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
            pieces
                .iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                .collect(),
        ));
    }
    for (index, (start, deltas)) in blocks.into_iter().enumerate() {
        events.push(Event::json(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        // The real API sends a ping early in the stream; clients must skip it.
        if index == 0 {
            events.push(Event::json(Some("ping"), &json!({"type": "ping"})));
        }
        for delta in deltas {
            events.push(Event::json(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(Event::json(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    let stop_reason = if tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    events.push(Event::json(
        Some("message_delta"),
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": completion},
        }),
    ));
    events.push(Event::json(
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    ));
    events
}

/// The JSON body of an error reply (`Status`, `ContextLength`) in the API's shape.
pub(crate) fn error_body(api: Api, reply: &Reply) -> Value {
    let status = reply.status_code();
    let context = matches!(reply.kind, Kind::ContextLength);
    match api {
        Api::OpenAi => {
            let (kind, param, code, message) = match status {
                400 if context => (
                    "invalid_request_error",
                    json!("messages"),
                    json!("context_length_exceeded"),
                    "This model's maximum context length is 128000 tokens. However, your \
                     messages resulted in 250000 tokens. Please reduce the length of the \
                     messages.",
                ),
                401 => (
                    "invalid_request_error",
                    Value::Null,
                    json!("invalid_api_key"),
                    "Incorrect API key provided. You can find your API key at \
                     https://platform.openai.com/account/api-keys.",
                ),
                429 => (
                    "requests",
                    Value::Null,
                    json!("rate_limit_exceeded"),
                    "Rate limit reached for requests. Please try again later.",
                ),
                500.. => (
                    "server_error",
                    Value::Null,
                    Value::Null,
                    "The server had an error while processing your request. Sorry about that!",
                ),
                _ => (
                    "invalid_request_error",
                    Value::Null,
                    Value::Null,
                    "The fake model was scripted to reject this request.",
                ),
            };
            let message = reply.message.as_deref().unwrap_or(message);
            json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
        }
        Api::Anthropic => {
            let (kind, message) = match status {
                400 if context => (
                    "invalid_request_error",
                    "prompt is too long: 250000 tokens > 200000 maximum",
                ),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => (
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                404 => (
                    "not_found_error",
                    "The requested resource could not be found.",
                ),
                413 => (
                    "request_too_large",
                    "Request exceeds the maximum allowed size.",
                ),
                429 => (
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization.",
                ),
                529 => ("overloaded_error", "Overloaded"),
                500.. => ("api_error", "Internal server error"),
                _ => (
                    "invalid_request_error",
                    "The fake model was scripted to reject this request.",
                ),
            };
            let message = reply.message.as_deref().unwrap_or(message);
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    }
}

//! The fake model over real loopback HTTP/1.1, spoken by hand with `std::net::TcpStream` so
//! the tests see exactly the bytes a client would (including a truncated body).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use molt_fake_model::{Api, DEFAULT_TEXT, FakeModel, Reply, ToolCall};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A response as read off the socket.
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// The body ended properly (final chunk, or the whole content-length).
    complete: bool,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The SSE events: (event name, data) in order.
    fn events(&self) -> Vec<(Option<String>, String)> {
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        self.body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|event| {
                let mut name = None;
                let mut data = None;
                for line in event.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        assert!(data.is_none(), "one data line per event: {event:?}");
                        data = Some(d.to_owned());
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                (name, data.unwrap_or_else(|| panic!("no data in {event:?}")))
            })
            .collect()
    }

    /// The OpenAI chunks: every data line but the final `[DONE]`, parsed.
    fn openai_chunks(&self) -> Vec<Value> {
        let events = self.events();
        let (last, chunks) = events.split_last().expect("an empty stream");
        assert_eq!(last, &(None, "[DONE]".to_owned()));
        chunks
            .iter()
            .map(|(name, data)| {
                assert!(name.is_none(), "OpenAI streams have no event names");
                parse(data)
            })
            .collect()
    }

    /// The Anthropic events, parsed, after checking each `type` matches its event name.
    fn anthropic_events(&self) -> Vec<Value> {
        self.events()
            .iter()
            .map(|(name, data)| {
                let value = parse(data);
                assert_eq!(Some(value["type"].as_str().unwrap_or("")), name.as_deref());
                value
            })
            .collect()
    }
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("bad JSON chunk ({e}): {data}"))
}

/// Sends one POST with `connection: close` and reads the whole response (or as much as the
/// server sent before dropping the connection).
fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect to the fake model");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send request");

    let deadline = Instant::now() + TIMEOUT;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Bounded by the deadline and the per-read timeout.
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no response within {TIMEOUT:?}")
            }
            // A reset is how an aborted stream may end.
            Err(_) => break,
        }
    }

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("UTF-8 head");
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let (body, complete) = if chunked {
        dechunk(rest)
    } else {
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(rest.len());
        (rest[..len.min(rest.len())].to_vec(), rest.len() >= len)
    };
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
        complete,
    }
}

/// Decodes a chunked body; `complete` says whether the final zero-size chunk arrived.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = std::str::from_utf8(&raw[..eol]).expect("chunk size line");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            return (body, true);
        }
        let data = &raw[eol + 2..];
        if data.len() < size + 2 {
            body.extend_from_slice(&data[..size.min(data.len())]);
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        raw = &data[size + 2..];
    }
}

fn openai_body(include_usage: bool) -> String {
    json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": include_usage},
        "tools": [{"type": "function", "function": {"name": "exec", "parameters": {}}}],
        "max_completion_tokens": 100,
    })
    .to_string()
}

fn anthropic_body() -> String {
    json!({
        "model": "claude-test",
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "exec", "input_schema": {"type": "object"}}],
        "max_tokens": 100,
        "stream": true,
    })
    .to_string()
}

fn openai(model: &FakeModel) -> HttpResponse {
    post(
        model.addr(),
        "/v1/chat/completions",
        &[],
        &openai_body(true),
    )
}

fn anthropic(model: &FakeModel) -> HttpResponse {
    post(model.addr(), "/v1/messages", &[], &anthropic_body())
}

/// Joins the OpenAI chunks' text and tool calls: (text, [(id, name, argument pieces)]).
type OpenAiCalls = Vec<(String, String, Vec<String>)>;
fn openai_assemble(chunks: &[Value]) -> (String, OpenAiCalls) {
    let mut text = String::new();
    let mut calls: OpenAiCalls = Vec::new();
    for chunk in chunks {
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(t) = choice["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().expect("tool call index") as usize;
            if let Some(id) = call["id"].as_str() {
                assert_eq!(index, calls.len(), "tool calls start in index order");
                assert_eq!(call["type"], "function");
                let name = call["function"]["name"].as_str().expect("a name");
                calls.push((id.to_owned(), name.to_owned(), Vec::new()));
            } else {
                assert!(call.get("function").and_then(|f| f.get("name")).is_none());
            }
            let piece = call["function"]["arguments"].as_str().expect("arguments");
            if !piece.is_empty() {
                calls[index].2.push(piece.to_owned());
            }
        }
    }
    (text, calls)
}

#[test]
fn openai_text_stream_has_the_real_shape() {
    let model = FakeModel::start();
    model.push(Reply::text_chunks(["Hel", "lo", " there"]).usage(10, 2));
    let response = openai(&model);
    assert_eq!(response.status, 200);
    assert!(response.complete);
    let chunks = response.openai_chunks();
    // role, 3 deltas, finish, usage
    assert_eq!(chunks.len(), 6, "{chunks:?}");
    for chunk in &chunks {
        assert_eq!(chunk["id"], "chatcmpl-1");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
        assert!(chunk["created"].as_u64().is_some());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for chunk in &chunks[..4] {
        assert_eq!(chunk["choices"][0]["index"], 0);
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(chunk["usage"], Value::Null);
    }
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
    let (text, calls) = openai_assemble(&chunks);
    assert_eq!(text, "Hello there");
    assert!(calls.is_empty());
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})
    );
}

#[test]
fn openai_sends_usage_only_when_asked() {
    let model = FakeModel::start();
    let response = post(
        model.addr(),
        "/v1/chat/completions",
        &[],
        &openai_body(false),
    );
    let chunks = response.openai_chunks();
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    let (text, _) = openai_assemble(&chunks);
    assert_eq!(text, DEFAULT_TEXT);
    assert_eq!(
        chunks
            .last()
            .map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(json!("stop"))
    );
}

#[test]
fn openai_tool_calls_stream_in_pieces() {
    let model = FakeModel::start();
    let first = json!({"command": "echo hi"});
    let second = json!({"command": "ls -la /tmp", "timeout": 30});
    model.push(
        Reply::tool_call("call_1", "exec", first.clone())
            .with_text("Let me check.")
            .and_tool_call("call_2", "exec", second.clone()),
    );
    let chunks = openai(&model).openai_chunks();
    let (text, calls) = openai_assemble(&chunks);
    assert_eq!(text, "Let me check.");
    assert_eq!(calls.len(), 2);
    for ((id, name, pieces), (want_id, want_input)) in
        calls.iter().zip([("call_1", &first), ("call_2", &second)])
    {
        assert_eq!(id, want_id);
        assert_eq!(name, "exec");
        assert!(
            pieces.len() >= 2,
            "arguments in at least two pieces: {pieces:?}"
        );
        assert_eq!(&parse(&pieces.concat()), want_input);
    }
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "tool_calls");
    assert_eq!(finish["delta"], json!({}));
}

#[test]
fn openai_also_answers_without_the_v1_prefix() {
    let model = FakeModel::start();
    let response = post(model.addr(), "/chat/completions", &[], &openai_body(true));
    assert_eq!(response.status, 200);
    assert_eq!(openai_assemble(&response.openai_chunks()).0, DEFAULT_TEXT);
    assert_eq!(model.requests()[0].path, "/chat/completions");
    assert_eq!(model.requests()[0].api, Api::OpenAi);
}

#[test]
fn anthropic_text_stream_has_the_real_shape() {
    let model = FakeModel::start();
    model.push(Reply::text_chunks(["Hel", "lo"]).usage(42, 7));
    let response = anthropic(&model);
    assert_eq!(response.status, 200);
    assert!(response.complete);
    let events = response.anthropic_events();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let message = &events[0]["message"];
    assert_eq!(message["id"], "msg_1");
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-test");
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["stop_reason"], Value::Null);
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 42, "output_tokens": 1})
    );
    assert_eq!(
        events[1],
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        events[3]["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(events[4]["delta"]["text"], "lo");
    assert_eq!(events[5]["index"], 0);
    assert_eq!(events[6]["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[6]["usage"], json!({"output_tokens": 7}));
}

#[test]
fn anthropic_tool_use_streams_json_pieces() {
    let model = FakeModel::start();
    let first = json!({"command": "echo hi"});
    let second = json!({});
    model.push(
        Reply::tool_calls([
            ToolCall::new("toolu_1", "exec", first.clone()),
            ToolCall::new("toolu_2", "read", second.clone()),
        ])
        .with_text("Running."),
    );
    let events = anthropic(&model).anthropic_events();
    // Collect each block: its start and the joined deltas.
    let mut blocks: Vec<(Value, Vec<String>, bool)> = Vec::new();
    for event in &events {
        let index = event["index"].as_u64().map(|i| i as usize);
        match event["type"].as_str() {
            Some("content_block_start") => {
                assert_eq!(index, Some(blocks.len()));
                blocks.push((event["content_block"].clone(), Vec::new(), false));
            }
            Some("content_block_delta") => {
                let block = &mut blocks[index.expect("an index")];
                assert!(!block.2, "delta after stop");
                let delta = &event["delta"];
                let piece = match delta["type"].as_str() {
                    Some("text_delta") => delta["text"].as_str(),
                    Some("input_json_delta") => delta["partial_json"].as_str(),
                    other => panic!("unexpected delta {other:?}"),
                };
                block.1.push(piece.expect("delta text").to_owned());
            }
            Some("content_block_stop") => blocks[index.expect("an index")].2 = true,
            _ => {}
        }
    }
    assert_eq!(blocks.len(), 3);
    assert!(blocks.iter().all(|b| b.2), "every block stopped");
    assert_eq!(blocks[0].0["type"], "text");
    assert_eq!(blocks[0].1.concat(), "Running.");
    for ((start, pieces, _), (id, name, input)) in blocks[1..]
        .iter()
        .zip([("toolu_1", "exec", &first), ("toolu_2", "read", &second)])
    {
        assert_eq!(
            start,
            &json!({"type": "tool_use", "id": id, "name": name, "input": {}})
        );
        assert!(pieces.len() >= 2, "JSON in at least two pieces: {pieces:?}");
        assert_eq!(&parse(&pieces.concat()), input);
    }
    let delta = &events[events.len() - 2];
    assert_eq!(delta["type"], "message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[events.len() - 1]["type"], "message_stop");
}

#[test]
fn rate_limit_has_retry_after_in_both_shapes() {
    let model = FakeModel::start();
    model.push(Reply::status(429).retry_after_secs(1));
    model.push(Reply::status(429).retry_after_secs(3));
    let response = openai(&model);
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].is_string());

    let response = anthropic(&model);
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("3"));
    let body = response.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].is_string());
}

#[test]
fn server_errors_in_both_shapes() {
    let model = FakeModel::start();
    model.push(Reply::status(500));
    model.push(Reply::status(500).message("boom"));
    let response = openai(&model);
    assert_eq!(response.status, 500);
    assert!(response.header("retry-after").is_none());
    let body = response.json();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"].is_string());

    let response = anthropic(&model);
    assert_eq!(response.status, 500);
    assert_eq!(
        response.json(),
        json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})
    );
}

#[test]
fn context_length_in_both_shapes() {
    let model = FakeModel::start();
    model.push(Reply::context_length());
    model.push(Reply::context_length());
    let response = openai(&model);
    assert_eq!(response.status, 400);
    let error = &response.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "messages");
    assert_eq!(error["code"], "context_length_exceeded");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("This model's maximum context length is"))
    );

    let response = anthropic(&model);
    assert_eq!(response.status, 400);
    assert_eq!(
        response.json(),
        json!({"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 250000 tokens > 200000 maximum",
        }})
    );
}

#[test]
fn malformed_second_chunk_in_both_apis() {
    let model = FakeModel::start();
    model.push(Reply::malformed());
    model.push(Reply::malformed());
    for response in [openai(&model), anthropic(&model)] {
        assert_eq!(response.status, 200);
        let events = response.events();
        assert!(events.len() > 3);
        for (i, (_, data)) in events.iter().enumerate() {
            let valid = data == "[DONE]" || serde_json::from_str::<Value>(data).is_ok();
            assert_eq!(valid, i != 1, "chunk {i}: {data}");
        }
        assert_eq!(events[1].1, "{not json");
    }
}

#[test]
fn disconnect_truncates_the_stream() {
    let model = FakeModel::start();
    model.push(Reply::disconnect_after(3));
    model.push(Reply::disconnect_after(4));

    let response = openai(&model);
    assert_eq!(response.status, 200);
    assert!(!response.complete, "the body must not finish");
    let events = response.events();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|(_, d)| d != "[DONE]"));
    assert!(
        events
            .iter()
            .all(|(_, d)| serde_json::from_str::<Value>(d).is_ok())
    );
    assert_eq!(model.chunks_sent(), 3);

    let response = anthropic(&model);
    assert!(!response.complete);
    let events = response.anthropic_events();
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e["type"] != "message_stop"));
    assert_eq!(model.chunks_sent(), 7);
}

#[test]
fn requests_are_recorded_in_fifo_order() {
    let model = FakeModel::start();
    let one = Reply::text("one");
    let two = Reply::status(500);
    let three = Reply::tool_call("call_9", "exec", json!({"command": "true"}));
    model.push(one.clone());
    model.push(two.clone());
    model.push(three.clone());
    assert_eq!(model.queued(), 3);

    let r1 = post(
        model.addr(),
        "/v1/chat/completions",
        &[("X-Test", "Yes"), ("Authorization", "Bearer sk-any")],
        &openai_body(true),
    );
    assert_eq!(openai_assemble(&r1.openai_chunks()).0, "one");
    assert_eq!(anthropic(&model).status, 500);
    let r3 = openai(&model);
    assert_eq!(openai_assemble(&r3.openai_chunks()).1[0].0, "call_9");
    assert_eq!(model.queued(), 0);
    // The queue is empty: the default reply.
    let r4 = anthropic(&model);
    assert_eq!(r4.events().len(), 9);

    assert!(model.wait_for_requests(4, TIMEOUT));
    assert!(!model.wait_for_requests(5, Duration::from_millis(50)));
    assert_eq!(model.request_count(), 4);
    let recorded = model.requests();
    let apis: Vec<Api> = recorded.iter().map(|r| r.api).collect();
    assert_eq!(
        apis,
        [Api::OpenAi, Api::Anthropic, Api::OpenAi, Api::Anthropic]
    );
    let replies: Vec<&Reply> = recorded.iter().map(|r| &r.reply).collect();
    assert_eq!(replies, [&one, &two, &three, &Reply::default()]);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[1].path, "/v1/messages");
    assert_eq!(recorded[0].header("x-test"), Some("Yes"));
    assert!(
        recorded[0]
            .headers
            .iter()
            .any(|(n, v)| n == "x-test" && v == "Yes")
    );
    assert_eq!(recorded[0].header("authorization"), Some("Bearer sk-any"));
    assert_eq!(recorded[0].body, parse(&openai_body(true)));
    assert_eq!(recorded[1].body["system"], "be brief");
    assert_eq!(recorded[1].body["max_tokens"], 100);
}

#[test]
fn set_default_replaces_the_fallback() {
    let model = FakeModel::start();
    model.set_default(Reply::status(503));
    assert_eq!(openai(&model).status, 503);
    model.push(Reply::text("queued"));
    assert_eq!(openai_assemble(&openai(&model).openai_chunks()).0, "queued");
    assert_eq!(anthropic(&model).status, 503);
}

#[test]
fn key_check_rejects_in_each_shape_and_records() {
    let model = FakeModel::start_with_key("sk-secret");
    model.push(Reply::text("allowed"));
    model.push(Reply::text("allowed too"));

    let response = openai(&model);
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["error"]["code"], "invalid_api_key");
    let response = post(
        model.addr(),
        "/v1/chat/completions",
        &[("Authorization", "Bearer sk-secret")],
        &openai_body(true),
    );
    assert_eq!(response.status, 200);
    assert_eq!(openai_assemble(&response.openai_chunks()).0, "allowed");

    // The OpenAI header is not accepted by the Anthropic API.
    let response = post(
        model.addr(),
        "/v1/messages",
        &[("Authorization", "Bearer sk-secret")],
        &anthropic_body(),
    );
    assert_eq!(response.status, 401);
    let body = response.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let response = post(
        model.addr(),
        "/v1/messages",
        &[
            ("x-api-key", "sk-secret"),
            ("anthropic-version", "2023-06-01"),
        ],
        &anthropic_body(),
    );
    assert_eq!(response.status, 200);
    assert_eq!(model.queued(), 0);

    let statuses: Vec<u16> = model
        .requests()
        .iter()
        .map(|r| r.reply.status_code())
        .collect();
    assert_eq!(statuses, [401, 200, 401, 200]);
    assert_eq!(
        model.requests()[3].header("anthropic-version"),
        Some("2023-06-01")
    );
}

#[test]
fn a_body_that_is_not_json_gets_400_and_is_recorded() {
    let model = FakeModel::start();
    model.push(Reply::text("kept"));
    let response = post(model.addr(), "/v1/messages", &[], "{oops");
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["type"], "invalid_request_error");
    let recorded = model.requests();
    assert_eq!(recorded[0].body, json!("{oops"));
    assert_eq!(recorded[0].reply.status_code(), 400);
    assert_eq!(
        model.queued(),
        1,
        "a rejected request does not take a reply"
    );
}

#[test]
fn intervals_pace_the_stream_and_chunks_are_counted_as_sent() {
    let model = FakeModel::start();
    let chunks: Vec<String> = (0..10).map(|i| format!("{i} ")).collect();
    model.push(Reply::text_chunks(chunks).interval(Duration::from_millis(60)));
    let addr = model.addr();
    let started = Instant::now();
    let client =
        std::thread::spawn(move || post(addr, "/v1/chat/completions", &[], &openai_body(false)));
    assert!(model.wait_for_chunks(3, TIMEOUT));
    // role + 10 deltas + finish + [DONE]: far from done after three.
    assert!(model.chunks_sent() < 13);
    let response = client.join().expect("client thread");
    assert!(response.complete);
    assert!(started.elapsed() >= Duration::from_millis(60 * 12));
    assert_eq!(model.chunks_sent(), 13);
    assert_eq!(
        openai_assemble(&response.openai_chunks()).0,
        "0 1 2 3 4 5 6 7 8 9 "
    );
}

#[test]
fn concurrent_streams_are_all_served() {
    let model = FakeModel::start();
    let addr = model.addr();
    let clients: Vec<_> = (0..48)
        .map(|i| {
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    post(addr, "/v1/chat/completions", &[], &openai_body(false))
                } else {
                    post(addr, "/v1/messages", &[], &anthropic_body())
                }
            })
        })
        .collect();
    for client in clients {
        let response = client.join().expect("client thread");
        assert_eq!(response.status, 200);
        assert!(response.complete);
    }
    assert_eq!(model.request_count(), 48);
    // OpenAI without usage: role, 3 deltas, finish, [DONE]; Anthropic: start, block start,
    // ping, 3 deltas, block stop, message delta, message stop.
    assert_eq!(model.chunks_sent(), 24 * 6 + 24 * 9);
}

#[test]
fn drop_ends_open_streams_promptly() {
    let model = FakeModel::start();
    model.push(Reply::text_chunks(["a"; 50]).interval(Duration::from_millis(200)));
    let addr = model.addr();
    let client =
        std::thread::spawn(move || post(addr, "/v1/chat/completions", &[], &openai_body(false)));
    assert!(model.wait_for_chunks(1, TIMEOUT));
    let dropped = Instant::now();
    drop(model);
    assert!(dropped.elapsed() < Duration::from_secs(3));
    let response = client.join().expect("client thread");
    assert!(!response.complete);
}

#[test]
fn unknown_paths_are_404_and_not_recorded() {
    let model = FakeModel::start();
    let response = post(model.addr(), "/v1/completions", &[], &openai_body(false));
    assert_eq!(response.status, 404);
    assert_eq!(model.request_count(), 0);
    assert!(
        model
            .openai_base_url()
            .ends_with(&format!(":{}/v1", model.port()))
    );
    assert_eq!(
        model.anthropic_base_url(),
        format!("http://127.0.0.1:{}", model.port())
    );
}

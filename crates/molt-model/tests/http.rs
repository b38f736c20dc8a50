//! `Provider::stream` against a loopback HTTP/1.1 server that plays one scripted response
//! per connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use molt_config::{CallLimits, ProviderApi, ProviderConfig};
use molt_model::{CallRequest, ModelErrorKind, Provider, StreamEvent};
use molt_protocol::transcript::{Message, StopReason, UserMessage};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const KEY: &str = "sk-test-very-secret-key-0123456789";
/// Every wait in these tests ends by this.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the server does with one connection.
enum Step {
    /// Writes the bytes and closes.
    Reply(String),
    /// Writes the bytes, then waits for the client to close and reports it.
    Stall(String, mpsc::UnboundedSender<()>),
}

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Value,
}

/// Serves `steps`, one per connection; connections beyond them get a 503 (and are still
/// reported, so a test can tell an unwanted retry happened).
async fn serve(steps: Vec<Step>) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut steps = steps.into_iter();
        // Bounded: a test makes a handful of connections.
        for _ in 0..16 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let Some(seen) = read_request(&mut sock).await else {
                continue;
            };
            let _ = seen_tx.send(seen);
            match steps.next() {
                Some(Step::Reply(bytes)) => {
                    let _ = sock.write_all(bytes.as_bytes()).await;
                    let _ = sock.shutdown().await;
                }
                Some(Step::Stall(bytes, closed)) => {
                    let _ = sock.write_all(bytes.as_bytes()).await;
                    let _ = sock.flush().await;
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let end = tokio::time::Instant::now() + DEADLINE;
                        loop {
                            match tokio::time::timeout_at(end, sock.read(&mut buf)).await {
                                Ok(Ok(0)) | Ok(Err(_)) => {
                                    let _ = closed.send(());
                                    return;
                                }
                                Ok(Ok(_)) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
                None => {
                    let _ = sock
                        .write_all(status(503, "Service Unavailable", "", "unexpected").as_bytes())
                        .await;
                }
            }
        }
    });
    (addr, seen_rx)
}

async fn read_request(sock: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let end = tokio::time::Instant::now() + DEADLINE;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout_at(end, sock.read(&mut tmp))
            .await
            .ok()?
            .ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tokio::time::timeout_at(end, sock.read(&mut tmp))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    Some(Seen { head, body })
}

fn status(code: u16, reason: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

/// The response head of a chunked event stream.
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        transfer-encoding: chunked\r\nconnection: close\r\n\r\n";

/// One HTTP chunk.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

fn sse_reply(events: &[&str]) -> String {
    let mut s = SSE_HEAD.to_owned();
    for e in events {
        s.push_str(&chunk(e));
    }
    s.push_str("0\r\n\r\n");
    s
}

fn openai_text(text: &str) -> Vec<String> {
    vec![
        format!(
            "data: {{\"id\":\"chatcmpl-9\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}}}}]}}\n\n",
            serde_json::to_string(text).unwrap()
        ),
        "data: {\"id\":\"chatcmpl-9\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
            .into(),
        "data: {\"id\":\"chatcmpl-9\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n"
            .into(),
        "data: [DONE]\n\n".into(),
    ]
}

fn provider(api: ProviderApi, addr: SocketAddr, limits: CallLimits) -> Provider {
    let base_url = match api {
        ProviderApi::OpenAiCompletions => format!("http://{addr}/v1"),
        ProviderApi::AnthropicMessages => format!("http://{addr}"),
    };
    let config = ProviderConfig {
        api,
        base_url,
        api_key: None,
        api_key_env: Some("UNUSED".into()),
        models: vec![],
        headers: BTreeMap::from([("x-extra".to_owned(), "yes".to_owned())]),
        limits,
    };
    Provider::new("local", &config, KEY.to_owned()).unwrap()
}

/// Small limits, so a test that goes wrong fails fast.
fn limits() -> CallLimits {
    CallLimits {
        connect_timeout_ms: 2_000,
        first_byte_timeout_ms: 3_000,
        idle_timeout_ms: 3_000,
        total_timeout_ms: 8_000,
        max_retries: 2,
        retry_base_ms: 10,
        retry_max_ms: 50,
    }
}

fn history() -> Vec<Message> {
    vec![Message::User(UserMessage {
        content: "hello".into(),
        timestamp: 1,
        idempotency_key: None,
    })]
}

fn request(messages: &[Message]) -> CallRequest<'_> {
    CallRequest {
        model: "m-1",
        max_tokens: 32,
        system: "be brief",
        messages,
        tools: &[],
    }
}

/// Runs one call, collecting its events.
async fn call(
    p: &Provider,
) -> (
    Result<molt_protocol::transcript::AssistantMessage, molt_model::ModelError>,
    Vec<StreamEvent>,
) {
    let msgs = history();
    let mut events = Vec::new();
    let mut sink = |e: StreamEvent| events.push(e);
    let r = tokio::time::timeout(DEADLINE, p.stream(&request(&msgs), &mut sink))
        .await
        .expect("the call ends within the test deadline");
    (r, events)
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut v = Vec::new();
    while let Ok(s) = rx.try_recv() {
        v.push(s);
    }
    v
}

fn retries(events: &[StreamEvent]) -> Vec<(u32, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Retrying {
                attempt, delay_ms, ..
            } => Some((*attempt, *delay_ms)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn openai_text_stream_end_to_end() {
    let chunks = openai_text("Hello there");
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let (addr, mut seen) = serve(vec![Step::Reply(sse_reply(&refs))]).await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let (r, events) = call(&p).await;
    let m = r.unwrap();
    assert_eq!(m.text(), "Hello there");
    assert_eq!(m.api, "openai-completions");
    assert_eq!(m.provider, "local");
    assert_eq!(m.model, "m-1");
    assert_eq!(m.stop_reason, StopReason::Stop);
    assert_eq!(m.response_id.as_deref(), Some("chatcmpl-9"));
    assert_eq!(
        (m.usage.input, m.usage.output, m.usage.total_tokens),
        (7, 3, 10)
    );
    assert!(m.timestamp > 1_600_000_000_000);
    assert_eq!(events[0], StreamEvent::TextDelta("Hello there".into()));
    assert!(events.contains(&StreamEvent::Usage(m.usage)));

    let reqs = drain(&mut seen);
    assert_eq!(reqs.len(), 1);
    let head = reqs[0].head.to_ascii_lowercase();
    assert!(
        head.starts_with("post /v1/chat/completions http/1.1"),
        "{head}"
    );
    assert!(head.contains(&format!(
        "authorization: bearer {}",
        KEY.to_ascii_lowercase()
    )));
    assert!(head.contains("accept: text/event-stream"));
    assert!(head.contains("content-type: application/json"));
    assert!(head.contains("x-extra: yes"));
    assert_eq!(reqs[0].body["model"], "m-1");
    assert_eq!(reqs[0].body["stream"], true);
    assert_eq!(reqs[0].body["messages"][1]["content"], "hello");
}

#[tokio::test]
async fn anthropic_tool_call_stream_end_to_end() {
    let events = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_7\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"exec\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"command\\\":\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"ls\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    let (addr, mut seen) = serve(vec![Step::Reply(sse_reply(&events))]).await;
    let p = provider(ProviderApi::AnthropicMessages, addr, limits());
    let (r, evs) = call(&p).await;
    let m = r.unwrap();
    assert_eq!(m.api, "anthropic-messages");
    assert_eq!(m.stop_reason, StopReason::ToolUse);
    assert_eq!(m.response_id.as_deref(), Some("msg_7"));
    let calls: Vec<_> = m.tool_calls().collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "toolu_1");
    assert_eq!(calls[0].2, &serde_json::json!({"command": "ls"}));
    assert_eq!(
        (m.usage.input, m.usage.output, m.usage.total_tokens),
        (12, 9, 21)
    );
    assert!(evs.contains(&StreamEvent::ToolCallStarted {
        id: "toolu_1".into(),
        name: "exec".into()
    }));
    let reqs = drain(&mut seen);
    let head = reqs[0].head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/messages http/1.1"), "{head}");
    assert!(head.contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase())));
    assert!(head.contains("anthropic-version: 2023-06-01"));
    assert!(!head.contains("authorization"));
    assert_eq!(reqs[0].body["system"][0]["text"], "be brief");
}

#[tokio::test]
async fn rate_limit_with_retry_after_then_success() {
    let chunks = openai_text("ok");
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let (addr, mut seen) = serve(vec![
        Step::Reply(status(
            429,
            "Too Many Requests",
            "retry-after: 1\r\n",
            r#"{"error":{"message":"Rate limit reached"}}"#,
        )),
        Step::Reply(sse_reply(&refs)),
    ])
    .await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let started = Instant::now();
    let (r, events) = call(&p).await;
    assert_eq!(r.unwrap().text(), "ok");
    assert_eq!(retries(&events), vec![(1, 1000)]);
    assert!(started.elapsed() >= Duration::from_millis(950));
    match &events[0] {
        StreamEvent::Retrying {
            max_retries,
            reason,
            ..
        } => {
            assert_eq!(*max_retries, 2);
            assert!(reason.contains("429"), "{reason}");
        }
        e => panic!("first event {e:?}"),
    }
    assert_eq!(drain(&mut seen).len(), 2);
}

#[tokio::test]
async fn server_error_then_success_and_exhausted_retries() {
    let chunks = openai_text("ok");
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let (addr, _seen) = serve(vec![
        Step::Reply(status(500, "Internal Server Error", "", "{}")),
        Step::Reply(sse_reply(&refs)),
    ])
    .await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let (r, events) = call(&p).await;
    assert_eq!(r.unwrap().text(), "ok");
    let rs = retries(&events);
    assert_eq!(rs.len(), 1);
    assert!(rs[0].1 <= 50, "{rs:?}");

    // Every attempt fails: after max_retries the 5xx is an Http error.
    let (addr, mut seen) = serve(vec![]).await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let (r, events) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!((e.kind, e.http_status), (ModelErrorKind::Http, Some(503)));
    assert_eq!(retries(&events).len(), 2);
    assert_eq!(drain(&mut seen).len(), 3);
}

#[tokio::test]
async fn context_length_is_not_retried() {
    let body = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    let (addr, mut seen) = serve(vec![Step::Reply(status(400, "Bad Request", "", body))]).await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let (r, events) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::ContextLength);
    assert_eq!(e.kind.error_kind(), "context_length");
    assert_eq!(e.http_status, Some(400));
    assert!(!e.after_output);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(drain(&mut seen).len(), 1);
}

#[tokio::test]
async fn auth_failure_never_shows_the_key() {
    // Some providers echo the key they were sent.
    let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#);
    let (addr, mut seen) = serve(vec![Step::Reply(status(401, "Unauthorized", "", &body))]).await;
    let p = provider(ProviderApi::AnthropicMessages, addr, limits());
    let (r, events) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Auth);
    assert_eq!(e.http_status, Some(401));
    assert!(e.message.contains("401"), "{}", e.message);
    assert!(!e.message.contains(KEY), "{}", e.message);
    assert!(!e.to_string().contains(KEY));
    assert!(!format!("{e:?}").contains(KEY));
    assert!(!format!("{p:?}").contains(KEY));
    assert!(events.is_empty());
    assert_eq!(drain(&mut seen).len(), 1);
}

#[tokio::test]
async fn refused_connection_is_retried_then_fails() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let (r, events) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Connection);
    assert!(!e.after_output);
    assert_eq!(retries(&events).len(), 2);
}

#[tokio::test]
async fn mid_stream_disconnect_is_not_retried() {
    let chunks = openai_text("partial");
    // The first event, then the connection drops without the chunked terminator.
    let reply = format!("{SSE_HEAD}{}", chunk(&chunks[0]));
    let (addr, mut seen) = serve(vec![Step::Reply(reply)]).await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let (r, events) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Connection);
    assert!(e.after_output);
    assert_eq!(events, vec![StreamEvent::TextDelta("partial".into())]);
    assert_eq!(drain(&mut seen).len(), 1);
}

#[tokio::test]
async fn malformed_chunk_after_output_fails_without_retry() {
    let chunks = openai_text("partial");
    let reply = sse_reply(&[&chunks[0], "data: {broken\n\n"]);
    let (addr, mut seen) = serve(vec![Step::Reply(reply)]).await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let (r, _) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Malformed);
    assert!(e.after_output);
    assert_eq!(drain(&mut seen).len(), 1);
}

#[tokio::test]
async fn idle_stream_times_out() {
    let chunks = openai_text("first");
    let (closed_tx, _closed_rx) = mpsc::unbounded_channel();
    let reply = format!("{SSE_HEAD}{}", chunk(&chunks[0]));
    let (addr, _seen) = serve(vec![Step::Stall(reply, closed_tx)]).await;
    let p = provider(
        ProviderApi::OpenAiCompletions,
        addr,
        CallLimits {
            idle_timeout_ms: 300,
            ..limits()
        },
    );
    let started = Instant::now();
    let (r, events) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Timeout);
    assert!(e.message.contains("idle_timeout_ms"), "{}", e.message);
    assert!(e.after_output);
    assert_eq!(events, vec![StreamEvent::TextDelta("first".into())]);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn first_byte_timeout() {
    let (closed_tx, _closed_rx) = mpsc::unbounded_channel();
    // The request is read but no response comes.
    let (addr, _seen) = serve(vec![Step::Stall(String::new(), closed_tx)]).await;
    let p = provider(
        ProviderApi::AnthropicMessages,
        addr,
        CallLimits {
            first_byte_timeout_ms: 300,
            ..limits()
        },
    );
    let (r, events) = call(&p).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Timeout);
    assert_eq!(e.kind.error_kind(), "timeout");
    assert!(e.message.contains("first_byte_timeout_ms"), "{}", e.message);
    assert!(events.is_empty());
}

#[tokio::test]
async fn dropping_the_future_closes_the_connection() {
    let chunks = openai_text("first");
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let reply = format!("{SSE_HEAD}{}", chunk(&chunks[0]));
    let (addr, _seen) = serve(vec![Step::Stall(reply, closed_tx)]).await;
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let msgs = history();
    let req = request(&msgs);
    let (delta_tx, mut delta_rx) = mpsc::unbounded_channel();
    let mut sink = move |e: StreamEvent| {
        let _ = delta_tx.send(e);
    };
    {
        let call = p.stream(&req, &mut sink);
        tokio::select! {
            r = call => panic!("the call ended on its own: {r:?}"),
            first = delta_rx.recv() => {
                assert_eq!(first, Some(StreamEvent::TextDelta("first".into())));
            }
            _ = tokio::time::sleep(DEADLINE) => panic!("no output within the deadline"),
        }
        // `call` is dropped here, mid-stream.
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), closed_rx.recv()).await;
    assert_eq!(closed, Ok(Some(())), "the server saw no close");
}

/// The gateway spawns calls on a multi-threaded runtime.
#[test]
fn the_call_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let p = provider(ProviderApi::OpenAiCompletions, addr, limits());
    let msgs = history();
    let req = request(&msgs);
    let mut sink = |_: StreamEvent| {};
    let fut = p.stream(&req, &mut sink);
    assert_send(&fut);
}

#[tokio::test]
async fn anthropic_overload_before_output_is_retried() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5}}}\n\n";
    let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let ok = [
        start,
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"fine\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    let (addr, mut seen) = serve(vec![
        Step::Reply(sse_reply(&[start, overloaded])),
        Step::Reply(sse_reply(&ok)),
    ])
    .await;
    let p = provider(ProviderApi::AnthropicMessages, addr, limits());
    let (r, events) = call(&p).await;
    let m = r.unwrap();
    assert_eq!(m.text(), "fine");
    assert_eq!(m.stop_reason, StopReason::Stop);
    assert_eq!(retries(&events).len(), 1);
    assert_eq!(drain(&mut seen).len(), 2);
}

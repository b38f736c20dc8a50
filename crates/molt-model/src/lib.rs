//! Model providers for molt's agent: one streamed call of an OpenAI-compatible chat
//! completions API or the Anthropic Messages API, with timeouts and retries.
//!
//! The gateway builds one [`Provider`] per `[models.providers.<name>]` at start and calls
//! [`Provider::stream`] once per model step. Dropping the returned future closes the HTTP
//! stream at once: that is how a turn is aborted.
//!
//! # Timeouts
//!
//! Every limit comes from the provider's [`CallLimits`]; 0 turns a limit off.
//! `connect_timeout_ms` bounds the TCP (and TLS) connect, `first_byte_timeout_ms` the time
//! from sending the request to the response headers, `idle_timeout_ms` the gap between two
//! body chunks, and `total_timeout_ms` one attempt from start to end. The total applies to
//! each attempt rather than to the whole call: the waits between retries are bounded on
//! their own (`retry_max_ms`, `retry-after` at most 60 s), and a retried call should get
//! the same time as a first one.
//!
//! # Retries
//!
//! 429, 5xx, connection failures and Anthropic's in-stream `overloaded_error` are retried
//! up to `max_retries` times, but only while no output (text or a tool call) has reached
//! the caller; a [`StreamEvent::Retrying`] precedes each wait. Everything else fails at
//! once.

mod accum;
mod anthropic;
mod openai;
mod retry;
mod sse;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use molt_config::{CallLimits, ProviderApi, ProviderConfig};
use molt_protocol::transcript::{AssistantMessage, Message, Usage};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;

use accum::{Decoder, Emitter, Failure, Flow, Parts};
use anthropic::AnthropicDecoder;
use openai::OpenAiDecoder;
use sse::{SseEvent, SseParser};

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// A JSON Schema object for the arguments.
    pub parameters: Value,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct CallRequest<'a> {
    /// The model id as the provider knows it (`fake-1`).
    pub model: &'a str,
    /// The output cap (`max_completion_tokens` / `max_tokens`).
    pub max_tokens: u64,
    /// The system prompt; omitted from the request when empty.
    pub system: &'a str,
    /// The conversation, oldest first. `System` markers are skipped.
    pub messages: &'a [Message],
    /// Tools the model may call; none means the request offers no tools.
    pub tools: &'a [ToolSpec],
}

/// What a call reports while it streams.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The request failed in a retryable way before any output; the call waits `delay_ms`
    /// and tries again.
    Retrying {
        /// Which retry this is, from 1.
        attempt: u32,
        /// `limits.max_retries`.
        max_retries: u32,
        /// The wait before it.
        delay_ms: u64,
        /// What failed, e.g. `rate limited (HTTP 429): ...`.
        reason: String,
    },
    /// New assistant text.
    TextDelta(String),
    /// The model began a tool call.
    ToolCallStarted {
        /// The provider's call id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// Usage as reported so far.
    Usage(Usage),
}

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The prompt is too long for the model (HTTP 400 `context_length_exceeded` and kin).
    ContextLength,
    /// 429 after every retry.
    RateLimit,
    /// Connect, first byte, idle gap or total time ran out.
    Timeout,
    /// 401/403: the key is wrong.
    Auth,
    /// The stream could not be parsed.
    Malformed,
    /// The connection dropped, or could not be made, after every retry.
    Connection,
    /// Any other HTTP error.
    Http,
}

impl ModelErrorKind {
    /// The chat event's `errorKind`: `context_length`, `rate_limit`, `timeout` or `unknown`.
    pub fn error_kind(self) -> &'static str {
        match self {
            Self::ContextLength => "context_length",
            Self::RateLimit => "rate_limit",
            Self::Timeout => "timeout",
            _ => "unknown",
        }
    }
}

/// A failed call. The message never contains the API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    /// The class of failure.
    pub kind: ModelErrorKind,
    /// What happened, naming the provider; never the key.
    pub message: String,
    /// The HTTP status when the provider answered with an error.
    pub http_status: Option<u16>,
    /// Whether output had already streamed when it failed (then a retry would repeat it).
    pub after_output: bool,
}

/// The most of an error response's body read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One configured provider, ready to call.
pub struct Provider {
    /// The `[models.providers.<name>]` key.
    pub name: String,
    /// The wire API it speaks.
    pub api: ProviderApi,
    config: ProviderConfig,
    api_key: String,
    client: reqwest::Client,
    /// The endpoint, from `base_url` and the API.
    url: reqwest::Url,
    /// Content type, accept, auth and the configured extras; the key is marked sensitive.
    headers: HeaderMap,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: the derived form would print the key.
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("api", &self.api)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Builds the provider's HTTP client. `api_key` is resolved by the caller.
    pub fn new(name: &str, config: &ProviderConfig, api_key: String) -> Result<Self, ModelError> {
        let fail = |message: String| ModelError {
            kind: ModelErrorKind::Http,
            message: redact(format!("{name}: {message}"), &api_key),
            http_status: None,
            after_output: false,
        };
        let base = config.base_url.trim_end_matches('/');
        let url = match config.api {
            ProviderApi::OpenAiCompletions => format!("{base}/chat/completions"),
            ProviderApi::AnthropicMessages => format!("{base}/v1/messages"),
        };
        let url = reqwest::Url::parse(&url).map_err(|e| {
            fail(format!(
                "base_url {:?} is not a valid URL: {e}",
                config.base_url
            ))
        })?;

        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let key_value = |v: String| {
            HeaderValue::from_str(&v)
                .map(|mut h| {
                    h.set_sensitive(true);
                    h
                })
                .map_err(|_| fail("the API key holds characters a header cannot carry".into()))
        };
        match config.api {
            ProviderApi::OpenAiCompletions => {
                headers.insert(
                    reqwest::header::AUTHORIZATION,
                    key_value(format!("Bearer {api_key}"))?,
                );
            }
            ProviderApi::AnthropicMessages => {
                headers.insert("x-api-key", key_value(api_key.clone())?);
                headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
        }
        // Configured headers come last, so they may override the defaults above.
        for (k, v) in &config.headers {
            let hn = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| fail(format!("headers: {k:?} is not a valid header name: {e}")))?;
            let hv = HeaderValue::from_str(v)
                .map_err(|e| fail(format!("headers: the value of {k:?} is not valid: {e}")))?;
            headers.insert(hn, hv);
        }

        // One provider for the process; a second install fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder =
            reqwest::Client::builder().user_agent(concat!("molt/", env!("CARGO_PKG_VERSION")));
        if config.limits.connect_timeout_ms > 0 {
            builder =
                builder.connect_timeout(Duration::from_millis(config.limits.connect_timeout_ms));
        }
        let client = builder
            .build()
            .map_err(|e| fail(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Self {
            name: name.to_owned(),
            api: config.api,
            config: config.clone(),
            api_key,
            client,
            url,
            headers,
        })
    }

    /// Streams one call to its end. `on_event` sees deltas as they arrive.
    ///
    /// Dropping the future aborts the call: the response (and so its connection) is owned
    /// by the future, and reqwest closes a connection whose body was not read to its end
    /// instead of returning it to the pool.
    pub async fn stream(
        &self,
        request: &CallRequest<'_>,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<AssistantMessage, ModelError> {
        let body = match self.api {
            ProviderApi::OpenAiCompletions => openai::build_body(request),
            ProviderApi::AnthropicMessages => anthropic::build_body(request),
        };
        let body = serde_json::to_vec(&body).map_err(|e| {
            self.error(
                Failure::malformed(format!("cannot encode the request: {e}")),
                false,
                0,
            )
        })?;
        let limits = &self.config.limits;
        let mut retry = 0u32;
        loop {
            let mut out = Emitter::new(&mut *on_event);
            let result = match self.api {
                ProviderApi::OpenAiCompletions => {
                    self.attempt(&body, &mut out, OpenAiDecoder::new()).await
                }
                ProviderApi::AnthropicMessages => {
                    self.attempt(&body, &mut out, AnthropicDecoder::new()).await
                }
            };
            let output = out.output;
            match result {
                Ok(parts) => return Ok(self.message(request.model, parts)),
                Err(f) if f.retryable && !output && retry < limits.max_retries => {
                    retry += 1;
                    let wait = retry::delay(limits, retry, f.retry_after);
                    let reason = self.redact(f.message);
                    tracing::warn!(
                        provider = %self.name,
                        retry,
                        max_retries = limits.max_retries,
                        delay_ms = wait.as_millis() as u64,
                        %reason,
                        "model call failed; retrying"
                    );
                    on_event(StreamEvent::Retrying {
                        attempt: retry,
                        max_retries: limits.max_retries,
                        delay_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        reason,
                    });
                    tokio::time::sleep(wait).await;
                }
                Err(f) => return Err(self.error(f, output, retry)),
            }
        }
    }

    /// One HTTP request and its stream, bounded by the first-byte, idle and total limits.
    async fn attempt<D: Decoder>(
        &self,
        body: &[u8],
        out: &mut Emitter<'_>,
        mut decoder: D,
    ) -> Result<Parts, Failure> {
        let limits = &self.config.limits;
        let clock = Clock::start(limits);
        tracing::debug!(provider = %self.name, url = %self.url, "model call");
        let send = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body.to_vec())
            .send();
        let mut resp = clock
            .within(send, limits.first_byte_timeout_ms, "first_byte_timeout_ms")
            .await?
            .map_err(|e| send_failure(&e, limits))?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let body = read_error_body(&mut resp, &clock, limits).await;
            return Err(retry::classify_status(status.as_u16(), &body, &headers));
        }
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        loop {
            let chunk = clock
                .within(resp.chunk(), limits.idle_timeout_ms, "idle_timeout_ms")
                .await?;
            match chunk {
                Ok(Some(bytes)) => {
                    parser
                        .push(&bytes, &mut events)
                        .map_err(Failure::malformed)?;
                    if feed(&mut decoder, &mut events, out)? == Flow::Done {
                        return decoder.finish(true);
                    }
                }
                Ok(None) => {
                    parser.finish(&mut events);
                    let flow = feed(&mut decoder, &mut events, out)?;
                    return decoder.finish(flow == Flow::Done);
                }
                Err(e) => {
                    let mut f = Failure::new(
                        ModelErrorKind::Connection,
                        format!("the stream broke: {}", chain(&e)),
                    );
                    f.retryable = true;
                    return Err(f);
                }
            }
        }
    }

    fn message(&self, model: &str, parts: Parts) -> AssistantMessage {
        AssistantMessage {
            content: parts.content,
            api: self.api.as_str().to_owned(),
            provider: self.name.clone(),
            model: model.to_owned(),
            usage: parts.usage,
            stop_reason: parts.stop_reason,
            timestamp: now_ms(),
            response_id: parts.response_id,
        }
    }

    fn error(&self, f: Failure, after_output: bool, retries: u32) -> ModelError {
        let mut message = format!("{}: {}", self.name, f.message);
        if retries > 0 {
            message.push_str(&format!(
                " (after {retries} {})",
                if retries == 1 { "retry" } else { "retries" }
            ));
        }
        ModelError {
            kind: f.kind,
            message: self.redact(message),
            http_status: f.http_status,
            after_output,
        }
    }

    fn redact(&self, s: String) -> String {
        redact(s, &self.api_key)
    }
}

/// Hands parsed events to the decoder; stops at its end marker.
fn feed<D: Decoder>(
    decoder: &mut D,
    events: &mut Vec<SseEvent>,
    out: &mut Emitter<'_>,
) -> Result<Flow, Failure> {
    for ev in events.drain(..) {
        if decoder.on_event(&ev, out)? == Flow::Done {
            return Ok(Flow::Done);
        }
    }
    Ok(Flow::More)
}

/// Best effort: what the error response says, up to [`MAX_ERROR_BODY`]; a body that
/// stalls or breaks yields what arrived.
async fn read_error_body(
    resp: &mut reqwest::Response,
    clock: &Clock,
    limits: &CallLimits,
) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match clock
            .within(resp.chunk(), limits.idle_timeout_ms, "idle_timeout_ms")
            .await
        {
            Ok(Ok(Some(b))) => body.extend_from_slice(&b),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    body
}

/// Why `send` failed: a connect timeout, or a connection that could not be made or broke
/// before the response (retryable).
fn send_failure(e: &reqwest::Error, limits: &CallLimits) -> Failure {
    if e.is_timeout() {
        return Failure::new(
            ModelErrorKind::Timeout,
            format!(
                "could not connect within {} ms (connect_timeout_ms)",
                limits.connect_timeout_ms
            ),
        );
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut f = Failure::new(ModelErrorKind::Connection, format!("{what}: {}", chain(e)));
    f.retryable = !e.is_builder();
    f
}

/// An error and its sources, `: `-joined (reqwest's own message hides the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    // Bounded: source chains are short, but a cyclic one must not hang.
    for _ in 0..8 {
        let Some(c) = src else { break };
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn redact(s: String, key: &str) -> String {
    if key.is_empty() {
        s
    } else {
        s.replace(key, "[redacted]")
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One attempt's deadlines.
struct Clock {
    total_at: Option<Instant>,
    total_ms: u64,
}

impl Clock {
    fn start(limits: &CallLimits) -> Self {
        Self {
            total_at: after(limits.total_timeout_ms),
            total_ms: limits.total_timeout_ms,
        }
    }

    /// Runs `fut` until the `limit_ms` limit (named `limit` in the error) or the attempt's
    /// total runs out, whichever is first.
    async fn within<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
        limit_ms: u64,
        limit: &str,
    ) -> Result<T, Failure> {
        let own = after(limit_ms);
        let (at, ms, name) = match (own, self.total_at) {
            (Some(o), Some(t)) if t < o => (t, self.total_ms, "total_timeout_ms"),
            (Some(o), _) => (o, limit_ms, limit),
            (None, Some(t)) => (t, self.total_ms, "total_timeout_ms"),
            (None, None) => return Ok(fut.await),
        };
        tokio::time::timeout_at(at, fut).await.map_err(|_| {
            let what = match name {
                "first_byte_timeout_ms" => "no response",
                "idle_timeout_ms" => "the stream went silent",
                _ => "the call did not finish",
            };
            Failure::new(
                ModelErrorKind::Timeout,
                format!("{what} within {ms} ms ({name})"),
            )
        })
    }
}

/// `ms` from now; `None` for 0 (no limit) or a limit too far to represent.
fn after(ms: u64) -> Option<Instant> {
    if ms == 0 {
        return None;
    }
    Instant::now().checked_add(Duration::from_millis(ms))
}

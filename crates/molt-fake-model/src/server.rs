//! The server: a thread with its own tokio runtime serving axum on loopback.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::reply::{Kind, Reply};
use crate::wire::{Piece, StreamCtx, error_body, stream_pieces};

/// Which API a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI-compatible chat completions (`/v1/chat/completions`, `/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

/// One request the fake model received, recorded before it was answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The API the request's path belongs to.
    pub api: Api,
    /// The request path, such as `/v1/messages`.
    pub path: String,
    /// Every header, names lowercased, values lossily decoded, in the order received.
    pub headers: Vec<(String, String)>,
    /// The JSON body; a body that is not JSON is kept as a JSON string of its text.
    pub body: Value,
    /// The reply it got: a scripted or default one, or `Reply::status(401)` / `(400)` when
    /// the key check or the body's JSON failed (those do not consume the queue).
    pub reply: Reply,
    /// When the handler got the complete request (headers and body), before answering.
    pub received_at: Instant,
}

/// When one SSE data chunk was handed to its connection (see
/// [`FakeModel::record_chunk_times`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSent {
    /// The request it answers: its number from 1, so `requests()[request - 1]`.
    pub request: usize,
    /// Its position among that response's SSE data chunks, from 0 (for OpenAI, chunk 0 is
    /// the role chunk and text chunk `i` is chunk `i + 1`).
    pub index: usize,
    /// When the body stream yielded it to the HTTP connection, just before it is written.
    pub at: Instant,
}

impl Recorded {
    /// The first value of the header with this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// State shared by the handlers and the test's handle.
struct Shared {
    state: Mutex<ScriptState>,
    /// Signalled whenever a request is recorded, for `wait_for_requests`.
    arrived: Condvar,
    chunks_sent: AtomicUsize,
    /// Whether `chunk_log` records each chunk (off unless a bench asks: it takes a lock).
    log_chunks: AtomicBool,
    chunk_log: Mutex<Vec<ChunkSent>>,
    key: Option<String>,
}

struct ScriptState {
    queue: VecDeque<Reply>,
    default: Reply,
    requests: Vec<Recorded>,
}

impl Shared {
    // A panicking test thread must not wedge the server for the others: ignore poisoning.
    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A scripted fake model server on `127.0.0.1`, speaking OpenAI chat completions and
/// Anthropic Messages, both streamed over SSE.
///
/// It runs on its own thread with its own multi-thread tokio runtime, so sync and async
/// tests alike can use it; dropping it stops the server and closes open streams.
///
/// Each request pops one [`Reply`] from a FIFO queue shared by both APIs
/// ([`FakeModel::push`]), or gets the default reply ([`FakeModel::set_default`]) when the
/// queue is empty.
pub struct FakeModel {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeModel")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl FakeModel {
    /// Starts a server on `127.0.0.1` with a free port and no key check.
    ///
    /// # Panics
    /// If the port cannot be bound or the runtime or thread cannot start: a test cannot go
    /// on without its server.
    pub fn start() -> FakeModel {
        FakeModel::launch(None)
    }

    /// Starts a server that answers 401 (in the API's shape) to requests without
    /// `authorization: Bearer <key>` (OpenAI) or `x-api-key: <key>` (Anthropic).
    ///
    /// # Panics
    /// As [`FakeModel::start`].
    pub fn start_with_key(key: impl Into<String>) -> FakeModel {
        FakeModel::launch(Some(key.into()))
    }

    fn launch(key: Option<String>) -> FakeModel {
        // Bind before returning so the port is ready the moment the caller has it.
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("fake model: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake model: no local address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("fake model: cannot make the listener non-blocking: {e}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("fake-model")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("fake model: cannot build a tokio runtime: {e}"));

        let shared = Arc::new(Shared {
            state: Mutex::new(ScriptState {
                queue: VecDeque::new(),
                default: Reply::default(),
                requests: Vec::new(),
            }),
            arrived: Condvar::new(),
            chunks_sent: AtomicUsize::new(0),
            log_chunks: AtomicBool::new(false),
            chunk_log: Mutex::new(Vec::new()),
            key,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            // Context-length tests send big prompts; axum's 2 MB default would refuse them.
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));

        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-model".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => panic!("fake model: cannot register the listener: {e}"),
                    };
                    // SSE chunks are small: without NODELAY, Nagle would hold them back.
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        _ = axum::serve(listener, app).into_future() => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels the open connections' tasks, so a stream still
                // in flight ends rather than keeping the drop waiting.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .unwrap_or_else(|e| panic!("fake model: cannot spawn the server thread: {e}"));

        FakeModel {
            shared,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address it listens on (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://127.0.0.1:<port>/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Anthropic base URL, `http://127.0.0.1:<port>`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a reply; each request takes the oldest one, whichever API it came in on.
    pub fn push(&self, reply: Reply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// Sets the reply used when the queue is empty. The initial default is the text
    /// [`crate::DEFAULT_TEXT`] in three chunks.
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }

    /// How many queued replies are still waiting for a request.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Every request received so far, in the order they were answered.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// How many requests have been received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// SSE data chunks handed to connections so far, across all streams (each SSE event
    /// counts once, including `[DONE]` and `ping`).
    pub fn chunks_sent(&self) -> usize {
        self.shared.chunks_sent.load(Ordering::SeqCst)
    }

    /// Starts (`true`) or stops recording when each SSE data chunk is sent, for
    /// [`FakeModel::chunk_times`]. Off by default.
    pub fn record_chunk_times(&self, on: bool) {
        self.shared.log_chunks.store(on, Ordering::SeqCst);
    }

    /// Every SSE data chunk sent while recording was on, in the order they were sent.
    pub fn chunk_times(&self) -> Vec<ChunkSent> {
        self.shared
            .chunk_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the chunk times recorded so far.
    pub fn clear_chunk_times(&self) {
        self.shared
            .chunk_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Waits until at least `n` requests have been received; false if `timeout` passed first.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.shared.arrived.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Waits until at least `n` SSE chunks have been sent; false if `timeout` passed first.
    /// Polls every millisecond: chunks are counted from the server's hot path, which is
    /// kept free of locks.
    pub fn wait_for_chunks(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.chunks_sent() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been reported; don't panic in drop.
            let _ = thread.join();
        }
    }
}

async fn openai(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(Api::OpenAi, &shared, &uri, &headers, &body)
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(Api::Anthropic, &shared, &uri, &headers, &body)
}

/// Records the request, picks its reply and builds the response.
fn answer(
    api: Api,
    shared: &Arc<Shared>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let received_at = Instant::now();
    let parsed = serde_json::from_slice::<Value>(body);
    let rejection = if !key_ok(api, shared.key.as_deref(), headers) {
        Some(Reply::status(401))
    } else if let Err(e) = &parsed {
        Some(Reply::status(400).message(format!("fake model: the request body is not JSON: {e}")))
    } else {
        None
    };
    let body_value = match parsed {
        Ok(value) => value,
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    };
    let model = body_value
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let include_usage = body_value
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    // Pop and record under one lock, so the recorded order is the order replies were taken.
    let (reply, seq) = {
        let mut state = shared.lock();
        let reply = match rejection {
            Some(reply) => reply,
            None => match state.queue.pop_front() {
                Some(reply) => reply,
                None => state.default.clone(),
            },
        };
        state.requests.push(Recorded {
            api,
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body_value,
            reply: reply.clone(),
            received_at,
        });
        let seq = state.requests.len();
        drop(state);
        shared.arrived.notify_all();
        (reply, seq)
    };

    let request_id = match api {
        Api::OpenAi => ("x-request-id", format!("req_fake_{seq}")),
        Api::Anthropic => ("request-id", format!("req_fake_{seq}")),
    };
    let mut response = match reply.kind {
        Kind::Status(_) | Kind::ContextLength => error_response(api, &reply),
        Kind::Stream { .. } | Kind::Malformed | Kind::DisconnectAfter(_) => {
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let ctx = StreamCtx {
                seq,
                model: &model,
                created,
                include_usage,
                prompt_tokens: (body.len() as u64 / 4).max(1),
            };
            let pieces = stream_pieces(api, &reply, &ctx);
            let mut response = Response::new(Body::from_stream(body_stream(
                pieces,
                reply.interval,
                Arc::clone(shared),
                seq,
            )));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id.1) {
        response.headers_mut().insert(request_id.0, value);
    }
    response
}

fn key_ok(api: Api, key: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(key) = key else {
        return true;
    };
    let value = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    match api {
        Api::OpenAi => value(header::AUTHORIZATION)
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| k == key),
        Api::Anthropic => {
            value(header::HeaderName::from_static("x-api-key")).is_some_and(|k| k == key)
        }
    }
}

fn error_response(api: Api, reply: &Reply) -> Response {
    let status =
        StatusCode::from_u16(reply.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(error_body(api, reply).to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// How long to wait before aborting a cut-off stream: the pause lets hyper flush the chunks
/// already written, which an immediate error would discard with the connection.
const ABORT_GRACE: Duration = Duration::from_millis(20);

fn body_stream(
    pieces: Vec<Piece>,
    interval: Duration,
    shared: Arc<Shared>,
    request: usize,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(
        (pieces.into_iter().enumerate(), true, shared),
        move |(mut pieces, first, shared)| async move {
            let (index, piece) = pieces.next()?;
            if !first && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let item = match piece {
                Piece::Data(bytes) => {
                    shared.chunks_sent.fetch_add(1, Ordering::SeqCst);
                    if shared.log_chunks.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        shared
                            .chunk_log
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(ChunkSent { request, index, at });
                    }
                    Ok(bytes)
                }
                Piece::Abort => {
                    tokio::time::sleep(ABORT_GRACE).await;
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake model: scripted disconnect",
                    ))
                }
            };
            Some((item, (pieces, false, shared)))
        },
    )
}

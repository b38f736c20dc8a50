//! The one port: HTTP probes, the web chat page (`webchat.rs`) and WebSocket upgrades.
//!
//! The accept loop is our own (hyper's HTTP/1 connection driver under an axum router), not
//! `axum::serve`, because a handover needs "stop accepting, but finish every connection
//! already accepted": a graceful shutdown would close accepted connections that have not
//! sent their request yet, and their clients would see a reset.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

use crate::app::{App, Lifecycle};
use crate::router::Router as Methods;

/// What every HTTP handler gets: the shared state and the method router.
#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    methods: Arc<Methods>,
    webchat: Arc<WebChat>,
}
use crate::pending::Ticket;
use crate::webchat::WebChat;

/// Builds the accept loop on an already-bound listener. It ends when `app.accepting` turns
/// false; connections it accepted go on in their own tasks, counted in
/// `app.http_connections`. Until it authenticates, each holds a place in `app.pending`, and
/// each HTTP request must arrive complete within `header_timeout`. `webchat` serves the
/// chat page and decides which browser origins may open a WebSocket.
pub fn serve(
    app: Arc<App>,
    methods: Arc<Methods>,
    listener: TcpListener,
    header_timeout: Duration,
    webchat: WebChat,
) -> std::io::Result<impl Future<Output = ()> + Send> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(get(upgrade))
        .with_state(Shared {
            app: app.clone(),
            methods,
            webchat: Arc::new(webchat),
        });
    let mut accepting = app.accepting.subscribe();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // Covers the first request and every idle wait for the next one on a kept-alive
    // connection, so a silent socket cannot hold its descriptor for long.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut accept_errors = AcceptErrors::default();
    Ok(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: log (not a line per failure), back off a
                        // little, keep the port open.
                        accept_errors.record(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { drop(accepting.wait_for(|a| !*a).await) } => break,
            };
            let _ = stream.set_nodelay(true);
            let guard = HttpGuard::new(app.clone());
            let router = router.clone();
            let ticket = Arc::new(app.pending.admit(peer.ip()));
            let http1 = http1.clone();
            tokio::spawn(async move {
                let t = ticket.clone();
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        t.engage();
                        req.extensions_mut().insert(ConnectInfo(peer));
                        req.extensions_mut().insert(t.clone());
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    },
                );
                let conn = http1
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "http connection ended with an error");
                    },
                    // Dropping the connection closes the socket.
                    _ = ticket.shed() => {
                        tracing::debug!(%peer, "unauthenticated connection shed for a newer one");
                    }
                }
                drop(guard);
            });
        }
        tracing::info!("accept loop ended: a successor accepts now");
    })
}

/// Accept failures, logged at most once a second with how many there were.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn record(&mut self, e: &std::io::Error) {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            tracing::warn!(error = %e, failures = self.unlogged, "accept failed");
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

/// Initial WebSocket read and write buffer size per connection.
const WS_BUFFER: usize = 8 * 1024;

/// Counts one accepted HTTP connection for as long as it is served.
struct HttpGuard(Arc<App>);

impl HttpGuard {
    fn new(app: Arc<App>) -> Self {
        app.http_connections.send_modify(|n| *n += 1);
        Self(app)
    }
}

impl Drop for HttpGuard {
    fn drop(&mut self) {
        self.0
            .http_connections
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A probe answer; once this process no longer serves, it asks the client to reconnect
/// (`Connection: close`) so keep-alive probes move to the successor.
fn probe(app: &App, status: StatusCode) -> Response {
    let mut res = (status, Json(app.probe())).into_response();
    if app.state() != Lifecycle::Serving {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

async fn healthz(State(Shared { app, .. }): State<Shared>) -> Response {
    probe(&app, StatusCode::OK)
}

async fn readyz(State(Shared { app, .. }): State<Shared>) -> Response {
    let status = if app.state() == Lifecycle::Serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    probe(&app, status)
}

/// Every path but the probes: a WebSocket upgrade (at any path, as before the page
/// existed), else the chat page when the path is its, else 404.
async fn upgrade(
    State(Shared {
        app,
        methods,
        webchat,
    }): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(ticket): Extension<Arc<Ticket>>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        if let Some(page) = webchat.page(uri.path()) {
            return page;
        }
        return (
            StatusCode::NOT_FOUND,
            "molt gateway: connect with WebSocket (OpenClaw protocol v4), or GET /healthz, /readyz\n",
        )
            .into_response();
    };
    if !webchat.origin_allowed(&headers) {
        tracing::warn!(%peer, origin = ?headers.get(header::ORIGIN), "WebSocket from a web origin that is not allowed; refused (gateway.control_ui.allowed_origins)");
        return (
            StatusCode::FORBIDDEN,
            "molt gateway: this web origin may not connect; add it to gateway.control_ui.allowed_origins\n",
        )
            .into_response();
    }
    // A proxied request is not "direct loopback", even when the proxy is local.
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    // Counted before the 101 response leaves, so a process that waits for its HTTP
    // connections and then for its WebSocket connections before exiting misses none.
    let counted = crate::app::ConnectionGuard::new(app.clone());
    // Buffers start small: most frames are a few hundred bytes, and the 128 KiB defaults
    // would cost 256 KiB per idle client. They still grow for a large frame.
    ws.max_message_size(molt_protocol::MAX_PAYLOAD)
        .max_frame_size(molt_protocol::MAX_PAYLOAD)
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(WS_BUFFER)
        .max_write_buffer_size(molt_protocol::MAX_BUFFERED_BYTES)
        .on_upgrade(move |socket| {
            crate::ws::serve_conn(app, methods, socket, peer, proxied, counted, ticket)
        })
}

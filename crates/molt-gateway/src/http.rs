//! The one port: HTTP probes and WebSocket upgrades.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::app::{App, Lifecycle};

/// Builds the server future on an already-bound listener.
pub fn serve(
    app: Arc<App>,
    listener: TcpListener,
) -> std::io::Result<impl Future<Output = ()> + Send> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(get(upgrade));
    let mut accepting = app.accepting.subscribe();
    let router = router.with_state(app);
    Ok(async move {
        let svc = router.into_make_service_with_connect_info::<SocketAddr>();
        // Ends the accept loop when a successor takes over; the socket stays open in it.
        let handed_over = async move {
            let _ = accepting.wait_for(|a| !*a).await;
        };
        if let Err(e) = axum::serve(listener, svc)
            .with_graceful_shutdown(handed_over)
            .await
        {
            tracing::error!(error = %e, "listener failed");
        }
    })
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    Json(app.probe_body()).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let status = if app.state() == Lifecycle::Serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(app.probe_body())).into_response()
}

async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            StatusCode::NOT_FOUND,
            "molt gateway: connect with WebSocket (OpenClaw protocol v4), or GET /healthz, /readyz\n",
        )
            .into_response();
    };
    // A proxied request is not "direct loopback", even when the proxy is local.
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    ws.max_message_size(molt_protocol::MAX_PAYLOAD)
        .max_frame_size(molt_protocol::MAX_PAYLOAD)
        .on_upgrade(move |socket| crate::ws::serve_conn(app, socket, peer, proxied))
}

//! One WebSocket connection: challenge, handshake, pairing, then requests and events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use molt_protocol::connect::{Features, HelloAuth, HelloOk, Policy, ServerInfo};
use molt_protocol::frame::{ErrorShape, EventFrame, ResponseFrame, ServerFrame, code};
use molt_protocol::handshake::{Accepted, Decision, Handshake, Rejected, SecretCheck};
use molt_protocol::methods::EVENTS;
use molt_protocol::scope::{self, Scope};
use molt_protocol::{PROTOCOL_VERSION, close};
use molt_store::{DeviceRequest, Pairing};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::app::{App, Lifecycle, Outbound, Peer, now_ms};
use crate::fsutil::random_hex;
use crate::router::{Caller, Router as Methods};

/// Frames queued for one client before it counts as a slow consumer.
const OUTBOUND_QUEUE: usize = 4096;

/// An authenticated connection.
pub struct Session {
    pub conn_id: String,
    pub role: String,
    /// The client declared `caps: ["tool-events"]`.
    pub tool_events: bool,
    pub scopes: Vec<Scope>,
    pub device_id: Option<String>,
    pub remote: SocketAddr,
}

/// Serves one upgraded connection. `_counted` keeps it in [`App::connections`] until the
/// close has been flushed and answered; `ticket` keeps it in the pool of unauthenticated
/// connections until its handshake succeeds, and may shed it before.
pub async fn serve_conn(
    app: Arc<App>,
    methods: Arc<Methods>,
    socket: WebSocket,
    remote: SocketAddr,
    proxied: bool,
    _counted: crate::app::ConnectionGuard,
    ticket: Arc<crate::pending::Ticket>,
) {
    let (Ok(conn_id), Ok(nonce)) = (random_hex(8), random_hex(16)) else {
        tracing::error!("no randomness for a connection nonce; refusing the connection");
        return;
    };
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let kick = Arc::new(tokio::sync::Notify::new());
    let kicked = kick.clone();
    let writer = tokio::spawn(async move {
        let mut seq: u64 = 0;
        loop {
            let out = tokio::select! {
                biased;
                _ = kicked.notified() => Outbound::Close(
                    close::POLICY,
                    "slow consumer: events were dropped; reconnect and read chat.history".into(),
                ),
                out = rx.recv() => match out {
                    Some(o) => o,
                    None => break,
                },
            };
            let msg = match out {
                Outbound::Text(t) => Message::Text(t.into()),
                Outbound::Event(name, payload) => {
                    seq += 1;
                    Message::Text(
                        ServerFrame::Event(EventFrame::new(name, payload, Some(seq)))
                            .to_text()
                            .into(),
                    )
                }
                Outbound::Shared(name, raw) => {
                    seq += 1;
                    Message::Text(EventFrame::text_with_payload(name, &raw, seq).into())
                }
                Outbound::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            // Frames queued together go out in one flush.
            if sink.feed(msg).await.is_err() {
                break;
            }
            if rx.is_empty() && sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let hs = Handshake::new(nonce);
    let challenge = ServerFrame::Event(EventFrame::new(
        "connect.challenge",
        hs.challenge_payload(now_ms()),
        None,
    ));
    let _ = tx.send(Outbound::Text(challenge.to_text())).await;

    let first = tokio::select! {
        first = tokio::time::timeout(
            Duration::from_millis(molt_protocol::HANDSHAKE_TIMEOUT_MS),
            next_text(&mut stream),
        ) => first,
        _ = ticket.shed() => {
            let _ = tx
                .send(Outbound::Close(close::TRY_AGAIN_LATER, "too many unauthenticated connections".into()))
                .await;
            finish(tx, writer, stream).await;
            return;
        }
    };
    let text = match first {
        Err(_) => {
            let _ = tx
                .send(Outbound::Close(close::POLICY, "handshake timeout".into()))
                .await;
            finish(tx, writer, stream).await;
            return;
        }
        Ok(Incoming::Text(t)) => t,
        Ok(Incoming::Binary) => {
            send_reject(
                &tx,
                reject_plain("binary frames are not supported", close::POLICY),
            )
            .await;
            finish(tx, writer, stream).await;
            return;
        }
        Ok(Incoming::Closed) => {
            finish(tx, writer, stream).await;
            return;
        }
    };
    // A locked-out address is answered the same way whatever it sent, so a lockout never
    // tells a right guess from a wrong one.
    let locked_out = lock(&app.limiter).retry_after(remote.ip());
    let decision = match locked_out {
        Some(wait) => Decision::Reject(rate_limited(&text, wait)),
        None => hs.on_frame(&text, &app.auth, now_ms()),
    };
    let session = match decision {
        Decision::Reject(r) => {
            if r.auth_failure {
                lock(&app.limiter).record_failure(remote.ip());
            }
            send_reject(&tx, r).await;
            None
        }
        Decision::Accept(a) => match admit(&app, &methods, *a, remote, proxied, &conn_id).await {
            Ok((session, hello_id, hello, presence)) => {
                ticket.leave();
                let _ = tx
                    .send(Outbound::Text(ResponseFrame::ok(hello_id, hello).to_text()))
                    .await;
                // Registered after the hello is queued, so broadcasts never precede it.
                register(&app, &session, tx.clone(), kick.clone(), presence);
                Some(session)
            }
            Err(r) => {
                send_reject(&tx, r).await;
                None
            }
        },
    };
    if let Some(session) = session {
        serve_session(&app, &methods, &session, &mut stream, &tx).await;
        lock(&app.peers).remove(&session.conn_id);
    }
    finish(tx, writer, stream).await;
}

/// How long a closing connection waits for the peer's close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Ends a connection politely: flush what is queued (including our close frame), then wait
/// briefly for the peer's close, so the TCP connection ends with a FIN and not an RST that
/// could destroy frames the peer has not read yet.
async fn finish(
    tx: mpsc::Sender<Outbound>,
    writer: tokio::task::JoinHandle<()>,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
) {
    drop(tx);
    let _ = writer.await;
    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn serve_session(
    app: &Arc<App>,
    methods: &Methods,
    session: &Session,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    tx: &mpsc::Sender<Outbound>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(molt_protocol::TICK_INTERVAL_MS));
    tick.tick().await;
    let mut lifecycle = app.lifecycle.subscribe();
    let caller = Caller {
        conn_id: session.conn_id.clone(),
        scopes: session.scopes.clone(),
        request_id: String::new(),
        out: tx.clone(),
        answered: Default::default(),
    };
    loop {
        // Checked between requests, so a response in progress (say, to the restart request
        // itself) always goes out before `shutdown` and the close.
        let (reason, restart_ms) = match *lifecycle.borrow_and_update() {
            Lifecycle::HandingOver => ("restart", Some(0)),
            Lifecycle::Stopping => ("stop", None),
            Lifecycle::Starting | Lifecycle::Serving => ("", None),
        };
        if !reason.is_empty() {
            let mut payload = json!({ "reason": reason });
            if let Some(ms) = restart_ms {
                payload["restartExpectedMs"] = json!(ms);
            }
            let _ = tx.send(Outbound::Event("shutdown", payload)).await;
            let _ = tx
                .send(Outbound::Close(
                    close::SERVICE_RESTART,
                    format!("gateway {reason}"),
                ))
                .await;
            return;
        }
        tokio::select! {
            _ = lifecycle.changed() => continue,
            incoming = next_text(stream) => match incoming {
                Incoming::Text(text) => {
                    let (res, then) = match molt_protocol::frame::parse_request(&text) {
                        Ok(req) => methods.dispatch(app, &caller, req).await,
                        Err(e) => (ResponseFrame::err(e.id.unwrap_or_else(|| "invalid".into()), ErrorShape::invalid(e.message)), None),
                    };
                    if tx.send(Outbound::Text(res.to_text())).await.is_err() {
                        return;
                    }
                    if let Some(then) = then {
                        let _ = then.send(());
                    }
                }
                Incoming::Binary => {
                    let _ = tx.send(Outbound::Close(close::POLICY, "binary frames are not supported".into())).await;
                    return;
                }
                Incoming::Closed => return,
            },
            _ = tick.tick() => {
                if tx.send(Outbound::Event("tick", json!({ "ts": now_ms() }))).await.is_err() {
                    return;
                }
            }
        }
    }
}

enum Incoming {
    Text(String),
    Binary,
    Closed,
}

async fn next_text(stream: &mut futures_util::stream::SplitStream<WebSocket>) -> Incoming {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => return Incoming::Text(t.to_string()),
            Some(Ok(Message::Binary(_))) => return Incoming::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Incoming::Closed,
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The answer to any connect from an address locked out by failed auth.
fn rate_limited(text: &str, wait: Duration) -> Rejected {
    let err = ErrorShape::invalid("too many failed auth attempts; wait and retry")
        .with_details(json!({ "code": "AUTH_RATE_LIMITED" }));
    let err = ErrorShape {
        retryable: Some(true),
        retry_after_ms: Some(wait.as_millis() as u64),
        ..err
    };
    let id = molt_protocol::frame::parse_request(text)
        .ok()
        .map(|r| r.id)
        .unwrap_or_else(|| "connect".into());
    reject_with(&id, err, close::POLICY)
}

fn reject_plain(message: &str, close_code: u16) -> Rejected {
    Rejected {
        response: None,
        close_code,
        close_reason: message.into(),
        auth_failure: false,
    }
}

fn reject_with(id: &str, error: ErrorShape, close_code: u16) -> Rejected {
    let close_reason = error.message.chars().take(120).collect();
    Rejected {
        response: Some(ResponseFrame::err(id, error)),
        close_code,
        close_reason,
        auth_failure: false,
    }
}

async fn send_reject(tx: &mpsc::Sender<Outbound>, r: Rejected) {
    if let Some(res) = r.response {
        let _ = tx.send(Outbound::Text(res.to_text())).await;
    }
    let _ = tx.send(Outbound::Close(r.close_code, r.close_reason)).await;
}

/// Finishes what the pure handshake could not: rate limit, pairing, device tokens, scopes.
/// Returns the session, the connect request id, the `hello-ok` payload and the presence entry.
async fn admit(
    app: &Arc<App>,
    methods: &Methods,
    a: Accepted,
    remote: SocketAddr,
    proxied: bool,
    conn_id: &str,
) -> Result<(Session, String, Value, Value), Rejected> {
    let id = a.request_id.clone();
    if app.state() != Lifecycle::Serving {
        // A successor already accepts new connections: retry at once.
        let err = ErrorShape::unavailable(
            "this gateway process is handing over or stopping; reconnect",
            50,
        )
        .with_details(json!({ "reason": "gateway-stopping" }));
        return Err(reject_with(&id, err, close::SERVICE_RESTART));
    }
    if a.params.role() != "operator" {
        return Err(reject_with(
            &id,
            ErrorShape::invalid(format!(
                "role {:?} is not supported by molt; connect as operator",
                a.params.role()
            )),
            close::POLICY,
        ));
    }
    let requested = match &a.params.scopes {
        Some(s) => scope::parse_list(s),
        None => vec![Scope::Read],
    };
    // Loopback stands in for the owner's approval of a new device, never for the shared
    // secret: only a connect whose token or password checked out (or that needs none,
    // because `none` was configured on purpose) is auto-approved.
    let secret_verified = matches!(a.secret, SecretCheck::Passed | SecretCheck::NotRequired);
    let auto_approve = remote.ip().is_loopback() && !proxied && secret_verified;
    let mut scopes = requested.clone();
    let mut device_token = None;
    if let Some(dev) = &a.device {
        let store_err = |e: molt_store::StoreError| {
            tracing::error!(error = %e, "device lookup failed");
            reject_with(
                &id,
                ErrorShape::unavailable("the gateway store is unavailable", 1000),
                close::POLICY,
            )
        };
        // One store call: the record, and whether the device token it presented (if any)
        // is the one on file.
        let (dev_id, presented) = (dev.id.clone(), presented_token(&a.secret));
        let (record, token_ok) = app
            .store
            .call(move |s| {
                let record = s.device(&dev_id)?;
                let ok = match presented {
                    Some(t) => Some(s.device_token_matches(&dev_id, &t)?),
                    None => None,
                };
                Ok::<_, molt_store::StoreError>((record, ok))
            })
            .await
            .map_err(store_err)?;
        let state = record.as_ref().map(|r| r.state);
        if token_ok.is_some_and(|ok| !ok || state != Some(Pairing::Approved)) {
            lock(&app.limiter).record_failure(remote.ip());
            let err = ErrorShape::invalid("device token mismatch")
                .with_details(json!({ "code": "AUTH_DEVICE_TOKEN_MISMATCH" }));
            return Err(reject_with(&id, err, close::POLICY));
        }
        match (state, record) {
            (Some(Pairing::Approved), Some(r)) => {
                let approved = scope::parse_list(&r.scopes);
                scopes.retain(|s| scope::allows(&approved, *s));
                // Only a digest is stored, so a device that did not present its token (it
                // authenticated with the shared secret, or was approved while away) gets a
                // new one; a device that presented it keeps it.
                let (token, fresh) = match presented_token(&a.secret) {
                    Some(given) => (given, false),
                    None => (
                        random_hex(32).map_err(|_| reject_plain("no randomness", close::POLICY))?,
                        true,
                    ),
                };
                let (dev_id, issue) = (dev.id.clone(), token.clone());
                app.store
                    .call(move |s| {
                        if fresh {
                            s.issue_device_token(&dev_id, &issue)?;
                        }
                        s.touch_device(&dev_id)
                    })
                    .await
                    .map_err(store_err)?;
                device_token = Some(token);
            }
            (Some(Pairing::Rejected), _) => {
                let err = ErrorShape::new(code::NOT_PAIRED, "this device's pairing was rejected; run `molt devices approve` on the gateway host to allow it")
                    .with_details(json!({ "code": "PAIRING_REQUIRED", "reason": "not-paired", "deviceId": dev.id }));
                return Err(reject_with(&id, err, close::POLICY));
            }
            _ => {
                let scope_strs: Vec<String> =
                    requested.iter().map(|s| s.as_str().to_owned()).collect();
                let (dev_id, pk) = (dev.id.clone(), dev.public_key.clone());
                let (client_id, platform) =
                    (a.params.client.id.clone(), a.params.client.platform.clone());
                let remote_s = remote.ip().to_string();
                let token = if auto_approve {
                    Some(random_hex(32).map_err(|_| reject_plain("no randomness", close::POLICY))?)
                } else {
                    None
                };
                let tok = token.clone();
                let rec = app
                    .store
                    .call(move |s| -> Result<_, molt_store::StoreError> {
                        let req = DeviceRequest {
                            id: &dev_id,
                            public_key: &pk,
                            client_id: &client_id,
                            platform: &platform,
                            role: "operator",
                            scopes: &scope_strs,
                            remote: &remote_s,
                        };
                        let rec = s.request_pairing(&req)?;
                        match tok {
                            Some(t) => s.approve_device(&dev_id, Some(&t)),
                            None => Ok(Some(rec)),
                        }
                    })
                    .await
                    .map_err(store_err)?;
                if token.is_some() {
                    tracing::info!(device = %dev.id, "device auto-approved over direct loopback");
                    device_token = token;
                } else {
                    tracing::warn!(device = %dev.id, %remote, "device pairing requested; approve with `molt devices approve`");
                    if let Some(rec) = rec {
                        app.broadcast(
                            "device.pair.requested",
                            json!({
                                "requestId": rec.id, "deviceId": rec.id, "publicKey": rec.public_key,
                                "clientId": a.params.client.id, "clientMode": a.params.client.mode,
                                "platform": a.params.client.platform, "role": "operator",
                                "scopes": rec.scopes, "remoteIp": remote.ip().to_string(), "ts": now_ms(),
                            }),
                        );
                    }
                    let err = ErrorShape::new(code::NOT_PAIRED, "device pairing required: approve it with `molt devices approve <id>` on the gateway host")
                        .with_details(json!({
                            "code": "PAIRING_REQUIRED", "reason": "not-paired",
                            "requestId": dev.id, "deviceId": dev.id,
                        }));
                    return Err(reject_with(&id, err, close::POLICY));
                }
            }
        }
    }
    let session = Session {
        conn_id: conn_id.to_owned(),
        role: "operator".into(),
        tool_events: a
            .params
            .caps
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c == "tool-events")),
        scopes: scopes.clone(),
        device_id: a.device.as_ref().map(|d| d.id.clone()),
        remote,
    };
    let presence = presence_entry(&a, &session);
    let hello = HelloOk {
        kind: "hello-ok".into(),
        protocol: PROTOCOL_VERSION,
        server: ServerInfo {
            version: app.build.version.clone(),
            conn_id: conn_id.to_owned(),
            build_id: Some(app.build.build_id.clone()),
            boot_id: Some(format!("{}-{}", app.boot.epoch, app.pid)),
        },
        features: Features {
            methods: methods.methods().map(|m| m.name.to_owned()).collect(),
            events: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        },
        snapshot: snapshot(app, Some(&presence)),
        auth: HelloAuth {
            role: "operator".into(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            issued_at_ms: device_token.as_ref().map(|_| now_ms()),
            device_token,
        },
        policy: Policy::default(),
    };
    let hello = serde_json::to_value(&hello)
        .map_err(|_| reject_plain("cannot encode hello-ok", close::POLICY))?;
    Ok((session, id, hello, presence))
}

/// The device token a connect authenticated with, if it used one instead of the shared secret.
fn presented_token(secret: &SecretCheck) -> Option<String> {
    match secret {
        SecretCheck::DeviceToken(t) => Some(t.clone()),
        _ => None,
    }
}

fn presence_entry(a: &Accepted, s: &Session) -> Value {
    let c = &a.params.client;
    let mut p = json!({
        "ts": now_ms(),
        "ip": s.remote.ip().to_string(),
        "version": c.version,
        "platform": c.platform,
        "mode": c.mode,
        "roles": [s.role],
        "scopes": s.scopes.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "reason": "connect",
    });
    if let Some(d) = &s.device_id {
        p["deviceId"] = json!(d);
    }
    if let Some(i) = &c.instance_id {
        p["instanceId"] = json!(i);
    }
    p
}

/// Peers listed in a `hello-ok` snapshot. The full list is one `system-presence` call away;
/// sending all of it in every hello would cost O(n²) bytes for n clients.
const SNAPSHOT_PEERS: usize = 32;

/// The presence list: the gateway itself, then connected clients (at most `limit`), then
/// `extra` (the connecting client).
/// The `hello-ok` snapshot (schema `Snapshot`: no extra fields allowed).
pub fn snapshot(app: &App, extra: Option<&Value>) -> Value {
    let presence = app.presence(extra, SNAPSHOT_PEERS);
    json!({
        "presence": presence,
        "health": { "ok": true, "ts": now_ms(), "durationMs": 0 },
        "stateVersion": { "presence": presence.len(), "health": app.boot.epoch.max(0) },
        "uptimeMs": app.uptime_ms(),
        "configPath": app.config_path.display().to_string(),
        "stateDir": app.state_dir.display().to_string(),
        "authMode": match app.auth {
            molt_protocol::handshake::AuthPolicy::None => "none",
            molt_protocol::handshake::AuthPolicy::Token(_) => "token",
            molt_protocol::handshake::AuthPolicy::Password(_) => "password",
        },
    })
}

/// Adds an authenticated connection to the broadcast set.
fn register(
    app: &App,
    session: &Session,
    tx: mpsc::Sender<Outbound>,
    kick: Arc<tokio::sync::Notify>,
    presence: Value,
) {
    lock(&app.peers).insert(
        session.conn_id.clone(),
        Peer {
            tx,
            kick,
            presence,
            tool_events: session.tool_events,
            approvals: molt_protocol::scope::allows(&session.scopes, Scope::Approvals),
            sessions_changed: false,
            message_keys: Default::default(),
        },
    );
}

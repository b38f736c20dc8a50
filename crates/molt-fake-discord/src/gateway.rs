//! The gateway: one task per WebSocket, speaking v10 with JSON text frames.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::state::{Conn, Out, Session, Shared};

/// How a socket ended, which decides what happens to its session.
enum End {
    /// The client sent a close frame with this code (`None`: no code).
    ClientClosed(Option<u16>),
    /// The TCP connection ended or failed without a close frame.
    Dropped,
    /// The fake closed it, with or without a close frame.
    Server,
}

/// What handling one client frame asks of the socket task.
enum Next {
    Continue,
    Close(u16, &'static str),
}

/// Serves one upgraded socket until it ends. `query` is the upgrade request's query string.
pub(crate) async fn serve(shared: Arc<Shared>, mut socket: WebSocket, query: Option<String>) {
    if let Some(code_reason) = check_query(query.as_deref()) {
        close(&mut socket, code_reason.0, code_reason.1).await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = {
        let mut st = shared.lock();
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(
            id,
            Conn {
                tx: tx.clone(),
                session: None,
            },
        );
        id
    };
    let hello = json!({"op": 10, "t": null, "s": null,
        "d": {"heartbeat_interval": shared.opts.heartbeat_interval_ms, "_trace": ["[\"fake-discord\"]"]}});
    let end = if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        End::Dropped
    } else {
        run(&shared, conn_id, &tx, &mut rx, &mut socket).await
    };
    drop(socket);

    let mut st = shared.lock();
    let session = st.conns.remove(&conn_id).and_then(|c| c.session);
    let Some(session_id) = session else { return };
    let attached_here = st
        .sessions
        .get(&session_id)
        .is_some_and(|s| s.conn == Some(conn_id));
    if !attached_here {
        return; // a RESUME moved it to another socket
    }
    if let Some(s) = st.sessions.get_mut(&session_id) {
        s.conn = None;
    }
    // Discord ends the session on a normal or going-away close; anything else can resume.
    if let End::ClientClosed(Some(1000 | 1001)) = end {
        st.end_session(&session_id);
    }
}

/// A close code and reason for an unsupported `v` or `encoding`, if any.
fn check_query(query: Option<&str>) -> Option<(u16, &'static str)> {
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "v" if value != "10" => return Some((4012, "Invalid API version.")),
            "encoding" if value != "json" => return Some((4002, "Error while decoding payload.")),
            _ => {}
        }
    }
    None
}

async fn run(
    shared: &Shared,
    conn_id: u64,
    tx: &mpsc::UnboundedSender<Out>,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    socket: &mut WebSocket,
) -> End {
    loop {
        tokio::select! {
            // Frames queued by the fake first: a frame queued before the client's next
            // message must not be overtaken by the answer to it.
            biased;
            out = rx.recv() => match out {
                Some(Out::Frame(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return End::Dropped;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    close(socket, code, reason).await;
                    return End::Server;
                }
                Some(Out::Drop) | None => return End::Server,
            },
            msg = socket.recv() => match msg {
                None | Some(Err(_)) => return End::Dropped,
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queued the close reply; reading once more writes it, so
                    // the client's closing handshake completes instead of ending in a reset.
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.recv()).await;
                    return End::ClientClosed(frame.map(|f| f.code));
                }
                Some(Ok(Message::Text(text))) => {
                    if let Next::Close(code, reason) = handle(shared, conn_id, tx, text.as_str()) {
                        // Frames queued before the close still go out, as they would have.
                        while let Ok(Out::Frame(text)) = rx.try_recv() {
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                return End::Dropped;
                            }
                        }
                        close(socket, code, reason).await;
                        return End::Server;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    close(socket, 4002, "Error while decoding payload.").await;
                    return End::Server;
                }
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            },
        }
    }
}

/// Sends a close frame, then gives the client a moment to answer it before dropping.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Handles one text frame from the client.
fn handle(shared: &Shared, conn_id: u64, tx: &mpsc::UnboundedSender<Out>, text: &str) -> Next {
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        return Next::Close(4002, "Error while decoding payload.");
    };
    let Some(op) = payload.get("op").and_then(Value::as_u64) else {
        return Next::Close(4002, "Error while decoding payload.");
    };
    let d = payload.get("d").cloned().unwrap_or(Value::Null);
    match op {
        1 => {
            let ack = {
                let mut st = shared.lock();
                st.heartbeats += 1;
                st.ack_heartbeats
            };
            if ack {
                let ack = json!({"op": 11, "t": null, "s": null, "d": null});
                let _ = tx.send(Out::Frame(ack.to_string()));
            }
            Next::Continue
        }
        2 => identify(shared, conn_id, &d),
        6 => resume(shared, conn_id, tx, &d),
        // Presence, voice state and member requests: accepted once identified, not modelled.
        3 | 4 | 8 => {
            if shared
                .lock()
                .conns
                .get(&conn_id)
                .is_some_and(|c| c.session.is_some())
            {
                Next::Continue
            } else {
                Next::Close(4003, "Not authenticated.")
            }
        }
        _ => Next::Close(4001, "Unknown opcode."),
    }
}

fn identify(shared: &Shared, conn_id: u64, d: &Value) -> Next {
    if d.get("token").and_then(Value::as_str) != Some(shared.opts.token.as_str()) {
        return Next::Close(4004, "Authentication failed.");
    }
    let intents = d.get("intents").and_then(Value::as_u64).unwrap_or(0);
    if intents & shared.opts.required_intents != shared.opts.required_intents {
        return Next::Close(4014, "Disallowed intent(s).");
    }
    let mut st = shared.lock();
    if st.conns.get(&conn_id).is_some_and(|c| c.session.is_some()) {
        return Next::Close(4005, "Already authenticated.");
    }
    st.identifies += 1;
    st.sessions_made += 1;
    let session_id = format!("{:016x}{:016x}", random_u64(), st.sessions_made);
    // One shard, one session: a new IDENTIFY ends the ones before it.
    let others: Vec<String> = st.sessions.keys().cloned().collect();
    for other in others {
        st.end_session(&other);
    }
    st.sessions.insert(
        session_id.clone(),
        Session {
            seq: 0,
            events: Vec::new(),
            conn: Some(conn_id),
            valid: true,
            intents,
        },
    );
    st.current = Some(session_id.clone());
    if let Some(conn) = st.conns.get_mut(&conn_id) {
        conn.session = Some(session_id.clone());
    }

    let guild_ids: Vec<String> = st.guilds.keys().cloned().collect();
    let mut ready = json!({
        "v": 10,
        "user": shared.bot_user(),
        "guilds": guild_ids.iter().map(|id| json!({"id": id, "unavailable": true})).collect::<Vec<_>>(),
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": format!("{}/resume", shared.gateway_url()),
        "application": {"id": shared.opts.application_id, "flags": 0},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "user_settings": {},
        "_trace": ["[\"fake-discord\"]"],
    });
    if let Some(shard) = d.get("shard") {
        ready["shard"] = shard.clone();
    }
    st.dispatch_in(&session_id, "READY", &ready, true);
    for guild_id in &guild_ids {
        let guild = st.guild_object(guild_id);
        st.dispatch_in(&session_id, "GUILD_CREATE", &guild, true);
    }
    let held = std::mem::take(&mut st.held);
    for message in held {
        st.dispatch_message(&shared.opts.bot_user_id, message, true);
    }
    Next::Continue
}

fn resume(shared: &Shared, conn_id: u64, tx: &mpsc::UnboundedSender<Out>, d: &Value) -> Next {
    if d.get("token").and_then(Value::as_str) != Some(shared.opts.token.as_str()) {
        return Next::Close(4004, "Authentication failed.");
    }
    let session_id = d
        .get("session_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let seq = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let mut st = shared.lock();
    if st.conns.get(&conn_id).is_some_and(|c| c.session.is_some()) {
        return Next::Close(4005, "Already authenticated.");
    }
    let resumable = st.sessions.get(session_id).is_some_and(|s| s.valid);
    if !resumable {
        st.refused_resumes += 1;
        let invalid = json!({"op": 9, "t": null, "s": null, "d": false});
        let _ = tx.send(Out::Frame(invalid.to_string()));
        return Next::Continue;
    }
    st.resumes += 1;
    let Some(session) = st.sessions.get_mut(session_id) else {
        return Next::Continue;
    };
    let previous = session.conn.replace(conn_id);
    let replay: Vec<String> = session
        .events
        .iter()
        .filter(|(s, _)| *s > seq)
        .map(|(_, frame)| frame.clone())
        .collect();
    if let Some(old) = previous.filter(|old| *old != conn_id) {
        if let Some(old_conn) = st.conns.get_mut(&old) {
            old_conn.session = None;
            let _ = old_conn
                .tx
                .send(Out::Close(4000, "Session resumed on another connection."));
        }
    }
    if let Some(conn) = st.conns.get_mut(&conn_id) {
        conn.session = Some(session_id.to_owned());
    }
    for frame in replay {
        let _ = tx.send(Out::Frame(frame));
    }
    st.dispatch_in(
        session_id,
        "RESUMED",
        &json!({"_trace": ["[\"fake-discord\"]"]}),
        false,
    );
    Next::Continue
}

/// A random number from the standard library's per-process hash keys: enough to keep
/// session ids of different fakes apart.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

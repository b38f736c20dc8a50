//! The state one gateway process shares between its listener, connections and lifecycle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_protocol::handshake::AuthPolicy;
use molt_protocol::methods::system::Probe;
use molt_store::Boot;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::BuildInfo;
use crate::store_handle::StoreHandle;

/// Where the process is in its life. `/readyz` is 200 only in `Serving`.
pub use molt_protocol::methods::system::GatewayState as Lifecycle;

/// A message for one connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// A response frame, already serialized.
    Text(String),
    /// An event; the writer stamps the connection's next `seq`.
    Event(&'static str, Value),
    /// A broadcast event whose payload was serialized once for every connection.
    Shared(&'static str, Arc<str>),
    /// Close the socket with this code and reason.
    Close(u16, String),
}

/// A connected, authenticated client.
pub struct Peer {
    pub tx: mpsc::Sender<Outbound>,
    /// Wakes the connection's writer to close it at once (its queue may be full).
    pub kick: Arc<tokio::sync::Notify>,
    pub presence: Value,
    /// It declared `caps: ["tool-events"]`: it gets the `agent` events of stream `tool`.
    pub tool_events: bool,
    /// It holds `operator.approvals` (or admin): it gets `exec.approval.*` events.
    pub approvals: bool,
    /// It called `sessions.subscribe`: it gets `sessions.changed`.
    pub sessions_changed: bool,
    /// Session keys it gets `session.message` for (`sessions.messages.subscribe`).
    pub message_keys: std::collections::HashSet<String>,
}

/// Which peers an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Every operator connection.
    All,
    /// Connections with `caps: ["tool-events"]`.
    ToolEvents,
    /// Connections that may decide approvals.
    Approvers,
    /// Connections subscribed to `sessions.changed`.
    SessionsChanged,
    /// Connections subscribed to this session's messages, or to `sessions.changed`.
    SessionMessages(&'a str),
}

impl Audience<'_> {
    pub fn admits(self, p: &Peer) -> bool {
        match self {
            Self::All => true,
            Self::ToolEvents => p.tool_events,
            Self::Approvers => p.approvals,
            Self::SessionsChanged => p.sessions_changed,
            Self::SessionMessages(k) => p.sessions_changed || p.message_keys.contains(k),
        }
    }
}

/// Failed-auth counter per remote address, so secrets cannot be guessed quickly.
#[derive(Default)]
pub struct RateLimiter {
    failures: HashMap<IpAddr, (Instant, u32)>,
}

impl RateLimiter {
    /// Failures allowed per window before further attempts are refused.
    pub const MAX_FAILURES: u32 = 10;
    pub const WINDOW: Duration = Duration::from_secs(60);

    /// How long `ip` must wait, if it is locked out.
    pub fn retry_after(&mut self, ip: IpAddr) -> Option<Duration> {
        let (since, n) = *self.failures.get(&ip)?;
        let elapsed = since.elapsed();
        if elapsed >= Self::WINDOW {
            self.failures.remove(&ip);
            return None;
        }
        (n >= Self::MAX_FAILURES).then(|| Self::WINDOW - elapsed)
    }

    pub fn record_failure(&mut self, ip: IpAddr) {
        let entry = self.failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Self::WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// What every connection shares: who this process is, its lifecycle, the store, auth, and
/// the connected clients. Subsystems and the handover keep their own state and are reached
/// through the router, not through here.
pub struct App {
    pub build: BuildInfo,
    pub pid: u32,
    pub boot: Boot,
    pub started: Instant,
    pub started_at_ms: u64,
    pub lifecycle: watch::Sender<Lifecycle>,
    pub store: StoreHandle,
    pub auth: AuthPolicy,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    /// The gateway's own device identity (`gateway.identity.get`).
    pub identity: molt_protocol::device::DeviceKey,
    pub peers: Mutex<HashMap<String, Peer>>,
    pub limiter: Mutex<RateLimiter>,
    /// `false` once a successor accepts: the accept loop ends.
    pub accepting: watch::Sender<bool>,
    /// Open WebSocket connections, counted until their writer has flushed the close.
    pub connections: watch::Sender<usize>,
    /// Accepted HTTP connections still being served (an upgrade ends the HTTP part).
    pub http_connections: watch::Sender<usize>,
    /// Connections that have not authenticated yet (capped; see `pending.rs`).
    pub pending: Arc<crate::pending::Pending>,
}

/// Counts one WebSocket connection from its upgrade until its close is flushed.
pub struct ConnectionGuard(std::sync::Arc<App>);

impl ConnectionGuard {
    pub fn new(app: std::sync::Arc<App>) -> Self {
        app.connections.send_modify(|n| *n += 1);
        Self(app)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl App {
    /// Waits until every accepted HTTP exchange has ended and then every WebSocket
    /// connection has said goodbye, or `timeout` passes for each.
    pub async fn connections_closed(&self, timeout: Duration) -> bool {
        let http = wait_zero(&self.http_connections, timeout).await;
        wait_zero(&self.connections, timeout).await && http
    }

    pub fn state(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The body of `/healthz` and `/readyz`, and the start of `health` and `status`.
    pub fn probe(&self) -> Probe {
        Probe {
            version: self.build.version.clone(),
            build_id: self.build.build_id.clone(),
            pid: self.pid,
            boot_epoch: self.boot.epoch,
            state: self.state(),
            uptime_ms: self.uptime_ms(),
        }
    }

    /// Presence entries: this gateway, up to `limit` connected clients, and `extra` (a client
    /// being admitted).
    pub fn presence(&self, extra: Option<&Value>, limit: usize) -> Vec<Value> {
        let mut list = vec![json!({
            "ts": now_ms(),
            "host": hostname(),
            "version": self.build.version,
            "platform": std::env::consts::OS,
            "mode": "gateway",
            "reason": "self",
        })];
        list.extend(
            self.peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .take(limit)
                .map(|p| p.presence.clone()),
        );
        list.extend(extra.cloned());
        list
    }

    /// Sends an event to every authenticated client. A client whose queue is full is closed
    /// rather than allowed to hold the gateway back.
    pub fn broadcast(&self, event: &'static str, payload: Value) {
        self.broadcast_to(Audience::All, event, payload);
    }

    /// As [`App::broadcast`], to the peers `audience` admits.
    pub fn broadcast_to(&self, audience: Audience<'_>, event: &'static str, payload: Value) {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        deliver(&peers, audience, event, &payload);
    }
}

/// Queues `event` for the peers `audience` admits, serialized once for all of them.
fn deliver(
    peers: &HashMap<String, Peer>,
    audience: Audience<'_>,
    event: &'static str,
    payload: &Value,
) {
    let mut raw: Option<Arc<str>> = None;
    for peer in peers.values().filter(|p| audience.admits(p)) {
        let text = raw
            .get_or_insert_with(|| payload.to_string().into())
            .clone();
        if let Err(mpsc::error::TrySendError::Full(_)) =
            peer.tx.try_send(Outbound::Shared(event, text))
        {
            // Its queue is full, so a close queued behind it would wait too: the writer is
            // woken directly and closes with 1008. The client reconnects and reads what it
            // missed from history; a dropped event is never silent.
            peer.kick.notify_one();
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn wait_zero(counter: &watch::Sender<usize>, timeout: Duration) -> bool {
    let mut rx = counter.subscribe();
    tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
        .await
        .is_ok()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(capacity: usize) -> (Peer, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        let p = Peer {
            tx,
            kick: Arc::new(tokio::sync::Notify::new()),
            presence: Value::Null,
            tool_events: false,
            approvals: false,
            sessions_changed: false,
            message_keys: Default::default(),
        };
        (p, rx)
    }

    #[tokio::test]
    async fn audiences_pick_their_peers_and_a_full_queue_wakes_the_writer_to_close() {
        let (mut tools, mut tools_rx) = peer(8);
        tools.tool_events = true;
        let (mut watcher, mut watcher_rx) = peer(8);
        watcher.message_keys.insert("agent:main:main".into());
        let (full, _full_rx) = peer(1);
        let kick = full.kick.clone();
        let peers: HashMap<String, Peer> = [("t", tools), ("w", watcher), ("f", full)]
            .into_iter()
            .map(|(k, p)| (k.to_owned(), p))
            .collect();
        let send = |audience: Audience<'_>, event: &'static str| {
            deliver(&peers, audience, event, &Value::Null);
        };
        send(Audience::ToolEvents, "agent");
        send(
            Audience::SessionMessages("agent:main:main"),
            "session.message",
        );
        assert!(matches!(
            tools_rx.try_recv(),
            Ok(Outbound::Shared("agent", _))
        ));
        assert!(
            tools_rx.try_recv().is_err(),
            "not subscribed to the session"
        );
        assert!(matches!(
            watcher_rx.try_recv(),
            Ok(Outbound::Shared("session.message", _))
        ));
        // Two events for a queue of one: the second wakes the writer, which closes at once.
        send(Audience::All, "chat");
        send(Audience::All, "chat");
        tokio::time::timeout(std::time::Duration::from_secs(5), kick.notified())
            .await
            .expect("the full peer's writer is woken");
    }
}

//! The state one gateway process shares between its listener, connections and lifecycle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_protocol::handshake::AuthPolicy;
use molt_store::Boot;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::BuildInfo;
use crate::executor::Executor;
use crate::store_handle::StoreHandle;

/// Where the process is in its life. `/readyz` is 200 only in `Serving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Starting,
    Serving,
    /// A successor serves; this process drains and exits.
    HandingOver,
    Stopping,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Serving => "serving",
            Self::HandingOver => "handing-over",
            Self::Stopping => "stopping",
        }
    }
}

/// A message for one connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// A response frame, already serialized.
    Text(String),
    /// An event; the writer stamps the connection's next `seq`.
    Event(&'static str, Value),
    /// Close the socket with this code and reason.
    Close(u16, String),
}

/// A connected, authenticated client.
pub struct Peer {
    pub tx: mpsc::Sender<Outbound>,
    pub presence: Value,
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

/// Shared gateway state.
pub struct App {
    pub build: BuildInfo,
    pub profile: String,
    pub pid: u32,
    pub boot: Boot,
    pub started: Instant,
    pub started_at_ms: u64,
    pub port: u16,
    pub stop_budget_ms: u64,
    pub lifecycle: watch::Sender<Lifecycle>,
    pub store: StoreHandle,
    pub executor: Arc<Executor>,
    pub auth: AuthPolicy,
    pub log_file: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    /// The gateway's own device identity (`gateway.identity.get`).
    pub identity: molt_protocol::device::DeviceKey,
    pub peers: Mutex<HashMap<String, Peer>>,
    pub limiter: Mutex<RateLimiter>,
    pub notifier: crate::notify::Notifier,
    /// `~/.local/share/molt[-P]`: where `current` lives.
    pub share_dir: PathBuf,
    /// A duplicate of the listening socket, kept to pass on to a successor.
    pub listener: std::net::TcpListener,
    /// The state lock's fd, passed on to a successor (flock is shared across the fork).
    pub lock_fd: i32,
    /// `false` once a successor accepts: the accept loop ends.
    pub accepting: watch::Sender<bool>,
    pub handover_timeout_ms: u64,
    pub handover_drain_cap_ms: u64,
    /// Open WebSocket connections, counted until their writer has flushed the close.
    pub connections: watch::Sender<usize>,
    /// Accepted HTTP connections still being served (an upgrade ends the HTTP part).
    pub http_connections: watch::Sender<usize>,
    /// The handover in progress or completed, shared by requests that coalesce into it.
    pub handover: Mutex<Option<watch::Receiver<Option<crate::handover::Outcome>>>>,
    /// `[update]`: where `update.run` takes releases from, and whether keys are trusted.
    pub update: molt_config::UpdateConfig,
    /// The profile's name, for the `--profile` of the updater this gateway starts.
    pub profile_name: Option<String>,
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

    /// The body of `/healthz` and `/readyz`.
    pub fn probe_body(&self) -> Value {
        json!({
            "version": self.build.version,
            "buildId": self.build.build_id,
            "pid": self.pid,
            "bootEpoch": self.boot.epoch,
            "state": self.state().as_str(),
            "uptimeMs": self.uptime_ms(),
        })
    }

    /// Sends an event to every authenticated client. A client whose queue is full is closed
    /// rather than allowed to hold the gateway back.
    pub fn broadcast(&self, event: &'static str, payload: Value) {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        for peer in peers.values() {
            if peer
                .tx
                .try_send(Outbound::Event(event, payload.clone()))
                .is_err()
            {
                let _ = peer
                    .tx
                    .try_send(Outbound::Close(1008, "slow consumer".into()));
            }
        }
    }
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

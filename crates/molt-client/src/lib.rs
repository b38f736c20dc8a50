//! A Rust client for the molt (OpenClaw v4) gateway protocol, used by the `molt` CLI.
//!
//! It answers the challenge, authenticates with a shared secret and/or a device identity
//! (kept in `<state>/identity/device.json`, 0600), and issues requests. [`Client::call`]
//! reconnects with backoff when the gateway restarts (close 1012).

pub mod profile;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use molt_protocol::connect::{ClientInfo, ConnectAuth, ConnectParams};
use molt_protocol::device::DeviceKey;
use molt_protocol::frame::{ErrorShape, RequestFrame, ServerFrame};
use molt_protocol::method::Method;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client error, phrased for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the gateway at {url}: {message}. Is it running? Start it with `molt gateway run`"
    )]
    Connect { url: String, message: String },
    #[error("the gateway turned the handshake down: {} ({})", .0.message, .0.code)]
    Handshake(ErrorShape),
    #[error("{} ({})", .0.message, .0.code)]
    Rpc(ErrorShape),
    #[error("the gateway closed the connection (code {code}{}{reason})", if .reason.is_empty() { "" } else { ": " })]
    Closed { code: u16, reason: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("device identity {path}: {message}")]
    Identity { path: PathBuf, message: String },
    #[error("timed out after {0:?} waiting for the gateway")]
    Timeout(Duration),
}

/// A fresh random id in the shape of a version 4 UUID, for `idempotencyKey`s (which are run
/// ids) and session names.
pub fn new_idempotency_key() -> Result<String, ClientError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| ClientError::Protocol(format!("no randomness: {e}")))?;
    Ok(uuid_v4(b))
}

/// Formats 16 random bytes as a version 4 UUID.
fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl ClientError {
    /// Whether the gateway is restarting and the call is worth retrying on a new connection.
    pub fn is_restart(&self) -> bool {
        matches!(self, Self::Closed { code: 1012, .. })
    }

    /// Whether a handshake failed only because the process that took the connection is
    /// handing over or stopping: a new connection reaches the one that serves.
    fn is_transient_handshake(&self) -> bool {
        match self {
            Self::Handshake(e) => e.code == "UNAVAILABLE" && e.retryable == Some(true),
            other => other.is_restart(),
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://127.0.0.1:18789`
    pub url: String,
    pub token: Option<String>,
    pub password: Option<String>,
    /// Where the device identity is kept; `None` connects without a device identity.
    pub identity_file: Option<PathBuf>,
    pub scopes: Vec<String>,
    pub client_version: String,
    /// How long to keep reconnecting after a 1012 before giving up.
    pub reconnect_for: Duration,
    /// Per-request deadline.
    pub request_timeout: Duration,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            password: None,
            identity_file: None,
            scopes: vec!["operator.admin".into()],
            client_version: env!("CARGO_PKG_VERSION").into(),
            reconnect_for: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityFile {
    secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_token: Option<String>,
}

/// A connected client.
pub struct Client {
    opts: ClientOptions,
    ws: Ws,
    hello: Value,
    next_id: u64,
    /// Set when the gateway closed this connection with 1012: the next call reconnects first.
    restart_pending: bool,
    /// Events received while waiting for responses, oldest first.
    pub events: Vec<(String, Value)>,
}

impl Client {
    /// Connects and completes the handshake. A handshake answered "unavailable, retry" (the
    /// process that took the connection was handing over) is retried, within
    /// `reconnect_for`, after the delay the gateway asked for.
    pub async fn connect(opts: ClientOptions) -> Result<Self, ClientError> {
        let deadline = Instant::now() + opts.reconnect_for;
        let (ws, hello) = loop {
            match handshake(&opts).await {
                Ok(ok) => break ok,
                Err(e) if e.is_transient_handshake() && Instant::now() < deadline => {
                    let wait = match &e {
                        ClientError::Handshake(s) => s.retry_after_ms.unwrap_or(100),
                        _ => 100,
                    };
                    tokio::time::sleep(Duration::from_millis(wait.clamp(10, 2000))).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            opts,
            ws,
            hello,
            next_id: 0,
            restart_pending: false,
            events: Vec::new(),
        })
    }

    /// The `hello-ok` payload of the current connection.
    pub fn hello(&self) -> &Value {
        &self.hello
    }

    /// Calls method `M` with typed params and decodes its typed result; on a gateway restart
    /// it reconnects and retries, as [`Client::call`] does.
    pub async fn request<M: Method>(
        &mut self,
        params: &M::Params,
    ) -> Result<M::Result, ClientError> {
        let raw = self.call(M::NAME, Some(encode::<M>(params)?)).await?;
        decode::<M>(raw)
    }

    /// [`Client::request`] on this connection only: no reconnect.
    pub async fn request_once<M: Method>(
        &mut self,
        params: &M::Params,
    ) -> Result<M::Result, ClientError> {
        let raw = self.call_once(M::NAME, Some(encode::<M>(params)?)).await?;
        decode::<M>(raw)
    }

    /// Calls `method`; on a gateway restart (1012) reconnects with backoff (1 s, doubling, up
    /// to 30 s between tries) and retries once connected.
    pub async fn call(
        &mut self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, ClientError> {
        let deadline = Instant::now() + self.opts.reconnect_for;
        let mut backoff = Duration::from_secs(1);
        loop {
            if self.restart_pending {
                self.reconnect(deadline, &mut backoff).await?;
            }
            match self.call_once(method, params.clone()).await {
                Err(e) if e.is_restart() && Instant::now() < deadline => continue,
                other => return other,
            }
        }
    }

    /// Re-runs the handshake until it succeeds or `deadline` passes, sleeping `backoff`
    /// (doubling, at most 30 s) between tries.
    async fn reconnect(
        &mut self,
        deadline: Instant,
        backoff: &mut Duration,
    ) -> Result<(), ClientError> {
        loop {
            tokio::time::sleep((*backoff).min(deadline.saturating_duration_since(Instant::now())))
                .await;
            *backoff = (*backoff * 2).min(Duration::from_secs(30));
            match handshake(&self.opts).await {
                Ok((ws, hello)) => {
                    self.ws = ws;
                    self.hello = hello;
                    self.restart_pending = false;
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => continue,
            }
        }
    }

    /// Calls `method` on this connection only: no reconnect.
    pub async fn call_once(
        &mut self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let frame = RequestFrame::new(id.clone(), method, params);
        let text =
            serde_json::to_string(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| ClientError::Closed {
                code: 1006,
                reason: e.to_string(),
            })?;
        let timeout = self.opts.request_timeout;
        let wait = async {
            loop {
                match self.read().await? {
                    ServerFrame::Res(r) if r.id == id => {
                        return match (r.ok, r.error) {
                            (true, _) => Ok(r.payload.unwrap_or(Value::Null)),
                            (false, Some(e)) => Err(ClientError::Rpc(e)),
                            (false, None) => {
                                Err(ClientError::Protocol("error response without error".into()))
                            }
                        };
                    }
                    ServerFrame::Res(_) => continue,
                    ServerFrame::Event(e) => self
                        .events
                        .push((e.event, e.payload.unwrap_or(Value::Null))),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Waits for the next event (tick, shutdown, ...) or close.
    pub async fn next_event(&mut self) -> Result<(String, Value), ClientError> {
        if !self.events.is_empty() {
            return Ok(self.events.remove(0));
        }
        loop {
            if let ServerFrame::Event(e) = self.read().await? {
                return Ok((e.event, e.payload.unwrap_or(Value::Null)));
            }
        }
    }

    /// Reads the next frame of the live connection, remembering a restart close.
    async fn read(&mut self) -> Result<ServerFrame, ClientError> {
        let r = read_frame(&mut self.ws).await;
        if matches!(&r, Err(e) if e.is_restart()) {
            self.restart_pending = true;
        }
        r
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

async fn read_frame(ws: &mut Ws) -> Result<ServerFrame, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|e| ClientError::Protocol(format!("bad frame: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(ClientError::Closed { code, reason });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Err(ClientError::Closed {
                    code: 1006,
                    reason: e.to_string(),
                });
            }
            None => {
                return Err(ClientError::Closed {
                    code: 1006,
                    reason: "connection lost".into(),
                });
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn load_identity(path: &PathBuf) -> Result<(DeviceKey, Option<String>), ClientError> {
    let err = |message: String| ClientError::Identity {
        path: path.clone(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let f: IdentityFile = serde_json::from_str(&text)
                .map_err(|e| err(format!("corrupt ({e}); delete it to make a new identity")))?;
            let secret: [u8; 32] = hex::decode(&f.secret)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    err("corrupt secret; delete the file to make a new identity".into())
                })?;
            Ok((DeviceKey::from_secret(secret), f.device_token))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| err(format!("no randomness: {e}")))?;
            let key = DeviceKey::from_secret(secret);
            save_identity(path, &key, None)?;
            Ok((key, None))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn save_identity(path: &PathBuf, key: &DeviceKey, token: Option<&str>) -> Result<(), ClientError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |e: std::io::Error| ClientError::Identity {
        path: path.clone(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let body = serde_json::to_string(&IdentityFile {
        secret: hex::encode(key.secret()),
        device_token: token.map(str::to_owned),
    })
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(body.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Keeps the device token the gateway issued, so later connections can use it.
fn save_token_if_new(
    path: &PathBuf,
    key: &DeviceKey,
    old: Option<&str>,
    new: &str,
) -> Result<(), ClientError> {
    if old == Some(new) {
        return Ok(());
    }
    save_identity(path, key, Some(new))
}

async fn handshake(opts: &ClientOptions) -> Result<(Ws, Value), ClientError> {
    let connect_err = |e: String| ClientError::Connect {
        url: opts.url.clone(),
        message: e,
    };
    let (mut ws, _) = tokio::time::timeout(
        opts.request_timeout,
        tokio_tungstenite::connect_async(opts.url.as_str()),
    )
    .await
    .map_err(|_| ClientError::Timeout(opts.request_timeout))?
    .map_err(|e| connect_err(e.to_string()))?;
    let nonce = match tokio::time::timeout(opts.request_timeout, read_frame(&mut ws)).await {
        Err(_) => return Err(ClientError::Timeout(opts.request_timeout)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(ServerFrame::Event(e))) if e.event == "connect.challenge" => e
            .payload
            .as_ref()
            .and_then(|p| p.get("nonce"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Protocol("challenge without nonce".into()))?,
        Ok(Ok(other)) => {
            return Err(ClientError::Protocol(format!(
                "expected connect.challenge, got {other:?}"
            )));
        }
    };
    let identity = match &opts.identity_file {
        Some(p) => Some(load_identity(p)?),
        None => None,
    };
    let mut params = ConnectParams {
        min_protocol: molt_protocol::PROTOCOL_VERSION,
        max_protocol: molt_protocol::PROTOCOL_VERSION,
        client: ClientInfo {
            id: "cli".into(),
            display_name: None,
            version: opts.client_version.clone(),
            build_id: None,
            platform: std::env::consts::OS.into(),
            device_family: None,
            model_identifier: None,
            time_zone: None,
            mode: "cli".into(),
            instance_id: None,
        },
        caps: None,
        commands: None,
        computer_use: None,
        worker_runs: None,
        permissions: None,
        path_env: None,
        role: Some("operator".into()),
        scopes: Some(opts.scopes.clone()),
        device: None,
        auth: None,
        locale: None,
        user_agent: None,
    };
    let device_token = identity.as_ref().and_then(|(_, t)| t.clone());
    if opts.token.is_some() || opts.password.is_some() || device_token.is_some() {
        params.auth = Some(ConnectAuth {
            token: opts.token.clone(),
            password: opts.password.clone(),
            // The device token only stands in when no shared secret is given.
            device_token: if opts.token.is_none() && opts.password.is_none() {
                device_token.clone()
            } else {
                None
            },
            ..Default::default()
        });
    }
    if let Some((key, _)) = &identity {
        key.sign_connect(&mut params, &nonce, now_ms());
    }
    let req = RequestFrame::new(
        "connect",
        "connect",
        Some(serde_json::to_value(&params).map_err(|e| ClientError::Protocol(e.to_string()))?),
    );
    let text = serde_json::to_string(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let hello = loop {
        let frame = tokio::time::timeout(opts.request_timeout, read_frame(&mut ws))
            .await
            .map_err(|_| ClientError::Timeout(opts.request_timeout))??;
        match frame {
            ServerFrame::Res(r) if r.id == "connect" => match (r.ok, r.error) {
                (true, _) => break r.payload.unwrap_or(Value::Null),
                (false, Some(e)) => return Err(ClientError::Handshake(e)),
                (false, None) => {
                    return Err(ClientError::Protocol(
                        "connect failed without an error".into(),
                    ));
                }
            },
            _ => continue,
        }
    };
    let issued = hello.pointer("/auth/deviceToken").and_then(Value::as_str);
    if let (Some(path), Some((key, old)), Some(tok)) = (&opts.identity_file, &identity, issued) {
        save_token_if_new(path, key, old.as_deref(), tok)?;
    }
    Ok((ws, hello))
}

fn encode<M: Method>(params: &M::Params) -> Result<Value, ClientError> {
    serde_json::to_value(params)
        .map_err(|e| ClientError::Protocol(format!("cannot encode {} params: {e}", M::NAME)))
}

/// A result that does not decode means client and gateway disagree on the protocol: say
/// which method, so the person can tell a version skew from a bug.
fn decode<M: Method>(raw: Value) -> Result<M::Result, ClientError> {
    serde_json::from_value(raw).map_err(|e| {
        ClientError::Protocol(format!(
            "unexpected {} result (is the gateway another molt version?): {e}",
            M::NAME
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_version_4_uuids() {
        assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        let fresh = new_idempotency_key().unwrap();
        assert_eq!(fresh.len(), 36);
        assert_ne!(fresh, new_idempotency_key().unwrap());
    }
}

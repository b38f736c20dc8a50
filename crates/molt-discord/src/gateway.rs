//! One gateway v10 session, pulled one event at a time.
//!
//! [`Gateway::next`] connects when needed (RESUME when it holds a session, else IDENTIFY),
//! keeps the heartbeat going while it waits, and returns the next event. The sequence number
//! it would resume from is that of the last dispatch it returned, so a caller that finishes
//! with each event before asking for the next never skips one across a reconnect or a
//! handover ([`Gateway::detach`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Endpoint, Rest, random_below};

/// Gateway intent bits.
pub mod intents {
    pub const GUILDS: u64 = 1 << 0;
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    pub const DIRECT_MESSAGES: u64 = 1 << 12;
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
}

/// What molt asks for: guilds, guild and direct messages, and their content.
pub const INTENTS: u64 =
    intents::GUILDS | intents::GUILD_MESSAGES | intents::DIRECT_MESSAGES | intents::MESSAGE_CONTENT;

/// How long to wait for HELLO after the socket opens.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest backoff between failed connects.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// The close code molt uses when it lets go of a session it wants resumed later: anything
/// but 1000/1001, which would end the session.
const CLOSE_KEEP_SESSION: u16 = 4000;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A resumable session: what a RESUME needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    /// The last dispatch taken.
    pub seq: u64,
    /// `resume_gateway_url` from READY.
    pub resume_url: String,
}

/// What the gateway delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new session (after IDENTIFY); `user_id` is the bot's. `data` is READY's `d`.
    Ready {
        session_id: String,
        user_id: String,
        data: Value,
    },
    /// RESUME succeeded: missed events were replayed just before this.
    Resumed,
    /// Any other dispatch (`MESSAGE_CREATE`, `GUILD_CREATE`, ...).
    Dispatch { seq: u64, kind: String, data: Value },
    /// The connection dropped or could not be made; the next call retries (after
    /// `retry_in`). `reason` is for status and logs.
    Reconnecting { reason: String, retry_in: Duration },
}

/// A failure retrying cannot fix (bad token, missing intents, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The gateway close code, if it came from one.
    pub code: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}

/// The message for a close code that means a configuration error, or `None` when a
/// reconnect may help.
fn fatal_close(code: u16) -> Option<&'static str> {
    Some(match code {
        4004 => {
            "Discord refused the bot token (close 4004): set channels.discord.token or \
             DISCORD_BOT_TOKEN to the bot's current token from the Developer Portal"
        }
        4010 => "Discord says the shard is invalid (close 4010)",
        4011 => "the bot is in too many guilds for one shard (close 4011)",
        4012 => "Discord refused the gateway version (close 4012)",
        4013 => "Discord refused the intents molt asked for as invalid (close 4013)",
        4014 => {
            "missing privileged gateway intents (close 4014): enable the Message Content \
             intent for the bot in the Discord Developer Portal (Bot > Privileged Gateway \
             Intents)"
        }
        _ => return None,
    })
}

struct Heartbeat {
    interval: Duration,
    next_at: Instant,
    acked: bool,
}

/// One gateway session (see the module docs).
pub struct Gateway {
    endpoint: Endpoint,
    rest: Arc<Rest>,
    token: String,
    intents: u64,
    session: Option<Session>,
    ws: Option<Ws>,
    hb: Option<Heartbeat>,
    /// Failed connects in a row; reset by READY or RESUMED.
    failures: u32,
    /// Wait before the next connect.
    delay: Duration,
    gateway_url: Option<String>,
}

impl Gateway {
    /// A gateway for `token` that resumes `session` when given.
    pub fn new(
        endpoint: Endpoint,
        rest: Arc<Rest>,
        token: &str,
        intents: u64,
        session: Option<Session>,
    ) -> Self {
        Self {
            endpoint,
            rest,
            token: token.trim().to_owned(),
            intents,
            session,
            ws: None,
            hb: None,
            failures: 0,
            delay: Duration::ZERO,
            gateway_url: None,
        }
    }

    /// The session a RESUME would continue (`None` before the first READY, or after Discord
    /// invalidated it).
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Whether a socket is open now.
    pub fn connected(&self) -> bool {
        self.ws.is_some()
    }

    /// Lets go of the socket without ending the session (close code 4000, never 1000/1001)
    /// and returns the session, for a successor to RESUME.
    pub async fn detach(&mut self) -> Option<Session> {
        if let Some(mut ws) = self.ws.take() {
            let frame = CloseFrame {
                code: CloseCode::from(CLOSE_KEEP_SESSION),
                reason: "handing over".into(),
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(Some(frame))).await;
        }
        self.hb = None;
        self.session.clone()
    }

    /// The next event; `Err` only for a failure retrying cannot fix.
    pub async fn next(&mut self) -> Result<Event, Fatal> {
        loop {
            if self.ws.is_none() {
                if !self.delay.is_zero() {
                    tokio::time::sleep(std::mem::take(&mut self.delay)).await;
                }
                if let Err(e) = self.connect().await {
                    return match e {
                        ConnectError::Fatal(f) => Err(f),
                        ConnectError::Retry(reason) => Ok(self.schedule_retry(reason)),
                    };
                }
            }
            let Some(ws) = self.ws.as_mut() else { continue };
            let beat_at = self
                .hb
                .as_ref()
                .map(|h| h.next_at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(ev) = self.on_payload(text.as_str()).await? {
                            return Ok(ev);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code));
                        self.ws = None;
                        if let Some(msg) = code.and_then(fatal_close) {
                            return Err(Fatal { code, message: msg.to_owned() });
                        }
                        if matches!(code, Some(4007 | 4009)) {
                            // Bad sequence or timed out: the session cannot be resumed.
                            self.session = None;
                        }
                        return Ok(self.schedule_retry(format!(
                            "the gateway closed the connection ({})",
                            code.map(|c| c.to_string()).unwrap_or_else(|| "no code".into())
                        )));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.ws = None;
                        return Ok(self.schedule_retry(format!("gateway connection failed: {e}")));
                    }
                    None => {
                        self.ws = None;
                        return Ok(self.schedule_retry("the gateway connection ended".into()));
                    }
                },
                _ = tokio::time::sleep_until(beat_at) => {
                    let acked = self.hb.as_ref().is_some_and(|h| h.acked);
                    if !acked {
                        // A zombie connection: drop it (no 1000, so the session survives).
                        self.drop_socket().await;
                        return Ok(self.schedule_retry(
                            "no heartbeat ACK from the gateway; reconnecting".into(),
                        ));
                    }
                    self.beat().await;
                }
            }
        }
    }

    fn schedule_retry(&mut self, reason: String) -> Event {
        self.failures += 1;
        // The first retry is immediate (a resume should be quick); then 1, 2, 4 ... 60 s,
        // with up to a quarter of jitter.
        let base = if self.failures <= 1 {
            Duration::ZERO
        } else {
            Duration::from_secs(1 << (self.failures - 2).min(6)).min(BACKOFF_CAP)
        };
        let jitter = Duration::from_millis(random_below(base.as_millis() as u64 / 4 + 1));
        self.delay = base + jitter;
        Event::Reconnecting {
            reason,
            retry_in: self.delay,
        }
    }

    async fn drop_socket(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let frame = CloseFrame {
                code: CloseCode::from(CLOSE_KEEP_SESSION),
                reason: "reconnecting".into(),
            };
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(Some(frame))).await;
        }
        self.hb = None;
    }

    async fn beat(&mut self) {
        let seq = self.session.as_ref().map(|s| s.seq);
        let _ = self.send(json!({"op": 1, "d": seq})).await;
        if let Some(h) = self.hb.as_mut() {
            h.acked = false;
            h.next_at = Instant::now() + h.interval;
        }
    }

    async fn send(&mut self, v: Value) -> Result<(), String> {
        let Some(ws) = self.ws.as_mut() else {
            return Err("not connected".into());
        };
        ws.send(Message::text(v.to_string()))
            .await
            .map_err(|e| format!("cannot send to the gateway: {e}"))
    }

    /// Handles one gateway payload; returns the event to hand out, if any.
    async fn on_payload(&mut self, text: &str) -> Result<Option<Event>, Fatal> {
        let Ok(p) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("discord: the gateway sent a payload that is not JSON; ignored");
            return Ok(None);
        };
        let op = p.get("op").and_then(Value::as_u64).unwrap_or(u64::MAX);
        let d = p.get("d").cloned().unwrap_or(Value::Null);
        match op {
            0 => {
                let seq = p.get("s").and_then(Value::as_u64);
                let kind = p
                    .get("t")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                Ok(Some(self.on_dispatch(seq, kind, d)))
            }
            1 => {
                self.beat().await;
                Ok(None)
            }
            7 => {
                self.drop_socket().await;
                Ok(Some(self.schedule_retry(
                    "the gateway asked for a reconnect (op 7)".into(),
                )))
            }
            9 => {
                let resumable = d.as_bool().unwrap_or(false);
                if !resumable {
                    self.session = None;
                }
                self.drop_socket().await;
                let ev = self.schedule_retry(format!(
                    "the gateway invalidated the session (op 9, resumable: {resumable})"
                ));
                // Discord asks for a pause of 1 to 5 s before identifying again.
                self.delay = self
                    .delay
                    .max(Duration::from_millis(1000 + random_below(4000)));
                Ok(Some(ev))
            }
            11 => {
                if let Some(h) = self.hb.as_mut() {
                    h.acked = true;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn on_dispatch(&mut self, seq: Option<u64>, kind: String, d: Value) -> Event {
        if kind == "READY" {
            let session_id = d
                .get("session_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let resume_url = d
                .get("resume_gateway_url")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| self.gateway_url.clone())
                .unwrap_or_default();
            let user_id = d
                .pointer("/user/id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            self.session = Some(Session {
                session_id: session_id.clone(),
                seq: seq.unwrap_or(0),
                resume_url,
            });
            self.failures = 0;
            return Event::Ready {
                session_id,
                user_id,
                data: d,
            };
        }
        if let (Some(s), Some(sess)) = (seq, self.session.as_mut()) {
            sess.seq = sess.seq.max(s);
        }
        if kind == "RESUMED" {
            self.failures = 0;
            return Event::Resumed;
        }
        Event::Dispatch {
            seq: seq.unwrap_or(0),
            kind,
            data: d,
        }
    }

    async fn connect(&mut self) -> Result<(), ConnectError> {
        let target = match &self.session {
            Some(s) if !s.resume_url.is_empty() => s.resume_url.clone(),
            _ => match &self.gateway_url {
                Some(u) => u.clone(),
                None => {
                    let u = self.rest.gateway_url().await.map_err(|e| {
                        if e.is_unauthorized() {
                            ConnectError::Fatal(Fatal {
                                code: None,
                                message: e.to_string(),
                            })
                        } else {
                            ConnectError::Retry(e.to_string())
                        }
                    })?;
                    self.gateway_url = Some(u.clone());
                    u
                }
            },
        };
        let url = self.endpoint.gateway_url(&target).map_err(|m| {
            ConnectError::Fatal(Fatal {
                code: None,
                message: m,
            })
        })?;
        let (mut ws, _) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .map_err(|_| ConnectError::Retry("connecting to the gateway timed out".into()))?
        .map_err(|e| ConnectError::Retry(format!("cannot connect to the gateway: {e}")))?;
        let interval = tokio::time::timeout(HELLO_TIMEOUT, async {
            while let Some(m) = ws.next().await {
                if let Ok(Message::Text(t)) = m {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v.get("op").and_then(Value::as_u64) == Some(10) {
                        return v.pointer("/d/heartbeat_interval").and_then(Value::as_u64);
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ConnectError::Retry("the gateway sent no HELLO".into()))?;
        let interval = Duration::from_millis(interval.max(100));
        // The first beat comes after a random fraction of the interval, as Discord asks.
        let first = Duration::from_millis(random_below(interval.as_millis() as u64 + 1));
        self.hb = Some(Heartbeat {
            interval,
            next_at: Instant::now() + first,
            acked: true,
        });
        self.ws = Some(ws);
        let hello = match &self.session {
            Some(s) => json!({"op": 6, "d": {
                "token": self.token, "session_id": s.session_id, "seq": s.seq,
            }}),
            None => json!({"op": 2, "d": {
                "token": self.token,
                "intents": self.intents,
                "properties": {"os": std::env::consts::OS, "browser": "molt", "device": "molt"},
            }}),
        };
        if let Err(e) = self.send(hello).await {
            self.ws = None;
            return Err(ConnectError::Retry(e));
        }
        Ok(())
    }
}

enum ConnectError {
    Fatal(Fatal),
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_intents_are_the_four_molt_needs() {
        assert_eq!(INTENTS, 1 | 512 | 4096 | 32768);
    }

    #[test]
    fn configuration_close_codes_are_fatal_with_the_fix() {
        assert!(fatal_close(4004).unwrap().contains("token"));
        assert!(fatal_close(4014).unwrap().contains("Message Content"));
        for c in [4010, 4011, 4012, 4013] {
            assert!(fatal_close(c).is_some());
        }
        for c in [1000, 1006, 4000, 4007, 4009] {
            assert!(fatal_close(c).is_none(), "{c}");
        }
    }
}

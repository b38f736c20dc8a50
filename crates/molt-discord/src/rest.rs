//! The REST calls of a chat channel, with Discord's rate limits honoured.
//!
//! Limits: each route remembers its bucket's `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset-After`; a call to a route whose bucket is spent waits for the reset
//! first. A 429 waits `retry_after` (body, else the `Retry-After` header) and tries again, at
//! most [`MAX_429`] times.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Endpoint;

/// 429s tolerated for one call before it fails.
const MAX_429: u32 = 5;
/// The longest single rate-limit wait; a longer one fails the call instead.
const MAX_WAIT: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(15);

/// Why a REST call failed. The message never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestError {
    /// The HTTP status, if a response came back.
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "Discord answered {s}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for RestError {}

impl RestError {
    /// The token was refused: retrying cannot help.
    pub fn is_unauthorized(&self) -> bool {
        self.status == Some(401)
    }
    fn net(e: reqwest::Error) -> Self {
        let mut msg = format!("cannot reach Discord: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        Self {
            status: None,
            message: msg,
        }
    }
}

/// A message Discord created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub id: String,
    pub channel_id: String,
}

/// What the channel needs to know about a channel (`GET /channels/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChannelInfo {
    pub id: String,
    /// 0 text, 1 DM, 3 group DM, 10/11/12 threads, ...
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub guild_id: Option<String>,
    /// A thread's parent channel.
    #[serde(default)]
    pub parent_id: Option<String>,
}

impl ChannelInfo {
    /// Whether this is a thread (announcement, public or private).
    pub fn is_thread(&self) -> bool {
        matches!(self.kind, 10..=12)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    remaining: u64,
    reset_at: Instant,
}

/// A REST client for one bot token.
pub struct Rest {
    http: reqwest::Client,
    api: String,
    auth: HeaderValue,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest").field("api", &self.api).finish()
    }
}

impl Rest {
    /// A client for `endpoint` with `token` (without the `Bot ` prefix).
    pub fn new(endpoint: &Endpoint, token: &str) -> Result<Self, String> {
        // One process-wide provider; a second install fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut auth = HeaderValue::from_str(&format!("Bot {}", token.trim())).map_err(|_| {
            "the Discord bot token holds characters a header cannot carry".to_owned()
        })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "DiscordBot (https://github.com/molt, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Self {
            http,
            api: endpoint.api.clone(),
            auth,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// `GET /gateway/bot`: the WebSocket URL to connect to. A 401 means a bad token.
    pub async fn gateway_url(&self) -> Result<String, RestError> {
        let v = self
            .call(Method::GET, "/gateway/bot", "gateway", None)
            .await?;
        v.get("url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| RestError {
                status: None,
                message: "GET /gateway/bot returned no url".into(),
            })
    }

    /// `POST /channels/{id}/messages`. With a `nonce`, `enforce_nonce` is set: posting the
    /// same nonce again (within Discord's window) returns the earlier message and creates
    /// nothing, so an interrupted post can be retried safely.
    pub async fn create_message(
        &self,
        channel_id: &str,
        content: &str,
        nonce: Option<&str>,
    ) -> Result<Posted, RestError> {
        let mut body = json!({
            "content": content,
            // No pings from what the model writes.
            "allowed_mentions": {"parse": []},
        });
        if let Some(n) = nonce {
            body["nonce"] = json!(n);
            body["enforce_nonce"] = json!(true);
        }
        let v = self
            .call(
                Method::POST,
                &format!("/channels/{channel_id}/messages"),
                &format!("messages:{channel_id}"),
                Some(body),
            )
            .await?;
        Ok(Posted {
            id: v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            channel_id: channel_id.to_owned(),
        })
    }

    /// `POST /channels/{id}/typing`: shows "typing…" for about 10 s.
    pub async fn typing(&self, channel_id: &str) -> Result<(), RestError> {
        self.call(
            Method::POST,
            &format!("/channels/{channel_id}/typing"),
            &format!("typing:{channel_id}"),
            None,
        )
        .await
        .map(drop)
    }

    /// `POST /users/@me/channels`: the DM channel with `user_id`.
    pub async fn open_dm(&self, user_id: &str) -> Result<String, RestError> {
        let v = self
            .call(
                Method::POST,
                "/users/@me/channels",
                "dm",
                Some(json!({"recipient_id": user_id})),
            )
            .await?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| RestError {
                status: None,
                message: "POST /users/@me/channels returned no channel id".into(),
            })
    }

    /// `GET /channels/{id}`.
    pub async fn channel(&self, channel_id: &str) -> Result<ChannelInfo, RestError> {
        let v = self
            .call(
                Method::GET,
                &format!("/channels/{channel_id}"),
                &format!("channel:{channel_id}"),
                None,
            )
            .await?;
        serde_json::from_value(v).map_err(|e| RestError {
            status: None,
            message: format!("GET /channels/{channel_id}: unexpected shape: {e}"),
        })
    }

    /// `GET /users/@me`: the bot's own user id.
    pub async fn me(&self) -> Result<String, RestError> {
        let v = self.call(Method::GET, "/users/@me", "me", None).await?;
        Ok(v.get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        route: &str,
        body: Option<Value>,
    ) -> Result<Value, RestError> {
        let url = format!("{}{path}", self.api);
        let mut limited = 0;
        loop {
            self.wait_for_bucket(route).await;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(AUTHORIZATION, self.auth.clone());
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(RestError::net)?;
            let status = resp.status();
            self.note_bucket(route, resp.headers());
            if status == StatusCode::TOO_MANY_REQUESTS {
                let header_wait = retry_after_header(resp.headers());
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let wait = body
                    .get("retry_after")
                    .and_then(Value::as_f64)
                    .map(Duration::from_secs_f64)
                    .or(header_wait)
                    .unwrap_or(Duration::from_secs(1));
                limited += 1;
                if limited > MAX_429 || wait > MAX_WAIT {
                    return Err(RestError {
                        status: Some(429),
                        message: format!(
                            "{method} {path}: still rate limited after {limited} tries \
                             (retry_after {:.1}s)",
                            wait.as_secs_f64()
                        ),
                    });
                }
                tracing::debug!(
                    route,
                    wait_ms = wait.as_millis() as u64,
                    "discord: 429, waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == StatusCode::NO_CONTENT {
                return Ok(Value::Null);
            }
            let text = resp.text().await.map_err(RestError::net)?;
            if !status.is_success() {
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| text.chars().take(200).collect());
                let hint = if status == StatusCode::UNAUTHORIZED {
                    " (the bot token is wrong or was reset: set channels.discord.token or \
                     DISCORD_BOT_TOKEN to the token from the Developer Portal)"
                } else {
                    ""
                };
                return Err(RestError {
                    status: Some(status.as_u16()),
                    message: format!("{method} {path}: {message}{hint}"),
                });
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
    }

    async fn wait_for_bucket(&self, route: &str) {
        let until = {
            let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            map.get(route)
                .filter(|b| b.remaining == 0 && b.reset_at > Instant::now())
                .map(|b| b.reset_at)
        };
        if let Some(at) = until {
            let at = at.min(Instant::now() + MAX_WAIT);
            tracing::debug!(route, "discord: bucket spent, waiting for its reset");
            tokio::time::sleep_until(at).await;
        }
    }

    fn note_bucket(&self, route: &str, h: &HeaderMap) {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<f64>().ok())
        };
        let (Some(remaining), Some(after)) =
            (num("x-ratelimit-remaining"), num("x-ratelimit-reset-after"))
        else {
            return;
        };
        let after = Duration::from_secs_f64(after.clamp(0.0, MAX_WAIT.as_secs_f64()));
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            route.to_owned(),
            Bucket {
                remaining: remaining.max(0.0) as u64,
                reset_at: Instant::now() + after,
            },
        );
    }
}

fn retry_after_header(h: &HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)))
}

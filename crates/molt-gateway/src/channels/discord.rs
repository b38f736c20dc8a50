//! The Discord channel: a gateway session that turns messages into turns, and a delivery
//! loop that posts each turn's reply.
//!
//! ```text
//! connection task: token ─> own the session ─> IDENTIFY or RESUME ─> for each dispatch:
//!     MESSAGE_CREATE ─> access check ─> record id + create turn + note seq (one commit)
//!   close_admission ─> stop after the dispatch in hand ─> close 4000 (never 1000/1001)
//!     ─> save session (id, seq, resume url) and give up ownership
//! delivery task: turns ended ─> queue reply (one commit) ─> claim ─> post chunks (nonce)
//! send: queue under its idempotency key ─> wake delivery ─> wait (≤ 25 s) for sent|failed
//! ```
//!
//! Handover: the successor starts its subsystems as soon as it is told to go, while the
//! predecessor still holds the socket. The successor waits (polling the store) until the
//! predecessor has saved the session and let go, then RESUMEs it; so the two never both
//! process dispatches, and the successor continues from the last dispatch the predecessor
//! handled. After a crash the owner is dead: the next start takes the session over and
//! resumes from the sequence noted with the last dispatch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use molt_config::channels::{DiscordConfig, DmPolicy, DmScope, TokenSource};
use molt_discord::{ChannelInfo, Endpoint, Event, Gateway, INTENTS, MESSAGE_LIMIT, Rest, Session};
use molt_host::process;
use molt_protocol::methods::channels::{ChannelAccountStatus, DEFAULT_ACCOUNT};
use molt_store::{
    DiscordInbound, DiscordOutbound, DueReply, NewTurn, PairingOutcome, QueueMode, QueuedSend,
    StoreError,
};
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::agent::Agent;
use crate::app::{App, Lifecycle, now_ms};
use crate::store_handle::StoreHandle;

/// How long a pairing code stays valid.
pub const PAIRING_TTL_MS: i64 = 60 * 60 * 1000;
/// Pending pairing requests at most.
pub const PAIRING_MAX_PENDING: u32 = 3;
/// Pairing code alphabet: uppercase and digits without the look-alikes 0, O, 1 and I.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// How often the delivery loop looks for replies due (turns that ended in another process);
/// turns ending here wake it at once.
const DELIVERY_POLL: Duration = Duration::from_millis(200);
/// How often a successor looks whether its predecessor has let go of the session.
const OWNER_POLL: Duration = Duration::from_millis(20);
/// The longest a successor waits for a live predecessor to let go before taking over.
const OWNER_WAIT: Duration = Duration::from_secs(30);
/// Discord shows "typing…" for about 10 s; renew before it lapses.
const TYPING_EVERY: Duration = Duration::from_secs(8);
/// Typing renewals for one turn at most (about 5 minutes).
const TYPING_MAX: u32 = 40;
/// Attempts at one reply before it is marked failed.
const MAX_POST_ATTEMPTS: u32 = 5;
/// The longest `send` waits for its message to be posted: under the clients' 30 s request
/// timeout, so the caller gets an answer (the ids, or "queued") rather than a timeout.
pub const SEND_WAIT: Duration = Duration::from_secs(25);
/// How often a waiting `send` reads its row: another process (a handover successor) may be
/// the one that posts it. A post ending in this process wakes it at once.
const SEND_POLL: Duration = Duration::from_millis(100);

/// Why `send` returns no message ids.
#[derive(Debug)]
pub enum SendError {
    /// The channel is not running in this process (why); nothing was queued.
    NotRunning(String),
    /// The idempotency key was used for a message to another channel or with other text.
    KeyReused {
        channel_id: String,
    },
    /// Discord refused the message for good, or it failed too often; it will not be posted.
    Failed(String),
    /// The message is queued and will be posted, but not within the wait (why it ended).
    Queued(&'static str),
    Store(StoreError),
}

/// What `channels.status` shows, kept as the tasks go.
#[derive(Debug, Default, Clone)]
struct Live {
    running: bool,
    connected: bool,
    health: &'static str,
    reconnects: u64,
    last_connected_at: Option<u64>,
    last_error: Option<String>,
    fatal: bool,
    last_start_at: Option<u64>,
    last_inbound_at: Option<u64>,
    last_outbound_at: Option<u64>,
    last_event_at: Option<u64>,
    resumed: bool,
    identifies: u64,
    resumes: u64,
    seq: u64,
}

/// The Discord channel of one boot.
pub struct Discord {
    app: Arc<App>,
    store: StoreHandle,
    agent: Arc<Agent>,
    pub config: DiscordConfig,
    config_path: PathBuf,
    live: Mutex<Live>,
    admitting: watch::Sender<bool>,
    aborted: watch::Sender<bool>,
    /// Replies being posted by this process.
    posting: watch::Sender<usize>,
    /// Bumped each time this process ends a post (sent, failed or given back): wakes `send`.
    ended: watch::Sender<u64>,
    /// The connection task holds the session and has not saved and released it yet.
    holding: watch::Sender<bool>,
    deliver: Notify,
    rest: OnceLock<Arc<Rest>>,
    bot_id: OnceLock<String>,
    /// Channels seen (GUILD_CREATE, THREAD_CREATE, GET /channels), for thread parents.
    channels: Mutex<HashMap<String, ChannelInfo>>,
    base_url: String,
    token_source: Mutex<String>,
    /// This channel, weakly, for tasks that must not keep it alive.
    me: OnceLock<std::sync::Weak<Discord>>,
}

impl Discord {
    pub fn new(
        app: Arc<App>,
        store: StoreHandle,
        agent: Arc<Agent>,
        config: DiscordConfig,
        config_path: PathBuf,
    ) -> Arc<Self> {
        let base_url = Endpoint::from_env()
            .map(|e| e.api)
            .unwrap_or_else(|_| "(invalid DISCORD_API_URL)".into());
        Arc::new(Self {
            app,
            store,
            agent,
            config,
            config_path,
            live: Mutex::new(Live {
                health: "stopped",
                ..Live::default()
            }),
            admitting: watch::Sender::new(true),
            aborted: watch::Sender::new(false),
            posting: watch::Sender::new(0),
            ended: watch::Sender::new(0),
            holding: watch::Sender::new(false),
            deliver: Notify::new(),
            rest: OnceLock::new(),
            bot_id: OnceLock::new(),
            channels: Mutex::new(HashMap::new()),
            base_url,
            token_source: Mutex::new("none".into()),
            me: OnceLock::new(),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, message: String, fatal: bool) {
        if fatal {
            tracing::error!(error = %message, "discord: the channel stops until the gateway restarts");
        } else {
            tracing::warn!(error = %message, "discord");
        }
        let mut l = self.live();
        l.last_error = Some(message);
        if fatal {
            l.fatal = true;
            l.running = false;
            l.connected = false;
            l.health = "error";
        }
    }

    /// The REST client, once the channel is set up (`None` if it is not running).
    pub fn rest(&self) -> Option<&Arc<Rest>> {
        self.rest.get()
    }

    /// Why the channel cannot post now, for `send` and approvals.
    pub fn not_running_reason(&self) -> String {
        let l = self.live();
        match &l.last_error {
            Some(e) => format!("the Discord channel is not running: {e}"),
            None if !self.config.enabled => {
                "the Discord channel is disabled (channels.discord.enabled = false)".into()
            }
            None => "the Discord channel is not connected yet".into(),
        }
    }

    /// The account status for `channels.status`.
    pub async fn status(&self) -> ChannelAccountStatus {
        let counts = self
            .store
            .call(|s| s.discord_counts())
            .await
            .unwrap_or((0, 0, 0));
        let l = self.live().clone();
        let mut allow_from = self.config.allow_from.clone();
        allow_from.sort();
        ChannelAccountStatus {
            account_id: DEFAULT_ACCOUNT.into(),
            enabled: self.config.enabled,
            configured: self.token_source() != "none",
            running: l.running,
            connected: l.connected,
            reconnect_attempts: l.reconnects,
            last_connected_at: l.last_connected_at,
            last_error: l.last_error,
            health_state: if self.config.enabled {
                l.health.into()
            } else {
                "disabled".into()
            },
            last_start_at: l.last_start_at,
            last_inbound_at: l.last_inbound_at,
            last_outbound_at: l.last_outbound_at,
            last_transport_activity_at: l.last_event_at,
            busy: counts.2 > 0,
            active_runs: counts.2,
            dm_policy: word(&self.config.dm_policy),
            allow_from,
            token_source: self.token_source(),
            base_url: self.base_url.clone(),
            resumed: l.resumed,
            identifies: l.identifies,
            resumes: l.resumes,
            seq: l.seq,
            fatal: l.fatal,
            bot_user_id: self.bot_id.get().cloned(),
            pending_replies: counts.0,
            failed_replies: counts.1,
        }
    }

    fn token_source(&self) -> String {
        self.token_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves the token, checks where it lives, and sets up REST; learns the bot's id.
    /// `Err` is a configuration error (the message never holds the token).
    async fn setup(&self) -> Result<(Endpoint, String), String> {
        let (token, source) = self.config.resolve_token(|k| std::env::var(k).ok())?;
        *self.token_source.lock().unwrap_or_else(|p| p.into_inner()) = match &source {
            TokenSource::Config => "config".into(),
            TokenSource::Env(v) => format!("env:{v}"),
        };
        if source == TokenSource::Config {
            crate::ensure_private(
                &self.config_path,
                "the Discord bot token",
                "move the token to the environment (channels.discord.token_env)",
            )?;
        }
        let endpoint = Endpoint::from_env()?;
        let rest = Arc::new(Rest::new(&endpoint, &token)?);
        match rest.me().await {
            Ok(id) => {
                let _ = self.bot_id.set(id);
            }
            // A bad token is final; Discord being unreachable is not (the gateway retries,
            // and the bot's id is asked again once connected).
            Err(e) if e.is_unauthorized() => return Err(e.to_string()),
            Err(e) => self.fail(
                format!("cannot reach Discord to check the bot token: {e}"),
                false,
            ),
        }
        let _ = self.rest.set(rest);
        Ok((endpoint, token))
    }

    /// Waits until no live process owns the session, then owns it. `false` if admission
    /// closed meanwhile.
    async fn take_ownership(&self) -> Result<bool, StoreError> {
        let epoch = self.app.boot.epoch;
        let deadline = tokio::time::Instant::now() + OWNER_WAIT;
        let mut admitting = self.admitting.subscribe();
        let mut waited = false;
        loop {
            let s = self.store.call(|s| s.discord_session()).await?;
            let owner = s.as_ref().and_then(|s| s.owner_epoch);
            let claim = match (owner, &s) {
                (None, _) => Some(None),
                (Some(e), _) if e == epoch => return Ok(true),
                (Some(e), Some(s)) => {
                    let alive = s
                        .owner_pid
                        .is_some_and(|p| process::holder_alive(p, s.owner_started_at_ms));
                    if !alive {
                        tracing::info!(
                            owner = e,
                            "discord: the session's owner is gone; taking it over"
                        );
                        Some(Some(e))
                    } else if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(
                            owner = e,
                            "discord: the previous process did not let go of the session in time; taking it over"
                        );
                        Some(Some(e))
                    } else {
                        if !waited {
                            tracing::info!(
                                owner = e,
                                "discord: waiting for the previous process to hand over the session"
                            );
                            waited = true;
                        }
                        None
                    }
                }
                (Some(_), None) => Some(owner),
            };
            if let Some(expected) = claim {
                if self
                    .store
                    .call(move |s| s.discord_claim_session(epoch, expected))
                    .await?
                {
                    return Ok(true);
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(OWNER_POLL) => {}
                _ = admitting.wait_for(|a| !a) => return Ok(false),
            }
        }
    }

    /// The connection task.
    async fn connection(self: Arc<Self>) {
        self.live().last_start_at = Some(now_ms());
        self.live().health = "connecting";
        let (endpoint, token) = match self.setup().await {
            Ok(t) => t,
            Err(e) => {
                self.fail(e, true);
                self.holding.send_replace(false);
                return;
            }
        };
        self.live().running = true;
        match self.take_ownership().await {
            Ok(true) => {}
            Ok(false) => {
                self.live().running = false;
                self.holding.send_replace(false);
                return;
            }
            Err(e) => {
                self.fail(
                    format!("cannot read the Discord session from the store: {e}"),
                    true,
                );
                self.holding.send_replace(false);
                return;
            }
        }
        self.deliver.notify_one();
        let persisted = self
            .store
            .call(|s| s.discord_session())
            .await
            .ok()
            .flatten();
        let session = persisted.and_then(|p| {
            Some(Session {
                session_id: p.session_id?,
                seq: p.seq,
                resume_url: p.resume_url?,
            })
        });
        if let Some(s) = &session {
            tracing::info!(seq = s.seq, "discord: resuming the session");
            self.live().seq = s.seq;
        }
        let Some(rest) = self.rest.get().cloned() else {
            // setup() sets it; without it there is nothing to connect with.
            self.holding.send_replace(false);
            return;
        };
        let mut gw = Gateway::new(endpoint, rest, &token, INTENTS, session);
        drop(token);
        let mut admitting = self.admitting.subscribe();
        loop {
            if !*admitting.borrow() {
                break;
            }
            let ev = tokio::select! {
                ev = gw.next() => ev,
                _ = admitting.wait_for(|a| !a) => break,
            };
            match ev {
                Ok(ev) => self.on_event(&gw, ev).await,
                Err(f) => {
                    self.fail(f.message, true);
                    break;
                }
            }
        }
        // Let go without ending the session, and save where it stands for whoever is next.
        let s = gw.detach().await;
        let epoch = self.app.boot.epoch;
        let saved = self
            .store
            .call(move |st| {
                st.discord_save_session(
                    epoch,
                    s.as_ref()
                        .map(|s| (s.session_id.as_str(), s.seq, s.resume_url.as_str())),
                    true,
                )
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "discord: cannot save the session; the next process identifies anew");
        }
        {
            let mut l = self.live();
            l.connected = false;
            l.running = false;
            if !l.fatal {
                l.health = "stopped";
            }
        }
        tracing::info!("discord: connection handed back");
        self.holding.send_replace(false);
    }

    async fn on_event(&self, gw: &Gateway, ev: Event) {
        let epoch = self.app.boot.epoch;
        match ev {
            Event::Ready { user_id, .. } => {
                let _ = self.bot_id.set(user_id);
                if let Some(s) = gw.session().cloned() {
                    let _ = self
                        .store
                        .call(move |st| {
                            st.discord_save_session(
                                epoch,
                                Some((&s.session_id, s.seq, &s.resume_url)),
                                false,
                            )
                        })
                        .await
                        .inspect_err(
                            |e| tracing::warn!(error = %e, "discord: cannot save the session"),
                        );
                }
                let mut l = self.live();
                l.identifies += 1;
                l.resumed = false;
                self.connected(&mut l);
                tracing::info!("discord: connected (new session)");
            }
            Event::Resumed => {
                // A resumed session has no READY to learn the bot's id from.
                if self.bot_id.get().is_none() {
                    if let Some(Ok(id)) = match self.rest.get() {
                        Some(r) => Some(r.me().await),
                        None => None,
                    } {
                        let _ = self.bot_id.set(id);
                    }
                }
                let mut l = self.live();
                l.resumes += 1;
                l.resumed = true;
                self.connected(&mut l);
                tracing::info!("discord: connected (session resumed)");
            }
            Event::Reconnecting { reason, retry_in } => {
                tracing::warn!(%reason, retry_in_ms = retry_in.as_millis() as u64, "discord: reconnecting");
                let mut l = self.live();
                l.connected = false;
                l.reconnects += 1;
                l.health = "reconnecting";
                l.last_error = Some(reason);
            }
            Event::Dispatch { seq, kind, data } => {
                {
                    let mut l = self.live();
                    l.last_event_at = Some(now_ms());
                    l.seq = l.seq.max(seq);
                }
                match kind.as_str() {
                    "MESSAGE_CREATE" => self.on_message(seq, &data).await,
                    _ => {
                        self.remember_channels(&kind, &data);
                        let _ = self
                            .store
                            .call(move |s| s.discord_note_seq(seq))
                            .await
                            .inspect_err(
                                |e| tracing::warn!(error = %e, "discord: cannot note the sequence"),
                            );
                    }
                }
            }
        }
    }

    fn connected(&self, l: &mut Live) {
        l.connected = true;
        l.health = "connected";
        l.last_connected_at = Some(now_ms());
        l.last_error = None;
    }

    fn remember_channels(&self, kind: &str, d: &Value) {
        let mut found = Vec::new();
        match kind {
            "GUILD_CREATE" => {
                let guild = d.get("id").and_then(Value::as_str).map(str::to_owned);
                for list in ["channels", "threads"] {
                    for c in d.get(list).and_then(Value::as_array).into_iter().flatten() {
                        if let Ok(mut info) = serde_json::from_value::<ChannelInfo>(c.clone()) {
                            info.guild_id = info.guild_id.or_else(|| guild.clone());
                            found.push(info);
                        }
                    }
                }
            }
            "THREAD_CREATE" | "CHANNEL_CREATE" | "THREAD_UPDATE" | "CHANNEL_UPDATE" => {
                if let Ok(info) = serde_json::from_value::<ChannelInfo>(d.clone()) {
                    found.push(info);
                }
            }
            _ => {}
        }
        if !found.is_empty() {
            let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            for c in found {
                map.insert(c.id.clone(), c);
            }
        }
    }

    /// The channel's info: known from the gateway, else `GET /channels/{id}` (a failure
    /// counts it as a plain channel).
    async fn channel_info(&self, id: &str) -> Option<ChannelInfo> {
        if let Some(c) = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Some(c.clone());
        }
        let info = self.rest.get()?.channel(id).await.ok()?;
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), info.clone());
        Some(info)
    }

    async fn note_seq(&self, seq: u64) {
        let _ = self
            .store
            .call(move |s| s.discord_note_seq(seq))
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "discord: cannot note the sequence"));
    }

    async fn on_message(&self, seq: u64, d: &Value) {
        let m = match Inbound::parse(d) {
            Some(m) => m,
            None => return self.note_seq(seq).await,
        };
        let bot = self.bot_id.get().map(String::as_str).unwrap_or("");
        if m.author_is_bot || m.author_id == bot {
            return self.note_seq(seq).await;
        }
        let agent = self.config.agent.clone();
        let (session_key, text) = match &m.guild_id {
            None => {
                let allowed = match self.config.dm_policy {
                    DmPolicy::Disabled => return self.note_seq(seq).await,
                    DmPolicy::Open => true,
                    DmPolicy::Allowlist | DmPolicy::Pairing => {
                        self.config
                            .allow_from
                            .iter()
                            .any(|u| u == "*" || *u == m.author_id)
                            || {
                                let a = m.author_id.clone();
                                self.store
                                    .call(move |s| s.discord_is_approved(&a))
                                    .await
                                    .unwrap_or(false)
                            }
                    }
                };
                if !allowed {
                    if self.config.dm_policy == DmPolicy::Pairing {
                        self.pairing(seq, &m).await;
                    } else {
                        self.note_seq(seq).await;
                    }
                    return;
                }
                let key = match self.config.dm_scope {
                    DmScope::Main => format!("agent:{agent}:main"),
                    DmScope::PerPeer => {
                        format!("agent:{agent}:direct:{}", m.author_id.to_lowercase())
                    }
                };
                (key, m.content.trim().to_owned())
            }
            Some(guild) => {
                let info = self.channel_info(&m.channel_id).await;
                let parent = info
                    .as_ref()
                    .filter(|i| i.is_thread())
                    .and_then(|i| i.parent_id.clone());
                let Some(rule) = self
                    .config
                    .guild_rule(guild, &m.channel_id, parent.as_deref())
                else {
                    return self.note_seq(seq).await;
                };
                if !rule.users.is_empty() && !rule.users.contains(&m.author_id) {
                    return self.note_seq(seq).await;
                }
                let mentioned = !bot.is_empty()
                    && (m.mentions.iter().any(|id| id == bot)
                        || m.content.contains(&format!("<@{bot}>"))
                        || m.content.contains(&format!("<@!{bot}>")));
                if rule.require_mention && !mentioned {
                    return self.note_seq(seq).await;
                }
                let key = match &parent {
                    Some(p) => format!(
                        "agent:{agent}:discord:channel:{}:thread:{}",
                        p.to_lowercase(),
                        m.channel_id.to_lowercase()
                    ),
                    None => format!(
                        "agent:{agent}:discord:channel:{}",
                        m.channel_id.to_lowercase()
                    ),
                };
                let content = m
                    .content
                    .replace(&format!("<@{bot}>"), "")
                    .replace(&format!("<@!{bot}>"), "");
                (key, format!("{}: {}", m.author_name, content.trim()))
            }
        };
        if text.trim().is_empty() {
            return self.note_seq(seq).await;
        }
        let run_id = format!("discord-{}", m.id);
        let (rid, mid, cid, aid) = (
            run_id.clone(),
            m.id.clone(),
            m.channel_id.clone(),
            m.author_id.clone(),
        );
        let accepted = self
            .store
            .call(move |s| {
                s.discord_accept(
                    &DiscordInbound {
                        message_id: &mid,
                        channel_id: &cid,
                        author_id: &aid,
                    },
                    &NewTurn {
                        run_id: &rid,
                        session_key: &session_key,
                        agent_id: &agent,
                        text: &text,
                        mode: QueueMode::Followup,
                        origin: "discord",
                    },
                    Some(seq),
                )
            })
            .await;
        match accepted {
            Ok(true) => {
                self.live().last_inbound_at = Some(now_ms());
                self.agent.wake_dispatcher();
                self.spawn_typing(m.channel_id.clone(), run_id);
            }
            Ok(false) => {
                tracing::debug!(message = %m.id, "discord: message seen before; nothing started")
            }
            Err(e) => {
                tracing::error!(error = %e, message = %m.id, "discord: cannot record the message");
                self.fail(format!("cannot record an inbound message: {e}"), false);
            }
        }
    }

    /// An unknown sender under `pairing`: a code by DM, and the message is not processed.
    async fn pairing(&self, seq: u64, m: &Inbound) {
        let (mid, cid, aid, name) = (
            m.id.clone(),
            m.channel_id.clone(),
            m.author_id.clone(),
            m.author_name.clone(),
        );
        let out = self
            .store
            .call(move |s| {
                s.discord_pairing_request(
                    &DiscordInbound {
                        message_id: &mid,
                        channel_id: &cid,
                        author_id: &aid,
                    },
                    &name,
                    PAIRING_TTL_MS,
                    PAIRING_MAX_PENDING,
                    Some(seq),
                    pairing_code,
                )
            })
            .await;
        let code = match out {
            Ok(PairingOutcome::Created(c) | PairingOutcome::Pending(c)) => c,
            Ok(PairingOutcome::Full) => {
                tracing::warn!(sender = %m.author_id, "discord: a stranger wrote, but {PAIRING_MAX_PENDING} pairing requests are pending already; ignored");
                return;
            }
            Ok(PairingOutcome::Duplicate) => return,
            Err(e) => {
                tracing::error!(error = %e, "discord: cannot record a pairing request");
                return;
            }
        };
        tracing::info!(sender = %m.author_id, "discord: pairing code sent to an unknown sender; approve with `molt pairing approve CODE`");
        let text = format!(
            "molt: I don't know you yet, so I have not read your message.\n\
             Your pairing code: {code}\n\
             Ask the operator to approve it with `molt pairing approve {code}` (it expires in 1 hour)."
        );
        let (cid, nonce) = (m.channel_id.clone(), format!("p{}", m.id));
        if let Err(e) = self
            .store
            .call(move |s| s.discord_queue_message(&cid, &text, &nonce))
            .await
        {
            tracing::error!(error = %e, "discord: cannot queue the pairing code");
        }
        self.deliver.notify_one();
    }

    /// Shows "typing…" in `channel` while turn `run_id` runs, then wakes the delivery loop.
    fn spawn_typing(&self, channel: String, run_id: String) {
        let (Some(rest), agent) = (self.rest.get().cloned(), self.agent.clone()) else {
            return;
        };
        let mut aborted = self.aborted.subscribe();
        let deliver = self.deliver_handle();
        tokio::spawn(async move {
            for _ in 0..TYPING_MAX {
                if *aborted.borrow() {
                    return;
                }
                // Not awaited: a typing call waiting on its rate limit must not hold up
                // noticing the end of the turn.
                let (r, c) = (rest.clone(), channel.clone());
                tokio::spawn(async move {
                    let _ = r.typing(&c).await;
                });
                let ended = tokio::select! {
                    t = agent.wait(&run_id, TYPING_EVERY) => t.is_none_or(|t| t.state.is_terminal()),
                    _ = aborted.wait_for(|a| *a) => return,
                };
                if ended {
                    break;
                }
            }
            deliver();
        });
    }

    /// A callback that wakes the delivery loop; it holds no strong reference.
    fn deliver_handle(&self) -> impl Fn() + Send + 'static {
        let weak = self.self_weak();
        move || {
            if let Some(d) = weak.upgrade() {
                d.deliver.notify_one();
            }
        }
    }

    fn self_weak(&self) -> std::sync::Weak<Discord> {
        self.me.get().cloned().unwrap_or_default()
    }

    /// The delivery task: queues replies of ended turns and posts what is queued.
    async fn delivery(self: Arc<Self>) {
        let mut aborted = self.aborted.subscribe();
        loop {
            if *aborted.borrow() {
                return;
            }
            if let Some(rest) = self.rest.get().cloned() {
                if let Err(e) = self.queue_due().await {
                    tracing::warn!(error = %e, "discord: cannot queue replies; retrying");
                }
                if let Err(e) = self.post_queued(&rest).await {
                    tracing::warn!(error = %e, "discord: cannot claim replies; retrying");
                }
            }
            tokio::select! {
                _ = self.deliver.notified() => {}
                _ = tokio::time::sleep(DELIVERY_POLL) => {}
                _ = aborted.wait_for(|a| *a) => return,
            }
        }
    }

    async fn queue_due(&self) -> Result<(), StoreError> {
        let due = self.store.call(|s| s.discord_replies_due(100)).await?;
        for d in due {
            let content = reply_text(&d);
            let (mid, cid) = (d.message_id.clone(), d.channel_id.clone());
            self.store
                .call(move |s| s.discord_queue_reply(&mid, &cid, content.as_deref()))
                .await?;
        }
        Ok(())
    }

    async fn post_queued(&self, rest: &Arc<Rest>) -> Result<(), StoreError> {
        let epoch = self.app.boot.epoch;
        let claimed = self
            .store
            .call(move |s| s.discord_claim_outbound(epoch, 50, process::holder_alive))
            .await?;
        if claimed.is_empty() {
            return Ok(());
        }
        self.posting.send_modify(|n| *n += claimed.len());
        // One task per channel, so a slow channel does not hold the others; in order
        // within a channel.
        let mut by_channel: Vec<(String, Vec<DiscordOutbound>)> = Vec::new();
        for o in claimed {
            match by_channel.iter_mut().find(|(c, _)| *c == o.channel_id) {
                Some((_, v)) => v.push(o),
                None => by_channel.push((o.channel_id.clone(), vec![o])),
            }
        }
        join_all(by_channel.into_iter().map(|(_, list)| async move {
            for o in list {
                self.post_one(rest, o).await;
                self.posting.send_modify(|n| *n = n.saturating_sub(1));
            }
        }))
        .await;
        Ok(())
    }

    async fn post_one(&self, rest: &Rest, o: DiscordOutbound) {
        let chunks = molt_discord::chunk_text(&o.content, MESSAGE_LIMIT);
        let mut aborted = self.aborted.subscribe();
        let mut end: (&str, Option<String>) = ("sent", None);
        for (i, chunk) in chunks.iter().enumerate().skip(o.chunks_sent as usize) {
            let nonce = format!("{}.{i}", o.nonce);
            let posted = tokio::select! {
                r = rest.create_message(&o.channel_id, chunk, Some(&nonce)) => r,
                _ = aborted.wait_for(|a| *a) => {
                    end = ("pending", None);
                    break;
                }
            };
            match posted {
                Ok(p) => {
                    let (id, n) = (o.id, i as u32 + 1);
                    let _ = self
                        .store
                        .call(move |s| s.discord_outbound_progress(id, n, &p.id))
                        .await
                        .inspect_err(
                            |e| tracing::warn!(error = %e, "discord: cannot record a posted chunk"),
                        );
                    self.live().last_outbound_at = Some(now_ms());
                }
                Err(e) => {
                    // A client error other than a rate limit will not change on retry.
                    let final_error = matches!(e.status, Some(400..=499) if e.status != Some(429))
                        || o.attempts >= MAX_POST_ATTEMPTS;
                    tracing::warn!(error = %e, channel = %o.channel_id, attempt = o.attempts, "discord: cannot post a reply");
                    self.fail(
                        format!("cannot post to channel {}: {e}", o.channel_id),
                        false,
                    );
                    end = if final_error {
                        ("failed", Some(e.to_string()))
                    } else {
                        ("pending", None)
                    };
                    break;
                }
            }
        }
        let id = o.id;
        let _ = self
            .store
            .call(move |s| s.discord_outbound_end(id, end.0, end.1.as_deref()))
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "discord: cannot record a reply's end"));
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
        if end.0 == "pending" && !*self.aborted.borrow() {
            // Try again at the next round, not in a tight loop.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The store, for the methods.
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// The DM channel with `user_id`.
    pub async fn dm_channel(&self, user_id: &str) -> Result<String, String> {
        let rest = self.rest.get().ok_or_else(|| self.not_running_reason())?;
        rest.open_dm(user_id).await.map_err(|e| e.to_string())
    }

    /// Tells an approved sender (by DM, through the reply queue) that they may write now.
    pub async fn notify_approved(&self, user_id: &str) -> Result<(), String> {
        let channel = self.dm_channel(user_id).await?;
        let nonce = format!("a{user_id}");
        let text = "molt: you are approved; I will answer your messages from now on.";
        self.store
            .call(move |s| s.discord_queue_message(&channel, text, &nonce))
            .await
            .map_err(|e| e.to_string())?;
        self.deliver.notify_one();
        Ok(())
    }

    /// Queues `text` for `channel_id` under the idempotency key `key` (the `send` method),
    /// wakes the delivery loop, and waits up to [`SEND_WAIT`] until it is posted. Returns
    /// the ids of the messages posted (one per chunk). The same key finds the same row, so
    /// a retry never queues twice; the chunk nonces come from the row, so a post cut short
    /// (a handover, a stop, `kill -9`) is finished by whichever process claims the row next
    /// without a duplicate on Discord.
    pub async fn send(
        &self,
        channel_id: &str,
        text: &str,
        key: &str,
    ) -> Result<Vec<String>, SendError> {
        // Only a running channel queues: a row for a channel that may never run would wait
        // forever.
        if self.rest.get().is_none() {
            return Err(SendError::NotRunning(self.not_running_reason()));
        }
        let (k, c, t, nonce) = (
            key.to_owned(),
            channel_id.to_owned(),
            text.to_owned(),
            short_hash(key),
        );
        let queued = self
            .store
            .call(move |s| s.discord_queue_send(&k, &c, &t, &nonce))
            .await
            .map_err(SendError::Store)?;
        let id = match queued {
            QueuedSend::New(id) | QueuedSend::Existing(id) => id,
            QueuedSend::Conflict { channel_id } => {
                return Err(SendError::KeyReused { channel_id });
            }
        };
        self.deliver.notify_one();
        self.wait_posted(id).await
    }

    /// Waits until queued message `id` is sent or failed, at most [`SEND_WAIT`], and not past
    /// this process serving: a stop or handover closes the caller's connection anyway, and
    /// the row stays queued for whoever posts next.
    async fn wait_posted(&self, id: i64) -> Result<Vec<String>, SendError> {
        let deadline = tokio::time::Instant::now() + SEND_WAIT;
        let mut ended = self.ended.subscribe();
        let mut lifecycle = self.app.lifecycle.subscribe();
        loop {
            let status = self
                .store
                .call(move |s| s.discord_outbound_status(id))
                .await
                .map_err(SendError::Store)?
                .ok_or_else(|| {
                    SendError::Store(StoreError::Corrupt(format!(
                        "queued Discord message {id} is gone from discord_outbound"
                    )))
                })?;
            match status.state.as_str() {
                "sent" => return Ok(status.message_ids),
                "failed" => {
                    return Err(SendError::Failed(
                        status
                            .error
                            .unwrap_or_else(|| "no reason was recorded".into()),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SendError::Queued("it was not posted within the wait"));
            }
            tokio::select! {
                _ = ended.changed() => {}
                _ = tokio::time::sleep(SEND_POLL) => {}
                _ = lifecycle.wait_for(|l| *l != Lifecycle::Serving) => {
                    return Err(SendError::Queued("the gateway is restarting or stopping"));
                }
            }
        }
    }

    pub fn start(self: Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(&self));
        if !self.config.enabled {
            self.live().health = "disabled";
            return;
        }
        self.holding.send_replace(true);
        tokio::spawn(self.clone().connection());
        tokio::spawn(self.delivery());
    }

    pub fn close_admission(&self) {
        self.admitting.send_replace(false);
    }

    /// Replies being posted, and the session until it is saved and let go (after admission
    /// closed), so a handover's drain waits for both.
    pub fn in_flight(&self) -> usize {
        let holding = !*self.admitting.borrow() && *self.holding.borrow();
        *self.posting.borrow() + usize::from(holding)
    }

    pub fn wait_idle(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        let mut posting = self.posting.subscribe();
        let mut holding = self.holding.subscribe();
        let admitting = *self.admitting.borrow();
        Box::pin(async move {
            tokio::time::timeout(timeout, async {
                let _ = posting.wait_for(|n| *n == 0).await;
                if !admitting {
                    let _ = holding.wait_for(|h| !h).await;
                }
            })
            .await
            .is_ok()
        })
    }

    /// Stops posting (a reply in the middle goes back to the queue with its posted chunks
    /// counted) and typing.
    pub fn abort(&self) {
        self.admitting.send_replace(false);
        self.aborted.send_replace(true);
    }
}

/// A message as the channel reads it from `MESSAGE_CREATE`.
#[derive(Debug, Clone)]
struct Inbound {
    id: String,
    channel_id: String,
    guild_id: Option<String>,
    author_id: String,
    author_name: String,
    author_is_bot: bool,
    content: String,
    mentions: Vec<String>,
}

impl Inbound {
    fn parse(d: &Value) -> Option<Self> {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let author = d.get("author")?;
        Some(Self {
            id: s(d.get("id"))?,
            channel_id: s(d.get("channel_id"))?,
            guild_id: s(d.get("guild_id")),
            author_id: s(author.get("id"))?,
            author_name: s(author.get("global_name"))
                .or_else(|| s(author.get("username")))
                .unwrap_or_default(),
            author_is_bot: author.get("bot").and_then(Value::as_bool).unwrap_or(false),
            content: s(d.get("content")).unwrap_or_default(),
            mentions: d
                .get("mentions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|m| s(m.get("id"))).collect())
                .unwrap_or_default(),
        })
    }
}

/// What is posted for an ended turn: its answer, a short note (without the error) if it
/// failed, nothing if it was cancelled.
fn reply_text(d: &DueReply) -> Option<String> {
    match d.run_state.as_str() {
        "succeeded" => d.final_text.clone().filter(|t| !t.trim().is_empty()),
        // The error itself stays with the operator (the turn's record and the log): it can
        // name paths, providers and config keys that are nobody else's business.
        "failed" => Some(
            "⚠️ I could not answer this message. The gateway's operator can see why in its \
             log and in `molt sessions history`."
                .into(),
        ),
        _ => None,
    }
}

/// A new pairing code: 8 characters from [`CODE_ALPHABET`].
pub fn pairing_code() -> String {
    let bytes = molt_host::fsutil::random_bytes(8).unwrap_or_else(|_| {
        // No entropy source: fall back on the clock (codes still expire in an hour).
        let t = now_ms();
        (0..8)
            .map(|i| (t >> (i * 5)) as u8 ^ (std::process::id() >> i) as u8)
            .collect()
    });
    bytes
        .iter()
        .map(|b| CODE_ALPHABET[*b as usize % CODE_ALPHABET.len()] as char)
        .collect()
}

/// A short stable digest for nonces (Discord allows 25 characters).
fn short_hash(s: &str) -> String {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("s{h:016x}")
}

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_codes_are_eight_unambiguous_characters() {
        for _ in 0..200 {
            let c = pairing_code();
            assert_eq!(c.len(), 8);
            assert!(
                c.chars()
                    .all(|ch| CODE_ALPHABET.contains(&(ch as u8)) && !"0O1I".contains(ch)),
                "{c}"
            );
        }
        assert_ne!(pairing_code(), pairing_code());
    }

    #[test]
    fn a_failed_turn_gets_a_note_and_a_cancelled_one_nothing() {
        let mut d = DueReply {
            message_id: "1".into(),
            channel_id: "c".into(),
            run_id: "r".into(),
            run_state: "succeeded".into(),
            final_text: Some("hi".into()),
            error: None,
        };
        assert_eq!(reply_text(&d).as_deref(), Some("hi"));
        d.run_state = "failed".into();
        d.error = Some("models.providers.x at /home/u/.config/molt/molt.toml".into());
        let note = reply_text(&d).unwrap();
        assert!(
            note.contains("could not answer") && !note.contains("molt.toml"),
            "{note}"
        );
        d.run_state = "cancelled".into();
        assert_eq!(reply_text(&d), None);
    }

    #[test]
    fn nonces_fit_discord() {
        assert!(short_hash("some idempotency key").len() + ".99".len() <= 25);
        assert!("12345678901234567890".len() + ".99".len() <= 25);
    }
}

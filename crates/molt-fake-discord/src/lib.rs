//! A fake Discord on loopback, for molt's tests and benchmarks.
//!
//! [`FakeDiscord`] listens on `127.0.0.1` with an ephemeral port and serves, on that one
//! origin, what a Discord bot client talks to:
//!
//! - **REST** under `/api/v10` ([`FakeDiscord::api_url`] is the value for
//!   `DISCORD_API_URL`): `GET /gateway/bot`, `GET /gateway`, `GET /users/@me`,
//!   `GET /channels/{id}`, `POST /users/@me/channels` (open a DM),
//!   `POST /channels/{id}/messages`, `POST /channels/{id}/typing`, plus the acknowledgement
//!   reaction (`PUT /channels/{id}/messages/{mid}/reactions/{emoji}/@me`) and command
//!   registration (`PUT /applications/{id}/commands`) that OpenClaw's channel makes, both
//!   accepted and otherwise ignored. Every call needs `Authorization: Bot <token>`; every
//!   response carries the `X-RateLimit-*` headers.
//! - **The gateway** (v10, JSON text frames): a WebSocket upgrade on any path, so the url from
//!   `GET /gateway/bot` and the `resume_gateway_url` from READY both work, with or without
//!   `?v=10&encoding=json`. HELLO, heartbeat ACK, IDENTIFY → READY and one GUILD_CREATE per
//!   guild, RESUME → the missed dispatches in order and RESUMED, INVALID_SESSION, RECONNECT
//!   on demand, and the close codes for a bad token (4004), missing intents (4014) and
//!   protocol errors (4001, 4002, 4003, 4005, 4012).
//!
//! A test scripts the Discord side (guilds, channels, threads, DM channels, inbound
//! messages with [`FakeDiscord::send_message`]) and inspects what the client did: IDENTIFYs,
//! RESUMEs, heartbeats, posted messages, typing indicators, post attempts.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use molt_fake_discord::{FakeDiscord, Inbound, Options};
//!
//! let discord = FakeDiscord::start(Options::default()).await?;
//! discord.add_guild_channel("200", "300");
//! // ... start the client with DISCORD_API_URL=discord.api_url() and the default token ...
//! let id = discord.send_message(Inbound {
//!     channel_id: "300".into(),
//!     guild_id: Some("200".into()),
//!     author_id: "400".into(),
//!     author_name: "alice".into(),
//!     content: "hello".into(),
//!     mentions_bot: true,
//!     ..Inbound::default()
//! });
//! // ... poll discord.posted() with a deadline for the reply ...
//! # let _ = id; Ok(()) }
//! ```
//!
//! # Sessions, sequences and replay
//! The bot has one shard, so one *current* session: each IDENTIFY starts a new session and
//! the previous ones can no longer be resumed. A session keeps its sequence number and every
//! dispatch it was sent, whether a socket is attached or not, so a RESUME with `seq` = N
//! replays every dispatch with `s > N` in order, then RESUMED. RESUMED takes the next
//! sequence number but is not kept for replay, so a client that lost the socket before
//! reading it sees a gap there and nowhere else. What ends a session:
//! a client close with code 1000 or 1001 (as on Discord), a newer IDENTIFY, and
//! [`FakeDiscord::invalidate_sessions`]; a RESUME of an ended session gets op 9
//! `d:false`. A dropped TCP connection or a close with any other code leaves the session
//! resumable, and a RESUME of a session whose socket is still open closes that socket
//! (4000) and moves the session to the new one.
//!
//! Messages from [`FakeDiscord::send_message`] while there is no current session (before
//! the first IDENTIFY, or after the session ended) are **held** and dispatched right after
//! the next READY and its GUILD_CREATEs. Real Discord would drop them; holding them keeps
//! tests free of start-up races. Messages the bot posts are dispatched back to the gateway
//! as MESSAGE_CREATE with the bot as author, as Discord does (a client must ignore its own
//! messages); [`FakeDiscord::set_echo_own_messages`] turns that off.
//!
//! # Rate limits
//! Each route has a bucket per channel ([`FakeDiscord::set_rate_limit`]; 50 requests per
//! second by default, so a client that reads the headers is never slowed down in tests),
//! reported in `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Reset-After` and `-Bucket`.
//! Going over it gets a real 429. [`FakeDiscord::fail_next_posts_with_429`] makes the next
//! message posts fail with 429 and a chosen `retry_after`; a post that comes back before that
//! time is up gets another 429 and is counted by [`FakeDiscord::early_retries`].
//!
//! # What it does not model
//! zlib or zstd transport compression (a `compress` parameter is ignored and frames are
//! always plain JSON text), ETF encoding, sharding, the identify rate limit and
//! `session_start_limit` accounting, heartbeat timeouts (a client that stops heartbeating
//! is not disconnected; [`FakeDiscord::set_heartbeat_acks`] models the other side, a
//! gateway that stops answering), server-requested heartbeats (op 1 from the server),
//! presence and member events, permissions, message edits, deletes, embeds, attachments,
//! components and interactions, the global rate limit, and the expiry of resumable sessions
//! and nonces. Intents only matter at IDENTIFY (4014 when a required bit is missing) and for
//! which MESSAGE_CREATEs a session gets and whether they carry content, as described on
//! [`intents`].
#![warn(missing_docs)]

mod clock;
mod gateway;
mod rest;
mod server;
mod state;

pub use server::FakeDiscord;

/// Gateway intent bits the fake looks at (Discord's values).
///
/// A session that lacks [`GUILD_MESSAGES`](intents::GUILD_MESSAGES) gets no guild
/// MESSAGE_CREATE, one that lacks [`DIRECT_MESSAGES`](intents::DIRECT_MESSAGES) gets no DM
/// MESSAGE_CREATE, and without [`MESSAGE_CONTENT`](intents::MESSAGE_CONTENT) a guild
/// message's `content` is empty unless it mentions the bot (DMs always carry content).
pub mod intents {
    /// `GUILDS` (1 << 0).
    pub const GUILDS: u64 = 1 << 0;
    /// `GUILD_MESSAGES` (1 << 9).
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    /// `DIRECT_MESSAGES` (1 << 12).
    pub const DIRECT_MESSAGES: u64 = 1 << 12;
    /// `MESSAGE_CONTENT` (1 << 15), a privileged intent.
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
    /// The four molt asks for, and the fake's default requirement.
    pub const MOLT_DEFAULT: u64 = GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT;
}

/// How the fake Discord is set up. Use `..Options::default()` for the fields you don't set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The bot token: REST needs `Authorization: Bot <token>`, IDENTIFY and RESUME need it
    /// as `d.token` (4004 otherwise). Default `"fake-bot-token"`.
    pub token: String,
    /// The bot's user id (READY's `user.id`, the author of posted messages). Default
    /// `"100000000000000001"`.
    pub bot_user_id: String,
    /// The bot's username. Default `"molt-bot"`.
    pub bot_username: String,
    /// READY's `application.id`. Default `"100000000000000002"`.
    pub application_id: String,
    /// HELLO's `heartbeat_interval` in milliseconds. Default 41250, as Discord; tests
    /// usually want about 1000.
    pub heartbeat_interval_ms: u64,
    /// Intent bits IDENTIFY must include, else the socket is closed with 4014. Default
    /// [`intents::MOLT_DEFAULT`].
    pub required_intents: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            token: "fake-bot-token".to_owned(),
            bot_user_id: "100000000000000001".to_owned(),
            bot_username: "molt-bot".to_owned(),
            application_id: "100000000000000002".to_owned(),
            heartbeat_interval_ms: 41_250,
            required_intents: intents::MOLT_DEFAULT,
        }
    }
}

/// A message someone sends to the bot, for [`FakeDiscord::send_message`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// The channel it is posted in: a guild channel, a thread or a DM channel (see
    /// [`FakeDiscord::dm_channel_for`]). An unknown id is registered on the fly: as a text
    /// channel of `guild_id` when that is set, else as the author's DM channel.
    pub channel_id: String,
    /// The guild, for guild channels and threads; `None` for a DM. When `None` and the
    /// channel belongs to a known guild, that guild is used.
    pub guild_id: Option<String>,
    /// The author's user id.
    pub author_id: String,
    /// The author's username.
    pub author_name: String,
    /// Whether the author is a bot (`author.bot: true`).
    pub author_is_bot: bool,
    /// The text, sent as given (no mention markup is added).
    pub content: String,
    /// Whether `mentions` lists the bot user.
    pub mentions_bot: bool,
}

/// A message the bot created with `POST /channels/{id}/messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// The new message's id.
    pub id: String,
    /// The channel it was posted in.
    pub channel_id: String,
    /// Its text.
    pub content: String,
    /// The `nonce` the request carried (a number is kept as its decimal text).
    pub nonce: Option<String>,
}

//! A small Discord client for molt's Discord channel.
//!
//! - [`Endpoint`]: where REST, the gateway lookup and the WebSocket go. `DISCORD_API_URL`
//!   points all three at one origin (as OpenClaw does); plain http/ws only on loopback.
//! - [`Rest`]: the calls a chat channel needs (post a message with a nonce, typing, open a
//!   DM, read a channel), honouring 429 `retry_after` and the per-route bucket headers.
//! - [`Gateway`]: one gateway v10 session: HELLO, heartbeats with ACK tracking, IDENTIFY or
//!   RESUME, reconnects with backoff, and a clear non-retrying error on close codes that mean
//!   a configuration error. The caller pulls events one at a time, so the sequence number the
//!   gateway would resume from is always that of the last event the caller has taken.
//! - [`chunk_text`]: splits a reply at Discord's 2000-character limit.
//!
//! The bot token never appears in an error message or a log line of this crate.

mod chunk;
mod endpoint;
mod gateway;
mod rest;

pub use chunk::{MESSAGE_LIMIT, chunk_text};
pub use endpoint::Endpoint;
pub use gateway::{Event, Fatal, Gateway, INTENTS, Session, intents};
pub use rest::{ChannelInfo, Posted, Rest, RestError};

/// A uniform random number in `0..n` (`n > 0`); falls back to 0 without an entropy source.
pub(crate) fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    getrandom::u64().map(|r| r % n).unwrap_or(0)
}

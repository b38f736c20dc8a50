//! Chat channels, one subsystem under the lifecycle contract. Discord is the first channel
//! ([`discord`]).
//!
//! A channel turns inbound messages into durable turns of the agent and posts each turn's
//! reply back where the message came from. Its exactly-once rules live in the store
//! (`molt_store` migration 7): a message id is recorded in the transaction that creates its
//! turn, and a reply is queued in the transaction that marks its message answered.

pub mod discord;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use molt_protocol::methods::channels::ChannelAccountStatus;

use crate::subsystem::Subsystem;
pub use discord::Discord;

/// The channels of one boot.
pub struct Channels {
    /// `None` without a `[channels.discord]` block.
    pub discord: Option<Arc<Discord>>,
}

impl Channels {
    pub fn new(discord: Option<Arc<Discord>>) -> Arc<Self> {
        Arc::new(Self { discord })
    }

    /// Each configured channel's account status, by channel id.
    pub async fn status(&self) -> Vec<(&'static str, ChannelAccountStatus)> {
        let mut out = Vec::new();
        if let Some(d) = &self.discord {
            out.push(("discord", d.status().await));
        }
        out
    }
}

impl Subsystem for Channels {
    fn name(&self) -> &'static str {
        "channels"
    }

    fn start(self: Arc<Self>) {
        if let Some(d) = &self.discord {
            d.clone().start();
        }
    }

    fn close_admission(&self) {
        if let Some(d) = &self.discord {
            d.close_admission();
        }
    }

    fn in_flight(&self) -> usize {
        self.discord.as_ref().map_or(0, |d| d.in_flight())
    }

    fn wait_idle(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        match &self.discord {
            Some(d) => d.wait_idle(timeout),
            None => Box::pin(async { true }),
        }
    }

    fn abort(&self) {
        if let Some(d) = &self.discord {
            d.abort();
        }
    }
}

//! The handlers of every method, one file per family, and the one place that routes them.
//!
//! Adding a method: declare it in `molt_protocol::methods::<family>`, write its handler in
//! the family's file here, and add one `.on::<M>(handler)` line to that file's `register`.

mod agents;
mod approvals;
mod channels;
mod chat;
mod cron;
mod devices;
mod sessions;
mod system;
mod tasks;

use std::sync::Arc;

use crate::app::App;
use crate::executor::Executor;
use crate::handover::Handover;
use crate::router::Router;
use crate::update::Updates;

pub use agents::ConfigView;
pub use system::{GatewayFacts, status_of};

/// What the handlers work on.
pub struct Parts {
    pub app: Arc<App>,
    pub facts: Arc<GatewayFacts>,
    pub runs: Arc<Executor>,
    pub handover: Arc<Handover>,
    pub updates: Arc<Updates>,
    pub agent: Arc<crate::agent::Agent>,
    pub config: Arc<ConfigView>,
    pub cron: Arc<crate::cron::Cron>,
    pub channels: Arc<crate::channels::Channels>,
}

/// The router of this gateway: every declared method, each with its handler.
pub fn router(parts: &Parts) -> Router {
    let mut r = Router::default();
    system::register(&mut r, parts);
    tasks::register(&mut r, &parts.runs);
    devices::register(&mut r, &parts.app);
    crate::update::register(&mut r, &parts.updates);
    chat::register(&mut r, &parts.agent);
    sessions::register(&mut r, &parts.agent);
    agents::register(&mut r, &parts.agent, &parts.config);
    approvals::register(&mut r, &parts.agent);
    cron::register(&mut r, &parts.cron);
    channels::register(&mut r, &parts.channels);
    r
}

//! The agent: sessions, turns and the model/tool loop, as a subsystem under the lifecycle
//! contract.
//!
//! A turn is durable work (see `molt_store::agent`). This module claims queued turns, drives
//! each one step by step ([`turn`]), and publishes its events ([`events`]). Nothing here
//! outlives a crash that the store does not also hold: a turn resumes at its first step
//! without a checkpoint, in this process or the next.
//!
//! Stop and handover: admission closes, the step in flight finishes (within the drain or stop
//! budget), and the turn is released at that boundary. A model stream in progress during a
//! handover is finished by the old process, which relays its events through the store to the
//! successor; the successor then continues the turn.

pub mod events;
pub mod prompt;
pub mod tools;
mod turn;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use molt_config::{AgentProfile, AgentsConfig, ModelConfig, ModelRef, ModelsConfig};
use molt_model::Provider;
use molt_store::{Boot, NewTurn, Submitted, TurnRecord};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::app::App;
use crate::store_handle::StoreHandle;
use crate::subsystem::Subsystem;
use events::Sink;

/// How often the successor of a handover looks for relayed events and released turns while
/// its predecessor may still hold some; short, because a person is watching the reply.
const RELAY_POLL: Duration = Duration::from_millis(25);
/// How often an idle agent looks for queued turns it was not woken for.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Relayed events are kept this long, so a slow successor still finds them.
const RELAY_KEEP_MS: i64 = 10 * 60 * 1000;

/// What the agent needs from the config and the host.
pub struct AgentEnv {
    pub agents: AgentsConfig,
    pub models: ModelsConfig,
    /// The top-level `[tools]` table, under each agent's own.
    pub tools: molt_config::tools::ToolSettings,
    pub home: PathBuf,
    /// Default workspaces live here (`~/.local/share/molt[-P]`).
    pub data_dir: PathBuf,
    /// Set as `MOLT_PROFILE` for tool commands, so a `molt` they run acts on this gateway.
    pub profile: Option<String>,
}

/// A message for a session, as the methods hand it to the agent.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub run_id: String,
    pub session_key: String,
    pub agent_id: String,
    pub text: String,
    pub mode: molt_store::QueueMode,
    /// `chat`, `agent` or `sessions`: which method started it.
    pub origin: &'static str,
}

/// The model a turn calls.
pub struct ResolvedModel {
    pub reference: ModelRef,
    pub config: ModelConfig,
    pub provider: Arc<Provider>,
}

/// The agent subsystem of one boot.
pub struct Agent {
    pub app: Arc<App>,
    pub store: StoreHandle,
    boot: Boot,
    pub env: AgentEnv,
    /// Each configured provider, or why it cannot be used (the message names the fix).
    providers: BTreeMap<String, Result<Arc<Provider>, String>>,
    pub tools: tools::Registry,
    pub sink: Arc<Sink>,
    relay_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, Value)>>>,
    /// Relayed events not yet written to the store; the drain waits for them too.
    relay_pending: Arc<watch::Sender<usize>>,
    admitting: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    /// Set with `abort` when a successor takes over: interrupted turns are released to it
    /// at once. On a stop they are left leased to this dead-to-be boot instead, so the stop
    /// spends no commit on them; the next start re-queues them like after a crash.
    release_on_abort: std::sync::atomic::AtomicBool,
    wake: Notify,
    /// Cancel triggers of turns driven here.
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
    active: watch::Sender<usize>,
    /// Run ids of turns that ended in this process.
    ended: broadcast::Sender<String>,
    /// Woken when an approval is decided here; waiters also poll, for decisions made in
    /// another process.
    pub approvals_changed: Notify,
    /// What the `gateway` tool acts on; set once the gateway's parts exist.
    pub control: std::sync::OnceLock<tools::GatewayControl>,
}

/// An assistant message the gateway itself writes into a transcript (`chat.inject`, an
/// update's outcome): no model produced it.
pub fn note_message(text: String) -> molt_protocol::transcript::AssistantMessage {
    use molt_protocol::transcript::{AssistantMessage, ContentBlock, StopReason, Usage};
    AssistantMessage {
        content: vec![ContentBlock::Text { text }],
        api: "openai-responses".into(),
        provider: "molt".into(),
        model: "gateway-injected".into(),
        usage: Usage::default(),
        stop_reason: StopReason::Stop,
        timestamp: crate::app::now_ms() as i64,
        response_id: None,
    }
}

impl Agent {
    pub fn new(app: Arc<App>, store: StoreHandle, boot: Boot, env: AgentEnv) -> Arc<Self> {
        let providers = env
            .models
            .providers
            .iter()
            .map(|(name, cfg)| {
                let p = cfg
                    .api_key(name, |k| std::env::var(k).ok())
                    .and_then(|key| {
                        Provider::new(name, cfg, key).map_err(|e| {
                            format!("models.providers.{name} cannot be used: {}", e.message)
                        })
                    })
                    .map(Arc::new);
                if let Err(e) = &p {
                    tracing::warn!("{e}");
                }
                (name.clone(), p)
            })
            .collect();
        let (relay_tx, relay_rx) = mpsc::unbounded_channel();
        let relay_pending = Arc::new(watch::Sender::new(0usize));
        let sink = Arc::new(Sink::new(app.clone(), relay_tx, relay_pending.clone()));
        Arc::new(Self {
            app,
            store,
            boot,
            env,
            providers,
            tools: tools::Registry::builtin(),
            sink,
            relay_rx: Mutex::new(Some(relay_rx)),
            relay_pending,
            admitting: watch::Sender::new(true),
            abort: watch::Sender::new(false),
            release_on_abort: std::sync::atomic::AtomicBool::new(false),
            wake: Notify::new(),
            inflight: Mutex::new(HashMap::new()),
            active: watch::Sender::new(0),
            ended: broadcast::channel(1024).0,
            approvals_changed: Notify::new(),
            control: std::sync::OnceLock::new(),
        })
    }

    /// Wakes the dispatcher to claim turns queued by someone else (a cron fire).
    pub fn wake_dispatcher(&self) {
        self.wake.notify_one();
    }

    /// Publishes a message the gateway appended to a session (`stored`, made from
    /// `message`): a `chat` final for watchers of the session, and `session.message`.
    pub fn announce(
        &self,
        key: &str,
        agent_id: &str,
        stored: &molt_store::StoredMessage,
        message: molt_protocol::transcript::AssistantMessage,
    ) {
        let mut em = events::Emitter::new(
            self.sink.clone(),
            &format!("inject-msg_{}", stored.id),
            key,
            agent_id,
            &stored.session_id,
            0,
        );
        em.chat(molt_protocol::methods::chat::ChatState::Final {
            message: Some(Box::new(message)),
            usage: None,
            stop_reason: Some("stop".into()),
        });
        events::publish_message(&self.sink, key, agent_id, stored);
    }

    /// The agent `id`, resolved against `[agents.defaults]`.
    pub fn profile(&self, id: &str) -> Option<AgentProfile> {
        self.env
            .agents
            .resolve_with(id, &self.env.home, &self.env.data_dir, &self.env.tools)
    }

    /// The model for `agent`, with a session's `provider/model` override.
    pub fn model_for(
        &self,
        agent: &AgentProfile,
        session_override: Option<&str>,
    ) -> Result<ResolvedModel, String> {
        let reference = match session_override.and_then(ModelRef::parse) {
            Some(r) => r,
            None => agent.model.clone().ok_or_else(|| {
                format!(
                    "agent {} has no model: set agents.defaults.model (or agents.{}.model) to \
                     \"provider/model\" and a [models.providers.<provider>] table",
                    agent.id, agent.id
                )
            })?,
        };
        let cfg = self.env.models.providers.get(&reference.provider).ok_or_else(|| {
            format!(
                "model {reference} names provider {:?}, which has no [models.providers.{}] table",
                reference.provider, reference.provider
            )
        })?;
        let provider = match self.providers.get(&reference.provider) {
            Some(Ok(p)) => p.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(format!("provider {} is not configured", reference.provider)),
        };
        let config = cfg
            .models
            .iter()
            .find(|m| m.id == reference.model)
            .cloned()
            .unwrap_or_else(|| ModelConfig::unlisted(&reference.model));
        Ok(ResolvedModel {
            reference,
            config,
            provider,
        })
    }

    /// Submits a message. A new turn wakes the dispatcher; an interrupt first stops the
    /// session's active turns; a steered message tells its own runId's listeners that it was
    /// taken in (a bare `final`, as OpenClaw does).
    pub async fn submit(
        self: &Arc<Self>,
        req: TurnRequest,
    ) -> Result<Submitted, molt_store::StoreError> {
        if req.mode == molt_store::QueueMode::Interrupt {
            self.cancel(&req.session_key, None).await?;
        }
        let r = req.clone();
        // While admitting, a turn for an idle session starts in the submitting commit.
        let start_as = (*self.admitting.borrow()).then_some(self.boot);
        let out = self
            .store
            .call(move |s| {
                s.submit_turn(
                    &NewTurn {
                        run_id: &r.run_id,
                        session_key: &r.session_key,
                        agent_id: &r.agent_id,
                        text: &r.text,
                        mode: r.mode,
                        origin: r.origin,
                    },
                    start_as,
                )
            })
            .await?;
        match &out {
            Submitted::Started(started) => {
                let first = turn::Resume {
                    turn: started.turn.clone(),
                    session_id: started.session_id.clone(),
                    first: Some((started.step.clone(), started.moved.clone())),
                };
                self.spawn_drive(molt_store::RunId(req.run_id.clone()), Some(first));
            }
            Submitted::Queued => self.wake.notify_one(),
            Submitted::Steered { .. } => {
                let mut e = events::Emitter::new(
                    self.sink.clone(),
                    &req.run_id,
                    &req.session_key,
                    &req.agent_id,
                    "",
                    0,
                );
                e.chat(molt_protocol::methods::chat::ChatState::Final {
                    message: None,
                    usage: None,
                    stop_reason: Some("steered".into()),
                });
            }
            Submitted::Duplicate(_) => {}
        }
        Ok(out)
    }

    /// Stops the turns of `key` (or one of them): queued ones at once, running ones at
    /// their lease holder. Returns the affected run ids.
    pub async fn cancel(
        &self,
        key: &str,
        run_id: Option<&str>,
    ) -> Result<Vec<String>, molt_store::StoreError> {
        let (k, r) = (key.to_owned(), run_id.map(str::to_owned));
        let ids = self
            .store
            .call(move |s| s.cancel_turns(&k, r.as_deref()))
            .await?;
        // A turn driven here stops now; one driven by a predecessor sees the flag at its
        // next boundary.
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for id in &ids {
            if let Some(n) = map.get(id) {
                n.notify_one();
            }
        }
        drop(map);
        Ok(ids)
    }

    /// Waits until run `id` ends or `timeout` passes; the turn as stored then (`None` if
    /// there is no such turn).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<TurnRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ended = self.ended.subscribe();
        loop {
            let rid = id.to_owned();
            let t = self.store.call(move |s| s.turn(&rid)).await.ok().flatten();
            match t {
                Some(t) if t.state.is_terminal() => return Some(t),
                None => return None,
                Some(t) if tokio::time::Instant::now() >= deadline => return Some(t),
                Some(_) => {}
            }
            // The turn may end in another process (after a handover): poll as well.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(250)),
                async {
                    loop {
                        match ended.recv().await {
                            Ok(e) if e == id => return,
                            Err(broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await
                            }
                            _ => {}
                        }
                    }
                },
            )
            .await;
        }
    }

    /// Drives a leased turn on its own task, counted in flight until it lets go.
    fn spawn_drive(self: &Arc<Self>, id: molt_store::RunId, resume: Option<turn::Resume>) {
        self.active.send_modify(|n| *n += 1);
        let me = self.clone();
        tokio::spawn(async move {
            me.drive(id, resume).await;
            me.active.send_modify(|n| *n -= 1);
        });
    }

    /// Claims queued turns whenever woken: by a submission, by the relay reader while a
    /// predecessor may release turns, or by its own idle timer.
    async fn dispatch(self: Arc<Self>) {
        let mut admitting = self.admitting.subscribe();
        loop {
            if !*admitting.borrow() {
                return;
            }
            loop {
                let boot = self.boot;
                match self.store.call(move |s| s.claim_next_turn(boot)).await {
                    Ok(Some(id)) => self.spawn_drive(id, None),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim turns; retrying");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = admitting.wait_for(|open| !open) => return,
            }
        }
    }

    /// Writes events of a step finished after a handover to the store, in order.
    async fn write_relay(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(String, Value)>) {
        while let Some((tag, payload)) = rx.recv().await {
            let text = payload.to_string();
            if let Err(e) = self.store.call(move |s| s.relay_event(&tag, &text)).await {
                tracing::warn!(error = %e, "cannot relay an event to the successor");
            }
            self.relay_pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Sends events a predecessor relayed, while it still holds turns, and meanwhile wakes
    /// the dispatcher at the same pace, so a turn the predecessor releases is claimed at once.
    async fn read_relay(self: Arc<Self>) {
        // Events relayed since this process started are for it: a predecessor starts relaying
        // only once this process is ready, which is after it started.
        let started = self.app.started_at_ms as i64;
        let mut cursor = match self
            .store
            .call(move |s| s.relay_cursor(started, RELAY_KEEP_MS))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event relay; relayed events are lost");
                return;
            }
        };
        let epoch = self.boot.epoch;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let c = cursor;
            let rows = self
                .store
                .call(move |s| s.relayed_since(c))
                .await
                .unwrap_or_default();
            for (id, tag, payload) in rows {
                cursor = id;
                if let Ok(v) = serde_json::from_str(&payload) {
                    self.sink.replay(&tag, v);
                }
                quiet_since = tokio::time::Instant::now();
            }
            let elsewhere = self
                .store
                .call(move |s| s.turns_leased_elsewhere(epoch))
                .await
                .unwrap_or(false);
            if elsewhere {
                quiet_since = tokio::time::Instant::now();
            }
            // Poll fast while a predecessor may still relay or release, slowly otherwise.
            let poll = if quiet_since.elapsed() < Duration::from_secs(5) {
                self.wake.notify_one();
                RELAY_POLL
            } else {
                Duration::from_secs(1)
            };
            tokio::time::sleep(poll).await;
        }
    }

    /// Environment variables that hold secrets and must not reach a tool's command.
    pub fn secret_env(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .env
            .models
            .providers
            .values()
            .filter_map(|p| p.api_key_env.clone())
            .collect();
        v.extend(
            ["gateway.auth.token", "gateway.auth.password"]
                .iter()
                .map(|k| molt_config::env_var_for(k)),
        );
        v
    }

    fn track(&self, id: &str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), n.clone());
        n
    }

    fn untrack(&self, id: &str) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

impl Subsystem for Agent {
    fn name(&self) -> &'static str {
        "agent"
    }

    fn start(self: Arc<Self>) {
        if let Some(rx) = self
            .relay_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            tokio::spawn(self.clone().write_relay(rx));
        }
        tokio::spawn(self.clone().read_relay());
        tokio::spawn(self.dispatch());
    }

    fn close_admission(&self) {
        self.admitting.send_replace(false);
        self.wake.notify_one();
    }

    fn in_flight(&self) -> usize {
        *self.active.borrow()
    }

    fn wait_idle(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        let mut active = self.active.subscribe();
        let mut relay = self.relay_pending.subscribe();
        Box::pin(async move {
            tokio::time::timeout(timeout, async {
                let _ = active.wait_for(|n| *n == 0).await;
                let _ = relay.wait_for(|n| *n == 0).await;
            })
            .await
            .is_ok()
        })
    }

    /// Stops every model stream and tool call in flight; each turn goes back to the queue
    /// at the step it was in.
    fn abort(&self) {
        self.abort.send_replace(true);
    }

    /// As `abort`, but each interrupted turn is released to the successor right away.
    fn release_to_successor(&self) {
        self.release_on_abort
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.abort.send_replace(true);
    }
}

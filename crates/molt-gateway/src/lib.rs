//! The molt gateway daemon: `molt gateway run`.
//!
//! Data flows one way: listener ([`http`]) → protocol ([`ws`]: frames, handshake, auth) →
//! [`router`] (scope, idempotency) → handlers ([`methods`]) → subsystems ([`executor`]) →
//! store ([`molt_store`]). The lifecycle (signals, admission, sd_notify) wraps the whole and
//! lives in this file; it drives every subsystem through one list ([`subsystem`]).

pub mod agent;
mod app;
pub mod channels;
pub mod cron;
pub mod executor;
pub mod handover;
mod http;
mod lock;
pub mod logging;
mod methods;
pub mod notify;
mod pending;
mod router;
mod store_handle;
pub mod subsystem;
mod update;
pub mod webchat;
mod ws;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_config::{AuthSource, Config, Profile};
use molt_host::{fsutil, process};
use molt_protocol::handshake::AuthPolicy;
use tokio::signal::unix::{SignalKind, signal};

use app::{App, Lifecycle};
use executor::Executor;
use handover::Handover;
use notify::Notifier;
use store_handle::StoreHandle;
use subsystem::{Subsystem, Subsystems};

pub use lock::{LockError, StateLock};

/// Exit code for "do not restart": bad config, bad flag, held lock (`EX_CONFIG`).
pub const EXIT_CONFIG: i32 = 78;

/// What the binary is: its version and build id, fixed at build time by the `molt` crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub build_id: String,
}

/// Everything `molt gateway run` resolved from flags, environment and config.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub profile: Profile,
    pub config: Config,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// `~/.local/share/molt[-P]`; a handover runs `<share_dir>/current/molt` when it exists.
    pub share_dir: PathBuf,
    pub build: BuildInfo,
    /// A build-time test fault: start, then never report ready (signals still stop it).
    pub never_ready: bool,
}

/// Why the gateway could not run. `exit_code` is what the process should exit with.
#[derive(Debug)]
pub struct GatewayError {
    pub exit_code: i32,
    pub message: String,
}

impl GatewayError {
    fn config(message: impl Into<String>) -> Self {
        Self {
            exit_code: EXIT_CONFIG,
            message: message.into(),
        }
    }
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            exit_code: 1,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How long an exiting process waits for clients to get their last frames and the close.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// The share of the stop budget kept back for killing steps, committing and exiting.
fn stop_margin(budget: Duration) -> Duration {
    (budget / 5).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

/// Runs the gateway in the foreground until SIGTERM or SIGINT (then stops within the budget),
/// or until it hands over to a successor (then drains and exits).
pub fn run(opts: GatewayOptions) -> Result<(), GatewayError> {
    let (adopted, mut control) = match handover::take_inherited() {
        Some(i) => (
            Some(Adopted {
                listener: i.listener,
                lock: i.lock,
                parent_epoch: i.parent_epoch,
            }),
            Some(i.control),
        ),
        None => (None, None),
    };
    let result = run_inner(opts, adopted, &mut control);
    // A handover child that fails before it is ready tells the old process, which goes on.
    if let (Err(e), Some(c)) = (&result, control.as_mut()) {
        c.report_error(&e.message);
    }
    result
}

/// What a handover child takes over from the old process.
struct Adopted {
    listener: TcpListener,
    lock: std::fs::File,
    parent_epoch: i64,
}

fn run_inner(
    opts: GatewayOptions,
    adopted: Option<Adopted>,
    control: &mut Option<handover::Control>,
) -> Result<(), GatewayError> {
    fsutil::create_private_dir(&opts.state_dir).map_err(|e| {
        GatewayError::fatal(format!(
            "cannot create state dir {}: {e}",
            opts.state_dir.display()
        ))
    })?;
    let (lock, adopted) = match adopted {
        Some(a) => (StateLock::adopt(a.lock), Some((a.listener, a.parent_epoch))),
        None => (
            StateLock::acquire(&opts.state_dir).map_err(|e| match e {
                LockError::Held { .. } => GatewayError::config(e.to_string()),
                LockError::Io { .. } => GatewayError::fatal(e.to_string()),
            })?,
            None,
        ),
    };
    let log_file = logging::init(&opts.state_dir)
        .map_err(|e| GatewayError::fatal(format!("cannot open the log file: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| GatewayError::fatal(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(serve(opts, log_file, lock.raw_fd(), adopted, control));
    // Blocking tasks (a store call) must not hold the exit hostage; the store is committed.
    runtime.shutdown_timeout(Duration::from_millis(500));
    drop(lock);
    result
}

/// Raises the soft open-file limit to the hard limit: every client is a socket, and the
/// common default soft limit (1024) is far below what one gateway should hold. Returns the
/// limit in effect.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// The shared-secret policy, with the token file read (or created on first start) when no
/// auth is configured.
fn auth_policy(config: &Config, state_dir: &std::path::Path) -> Result<AuthPolicy, GatewayError> {
    Ok(match config.auth_source() {
        AuthSource::None => {
            tracing::warn!(
                "gateway.auth.mode = \"none\": any local user or process that reaches this port \
                 can run commands as this user. Remove the key to use a generated token"
            );
            AuthPolicy::None
        }
        AuthSource::Token(t) => AuthPolicy::Token(t.to_owned()),
        AuthSource::Password(p) => AuthPolicy::Password(p.to_owned()),
        AuthSource::TokenFile => AuthPolicy::Token(load_or_create_token(state_dir)?),
    })
}

/// A config file that holds a model key must be the owner's alone: the gateway refuses to
/// start otherwise, so a key is never served from a world-readable file.
fn check_config_secrecy(config: &Config, path: &std::path::Path) -> Result<(), GatewayError> {
    let holds_key = config
        .models
        .providers
        .values()
        .any(|p| p.api_key.is_some());
    if !holds_key {
        return Ok(());
    }
    ensure_private(
        path,
        "a model API key",
        "move the key to the environment with api_key_env",
    )
    .map_err(GatewayError::config)
}

/// `Err` (saying how to fix it) when `path`, which holds `secret`, is readable by anyone but
/// its owner. What a failure stops is the caller's choice: the gateway for a model key, the
/// channel for a bot token.
pub(crate) fn ensure_private(
    path: &std::path::Path,
    secret: &str,
    alternative: &str,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} holds {secret} but is readable by others (mode {:o}); run `chmod 600 {}`, or \
             {alternative}",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// The profile's generated token: read it, or create it (256 bits, 0600) on first start.
/// The state lock is held, so no other gateway of this profile creates one at the same time.
fn load_or_create_token(state_dir: &std::path::Path) -> Result<String, GatewayError> {
    use std::os::unix::fs::PermissionsExt;
    let path = molt_config::token_file(state_dir);
    let err = |e: std::io::Error| {
        GatewayError::fatal(format!(
            "cannot use the gateway token file {}: {e}",
            path.display()
        ))
    };
    match std::fs::metadata(&path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the token file was readable by others; made it 0600. Consider the old \
                     token leaked: delete the file and restart to create a new one"
                );
                fsutil::make_private_file(&path).map_err(err)?;
            }
            molt_config::read_token_file(&path).map_err(err)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = fsutil::random_hex(32).map_err(err)?;
            fsutil::write_private(&path, format!("{token}\n").as_bytes()).map_err(err)?;
            tracing::info!(
                path = %path.display(),
                "created the gateway token; this user's molt CLI reads it, other clients \
                 need it to connect (`molt config show --reveal-token`)"
            );
            Ok(token)
        }
        Err(e) => Err(err(e)),
    }
}

async fn serve(
    opts: GatewayOptions,
    log_file: PathBuf,
    lock_fd: i32,
    adopted: Option<(TcpListener, i64)>,
    control: &mut Option<handover::Control>,
) -> Result<(), GatewayError> {
    let pid = std::process::id();
    let nofile = raise_nofile_limit();
    let notifier = Notifier::from_env();
    let db_path = opts.state_dir.join("molt.db");
    let mut store = molt_store::Store::open(&db_path).map_err(|e| match e {
        molt_store::StoreError::TooNew { .. } => GatewayError::config(e.to_string()),
        e => GatewayError::fatal(format!("cannot open {}: {e}", db_path.display())),
    })?;
    let boot = store
        .begin_boot(pid, &opts.build.version, &opts.build.build_id)
        .map_err(|e| GatewayError::fatal(format!("cannot record the boot: {e}")))?;
    // Leases of dead processes go back to the queue. Live ones (handover predecessors still
    // draining) keep theirs and release them at their step boundaries.
    let requeued = store
        .requeue_dead_leases(boot.epoch, process::holder_alive)
        .map_err(|e| GatewayError::fatal(format!("cannot re-queue interrupted runs: {e}")))?;
    tracing::info!(
        version = %opts.build.version,
        build = %opts.build.build_id,
        pid,
        boot_epoch = boot.epoch,
        requeued = requeued.len(),
        handover = adopted.is_some(),
        "gateway starting"
    );
    let identity = load_identity(&opts.state_dir)?;
    let store = StoreHandle::new(store);
    let executor = Executor::new(
        store.clone(),
        boot,
        opts.profile.name().map(str::to_owned),
        opts.config.gateway.max_parallel_runs as usize,
    );

    let g = &opts.config.gateway;
    let port = opts.config.port(&opts.profile);
    let addr = SocketAddr::new(g.bind, port);
    let listener = match adopted {
        Some((l, _)) => {
            let local = l.local_addr().map_err(|e| {
                GatewayError::fatal(format!("the inherited listener is broken: {e}"))
            })?;
            if local.port() != port {
                return Err(GatewayError::config(format!(
                    "the config asks for port {port} but the running gateway listens on {}; \
                     a port change needs a stop and start, not a restart",
                    local.port()
                )));
            }
            l
        }
        None => bind(addr)?,
    };
    check_config_secrecy(&opts.config, &opts.config_path)?;
    let auth = auth_policy(&opts.config, &opts.state_dir)?;
    let pending = pending::Pending::new(pending::Limits::new(g, nofile));
    let limits = pending.limits();
    tracing::info!(
        nofile,
        max_unauthenticated = limits.total,
        max_unauthenticated_per_address = limits.per_address,
        header_timeout_ms = g.header_timeout_ms,
        "listener limits"
    );
    let kept_listener = listener
        .try_clone()
        .map_err(|e| GatewayError::fatal(format!("cannot duplicate the listener: {e}")))?;
    let app = Arc::new(App {
        build: opts.build.clone(),
        pid,
        boot,
        started: Instant::now(),
        started_at_ms: app::now_ms(),
        lifecycle: tokio::sync::watch::Sender::new(Lifecycle::Starting),
        store: store.clone(),
        auth,
        state_dir: opts.state_dir.clone(),
        config_path: opts.config_path.clone(),
        identity,
        peers: Mutex::new(Default::default()),
        limiter: Mutex::new(Default::default()),
        accepting: tokio::sync::watch::Sender::new(true),
        connections: tokio::sync::watch::Sender::new(0),
        http_connections: tokio::sync::watch::Sender::new(0),
        pending,
    });
    let agent = agent::Agent::new(
        app.clone(),
        store.clone(),
        boot,
        agent::AgentEnv {
            agents: opts.config.agents.clone(),
            models: opts.config.models.clone(),
            tools: opts.config.tools.clone(),
            home: std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default(),
            data_dir: opts.share_dir.clone(),
            profile: opts.profile.name().map(str::to_owned),
        },
    );
    let masked = opts.config.masked(&opts.profile);
    let config_view = Arc::new(methods::ConfigView {
        path: opts.config_path.display().to_string(),
        exists: opts.config_path.exists(),
        raw: opts.config.to_masked_toml(&opts.profile),
        config: serde_json::to_value(&masked).unwrap_or_default(),
    });
    // Every long-lived part of the gateway, in start order. Stop and handover drive them
    // through this list only.
    let cron = cron::Cron::new(
        app.clone(),
        store.clone(),
        agent.clone(),
        executor.clone(),
        opts.config.cron.clone(),
    );
    let channels = channels::Channels::new(opts.config.channels.discord.clone().map(|d| {
        channels::Discord::new(
            app.clone(),
            store.clone(),
            agent.clone(),
            d,
            opts.config_path.clone(),
        )
    }));
    let subsystems = Arc::new(Subsystems::new(vec![
        executor.clone() as Arc<dyn Subsystem>,
        agent.clone() as Arc<dyn Subsystem>,
        cron.clone() as Arc<dyn Subsystem>,
        channels.clone() as Arc<dyn Subsystem>,
    ]));
    let handover = Arc::new(Handover::new(
        app.clone(),
        notifier.clone(),
        opts.share_dir.clone(),
        kept_listener,
        lock_fd,
        Duration::from_millis(g.handover_timeout_ms),
    ));
    let updates = Arc::new(update::Updates {
        app: app.clone(),
        config: opts.config.update.clone(),
        profile_name: opts.profile.name().map(str::to_owned),
        state_dir: opts.state_dir.clone(),
        agent: agent.clone(),
    });
    let facts = Arc::new(methods::GatewayFacts {
        app: app.clone(),
        profile: opts.profile.to_string(),
        port,
        log_file,
        subsystems: subsystems.clone(),
        agents: opts.config.agents.clone(),
        db_path: db_path.clone(),
        channels: channels.clone(),
    });
    let _ = agent.control.set(agent::tools::GatewayControl {
        facts: facts.clone(),
        handover: handover.clone(),
        updates: updates.clone(),
        config: config_view.clone(),
        cron: cron.clone(),
    });
    let methods = Arc::new(methods::router(&methods::Parts {
        app: app.clone(),
        facts,
        runs: executor,
        handover: handover.clone(),
        updates: updates.clone(),
        agent,
        config: config_view,
        cron,
        channels,
    }));
    let lives = Lives {
        app: app.clone(),
        subsystems,
        stop_budget: Duration::from_millis(g.stop_budget_ms),
        drain_cap: Duration::from_millis(g.handover_drain_cap_ms),
    };

    // Signals are installed before READY=1, so no signal is ever left to its default action.
    let mut term = signal(SignalKind::terminate()).map_err(sig_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(sig_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(sig_err)?;

    if opts.never_ready {
        tracing::warn!("built with MOLT_BUILD_FAULT=never-ready: never reporting ready");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        return Ok(());
    }

    if let Some(control) = control.take() {
        let me = handover::Successor {
            pid,
            version: opts.build.version.clone(),
            build_id: opts.build.build_id.clone(),
            boot_epoch: boot.epoch,
        };
        tokio::task::spawn_blocking(move || control.ready_and_wait_go(me))
            .await
            .map_err(|e| GatewayError::fatal(e.to_string()))?
            .map_err(GatewayError::fatal)?;
        tracing::info!("handover: taking over from the old process");
    }

    let header_timeout = Duration::from_millis(g.header_timeout_ms);
    let webchat = webchat::WebChat::new(&opts.config);
    let server = http::serve(app.clone(), methods, listener, header_timeout, webchat)
        .map_err(|e| GatewayError::fatal(format!("cannot serve on {addr}: {e}")))?;
    let mut server = tokio::spawn(server);
    lives.subsystems.start();
    if let Some(every) = Notifier::watchdog_interval() {
        let n = notifier.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every / 2);
            loop {
                t.tick().await;
                n.notify("WATCHDOG=1");
            }
        });
    }
    app.lifecycle.send_replace(Lifecycle::Serving);
    update::recover_at_start(updates);
    notifier.notify(&format!("MAINPID={pid}\nREADY=1\nSTATUS=serving on {addr}"));
    tracing::info!(%addr, "gateway serving");

    let mut lifecycle = app.lifecycle.subscribe();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: handover restart requested");
                let handover = handover.clone();
                tokio::spawn(async move {
                    let (outcome, _) = handover.request().await;
                    if let Err(e) = outcome {
                        tracing::error!(error = %e, "SIGHUP handover failed; still serving");
                    }
                });
            }
            _ = lifecycle.wait_for(|l| *l == Lifecycle::HandingOver) => {
                drain_after_handover(&lives, &mut server, &mut term, &mut int).await;
                return Ok(());
            }
        }
    }
    stop(&lives, &notifier, &mut term, &mut int).await;
    Ok(())
}

fn sig_err(e: std::io::Error) -> GatewayError {
    GatewayError::fatal(format!("cannot install signal handlers: {e}"))
}

/// After a handover: the successor serves. Finish in-flight steps (up to the drain cap),
/// then abort the rest; every run is released to the successor. SIGTERM cuts the drain.
async fn drain_after_handover(
    lives: &Lives,
    server: &mut tokio::task::JoinHandle<()>,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) {
    let (app, subsystems) = (&lives.app, &lives.subsystems);
    let t0 = Instant::now();
    subsystems.close_admission();
    let cap = lives.drain_cap;
    tracing::info!(
        active = subsystems.in_flight(),
        cap_ms = cap.as_millis() as u64,
        "handover: draining in-flight steps"
    );
    let signalled = async {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    // Clients get `shutdown` + 1012 from their own connection tasks; give them time to
    // flush while the steps drain, so no client sees a reset instead of a close.
    // The accept loop ends; every accepted HTTP exchange (and so every upgrade) finishes,
    // then every upgraded connection flushes its close.
    let goodbye = async {
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, server).await;
        app.connections_closed(GOODBYE_TIMEOUT).await
    };
    let steps = async {
        tokio::select! {
            idle = subsystems.wait_idle(cap) => idle,
            _ = signalled => false,
        }
    };
    let (idle, said_goodbye) = tokio::join!(steps, goodbye);
    if !said_goodbye {
        tracing::warn!("some clients did not close within {GOODBYE_TIMEOUT:?}");
    }
    if !idle {
        subsystems.release_to_successor();
        if !subsystems.wait_idle(Duration::from_secs(2)).await {
            tracing::error!("steps did not release in time; the successor re-queues them");
        }
    }
    record_end(app, idle).await;
    tracing::info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        clean = idle,
        "handover: old process exits"
    );
}

/// The stop path (design §4 "Stop"): close admission, tell systemd, drain until the budget
/// is nearly spent, then abort what is left (it re-runs at the next start), commit, return.
/// A second SIGTERM or SIGINT skips the drain.
async fn stop(
    lives: &Lives,
    notifier: &Notifier,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) {
    let (app, subsystems) = (&lives.app, &lives.subsystems);
    let t0 = Instant::now();
    let budget = lives.stop_budget;
    let abort_at = budget.saturating_sub(stop_margin(budget));
    // Connections see this and send `shutdown` + close 1012 themselves.
    app.lifecycle.send_replace(Lifecycle::Stopping);
    subsystems.close_admission();
    notifier.notify("STOPPING=1\nSTATUS=stopping");
    let active = subsystems.in_flight();
    tracing::info!(
        active,
        budget_ms = budget.as_millis() as u64,
        "stopping: admission closed, draining in-flight steps"
    );
    // Handover predecessors still draining are part of this service: they stop too, so they
    // release their runs themselves instead of being SIGKILLed by the service manager after
    // we exit.
    let predecessors = stop_predecessors(app).await;
    let second_signal = async {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    // Clients flush `shutdown` + close while the steps drain; a second signal cuts both.
    let drain = async {
        let goodbye = app.connections_closed(GOODBYE_TIMEOUT.min(abort_at));
        tokio::join!(subsystems.wait_idle(abort_at), goodbye).0
    };
    let idle = tokio::select! {
        idle = drain => idle,
        _ = second_signal => {
            tracing::warn!("second stop signal: stopping now");
            false
        }
    };
    let clean = if idle {
        true
    } else {
        subsystems.abort();
        let left = budget
            .saturating_sub(t0.elapsed())
            .saturating_sub(Duration::from_millis(200));
        let done = subsystems.wait_idle(left).await;
        if !done {
            tracing::error!("steps did not release in time; the next start re-queues them");
        }
        false
    };
    let left = budget
        .saturating_sub(t0.elapsed())
        .saturating_sub(Duration::from_millis(200));
    wait_for_exit(&predecessors, left).await;
    record_end(app, clean).await;
    tracing::info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        clean,
        "gateway stopped"
    );
}

/// What the stop and handover paths drive: the shared state and every subsystem.
struct Lives {
    app: Arc<App>,
    subsystems: Arc<Subsystems>,
    stop_budget: Duration,
    drain_cap: Duration,
}

/// Records the end of this boot; `clean` is false when steps had to be aborted.
async fn record_end(app: &Arc<App>, clean: bool) {
    let epoch = app.boot.epoch;
    if let Err(e) = app.store.call(move |s| s.end_boot(epoch, clean)).await {
        tracing::error!(error = %e, "cannot record the end of the boot");
    }
}

/// Sends SIGTERM to live handover predecessors; returns their pids.
async fn stop_predecessors(app: &Arc<App>) -> Vec<u32> {
    let epoch = app.boot.epoch;
    let boots = app
        .store
        .call(move |s| s.unended_boots(epoch))
        .await
        .unwrap_or_default();
    let live: Vec<u32> = boots
        .into_iter()
        .filter(|(_, pid, started)| *pid != app.pid && process::holder_alive(*pid, *started))
        .map(|(_, pid, _)| pid)
        .collect();
    for pid in &live {
        tracing::info!(pid, "stopping a draining predecessor");
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(*pid as i32, libc::SIGTERM);
        }
    }
    live
}

/// Waits until none of `pids` exists, or `timeout` passes.
async fn wait_for_exit(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|p| process::holder_alive(*p, i64::MAX)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The listen backlog: connections the kernel completes before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds the listening socket, or adopts one passed by the service manager (`LISTEN_FDS`).
fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    if let Some(l) = inherited_listener() {
        tracing::info!("using the listening socket passed in LISTEN_FDS");
        return Ok(l);
    }
    let l = TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "; another process listens on {addr}. Find it with `ss -ltnp 'sport = :{}'`, \
                 or set another gateway.port",
                addr.port()
            )
        } else {
            String::new()
        };
        GatewayError::fatal(format!("cannot listen on {addr}: {e}{hint}"))
    })?;
    // std listens with a backlog of 128. Connects beyond it have their SYN dropped and wait
    // a second for the retry, so a burst (a flood, or many clients reconnecting after a
    // restart) stalls honest clients too. Linux lets listen(2) raise the backlog of a
    // listening socket; the kernel caps it at net.core.somaxconn.
    // SAFETY: listen(2) on a socket this function owns; no memory is involved.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), LISTEN_BACKLOG) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot raise the listen backlog; keeping the default"
        );
    }
    Ok(l)
}

fn inherited_listener() -> Option<TcpListener> {
    use std::os::fd::FromRawFd;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: the sd_listen_fds protocol hands us fd 3, open and owned by this process.
    Some(unsafe { TcpListener::from_raw_fd(3) })
}

/// The gateway's own Ed25519 identity, created on first start in `<state>/identity/`.
fn load_identity(
    state_dir: &std::path::Path,
) -> Result<molt_protocol::device::DeviceKey, GatewayError> {
    let dir = state_dir.join("identity");
    let path = dir.join("gateway.key");
    let err = |e: std::io::Error| {
        GatewayError::fatal(format!(
            "cannot load the gateway identity {}: {e}",
            path.display()
        ))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    GatewayError::config(format!(
                        "{} is corrupt; delete it to create a new gateway identity",
                        path.display()
                    ))
                })?;
            Ok(molt_protocol::device::DeviceKey::from_secret(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fsutil::create_private_dir(&dir).map_err(err)?;
            let secret = fsutil::random_hex(32).map_err(err)?;
            fsutil::write_private(&path, secret.as_bytes()).map_err(err)?;
            let bytes: [u8; 32] = hex::decode(&secret)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| GatewayError::fatal("random key has the wrong length"))?;
            Ok(molt_protocol::device::DeviceKey::from_secret(bytes))
        }
        Err(e) => Err(err(e)),
    }
}

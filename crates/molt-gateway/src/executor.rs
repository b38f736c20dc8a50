//! Executes durable runs: claims queued runs, runs their steps, checkpoints every boundary.
//!
//! The executor never holds state the store does not also hold. What it keeps in memory is the
//! set of in-flight steps and how to stop them: a per-run cancel and a global abort used by the
//! stop path when the budget is nearly spent.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use molt_store::{Boot, ExecSpec, RunId, RunState, StepOutcome, StepRecord, StepSpec};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Notify, Semaphore, watch};

use futures_util::future::BoxFuture;

use crate::store_handle::StoreHandle;
use crate::subsystem::Subsystem;

/// Bytes of combined stdout/stderr kept per step.
pub const OUTPUT_TAIL_BYTES: usize = 4096;
/// How long the dispatcher sleeps when nothing wakes it, as a safety net for missed wakes.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often leases of dead processes (a handover parent killed mid-drain) are re-queued.
const DEAD_LEASE_SWEEP: Duration = Duration::from_secs(5);

/// How a step attempt ended, from the executor's point of view.
enum StepEnd {
    /// The step reached an outcome; it is checkpointed as such.
    Done(StepOutcome),
    /// The step was stopped by the gateway itself; it goes back to the queue and re-runs.
    Interrupted(String),
}

/// The run executor of one boot.
pub struct Executor {
    store: StoreHandle,
    boot: Boot,
    admitting: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Per-run cancel triggers for runs executing in this process.
    inflight: Mutex<HashMap<RunId, Arc<Notify>>>,
    active: watch::Sender<usize>,
    /// Set for every exec step: `MOLT_PROFILE` of a named profile, so a `molt` command a run
    /// starts (an agent asking to update itself) acts on this gateway's profile.
    profile: Option<String>,
}

impl Executor {
    /// `max_parallel` runs execute at once (`gateway.max_parallel_runs`); more wait queued.
    pub fn new(
        store: StoreHandle,
        boot: Boot,
        profile: Option<String>,
        max_parallel: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            boot,
            profile,
            admitting: watch::Sender::new(true),
            abort: watch::Sender::new(false),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(max_parallel.max(1))),
            inflight: Mutex::new(HashMap::new()),
            active: watch::Sender::new(0),
        })
    }

    /// Tells the dispatcher new work may be queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The store the runs live in.
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// Cancels a run executing here. Returns false if it does not execute in this process.
    pub fn cancel(&self, id: &RunId) -> bool {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    async fn dispatch(self: Arc<Self>) {
        let mut admitting = self.admitting.subscribe();
        let mut last_sweep = std::time::Instant::now();
        loop {
            if last_sweep.elapsed() >= DEAD_LEASE_SWEEP {
                last_sweep = std::time::Instant::now();
                let epoch = self.boot.epoch;
                match self
                    .store
                    .call(move |s| s.requeue_dead_leases(epoch, crate::process::holder_alive))
                    .await
                {
                    Ok(ids) if !ids.is_empty() => {
                        tracing::warn!(runs = ?ids, "re-queued runs whose lease holder died");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "dead-lease sweep failed"),
                }
            }
            if !*admitting.borrow() {
                return;
            }
            loop {
                let permit = tokio::select! {
                    p = self.slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = admitting.wait_for(|open| !open) => return,
                };
                let boot = self.boot;
                match self.store.call(move |s| s.claim_next(boot)).await {
                    Ok(Some(id)) => {
                        self.active.send_modify(|n| *n += 1);
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.drive(id).await;
                            me.active.send_modify(|n| *n -= 1);
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim runs; retrying");
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

    /// Executes a leased run step by step until it ends, is interrupted, or admission closes.
    async fn drive(&self, id: RunId) {
        let cancel = Arc::new(Notify::new());
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), cancel.clone());
        if let Err(e) = self.drive_steps(&id, &cancel).await {
            tracing::error!(run = %id, error = %e, "run stopped on a store error; it is re-queued at next start");
        }
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    async fn drive_steps(&self, id: &RunId, cancel: &Notify) -> Result<(), molt_store::StoreError> {
        let boot = self.boot;
        loop {
            if !*self.admitting.borrow() || *self.abort.borrow() {
                let rid = id.clone();
                self.store
                    .call(move |s| s.release_run(&rid, boot, "gateway stopping: step not started"))
                    .await?;
                tracing::info!(run = %id, "released to the queue at stop");
                return Ok(());
            }
            let rid = id.clone();
            let (step, cancelled) = self
                .store
                .call(move |s| -> Result<_, molt_store::StoreError> {
                    let cancelled = s.cancel_requested(&rid)?;
                    Ok((s.start_step(&rid, boot)?, cancelled))
                })
                .await?;
            let Some(step) = step else { return Ok(()) };
            let end = if cancelled {
                StepEnd::Done(StepOutcome::Cancelled {
                    output_tail: String::new(),
                })
            } else {
                tracing::info!(run = %id, step = step.index, attempt = step.attempts, "step started");
                self.run_step(id, &step, cancel).await
            };
            let rid = id.clone();
            match end {
                StepEnd::Done(outcome) => {
                    let index = step.index;
                    let state = self
                        .store
                        .call(move |s| s.finish_step(&rid, index, boot, &outcome))
                        .await?;
                    tracing::info!(run = %id, step = index, state = state.as_str(), "step checkpointed");
                    if state != RunState::Running {
                        return Ok(());
                    }
                }
                StepEnd::Interrupted(why) => {
                    tracing::warn!(run = %id, step = step.index, %why, "step interrupted; re-queued");
                    self.store
                        .call(move |s| s.release_run(&rid, boot, &why))
                        .await?;
                    return Ok(());
                }
            }
        }
    }

    async fn run_step(&self, id: &RunId, step: &StepRecord, cancel: &Notify) -> StepEnd {
        match &step.spec {
            StepSpec::Exec(spec) => {
                let mut abort = self.abort.subscribe();
                let mut env = vec![
                    ("MOLT_RUN_ID", id.0.clone()),
                    ("MOLT_STEP_INDEX", step.index.to_string()),
                    ("MOLT_STEP_ATTEMPT", step.attempts.to_string()),
                    ("MOLT_EFFECT_KEY", step.effect_key.clone()),
                ];
                if let Some(p) = &self.profile {
                    env.push(("MOLT_PROFILE", p.clone()));
                }
                let stop = async {
                    tokio::select! {
                        _ = cancel.notified() => Stop::Cancel,
                        _ = abort.wait_for(|a| *a) => Stop::Abort,
                    }
                };
                run_exec(spec, &env, stop).await
            }
            // Turns are claimed by the agent, never by this executor.
            StepSpec::Model {} | StepSpec::Tool { .. } => StepEnd::Done(StepOutcome::Failed {
                exit_code: None,
                output_tail: String::new(),
                error: "not an exec step: agent turns run in the agent subsystem".into(),
            }),
        }
    }
}

enum Stop {
    Cancel,
    Abort,
}

/// Runs one exec step in its own process group, so a kill reaches everything it started.
async fn run_exec(
    spec: &ExecSpec,
    extra_env: &[(&str, String)],
    stop: impl std::future::Future<Output = Stop>,
) -> StepEnd {
    let mut cmd = tokio::process::Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return StepEnd::Done(StepOutcome::Failed {
                exit_code: None,
                output_tail: String::new(),
                error: format!("cannot start `{}`: {e}", spec.command),
            });
        }
    };
    let pid = child.id();
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(OUTPUT_TAIL_BYTES)));
    let readers = [
        child
            .stdout
            .take()
            .map(|r| spawn_tail_reader(r, tail.clone())),
        child
            .stderr
            .take()
            .map(|r| spawn_tail_reader(r, tail.clone())),
    ];
    let timeout = spec.timeout_ms.map(Duration::from_millis);
    let timer = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    enum Ended {
        Exited(std::io::Result<std::process::ExitStatus>),
        TimedOut,
        Stopped(Stop),
    }
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        _ = timer => Ended::TimedOut,
        s = stop => Ended::Stopped(s),
    };
    if !matches!(ended, Ended::Exited(_)) {
        kill_group(pid);
        let _ = child.wait().await;
    }
    // A grandchild may keep the pipes open after the step exits; do not wait for it long.
    for r in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_millis(200), r).await;
    }
    let output_tail = {
        let t = tail.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = t.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    };
    match ended {
        Ended::Exited(Ok(status)) => match status.code() {
            Some(0) => StepEnd::Done(StepOutcome::Succeeded {
                exit_code: 0,
                output_tail,
            }),
            Some(code) => StepEnd::Done(StepOutcome::Failed {
                exit_code: Some(code),
                output_tail,
                error: format!("exited with code {code}"),
            }),
            None => {
                use std::os::unix::process::ExitStatusExt;
                StepEnd::Done(StepOutcome::Failed {
                    exit_code: None,
                    output_tail,
                    error: format!("killed by signal {}", status.signal().unwrap_or(0)),
                })
            }
        },
        Ended::Exited(Err(e)) => StepEnd::Done(StepOutcome::Failed {
            exit_code: None,
            output_tail,
            error: format!("cannot wait for the step's process: {e}"),
        }),
        Ended::TimedOut => StepEnd::Done(StepOutcome::Failed {
            exit_code: None,
            output_tail,
            error: format!("timed out after {} ms", spec.timeout_ms.unwrap_or(0)),
        }),
        Ended::Stopped(Stop::Cancel) => StepEnd::Done(StepOutcome::Cancelled { output_tail }),
        Ended::Stopped(Stop::Abort) => StepEnd::Interrupted(
            "interrupted: the gateway stopped and aborted the step at its stop budget".into(),
        ),
    }
}

pub(crate) fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) has no memory-safety preconditions. The group id is the child's pid
        // because it was spawned with process_group(0).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn spawn_tail_reader(
    mut r: impl AsyncRead + Unpin + Send + 'static,
    tail: Arc<Mutex<VecDeque<u8>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.extend(&buf[..n]);
                    let excess = t.len().saturating_sub(OUTPUT_TAIL_BYTES);
                    t.drain(..excess);
                }
            }
        }
    })
}

/// The run executor is the first subsystem: its in-flight work is the set of steps running
/// in this process; every one is checkpointed, so aborting one only re-queues it.
impl Subsystem for Executor {
    fn name(&self) -> &'static str {
        "runs"
    }

    fn start(self: Arc<Self>) {
        tokio::spawn(async move { self.dispatch().await });
    }

    fn close_admission(&self) {
        self.admitting.send_replace(false);
        self.wake.notify_one();
    }

    fn in_flight(&self) -> usize {
        *self.active.borrow()
    }

    fn wait_idle(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        let mut rx = self.active.subscribe();
        Box::pin(async move {
            tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
                .await
                .is_ok()
        })
    }

    /// Kills every in-flight step; each is re-queued with its attempt count kept.
    fn abort(&self) {
        self.abort.send_replace(true);
    }
}

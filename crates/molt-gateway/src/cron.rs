//! The cron scheduler, a subsystem under the lifecycle contract.
//!
//! Jobs live in the store with their next run. The scheduler sleeps until the earliest one
//! (or until a job changes), claims every due job's fire in one transaction, and hands what
//! each fire runs to the subsystem that runs it: a command becomes a durable exec run, an
//! agent turn a queued turn, a system event a message in a session. A fire is claimed by its
//! `(job, scheduled time)` row, so two processes overlapping in a handover, or a restart,
//! never fire one scheduled time twice; and because the claim creates the run in the same
//! commit, a crash never leaves a fire half done. Fires keep running across handovers and
//! restarts as the durable runs they are; the scheduler only records how they ended.
//!
//! Missed fires: on start, a job whose next run passed while no gateway ran fires once (a
//! `catch-up`, staggered), unless `[cron] skip_missed`; then it goes on from the next time
//! after now. After a failed run a recurring job backs off (30 s, 1 min, 5 min, 15 min,
//! 60 min); a success resets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use molt_cron::{Compiled, Schedule};
pub use molt_cron::{JobSpec, Payload};
use molt_protocol::methods::cron::{CronJob, CronJobState, EVENT};
use molt_protocol::methods::tasks::{ExecSpec, StepSpec};
use molt_store::{
    Claimed, CronJobFields, CronJobRecord, EndedFire, FireAction, FireClaim, FireOutcome,
    StoreError,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::agent::Agent;
use crate::app::{App, now_ms};
use crate::executor::Executor;
use crate::store_handle::StoreHandle;
use crate::subsystem::Subsystem;

/// How often the scheduler looks for ended runs while fires are open.
const POLL: Duration = Duration::from_millis(500);
/// The longest it sleeps with no fire open: every change of a job wakes it anyway.
const IDLE_CAP: Duration = Duration::from_secs(60);
/// Due jobs claimed per transaction.
const BATCH: u32 = 500;
/// Catch-up fires on start go out this many at a time, `CATCH_UP_PAUSE` apart.
const CATCH_UP_CHUNK: usize = 20;
const CATCH_UP_PAUSE: Duration = Duration::from_millis(100);

/// The scheduler of one boot.
pub struct Cron {
    pub app: Arc<App>,
    pub store: StoreHandle,
    agent: Arc<Agent>,
    executor: Arc<Executor>,
    pub config: molt_config::CronConfig,
    /// The zone of `cron` schedules without `tz`.
    pub host_tz: String,
    admitting: watch::Sender<bool>,
    wake: Notify,
    /// Compiled schedules by job id, with the `updated_at_ms` they were compiled at.
    compiled: Mutex<HashMap<String, (i64, Arc<Compiled>)>>,
}

impl Cron {
    pub fn new(
        app: Arc<App>,
        store: StoreHandle,
        agent: Arc<Agent>,
        executor: Arc<Executor>,
        config: molt_config::CronConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            app,
            store,
            agent,
            executor,
            config,
            host_tz: molt_cron::host_timezone(),
            admitting: watch::Sender::new(true),
            wake: Notify::new(),
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// The agents a job may name.
    pub fn agent_ids(&self) -> Vec<String> {
        self.agent.env.agents.ids()
    }

    /// Re-reads the jobs now (one was added, changed or removed).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// A schedule checked against this host's zone.
    pub fn compile(&self, s: &Schedule) -> Result<Compiled, String> {
        s.compile(&self.host_tz).map_err(|e| e.to_string())
    }

    fn compiled(&self, job: &CronJobRecord, spec: &JobSpec) -> Result<Arc<Compiled>, String> {
        let mut map = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, c)) = map.get(&job.id) {
            if *at == job.updated_at_ms {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(self.compile(&spec.schedule)?);
        map.insert(job.id.clone(), (job.updated_at_ms, c.clone()));
        Ok(c)
    }

    /// The job as clients see it.
    pub fn view(&self, job: &CronJobRecord) -> CronJob {
        let spec: Value = serde_json::from_str(&job.spec).unwrap_or_default();
        let state = CronJobState {
            next_run_at_ms: job.next_run_at_ms,
            running_at_ms: job.running_since_ms,
            last_run_at_ms: job.last_run_at_ms,
            last_run_status: job.last_status.clone(),
            last_error: job.last_error.clone(),
            last_duration_ms: job.last_duration_ms,
            consecutive_errors: job.consecutive_errors,
        };
        CronJob {
            id: job.id.clone(),
            name: job.name.clone(),
            enabled: job.enabled,
            created_at_ms: job.created_at_ms,
            updated_at_ms: job.updated_at_ms,
            schedule: spec.get("schedule").cloned().unwrap_or_default(),
            session_target: spec
                .get("sessionTarget")
                .and_then(Value::as_str)
                .unwrap_or("main")
                .into(),
            wake_mode: spec
                .get("wakeMode")
                .and_then(Value::as_str)
                .unwrap_or("now")
                .into(),
            payload: spec.get("payload").cloned().unwrap_or_default(),
            agent_id: job.agent_id.clone(),
            description: spec
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            delete_after_run: spec
                .get("deleteAfterRun")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            next_run_at_ms: job.next_run_at_ms,
            last_run_at_ms: job.last_run_at_ms,
            last_run_status: job.last_status.clone(),
            state,
        }
    }

    /// Sends a `cron` event.
    pub fn event(&self, job_id: &str, action: &str, extra: Value) {
        let mut p = json!({"jobId": job_id, "action": action});
        if let (Some(o), Value::Object(e)) = (p.as_object_mut(), extra) {
            o.extend(e);
        }
        self.app.broadcast(EVENT, p);
    }

    /// What firing `job` at `scheduled` runs.
    fn action(&self, job: &CronJobRecord, spec: &JobSpec, scheduled: i64) -> FireAction {
        let agent = &job.agent_id;
        let named = |t: &str| t.strip_prefix("session:").map(str::to_owned);
        match &spec.payload {
            Payload::Command {
                argv,
                cwd,
                env,
                timeout_seconds,
            } => FireAction::Exec {
                title: format!("cron {}", job.name),
                step: StepSpec::Exec(ExecSpec {
                    command: argv[0].clone(),
                    args: argv[1..].to_vec(),
                    env: env.clone(),
                    cwd: cwd.clone(),
                    timeout_ms: timeout_seconds.map(|s| (s * 1000.0) as u64),
                }),
            },
            Payload::SystemEvent { text } => FireAction::SystemEvent {
                session_key: named(&spec.session_target)
                    .unwrap_or_else(|| format!("agent:{agent}:main")),
                agent_id: agent.clone(),
                text: format!("[cron {}] {text}", job.name),
            },
            Payload::AgentTurn { message, .. } => {
                let run_id = format!("cron-{}-{scheduled}", job.id);
                let session_key = match spec.session_target.as_str() {
                    "main" => format!("agent:{agent}:main"),
                    t => named(t)
                        .unwrap_or_else(|| format!("agent:{agent}:cron:{}:run:{run_id}", job.id)),
                };
                FireAction::Turn {
                    run_id,
                    session_key,
                    agent_id: agent.clone(),
                    text: message.clone(),
                }
            }
        }
    }

    /// Fires `job` now, outside its schedule (`cron.run`). Returns the fire's run id.
    pub async fn run_now(&self, job: &CronJobRecord) -> Result<Option<String>, String> {
        let spec: JobSpec = serde_json::from_str(&job.spec)
            .map_err(|e| format!("job {} has a spec molt cannot read: {e}", job.id))?;
        let at = now_ms() as i64;
        let claim = FireClaim {
            job_id: job.id.clone(),
            job_name: job.name.clone(),
            scheduled_at_ms: at,
            trigger: "manual",
            action: self.action(job, &spec, at),
            next_run_at_ms: None,
        };
        let out = self
            .store
            .call(move |s| s.claim_cron_fires(std::slice::from_ref(&claim)))
            .await
            .map_err(|e| e.to_string())?;
        match out.into_iter().next() {
            Some(Claimed::Fired { run_id }) => {
                self.started(job, at, "manual", run_id.as_deref());
                Ok(run_id)
            }
            Some(Claimed::NoJob) => Err(format!("no cron job {}", job.id)),
            _ => Err("that millisecond was fired already; try again".into()),
        }
    }

    fn started(&self, job: &CronJobRecord, at: i64, trigger: &str, run_id: Option<&str>) {
        match run_id {
            Some(r) if r.starts_with("cron-") => self.agent.wake_dispatcher(),
            Some(_) => self.executor.wake(),
            None => {}
        }
        self.event(
            &job.id,
            "started",
            json!({"runAtMs": at, "trigger": trigger, "runId": run_id, "jobName": job.name}),
        );
        if run_id.is_none() {
            // A system event is done once it is written.
            self.event(
                &job.id,
                "finished",
                json!({"runAtMs": at, "status": "ok", "durationMs": 0, "jobName": job.name}),
            );
        }
    }

    /// Claims the fires of every due job; `starting` marks fires missed while no gateway
    /// ran (catch-ups), which are staggered.
    async fn fire_due(&self, started_at: i64, first_pass: bool) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        let due = self.store.call(move |s| s.cron_due(now, BATCH)).await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut claims = Vec::with_capacity(due.len());
        let mut skips = Vec::new();
        for job in &due {
            let Some(scheduled) = job.next_run_at_ms else {
                continue;
            };
            let spec: JobSpec = match serde_json::from_str(&job.spec) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "cron job has an unreadable spec; disabling it");
                    skips.push((job.id.clone(), None, false));
                    continue;
                }
            };
            let compiled = match self.compiled(job, &spec) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "cron job's schedule no longer compiles; disabling it");
                    skips.push((job.id.clone(), None, false));
                    continue;
                }
            };
            // Every time missed meanwhile collapses into this one fire.
            let next = compiled.next_after(now.max(scheduled));
            let missed = scheduled < started_at;
            if missed && first_pass && self.config.skip_missed && !compiled.is_one_shot() {
                skips.push((job.id.clone(), next, true));
                continue;
            }
            claims.push(FireClaim {
                job_id: job.id.clone(),
                job_name: job.name.clone(),
                scheduled_at_ms: scheduled,
                trigger: if missed { "catch-up" } else { "scheduled" },
                action: self.action(job, &spec, scheduled),
                next_run_at_ms: Some(next),
            });
        }
        if !skips.is_empty() {
            let n = skips.len();
            self.store
                .call(move |s| -> Result<(), StoreError> {
                    for (id, next, keep) in &skips {
                        s.cron_set_next(id, *next, *keep)?;
                    }
                    Ok(())
                })
                .await?;
            tracing::info!(
                jobs = n,
                "cron: missed times skipped (skip_missed) or broken jobs disabled"
            );
        }
        let catch_ups = claims.iter().filter(|c| c.trigger == "catch-up").count();
        if catch_ups > 0 && first_pass {
            tracing::info!(
                catch_ups,
                "cron: firing jobs missed while no gateway ran, once each, staggered"
            );
        }
        let chunk = if first_pass {
            CATCH_UP_CHUNK
        } else {
            claims.len().max(1)
        };
        let by_id: HashMap<&str, &CronJobRecord> = due.iter().map(|j| (j.id.as_str(), j)).collect();
        let mut rest = claims;
        while !rest.is_empty() {
            let tail = rest.split_off(chunk.min(rest.len()));
            let batch = std::mem::replace(&mut rest, tail);
            let meta: Vec<(String, i64, &'static str)> = batch
                .iter()
                .map(|c| (c.job_id.clone(), c.scheduled_at_ms, c.trigger))
                .collect();
            let out = self.store.call(move |s| s.claim_cron_fires(&batch)).await?;
            for ((id, at, trigger), claimed) in meta.iter().zip(out) {
                if let (Claimed::Fired { run_id }, Some(job)) = (claimed, by_id.get(id.as_str())) {
                    self.started(job, *at, trigger, run_id.as_deref());
                }
            }
            if !rest.is_empty() {
                tokio::time::sleep(CATCH_UP_PAUSE).await;
            }
        }
        Ok(())
    }

    /// Records fires whose runs ended: the log, the job's state and backoff, a one-shot's
    /// deletion. Returns how many fires are still running.
    async fn finish_ended(&self) -> Result<u64, StoreError> {
        let ended = self.store.call(|s| s.cron_ended_fires()).await?;
        for f in ended {
            let id = f.job_id.clone();
            let job = self.store.call(move |s| s.cron_job(&id)).await?;
            let outcome = self.outcome(&f, job.as_ref());
            let (id, at, o) = (f.job_id.clone(), f.scheduled_at_ms, outcome.clone());
            let done = self
                .store
                .call(move |s| s.finish_cron_fire(&id, at, &o))
                .await?;
            if done {
                self.event(
                    &f.job_id,
                    "finished",
                    json!({
                        "runAtMs": f.scheduled_at_ms, "status": outcome.status,
                        "error": outcome.error, "summary": outcome.summary, "runId": f.run_id,
                        "durationMs": f.finished_at_ms - f.started_at_ms,
                        "nextRunAtMs": outcome.next_run_at_ms.flatten(),
                        "jobName": job.as_ref().map(|j| j.name.clone()),
                    }),
                );
            }
        }
        self.store.call(|s| s.cron_open_fires()).await
    }

    fn outcome(&self, f: &EndedFire, job: Option<&CronJobRecord>) -> FireOutcome {
        let ok = f.run_state == "succeeded";
        let one_shot = job
            .and_then(|j| serde_json::from_str::<JobSpec>(&j.spec).ok())
            .map(|s| {
                (
                    matches!(s.schedule, Schedule::At { .. }),
                    s.delete_after_run,
                )
            });
        let errors = if ok {
            0
        } else {
            job.map(|j| j.consecutive_errors + 1).unwrap_or(1)
        };
        let next = match (ok, job, one_shot) {
            (false, Some(j), Some((false, _))) => {
                let backoff = f.finished_at_ms + molt_cron::backoff_ms(errors) as i64;
                Some(Some(j.next_run_at_ms.unwrap_or(backoff).max(backoff)))
            }
            _ => None,
        };
        FireOutcome {
            status: if ok { "ok" } else { "error" },
            error: (!ok).then(|| {
                f.error
                    .clone()
                    .unwrap_or_else(|| format!("the run ended {}", f.run_state))
            }),
            summary: f.final_text.as_ref().map(|t| t.chars().take(500).collect()),
            finished_at_ms: f.finished_at_ms,
            consecutive_errors: errors,
            next_run_at_ms: next,
            delete_job: ok && matches!(one_shot, Some((true, true))),
            disable_job: !ok && matches!(one_shot, Some((true, _))),
        }
    }

    /// Fires due jobs until admission closes.
    async fn run(self: Arc<Self>) {
        let started_at = self.app.started_at_ms as i64;
        let mut admitting = self.admitting.subscribe();
        let mut first_pass = true;
        loop {
            if !*admitting.borrow() {
                return;
            }
            if self.config.enabled {
                if let Err(e) = self.fire_due(started_at, first_pass).await {
                    tracing::error!(error = %e, "cron: cannot fire due jobs; retrying");
                }
                first_pass = false;
            }
            let open = match self.finish_ended().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cron: cannot record ended fires; retrying");
                    1
                }
            };
            // Idle, it wakes only for the next due job (or a change): no polling.
            let cap = if open > 0 { POLL } else { IDLE_CAP };
            let next = self.store.call(|s| s.cron_next_wake()).await.ok().flatten();
            let now = now_ms() as i64;
            let sleep = match next {
                Some(at) if self.config.enabled => {
                    Duration::from_millis(at.saturating_sub(now).max(0) as u64).min(cap)
                }
                _ => cap,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = admitting.wait_for(|open| !open) => return,
            }
        }
    }

    /// Readies a spec to be stored at `now`: an `every` without an anchor is anchored
    /// there, the schedule compiles, and the payload and target check out. The compiled
    /// schedule gives the job's next run.
    pub fn prepare(&self, spec: &mut JobSpec, now: i64) -> Result<Compiled, String> {
        if let Schedule::Every { anchor_ms, .. } = &mut spec.schedule {
            anchor_ms.get_or_insert(now);
        }
        let compiled = self
            .compile(&spec.schedule)
            .map_err(|e| format!("schedule: {e}"))?;
        spec.check()?;
        Ok(compiled)
    }

    /// Creates a job from a spec (see [`Cron::prepare`]); its first run is the schedule's first time after
    /// now.
    pub async fn add(
        &self,
        name: String,
        agent_id: String,
        enabled: bool,
        mut spec: JobSpec,
    ) -> Result<CronJobRecord, String> {
        let now = now_ms() as i64;
        let compiled = self.prepare(&mut spec, now)?;
        let next = if enabled {
            compiled.next_after(now - 1)
        } else {
            None
        };
        let text = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        let job = self
            .store
            .call(move |s| {
                s.cron_add(&CronJobFields {
                    name: &name,
                    agent_id: &agent_id,
                    enabled,
                    spec: &text,
                    next_run_at_ms: next,
                })
            })
            .await
            .map_err(|e| e.to_string())?;
        self.event(
            &job.id,
            "added",
            json!({"job": self.view(&job), "nextRunAtMs": job.next_run_at_ms}),
        );
        self.poke();
        Ok(job)
    }
}

impl Subsystem for Cron {
    fn name(&self) -> &'static str {
        "cron"
    }

    fn start(self: Arc<Self>) {
        tokio::spawn(self.run());
    }

    fn close_admission(&self) {
        self.admitting.send_replace(false);
        self.wake.notify_one();
    }

    /// Fires are durable runs of the executor and the agent: nothing of the scheduler's own
    /// is in flight.
    fn in_flight(&self) -> usize {
        0
    }

    fn wait_idle(&self, _timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn abort(&self) {}
}

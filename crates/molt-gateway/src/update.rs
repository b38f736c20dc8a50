//! The gateway's part in updates: `update.run` and `update.status` for clients, the result
//! broadcast (`molt.update.notify` from the updater), and recovery of an interrupted update at
//! start-up. The transaction itself never runs here (design §1 invariant 5): the gateway
//! records a job and starts `molt update apply --job ID` as a transient unit.

use std::sync::Arc;

use std::path::PathBuf;

use molt_protocol::frame::ErrorShape;
use molt_protocol::methods::update::{
    NotifyParams, NotifyResult, UpdateNotify, UpdateResultEvent, UpdateRun, UpdateRunParams,
    UpdateRunResult, UpdateStatus, UpdateStatusParams, UpdateStatusResult,
};
use molt_protocol::transcript::Message;
use molt_service::transient::{self, Launched};
use molt_service::update_lock::UpdateLock;
use molt_store::{Delivery, JobState, NewUpdateJob, TurnOrigin, UpdateKind};
use serde_json::json;

use crate::app::App;
use crate::router::{Caller, Router};

/// What the update methods and start-up recovery work with.
pub struct Updates {
    pub app: Arc<App>,
    /// `[update]`: where `update.run` takes releases from, and whether keys are trusted.
    pub config: molt_config::UpdateConfig,
    /// The profile's name, for the `--profile` of the updater this gateway starts.
    pub profile_name: Option<String>,
    pub state_dir: PathBuf,
    /// Sessions hear the outcome of the updates their agent asked for through it.
    pub agent: Arc<crate::agent::Agent>,
}

pub fn register(r: &mut Router, updates: &Arc<Updates>) {
    r.with(updates)
        .on::<UpdateRun>(run)
        .on::<UpdateStatus>(status)
        .on::<UpdateNotify>(notify);
}

fn unavailable(e: impl std::fmt::Display) -> ErrorShape {
    ErrorShape::unavailable(e.to_string(), 1000)
}

/// Starts `molt [--profile P] update apply --job ID` outside the gateway.
fn launch(u: &Updates, job: &str) -> Result<Launched, String> {
    let global: Vec<String> = u
        .profile_name
        .iter()
        .flat_map(|p| ["--profile".to_owned(), p.clone()])
        .collect();
    transient::launch_updater(&global, job, &u.state_dir)
        .map_err(|e| format!("cannot start the updater: {e}"))
}

/// Records a job and launches its updater; the job id comes back at once.
async fn start_job(u: &Arc<Updates>, new: NewUpdateJob) -> Result<(String, Launched), String> {
    let job = u
        .app
        .store
        .call(move |s| s.create_update_job(&new))
        .await
        .map_err(|e| format!("cannot record the update job: {e}"))?;
    let l = launch_recorded(u, &job.id).await?;
    Ok((job.id, l))
}

/// Launches the updater of the recorded job `id`, and records how (or that it failed).
async fn launch_recorded(u: &Arc<Updates>, id: &str) -> Result<Launched, String> {
    let app = &u.app;
    let id = id.to_owned();
    let u2 = u.clone();
    let jid = id.clone();
    let launched = tokio::task::spawn_blocking(move || launch(&u2, &jid))
        .await
        .map_err(|e| e.to_string())?;
    match launched {
        Ok(l) => {
            let what = l.describe();
            let _ = app
                .store
                .call(move |s| s.set_update_launcher(&id, &what))
                .await;
            Ok(l)
        }
        Err(e) => {
            let msg = e.clone();
            let _ = app
                .store
                .call(move |s| s.set_update_state(&id, JobState::Failed, Some(&msg)))
                .await;
            Err(e)
        }
    }
}

/// An update job to the newest release of `[update] source`, or why there can be none.
fn new_update(
    u: &Updates,
    requester: &str,
    p: &UpdateRunParams,
    origin: Option<TurnOrigin>,
) -> Result<NewUpdateJob, String> {
    if u.config.trusted_keys.is_empty() {
        return Err("no trusted release key is configured: add the release's public key line to `[update] trusted_keys` in molt.toml".into());
    }
    let Some(source) = u.config.source.clone() else {
        return Err(
            "no release source: set [update] source in molt.toml (a directory or an https:// URL)"
                .into(),
        );
    };
    Ok(NewUpdateJob {
        kind: UpdateKind::Update,
        requester: requester.into(),
        params: json!({
            "source": source,
            "restartDelayMs": p.restart_delay_ms,
            "verifyTimeoutMs": p.timeout_ms,
        })
        .to_string(),
        continuation: p.continuation_message.clone(),
        origin,
    })
}

/// What [`start_for_turn`] did.
pub struct TurnUpdate {
    pub job_id: String,
    /// False when this tool step had started the job before (the step ran again).
    pub started_now: bool,
    /// How the updater was started (`systemd-run:<unit>`), when known.
    pub launcher: Option<String>,
    pub state: JobState,
}

/// An update an agent's tool asked for: one job per tool step (`origin.effect_key`), however
/// often the step runs, so a turn replayed after a crash starts no second update. The
/// session in `origin` gets the outcome as a message when the job ends.
pub async fn start_for_turn(
    u: &Arc<Updates>,
    origin: TurnOrigin,
    p: &UpdateRunParams,
) -> Result<TurnUpdate, String> {
    let new = new_update(u, "agent", p, Some(origin))?;
    let (job, created) = u
        .app
        .store
        .call(move |s| s.create_update_job_once(&new))
        .await
        .map_err(|e| format!("cannot record the update job: {e}"))?;
    if !created {
        return Ok(TurnUpdate {
            job_id: job.id,
            started_now: false,
            launcher: job.launcher,
            state: job.state,
        });
    }
    let launched = launch_recorded(u, &job.id).await?;
    Ok(TurnUpdate {
        job_id: job.id,
        started_now: true,
        launcher: Some(launched.describe()),
        state: JobState::Pending,
    })
}

/// Delivers the outcome of every ended update an agent asked for to its session, once.
pub async fn deliver_to_sessions(u: &Arc<Updates>) {
    let jobs = match u.app.store.call(|s| s.undelivered_turn_updates()).await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read updates to report to sessions");
            return;
        }
    };
    for job in jobs {
        deliver(u, &job).await;
    }
}

/// Marks `job` delivered and, if an agent asked for it, tells its session how it ended.
/// Returns whether it was delivered now (false: delivered before, or not over).
async fn deliver(u: &Arc<Updates>, job: &molt_store::UpdateJob) -> bool {
    let running = u.app.build.version.clone();
    let text = outcome_text(job, &running);
    let message = crate::agent::note_message(text);
    let (id, m) = (job.id.clone(), Message::Assistant(message.clone()));
    match u.app.store.call(move |s| s.deliver_update(&id, &m)).await {
        Ok(Delivery::NotNow) => false,
        Ok(Delivery::Now { session_message }) => {
            if let (Some(stored), Some(o)) = (session_message, &job.origin) {
                tracing::info!(job = %job.id, session = %o.session_key, "update outcome delivered to its session");
                u.agent
                    .announce(&o.session_key, &o.agent_id, &stored, message);
            }
            true
        }
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "cannot deliver the update's outcome");
            false
        }
    }
}

/// What the asking session is told: the outcome, the version that runs now (this process's,
/// which is the truth), and the continuation message after a success.
fn outcome_text(job: &molt_store::UpdateJob, running: &str) -> String {
    let r = job.report();
    let target = r
        .target
        .as_ref()
        .map(|v| format!(" to {}", v.version))
        .unwrap_or_default();
    let why = r
        .reason
        .clone()
        .unwrap_or_else(|| "no reason recorded".into());
    match job.state {
        JobState::Ok => {
            let before = r
                .before
                .as_ref()
                .map(|v| format!(" (before: {})", v.version))
                .unwrap_or_default();
            let mut t = format!(
                "Update {} finished: molt {running} now runs{before}.",
                job.id
            );
            if let Some(c) = job.continuation.as_deref().filter(|c| !c.trim().is_empty()) {
                t.push_str("\n\n");
                t.push_str(c);
            }
            t
        }
        JobState::RolledBack => format!(
            "Update {}{target} was ROLLED BACK: {why}. molt {running} still runs; nothing \
             changed. `molt update status` has each step.",
            job.id
        ),
        _ => format!(
            "Update {}{target} FAILED: {why}. molt {running} runs. `molt update status` has \
             each step.",
            job.id
        ),
    }
}

/// `update.run`: update to the newest release of `[update] source`, outside this process.
async fn run(
    u: Arc<Updates>,
    _: Caller,
    p: UpdateRunParams,
) -> Result<UpdateRunResult, ErrorShape> {
    if p.target.is_some() {
        return Err(ErrorShape::invalid(
            "git targets are not supported: molt installs signed releases from [update] source",
        ));
    }
    if let Some(note) = &p.note {
        tracing::info!(note = %note, "update requested over the protocol");
    }
    let new = new_update(&u, "rpc", &p, None).map_err(ErrorShape::invalid)?;
    let (id, launched) = start_job(&u, new).await.map_err(unavailable)?;
    Ok(UpdateRunResult {
        ok: true,
        status: "started".into(),
        job_id: id,
        launcher: launched.describe(),
        unit: launched.unit().map(str::to_owned),
    })
}

/// `update.status`: the current or last job as `sentinel`.
async fn status(
    u: Arc<Updates>,
    _: Caller,
    _: UpdateStatusParams,
) -> Result<UpdateStatusResult, ErrorShape> {
    let job = u
        .app
        .store
        .call(|s| s.latest_update_job())
        .await
        .map_err(unavailable)?;
    Ok(UpdateStatusResult {
        sentinel: job.map(|j| j.report()),
        update_available: None,
    })
}

/// `molt.update.notify`: the updater says a job ended. Operators get `molt.update.result`
/// with the outcome and the continuation message, once.
async fn notify(u: Arc<Updates>, _: Caller, p: NotifyParams) -> Result<NotifyResult, ErrorShape> {
    let app = &u.app;
    let id = p.job_id.clone();
    let job = app
        .store
        .call(move |s| s.update_job(&id))
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ErrorShape::invalid(format!("no update job {}", p.job_id)))?;
    if !job.state.is_final() {
        return Ok(NotifyResult {
            ok: true,
            delivered: false,
            reason: Some("the job is still running".into()),
        });
    }
    let report = job.report();
    let event = UpdateResultEvent {
        job_id: report.job_id,
        result: report.result,
        before: report.before,
        after: report.after,
        reason: report.reason,
        continuation_message: report.continuation_message,
    };
    let payload = serde_json::to_value(&event).map_err(unavailable)?;
    if !deliver(&u, &job).await {
        return Ok(NotifyResult {
            ok: true,
            delivered: false,
            reason: Some("delivered before".into()),
        });
    }
    app.broadcast("molt.update.result", payload);
    Ok(NotifyResult {
        ok: true,
        delivered: true,
        reason: None,
    })
}

/// At start-up: an update job left `running` with nobody holding the update lock had its
/// updater die. A recovery job brings the install to a consistent state, outside this process.
///
/// Also delivers the outcome of ended updates that agents asked for and whose session has
/// not heard it (the updater's notice reached no gateway).
pub fn recover_at_start(u: Arc<Updates>) {
    tokio::spawn(async move {
        deliver_to_sessions(&u).await;
        let app = &u.app;
        let unfinished = match app.store.call(|s| s.unfinished_update_jobs()).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the update journal");
                return;
            }
        };
        let now = crate::app::now_ms() as i64;
        let stuck = unfinished.iter().any(|j| {
            j.kind != UpdateKind::Recover && j.is_abandoned(now, crate::process::pid_alive)
        });
        if !stuck {
            return;
        }
        let dir = u.state_dir.clone();
        let free = tokio::task::spawn_blocking(move || UpdateLock::is_free(&dir))
            .await
            .unwrap_or(false);
        if !free {
            return; // an updater runs and will finish its job
        }
        let new = NewUpdateJob {
            kind: UpdateKind::Recover,
            requester: "gateway".into(),
            params: "{}".into(),
            continuation: None,
            origin: None,
        };
        match start_job(&u, new).await {
            Ok((id, l)) => tracing::warn!(
                job = %id,
                launcher = %l.describe(),
                "an interrupted update was found in the journal; recovering it"
            ),
            Err(e) => tracing::error!(error = %e, "cannot start update recovery"),
        }
    });
}

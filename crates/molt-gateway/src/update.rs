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
use molt_service::transient::{self, Launched};
use molt_service::update_lock::UpdateLock;
use molt_store::{JobState, NewUpdateJob, UpdateKind};
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
    let app = &u.app;
    let job = app
        .store
        .call(move |s| s.create_update_job(&new))
        .await
        .map_err(|e| format!("cannot record the update job: {e}"))?;
    let id = job.id.clone();
    let u2 = u.clone();
    let launched = tokio::task::spawn_blocking(move || launch(&u2, &id))
        .await
        .map_err(|e| e.to_string())?;
    let id = job.id.clone();
    match launched {
        Ok(l) => {
            let what = l.describe();
            let jid = id.clone();
            let _ = app
                .store
                .call(move |s| s.set_update_launcher(&jid, &what))
                .await;
            Ok((id, l))
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
    if u.config.trusted_keys.is_empty() {
        return Err(ErrorShape::invalid(
            "no trusted release key is configured: add the release's public key line to `[update] trusted_keys` in molt.toml",
        ));
    }
    let Some(source) = u.config.source.clone() else {
        return Err(ErrorShape::invalid(
            "no release source: set [update] source in molt.toml (a directory or an https:// URL)",
        ));
    };
    if let Some(note) = &p.note {
        tracing::info!(note = %note, "update requested over the protocol");
    }
    let new = NewUpdateJob {
        kind: UpdateKind::Update,
        requester: "rpc".into(),
        params: json!({
            "source": source,
            "restartDelayMs": p.restart_delay_ms,
            "verifyTimeoutMs": p.timeout_ms,
        })
        .to_string(),
        continuation: p.continuation_message,
        origin: None,
    };
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
    app.broadcast("molt.update.result", payload);
    let id = job.id.clone();
    app.store
        .call(move |s| s.mark_update_delivered(&id))
        .await
        .map_err(unavailable)?;
    Ok(NotifyResult {
        ok: true,
        delivered: true,
        reason: None,
    })
}

/// At start-up: an update job left `running` with nobody holding the update lock had its
/// updater die. A recovery job brings the install to a consistent state, outside this process.
pub fn recover_at_start(u: Arc<Updates>) {
    tokio::spawn(async move {
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

//! The gateway's part in updates: `update.run` and `update.status` for clients, the result
//! broadcast (`molt.update.notify` from the updater), and recovery of an interrupted update at
//! start-up. The transaction itself never runs here (design §1 invariant 5): the gateway
//! records a job and starts `molt update apply --job ID` as a transient unit.

use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_service::transient::{self, Launched};
use molt_service::update_lock::UpdateLock;
use molt_store::{JobState, NewUpdateJob, Report, UpdateKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;

type MethodResult = Result<Value, ErrorShape>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateRunParams {
    #[allow(dead_code)]
    session_key: Option<String>,
    #[allow(dead_code)]
    delivery_context: Option<Value>,
    note: Option<String>,
    continuation_message: Option<String>,
    restart_delay_ms: Option<u64>,
    timeout_ms: Option<u64>,
    target: Option<Value>,
}

fn unavailable(e: impl std::fmt::Display) -> ErrorShape {
    ErrorShape::unavailable(e.to_string(), 1000)
}

/// Starts `molt [--profile P] update apply --job ID` outside the gateway.
fn launch(app: &App, job: &str) -> Result<Launched, String> {
    let global: Vec<String> = app
        .profile_name
        .iter()
        .flat_map(|p| ["--profile".to_owned(), p.clone()])
        .collect();
    transient::launch_updater(&global, job, &app.state_dir)
        .map_err(|e| format!("cannot start the updater: {e}"))
}

/// Records a job and launches its updater; the job id comes back at once.
async fn start_job(app: &Arc<App>, new: NewUpdateJob) -> Result<(String, Launched), String> {
    let job = app
        .store
        .call(move |s| s.create_update_job(&new))
        .await
        .map_err(|e| format!("cannot record the update job: {e}"))?;
    let id = job.id.clone();
    let a = app.clone();
    let launched = tokio::task::spawn_blocking(move || launch(&a, &id))
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
pub async fn run(app: &Arc<App>, p: UpdateRunParams) -> MethodResult {
    if p.target.is_some() {
        return Err(ErrorShape::invalid(
            "git targets are not supported: molt installs signed releases from [update] source",
        ));
    }
    if app.update.trusted_keys.is_empty() {
        return Err(ErrorShape::invalid(
            "no trusted release key is configured: add the release's public key line to `[update] trusted_keys` in molt.toml",
        ));
    }
    let Some(source) = app.update.source.clone() else {
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
    };
    let (id, launched) = start_job(app, new).await.map_err(unavailable)?;
    Ok(json!({
        "ok": true,
        "status": "started",
        "jobId": id,
        "launcher": launched.describe(),
    "unit": launched.unit(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateStatusParams {
    #[allow(dead_code)]
    refresh_checkout: Option<bool>,
}

/// `update.status`: the current or last job as `sentinel`.
pub async fn status(app: &Arc<App>, _p: UpdateStatusParams) -> MethodResult {
    let job = app
        .store
        .call(|s| s.latest_update_job())
        .await
        .map_err(unavailable)?;
    let sentinel = job
        .map(|j| serde_json::to_value(Report::of(&j)).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Ok(json!({ "sentinel": sentinel, "updateAvailable": null }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotifyParams {
    job_id: String,
}

/// `molt.update.notify`: the updater says a job ended. Operators get `molt.update.result`
/// with the outcome and the continuation message, once.
pub async fn notify(app: &Arc<App>, p: NotifyParams) -> MethodResult {
    let id = p.job_id.clone();
    let job = app
        .store
        .call(move |s| s.update_job(&id))
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ErrorShape::invalid(format!("no update job {}", p.job_id)))?;
    if !job.state.is_final() {
        return Ok(json!({ "ok": true, "delivered": false, "reason": "the job is still running" }));
    }
    let report = Report::of(&job);
    let payload = json!({
        "jobId": report.job_id,
        "result": report.result,
        "before": report.before,
        "after": report.after,
        "reason": report.reason,
        "continuationMessage": report.continuation_message,
    });
    app.broadcast("molt.update.result", payload);
    let id = job.id.clone();
    app.store
        .call(move |s| s.mark_update_delivered(&id))
        .await
        .map_err(unavailable)?;
    Ok(json!({ "ok": true, "delivered": true }))
}

/// At start-up: an update job left `running` with nobody holding the update lock had its
/// updater die. A recovery job brings the install to a consistent state, outside this process.
pub fn recover_at_start(app: Arc<App>) {
    tokio::spawn(async move {
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
        let dir = app.state_dir.clone();
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
        };
        match start_job(&app, new).await {
            Ok((id, l)) => tracing::warn!(
                job = %id,
                launcher = %l.describe(),
                "an interrupted update was found in the journal; recovering it"
            ),
            Err(e) => tracing::error!(error = %e, "cannot start update recovery"),
        }
    });
}

//! `cron.*`: list, status, get, add, update, remove, run and runs.

use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_protocol::methods::cron::{
    CronAdd, CronAddParams, CronGet, CronIdParams, CronJob, CronList, CronListParams,
    CronListResult, CronRemove, CronRemoveResult, CronRun, CronRunLogEntry, CronRunParams,
    CronRunResult, CronRuns, CronRunsParams, CronRunsResult, CronStatus, CronStatusParams,
    CronStatusResult, CronUpdate, CronUpdateParams,
};
use molt_store::{CronJobFields, CronJobRecord};
use serde_json::json;

use crate::app::now_ms;
use crate::cron::{Cron, JobSpec};
use crate::router::{Caller, Router};
use crate::store_handle::to_error_shape;

const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 200;

pub fn register(r: &mut Router, cron: &Arc<Cron>) {
    r.with(cron)
        .on::<CronList>(list)
        .on::<CronStatus>(status)
        .on::<CronGet>(get)
        .on::<CronAdd>(add)
        .on::<CronUpdate>(update)
        .on::<CronRemove>(remove)
        .on::<CronRun>(run)
        .on::<CronRuns>(runs);
}

fn not_found(id: &str) -> ErrorShape {
    ErrorShape::invalid(format!("no cron job {id}; `molt cron list` shows the jobs"))
        .with_details(json!({"code": "CRON_JOB_NOT_FOUND", "jobId": id}))
}

fn need_id(id: Option<&str>) -> Result<String, ErrorShape> {
    id.filter(|i| !i.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ErrorShape::invalid("give the job's `id` (or `jobId`)"))
}

async fn job_of(cron: &Cron, id: &str) -> Result<CronJobRecord, ErrorShape> {
    let i = id.to_owned();
    cron.store
        .call(move |s| s.cron_job(&i))
        .await
        .map_err(to_error_shape)?
        .ok_or_else(|| not_found(id))
}

/// A job's spec from the wire; [`Cron::prepare`] checks it.
fn spec_of(
    schedule: &serde_json::Value,
    payload: &serde_json::Value,
    session_target: &str,
    wake_mode: &str,
    description: Option<String>,
    delete_after_run: Option<bool>,
) -> Result<JobSpec, ErrorShape> {
    let schedule: molt_cron::Schedule = serde_json::from_value(schedule.clone()).map_err(|e| {
        ErrorShape::invalid(format!(
            "schedule: {e}; use {{kind:\"at\", at}}, {{kind:\"every\", everyMs}} or \
             {{kind:\"cron\", expr, tz?}}"
        ))
    })?;
    let payload = serde_json::from_value(payload.clone()).map_err(|e| {
        ErrorShape::invalid(format!(
            "payload: {e}; use {{kind:\"command\", argv}}, {{kind:\"systemEvent\", text}} or \
             {{kind:\"agentTurn\", message}}"
        ))
    })?;
    let one_shot = matches!(schedule, molt_cron::Schedule::At { .. });
    Ok(JobSpec {
        schedule,
        payload,
        session_target: session_target.to_owned(),
        wake_mode: wake_mode.to_owned(),
        description,
        // OpenClaw's default: a one-shot removes itself once it ran well.
        delete_after_run: delete_after_run.unwrap_or(one_shot),
    })
}

/// Whether more follow a page of `shown` items at `offset` out of `total`, and where the
/// next page starts.
fn page(offset: u32, shown: usize, total: u64) -> (bool, Option<u32>) {
    let end = offset + shown as u32;
    let more = u64::from(end) < total;
    (more, more.then_some(end))
}

fn agent_of(cron: &Cron, id: Option<&str>) -> Result<String, ErrorShape> {
    let id = id.unwrap_or(molt_config::MAIN_AGENT);
    let known = cron.agent_ids();
    if known.iter().any(|k| k == id) {
        Ok(id.to_owned())
    } else {
        Err(ErrorShape::invalid(format!(
            "no agent {id:?}; the agents are: {}",
            known.join(", ")
        )))
    }
}

async fn list(cron: Arc<Cron>, _: Caller, p: CronListParams) -> Result<CronListResult, ErrorShape> {
    let limit = p.limit.unwrap_or(LIST_DEFAULT).clamp(1, LIST_MAX);
    let offset = p.offset.unwrap_or(0);
    let include_disabled =
        p.include_disabled.unwrap_or(true) && p.enabled.as_deref() != Some("enabled");
    let agent = p.agent_id.clone();
    let (jobs, total) = cron
        .store
        .call(move |s| s.cron_jobs(include_disabled, agent.as_deref(), limit, offset))
        .await
        .map_err(to_error_shape)?;
    let mut jobs: Vec<CronJob> = jobs.iter().map(|j| cron.view(j)).collect();
    if p.enabled.as_deref() == Some("disabled") {
        jobs.retain(|j| !j.enabled);
    }
    let (has_more, next_offset) = page(offset, jobs.len(), total);
    Ok(CronListResult {
        next_offset,
        jobs,
        total,
        offset,
        limit,
        has_more,
    })
}

async fn status(
    cron: Arc<Cron>,
    _: Caller,
    _: CronStatusParams,
) -> Result<CronStatusResult, ErrorShape> {
    let (jobs, next) = cron
        .store
        .call(|s| {
            Ok::<_, molt_store::StoreError>((s.cron_jobs(true, None, 0, 0)?.1, s.cron_next_wake()?))
        })
        .await
        .map_err(to_error_shape)?;
    Ok(CronStatusResult {
        enabled: cron.config.enabled,
        triggers_enabled: cron.config.enabled,
        storage: "sqlite".into(),
        sqlite_path: cron.app.state_dir.join("molt.db").display().to_string(),
        jobs,
        next_wake_at_ms: next,
        host_time_zone: cron.host_tz.clone(),
        skip_missed: cron.config.skip_missed,
    })
}

async fn get(cron: Arc<Cron>, _: Caller, p: CronIdParams) -> Result<CronJob, ErrorShape> {
    let id = need_id(p.id())?;
    Ok(cron.view(&job_of(&cron, &id).await?))
}

async fn add(cron: Arc<Cron>, _: Caller, p: CronAddParams) -> Result<CronJob, ErrorShape> {
    if p.name.trim().is_empty() {
        return Err(ErrorShape::invalid("a cron job needs a name"));
    }
    let agent = agent_of(&cron, p.agent_id.as_deref())?;
    let spec = spec_of(
        &p.schedule,
        &p.payload,
        &p.session_target,
        &p.wake_mode,
        p.description.clone(),
        p.delete_after_run,
    )?;
    let job = cron
        .add(p.name.clone(), agent, p.enabled.unwrap_or(true), spec)
        .await
        .map_err(ErrorShape::invalid)?;
    Ok(cron.view(&job))
}

async fn update(cron: Arc<Cron>, _: Caller, p: CronUpdateParams) -> Result<CronJob, ErrorShape> {
    let id = need_id(p.id.as_deref().or(p.job_id.as_deref()))?;
    let job = job_of(&cron, &id).await?;
    let old = cron.view(&job);
    let patch = p.patch;
    let agent = match &patch.agent_id {
        Some(a) => agent_of(&cron, Some(a))?,
        None => job.agent_id.clone(),
    };
    let schedule_changed = patch.schedule.is_some();
    let mut spec = spec_of(
        patch.schedule.as_ref().unwrap_or(&old.schedule),
        patch.payload.as_ref().unwrap_or(&old.payload),
        patch
            .session_target
            .as_deref()
            .unwrap_or(&old.session_target),
        patch.wake_mode.as_deref().unwrap_or(&old.wake_mode),
        patch.description.clone().or(old.description.clone()),
        Some(patch.delete_after_run.unwrap_or(old.delete_after_run)),
    )?;
    let now = now_ms() as i64;
    let compiled = cron.prepare(&mut spec, now).map_err(ErrorShape::invalid)?;
    let enabled = patch.enabled.unwrap_or(job.enabled);
    // A new schedule or a re-enabled job starts from now; otherwise the next run stays.
    let next = if !enabled {
        None
    } else if schedule_changed || !job.enabled || job.next_run_at_ms.is_none() {
        compiled.next_after(now - 1)
    } else {
        job.next_run_at_ms
    };
    let text = serde_json::to_string(&spec).map_err(|e| ErrorShape::invalid(e.to_string()))?;
    let name = patch.name.clone().unwrap_or(job.name.clone());
    let i = id.clone();
    let job = cron
        .store
        .call(move |s| {
            s.cron_update(
                &i,
                &CronJobFields {
                    name: &name,
                    agent_id: &agent,
                    enabled,
                    spec: &text,
                    next_run_at_ms: next,
                },
                schedule_changed,
            )
        })
        .await
        .map_err(to_error_shape)?
        .ok_or_else(|| not_found(&id))?;
    let view = cron.view(&job);
    cron.event(
        &job.id,
        "updated",
        json!({"job": view, "nextRunAtMs": job.next_run_at_ms}),
    );
    cron.poke();
    Ok(view)
}

async fn remove(
    cron: Arc<Cron>,
    _: Caller,
    p: CronIdParams,
) -> Result<CronRemoveResult, ErrorShape> {
    let id = need_id(p.id())?;
    let i = id.clone();
    let removed = cron
        .store
        .call(move |s| s.cron_remove(&i))
        .await
        .map_err(to_error_shape)?;
    if !removed {
        return Err(not_found(&id));
    }
    cron.event(&id, "removed", json!({}));
    cron.poke();
    Ok(CronRemoveResult {
        ok: true,
        removed: true,
    })
}

async fn run(cron: Arc<Cron>, _: Caller, p: CronRunParams) -> Result<CronRunResult, ErrorShape> {
    let id = need_id(p.id.as_deref().or(p.job_id.as_deref()))?;
    let job = job_of(&cron, &id).await?;
    let force = matches!(p.mode.as_deref(), None | Some("force"));
    if !force && !job.enabled {
        return Ok(CronRunResult {
            ok: true,
            enqueued: false,
            run_id: None,
            reason: Some("the job is disabled (mode force runs it anyway)".into()),
        });
    }
    let run_id = cron.run_now(&job).await.map_err(ErrorShape::invalid)?;
    Ok(CronRunResult {
        ok: true,
        enqueued: true,
        run_id,
        reason: None,
    })
}

async fn runs(cron: Arc<Cron>, _: Caller, p: CronRunsParams) -> Result<CronRunsResult, ErrorShape> {
    let limit = p.limit.unwrap_or(LIST_DEFAULT).clamp(1, LIST_MAX);
    let offset = p.offset.unwrap_or(0);
    let job = p.id.clone().or(p.job_id.clone());
    let (fires, total) = cron
        .store
        .call(move |s| s.cron_fires(job.as_deref(), limit, offset))
        .await
        .map_err(to_error_shape)?;
    let entries: Vec<CronRunLogEntry> = fires
        .into_iter()
        .map(|f| CronRunLogEntry {
            ts: f.finished_at_ms.unwrap_or(f.started_at_ms),
            job_id: f.job_id,
            job_name: Some(f.job_name),
            action: if f.state == "started" {
                "started".into()
            } else {
                "finished".into()
            },
            status: (f.state != "started").then_some(f.state),
            error: f.error,
            summary: f.summary,
            run_id: f.run_id,
            session_key: f.session_key,
            run_at_ms: f.scheduled_at_ms,
            duration_ms: f.finished_at_ms.map(|e| e - f.started_at_ms),
            trigger: f.trigger,
        })
        .collect();
    let (has_more, next_offset) = page(offset, entries.len(), total);
    Ok(CronRunsResult {
        next_offset,
        entries,
        total,
        offset,
        limit,
        has_more,
    })
}

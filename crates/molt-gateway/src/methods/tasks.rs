//! Runs: the schema's `tasks.*` and molt's own `molt.run.*`.

use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_protocol::methods::tasks::{
    RunExec, RunExecParams, RunExecResult, RunGet, RunIdParams, TaskIdParams, TaskStatus,
    TasksCancel, TasksCancelParams, TasksCancelResult, TasksGet, TasksGetResult, TasksList,
    TasksListParams, TasksListResult,
};
use molt_store::{ExecSpec, RunRecord, RunState, StepSpec, StoreError};

use crate::app::now_ms;
use crate::executor::Executor;
use crate::router::{Caller, Router};
use crate::store_handle::to_error_shape;

pub fn register(r: &mut Router, runs: &Arc<Executor>) {
    r.with(runs)
        .on::<TasksList>(list)
        .on::<TasksGet>(get)
        .on::<TasksCancel>(cancel)
        .on::<RunExec>(exec)
        .on::<RunGet>(run_get);
}

async fn get_run(runs: &Executor, id: String) -> Result<RunRecord, ErrorShape> {
    runs.store()
        .call(move |s| s.get_run(&id))
        .await
        .map_err(to_error_shape)
}

async fn get(
    runs: Arc<Executor>,
    _: Caller,
    p: TaskIdParams,
) -> Result<TasksGetResult, ErrorShape> {
    let run = get_run(&runs, p.task_id).await?;
    Ok(TasksGetResult {
        task: run.task_summary(),
    })
}

async fn run_get(runs: Arc<Executor>, _: Caller, p: RunIdParams) -> Result<RunRecord, ErrorShape> {
    get_run(&runs, p.run_id).await
}

async fn list(
    runs: Arc<Executor>,
    _: Caller,
    p: TasksListParams,
) -> Result<TasksListResult, ErrorShape> {
    let limit = p.limit.unwrap_or(100).clamp(1, 500);
    let offset: u32 = match p.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse()
            .map_err(|_| ErrorShape::invalid("invalid cursor"))?,
    };
    // Filtering happens after the fetch because `timed_out` is derived; fetch generously.
    let fetch = offset
        .saturating_add(limit)
        .saturating_add(1)
        .saturating_mul(if p.status.is_some() { 4 } else { 1 });
    let all = runs
        .store()
        .call(move |s| s.list_runs(None, fetch))
        .await
        .map_err(to_error_shape)?;
    let matching: Vec<&RunRecord> = all
        .iter()
        .filter(|r| p.status.as_ref().is_none_or(|f| f.matches(r.task_status())))
        .collect();
    let tasks = matching
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|r| r.task_summary())
        .collect();
    Ok(TasksListResult {
        tasks,
        next_cursor: (matching.len() > (offset + limit) as usize)
            .then(|| (offset + limit).to_string()),
    })
}

async fn cancel(
    runs: Arc<Executor>,
    _: Caller,
    p: TasksCancelParams,
) -> Result<TasksCancelResult, ErrorShape> {
    let id = p.task_id.clone();
    let state = match runs.store().call(move |s| s.request_cancel(&id)).await {
        Ok(s) => s,
        Err(StoreError::NoSuchRun(_)) => {
            return Ok(TasksCancelResult {
                found: false,
                cancelled: false,
                task: None,
                reason: None,
            });
        }
        Err(e) => return Err(to_error_shape(e)),
    };
    let run_id = molt_store::RunId(p.task_id.clone());
    if state == RunState::Running {
        runs.cancel(&run_id);
    }
    tracing::info!(run = %run_id, reason = p.reason.as_deref().unwrap_or(""), "cancel requested");
    let run = get_run(&runs, p.task_id).await?;
    Ok(TasksCancelResult {
        found: true,
        cancelled: matches!(state, RunState::Cancelled | RunState::Running),
        task: Some(run.task_summary()),
        reason: (state.is_terminal() && state != RunState::Cancelled)
            .then(|| format!("the task already ended ({})", state.as_str())),
    })
}

async fn exec(
    runs: Arc<Executor>,
    caller: Caller,
    p: RunExecParams,
) -> Result<RunExecResult, ErrorShape> {
    if p.command.is_empty() {
        return Err(ErrorShape::invalid("command must not be empty"));
    }
    let spec = StepSpec::Exec(ExecSpec {
        command: p.command,
        args: p.args,
        env: p.env,
        cwd: p.cwd,
        timeout_ms: p.timeout_ms,
    });
    let (title, key) = (p.title, p.idempotency_key);
    let id = runs
        .store()
        .call(move |s| s.create_run(title.as_deref(), &[spec], key.as_deref()))
        .await
        .map_err(to_error_shape)?;
    tracing::info!(run = %id, conn = %caller.conn_id, "exec run created");
    runs.wake();
    Ok(RunExecResult {
        run_id: id,
        status: TaskStatus::Queued,
        accepted_at: now_ms(),
    })
}

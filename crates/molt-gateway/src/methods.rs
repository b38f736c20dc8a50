//! The method router: scope checks, idempotency, and one handler per implemented method.
//!
//! Result shapes follow the published schema where it defines them (`TaskSummary`,
//! `LogsTailResult`, ...). `molt.*` methods are molt's own extensions.

use std::sync::Arc;

use molt_protocol::frame::{ErrorShape, RequestFrame, ResponseFrame, code};
use molt_protocol::scope;
use molt_store::{ExecSpec, RunRecord, RunState, StepSpec, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{App, Lifecycle, now_ms};
use crate::ws::Session;

/// Side-effecting calls with the same idempotency key within this window return the first
/// result.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

type MethodResult = Result<Value, ErrorShape>;

fn store_error(e: StoreError) -> ErrorShape {
    match e {
        StoreError::NoSuchRun(id) => ErrorShape::invalid(format!("no task with id {id}")),
        e => {
            tracing::error!(error = %e, "store error");
            ErrorShape::unavailable(format!("store error: {e}"), 1000)
        }
    }
}

fn params<T: for<'de> Deserialize<'de>>(p: Option<Value>) -> Result<T, ErrorShape> {
    serde_json::from_value(p.unwrap_or_else(|| json!({})))
        .map_err(|e| ErrorShape::invalid(format!("invalid params: {e}")))
}

/// Answers one request.
pub async fn dispatch(app: &Arc<App>, session: &Session, req: RequestFrame) -> ResponseFrame {
    let id = req.id.clone();
    let Some(needed) = scope::required(&req.method) else {
        return ResponseFrame::err(
            id,
            ErrorShape::invalid(format!("unknown method {:?}", req.method))
                .with_details(json!({ "method": req.method })),
        );
    };
    if !scope::allows(&session.scopes, needed) {
        return ResponseFrame::err(
            id,
            ErrorShape::new(
                code::FORBIDDEN,
                format!("{} requires {}", req.method, needed.as_str()),
            )
            .with_details(json!({
                "code": "MISSING_SCOPE",
                "missingScope": needed.as_str(),
                "requiredScopes": [needed.as_str()],
            })),
        );
    }
    let side_effect = is_side_effecting(&req.method);
    if side_effect && app.state() != Lifecycle::Serving {
        return ResponseFrame::err(
            id,
            ErrorShape::unavailable("the gateway is stopping; retry after it restarts", 1000)
                .with_details(json!({ "reason": "gateway-stopping" })),
        );
    }
    let key = req
        .params
        .as_ref()
        .and_then(|p| p.get("idempotencyKey"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let (true, Some(k)) = (side_effect, &key) {
        let (m, k) = (req.method.clone(), k.clone());
        match app
            .store
            .call(move |s| s.idempotent_result(&m, &k, IDEMPOTENCY_WINDOW_MS))
            .await
        {
            Ok(Some(stored)) => {
                if let Ok(v) = serde_json::from_str(&stored) {
                    return ResponseFrame::ok(id, v);
                }
            }
            Ok(None) => {}
            Err(e) => return ResponseFrame::err(id, store_error(e)),
        }
    }
    let method = req.method.clone();
    let result = route(app, session, &method, req.params).await;
    match result {
        Ok(v) => {
            if let (true, Some(k)) = (side_effect, key) {
                let text = v.to_string();
                if let Err(e) = app
                    .store
                    .call(move |s| s.remember_result(&method, &k, &text))
                    .await
                {
                    tracing::warn!(error = %e, "cannot store idempotency result");
                }
            }
            ResponseFrame::ok(id, v)
        }
        Err(e) => ResponseFrame::err(id, e),
    }
}

fn is_side_effecting(method: &str) -> bool {
    matches!(
        method,
        "molt.run.exec" | "tasks.cancel" | "device.pair.approve" | "device.pair.reject"
    )
}

async fn route(app: &Arc<App>, session: &Session, method: &str, p: Option<Value>) -> MethodResult {
    match method {
        "health" => Ok(health(app)),
        "status" => status(app).await,
        "system-presence" => Ok(json!(crate::ws::presence(app, None, usize::MAX))),
        "gateway.identity.get" => Ok(json!({
            "deviceId": app.identity.id(),
            "publicKey": molt_protocol::device::b64url(&app.identity.public_key()),
        })),
        "logs.tail" => logs_tail(app, params(p)?).await,
        "tasks.list" => tasks_list(app, params(p)?).await,
        "tasks.get" => {
            let p: TaskIdParams = params(p)?;
            let run = get_run(app, p.task_id).await?;
            Ok(json!({ "task": task_summary(&run) }))
        }
        "tasks.cancel" => tasks_cancel(app, params(p)?).await,
        "device.pair.list" => {
            let _: EmptyParams = params(p)?;
            let devices = app
                .store
                .call(|s| s.list_devices())
                .await
                .map_err(store_error)?;
            let (pending, paired): (Vec<_>, Vec<_>) = devices
                .into_iter()
                .partition(|d| d.state == molt_store::Pairing::Pending);
            Ok(json!({ "pending": pending, "paired": paired }))
        }
        "device.pair.approve" | "device.pair.reject" => {
            let p: RequestIdParams = params(p)?;
            pair_decide(app, p.request_id, method == "device.pair.approve").await
        }
        "gateway.restart.request" => restart(app, params(p)?).await,
        "update.run" => crate::update::run(app, params(p)?).await,
        "update.status" => crate::update::status(app, params(p)?).await,
        "molt.update.notify" => crate::update::notify(app, params(p)?).await,
        "molt.run.exec" => run_exec(app, session, params(p)?).await,
        "molt.run.get" => {
            let p: RunIdParams = params(p)?;
            let run = get_run(app, p.run_id).await?;
            serde_json::to_value(&run).map_err(|e| ErrorShape::invalid(e.to_string()))
        }
        other => Err(ErrorShape::invalid(format!("unknown method {other:?}"))),
    }
}

fn health(app: &App) -> Value {
    let mut v = app.probe_body();
    v["ok"] = json!(true);
    v["ts"] = json!(now_ms());
    v["durationMs"] = json!(0);
    v
}

async fn status(app: &Arc<App>) -> MethodResult {
    let counts = app
        .store
        .call(|s| s.run_counts())
        .await
        .map_err(store_error)?;
    let mut v = app.probe_body();
    v["profile"] = json!(app.profile);
    v["port"] = json!(app.port);
    v["startedAtMs"] = json!(app.started_at_ms);
    v["stateDir"] = json!(app.state_dir.display().to_string());
    v["configPath"] = json!(app.config_path.display().to_string());
    v["runs"] = json!(counts);
    v["activeRuns"] = json!(app.executor.active());
    v["connections"] = json!(app.peers.lock().map(|p| p.len()).unwrap_or(0));
    let (waiting, shed) = app.pending.counts();
    v["unauthenticated"] = json!({
        "open": waiting,
        "max": app.pending.limits().total,
        "maxPerAddress": app.pending.limits().per_address,
        "shed": shed,
    });
    let last = app
        .store
        .call(|s| s.meta("last_handover"))
        .await
        .map_err(store_error)?;
    v["lastHandover"] = last
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RestartParams {
    reason: Option<String>,
}

/// `gateway.restart.request`: a handover to what `current` points to. Answers once the new
/// process accepts (or the attempt failed and this process still serves).
async fn restart(app: &Arc<App>, p: RestartParams) -> MethodResult {
    tracing::info!(
        reason = p.reason.as_deref().unwrap_or(""),
        "restart requested over the protocol"
    );
    let (outcome, coalesced) = crate::handover::request(app).await;
    match outcome {
        Ok(report) => Ok(json!({
            "ok": true,
            "status": if coalesced { "coalesced" } else { "completed" },
            "handover": report,
        })),
        Err(e) => Err(ErrorShape::unavailable(
            format!("restart failed, the gateway still serves: {e}"),
            1000,
        )
        .with_details(json!({ "reason": "handover-failed" }))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TaskIdParams {
    task_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RunIdParams {
    run_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RequestIdParams {
    request_id: String,
}

async fn get_run(app: &App, id: String) -> Result<RunRecord, ErrorShape> {
    app.store
        .call(move |s| s.get_run(&id))
        .await
        .map_err(store_error)
}

/// The protocol's task status for a run.
fn task_status(run: &RunRecord) -> &'static str {
    match run.state {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Succeeded => "completed",
        RunState::Cancelled => "cancelled",
        RunState::Failed
            if run
                .error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")) =>
        {
            "timed_out"
        }
        RunState::Failed => "failed",
    }
}

/// A run as the schema's `TaskSummary` (no extra fields allowed there).
pub fn task_summary(run: &RunRecord) -> Value {
    let mut t = json!({
        "id": run.id.0,
        "kind": "exec",
        "runtime": "molt",
        "status": task_status(run),
        "runId": run.id.0,
        "createdAt": run.created_at_ms,
        "updatedAt": run.updated_at_ms,
    });
    if let Some(title) = &run.title {
        t["title"] = json!(title);
    }
    if let Some(s) = run.steps.iter().filter_map(|s| s.started_at_ms).min() {
        t["startedAt"] = json!(s);
    }
    if let Some(f) = run.finished_at_ms {
        t["endedAt"] = json!(f);
    }
    if let Some(e) = &run.error {
        t["error"] = json!(e);
    }
    let current = run.steps.get(run.next_step as usize).or(run.steps.last());
    if let Some(step) = current {
        t["progressSummary"] = json!(format!(
            "step {}/{}, attempt {}",
            step.index + 1,
            run.steps.len(),
            step.attempts
        ));
        if let Some(code) = step.exit_code {
            t["terminalSummary"] = json!(format!("exit code {code}"));
        }
        if let Some(tail) = &step.output_tail {
            t["result"] = json!(tail);
        }
    }
    t
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TasksListParams {
    status: Option<Value>,
    #[allow(dead_code)]
    agent_id: Option<String>,
    #[allow(dead_code)]
    session_key: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn tasks_list(app: &App, p: TasksListParams) -> MethodResult {
    let wanted: Option<Vec<String>> = match p.status {
        None => None,
        Some(Value::String(s)) => Some(vec![s]),
        Some(Value::Array(a)) => Some(
            a.into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(_) => {
            return Err(ErrorShape::invalid(
                "status must be a string or a list of strings",
            ));
        }
    };
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
        .saturating_mul(if wanted.is_some() { 4 } else { 1 });
    let runs = app
        .store
        .call(move |s| s.list_runs(None, fetch))
        .await
        .map_err(store_error)?;
    let matching: Vec<Value> = runs
        .iter()
        .filter(|r| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|s| s == task_status(r)))
        })
        .map(task_summary)
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .cloned()
        .collect();
    let mut out = json!({ "tasks": page });
    if matching.len() > (offset + limit) as usize {
        out["nextCursor"] = json!((offset + limit).to_string());
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TasksCancelParams {
    task_id: String,
    reason: Option<String>,
}

async fn tasks_cancel(app: &App, p: TasksCancelParams) -> MethodResult {
    let id = p.task_id.clone();
    let state = match app.store.call(move |s| s.request_cancel(&id)).await {
        Ok(s) => s,
        Err(StoreError::NoSuchRun(_)) => return Ok(json!({ "found": false, "cancelled": false })),
        Err(e) => return Err(store_error(e)),
    };
    let run_id = molt_store::RunId(p.task_id.clone());
    if state == RunState::Running {
        app.executor.cancel(&run_id);
    }
    tracing::info!(run = %run_id, reason = p.reason.as_deref().unwrap_or(""), "cancel requested");
    let run = get_run(app, p.task_id).await?;
    let mut out = json!({
        "found": true,
        "cancelled": matches!(state, RunState::Cancelled | RunState::Running),
        "task": task_summary(&run),
    });
    if state.is_terminal() && state != RunState::Cancelled {
        out["reason"] = json!(format!("the task already ended ({})", state.as_str()));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RunExecParams {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    title: Option<String>,
    idempotency_key: Option<String>,
}

async fn run_exec(app: &App, session: &Session, p: RunExecParams) -> MethodResult {
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
    let id = app
        .store
        .call(move |s| s.create_run(title.as_deref(), &[spec], key.as_deref()))
        .await
        .map_err(store_error)?;
    tracing::info!(run = %id, conn = %session.conn_id, "exec run created");
    app.executor.wake();
    Ok(json!({ "runId": id.0, "status": "queued", "acceptedAt": now_ms() }))
}

async fn pair_decide(app: &App, device: String, approve: bool) -> MethodResult {
    let token = if approve {
        Some(
            crate::fsutil::random_hex(32)
                .map_err(|e| ErrorShape::unavailable(e.to_string(), 1000))?,
        )
    } else {
        None
    };
    let d = device.clone();
    let rec = app
        .store
        .call(move |s| match token {
            Some(t) => s.approve_device(&d, &t),
            None => s.reject_device(&d),
        })
        .await
        .map_err(store_error)?
        .ok_or_else(|| ErrorShape::invalid(format!("no pairing request for device {device}")))?;
    let decision = if approve { "approved" } else { "rejected" };
    app.broadcast(
        "device.pair.resolved",
        json!({ "requestId": rec.id, "deviceId": rec.id, "decision": decision, "ts": now_ms() }),
    );
    Ok(json!({ "requestId": rec.id, "deviceId": rec.id, "decision": decision }))
}

async fn logs_tail(app: &App, p: LogsTailParams) -> MethodResult {
    let path = app.log_file.clone();
    let limit = p.limit.unwrap_or(200).clamp(1, 5000) as usize;
    let max_bytes = p.max_bytes.unwrap_or(256 * 1024).clamp(1, 1_000_000);
    tokio::task::spawn_blocking(move || tail_file(&path, p.cursor, limit, max_bytes))
        .await
        .map_err(|e| ErrorShape::unavailable(e.to_string(), 1000))?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LogsTailParams {
    cursor: Option<u64>,
    limit: Option<u32>,
    max_bytes: Option<u64>,
}

/// Reads log lines. Without a cursor: the last `limit` lines. With one: what follows it. The
/// returned cursor is the byte offset to pass next time.
fn tail_file(
    path: &std::path::Path,
    cursor: Option<u64>,
    limit: usize,
    max_bytes: u64,
) -> MethodResult {
    use std::io::{Read, Seek, SeekFrom};
    let file_name = path.display().to_string();
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(json!({ "file": file_name, "cursor": 0, "size": 0, "lines": [] }));
        }
        Err(e) => {
            return Err(ErrorShape::unavailable(
                format!("cannot read {file_name}: {e}"),
                1000,
            ));
        }
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reset = false;
    let start = match cursor {
        Some(c) if c <= size => c,
        Some(_) => {
            reset = true; // the file was truncated or rotated
            0
        }
        None => size.saturating_sub(max_bytes),
    };
    let mut skipped = 0;
    let read_from = if size - start > max_bytes {
        skipped = size - start - max_bytes;
        size - max_bytes
    } else {
        start
    };
    let io =
        |e: std::io::Error| ErrorShape::unavailable(format!("cannot read {file_name}: {e}"), 1000);
    f.seek(SeekFrom::Start(read_from)).map_err(io)?;
    let mut buf = Vec::new();
    f.take(size - read_from).read_to_end(&mut buf).map_err(io)?;
    // Only whole lines: keep a partial last line for the next call.
    let end = buf
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines: Vec<&str> = text.lines().collect();
    // A cut at the front (maxBytes) may start mid-line.
    if ((cursor.is_none() && read_from > 0) || skipped > 0) && !lines.is_empty() {
        lines.remove(0);
    }
    let truncated = lines.len() > limit;
    if truncated {
        lines.drain(..lines.len() - limit);
    }
    let mut out = json!({
        "file": file_name,
        "cursor": read_from + end as u64,
        "size": size,
        "lines": lines,
    });
    if truncated || skipped > 0 {
        out["truncated"] = json!(true);
    }
    if reset {
        out["reset"] = json!(true);
    }
    if skipped > 0 {
        out["skippedBytes"] = json!(skipped);
    }
    Ok(out)
}

//! The gateway itself: `health`, `status`, `system-presence`, `gateway.identity.get`,
//! `logs.tail` and `gateway.restart.request`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::system::{
    AgentSessions, CliAgentRow, CliAgents, CliProjection, Health, HealthAgent, HealthResult,
    HealthSessions, HeartbeatSummary, IdentityGet, IdentityResult, LogsTail, LogsTailParams,
    LogsTailResult, MemoryPluginStatus, OpenClawHealth, OpenClawStatus, RecentSession,
    RestartParams, RestartRequest, RestartResult, SessionDefaults, SessionsSummary, Status,
    StatusResult, SystemPresence, TaskAuditSummary, TaskRegistrySummary, Unauthenticated,
};
use molt_protocol::methods::tasks::RunCounts;
use serde_json::{Value, json};

use crate::app::{App, now_ms};
use crate::handover::Handover;
use crate::router::{Caller, Router};
use crate::store_handle::to_error_shape;
use crate::subsystem::Subsystems;

/// What `status` and `logs.tail` report about this gateway beyond the shared [`App`].
pub struct GatewayFacts {
    pub app: Arc<App>,
    pub profile: String,
    pub port: u16,
    pub log_file: PathBuf,
    pub subsystems: Arc<Subsystems>,
    /// `[agents]` of the config: the agent ids, names and default model `status` and
    /// `health` report.
    pub agents: molt_config::AgentsConfig,
    /// The store file (sessions of all agents live there).
    pub db_path: PathBuf,
    /// The chat channels, whose state `status` shows (`channelSummary`).
    pub channels: Arc<crate::channels::Channels>,
}

/// How many of an agent's latest sessions `health` lists.
const HEALTH_RECENT_SESSIONS: u32 = 5;

pub fn register(r: &mut Router, parts: &super::Parts) {
    r.with(&parts.app)
        .on::<SystemPresence>(presence)
        .on::<IdentityGet>(identity);
    r.with(&parts.facts)
        .on::<Health>(health)
        .on::<Status>(status)
        .on::<LogsTail>(logs_tail);
    r.with(&parts.handover).on::<RestartRequest>(restart);
}

async fn health(g: Arc<GatewayFacts>, _: Caller, _: AnyParams) -> Result<HealthResult, ErrorShape> {
    let started = now_ms();
    let ids = g.agents.ids();
    let per_agent = {
        let ids = ids.clone();
        g.app
            .store
            .call(move |s| {
                let (_, total) = s.list_sessions(None, 0, 0)?;
                let mut per_agent = Vec::with_capacity(ids.len());
                for id in &ids {
                    per_agent.push(s.list_sessions(Some(id), HEALTH_RECENT_SESSIONS, 0)?);
                }
                Ok::<_, molt_store::StoreError>((total, per_agent))
            })
            .await
            .map_err(to_error_shape)?
    };
    let (total, per_agent) = per_agent;
    let path = g.db_path.display().to_string();
    let now = now_ms();
    let recent = |records: Vec<molt_store::SessionRecord>| {
        records
            .into_iter()
            .map(|r| {
                let updated = u64::try_from(r.updated_at_ms).ok();
                RecentSession {
                    key: r.key,
                    updated_at: updated,
                    age: updated.map(|u| now.saturating_sub(u)),
                }
            })
            .collect::<Vec<_>>()
    };
    let agents = ids
        .into_iter()
        .zip(per_agent)
        .map(|(id, (records, count))| HealthAgent {
            is_default: id == molt_config::MAIN_AGENT,
            agent_id: id,
            sessions: HealthSessions {
                path: path.clone(),
                count,
                recent: recent(records),
            },
        })
        .collect();
    Ok(HealthResult {
        probe: g.app.probe(),
        ok: true,
        ts: now,
        duration_ms: now.saturating_sub(started),
        openclaw: OpenClawHealth {
            default_agent_id: molt_config::MAIN_AGENT.into(),
            agents,
            sessions: HealthSessions {
                path,
                count: total,
                recent: Vec::new(),
            },
            ..OpenClawHealth::default()
        },
    })
}

async fn presence(app: Arc<App>, _: Caller, _: AnyParams) -> Result<Vec<Value>, ErrorShape> {
    Ok(app.presence(None, usize::MAX))
}

async fn identity(app: Arc<App>, _: Caller, _: AnyParams) -> Result<IdentityResult, ErrorShape> {
    Ok(IdentityResult {
        device_id: app.identity.id(),
        public_key: molt_protocol::device::b64url(&app.identity.public_key()),
    })
}

async fn status(g: Arc<GatewayFacts>, _: Caller, _: AnyParams) -> Result<StatusResult, ErrorShape> {
    status_of(&g).await
}

/// What `status` answers (the `gateway` tool's `status` too).
pub async fn status_of(g: &GatewayFacts) -> Result<StatusResult, ErrorShape> {
    let app = &g.app;
    let ids = g.agents.ids();
    let (runs, last, total_sessions, session_counts) = {
        let ids = ids.clone();
        app.store
            .call(move |s| {
                let (_, total) = s.list_sessions(None, 0, 0)?;
                let mut counts = Vec::with_capacity(ids.len());
                for id in &ids {
                    counts.push(s.list_sessions(Some(id), 0, 0)?.1);
                }
                Ok::<_, molt_store::StoreError>((
                    s.run_counts()?,
                    s.meta("last_handover")?,
                    total,
                    counts,
                ))
            })
            .await
            .map_err(to_error_shape)?
    };
    let (open, shed) = app.pending.counts();
    let limits = app.pending.limits();
    let mut openclaw = openclaw_status(g, &ids, runs, total_sessions, &session_counts);
    // One line per channel, as OpenClaw's summary lines; `channels.status` has the detail.
    for (channel, a) in g.channels.status().await {
        let mut line = format!(
            "{channel}: {}{}, seq {}, identifies {}, resumes {}, token {}",
            a.health_state,
            if a.connected && a.resumed {
                " (resumed)"
            } else {
                ""
            },
            a.seq,
            a.identifies,
            a.resumes,
            a.token_source
        );
        if let Some(e) = &a.last_error {
            line.push_str(&format!("; last error: {e}"));
        }
        openclaw.channel_summary.push(line.into());
    }
    Ok(StatusResult {
        probe: app.probe(),
        profile: g.profile.clone(),
        port: g.port,
        started_at_ms: app.started_at_ms,
        state_dir: app.state_dir.display().to_string(),
        config_path: app.config_path.display().to_string(),
        runs,
        active_runs: g.subsystems.in_flight_of("runs"),
        subsystems: g.subsystems.status(),
        connections: app.peers.lock().map(|p| p.len()).unwrap_or(0),
        unauthenticated: Unauthenticated {
            open,
            max: limits.total,
            max_per_address: limits.per_address,
            shed,
        },
        last_handover: last.and_then(|t| serde_json::from_str(&t).ok()),
        openclaw,
    })
}

/// The fields OpenClaw's `openclaw status` reads, from molt's counts and config.
fn openclaw_status(
    g: &GatewayFacts,
    ids: &[String],
    runs: RunCounts,
    total_sessions: u64,
    session_counts: &[u64],
) -> OpenClawStatus {
    let path = g.db_path.display().to_string();
    let setting = |id: &str| g.agents.agents.get(id);
    let name = |id: &str| {
        setting(id)
            .and_then(|a| a.name.clone())
            .or_else(|| g.agents.defaults.name.clone())
    };
    let default_model = setting(molt_config::MAIN_AGENT)
        .and_then(|a| a.model.clone())
        .or_else(|| g.agents.defaults.model.clone());
    OpenClawStatus {
        runtime_version: Some(g.app.build.version.clone()),
        heartbeat: HeartbeatSummary {
            default_agent_id: molt_config::MAIN_AGENT.into(),
            agents: Vec::new(),
        },
        tasks: task_summary(runs),
        task_audit: TaskAuditSummary {
            by_code: [
                "stale_queued",
                "stale_running",
                "lost",
                "delivery_failed",
                "missing_cleanup",
                "inconsistent_timestamps",
            ]
            .into_iter()
            .map(|c| (c.to_owned(), 0))
            .collect(),
            ..TaskAuditSummary::default()
        },
        sessions: SessionsSummary {
            count: total_sessions,
            defaults: SessionDefaults {
                model: default_model,
                context_tokens: None,
            },
            by_agent: ids
                .iter()
                .zip(session_counts)
                .map(|(id, count)| AgentSessions {
                    agent_id: id.clone(),
                    path: path.clone(),
                    count: *count,
                    recent: Vec::new(),
                })
                .collect(),
            ..SessionsSummary::default()
        },
        cli_projection: Some(CliProjection {
            agents: CliAgents {
                default_id: molt_config::MAIN_AGENT.into(),
                ownership: (ids.len() == 1).then(|| "sole".to_owned()),
                selection_required: false,
                rows: ids
                    .iter()
                    .map(|id| CliAgentRow {
                        id: id.clone(),
                        name: name(id),
                    })
                    .collect(),
            },
            update_channel: None,
            memory_plugin: MemoryPluginStatus {
                enabled: false,
                slot: None,
                reason: Some("molt has no memory plugin".into()),
            },
        }),
        ..OpenClawStatus::default()
    }
}

/// molt's runs as OpenClaw's task counts (every run's runtime is `molt`).
fn task_summary(r: RunCounts) -> TaskRegistrySummary {
    let active = r.queued + r.running;
    let terminal = r.succeeded + r.failed + r.cancelled;
    let by_status = [
        ("queued", r.queued),
        ("running", r.running),
        ("succeeded", r.succeeded),
        ("failed", r.failed),
        ("timed_out", 0),
        ("cancelled", r.cancelled),
        ("lost", 0),
    ];
    TaskRegistrySummary {
        total: active + terminal,
        active,
        terminal,
        failures: r.failed,
        by_status: by_status
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        by_runtime: [("molt".to_owned(), active + terminal)]
            .into_iter()
            .collect(),
    }
}

/// `gateway.restart.request`: a handover to what `current` points to. Answers once the new
/// process accepts (or the attempt failed and this process still serves).
async fn restart(
    handover: Arc<Handover>,
    _: Caller,
    p: RestartParams,
) -> Result<RestartResult, ErrorShape> {
    tracing::info!(
        reason = p.reason.as_deref().unwrap_or(""),
        "restart requested over the protocol"
    );
    let (outcome, coalesced) = handover.request().await;
    match outcome {
        Ok(report) => Ok(RestartResult {
            ok: true,
            status: if coalesced { "coalesced" } else { "completed" }.into(),
            handover: report,
        }),
        Err(e) => Err(ErrorShape::unavailable(
            format!("restart failed, the gateway still serves: {e}"),
            1000,
        )
        .with_details(json!({ "reason": "handover-failed" }))),
    }
}

async fn logs_tail(
    g: Arc<GatewayFacts>,
    _: Caller,
    p: LogsTailParams,
) -> Result<LogsTailResult, ErrorShape> {
    let path = g.log_file.clone();
    let limit = p.limit.unwrap_or(200).clamp(1, 5000) as usize;
    let max_bytes = p.max_bytes.unwrap_or(256 * 1024).clamp(1, 1_000_000);
    tokio::task::spawn_blocking(move || tail_file(&path, p.cursor, limit, max_bytes))
        .await
        .map_err(|e| ErrorShape::unavailable(e.to_string(), 1000))?
}

/// Reads log lines. Without a cursor: the last `limit` lines. With one: what follows it. The
/// returned cursor is the byte offset to pass next time.
fn tail_file(
    path: &Path,
    cursor: Option<u64>,
    limit: usize,
    max_bytes: u64,
) -> Result<LogsTailResult, ErrorShape> {
    use std::io::{Read, Seek, SeekFrom};
    let file_name = path.display().to_string();
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogsTailResult {
                file: file_name,
                cursor: 0,
                size: 0,
                lines: Vec::new(),
                truncated: false,
                reset: false,
                skipped_bytes: None,
            });
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
    Ok(LogsTailResult {
        file: file_name,
        cursor: read_from + end as u64,
        size,
        lines: lines.into_iter().map(str::to_owned).collect(),
        truncated: truncated || skipped > 0,
        reset,
        skipped_bytes: (skipped > 0).then_some(skipped),
    })
}

//! The gateway itself: health, status, presence, identity, logs and restart.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::method::AnyParams;
use crate::methods::tasks::RunCounts;

crate::declare_methods! {
    /// Liveness: the probe body plus `ok`.
    Health = "health", Read, reads, AnyParams => HealthResult;
    /// The probe body plus profile, paths, work counts, connections and the last handover.
    Status = "status", Read, reads, AnyParams => StatusResult;
    /// This gateway and its connected clients (schema `PresenceEntry`s).
    SystemPresence = "system-presence", Read, reads, AnyParams => Vec<Value>;
    /// The gateway's own device identity.
    IdentityGet = "gateway.identity.get", Read, reads, AnyParams => IdentityResult;
    /// Lines of the gateway's log file, by byte cursor.
    LogsTail = "logs.tail", Read, reads, LogsTailParams => LogsTailResult;
    /// A handover restart to what `current` points to; answers once the successor accepts.
    RestartRequest = "gateway.restart.request", Admin, reads, RestartParams => RestartResult;
}

/// Where a gateway process is in its life. `/readyz` is 200 only in `Serving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayState {
    Starting,
    Serving,
    /// A successor serves; this process drains and exits.
    HandingOver,
    Stopping,
}

impl GatewayState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Serving => "serving",
            Self::HandingOver => "handing-over",
            Self::Stopping => "stopping",
        }
    }
}

/// The body of `/healthz` and `/readyz`, and the start of `health` and `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub version: String,
    pub build_id: String,
    pub pid: u32,
    pub boot_epoch: i64,
    pub state: GatewayState,
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResult {
    #[serde(flatten)]
    pub probe: Probe,
    pub ok: bool,
    pub ts: u64,
    pub duration_ms: u64,
    /// What OpenClaw's `openclaw health` reads: agents and their session stores.
    #[serde(flatten)]
    pub openclaw: OpenClawHealth,
}

/// The part of `health` that OpenClaw's CLI reads (`openclaw health` lists the agents, their
/// heartbeat interval and their session store). molt has no channels and no heartbeats, so
/// those stay empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenClawHealth {
    /// The agent a request without an agent id goes to (`main`).
    pub default_agent_id: String,
    /// Every configured agent, the default first.
    pub agents: Vec<HealthAgent>,
    /// The store all agents share: every session in it.
    pub sessions: HealthSessions,
    /// Chat channels by id (none in molt), their order and labels.
    pub channels: serde_json::Map<String, Value>,
    pub channel_order: Vec<String>,
    pub channel_labels: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HealthAgent {
    pub agent_id: String,
    pub is_default: bool,
    /// The sessions of this agent (`path` is the shared store).
    pub sessions: HealthSessions,
}

/// A session store: where it is, how many sessions it holds, the latest few.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HealthSessions {
    pub path: String,
    pub count: u64,
    /// Most recently active first.
    pub recent: Vec<RecentSession>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RecentSession {
    pub key: String,
    /// Unix ms of the last activity.
    pub updated_at: Option<u64>,
    /// ms since then.
    pub age: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResult {
    #[serde(flatten)]
    pub probe: Probe,
    pub profile: String,
    pub port: u16,
    pub started_at_ms: u64,
    pub state_dir: String,
    pub config_path: String,
    pub runs: RunCounts,
    /// Runs executing a step in this process.
    pub active_runs: usize,
    /// Each subsystem's in-flight work, in start order.
    #[serde(default)]
    pub subsystems: Vec<SubsystemStatus>,
    /// Authenticated WebSocket clients.
    pub connections: usize,
    pub unauthenticated: Unauthenticated,
    pub last_handover: Option<HandoverRecord>,
    /// What OpenClaw's `openclaw status` reads (its status summary).
    #[serde(flatten)]
    pub openclaw: OpenClawStatus,
}

/// The part of `status` that OpenClaw's CLI reads: `openclaw status --json` fails without
/// `sessions.byAgent`, and spreads the rest into its report. Counts are molt's; what molt has
/// no notion of (heartbeats, channels, system events, secret owners, a task audit) is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenClawStatus {
    /// The gateway's version (the same as `version`).
    pub runtime_version: Option<String>,
    pub heartbeat: HeartbeatSummary,
    pub channel_summary: Vec<Value>,
    pub queued_system_events: Vec<Value>,
    pub degraded_secret_owners: Vec<Value>,
    /// Runs (the `tasks.*` view) by state.
    pub tasks: TaskRegistrySummary,
    pub task_audit: TaskAuditSummary,
    pub sessions: SessionsSummary,
    /// The gateway's agents as the CLI shows them (OpenClaw sends it on
    /// `includeCliProjection`; molt always does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cli_projection: Option<CliProjection>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HeartbeatSummary {
    pub default_agent_id: String,
    /// Agents with a heartbeat: none in molt.
    pub agents: Vec<Value>,
}

/// Task counts in OpenClaw's shape: molt's runs, whose runtime is `molt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskRegistrySummary {
    pub total: u64,
    /// Queued or running.
    pub active: u64,
    /// Succeeded, failed or cancelled.
    pub terminal: u64,
    pub failures: u64,
    /// By status: `queued`, `running`, `succeeded`, `failed`, `timed_out`, `cancelled`,
    /// `lost` (the last two and `timed_out` are 0 or absent in molt).
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// By runtime: `molt` for every run.
    pub by_runtime: std::collections::BTreeMap<String, u64>,
}

/// OpenClaw's task-registry audit; molt keeps no such audit, so all zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskAuditSummary {
    pub total: u64,
    pub warnings: u64,
    pub errors: u64,
    pub by_code: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionsSummary {
    /// Session store files; empty, as OpenClaw's gateway sends it to readers.
    pub paths: Vec<String>,
    /// Sessions of all agents.
    pub count: u64,
    pub defaults: SessionDefaults,
    /// Empty: `status` does not list sessions (`sessions.list` does).
    pub recent: Vec<Value>,
    /// One entry per configured agent, the default first.
    pub by_agent: Vec<AgentSessions>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionDefaults {
    /// The default agent's model (`provider/model`), if configured.
    pub model: Option<String>,
    pub context_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AgentSessions {
    pub agent_id: String,
    /// The store holding them (one file for all agents).
    pub path: String,
    pub count: u64,
    /// Empty, as `sessions.recent`.
    pub recent: Vec<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CliProjection {
    pub agents: CliAgents,
    /// OpenClaw's update channel; molt updates differently, so none.
    pub update_channel: Option<String>,
    pub memory_plugin: MemoryPluginStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CliAgents {
    pub default_id: String,
    /// `sole` when there is one agent; absent otherwise (requests without an agent id go
    /// to the default agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ownership: Option<String>,
    /// Whether a request must name its agent: never in molt.
    pub selection_required: bool,
    pub rows: Vec<CliAgentRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CliAgentRow {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MemoryPluginStatus {
    /// Always false: molt has no memory plugin.
    pub enabled: bool,
    pub slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One subsystem's share of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubsystemStatus {
    pub name: String,
    /// Work this process has started and not finished (a stop or handover waits for it, up
    /// to its budget, and then hands it back to the durable queue).
    pub in_flight: usize,
}

/// Connections that have not authenticated yet, and the caps on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unauthenticated {
    pub open: usize,
    pub max: usize,
    pub max_per_address: usize,
    /// Connections closed to make room since start.
    pub shed: u64,
}

/// The process that took over in a handover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Successor {
    pub pid: u32,
    pub version: String,
    pub build_id: String,
    pub boot_epoch: i64,
}

/// A completed handover, as its requesters get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoverReport {
    pub started_at_ms: u64,
    pub from_pid: u32,
    pub from_version: String,
    pub from_build_id: String,
    pub to: Successor,
    /// From the request until the new process accepts.
    pub duration_ms: u64,
}

/// The last handover attempt, as the store keeps it (`status.lastHandover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoverRecord {
    pub started_at_ms: u64,
    pub from_pid: u32,
    pub from_version: String,
    pub duration_ms: u64,
    pub result: HandoverResult,
    pub to: Option<Successor>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoverResult {
    Ok,
    Failed,
}

impl HandoverRecord {
    /// One line for people: `ok at T: pid A (v1) -> pid B (v2) in N ms`, with the error of a
    /// failed attempt.
    pub fn describe(&self) -> String {
        let target = match &self.to {
            Some(to) => format!("pid {} ({})", to.pid, to.version),
            None => "no successor".to_owned(),
        };
        let result = match self.result {
            HandoverResult::Ok => "ok",
            HandoverResult::Failed => "failed",
        };
        format!(
            "{result} at {}: pid {} ({}) -> {target} in {} ms{}",
            self.started_at_ms,
            self.from_pid,
            self.from_version,
            self.duration_ms,
            self.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )
    }
}

impl HandoverReport {
    /// `pid A (v1) -> pid B (v2) in N ms`.
    pub fn describe(&self) -> String {
        format!(
            "pid {} ({}) -> pid {} ({}) in {} ms",
            self.from_pid, self.from_version, self.to.pid, self.to.version, self.duration_ms
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityResult {
    pub device_id: String,
    /// base64url, no padding.
    pub public_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogsTailParams {
    /// A byte offset from an earlier answer: return what follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsTailResult {
    pub file: String,
    /// The byte offset to pass next time.
    pub cursor: u64,
    pub size: u64,
    pub lines: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The file shrank below the cursor (rotated or truncated): reading restarted at 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestartParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartResult {
    pub ok: bool,
    /// `completed`, or `coalesced` when the request joined a handover already under way.
    pub status: String,
    pub handover: HandoverReport,
}

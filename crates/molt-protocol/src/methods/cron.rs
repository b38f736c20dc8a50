//! Cron: scheduled jobs that run a command, note a system event in an agent's main session,
//! or run an agent turn in a session of their own. The job, schedule and payload shapes are
//! OpenClaw's `CronJob`; schedules and payloads travel as JSON and are checked by the gateway
//! (`molt-cron` for schedules).
//!
//! Event: `cron` (`{jobId, action, job?, nextRunAtMs?, …}`), with `action` one of `added`,
//! `updated`, `removed`, `started`, `finished`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

crate::declare_methods! {
    /// Jobs, soonest first.
    CronList = "cron.list", Read, reads, CronListParams => CronListResult;
    /// Whether the scheduler runs, how many jobs it holds, and when it next wakes.
    CronStatus = "cron.status", Read, reads, CronStatusParams => CronStatusResult;
    /// One job.
    CronGet = "cron.get", Read, reads, CronIdParams => CronJob;
    /// Creates a job.
    CronAdd = "cron.add", Admin, mutates, CronAddParams => CronJob;
    /// Changes a job (`patch` holds the fields to change).
    CronUpdate = "cron.update", Admin, mutates, CronUpdateParams => CronJob;
    /// Deletes a job; its run log stays.
    CronRemove = "cron.remove", Admin, mutates, CronIdParams => CronRemoveResult;
    /// Fires a job now (`force` also fires a disabled one).
    CronRun = "cron.run", Admin, mutates, CronRunParams => CronRunResult;
    /// The run log, newest first.
    CronRuns = "cron.runs", Read, reads, CronRunsParams => CronRunsResult;
}

/// The `cron` event.
pub const EVENT: &str = "cron";

/// A job as clients see it (`CronJob`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub schedule: Value,
    pub session_target: String,
    pub wake_mode: String,
    pub payload: Value,
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub delete_after_run: bool,
    pub state: CronJobState,
    /// Mirrors of `state`, as OpenClaw's list shows them.
    pub next_run_at_ms: Option<i64>,
    pub last_run_at_ms: Option<i64>,
    pub last_run_status: Option<String>,
}

/// `CronJob.state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJobState {
    pub next_run_at_ms: Option<i64>,
    pub running_at_ms: Option<i64>,
    pub last_run_at_ms: Option<i64>,
    /// `ok`, `error` or `skipped`.
    pub last_run_status: Option<String>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub consecutive_errors: u32,
}

/// `CronListParams`: the fields molt acts on; others are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronListResult {
    pub jobs: Vec<CronJob>,
    pub total: u64,
    pub offset: u32,
    pub limit: u32,
    pub has_more: bool,
    pub next_offset: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronStatusParams {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronStatusResult {
    pub enabled: bool,
    pub triggers_enabled: bool,
    pub storage: String,
    pub sqlite_path: String,
    pub jobs: u64,
    pub next_wake_at_ms: Option<i64>,
    /// The zone `cron` schedules without `tz` use.
    pub host_time_zone: String,
    pub skip_missed: bool,
}

/// `{id}` or `{jobId}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronIdParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

impl CronIdParams {
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref().or(self.job_id.as_deref())
    }
}

/// `CronAddParams`: the fields molt acts on; others are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronAddParams {
    pub name: String,
    pub schedule: Value,
    /// `main`, `isolated` or `session:<key>`.
    pub session_target: String,
    /// `now` or `next-heartbeat` (molt has no heartbeat: both fire on time).
    pub wake_mode: String,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_run: Option<bool>,
}

/// `CronUpdateParams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronUpdateParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub patch: CronPatch,
}

/// The fields `cron.update` changes; absent ones stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_run: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronRemoveResult {
    pub ok: bool,
    pub removed: bool,
}

/// `CronRunParams`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronRunParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `force` (default) fires even a disabled job; `if-enabled` and `due` only an enabled one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_process_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronRunResult {
    pub ok: bool,
    pub enqueued: bool,
    /// The fire's run (an exec run or a turn), when it has one.
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `CronRunsParams`: the fields molt acts on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronRunsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

/// `CronRunLogEntry`: one fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronRunLogEntry {
    pub ts: i64,
    pub job_id: String,
    pub job_name: Option<String>,
    /// `started` while it runs, then `finished`.
    pub action: String,
    /// `ok`, `error` or `skipped` once finished.
    pub status: Option<String>,
    pub error: Option<String>,
    pub summary: Option<String>,
    pub run_id: Option<String>,
    pub session_key: Option<String>,
    /// The scheduled time this fire is for.
    pub run_at_ms: i64,
    pub duration_ms: Option<i64>,
    /// `scheduled`, `catch-up` or `manual`.
    pub trigger: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronRunsResult {
    pub entries: Vec<CronRunLogEntry>,
    pub total: u64,
    pub offset: u32,
    pub limit: u32,
    pub has_more: bool,
    pub next_offset: Option<u32>,
}

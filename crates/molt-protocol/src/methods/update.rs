//! Updates: start one, read the last one's report, and the updater's "it ended" notice.

use serde::{Deserialize, Serialize};
use serde_json::Value;

crate::declare_methods! {
    /// Records an update job and starts its updater outside the gateway.
    UpdateRun = "update.run", Admin, reads, UpdateRunParams => UpdateRunResult;
    /// The current or last job's report, as `sentinel`.
    UpdateStatus = "update.status", Admin, reads, UpdateStatusParams => UpdateStatusResult;
    /// The updater says a job ended; operators get `molt.update.result` once.
    UpdateNotify = "molt.update.notify", Admin, reads, NotifyParams => NotifyResult;
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateRunParams {
    /// Accepted for the schema's sake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Accepted for the schema's sake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Delivered to operators with the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A git target; refused: molt installs signed releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRunResult {
    pub ok: bool,
    /// `started`.
    pub status: String,
    pub job_id: String,
    pub launcher: String,
    /// The transient unit the updater runs in, when systemd launched it.
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateStatusParams {
    /// Accepted for the schema's sake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_checkout: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatusResult {
    pub sentinel: Option<UpdateReport>,
    /// Always null: molt does not poll for releases.
    pub update_available: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotifyParams {
    pub job_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyResult {
    pub ok: bool,
    pub delivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRef {
    pub version: String,
    pub build_id: String,
}

/// One journal step of an update job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLine {
    pub name: String,
    /// `ok`, `failed`, `skipped`, or `started` (in flight, or interrupted).
    pub status: String,
    pub ms: Option<i64>,
    pub detail: Option<String>,
}

/// An update job as people read it: `molt update status` and `update.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateReport {
    /// `OK`, `ROLLED BACK`, `FAILED`, or `RUNNING`/`PENDING` while the job is not over.
    pub result: String,
    pub job_id: String,
    pub kind: String,
    pub state: String,
    /// A `--dry-run`: it stopped after the preflight, so `after` is `before`.
    pub dry_run: bool,
    pub requester: String,
    pub launcher: Option<String>,
    pub before: Option<VersionRef>,
    /// What runs now: the new version after OK, the old one otherwise.
    pub after: Option<VersionRef>,
    /// The version the job tried to reach.
    pub target: Option<VersionRef>,
    pub reason: Option<String>,
    pub steps: Vec<StepLine>,
    pub total_ms: Option<i64>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub continuation_message: Option<String>,
    pub continuation_delivered: bool,
}

impl UpdateReport {
    /// 0 for `OK`, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        if self.result == "OK" { 0 } else { 1 }
    }
}

/// The `molt.update.result` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateResultEvent {
    pub job_id: String,
    pub result: String,
    pub before: Option<VersionRef>,
    pub after: Option<VersionRef>,
    pub reason: Option<String>,
    pub continuation_message: Option<String>,
}

//! Durable runs: the schema's `tasks.*` view of them, molt's own `molt.run.*`, and the run
//! records both show. The store keeps these records; they are defined here so the gateway and
//! every client read one shape.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

crate::declare_methods! {
    /// Runs as the schema's `TaskSummary`s, newest first, by page.
    TasksList = "tasks.list", Read, reads, TasksListParams => TasksListResult;
    TasksGet = "tasks.get", Read, reads, TaskIdParams => TasksGetResult;
    /// Cancels a queued run, or stops the running step of a running one.
    TasksCancel = "tasks.cancel", Write, mutates, TasksCancelParams => TasksCancelResult;
    /// Creates an exec run. It runs a command on the host: that is admin, not write.
    RunExec = "molt.run.exec", Admin, mutates, RunExecParams => RunExecResult;
    /// A run with its steps, as stored.
    RunGet = "molt.run.get", Read, reads, RunIdParams => RunRecord;
}

/// A run's id, e.g. `run_5f0c2a9e41d3b7aa`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Declares a closed set of words (snake_case on the wire and in storage) with `as_str` and
/// `parse`. Used here for states on the wire, and by the store for its own states.
#[macro_export]
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            /// The variant spelled `s`, if any.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

crate::word_enum!(
    /// Where a run is in its life.
    RunState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

crate::word_enum!(
    /// Where a step is in its life. An interrupted step goes back to `pending`.
    StepState {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

crate::word_enum!(
    /// A run's status in the schema's terms (`TaskSummary.status`).
    TaskStatus {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
    }
);

/// An `exec` step: one command, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What a step does: a command (exec runs), or one model call or one tool call of an agent
/// turn. A turn's steps are appended as the model asks for tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StepSpec {
    Exec(ExecSpec),
    /// One call of the turn's model, with the transcript as it stands when the step starts.
    Model {},
    /// One tool call the model asked for; `call_id` is the provider's id for it.
    Tool {
        call_id: String,
        name: String,
        arguments: serde_json::Value,
    },
}

/// Who may execute a run's steps now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub epoch: i64,
    pub pid: u32,
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub index: u32,
    pub spec: StepSpec,
    pub state: StepState,
    /// How many times the step was started. Above 1 means an earlier attempt was interrupted.
    pub attempts: u32,
    /// Stable across attempts, so a re-run can recognise work it already did.
    pub effect_key: String,
    pub exit_code: Option<i32>,
    pub output_tail: Option<String>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
}

/// A run with its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: RunId,
    pub title: Option<String>,
    pub state: RunState,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub next_step: u32,
    pub lease: Option<Lease>,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub steps: Vec<StepRecord>,
}

impl RunRecord {
    /// The protocol's status of this run: a failure by timeout is `timed_out`.
    pub fn task_status(&self) -> TaskStatus {
        match self.state {
            RunState::Queued => TaskStatus::Queued,
            RunState::Running => TaskStatus::Running,
            RunState::Succeeded => TaskStatus::Completed,
            RunState::Cancelled => TaskStatus::Cancelled,
            RunState::Failed
                if self
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("timed out")) =>
            {
                TaskStatus::TimedOut
            }
            RunState::Failed => TaskStatus::Failed,
        }
    }

    /// The run as the schema's `TaskSummary`.
    pub fn task_summary(&self) -> TaskSummary {
        let current = self
            .steps
            .get(self.next_step as usize)
            .or(self.steps.last());
        TaskSummary {
            id: self.id.0.clone(),
            kind: "exec".into(),
            runtime: "molt".into(),
            status: self.task_status(),
            run_id: self.id.0.clone(),
            created_at: self.created_at_ms,
            updated_at: self.updated_at_ms,
            title: self.title.clone(),
            started_at: self.steps.iter().filter_map(|s| s.started_at_ms).min(),
            ended_at: self.finished_at_ms,
            error: self.error.clone(),
            progress_summary: current.map(|step| {
                format!(
                    "step {}/{}, attempt {}",
                    step.index + 1,
                    self.steps.len(),
                    step.attempts
                )
            }),
            terminal_summary: current
                .and_then(|s| s.exit_code)
                .map(|code| format!("exit code {code}")),
            result: current.and_then(|s| s.output_tail.clone()),
        }
    }
}

/// Runs per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// A run as the schema's `TaskSummary` (no extra fields allowed there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    pub id: String,
    pub kind: String,
    pub runtime: String,
    pub status: TaskStatus,
    pub run_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// `tasks.list`'s `status`: one status or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "status must be a string or a list of strings")]
pub enum StatusFilter {
    One(String),
    Any(Vec<String>),
}

impl StatusFilter {
    pub fn matches(&self, status: TaskStatus) -> bool {
        match self {
            Self::One(s) => s == status.as_str(),
            Self::Any(list) => list.iter().any(|s| s == status.as_str()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TasksListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusFilter>,
    /// Accepted for the schema's sake; runs are not per agent yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Accepted for the schema's sake; runs are not per session yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TasksListResult {
    pub tasks: Vec<TaskSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskIdParams {
    pub task_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TasksGetResult {
    pub task: TaskSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TasksCancelParams {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TasksCancelResult {
    pub found: bool,
    pub cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSummary>,
    /// Why nothing was cancelled: the task had already ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunExecParams {
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunExecResult {
    pub run_id: RunId,
    pub status: TaskStatus,
    pub accepted_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunIdParams {
    pub run_id: String,
}

//! Exec approvals: tool calls that wait for an operator (`tools.exec.ask`), and the
//! operator's decision on each. A waiting call is durable: it survives restarts, and the turn
//! goes on once it is decided.
//!
//! Events: `exec.approval.requested` (an [`Approval`]) when a call starts waiting, and
//! `exec.approval.resolved` (an [`Approval`]) when it is decided or its turn ends.

use serde::{Deserialize, Serialize};

use crate::method::AnyParams;

crate::declare_methods! {
    /// Pending approvals, oldest first.
    ExecApprovalList = "exec.approval.list", Approvals, reads, AnyParams => ApprovalListResult;
    /// One approval, pending or decided.
    ExecApprovalGet = "exec.approval.get", Approvals, reads, ApprovalIdParams => Approval;
    /// Decides a pending approval: `allow-once` or `deny`.
    ExecApprovalResolve = "exec.approval.resolve", Approvals, mutates, ApprovalResolveParams => Approval;
}

/// The event sent when a tool call starts waiting for approval.
pub const REQUESTED_EVENT: &str = "exec.approval.requested";
/// The event sent when an approval is decided, or cancelled with its turn.
pub const RESOLVED_EVENT: &str = "exec.approval.resolved";

/// One approval as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: String,
    /// `pending`, `approved`, `denied` or `cancelled`.
    pub status: String,
    pub kind: String,
    pub command_text: String,
    pub cwd: Option<String>,
    pub agent_id: String,
    pub session_key: String,
    pub run_id: String,
    /// Why it asks: `ask = "always"`, or the program `tools.exec.allowlist` lacks.
    pub reason: String,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub decided_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalListResult {
    pub approvals: Vec<Approval>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalIdParams {
    pub id: String,
}

/// `ExecApprovalResolveParams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApprovalResolveParams {
    pub id: String,
    /// `allow-once` or `deny`. `allow-always` is refused: molt keeps no standing grants (the
    /// allowlist in the config is the standing answer).
    pub decision: String,
    /// Accepted for the schema's sake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<serde_json::Value>,
    /// Accepted for the schema's sake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_expires_in_days: Option<u32>,
}

//! `exec.approval.*`: the tool calls waiting for an operator, and the operator's decision.
//! A decision wakes the waiting call here at once; a call waiting in another process (a
//! handover's overlap) sees it at its next poll.

use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::approvals::{
    Approval, ApprovalIdParams, ApprovalListResult, ApprovalResolveParams, ExecApprovalGet,
    ExecApprovalList, ExecApprovalResolve, RESOLVED_EVENT,
};

use crate::agent::Agent;
use crate::agent::tools::{approval_of, approval_view};
use crate::app::Audience;
use crate::router::{Caller, Router};
use crate::store_handle::to_error_shape;

/// Pending approvals `exec.approval.list` returns at most.
const LIST_MAX: u32 = 500;

pub fn register(r: &mut Router, agent: &Arc<Agent>) {
    r.with(agent)
        .on::<ExecApprovalList>(list)
        .on::<ExecApprovalGet>(get)
        .on::<ExecApprovalResolve>(resolve);
}

async fn list(
    agent: Arc<Agent>,
    _: Caller,
    _: AnyParams,
) -> Result<ApprovalListResult, ErrorShape> {
    let all = agent
        .store
        .call(|s| s.list_approvals(true, LIST_MAX))
        .await
        .map_err(to_error_shape)?;
    Ok(ApprovalListResult {
        approvals: all.iter().map(approval_of).collect(),
    })
}

async fn get(agent: Arc<Agent>, _: Caller, p: ApprovalIdParams) -> Result<Approval, ErrorShape> {
    let id = p.id.clone();
    let a = agent
        .store
        .call(move |s| s.approval(&id))
        .await
        .map_err(to_error_shape)?
        .ok_or_else(|| ErrorShape::invalid(format!("no approval {}", p.id)))?;
    Ok(approval_of(&a))
}

async fn resolve(
    agent: Arc<Agent>,
    caller: Caller,
    p: ApprovalResolveParams,
) -> Result<Approval, ErrorShape> {
    let approve = match p.decision.as_str() {
        "allow-once" | "approve" | "allow" => true,
        "deny" | "reject" => false,
        "allow-always" => {
            return Err(ErrorShape::invalid(
                "allow-always is not supported: molt keeps no standing grants. Approve this \
                 once, and add the program to tools.exec.allowlist to allow it from now on",
            ));
        }
        other => {
            return Err(ErrorShape::invalid(format!(
                "decision {other:?}: use allow-once or deny"
            )));
        }
    };
    let (id, by) = (p.id.clone(), format!("operator ({})", caller.conn_id));
    let a = agent
        .store
        .call(move |s| s.decide_approval(&id, approve, &by))
        .await
        .map_err(to_error_shape)?;
    tracing::info!(approval = %a.id, state = a.state.as_str(), command = %a.command, "approval decided");
    agent.approvals_changed.notify_waiters();
    agent
        .app
        .broadcast_to(Audience::Approvers, RESOLVED_EVENT, approval_view(&a));
    Ok(approval_of(&a))
}

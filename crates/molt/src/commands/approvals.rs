//! `molt approvals list|approve|deny`: the agent's commands that wait for an operator
//! (`tools.exec.ask`). A waiting command survives restarts; once approved it runs once.

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::approvals::{
    Approval, ApprovalResolveParams, ExecApprovalList, ExecApprovalResolve,
};

use crate::output::{Failure, print_json};

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// The commands waiting for a decision, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Let a waiting command run (once).
    Approve {
        /// The approval id (`apr-…`), from `molt approvals list`.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Refuse a waiting command; the agent is told it was denied.
    Deny {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn exec(ctx: &Context, access: &Access, cmd: &ApprovalsCommand) -> Result<(), Failure> {
    match cmd {
        ApprovalsCommand::List { json } => {
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<ExecApprovalList>(&AnyParams {}).await?)
            })?;
            if *json {
                print_json(&r);
                return Ok(());
            }
            if r.approvals.is_empty() {
                println!("no commands wait for approval");
            }
            for a in &r.approvals {
                println!("{}", line(a));
            }
        }
        ApprovalsCommand::Approve { id, json } => decide(ctx, access, id, "allow-once", *json)?,
        ApprovalsCommand::Deny { id, json } => decide(ctx, access, id, "deny", *json)?,
    }
    Ok(())
}

fn decide(
    ctx: &Context,
    access: &Access,
    id: &str,
    decision: &str,
    json: bool,
) -> Result<(), Failure> {
    let p = ApprovalResolveParams {
        id: id.to_owned(),
        decision: decision.to_owned(),
        reviewer: None,
        grant_expires_in_days: None,
    };
    let a = with_client(ctx, access, async |c| {
        Ok::<_, Failure>(c.request::<ExecApprovalResolve>(&p).await?)
    })?;
    if json {
        print_json(&a);
    } else {
        println!("{}", line(&a));
    }
    Ok(())
}

/// `apr-1a2b3c4d  pending  main  agent:main:main  rm -rf build  (ask = always)`.
fn line(a: &Approval) -> String {
    let command: String = a
        .command_text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(80)
        .collect();
    format!(
        "{}  {:<9} {}  {}  {}  ({})",
        a.id, a.status, a.agent_id, a.session_key, command, a.reason
    )
}

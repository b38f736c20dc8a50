//! `molt tasks list|get|cancel`.

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::methods::tasks::{
    RunGet, RunIdParams, RunRecord, StatusFilter, StepSpec, TasksCancel, TasksCancelParams,
    TasksList, TasksListParams,
};

use crate::output::{Failure, print_json};

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only runs with this status (queued, running, completed, failed, cancelled, timed_out).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one run with its steps and attempts.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn exec(ctx: &Context, access: &Access, cmd: &TasksCommand) -> Result<(), Failure> {
    match cmd {
        TasksCommand::List {
            json: as_json,
            status,
            limit,
        } => {
            let p = TasksListParams {
                status: status.clone().map(StatusFilter::One),
                limit: Some(*limit),
                ..Default::default()
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<TasksList>(&p).await?)
            })?;
            if *as_json {
                print_json(&r);
                return Ok(());
            }
            if r.tasks.is_empty() {
                println!("no tasks");
            }
            for t in &r.tasks {
                println!(
                    "{}  {:<9}  {:<24}  {}",
                    t.id,
                    t.status.as_str(),
                    t.progress_summary.as_deref().unwrap_or(""),
                    t.title.as_deref().unwrap_or("")
                );
            }
        }
        TasksCommand::Get { id, json: as_json } => {
            let r = with_client(ctx, access, async |c| {
                let p = RunIdParams { run_id: id.clone() };
                Ok::<_, Failure>(c.request::<RunGet>(&p).await?)
            })?;
            if *as_json {
                print_json(&r);
            } else {
                print_run(&r);
            }
        }
        TasksCommand::Cancel { id, json: as_json } => {
            let r = with_client(ctx, access, async |c| {
                let p = TasksCancelParams {
                    task_id: id.clone(),
                    reason: None,
                };
                Ok::<_, Failure>(c.request::<TasksCancel>(&p).await?)
            })?;
            if *as_json {
                print_json(&r);
            } else if !r.found {
                return Err(Failure::failed(format!("no task with id {id}")));
            } else if r.cancelled {
                println!("cancelled {id}");
            } else {
                println!("{id}: {}", r.reason.as_deref().unwrap_or("not cancelled"));
            }
        }
    }
    Ok(())
}

/// A run with its steps, each with its command line, attempts and the last lines it wrote.
fn print_run(r: &RunRecord) {
    println!(
        "{}  {}  {}",
        r.id,
        r.state.as_str(),
        r.title.as_deref().unwrap_or("")
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    for s in &r.steps {
        let cmdline = match &s.spec {
            StepSpec::Exec(spec) => std::iter::once(spec.command.as_str())
                .chain(spec.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            StepSpec::Model {} => "model call".to_owned(),
            StepSpec::Tool { name, .. } => format!("tool {name}"),
        };
        let exit = s
            .exit_code
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default();
        println!(
            "  step {}: {} — {}, attempt {}{exit}",
            s.index + 1,
            cmdline,
            s.state.as_str(),
            s.attempts
        );
        if let Some(e) = &s.error {
            println!("    note: {e}");
        }
        if let Some(tail) = s.output_tail.as_deref().filter(|t| !t.is_empty()) {
            let lines: Vec<&str> = tail.lines().collect();
            for line in &lines[lines.len().saturating_sub(5)..] {
                println!("    | {line}");
            }
        }
    }
}

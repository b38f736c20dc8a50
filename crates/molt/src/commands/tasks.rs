//! `molt tasks list|get|cancel`.

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use serde_json::{Value, json};

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
            let mut p = json!({ "limit": limit });
            if let Some(s) = status {
                p["status"] = json!(s);
            }
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.call("tasks.list", Some(p)).await?)
            })?;
            if *as_json {
                print_json(&r);
                return Ok(());
            }
            let tasks = r["tasks"].as_array().cloned().unwrap_or_default();
            if tasks.is_empty() {
                println!("no tasks");
            }
            for t in tasks {
                println!(
                    "{}  {:<9}  {:<24}  {}",
                    t["id"].as_str().unwrap_or("?"),
                    t["status"].as_str().unwrap_or("?"),
                    t["progressSummary"].as_str().unwrap_or(""),
                    t["title"].as_str().unwrap_or("")
                );
            }
        }
        TasksCommand::Get { id, json: as_json } => {
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.call("molt.run.get", Some(json!({ "runId": id }))).await?)
            })?;
            if *as_json {
                print_json(&r);
            } else {
                print_run(&r);
            }
        }
        TasksCommand::Cancel { id, json: as_json } => {
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(
                    c.call("tasks.cancel", Some(json!({ "taskId": id })))
                        .await?,
                )
            })?;
            if *as_json {
                print_json(&r);
            } else if r["found"] != json!(true) {
                return Err(Failure::failed(format!("no task with id {id}")));
            } else if r["cancelled"] == json!(true) {
                println!("cancelled {id}");
            } else {
                println!("{id}: {}", r["reason"].as_str().unwrap_or("not cancelled"));
            }
        }
    }
    Ok(())
}

/// A run with its steps, each with its command line, attempts and the last lines it wrote.
fn print_run(r: &Value) {
    println!(
        "{}  {}  {}",
        r["id"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["title"].as_str().unwrap_or("")
    );
    if let Some(e) = r["error"].as_str() {
        println!("  error: {e}");
    }
    for s in r["steps"].as_array().cloned().unwrap_or_default() {
        let spec = &s["spec"];
        let cmdline = std::iter::once(spec["command"].as_str().unwrap_or("?").to_owned())
            .chain(
                spec["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned)),
            )
            .collect::<Vec<_>>()
            .join(" ");
        let exit = s["exitCode"]
            .as_i64()
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default();
        println!(
            "  step {}: {} — {}, attempt {}{exit}",
            s["index"].as_u64().unwrap_or(0) + 1,
            cmdline,
            s["state"].as_str().unwrap_or("?"),
            s["attempts"]
        );
        if let Some(e) = s["error"].as_str() {
            println!("    note: {e}");
        }
        if let Some(tail) = s["outputTail"].as_str().filter(|t| !t.is_empty()) {
            for line in tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("    | {line}");
            }
        }
    }
}

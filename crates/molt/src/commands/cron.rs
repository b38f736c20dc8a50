//! `molt cron add|list|edit|rm|run|runs`: scheduled jobs.

use clap::{Args, Subcommand};
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::methods::cron::{
    CronAdd, CronAddParams, CronIdParams, CronJob, CronList, CronListParams, CronPatch, CronRemove,
    CronRun, CronRunParams, CronRuns, CronRunsParams, CronUpdate, CronUpdateParams,
};
use serde_json::{Value, json};

use crate::output::{Failure, print_json};

#[derive(Subcommand, Debug)]
pub enum CronCommand {
    /// Add a job: a schedule, and a command (after `--`), an agent turn or a system event.
    ///
    /// molt cron add --name backup --cron "0 3 * * *" --tz Europe/Berlin -- restic backup
    Add(AddArgs),
    /// List the jobs, soonest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a job: its schedule, name, or whether it is enabled.
    Edit(EditArgs),
    /// Delete a job (its run log stays).
    Rm {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Fire a job now, outside its schedule (even a disabled one).
    Run {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The run log, newest first (of one job, or all).
    Runs {
        id: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

/// One schedule: `--cron EXPR [--tz ZONE]`, `--every 30m` or `--at 2026-12-24T09:00`.
#[derive(Args, Debug, Default)]
pub struct ScheduleArgs {
    /// A cron expression (5 fields, or 6 with seconds first).
    #[arg(long, group = "schedule")]
    cron: Option<String>,
    /// The expression's (or `--at`'s) IANA time zone; default: the gateway host's.
    #[arg(long)]
    tz: Option<String>,
    /// An interval: 30s, 5m, 1h, 1d, 2h30m.
    #[arg(long, group = "schedule")]
    every: Option<String>,
    /// One time: 2026-12-24T09:00 (in --tz, default the host's zone) or RFC 3339.
    #[arg(long, group = "schedule")]
    at: Option<String>,
}

impl ScheduleArgs {
    fn to_json(&self) -> Result<Option<Value>, Failure> {
        Ok(match (&self.cron, &self.every, &self.at) {
            (Some(expr), None, None) => {
                let mut s = json!({"kind": "cron", "expr": expr});
                if let Some(tz) = &self.tz {
                    s["tz"] = json!(tz);
                }
                Some(s)
            }
            (None, Some(e), None) => {
                let ms = molt_cron::parse_every(e).map_err(|e| Failure::config(e.to_string()))?;
                Some(json!({"kind": "every", "everyMs": ms}))
            }
            (None, None, Some(at)) => {
                let tz = self.tz.clone().unwrap_or_else(molt_cron::host_timezone);
                let ms =
                    molt_cron::parse_at(at, &tz).map_err(|e| Failure::config(e.to_string()))?;
                Some(json!({"kind": "at", "at": molt_cron::format_at(ms)}))
            }
            (None, None, None) => None,
            _ => return Err(Failure::config("give one of --cron, --every, --at")),
        })
    }
}

#[derive(Args, Debug)]
pub struct AddArgs {
    #[arg(long)]
    name: String,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// Run a turn of the agent with this message, in a session of the job's own.
    #[arg(long)]
    agent_turn: Option<String>,
    /// Note this text in the agent's main session.
    #[arg(long)]
    system_event: Option<String>,
    /// The agent (default: main).
    #[arg(long)]
    agent: Option<String>,
    /// Where a turn or note goes: main, isolated, or session:<key>.
    #[arg(long)]
    session: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    /// Keep a one-shot (`--at`) job after it ran (default: it removes itself).
    #[arg(long)]
    keep: bool,
    #[arg(long)]
    json: bool,
    /// The command to run (argv, no shell), after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    id: String,
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    #[arg(long)]
    disable: bool,
    #[arg(long)]
    json: bool,
}

pub fn exec(ctx: &Context, access: &Access, cmd: &CronCommand) -> Result<(), Failure> {
    match cmd {
        CronCommand::Add(a) => {
            let schedule = a
                .schedule
                .to_json()?
                .ok_or_else(|| Failure::config("give a schedule: --cron, --every or --at"))?;
            let (payload, target) = match (&a.agent_turn, &a.system_event, a.command.is_empty()) {
                (Some(m), None, true) => (json!({"kind": "agentTurn", "message": m}), "isolated"),
                (None, Some(t), true) => (json!({"kind": "systemEvent", "text": t}), "main"),
                (None, None, false) => (json!({"kind": "command", "argv": a.command}), "isolated"),
                _ => {
                    return Err(Failure::config(
                        "give one of: a command after --, --agent-turn MESSAGE, --system-event TEXT",
                    ));
                }
            };
            let one_shot = a.schedule.at.is_some();
            let p = CronAddParams {
                name: a.name.clone(),
                schedule,
                session_target: a.session.clone().unwrap_or_else(|| target.into()),
                wake_mode: "now".into(),
                payload,
                agent_id: a.agent.clone(),
                description: None,
                enabled: a.disabled.then_some(false),
                delete_after_run: (one_shot && a.keep).then_some(false),
            };
            let job = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<CronAdd>(&p).await?)
            })?;
            show_job(&job, a.json);
        }
        CronCommand::List { json } => {
            let p = CronListParams {
                include_disabled: Some(true),
                limit: Some(200),
                ..Default::default()
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<CronList>(&p).await?)
            })?;
            if *json {
                print_json(&r);
                return Ok(());
            }
            if r.jobs.is_empty() {
                println!("no cron jobs");
            }
            for j in &r.jobs {
                println!("{}", line(j));
            }
        }
        CronCommand::Edit(e) => {
            let patch = CronPatch {
                name: e.name.clone(),
                schedule: e.schedule.to_json()?,
                enabled: if e.enable {
                    Some(true)
                } else if e.disable {
                    Some(false)
                } else {
                    None
                },
                ..Default::default()
            };
            let p = CronUpdateParams {
                id: Some(e.id.clone()),
                job_id: None,
                patch,
            };
            let job = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<CronUpdate>(&p).await?)
            })?;
            show_job(&job, e.json);
        }
        CronCommand::Rm { id, json } => {
            let p = CronIdParams {
                id: Some(id.clone()),
                job_id: None,
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<CronRemove>(&p).await?)
            })?;
            if *json {
                print_json(&r);
            } else {
                println!("removed {id}");
            }
        }
        CronCommand::Run { id, json } => {
            let p = CronRunParams {
                id: Some(id.clone()),
                ..Default::default()
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<CronRun>(&p).await?)
            })?;
            if *json {
                print_json(&r);
            } else {
                match (&r.run_id, &r.reason) {
                    (_, Some(why)) => println!("not run: {why}"),
                    (Some(run), None) => println!("fired {id}: run {run}"),
                    (None, None) => println!("fired {id}"),
                }
            }
        }
        CronCommand::Runs { id, limit, json } => {
            let p = CronRunsParams {
                id: id.clone(),
                limit: Some(*limit),
                ..Default::default()
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<CronRuns>(&p).await?)
            })?;
            if *json {
                print_json(&r);
                return Ok(());
            }
            if r.entries.is_empty() {
                println!("no runs");
            }
            for e in &r.entries {
                println!(
                    "{}  {}  {:<8} {:<9} {}{}",
                    molt_cron::format_at(e.run_at_ms),
                    e.job_name.as_deref().unwrap_or(&e.job_id),
                    e.status.as_deref().unwrap_or("running"),
                    e.trigger,
                    e.run_id.as_deref().unwrap_or("-"),
                    e.error
                        .as_deref()
                        .map(|x| format!("  {x}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn show_job(job: &CronJob, json: bool) {
    if json {
        print_json(job);
    } else {
        println!("{}", line(job));
    }
}

/// `cron-1a2b3c4d  backup  enabled  cron 0 3 * * * (Europe/Berlin)  next 2026-12-03T02:00:00.000Z  last ok`
fn line(j: &CronJob) -> String {
    let s = &j.schedule;
    let when = match s["kind"].as_str() {
        Some("cron") => format!(
            "cron {}{}",
            s["expr"].as_str().unwrap_or(""),
            s["tz"]
                .as_str()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default()
        ),
        Some("every") => format!("every {} ms", s["everyMs"]),
        Some("at") => format!("at {}", s["at"].as_str().unwrap_or("")),
        _ => s.to_string(),
    };
    format!(
        "{}  {}  {}  {}  next {}  last {}",
        j.id,
        j.name,
        if j.enabled { "enabled" } else { "disabled" },
        when,
        j.next_run_at_ms
            .map(molt_cron::format_at)
            .unwrap_or_else(|| "-".into()),
        j.last_run_status.as_deref().unwrap_or("-")
    )
}

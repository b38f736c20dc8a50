//! `molt update`: the CLI side of the update transaction.
//!
//! The CLI records a job, starts the updater (`molt update apply --job ID`) outside the
//! gateway, as a transient unit or a detached process, and then either follows it to the end
//! (from a shell) or returns the job id at once (from inside the gateway's process tree or
//! cgroup, where waiting would tie the caller to the process being replaced).

pub mod report;
pub mod source;
pub mod txn;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use molt_store::{JobState, NewUpdateJob, Store, UpdateJob, UpdateKind};
use serde_json::json;

use crate::commands::{Context, Failure};
use crate::{Cli, UpdateArgs, UpdateCommand};
use report::Report;
use txn::UpdateParams;

pub fn run(cli: &Cli, ctx: &Context, args: &UpdateArgs) -> Result<(), Failure> {
    match &args.command {
        None => {
            let f = &args.flags;
            txn::trusted_keys(ctx).map_err(Failure::config)?;
            let source = f
                .source
                .clone()
                .or_else(|| ctx.config.update.source.clone());
            if source.is_none() {
                return Err(Failure::config(
                    "no release source: pass --source DIR|URL, or set [update] source in molt.toml",
                ));
            }
            let params = UpdateParams {
                source,
                to: f.to.clone(),
                allow_downgrade: f.allow_downgrade,
                dry_run: f.dry_run,
                ..UpdateParams::default()
            };
            if !f.dry_run {
                confirm(f.yes, "Update molt to the newest signed release?")?;
            }
            start(cli, ctx, UpdateKind::Update, &params, f.json, f.dry_run)
        }
        Some(UpdateCommand::Status { follow, json }) => status(ctx, *follow, *json),
        Some(UpdateCommand::Rollback { yes, json }) => {
            confirm(*yes, "Roll molt back to the previous installed version?")?;
            start(
                cli,
                ctx,
                UpdateKind::Rollback,
                &UpdateParams::default(),
                *json,
                false,
            )
        }
        Some(UpdateCommand::Recover { json }) => start(
            cli,
            ctx,
            UpdateKind::Recover,
            &UpdateParams::default(),
            *json,
            false,
        ),
        Some(UpdateCommand::Apply { job }) => {
            // The updater's log: the transient unit's journal, or the detached log file.
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .try_init();
            tracing::info!(job = %job, version = crate::VERSION, "updater starting");
            txn::apply(cli, ctx, job)
        }
    }
}

fn confirm(yes: bool, question: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::config(
            "this changes the installed version; pass --yes to confirm (there is no terminal to ask on)",
        ));
    }
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::failed("not confirmed; nothing was changed"))
    }
}

fn start(
    cli: &Cli,
    ctx: &Context,
    kind: UpdateKind,
    params: &UpdateParams,
    json: bool,
    in_process: bool,
) -> Result<(), Failure> {
    let mut store = txn::open_store(ctx)?;
    let job = store
        .create_update_job(&NewUpdateJob {
            kind,
            requester: "cli".into(),
            params: serde_json::to_string(params).unwrap_or_else(|_| "{}".into()),
            continuation: None,
        })
        .map_err(|e| Failure::failed(format!("cannot record the update job: {e}")))?;
    if in_process {
        // A dry run switches nothing and touches no gateway: it may run right here.
        let _ = txn::apply(cli, ctx, &job.id);
        return finish_report(&store, &job.id, json);
    }
    let launched = launch_updater(cli, ctx, &mut store, &job.id)?;
    if let Some(why) = inside_gateway(ctx) {
        if json {
            print_json(&json!({
                "result": "STARTED",
                "jobId": job.id,
                "kind": kind.as_str(),
                "unit": launched.unit(),
                "launcher": launched.describe(),
                "inside": why,
            }));
        } else {
            println!("Update started: job {} ({})", job.id, launched.describe());
            println!(
                "  This shell runs {why}, so it does not wait for the gateway to be replaced."
            );
            println!(
                "  Follow it with: molt{} update status --follow",
                crate::service::profile_flag(ctx)
            );
        }
        return Ok(());
    }
    follow(ctx, &store, &job.id, Some(&launched), json)
}

/// Starts `molt update apply --job ID` outside this process tree, and journals how.
pub fn launch_updater(
    cli: &Cli,
    ctx: &Context,
    store: &mut Store,
    job: &str,
) -> Result<molt_service::transient::Launched, Failure> {
    let args = txn::global_args(cli).map_err(Failure::failed)?;
    let launched =
        molt_service::transient::launch_updater(&args, job, &ctx.state_dir).map_err(|e| {
            let msg = format!("cannot start the updater: {e}");
            let _ = store.set_update_state(job, JobState::Failed, Some(&msg));
            Failure::failed(msg)
        })?;
    let _ = store.set_update_launcher(job, &launched.describe());
    Ok(launched)
}

/// Why this process counts as inside a gateway of this profile: an exec run's environment,
/// a `molt gateway run` ancestor, or the unit's cgroup.
pub fn inside_gateway(ctx: &Context) -> Option<String> {
    if let Ok(run) = std::env::var("MOLT_RUN_ID") {
        return Some(format!("inside the gateway's exec run {run}"));
    }
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if pid <= 1 {
            break;
        }
        if crate::host::Process::read(pid).is_some_and(|p| p.is_molt_gateway()) {
            return Some(format!("under the gateway process {pid}"));
        }
        pid = match parent_of(pid) {
            Some(p) => p,
            None => break,
        };
    }
    let unit = ctx.profile.unit_name();
    crate::host::Process::read(std::process::id())
        .and_then(|me| me.unit)
        .filter(|u| *u == unit)
        .map(|_| format!("in the cgroup of {unit}"))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parens; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the updater of `job` can still be running.
fn updater_alive(job: &UpdateJob, launched: Option<&molt_service::transient::Launched>) -> bool {
    if let Some(pid) = job.updater_pid.filter(|p| *p > 0) {
        return molt_gateway::process::pid_alive(pid);
    }
    match launched {
        Some(molt_service::transient::Launched::Unit(u)) => {
            molt_service::systemctl::show(u, &["ActiveState"])
                .ok()
                .and_then(|m| m.get("ActiveState").cloned())
                .is_some_and(|s| matches!(s.as_str(), "active" | "activating"))
        }
        Some(molt_service::transient::Launched::Detached { pid, .. }) => {
            molt_gateway::process::pid_alive(*pid)
        }
        None => true,
    }
}

/// Waits for the job to end, showing steps as they finish on a terminal.
fn follow(
    ctx: &Context,
    store: &Store,
    id: &str,
    launched: Option<&molt_service::transient::Launched>,
    json: bool,
) -> Result<(), Failure> {
    let live = !json && std::io::stdout().is_terminal();
    let mut shown = 0usize;
    let mut dead_since: Option<Instant> = None;
    loop {
        let job = store
            .update_job(id)
            .map_err(|e| Failure::failed(e.to_string()))?
            .ok_or_else(|| Failure::failed(format!("update job {id} vanished")))?;
        if live {
            shown = show_progress(&job, shown);
        }
        if job.state.is_final() {
            if live {
                println!();
            }
            return finish_report(store, id, json);
        }
        if updater_alive(&job, launched) {
            dead_since = None;
        } else {
            // Give the journal a moment to catch up with an updater that just ended.
            let since = *dead_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                return interrupted(ctx, &job, json);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn show_progress(job: &UpdateJob, shown: usize) -> usize {
    let mut n = shown;
    for s in job.steps.iter().skip(shown) {
        if s.state == molt_store::JournalStepState::Started {
            if let Some((got, total)) = s
                .detail
                .as_deref()
                .and_then(|d| d.strip_prefix("progress "))
                .and_then(|d| d.split_once('/'))
                .and_then(|(g, t)| Some((g.parse::<u64>().ok()?, t.parse::<u64>().ok()?)))
            {
                let width = 30;
                let filled = (got * width / total.max(1)) as usize;
                print!(
                    "\r  … {:<10} [{}{}] {:>5.1}/{:.1} MB",
                    s.name,
                    "#".repeat(filled),
                    " ".repeat(width as usize - filled.min(width as usize)),
                    got as f64 / 1e6,
                    total as f64 / 1e6
                );
                let _ = std::io::stdout().flush();
            }
            break;
        }
        let mark = match s.state {
            molt_store::JournalStepState::Ok => "✓",
            molt_store::JournalStepState::Failed => "✗",
            _ => "-",
        };
        let ms = s.finished_at_ms.map(|f| f - s.started_at_ms).unwrap_or(0);
        println!("\r  {mark} {:<18} {ms:>7} ms", s.name);
        n += 1;
    }
    n
}

fn finish_report(store: &Store, id: &str, json: bool) -> Result<(), Failure> {
    let job = store
        .update_job(id)
        .map_err(|e| Failure::failed(e.to_string()))?
        .ok_or_else(|| Failure::failed(format!("update job {id} vanished")))?;
    let report = job.report();
    print_report(&report, json);
    match report.exit_code() {
        0 => Ok(()),
        code => Err(Failure {
            code,
            message: format!(
                "update {}: {}",
                report.result,
                report.reason.as_deref().unwrap_or("see the steps above")
            ),
        }),
    }
}

fn interrupted(ctx: &Context, job: &UpdateJob, json: bool) -> Result<(), Failure> {
    let reason = format!(
        "the updater stopped {} without finishing (killed?); `molt{} update recover` brings the install to a consistent state, and the next update or gateway start does it too",
        job.where_stopped(),
        crate::service::profile_flag(ctx)
    );
    let mut report = job.report();
    report.result = "FAILED".into();
    report.reason = Some(reason.clone());
    print_report(&report, json);
    Err(Failure::failed(reason))
}

fn print_report(report: &Report, json: bool) {
    if json {
        print_json(&serde_json::to_value(report).unwrap_or_default());
    } else {
        report::print_text(report);
    }
}

fn status(ctx: &Context, follow_it: bool, json: bool) -> Result<(), Failure> {
    let db = ctx.state_dir.join("molt.db");
    if !db.exists() {
        return no_job(json);
    }
    let store = txn::open_store(ctx)?;
    let Some(job) = store
        .latest_update_job()
        .map_err(|e| Failure::failed(e.to_string()))?
    else {
        return no_job(json);
    };
    if follow_it && !job.state.is_final() {
        let launched = job
            .launcher
            .as_deref()
            .and_then(molt_service::transient::Launched::parse);
        return follow(ctx, &store, &job.id, launched.as_ref(), json);
    }
    print_report(&job.report(), json);
    Ok(())
}

fn no_job(json: bool) -> Result<(), Failure> {
    if json {
        print_json(&json!({ "result": null, "jobId": null }));
    } else {
        println!("No update has run yet.");
    }
    Ok(())
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

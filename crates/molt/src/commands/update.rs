//! `molt update [status|rollback|recover|apply]`: the CLI side of the update transaction,
//! which molt-update runs. This asks for confirmation, shows progress and prints the report.

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use molt_client::profile::Access;
use molt_config::Context;
use molt_service::transient::Launched;
use molt_store::{
    JournalStepState, Store, UpdateJob, UpdateKind, UpdateReport as Report, VersionRef,
};
use molt_update::launch::{self, Ended, Started};
use molt_update::txn::{self, UpdateParams};
use serde_json::json;

use crate::build_info::VERSION;
use crate::output::{Failure, print_json};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UpdateArgs {
    #[command(subcommand)]
    pub command: Option<UpdateCommand>,
    #[command(flatten)]
    pub flags: UpdateFlags,
}

#[derive(Args, Debug)]
pub struct UpdateFlags {
    /// Release directory or base URL (https://, or http:// on loopback). Default: [update] source.
    #[arg(long)]
    pub source: Option<String>,
    /// Install this version instead of the newest on offer.
    #[arg(long)]
    pub to: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Resolve, download, verify, unpack and preflight; switch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow a version older than the installed one.
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Subcommand, Debug)]
pub enum UpdateCommand {
    /// Show the current or last update transaction.
    Status {
        /// Wait for a running transaction to end.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Go back to the previous installed version, through the same transaction.
    Rollback {
        #[arg(long, short = 'y')]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Bring an install whose updater was interrupted to a consistent state.
    Recover {
        #[arg(long)]
        json: bool,
    },
    /// The updater itself (started by `molt update` as a transient unit).
    #[command(hide = true)]
    Apply {
        #[arg(long)]
        job: String,
    },
}

impl UpdateArgs {
    /// `molt update apply`: the updater, which must finish even when its reader goes.
    pub fn is_updater(&self) -> bool {
        matches!(self.command, Some(UpdateCommand::Apply { .. }))
    }
}

pub fn exec(ctx: &Context, access: &Access, args: &UpdateArgs) -> Result<(), Failure> {
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
            start(ctx, access, UpdateKind::Update, &params, f.json, f.dry_run)
        }
        Some(UpdateCommand::Status { follow, json }) => status(ctx, *follow, *json),
        Some(UpdateCommand::Rollback { yes, json }) => {
            confirm(*yes, "Roll molt back to the previous installed version?")?;
            start(
                ctx,
                access,
                UpdateKind::Rollback,
                &UpdateParams::default(),
                *json,
                false,
            )
        }
        Some(UpdateCommand::Recover { json }) => start(
            ctx,
            access,
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
            tracing::info!(job = %job, version = VERSION, "updater starting");
            Ok(txn::apply(ctx, access, job)?)
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
    ctx: &Context,
    access: &Access,
    kind: UpdateKind,
    params: &UpdateParams,
    json: bool,
    in_process: bool,
) -> Result<(), Failure> {
    match launch::start(ctx, access, kind, params, in_process)? {
        Started::Here { store, job } => finish_report(&store, &job, json),
        Started::Inside { job, launched, why } => {
            if json {
                print_json(&json!({
                    "result": "STARTED",
                    "jobId": job,
                    "kind": kind.as_str(),
                    "unit": launched.unit(),
                    "launcher": launched.describe(),
                    "inside": why,
                }));
            } else {
                println!("Update started: job {job} ({})", launched.describe());
                println!(
                    "  This shell runs {why}, so it does not wait for the gateway to be replaced."
                );
                println!(
                    "  Follow it with: molt{} update status --follow",
                    ctx.profile_flag()
                );
            }
            Ok(())
        }
        Started::Outside {
            store,
            job,
            launched,
        } => follow(ctx, &store, &job, Some(&launched), json),
    }
}

/// Waits for the job to end, showing steps as they finish on a terminal.
fn follow(
    ctx: &Context,
    store: &Store,
    id: &str,
    launched: Option<&Launched>,
    json: bool,
) -> Result<(), Failure> {
    let live = !json && std::io::stdout().is_terminal();
    let mut shown = 0usize;
    let ended = launch::wait(store, id, launched, |job| {
        if live {
            shown = show_progress(job, shown);
        }
    })?;
    match ended {
        Ended::Final(_) => {
            if live {
                println!();
            }
            finish_report(store, id, json)
        }
        Ended::Interrupted(job) => interrupted(ctx, &job, json),
    }
}

fn show_progress(job: &UpdateJob, shown: usize) -> usize {
    let mut n = shown;
    for s in job.steps.iter().skip(shown) {
        if s.state == JournalStepState::Started {
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
            JournalStepState::Ok => "✓",
            JournalStepState::Failed => "✗",
            _ => "-",
        };
        let ms = s.finished_at_ms.map(|f| f - s.started_at_ms).unwrap_or(0);
        println!("\r  {mark} {:<18} {ms:>7} ms", s.name);
        n += 1;
    }
    n
}

fn finish_report(store: &Store, id: &str, json: bool) -> Result<(), Failure> {
    let job = launch::job(store, id)?;
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
        ctx.profile_flag()
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
        print_text(report);
    }
}

fn status(ctx: &Context, follow_it: bool, json: bool) -> Result<(), Failure> {
    let Some((store, job)) = launch::latest(ctx)? else {
        return no_job(json);
    };
    if follow_it && !job.state.is_final() {
        let launched = job.launcher.as_deref().and_then(Launched::parse);
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

/// The report as text: `Update Result: OK|ROLLED BACK|FAILED`, Before, After, each step
/// with its time. `--json` prints [`Report`] itself, so both forms carry the same data.
fn print_text(r: &Report) {
    let v = |x: &Option<VersionRef>| {
        x.as_ref()
            .map(|r| format!("{} ({})", r.version, r.build_id))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "Update Result: {}{}",
        r.result,
        if r.dry_run {
            " (dry run: nothing was changed)"
        } else {
            ""
        }
    );
    println!("  Before: {}", v(&r.before));
    println!("  After:  {}", v(&r.after));
    if (r.result != "OK" || r.dry_run) && r.target.is_some() {
        println!("  Target: {}", v(&r.target));
    }
    println!(
        "  Job:    {} ({}, requested by {}{})",
        r.job_id,
        r.kind,
        r.requester,
        r.launcher
            .as_deref()
            .map(|l| format!(", run by {l}"))
            .unwrap_or_default()
    );
    if let Some(reason) = &r.reason {
        println!("  Reason: {reason}");
    }
    println!("Steps:");
    let width = r.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &r.steps {
        let mark = match s.status.as_str() {
            "ok" => "✓",
            "failed" => "✗",
            "skipped" => "-",
            _ => "…",
        };
        let ms =
            s.ms.map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "running".into());
        let detail = s
            .detail
            .as_deref()
            .map(|d| format!("  {d}"))
            .unwrap_or_default();
        println!("  {mark} {:<width$}  {ms:>9}{detail}", s.name);
    }
    if let Some(t) = r.total_ms {
        println!("  Total: {t} ms");
    }
    if let Some(c) = &r.continuation_message {
        println!(
            "Continuation: {c}{}",
            if r.continuation_delivered {
                " (delivered to operators)"
            } else {
                ""
            }
        );
    }
    match r.result.as_str() {
        "FAILED" if !r.steps.iter().any(|s| s.name == "switch") => println!(
            "Nothing was switched: the installed version is unchanged. Fix the cause above and run `molt update` again."
        ),
        "FAILED" => {
            println!("Follow the reason above; `molt doctor` shows what is left to repair.")
        }
        "ROLLED BACK" => println!(
            "The old version serves again. The new one was removed; report the reason above to its publisher."
        ),
        "RUNNING" | "PENDING" => {
            println!("Still running: follow it with `molt update status --follow`.")
        }
        _ => {}
    }
}

//! `molt import openclaw`: move an OpenClaw install's config, agents, workspaces, sessions
//! and cron jobs into this profile, read-only on the source. The work is in `molt-import`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use molt_config::Context;
use molt_import::{Options, WorkspaceMode};

use crate::output::{Failure, print_json};

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Import from OpenClaw's state dir (~/.openclaw, or OPENCLAW_STATE_DIR, or
    /// ~/.openclaw-<P> with --profile P). Safe to run again: only what is new is imported.
    Openclaw(OpenclawArgs),
}

#[derive(Args, Debug)]
pub struct OpenclawArgs {
    /// OpenClaw's state dir (default: OPENCLAW_STATE_DIR, else ~/.openclaw, or
    /// ~/.openclaw-<P> under the global --profile P).
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Read OpenClaw's profile P (~/.openclaw-P) whatever molt profile imports it.
    #[arg(long, value_name = "P")]
    openclaw_profile: Option<String>,
    /// Copy the workspaces into molt's (default), or use OpenClaw's directories in place.
    #[arg(long, value_enum, default_value_t = Workspaces::Copy)]
    workspaces: Workspaces,
    /// Report what would be imported; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workspaces {
    Copy,
    InPlace,
}

pub fn exec(ctx: &Context, cmd: &ImportCommand) -> Result<(), Failure> {
    let ImportCommand::Openclaw(args) = cmd;
    let env = |k: &str| std::env::var(k).ok();
    let profile = args.openclaw_profile.as_deref().or(ctx.profile.name());
    let source = molt_import::openclaw::locate(args.from.as_deref(), profile, &env)
        .map_err(|e| Failure::failed(e.to_string()))?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| Failure::config("HOME is not set"))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let opts = Options {
        source,
        config_file: ctx.config_path.clone(),
        state_dir: ctx.state_dir.clone(),
        share_dir: ctx.share_dir.clone(),
        home,
        unit: ctx.profile.unit_name(),
        workspaces: match args.workspaces {
            Workspaces::Copy => WorkspaceMode::Copy,
            Workspaces::InPlace => WorkspaceMode::InPlace,
        },
        dry_run: args.dry_run,
        now_ms,
        host_tz: molt_cron::host_timezone(),
    };
    let report = molt_import::run(&opts, &env).map_err(|e| Failure::failed(e.to_string()))?;
    if args.json {
        print_json(&report);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

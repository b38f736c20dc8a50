//! `molt service ...`: the systemd user unit of one profile. molt-service renders, writes
//! and reports on it; this module prints.

use std::io::IsTerminal;

use clap::Subcommand;
use molt_client::profile::{Access, request};
use molt_config::Context;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::system::{RestartParams, RestartRequest, Status};
use molt_service::install::{unit_path, write_unit};
use molt_service::status::StatusReport;
use molt_service::systemctl::{self, is_active};

use crate::output::Failure;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write (or repair) the unit for what `current` points to, reload and enable it.
    Install {
        /// Also run `loginctl enable-linger $USER`.
        #[arg(long)]
        enable_linger: bool,
    },
    /// Stop, disable and remove the unit.
    Uninstall,
    /// Start the unit (returns once the gateway is ready).
    Start,
    /// Stop the unit (inside the stop budget).
    Stop,
    /// A handover when the gateway runs; a start when it does not. Never a stop and a start.
    Restart,
    /// Unit state, main pid, restarts, and the unit/current/running versions side by side.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Follow the journal, or the gateway's log file when there is no journal.
    Logs {
        #[arg(long)]
        no_follow: bool,
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
    },
}

pub fn exec(ctx: &Context, access: &Access, cmd: &ServiceCommand) -> Result<(), Failure> {
    let unit = ctx.profile.unit_name();
    match cmd {
        ServiceCommand::Install { enable_linger } => {
            let changes = write_unit(ctx)?;
            if changes.is_empty() {
                println!("{unit} is up to date");
            } else {
                println!("wrote {}", unit_path(ctx)?.display());
                for c in &changes {
                    println!("  {c}");
                }
            }
            systemctl::run(&["enable", &unit])?;
            println!("enabled {unit}");
            linger(*enable_linger)?;
            if is_active(&unit) && !changes.is_empty() {
                println!(
                    "the gateway runs an older unit definition; apply it with `molt service restart{}` (a handover)",
                    ctx.profile_flag()
                );
            } else if !is_active(&unit) {
                println!("start it with `molt service start{}`", ctx.profile_flag());
            }
            Ok(())
        }
        ServiceCommand::Uninstall => {
            let path = unit_path(ctx)?;
            if is_active(&unit) {
                systemctl::run(&["stop", &unit])?;
            }
            let _ = systemctl::run(&["disable", &unit]);
            match std::fs::remove_file(&path) {
                Ok(()) => println!("removed {}", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("{unit} was not installed")
                }
                Err(e) => {
                    return Err(Failure::failed(format!(
                        "cannot remove {}: {e}",
                        path.display()
                    )));
                }
            }
            systemctl::run(&["daemon-reload"])?;
            Ok(())
        }
        ServiceCommand::Start => {
            // Type=notify: this returns once the gateway has sent READY=1.
            systemctl::run(&["start", &unit])?;
            print_state(&unit);
            Ok(())
        }
        ServiceCommand::Stop => {
            systemctl::run(&["stop", &unit])?;
            print_state(&unit);
            Ok(())
        }
        ServiceCommand::Restart => {
            if !is_active(&unit) {
                // Nothing runs: one start, never a stop followed by a start.
                systemctl::run(&["start", &unit])?;
                print_state(&unit);
                return Ok(());
            }
            let reload = systemctl::show(&unit, &["NeedDaemonReload"])?;
            if reload.get("NeedDaemonReload").map(String::as_str) == Some("yes") {
                systemctl::run(&["daemon-reload"])?;
            }
            let r = request::<RestartRequest>(ctx, access, &RestartParams::default())?;
            println!("handover: {}", r.handover.describe());
            Ok(())
        }
        ServiceCommand::Status { json } => {
            let running = request::<Status>(ctx, access, &AnyParams {}).ok();
            let report = molt_service::status::status(ctx, running.as_ref())?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_status(&report);
            }
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err(Failure {
                    code: 1,
                    message: format!("{} problem(s) found", report.problems.len()),
                })
            }
        }
        ServiceCommand::Logs { no_follow, lines } => logs(ctx, &unit, !*no_follow, *lines),
    }
}

fn print_state(unit: &str) {
    if let Ok(m) = systemctl::show(unit, &["ActiveState", "SubState", "Result", "MainPID"]) {
        let g = |k: &str| m.get(k).cloned().unwrap_or_default();
        println!(
            "{unit}: {} ({}), result {}, main pid {}",
            g("ActiveState"),
            g("SubState"),
            g("Result"),
            g("MainPID")
        );
    }
}

fn linger(enable: bool) -> Result<(), Failure> {
    let user = systemctl::login_user();
    if enable {
        if systemctl::enable_linger(&user) {
            println!("linger enabled for {user}: the gateway runs without a login session");
            return Ok(());
        }
        return Err(Failure::failed(format!(
            "`loginctl enable-linger {user}` failed; run it as root or with sudo"
        )));
    }
    match systemctl::linger(&user) {
        Some(true) => println!("linger: on"),
        Some(false) => println!(
            "linger: off. The gateway stops when {user} logs out; run `loginctl enable-linger {user}` \
             or re-run with --enable-linger"
        ),
        None => println!(
            "linger: unknown (no logind); if the gateway must outlive your sessions, run `loginctl enable-linger {user}`"
        ),
    }
    Ok(())
}

fn print_status(r: &StatusReport) {
    let red = |s: &str| {
        if std::io::stdout().is_terminal() {
            format!("\x1b[31m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let versions = [&r.unit_label, &r.current_version, &r.running_version];
    let agree = versions.iter().all(|v| v.is_some() && *v == versions[0]);
    let mark = |v: &Option<String>| if agree { o(v) } else { red(&o(v)) };
    println!("{}  ({})", r.unit, r.unit_file);
    let state = format!(
        "{} ({}), result {}",
        o(&r.active_state),
        o(&r.sub_state),
        o(&r.result)
    );
    println!(
        "  unit state    {}",
        if r.active_state.as_deref() == Some("active") {
            state
        } else {
            red(&state)
        }
    );
    println!(
        "  main pid      {}",
        r.main_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "  restarts      {}",
        r.n_restarts
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "  unit label    {}  {}",
        mark(&r.unit_label),
        o(&r.unit_build)
    );
    println!(
        "  current       {}  {}",
        mark(&r.current_version),
        o(&r.current_build)
    );
    println!(
        "  running       {}  {}  pid {}",
        mark(&r.running_version),
        o(&r.running_build),
        r.running_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    for p in &r.problems {
        println!("{} {}\n    fix: {}", red("✗"), p.what, p.fix);
    }
    if r.problems.is_empty() {
        println!("✓ one version everywhere");
    }
}

fn logs(ctx: &Context, unit: &str, follow: bool, lines: u32) -> Result<(), Failure> {
    let log_file = molt_gateway::logging::log_file(&ctx.state_dir);
    molt_service::logs::show(unit, &log_file, lines, follow, &mut std::io::stdout())?;
    Ok(())
}

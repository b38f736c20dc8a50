//! `molt install` and `molt service ...`: the install layout and the systemd user unit.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use molt_service::layout::{self, InstallOutcome, Layout};
use molt_service::{systemctl, unit};
use serde::Serialize;

use crate::ServiceCommand;
use crate::commands::{Context, Failure};

fn svc_err(e: molt_service::ServiceError) -> Failure {
    Failure::failed(e.to_string())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn home() -> Result<PathBuf, Failure> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| Failure::config("HOME is not set"))
}

/// The profile's layout; `--prefix P` puts it under `P/share` and `P/bin` instead of
/// `~/.local/share` and `~/.local/bin`.
pub fn layout(ctx: &Context, prefix: Option<&PathBuf>) -> Result<Layout, Failure> {
    Ok(match prefix {
        Some(p) => Layout {
            share: p
                .join("share")
                .join(format!("molt{}", ctx.profile.suffix())),
            bin_dir: p.join("bin"),
        },
        None => Layout {
            share: ctx.share_dir.clone(),
            bin_dir: home()?.join(".local/bin"),
        },
    })
}

/// `molt install`: copies this binary into `versions/<version>` and switches `current`.
pub fn install(ctx: &Context, prefix: Option<&PathBuf>) -> Result<(), Failure> {
    let layout = layout(ctx, prefix)?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot locate the running binary: {e}")))?;
    let outcome = layout
        .install(&exe, crate::VERSION, crate::BUILD_ID, now_ms())
        .map_err(svc_err)?;
    let verb = match outcome {
        InstallOutcome::Installed => "installed",
        InstallOutcome::AlreadyInstalled => "already installed",
    };
    println!(
        "{verb}: molt {} ({}) in {}",
        crate::VERSION,
        crate::BUILD_ID,
        layout.versions().join(crate::VERSION).display()
    );
    println!("current -> versions/{}", crate::VERSION);
    println!(
        "{} -> {}",
        layout.bin_dir.join("molt").display(),
        layout.current_binary().display()
    );
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d == layout.bin_dir));
    if !on_path {
        println!("note: {} is not on PATH", layout.bin_dir.display());
    }
    Ok(())
}

/// Environment the service needs to resolve the same paths as the installer.
fn service_env(cli: &crate::Cli) -> Result<Vec<(String, String)>, Failure> {
    let mut env = vec![("HOME".to_owned(), home()?.display().to_string())];
    for k in ["XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"] {
        if let Some(v) = std::env::var_os(k).filter(|v| !v.is_empty()) {
            env.push((k.to_owned(), v.to_string_lossy().into_owned()));
        }
    }
    if let Some(c) = &cli.config {
        env.push(("MOLT_CONFIG".into(), absolute(c)?.display().to_string()));
    }
    if let Some(s) = &cli.state_dir {
        env.push(("MOLT_STATE_DIR".into(), absolute(s)?.display().to_string()));
    }
    Ok(env)
}

fn absolute(p: &PathBuf) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure::failed(format!("{}: {e}", p.display())))
}

/// The unit text for what `current` points to now.
fn desired_unit(cli: &crate::Cli, ctx: &Context) -> Result<String, Failure> {
    let layout = layout(ctx, None)?;
    let exec = layout.current_binary();
    if !exec.exists() {
        return Err(Failure::failed(format!(
            "{} does not exist: run `molt install{}` first",
            exec.display(),
            profile_flag(ctx)
        )));
    }
    // The label is read from the binary itself, never from this CLI's own version.
    let (version, build) = layout::binary_version(&exec).map_err(svc_err)?;
    // release.json records the sha256 taken when the version was installed; versions are
    // immutable, so hashing the binary again would only cost time.
    let sha = match layout.current_release() {
        Some(r) if r.version == version && r.build_id == build => r.sha256,
        _ => layout::sha256_file(&exec).map_err(svc_err)?,
    };
    let env = service_env(cli)?;
    Ok(unit::render(&unit::UnitSpec {
        profile: ctx.profile.name(),
        exec: &exec,
        version: &version,
        build_id: &build,
        sha256: &sha,
        stop_budget_ms: ctx.config.gateway.stop_budget_ms,
        env: &env,
    }))
}

pub(crate) fn profile_flag(ctx: &Context) -> String {
    ctx.profile
        .name()
        .map(|p| format!(" --profile {p}"))
        .unwrap_or_default()
}

pub(crate) fn unit_path(ctx: &Context) -> Result<PathBuf, Failure> {
    Ok(systemctl::unit_dir()
        .map_err(svc_err)?
        .join(ctx.profile.unit_name()))
}

/// Writes the unit if it differs; returns the changed lines (empty: it was current).
pub(crate) fn write_unit(cli: &crate::Cli, ctx: &Context) -> Result<Vec<String>, Failure> {
    let path = unit_path(ctx)?;
    let text = desired_unit(cli, ctx)?;
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if old == text {
        return Ok(Vec::new());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))?;
    systemctl::run(&["daemon-reload"]).map_err(svc_err)?;
    Ok(if old.is_empty() {
        vec![format!("+ new unit {}", path.display())]
    } else {
        unit::diff(&old, &text)
    })
}

pub fn run(cli: &crate::Cli, ctx: &Context, cmd: &ServiceCommand) -> Result<(), Failure> {
    let unit = ctx.profile.unit_name();
    match cmd {
        ServiceCommand::Install { enable_linger } => {
            let changes = write_unit(cli, ctx)?;
            if changes.is_empty() {
                println!("{unit} is up to date");
            } else {
                println!("wrote {}", unit_path(ctx)?.display());
                for c in &changes {
                    println!("  {c}");
                }
            }
            systemctl::run(&["enable", &unit]).map_err(svc_err)?;
            println!("enabled {unit}");
            linger(*enable_linger)?;
            if is_active(&unit) && !changes.is_empty() {
                println!(
                    "the gateway runs an older unit definition; apply it with `molt service restart{}` (a handover)",
                    profile_flag(ctx)
                );
            } else if !is_active(&unit) {
                println!("start it with `molt service start{}`", profile_flag(ctx));
            }
            Ok(())
        }
        ServiceCommand::Uninstall => {
            let path = unit_path(ctx)?;
            if is_active(&unit) {
                systemctl::run(&["stop", &unit]).map_err(svc_err)?;
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
            systemctl::run(&["daemon-reload"]).map_err(svc_err)?;
            Ok(())
        }
        ServiceCommand::Start => {
            // Type=notify: this returns once the gateway has sent READY=1.
            systemctl::run(&["start", &unit]).map_err(svc_err)?;
            print_state(&unit);
            Ok(())
        }
        ServiceCommand::Stop => {
            systemctl::run(&["stop", &unit]).map_err(svc_err)?;
            print_state(&unit);
            Ok(())
        }
        ServiceCommand::Restart => {
            if !is_active(&unit) {
                // Nothing runs: one start, never a stop followed by a start.
                systemctl::run(&["start", &unit]).map_err(svc_err)?;
                print_state(&unit);
                return Ok(());
            }
            let reload = systemctl::show(&unit, &["NeedDaemonReload"]).map_err(svc_err)?;
            if reload.get("NeedDaemonReload").map(String::as_str) == Some("yes") {
                systemctl::run(&["daemon-reload"]).map_err(svc_err)?;
            }
            let r = crate::commands::call_gateway(cli, ctx, "gateway.restart.request", None)?;
            println!(
                "handover: {}",
                crate::commands::describe_handover(&r["handover"])
            );
            Ok(())
        }
        ServiceCommand::Status { json } => {
            let report = status(cli, ctx)?;
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

pub(crate) fn is_active(unit: &str) -> bool {
    systemctl::show(unit, &["ActiveState"])
        .map(|m| m.get("ActiveState").map(String::as_str) == Some("active"))
        .unwrap_or(false)
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
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into());
    if enable {
        let ok = std::process::Command::new("loginctl")
            .args(["enable-linger", &user])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
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

/// One problem in `molt service status`, with the fix.
#[derive(Debug, Serialize)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

/// `molt service status`, side by side.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub unit: String,
    pub unit_file: String,
    pub installed: bool,
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    pub result: Option<String>,
    pub main_pid: Option<u32>,
    pub n_restarts: Option<u32>,
    pub unit_label: Option<String>,
    pub unit_build: Option<String>,
    pub current_version: Option<String>,
    pub current_build: Option<String>,
    pub running_version: Option<String>,
    pub running_build: Option<String>,
    pub running_pid: Option<u32>,
    pub coherent: bool,
    pub problems: Vec<Problem>,
}

pub(crate) fn status(cli: &crate::Cli, ctx: &Context) -> Result<StatusReport, Failure> {
    let unit = ctx.profile.unit_name();
    let path = unit_path(ctx)?;
    let text = std::fs::read_to_string(&path).ok();
    let labels = text.as_deref().map(unit::parse_labels).unwrap_or_default();
    let props = systemctl::show(
        &unit,
        &[
            "ActiveState",
            "SubState",
            "Result",
            "MainPID",
            "NRestarts",
            "LoadState",
        ],
    )
    .ok();
    let prop = |k: &str| {
        props
            .as_ref()
            .and_then(|m| m.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let current = layout::binary_version(&layout(ctx, None)?.current_binary()).ok();
    let running = crate::commands::call_gateway(cli, ctx, "status", None).ok();
    let rstr = |k: &str| {
        running
            .as_ref()
            .and_then(|r| r[k].as_str())
            .map(str::to_owned)
    };
    let mut r = StatusReport {
        unit: unit.clone(),
        unit_file: path.display().to_string(),
        installed: text.is_some(),
        active_state: prop("ActiveState"),
        sub_state: prop("SubState"),
        result: prop("Result"),
        main_pid: prop("MainPID")
            .and_then(|v| v.parse().ok())
            .filter(|p| *p != 0),
        n_restarts: prop("NRestarts").and_then(|v| v.parse().ok()),
        unit_label: labels.label().map(str::to_owned).or(labels.version.clone()),
        unit_build: labels.build_id.clone(),
        current_version: current.as_ref().map(|c| c.0.clone()),
        current_build: current.as_ref().map(|c| c.1.clone()),
        running_version: rstr("version"),
        running_build: rstr("buildId"),
        running_pid: running
            .as_ref()
            .and_then(|r| r["pid"].as_u64())
            .map(|p| p as u32),
        coherent: false,
        problems: Vec::new(),
    };
    let pf = profile_flag(ctx);
    let mut problem = |what: String, fix: String| r.problems.push(Problem { what, fix });
    if text.is_none() {
        problem(
            format!("{unit} is not installed"),
            format!("molt service install{pf}"),
        );
    }
    if labels.label().is_none() && text.is_some() {
        problem(
            format!(
                "the unit's labels disagree: Description names {:?}, X-Molt-Version {:?}",
                labels.description_version, labels.version
            ),
            format!("molt service install{pf}"),
        );
    }
    if let (Some(l), Some(c)) = (&labels.version, &current) {
        if *l != c.0 || labels.build_id.as_deref() != Some(c.1.as_str()) {
            problem(
                format!("the unit says {l} but current is {} ({})", c.0, c.1),
                format!("molt service install{pf}, then molt service restart{pf}"),
            );
        }
    }
    if current.is_none() {
        problem(
            "no installed version (current is missing)".into(),
            format!("molt install{pf}"),
        );
    }
    match prop("ActiveState").as_deref() {
        Some("active") => {}
        Some("failed") => problem(
            format!(
                "{unit} failed (result {})",
                prop("Result").unwrap_or_default()
            ),
            format!("systemctl --user reset-failed {unit} && molt service start{pf}"),
        ),
        other => problem(
            format!("{unit} is {}", other.unwrap_or("unknown")),
            format!("molt service start{pf}"),
        ),
    }
    if let (Some(run), Some(c)) = (&running, &current) {
        let (rv, rb) = (
            run["version"].as_str().unwrap_or(""),
            run["buildId"].as_str().unwrap_or(""),
        );
        if rv != c.0 || rb != c.1 {
            problem(
                format!(
                    "the gateway runs {rv} ({rb}) but current is {} ({})",
                    c.0, c.1
                ),
                format!("molt service restart{pf}"),
            );
        }
    }
    if let (Some(pid), Some(main)) = (r.running_pid, r.main_pid) {
        if pid != main {
            problem(
                format!("the gateway answering (pid {pid}) is not the unit's main pid {main}"),
                "find the stray gateway with `ss -ltnp` and stop it".into(),
            );
        }
    }
    r.coherent = r.problems.is_empty();
    Ok(r)
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
    let n = lines.to_string();
    let journal = std::process::Command::new("journalctl")
        .args(["--user", "-u", unit, "-n", "1", "--no-pager", "-q"])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false);
    if journal {
        let mut args = vec!["--user", "-u", unit, "-n", n.as_str(), "--no-pager"];
        if follow {
            args.push("-f");
        }
        let status = std::process::Command::new("journalctl")
            .args(&args)
            .status()
            .map_err(|e| Failure::failed(format!("cannot run journalctl: {e}")))?;
        return if status.success() {
            Ok(())
        } else {
            Err(Failure::failed("journalctl failed"))
        };
    }
    // No journal: the gateway's own log file.
    let path = molt_gateway::logging::log_file(&ctx.state_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::failed(format!(
            "no journal for {unit}, and cannot read {}: {e}",
            path.display()
        ))
    })?;
    let all: Vec<&str> = text.lines().collect();
    for l in &all[all.len().saturating_sub(lines as usize)..] {
        println!("{l}");
    }
    if !follow {
        return Ok(());
    }
    let mut offset = text.len() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        use std::io::{Read, Seek, SeekFrom};
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated or truncated
        }
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut buf = String::new();
            if f.read_to_string(&mut buf).is_ok() {
                print!("{buf}");
                offset += buf.len() as u64;
            }
        }
    }
}

//! `molt doctor`: ordered checks of one profile's install, each `ok|warn|fail` with a
//! one-line finding and the exact command that fixes it. With `fix`, it applies the fixes
//! that are molt's own and safe (file modes, the unit, starting a failed service, a handover
//! to `current`), then runs the check again and reports what it says now.
//!
//! Exit codes: 0 all ok, 1 warnings, 2 failures (after fixes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use molt_client::profile::{Access, request};
use molt_config::{Config, Context, Profile};
use molt_host as host;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::system::{self as rpc, Health, RestartParams, RestartRequest};
use molt_protocol::methods::update::UpdateReport;
use molt_service::install as service;
use molt_service::{layout, systemctl, unit};
use serde::Serialize;
use serde_json::{Value, json};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    /// The word the text report shows.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Status,
    pub finding: String,
    /// The exact command(s) that fix it; empty when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
    /// `--fix` can repair it.
    pub fixable: bool,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl Outcome {
    fn ok(finding: impl Into<String>) -> Self {
        Self {
            status: Status::Ok,
            finding: finding.into(),
            remedy: None,
            fixable: false,
            details: Value::Null,
        }
    }
    fn bad(status: Status, finding: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            status,
            finding: finding.into(),
            remedy: Some(remedy.into()),
            fixable: false,
            details: Value::Null,
        }
    }
    fn fixable(mut self) -> Self {
        self.fixable = true;
        self
    }
    fn details(mut self, v: Value) -> Self {
        self.details = v;
        self
    }
}

/// What `--fix` did for one check.
#[derive(Debug, Clone, Serialize)]
pub struct FixReport {
    /// The status and finding before the fix.
    pub before: Outcome,
    /// What was done, in order.
    pub actions: Vec<String>,
    /// Why the fix stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One check's line in the report: the outcome after any fix.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub id: &'static str,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixReport>,
    pub ms: u64,
}

/// What the checks share.
struct Doctor<'a> {
    access: &'a Access,
    ctx: &'a Context,
    config_error: Option<String>,
    unit: String,
    pf: String,
}

type CheckFn = fn(&Doctor) -> Outcome;
type FixFn = fn(&Doctor) -> Result<Vec<String>, (Vec<String>, String)>;

/// The checks, in order: each later one may rely on an earlier one having been fixed.
const CHECKS: &[(&str, CheckFn, Option<FixFn>)] = &[
    ("config", check_config, None),
    ("permissions", check_permissions, Some(fix_permissions)),
    ("store", check_store, None),
    ("service", check_service, Some(fix_service)),
    ("linger", check_linger, None),
    ("versions", check_versions, Some(fix_versions)),
    (
        "update-journal",
        check_update_journal,
        Some(fix_update_journal),
    ),
    ("port", check_port, None),
    ("connectivity", check_connectivity, None),
    ("other-gateways", check_other_gateways, None),
    ("sandbox", check_sandbox, None),
];

/// How to run the checks.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// Repair what molt can safely repair itself, then check again.
    pub fix: bool,
    /// How to reach the profile's gateway.
    pub access: Access,
}

/// Every check's line, and the counts that give the exit code.
#[derive(Debug, Clone)]
pub struct DoctorReport {
    /// In the order they ran.
    pub checks: Vec<CheckReport>,
    /// How many checks ended ok, warn and fail.
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    /// 0 all ok, 1 warnings, 2 failures.
    pub exit_code: i32,
}

/// Runs the checks in order (and their fixes, with `opts.fix`) on the profile of `ctx`,
/// whose config failed to load with `config_error`, if it did. `on_check` sees each check's
/// line as soon as it is done.
pub fn run(
    ctx: &Context,
    config_error: Option<String>,
    opts: &DoctorOptions,
    mut on_check: impl FnMut(&CheckReport),
) -> DoctorReport {
    let d = Doctor {
        access: &opts.access,
        unit: ctx.profile.unit_name(),
        pf: ctx.profile_flag(),
        ctx,
        config_error,
    };
    let mut reports = Vec::new();
    for &(id, check, fix) in CHECKS {
        let t0 = Instant::now();
        let needs_config = !matches!(id, "config" | "permissions" | "linger" | "other-gateways");
        let mut outcome = if needs_config && d.config_error.is_some() {
            Outcome::bad(
                Status::Warn,
                "not checked: the config does not load (see the config check)",
                format!("molt config show{}", d.pf),
            )
        } else {
            check(&d)
        };
        let mut fix_report = None;
        if let (true, Some(fix), true, false) =
            (opts.fix, fix, outcome.fixable, outcome.status == Status::Ok)
        {
            let before = outcome.clone();
            let (actions, error) = match fix(&d) {
                Ok(a) => (a, None),
                Err((a, e)) => (a, Some(e)),
            };
            outcome = check(&d);
            fix_report = Some(FixReport {
                before,
                actions,
                error,
            });
        }
        let report = CheckReport {
            id,
            outcome,
            fix: fix_report,
            ms: t0.elapsed().as_millis() as u64,
        };
        on_check(&report);
        reports.push(report);
    }
    let count = |s: Status| reports.iter().filter(|r| r.outcome.status == s).count();
    let (ok, warn, fail) = (count(Status::Ok), count(Status::Warn), count(Status::Fail));
    let exit_code = if fail > 0 {
        2
    } else if warn > 0 {
        1
    } else {
        0
    };
    DoctorReport {
        checks: reports,
        ok,
        warn,
        fail,
        exit_code,
    }
}

// ---------------------------------------------------------------------------------------------
// config, permissions, store

fn check_config(d: &Doctor) -> Outcome {
    let path = d.ctx.config_path.display();
    match &d.config_error {
        Some(e) => Outcome::bad(
            Status::Fail,
            format!("the config does not load: {e}"),
            format!("edit {path}, then `molt config show{}`", d.pf),
        ),
        None if d.ctx.config_path.exists() => Outcome::ok(format!("{path} is valid")),
        None => Outcome::ok(format!("no {path}: every key has its default")),
    }
}

/// Files and directories that should be private, with the mode each should have, found too
/// open (any group or other bit set).
fn open_paths(d: &Doctor) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::new();
    let mut visit = |p: &Path, want: u32| {
        if let Some(mode) = host::mode_of(p) {
            if mode & 0o077 != 0 {
                out.push((p.to_owned(), mode, want));
            }
        }
    };
    if let Some(dir) = d.ctx.config_path.parent() {
        if dir.is_dir() {
            visit(dir, 0o700);
        }
    }
    if d.ctx.config_path.is_file() {
        visit(&d.ctx.config_path, 0o600);
    }
    // The state dir and everything in it, bounded (it holds a handful of files).
    let mut stack = vec![(d.ctx.state_dir.clone(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        visit(&dir, 0o700);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            seen += 1;
            if seen > 10_000 {
                break;
            }
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < 4 => stack.push((p, depth + 1)),
                Ok(t) if t.is_file() => visit(&p, 0o600),
                _ => {}
            }
        }
    }
    out
}

fn check_permissions(d: &Doctor) -> Outcome {
    let open = open_paths(d);
    if open.is_empty() {
        return Outcome::ok(format!(
            "{} and {} are private (0700 dirs, 0600 files)",
            d.ctx
                .config_path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            d.ctx.state_dir.display()
        ));
    }
    let list: Vec<String> = open
        .iter()
        .take(4)
        .map(|(p, m, _)| format!("{} ({m:o})", p.display()))
        .collect();
    let more = if open.len() > 4 {
        format!(" and {} more", open.len() - 4)
    } else {
        String::new()
    };
    let remedy = open
        .iter()
        .map(|(p, _, want)| format!("chmod {want:o} '{}'", p.display()))
        .collect::<Vec<_>>()
        .join(" && ");
    // The token file is the gateway's key: anyone who reads it drives the gateway.
    let token_file = molt_config::token_file(&d.ctx.state_dir);
    let status = if open.iter().any(|(p, _, _)| *p == token_file) {
        Status::Fail
    } else {
        Status::Warn
    };
    Outcome::bad(
        status,
        format!(
            "{} path(s) readable by other users: {}{more}",
            open.len(),
            list.join(", ")
        ),
        remedy,
    )
    .fixable()
    .details(json!(
        open.iter()
            .map(|(p, m, w)| json!({"path": p, "mode": format!("{m:o}"), "want": format!("{w:o}")}))
            .collect::<Vec<_>>()
    ))
}

fn fix_permissions(d: &Doctor) -> Result<Vec<String>, (Vec<String>, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut done = Vec::new();
    for (p, _, want) in open_paths(d) {
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(want)) {
            Ok(()) => done.push(format!("chmod {want:o} {}", p.display())),
            Err(e) => return Err((done, format!("chmod {want:o} {}: {e}", p.display()))),
        }
    }
    Ok(done)
}

fn check_store(d: &Doctor) -> Outcome {
    let db = d.ctx.state_dir.join("molt.db");
    if !db.exists() {
        return Outcome::bad(
            Status::Warn,
            format!(
                "no database at {}: the gateway has not run yet",
                db.display()
            ),
            format!("molt service start{}", d.pf),
        );
    }
    // WAL mode lets this read beside a running gateway; opening migrates only a schema older
    // than this binary's, which a gateway of the same version has already done.
    match molt_store::Store::open(&db).map(|s| s.quick_check()) {
        Ok(Ok(Ok(()))) => Outcome::ok(format!("{}: quick_check ok", db.display())),
        Ok(Ok(Err(problems))) => Outcome::bad(
            Status::Fail,
            format!(
                "{} is damaged: {}",
                db.display(),
                problems.lines().next().unwrap_or("")
            ),
            format!(
                "molt service stop{pf} && cp '{db}' '{db}.bak' && sqlite3 '{db}' '.recover' | sqlite3 '{db}.recovered'",
                pf = d.pf,
                db = db.display()
            ),
        ),
        Ok(Err(e)) | Err(e) => Outcome::bad(
            Status::Fail,
            format!("cannot check {}: {e}", db.display()),
            format!("molt service status{}", d.pf),
        ),
    }
}

/// An update job left unfinished with nobody holding the update lock: its updater died, and
/// the install may be half-switched until recovery converges it.
fn check_update_journal(d: &Doctor) -> Outcome {
    let db = d.ctx.state_dir.join("molt.db");
    if !db.exists() {
        return Outcome::ok("no update has run");
    }
    let store = match molt_store::Store::open(&db) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::bad(
                Status::Warn,
                format!("cannot read the update journal: {e}"),
                format!("molt doctor{}", d.pf),
            );
        }
    };
    let unfinished = store.unfinished_update_jobs().unwrap_or_default();
    let lock_free = molt_service::update_lock::UpdateLock::is_free(&d.ctx.state_dir);
    let now = service::now_ms() as i64;
    let stuck: Vec<_> = unfinished
        .iter()
        .filter(|j| lock_free && j.is_abandoned(now, host::process::pid_alive))
        .collect();
    if let Some(j) = stuck.first() {
        return Outcome::bad(
            Status::Fail,
            format!(
                "update job {} ({}) was interrupted {}: its updater is gone and the install may be half-switched",
                j.id,
                j.state.as_str(),
                j.where_stopped()
            ),
            format!("molt update recover{}", d.pf),
        )
        .fixable()
        .details(json!({ "jobs": stuck.iter().map(|j| &j.id).collect::<Vec<_>>() }));
    }
    if let Some(j) = unfinished.first() {
        return Outcome::ok(format!(
            "update job {} is {} (its updater is {})",
            j.id,
            j.state.as_str(),
            if lock_free { "starting" } else { "running" }
        ));
    }
    match store.latest_update_job().ok().flatten() {
        Some(j) => Outcome::ok(format!(
            "no unfinished update; the last, {}, ended {}",
            j.id,
            j.report().result
        )),
        None => Outcome::ok("no update has run"),
    }
}

/// Runs `molt update recover` (the same transaction path, as its own updater).
fn fix_update_journal(d: &Doctor) -> Result<Vec<String>, (Vec<String>, String)> {
    let exe = std::env::current_exe().map_err(|e| (Vec::new(), e.to_string()))?;
    let args = d.ctx.overrides.global_args().map_err(|e| (Vec::new(), e))?;
    let out = std::process::Command::new(exe)
        .args(args)
        .args(["update", "recover", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| (Vec::new(), format!("cannot run molt update recover: {e}")))?;
    let report: Option<UpdateReport> = serde_json::from_slice(&out.stdout).ok();
    let action = format!(
        "molt update recover{}: {} (job {})",
        d.pf,
        report.as_ref().map_or("no report", |r| r.result.as_str()),
        report.as_ref().map_or("?", |r| r.job_id.as_str())
    );
    if out.status.success() {
        Ok(vec![action])
    } else {
        Err((
            vec![action],
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// service, linger

fn unit_props(unit: &str) -> Result<HashMap<String, String>, String> {
    systemctl::show(
        unit,
        &[
            "LoadState",
            "ActiveState",
            "SubState",
            "Result",
            "UnitFileState",
            "MainPID",
        ],
    )
    .map_err(|e| e.to_string())
}

fn current_version(d: &Doctor) -> Option<(String, String)> {
    let layout = service::layout(d.ctx, None).ok()?;
    layout::binary_version(&layout.current_binary()).ok()
}

fn check_service(d: &Doctor) -> Outcome {
    let installed = service::unit_path(d.ctx)
        .map(|p| p.exists())
        .unwrap_or(false);
    let props = match unit_props(&d.unit) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::bad(
                Status::Warn,
                format!("no systemd user manager to ask ({e})"),
                "loginctl enable-linger \"$USER\", then log in again",
            );
        }
    };
    let g = |k: &str| props.get(k).map(String::as_str).unwrap_or("");
    if !installed {
        return Outcome::bad(
            Status::Warn,
            format!("{} is not installed: nothing restarts the gateway", d.unit),
            format!(
                "molt service install{pf} && molt service start{pf}",
                pf = d.pf
            ),
        );
    }
    let details = json!({
        "activeState": g("ActiveState"), "subState": g("SubState"), "result": g("Result"),
        "unitFileState": g("UnitFileState"), "mainPid": g("MainPID"),
    });
    match g("ActiveState") {
        "failed" => Outcome::bad(
            Status::Fail,
            format!(
                "{} failed (result {}) and nothing restarts it",
                d.unit,
                g("Result")
            ),
            format!(
                "systemctl --user reset-failed {u} && systemctl --user start {u}",
                u = d.unit
            ),
        )
        .fixable()
        .details(details),
        "inactive" => Outcome::bad(
            Status::Fail,
            format!("{} is not running", d.unit),
            format!("molt service start{}", d.pf),
        )
        .fixable()
        .details(details),
        "active" if g("UnitFileState") != "enabled" => Outcome::bad(
            Status::Warn,
            format!(
                "{} runs but is {} (it will not start at boot)",
                d.unit,
                g("UnitFileState")
            ),
            format!("systemctl --user enable {}", d.unit),
        )
        .fixable()
        .details(details),
        "active" => Outcome::ok(format!(
            "{} is enabled and active ({}), main pid {}",
            d.unit,
            g("SubState"),
            g("MainPID")
        ))
        .details(details),
        other => Outcome::bad(
            Status::Warn,
            format!("{} is {other} ({})", d.unit, g("SubState")),
            format!("molt service status{}", d.pf),
        )
        .details(details),
    }
}

/// The address the CLI reaches the gateway's probes on.
fn probe_addr(d: &Doctor) -> SocketAddr {
    host::probe_target(SocketAddr::new(
        d.ctx.config.gateway.bind,
        d.ctx.config.port(&d.ctx.profile),
    ))
}

/// Polls `/readyz` until it is 200 with the version `current` holds, or 30 s pass.
fn wait_ready(d: &Doctor) -> Result<String, String> {
    let want = current_version(d);
    let addr = probe_addr(d);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Some((status, body)) = host::http_get(addr, "/readyz") {
            let got = serde_json::from_str::<rpc::Probe>(&body)
                .map(|p| (p.version, p.build_id))
                .unwrap_or_default();
            last = format!("/readyz {status}, version {} ({})", got.0, got.1);
            if status == 200 && want.as_ref().is_none_or(|w| *w == got) {
                return Ok(format!(
                    "ready: {last} after {} ms",
                    t0.elapsed().as_millis()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("not ready within 30 s at {addr}: {last}"))
}

fn fix_service(d: &Doctor) -> Result<Vec<String>, (Vec<String>, String)> {
    let props = unit_props(&d.unit).map_err(|e| (Vec::new(), e))?;
    let state = props.get("ActiveState").map(String::as_str).unwrap_or("");
    let mut done = Vec::new();
    let run = |args: &[&str], done: &mut Vec<String>| {
        systemctl::run(args)
            .map(|_| done.push(format!("systemctl --user {}", args.join(" "))))
            .map_err(|e| e.to_string())
    };
    if state == "active" {
        run(&["enable", &d.unit], &mut done).map_err(|e| (done.clone(), e))?;
        return Ok(done);
    }
    if state == "failed" {
        run(&["reset-failed", &d.unit], &mut done).map_err(|e| (done.clone(), e))?;
    }
    // Type=notify: this returns once the gateway has said READY=1 (or failed).
    run(&["start", &d.unit], &mut done).map_err(|e| (done.clone(), e))?;
    if props.get("UnitFileState").map(String::as_str) != Some("enabled") {
        run(&["enable", &d.unit], &mut done).map_err(|e| (done.clone(), e))?;
    }
    match wait_ready(d) {
        Ok(r) => {
            done.push(r);
            Ok(done)
        }
        Err(e) => Err((done, e)),
    }
}

fn check_linger(_d: &Doctor) -> Outcome {
    let user = systemctl::login_user();
    match systemctl::linger(&user) {
        Some(true) => Outcome::ok(format!("linger is on for {user}")),
        Some(false) => Outcome::bad(
            Status::Warn,
            format!("linger is off: the gateway stops when {user}'s last session ends"),
            format!("loginctl enable-linger {user}"),
        ),
        // Without logind nothing ends the user manager at logout, so there is nothing to fix.
        None => Outcome::ok("no logind here: sessions ending do not stop the user manager"),
    }
}

/// Whether the kernel can confine the agent's `exec` commands (Landlock), and whether it can
/// enforce what the config asks of it.
fn check_sandbox(d: &Doctor) -> Outcome {
    use molt_config::tools::{ExecNetwork, ToolPolicy};
    let support = molt_tools::sandbox::support();
    let cfg = &d.ctx.config;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let data = d.ctx.share_dir.clone();
    let policies: Vec<(String, ToolPolicy)> = cfg
        .agents
        .ids()
        .into_iter()
        .filter_map(|id| cfg.agents.resolve_with(&id, &home, &data, &cfg.tools))
        .map(|p| (p.id, p.tools))
        .collect();
    let off: Vec<&str> = policies
        .iter()
        .filter(|(_, p)| !p.exec.sandbox)
        .map(|(id, _)| id.as_str())
        .collect();
    let net_deny = policies
        .iter()
        .any(|(_, p)| p.exec.sandbox && p.exec.network == ExecNetwork::Deny);
    let fix_kernel = "run a kernel with Landlock enabled (CONFIG_SECURITY_LANDLOCK=y, landlock in \
                      the lsm= boot parameter), or limit exec with tools.exec.security";
    match support.abi() {
        None => Outcome::bad(
            Status::Warn,
            format!(
                "{support}: the agent's exec commands run with no_new_privs only, not confined \
                 to their workspace"
            ),
            fix_kernel,
        ),
        Some(abi) if abi < 4 && net_deny => Outcome::bad(
            Status::Warn,
            format!(
                "Landlock ABI {abi} cannot deny TCP (ABI 4, Linux 6.7): exec commands under \
                 tools.exec.network = \"deny\" are refused"
            ),
            fix_kernel,
        ),
        Some(abi) if !off.is_empty() => Outcome::bad(
            Status::Warn,
            format!(
                "Landlock ABI {abi} is available, but tools.exec.sandbox = \"off\" for agent(s) \
                 {}: their commands can write anywhere this user can",
                off.join(", ")
            ),
            "remove tools.exec.sandbox = \"off\" (or allow more with tools.exec.allow_write)",
        ),
        Some(abi) => Outcome::ok(format!(
            "Landlock ABI {abi}: exec commands write only their workspace and temp dir{}",
            if abi >= 4 {
                ", and network = \"deny\" is enforced"
            } else {
                ""
            }
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// versions

/// The version facts side by side.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    current: Option<(String, String)>,
    unit_label: Option<String>,
    unit_description: Option<String>,
    unit_build: Option<String>,
    exec_start: Option<String>,
    /// The version of the binary ExecStart names (same as current when it names `current`).
    exec_version: Option<(String, String)>,
    running: Option<(String, String)>,
    running_pid: Option<u64>,
    active: bool,
}

fn versions(d: &Doctor) -> Versions {
    let mut v = Versions {
        current: current_version(d),
        active: systemctl::is_active(&d.unit),
        ..Versions::default()
    };
    if let Some(text) = service::unit_path(d.ctx)
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        let l = unit::parse_labels(&text);
        v.unit_label = l.version.clone();
        v.unit_description = l.description_version.clone();
        v.unit_build = l.build_id.clone();
        v.exec_start = l.exec_start.clone();
        let (argv, _) = host::unit_exec_env(&text);
        if let Some(bin) = argv.first().map(PathBuf::from) {
            let current_bin = service::layout(d.ctx, None)
                .map(|l| l.current_binary())
                .ok();
            v.exec_version = if current_bin.as_deref() == Some(bin.as_path()) {
                v.current.clone()
            } else {
                layout::binary_version(&bin).ok()
            };
        }
    }
    if let Ok(s) = request::<rpc::Status>(d.ctx, d.access, &AnyParams {}) {
        v.running = Some((s.probe.version, s.probe.build_id));
        v.running_pid = Some(u64::from(s.probe.pid));
    }
    v
}

fn fmt_v(v: &Option<(String, String)>) -> String {
    v.as_ref()
        .map(|(v, b)| format!("{v} ({b})"))
        .unwrap_or_else(|| "-".into())
}

/// The ways the unit disagrees with `current` (empty: it agrees, or is not installed).
fn unit_disagreements(v: &Versions) -> Vec<String> {
    let mut out = Vec::new();
    let Some((cv, cb)) = &v.current else {
        return out;
    };
    if v.unit_label.is_none() && v.exec_start.is_none() {
        return out;
    }
    if v.unit_label.as_deref() != Some(cv) {
        out.push(format!(
            "X-Molt-Version is {}",
            v.unit_label.as_deref().unwrap_or("missing")
        ));
    }
    if v.unit_description.as_deref() != Some(cv) {
        out.push(format!(
            "Description names {}",
            v.unit_description.as_deref().unwrap_or("no version")
        ));
    }
    if v.unit_build.as_deref() != Some(cb) {
        out.push(format!(
            "X-Molt-Build is {}",
            v.unit_build.as_deref().unwrap_or("missing")
        ));
    }
    if v.exec_version.as_ref() != Some(&(cv.clone(), cb.clone())) {
        out.push(format!(
            "ExecStart runs {}",
            v.exec_start.as_deref().unwrap_or("nothing")
        ));
    }
    out
}

fn check_versions(d: &Doctor) -> Outcome {
    let v = versions(d);
    let details = serde_json::to_value(&v).unwrap_or(Value::Null);
    let Some(current) = &v.current else {
        return Outcome::bad(
            Status::Fail,
            "no installed version: `current` is missing or does not run",
            format!("molt install{}", d.pf),
        )
        .details(details);
    };
    let mut problems = unit_disagreements(&v);
    if !problems.is_empty() {
        problems.insert(0, format!("the unit is stale ({})", problems.join(", ")));
        problems.truncate(1);
    }
    if let Some(r) = &v.running {
        if r != current {
            problems.push(format!("the gateway runs {}", fmt_v(&v.running)));
        }
    }
    if problems.is_empty() {
        let running = match (v.exec_start.is_some(), v.running.is_some()) {
            (true, true) => "the unit, ExecStart and the running gateway agree",
            (true, false) => "the unit and ExecStart agree (no gateway answered)",
            (false, true) => "the running gateway agrees (no unit installed)",
            (false, false) => "no unit installed and no gateway answered",
        };
        return Outcome::ok(format!("current is {}; {running}", fmt_v(&v.current)))
            .details(details);
    }
    Outcome::bad(
        Status::Fail,
        format!(
            "current is {} but {}",
            fmt_v(&v.current),
            problems.join("; ")
        ),
        format!(
            "molt service install{pf} && molt service restart{pf}",
            pf = d.pf
        ),
    )
    .fixable()
    .details(details)
}

fn fix_versions(d: &Doctor) -> Result<Vec<String>, (Vec<String>, String)> {
    let mut done = Vec::new();
    let v = versions(d);
    let Some(current) = v.current.clone() else {
        return Err((done, "no installed version to agree with".into()));
    };
    if !unit_disagreements(&v).is_empty() {
        let changes = service::write_unit(d.ctx).map_err(|e| (Vec::new(), e.to_string()))?;
        done.push(format!(
            "rewrote {} for {} and reloaded systemd ({} line(s) changed)",
            d.unit,
            fmt_v(&v.current),
            changes.len()
        ));
    }
    if v.running.as_ref().is_some_and(|r| *r != current) {
        // A handover to what `current` points to: never a stop and a start.
        let r = request::<RestartRequest>(d.ctx, d.access, &RestartParams::default())
            .map_err(|e| (done.clone(), format!("handover refused: {e}")))?;
        done.push(format!("handover: {}", r.handover.describe()));
        match wait_ready(d) {
            Ok(r) => done.push(r),
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// port, connectivity

/// The profiles configured in this config home (`molt`, `molt-*`), with their ports.
fn configured_ports(config_home: &Path) -> Vec<(String, PathBuf, u16)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(config_home)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let profile = match name.strip_prefix("molt") {
            Some("") => None,
            Some(rest) => match rest.strip_prefix('-') {
                Some(p) => Some(p.to_owned()),
                None => continue,
            },
            None => continue,
        };
        let Ok(profile) = Profile::new(profile.as_deref()) else {
            continue;
        };
        let path = e.path().join("molt.toml");
        if let Ok(c) = Config::load(&path) {
            out.push((profile.to_string(), path, c.port(&profile)));
        }
    }
    out
}

fn check_port(d: &Doctor) -> Outcome {
    let port = d.ctx.config.port(&d.ctx.profile);
    let procs = host::processes();
    let listeners = host::listeners(&procs);
    let ours: Vec<u32> = host::molt_instances(&procs, &listeners)
        .into_iter()
        .filter(|i| i.config_path == d.ctx.config_path)
        .flat_map(|i| i.pids)
        .collect();
    let mut problems = Vec::new();
    let mut remedy = format!("ss -ltnp 'sport = :{port}'");
    for l in listeners.on_port(port) {
        let foreign: Vec<&host::Process> = l
            .pids
            .iter()
            .filter(|p| !ours.contains(p))
            .filter_map(|p| procs.iter().find(|q| q.pid == *p))
            .collect();
        if !foreign.is_empty() {
            let who: Vec<String> = foreign.iter().map(|p| p.describe()).collect();
            problems.push((
                Status::Fail,
                format!(
                    "port {port} ({}) is held by {}, not this profile's gateway",
                    l.addr,
                    who.join(", ")
                ),
            ));
            remedy = format!(
                "{remedy}; stop that process, or set gateway.port in {}",
                d.ctx.config_path.display()
            );
        }
    }
    let config_home = d
        .ctx
        .config_path
        .parent()
        .and_then(Path::parent)
        .map(Path::to_owned);
    for (profile, path, p) in config_home
        .as_deref()
        .map(configured_ports)
        .unwrap_or_default()
    {
        if p == port && path != d.ctx.config_path {
            problems.push((
                Status::Warn,
                format!(
                    "profile {profile} ({}) is configured with the same port {port}",
                    path.display()
                ),
            ));
            remedy = format!(
                "set a different gateway.port in {} or {}",
                d.ctx.config_path.display(),
                path.display()
            );
        }
    }
    match problems.iter().map(|p| p.0).max() {
        None => Outcome::ok(format!(
            "port {port}: {}",
            if listeners.on_port(port).next().is_some() {
                "held by this profile's gateway only"
            } else {
                "free, and no other profile is configured with it"
            }
        )),
        Some(worst) => Outcome::bad(
            worst,
            problems
                .into_iter()
                .map(|p| p.1)
                .collect::<Vec<_>>()
                .join("; "),
            remedy,
        ),
    }
}

fn check_connectivity(d: &Doctor) -> Outcome {
    let t0 = Instant::now();
    match request::<Health>(d.ctx, d.access, &AnyParams {}) {
        Ok(h) => Outcome::ok(format!(
            "handshake and health answered in {} ms (ok: {})",
            t0.elapsed().as_millis(),
            h.ok
        ))
        .details(serde_json::to_value(&h).unwrap_or_default()),
        Err(e) => Outcome::bad(
            Status::Fail,
            format!("no handshake: {e}"),
            format!("molt service status{pf}; molt service start{pf}", pf = d.pf),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// other gateways

fn addrs(a: &[SocketAddr]) -> String {
    if a.is_empty() {
        "no listener".into()
    } else {
        a.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn configured_word(c: Option<bool>) -> &'static str {
    match c {
        Some(true) => "auth configured",
        Some(false) => "NO auth",
        None => "auth unknown",
    }
}

fn check_other_gateways(d: &Doctor) -> Outcome {
    let procs = host::processes();
    let listeners = host::listeners(&procs);
    let mut lines = Vec::new();
    let mut exposed = Vec::new();
    let mut remedies = Vec::new();
    let mut details = Vec::new();
    for i in host::molt_instances(&procs, &listeners) {
        if i.config_path == d.ctx.config_path {
            continue;
        }
        let state = if i.pids.is_empty() {
            "not running".to_owned()
        } else {
            format!(
                "pid {}",
                i.pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let configured = i.configured();
        lines.push(format!(
            "molt profile {} ({}, {state}, {}, {})",
            i.profile,
            i.unit.as_deref().unwrap_or("no unit"),
            addrs(&i.listeners),
            configured_word(configured)
        ));
        if i.listeners
            .iter()
            .any(|a| molt_audit::proc_net::is_exposed(a.ip()))
        {
            exposed.push(format!("molt profile {}", i.profile));
            remedies.push(format!(
                "molt --profile {} security audit --deep",
                i.profile
            ));
        }
        details.push(json!({"kind": "molt", "profile": i.profile, "unit": i.unit,
            "pids": i.pids, "listeners": i.listeners, "configured": configured,
            "configPath": i.config_path}));
    }
    let openclaw = host::openclaw_instances(&procs, &listeners);
    let openclaw_state = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".openclaw"))
        .filter(|d| d.join("openclaw.json").is_file());
    // OpenClaw found, running or not: its agents, sessions and jobs can come along.
    let import_hint = (!openclaw.is_empty() || openclaw_state.is_some()).then(|| {
        " To bring its config, agents, sessions and cron jobs to molt: `molt import openclaw \
         --dry-run`, then without --dry-run."
            .to_owned()
    });
    if openclaw.is_empty()
        && let Some(dir) = &openclaw_state
    {
        lines.push(format!("OpenClaw state in {} (not running)", dir.display()));
        details.push(json!({"kind": "openclaw-state", "dir": dir}));
    }
    for o in openclaw {
        let what = o
            .unit
            .clone()
            .or_else(|| o.pid.map(|p| format!("pid {p}")))
            .unwrap_or_default();
        lines.push(format!(
            "OpenClaw {what} ({}, {})",
            addrs(&o.listeners),
            configured_word(o.configured)
        ));
        let open = o
            .listeners
            .iter()
            .any(|a| molt_audit::proc_net::is_exposed(a.ip()));
        if open || (o.pid.is_some() && o.configured == Some(false)) {
            exposed.push(format!("OpenClaw {what}"));
            remedies.push(match (&o.unit, o.pid) {
                (Some(u), _) => format!("systemctl --user disable --now {u}"),
                (None, Some(p)) => format!("kill {p}"),
                _ => "molt security audit --deep".into(),
            });
        }
        details.push(json!({"kind": "openclaw", "pid": o.pid, "unit": o.unit,
            "unitFile": o.unit_file, "listeners": o.listeners, "configured": o.configured,
            "configPath": o.config_path, "command": o.command}));
    }
    match host::docker_ps() {
        Ok(text) => {
            for line in text.lines() {
                let mut cols = line.split('\t');
                let (name, ports, image) = (
                    cols.next().unwrap_or(""),
                    cols.next().unwrap_or(""),
                    cols.next().unwrap_or(""),
                );
                let hay = format!("{name} {image}").to_ascii_lowercase();
                if !["openclaw", "molt", "clawd", "agent-gateway"]
                    .iter()
                    .any(|k| hay.contains(k))
                {
                    continue;
                }
                let ps = molt_audit::docker::parse_ps(&format!("{name}\t{ports}"));
                let published: Vec<String> = ps
                    .published
                    .iter()
                    .map(|p| format!("{}:{}", p.host_ip, p.host_ports.dashed()))
                    .collect();
                lines.push(format!(
                    "container {name} ({image}, {}, auth unknown)",
                    if published.is_empty() {
                        "nothing published".to_owned()
                    } else {
                        published.join(", ")
                    }
                ));
                if ps
                    .published
                    .iter()
                    .any(|p| !molt_audit::proc_net::is_loopback(p.host_ip))
                {
                    exposed.push(format!("container {name}"));
                    remedies.push(format!("docker stop {name}"));
                }
                details.push(json!({"kind": "container", "name": name, "image": image,
                    "published": published}));
            }
        }
        Err(why) => details.push(json!({"kind": "docker", "unavailable": why})),
    }
    let details = Value::Array(details);
    if lines.is_empty() {
        return Outcome::ok("no other molt profile, OpenClaw gateway or agent container")
            .details(details);
    }
    if exposed.is_empty() {
        return Outcome::ok(format!(
            "{} other gateway(s), none exposed: {}.{}",
            lines.len(),
            lines.join("; "),
            import_hint.as_deref().unwrap_or("")
        ))
        .details(details);
    }
    Outcome::bad(
        Status::Warn,
        format!(
            "{} other gateway(s); reachable from the network or without auth: {}. All: {}.{}",
            lines.len(),
            exposed.join(", "),
            lines.join("; "),
            import_hint.as_deref().unwrap_or("")
        ),
        remedies.join(" && "),
    )
    .details(details)
}

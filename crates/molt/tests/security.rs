//! Secure by default: the generated token, who it lets in (and who not, including another
//! Unix user on the same host), explicit auth `none`, and a listener that a flood of idle
//! connections cannot take down.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The finding with `id` in `molt security audit --json`, if any.
fn audit_finding(home: &Home, id: &str) -> Option<Value> {
    let out = home.cli(&["security", "audit", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit printed non-JSON ({e}): {}", text(&out)));
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
}

/// The check with `id` in `molt doctor --json` (or `--fix --json`).
fn doctor_check(home: &Home, args: &[&str], id: &str) -> Value {
    let out = home.cli(args);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed non-JSON ({e}): {}", text(&out)));
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id} check in {report}"))
}

#[test]
fn with_no_config_the_owner_cli_needs_no_flags_and_the_token_is_stable() {
    let home = Home::new(MOLT, "");
    let mut gw = home.start();
    let path = home.state_dir().join("gateway.token");
    let token = home.token();
    assert_eq!(token.len(), 64, "256 bits as hex");
    assert_eq!(mode(&path), 0o600);
    let inode = || {
        std::fs::metadata(&path)
            .map(|m| (m.ino(), m.mtime()))
            .unwrap()
    };
    use std::os::unix::fs::MetadataExt;
    let created = inode();

    // The owner's CLI reads the token file: status, a run, doctor's connectivity.
    let status = home.cli_json(&["status", "--json"]);
    assert_eq!(status["state"], "serving");
    let id = home.cli_ok(&["run", "exec", "--", "true"]);
    let id = id.trim();
    wait_for("the run to succeed", Duration::from_secs(20), || {
        (run_state(&home, id)["state"] == "succeeded").then_some(())
    });
    let connectivity = doctor_check(&home, &["doctor", "--json"], "connectivity");
    assert_eq!(connectivity["status"], "ok", "{connectivity}");

    // The same token after a handover and after a stop and start.
    home.cli_ok(&["gateway", "restart"]);
    wait_for("the successor", Duration::from_secs(20), || {
        let s = home.cli(&["status", "--json"]);
        let s: Value = serde_json::from_slice(&s.stdout).ok()?;
        (s["pid"].as_i64() != Some(i64::from(gw.pid()))).then_some(())
    });
    assert_eq!(gw.wait_exit(Duration::from_secs(20)).0, Some(0));
    assert_eq!(home.token(), token);
    let pid = home.cli_json(&["status", "--json"])["pid"]
        .as_i64()
        .unwrap();
    // SAFETY: signalling the successor this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for("the successor to exit", Duration::from_secs(20), || {
        http_get(home.port, "/healthz").is_none().then_some(())
    });
    let _gw = home.start();
    assert_eq!(home.token(), token);
    assert_eq!(inode(), created, "the token file is written once");
    assert_eq!(mode(&path), 0o600);
    home.cli_ok(&["status"]);

    // `--reveal-token` prints it for the owner; `config show` never does.
    assert_eq!(
        home.cli_ok(&["config", "show", "--reveal-token"]).trim(),
        token
    );
    let shown = home.cli_ok(&["config", "show"]);
    assert!(!shown.contains(&token), "{shown}");
    assert!(shown.contains("gateway.token"), "{shown}");
    // Nor does the log.
    let log = home.stderr_log()
        + &std::fs::read_to_string(home.state_dir().join("logs/gateway.log")).unwrap_or_default();
    assert!(!log.contains(&token), "the token reached the log");

    // A wrong token is refused, and the error says what to do.
    let out = home.cli(&["--token", "not-the-token", "status"]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("AUTH_TOKEN_MISMATCH"), "{err}");
    assert!(err.contains("--reveal-token"), "{err}");
}

#[test]
fn another_unix_user_is_refused_without_the_token() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: switching to another Unix user needs root");
        return;
    }
    let home = Home::new(MOLT, "");
    let _gw = home.start();
    let token = home.token();

    // A copy of the binary, and a home, that `nobody` can use.
    let other = tempfile::tempdir().unwrap();
    std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = other.path().join("molt");
    std::fs::copy(MOLT, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody_home = other.path().join("home");
    std::fs::create_dir(&nobody_home).unwrap();
    std::os::unix::fs::chown(&nobody_home, Some(NOBODY), Some(NOBODY)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new(&bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &nobody_home)
            .arg("--url")
            .arg(format!("ws://127.0.0.1:{}", home.port))
            .args(args)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let marker = home.path().join("ran-as-nobody");
    let cmd = format!("touch {}", marker.display());
    for args in [
        &["run", "exec", "--", "sh", "-c", cmd.as_str()][..],
        &["status"],
    ] {
        let out = as_nobody(args);
        let err = text(&out);
        assert!(!out.status.success(), "nobody ran {args:?}: {err}");
        assert!(err.contains("AUTH_TOKEN_MISSING"), "{err}");
        assert!(
            err.contains("--token") && err.contains("ask the owner"),
            "the refusal names the fix: {err}"
        );
    }
    // Reading the owner's token file does not work either: the state dir is 0700.
    let out = Command::new("/bin/cat")
        .arg(home.state_dir().join("gateway.token"))
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody read the token file");
    let tasks = home.cli_json(&["tasks", "list", "--json"]);
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0), "{tasks}");
    assert!(!marker.exists());

    // Given the token, the same user gets in: the refusal was about the secret only.
    let out = as_nobody(&["--token", &token, "status"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn explicit_auth_none_works_on_loopback_with_a_warning_and_an_audit_finding() {
    let home = Home::new(MOLT, "[gateway.auth]\nmode = \"none\"\n");
    let _gw = home.start();
    assert!(!home.state_dir().join("gateway.token").exists());
    home.cli_ok(&["status"]);
    let log = home.stderr_log();
    assert!(
        log.contains("gateway.auth.mode = \\\"none\\\"") || log.contains("auth.mode = \"none\""),
        "no start-up warning in: {log}"
    );
    let finding = audit_finding(&home, "gateway.auth-none").expect("an auth-none finding");
    let severity = finding["severity"].as_str().unwrap();
    assert!(matches!(severity, "warn" | "critical"), "{finding}");

    // With a process running as another user, the finding is critical.
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut other = Command::new("/bin/sleep")
            .arg("30")
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .unwrap();
        let finding = audit_finding(&home, "gateway.auth-none").expect("finding");
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(finding["severity"], "critical", "{finding}");
        assert!(
            finding["detail"].as_str().unwrap().contains("nobody"),
            "{finding}"
        );
    }

    // A non-loopback bind stays refused.
    let out = home.cli(&["gateway", "run", "--bind", "0.0.0.0"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
}

#[test]
fn a_token_file_readable_by_others_is_reported_and_fixed() {
    let home = Home::new(MOLT, "");
    let _gw = home.start();
    let path = home.state_dir().join("gateway.token");
    home.token();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let finding =
        audit_finding(&home, "gateway.credential-permissions").expect("a permissions finding");
    assert!(
        finding["title"].as_str().unwrap().contains("gateway.token"),
        "{finding}"
    );
    assert_eq!(finding["severity"], "critical", "{finding}");
    let check = doctor_check(&home, &["doctor", "--json"], "permissions");
    assert_eq!(check["status"], "fail", "{check}");
    let fixed = doctor_check(&home, &["doctor", "--fix", "--json"], "permissions");
    assert_eq!(fixed["status"], "ok", "{fixed}");
    assert_eq!(mode(&path), 0o600);
    assert!(audit_finding(&home, "gateway.credential-permissions").is_none());
}

/// Raises this process's open-file limit to at least `n` (tests open many sockets).
fn raise_own_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_cur.max(n.min(lim.rlim_max));
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= n,
        "the test needs {n} open files; the hard limit is {}",
        lim.rlim_max
    );
}

/// Spawns the home's gateway with its open-file limit (soft and hard) at `nofile`.
fn spawn_with_nofile(home: &Home, nofile: u64) -> Gateway {
    let g = home.spawn_with(&[], |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    g.wait_ready();
    g
}

/// Opens `n` TCP connections that never send a byte.
fn open_idle(port: u16, n: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "opened only {} of {n}",
            out.len()
        );
        if let Ok(s) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        {
            out.push(s);
        }
    }
    out
}

/// Whether the server has closed `s` (EOF or reset), without blocking.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn a_flood_of_idle_connections_leaves_probes_and_the_owner_cli_working() {
    const FLOOD: usize = 5000;
    const HEADER_TIMEOUT_MS: u64 = 3000;
    raise_own_nofile(FLOOD as u64 + 1000);
    let home = Home::new(
        MOLT,
        &format!("[gateway]\nheader_timeout_ms = {HEADER_TIMEOUT_MS}\n"),
    );
    let gw = spawn_with_nofile(&home, 4096);
    home.token();

    let t0 = Instant::now();
    let mut idle = open_idle(home.port, FLOOD);
    let opened_in = t0.elapsed();

    // During the flood: the probe and the owner's CLI answer within a second.
    let t = Instant::now();
    let (code, _) = http_get(home.port, "/readyz").expect("readyz answers during the flood");
    let readyz = t.elapsed();
    assert_eq!(code, 200);
    let t = Instant::now();
    let status = home.cli_json(&["status", "--json"]);
    let cli = t.elapsed();
    assert_eq!(status["state"], "serving");
    eprintln!(
        "flood of {FLOOD} idle connections opened in {opened_in:?}; readyz {readyz:?}, \
         molt status {cli:?}, unauthenticated {}",
        status["unauthenticated"]
    );
    assert!(readyz < Duration::from_secs(1), "readyz took {readyz:?}");
    assert!(cli < Duration::from_secs(1), "molt status took {cli:?}");
    let pool = &status["unauthenticated"];
    assert!(
        pool["open"].as_u64().unwrap() <= pool["max"].as_u64().unwrap(),
        "{pool}"
    );
    assert!(pool["max"].as_u64().unwrap() < 4096, "{pool}");

    // After the header timeout, every idle connection is closed.
    let deadline = Instant::now() + Duration::from_millis(HEADER_TIMEOUT_MS + 10_000);
    loop {
        idle.retain_mut(|s| !closed_by_server(s));
        if idle.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} idle connections still open {:?} after the flood",
            idle.len(),
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss = proc_status_kib(gw.pid(), "VmHWM:").expect("VmHWM");
    eprintln!("gateway peak RSS {} MiB", rss / 1024);
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
    assert_eq!(http_get(home.port, "/readyz").map(|r| r.0), Some(200));
}

#[test]
fn accept_errors_are_logged_at_most_once_a_second() {
    raise_own_nofile(3000);
    // A pool larger than the file limit, so the accept loop hits EMFILE: 300 connections
    // against 256 descriptors; the ones it cannot take wait in the listen backlog.
    let home = Home::new(
        MOLT,
        "[gateway]\nmax_unauthenticated = 2000\nheader_timeout_ms = 60000\n",
    );
    let gw = spawn_with_nofile(&home, 256);
    let idle = open_idle(home.port, 300);
    wait_for(
        "an accept failure in the log",
        Duration::from_secs(20),
        || home.stderr_log().contains("accept failed").then_some(()),
    );
    // Measure the logging rate over a few seconds of continuous failures.
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let elapsed = t0.elapsed();
    drop(idle);
    wait_for("readyz after the flood", Duration::from_secs(20), || {
        http_get(home.port, "/readyz").filter(|(c, _)| *c == 200)
    });
    let log = home.stderr_log();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    eprintln!("{lines} accept-failed lines in {elapsed:?}");
    assert!(lines >= 1, "EMFILE was logged: {log}");
    assert!(
        lines as u64 <= elapsed.as_secs() + 3,
        "{lines} lines in {elapsed:?}"
    );
    assert!(log.contains("failures="), "the line carries a count: {log}");
    drop(gw);
}

/// `tools.exec.sandbox = "off"` is allowed, and the audit and doctor both say so; the default
/// (on) raises nothing.
#[test]
fn an_unsandboxed_exec_is_an_audit_warning_and_a_doctor_warning() {
    let home = Home::new(MOLT, "");
    assert!(audit_finding(&home, "agent.exec-sandbox-off").is_none());
    let sandbox = doctor_check(&home, &["doctor", "--json"], "sandbox");
    assert_eq!(sandbox["status"], "ok", "{sandbox:#}");
    assert!(
        sandbox["finding"]
            .as_str()
            .unwrap()
            .contains("Landlock ABI"),
        "{sandbox:#}"
    );

    let home = Home::new(MOLT, "[agents.ops.tools.exec]\nsandbox = \"off\"\n");
    let f = audit_finding(&home, "agent.exec-sandbox-off").expect("the audit warns");
    assert_eq!(f["severity"], "warn", "{f:#}");
    assert!(f["title"].as_str().unwrap().contains("ops"), "{f:#}");
    let sandbox = doctor_check(&home, &["doctor", "--json"], "sandbox");
    assert_eq!(sandbox["status"], "warn", "{sandbox:#}");
}

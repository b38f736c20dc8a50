//! Shared test harness: spawns the real `molt` binary (built once by cargo) in a private
//! HOME, talks to it over loopback only, and polls for conditions with deadlines.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MOLT: &str = env!("CARGO_BIN_EXE_molt");

/// Polls `f` every 25 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A free loopback port (the OS picks it; we release it for the gateway).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `GET path` on 127.0.0.1:port; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A private home with a config file, for one or more gateway processes.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Home {
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let h = Self { dir, port };
        std::fs::create_dir_all(h.config_path().parent().unwrap()).unwrap();
        std::fs::write(h.config_path(), config).unwrap();
        h
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join(".config/molt/molt.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".local/state/molt")
    }

    /// A `molt` command with this home's environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(MOLT);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("MOLT_GATEWAY_PORT", self.port.to_string())
            .env("MOLT_LOG", "info");
        c
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn molt")
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "molt {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("molt {args:?} printed non-JSON ({e}): {out}"))
    }

    /// Starts `molt gateway run` and waits until `/readyz` is 200.
    pub fn start(&self) -> Gateway {
        let g = self.spawn(&[]);
        g.wait_ready();
        g
    }

    /// Spawns `molt gateway run` with extra args, without waiting.
    pub fn spawn(&self, extra: &[&str]) -> Gateway {
        self.spawn_with(extra, |_| {})
    }

    /// As [`Home::spawn`], with `configure` applied to the command first (limits, say).
    pub fn spawn_with(&self, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Gateway {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("gateway.stderr"))
            .unwrap();
        let mut cmd = self.cmd();
        cmd.args(["gateway", "run"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        configure(&mut cmd);
        let child = cmd.spawn().expect("spawn gateway");
        Gateway {
            child: Some(child),
            port: self.port,
        }
    }

    /// The token the gateway generated at its first start (`<state>/gateway.token`).
    pub fn token(&self) -> String {
        let path = self.state_dir().join("gateway.token");
        wait_for("the gateway token file", Duration::from_secs(20), || {
            std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        })
    }

    /// Client options for this home's gateway, with its generated token.
    pub fn client_options(&self) -> molt_client::ClientOptions {
        let mut o = molt_client::ClientOptions::new(format!("ws://127.0.0.1:{}", self.port));
        o.token = Some(self.token());
        o
    }

    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.path().join("gateway.stderr")).unwrap_or_default()
    }
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub port: u16,
}

impl Gateway {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn wait_ready(&self) {
        wait_for("readyz 200", Duration::from_secs(20), || {
            http_get(self.port, "/readyz").filter(|(s, _)| *s == 200)
        });
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child has no memory-safety preconditions.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for exit; returns (exit code, time waited).
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        let child = self.child.as_mut().expect("running");
        let status = wait_for("gateway exit", timeout, || child.try_wait().ok().flatten());
        self.child = None;
        (status.code(), t0.elapsed())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A shell command whose first attempt blocks for `first_secs` and whose later attempts finish
/// at once. Each attempt appends a line to `marker`, so tests can count real executions.
pub fn attempt_aware(marker: &Path, first_secs: u32) -> Vec<String> {
    let m = marker.display();
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo start >> {m}; n=$(wc -l < {m}); if [ $n -eq 1 ]; then sleep {first_secs}; fi; echo done >> {m}.done"
        ),
    ]
}

pub fn run_state(home: &Home, id: &str) -> Value {
    home.cli_json(&["tasks", "get", id, "--json"])
}

/// Whether a systemd user manager is available (the test runs under
/// `scripts/with-systemd-user.sh`). In CI its absence is a failure, never a skip.
pub fn systemd_available() -> bool {
    if std::env::var_os("MOLT_TEST_SYSTEMD").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs a systemd user manager: run it under scripts/with-systemd-user.sh"
    );
    eprintln!("no systemd user manager (run under scripts/with-systemd-user.sh); skipping");
    false
}

/// `systemctl --user ARGS`.
pub fn systemctl(args: &[&str]) -> Output {
    Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .expect("run systemctl")
}

/// `systemctl --user show` of the given properties.
pub fn unit_show(unit: &str, props: &[&str]) -> std::collections::HashMap<String, String> {
    let mut args = vec!["show", unit];
    for p in props {
        args.push("-p");
        args.push(p);
    }
    let out = systemctl(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// Writes a user unit for this home's gateway into the manager's unit directory.
pub fn write_unit(home: &Home, unit: &str, extra: &str) {
    let dir = PathBuf::from(std::env::var("XDG_CONFIG_HOME").expect("XDG_CONFIG_HOME"))
        .join("systemd/user");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[Unit]\nDescription=molt test gateway\n\n[Service]\nType=notify\nNotifyAccess=all\n\
         ExecStart={MOLT} gateway run\nEnvironment=HOME={home} MOLT_GATEWAY_PORT={port} MOLT_LOG=info\n\
         Restart=always\nRestartPreventExitStatus=78\nTimeoutStopSec=15\nKillMode=mixed\n{extra}\n",
        home = home.path().display(),
        port = home.port,
    );
    std::fs::write(dir.join(unit), text).unwrap();
    let out = systemctl(&["daemon-reload"]);
    assert!(out.status.success(), "{out:?}");
}

/// A home for a profiled gateway run as a service: the config lives where the service will
/// look for it (`$XDG_CONFIG_HOME/molt-P/molt.toml`, the user manager's XDG_CONFIG_HOME).
pub struct ServiceHome {
    pub home: Home,
    pub profile: String,
}

impl ServiceHome {
    pub fn new(prefix: &str, config: &str) -> Self {
        let home = Home::new("");
        let profile = format!("{prefix}{}", home.port);
        let xdg = PathBuf::from(std::env::var("XDG_CONFIG_HOME").expect("XDG_CONFIG_HOME"));
        let dir = xdg.join(format!("molt-{profile}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("molt.toml"),
            format!("[gateway]\nport = {}\n{config}", home.port),
        )
        .unwrap();
        Self { home, profile }
    }

    pub fn unit(&self) -> String {
        format!("molt-gateway-{}.service", self.profile)
    }

    /// Client options for this profile's gateway, with the token the owner's CLI reveals.
    pub fn client_options(&self) -> molt_client::ClientOptions {
        let path = self
            .home
            .path()
            .join(format!(".local/state/molt-{}/gateway.token", self.profile));
        wait_for("the gateway token file", Duration::from_secs(20), || {
            path.exists().then_some(())
        });
        let token = self.molt_ok(&["config", "show", "--reveal-token"]);
        let mut o = molt_client::ClientOptions::new(format!("ws://127.0.0.1:{}", self.home.port));
        o.token = Some(token.trim().to_owned());
        o
    }

    pub fn unit_file(&self) -> PathBuf {
        PathBuf::from(std::env::var("XDG_CONFIG_HOME").unwrap())
            .join("systemd/user")
            .join(self.unit())
    }

    /// `molt --profile P ARGS` with the user manager's environment.
    pub fn molt(&self, args: &[&str]) -> Output {
        let mut c = Command::new(MOLT);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("MOLT_LOG", "info");
        for k in ["XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"] {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.arg("--profile")
            .arg(&self.profile)
            .args(args)
            .output()
            .expect("spawn molt")
    }

    pub fn molt_ok(&self, args: &[&str]) -> String {
        let out = self.molt(args);
        assert!(
            out.status.success(),
            "molt {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn molt_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.molt(args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("molt {args:?}: {e}: {out:?}"))
    }

    pub fn show(&self, props: &[&str]) -> std::collections::HashMap<String, String> {
        unit_show(&self.unit(), props)
    }
}

/// A test's profile leaves nothing behind in the shared user manager: its unit is stopped and
/// removed, and its config dir goes, so a later run cannot see a stale profile (doctor's port
/// check would count a stale config that names a reused port).
impl Drop for ServiceHome {
    fn drop(&mut self) {
        // No panics here: this may run while a failed test unwinds.
        let quiet = |args: &[&str]| {
            let _ = Command::new("systemctl").arg("--user").args(args).output();
        };
        quiet(&["stop", &self.unit()]);
        if std::fs::remove_file(self.unit_file()).is_ok() {
            quiet(&["daemon-reload"]);
        }
        if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME") {
            let _ =
                std::fs::remove_dir_all(PathBuf::from(xdg).join(format!("molt-{}", self.profile)));
        }
    }
}

/// Kills every process whose environment names `home` as HOME: gateways, handover
/// successors (nobody's child), and the steps they started. Test homes call it on drop, so a
/// failing test leaves nothing running.
pub fn kill_processes_of(home: &Path) {
    let needle = format!("HOME={}\0", home.display());
    for _ in 0..3 {
        let mut found = false;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let Ok(env) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found = true;
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !found {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        kill_processes_of(self.dir.path());
    }
}

/// A real molt binary built from this source with `MOLT_BUILD_VERSION=version`, for tests that
/// need a second installed version. See [`molt_variant`].
pub fn molt_with_version(version: &str) -> PathBuf {
    molt_variant(version, None)
}

/// A real molt binary built from this source with `MOLT_BUILD_VERSION=version` and, when
/// `fault` is given, `MOLT_BUILD_FAULT=fault` (a real broken build: `check-fails`,
/// `exit-at-start`, `never-ready`). Never a copy with a faked version.
///
/// All variants build, one after another, in one shared target dir
/// (`CARGO_TARGET_TMPDIR/molt-variants`), so only the final crate recompiles per variant. Each
/// result is copied to `CARGO_TARGET_TMPDIR/molt-variant-<v>[-<fault>]/molt` with a stamp: the
/// `--version` line of the test's own molt, whose build id hashes every source file. A copy
/// whose stamp matches is reused; a source change rebuilds. Test binaries run in parallel, so
/// the work is serialised by a mutex (threads) and an flock (processes).
pub fn molt_variant(version: &str, fault: Option<&str>) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.join("molt-variants");
    std::fs::create_dir_all(&target).expect("create the variants target dir");
    let _flock = FileLock::acquire(&target.join("variants.lock"));

    let name = match fault {
        Some(f) => format!("molt-variant-{version}-{f}"),
        None => format!("molt-variant-{version}"),
    };
    let dir = tmp.join(name);
    let bin = dir.join("molt");
    let stamp_file = dir.join("stamp");
    let stamp = Command::new(MOLT)
        .arg("--version")
        .output()
        .expect("run the test's molt --version");
    assert!(stamp.status.success(), "{stamp:?}");
    let stamp = String::from_utf8_lossy(&stamp.stdout).into_owned();
    let fresh = bin.exists() && std::fs::read_to_string(&stamp_file).ok().as_ref() == Some(&stamp);
    if !fresh {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        // The test's own CARGO_* variables would make the nested build differ from a plain one.
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_") && k != "CARGO_HOME" {
                c.env_remove(k);
            }
        }
        c.env("MOLT_BUILD_VERSION", version);
        match fault {
            Some(f) => c.env("MOLT_BUILD_FAULT", f),
            None => c.env_remove("MOLT_BUILD_FAULT"),
        };
        let t0 = Instant::now();
        let out = c
            .args(["build", "-p", "molt", "--bin", "molt", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "building molt {version} {fault:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("built molt {version} {fault:?} in {:?}", t0.elapsed());
        std::fs::create_dir_all(&dir).unwrap();
        // Copy beside, then rename: a process may still run the previous copy.
        let part = dir.join("molt.part");
        std::fs::copy(target.join("debug/molt"), &part).expect("copy the variant");
        std::fs::rename(&part, &bin).unwrap();
        std::fs::write(&stamp_file, &stamp).unwrap();
    }
    let printed = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("run it");
    assert!(
        String::from_utf8_lossy(&printed.stdout).starts_with(&format!("molt {version} (")),
        "{printed:?}"
    );
    bin
}

/// An exclusive flock(2) on a file, released on drop.
pub struct FileLock(std::fs::File);

impl FileLock {
    pub fn acquire(path: &Path) -> Self {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("open the lock file");
        loop {
            // SAFETY: flock(2) on a descriptor we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Self(f);
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "flock: {e}");
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

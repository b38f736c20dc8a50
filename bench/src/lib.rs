//! Benchmarks for molt: each binary in `src/bin` spawns the real release binary and prints
//! its figures.
//!
//! Every gateway runs in a private temporary HOME on a free loopback port, is talked to over
//! 127.0.0.1 only, and is stopped (SIGTERM, then SIGKILL if it hangs) when its [`Gateway`]
//! handle drops. Step processes it may leave behind are found by their HOME and killed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use molt_client::ClientOptions;

/// The `molt` binary under test: `$MOLT_BIN`, or `<workspace>/target/release/molt`.
pub fn molt_bin() -> PathBuf {
    let p = std::env::var_os("MOLT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target/release/molt")
        });
    assert!(
        p.is_file(),
        "molt binary not found at {}: build it with `cargo build --release -p molt` or set MOLT_BIN",
        p.display()
    );
    p
}

/// A free loopback port (the OS picks it; we release it for the gateway).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// `GET path` on 127.0.0.1:port with a raw HTTP/1.1 request; returns (status, body).
/// `None` if the port does not accept or the answer is not HTTP.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::with_capacity(1024);
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The status code of `GET path`; see [`http_get`].
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(status, _)| status)
}

/// A private HOME for one gateway: `$HOME/.config/molt/molt.toml` holds `config` (no file
/// when `config` is `None`), state goes to `$HOME/.local/state/molt`.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Home {
    pub fn new(config: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("molt-bench-")
            .tempdir()
            .expect("create a temp HOME");
        let h = Self {
            dir,
            port: free_port(),
        };
        if let Some(text) = config {
            let path = h.config_path();
            std::fs::create_dir_all(path.parent().expect("config dir")).expect("create config dir");
            std::fs::write(&path, text).expect("write molt.toml");
        }
        h
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join(".config/molt/molt.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.path().join("gateway.stderr")
    }

    /// A `molt` command with only this home's environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(molt_bin());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("MOLT_GATEWAY_PORT", self.port.to_string())
            .env("MOLT_LOG", "info");
        c
    }

    /// Spawns `molt gateway run` (stderr to `$HOME/gateway.stderr`) without waiting.
    /// Returns the handle and the instant just before the exec.
    pub fn spawn(&self) -> (Gateway, Instant) {
        self.spawn_with(|_| {})
    }

    /// As [`Home::spawn`], with `configure` applied to the command first (limits, say).
    pub fn spawn_with(&self, configure: impl FnOnce(&mut Command)) -> (Gateway, Instant) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open gateway.stderr");
        let mut cmd = self.cmd();
        cmd.args(["gateway", "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        configure(&mut cmd);
        let t0 = Instant::now();
        let child = cmd.spawn().expect("spawn molt gateway run");
        (
            Gateway {
                child: Some(child),
                port: self.port,
                home: self.path().to_owned(),
            },
            t0,
        )
    }

    /// Spawns the gateway and waits (polling every 2 ms, up to 30 s) for `/readyz` 200.
    pub fn start(&self) -> Gateway {
        let (mut g, _) = self.spawn();
        g.wait_ready(Duration::from_secs(30), Duration::from_millis(2));
        g
    }

    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `ws://127.0.0.1:<port>` client options without a device identity (no pairing), with
    /// the token the gateway generated at its first start (when the config sets no auth).
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(format!("ws://127.0.0.1:{}", self.port));
        let token_file = self.path().join(".local/state/molt/gateway.token");
        o.token = std::fs::read_to_string(token_file)
            .ok()
            .map(|t| t.trim().to_owned());
        o.identity_file = None;
        o.reconnect_for = Duration::ZERO;
        o.request_timeout = Duration::from_secs(30);
        o
    }
}

/// A running gateway process. Dropping it stops it: SIGTERM, up to 20 s, then SIGKILL; then
/// any process still carrying its HOME (a step it left behind) is killed too.
pub struct Gateway {
    pub child: Option<Child>,
    pub port: u16,
    home: PathBuf,
}

impl Gateway {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Polls `/readyz` every `every` until it answers 200; returns the time waited.
    /// Panics (after killing the gateway) if the gateway exits or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration, every: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if http_status(self.port, "/readyz") == Some(200) {
                return t0.elapsed();
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "gateway exited before ready ({st}); log: {}",
                    self.home.join("gateway.stderr").display()
                );
            }
            assert!(
                t0.elapsed() < timeout,
                "gateway not ready after {timeout:?}; log: {}",
                self.home.join("gateway.stderr").display()
            );
            std::thread::sleep(every);
        }
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: kill(2) on our own child; no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// VmRSS of the gateway in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:").expect("read VmRSS of the gateway")
    }

    /// Waits for exit, polling every 1 ms; returns (exit code or None if killed by a signal,
    /// time waited from the call). `None` overall if it did not exit within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(Option<i32>, Duration)> {
        let t0 = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let took = t0.elapsed();
                self.child = None;
                return Some((st.code(), took));
            }
            if t0.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGTERM, then waits; returns (exit code, time to exit).
    pub fn terminate(&mut self, timeout: Duration) -> Option<(Option<i32>, Duration)> {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout).map(|(c, _)| (c, t0.elapsed()))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.is_some() && self.terminate(Duration::from_secs(20)).is_none() {
            eprintln!(
                "gateway {} ignored SIGTERM for 20 s; killing it",
                self.pid()
            );
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let n = kill_strays(&self.home);
        if n > 0 {
            eprintln!("killed {n} leftover process(es) that ran under the bench HOME");
        }
    }
}

/// A `KiB` field (e.g. `VmRSS:`) of /proc/<pid>/status.
pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A plain field (e.g. `Threads:`) of /proc/<pid>/status.
pub fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

/// Open file descriptors of a process.
pub fn fd_count(pid: i32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Pids (other than this process) whose environment has `HOME=<home>`.
pub fn procs_with_home(home: &Path) -> Vec<i32> {
    let needle = format!("HOME={}", home.display()).into_bytes();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs every process still running under `home`; returns how many there were.
pub fn kill_strays(home: &Path) -> usize {
    let pids = procs_with_home(home);
    for &pid in &pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    pids.len()
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Nearest-rank percentile (`p` in 0..=100) of a sorted, non-empty slice.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    assert!(!sorted.is_empty(), "percentile of nothing");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with 2 decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Microseconds, rounded.
pub fn us(d: Duration) -> String {
    format!("{}", d.as_micros())
}

/// KiB to MiB with 1 decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Prints the environment line every bench starts with.
pub fn print_header(name: &str) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let bin = molt_bin();
    let bin = bin.canonicalize().unwrap_or(bin);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "# molt-bench {name}: binary {}, {cpus} CPU(s), loadavg {}",
        bin.display(),
        load.join(" ")
    );
}

/// (lines, WARN lines, ERROR lines, the first few WARN/ERROR lines) of a gateway's stderr.
pub fn log_counts(home: &Home) -> (usize, usize, usize, Vec<String>) {
    let log = home.stderr_log();
    let mut counts = (0, 0, 0, Vec::new());
    for l in log.lines() {
        counts.0 += 1;
        let warn = l.contains(" WARN ");
        let error = l.contains(" ERROR ");
        counts.1 += usize::from(warn);
        counts.2 += usize::from(error);
        if (warn || error) && counts.3.len() < 3 {
            counts.3.push(l.trim().to_owned());
        }
    }
    counts
}

/// The message of a `tracing` text line (`<ts>  WARN <message> key=value ...`): the words
/// after the level, up to the first `key=value` field.
fn log_message(line: &str) -> String {
    let mut words = line
        .split_whitespace()
        .skip_while(|w| !matches!(*w, "WARN" | "ERROR"));
    let level = words.next().unwrap_or("?");
    let msg: Vec<&str> = words.take_while(|w| !w.contains('=')).collect();
    format!("{level} {}", msg.join(" "))
}

/// Prints how many WARN and ERROR lines a gateway wrote to stderr, then each distinct
/// WARN/ERROR message with its count.
pub fn print_log_summary(label: &str, home: &Home) {
    let (lines, warn, error, _) = log_counts(home);
    println!("# {label} gateway log: {lines} lines, {warn} WARN, {error} ERROR");
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for l in home
        .stderr_log()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        let m = log_message(l);
        match kinds.iter_mut().find(|(k, _)| *k == m) {
            Some((_, n)) => *n += 1,
            None => kinds.push((m, 1)),
        }
    }
    for (m, n) in kinds {
        println!("#   {n} x {m}");
    }
}

/// Checks that a systemd user manager answers (the benches that run molt as a service need
/// one); returns its unit directory, or the reason it cannot be used.
pub fn user_manager_unit_dir(bench: &str) -> Result<PathBuf, String> {
    let hint = format!(
        "run this bench under scripts/with-systemd-user.sh \
         (scripts/with-systemd-user.sh cargo run --release -p molt-bench --bin {bench})"
    );
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| format!("XDG_RUNTIME_DIR is not set: {hint}"))?;
    if !runtime.is_dir() {
        return Err(format!(
            "XDG_RUNTIME_DIR={} is not a directory: {hint}",
            runtime.display()
        ));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .ok_or_else(|| format!("XDG_CONFIG_HOME is not set: {hint}"))?;
    let out = Command::new("systemctl")
        .args(["--user", "is-system-running"])
        .output()
        .map_err(|e| format!("cannot run systemctl ({e}): {hint}"))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if state != "running" && state != "degraded" {
        return Err(format!(
            "no systemd user manager (is-system-running: {state:?}; {}): {hint}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(config.join("systemd/user"))
}

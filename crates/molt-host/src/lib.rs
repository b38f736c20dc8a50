//! What runs on this host, read from `/proc` and a few tools: processes, TCP listeners with
//! the processes that hold them, molt and OpenClaw gateways, and probes of a listener for an
//! agent control surface; whether a process still lives ([`process`]); private files and
//! directories ([`fsutil`]). The one place molt's checks, its updater and its gateway do host
//! I/O; the parsing is molt-audit's (pure), the I/O is here.
//!
//! Everything that inspects the host is best effort: a process that vanishes or cannot be
//! read is skipped, a missing tool is [`ToolRun::Missing`], and nothing here blocks longer
//! than its own timeout.

pub mod fsutil;
pub mod process;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use molt_audit::Finding;
use molt_audit::inode_owner;
use molt_audit::proc_net::{self, ProcNetTcp};
use molt_config::{Config, Profile};
use serde::Serialize;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Tools

/// The outcome of running a host tool.
#[derive(Debug, Clone)]
pub enum ToolRun {
    /// Not installed (or not executable).
    Missing,
    /// Did not finish in time; it was killed.
    TimedOut,
    /// Ran; `ok` is a zero exit.
    Ran {
        ok: bool,
        stdout: String,
        stderr: String,
    },
}

impl ToolRun {
    /// Stdout of a successful run.
    pub fn stdout_ok(&self) -> Option<&str> {
        match self {
            ToolRun::Ran {
                ok: true, stdout, ..
            } => Some(stdout),
            _ => None,
        }
    }

    /// Why there is no usable output, in a few words.
    pub fn why_not(&self, program: &str) -> String {
        match self {
            ToolRun::Missing => format!("{program} is not installed"),
            ToolRun::TimedOut => format!("{program} did not answer in time"),
            ToolRun::Ran { stderr, .. } => {
                let first = stderr.lines().next().unwrap_or("").trim();
                if first.is_empty() {
                    format!("{program} failed")
                } else {
                    format!("{program} failed: {first}")
                }
            }
        }
    }
}

/// Runs `program args` with stdin closed, capturing at most 4 MiB of each stream, and kills
/// it after `timeout` (a hung `docker` or `nft` must not hang the audit).
pub fn run_tool(program: &str, args: &[&str], timeout: Duration) -> ToolRun {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return ToolRun::Missing,
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(4 << 20).read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(s) => ToolRun::Ran {
            ok: s.success(),
            stdout,
            stderr,
        },
        None => ToolRun::TimedOut,
    }
}

/// The first of `candidates` that exists as a file (tools in /usr/sbin are not on every
/// user's PATH), else the bare name for a PATH lookup.
pub fn find_tool(name: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or(&name)
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Processes

/// One process, as far as `/proc` lets us see it.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: u32,
    pub uid: Option<u32>,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// The systemd unit it runs in, if any.
    pub unit: Option<String>,
}

impl Process {
    /// Reads one process from `/proc`; `None` when it is gone or unreadable.
    pub fn read(pid: u32) -> Option<Process> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let comm = std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|b| inode_owner::parse_cmdline(&b))
            .unwrap_or_default();
        let unit = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|c| inode_owner::unit_from_cgroup(&c));
        Some(Process {
            pid,
            uid: inode_owner::parse_status_uid(&status),
            comm,
            cmdline,
            unit,
        })
    }

    /// The process's environment (empty when it cannot be read).
    pub fn environ(&self) -> HashMap<String, String> {
        std::fs::read(format!("/proc/{}/environ", self.pid))
            .map(|b| {
                inode_owner::parse_cmdline(&b)
                    .into_iter()
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn argv0_name(&self) -> &str {
        self.cmdline
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }

    /// `molt gateway run ...` (the daemon, or a handover successor).
    pub fn is_molt_gateway(&self) -> bool {
        let molt = self.argv0_name() == "molt" || self.comm == "molt";
        molt && self
            .cmdline
            .windows(2)
            .any(|w| w[0] == "gateway" && w[1] == "run")
    }

    /// A node process whose command line mentions openclaw (the OpenClaw gateway), or a
    /// process that renamed itself `openclaw*`.
    pub fn is_openclaw(&self) -> bool {
        let mentions = self
            .cmdline
            .iter()
            .any(|a| a.to_ascii_lowercase().contains("openclaw"));
        let node = self.argv0_name().starts_with("node") || self.comm.starts_with("node");
        let renamed = self
            .argv0_name()
            .to_ascii_lowercase()
            .starts_with("openclaw")
            || self.comm.to_ascii_lowercase().starts_with("openclaw");
        (node && mentions) || renamed
    }

    /// `pid 42 (node /opt/openclaw/dist/index.js gateway)`, the command line cut to 120 chars.
    pub fn describe(&self) -> String {
        let mut cmd = self.cmdline.join(" ");
        if cmd.is_empty() {
            cmd = self.comm.clone();
        }
        if cmd.chars().count() > 120 {
            cmd = cmd.chars().take(117).collect::<String>() + "...";
        }
        format!("pid {} ({cmd})", self.pid)
    }
}

/// Every readable process, ascending by pid.
pub fn processes() -> Vec<Process> {
    let mut out: Vec<Process> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| inode_owner::parse_pid(&e.file_name().to_string_lossy()))
        .filter_map(Process::read)
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

// ---------------------------------------------------------------------------------------------
// Listeners

/// A listening TCP socket and the processes holding it.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub addr: SocketAddr,
    pub uid: u32,
    pub inode: u64,
    pub pids: Vec<u32>,
}

impl Listener {
    /// Whether it is reachable from other hosts (bound to a non-loopback address).
    pub fn is_exposed(&self) -> bool {
        proc_net::is_exposed(self.addr.ip())
    }
}

/// The listeners of this network namespace, plus findings about input that could not be read.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub all: Vec<Listener>,
    pub notes: Vec<Finding>,
    /// Processes whose fds could not be read (another user's, without root).
    pub unreadable: Vec<u32>,
}

impl Listeners {
    /// The listeners a pid holds.
    pub fn of_pid(&self, pid: u32) -> impl Iterator<Item = &Listener> {
        self.all.iter().filter(move |l| l.pids.contains(&pid))
    }

    /// The listeners on `port`.
    pub fn on_port(&self, port: u16) -> impl Iterator<Item = &Listener> {
        self.all.iter().filter(move |l| l.addr.port() == port)
    }
}

/// Reads `/proc/net/tcp` and `tcp6` and maps each listening socket to its processes through
/// their `/proc/<pid>/fd` links.
pub fn listeners(procs: &[Process]) -> Listeners {
    let mut table = ProcNetTcp::default();
    let mut notes = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let t = proc_net::parse(&text);
                notes.extend(t.parse_finding(file));
                table.merge(t);
            }
            // No IPv6 in this kernel or namespace is normal; no IPv4 table is not.
            Err(e) if file.ends_with('6') && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => notes.push(Finding::new(
                molt_audit::findings::ids::PARSE_FAILED,
                molt_audit::Severity::Warn,
                format!("could not read {file}"),
                format!("{e}: listeners are not known, so exposure cannot be checked."),
            )),
        }
    }
    let owners = inode_owner::owners(procs.iter().map(|p| p.pid), |pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
    });
    let mut all: Vec<Listener> = table
        .listeners()
        .map(|s| Listener {
            addr: s.local,
            uid: s.uid,
            inode: s.inode,
            pids: owners.pids(s.inode).to_vec(),
        })
        .collect();
    all.sort_by_key(|l| (l.addr.port(), l.addr.ip()));
    all.dedup_by_key(|l| l.inode);
    Listeners {
        all,
        notes,
        unreadable: owners.unreadable,
    }
}

// ---------------------------------------------------------------------------------------------
// Probes

/// What a listener answered when asked as an agent gateway would be.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// The address probed (loopback for a wildcard bind).
    pub target: Option<SocketAddr>,
    /// HTTP status of `GET /healthz`, if it spoke HTTP.
    pub healthz_status: Option<u16>,
    /// `version` and `buildId` from a JSON `/healthz` (molt's shape).
    pub version: Option<String>,
    pub build_id: Option<String>,
    /// The server sent a `connect.challenge` event first on a WebSocket upgrade: the
    /// OpenClaw gateway protocol (which molt speaks too).
    pub challenge: bool,
}

impl Probe {
    /// `molt`, `openclaw-protocol` (a challenge but no molt health document), or `None`.
    pub fn kind(&self) -> Option<&'static str> {
        match (self.challenge, self.build_id.is_some()) {
            (true, true) => Some("molt"),
            (true, false) => Some("openclaw-protocol"),
            (false, true) => Some("molt"),
            _ => None,
        }
    }
}

/// Where to connect to reach a socket bound to `addr`: loopback for the wildcard addresses,
/// the address itself otherwise (it is one of this host's).
pub fn probe_target(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        other => other,
    };
    SocketAddr::new(ip, addr.port())
}

const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

fn connect(target: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&target, PROBE_TIMEOUT).ok()?;
    s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    Some(s)
}

fn host_header(target: SocketAddr) -> String {
    match target.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", target.port()),
        ip => format!("{ip}:{}", target.port()),
    }
}

/// Reads until `\r\n\r\n` (or 16 KiB, or EOF): the response head and any body bytes after it.
fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while buf.len() < 16 * 1024 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(chunk.get(..n)?),
        }
    }
    None
}

/// `GET path` over HTTP/1.1; the status and (up to 64 KiB of) body.
pub fn http_get(target: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = connect(target)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n\r\n",
        host_header(target)
    )
    .ok()?;
    let (head, mut body) = read_head(&mut s)?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let _ = s.take(64 * 1024).read_to_end(&mut body);
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Opens a WebSocket and reads the first frame; true when it is a `connect.challenge` event.
/// No handshake is attempted: the probe never authenticates or sends a request.
fn ws_challenge(target: SocketAddr) -> bool {
    let Some(mut s) = connect(target) else {
        return false;
    };
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: bW9sdC1hdWRpdC1wcm9iZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        host_header(target)
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let Some((head, mut rest)) = read_head(&mut s) else {
        return false;
    };
    if head.split_whitespace().nth(1) != Some("101") {
        return false;
    }
    // One unmasked server frame: FIN/opcode, length (7 bits, or 16 bits after 126), payload.
    let mut need = |n: usize, rest: &mut Vec<u8>| {
        let mut chunk = [0u8; 1024];
        while rest.len() < n {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(k) => rest.extend_from_slice(chunk.get(..k).unwrap_or(&[])),
            }
        }
        true
    };
    if !need(2, &mut rest) {
        return false;
    }
    let (b0, b1) = (rest.first().copied(), rest.get(1).copied());
    let (Some(b0), Some(b1)) = (b0, b1) else {
        return false;
    };
    if b0 & 0x0f != 1 || b1 & 0x80 != 0 {
        return false; // not a text frame, or masked (a server never masks)
    }
    let (len, start) = match b1 & 0x7f {
        126 => {
            if !need(4, &mut rest) {
                return false;
            }
            let hi = rest.get(2).copied().unwrap_or(0);
            let lo = rest.get(3).copied().unwrap_or(0);
            (usize::from(u16::from_be_bytes([hi, lo])), 4)
        }
        127 => return false, // a challenge is small; anything this big is something else
        n => (usize::from(n), 2),
    };
    if !need(start + len, &mut rest) {
        return false;
    }
    let Some(payload) = rest.get(start..start + len) else {
        return false;
    };
    serde_json::from_slice::<Value>(payload)
        .map(|v| v["type"] == "event" && v["event"] == "connect.challenge")
        .unwrap_or(false)
}

/// Probes a listener bound to `addr` for an agent control surface: `GET /healthz` (molt
/// answers JSON with `version` and `buildId`) and a WebSocket upgrade that OpenClaw-protocol
/// gateways answer with a `connect.challenge` event. Read-only: nothing is authenticated.
pub fn probe(addr: SocketAddr) -> Probe {
    let target = probe_target(addr);
    let mut p = Probe {
        target: Some(target),
        ..Probe::default()
    };
    if let Some((status, body)) = http_get(target, "/healthz") {
        p.healthz_status = Some(status);
        if let Ok(v) = serde_json::from_str::<Value>(&body) {
            // molt's document has bootEpoch as well; a bare {"version"} is someone else's.
            if v["bootEpoch"].is_u64() {
                p.version = v["version"].as_str().map(str::to_owned);
                p.build_id = v["buildId"].as_str().map(str::to_owned);
            }
        }
    }
    p.challenge = ws_challenge(target);
    p
}

// ---------------------------------------------------------------------------------------------
// Gateways on this host

/// One molt instance (profile of one HOME), from a running process or a unit file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoltInstance {
    pub profile: String,
    pub home: Option<String>,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// The config, or why it could not be loaded.
    #[serde(skip)]
    pub config: Result<Config, String>,
    pub pids: Vec<u32>,
    pub uid: Option<u32>,
    pub unit: Option<String>,
    pub unit_file: Option<PathBuf>,
    pub listeners: Vec<SocketAddr>,
}

impl MoltInstance {
    /// Clients must authenticate: a token (configured or generated) or a password.
    pub fn configured(&self) -> Option<bool> {
        let c = self.config.as_ref().ok()?;
        Some(c.auth_source() != molt_config::AuthSource::None)
    }
}

/// The value of `--flag V` or `--flag=V` in argv.
fn flag(argv: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        }
    })
}

/// Resolves a molt instance's paths and config the way that process (or unit) would: from its
/// argv and its environment.
pub fn molt_instance(argv: &[String], env: &HashMap<String, String>) -> MoltInstance {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let profile_name = flag(argv, "--profile").or_else(|| get("MOLT_PROFILE"));
    let profile = Profile::new(profile_name.as_deref()).unwrap_or_default();
    let home = get("HOME");
    let xdg = |var: &str, fallback: &str| -> PathBuf {
        get(var).map(PathBuf::from).unwrap_or_else(|| {
            home.as_deref()
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(fallback)
        })
    };
    let dir = format!("molt{}", profile.suffix());
    let config_path = flag(argv, "--config")
        .or_else(|| get("MOLT_CONFIG"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            xdg("XDG_CONFIG_HOME", ".config")
                .join(&dir)
                .join("molt.toml")
        });
    let state_dir = flag(argv, "--state-dir")
        .or_else(|| get("MOLT_STATE_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| xdg("XDG_STATE_HOME", ".local/state").join(&dir));
    let config =
        Config::load_with_env(&config_path, |k| env.get(k).cloned()).map_err(|e| e.to_string());
    MoltInstance {
        profile: profile.to_string(),
        home,
        config_path,
        state_dir,
        config,
        pids: Vec::new(),
        uid: None,
        unit: None,
        unit_file: None,
        listeners: Vec::new(),
    }
}

/// `ExecStart` argv and `Environment=` assignments of a unit file.
pub fn unit_exec_env(text: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut argv = Vec::new();
    let mut env = HashMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("ExecStart=") {
            argv = split_unit_words(v.trim_start_matches(['-', '@', '+', '!', ':']));
        } else if let Some(v) = line.strip_prefix("Environment=") {
            for kv in split_unit_words(v) {
                if let Some((k, v)) = kv.split_once('=') {
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }
    (argv, env)
}

/// Splits a unit-file value into words; systemd quotes with `"`, `'` and backslashes as sshd
/// and iptables do. An unbalanced quote gives no words.
fn split_unit_words(v: &str) -> Vec<String> {
    molt_audit::split_args(v).unwrap_or_default()
}

/// Unit files in `dir` whose names start with `prefix` and end in `.service`.
pub fn unit_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".service"))
        })
        .collect();
    out.sort();
    out
}

/// Every molt instance on the host: running gateways (grouped by config file, so a
/// handover's two processes are one instance) and installed units, in this user manager's
/// unit directory.
pub fn molt_instances(procs: &[Process], listeners: &Listeners) -> Vec<MoltInstance> {
    let mut out: Vec<MoltInstance> = Vec::new();
    for p in procs.iter().filter(|p| p.is_molt_gateway()) {
        let mut inst = molt_instance(&p.cmdline, &p.environ());
        let addrs: Vec<SocketAddr> = listeners.of_pid(p.pid).map(|l| l.addr).collect();
        let same = out.iter_mut().find(|o| o.config_path == inst.config_path);
        let target = match same {
            Some(o) => o,
            None => {
                inst.uid = p.uid;
                out.push(inst);
                match out.last_mut() {
                    Some(o) => o,
                    None => continue,
                }
            }
        };
        target.pids.push(p.pid);
        if target.unit.is_none() {
            target.unit = p.unit.clone().filter(|u| u.starts_with("molt-gateway"));
        }
        for a in addrs {
            if !target.listeners.contains(&a) {
                target.listeners.push(a);
            }
        }
    }
    if let Ok(dir) = molt_service::systemctl::unit_dir() {
        for file in unit_files(&dir, "molt-gateway") {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let (argv, env) = unit_exec_env(&text);
            let inst = molt_instance(&argv, &env);
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match out.iter_mut().find(|o| o.config_path == inst.config_path) {
                Some(o) => {
                    o.unit_file = Some(file.clone());
                    o.unit.get_or_insert(name);
                }
                None => out.push(MoltInstance {
                    unit_file: Some(file.clone()),
                    unit: Some(name),
                    ..inst
                }),
            }
        }
    }
    out
}

/// An OpenClaw gateway: a process, or a unit file with no process running.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenClawInstance {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub command: Option<String>,
    pub unit: Option<String>,
    pub unit_file: Option<PathBuf>,
    pub config_path: Option<PathBuf>,
    pub listeners: Vec<SocketAddr>,
    /// Auth set up (token/password in the environment or the config), when it could be read.
    pub configured: Option<bool>,
}

fn openclaw_configured(env: &HashMap<String, String>) -> (Option<PathBuf>, Option<bool>) {
    let secret_env = ["OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.is_empty()));
    let path = env
        .get("OPENCLAW_CONFIG_PATH")
        .map(PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .map(|h| PathBuf::from(h).join(".openclaw/openclaw.json"))
        });
    let from_file = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| molt_audit::agents::openclaw_auth(&t).is_configured());
    let configured = match (secret_env, from_file) {
        (true, _) => Some(true),
        (false, f) => f,
    };
    (path, configured)
}

/// OpenClaw gateway processes, and `openclaw-gateway*.service` units in the user and system
/// unit directories.
pub fn openclaw_instances(procs: &[Process], listeners: &Listeners) -> Vec<OpenClawInstance> {
    let mut out: Vec<OpenClawInstance> = procs
        .iter()
        .filter(|p| p.is_openclaw())
        .map(|p| {
            let (config_path, configured) = openclaw_configured(&p.environ());
            OpenClawInstance {
                pid: Some(p.pid),
                uid: p.uid,
                command: Some(p.describe()),
                unit: p.unit.clone(),
                unit_file: None,
                config_path,
                listeners: listeners.of_pid(p.pid).map(|l| l.addr).collect(),
                configured,
            }
        })
        .collect();
    let mut dirs: Vec<PathBuf> = vec![
        PathBuf::from("/etc/systemd/system"),
        PathBuf::from("/etc/systemd/user"),
    ];
    dirs.extend(molt_service::systemctl::unit_dir().ok());
    for dir in dirs {
        for file in unit_files(&dir, "openclaw-gateway") {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(o) = out.iter_mut().find(|o| o.unit.as_deref() == Some(&name)) {
                o.unit_file = Some(file);
                continue;
            }
            let env = std::fs::read_to_string(&file)
                .map(|t| unit_exec_env(&t).1)
                .unwrap_or_default();
            let (config_path, configured) = openclaw_configured(&env);
            out.push(OpenClawInstance {
                pid: None,
                uid: None,
                command: None,
                unit: Some(name),
                unit_file: Some(file),
                config_path,
                listeners: Vec::new(),
                configured,
            });
        }
    }
    out
}

/// `docker ps` with names, images and ports, when docker is installed and its daemon answers.
/// `Err` says why not.
pub fn docker_ps() -> Result<String, String> {
    let run = run_tool(
        "docker",
        &["ps", "--format", "{{.Names}}\t{{.Ports}}\t{{.Image}}"],
        Duration::from_secs(5),
    );
    run.stdout_ok()
        .map(str::to_owned)
        .ok_or_else(|| run.why_not("docker"))
}

/// The mode bits of a path, without following a final symlink.
pub fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_words_and_env() {
        let (argv, env) = unit_exec_env(
            "[Service]\nExecStart=\"/h/a b/molt\" gateway run --profile w\n\
             Environment=\"HOME=/h/a b\"\nEnvironment=XDG_CONFIG_HOME=/c MOLT_LOG=info\n",
        );
        assert_eq!(argv, ["/h/a b/molt", "gateway", "run", "--profile", "w"]);
        assert_eq!(env["HOME"], "/h/a b");
        assert_eq!(env["XDG_CONFIG_HOME"], "/c");
        assert_eq!(env["MOLT_LOG"], "info");
    }

    #[test]
    fn instance_paths_follow_the_process_environment() {
        let env: HashMap<String, String> = [("HOME".to_owned(), "/h".to_owned())].into();
        let argv: Vec<String> = ["molt", "gateway", "run", "--profile=w"]
            .map(String::from)
            .to_vec();
        let i = molt_instance(&argv, &env);
        assert_eq!(i.profile, "w");
        assert_eq!(i.config_path, PathBuf::from("/h/.config/molt-w/molt.toml"));
        assert_eq!(i.state_dir, PathBuf::from("/h/.local/state/molt-w"));
    }

    #[test]
    fn probe_targets() {
        let t = |s: &str| probe_target(s.parse().unwrap_or_else(|_| panic!("{s}"))).to_string();
        assert_eq!(t("0.0.0.0:1"), "127.0.0.1:1");
        assert_eq!(t("[::]:1"), "[::1]:1");
        assert_eq!(t("10.0.0.2:1"), "10.0.0.2:1");
        assert_eq!(t("[::ffff:10.0.0.2]:1"), "10.0.0.2:1");
    }

    #[test]
    fn recognises_gateways() {
        let p = |comm: &str, argv: &[&str]| Process {
            pid: 1,
            uid: Some(0),
            comm: comm.into(),
            cmdline: argv.iter().map(|s| s.to_string()).collect(),
            unit: None,
        };
        assert!(p("molt", &["/x/current/molt", "gateway", "run"]).is_molt_gateway());
        assert!(!p("molt", &["molt", "doctor"]).is_molt_gateway());
        assert!(
            p(
                "node",
                &[
                    "node",
                    "/usr/lib/node_modules/openclaw/dist/index.js",
                    "gateway"
                ]
            )
            .is_openclaw()
        );
        assert!(p("openclaw-gatewa", &["openclaw-gateway"]).is_openclaw());
        assert!(!p("grep", &["grep", "openclaw"]).is_openclaw());
    }
}

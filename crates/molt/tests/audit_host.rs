//! `molt security audit` against the real tools it reads, and its remedies applied for real.
//!
//! Each test builds a sandbox: a network namespace (with a veth pair to a second, "peer"
//! namespace that plays the SSH client), and inside it a private mount and PID namespace in
//! which /etc/ssh, /etc/ufw, /etc/default/ufw, /etc/fail2ban and /var/lib/fail2ban are private
//! copies and /run and /var/log are empty tmpfs. The audit runs there unchanged: `sshd -T`
//! reads the test's config and throwaway host key, ufw/nft/iptables see only the namespace's
//! rules, `fail2ban-client` talks to a `fail2ban-server -f` started there. No sshd is ever
//! started; no service manager runs, so `systemctl` and `apt-get` are small shims (in the
//! sandbox's PATH) that start fail2ban the way its unit does and check that a package is
//! installed. Every test compares the host's ruleset and config files before and after.
//!
//! The tools are required: a missing one fails the test (CI installs them, see `.ci/run`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOOLS: &[&str] = &[
    "sshd",
    "ssh-keygen",
    "nft",
    "iptables",
    "ip6tables",
    "ufw",
    "fail2ban-server",
    "fail2ban-client",
    "ip",
    "unshare",
    "nsenter",
];

/// What this machine's tools and files may not change: the host's rules and the config
/// directories the sandbox shadows.
const HOST_PATHS: &[&str] = &["/etc/ssh", "/etc/ufw", "/etc/default/ufw", "/etc/fail2ban"];

fn on_path(tool: &str) -> bool {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .any(|d| Path::new(d).join(tool).is_file())
}

fn require_tools() {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (network and mount namespaces)"
    );
    let missing: Vec<&&str> = TOOLS.iter().filter(|t| !on_path(t)).collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: apt-get install --no-install-recommends openssh-server nftables \
         iptables ufw fail2ban python3-systemd (.ci/run does)"
    );
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's firewall and the files the sandbox shadows, to compare before and after.
#[derive(Debug, PartialEq)]
struct HostState {
    rules: BTreeMap<&'static str, String>,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

fn host_state() -> HostState {
    let mut rules = BTreeMap::new();
    rules.insert("nft list ruleset", run_ok("nft", &["list", "ruleset"]));
    rules.insert("iptables -S", run_ok("iptables", &["-S"]));
    rules.insert("ip6tables -S", run_ok("ip6tables", &["-S"]));
    fn walk(path: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            entries.sort();
            out.insert(path.to_owned(), Vec::new());
            for e in entries {
                walk(&e, out);
            }
        } else {
            out.insert(path.to_owned(), std::fs::read(path).unwrap_or_default());
        }
    }
    let mut files = BTreeMap::new();
    for p in HOST_PATHS {
        walk(Path::new(p), &mut files);
    }
    HostState { rules, files }
}

/// A finding as the audit printed it.
#[derive(Debug, Clone)]
struct Finding {
    id: String,
    severity: u8,
    title: String,
    remedy: Vec<String>,
}

fn severity(s: &str) -> u8 {
    match s {
        "info" => 0,
        "warn" => 1,
        "critical" => 2,
        other => panic!("unknown severity {other}"),
    }
}

const SEVERITY: [&str; 3] = ["info", "warn", "critical"];

/// One audit's JSON and its findings.
struct Audit {
    json: Value,
    findings: Vec<Finding>,
}

impl Audit {
    fn with_id(&self, id: &str) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.id == id).collect()
    }

    fn one(&self, id: &str) -> &Finding {
        let f = self.with_id(id);
        assert_eq!(f.len(), 1, "one {id} finding: {}", self.summary());
        f[0]
    }

    fn summary(&self) -> String {
        self.findings
            .iter()
            .map(|f| format!("{} {} ({})", SEVERITY[f.severity as usize], f.id, f.title))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn count(&self, sev: &str) -> usize {
        let s = severity(sev);
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// Nothing the parsers could not read: every tool's output was understood.
    fn assert_parsed(&self) {
        assert!(
            !self.findings.iter().any(|f| f.id.starts_with("parse.")),
            "some tool output was not understood: {:#}",
            self.json["findings"]
        );
    }
}

/// `before`'s finding `fixed` is gone (nothing of its id at its severity or worse), and no
/// finding is new (an id not seen before, or one now worse than it was).
fn assert_cleared(before: &Audit, fixed: &Finding, after: &Audit) {
    assert!(
        !after
            .findings
            .iter()
            .any(|f| f.id == fixed.id && f.severity >= fixed.severity),
        "{} is still reported after its remedy: {}",
        fixed.id,
        after.summary()
    );
    for f in &after.findings {
        let was = before
            .findings
            .iter()
            .filter(|b| b.id == f.id)
            .map(|b| b.severity)
            .max();
        assert!(
            was.is_some_and(|w| f.severity <= w),
            "the remedy for {} brought a new finding: {} {} ({}); before: {}",
            fixed.id,
            SEVERITY[f.severity as usize],
            f.id,
            f.title,
            before.summary()
        );
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Stands in for systemctl: no service manager runs in the sandbox. sshd never runs there
/// either (`sshd -T` rereads the files at every audit), so its reloads only get logged;
/// fail2ban is started the way its unit does (`fail2ban-server -xf start`) and waited for.
const SYSTEMCTL_SHIM: &str = r#"#!/bin/sh
echo "systemctl $*" >> "$SHIM_LOG"
verb="$1"; shift; unit=""; now=""
for a in "$@"; do
  case "$a" in --now) now=1 ;; -*) ;; *) unit="${a%.service}" ;; esac
done
up() { fail2ban-client ping >/dev/null 2>&1; }
start() {
  up && return 0
  setsid fail2ban-server -xf start >>/var/log/fail2ban-server.out 2>&1 </dev/null &
  i=0
  while [ $i -lt 150 ]; do up && return 0; sleep 0.1; i=$((i + 1)); done
  echo "fail2ban-server did not answer: $(tail -n 3 /var/log/fail2ban-server.out)" >&2
  return 1
}
stop() {
  up || return 0
  fail2ban-client stop >/dev/null
  i=0
  while [ $i -lt 150 ]; do up || return 0; sleep 0.1; i=$((i + 1)); done
  return 1
}
case "$unit:$verb" in
  ssh:reload | sshd:reload | ssh:restart | sshd:restart) exit 0 ;;
  fail2ban:enable) if [ -n "$now" ]; then start; fi ;;
  fail2ban:start) start ;;
  fail2ban:restart) stop && start ;;
  fail2ban:reload) fail2ban-client reload ;;
  fail2ban:stop) stop ;;
  *) echo "systemctl shim: not supported here: $verb $*" >&2; exit 1 ;;
esac
"#;

/// Stands in for apt-get: installs nothing, fails unless every named package is installed
/// (so a remedy naming a package CI does not install fails here).
const APT_GET_SHIM: &str = r#"#!/bin/sh
echo "apt-get $*" >> "$SHIM_LOG"
[ "$1" = install ] || { echo "apt-get shim: only install" >&2; exit 1; }
shift
for p in "$@"; do
  case "$p" in
    -*) ;;
    *) dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
         { echo "apt-get shim: $p is not installed" >&2; exit 1; } ;;
  esac
done
"#;

/// Mounts the private copies and holds the namespaces open (as PID 1 of its PID namespace).
const HOLDER: &str = r#"set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/log
mount --bind "$D/ssh" /etc/ssh
mount --bind "$D/ufw" /etc/ufw
mount --bind "$D/default-ufw" /etc/default/ufw
mount --bind "$D/fail2ban" /etc/fail2ban
mount --bind "$D/fail2ban-lib" /var/lib/fail2ban
ip link set lo up
echo ready
exec sleep 2147483647
"#;

struct Sandbox {
    name: String,
    peer: String,
    addr: Ipv4Addr,
    dir: tempfile::TempDir,
    home: Home,
    holder: Child,
    /// The holder's PID 1, as the host sees it.
    init: u32,
    listeners: Vec<TcpListener>,
    before: HostState,
}

impl Sandbox {
    fn new() -> Sandbox {
        require_tools();
        let before = host_state();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("molt-ah-{pid}-{n}");
        let peer = format!("molt-ahp-{pid}-{n}");
        // A /30 per sandbox, in 10.214.0.0/16, that exists only between the two namespaces.
        let k = (pid % 1024) * 16 + n % 16;
        let net = [10u8, 214, (k / 64 % 256) as u8, ((k % 64) * 4) as u8];
        let addr = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 1);
        let peer_addr = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 2);
        let dir = tempfile::Builder::new()
            .prefix("molt-audit-host")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in [
            "ssh/sshd_config.d",
            "ufw",
            "fail2ban",
            "fail2ban-lib",
            "bin",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        run_ok("cp", &["-a", "/etc/ufw/.", &path_str(&d.join("ufw"))]);
        run_ok(
            "cp",
            &["-p", "/etc/default/ufw", &path_str(&d.join("default-ufw"))],
        );
        run_ok(
            "cp",
            &["-a", "/etc/fail2ban/.", &path_str(&d.join("fail2ban"))],
        );
        // ufw starts disabled, whatever the host's copy says.
        let conf = d.join("ufw/ufw.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, text.replace("ENABLED=yes", "ENABLED=no")).unwrap();
        run_ok(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "molt-audit-test",
                "-f",
                &path_str(&d.join("ssh/ssh_host_ed25519_key")),
            ],
        );
        for (shim, text) in [("systemctl", SYSTEMCTL_SHIM), ("apt-get", APT_GET_SHIM)] {
            let p = d.join("bin").join(shim);
            std::fs::write(&p, text).unwrap();
            run_ok("chmod", &["755", &path_str(&p)]);
        }

        run_ok("ip", &["netns", "add", &name]);
        run_ok("ip", &["netns", "add", &peer]);
        let (a, b) = (format!("mah{pid}x{n}"), format!("mah{pid}y{n}"));
        run_ok(
            "ip",
            &[
                "link", "add", &a, "netns", &name, "type", "veth", "peer", "name", &b, "netns",
                &peer,
            ],
        );
        for (ns, dev, ip) in [(&name, &a, addr), (&peer, &b, peer_addr)] {
            let cidr = format!("{ip}/30");
            run_ok("ip", &["-n", ns, "addr", "add", &cidr, "dev", dev]);
            run_ok("ip", &["-n", ns, "link", "set", dev, "up"]);
            run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }

        let mut holder = Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ])
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c", HOLDER])
            .env("D", d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the namespace holder");
        let mut line = String::new();
        let stdout = holder.stdout.take().expect("holder stdout");
        BufReader::new(stdout).read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let out = holder.wait_with_output();
            let _ = run("ip", &["netns", "del", &name]);
            let _ = run("ip", &["netns", "del", &peer]);
            panic!("the namespace holder failed: {out:?}");
        }
        // `ip netns exec` execs unshare, whose one child is the PID 1 that said "ready".
        let hp = holder.id();
        let children =
            std::fs::read_to_string(format!("/proc/{hp}/task/{hp}/children")).unwrap_or_default();
        let init: u32 = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no PID 1 under the holder {hp}: {children:?}"));
        let home = Home::new(MOLT, "");
        let sb = Sandbox {
            name,
            peer,
            addr,
            dir,
            home,
            holder,
            init,
            listeners: Vec::new(),
            before,
        };
        sb.set_privsep_dir(true);
        sb
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command run inside the sandbox with a clean environment.
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args([
            "-t",
            &self.init.to_string(),
            "-m",
            "-n",
            "-p",
            "--",
            program,
        ])
        .args(args)
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                self.path("bin").display()
            ),
        )
        .env("HOME", self.home.path())
        .env("LC_ALL", "C")
        .env("SHIM_LOG", self.path("shims.log"))
        .stdin(Stdio::null());
        c
    }

    fn sh(&self, script: &str) -> Output {
        self.cmd("sh", &["-c", script])
            .output()
            .expect("run sh in the sandbox")
    }

    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// /run/sshd, without which `sshd -T` and `sshd -t` refuse to run (it exists while sshd
    /// runs, and not before its first start on a socket-activated host).
    fn set_privsep_dir(&self, present: bool) {
        self.sh_ok(if present {
            "mkdir -p -m 0755 /run/sshd"
        } else {
            "rm -rf /run/sshd"
        });
    }

    /// Writes /etc/ssh/sshd_config (Debian's shape: the drop-in directory first, when
    /// `include`), empties the drop-in directory and removes backups.
    fn sshd_config(&self, include: bool, lines: &[&str]) {
        let ssh = self.path("ssh");
        for e in std::fs::read_dir(ssh.join("sshd_config.d")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let _ = std::fs::remove_file(ssh.join("sshd_config.molt-backup"));
        let mut text = String::new();
        if include {
            text.push_str("Include /etc/ssh/sshd_config.d/*.conf\n");
        }
        text.push_str("HostKey /etc/ssh/ssh_host_ed25519_key\n");
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("Subsystem sftp /usr/lib/openssh/sftp-server\n");
        std::fs::write(ssh.join("sshd_config"), text).unwrap();
    }

    /// sshd's own view of one setting, from the real `sshd -T`.
    fn sshd_t(&self, keyword: &str) -> String {
        let out = self.sh_ok("sshd -T");
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{keyword} ")))
            .unwrap_or_else(|| panic!("sshd -T has no {keyword}: {out}"))
            .to_owned()
    }

    fn audit(&self) -> Audit {
        let t0 = Instant::now();
        let out = self
            .cmd(MOLT, &["security", "audit", "--json"])
            .output()
            .expect("run the audit");
        let json: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("audit printed non-JSON ({e}): {out:?}"));
        assert_eq!(
            out.status.code(),
            json["exitCode"].as_i64().map(|c| c as i32),
            "the exit code is the one reported"
        );
        let findings = json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| Finding {
                id: f["id"].as_str().unwrap().to_owned(),
                severity: severity(f["severity"].as_str().unwrap()),
                title: f["title"].as_str().unwrap().to_owned(),
                remedy: f["remedy"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect(),
            })
            .collect();
        println!("audit took {:?}", t0.elapsed());
        Audit { json, findings }
    }

    /// Runs the finding's remedy, command by command, as a person would paste it. Each must
    /// succeed but `ls` (it lists authorized_keys files that may not exist). Returns the
    /// transcript.
    fn apply(&self, f: &Finding) -> String {
        assert!(!f.remedy.is_empty(), "{} has no remedy", f.id);
        let mut transcript = String::new();
        for c in &f.remedy {
            let out = self.sh(c);
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            transcript.push_str(&format!("$ {c}\n{printed}[exit {:?}]\n", out.status.code()));
            assert!(
                out.status.success() || c.starts_with("ls "),
                "a command of the {} remedy failed:\n{transcript}",
                f.id
            );
            assert!(
                !printed.contains("change reverted"),
                "the {} remedy reverted itself:\n{transcript}",
                f.id
            );
        }
        println!("remedy for {}:\n{transcript}", f.id);
        transcript
    }

    fn enter<T: Send>(&self, ns_path: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(ns_path).expect("open netns");
                // SAFETY: setns on a valid fd only changes this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    /// A TCP listener on the sandbox's address, held by this test process: outside the
    /// sandbox's PID namespace, so the audit sees the socket but not its owner (as for an sshd
    /// it cannot read). The kernel completes handshakes from its backlog; no accept needed.
    fn listen(&mut self, port: u16) {
        let addr = SocketAddr::from((self.addr, port));
        let l = self.enter(&format!("/run/netns/{}", self.name), || {
            TcpListener::bind(addr).expect("bind in the sandbox")
        });
        self.listeners.push(l);
    }

    /// Whether the peer namespace can open a TCP connection to `port` over the veth pair.
    fn reachable(&self, port: u16) -> bool {
        let addr = SocketAddr::from((self.addr, port));
        self.enter(&format!("/run/netns/{}", self.peer), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok()
        })
    }

    fn nft_load(&self, ruleset: &str) {
        let p = self.path("ruleset.nft");
        std::fs::write(&p, ruleset).unwrap();
        self.sh_ok(&format!("nft flush ruleset && nft -f {}", p.display()));
    }

    fn assert_host_unchanged(&self) {
        let now = host_state();
        assert!(
            now == self.before,
            "the host's firewall or config changed: before {:?}, after {:?}",
            self.before.rules,
            now.rules
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Killing PID 1 takes every process of the PID namespace with it (fail2ban too).
        // SAFETY: kill(2) on a pid this sandbox started; no memory is involved.
        unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        self.listeners.clear();
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["netns", "del", &self.peer]);
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

const NFT_ACCEPT: &str = "table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
	}
}
";

const NFT_DROP_ALLOWS_SSH: &str = "table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif \"lo\" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
}
";

const KEYS_ONLY: &[&str] = &[
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM yes",
    "PermitRootLogin prohibit-password",
];

// ---------------------------------------------------------------------------------------------
// No false alarms

#[test]
fn a_namespace_with_default_deny_and_key_only_ssh_has_no_warning() {
    let mut sb = Sandbox::new();
    sb.nft_load(NFT_DROP_ALLOWS_SSH);
    sb.sshd_config(true, KEYS_ONLY);
    sb.listen(22);
    let a = sb.audit();
    a.assert_parsed();
    assert_eq!(
        (a.count("critical"), a.count("warn")),
        (0, 0),
        "a clean host: {}",
        a.summary()
    );
    assert_eq!(a.json["exitCode"], 0);
    assert_eq!(
        a.json["sshd"]["source"], "sshd-t",
        "{:#}",
        a.json["sources"]
    );
    assert_eq!(a.json["sshd"]["passwordLogin"], false);
    assert_eq!(a.json["firewall"]["v4"]["state"], "filtered");
    assert_eq!(a.json["firewall"]["v6"]["state"], "filtered");
    assert!(sb.reachable(22), "SSH is reachable from the peer");
    sb.assert_host_unchanged();
}

// ---------------------------------------------------------------------------------------------
// sshd

struct SshdCase {
    what: &'static str,
    include: bool,
    privsep: bool,
    lines: &'static [&'static str],
    /// ssh.password-login's and ssh.root-login's severity, if reported.
    password: Option<&'static str>,
    root: Option<&'static str>,
}

const SSHD_CASES: &[SshdCase] = &[
    SshdCase {
        what: "passwords on, root allowed",
        include: true,
        privsep: true,
        lines: &[
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "UsePAM yes",
            "PermitRootLogin yes",
        ],
        password: Some("critical"),
        root: Some("warn"),
    },
    SshdCase {
        what: "OpenSSH's defaults",
        include: true,
        privsep: true,
        lines: &[],
        password: Some("warn"),
        root: Some("info"),
    },
    SshdCase {
        what: "keyboard-interactive through PAM",
        include: true,
        privsep: true,
        lines: &[
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication yes",
            "UsePAM yes",
        ],
        password: Some("warn"),
        root: Some("info"),
    },
    SshdCase {
        what: "keys only, root by key (old spelling)",
        include: true,
        privsep: true,
        lines: &[
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin without-password",
        ],
        password: None,
        root: Some("info"),
    },
    SshdCase {
        what: "keys only, root with forced commands",
        include: true,
        privsep: true,
        lines: &[
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin forced-commands-only",
        ],
        password: None,
        root: Some("info"),
    },
    SshdCase {
        what: "keys only, no root",
        include: true,
        privsep: true,
        lines: &[
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
        ],
        password: None,
        root: None,
    },
    SshdCase {
        what: "root with a password, main file without the drop-in include",
        include: false,
        privsep: true,
        lines: &["PasswordAuthentication yes", "PermitRootLogin yes"],
        password: Some("critical"),
        root: Some("warn"),
    },
    SshdCase {
        what: "passwords on, sshd never started (no /run/sshd: sshd -T refuses)",
        include: true,
        privsep: false,
        lines: &["PasswordAuthentication yes", "PermitRootLogin yes"],
        password: Some("critical"),
        root: Some("warn"),
    },
    SshdCase {
        what: "passwords on, no /run/sshd, main file without the include",
        include: false,
        privsep: false,
        lines: &["PasswordAuthentication yes"],
        password: Some("warn"),
        root: Some("info"),
    },
];

fn ssh_findings(a: &Audit) -> (Option<&str>, Option<&str>) {
    let sev = |id: &str| {
        let f = a.with_id(id);
        assert!(f.len() <= 1, "{}", a.summary());
        f.first().map(|f| SEVERITY[f.severity as usize])
    };
    (sev("ssh.password-login"), sev("ssh.root-login"))
}

#[test]
fn sshd_settings_from_the_real_sshd_and_each_remedy_clears_its_finding() {
    let sb = Sandbox::new();
    for case in SSHD_CASES {
        println!("== {}", case.what);
        sb.sshd_config(case.include, case.lines);
        sb.set_privsep_dir(case.privsep);
        let before = sb.audit();
        before.assert_parsed();
        assert_eq!(
            before.json["sshd"]["source"],
            if case.privsep {
                "sshd-t"
            } else {
                "config-files"
            },
            "{}: {:#}",
            case.what,
            before.json["sources"]
        );
        assert_eq!(
            ssh_findings(&before),
            (case.password, case.root),
            "{}: {}",
            case.what,
            before.summary()
        );
        let fixable: Vec<Finding> = before
            .findings
            .iter()
            .filter(|f| f.id.starts_with("ssh.") && f.id != "ssh.no-fail2ban")
            .filter(|f| !f.remedy.is_empty())
            .cloned()
            .collect();
        for f in fixable {
            // Each remedy from the same starting point.
            sb.sshd_config(case.include, case.lines);
            sb.set_privsep_dir(case.privsep);
            sb.apply(&f);
            let after = sb.audit();
            after.assert_parsed();
            assert_cleared(&before, &f, &after);
            sb.set_privsep_dir(true);
            assert!(sb.sh("sshd -t").status.success(), "sshd would still start");
            assert_eq!(sb.sshd_t("passwordauthentication"), "no", "{}", case.what);
            assert_ne!(sb.sshd_t("permitrootlogin"), "yes", "{}", case.what);
            let log = std::fs::read_to_string(sb.path("shims.log")).unwrap_or_default();
            assert!(
                log.lines().last().is_some_and(|l| l.contains("reload ssh")),
                "sshd was told to reload: {log}"
            );
        }
    }
    sb.assert_host_unchanged();
}

// ---------------------------------------------------------------------------------------------
// Firewalls

#[test]
fn an_accepting_nft_ruleset_then_the_ufw_remedy_filters_and_keeps_ssh() {
    let mut sb = Sandbox::new();
    sb.sshd_config(true, KEYS_ONLY);
    sb.nft_load(NFT_ACCEPT);
    sb.listen(22);
    sb.listen(18080);
    let before = sb.audit();
    before.assert_parsed();
    assert_eq!(before.json["firewall"]["v4"]["state"], "open");
    let f = before.one("firewall.none");
    assert_eq!(f.severity, 2, "port 18080 is exposed: {}", before.summary());
    assert!(sb.reachable(22) && sb.reachable(18080));

    sb.apply(f);
    let after = sb.audit();
    after.assert_parsed();
    assert_cleared(&before, f, &after);
    assert_eq!(
        after.json["firewall"]["v4"]["state"], "filtered",
        "{:#}",
        after.json["firewall"]
    );
    assert_eq!(after.json["firewall"]["v6"]["state"], "filtered");
    assert!(sb.reachable(22), "SSH stays reachable");
    assert!(!sb.reachable(18080), "default-deny drops the rest");
    sb.assert_host_unchanged();
}

#[test]
fn no_ruleset_at_all_then_the_ufw_remedy() {
    let mut sb = Sandbox::new();
    sb.sshd_config(true, KEYS_ONLY);
    sb.listen(22);
    let before = sb.audit();
    before.assert_parsed();
    let f = before.one("firewall.none");
    assert_eq!(f.severity, 1, "only SSH listens: {}", before.summary());
    sb.apply(f);
    let after = sb.audit();
    assert_cleared(&before, f, &after);
    assert_eq!((after.count("critical"), after.count("warn")), (0, 0));
    assert!(sb.reachable(22));
    sb.assert_host_unchanged();
}

#[test]
fn iptables_and_ip6tables_rules_in_a_namespace() {
    let mut sb = Sandbox::new();
    sb.sshd_config(true, KEYS_ONLY);
    sb.listen(22);
    for ipt in ["iptables", "ip6tables"] {
        sb.sh_ok(&format!(
            "{ipt} -A INPUT -i lo -j ACCEPT && \
             {ipt} -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT && \
             {ipt} -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
        ));
    }
    sb.sh_ok("iptables -P INPUT DROP");
    let a = sb.audit();
    a.assert_parsed();
    let by = a.json["firewall"]["v4"]["by"].to_string();
    assert!(
        by.contains("\"iptables\"") && by.contains("\"nftables\""),
        "{by}"
    );
    assert_eq!(a.json["firewall"]["v6"]["state"], "open");
    let f = a.one("firewall.ipv6-open");
    assert_eq!(f.severity, 1);
    assert!(sb.reachable(22));

    sb.sh_ok("ip6tables -P INPUT DROP");
    let a = sb.audit();
    a.assert_parsed();
    assert!(
        a.with_id("firewall.ipv6-open").is_empty(),
        "{}",
        a.summary()
    );
    assert_eq!(a.json["firewall"]["v6"]["state"], "filtered");
    assert_eq!(
        (a.count("critical"), a.count("warn")),
        (0, 0),
        "{}",
        a.summary()
    );
    sb.assert_host_unchanged();
}

#[test]
fn ufw_with_default_deny_but_no_ssh_rule_then_its_remedy() {
    let mut sb = Sandbox::new();
    sb.sshd_config(true, KEYS_ONLY);
    sb.listen(22);
    sb.sh_ok("ufw default deny incoming && ufw enable");
    assert!(!sb.reachable(22), "ufw drops SSH: the finding is real");
    let before = sb.audit();
    before.assert_parsed();
    assert_eq!(before.json["firewall"]["ufw"], "active");
    let f = before.one("firewall.ssh-not-allowed");
    sb.apply(f);
    let after = sb.audit();
    after.assert_parsed();
    assert_cleared(&before, f, &after);
    assert_eq!((after.count("critical"), after.count("warn")), (0, 0));
    assert!(sb.reachable(22), "SSH is allowed again");
    sb.assert_host_unchanged();
}

// ---------------------------------------------------------------------------------------------
// fail2ban

fn fail2ban_case(jail_local: Option<&str>, start_first: bool) {
    let mut sb = Sandbox::new();
    sb.nft_load(NFT_DROP_ALLOWS_SSH);
    // Passwords on, so the missing jail is a warning.
    sb.sshd_config(true, &["PasswordAuthentication yes"]);
    sb.listen(22);
    if let Some(text) = jail_local {
        std::fs::write(sb.path("fail2ban/jail.local"), text).unwrap();
    }
    if start_first {
        sb.sh_ok("systemctl start fail2ban");
    }
    let before = sb.audit();
    before.assert_parsed();
    let f = before.one("ssh.no-fail2ban");
    assert_eq!(f.severity, 1, "{}", before.summary());
    let running = before.json["sources"]["fail2ban"] == "read";
    assert_eq!(running, start_first, "{:#}", before.json["sources"]);
    sb.apply(f);
    let after = sb.audit();
    after.assert_parsed();
    assert_cleared(&before, f, &after);
    let jails = after.json["sshd"]["fail2banJails"].to_string();
    assert!(jails.contains("\"sshd\""), "{jails}");
    assert!(sb.reachable(22));
    sb.assert_host_unchanged();
}

#[test]
fn fail2ban_not_running_then_its_remedy_starts_an_sshd_jail() {
    fail2ban_case(None, false);
}

#[test]
fn fail2ban_running_without_an_sshd_jail_then_its_remedy_adds_one() {
    fail2ban_case(Some("[sshd]\nenabled = false\n"), true);
}

// ---------------------------------------------------------------------------------------------
// Docker, and the fixtures

#[test]
fn docker_runs_here_or_the_fixture_stands_in() {
    if on_path("dockerd") {
        println!(
            "dockerd is installed, but no test starts it: the Docker findings are still \
             checked on fixtures (crates/molt-audit/tests/docker.rs)"
        );
    } else {
        println!(
            "dockerd is not installed here, so no container can publish a port: the Docker \
             findings are checked on fixtures only (crates/molt-audit/tests/docker.rs)"
        );
    }
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../molt-audit/tests/fixtures/docker_ps");
    assert!(fixture.is_file(), "{} is kept", fixture.display());
}

/// The committed `fixtures/real/` parse to what the tools print today.
#[test]
fn the_committed_fixtures_are_what_the_tools_print_today() {
    use molt_audit::firewall::{iptables, nft, ufw};
    use molt_audit::{fail2ban, sshd};
    require_tools();
    let before = host_state();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let committed = root.join("crates/molt-audit/tests/fixtures/real");
    let fresh = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(root.join("scripts/audit-fixtures.sh"))
        .arg(fresh.path())
        .output()
        .expect("run scripts/audit-fixtures.sh");
    assert!(out.status.success(), "{out:?}");
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "VERSIONS")
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&committed),
        names(fresh.path()),
        "run scripts/audit-fixtures.sh"
    );
    for name in names(&committed) {
        let old = std::fs::read_to_string(committed.join(&name)).unwrap();
        let new = std::fs::read_to_string(fresh.path().join(&name)).unwrap();
        let same = if name.starts_with("sshd_T") {
            sshd::parse_sshd_t(&old) == sshd::parse_sshd_t(&new)
        } else if name.starts_with("nft_") {
            nft::parse(&old) == nft::parse(&new)
        } else if name.starts_with("iptables") || name.starts_with("ip6tables") {
            iptables::parse(&old) == iptables::parse(&new)
        } else if name.starts_with("ufw_") {
            ufw::parse(&old) == ufw::parse(&new)
        } else if name.starts_with("fail2ban_") {
            fail2ban::parse_status(&old) == fail2ban::parse_status(&new)
        } else {
            panic!("no parser for fixture {name}")
        };
        assert!(
            same,
            "{name}: the tool now prints something that parses differently; run \
             scripts/audit-fixtures.sh and check the diff\n--- committed\n{old}\n--- now\n{new}"
        );
    }
    assert_eq!(host_state(), before, "the script left the host as it was");
}

//! `molt security audit` against real sockets in a network namespace this test creates: a
//! molt gateway bound to the namespace's own non-loopback address, a plain listener, and a
//! loopback-only gateway. Only the namespace's addresses are used; nothing leaves it.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A network namespace with a veth pair: one end inside with a /30 address, the other end on
/// the host with no address. Deleted on drop.
struct Netns {
    name: String,
    host_end: String,
    addr: String,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

impl Netns {
    /// `None` (skip) when namespaces cannot be made here; in CI that is a failure.
    fn new() -> Option<Netns> {
        let pid = std::process::id();
        let name = format!("molt-audit-{pid}");
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "this test needs `ip netns add` (iproute2, root): {other:?}"
                );
                eprintln!("cannot create a network namespace ({other:?}); skipping");
                return None;
            }
        }
        let (host_end, ns_end) = (format!("mva{pid}"), format!("mvb{pid}"));
        // A /30 from 10.213.0.0/16 chosen by pid: it exists only inside this namespace.
        let addr = format!("10.213.{}.{}", (pid / 64) % 256, (pid % 64) * 4 + 2);
        let ns = Netns {
            name,
            host_end,
            addr,
            children: Vec::new(),
        };
        ip_ok(&[
            "link",
            "add",
            &ns.host_end,
            "type",
            "veth",
            "peer",
            "name",
            &ns_end,
        ]);
        ip_ok(&["link", "set", &ns_end, "netns", &ns.name]);
        let cidr = format!("{}/30", ns.addr);
        ip_ok(&[
            "netns", "exec", &ns.name, "ip", "addr", "add", &cidr, "dev", &ns_end,
        ]);
        ip_ok(&[
            "netns", "exec", &ns.name, "ip", "link", "set", &ns_end, "up",
        ]);
        ip_ok(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ip_ok(&["link", "set", &ns.host_end, "up"]);
        Some(ns)
    }

    /// `ip netns exec NS program args...` with a clean environment and this HOME.
    fn cmd(&self, home: &Home, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("MOLT_LOG", "info");
        c
    }

    /// Runs `f` on a thread that has entered the namespace (setns is per thread).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("open netns");
                use std::os::fd::AsRawFd;
                // SAFETY: setns on a valid fd only changes this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    fn spawn_gateway(&mut self, home: &Home, bind: &str, port: u16) {
        let log = std::fs::File::create(home.path().join("gateway.stderr")).unwrap();
        let child = self
            .cmd(
                home,
                MOLT,
                &[
                    "gateway",
                    "run",
                    "--bind",
                    bind,
                    "--port",
                    &port.to_string(),
                ],
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gateway in the namespace");
        self.children.push(child);
        let addr: SocketAddr = format!("{bind}:{port}").parse().unwrap();
        self.enter(|| {
            wait_for(
                &format!("gateway on {addr} ready"),
                Duration::from_secs(20),
                || http_get_at(addr, "/readyz").filter(|(s, _)| *s == 200),
            )
        });
    }

    fn audit(&self, home: &Home, extra: &[&str]) -> (Value, Duration) {
        let mut args = vec!["security", "audit", "--json"];
        args.extend(extra);
        let t0 = Instant::now();
        let out = self.cmd(home, MOLT, &args).output().expect("run audit");
        let took = t0.elapsed();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("audit printed non-JSON ({e}): {out:?}"));
        assert_eq!(
            out.status.code(),
            v["exitCode"].as_i64().map(|c| c as i32),
            "the exit code is the one reported"
        );
        (v, took)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_end]);
    }
}

/// `GET path` on any address (the namespace's own).
fn http_get_at(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf.split_once("\r\n\r\n")?.1.to_owned()))
}

fn listener<'a>(v: &'a Value, addr: &str, port: u16) -> Option<&'a Value> {
    v["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["address"] == addr && l["port"] == port)
}

fn findings_with<'a>(v: &'a Value, id: &str, needle: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["id"] == id && f.to_string().contains(needle))
        .collect()
}

const TOKEN: &str = "0f4c9a7e2b1d8c3f6a5e4d2c1b0a9f8e";

#[test]
fn exposed_gateway_plain_listener_and_loopback_gateway_in_a_namespace() {
    let Some(mut ns) = Netns::new() else {
        return;
    };
    let addr = ns.addr.clone();
    let exposed = Home::new(
        MOLT,
        &format!("[gateway]\n[gateway.auth]\nmode = \"token\"\ntoken = \"{TOKEN}\"\n"),
    );
    let loopback = Home::new(MOLT, "");
    let auditor = Home::new(MOLT, "");
    let (gw_port, lo_port, plain_port) = (18789u16, 18790u16, 18791u16);
    ns.spawn_gateway(&exposed, &addr, gw_port);
    ns.spawn_gateway(&loopback, "127.0.0.1", lo_port);

    // A plain TCP listener held by this test process, inside the namespace. It accepts and
    // drops a bounded number of connections, so the deep probe gets an answer at once.
    let plain: SocketAddr = format!("{addr}:{plain_port}").parse().unwrap();
    let l = ns.enter(|| TcpListener::bind(plain).expect("bind the plain listener"));
    std::thread::spawn(move || {
        for conn in l.incoming().take(8) {
            drop(conn);
        }
    });

    // Without --deep: the gateway is recognised by its process.
    let (v, took) = ns.audit(&auditor, &[]);
    println!("audit (no probes) took {took:?}");
    let gw = listener(&v, &addr, gw_port).unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(gw["agent"]["kind"], "molt", "{gw:#}");
    assert_eq!(gw["agent"]["configured"], true, "{gw:#}");
    assert!(gw["probe"].is_null());
    let f = findings_with(&v, "agent.exposed", &format!("{addr}:{gw_port}"));
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0]["severity"], "critical", "no firewall here: {:#}", f[0]);

    // With --deep: identified by the handshake challenge and the health document.
    let (v, took) = ns.audit(&auditor, &["--deep"]);
    println!("audit --deep took {took:?}");
    let gw = listener(&v, &addr, gw_port).unwrap_or_else(|| panic!("{v:#}"));
    let by: Vec<&str> = gw["agent"]["identifiedBy"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(by.contains(&"handshake"), "{gw:#}");
    assert_eq!(gw["probe"]["challenge"], true, "{gw:#}");
    let version_line =
        String::from_utf8_lossy(&Command::new(MOLT).arg("--version").output().unwrap().stdout)
            .into_owned();
    assert!(
        version_line.contains(gw["agent"]["version"].as_str().unwrap_or("missing")),
        "the probe read the gateway's version: {gw:#} vs {version_line}"
    );
    assert_eq!(
        findings_with(&v, "agent.exposed", &format!("{addr}:{gw_port}")).len(),
        1
    );

    // The plain listener: exposed, held by this process, not an agent.
    let p = listener(&v, &addr, plain_port).unwrap_or_else(|| panic!("{v:#}"));
    assert!(p["agent"].is_null(), "{p:#}");
    assert_eq!(p["probe"]["challenge"], false, "{p:#}");
    assert!(
        p["pids"]
            .as_array()
            .unwrap()
            .contains(&Value::from(std::process::id())),
        "mapped to this process through its fds: {p:#}"
    );
    let f = findings_with(&v, "listener.exposed", &format!("{plain_port}"));
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0]["severity"], "warn");

    // The loopback-only gateway: seen, but not reported as exposed.
    assert!(listener(&v, "127.0.0.1", lo_port).is_none(), "{v:#}");
    let lo_text = format!(":{lo_port}");
    for f in v["findings"].as_array().unwrap() {
        assert!(
            f["id"] == "firewall.none" || !f.to_string().contains(&lo_text),
            "the loopback gateway is not a finding: {f:#}"
        );
    }
    assert!(
        v["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["listeners"]
                .to_string()
                .contains(&format!("127.0.0.1:{lo_port}"))),
        "{v:#}"
    );
    // Nothing filters inbound in the namespace (no ruleset, ufw inactive, or no tool at all):
    // reported, with SSH allowed first.
    let fw = findings_with(&v, "firewall.none", "");
    assert_eq!(fw.len(), 1, "{v:#}");
    let remedy: Vec<&str> = fw[0]["remedy"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let pos = |s: &str| remedy.iter().position(|r| r.starts_with(s));
    assert!(
        pos("ufw allow 22/tcp") < pos("ufw default deny incoming"),
        "{remedy:?}"
    );
    assert!(
        pos("ufw default deny incoming") < pos("ufw enable"),
        "{remedy:?}"
    );
    assert_eq!(v["exitCode"], 2);
}

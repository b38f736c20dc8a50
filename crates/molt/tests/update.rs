//! `molt update` end to end: a real systemd user manager, real signed releases made with
//! `molt release`, a real HTTP server on loopback, and real binaries of other versions
//! (`MOLT_BUILD_VERSION`) and real broken builds (`MOLT_BUILD_FAULT`). No faked versions.
//!
//! v1 is the test's own molt (0.1.0); v2 = 0.2.0 and v3 = 0.3.0 are rebuilt from the same
//! source; 0.3.1 fails `molt gateway check`, 0.3.2 exits at start-up, 0.3.3 never becomes
//! ready.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The steps of an update, in order (the `molt update --json` report's `steps[].name`).
const PLAN: [&str; 13] = [
    "lock",
    "resolve",
    "download",
    "verify",
    "unpack",
    "preflight",
    "snapshot",
    "switch",
    "unit",
    "handover",
    "serving",
    "commit",
    "prune",
];
const V1: &str = "0.1.0";
const V2: &str = "0.2.0";
const V3: &str = "0.3.0";
const CHECK_FAILS: (&str, &str) = ("0.3.1", "check-fails");
const EXIT_AT_START: (&str, &str) = ("0.3.2", "exit-at-start");
const NEVER_READY: (&str, &str) = ("0.3.3", "never-ready");

/// How long a handover may take before it counts as failed; small, so never-ready fails fast,
/// but with room for a debug build on a loaded 2-core machine.
const HANDOVER_TIMEOUT_MS: u64 = 10_000;
/// Bound on one whole update (the slowest: a rollback after a handover timeout).
const JOB_DEADLINE: Duration = Duration::from_secs(180);

// ---- fixtures: one release key per test process, releases built once and shared ---------

struct Fixtures {
    root: PathBuf,
    key: PathBuf,
    public: String,
    releases: Mutex<HashMap<String, PathBuf>>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("update-fixtures");
        // Releases of earlier runs whose process is gone.
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                if !pid_alive(pid) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let root = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&root).unwrap();
        let prefix = root.join("release-key");
        let out = tool(&["release", "keygen", "--out", prefix.to_str().unwrap()]);
        assert!(out.contains("trusted_keys"), "{out}");
        let public = std::fs::read_to_string(root.join("release-key.pub"))
            .unwrap()
            .trim()
            .to_owned();
        Fixtures {
            key: root.join("release-key.key"),
            root,
            public,
            releases: Mutex::new(HashMap::new()),
        }
    })
}

/// Runs the test's molt (v1) as a tool, in a scratch HOME; returns stdout.
fn tool(args: &[&str]) -> String {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("update-tool-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(MOLT)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .args(args)
        .output()
        .expect("spawn molt");
    assert!(out.status.success(), "molt {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The binary of a version: v1 is the test's own molt, the others are real rebuilds.
fn binary(version: &str, fault: Option<&str>) -> PathBuf {
    if version == V1 && fault.is_none() {
        PathBuf::from(MOLT)
    } else {
        molt_variant(version, fault)
    }
}

/// A signed release directory holding `versions` (each built with `expires_days`), made with
/// the real `molt release build` and `molt release sign`. Built once per process; tests that
/// tamper with one work on a copy ([`copy_release`]).
fn release(versions: &[(&str, Option<&str>)], expires_days: u32) -> PathBuf {
    let f = fixtures();
    let name = versions
        .iter()
        .map(|(v, fault)| format!("{v}{}", fault.map(|f| format!("-{f}")).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("+");
    let name = format!("rel-{name}-e{expires_days}");
    // Building a release takes seconds; hold the map only to look up and insert, and build
    // under a per-process lock so two tests never build the same one.
    static BUILD: Mutex<()> = Mutex::new(());
    let _g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = f.releases.lock().unwrap().get(&name) {
        return p.clone();
    }
    let dir = f.root.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    for (v, fault) in versions {
        let bin = binary(v, *fault);
        tool(&[
            "release",
            "build",
            "--binary",
            bin.to_str().unwrap(),
            "--version",
            v,
            "--out",
            dir.to_str().unwrap(),
            "--expires-days",
            &expires_days.to_string(),
        ]);
    }
    tool(&[
        "release",
        "sign",
        "--key",
        f.key.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    f.releases.lock().unwrap().insert(name, dir.clone());
    dir
}

fn release_of(version: &str) -> PathBuf {
    release(&[(version, None)], 30)
}

fn copy_release(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// The artifact file named by a release's manifest (the first entry).
fn artifact_of(dir: &Path) -> (String, u64) {
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let e = &m["versions"][0];
    (
        e["artifact"].as_str().unwrap().to_owned(),
        e["size"].as_u64().unwrap(),
    )
}

fn config(update_extra: &str) -> String {
    let key = fixtures().public.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "handover_timeout_ms = {HANDOVER_TIMEOUT_MS}\n\n[update]\ntrusted_keys = [\"{key}\"]\n\
         verify_timeout_ms = 20000\n{update_extra}"
    )
}

// ---- a tiny HTTP/1.1 file server on loopback ---------------------------------------------

/// Serves the files of `root` over HTTP/1.1 on 127.0.0.1 (GET only). A file can be told to
/// carry extra bytes, announced in `Content-Length` or not (then the body ends at close).
struct FileServer {
    port: u16,
    extra: Arc<Mutex<HashMap<String, (usize, bool)>>>,
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    fn serve(root: PathBuf) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        let extra: Arc<Mutex<HashMap<String, (usize, bool)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let served: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let (extra, stop, served) = (extra.clone(), stop.clone(), served.clone());
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (root, extra, served) = (root.clone(), extra.clone(), served.clone());
                    std::thread::spawn(move || {
                        let _ = handle(conn, &root, &extra, &served);
                    });
                }
            });
        }
        Self {
            port,
            extra,
            stop,
            served,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Appends `n` bytes to `file`; `announce` puts them in Content-Length, else the server
    /// sends no length and closes after the body.
    fn append(&self, file: &str, n: usize, announce: bool) {
        self.extra
            .lock()
            .unwrap()
            .insert(file.to_owned(), (n, announce));
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(
    mut conn: TcpStream,
    root: &Path,
    extra: &Mutex<HashMap<String, (usize, bool)>>,
    served: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    answer(&mut conn, root, extra, served)?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Let the client read to the end before the socket goes.
    let _ = conn.read(&mut [0u8; 1]);
    Ok(())
}

/// Reads one request from `conn` and answers it (plain or TLS).
fn answer(
    conn: &mut impl ReadWrite,
    root: &Path,
    extra: &Mutex<HashMap<String, (usize, bool)>>,
    served: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let (method, path) = {
        let mut reader = BufReader::new(&mut *conn);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        (method, path)
    };
    let name = path.trim_start_matches('/').to_owned();
    let file = (!name.contains("..") && !name.is_empty())
        .then(|| std::fs::read(root.join(&name)).ok())
        .flatten();
    served.lock().unwrap().push(format!("{method} {path}"));
    let Some(mut body) = file.filter(|_| method == "GET") else {
        let msg = "not found\n";
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )?;
        return conn.flush();
    };
    let (n, announce) = extra
        .lock()
        .unwrap()
        .get(&name)
        .copied()
        .unwrap_or((0, true));
    body.extend(std::iter::repeat_n(0x5a_u8, n));
    let length = if announce {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{length}Connection: close\r\n\r\n"
    )?;
    conn.write_all(&body)?;
    conn.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The same file server over TLS (rustls), with a certificate for 127.0.0.1 issued by a test
/// CA that only `ca_pem` holds: a client trusts it only when told to (`SSL_CERT_FILE`).
struct TlsFileServer {
    port: u16,
    ca_pem: PathBuf,
    stop: Arc<AtomicBool>,
}

impl TlsFileServer {
    fn serve(root: PathBuf, dir: &Path) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "molt test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let ca_pem = dir.join("test-ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)
                .unwrap(),
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, config) = (root.clone(), config.clone());
                std::thread::spawn(move || -> std::io::Result<()> {
                    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let tls =
                        rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
                    let mut s = rustls::StreamOwned::new(tls, conn);
                    answer(&mut s, &root, &Mutex::default(), &Mutex::default())?;
                    s.conn.send_close_notify();
                    s.flush()
                });
            }
        });
        Self { port, ca_pem, stop }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TlsFileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

// ---- a profile's gateway as a service, and what to check about it ------------------------

struct Svc {
    s: ServiceHome,
}

impl Svc {
    /// Installs `bin` as the profile's molt, installs the unit and starts it.
    fn new(prefix: &str, bin: &Path, update_extra: &str) -> Self {
        let svc = Self {
            s: ServiceHome::new(MOLT, prefix, &config(update_extra)),
        };
        for args in [
            &["install"][..],
            &["service", "install"],
            &["service", "start"],
        ] {
            let out = svc.cmd(bin).args(args).output().unwrap();
            assert!(out.status.success(), "molt {args:?}: {}", text(&out));
        }
        wait_for("the service is ready", Duration::from_secs(30), || {
            http_get(svc.port(), "/readyz").filter(|(c, _)| *c == 200)
        });
        svc
    }

    fn port(&self) -> u16 {
        self.s.home.port
    }

    /// `BIN --profile P` with the user manager's environment.
    fn cmd(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.s.home.path())
            .env("MOLT_LOG", "info");
        for k in ["XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"] {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.arg("--profile").arg(&self.s.profile);
        c
    }

    /// The user's `molt`: `~/.local/bin/molt`, which follows `current`.
    fn installed_molt(&self) -> PathBuf {
        self.s.home.path().join(".local/bin/molt")
    }

    /// `molt update ARGS --json` (with the installed molt); the report, the exit code and
    /// the whole output.
    fn update(&self, args: &[&str], env: &[(&str, &str)]) -> (Value, Option<i32>, Output) {
        let t0 = Instant::now();
        let out = self
            .cmd(&self.installed_molt())
            .arg("update")
            .args(args)
            .arg("--json")
            .envs(env.iter().copied())
            .output()
            .expect("spawn molt update");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "molt update {args:?} printed non-JSON ({e}) after {:?}: {}",
                t0.elapsed(),
                text(&out)
            )
        });
        println!(
            "molt update {args:?}: exit {:?} after {:?}: {} {}",
            out.status.code(),
            t0.elapsed(),
            v["result"],
            v["reason"]
        );
        (v, out.status.code(), out)
    }

    fn status(&self) -> Value {
        self.s.molt_json(&["service", "status", "--json"])
    }

    fn update_status(&self) -> Value {
        self.s.molt_json(&["update", "status", "--json"])
    }

    /// Waits until the latest update job is over; returns its report.
    fn wait_job_end(&self) -> Value {
        let deadline = Instant::now() + JOB_DEADLINE;
        loop {
            let r = self.update_status();
            let result = r["result"].as_str().unwrap_or("");
            if !r["jobId"].is_null() && !matches!(result, "RUNNING" | "PENDING") {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "the update job did not end in {JOB_DEADLINE:?}: {r:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn readyz(&self) -> Option<Value> {
        let (code, body) = http_get(self.port(), "/readyz")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// One true version: `current`, the unit's label and `ExecStart`, the running gateway and
    /// `/readyz` all say `version`, and the unit is active and was not restarted by systemd.
    fn assert_serving(&self, version: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            let st = self.status();
            let rz = self.readyz();
            let good = st["coherent"] == true
                && st["currentVersion"] == version
                && st["unitLabel"] == version
                && st["runningVersion"] == version
                && st["activeState"] == "active"
                && rz.as_ref().is_some_and(|r| r["version"] == version);
            if good {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "not serving {version} coherently: status {st:#}, readyz {rz:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(st["mainPid"], st["runningPid"], "{st:#}");
        let unit = std::fs::read_to_string(self.s.unit_file()).unwrap();
        assert!(
            unit.contains(&format!("X-Molt-Version={version}\n")),
            "{unit}"
        );
        assert!(
            unit.contains(&format!("Description=molt gateway {version}")),
            "{unit}"
        );
        let current = std::fs::read_link(
            self.s
                .home
                .path()
                .join(format!(".local/share/molt-{}/current", self.s.profile)),
        )
        .unwrap();
        assert!(
            current.ends_with(format!("versions/{version}")),
            "{current:?}"
        );
        assert_eq!(
            self.s.show(&["ActiveState"])["ActiveState"],
            "active",
            "the unit is active"
        );
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        // Leave no unit behind, also when a test fails.
        let _ = self.s.molt(&["service", "uninstall"]);
    }
}

fn step<'a>(r: &'a Value, name: &str) -> Option<&'a Value> {
    r["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
}

fn step_names(r: &Value) -> Vec<String> {
    r["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| format!("{}:{}", s["name"].as_str().unwrap_or("?"), s["status"]))
                .collect()
        })
        .unwrap_or_default()
}

fn reason(r: &Value) -> String {
    r["reason"].as_str().unwrap_or("").to_owned()
}

/// A refused update: FAILED (exit 1), the reason says `why`, and nothing was switched.
fn assert_refused(svc: &Svc, r: &Value, code: Option<i32>, why: &[&str], serving: &str) {
    assert_eq!(r["result"], "FAILED", "{r:#}");
    assert_eq!(code, Some(1), "{r:#}");
    let reason = reason(r).to_lowercase();
    assert!(
        why.iter().any(|w| reason.contains(w)),
        "the reason should say one of {why:?}: {reason}"
    );
    for s in ["snapshot", "switch", "unit", "handover"] {
        assert!(step(r, s).is_none(), "{s} ran: {:?}", step_names(r));
    }
    assert_eq!(r["after"]["version"], serving, "{r:#}");
    svc.assert_serving(serving);
}

/// A successful report: OK, every step journalled with its time, the plan in order.
fn assert_ok(r: &Value, code: Option<i32>, from: &str, to: &str) {
    assert_eq!(r["result"], "OK", "{r:#}");
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["before"]["version"], from, "{r:#}");
    assert_eq!(r["after"]["version"], to, "{r:#}");
    let steps = r["steps"].as_array().unwrap();
    for s in steps {
        assert!(s["ms"].is_i64(), "every step has its time: {s}");
        assert!(
            s["status"] == "ok" || s["status"] == "skipped",
            "{s} in {:?}",
            step_names(r)
        );
    }
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    let in_plan: Vec<&str> = names.iter().copied().filter(|n| PLAN.contains(n)).collect();
    assert_eq!(in_plan, PLAN, "steps in order: {names:?}");
}

// ---- the tests ---------------------------------------------------------------------------

/// The seed: the agent asks for an update from a shell inside its own gateway, with two runs
/// busy. The update goes through a transient unit, the unit never leaves `active`, the port
/// never refuses, and v2 ends up serving under a v2 label with both runs completed.
#[test]
fn the_seed_scenario_an_update_from_inside_the_gateway() {
    if !systemd_available() {
        return;
    }
    let rel2 = release_of(V2);
    let svc = Svc::new("useed", Path::new(MOLT), "");
    svc.assert_serving(V1);

    let busy: Vec<String> = (0..2)
        .map(|_| {
            svc.s
                .molt_ok(&["run", "exec", "--", "sh", "-c", "sleep 8; echo done"])
                .trim()
                .to_owned()
        })
        .collect();
    wait_for("both busy runs run", Duration::from_secs(20), || {
        busy.iter()
            .all(|id| run_of(&svc, id)["state"] == "running")
            .then_some(())
    });

    // Watch the port and the unit all along.
    let watch = Watch::start(&svc);

    // The third run: `molt update` from inside the gateway's tree.
    let t0 = Instant::now();
    let inside = svc
        .s
        .molt_ok(&[
            "run",
            "exec",
            "--",
            MOLT,
            "--profile",
            &svc.s.profile,
            "update",
            "--yes",
            "--json",
            "--source",
            rel2.to_str().unwrap(),
        ])
        .trim()
        .to_owned();
    let run = wait_for("the update run ends", Duration::from_secs(60), || {
        let r = run_of(&svc, &inside);
        matches!(r["state"].as_str(), Some("succeeded" | "failed")).then_some(r)
    });
    println!("the update run after {:?}: {run:#}", t0.elapsed());
    assert_eq!(
        run["state"], "succeeded",
        "inside, it returns at once: {run:#}"
    );
    let said = run.to_string();
    assert!(
        said.contains("STARTED") && said.contains("molt-update-"),
        "it prints the job and its unit: {said}"
    );

    let r = svc.wait_job_end();
    let took = t0.elapsed();
    for id in &busy {
        wait_for("busy run completes", Duration::from_secs(90), || {
            (run_of(&svc, id)["state"] == "succeeded").then_some(())
        });
    }
    let (connects, refused, seen) = watch.finish();
    println!(
        "update from inside took {took:?}; connects {connects} refused {refused}; unit states {seen:?}\n{r:#}"
    );

    assert_ok(&r, Some(0), V1, V2);
    let job = r["jobId"].as_str().unwrap();
    assert_eq!(
        r["launcher"],
        format!("systemd-run:molt-update-{job}"),
        "the updater ran as a transient unit: {r:#}"
    );
    assert_eq!(r["kind"], "update");
    assert_eq!(refused, 0, "no refused connection");
    assert!(connects > 10);
    assert_eq!(
        seen,
        BTreeSet::from(["active".to_owned()]),
        "the unit stays active"
    );
    svc.assert_serving(V2);
    let rz = svc.readyz().unwrap();
    assert_eq!(rz["buildId"], r["after"]["buildId"], "{rz}");

    // The text report.
    let out = svc.s.molt_ok(&["update", "status"]);
    assert!(out.starts_with("Update Result: OK\n"), "{out}");
    assert!(out.contains("Before:") && out.contains("After:"), "{out}");
    assert!(out.contains(&format!("Before: {V1}")), "{out}");
    assert!(out.contains(&format!("After:  {V2}")), "{out}");
    assert_eq!(
        out.matches('✓').count(),
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "ok")
            .count(),
        "{out}"
    );
    assert!(out.contains(" ms"), "{out}");
}

/// Watches a service while an update runs: a loopback connect every 20 ms (counting the
/// refused ones) and the unit's `ActiveState` every 20 ms.
struct Watch {
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    states: Arc<Mutex<BTreeSet<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(svc: &Svc) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (connects, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let states = Arc::new(Mutex::new(BTreeSet::new()));
        let hammer = {
            let (stop, connects, refused, port) =
                (stop.clone(), connects.clone(), refused.clone(), svc.port());
            std::thread::spawn(move || {
                for _ in 0..50_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match TcpStream::connect_timeout(
                        &([127, 0, 0, 1], port).into(),
                        Duration::from_secs(2),
                    ) {
                        Ok(_) => connects.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let sampler = {
            let (stop, states, unit) = (stop.clone(), states.clone(), svc.s.unit());
            std::thread::spawn(move || {
                for _ in 0..50_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let m = unit_show(&unit, &["ActiveState"]);
                    states.lock().unwrap().insert(m["ActiveState"].clone());
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            stop,
            connects,
            refused,
            states,
            threads: vec![hammer, sampler],
        }
    }

    /// Stops watching: (connects, refused connects, unit states seen).
    fn finish(self) -> (u64, u64, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let seen = self.states.lock().unwrap().clone();
        (
            self.connects.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            seen,
        )
    }
}

fn run_of(svc: &Svc, id: &str) -> Value {
    svc.s.molt_json(&["tasks", "get", id, "--json"])
}

/// No trusted key: refused with a config error (78) that says how to add one.
#[test]
fn without_a_trusted_key_an_update_is_refused_with_how_to_add_one() {
    let home = Home::new(MOLT, "");
    let rel = home.path().join("rel");
    std::fs::create_dir_all(&rel).unwrap();
    let out = home.cli(&["update", "--yes", "--source", rel.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("trusted_keys"), "{said}");
    assert!(
        said.contains("PREFIX.pub") || said.contains("keygen"),
        "{said}"
    );
}

/// Bad releases are refused before the switch: tampered artifact, bad signature (edited
/// manifest; another key), expired manifest, an older version, a download larger than
/// declared (announced, and streamed without a length). A good one over HTTP applies.
#[test]
fn bad_releases_are_refused_before_the_switch() {
    if !systemd_available() {
        return;
    }
    let rel2 = release_of(V2);
    let rel3 = release_of(V3);
    let expired = release(&[(V2, None)], 0);
    let svc = Svc::new("ubad", Path::new(MOLT), "");
    svc.assert_serving(V1);
    let scratch = tempfile::tempdir().unwrap();
    let src = |d: &Path| d.to_str().unwrap().to_owned();

    // A tampered artifact: same size, flipped bytes, after signing.
    let tampered = scratch.path().join("tampered");
    copy_release(&rel2, &tampered);
    let (artifact, size) = artifact_of(&tampered);
    let mut bytes = std::fs::read(tampered.join(&artifact)).unwrap();
    assert_eq!(bytes.len() as u64, size);
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(tampered.join(&artifact), &bytes).unwrap();
    let (r, code, _) = svc.update(&["--yes", "--source", &src(&tampered)], &[]);
    assert_refused(&svc, &r, code, &["sha256", "tampered"], V1);
    assert_eq!(step(&r, "verify").unwrap()["status"], "failed", "{r:#}");

    // A manifest edited after signing.
    let edited = scratch.path().join("edited");
    copy_release(&rel2, &edited);
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(edited.join("manifest.json")).unwrap())
            .unwrap();
    let e = m["versions"][0]["expires"].as_u64().unwrap();
    m["versions"][0]["expires"] = json!(e + 365 * 86_400);
    std::fs::write(
        edited.join("manifest.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    let (r, code, _) = svc.update(&["--yes", "--source", &src(&edited)], &[]);
    assert_refused(&svc, &r, code, &["signature"], V1);
    assert!(step(&r, "download").is_none(), "{:?}", step_names(&r));

    // Signed with a key that is not trusted.
    let other = scratch.path().join("other");
    copy_release(&rel2, &other);
    let other_key = scratch.path().join("other-key");
    tool(&["release", "keygen", "--out", other_key.to_str().unwrap()]);
    tool(&[
        "release",
        "sign",
        "--key",
        scratch.path().join("other-key.key").to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    let (r, code, _) = svc.update(&["--yes", "--source", &src(&other)], &[]);
    assert_refused(&svc, &r, code, &["trusted_keys", "signature"], V1);

    // Expired.
    let (r, code, _) = svc.update(&["--yes", "--source", &src(&expired)], &[]);
    assert_refused(&svc, &r, code, &["expired"], V1);

    // Over HTTP: more bytes than the manifest declares, announced in Content-Length ...
    let server = FileServer::serve(rel3.clone());
    let (artifact3, _) = artifact_of(&rel3);
    server.append(&artifact3, 4096, true);
    let (r, code, _) = svc.update(&["--yes", "--source", &server.url()], &[]);
    assert_refused(&svc, &r, code, &["larger than"], V1);
    assert_eq!(step(&r, "download").unwrap()["status"], "failed", "{r:#}");
    // ... and streamed without a length.
    server.append(&artifact3, 4096, false);
    let (r, code, _) = svc.update(&["--yes", "--source", &server.url()], &[]);
    assert_refused(&svc, &r, code, &["larger than"], V1);
    assert!(
        server
            .served
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.contains(&artifact3)),
        "the artifact came over HTTP"
    );

    // The good release over HTTP applies: v1 -> v3.
    server.append(&artifact3, 0, true);
    let (r, code, _) = svc.update(&["--yes", "--source", &server.url()], &[]);
    assert_ok(&r, code, V1, V3);
    assert!(
        step(&r, "download").unwrap()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1"),
        "{r:#}"
    );
    svc.assert_serving(V3);

    // An older version is refused ...
    let (r, code, _) = svc.update(&["--yes", "--source", &src(&rel2)], &[]);
    assert_refused(&svc, &r, code, &["older", "downgrade"], V3);
    assert!(reason(&r).contains("--allow-downgrade"), "{r:#}");
    // ... unless asked for.
    let (r, code, _) = svc.update(
        &["--yes", "--allow-downgrade", "--source", &src(&rel2)],
        &[],
    );
    assert_ok(&r, code, V3, V2);
    svc.assert_serving(V2);
}

/// Broken new versions roll back to a serving v2: one that fails preflight, one that exits
/// at start-up, one that never becomes ready.
#[test]
fn broken_new_versions_roll_back_to_a_serving_v2() {
    if !systemd_available() {
        return;
    }
    let releases: Vec<(&str, &str, PathBuf)> = [CHECK_FAILS, EXIT_AT_START, NEVER_READY]
        .iter()
        .map(|(v, fault)| (*v, *fault, release(&[(v, Some(fault))], 30)))
        .collect();
    let svc = Svc::new("ubrk", &binary(V2, None), "");
    svc.assert_serving(V2);
    for (version, fault, rel) in &releases {
        let t0 = Instant::now();
        let (r, code, out) = svc.update(&["--yes", "--source", rel.to_str().unwrap()], &[]);
        println!(
            "{version} ({fault}) took {:?}: {} — {}\n  steps {:?}",
            t0.elapsed(),
            r["result"],
            reason(&r),
            step_names(&r)
        );
        assert_eq!(code, Some(1), "{}", text(&out));
        let why = reason(&r);
        assert!(!why.is_empty(), "{r:#}");
        assert_eq!(r["after"]["version"], V2, "{r:#}");
        if *fault == "check-fails" {
            // Refused in preflight: nothing was switched (reported FAILED or ROLLED BACK).
            assert!(
                r["result"] == "FAILED" || r["result"] == "ROLLED BACK",
                "{r:#}"
            );
            assert_eq!(step(&r, "preflight").unwrap()["status"], "failed", "{r:#}");
            assert!(step(&r, "switch").is_none(), "{:?}", step_names(&r));
            assert!(why.contains("check"), "{why}");
        } else {
            assert_eq!(r["result"], "ROLLED BACK", "{r:#}");
            assert_eq!(step(&r, "switch").unwrap()["status"], "ok", "{r:#}");
            let failed: Vec<&str> = r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["status"] == "failed")
                .filter_map(|s| s["name"].as_str())
                .collect();
            assert!(
                failed.iter().any(|s| *s == "handover" || *s == "serving"),
                "it failed at the handover or the verification: {failed:?}"
            );
            assert!(
                failed.iter().all(|s| !s.starts_with("rollback-")),
                "the rollback itself succeeded: {failed:?}"
            );
            let rb = step(&r, "rollback-serving").expect("rollback verified");
            assert_eq!(rb["status"], "ok", "{r:#}");
            let textual = svc.s.molt(&["update", "status"]);
            let textual = String::from_utf8_lossy(&textual.stdout);
            assert!(
                textual.starts_with("Update Result: ROLLED BACK"),
                "{textual}"
            );
            assert!(textual.contains('✗'), "{textual}");
        }
        svc.assert_serving(V2);
    }
}

/// `kill -9` of the updater right after each journalled step: recovery brings the install to
/// a consistent, serving, correctly labelled state (the old version, or the verified new one).
#[test]
fn kill_9_of_the_updater_after_each_step_is_recovered() {
    if !systemd_available() {
        return;
    }
    let rel = release(&[(V1, None), (V2, None)], 30);
    let svc = Svc::new("ukill", Path::new(MOLT), "");
    svc.assert_serving(V1);
    // Every journalled step but the last: after `prune` there is nothing left to interrupt.
    let steps = &PLAN[..PLAN.len() - 1];
    let mut at = V1.to_owned();
    let mut outcomes = Vec::new();
    for &step_name in steps {
        let to = if at == V1 { V2 } else { V1 };
        let t0 = Instant::now();
        let failpoint = format!("kill-after:{step_name}");
        let out = svc
            .cmd(&svc.installed_molt())
            .args([
                "update",
                "--yes",
                "--json",
                "--allow-downgrade",
                "--to",
                to,
                "--source",
                rel.to_str().unwrap(),
            ])
            .env("MOLT_UPDATE_FAILPOINT", &failpoint)
            .output()
            .unwrap();
        let killed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        println!(
            "{at} -> {to}, {failpoint}: exit {:?} after {:?}: {} {}",
            out.status.code(),
            t0.elapsed(),
            killed["result"],
            killed["reason"]
        );
        if step_name != "commit" {
            assert_ne!(out.status.code(), Some(0), "{}", text(&out));
            assert_ne!(killed["result"], "OK", "{killed:#}");
        }

        let index = PLAN.iter().position(|s| *s == step_name).unwrap_or(0);
        let handover = PLAN.iter().position(|s| *s == "handover").unwrap_or(0);
        if index < handover {
            // No gateway started, so nothing has recovered it yet: doctor sees the dead job.
            let doc = svc
                .cmd(&svc.installed_molt())
                .args(["doctor", "--json"])
                .output()
                .unwrap();
            let doc: Value = serde_json::from_slice(&doc.stdout).unwrap_or(Value::Null);
            let journal = doc["checks"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["id"] == "update-journal"))
                .cloned()
                .unwrap_or(Value::Null);
            assert_eq!(journal["status"], "fail", "after {failpoint}: {journal:#}");
            assert_eq!(journal["fixable"], true, "after {failpoint}: {journal:#}");
        }
        // Half the cases recover through `molt doctor --fix`, half through `molt update recover`.
        let args: &[&str] = if index % 2 == 1 {
            &["doctor", "--fix", "--json"]
        } else {
            &["update", "recover", "--json"]
        };
        let rec = svc.cmd(&svc.installed_molt()).args(args).output().unwrap();
        let rec_v: Value = serde_json::from_slice(&rec.stdout).unwrap_or(Value::Null);
        println!(
            "  {args:?}: exit {:?}: {} {} {:?}",
            rec.status.code(),
            rec_v["result"],
            rec_v["reason"],
            step_names(&rec_v)
        );
        // A gateway that started during the killed update may have launched the recovery
        // itself; either way the journal ends settled.
        let last = svc.wait_job_end();
        let now = svc.status()["currentVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            now == V1 || now == V2,
            "after {failpoint}: current is {now:?}"
        );
        svc.assert_serving(&now);
        // Past the verification the new version stays; before the switch the old one does.
        let expect = match step_name {
            "serving" | "commit" => Some(to),
            "lock" | "resolve" | "download" | "verify" | "unpack" | "preflight" | "snapshot" => {
                Some(at.as_str())
            }
            _ => None,
        };
        if let Some(v) = expect {
            assert_eq!(now, v, "after {failpoint}: {last:#}");
        }
        // The killed job itself is settled: no unfinished job is left in the journal.
        let doc = svc.s.molt_json(&["doctor", "--json"]);
        let journal = doc["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] == "update-journal"))
            .unwrap_or_else(|| panic!("no update-journal check: {doc:#}"))
            .clone();
        assert_eq!(journal["status"], "ok", "after {failpoint}: {journal:#}");
        assert!(
            journal["finding"]
                .as_str()
                .unwrap_or("")
                .starts_with("no unfinished update"),
            "after {failpoint}: {journal:#}"
        );
        outcomes.push(format!("{step_name}: {at} -> {now} in {:?}", t0.elapsed()));
        at = now;
    }
    println!("{}", outcomes.join("\n"));
    // A recovery killed half-way (after switching `current` back) leaves two unfinished jobs;
    // the next recovery settles both and lands on the version the update started from.
    let to = if at == V1 { V2 } else { V1 };
    let args = [
        "--yes",
        "--allow-downgrade",
        "--to",
        to,
        "--source",
        rel.to_str().unwrap(),
    ];
    let (_, code, _) = svc.update(&args, &[("MOLT_UPDATE_FAILPOINT", "kill-after:unit")]);
    assert_eq!(code, Some(1));
    let killed_recovery = svc
        .cmd(&svc.installed_molt())
        .args(["update", "recover", "--json"])
        .env("MOLT_UPDATE_FAILPOINT", "kill-after:recover-switch")
        .output()
        .unwrap();
    assert_eq!(
        killed_recovery.status.code(),
        Some(1),
        "{}",
        text(&killed_recovery)
    );
    let rec = svc
        .cmd(&svc.installed_molt())
        .args(["update", "recover", "--json"])
        .output()
        .unwrap();
    let rec_v: Value = serde_json::from_slice(&rec.stdout).unwrap_or(Value::Null);
    println!("recovery of a killed recovery: {:?}", step_names(&rec_v));
    assert_eq!(rec.status.code(), Some(0), "{rec_v:#}");
    svc.assert_serving(&at);
    let doc = svc
        .cmd(&svc.installed_molt())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&doc.stdout).unwrap_or(Value::Null);
    let journal = doc["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "update-journal"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(journal["status"], "ok", "{journal:#}");

    // Without `molt update recover`: the next `molt update` settles the killed job first.
    let to = if at == V1 { V2 } else { V1 };
    let args = [
        "--yes",
        "--allow-downgrade",
        "--to",
        to,
        "--source",
        rel.to_str().unwrap(),
    ];
    // Killed before the handover: no gateway starts (a starting gateway would recover it
    // itself, which `a_gateway_start_recovers_an_interrupted_update` covers).
    let (killed, code, _) = svc.update(&args, &[("MOLT_UPDATE_FAILPOINT", "kill-after:unit")]);
    assert_eq!(code, Some(1), "{killed:#}");
    let (r, code, _) = svc.update(&args, &[]);
    println!("the next update: {:?}", step_names(&r));
    assert_eq!(
        step(&r, "recover-inspect").map(|s| s["status"].clone()),
        Some(json!("ok")),
        "it recovered first: {:?}",
        step_names(&r)
    );
    assert_ok(&r, code, &at, to);
    svc.assert_serving(to);
}

/// A gateway start finds an interrupted update in the journal and recovers it: the updater is
/// killed after `current` switched (half-switched install), then the gateway dies and systemd
/// starts it again.
#[test]
fn a_gateway_start_recovers_an_interrupted_update() {
    if !systemd_available() {
        return;
    }
    let rel2 = release_of(V2);
    let svc = Svc::new("ustart", Path::new(MOLT), "");
    let (killed, code, _) = svc.update(
        &["--yes", "--source", rel2.to_str().unwrap()],
        &[("MOLT_UPDATE_FAILPOINT", "kill-after:switch")],
    );
    assert_eq!(code, Some(1), "{killed:#}");
    let st = svc.status();
    assert_eq!(st["currentVersion"], V2, "half-switched: {st:#}");
    assert_eq!(st["runningVersion"], V1, "half-switched: {st:#}");
    assert_eq!(st["coherent"], false, "{st:#}");

    let before = svc.s.show(&["NRestarts", "MainPID"]);
    let k = systemctl(&["kill", "--signal=SIGKILL", &svc.s.unit()]);
    assert!(k.status.success(), "{k:?}");
    wait_for(
        "systemd starts the gateway again",
        Duration::from_secs(30),
        || {
            let m = svc.s.show(&["NRestarts", "MainPID", "ActiveState"]);
            (m["ActiveState"] == "active"
                && m["NRestarts"] != before["NRestarts"]
                && m["MainPID"] != before["MainPID"])
                .then_some(())
        },
    );
    let r = svc.wait_job_end();
    println!(
        "after the gateway start: {} {} {:?}",
        r["kind"],
        r["result"],
        step_names(&r)
    );
    assert_eq!(r["kind"], "recover", "{r:#}");
    assert_eq!(r["result"], "OK", "{r:#}");
    assert_ne!(r["jobId"], killed["jobId"], "{r:#}");
    svc.assert_serving(V1);
    let doc = svc.s.molt_json(&["doctor", "--json"]);
    let journal = doc["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "update-journal"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(journal["status"], "ok", "{journal:#}");
}

/// `molt update rollback` after v1 -> v2 returns to v1 through the same path.
#[test]
fn rollback_returns_to_the_previous_version() {
    if !systemd_available() {
        return;
    }
    let rel2 = release_of(V2);
    let svc = Svc::new("urb", Path::new(MOLT), "");
    let (r, code, _) = svc.update(&["--yes", "--source", rel2.to_str().unwrap()], &[]);
    assert_ok(&r, code, V1, V2);
    svc.assert_serving(V2);
    let (r, code, _) = svc.update(&["rollback", "--yes"], &[]);
    assert_eq!(r["result"], "OK", "{r:#}");
    assert_eq!(code, Some(0));
    assert_eq!(r["kind"], "rollback", "{r:#}");
    assert_eq!(r["before"]["version"], V2, "{r:#}");
    assert_eq!(r["after"]["version"], V1, "{r:#}");
    for s in ["switch", "unit", "handover", "serving", "commit"] {
        assert_eq!(
            step(&r, s).map(|s| s["status"].clone()),
            Some(json!("ok")),
            "{s}: {:?}",
            step_names(&r)
        );
    }
    svc.assert_serving(V1);
}

/// `update.run` over the protocol, with a continuation message: the job runs outside the
/// gateway, ends OK, the result is broadcast as `molt.update.result` to a connected operator,
/// and `molt update status` shows the message.
#[test]
fn update_run_over_the_protocol_delivers_the_continuation_message() {
    if !systemd_available() {
        return;
    }
    let rel2 = release_of(V2);
    let svc = Svc::new(
        "urpc",
        Path::new(MOLT),
        &format!("source = \"{}\"\n", rel2.display()),
    );

    // An operator listens for events across the handover (reconnecting after 1012).
    let options = svc.s.client_options();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let listener = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use molt_client::Client;
            let deadline = Instant::now() + JOB_DEADLINE;
            let mut first = true;
            while Instant::now() < deadline {
                let Ok(mut c) = Client::connect(options.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if first {
                    let _ = ready_tx.send(());
                    first = false;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), c.next_event()).await {
                        Ok(Ok((name, payload))) if name == "molt.update.result" => {
                            let _ = tx.send(payload);
                            return;
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => break,
                        Err(_) if Instant::now() > deadline => return,
                        Err(_) => {}
                    }
                }
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the operator connects");

    let started = svc.s.molt_json(&[
        "call",
        "update.run",
        "--params",
        r#"{"continuationMessage":"hi","restartDelayMs":400,"timeoutMs":20000}"#,
    ]);
    println!("update.run: {started:#}");
    assert_eq!(started["ok"], true, "{started:#}");
    assert_eq!(started["status"], "started", "{started:#}");
    let job = started["jobId"].as_str().expect("a job id").to_owned();

    let deadline = Instant::now() + JOB_DEADLINE;
    let sentinel = loop {
        let st = svc.s.molt_json(&["call", "update.status"]);
        let s = st["sentinel"].clone();
        if s["jobId"] == job.as_str()
            && !matches!(s["result"].as_str(), Some("RUNNING" | "PENDING"))
        {
            break s;
        }
        assert!(Instant::now() < deadline, "update.status: {st:#}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(sentinel["result"], "OK", "{sentinel:#}");
    assert_eq!(sentinel["continuationMessage"], "hi", "{sentinel:#}");
    // restartDelayMs holds the handover back.
    let handover_ms = step(&sentinel, "handover")
        .and_then(|s| s["ms"].as_i64())
        .unwrap_or(0);
    assert!(handover_ms >= 400, "{sentinel:#}");
    assert_eq!(
        sentinel["launcher"],
        format!("systemd-run:molt-update-{job}"),
        "{sentinel:#}"
    );
    svc.assert_serving(V2);

    let event = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("molt.update.result reached the operator");
    println!("molt.update.result: {event:#}");
    assert_eq!(event["jobId"], job.as_str(), "{event:#}");
    assert_eq!(event["result"], "OK", "{event:#}");
    assert_eq!(event["continuationMessage"], "hi", "{event:#}");
    listener.join().unwrap();

    let r = svc.update_status();
    assert_eq!(r["jobId"], job.as_str(), "{r:#}");
    assert_eq!(r["continuationMessage"], "hi", "{r:#}");
    let out = svc.s.molt_ok(&["update", "status"]);
    assert!(out.contains("hi"), "{out}");
}

/// Where no service manager answers (a container, a box without a user session), the updater
/// runs as a detached process in its own session, logging to a file, and the transaction is
/// the same: a foreground gateway is handed over to v2. A dry run before it changes nothing.
#[test]
fn without_a_service_manager_the_updater_runs_detached() {
    let home = Home::new(MOLT, &format!("[gateway]\n{}", config("")));
    home.cli_ok(&["install"]);
    let _gw = home.start();
    let rel = release_of(V2);
    // A dry run goes through the preflight and changes nothing.
    let out = home.cli(&[
        "update",
        "--dry-run",
        "--json",
        "--source",
        rel.to_str().unwrap(),
    ]);
    let dry: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("non-JSON report ({e}): {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{dry:#}");
    assert_eq!(
        (&dry["result"], &dry["dryRun"]),
        (&json!("OK"), &json!(true))
    );
    assert_eq!(dry["after"], dry["before"], "{dry:#}");
    assert_eq!(dry["target"]["version"], V2, "{dry:#}");
    assert_eq!(
        step(&dry, "preflight").map(|s| &s["status"]),
        Some(&json!("ok"))
    );
    assert!(step(&dry, "switch").is_none(), "{dry:#}");
    let share = home.path().join(".local/share/molt");
    assert!(!share.join("versions").join(V2).exists());
    assert_eq!(
        std::fs::read_link(share.join("current")).unwrap(),
        Path::new("versions").join(V1)
    );
    // Home::cmd clears the environment: no XDG_RUNTIME_DIR, so no user manager answers.
    let out = home.cli(&[
        "update",
        "--yes",
        "--json",
        "--source",
        rel.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("non-JSON report ({e}): {}", text(&out)));
    assert_ok(&r, out.status.code(), V1, V2);
    let launcher = r["launcher"].as_str().unwrap_or("");
    assert!(launcher.starts_with("detached:"), "{r:#}");
    let job = r["jobId"].as_str().unwrap();
    let log = home.state_dir().join(format!("logs/update-{job}.log"));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("update step"),
        "{}: {log_text}",
        log.display()
    );
    let (code, body) = http_get(home.port, "/readyz").expect("readyz");
    assert_eq!(code, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["version"], V2, "{ready}");
    assert_eq!(ready["buildId"], r["after"]["buildId"], "{ready}");
    // What the update leaves in the state dir is as private as the state (design invariant 6).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = home.state_dir();
    let snapshot = state.join(format!("snapshots/pre-{job}.db"));
    for (p, want) in [
        (state.join("update.lock"), 0o600),
        (log.clone(), 0o600),
        (snapshot.clone(), 0o600),
        (state.join("snapshots"), 0o700),
    ] {
        assert_eq!(mode(&p), want, "{}", p.display());
    }
    // The updater ends soon after its job (it tells the gateway the result first).
    let pid: i32 = launcher["detached:".len()..].parse().unwrap();
    wait_for(
        "the detached updater to exit",
        Duration::from_secs(20),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
            matches!(state, None | Some("Z")).then_some(())
        },
    );
}

/// An https source goes through rustls with certificate verification: a certificate from an
/// unknown CA is refused before anything is fetched, and the same source is used once the
/// host trusts the CA (`SSL_CERT_FILE`, which the detached updater inherits).
#[test]
fn an_https_source_is_verified_with_rustls() {
    let rel = release_of(V2);
    let certs = tempfile::tempdir().unwrap();
    let tls = TlsFileServer::serve(rel, certs.path());
    let home = Home::new(MOLT, &format!("[gateway]\n{}", config("")));
    home.cli_ok(&["install"]);
    let _gw = home.start();

    let out = home.cli(&["update", "--yes", "--json", "--source", &tls.url()]);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("non-JSON report ({e}): {}", text(&out)));
    assert_eq!(
        (out.status.code(), &r["result"]),
        (Some(1), &json!("FAILED")),
        "{r:#}"
    );
    assert!(reason(&r).to_lowercase().contains("certificate"), "{r:#}");
    assert_eq!(
        step(&r, "resolve").map(|s| &s["status"]),
        Some(&json!("failed"))
    );

    let out = home
        .cmd()
        .env("SSL_CERT_FILE", &tls.ca_pem)
        .args(["update", "--yes", "--json", "--source", &tls.url()])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("non-JSON report ({e}): {}", text(&out)));
    assert_ok(&r, out.status.code(), V1, V2);
    let download = step(&r, "download")
        .and_then(|s| s["detail"].as_str())
        .unwrap_or("");
    assert!(download.contains(&tls.url()), "{r:#}");
}

// ---- the seed, with a real agent turn ------------------------------------------------------

const SEED_KEY: &str = "sk-molt-seed-5c2e9a71";

/// `[update] source` and the model and agent tables, after `config`'s `[update]` lines.
fn agent_extra(source: &Path, fake: &molt_fake_model::FakeModel) -> String {
    format!(
        "source = \"{}\"\n[models.providers.fake]\napi = \"openai-completions\"\nbase_url = \"{}\"\n\
         api_key = \"{SEED_KEY}\"\n[[models.providers.fake.models]]\nid = \"fake-1\"\n\
         [agents.defaults]\nmodel = \"fake/fake-1\"\n",
        source.display(),
        fake.openai_base_url()
    )
}

/// Replaces the release in `dir` with the one in `from`.
fn swap_release(dir: &Path, from: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    copy_release(from, dir);
}

/// Messages of session `key` (role, text), oldest first.
fn transcript(svc: &Svc, key: &str) -> Vec<(String, String)> {
    let h = svc.s.molt_json(&[
        "call",
        "chat.history",
        "--params",
        &json!({"sessionKey": key, "limit": 1000}).to_string(),
    ]);
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = m["content"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|b| b["text"].as_str())
                        .collect::<String>()
                })
                .or_else(|| m["content"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (m["role"].as_str().unwrap_or("").to_owned(), text)
        })
        .collect()
}

/// Sends `text` to `key` as run `run`, over the protocol; returns at once.
fn send(svc: &Svc, key: &str, run: &str, text: &str) {
    let r = svc.s.molt_json(&[
        "call",
        "chat.send",
        "--params",
        &json!({"sessionKey": key, "message": text, "idempotencyKey": run}).to_string(),
    ]);
    assert_eq!(r["runId"], run, "{r:#}");
}

/// The seed, with the agent asked to update itself: session A's model calls the `gateway`
/// tool's `update.run` while sessions B and C stream slow replies and an exec run is busy.
/// v2 serves, the unit stays active, no connect is refused, every turn and the run complete,
/// and A hears "v2 runs" exactly once. Then a broken v3 through the same tool rolls back,
/// and A hears that too.
#[test]
fn the_seed_with_an_agent_that_updates_itself_through_its_gateway_tool() {
    if !systemd_available() {
        return;
    }
    use molt_fake_model::{FakeModel, Reply};
    let fake = FakeModel::start_with_key(SEED_KEY);
    fake.set_default(Reply::text("(unscripted)"));
    let source = fixtures()
        .root
        .join(format!("seed-agent-src-{}", std::process::id()));
    swap_release(&source, &release_of(V2));
    let svc = Svc::new("uagent", Path::new(MOLT), &agent_extra(&source, &fake));
    svc.assert_serving(V1);

    // B and C stream slowly: ~10 s each, across the update.
    let slow = || {
        Reply::text_chunks((0..40).map(|i| format!("b{i} "))).interval(Duration::from_millis(250))
    };
    for (n, key) in [(1, "agent:main:b"), (2, "agent:main:c")] {
        fake.push(slow());
        send(&svc, key, &format!("seed-{key}"), "tell me a long story");
        wait_for("the slow stream starts", Duration::from_secs(20), || {
            (fake.request_count() >= n).then_some(())
        });
    }
    let busy = svc
        .s
        .molt_ok(&["run", "exec", "--", "sh", "-c", "sleep 8; echo done"])
        .trim()
        .to_owned();

    let watch = Watch::start(&svc);

    // A asks its agent to update; the model calls the tool.
    let t0 = Instant::now();
    fake.push(Reply::tool_call(
        "call_up",
        "gateway",
        json!({"action": "update.run", "continuationMessage": "Back after the update.", "note": "asked by the user"}),
    ));
    fake.push(Reply::text("The update is under way."));
    send(&svc, "agent:main:a", "seed-a", "update yourself");
    let r = svc.wait_job_end();
    println!("the agent's update: {:?}\n{r:#}", t0.elapsed());
    assert_ok(&r, Some(0), V1, V2);
    assert_eq!(r["requester"], "agent", "{r:#}");
    let job = r["jobId"].as_str().unwrap().to_owned();
    for run in [
        "seed-agent:main:b",
        "seed-agent:main:c",
        "seed-a",
        busy.as_str(),
    ] {
        wait_for(
            "every turn and run completes",
            Duration::from_secs(90),
            || (run_of(&svc, run)["state"] == "succeeded").then_some(()),
        );
    }
    let (connects, refused, seen) = watch.finish();
    println!("connects {connects} refused {refused}; unit states {seen:?}");
    assert_eq!(refused, 0, "no refused connection");
    assert_eq!(
        seen,
        BTreeSet::from(["active".to_owned()]),
        "the unit stays active"
    );
    svc.assert_serving(V2);
    for key in ["agent:main:b", "agent:main:c"] {
        let t = transcript(&svc, key);
        let reply = &t.last().unwrap().1;
        assert!(
            reply.starts_with("b0 b1") && reply.trim_end().ends_with("b39"),
            "{key} got its whole reply once: {t:?}"
        );
    }
    let says_v2 = |t: &[(String, String)]| {
        t.iter()
            .filter(|(role, text)| {
                role == "assistant" && text.contains(&format!("molt {V2} now runs"))
            })
            .count()
    };
    let a = wait_for("A hears the outcome", Duration::from_secs(30), || {
        let t = transcript(&svc, "agent:main:a");
        (says_v2(&t) > 0).then_some(t)
    });
    println!("A: {a:#?}");
    assert_eq!(says_v2(&a), 1, "exactly once: {a:#?}");
    let note = a.iter().find(|(_, t)| t.contains("now runs")).unwrap();
    assert!(
        note.1.contains(&job) && note.1.contains("Back after the update."),
        "{note:?}"
    );

    // A broken v3 through the same tool: rolled back, and A is told.
    swap_release(
        &source,
        &release(&[(EXIT_AT_START.0, Some(EXIT_AT_START.1))], 30),
    );
    fake.push(Reply::tool_call(
        "call_up3",
        "gateway",
        json!({"action": "update.run"}),
    ));
    fake.push(Reply::text("Trying the next version."));
    send(&svc, "agent:main:a", "seed-a3", "update again");
    let r3 = wait_for("the v3 job ends", JOB_DEADLINE, || {
        let r = svc.update_status();
        (r["jobId"] != job.as_str()
            && !matches!(r["result"].as_str(), Some("RUNNING" | "PENDING") | None))
        .then_some(r)
    });
    println!("v3: {r3:#}");
    assert_eq!(r3["result"], "ROLLED BACK", "{r3:#}");
    svc.assert_serving(V2);
    let a = wait_for("A hears of the rollback", Duration::from_secs(30), || {
        let t = transcript(&svc, "agent:main:a");
        t.iter()
            .any(|(role, text)| role == "assistant" && text.contains("ROLLED BACK"))
            .then_some(t)
    });
    let rolled: Vec<_> = a
        .iter()
        .filter(|(_, t)| t.contains("ROLLED BACK"))
        .collect();
    assert_eq!(rolled.len(), 1, "{a:#?}");
    assert!(
        rolled[0].1.contains(&format!("molt {V2} still runs")),
        "{rolled:?}"
    );
    assert_eq!(says_v2(&a), 1, "the first outcome is not repeated: {a:#?}");
}

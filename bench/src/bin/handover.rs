//! Handover restart vs. `systemctl --user restart`, side by side, under connection load.
//!
//! The release binary runs as a `Type=notify` systemd *user* service (private temp HOME, free
//! loopback port). Both phases run the same bounded load loop: `LOAD_TASKS` tokio tasks that
//! each keep opening a new TCP+WebSocket connection (`Client::connect`), make
//! `CALLS_PER_CONN` `health` calls and close it, pausing `RETRY_PAUSE` after a failed connect.
//!
//! 1. handover: `RESTARTS` × `gateway.restart.request` over a fresh client connection,
//!    `PAUSE` apart.
//! 2. naive: `RESTARTS` × `systemctl --user restart <unit>` (stop, then start), `PAUSE` apart,
//!    each followed by polling `/readyz` until it answers 200 from the new pid.
//!
//! Must run inside a systemd user manager:
//!
//! ```text
//! cargo build --release -p molt
//! scripts/with-systemd-user.sh cargo run --release -p molt-bench --bin handover
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use molt_bench::{
    Home, client_options, kill_processes_of, molt_bin, ms, percentile, print_header,
    print_log_summary, systemctl, unit_show, unit_text, user_manager_unit_dir,
};
use molt_client::{Client, ClientError, ClientOptions};
use serde_json::Value;

/// Restarts per phase.
const RESTARTS: usize = 20;
/// Pause before each restart.
const PAUSE: Duration = Duration::from_millis(150);
/// Concurrent load tasks.
const LOAD_TASKS: usize = 6;
/// `health` calls per load connection.
const CALLS_PER_CONN: usize = 3;
/// Connections per load task, at most.
const MAX_CONNECTS_PER_TASK: usize = 50_000;
/// Pause of a load task after a failed connect (bounds the retry rate while the port is down).
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Load before the first and after the last restart.
const WARMUP: Duration = Duration::from_millis(1_000);
const TAIL: Duration = Duration::from_millis(500);
/// A phase's load stops after this, whatever happens.
const PHASE_CAP: Duration = Duration::from_secs(60);
/// Gaps between successful health responses at least this long count as an outage.
const OUTAGE: Duration = Duration::from_millis(100);
/// How often the unit's state is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

fn die(msg: &str) -> ! {
    eprintln!("handover bench: {msg}");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------

/// The bench's unit: written, loaded and started on creation; stopped, removed and
/// unloaded on drop (also on panic).
struct Unit {
    name: String,
    file: PathBuf,
    home: PathBuf,
}

impl Unit {
    fn install(dir: &std::path::Path, home: &Home) -> Self {
        let name = format!("molt-bench-handover-{}.service", home.port);
        std::fs::create_dir_all(dir).expect("create the user unit directory");
        let text = unit_text(
            home,
            "molt bench gateway (handover vs systemctl restart)",
            "StartLimitIntervalSec=0\n",
            &format!("StandardError=append:{}", home.log_path().display()),
        );
        let file = dir.join(&name);
        std::fs::write(&file, text).expect("write the unit file");
        let unit = Self {
            name,
            file,
            home: home.path().to_owned(),
        };
        let out = systemctl(&["daemon-reload"]);
        assert!(out.status.success(), "daemon-reload: {out:?}");
        let out = systemctl(&["start", &unit.name]);
        assert!(
            out.status.success(),
            "systemctl --user start {}: {}; log: {}",
            unit.name,
            String::from_utf8_lossy(&out.stderr).trim(),
            home.log_path().display()
        );
        unit
    }

    fn show(&self, props: &[&str]) -> BTreeMap<String, String> {
        unit_show(&self.name, props)
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        let out = systemctl(&["stop", &self.name]);
        if !out.status.success() {
            eprintln!(
                "systemctl --user stop {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let _ = systemctl(&["reset-failed", &self.name]);
        let _ = std::fs::remove_file(&self.file);
        let _ = systemctl(&["daemon-reload"]);
        let n = kill_processes_of(&self.home);
        if n > 0 {
            eprintln!("killed {n} leftover process(es) that ran under the bench HOME");
        }
    }
}

/// Samples ActiveState/SubState and MainPID of the unit until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(BTreeSet<String>, BTreeSet<String>)>,
}

impl Sampler {
    fn start(unit: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, unit) = (stop.clone(), unit.to_owned());
        let thread = std::thread::spawn(move || {
            let (mut states, mut pids) = (BTreeSet::new(), BTreeSet::new());
            while !s.load(Ordering::Relaxed) {
                let v = unit_show(&unit, &["ActiveState", "SubState", "MainPID"]);
                states.insert(format!(
                    "{}/{}",
                    v.get("ActiveState").map_or("?", String::as_str),
                    v.get("SubState").map_or("?", String::as_str)
                ));
                pids.insert(v.get("MainPID").cloned().unwrap_or_default());
                std::thread::sleep(SAMPLE_EVERY);
            }
            (states, pids)
        });
        Self { stop, thread }
    }

    fn finish(self) -> (BTreeSet<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

// ---------------------------------------------------------------------------------------
// HTTP probe
// ---------------------------------------------------------------------------------------

/// `GET /readyz`: (status, pid from the body).
fn readyz(port: u16) -> Option<(u16, Option<i64>)> {
    let (status, body) = molt_bench::http_get(port, "/readyz")?;
    let pid = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["pid"].as_i64());
    Some((status, pid))
}

/// Polls `/readyz` every 2 ms until it answers 200 from a pid other than `old`.
fn wait_ready_new_pid(port: u16, old: Option<i64>, timeout: Duration) -> Option<i64> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Some((200, Some(pid))) = readyz(port)
            && Some(pid) != old
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

// ---------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    connected: AtomicU64,
    /// ECONNREFUSED on connect.
    refused: AtomicU64,
    /// ECONNRESET during connect or handshake.
    reset_connect: AtomicU64,
    /// The TCP connection ended without a WebSocket close during the handshake.
    eof_connect: AtomicU64,
    /// The `connect` request was answered UNAVAILABLE (a graceful "retry shortly").
    unavailable_connect: AtomicU64,
    /// The handshake was closed with 1012 before `hello-ok`.
    close1012_connect: AtomicU64,
    timeout_connect: AtomicU64,
    other_connect: AtomicU64,
    health_ok: AtomicU64,
    /// A health call ended by close 1012 (graceful restart notice).
    health_1012: AtomicU64,
    /// ECONNRESET during a health call.
    reset_call: AtomicU64,
    /// The connection ended without a WebSocket close during a health call.
    eof_call: AtomicU64,
    other_call: AtomicU64,
    /// How many unclassified errors have been printed.
    printed: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct Snapshot {
    attempts: u64,
    connected: u64,
    refused: u64,
    reset_connect: u64,
    eof_connect: u64,
    unavailable_connect: u64,
    close1012_connect: u64,
    timeout_connect: u64,
    other_connect: u64,
    health_ok: u64,
    health_1012: u64,
    reset_call: u64,
    eof_call: u64,
    other_call: u64,
}

impl Counts {
    fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            attempts: g(&self.attempts),
            connected: g(&self.connected),
            refused: g(&self.refused),
            reset_connect: g(&self.reset_connect),
            eof_connect: g(&self.eof_connect),
            unavailable_connect: g(&self.unavailable_connect),
            close1012_connect: g(&self.close1012_connect),
            timeout_connect: g(&self.timeout_connect),
            other_connect: g(&self.other_connect),
            health_ok: g(&self.health_ok),
            health_1012: g(&self.health_1012),
            reset_call: g(&self.reset_call),
            eof_call: g(&self.eof_call),
            other_call: g(&self.other_call),
        }
    }

    fn note_other(&self, what: &str, e: &ClientError) {
        if self.printed.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("  unclassified {what} error: {e}");
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn io_text(e: &ClientError) -> String {
    match e {
        ClientError::Connect { message, .. } => message.to_lowercase(),
        ClientError::Closed { reason, .. } => reason.to_lowercase(),
        _ => String::new(),
    }
}

fn is_econnreset(t: &str) -> bool {
    t.contains("connection reset by peer") || t.contains("os error 104")
}

/// The peer closed the TCP connection without a WebSocket close (during the HTTP upgrade,
/// tungstenite says "Handshake not finished").
fn is_eof(t: &str) -> bool {
    t.contains("reset without closing handshake")
        || t.contains("connection lost")
        || t.contains("handshake not finished")
}

fn classify_connect(c: &Counts, e: &ClientError) {
    let t = io_text(e);
    if t.contains("connection refused") || t.contains("os error 111") {
        inc(&c.refused);
    } else if is_econnreset(&t) {
        inc(&c.reset_connect);
    } else if is_eof(&t) {
        inc(&c.eof_connect);
    } else if matches!(e, ClientError::Handshake(s) if s.code == "UNAVAILABLE") {
        if c.unavailable_connect.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("  first handshake UNAVAILABLE of the phase: {e}");
        }
    } else if matches!(e, ClientError::Closed { code: 1012, .. }) {
        inc(&c.close1012_connect);
    } else if matches!(e, ClientError::Timeout(_)) {
        inc(&c.timeout_connect);
    } else {
        c.note_other("connect", e);
        inc(&c.other_connect);
    }
}

fn classify_call(c: &Counts, e: &ClientError) {
    let t = io_text(e);
    if matches!(e, ClientError::Closed { code: 1012, .. }) {
        inc(&c.health_1012);
    } else if is_econnreset(&t) {
        inc(&c.reset_call);
    } else if is_eof(&t) {
        inc(&c.eof_call);
    } else {
        c.note_other("health", e);
        inc(&c.other_call);
    }
}

/// One load task: connect, `CALLS_PER_CONN` health calls, close; until `stop`, the
/// deadline or `MAX_CONNECTS_PER_TASK`. Returns when each successful health answer arrived.
async fn load_task(
    opts: ClientOptions,
    c: Arc<Counts>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Vec<Instant> {
    let mut ok = Vec::with_capacity(16 * 1024);
    for _ in 0..MAX_CONNECTS_PER_TASK {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        inc(&c.attempts);
        let mut client = match Client::connect(opts.clone()).await {
            Ok(cl) => cl,
            Err(e) => {
                classify_connect(&c, &e);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        inc(&c.connected);
        for _ in 0..CALLS_PER_CONN {
            match client.call_once("health", None).await {
                Ok(r) if r["ok"] == true => {
                    ok.push(Instant::now());
                    inc(&c.health_ok);
                }
                Ok(r) => {
                    if c.printed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("  health answered without ok: {r}");
                    }
                    inc(&c.other_call);
                    break;
                }
                Err(e) => {
                    classify_call(&c, &e);
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
    }
    ok
}

/// A running load.
struct Load {
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Instant>>>,
    started: Instant,
}

impl Load {
    fn start(rt: &tokio::runtime::Runtime, home: &Home) -> Self {
        let mut opts = client_options(home);
        opts.request_timeout = Duration::from_secs(5);
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + PHASE_CAP;
        let tasks = (0..LOAD_TASKS)
            .map(|_| {
                rt.spawn(load_task(
                    opts.clone(),
                    counts.clone(),
                    stop.clone(),
                    deadline,
                ))
            })
            .collect();
        Self {
            counts,
            stop,
            tasks,
            started,
        }
    }

    /// Stops the load; returns the counts, the sorted success times and the load's span.
    fn finish(self, rt: &tokio::runtime::Runtime) -> (Snapshot, Vec<Instant>, Instant, Instant) {
        self.stop.store(true, Ordering::Relaxed);
        // The tasks stop by themselves at the cap: gaps end there at the latest.
        let stopped = Instant::now().min(self.started + PHASE_CAP);
        let mut ok = Vec::new();
        rt.block_on(async {
            for t in self.tasks {
                match tokio::time::timeout(Duration::from_secs(15), t).await {
                    Ok(Ok(v)) => ok.extend(v),
                    Ok(Err(e)) => eprintln!("  load task failed: {e}"),
                    Err(_) => eprintln!("  load task did not stop within 15 s"),
                }
            }
        });
        ok.sort_unstable();
        (self.counts.snapshot(), ok, self.started, stopped)
    }
}

/// Gaps between consecutive successful health answers (including from the load's start to
/// the first one and from the last one to its stop).
struct Gaps {
    max: Duration,
    /// When the longest gap began, from the load's start.
    max_at: Duration,
    outages: usize,
    outage_total: Duration,
}

fn gaps(ok: &[Instant], start: Instant, stop: Instant) -> Gaps {
    let mut points = Vec::with_capacity(ok.len() + 2);
    points.push(start);
    points.extend_from_slice(ok);
    points.push(stop);
    let mut g = Gaps {
        max: Duration::ZERO,
        max_at: Duration::ZERO,
        outages: 0,
        outage_total: Duration::ZERO,
    };
    for w in points.windows(2) {
        let d = w[1].saturating_duration_since(w[0]);
        if d > g.max {
            g.max = d;
            g.max_at = w[0].saturating_duration_since(start);
        }
        if d >= OUTAGE {
            g.outages += 1;
            g.outage_total += d;
        }
    }
    g
}

/// The longest gap in the warm-up, from its first success on.
fn baseline(ok: &[Instant], start: Instant) -> Duration {
    let end = start + WARMUP;
    ok.iter()
        .take_while(|t| **t <= end)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].saturating_duration_since(*w[0]))
        .max()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------

struct Phase {
    counts: Snapshot,
    gaps: Gaps,
    /// The longest gap during the warm-up (no restart yet).
    baseline_gap: Duration,
    load_secs: f64,
    /// Restarts that did not complete.
    failed: usize,
    /// Restart latency measured outside the gateway (request → response, or
    /// `systemctl restart` → `/readyz` 200 from the new pid).
    external: Vec<Duration>,
    /// The gateway's own figure (`handover.durationMs`), handover only.
    reported_ms: Vec<u64>,
    /// `systemctl --user restart` alone, naive only.
    systemctl: Vec<Duration>,
    states: BTreeSet<String>,
    main_pids: usize,
    nrestarts: (String, String),
    active_after: String,
}

fn handover_phase(rt: &tokio::runtime::Runtime, home: &Home, unit: &Unit) -> Phase {
    let n0 = unit.show(&["NRestarts"])["NRestarts"].clone();
    let sampler = Sampler::start(&unit.name);
    let load = Load::start(rt, home);
    let mut opts = client_options(home);
    opts.request_timeout = Duration::from_secs(30);
    let (mut external, mut reported_ms, mut failed) = (Vec::new(), Vec::new(), 0);
    let mut statuses = BTreeMap::<String, usize>::new();
    let mut last_pid = None;
    rt.block_on(async {
        tokio::time::sleep(WARMUP).await;
        for i in 0..RESTARTS {
            if load.started.elapsed() >= PHASE_CAP {
                eprintln!("  handover {i}: phase cap reached; skipping the rest");
                failed += RESTARTS - i;
                break;
            }
            tokio::time::sleep(PAUSE).await;
            let mut c = match Client::connect(opts.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("  handover {i}: the requester cannot connect: {e}");
                    failed += 1;
                    continue;
                }
            };
            let t0 = Instant::now();
            let r = c.call_once("gateway.restart.request", None).await;
            let took = t0.elapsed();
            match r {
                Ok(r) => {
                    let status = r["status"].as_str().unwrap_or("?").to_owned();
                    *statuses.entry(status).or_default() += 1;
                    match (
                        r["handover"]["durationMs"].as_u64(),
                        r["handover"]["to"]["pid"].as_i64(),
                    ) {
                        (Some(d), Some(pid)) => {
                            external.push(took);
                            reported_ms.push(d);
                            last_pid = Some(pid);
                        }
                        _ => {
                            eprintln!("  handover {i}: unexpected answer {r}");
                            failed += 1;
                        }
                    }
                }
                Err(e) => {
                    eprintln!("  handover {i}: {e}");
                    failed += 1;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
        }
        tokio::time::sleep(TAIL).await;
    });
    let (counts, ok, start, stop) = load.finish(rt);
    let (states, pids) = sampler.finish();
    println!("# handover: answers by status {statuses:?}");
    if let Some(pid) = last_pid {
        let t0 = Instant::now();
        while unit.show(&["MainPID"])["MainPID"] != pid.to_string()
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let after = unit.show(&["NRestarts", "ActiveState", "SubState", "MainPID"]);
    let serving = readyz(home.port);
    println!(
        "# handover: after the phase unit {after:?}, last successor pid {last_pid:?}, readyz {serving:?}"
    );
    Phase {
        counts,
        gaps: gaps(&ok, start, stop),
        baseline_gap: baseline(&ok, start),
        load_secs: stop.duration_since(start).as_secs_f64(),
        failed,
        external,
        reported_ms,
        systemctl: Vec::new(),
        states,
        main_pids: pids.len(),
        nrestarts: (n0, after["NRestarts"].clone()),
        active_after: format!("{}/{}", after["ActiveState"], after["SubState"]),
    }
}

fn naive_phase(rt: &tokio::runtime::Runtime, home: &Home, unit: &Unit) -> Phase {
    let n0 = unit.show(&["NRestarts"])["NRestarts"].clone();
    let sampler = Sampler::start(&unit.name);
    let load = Load::start(rt, home);
    let (mut external, mut systemctl_took, mut failed) = (Vec::new(), Vec::new(), 0);
    std::thread::sleep(WARMUP);
    for i in 0..RESTARTS {
        if load.started.elapsed() >= PHASE_CAP {
            eprintln!("  restart {i}: phase cap reached; skipping the rest");
            failed += RESTARTS - i;
            break;
        }
        std::thread::sleep(PAUSE);
        let old = readyz(home.port).and_then(|(_, pid)| pid);
        let t0 = Instant::now();
        let out = systemctl(&["restart", &unit.name]);
        let sc = t0.elapsed();
        if !out.status.success() {
            eprintln!(
                "  systemctl restart {i}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            failed += 1;
            continue;
        }
        match wait_ready_new_pid(home.port, old, Duration::from_secs(15)) {
            Some(_) => {
                external.push(t0.elapsed());
                systemctl_took.push(sc);
            }
            None => {
                eprintln!("  restart {i}: /readyz not 200 from a new pid within 15 s");
                failed += 1;
            }
        }
    }
    std::thread::sleep(TAIL);
    let (counts, ok, start, stop) = load.finish(rt);
    let (states, pids) = sampler.finish();
    let after = unit.show(&["NRestarts", "ActiveState", "SubState", "MainPID"]);
    println!(
        "# naive: after the phase unit {after:?}, readyz {:?}",
        readyz(home.port)
    );
    Phase {
        counts,
        gaps: gaps(&ok, start, stop),
        baseline_gap: baseline(&ok, start),
        load_secs: stop.duration_since(start).as_secs_f64(),
        failed,
        external,
        reported_ms: Vec::new(),
        systemctl: systemctl_took,
        states,
        main_pids: pids.len(),
        nrestarts: (n0, after["NRestarts"].clone()),
        active_after: format!("{}/{}", after["ActiveState"], after["SubState"]),
    }
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn pct_ms(v: &[Duration], p: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    ms(percentile(&s, p))
}

fn pct_u64(v: &[u64], p: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    percentile(&s, p).to_string()
}

fn resets(c: &Snapshot) -> u64 {
    c.reset_connect + c.eof_connect + c.reset_call + c.eof_call
}

fn kv(tag: &str, p: &Phase) {
    let c = &p.counts;
    println!(
        "handover_bench_{tag} restarts={RESTARTS} failed={} connects={} connected={} refused={} \
         resets={} (econnreset_connect={} eof_connect={} econnreset_call={} eof_call={}) \
         handshake_unavailable={} handshake_closed_1012={} connect_timeouts={} other_connect={} health_ok={} \
         health_closed_1012={} other_call={} load_secs={:.2}",
        p.failed,
        c.attempts,
        c.connected,
        c.refused,
        resets(c),
        c.reset_connect,
        c.eof_connect,
        c.reset_call,
        c.eof_call,
        c.unavailable_connect,
        c.close1012_connect,
        c.timeout_connect,
        c.other_connect,
        c.health_ok,
        c.health_1012,
        c.other_call,
        p.load_secs,
    );
    println!(
        "handover_bench_{tag}_unavailability max_gap_ms={} at_ms={} baseline_max_gap_ms={} \
         outages_ge_{}ms={} outage_total_ms={}",
        ms(p.gaps.max),
        p.gaps.max_at.as_millis(),
        ms(p.baseline_gap),
        OUTAGE.as_millis(),
        p.gaps.outages,
        ms(p.gaps.outage_total),
    );
    println!(
        "handover_bench_{tag}_unit states_seen={:?} distinct_main_pids_sampled={} nrestarts_before={} nrestarts_after={} after={}",
        p.states, p.main_pids, p.nrestarts.0, p.nrestarts.1, p.active_after,
    );
}

fn ratio(naive: f64, handover: f64, what: &str) -> String {
    if handover == 0.0 && naive == 0.0 {
        "n/a (both 0)".into()
    } else if handover == 0.0 {
        format!("∞ (handover {what} 0)")
    } else {
        format!("{:.1}×", naive / handover)
    }
}

fn table(h: &Phase, n: &Phase) {
    let rows: Vec<(&str, String, String)> = vec![
        (
            "restarts completed",
            format!("{}/{RESTARTS}", RESTARTS - h.failed),
            format!("{}/{RESTARTS}", RESTARTS - n.failed),
        ),
        (
            "connect attempts",
            h.counts.attempts.to_string(),
            n.counts.attempts.to_string(),
        ),
        (
            "refused (ECONNREFUSED)",
            h.counts.refused.to_string(),
            n.counts.refused.to_string(),
        ),
        (
            "resets (RST or EOF w/o WS close)",
            resets(&h.counts).to_string(),
            resets(&n.counts).to_string(),
        ),
        (
            "handshake answered UNAVAILABLE",
            h.counts.unavailable_connect.to_string(),
            n.counts.unavailable_connect.to_string(),
        ),
        (
            "handshake closed 1012",
            h.counts.close1012_connect.to_string(),
            n.counts.close1012_connect.to_string(),
        ),
        (
            "health ok",
            h.counts.health_ok.to_string(),
            n.counts.health_ok.to_string(),
        ),
        (
            "health closed 1012 (graceful)",
            h.counts.health_1012.to_string(),
            n.counts.health_1012.to_string(),
        ),
        (
            "other errors",
            (h.counts.other_connect + h.counts.timeout_connect + h.counts.other_call).to_string(),
            (n.counts.other_connect + n.counts.timeout_connect + n.counts.other_call).to_string(),
        ),
        (
            "unavailability window (max gap) ms",
            ms(h.gaps.max),
            ms(n.gaps.max),
        ),
        (
            "baseline max gap ms (warm-up)",
            ms(h.baseline_gap),
            ms(n.baseline_gap),
        ),
        (
            "gaps >= 100 ms: count / total ms",
            format!("{} / {}", h.gaps.outages, ms(h.gaps.outage_total)),
            format!("{} / {}", n.gaps.outages, ms(n.gaps.outage_total)),
        ),
        (
            "restart latency p50 ms (external)",
            pct_ms(&h.external, 50.0),
            pct_ms(&n.external, 50.0),
        ),
        (
            "restart latency p99 ms (external)",
            pct_ms(&h.external, 99.0),
            pct_ms(&n.external, 99.0),
        ),
        (
            "handover.durationMs p50 / p99",
            format!(
                "{} / {}",
                pct_u64(&h.reported_ms, 50.0),
                pct_u64(&h.reported_ms, 99.0)
            ),
            "-".into(),
        ),
        (
            "systemctl restart call p50 / p99 ms",
            "-".into(),
            format!(
                "{} / {}",
                pct_ms(&n.systemctl, 50.0),
                pct_ms(&n.systemctl, 99.0)
            ),
        ),
        (
            "unit states seen",
            h.states.iter().cloned().collect::<Vec<_>>().join(","),
            n.states.iter().cloned().collect::<Vec<_>>().join(","),
        ),
        (
            "NRestarts before -> after",
            format!("{} -> {}", h.nrestarts.0, h.nrestarts.1),
            format!("{} -> {}", n.nrestarts.0, n.nrestarts.1),
        ),
    ];
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max("handover".len());
    println!();
    println!(
        "{:<w0$}  {:>w1$}  naive (systemctl --user restart)",
        "", "handover"
    );
    for (name, a, b) in &rows {
        println!("{name:<w0$}  {a:>w1$}  {b}");
    }
    println!();
    println!(
        "ratio refused naive/handover: {}",
        ratio(n.counts.refused as f64, h.counts.refused as f64, "refused")
    );
    println!(
        "ratio unavailability window naive/handover: {}",
        ratio(n.gaps.max.as_secs_f64(), h.gaps.max.as_secs_f64(), "window")
    );
}

fn main() {
    let unit_dir = user_manager_unit_dir("handover").unwrap_or_else(|e| die(&e));
    print_header("handover");
    println!(
        "# load: {LOAD_TASKS} tasks, each: new TCP+WebSocket connection, {CALLS_PER_CONN} health calls, close; \
         {} ms pause after a failed connect; at most {MAX_CONNECTS_PER_TASK} connections per task and {} s per phase",
        RETRY_PAUSE.as_millis(),
        PHASE_CAP.as_secs()
    );
    println!(
        "# {RESTARTS} restarts per phase, {} ms apart; {} ms of load before the first and {} ms after the last",
        PAUSE.as_millis(),
        WARMUP.as_millis(),
        TAIL.as_millis()
    );
    let t_all = Instant::now();
    // The unit's ExecStart wants a normalised absolute path.
    let bin = molt_bin();
    let home = Home::without_config(bin.canonicalize().unwrap_or(bin));
    let unit = Unit::install(&unit_dir, &home);
    if wait_ready_new_pid(home.port, None, Duration::from_secs(30)).is_none() {
        panic!(
            "the unit {} started but /readyz is not 200; log: {}",
            unit.name,
            home.log_path().display()
        );
    }
    println!(
        "# unit {} started: {:?}",
        unit.name,
        unit.show(&["ActiveState", "SubState", "MainPID", "Type", "NotifyAccess"])
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let h = handover_phase(&rt, &home, &unit);
    kv("handover", &h);
    std::thread::sleep(Duration::from_millis(500));
    let n = naive_phase(&rt, &home, &unit);
    kv("naive", &n);

    table(&h, &n);
    drop(rt);
    drop(unit);
    print_log_summary("handover bench", &home);
    println!("# total {:.1} s", t_all.elapsed().as_secs_f64());
}

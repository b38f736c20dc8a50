//! Benchmarks for molt: each binary in `src/bin` spawns the real release binary and prints
//! its figures.
//!
//! Every gateway runs in a private temporary HOME on a free loopback port, is talked to over
//! 127.0.0.1 only, and is stopped (SIGTERM, then SIGKILL if it hangs) when its [`Gateway`]
//! handle drops. Step processes it may leave behind are found by their HOME and killed.
//! Homes and gateways come from `molt-test-support`, shared with the integration tests; what
//! is here is the benches' own: the release binary, and printing figures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use molt_client::ClientOptions;
pub use molt_test_support::{
    Gateway, Home, Variants, fd_count, free_port, http_get, http_status, kill_processes_of,
    proc_status_field, proc_status_kib, procs_with_home, raise_nofile_limit, systemctl, unit_show,
    unit_text, user_manager_unit_dir, workspace_root,
};

/// How long a dropped gateway gets to stop after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(20);

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

/// A private HOME for [`molt_bin`]: `$HOME/.config/molt/molt.toml` holds `config` (no file
/// when `config` is `None`). Its gateways stop gracefully on drop.
pub fn bench_home(config: Option<&str>) -> Home {
    let home = match config {
        Some(text) => Home::new(molt_bin(), text),
        None => Home::without_config(molt_bin()),
    };
    home.stop_gracefully(STOP_GRACE)
}

/// Spawns the gateway and waits (polling every 2 ms, up to 30 s) for `/readyz` 200.
pub fn start(home: &Home) -> Gateway {
    let mut g = home.spawn(&[]);
    g.wait_ready_within(Duration::from_secs(30), Duration::from_millis(2));
    g
}

/// SIGTERMs the gateway and waits (up to 20 s) for its exit: the exit code (`None` for a
/// signal) and how long it took.
pub fn stop(gw: &mut Gateway) -> (Option<i32>, Duration) {
    gw.terminate(Duration::from_secs(20))
        .expect("gateway did not exit within 20 s of SIGTERM")
}

/// [`stop`], then prints the exit as a context line.
pub fn stop_and_print(gw: &mut Gateway) {
    let (code, took) = stop(gw);
    println!(
        "# gateway exit code={} after {} ms",
        code.map(|c| c.to_string())
            .unwrap_or_else(|| "signal".into()),
        took.as_millis()
    );
}

/// `ws://127.0.0.1:<port>` client options without a device identity (no pairing), with
/// the token the gateway generated at its first start, and no reconnecting: a bench counts
/// every failure.
pub fn client_options(home: &Home) -> ClientOptions {
    let mut o = home.client_options();
    o.reconnect_for = Duration::ZERO;
    o
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

/// The API key the agent benches configure for the fake model.
pub const AGENT_KEY: &str = "sk-bench";

/// A config whose default agent model is `fake/fake-1`, an OpenAI-compatible provider at
/// `base_url` (a `molt_fake_model::FakeModel`'s `openai_base_url()`), then `extra`.
pub fn agent_config(base_url: &str, extra: &str) -> String {
    molt_test_support::fake_model_agent_config(base_url, AGENT_KEY, extra)
}

/// [`bench_home`] with [`agent_config`]; the config holds a key, so it is made 0600 (the
/// gateway refuses a readable one).
pub fn agent_home(base_url: &str, extra: &str) -> Home {
    use std::os::unix::fs::PermissionsExt;
    let home = bench_home(Some(&agent_config(base_url, extra)));
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o600))
        .expect("chmod 0600 molt.toml");
    home
}

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// Samples a process's VmRSS every `every` on a thread until [`RssSampler::stop`], which
/// returns the highest value seen (KiB) and the number of samples.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl RssSampler {
    pub fn start(pid: i32, every: Duration) -> RssSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut peak, mut n) = (0, 0);
            while !flag.load(Ordering::SeqCst) {
                if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                    peak = peak.max(kib);
                    n += 1;
                }
                std::thread::sleep(every);
            }
            (peak, n)
        });
        RssSampler { stop, thread }
    }

    pub fn stop(self) -> (u64, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("rss sampler thread")
    }
}

/// p50, p99 and max of `v` (sorted in place) as `<name>_p50_<unit>=.. ..` fields, in
/// microseconds (`us`) or milliseconds with 2 decimals (`ms`).
pub fn dist_fields(name: &str, v: &mut [Duration], unit: &str) -> String {
    v.sort();
    let f = |d: Duration| if unit == "ms" { ms(d) } else { us(d) };
    format!(
        "{name}_p50_{unit}={} {name}_p99_{unit}={} {name}_max_{unit}={}",
        f(percentile(v, 50.0)),
        f(percentile(v, 99.0)),
        f(v[v.len() - 1]),
    )
}

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

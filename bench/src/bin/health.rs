//! `health` round trips: over 1 connection, then over 64 concurrent connections; then the
//! gateway's memory with 1,000 idle authenticated connections.
//!
//! Clients connect without a device identity (no pairing) on loopback, with the token the
//! gateway generated at its first start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use molt_bench::{
    Home, bench_home, client_options, fd_count, mib, print_header, print_log_summary,
    raise_nofile_limit, start, us,
};
use molt_client::Client;
use tokio::sync::Barrier;

/// How long each throughput phase runs, at most.
const PHASE: Duration = Duration::from_secs(5);
/// Request cap for the single-connection phase.
const SINGLE_MAX: usize = 20_000;
const CONCURRENT: usize = 64;
const IDLE_CONNS: usize = 1_000;
/// Connection counts at which the gateway's RSS is sampled.
const CHECKPOINTS: [usize; 4] = [100, 250, 500, IDLE_CONNS];
/// Pause before each RSS sample.
const SETTLE: Duration = Duration::from_millis(500);

fn summary(name: &str, lat: &mut [Duration], wall: Duration, conns: usize) {
    lat.sort();
    let n = lat.len();
    println!(
        "{name} rps={:.0} p50_us={} p99_us={} max_us={} n={n} conns={conns} secs={:.2}",
        n as f64 / wall.as_secs_f64(),
        us(molt_bench::percentile(lat, 50.0)),
        us(molt_bench::percentile(lat, 99.0)),
        us(lat[n - 1]),
        wall.as_secs_f64(),
    );
}

async fn single(home: &Home) {
    let mut c = Client::connect(client_options(home))
        .await
        .expect("connect");
    for _ in 0..200 {
        c.call_once("health", None).await.expect("health (warm-up)");
    }
    let mut lat = Vec::with_capacity(SINGLE_MAX);
    let t0 = Instant::now();
    while lat.len() < SINGLE_MAX && t0.elapsed() < PHASE {
        let t = Instant::now();
        let r = c.call_once("health", None).await.expect("health");
        lat.push(t.elapsed());
        assert_eq!(r["ok"], true, "health answered {r}");
    }
    let wall = t0.elapsed();
    c.close().await;
    summary("health_1conn", &mut lat, wall, 1);
}

async fn concurrent(home: &Home) {
    let mut clients = Vec::with_capacity(CONCURRENT);
    for _ in 0..CONCURRENT {
        clients.push(
            Client::connect(client_options(home))
                .await
                .expect("connect"),
        );
    }
    let barrier = Arc::new(Barrier::new(CONCURRENT + 1));
    let mut tasks = Vec::with_capacity(CONCURRENT);
    for mut c in clients {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                c.call_once("health", None).await.expect("health (warm-up)");
            }
            barrier.wait().await;
            let t0 = Instant::now();
            let mut lat = Vec::with_capacity(8192);
            while t0.elapsed() < PHASE {
                let t = Instant::now();
                c.call_once("health", None).await.expect("health");
                lat.push(t.elapsed());
            }
            c.close().await;
            lat
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let wall = t0.elapsed();
    summary("health_64conn", &mut lat, wall, CONCURRENT);
}

/// Opens `IDLE_CONNS` idle connections one after another; samples the gateway's RSS at
/// `CHECKPOINTS` connections. Returns the drain tasks (one per connection), the connect time
/// and `hello-ok` size of each connection, the RSS samples (KiB) and the connect wall time
/// (without the settle pauses).
async fn open_idle(
    home: &Home,
    rss_kib: &impl Fn() -> u64,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    Vec<Duration>,
    Vec<usize>,
    Vec<(usize, u64)>,
    Duration,
) {
    let mut connect = Vec::with_capacity(IDLE_CONNS);
    let mut hello_bytes = Vec::with_capacity(IDLE_CONNS);
    let mut tasks = Vec::with_capacity(IDLE_CONNS);
    let mut curve = vec![(0, rss_kib())];
    let mut wall = Duration::ZERO;
    for i in 0..IDLE_CONNS {
        let t = Instant::now();
        let c = Client::connect(client_options(home))
            .await
            .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
        let took = t.elapsed();
        wall += took;
        connect.push(took);
        hello_bytes.push(
            serde_json::to_string(c.hello())
                .map(|s| s.len())
                .unwrap_or(0),
        );
        // Each idle client drains its events (ticks) so it never counts as a slow consumer.
        tasks.push(tokio::spawn(async move {
            let mut c = c;
            while c.next_event().await.is_ok() {}
        }));
        if CHECKPOINTS.contains(&(i + 1)) {
            tokio::time::sleep(SETTLE).await;
            curve.push((i + 1, rss_kib()));
        }
    }
    (tasks, connect, hello_bytes, curve, wall)
}

async fn close_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn idle_conns(home: &Home, pid: i32, rss_kib: impl Fn() -> u64) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fds_before = fd_count(pid).unwrap_or(0);
    let (tasks, connect, hello_bytes, curve, wall) = open_idle(home, &rss_kib).await;
    let before = curve[0].1;
    let with = curve[curve.len() - 1].1;
    let fds_with = fd_count(pid).unwrap_or(0);
    let s = {
        let mut c = Client::connect(client_options(home))
            .await
            .expect("connect for status");
        let s = c.call_once("status", None).await.expect("status");
        c.close().await;
        s
    };
    let dead = tasks.iter().filter(|t| t.is_finished()).count();
    println!(
        "health_idle_rss_mib before={} with_{IDLE_CONNS}_conns={} delta_kib_per_conn={:.1} \
         gateway_reports_connections={} client_conns_closed={dead} gateway_fds={fds_before}->{fds_with}",
        mib(before),
        mib(with),
        (with as f64 - before as f64) / IDLE_CONNS as f64,
        s["connections"],
    );
    let marginal: Vec<String> = curve
        .windows(2)
        .map(|w| {
            let (n0, r0) = w[0];
            let (n1, r1) = w[1];
            format!(
                "{n0}-{n1}:{:.0}",
                (r1 as f64 - r0 as f64) / (n1 - n0) as f64
            )
        })
        .collect();
    let points: Vec<String> = curve
        .iter()
        .map(|(n, r)| format!("{n}:{}", mib(*r)))
        .collect();
    println!(
        "health_idle_rss_curve_mib {} marginal_kib_per_conn {}",
        points.join(" "),
        marginal.join(" ")
    );
    let p50_of = |range: std::ops::Range<usize>| {
        let mut v = connect[range].to_vec();
        v.sort();
        us(molt_bench::percentile(&v, 50.0))
    };
    println!(
        "health_idle_connect_us first100_p50={} last100_p50={} total_ms={} hello_ok_bytes first={} \
         last={} sum_mib={:.1}",
        p50_of(0..100),
        p50_of(IDLE_CONNS - 100..IDLE_CONNS),
        wall.as_millis(),
        hello_bytes[0],
        hello_bytes[IDLE_CONNS - 1],
        hello_bytes.iter().sum::<usize>() as f64 / (1024.0 * 1024.0),
    );
    close_all(tasks).await;
    let after1 = rss_kib();
    // A second round on the same process: does RSS grow again (a leak) or is memory reused?
    let (tasks, _, _, curve2, _) = open_idle(home, &rss_kib).await;
    close_all(tasks).await;
    println!(
        "health_idle_rss_mib after_close={} round2_with_{IDLE_CONNS}_conns={} round2_after_close={} gateway_fds={}",
        mib(after1),
        mib(curve2[curve2.len() - 1].1),
        mib(rss_kib()),
        fd_count(pid).unwrap_or(0)
    );
}

fn main() {
    print_header("health");
    let (soft, hard) = raise_nofile_limit();
    println!("# RLIMIT_NOFILE soft={soft} hard={hard}");
    assert!(
        soft as usize > IDLE_CONNS + 200,
        "need more than {} open files for {IDLE_CONNS} connections; soft limit is {soft}",
        IDLE_CONNS + 200
    );
    let home = bench_home(None);
    let mut gw = start(&home);
    let pid = gw.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("# gateway rss at ready: {} MiB", mib(gw.rss_kib()));
    rt.block_on(async {
        single(&home).await;
        concurrent(&home).await;
        idle_conns(&home, pid, || {
            molt_bench::proc_status_kib(pid, "VmRSS:").expect("read VmRSS")
        })
        .await;
    });
    drop(rt);
    molt_bench::stop_and_print(&mut gw);
    print_log_summary("health", &home);
}

//! 10,000 cron jobs: the gateway's CPU per idle minute and its memory, then how late fires
//! start when they are due all the time (the goal: p99 under 50 ms).
//!
//! The jobs are written straight into the gateway's database (created by a first start)
//! while it is stopped, as `cron.add` would write them, so that setting up 10,000 jobs does
//! not dominate the run.
//! - **Idle**: every job is `every 1h`, none due within the measured minute; CPU is the
//!   gateway's utime + stime over 60 s.
//! - **Busy**: every job is `every 60s`, their anchors spread evenly over the minute (about
//!   167 fires a second), each a system event into one of 100 sessions. Lateness is a fire's
//!   `started_at_ms` minus its `scheduled_at_ms`, from `cron_fires`, over 60 s.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use molt_bench::{bench_home, cpu_time, dist_fields, mib, print_header, start};
use rusqlite::{Connection, params};

const JOBS: usize = 10_000;
const MEASURE: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Replaces every job with `JOBS` `every` jobs of `every_ms`, anchored `spread` apart from
/// `first`; each a system event into one of 100 sessions.
fn write_jobs(db: &std::path::Path, every_ms: i64, first: i64, spread: f64) {
    let mut c = Connection::open(db).expect("open molt.db");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let tx = c.transaction().expect("transaction");
    tx.execute("DELETE FROM cron_jobs", []).expect("clear jobs");
    tx.execute("DELETE FROM cron_fires", [])
        .expect("clear fires");
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO cron_jobs(id, name, agent_id, enabled, spec, next_run_at_ms,
                    created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, 'main', 1, ?3, ?4, ?5, ?5)",
            )
            .expect("prepare");
        let now = now_ms();
        for i in 0..JOBS {
            let anchor = first + (i as f64 * spread) as i64;
            let spec = serde_json::json!({
                "schedule": {"kind": "every", "everyMs": every_ms, "anchorMs": anchor},
                "payload": {"kind": "systemEvent", "text": format!("tick {i}")},
                "sessionTarget": format!("session:agent:main:bench-{}", i % 100),
                "wakeMode": "now",
                "deleteAfterRun": false,
            });
            ins.execute(params![
                format!("cron-bench-{i:05}"),
                format!("job {i}"),
                spec.to_string(),
                anchor,
                now
            ])
            .expect("insert job");
        }
    }
    tx.commit().expect("commit jobs");
}

fn main() {
    print_header("cron");
    let home = bench_home(None);
    let db = home.state_dir().join("molt.db");
    {
        // The first start creates the database.
        let mut gw = start(&home);
        molt_bench::stop(&mut gw);
    }

    // Idle: nothing due for an hour.
    write_jobs(&db, 3_600_000, now_ms() + 600_000, 0.0);
    let mut gw = start(&home);
    let pid = gw.pid();
    std::thread::sleep(Duration::from_secs(5));
    let (c0, t0) = (cpu_time(pid), Instant::now());
    std::thread::sleep(MEASURE);
    let idle_cpu = cpu_time(pid).zip(c0).map(|(b, a)| b.saturating_sub(a));
    let per_min = idle_cpu.map(|c| c.as_secs_f64() * 60.0 / t0.elapsed().as_secs_f64());
    println!(
        "cron_idle jobs={JOBS} cpu_ms_per_idle_minute={:.1} rss_mib={}",
        per_min.map(|c| c * 1000.0).unwrap_or(f64::NAN),
        mib(gw.rss_kib())
    );
    molt_bench::stop(&mut gw);

    // Busy: a fire every 6 ms or so.
    let first = now_ms() + 10_000;
    write_jobs(&db, 60_000, first, 60_000.0 / JOBS as f64);
    let mut gw = start(&home);
    let pid = gw.pid();
    let wait = (first - now_ms()).max(0) as u64;
    std::thread::sleep(Duration::from_millis(wait));
    let c0 = cpu_time(pid);
    std::thread::sleep(MEASURE);
    let busy_cpu = cpu_time(pid).zip(c0).map(|(b, a)| b.saturating_sub(a));
    let end = now_ms();
    let rss = gw.rss_kib();
    molt_bench::stop(&mut gw);
    let c = Connection::open(&db).expect("open molt.db");
    let mut st = c
        .prepare(
            "SELECT started_at_ms - scheduled_at_ms, trigger FROM cron_fires
             WHERE scheduled_at_ms >= ?1 AND scheduled_at_ms < ?2",
        )
        .expect("prepare");
    let rows: Vec<(i64, String)> = st
        .query_map(params![first, end], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .filter_map(Result::ok)
        .collect();
    let catch_ups = rows.iter().filter(|(_, t)| t == "catch-up").count();
    let mut late: Vec<Duration> = rows
        .iter()
        .map(|(l, _)| Duration::from_millis((*l).max(0) as u64))
        .collect();
    let expected = ((end - first) as f64 / 60_000.0 * JOBS as f64) as i64;
    if late.is_empty() {
        println!("cron_lateness fires=0 expected~{expected}: nothing fired; see the gateway log");
        return;
    }
    println!(
        "cron_lateness {} fires={} expected~{expected} catch_ups={catch_ups} cpu_ms={} rss_mib={}",
        dist_fields("late", &mut late, "ms"),
        rows.len(),
        busy_cpu.map(|c| c.as_millis()).unwrap_or(0),
        mib(rss),
    );
}

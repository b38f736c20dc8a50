//! The stop path under load: 50 in-flight exec runs, then SIGTERM.
//!
//! With `sleep 300` the steps cannot finish inside the 10 s stop budget, so the gateway drains
//! until the budget is nearly spent, aborts them (they are re-queued) and exits. With
//! `sleep 1` they finish inside the budget: the drain path.

use std::time::{Duration, Instant};

use molt_bench::{
    Home, bench_home, client_options, ms, print_header, print_log_summary, procs_with_home, start,
};
use molt_client::Client;
use serde_json::{Value, json};

const RUNS: usize = 50;
const BUDGET_MS: u64 = 10_000;

fn sleeps_running(home: &Home) -> usize {
    procs_with_home(home.path())
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "sleep")
                .unwrap_or(false)
        })
        .count()
}

fn status(rt: &tokio::runtime::Runtime, home: &Home) -> Value {
    rt.block_on(async {
        let mut c = Client::connect(client_options(home))
            .await
            .expect("connect for status");
        let s = c.call_once("status", None).await.expect("status");
        c.close().await;
        s
    })
}

fn stop_line(home: &Home) -> String {
    home.stderr_log()
        .lines()
        .rev()
        .find(|l| l.contains("gateway stopped"))
        .map(str::trim)
        .unwrap_or("(no `gateway stopped` line in the log)")
        .to_owned()
}

fn scenario(rt: &tokio::runtime::Runtime, sleep_secs: u32) {
    let home = bench_home(Some(&format!("[gateway]\nstop_budget_ms = {BUDGET_MS}\n")));
    let mut gw = start(&home);
    let arg = sleep_secs.to_string();

    // Submit all runs over one connection, then wait until the gateway reports them running.
    let (submit, running_after) = rt.block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        let t0 = Instant::now();
        for i in 0..RUNS {
            let r = c
                .call_once(
                    "molt.run.exec",
                    Some(json!({ "command": "sleep", "args": [arg], "title": format!("stop50-{i}") })),
                )
                .await
                .expect("molt.run.exec");
            assert!(r["runId"].is_string(), "no runId in {r}");
        }
        let submit = t0.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = c.call_once("status", None).await.expect("status");
            if s["runs"]["running"].as_u64() == Some(RUNS as u64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "runs not all running after 30 s: {}",
                s["runs"]
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let running_after = t0.elapsed();
        c.close().await;
        (submit, running_after)
    });
    // `running` is committed when a run is claimed, just before its step process is spawned:
    // also wait (up to 10 s) until all 50 `sleep` processes exist.
    let t_procs = Instant::now();
    let mut procs = sleeps_running(&home);
    while procs < RUNS && t_procs.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
        procs = sleeps_running(&home);
    }
    let procs_wait = t_procs.elapsed();
    let rss = gw.rss_kib();

    let (code, took) = gw
        .terminate(Duration::from_secs(BUDGET_MS / 1000 + 20))
        .expect("gateway did not exit within budget + 20 s of SIGTERM");
    std::thread::sleep(Duration::from_millis(100));
    let left = sleeps_running(&home);
    let tag = format!("sleep{sleep_secs}");
    println!(
        "stop50_{tag}_sigterm_to_exit_ms value={} exit_code={} budget_ms={BUDGET_MS} runs={RUNS} \
         sleep_procs_at_sigterm={procs} sleep_procs_left_after_exit={left}",
        ms(took),
        code.map(|c| c.to_string())
            .unwrap_or_else(|| "signal".into()),
    );
    println!(
        "stop50_{tag}_setup_ms submit_{RUNS}_execs={} status_all_running={} then_all_procs_spawned=+{} gateway_rss_mib_with_{RUNS}_runs={:.1}",
        ms(submit),
        ms(running_after),
        ms(procs_wait),
        rss as f64 / 1024.0,
    );
    println!("stop50_{tag}_log: {}", stop_line(&home));
    drop(gw);

    // Restart on the same state to see where the runs ended up.
    let mut gw = start(&home);
    let s = status(rt, &home);
    println!("stop50_{tag}_after_restart runs={}", s["runs"]);
    if u64::from(sleep_secs) > BUDGET_MS / 1000 {
        // The re-queued `sleep 300` steps start again; a second SIGTERM skips the drain.
        gw.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(200));
        gw.signal(libc::SIGTERM);
    }
    let _ = gw.wait_exit_within(Duration::from_secs(BUDGET_MS / 1000 + 20));
    drop(gw);
    print_log_summary(&format!("stop50_{tag}"), &home);
}

fn main() {
    print_header("stop50");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    scenario(&rt, 300);
    scenario(&rt, 1);
}

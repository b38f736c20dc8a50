//! Handover restart against the real binary: busy runs, a successor that fails, SIGHUP,
//! coalescing, and 20 handovers under connection load.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use molt_client::{Client, ClientError};
use serde_json::Value;

fn readyz_pid(home: &Home) -> Option<i64> {
    molt_test_support::readyz_pid(home.port)
}

/// Installs `script` as `<share>/current/molt` (what a handover runs).
fn install_current(home: &Home, script: Option<&str>) {
    let dir = home.path().join(".local/share/molt/current");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("molt");
    let _ = std::fs::remove_file(&target);
    match script {
        Some(s) => {
            std::fs::write(&target, s).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        None => std::os::unix::fs::symlink(MOLT, &target).unwrap(),
    }
}

#[test]
fn busy_runs_do_not_delay_the_handover_and_finish_once() {
    let home = Home::new(MOLT, "");
    let mut gw = home.start();
    let old_pid = gw.pid();
    let markers: Vec<_> = (0..2)
        .map(|i| home.path().join(format!("run{i}")))
        .collect();
    let ids: Vec<String> = markers
        .iter()
        .map(|m| {
            let script = format!("echo start >> {0}; sleep 20; echo end >> {0}", m.display());
            home.cli_ok(&["run", "exec", "--", "sh", "-c", &script])
                .trim()
                .to_owned()
        })
        .collect();
    wait_for("both steps running", Duration::from_secs(10), || {
        markers
            .iter()
            .all(|m| std::fs::read_to_string(m).is_ok())
            .then_some(())
    });

    let t0 = Instant::now();
    let out = home.cli_json(&["gateway", "restart", "--json"]);
    let new_pid = wait_for("readyz from the new pid", Duration::from_secs(5), || {
        readyz_pid(&home).filter(|p| *p != old_pid as i64)
    });
    let accepting = t0.elapsed();
    println!(
        "handover with 2 busy runs: new process accepting after {accepting:?} (reported {} ms)",
        out["handover"]["durationMs"]
    );
    assert!(accepting < Duration::from_secs(1), "{accepting:?}");
    assert_eq!(out["handover"]["to"]["pid"].as_i64(), Some(new_pid));
    assert!(pid_alive(old_pid), "the old process drains its steps");

    for id in &ids {
        wait_for("run completes", Duration::from_secs(40), || {
            (run_state(&home, id)["state"] == "succeeded").then_some(())
        });
        assert_eq!(run_state(&home, id)["steps"][0]["attempts"], 1);
    }
    for m in &markers {
        let text = std::fs::read_to_string(m).unwrap();
        assert_eq!(text, "start\nend\n", "each step ran exactly once");
    }
    let (code, _) = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "the old process exits 0 after its steps");
    let status = home.cli_json(&["status", "--json"]);
    assert_eq!(status["pid"].as_i64(), Some(new_pid));
    assert_eq!(status["lastHandover"]["result"], "ok");
    assert_eq!(status["lastHandover"]["fromPid"], old_pid);
    // Kill the successor (not our child) at the end.
    unsafe {
        libc::kill(new_pid as i32, libc::SIGTERM);
    }
    wait_for("successor exits", Duration::from_secs(15), || {
        (!pid_alive(new_pid as i32)).then_some(())
    });
}

#[test]
fn a_successor_that_cannot_start_leaves_the_old_process_serving() {
    let home = Home::new(MOLT, "[gateway]\nhandover_timeout_ms = 2000\n");
    let gw = home.start();
    let old = gw.pid() as i64;

    install_current(&home, Some("#!/bin/sh\necho broken >&2\nexit 1\n"));
    let out = home.cli(&["gateway", "restart"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exited") && err.contains("still serves"),
        "{err}"
    );
    assert_eq!(readyz_pid(&home), Some(old));

    install_current(&home, Some("#!/bin/sh\nsleep 60\n"));
    let t0 = Instant::now();
    let out = home.cli(&["gateway", "restart"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not report ready within 2000 ms"));
    assert!(t0.elapsed() < Duration::from_secs(6));
    assert_eq!(readyz_pid(&home), Some(old));
    let status = home.cli_json(&["status", "--json"]);
    assert_eq!(status["lastHandover"]["result"], "failed");

    install_current(&home, None);
    let out = home.cli_json(&["gateway", "restart", "--json"]);
    let new = out["handover"]["to"]["pid"].as_i64().unwrap();
    assert_ne!(new, old);
    wait_for("new pid serves", Duration::from_secs(5), || {
        (readyz_pid(&home) == Some(new)).then_some(())
    });
    unsafe {
        libc::kill(new as i32, libc::SIGTERM);
    }
    wait_for("successor exits", Duration::from_secs(15), || {
        (!pid_alive(new as i32)).then_some(())
    });
}

#[test]
fn sighup_hands_over_and_requests_coalesce() {
    let home = Home::new(MOLT, "");
    let mut gw = home.start();
    let old = gw.pid() as i64;
    gw.signal(libc::SIGHUP);
    let new = wait_for("SIGHUP handover", Duration::from_secs(10), || {
        readyz_pid(&home).filter(|p| *p != old)
    });
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).0, Some(0));

    // A second request while a (slow) successor starts joins the same handover.
    install_current(
        &home,
        Some(&format!("#!/bin/sh\nsleep 1\nexec {MOLT} \"$@\"\n")),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = home.client_options();
    let results: Vec<Value> = rt.block_on(async {
        let mut a = Client::connect(options.clone()).await.unwrap();
        let mut b = Client::connect(options.clone()).await.unwrap();
        let second = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            b.call_once("gateway.restart.request", None).await
        };
        let (ra, rb) = tokio::join!(a.call_once("gateway.restart.request", None), second);
        vec![ra.unwrap(), rb.unwrap()]
    });
    let statuses: Vec<&str> = results
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert!(
        statuses.contains(&"completed") && statuses.contains(&"coalesced"),
        "{statuses:?}"
    );
    assert_eq!(results[0]["handover"], results[1]["handover"]);
    let newest = results[0]["handover"]["to"]["pid"].as_i64().unwrap();
    wait_for("newest serves", Duration::from_secs(5), || {
        (readyz_pid(&home) == Some(newest)).then_some(())
    });
    for pid in [new, newest] {
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        wait_for("exit", Duration::from_secs(15), || {
            (!pid_alive(pid as i32)).then_some(())
        });
    }
}

#[derive(Default)]
struct Counts {
    connects: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    other_connect_errors: AtomicU64,
    health_ok: AtomicU64,
    health_1012: AtomicU64,
    handshake_unavailable: AtomicU64,
    other_errors: AtomicU64,
    shutdown_then_1012: AtomicU64,
    closed_without_shutdown: AtomicU64,
}

fn classify_connect(c: &Counts, e: &ClientError) {
    let io = match e {
        ClientError::Connect { message, .. } => message.to_lowercase(),
        ClientError::Closed { reason, .. } => reason.to_lowercase(),
        _ => String::new(),
    };
    if io.contains("connection refused") {
        c.refused.fetch_add(1, Ordering::Relaxed);
    } else if io.contains("reset") {
        c.reset.fetch_add(1, Ordering::Relaxed);
    } else if matches!(e, ClientError::Handshake(s) if s.code == "UNAVAILABLE")
        || matches!(e, ClientError::Closed { code: 1012, .. })
    {
        c.handshake_unavailable.fetch_add(1, Ordering::Relaxed);
    } else {
        eprintln!("connect error: {e}");
        c.other_connect_errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn twenty_handovers_under_load_refuse_nothing() {
    let home = Home::new(MOLT, "");
    let _gw = home.start();
    let options = home.client_options();
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut workers = Vec::new();
    // Short-lived connections: connect, a few health calls, disconnect; bounded in count.
    for _ in 0..6 {
        let (c, stop, options) = (counts.clone(), stop.clone(), options.clone());
        workers.push(rt.spawn(async move {
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                c.connects.fetch_add(1, Ordering::Relaxed);
                let mut client = match Client::connect(options.clone()).await {
                    Ok(cl) => cl,
                    Err(e) => {
                        classify_connect(&c, &e);
                        continue;
                    }
                };
                for _ in 0..3 {
                    match client.call_once("health", None).await {
                        Ok(_) => {
                            c.health_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ClientError::Closed { code: 1012, .. }) => {
                            c.health_1012.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            eprintln!("health error: {e}");
                            c.other_errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                client.close().await;
            }
        }));
    }
    // Long-lived connections: each must see `shutdown` then 1012 at every handover.
    for _ in 0..4 {
        let (c, stop, options) = (counts.clone(), stop.clone(), options.clone());
        workers.push(rt.spawn(async move {
            for _ in 0..1_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut client = match Client::connect(options.clone()).await {
                    Ok(cl) => cl,
                    Err(e) => {
                        classify_connect(&c, &e);
                        continue;
                    }
                };
                let mut saw_shutdown = false;
                loop {
                    let ev =
                        tokio::time::timeout(Duration::from_millis(500), client.next_event()).await;
                    match ev {
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => continue,
                        Ok(Ok((name, _))) if name == "shutdown" => saw_shutdown = true,
                        Ok(Ok(_)) => {}
                        Ok(Err(ClientError::Closed { code: 1012, .. })) => {
                            let counter = if saw_shutdown {
                                &c.shutdown_then_1012
                            } else {
                                &c.closed_without_shutdown
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(Err(e)) => {
                            eprintln!("long-lived connection error: {e}");
                            c.other_errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }));
    }

    let mut durations = Vec::new();
    let mut pids = vec![readyz_pid(&home).unwrap()];
    rt.block_on(async {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut c = Client::connect(options.clone()).await.unwrap();
            let r = c
                .call_once("gateway.restart.request", None)
                .await
                .unwrap_or_else(|e| panic!("handover {i}: {e}"));
            durations.push(r["handover"]["durationMs"].as_u64().unwrap());
            pids.push(r["handover"]["to"]["pid"].as_i64().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    });
    durations.sort_unstable();
    let pct = |p: f64| durations[((durations.len() as f64 - 1.0) * p).round() as usize];
    let c = &counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "20 handovers under load: p50 {} ms, p99 {} ms; connects {} (refused {}, reset {}, other {}), \
         health ok {}, health closed 1012 {}, handshake answered UNAVAILABLE+1012 {}, \
         long-lived: shutdown then 1012 {}, 1012 without shutdown {}, other errors {}",
        pct(0.5),
        pct(0.99),
        get(&c.connects),
        get(&c.refused),
        get(&c.reset),
        get(&c.other_connect_errors),
        get(&c.health_ok),
        get(&c.health_1012),
        get(&c.handshake_unavailable),
        get(&c.shutdown_then_1012),
        get(&c.closed_without_shutdown),
        get(&c.other_errors),
    );
    assert_eq!(get(&c.refused), 0, "refused connections");
    assert_eq!(get(&c.reset), 0, "reset connections");
    assert_eq!(get(&c.other_connect_errors), 0);
    assert_eq!(
        get(&c.other_errors),
        0,
        "every health call succeeds or fails with 1012"
    );
    assert_eq!(
        get(&c.closed_without_shutdown),
        0,
        "shutdown always precedes 1012"
    );
    assert!(
        get(&c.shutdown_then_1012) >= 20,
        "long-lived clients saw the handovers and reconnected"
    );
    assert!(get(&c.health_ok) > 100);
    let last = *pids.last().unwrap();
    wait_for("last successor serves", Duration::from_secs(5), || {
        (readyz_pid(&home) == Some(last)).then_some(())
    });
    for pid in &pids[1..] {
        unsafe {
            libc::kill(*pid as i32, libc::SIGTERM);
        }
    }
    for pid in &pids[1..] {
        wait_for("processes exit", Duration::from_secs(15), || {
            (!pid_alive(*pid as i32)).then_some(())
        });
    }
}

#[test]
fn old_process_killed_mid_drain_its_run_resumes_in_the_successor() {
    let home = Home::new(MOLT, "");
    let mut gw = home.start();
    let marker = home.path().join("m");
    let mut args = vec!["run", "exec", "--"];
    let argv = attempt_aware(&marker, 60);
    args.extend(argv.iter().map(String::as_str));
    let id = home.cli_ok(&args).trim().to_owned();
    wait_for("step started", Duration::from_secs(10), || {
        std::fs::read_to_string(&marker).is_ok().then_some(())
    });
    let out = home.cli_json(&["gateway", "restart", "--json"]);
    let new = out["handover"]["to"]["pid"].as_i64().unwrap();
    // The old process drains the 60 s step; kill it hard.
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(5));
    wait_for(
        "the successor re-runs the step",
        Duration::from_secs(30),
        || (run_state(&home, &id)["state"] == "succeeded").then_some(()),
    );
    let run = run_state(&home, &id);
    assert_eq!(run["steps"][0]["attempts"], 2, "{run}");
    unsafe {
        libc::kill(new as i32, libc::SIGTERM);
    }
    wait_for("exit", Duration::from_secs(15), || {
        (!pid_alive(new as i32)).then_some(())
    });
}

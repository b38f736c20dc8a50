//! The service half against a real systemd user manager: the seed incident reproduced with a
//! stand-in, molt surviving restarts, stops and a SIGKILL, and a stale unit repaired.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_seed_incident_reproduced_stop_times_out_and_nothing_restarts() {
    if !systemd_available() {
        return;
    }
    let dir =
        std::path::PathBuf::from(std::env::var("XDG_CONFIG_HOME").unwrap()).join("systemd/user");
    std::fs::create_dir_all(&dir).unwrap();
    let unit = format!("seed-{}.service", free_port());
    let ready = tempfile::tempdir().unwrap();
    let marker = ready.path().join("trap-installed");
    // A gateway that "drains" instead of stopping: it ignores SIGTERM.
    std::fs::write(
        dir.join(&unit),
        format!(
            "[Service]\nExecStart=/bin/sh -c 'trap \"echo draining\" TERM; touch {}; while :; do sleep 0.2; done'\n\
             Restart=always\nTimeoutStopSec=2\n",
            marker.display()
        ),
    )
    .unwrap();
    assert!(systemctl(&["daemon-reload"]).status.success());
    assert!(systemctl(&["start", &unit]).status.success());
    wait_for(
        "the stand-in ignores SIGTERM",
        Duration::from_secs(5),
        || marker.exists().then_some(()),
    );
    let t0 = Instant::now();
    let out = systemctl(&["stop", &unit]);
    let took = t0.elapsed();
    println!("seed stand-in: stop took {took:?}: {out:?}");
    let s = unit_show(
        &unit,
        &[
            "ActiveState",
            "Result",
            "ExecMainCode",
            "ExecMainStatus",
            "NRestarts",
        ],
    );
    assert_eq!(s["ActiveState"], "failed", "{s:?}");
    assert_eq!(s["Result"], "timeout", "{s:?}");
    // CLD_KILLED by SIGKILL.
    assert_eq!(
        (s["ExecMainCode"].as_str(), s["ExecMainStatus"].as_str()),
        ("2", "9"),
        "{s:?}"
    );
    assert!(took >= Duration::from_secs(2));
    // An explicit stop is never restarted, even with Restart=always: the box stays down.
    std::thread::sleep(Duration::from_secs(2));
    let later = unit_show(&unit, &["ActiveState", "NRestarts"]);
    assert_eq!(
        (later["ActiveState"].as_str(), later["NRestarts"].as_str()),
        ("failed", "0")
    );
    let _ = systemctl(&["reset-failed", &unit]);
}

fn coherent(s: &ServiceHome) -> serde_json::Value {
    let st = s.molt_json(&["service", "status", "--json"]);
    assert_eq!(st["coherent"], true, "{st:#}");
    assert_eq!(st["unitLabel"], st["runningVersion"], "{st:#}");
    st
}

#[test]
fn molt_does_not_fall() {
    if !systemd_available() {
        return;
    }
    let s = ServiceHome::new(MOLT, "nf", "stop_budget_ms = 3000\n");
    s.molt_ok(&["install"]);
    s.molt_ok(&["service", "install"]);
    let unit_text = std::fs::read_to_string(s.unit_file()).unwrap();
    assert!(unit_text.contains("TimeoutStopSec=8"), "{unit_text}");
    s.molt_ok(&["service", "start"]);
    coherent(&s);

    let markers: Vec<_> = (0..2)
        .map(|i| s.home.path().join(format!("busy{i}")))
        .collect();
    let ids: Vec<String> = markers
        .iter()
        .map(|m| {
            let argv = attempt_aware(m, 120);
            let mut args = vec!["run", "exec", "--"];
            args.extend(argv.iter().map(String::as_str));
            s.molt_ok(&args).trim().to_owned()
        })
        .collect();

    // Watch the unit and load the port all along.
    let stop = Arc::new(AtomicBool::new(false));
    let states = Arc::new(Mutex::new(BTreeSet::new()));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, states, unit) = (stop.clone(), states.clone(), s.unit());
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let m = unit_show(&unit, &["ActiveState", "Result"]);
                states
                    .lock()
                    .unwrap()
                    .insert(format!("{}/{}", m["ActiveState"], m["Result"]));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let load = {
        let (stop, ok, refused, port) = (stop.clone(), ok.clone(), refused.clone(), s.home.port);
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match http_get(port, "/healthz") {
                    Some((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => refused.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let restarts_before = s.show(&["NRestarts"])["NRestarts"].clone();
    for i in 0..5 {
        let out = s.molt_ok(&["service", "restart"]);
        assert!(
            out.contains("handover"),
            "restart {i} must be a handover: {out}"
        );
        let st = coherent(&s);
        assert_eq!(st["mainPid"], st["runningPid"], "{st:#}");
    }
    let refused_during_restarts = refused.load(Ordering::Relaxed);
    assert_eq!(
        s.show(&["NRestarts"])["NRestarts"],
        restarts_before,
        "no restart by systemd"
    );

    let t0 = Instant::now();
    s.molt_ok(&["service", "stop"]);
    let stop_took = t0.elapsed();
    let m = s.show(&["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"]);
    println!("stop with 2 busy runs took {stop_took:?}: {m:?}");
    assert_eq!(
        (m["ActiveState"].as_str(), m["Result"].as_str()),
        ("inactive", "success"),
        "{m:?}"
    );
    assert_eq!(
        (m["ExecMainCode"].as_str(), m["ExecMainStatus"].as_str()),
        ("1", "0"),
        "exited 0: {m:?}"
    );
    assert!(
        stop_took < Duration::from_secs(8),
        "inside TimeoutStopSec: {stop_took:?}"
    );

    s.molt_ok(&["service", "start"]);
    coherent(&s);
    let before = s.show(&["MainPID", "NRestarts"]);
    let main: i32 = before["MainPID"].parse().unwrap();
    unsafe {
        libc::kill(main, libc::SIGKILL);
    }
    let after = wait_for(
        "systemd restarts the SIGKILLed gateway",
        Duration::from_secs(20),
        || {
            let m = s.show(&["MainPID", "ActiveState", "NRestarts"]);
            (m["ActiveState"] == "active"
                && m["MainPID"] != before["MainPID"]
                && m["MainPID"] != "0")
                .then_some(m)
        },
    );
    assert_eq!(
        after["NRestarts"].parse::<u32>().unwrap(),
        before["NRestarts"].parse::<u32>().unwrap() + 1
    );
    wait_for("ready after the restart", Duration::from_secs(20), || {
        http_get(s.home.port, "/readyz").filter(|(c, _)| *c == 200)
    });
    coherent(&s);

    // No run is lost: both complete (a stop or a kill re-runs an interrupted step).
    for id in &ids {
        wait_for("busy run completes", Duration::from_secs(60), || {
            let r = s.molt_json(&["tasks", "get", id, "--json"]);
            (r["state"] == "succeeded").then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    load.join().unwrap();
    let seen = states.lock().unwrap().clone();
    println!(
        "unit states seen: {seen:?}; healthz ok {}, failed {} (during the 5 restarts: {refused_during_restarts})",
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert!(seen.iter().all(|st| !st.starts_with("failed")), "{seen:?}");
    assert_eq!(
        refused_during_restarts, 0,
        "no failed probe during handovers"
    );
    s.molt_ok(&["service", "uninstall"]);
}

#[test]
fn a_stale_unit_label_is_reported_and_repaired() {
    if !systemd_available() {
        return;
    }
    let s = ServiceHome::new(MOLT, "st", "");
    s.molt_ok(&["install"]);
    s.molt_ok(&["service", "install"]);
    s.molt_ok(&["service", "start"]);
    coherent(&s);
    let text = std::fs::read_to_string(s.unit_file()).unwrap();
    let version = s.molt_json(&["service", "status", "--json"])["currentVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let stale = text
        .replace(
            &format!("Description=molt gateway {version}"),
            "Description=molt gateway 0.0.1",
        )
        .replace(&format!("X-Molt-Version={version}"), "X-Molt-Version=0.0.1");
    std::fs::write(s.unit_file(), stale).unwrap();
    let out = s.molt(&["service", "status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["coherent"], false, "{st:#}");
    assert_eq!(st["unitLabel"], "0.0.1");
    assert!(
        st["problems"].to_string().contains("the unit says 0.0.1"),
        "{st:#}"
    );

    let out = s.molt_ok(&["service", "install"]);
    assert!(
        out.contains("-Description=molt gateway 0.0.1"),
        "reports what changed: {out}"
    );
    coherent(&s);
    s.molt_ok(&["service", "uninstall"]);
}

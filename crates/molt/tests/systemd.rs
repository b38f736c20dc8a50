//! Handover under a real systemd user manager (`Type=notify`): the unit never leaves
//! `active (running)`, `MainPID` follows the successor, `NRestarts` does not move, and the
//! successor keeps the watchdog fed.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

#[test]
fn handover_keeps_the_unit_active_and_moves_main_pid() {
    if !systemd_available() {
        return;
    }
    let home = Home::new(MOLT, "");
    let unit = format!("molt-gateway-ho{}.service", home.port);
    write_unit(&home, &unit, "WatchdogSec=2");
    let out = systemctl(&["start", &unit]);
    assert!(out.status.success(), "start: {out:?}");
    let first = unit_show(&unit, &["MainPID", "ActiveState", "SubState", "NRestarts"]);
    assert_eq!(first["ActiveState"], "active", "{first:?}");
    let old_pid: i64 = first["MainPID"].parse().unwrap();
    assert_eq!(http_get(home.port, "/readyz").map(|(s, _)| s), Some(200));

    // Sample the unit's state all through the handovers.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, unit) = (stop.clone(), unit.clone());
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let s = unit_show(&unit, &["ActiveState", "SubState"]);
                seen.insert(format!("{}/{}", s["ActiveState"], s["SubState"]));
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        })
    };
    let mut pid = old_pid;
    for _ in 0..3 {
        let out = home.cli_json(&["gateway", "restart", "--json"]);
        let new_pid = out["handover"]["to"]["pid"].as_i64().unwrap();
        assert_ne!(new_pid, pid);
        wait_for(
            "MainPID follows the successor",
            Duration::from_secs(5),
            || (unit_show(&unit, &["MainPID"])["MainPID"] == new_pid.to_string()).then_some(()),
        );
        pid = new_pid;
    }
    // Longer than WatchdogSec: the successor must be feeding the watchdog.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let seen = sampler.join().unwrap();
    let last = unit_show(
        &unit,
        &["MainPID", "ActiveState", "SubState", "NRestarts", "Result"],
    );
    println!("unit states seen during 3 handovers: {seen:?}; after: {last:?}");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["active/running".to_owned()]
    );
    assert_eq!(last["MainPID"], pid.to_string());
    assert_eq!(last["ActiveState"], "active");
    assert_eq!(
        last["NRestarts"], first["NRestarts"],
        "no restart by systemd"
    );
    assert_eq!(readyz_pid(home.port), Some(pid));

    let out = systemctl(&["stop", &unit]);
    assert!(out.status.success(), "{out:?}");
    let after = unit_show(&unit, &["ActiveState", "Result"]);
    assert_eq!(after["ActiveState"], "inactive", "{after:?}");
    assert_eq!(after["Result"], "success", "{after:?}");
}

//! `molt doctor` against a real systemd user manager: the seed's `failed` gateway (SIGKILL
//! during a stop) is reported and brought back by `--fix`; a hand-edited unit label and a
//! `current` switched without a restart are reported and made coherent by `--fix`.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn doctor(s: &ServiceHome, extra: &[&str]) -> (Value, Option<i32>, Duration) {
    let mut args = vec!["doctor", "--json"];
    args.extend(extra);
    let t0 = Instant::now();
    let out = s.molt(&args);
    let took = t0.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed non-JSON ({e}): {out:?}"));
    (v, out.status.code(), took)
}

fn check<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no {id} check: {v:#}"))
}

fn assert_all_ok(v: &Value, code: Option<i32>) {
    let bad: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "ok")
        .collect();
    assert!(bad.is_empty(), "not ok: {bad:#?}");
    assert_eq!(code, Some(0), "{v:#}");
}

fn status(s: &ServiceHome) -> Value {
    s.molt_json(&["service", "status", "--json"])
}

fn installed_and_running(prefix: &str, config: &str) -> ServiceHome {
    let s = ServiceHome::new(MOLT, prefix, config);
    s.molt_ok(&["install"]);
    s.molt_ok(&["service", "install"]);
    s.molt_ok(&["service", "start"]);
    s
}

fn out_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_service_failed_by_sigkill_during_stop_is_reported_and_fixed() {
    if !systemd_available() {
        return;
    }
    let s = installed_and_running("dr", "stop_budget_ms = 4000\n");
    // A step in flight keeps the stop busy (it waits for steps until the budget nearly ends),
    // so the SIGKILL lands during the stop, as in the seed.
    let marker = s.home.path().join("busy");
    let argv = attempt_aware(&marker, 120);
    let mut args = vec!["run", "exec", "--"];
    args.extend(argv.iter().map(String::as_str));
    s.molt_ok(&args);
    wait_for("the step runs", Duration::from_secs(20), || {
        marker.exists().then_some(())
    });
    let unit = s.unit();
    assert!(systemctl(&["stop", "--no-block", &unit]).status.success());
    wait_for("the stop is in progress", Duration::from_secs(10), || {
        (s.show(&["ActiveState"])["ActiveState"] == "deactivating").then_some(())
    });
    let k = systemctl(&["kill", "--signal=SIGKILL", &unit]);
    assert!(k.status.success(), "{k:?}");
    let st = wait_for("the unit ends failed", Duration::from_secs(20), || {
        let m = s.show(&["ActiveState", "Result", "NRestarts"]);
        (m["ActiveState"] == "failed" || m["ActiveState"] == "inactive").then_some(m)
    });
    assert_eq!(st["ActiveState"], "failed", "{st:?}");
    println!("seed reproduced: {st:?}");

    let (v, code, took) = doctor(&s, &[]);
    println!("doctor on a failed unit took {took:?}");
    assert_eq!(code, Some(2), "{v:#}");
    let svc = check(&v, "service");
    assert_eq!(svc["status"], "fail", "{svc:#}");
    assert_eq!(svc["fixable"], true);
    assert!(
        svc["finding"].as_str().unwrap().contains("failed"),
        "{svc:#}"
    );
    assert!(
        svc["remedy"]
            .as_str()
            .unwrap()
            .contains(&format!("systemctl --user reset-failed {unit}")),
        "{svc:#}"
    );
    assert_eq!(check(&v, "connectivity")["status"], "fail");
    assert_eq!(
        s.show(&["ActiveState"])["ActiveState"],
        "failed",
        "doctor without --fix changes nothing"
    );

    let (v, code, took) = doctor(&s, &["--fix"]);
    println!("doctor --fix on a failed unit took {took:?}");
    assert_all_ok(&v, code);
    let fix = &check(&v, "service")["fix"];
    assert_eq!(fix["before"]["status"], "fail", "{fix:#}");
    let actions = fix["actions"].to_string();
    assert!(
        actions.contains("reset-failed") && actions.contains("start"),
        "{fix:#}"
    );
    assert!(actions.contains("ready"), "readiness verified: {fix:#}");

    // Serving, with the right label, and the interrupted step re-ran.
    let (code, _) = http_get(s.home.port, "/readyz").expect("readyz answers");
    assert_eq!(code, 200);
    let st = status(&s);
    assert_eq!(st["coherent"], true, "{st:#}");
    assert_eq!(st["unitLabel"], st["runningVersion"], "{st:#}");
    assert_eq!(st["activeState"], "active");
    s.molt_ok(&["service", "uninstall"]);
}

#[test]
fn a_hand_edited_label_and_a_switched_current_are_made_coherent() {
    if !systemd_available() {
        return;
    }
    let s = installed_and_running("dv", "");
    // Start clean: --fix makes the test's own config dir private; then all is well.
    let (v, code, _) = doctor(&s, &["--fix"]);
    assert_all_ok(&v, code);
    let before = status(&s);
    let version = before["currentVersion"].as_str().unwrap().to_owned();

    // (a) A hand-edited unit label.
    let text = std::fs::read_to_string(s.unit_file()).unwrap();
    let stale = text
        .replace(
            &format!("Description=molt gateway {version}"),
            "Description=molt gateway 0.0.1",
        )
        .replace(&format!("X-Molt-Version={version}"), "X-Molt-Version=0.0.1");
    assert_ne!(stale, text);
    std::fs::write(s.unit_file(), stale).unwrap();
    let (v, code, took) = doctor(&s, &[]);
    println!("doctor on a stale label took {took:?}");
    assert_eq!(code, Some(2), "{v:#}");
    let vc = check(&v, "versions");
    assert_eq!(vc["status"], "fail", "{vc:#}");
    assert!(
        vc["finding"]
            .as_str()
            .unwrap()
            .contains("X-Molt-Version is 0.0.1"),
        "{vc:#}"
    );
    let (v, code, _) = doctor(&s, &["--fix"]);
    assert_all_ok(&v, code);
    let fixed = std::fs::read_to_string(s.unit_file()).unwrap();
    assert!(
        fixed.contains(&format!("X-Molt-Version={version}")),
        "{fixed}"
    );
    assert_eq!(
        s.show(&["NeedDaemonReload"])["NeedDaemonReload"],
        "no",
        "the rewrite was loaded"
    );
    let st = status(&s);
    assert_eq!(st["coherent"], true, "{st:#}");
    assert_eq!(
        st["runningPid"], before["runningPid"],
        "a label fix needs no handover"
    );

    // (b) `current` switched to another installed version without a restart.
    let v2 = molt_with_version("9.9.9");
    let mut c = std::process::Command::new(&v2);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", s.home.path());
    for k in ["XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    let out = c
        .args(["--profile", &s.profile, "install"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    let st = status(&s);
    assert_eq!(st["currentVersion"], "9.9.9", "{st:#}");
    assert_eq!(st["runningVersion"], version.as_str(), "{st:#}");

    let (v, code, _) = doctor(&s, &[]);
    assert_eq!(code, Some(2), "{v:#}");
    let vc = check(&v, "versions");
    assert_eq!(vc["status"], "fail", "{vc:#}");
    let finding = vc["finding"].as_str().unwrap();
    assert!(finding.contains("current is 9.9.9"), "{vc:#}");
    assert!(
        finding.contains(&format!("the gateway runs {version}")),
        "{vc:#}"
    );
    assert!(finding.contains("the unit is stale"), "{vc:#}");

    let (v, code, took) = doctor(&s, &["--fix"]);
    println!("doctor --fix with a switched current took {took:?}");
    assert_all_ok(&v, code);
    let actions = check(&v, "versions")["fix"]["actions"].to_string();
    assert!(actions.contains("rewrote"), "{actions}");
    assert!(actions.contains("handover"), "{actions}");
    let st = status(&s);
    assert_eq!(st["coherent"], true, "{st:#}");
    assert_eq!(st["runningVersion"], "9.9.9", "{st:#}");
    assert_eq!(st["unitLabel"], "9.9.9", "{st:#}");
    assert_eq!(
        st["mainPid"], st["runningPid"],
        "systemd follows the successor"
    );
    let (code, body) = http_get(s.home.port, "/readyz").expect("readyz answers");
    assert_eq!(code, 200);
    assert!(body.contains("\"9.9.9\""), "{body}");
    s.molt_ok(&["service", "uninstall"]);
}

//! The cron scheduler against the real binary: fires through handovers and restarts (never
//! twice, counted in the database), catch-up after downtime, and agent turns on a schedule
//! with the fake model.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use molt_fake_model::{FakeModel, Reply};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Rows of `sql` against the home's database, `|`-separated.
fn query(home: &Home, sql: &str) -> Vec<Vec<String>> {
    let out = std::process::Command::new("sqlite3")
        .arg(home.state_dir().join("molt.db"))
        .arg(sql)
        .output()
        .expect("sqlite3 (CI installs it)");
    assert!(out.status.success(), "{sql}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// The pid serving the home's port, once it answers.
fn serving_pid(home: &Home, not: Option<i64>) -> i64 {
    wait_for("a gateway serves", Duration::from_secs(30), || {
        readyz_pid(home.port).filter(|p| Some(*p) != not)
    })
}

/// Sends `sig` to `pid` and waits until it is gone.
fn stop_pid(pid: i64) {
    // SAFETY: kill(2) with a pid this test started (through its gateway).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for("the gateway exits", Duration::from_secs(30), || {
        (!pid_alive(pid as i32)).then_some(())
    });
}

/// Waits until every fire of job `id` has a run, and every such run succeeded.
fn wait_all_fires_succeeded(home: &Home, id: &str) {
    wait_for(
        "every fire's run completes",
        Duration::from_secs(60),
        || {
            let open = query(
                home,
                &format!(
                    "SELECT COUNT(*) FROM cron_fires f LEFT JOIN runs r ON r.id = f.run_id
                 WHERE f.job_id = '{id}' AND (r.state IS NULL OR r.state != 'succeeded')"
                ),
            );
            (open[0][0] == "0").then_some(())
        },
    );
}

fn add_every(home: &Home, secs: u64) -> (String, i64) {
    let job = home.cli_json(&[
        "cron",
        "add",
        "--name",
        "tick",
        "--every",
        &format!("{secs}s"),
        "--json",
        "--",
        "true",
    ]);
    let id = job["id"].as_str().unwrap().to_owned();
    let anchor = job["schedule"]["anchorMs"].as_i64().expect("an anchor");
    (id, anchor)
}

/// Grid times `anchor + k·every` in [a, b).
fn slots(anchor: i64, every: i64, a: i64, b: i64) -> i64 {
    let first = if a <= anchor {
        0
    } else {
        (a - anchor + every - 1) / every
    };
    let last = if b <= anchor {
        return 0;
    } else {
        (b - 1 - anchor) / every
    };
    (last - first + 1).max(0)
}

#[test]
fn an_every_second_job_fires_once_per_second_through_handovers_and_restarts() {
    let home = Home::new(MOLT, "[gateway]\nstop_budget_ms = 3000\n");
    // Every gateway this test starts stays owned until the end (dropping one kills it).
    let mut started = vec![home.start()];
    let mut pid = started[0].pid() as i64;
    let (id, anchor) = add_every(&home, 1);
    let t0 = now_ms();
    // [start, end) of each time a gateway served; downtimes in between.
    let mut up: Vec<(i64, i64)> = Vec::new();
    let mut up_since = anchor;
    let mut handovers = 0;
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0..22 {
        assert!(Instant::now() < deadline, "the scenario overran");
        // Let it fire for a while, then hand over or restart.
        std::thread::sleep(Duration::from_millis(1200));
        if round == 7 || round == 15 {
            up.push((up_since, now_ms()));
            stop_pid(pid);
            started.push(home.start());
            pid = serving_pid(&home, Some(pid));
            up_since = now_ms();
            restarts += 1;
        } else {
            // SAFETY: SIGHUP to the gateway this test runs.
            unsafe { libc::kill(pid as i32, libc::SIGHUP) };
            pid = serving_pid(&home, Some(pid));
            handovers += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(1200));
    let rm = home.cli_ok(&["cron", "rm", &id]);
    assert!(rm.contains("removed"), "{rm}");
    let end = now_ms();
    up.push((up_since, end));
    let took = end - t0;
    assert_eq!((handovers, restarts), (20, 2));

    // Every fire's run completes.
    wait_all_fires_succeeded(&home, &id);
    let fires = query(
        &home,
        &format!(
            "SELECT scheduled_at_ms, trigger, run_id FROM cron_fires WHERE job_id = '{id}'
             ORDER BY scheduled_at_ms"
        ),
    );
    let times: Vec<i64> = fires.iter().map(|f| f[0].parse().unwrap()).collect();
    let mut distinct = times.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), times.len(), "no scheduled time fired twice");
    let runs: std::collections::BTreeSet<&String> = fires.iter().map(|f| &f[2]).collect();
    assert_eq!(runs.len(), fires.len(), "one run per fire");
    for t in &times {
        assert_eq!((t - anchor) % 1000, 0, "{t} is a scheduled time");
    }
    let catch_ups: Vec<i64> = fires
        .iter()
        .filter(|f| f[1] == "catch-up")
        .map(|f| f[0].parse().unwrap())
        .collect();
    // Downtimes: between one up interval's end and the next one's start.
    let downtimes: Vec<(i64, i64)> = up.windows(2).map(|w| (w[0].1, w[1].0)).collect();
    let restart_catch_ups = catch_ups
        .iter()
        .filter(|t| downtimes.iter().any(|(a, b)| **t >= *a - 1000 && **t < *b))
        .count();
    let expected_up: i64 = up.iter().map(|(a, b)| slots(anchor, 1000, *a, *b)).sum();
    let missed_windows = downtimes
        .iter()
        .filter(|(a, b)| slots(anchor, 1000, *a, *b) > 0)
        .count() as i64;
    let expected = expected_up + missed_windows;
    println!(
        "{} fires in {took} ms ({handovers} handovers, {restarts} restarts); expected {expected} \
         ({expected_up} while up + {missed_windows} catch-ups); catch-up fires {catch_ups:?}; \
         downtimes {downtimes:?}",
        fires.len()
    );
    assert!(
        (fires.len() as i64 - expected).abs() <= 1,
        "fires {} vs expected {expected}",
        fires.len()
    );
    assert!(
        restart_catch_ups <= restarts,
        "at most one catch-up per restart: {catch_ups:?}"
    );
}

/// The scheduler under a `kill -9` and a stop: the fires in flight finish after the restart,
/// the stop stays inside its budget, and no scheduled time fires twice.
#[test]
fn a_kill_9_and_a_stop_in_budget_lose_no_fire_and_fire_none_twice() {
    let home = Home::new(MOLT, "[gateway]\nstop_budget_ms = 3000\n");
    let mut gw = home.start();
    let job = home.cli_json(&[
        "cron",
        "add",
        "--name",
        "slow",
        "--every",
        "1s",
        "--json",
        "--",
        "sh",
        "-c",
        "sleep 1.5",
    ]);
    let id = job["id"].as_str().unwrap().to_owned();
    let anchor = job["schedule"]["anchorMs"].as_i64().unwrap();
    let fires = |home: &Home| -> usize {
        query(
            home,
            &format!("SELECT COUNT(*) FROM cron_fires WHERE job_id = '{id}'"),
        )[0][0]
            .parse()
            .unwrap()
    };
    wait_for(
        "three fires, runs in flight",
        Duration::from_secs(20),
        || (fires(&home) >= 3).then_some(()),
    );
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(10));
    let before = fires(&home);
    let mut gw2 = home.start();
    wait_for(
        "it fires again after the crash",
        Duration::from_secs(20),
        || (fires(&home) >= before + 2).then_some(()),
    );
    let (_, took) = gw2
        .terminate(Duration::from_secs(20))
        .expect("the gateway stops");
    println!("stop with cron fires in flight took {took:?}");
    assert!(
        took < Duration::from_millis(3000 + 1500),
        "the stop fits its 3 s budget (plus exit): {took:?}"
    );
    let _gw3 = home.start();
    home.cli_ok(&["cron", "rm", &id]);
    wait_all_fires_succeeded(&home, &id);
    let rows = query(
        &home,
        &format!("SELECT scheduled_at_ms, run_id FROM cron_fires WHERE job_id = '{id}'"),
    );
    let mut times: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    times.sort_unstable();
    let n = times.len();
    times.dedup();
    assert_eq!(times.len(), n, "no scheduled time fired twice");
    assert!(times.iter().all(|t| (t - anchor) % 1000 == 0));
    let runs: std::collections::BTreeSet<&String> = rows.iter().map(|r| &r[1]).collect();
    assert_eq!(runs.len(), n, "one run per fire");
}

/// A gateway stopped for 10 s across 3 times of an every-3s job: one catch-up fire at start,
/// or none with `skip_missed`.
#[test]
fn downtime_across_three_times_catches_up_once_or_not_at_all_with_skip_missed() {
    for skip in [false, true] {
        let home = Home::new(
            MOLT,
            &format!("[gateway]\nstop_budget_ms = 3000\n[cron]\nskip_missed = {skip}\n"),
        );
        let mut gw = home.start();
        let (id, anchor) = add_every(&home, 3);
        wait_for("the first fire", Duration::from_secs(10), || {
            let n = query(
                &home,
                &format!("SELECT COUNT(*) FROM cron_fires WHERE job_id = '{id}'"),
            );
            (n[0][0] != "0").then_some(())
        });
        gw.terminate(Duration::from_secs(20));
        let down = now_ms();
        // The downtime is the scenario, not a synchronisation: 10 s without a gateway.
        std::thread::sleep(Duration::from_secs(10));
        let _gw2 = home.start();
        let up = now_ms();
        assert!(slots(anchor, 3000, down, up) >= 3, "3 times were missed");
        // The next regular time after the start, plus a margin, has passed.
        std::thread::sleep(Duration::from_millis(3500));
        let fires = query(
            &home,
            &format!(
                "SELECT scheduled_at_ms, trigger FROM cron_fires WHERE job_id = '{id}'
                 AND scheduled_at_ms >= {down} - 3000 ORDER BY scheduled_at_ms"
            ),
        );
        let catch_ups = fires.iter().filter(|f| f[1] == "catch-up").count();
        let missed_slots_fired = fires
            .iter()
            .filter(|f| {
                let t: i64 = f[0].parse().unwrap();
                t >= down && t < up
            })
            .count();
        println!("skip_missed={skip}: fires after the stop {fires:?}");
        if skip {
            assert_eq!(catch_ups, 0, "{fires:?}");
            assert_eq!(missed_slots_fired, 0, "{fires:?}");
        } else {
            assert_eq!(catch_ups, 1, "exactly one catch-up: {fires:?}");
            assert_eq!(missed_slots_fired, 1, "{fires:?}");
        }
        assert!(
            fires
                .iter()
                .any(|f| f[1] == "scheduled" && f[0].parse::<i64>().unwrap() >= up),
            "regular fires go on: {fires:?}"
        );
    }
}

const KEY: &str = "sk-molt-cron-77e1a0c3";

#[test]
fn an_agent_turn_job_answers_in_its_own_session_and_the_run_log_shows_it() {
    let fake = FakeModel::start_with_key(KEY);
    let config = format!(
        "[models.providers.fake]\napi = \"openai-completions\"\nbase_url = \"{}\"\n\
         api_key = \"{KEY}\"\n[[models.providers.fake.models]]\nid = \"fake-1\"\n\
         [agents.defaults]\nmodel = \"fake/fake-1\"\n",
        fake.openai_base_url()
    );
    let home = Home::new(MOLT, &config);
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let _gw = home.start();

    // A one-shot two seconds ahead: it fires on time, answers, and removes itself.
    fake.push(Reply::text("Your inbox has 3 new mails."));
    let at = now_ms() + 2000;
    let at_text = molt_cron::format_at(at / 1000 * 1000);
    let job = home.cli_json(&[
        "cron",
        "add",
        "--name",
        "inbox",
        "--at",
        &at_text,
        "--agent-turn",
        "Summarize my inbox",
        "--json",
    ]);
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["payload"]["kind"], "agentTurn");
    assert_eq!(job["deleteAfterRun"], true);
    let entry = wait_for(
        "the run log shows the finished turn",
        Duration::from_secs(30),
        || {
            let r = home.cli_json(&["cron", "runs", &id, "--json"]);
            r["entries"]
                .as_array()
                .and_then(|e| e.first().cloned())
                .filter(|e| e["action"] == "finished")
        },
    );
    println!("{entry:#}");
    assert_eq!(entry["status"], "ok", "{entry:#}");
    assert_eq!(entry["summary"], "Your inbox has 3 new mails.");
    let key = entry["sessionKey"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with(&format!("agent:main:cron:{id}:run:")),
        "an isolated session: {key}"
    );
    assert!(entry["runAtMs"].as_i64().unwrap() >= at - 1000);
    let history = home.cli_json(&[
        "call",
        "chat.history",
        "--params",
        &json!({"sessionKey": key}).to_string(),
    ]);
    let texts: Vec<String> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].to_string())
        .collect();
    assert!(texts[0].contains("Summarize my inbox"), "{texts:?}");
    assert!(
        texts[1].contains("Your inbox has 3 new mails."),
        "{texts:?}"
    );
    let main = home.cli_json(&[
        "call",
        "chat.history",
        "--params",
        r#"{"sessionKey":"main"}"#,
    ]);
    assert!(
        main["messages"].as_array().is_none_or(|m| m.is_empty()),
        "the main session is untouched: {main}"
    );
    let list = home.cli_json(&["cron", "list", "--json"]);
    assert!(
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["id"] != id.as_str()),
        "the one-shot removed itself: {list}"
    );

    // The agent schedules its own work through the cron tool.
    fake.push(Reply::tool_call(
        "call_cron",
        "cron",
        json!({"action": "add", "name": "standup", "cron": "0 9 * * 1-5", "tz": "Europe/Berlin", "message": "Prepare the standup notes"}),
    ));
    // A command job would run outside the agent's exec policy and sandbox: refused.
    fake.push(Reply::tool_call(
        "call_cmd",
        "cron",
        json!({"action": "add", "name": "escape", "every": "1m", "payload": {"kind": "command", "argv": ["sh", "-c", "id"]}}),
    ));
    fake.push(Reply::tool_call(
        "call_list",
        "cron",
        json!({"action": "list"}),
    ));
    fake.push(Reply::text("Scheduled."));
    let out = home.cli_ok(&["agent", "-m", "remind me every weekday at 9", "--json"]);
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["status"], "ok", "{reply}");
    let list = home.cli_json(&["cron", "list", "--json"]);
    let standup = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "standup")
        .cloned()
        .expect("the agent's job exists");
    assert_eq!(standup["schedule"]["expr"], "0 9 * * 1-5");
    assert_eq!(standup["schedule"]["tz"], "Europe/Berlin");
    assert_eq!(standup["agentId"], "main");
    assert!(standup["nextRunAtMs"].as_i64().unwrap() > now_ms());
    assert!(
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["name"] != "escape"),
        "the agent cannot schedule a raw command: {list}"
    );
    let tool_text = home
        .cli_json(&[
            "sessions",
            "history",
            "agent:main:main",
            "--limit",
            "50",
            "--json",
        ])
        .to_string();
    assert!(
        tool_text.contains("cannot run a command directly"),
        "the model is told why: {tool_text}"
    );
    // A system event: a note in the main session, which the model reads at the next turn.
    let note = home.cli_json(&[
        "cron",
        "add",
        "--name",
        "disk",
        "--every",
        "1d",
        "--system-event",
        "Check the disk usage",
        "--json",
    ]);
    let note_id = note["id"].as_str().unwrap().to_owned();
    wait_for("the note's first fire", Duration::from_secs(20), || {
        let r = home.cli_json(&["cron", "runs", &note_id, "--json"]);
        (r["entries"][0]["status"] == "ok").then_some(())
    });
    let before = fake.request_count();
    fake.push(Reply::text("Disk is fine."));
    let out = home.cli_ok(&["agent", "-m", "anything new?", "--json"]);
    assert!(out.contains("Disk is fine."), "{out}");
    let sent = fake.requests()[before].body["messages"].to_string();
    assert!(
        sent.contains("System: [cron disk] Check the disk usage"),
        "the model reads the note: {sent}"
    );

    let bad = home.cli(&[
        "cron",
        "add",
        "--name",
        "x",
        "--cron",
        "not a cron",
        "--",
        "true",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("not a cron"), "{err}");
    let bad = home.cli(&[
        "cron",
        "add",
        "--name",
        "x",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Mars/Base",
        "--",
        "true",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Mars/Base"),
        "{bad:?}"
    );
}

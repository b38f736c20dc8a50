//! The agent against the real binary and the fake model on loopback: turns through both
//! APIs, the exec tool, faults, and turns that survive handover, SIGTERM and `kill -9`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use molt_client::Client;
use molt_fake_model::{FakeModel, Reply};
use serde_json::{Value, json};

/// The API key the fake model requires; it must appear nowhere but the config file.
const KEY: &str = "sk-molt-test-3b1f9c2d7e";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A config with both providers on `fake`, the key inline, `main` on `model`, and `extra`.
fn config(fake: &FakeModel, model: &str, extra: &str) -> String {
    format!(
        r#"
[gateway]
stop_budget_ms = 4000
[models.providers.fake]
api = "openai-completions"
base_url = "{}"
api_key = "{KEY}"
[models.providers.fake.limits]
retry_base_ms = 100
max_retries = 3
[[models.providers.fake.models]]
id = "fake-1"
[models.providers.fakeant]
api = "anthropic-messages"
base_url = "{}"
api_key = "{KEY}"
[[models.providers.fakeant.models]]
id = "claude-fake"
[agents.defaults]
model = "{model}"
{extra}
# The tests' markers live in HOME, outside the workspace: let the sandboxed tools reach it.
[tools.exec]
allow_write = ["~/"]
allow_read = ["~/"]
"#,
        fake.openai_base_url(),
        fake.anthropic_base_url()
    )
}

/// A home whose config (holding the key) is 0600.
fn home_with(fake: &FakeModel, model: &str, extra: &str) -> Home {
    let home = Home::new(MOLT, &config(fake, model, extra));
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    home
}

/// Sends `text` with `chat.send` and collects this run's events until its terminal `chat`
/// event. Returns the terminal event and every event seen for the run.
async fn chat(c: &mut Client, key: &str, run: &str, text: &str) -> (Value, Vec<(String, Value)>) {
    let res = c
        .call(
            "chat.send",
            Some(json!({"sessionKey": key, "message": text, "idempotencyKey": run})),
        )
        .await
        .unwrap();
    assert_eq!(res["runId"], run);
    follow(c, run, Duration::from_secs(30)).await
}

/// Events of `run` until its terminal `chat` event.
async fn follow(c: &mut Client, run: &str, within: Duration) -> (Value, Vec<(String, Value)>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no terminal chat event for {run}; saw {seen:#?}"
        );
        let (name, payload) = tokio::time::timeout(left, c.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!("no terminal chat event for {run} in {within:?}; saw {seen:#?}")
            })
            .expect("the connection stays up");
        if payload["runId"] != run {
            continue;
        }
        seen.push((name.clone(), payload.clone()));
        if name == "chat"
            && ["final", "error", "aborted"].contains(&payload["state"].as_str().unwrap_or(""))
        {
            return (payload, seen);
        }
    }
}

fn roles(history: &Value) -> Vec<String> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_turn_answers_through_each_api_and_the_transcript_holds_it() {
    let fake = FakeModel::start_with_key(KEY);
    for (model, api) in [
        ("fake/fake-1", "openai"),
        ("fakeant/claude-fake", "anthropic"),
    ] {
        let home = home_with(&fake, model, "");
        let _gw = home.start();
        let before = fake.request_count();
        fake.push(Reply::text_chunks(["Hel", "lo ", "there"]));
        rt().block_on(async {
            let mut c = Client::connect(home.client_options()).await.unwrap();
            let run = format!("run-{api}");
            let (fin, events) = chat(&mut c, "main", &run, "hello").await;
            assert_eq!(fin["state"], "final", "{fin}");
            assert_eq!(fin["message"]["content"][0]["text"], "Hello there");
            let deltas: Vec<&Value> = events
                .iter()
                .filter(|(n, p)| n == "chat" && p["state"] == "delta")
                .map(|(_, p)| p)
                .collect();
            assert_eq!(deltas.len(), 3, "one delta per chunk");
            assert_eq!(deltas[2]["message"]["content"][0]["text"], "Hello there");
            // One seq across the run's chat and agent events, strictly rising.
            let seqs: Vec<u64> = events
                .iter()
                .map(|(_, p)| p["seq"].as_u64().unwrap())
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

            let h = c
                .call("chat.history", Some(json!({"sessionKey": "main"})))
                .await
                .unwrap();
            assert_eq!(roles(&h), ["user", "assistant"]);
            assert_eq!(h["sessionKey"], "agent:main:main");
            assert_eq!(h["messages"][0]["content"], "hello");
            assert_eq!(h["messages"][1]["content"][0]["text"], "Hello there");

            // A repeated key starts nothing and reports the first run's status.
            let again = c
                .call(
                    "chat.send",
                    Some(json!({"sessionKey": "main", "message": "hello", "idempotencyKey": run})),
                )
                .await
                .unwrap();
            assert_eq!(again, json!({"runId": run, "status": "ok"}));
        });
        assert_eq!(
            fake.request_count(),
            before + 1,
            "one model request per turn"
        );
        let req = &fake.requests()[before];
        match api {
            "openai" => {
                assert_eq!(req.body["model"], "fake-1");
                assert_eq!(req.body["stream"], true);
                assert_eq!(req.body["messages"][0]["role"], "system");
                let names: Vec<&str> = req.body["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|t| t["function"]["name"].as_str())
                    .collect();
                assert!(
                    names.contains(&"exec") && names.contains(&"read"),
                    "{names:?}"
                );
            }
            _ => {
                assert_eq!(req.body["model"], "claude-fake");
                let names: Vec<&str> = req.body["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|t| t["name"].as_str())
                    .collect();
                assert!(
                    names.contains(&"exec") && names.contains(&"gateway"),
                    "{names:?}"
                );
                assert!(req.body["system"].is_array());
            }
        }
    }
}

#[test]
fn a_tool_call_runs_once_and_the_final_reply_comes_from_the_second_call() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "fake/fake-1", "");
    let _gw = home.start();
    let marker = home.path().join("tool-ran");
    fake.push(Reply::tool_call(
        "call_1",
        "exec",
        json!({"command": format!("echo ran >> {}; echo hello-from-tool", marker.display())}),
    ));
    fake.push(Reply::text("The tool said hello."));
    rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        let (fin, events) = chat(&mut c, "main", "tool-run", "run the tool").await;
        assert_eq!(fin["state"], "final", "{fin}");
        assert_eq!(fin["message"]["content"][0]["text"], "The tool said hello.");
        assert!(
            events.iter().any(|(n, p)| n == "agent"
                && p["stream"] == "command_output"
                && p["data"]["output"]
                    .as_str()
                    .is_some_and(|o| o.contains("hello-from-tool"))),
            "the tool's output streams as command_output"
        );
        let h = c
            .call("chat.history", Some(json!({"sessionKey": "main"})))
            .await
            .unwrap();
        assert_eq!(roles(&h), ["user", "assistant", "toolResult", "assistant"]);
        assert_eq!(h["messages"][1]["content"][0]["type"], "toolCall");
        assert!(
            h["messages"][2]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("hello-from-tool")
        );
    });
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let second = &reqs[1].body["messages"];
    let tool_msg = second
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the second call carries the tool result");
    assert_eq!(tool_msg["tool_call_id"], "call_1");
}

/// Connects, retrying until `within` passes (a successor may be taking over).
async fn connect_within(home: &Home, within: Duration) -> Client {
    let deadline = Instant::now() + within;
    loop {
        match Client::connect(home.client_options()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot connect within {within:?}: {e}"),
        }
    }
}

fn turn_state(home: &Home, run: &str) -> Value {
    rt().block_on(async {
        let mut c = connect_within(home, Duration::from_secs(10)).await;
        c.call("agent.wait", Some(json!({"runId": run, "timeoutMs": 0})))
            .await
            .unwrap()
    })
}

#[test]
fn a_handover_mid_stream_finishes_the_turn_once_and_the_reconnected_client_sees_it() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "fake/fake-1", "");
    let _gw = home.start();
    let chunks: Vec<String> = (0..20).map(|i| format!("c{i:02} ")).collect();
    let full: String = chunks.concat();
    fake.push(Reply::text_chunks(chunks.clone()).interval(Duration::from_millis(100)));
    let old_pid = readyz_pid(home.port).unwrap();
    let (fin, gap, deltas_after) = rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        c.call(
            "chat.send",
            Some(json!({"sessionKey": "main", "message": "stream", "idempotencyKey": "ho-1"})),
        )
        .await
        .unwrap();
        let mut last_delta: Option<Instant> = None;
        let mut longest = Duration::ZERO;
        let mut hup_sent = false;
        let mut deltas_after = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no final within 30 s");
            if !hup_sent && fake.chunks_sent() >= 6 {
                // The 5th text chunk is out (the first chunk is the role).
                unsafe { libc::kill(old_pid as i32, libc::SIGHUP) };
                hup_sent = true;
            }
            let next = tokio::time::timeout(Duration::from_millis(50), c.next_event()).await;
            let (name, p) = match next {
                Err(_) => continue,
                Ok(Ok(e)) => e,
                Ok(Err(_)) => {
                    c = connect_within(&home, Duration::from_secs(5)).await;
                    continue;
                }
            };
            if p["runId"] != "ho-1" || name != "chat" {
                continue;
            }
            match p["state"].as_str() {
                Some("delta") => {
                    if let Some(t) = last_delta {
                        longest = longest.max(t.elapsed());
                    }
                    last_delta = Some(Instant::now());
                    if hup_sent {
                        deltas_after += 1;
                    }
                }
                Some("final") => return (p, longest, deltas_after),
                Some("status") => {}
                Some(other) => panic!("turn ended {other}: {p}"),
                None => {}
            }
        }
    });
    println!(
        "handover mid-stream: longest gap between deltas seen by the client: {gap:?}; deltas after SIGHUP: {deltas_after}"
    );
    assert_eq!(fin["message"]["content"][0]["text"], full.as_str());
    assert!(deltas_after > 0, "deltas keep coming through the successor");
    assert_ne!(readyz_pid(home.port), Some(old_pid), "a successor serves");
    assert_eq!(
        fake.request_count(),
        1,
        "the stream was not requested again"
    );
    let h = rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        c.call("chat.history", Some(json!({"sessionKey": "main"})))
            .await
            .unwrap()
    });
    assert_eq!(
        roles(&h),
        ["user", "assistant"],
        "exactly one assistant message"
    );
    assert_eq!(h["messages"][1]["content"][0]["text"], full.as_str());
}

#[test]
fn kill_9_after_a_finished_tool_call_resumes_without_running_it_again() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "fake/fake-1", "");
    let mut gw = home.start();
    let marker = home.path().join("tool-marker");
    fake.push(Reply::tool_call(
        "call_1",
        "exec",
        json!({"command": format!("echo \"attempt $MOLT_STEP_ATTEMPT key $MOLT_EFFECT_KEY\" >> {}", marker.display())}),
    ));
    // The second call streams slowly; it is killed in the middle.
    fake.push(
        Reply::text_chunks((0..40).map(|i| format!("x{i} "))).interval(Duration::from_millis(100)),
    );
    fake.push(Reply::text("after the crash"));
    rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        c.call(
            "chat.send",
            Some(json!({"sessionKey": "main", "message": "go", "idempotencyKey": "k9"})),
        )
        .await
        .unwrap();
    });
    let before = fake.chunks_sent();
    wait_for(
        "the second model call streams",
        Duration::from_secs(20),
        || (fake.request_count() == 2 && fake.chunks_sent() > before + 3).then_some(()),
    );
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(5));
    let _gw2 = home.start();
    wait_for(
        "the turn completes after the restart",
        Duration::from_secs(30),
        || (turn_state(&home, "k9")["status"] == "ok").then_some(()),
    );
    let t = turn_state(&home, "k9");
    assert_eq!(t["terminalReply"]["text"], "after the crash");
    let lines = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        lines, "attempt 1 key k9:1\n",
        "the finished tool call never ran again"
    );
    assert_eq!(
        fake.request_count(),
        3,
        "only the interrupted model call was asked again"
    );
    let h = rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        c.call("chat.history", Some(json!({"sessionKey": "main"})))
            .await
            .unwrap()
    });
    assert_eq!(roles(&h), ["user", "assistant", "toolResult", "assistant"]);
}

#[test]
fn kill_9_during_a_tool_call_runs_it_again_as_attempt_2_with_its_effect_key() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "fake/fake-1", "");
    let mut gw = home.start();
    let marker = home.path().join("attempts");
    let cmd = format!(
        "echo \"$MOLT_STEP_ATTEMPT $MOLT_EFFECT_KEY\" >> {0}; if [ \"$MOLT_STEP_ATTEMPT\" = 1 ]; then sleep 30; fi; echo done",
        marker.display()
    );
    fake.push(Reply::tool_call("call_1", "exec", json!({"command": cmd})));
    fake.push(Reply::text("finished"));
    rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        c.call(
            "chat.send",
            Some(json!({"sessionKey": "main", "message": "go", "idempotencyKey": "k9t"})),
        )
        .await
        .unwrap();
    });
    wait_for("the tool runs", Duration::from_secs(20), || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| !s.is_empty())
    });
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(5));
    let _gw2 = home.start();
    wait_for(
        "the turn completes after the restart",
        Duration::from_secs(30),
        || (turn_state(&home, "k9t")["status"] == "ok").then_some(()),
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "1 k9t:1\n2 k9t:1\n",
        "the interrupted call ran again once, as attempt 2 with the same effect key"
    );
    assert_eq!(fake.request_count(), 2);
}

#[test]
fn sigterm_with_three_streaming_turns_exits_in_budget_and_they_complete_after_restart() {
    let fake = FakeModel::start_with_key(KEY);
    let home = Home::new(
        MOLT,
        &config(&fake, "fake/fake-1", "").replace("stop_budget_ms = 4000", "stop_budget_ms = 2000"),
    );
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut gw = home.start();
    for _ in 0..3 {
        fake.push(
            Reply::text_chunks((0..60).map(|i| format!("s{i} ")))
                .interval(Duration::from_millis(100)),
        );
    }
    fake.set_default(Reply::text("resumed"));
    rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        for i in 0..3 {
            c.call(
                "chat.send",
                Some(json!({"sessionKey": format!("s{i}"), "message": "go", "idempotencyKey": format!("t{i}")})),
            )
            .await
            .unwrap();
        }
    });
    wait_for("three streams", Duration::from_secs(20), || {
        (fake.request_count() == 3 && fake.chunks_sent() > 12).then_some(())
    });
    gw.signal(libc::SIGTERM);
    let (code, took) = gw.wait_exit(Duration::from_secs(10));
    println!("SIGTERM with 3 streaming turns: exit {code:?} after {took:?}");
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(2), "{took:?}");
    let _gw2 = home.start();
    for i in 0..3 {
        wait_for(
            "each turn completes after the restart",
            Duration::from_secs(30),
            || (turn_state(&home, &format!("t{i}"))["status"] == "ok").then_some(()),
        );
    }
}

#[test]
fn faults_rate_limit_context_length_and_a_malformed_stream() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "fake/fake-1", "");
    let _gw = home.start();
    rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        // Every event of every turn here, checked for the key at the end.
        let mut seen = Vec::new();

        fake.push(Reply::status(429).retry_after_secs(1));
        fake.push(Reply::text("after the wait"));
        let t0 = Instant::now();
        let (fin, events) = chat(&mut c, "f1", "rl", "hi").await;
        assert_eq!(fin["state"], "final", "{fin}");
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "Retry-After is honoured"
        );
        assert!(events.iter().any(|(n, p)| n == "agent"
            && p["stream"] == "run_status"
            && p["data"]["delayMs"].as_u64().is_some_and(|d| d >= 1000)));
        seen.extend(events);

        fake.push(Reply::context_length());
        let (fin, events) = chat(&mut c, "f2", "cl", "hi").await;
        assert_eq!(fin["state"], "error", "{fin}");
        assert_eq!(fin["errorKind"], "context_length");
        seen.extend(events);

        fake.push(Reply::malformed());
        let (fin, events) = chat(&mut c, "f3", "mal", "hi").await;
        assert_eq!(fin["state"], "error", "{fin}");
        seen.extend(events);
        // The gateway still serves.
        fake.push(Reply::text("still here"));
        let (fin, events) = chat(&mut c, "f3", "mal-2", "again").await;
        assert_eq!(fin["message"]["content"][0]["text"], "still here");
        seen.extend(events);
        let events_text = format!("{seen:?}");
        assert!(
            !events_text.is_empty() && !events_text.contains(KEY),
            "the key reached an event"
        );

        let cfg = c.call("config.get", Some(json!({}))).await.unwrap();
        assert!(!cfg.to_string().contains(KEY), "config.get redacts the key");
        assert_eq!(
            cfg["config"]["models"]["providers"]["fake"]["api_key"],
            "********"
        );
    });
    // The key is nowhere but the config file: not in the log, the database or its WAL.
    let mut places = vec![home.log_path()];
    for e in std::fs::read_dir(home.state_dir()).unwrap() {
        places.push(e.unwrap().path());
    }
    for p in places {
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            let found = bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes());
            assert!(!found, "the API key leaked into {}", p.display());
        }
    }
}

#[test]
fn a_config_holding_a_key_must_be_private() {
    let fake = FakeModel::start_with_key(KEY);
    let home = Home::new(MOLT, &config(&fake, "fake/fake-1", ""));
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut gw = home.spawn(&[]);
    let (code, _) = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(78));
    let log = home.stderr_log();
    assert!(log.contains("chmod 600"), "{log}");
    assert!(!log.contains(KEY));
}

#[test]
fn steer_joins_the_running_turn_followup_waits_and_interrupt_aborts_it() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "fake/fake-1", "");
    let _gw = home.start();
    let slow = || {
        Reply::text_chunks((0..10).map(|i| format!("a{i} "))).interval(Duration::from_millis(100))
    };
    rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        let send = |run: &'static str, text: &'static str, mode: &'static str| {
            json!({"sessionKey": "q", "message": text, "idempotencyKey": run, "queueMode": mode})
        };

        // Steer: the second message joins the running turn at its next model call.
        fake.push(slow());
        fake.push(Reply::text("saw both"));
        c.call("chat.send", Some(send("st-1", "first", "steer"))).await.unwrap();
        wait_for("the first stream", Duration::from_secs(10), || (fake.request_count() == 1).then_some(()));
        let r = c.call("chat.send", Some(send("st-2", "second", "steer"))).await.unwrap();
        assert_eq!(r["status"], "started");
        let (fin, _) = follow(&mut c, "st-1", Duration::from_secs(20)).await;
        assert_eq!(fin["message"]["content"][0]["text"], "saw both");
        let second_call = &fake.requests()[1].body["messages"];
        assert!(second_call.to_string().contains("second"), "the steered message reached the model");
        assert_eq!(fake.request_count(), 2);

        // Followup: a turn of its own, after the running one.
        fake.push(slow());
        fake.push(Reply::text("followed"));
        c.call("chat.send", Some(send("fu-1", "third", "steer"))).await.unwrap();
        c.call("chat.send", Some(send("fu-2", "fourth", "followup"))).await.unwrap();
        let (a, _) = follow(&mut c, "fu-1", Duration::from_secs(20)).await;
        assert_eq!(a["state"], "final");
        let (b, _) = follow(&mut c, "fu-2", Duration::from_secs(20)).await;
        assert_eq!(b["message"]["content"][0]["text"], "followed");

        // Interrupt: the running turn is aborted and the new one runs.
        fake.push(Reply::text_chunks((0..100).map(|i| format!("z{i} "))).interval(Duration::from_millis(100)));
        fake.push(Reply::text("interrupted you"));
        let n = fake.request_count();
        c.call("chat.send", Some(send("in-1", "long", "steer"))).await.unwrap();
        wait_for("the long stream", Duration::from_secs(10), || (fake.request_count() == n + 1).then_some(()));
        c.call("chat.send", Some(send("in-2", "stop that", "interrupt"))).await.unwrap();
        let (a, _) = follow(&mut c, "in-1", Duration::from_secs(10)).await;
        assert_eq!(a["state"], "aborted", "{a}");
        let (b, _) = follow(&mut c, "in-2", Duration::from_secs(10)).await;
        assert_eq!(b["message"]["content"][0]["text"], "interrupted you");

        // chat.abort stops a stream at once.
        fake.push(Reply::text_chunks((0..100).map(|i| format!("y{i} "))).interval(Duration::from_millis(100)));
        let n = fake.request_count();
        c.call("chat.send", Some(send("ab-1", "again", "steer"))).await.unwrap();
        wait_for("the stream", Duration::from_secs(10), || (fake.request_count() == n + 1).then_some(()));
        let t0 = Instant::now();
        let r = c.call("chat.abort", Some(json!({"sessionKey": "q"}))).await.unwrap();
        assert_eq!(r["runIds"], json!(["ab-1"]));
        let (a, _) = follow(&mut c, "ab-1", Duration::from_secs(5)).await;
        assert_eq!(a["state"], "aborted");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        let w = c.call("agent.wait", Some(json!({"runId": "ab-1"}))).await.unwrap();
        assert_eq!(w["status"], "timeout", "an abort reports timeout, as OpenClaw does");
    });
}

#[test]
fn tool_commands_never_see_the_model_key_from_the_environment() {
    let fake = FakeModel::start_with_key(KEY);
    let cfg = config(&fake, "fake/fake-1", "").replace(
        &format!("api_key = \"{KEY}\""),
        "api_key_env = \"MOLT_TEST_MODEL_KEY\"",
    );
    let home = Home::new(MOLT, &cfg);
    let gw = home.spawn_with(&[], |c| {
        c.env("MOLT_TEST_MODEL_KEY", KEY);
    });
    gw.wait_ready();
    fake.push(Reply::tool_call(
        "call_1",
        "exec",
        json!({"command": "env"}),
    ));
    fake.push(Reply::text("ok"));
    rt().block_on(async {
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        let (fin, _) = chat(&mut c, "main", "env-1", "show env").await;
        assert_eq!(fin["state"], "final", "{fin}");
        let h = c
            .call("chat.history", Some(json!({"sessionKey": "main"})))
            .await
            .unwrap();
        let tool = h["messages"][2]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(tool.contains("MOLT_RUN_ID="), "env ran: {tool}");
        assert!(!tool.contains(KEY), "the key reached a tool");
        assert!(!tool.contains("MOLT_TEST_MODEL_KEY"));
    });
    // The key from the environment authenticated the model calls.
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[test]
fn the_cli_talks_to_the_agent_and_rides_through_a_handover() {
    let fake = FakeModel::start_with_key(KEY);
    for (model, reply) in [
        ("fake/fake-1", "Hi from OpenAI"),
        ("fakeant/claude-fake", "Hi from Anthropic"),
    ] {
        let home = home_with(&fake, model, "");
        let _gw = home.start();
        fake.push(Reply::text(reply));
        let out = home.cli_ok(&["agent", "-m", "hello"]);
        assert_eq!(out.trim(), reply);
        fake.push(Reply::text("as json"));
        let j = home.cli_json(&["agent", "-m", "again", "--json"]);
        assert_eq!(j["status"], "ok", "{j}");
        assert_eq!(j["text"], "as json");
        assert_eq!(j["sessionKey"], "agent:main:main");
    }

    // A reply that streams across a handover: the command reconnects and prints all of it.
    let home = home_with(&fake, "fake/fake-1", "");
    let _gw = home.start();
    let old_pid = readyz_pid(home.port).unwrap();
    let chunks: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
    fake.push(Reply::text_chunks(chunks.clone()).interval(Duration::from_millis(100)));
    let before = fake.chunks_sent();
    let child = home
        .cmd()
        .args(["agent", "-m", "stream please"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the stream is under way", Duration::from_secs(20), || {
        (fake.chunks_sent() >= before + 6).then_some(())
    });
    unsafe { libc::kill(old_pid as i32, libc::SIGHUP) };
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        chunks.concat().trim()
    );
    assert_ne!(readyz_pid(home.port), Some(old_pid));

    // Interactive chat, piped: a turn, /history, /reset.
    fake.push(Reply::text("chatting"));
    let mut child = home
        .cmd()
        .args(["chat", "--session-key", "cli-chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello chat\n/history\n/reset\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("chatting"), "{stdout}");
    assert!(stdout.contains("user: hello chat"), "{stdout}");

    // Sessions from the CLI.
    let list = home.cli_json(&["sessions", "list", "--json"]);
    let keys: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"agent:main:cli-chat"), "{keys:?}");
    let h = home.cli_json(&["sessions", "history", "agent:main:cli-chat", "--json"]);
    assert_eq!(h["messages"][0]["__openclaw"]["kind"], "reset", "{h}");
    home.cli_ok(&["sessions", "delete", "agent:main:cli-chat"]);
    let list = home.cli_json(&["sessions", "list", "--json"]);
    assert!(!list.to_string().contains("cli-chat"));
}

#[test]
fn a_client_that_leaves_while_its_agent_run_goes_on_is_not_kept_open() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "fake/fake-1", "");
    let _gw = home.start();
    fake.push(
        Reply::text_chunks((0..60).map(|i| format!("l{i} "))).interval(Duration::from_millis(100)),
    );
    rt().block_on(async {
        let mut gone = connect_within(&home, Duration::from_secs(5)).await;
        let accepted = gone
            .call(
                "agent",
                Some(json!({"message": "long", "idempotencyKey": "leave-1"})),
            )
            .await
            .unwrap();
        assert_eq!(accepted["status"], "accepted");
        gone.close().await;
        let mut c = connect_within(&home, Duration::from_secs(5)).await;
        let t0 = Instant::now();
        loop {
            let s = c.call("status", Some(json!({}))).await.unwrap();
            if s["connections"] == 1 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "the left connection lingers: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The run itself goes on and finishes.
        let w = c
            .call(
                "agent.wait",
                Some(json!({"runId": "leave-1", "timeoutMs": 20000})),
            )
            .await
            .unwrap();
        assert_eq!(w["status"], "ok", "{w}");
    });
}

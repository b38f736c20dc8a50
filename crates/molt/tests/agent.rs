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
            .expect("an event before the deadline")
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
                assert_eq!(req.body["tools"][0]["function"]["name"], "exec");
            }
            _ => {
                assert_eq!(req.body["model"], "claude-fake");
                assert_eq!(req.body["tools"][0]["name"], "exec");
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

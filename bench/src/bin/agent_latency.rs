//! The gateway's overhead on a streaming turn: from `chat.send` to the model request, and from
//! each model chunk to the client's `chat` delta carrying it (the goals: under 2 ms and
//! under 1 ms at p50/p99).
//!
//! The fake model runs in this process, so its `Instant`s compare with the client's:
//! - send → request: the client's clock just before it sends `chat.send` → the fake model's
//!   `received_at` of that turn's request (headers and body complete);
//! - chunk → delta: when the fake model's body stream handed text chunk `i` to its connection
//!   → when the client got the `chat` delta whose `deltaText` is that chunk's text;
//! - done → final: when `[DONE]` was handed to the connection → the client got `final`
//!   (this one includes committing the answer to the store).
//!
//! Turns run one after another on one connection, all in the session `main` (so its transcript
//! grows to 2 × turns messages, as a real chat's does). Each reply streams `CHUNKS` text
//! chunks `INTERVAL` apart, so chunks never coalesce.

use std::time::{Duration, Instant};

use molt_bench::{agent_home, client_options, dist_fields, mib, print_header, start, us};
use molt_client::Client;
use molt_fake_model::{FakeModel, Reply};
use serde_json::{Value, json};

const WARMUP: usize = 5;
const TURNS: usize = 200;
const CHUNKS: usize = 5;
const INTERVAL: Duration = Duration::from_millis(20);
const TURN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client saw of one turn.
struct Turn {
    marker: String,
    sent: Instant,
    /// The request number (from 1) the fake model should have given this turn.
    request: usize,
    /// (receive time, deltaText, timed) of each delta, in order; `timed` is false for a
    /// delta that arrived while the client was still waiting for the `chat.send` answer
    /// (buffered by the client without a receive time).
    deltas: Vec<(Instant, String, bool)>,
    final_at: Option<Instant>,
    final_text: String,
    state: String,
}

fn chunk_texts() -> Vec<String> {
    (0..CHUNKS)
        .map(|i| format!("part {i} of a streamed answer; "))
        .collect()
}

async fn turn(c: &mut Client, fake: &FakeModel, n: usize) -> Turn {
    let run = format!("lat-{n}");
    let marker = format!("question number {n}");
    let request = fake.request_count() + 1;
    let sent = Instant::now();
    let res = c
        .call_once(
            "chat.send",
            Some(json!({"sessionKey": "main", "message": marker, "idempotencyKey": run})),
        )
        .await
        .expect("chat.send");
    assert_eq!(res["runId"], run.as_str(), "chat.send answered {res}");
    let mut t = Turn {
        marker,
        sent,
        request,
        deltas: Vec::new(),
        final_at: None,
        final_text: String::new(),
        state: String::new(),
    };
    let buffered = c.events.len();
    let deadline = Instant::now() + TURN_TIMEOUT;
    let mut seen = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, p): (String, Value) = tokio::time::timeout(left, c.next_event())
            .await
            .unwrap_or_else(|_| panic!("no final event for {run} within {TURN_TIMEOUT:?}"))
            .expect("connection stays up");
        let at = Instant::now();
        seen += 1;
        if name != "chat" || p["runId"] != run.as_str() {
            continue;
        }
        match p["state"].as_str().unwrap_or("") {
            "delta" => t.deltas.push((
                at,
                p["deltaText"].as_str().unwrap_or("").to_owned(),
                seen > buffered,
            )),
            s @ ("final" | "error" | "aborted") => {
                t.state = s.to_owned();
                t.final_at = Some(at);
                t.final_text = p["message"]["content"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                return t;
            }
            _ => {}
        }
    }
}

fn main() {
    print_header("agent_latency");
    let fake = FakeModel::start();
    let texts = chunk_texts();
    let full: String = texts.concat();
    fake.set_default(Reply::text_chunks(texts.clone()).interval(INTERVAL));
    let home = agent_home(&fake.openai_base_url(), "");
    let mut gw = start(&home);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let wall = Instant::now();
    let turns = rt.block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        for n in 0..WARMUP {
            turn(&mut c, &fake, n).await;
        }
        fake.record_chunk_times(true);
        let mut turns = Vec::with_capacity(TURNS);
        for n in WARMUP..WARMUP + TURNS {
            turns.push(turn(&mut c, &fake, n).await);
        }
        let h = c
            .call_once(
                "chat.history",
                Some(json!({"sessionKey": "main", "limit": 1})),
            )
            .await
            .expect("chat.history");
        println!(
            "# session main holds {} messages after {} turns",
            h["totalMessages"],
            WARMUP + TURNS
        );
        c.close().await;
        turns
    });
    let wall = wall.elapsed();
    let requests = fake.requests();
    let chunks = fake.chunk_times();

    let mut send_to_request = Vec::new();
    let mut chunk_to_delta = Vec::new();
    let mut done_to_final = Vec::new();
    let (mut errors, mut mismatched, mut untimed, mut wrong_request) = (0, 0, 0, 0);
    for t in &turns {
        if t.state != "final" || t.final_text != full {
            errors += 1;
        }
        let Some(req) = requests.get(t.request - 1) else {
            wrong_request += 1;
            continue;
        };
        // The turn's own message is the last one in its request.
        let last = req.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(Value::to_string)
            .unwrap_or_default();
        if !last.contains(&t.marker) {
            wrong_request += 1;
            continue;
        }
        send_to_request.push(req.received_at.saturating_duration_since(t.sent));
        let mine: Vec<_> = chunks.iter().filter(|c| c.request == t.request).collect();
        for (i, (at, text, timed)) in t.deltas.iter().enumerate() {
            // OpenAI stream: chunk 0 is the role chunk, text chunk i is chunk i + 1.
            let sent = mine.iter().find(|c| c.index == i + 1);
            match sent {
                Some(c) if *text == texts.get(i).cloned().unwrap_or_default() => {
                    if *timed {
                        chunk_to_delta.push(at.saturating_duration_since(c.at));
                    } else {
                        untimed += 1;
                    }
                }
                _ => mismatched += 1,
            }
        }
        if let (Some(done), Some(fin)) = (mine.iter().map(|c| c.at).max(), t.final_at) {
            done_to_final.push(fin.saturating_duration_since(done));
        }
    }
    let early: Vec<Duration> = send_to_request.iter().take(20).copied().collect();
    let late: Vec<Duration> = send_to_request.iter().rev().take(20).copied().collect();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        us(molt_bench::percentile(&v, 50.0))
    };
    println!(
        "agent_send_to_request {} n={} turns={TURNS} errors={errors} wrong_request={wrong_request}",
        dist_fields("lat", &mut send_to_request, "us"),
        send_to_request.len(),
    );
    println!(
        "# send→request p50 over the first 20 turns {} µs, over the last 20 {} µs (transcript grows)",
        median(early),
        median(late),
    );
    println!(
        "agent_chunk_to_delta {} n={} chunks_per_turn={CHUNKS} interval_ms={} mismatched={mismatched} untimed={untimed}",
        dist_fields("lat", &mut chunk_to_delta, "us"),
        chunk_to_delta.len(),
        INTERVAL.as_millis(),
    );
    println!(
        "agent_done_to_final {} n={}",
        dist_fields("lat", &mut done_to_final, "us"),
        done_to_final.len(),
    );
    println!(
        "# {} turns in {:.1} s; gateway rss after: {} MiB",
        WARMUP + TURNS,
        wall.as_secs_f64(),
        mib(gw.rss_kib())
    );
    drop(rt);
    molt_bench::stop_and_print(&mut gw);
    molt_bench::print_log_summary("agent_latency", &home);
}

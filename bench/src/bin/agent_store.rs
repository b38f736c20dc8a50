//! The agent's store at size: `chat.history` latency on a session of 10,000 messages, and the
//! gateway's idle RSS with 10,000 stored sessions.
//!
//! Each database is made by the gateway itself, then grown directly with SQLite while the
//! gateway is stopped: one real turn (`chat.send` against the fake model) writes a user and
//! an assistant message; their rows are the templates for every inserted message (same
//! columns, same JSON body shape, only the text changed), so what the gateway reads back is
//! what it would have written. Then the gateway is started again on the grown database.
//!
//! - history: 200 × `chat.history {limit: 200}` at the newest end of the 10,000-message
//!   session, then paging back to the start with `cursor` = the oldest `seq` received; then
//!   a few turns on that session (send → model request, with its 10,000-message prompt).
//! - sessions: idle RSS (10 s after ready) with only `main`, then with 10,000 more sessions
//!   of 2 messages each; startup time of both; `sessions.list` latency.

use std::path::Path;
use std::time::{Duration, Instant};

use molt_bench::{Gateway, Home, agent_home, client_options, dist_fields, mib, ms, print_header};
use molt_client::Client;
use molt_fake_model::{FakeModel, Reply};
use rusqlite::params;
use serde_json::{Value, json};

const MESSAGES: i64 = 10_000;
const SESSIONS: usize = 10_000;
const PAGE: usize = 200;
const NEWEST_CALLS: usize = 200;
const IDLE: Duration = Duration::from_secs(10);
const LIST_CALLS: usize = 50;
const BIG_TURNS: usize = 5;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn start_timed(home: &Home) -> (Gateway, Duration) {
    let mut g = home.spawn(&[]);
    let took = g.wait_ready_within(Duration::from_secs(60), Duration::from_millis(2));
    (g, took)
}

fn stop(mut gw: Gateway) {
    molt_bench::stop(&mut gw);
}

/// Sends `text` to `key` and waits for the run's terminal `chat` event; returns its state.
async fn chat_turn(c: &mut Client, key: &str, run: &str, text: &str) -> String {
    c.call_once(
        "chat.send",
        Some(json!({"sessionKey": key, "message": text, "idempotencyKey": run})),
    )
    .await
    .expect("chat.send");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, p) = tokio::time::timeout(left, c.next_event())
            .await
            .unwrap_or_else(|_| panic!("no terminal event for {run}"))
            .expect("connection stays up");
        if name == "chat" && p["runId"] == run {
            let s = p["state"].as_str().unwrap_or("");
            if matches!(s, "final" | "error" | "aborted") {
                return s.to_owned();
            }
        }
    }
}

/// A message row as the store keeps it.
struct Template {
    session_id: String,
    run_id: Option<String>,
    role: String,
    body: Value,
}

/// The first `user` and `assistant` rows of `key`.
fn templates(db: &rusqlite::Connection, key: &str) -> (Template, Template) {
    let mut stmt = db
        .prepare(
            "SELECT session_id, run_id, role, body FROM messages WHERE session_key = ?1
             ORDER BY seq",
        )
        .expect("prepare");
    let rows: Vec<Template> = stmt
        .query_map([key], |r| {
            Ok(Template {
                session_id: r.get(0)?,
                run_id: r.get(1)?,
                role: r.get(2)?,
                body: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or(Value::Null),
            })
        })
        .expect("query messages")
        .collect::<Result<_, _>>()
        .expect("read messages");
    let mut user = None;
    let mut assistant = None;
    for t in rows {
        match t.role.as_str() {
            "user" if user.is_none() => user = Some(t),
            "assistant" if assistant.is_none() => assistant = Some(t),
            _ => {}
        }
    }
    (
        user.expect("a user message in the real turn"),
        assistant.expect("an assistant message in the real turn"),
    )
}

/// `body` with its (first) text replaced by `text`: `content` as a string, or the first
/// block's `text`.
fn with_text(body: &Value, text: &str) -> String {
    let mut b = body.clone();
    match b.get_mut("content") {
        Some(Value::String(s)) => *s = text.to_owned(),
        Some(Value::Array(blocks)) => {
            if let Some(t) = blocks.iter_mut().find_map(|b| b.get_mut("text")) {
                *t = Value::from(text);
            }
        }
        _ => panic!("unexpected message body shape: {body}"),
    }
    b.to_string()
}

fn filler(seq: i64) -> String {
    format!(
        "message {seq}: a line of ordinary chat text, about the length of a short paragraph \
         that a person or a model would write in a conversation, with some detail in it."
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn open_db(home: &Home) -> rusqlite::Connection {
    let path = home.state_dir().join("molt.db");
    assert!(
        Path::new(&path).is_file(),
        "no database at {}",
        path.display()
    );
    let db = rusqlite::Connection::open(&path).expect("open molt.db");
    db.execute_batch("PRAGMA busy_timeout=5000;")
        .expect("pragma");
    db
}

/// Appends messages `from..=MESSAGES` to `key`, alternating user and assistant.
fn grow_transcript(home: &Home, key: &str, from: i64) -> Duration {
    let t0 = Instant::now();
    let mut db = open_db(home);
    let (user, assistant) = templates(&db, key);
    let now = now_ms();
    let tx = db.transaction().expect("transaction");
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO messages(session_key, session_id, seq, run_id, role, body, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .expect("prepare insert");
        for seq in from..=MESSAGES {
            let t = if seq % 2 == 1 { &user } else { &assistant };
            ins.execute(params![
                key,
                t.session_id,
                seq,
                t.run_id,
                t.role,
                with_text(&t.body, &filler(seq)),
                now
            ])
            .expect("insert message");
        }
    }
    tx.commit().expect("commit");
    t0.elapsed()
}

/// Adds `SESSIONS` sessions `agent:main:bench-NNNNN`, each with a user and an assistant
/// message shaped like those of `template_key`.
fn add_sessions(home: &Home, template_key: &str) -> Duration {
    let t0 = Instant::now();
    let mut db = open_db(home);
    let (user, assistant) = templates(&db, template_key);
    let now = now_ms();
    let tx = db.transaction().expect("transaction");
    {
        let mut ses = tx
            .prepare(
                "INSERT INTO sessions(key, agent_id, session_id, created_at_ms, updated_at_ms,
                     input_tokens, output_tokens, total_tokens, last_run_id)
                 VALUES (?1, 'main', ?2, ?3, ?3, 120, 40, 160, ?4)",
            )
            .expect("prepare session insert");
        let mut msg = tx
            .prepare(
                "INSERT INTO messages(session_key, session_id, seq, run_id, role, body, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .expect("prepare message insert");
        for i in 0..SESSIONS {
            let key = format!("agent:main:bench-{i:05}");
            let sid = format!("{:032x}", 0xb3c0_0000_0000u128 + i as u128);
            let at = now - (SESSIONS - i) as i64 * 1000;
            ses.execute(params![key, sid, at, user.run_id])
                .expect("insert session");
            for (seq, t) in [(1, &user), (2, &assistant)] {
                msg.execute(params![
                    key,
                    sid,
                    seq,
                    t.run_id,
                    t.role,
                    with_text(&t.body, &filler(seq)),
                    at
                ])
                .expect("insert message");
            }
        }
    }
    tx.commit().expect("commit");
    t0.elapsed()
}

fn history_bench(fake: &FakeModel) {
    let home = agent_home(&fake.openai_base_url(), "");
    let gw = molt_bench::start(&home);
    rt().block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        let s = chat_turn(&mut c, "main", "seed-1", "hello").await;
        assert_eq!(s, "final", "the seeding turn");
        c.close().await;
    });
    stop(gw);
    let grew = grow_transcript(&home, "agent:main:main", 3);
    let (gw, ready) = start_timed(&home);
    println!(
        "# history: {MESSAGES} messages in agent:main:main ({} ms to insert); gateway ready in {} ms",
        grew.as_millis(),
        ms(ready)
    );
    rt().block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        let newest = json!({"sessionKey": "main", "limit": PAGE});
        let first = c
            .call_once("chat.history", Some(newest.clone()))
            .await
            .expect("chat.history");
        let bytes = first.to_string().len();
        assert_eq!(first["totalMessages"], MESSAGES, "total");
        assert_eq!(first["messages"].as_array().map(Vec::len), Some(PAGE));
        for _ in 0..10 {
            c.call_once("chat.history", Some(newest.clone()))
                .await
                .expect("chat.history (warm-up)");
        }
        let mut lat = Vec::with_capacity(NEWEST_CALLS);
        for _ in 0..NEWEST_CALLS {
            let t = Instant::now();
            let r = c
                .call_once("chat.history", Some(newest.clone()))
                .await
                .expect("chat.history");
            lat.push(t.elapsed());
            assert_eq!(r["messages"].as_array().map(Vec::len), Some(PAGE));
        }
        println!(
            "agent_history_newest {} n={NEWEST_CALLS} limit={PAGE} messages={MESSAGES} page_bytes={bytes}",
            dist_fields("lat", &mut lat, "us"),
        );

        // Page back from the newest end to the first message.
        let mut pages = Vec::new();
        let mut seen = 0usize;
        let mut cursor: Option<i64> = None;
        let t0 = Instant::now();
        loop {
            let mut p = json!({"sessionKey": "main", "limit": PAGE});
            if let Some(cur) = cursor {
                p["cursor"] = json!(cur);
            }
            let t = Instant::now();
            let r = c
                .call_once("chat.history", Some(p))
                .await
                .expect("chat.history page");
            pages.push(t.elapsed());
            let msgs = r["messages"].as_array().cloned().unwrap_or_default();
            seen += msgs.len();
            cursor = msgs
                .first()
                .and_then(|m| m["__openclaw"]["seq"].as_i64());
            if r["hasMore"] != true || cursor.is_none() || pages.len() > 1000 {
                break;
            }
        }
        let all = t0.elapsed();
        let n = pages.len();
        println!(
            "agent_history_pages {} pages={n} messages_seen={seen} total_ms={}",
            dist_fields("lat", &mut pages, "us"),
            ms(all),
        );

        // Turns on the big session: the prompt holds the whole transcript.
        let before = fake.request_count();
        let mut send_to_request = Vec::new();
        for i in 0..BIG_TURNS {
            let run = format!("big-{i}");
            let sent = Instant::now();
            let s = chat_turn(&mut c, "main", &run, "one more question").await;
            assert_eq!(s, "final", "turn {run} on the big session");
            let reqs = fake.requests();
            let req = &reqs[before + i];
            send_to_request.push(req.received_at.saturating_duration_since(sent));
            if i == BIG_TURNS - 1 {
                println!(
                    "# the last turn's model request: {} messages, {} KiB of JSON",
                    req.body["messages"].as_array().map(Vec::len).unwrap_or(0),
                    req.body.to_string().len() / 1024
                );
            }
        }
        println!(
            "agent_history_big_send_to_request {} n={BIG_TURNS}",
            dist_fields("lat", &mut send_to_request, "ms"),
        );
        c.close().await;
    });
    println!(
        "# gateway rss after the history bench: {} MiB",
        mib(gw.rss_kib())
    );
    stop(gw);
    molt_bench::print_log_summary("agent_store history", &home);
}

fn sessions_bench(fake: &FakeModel) {
    let home = agent_home(&fake.openai_base_url(), "");
    let (gw, ready_empty) = start_timed(&home);
    rt().block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        let s = chat_turn(&mut c, "main", "seed-2", "hello").await;
        assert_eq!(s, "final", "the seeding turn");
        c.close().await;
    });
    std::thread::sleep(IDLE);
    let rss_one = gw.rss_kib();
    stop(gw);
    let grew = add_sessions(&home, "agent:main:main");
    let (gw, ready_big) = start_timed(&home);
    std::thread::sleep(IDLE);
    let rss_big = gw.rss_kib();
    let threads = molt_bench::proc_status_field(gw.pid(), "Threads:").unwrap_or_default();
    println!(
        "agent_idle_rss_sessions_mib one_session={} with_{SESSIONS}_sessions={} delta_kib={} \
         ready_ms_one={} ready_ms_{SESSIONS}={}",
        mib(rss_one),
        mib(rss_big),
        rss_big as i64 - rss_one as i64,
        ms(ready_empty),
        ms(ready_big),
    );
    println!(
        "# {SESSIONS} sessions with 2 messages each inserted in {} ms; idle {} s before each \
         reading; {threads} threads",
        grew.as_millis(),
        IDLE.as_secs()
    );
    rt().block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        let mut lat = Vec::with_capacity(LIST_CALLS);
        let mut count = Value::Null;
        for _ in 0..LIST_CALLS {
            let t = Instant::now();
            let r = c
                .call_once("sessions.list", Some(json!({"limit": 50})))
                .await
                .expect("sessions.list");
            lat.push(t.elapsed());
            count = r["totalCount"].clone();
        }
        println!(
            "agent_sessions_list {} n={LIST_CALLS} limit=50 total_count={count}",
            dist_fields("lat", &mut lat, "us"),
        );
        c.close().await;
    });
    println!(
        "# gateway rss after sessions.list: {} MiB",
        mib(gw.rss_kib())
    );
    stop(gw);
    molt_bench::print_log_summary("agent_store sessions", &home);
}

fn main() {
    print_header("agent_store");
    let fake = FakeModel::start();
    fake.set_default(Reply::text("A short answer from the fake model."));
    let t0 = Instant::now();
    history_bench(&fake);
    sessions_bench(&fake);
    println!("# agent_store took {} s", t0.elapsed().as_secs());
}

//! 200 concurrent streaming turns: errors (the goal: 0), the gateway's peak RSS and
//! CPU time, and the wall time.
//!
//! 200 sessions, one turn each, all sent at once: `CONNS` connections, each sending its share
//! of `chat.send` back to back (every answer awaited, nothing else waited for), then reading
//! events until each of its turns has ended. Every reply streams `CHUNKS` text chunks
//! `INTERVAL` apart, so all 200 streams are open together for about a second. `chat` events go
//! to every connection, so each connection also reads the other connections' turns (counted
//! as `frames`). A turn is an error unless it ended in `final` whose text, and the
//! concatenated `deltaText` of its deltas, are the full reply.
//!
//! RSS is sampled every 10 ms (and VmHWM read at the end); CPU is the gateway's utime + stime
//! from `/proc/<pid>/stat` before the first `chat.send` and after the last turn ended.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use molt_bench::{
    RssSampler, agent_home, client_options, cpu_time, mib, print_header, proc_status_kib, start,
};
use molt_client::Client;
use molt_fake_model::{FakeModel, Reply};
use serde_json::json;

const TURNS: usize = 200;
const CONNS: usize = 10;
const CHUNKS: usize = 20;
const INTERVAL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct RunView {
    deltas: String,
    state: String,
    final_text: String,
}

struct ConnResult {
    send_errors: usize,
    closed: Option<String>,
    runs: HashMap<String, RunView>,
    frames: usize,
    last_end: Option<Instant>,
    sends: Vec<Duration>,
}

async fn drive(mut c: Client, runs: Vec<String>, go: Instant) -> ConnResult {
    let mut r = ConnResult {
        send_errors: 0,
        closed: None,
        runs: HashMap::new(),
        frames: 0,
        last_end: None,
        sends: Vec::new(),
    };
    tokio::time::sleep_until(go.into()).await;
    for run in &runs {
        let key = format!("load-{run}");
        let t = Instant::now();
        match c
            .call_once(
                "chat.send",
                Some(json!({"sessionKey": key, "message": format!("hello from {run}"), "idempotencyKey": run})),
            )
            .await
        {
            Ok(v) if v["runId"] == run.as_str() => {
                r.runs.insert(run.clone(), RunView::default());
            }
            _ => r.send_errors += 1,
        }
        r.sends.push(t.elapsed());
    }
    let deadline = go + DEADLINE;
    let mut open = r.runs.len();
    while open > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match tokio::time::timeout(left, c.next_event()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                r.closed = Some(e.to_string());
                break;
            }
            Ok(Ok(ev)) => ev,
        };
        r.frames += 1;
        let (name, p) = ev;
        if name != "chat" {
            continue;
        }
        let Some(view) = p["runId"].as_str().and_then(|id| r.runs.get_mut(id)) else {
            continue;
        };
        match p["state"].as_str().unwrap_or("") {
            "delta" => view.deltas.push_str(p["deltaText"].as_str().unwrap_or("")),
            s @ ("final" | "error" | "aborted") => {
                view.state = s.to_owned();
                view.final_text = p["message"]["content"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                open -= 1;
                r.last_end = Some(Instant::now());
            }
            _ => {}
        }
    }
    c.close().await;
    r
}

fn main() {
    print_header("agent_load");
    let fake = FakeModel::start();
    let texts: Vec<String> = (0..CHUNKS).map(|i| format!("token{i:02} ")).collect();
    let full = texts.concat();
    fake.set_default(Reply::text_chunks(texts).interval(INTERVAL));
    let home = agent_home(&fake.openai_base_url(), "");
    let mut gw = start(&home);
    let pid = gw.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let clients = rt.block_on(async {
        let mut v = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            v.push(
                Client::connect(client_options(&home))
                    .await
                    .expect("connect"),
            );
        }
        v
    });
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = gw.rss_kib();
    let sampler = RssSampler::start(pid, Duration::from_millis(10));
    let cpu0 = cpu_time(pid).expect("gateway cpu time");
    let go = Instant::now() + Duration::from_millis(50);
    let results = rt.block_on(async {
        let mut tasks = Vec::with_capacity(CONNS);
        for (i, c) in clients.into_iter().enumerate() {
            let runs: Vec<String> = (0..TURNS)
                .filter(|n| n % CONNS == i)
                .map(|n| format!("turn-{n:03}"))
                .collect();
            tasks.push(tokio::spawn(drive(c, runs, go)));
        }
        let mut out = Vec::with_capacity(CONNS);
        for t in tasks {
            out.push(t.await.expect("client task"));
        }
        out
    });
    let cpu1 = cpu_time(pid).expect("gateway cpu time");
    let (peak_sampled, samples) = sampler.stop();
    let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let rss_after = gw.rss_kib();
    // What the gateway itself finished, whatever the clients saw: each session's transcript
    // must end with the full answer.
    let stored_ok = rt.block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        let mut n = 0;
        for i in 0..TURNS {
            let key = format!("load-turn-{i:03}");
            let h = c
                .call_once("chat.history", Some(json!({"sessionKey": key, "limit": 5})))
                .await
                .expect("chat.history");
            let last = h["messages"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .unwrap_or_default();
            let text = last["content"][0]["text"].as_str().unwrap_or("");
            n += usize::from(last["role"] == "assistant" && text == full);
        }
        c.close().await;
        n
    });

    let (mut ok, mut not_final, mut wrong_text, mut wrong_deltas) = (0, 0, 0, 0);
    let mut send_errors = 0;
    let mut closed = Vec::new();
    let mut frames = 0;
    let mut sends = Vec::new();
    let mut last_end = go;
    let mut missing_chars = 0;
    for r in &results {
        send_errors += r.send_errors;
        frames += r.frames;
        sends.extend(r.sends.iter().copied());
        if let Some(e) = &r.closed {
            closed.push(e.clone());
        }
        if let Some(t) = r.last_end {
            last_end = last_end.max(t);
        }
        for v in r.runs.values() {
            if v.state != "final" {
                not_final += 1;
            } else if v.final_text != full {
                wrong_text += 1;
            } else if v.deltas != full {
                wrong_deltas += 1;
                missing_chars += full.len().saturating_sub(v.deltas.len());
            } else {
                ok += 1;
            }
        }
    }
    let errors = TURNS - ok;
    let wall = last_end.saturating_duration_since(go);
    let cpu = cpu1.saturating_sub(cpu0);
    sends.sort();
    println!(
        "agent_load_200 errors={errors} ok={ok} send_errors={send_errors} not_final={not_final} \
         wrong_text={wrong_text} wrong_deltas={wrong_deltas} closed_conns={} wall_s={:.2} \
         stream_s={:.2}",
        closed.len(),
        wall.as_secs_f64(),
        (INTERVAL * (CHUNKS as u32 + 2)).as_secs_f64(),
    );
    println!(
        "agent_load_200_stored transcripts_with_full_answer={stored_ok} turns={TURNS} \
         delta_chars_missing={missing_chars} of_chars={}",
        wrong_deltas * full.len()
    );
    println!(
        "agent_load_200_rss_mib before={} peak_sampled={} vmhwm={} after={} samples={samples}",
        mib(rss_before),
        mib(peak_sampled),
        mib(hwm),
        mib(rss_after),
    );
    println!(
        "agent_load_200_cpu gateway_cpu_s={:.2} avg_cores={:.2} cpu_ms_per_turn={:.1}",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / TURNS as f64,
    );
    println!(
        "# {CONNS} connections x {} turns each; chat.send answer p50 {} ms, max {} ms; {frames} \
         event frames read in all; model requests {}",
        TURNS / CONNS,
        molt_bench::ms(molt_bench::percentile(&sends, 50.0)),
        molt_bench::ms(sends[sends.len() - 1]),
        fake.request_count(),
    );
    for e in closed.iter().take(3) {
        println!("# connection closed: {e}");
    }
    drop(rt);
    molt_bench::stop_and_print(&mut gw);
    molt_bench::print_log_summary("agent_load", &home);
}

//! The cost of a tool call, and of the sandbox around it.
//!
//! - **Tool-call overhead**: the model answers with one `exec` call of `true`; the overhead is
//!   from the fake model handing the last chunk of that answer to its connection to the
//!   gateway's next request (which carries the tool result) arriving. It holds: ending the
//!   model step (the assistant message and the tool step committed), starting the tool step
//!   (a commit), spawning `bash -c true` under the policy and the sandbox, committing its
//!   result, starting the next model step (a commit) and sending the request. Measured with
//!   the sandbox on (the default) and off, each in its own gateway.
//! - **Sandbox setup per exec**, in this process: spawning and reaping `/bin/true` plain,
//!   with no_new_privs only, and with a prepared Landlock ruleset (`prepare` + `install`),
//!   the way the gateway does per call.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use molt_bench::{agent_home, client_options, dist_fields, print_header, start};
use molt_client::Client;
use molt_fake_model::{FakeModel, Reply};
use serde_json::json;

const WARMUP: usize = 5;
const TURNS: usize = 200;
const SPAWNS: usize = 500;
const TURN_TIMEOUT: Duration = Duration::from_secs(30);

/// One gateway, `TURNS` turns of `exec true` then a text answer; the overheads.
fn overhead(label: &str, extra: &str) -> Vec<Duration> {
    let fake = FakeModel::start();
    let home = agent_home(&fake.openai_base_url(), extra);
    let mut gw = start(&home);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut pairs = Vec::with_capacity(TURNS);
    let mut errors = 0;
    rt.block_on(async {
        let mut c = Client::connect(client_options(&home))
            .await
            .expect("connect");
        for n in 0..WARMUP + TURNS {
            if n == WARMUP {
                fake.record_chunk_times(true);
            }
            let call_request = fake.request_count() + 1;
            fake.push(Reply::tool_call(
                format!("call_{n}"),
                "exec",
                json!({"command": "true"}),
            ));
            fake.push(Reply::text("ok"));
            let run = format!("tool-{label}-{n}");
            c.call_once(
                "chat.send",
                Some(json!({"sessionKey": format!("bench-{n}"), "message": "run true", "idempotencyKey": run})),
            )
            .await
            .expect("chat.send");
            let deadline = Instant::now() + TURN_TIMEOUT;
            let state = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let (name, p) = tokio::time::timeout(left, c.next_event())
                    .await
                    .unwrap_or_else(|_| panic!("no final for {run}"))
                    .expect("connection stays up");
                if name == "chat"
                    && p["runId"] == run.as_str()
                    && let Some(s @ ("final" | "error" | "aborted")) = p["state"].as_str()
                {
                    break s.to_owned();
                }
            };
            if state != "final" {
                errors += 1;
            }
            if n >= WARMUP {
                pairs.push(call_request);
            }
        }
        c.close().await;
    });
    let requests = fake.requests();
    let chunks = fake.chunk_times();
    let mut out = Vec::with_capacity(pairs.len());
    for r in pairs {
        let last_chunk = chunks.iter().filter(|c| c.request == r).map(|c| c.at).max();
        if let (Some(done), Some(next)) = (last_chunk, requests.get(r)) {
            out.push(next.received_at.saturating_duration_since(done));
        }
    }
    println!(
        "# {label}: {} turns, {errors} not final; gateway rss {} KiB",
        TURNS,
        gw.rss_kib()
    );
    drop(rt);
    molt_bench::stop(&mut gw);
    out
}

/// Spawns and reaps `/bin/true` `SPAWNS` times, `setup` applied to each command.
fn spawn_times(setup: impl Fn(&mut Command)) -> Vec<Duration> {
    (0..SPAWNS)
        .map(|_| {
            let t0 = Instant::now();
            let mut c = Command::new("/bin/true");
            c.stdin(Stdio::null()).stdout(Stdio::null());
            setup(&mut c);
            let st = c.status().expect("spawn /bin/true");
            assert!(st.success());
            t0.elapsed()
        })
        .collect()
}

fn main() {
    print_header("agent_tools");
    let mut on = overhead("sandbox-on", "");
    println!(
        "agent_tool_call_overhead_sandbox_on {} n={}",
        dist_fields("lat", &mut on, "us"),
        on.len()
    );
    let mut off = overhead("sandbox-off", "[tools.exec]\nsandbox = \"off\"\n");
    println!(
        "agent_tool_call_overhead_sandbox_off {} n={}",
        dist_fields("lat", &mut off, "us"),
        off.len()
    );

    use molt_tools::sandbox;
    println!("# {}", sandbox::support());
    let ws = tempfile::tempdir().expect("workspace");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut plain = spawn_times(|_| {});
    let mut nnp = spawn_times(sandbox::no_new_privs_only);
    let mut landlock = spawn_times(|c| {
        let spec = sandbox::SandboxSpec::for_workspace(ws.path(), tmp.path());
        sandbox::prepare(&spec).expect("prepare").install(c);
    });
    let mut prepare_only: Vec<Duration> = (0..SPAWNS)
        .map(|_| {
            let t0 = Instant::now();
            let spec = sandbox::SandboxSpec::for_workspace(ws.path(), tmp.path());
            let p = sandbox::prepare(&spec).expect("prepare");
            let d = t0.elapsed();
            drop(p);
            d
        })
        .collect();
    for (name, v) in [
        ("spawn_true_plain", &mut plain),
        ("spawn_true_no_new_privs", &mut nnp),
        ("spawn_true_landlock", &mut landlock),
        ("sandbox_prepare", &mut prepare_only),
    ] {
        println!("{name} {} n={}", dist_fields("lat", v, "us"), v.len());
    }
}

//! The agent's tools against the real binary, the fake model on loopback, the real kernel
//! (openat2, Landlock) and real signals: confinement to the workspace, the exec sandbox,
//! web_fetch's address policy, the tool policy, durable approvals, and the gateway tool.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use molt_client::Client;
use molt_fake_model::{FakeModel, Reply};
use serde_json::{Value, json};

const KEY: &str = "sk-molt-tools-9a7c51e0";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A home on `fake` (0600: it holds the key) with `extra` appended to the config.
fn home_with(fake: &FakeModel, extra: &str) -> Home {
    Home::new_private(
        MOLT,
        &fake_model_config(&fake.openai_base_url(), KEY, extra),
    )
}

fn workspace(home: &Home) -> PathBuf {
    home.path().join(".local/share/molt/workspace")
}

/// Sends `text` as run `run` and waits for its terminal `chat` event.
async fn turn(c: &mut Client, run: &str, text: &str, within: Duration) -> Value {
    c.call(
        "chat.send",
        Some(json!({"sessionKey": "main", "message": text, "idempotencyKey": run})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no terminal chat event for {run}");
        let (name, p) = tokio::time::timeout(left, c.next_event())
            .await
            .expect("a terminal chat event in time")
            .expect("the connection stays up");
        if name == "chat"
            && p["runId"] == run
            && ["final", "error", "aborted"].contains(&p["state"].as_str().unwrap_or(""))
        {
            return p;
        }
    }
}

/// The tool results of the session `main`, in order: (tool, isError, text).
async fn tool_results(c: &mut Client) -> Vec<(String, bool, String)> {
    let h = c
        .call(
            "chat.history",
            Some(json!({"sessionKey": "main", "limit": 1000})),
        )
        .await
        .unwrap();
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "toolResult")
        .map(|m| {
            (
                m["toolName"].as_str().unwrap_or("").to_owned(),
                m["isError"].as_bool().unwrap_or(false),
                m["content"][0]["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Scripts one turn: each call in order, then a closing text.
fn script(fake: &FakeModel, calls: &[(&str, Value)]) {
    for (i, (name, args)) in calls.iter().enumerate() {
        fake.push(Reply::tool_call(format!("call_{i}"), *name, args.clone()));
    }
    fake.push(Reply::text("done"));
}

#[test]
fn file_tools_stay_inside_the_workspace_whatever_the_path_says() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "max_steps = 100");
    let _gw = home.start();
    let ws = workspace(&home);
    std::fs::create_dir_all(&ws).unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("etc-link")).unwrap();
    std::fs::write(home.path().join("outside.txt"), "secret-outside\n").unwrap();
    std::os::unix::fs::symlink(home.path().join("outside.txt"), ws.join("file-link")).unwrap();
    let escapes = [
        "../outside.txt",
        "/etc/hostname",
        "etc-link/hostname",
        "file-link",
    ];
    let mut calls: Vec<(&str, Value)> = vec![
        (
            "write",
            json!({"path": "notes/a.txt", "content": "one\ntwo\nthree\n"}),
        ),
        (
            "edit",
            json!({"path": "notes/a.txt", "edits": [{"oldText": "two", "newText": "2"}]}),
        ),
        ("read", json!({"path": "notes/a.txt"})),
        ("ls", json!({"path": "notes"})),
        (
            "edit",
            json!({"path": "notes/a.txt", "edits": [{"oldText": "absent", "newText": "x"}]}),
        ),
    ];
    for p in escapes {
        calls.push(("read", json!({"path": p})));
        calls.push(("write", json!({"path": p, "content": "pwned"})));
        calls.push((
            "edit",
            json!({"path": p, "edits": [{"oldText": "secret", "newText": "pwned"}]}),
        ));
    }
    calls.push(("ls", json!({"path": ".."})));
    calls.push(("ls", json!({"path": "/etc"})));
    calls.push(("ls", json!({"path": "etc-link"})));
    script(&fake, &calls);
    let results = rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        let fin = turn(&mut c, "files", "work with files", Duration::from_secs(60)).await;
        assert_eq!(fin["state"], "final", "{fin}");
        tool_results(&mut c).await
    });
    assert_eq!(results.len(), calls.len(), "{results:#?}");
    assert_eq!(
        std::fs::read_to_string(ws.join("notes/a.txt")).unwrap(),
        "one\n2\nthree\n"
    );
    assert!(!results[0].1 && !results[1].1, "{results:#?}");
    assert!(results[2].2.contains("one\n2\nthree"), "{:?}", results[2]);
    assert!(results[3].2.contains("a.txt"), "{:?}", results[3]);
    assert!(
        results[4].1,
        "an edit that matches nothing fails: {:?}",
        results[4]
    );
    for (i, r) in results.iter().enumerate().skip(5) {
        assert!(r.1, "call {i} ({:?}) must be refused: {r:?}", calls[i]);
        assert!(
            r.2.contains("outside the workspace"),
            "call {i} ({:?}) says why: {r:?}",
            calls[i]
        );
        assert!(!r.2.contains("secret-outside"), "nothing leaked: {r:?}");
    }
    assert_eq!(
        std::fs::read_to_string(home.path().join("outside.txt")).unwrap(),
        "secret-outside\n",
        "the file outside is untouched"
    );
    assert!(!PathBuf::from("/etc/pwned").exists());
}

/// An HTTP server on loopback that answers every request with `body` as HTML, until
/// [`HtmlServer::finish`], which returns how many requests it answered.
struct HtmlServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl HtmlServer {
    fn start(body: &'static str) -> Self {
        use std::sync::atomic::Ordering;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline && !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            served
        });
        Self { port, stop, thread }
    }

    fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn exec_is_sandboxed_and_web_fetch_refuses_private_addresses() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "[tools.exec]\nnetwork = \"deny\"\n");
    let _gw = home.start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let outside = home.path().join("outside-write");
    let web = HtmlServer::start(
        "<html><body><h1>Hello</h1><script>x()</script><p>from the page</p></body></html>",
    );
    let web_port = web.port;
    script(
        &fake,
        &[
            (
                "exec",
                json!({"command": "sh -c 'echo x > /etc/molt-test'"}),
            ),
            (
                "exec",
                json!({"command": format!("echo x > {}", outside.display())}),
            ),
            (
                "exec",
                json!({"command": "echo inside > in-ws.txt && echo x > \"$TMPDIR/t\" && cat /etc/hostname >/dev/null && echo wrote"}),
            ),
            (
                "exec",
                json!({"command": format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")}),
            ),
            (
                "exec",
                json!({"command": "grep NoNewPrivs /proc/self/status"}),
            ),
            (
                "web_fetch",
                json!({"url": format!("http://127.0.0.1:{web_port}/")}),
            ),
            (
                "web_fetch",
                json!({"url": format!("http://localhost:{web_port}/")}),
            ),
        ],
    );
    let results = rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        let fin = turn(&mut c, "sandbox", "probe", Duration::from_secs(60)).await;
        assert_eq!(fin["state"], "final", "{fin}");
        tool_results(&mut c).await
    });
    println!("{results:#?}");
    assert!(
        results[0].1 && results[0].2.contains("Permission denied"),
        "{:?}",
        results[0]
    );
    assert!(!PathBuf::from("/etc/molt-test").exists());
    assert!(
        results[1].1 && results[1].2.contains("Permission denied"),
        "{:?}",
        results[1]
    );
    assert!(
        !outside.exists(),
        "a write to $HOME outside the workspace failed"
    );
    assert!(
        !results[2].1 && results[2].2.contains("wrote"),
        "{:?}",
        results[2]
    );
    assert_eq!(
        std::fs::read_to_string(workspace(&home).join("in-ws.txt")).unwrap(),
        "inside\n"
    );
    assert!(
        results[3].1 && !results[3].2.contains("connected"),
        "network deny: the loopback connect fails: {:?}",
        results[3]
    );
    assert!(results[4].2.contains("NoNewPrivs:\t1"), "{:?}", results[4]);
    for r in &results[5..7] {
        assert!(r.1, "web_fetch of a loopback address is refused: {r:?}");
        assert!(
            r.2.contains("private") || r.2.contains("loopback"),
            "it says why: {r:?}"
        );
    }
    drop(listener);
    assert_eq!(web.finish(), 0, "no request reached the server");
}

#[test]
fn web_fetch_reaches_loopback_only_when_configured_and_returns_readable_text() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "[tools.web_fetch]\nallow_private = true\n");
    let _gw = home.start();
    let web = HtmlServer::start(
        "<html><head><style>p{}</style></head><body><h1>Hello</h1><script>evil()</script><p>from &amp; the page</p></body></html>",
    );
    let web_port = web.port;
    script(
        &fake,
        &[(
            "web_fetch",
            json!({"url": format!("http://127.0.0.1:{web_port}/")}),
        )],
    );
    let results = rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        let fin = turn(&mut c, "fetch", "fetch it", Duration::from_secs(60)).await;
        assert_eq!(fin["state"], "final", "{fin}");
        tool_results(&mut c).await
    });
    let (_, err, text) = &results[0];
    assert!(!err, "{text}");
    assert!(
        text.contains("Hello") && text.contains("from & the page"),
        "{text}"
    );
    assert!(!text.contains("evil()") && !text.contains("<h1>"), "{text}");
    assert_eq!(web.finish(), 1);
}

#[test]
fn a_denied_tool_is_never_offered_and_a_call_to_it_is_refused() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "[tools]\ndeny = [\"exec\", \"web_fetch\"]\n");
    let _gw = home.start();
    let marker = workspace(&home).join("ran");
    script(
        &fake,
        &[(
            "exec",
            json!({"command": format!("touch {}", marker.display())}),
        )],
    );
    let results = rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        let fin = turn(&mut c, "denied", "try exec", Duration::from_secs(30)).await;
        assert_eq!(fin["state"], "final", "{fin}");
        tool_results(&mut c).await
    });
    let offered: Vec<String> = fake.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!offered.contains(&"exec".to_owned()), "{offered:?}");
    assert!(!offered.contains(&"web_fetch".to_owned()), "{offered:?}");
    assert!(offered.contains(&"read".to_owned()), "{offered:?}");
    assert!(
        results[0].1 && results[0].2.contains("not allowed"),
        "{results:?}"
    );
    assert!(!marker.exists(), "the denied call did not run");
}

fn pending_approvals(home: &Home) -> Vec<Value> {
    let v = home.cli_json(&["approvals", "list", "--json"]);
    v["approvals"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_ask_exec_waits_through_a_handover_and_a_restart_and_runs_once_when_approved() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "[tools.exec]\nask = \"always\"\n");
    let mut gw = home.start();
    let marker = workspace(&home).join("approved-runs");
    std::fs::create_dir_all(workspace(&home)).unwrap();
    script(
        &fake,
        &[(
            "exec",
            json!({"command": "echo ran >> approved-runs; echo ok"}),
        )],
    );
    rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        c.call(
            "chat.send",
            Some(json!({"sessionKey": "main", "message": "run it", "idempotencyKey": "ask-1"})),
        )
        .await
        .unwrap();
    });
    let first = wait_for(
        "the call asks for approval",
        Duration::from_secs(20),
        || pending_approvals(&home).into_iter().next(),
    );
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["commandText"], "echo ran >> approved-runs; echo ok");
    assert_eq!(first["status"], "pending");

    // A handover: the successor takes the turn, which waits on the same approval.
    let old = gw.pid();
    gw.signal(libc::SIGHUP);
    let new = wait_for("the successor serves", Duration::from_secs(30), || {
        readyz_pid(home.port).filter(|p| *p != old as i64)
    });
    gw.wait_exit(Duration::from_secs(20));
    // A stop and a start.
    let _ = unsafe { libc::kill(new as i32, libc::SIGTERM) };
    wait_for("the successor exits", Duration::from_secs(20), || {
        (!pid_alive(new as i32)).then_some(())
    });
    let _gw2 = home.start();
    let again = wait_for(
        "still waiting after the restart",
        Duration::from_secs(20),
        || pending_approvals(&home).into_iter().next(),
    );
    assert_eq!(
        again["id"],
        id.as_str(),
        "the same approval, not a second one"
    );
    assert!(!marker.exists(), "nothing ran before the approval");

    let out = home.cli_ok(&["approvals", "approve", &id]);
    assert!(out.contains("approved"), "{out}");
    wait_for("the turn completes", Duration::from_secs(30), || {
        (run_state(&home, "ask-1")["state"] == "succeeded").then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ran\n",
        "ran once"
    );
    let again = home.cli(&["approvals", "approve", &id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already approved"),
        "{again:?}"
    );
}

#[test]
fn the_gateway_tool_reads_status_and_masked_config_and_restarts_by_handover() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let gw = home.start();
    let old = gw.pid();
    script(
        &fake,
        &[
            ("gateway", json!({"action": "status"})),
            ("gateway", json!({"action": "config.get"})),
            (
                "gateway",
                json!({"action": "config.get", "path": "models.providers.fake.api_key"}),
            ),
            ("gateway", json!({"action": "restart", "note": "test"})),
        ],
    );
    rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        c.call(
            "chat.send",
            Some(json!({"sessionKey": "main", "message": "check", "idempotencyKey": "gw-1"})),
        )
        .await
        .unwrap();
    });
    let new = wait_for(
        "the agent's restart hands over",
        Duration::from_secs(30),
        || readyz_pid(home.port).filter(|p| *p != old as i64),
    );
    wait_for("the turn completes", Duration::from_secs(30), || {
        (run_state(&home, "gw-1")["state"] == "succeeded").then_some(())
    });
    let results = rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        tool_results(&mut c).await
    });
    assert_eq!(results.len(), 4, "{results:#?}");
    assert!(
        results[0].2.contains(&format!("\"pid\": {old}")),
        "{:?}",
        results[0]
    );
    assert!(
        results[1].2.contains("[models.providers.fake]"),
        "{:?}",
        results[1]
    );
    for r in &results {
        assert!(
            !r.2.contains(KEY),
            "the key never reaches a tool result: {r:?}"
        );
    }
    assert!(!results[3].1, "{:?}", results[3]);
    assert!(new != old as i64);
    assert_eq!(
        fake.requests().len(),
        5,
        "one restart, the turn not replayed"
    );
    // The key is in no file the gateway wrote: the store, its logs, the workspace.
    let mut dirs = vec![home.state_dir(), workspace(&home)];
    let mut files = vec![home.log_path()];
    for _ in 0..10_000 {
        let Some(d) = dirs.pop() else { break };
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let leaked: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes())
        })
        .collect();
    assert!(files.len() > 2, "{files:?}");
    assert!(leaked.is_empty(), "the API key leaked into {leaked:?}");
}

#[test]
fn a_turn_replayed_after_kill_9_starts_no_second_update() {
    let fake = FakeModel::start_with_key(KEY);
    // An update that cannot succeed (no release there) but is recorded and started.
    let home = home_with(
        &fake,
        "[update]\nsource = \"/nonexistent/molt-releases\"\n\
         trusted_keys = [\"molt-release-ed25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n",
    );
    fake.push(Reply::tool_call(
        "call_up",
        "gateway",
        json!({"action": "update.run", "continuationMessage": "never said"}),
    ));
    fake.push(Reply::text("updating"));
    let mut gw = home.spawn_with(&[], |c| {
        c.env("MOLT_FAILPOINT", "gateway-tool-after-update");
    });
    gw.wait_ready();
    rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        c.call(
            "chat.send",
            Some(json!({"sessionKey": "main", "message": "update", "idempotencyKey": "up-1"})),
        )
        .await
        .unwrap();
    });
    let (code, _) = gw.wait_exit(Duration::from_secs(30));
    assert_eq!(
        code, None,
        "killed by the failpoint, after the update started"
    );
    let _gw2 = home.start();
    wait_for(
        "the replayed turn completes",
        Duration::from_secs(30),
        || (run_state(&home, "up-1")["state"] == "succeeded").then_some(()),
    );
    let results = rt().block_on(async {
        let mut c = Client::connect(home.client_options()).await.unwrap();
        tool_results(&mut c).await
    });
    assert_eq!(results.len(), 1, "{results:#?}");
    assert!(
        results[0].2.contains("was already started by this call"),
        "the replayed call found the first job: {results:?}"
    );
    let db = home.state_dir().join("molt.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM update_jobs")
        .output()
        .expect("sqlite3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "one update job"
    );
    // The failed update is told to the session once.
    let told = wait_for(
        "the session hears the outcome",
        Duration::from_secs(60),
        || {
            let h = home.cli_json(&[
                "call",
                "chat.history",
                "--params",
                r#"{"sessionKey":"main"}"#,
            ]);
            let n = h["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| {
                    m["content"][0]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("FAILED"))
                })
                .count();
            (n > 0).then_some(n)
        },
    );
    assert_eq!(told, 1);
}

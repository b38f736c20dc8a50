//! OpenClaw's own CLI against a molt gateway: `openclaw status --json`, `openclaw health
//! --json` and `openclaw agent -m hello --json`, with the real client installed by
//! `scripts/fetch-openclaw.sh` (run here when it is missing; needs npm the first time).
//!
//! The CLI reads molt's gateway URL and token from `OPENCLAW_GATEWAY_URL` and
//! `OPENCLAW_GATEWAY_TOKEN`, and keeps its own state in a private directory with an empty
//! `openclaw.json` (without a config file `openclaw status` does not ask the gateway at all).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use molt_fake_model::{FakeModel, Reply};
use serde_json::Value;

/// Cap on one CLI invocation (the CLI's cold start is a few seconds; its own probe budget is
/// 10 s).
const CLI_TIMEOUT: Duration = Duration::from_secs(90);

/// The `openclaw` wrapper, installed with `scripts/fetch-openclaw.sh` if needed (once per
/// test binary).
fn openclaw() -> &'static Path {
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| {
        let script = workspace_root().join("scripts/fetch-openclaw.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot start `bash {}`: {e}", script.display()));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            out.status.success() && path.is_file(),
            "`bash {}` failed ({}), so OpenClaw's CLI cannot be run against molt. Run the \
             script by hand (it needs npm and the npm registry).\nstdout:\n{}\nstderr:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        path
    })
}

/// Runs `openclaw args` against the gateway of `home`, with the CLI's own state in a private
/// directory under `home`, killed after [`CLI_TIMEOUT`].
fn run_openclaw(home: &Home, args: &[&str]) -> Output {
    let state = home.path().join("openclaw-cli");
    std::fs::create_dir_all(&state).unwrap();
    let config = state.join("openclaw.json");
    if !config.exists() {
        std::fs::write(&config, "{}\n").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let child = Command::new(openclaw())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &state)
        .env("OPENCLAW_STATE_DIR", &state)
        .env("OPENCLAW_CONFIG_PATH", &config)
        .env(
            "OPENCLAW_GATEWAY_URL",
            format!("ws://127.0.0.1:{}", home.port),
        )
        .env("OPENCLAW_GATEWAY_TOKEN", home.token())
        .env("NO_COLOR", "1")
        .env("TMPDIR", &state)
        .current_dir(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", openclaw().display()));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLI_TIMEOUT) {
        Ok(out) => out.expect("waiting for openclaw"),
        Err(_) => {
            // SAFETY: kill(2) on the child this function started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().expect("the waiter thread reports").ok();
            panic!(
                "`openclaw {}` did not finish within {CLI_TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default()
            );
        }
    }
}

/// `openclaw args` must succeed and print one JSON document on stdout.
fn openclaw_json(home: &Home, args: &[&str]) -> Value {
    let out = run_openclaw(home, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`openclaw {}` failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}\ngateway log:\n{}",
        args.join(" "),
        out.status,
        std::fs::read_to_string(home.log_path()).unwrap_or_default(),
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "`openclaw {}` printed no JSON ({e}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" ")
        )
    })
}

/// A config with the fake model as `main`'s model; the file (holding a key) is 0600.
fn home_with_fake_model(fake: &FakeModel) -> Home {
    let config = format!(
        r#"
[models.providers.fake]
base_url = "{}"
api_key = "sk-test"
[[models.providers.fake.models]]
id = "fake-1"
[agents.defaults]
model = "fake/fake-1"
"#,
        fake.openai_base_url()
    );
    let home = Home::new(MOLT, &config);
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    home
}

#[test]
fn openclaw_status_and_health_read_a_molt_gateway() {
    let home = Home::new(MOLT, "[agents.ops]\nname = \"Ops\"\n");
    let _gw = home.start();
    let version = home.cli_json(&["status", "--json"])["version"]
        .as_str()
        .expect("molt status has a version")
        .to_owned();

    let status = openclaw_json(&home, &["status", "--json"]);
    let gateway = &status["gateway"];
    assert_eq!(gateway["reachable"], true, "{status:#}");
    assert_eq!(gateway["error"], Value::Null, "{status:#}");
    assert_eq!(
        gateway["url"],
        format!("ws://127.0.0.1:{}", home.port),
        "{status:#}"
    );
    // What the gateway answered, not the CLI's offline fallback.
    assert_eq!(status["collection"]["source"], "gateway", "{status:#}");
    assert_eq!(status["runtimeVersion"], version.as_str(), "{status:#}");
    // molt's own fields pass through beside OpenClaw's.
    assert_eq!(status["version"], version.as_str(), "{status:#}");
    assert_eq!(status["port"], home.port, "{status:#}");
    let agents = &status["agents"];
    assert_eq!(agents["defaultId"], "main", "{status:#}");
    let rows: Vec<(&str, Option<&str>, u64)> = agents["agents"]
        .as_array()
        .expect("agents.agents")
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap(),
                a["name"].as_str(),
                a["sessionsCount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![("main", None, 0), ("ops", Some("Ops"), 0)],
        "{status:#}"
    );
    assert_eq!(agents["totalSessions"], 0, "{status:#}");
    assert_eq!(status["sessions"]["count"], 0, "{status:#}");

    let health = openclaw_json(&home, &["health", "--json"]);
    assert_eq!(health["ok"], true, "{health:#}");
    assert_eq!(health["version"], version.as_str(), "{health:#}");
    assert_eq!(health["defaultAgentId"], "main", "{health:#}");
    let ids: Vec<&str> = health["agents"]
        .as_array()
        .expect("health.agents")
        .iter()
        .map(|a| a["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["main", "ops"], "{health:#}");
}

#[test]
fn openclaw_agent_gets_the_reply_of_a_molt_agent() {
    let fake = FakeModel::start();
    fake.push(Reply::text("Hello from molt's fake model."));
    let home = home_with_fake_model(&fake);
    let _gw = home.start();

    let reply = openclaw_json(&home, &["agent", "-m", "hello", "--json"]);
    assert_eq!(reply["status"], "ok", "{reply:#}");
    let texts: Vec<&str> = reply["result"]["payloads"]
        .as_array()
        .unwrap_or_else(|| panic!("no result.payloads: {reply:#}"))
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert_eq!(texts, ["Hello from molt's fake model."], "{reply:#}");
    assert_eq!(fake.request_count(), 1);

    // The session the turn ran in is counted for `main`.
    let status = openclaw_json(&home, &["status", "--json"]);
    assert_eq!(status["agents"]["agents"][0]["id"], "main", "{status:#}");
    assert_eq!(
        status["agents"]["agents"][0]["sessionsCount"], 1,
        "{status:#}"
    );
    assert_eq!(status["sessions"]["count"], 1, "{status:#}");
    // `openclaw health` lists it as main's latest session.
    let health = openclaw_json(&home, &["health", "--json"]);
    let main = &health["agents"][0];
    assert_eq!(main["agentId"], "main", "{health:#}");
    assert_eq!(main["sessions"]["count"], 1, "{health:#}");
    let key = main["sessions"]["recent"][0]["key"].as_str().unwrap_or("");
    assert!(key.starts_with("agent:main:"), "{health:#}");
}

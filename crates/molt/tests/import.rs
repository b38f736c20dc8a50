//! `molt import openclaw` against state dirs OpenClaw itself wrote (the 2026.9 SQLite layout,
//! from the real `openclaw` 2026.9.6: `scripts/openclaw-fixtures.sh`) and the older file
//! layout derived from it. Each test works on a copy under a temp HOME and checks the source
//! is byte for byte unchanged afterwards.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use molt_fake_model::{FakeModel, Reply};
use serde_json::{Value, json};

const SECRETS: &[&str] = &[
    "test-gateway-token-not-a-secret",
    "test-discord-token-not-a-secret",
    "test-fake-key-not-a-secret",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes: compares contents and the set of files.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A home with the fixture `name` as its `~/.openclaw`, and no molt config yet.
fn home_with(name: &str) -> (Home, PathBuf) {
    let home = Home::without_config(MOLT);
    let src = home.path().join(".openclaw");
    copy_tree(&fixture(name), &src);
    (home, src)
}

fn sqlite_json(db: &Path, sql: &str) -> Vec<Value> {
    let out = std::process::Command::new("sqlite3")
        .arg("-json")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (CI installs it)");
    assert!(out.status.success(), "{sql}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap()
}

/// A message as compared across the two systems: role and its text.
fn line_of(m: &Value) -> (String, String) {
    let role = m["role"].as_str().unwrap_or("").to_owned();
    let text = match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p["text"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("<{}>", p["type"].as_str().unwrap_or("")))
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    (role, text)
}

/// The conversation of each session as OpenClaw stored it, read independently of the
/// importer: from a scratch copy of the SQLite stores, or from the JSONL files.
fn source_conversations(src: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for agent in ["main", "writer"] {
        let db = src.join(format!("agents/{agent}/agent/openclaw-agent.sqlite"));
        if db.exists() {
            let scratch = tempfile::tempdir().unwrap();
            let copy = scratch.path().join("a.sqlite");
            std::fs::copy(&db, &copy).unwrap();
            let rows = sqlite_json(
                &copy,
                "SELECT n.session_key AS k, e.event_json AS ev FROM session_nodes n
                 JOIN transcript_events e ON e.session_id = n.current_session_id
                 ORDER BY n.session_key, e.seq",
            );
            for r in rows {
                let ev: Value = serde_json::from_str(r["ev"].as_str().unwrap()).unwrap();
                if ev["type"] == "message" {
                    out.entry(r["k"].as_str().unwrap().to_owned())
                        .or_default()
                        .push(line_of(&ev["message"]));
                }
            }
            continue;
        }
        let dir = src.join(format!("agents/{agent}/sessions"));
        let index: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("sessions.json")).unwrap())
                .unwrap();
        for (key, entry) in index.as_object().unwrap() {
            let id = entry["sessionId"].as_str().unwrap();
            let text = std::fs::read_to_string(dir.join(format!("{id}.jsonl"))).unwrap();
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                let ev: Value = serde_json::from_str(l).unwrap();
                if ev["type"] == "message" {
                    out.entry(key.clone())
                        .or_default()
                        .push(line_of(&ev["message"]));
                }
            }
        }
    }
    out
}

/// Each session's transcript as molt stores it.
fn molt_conversations(home: &Home) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let rows = sqlite_json(
        &home.state_dir().join("molt.db"),
        "SELECT session_key AS k, body FROM messages ORDER BY session_key, seq",
    );
    for r in rows {
        let m: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        out.entry(r["k"].as_str().unwrap().to_owned())
            .or_default()
            .push(line_of(&m));
    }
    out
}

fn import(home: &Home, extra: &[&str]) -> (Value, String) {
    let mut args = vec!["import", "openclaw", "--json"];
    args.extend_from_slice(extra);
    let json = home.cli_ok(&args);
    let text = home.cli_ok(&[&["import", "openclaw", "--dry-run"][..], extra].concat());
    (serde_json::from_str(&json).unwrap(), text)
}

fn count(report: &Value, category: &str, field: &str) -> u64 {
    report["counts"][category][field].as_u64().unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn imports_completely_and_once(name: &str) {
    let (home, src) = home_with(name);
    let before = snapshot(&src);
    let expected = source_conversations(&src);
    assert_eq!(
        expected
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect::<Vec<_>>(),
        [
            ("agent:main:main", 4),
            ("agent:main:tools", 6),
            ("agent:writer:main", 4)
        ],
        "the fixture is what its README says"
    );

    let (report, dry_text) = import(&home, &[]);
    assert_eq!(report["dryRun"], false);
    assert_eq!(count(&report, "sessions", "imported"), 3, "{report:#}");
    assert_eq!(count(&report, "cron", "imported"), 2, "{report:#}");
    assert_eq!(count(&report, "agents", "imported"), 3, "{report:#}");
    // Every session: same messages, same order, same text.
    assert_eq!(molt_conversations(&home), expected);
    let tools = &molt_conversations(&home)["agent:main:tools"];
    assert_eq!(
        tools.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        [
            "user",
            "assistant",
            "toolResult",
            "assistant",
            "user",
            "assistant"
        ]
    );

    // Cron: the schedules as OpenClaw had them, enabled as they were, next run on the grid.
    let jobs = sqlite_json(
        &home.state_dir().join("molt.db"),
        "SELECT name, agent_id, enabled, spec, next_run_at_ms FROM cron_jobs ORDER BY name",
    );
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let hourly = &jobs[0];
    assert_eq!(hourly["name"], "Hourly check");
    assert_eq!(
        (hourly["agent_id"].as_str(), hourly["enabled"].as_i64()),
        (Some("writer"), Some(1))
    );
    let spec: Value = serde_json::from_str(hourly["spec"].as_str().unwrap()).unwrap();
    assert_eq!(spec["schedule"]["kind"], "every");
    assert_eq!(spec["schedule"]["everyMs"], 3_600_000);
    assert_eq!(
        spec["payload"],
        json!({"kind": "agentTurn", "message": "Check the drafts folder."})
    );
    let anchor = spec["schedule"]["anchorMs"].as_i64().unwrap();
    let next = hourly["next_run_at_ms"].as_i64().unwrap();
    let now = now_ms();
    assert_eq!((next - anchor) % 3_600_000, 0, "on OpenClaw's grid");
    assert!(
        next > now - 60_000 && next <= now + 3_600_000,
        "the next slot: {next} vs {now}"
    );
    let morning = &jobs[1];
    assert_eq!(morning["name"], "Morning summary");
    assert_eq!(morning["enabled"], 0);
    let spec: Value = serde_json::from_str(morning["spec"].as_str().unwrap()).unwrap();
    assert_eq!(
        spec["schedule"],
        json!({"kind": "cron", "expr": "30 7 * * 1-5", "tz": "Europe/Berlin", "staggerMs": 0})
    );

    // Config: 0600, secrets in the file only, never in the report.
    let cfg = home.config_path();
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cfg_text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        cfg_text.contains("api_key_env = \"FAKE_KEY\""),
        "an env reference stays one: {cfg_text}"
    );
    assert!(cfg_text.contains("test-gateway-token-not-a-secret"));
    for s in SECRETS {
        assert!(!report.to_string().contains(s), "the report shows {s}");
        assert!(!dry_text.contains(s), "the report shows {s}");
    }
    // Workspaces copied, identical.
    for (from, to) in [
        ("workspace", "workspace"),
        ("workspace-writer", "workspace-writer"),
    ] {
        for f in ["AGENTS.md", "SOUL.md"] {
            let a = std::fs::read(src.join(from).join(f)).unwrap();
            let b = std::fs::read(home.path().join(".local/share/molt").join(to).join(f)).unwrap();
            assert_eq!(a, b, "{to}/{f}");
        }
    }

    // A second run: nothing new, nothing twice.
    let (again, _) = import(&home, &[]);
    for c in [
        "sessions",
        "cron",
        "agents",
        "gateway",
        "models",
        "discord",
        "workspaces",
    ] {
        assert_eq!(count(&again, c, "imported"), 0, "{c}: {again:#}");
    }
    assert_eq!(count(&again, "sessions", "unchanged"), 3);
    assert_eq!(molt_conversations(&home), expected);
    assert_eq!(again["configChanged"], false);

    assert!(snapshot(&src) == before, "the source changed");
}

#[test]
fn the_2026_9_sqlite_layout_imports_completely_once_and_leaves_the_source_as_it_was() {
    imports_completely_and_once("openclaw-2026.9");
}

#[test]
fn the_2026_5_file_layout_imports_completely_once_and_leaves_the_source_as_it_was() {
    imports_completely_and_once("openclaw-2026.5");
}

#[test]
fn molt_continues_an_imported_conversation_and_runs_an_imported_job() {
    let (home, src) = home_with("openclaw-2026.9");
    let model = FakeModel::start_with_key("test-fake-key-not-a-secret");
    // The provider OpenClaw used now lives at the fake's address.
    let models = src.join("models.json5");
    let text = std::fs::read_to_string(&models).unwrap();
    let start = text.find("http://127.0.0.1:").unwrap();
    let end = start + text[start..].find("/v1").unwrap() + 3;
    let text = format!(
        "{}{}{}",
        &text[..start],
        model.openai_base_url(),
        &text[end..]
    );
    std::fs::write(&models, text).unwrap();
    import(&home, &[]);

    let _gw = {
        let g = home.spawn_with(&[], |c| {
            c.env("FAKE_KEY", "test-fake-key-not-a-secret");
        });
        g.wait_ready();
        g
    };
    model.push(Reply::text("We spoke before; I remember."));
    let out = home.cli_ok(&[
        "agent",
        "--session-key",
        "agent:main:main",
        "--message",
        "Do you remember me?",
    ]);
    assert!(out.contains("We spoke before"), "{out}");
    let req = &model.requests()[0];
    assert_eq!(req.body["model"], "fake-1");
    let said: Vec<String> = req.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            m["content"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m["content"].to_string())
        })
        .collect();
    let imported = &source_conversations(&src)["agent:main:main"];
    assert_eq!(said.len(), imported.len() + 1, "{said:#?}");
    for ((_, text), sent) in imported.iter().zip(&said) {
        assert!(
            sent.contains(text.as_str()),
            "the model got {sent:?} for {text:?}"
        );
    }
    assert!(said.last().unwrap().contains("Do you remember me?"));
    assert_eq!(molt_conversations(&home)["agent:main:main"].len(), 6);

    // The imported job runs for its agent, with that agent's model.
    let id = sqlite_json(
        &home.state_dir().join("molt.db"),
        "SELECT id FROM cron_jobs WHERE name = 'Hourly check'",
    )[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    model.push(Reply::text("Drafts checked."));
    home.cli_ok(&["cron", "run", &id]);
    assert!(
        model.wait_for_requests(2, Duration::from_secs(30)),
        "the job's turn called the model"
    );
    let req = &model.requests()[1];
    assert_eq!(req.body["model"], "fake-2");
    assert!(req.body.to_string().contains("Check the drafts folder."));

    // The key came from the environment and went only to the model: not into the state dir
    // (database, logs) nor the gateway's stderr.
    let mut files = snapshot(&home.state_dir());
    if let Ok(log) = std::fs::read(home.log_path()) {
        files.insert(PathBuf::from("gateway.stderr"), log);
    }
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        for s in SECRETS {
            assert!(!text.contains(s), "{s} in {}", path.display());
        }
    }
}

fn import_fails(home: &Home, needle: &[&str]) -> String {
    let out = home.cli(&["import", "openclaw"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the import should fail: {err}");
    for n in needle {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
    // Nothing half imported.
    assert!(!home.config_path().exists(), "molt.toml was written");
    assert!(
        !home.path().join(".local/share/molt/workspace").exists(),
        "a workspace was copied"
    );
    let db = home.state_dir().join("molt.db");
    let has_sessions = db.exists()
        && sqlite_json(
            &db,
            "SELECT name FROM sqlite_master WHERE name = 'sessions'",
        )
        .len()
            == 1;
    if has_sessions {
        let n = sqlite_json(&db, "SELECT COUNT(*) AS n FROM sessions");
        assert_eq!(
            n.first().map(|r| r["n"].clone()),
            Some(json!(0)),
            "sessions were imported"
        );
    }
    err
}

#[test]
fn errors_name_the_file_and_nothing_is_half_imported() {
    // No state dir.
    let home = Home::without_config(MOLT);
    import_fails(&home, &[".openclaw", "does not exist", "--from"]);

    // Malformed JSON5, in an included file.
    let (home, src) = home_with("openclaw-2026.9");
    std::fs::write(
        src.join("models.json5"),
        "{ providers: { fake: { baseUrl: } } }",
    )
    .unwrap();
    import_fails(&home, &["models.json5", "JSON5", "included from"]);

    // A store newer than this molt knows.
    let (home, src) = home_with("openclaw-2026.9");
    let db = src.join("agents/writer/agent/openclaw-agent.sqlite");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("UPDATE schema_meta SET schema_version = 99 WHERE meta_key = 'primary'; PRAGMA journal_mode=DELETE;")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    import_fails(
        &home,
        &[
            "agents/writer/agent/openclaw-agent.sqlite",
            "schema version 99",
            "newer",
        ],
    );

    // A file that cannot be read (a directory where the transcript belongs: root reads
    // anything with mode 000).
    let (home, src) = home_with("openclaw-2026.5");
    let sessions = src.join("agents/main/sessions");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(sessions.join("sessions.json")).unwrap())
            .unwrap();
    let id = index["agent:main:main"]["sessionId"].as_str().unwrap();
    let jsonl = sessions.join(format!("{id}.jsonl"));
    std::fs::remove_file(&jsonl).unwrap();
    std::fs::create_dir(&jsonl).unwrap();
    import_fails(&home, &[&format!("{id}.jsonl"), "cannot read"]);

    // molt's own store fails to open after everything was read and staged: nothing lands.
    let (home, _src) = home_with("openclaw-2026.9");
    std::fs::create_dir_all(home.state_dir()).unwrap();
    let out = std::process::Command::new("sqlite3")
        .arg(home.state_dir().join("molt.db"))
        .arg("PRAGMA user_version = 999;")
        .output()
        .unwrap();
    assert!(out.status.success());
    import_fails(&home, &["molt.db", "nothing was written"]);
}

#[test]
fn doctor_suggests_the_import_when_it_finds_openclaw_state() {
    let (home, _src) = home_with("openclaw-2026.9");
    let out = home.cli(&["doctor", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed non-JSON ({e}): {out:?}"));
    let check = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "other-gateways"))
        .unwrap_or_else(|| panic!("no other-gateways check: {v:#}"));
    let text = check.to_string();
    assert!(text.contains(".openclaw (not running)"), "{check:#}");
    assert!(text.contains("molt import openclaw --dry-run"), "{check:#}");
}

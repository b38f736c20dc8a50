//! Protocol conformance against the published OpenClaw gateway protocol v4 JSON Schema
//! (`@openclaw/gateway-protocol@2026.9.1`), with the real binary on loopback.
//!
//! Every test talks through a raw recording WebSocket client ([`Conn`]) that keeps every text
//! frame the server sends. At the end of each test [`Log::finish`] validates all of them:
//! - each frame against the schema root (`oneOf` RequestFrame | ResponseFrame | EventFrame);
//! - each error against `ErrorShape`, and `FORBIDDEN` details against `MissingScopeErrorDetails`;
//! - each successful result against the definition of the method it answers (`connect` →
//!   `HelloOk`, `logs.tail` → `LogsTailResult`, `tasks.*` → `Tasks*Result`, `system-presence`
//!   → `PresenceEntry[]`, `health` → its `ok`/`ts`/`durationMs` against `Snapshot.health`);
//! - each event payload against its definition (`tick` → `TickEvent`, `shutdown` →
//!   `ShutdownEvent`, `device.pair.*` → `DevicePair*Event`), and event `seq` counting up.
//!
//! Where the schema has no definition, it says so and the test checks the fields by hand:
//! there is no definition for the whole `health` result (only `Snapshot.health`, which is
//! checked on the subset of fields it defines; molt adds probe fields such as `version` and
//! `pid`), nor for `status`, `gateway.identity.get`, the `connect.challenge` payload, the
//! `device.pair.*` results, or molt's own `molt.*` methods.
//!
//! The schema is fetched by `scripts/fetch-protocol-schema.sh` into
//! `<workspace>/target/openclaw-protocol/`; if it is missing the tests run the script, and fail
//! (never skip) if that does not work.

mod common;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonschema::Validator;
use molt_protocol::connect::ConnectParams;
use molt_protocol::device::{self, DeviceKey};
use molt_protocol::methods;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TOKEN: &str = "conformance-secret-token";
/// How long any single read waits before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Auth mode `none`, written explicitly: the protocol tests that are not about auth.
const NO_AUTH: &str = "[gateway.auth]\nmode = \"none\"\n";

fn token_config() -> String {
    format!("[gateway.auth]\nmode = \"token\"\ntoken = \"{TOKEN}\"\n")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// The schema
// ------------------------------------------------------------------------------------------

const SCHEMA_SHA256: &str = "971f2c0d2f0e267a062213b21a398518849c019d2cff1c1d54ff6ee1af7cddf1";

/// Definitions compiled once, by name.
const DEFINITIONS: &[&str] = &[
    "RequestFrame",
    "ResponseFrame",
    "EventFrame",
    "ErrorShape",
    "ConnectParams",
    "HelloOk",
    "PresenceEntry",
    "LogsTailParams",
    "LogsTailResult",
    "TasksListParams",
    "TasksListResult",
    "TasksGetParams",
    "TasksGetResult",
    "TasksCancelParams",
    "TasksCancelResult",
    "DevicePairListParams",
    "DevicePairApproveParams",
    "UpdateRunParams",
    "UpdateStatusParams",
    "UpdateStatusResult",
    "MissingScopeErrorDetails",
    "TickEvent",
    "ShutdownEvent",
    "DevicePairRequestedEvent",
    "DevicePairResolvedEvent",
    "ChatSendParams",
    "ChatHistoryParams",
    "ChatAbortParams",
    "ChatInjectParams",
    "AgentParams",
    "AgentWaitParams",
    "ChatEvent",
    "AgentEvent",
    "SessionsListParams",
    "SessionsCreateParams",
    "SessionsCreateResult",
    "SessionsPatchParams",
    "SessionsResetParams",
    "SessionsDeleteParams",
    "SessionsDeleteResult",
    "SessionsAbortParams",
    "SessionsSendParams",
    "SessionsDescribeParams",
    "SessionsMessagesSubscribeParams",
    "SessionsMessagesUnsubscribeParams",
    "AgentsListParams",
    "AgentsListResult",
    "ModelsListParams",
    "ModelsListResult",
    "AgentIdentityParams",
    "AgentIdentityResult",
    "CommandsListParams",
    "CommandsListResult",
    "CronListParams",
    "CronStatusParams",
    "CronAddParams",
    "CronUpdateParams",
    "CronRemoveParams",
    "CronRunParams",
    "CronRunsParams",
    "ExecApprovalGetParams",
    "ExecApprovalResolveParams",
];

/// Pseudo-definition: `definitions.Snapshot.properties.health`.
const SNAPSHOT_HEALTH: &str = "Snapshot.health";

/// The params definition of a method molt implements, where the schema has one.
fn params_definition(method: &str) -> Option<&'static str> {
    Some(match method {
        "connect" => "ConnectParams",
        "logs.tail" => "LogsTailParams",
        "tasks.list" => "TasksListParams",
        "tasks.get" => "TasksGetParams",
        "tasks.cancel" => "TasksCancelParams",
        "device.pair.list" => "DevicePairListParams",
        "device.pair.approve" => "DevicePairApproveParams",
        "update.run" => "UpdateRunParams",
        "update.status" => "UpdateStatusParams",
        "chat.send" => "ChatSendParams",
        "chat.history" => "ChatHistoryParams",
        "chat.abort" => "ChatAbortParams",
        "chat.inject" => "ChatInjectParams",
        "agent" => "AgentParams",
        "agent.wait" => "AgentWaitParams",
        "sessions.list" => "SessionsListParams",
        "sessions.create" => "SessionsCreateParams",
        "sessions.patch" => "SessionsPatchParams",
        "sessions.reset" => "SessionsResetParams",
        "sessions.delete" => "SessionsDeleteParams",
        "sessions.abort" => "SessionsAbortParams",
        "sessions.send" => "SessionsSendParams",
        "sessions.describe" => "SessionsDescribeParams",
        "sessions.messages.subscribe" => "SessionsMessagesSubscribeParams",
        "sessions.messages.unsubscribe" => "SessionsMessagesUnsubscribeParams",
        "agents.list" => "AgentsListParams",
        "models.list" => "ModelsListParams",
        "agent.identity.get" => "AgentIdentityParams",
        "commands.list" => "CommandsListParams",
        "cron.list" => "CronListParams",
        "cron.status" => "CronStatusParams",
        "cron.add" => "CronAddParams",
        "cron.update" => "CronUpdateParams",
        "cron.remove" => "CronRemoveParams",
        "cron.run" => "CronRunParams",
        "cron.runs" => "CronRunsParams",
        "exec.approval.get" => "ExecApprovalGetParams",
        "exec.approval.resolve" => "ExecApprovalResolveParams",
        _ => return None,
    })
}

/// The result definition of a method, where the schema has one (see the module docs for the
/// methods that have none).
fn result_definition(method: &str) -> Option<&'static str> {
    Some(match method {
        "connect" => "HelloOk",
        "logs.tail" => "LogsTailResult",
        "tasks.list" => "TasksListResult",
        "tasks.get" => "TasksGetResult",
        "tasks.cancel" => "TasksCancelResult",
        "update.status" => "UpdateStatusResult",
        "sessions.create" => "SessionsCreateResult",
        "sessions.delete" => "SessionsDeleteResult",
        "agents.list" => "AgentsListResult",
        "models.list" => "ModelsListResult",
        "agent.identity.get" => "AgentIdentityResult",
        "commands.list" => "CommandsListResult",
        _ => return None,
    })
}

/// The payload definition of an event. `connect.challenge` has none in the schema.
fn event_definition(event: &str) -> Option<&'static str> {
    Some(match event {
        "tick" => "TickEvent",
        "shutdown" => "ShutdownEvent",
        "device.pair.requested" => "DevicePairRequestedEvent",
        "device.pair.resolved" => "DevicePairResolvedEvent",
        "chat" => "ChatEvent",
        "agent" => "AgentEvent",
        _ => return None,
    })
}

struct Schema {
    root: Value,
    frame: Validator,
    defs: HashMap<&'static str, Validator>,
}

fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn schema_path() -> PathBuf {
    workspace_root().join("target/openclaw-protocol/package/protocol.schema.json")
}

/// The schema file, fetched with `scripts/fetch-protocol-schema.sh` if it is not there yet.
fn locate_schema() -> PathBuf {
    let path = schema_path();
    if path.is_file() {
        return path;
    }
    let script = workspace_root().join("scripts/fetch-protocol-schema.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the protocol schema {} is missing and `bash {}` could not be started: {e}",
                path.display(),
                script.display()
            )
        });
    assert!(
        out.status.success() && path.is_file(),
        "the protocol schema {} is missing and `bash {}` failed ({}), so conformance cannot be \
         checked. Run the script by hand (it needs npm and the npm registry).\nstdout:\n{}\nstderr:\n{}",
        path.display(),
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    path
}

fn compile(schema: &Value, what: &str) -> Validator {
    jsonschema::draft7::new(schema)
        .unwrap_or_else(|e| panic!("cannot compile {what} as draft 7: {e}"))
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = locate_schema();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let root: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        assert_eq!(
            root["$schema"],
            "http://json-schema.org/draft-07/schema#",
            "unexpected schema draft in {}",
            path.display()
        );
        // The whole document once: its root `oneOf` refers to `#/definitions/*Frame`.
        let frame = compile(&root, "the schema root");
        let mut defs = HashMap::new();
        // Definitions have no internal `$ref`, so each compiles on its own.
        for name in DEFINITIONS {
            let mut def = root["definitions"][*name].clone();
            assert!(def.is_object(), "the schema has no definition {name}");
            def["$schema"] = json!("http://json-schema.org/draft-07/schema#");
            defs.insert(*name, compile(&def, name));
        }
        let mut health = root["definitions"]["Snapshot"]["properties"]["health"].clone();
        assert!(health.is_object(), "the schema has no Snapshot.health");
        health["$schema"] = json!("http://json-schema.org/draft-07/schema#");
        defs.insert(SNAPSHOT_HEALTH, compile(&health, SNAPSHOT_HEALTH));
        println!(
            "schema {} (expected sha256 {SCHEMA_SHA256}, checked by the fetch script)",
            path.display()
        );
        Schema { root, frame, defs }
    })
}

impl Schema {
    fn errors(&self, def: &str, value: &Value) -> Vec<String> {
        let v = self
            .defs
            .get(def)
            .unwrap_or_else(|| panic!("definition {def} was not compiled"));
        v.iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// Panics unless `value` validates against definition `def`.
    fn check(&self, def: &str, value: &Value, what: &str) {
        let errors = self.errors(def, value);
        assert!(
            errors.is_empty(),
            "{what} does not validate against #/definitions/{def}:\n  {}\nvalue: {value:#}",
            errors.join("\n  ")
        );
    }

    /// Panics unless `frame` validates against the root `oneOf`.
    fn check_frame(&self, frame: &Value, what: &str) {
        if self.frame.is_valid(frame) {
            return;
        }
        // The root's `oneOf` errors are vague: explain with the frame's own definition.
        let def = match frame["type"].as_str() {
            Some("req") => "RequestFrame",
            Some("res") => "ResponseFrame",
            Some("event") => "EventFrame",
            _ => "ResponseFrame",
        };
        panic!(
            "{what} does not validate against the schema root (oneOf RequestFrame | \
             ResponseFrame | EventFrame); against {def}:\n  {}\nframe: {frame:#}",
            self.errors(def, frame).join("\n  ")
        );
    }

    /// The scope the schema's `methods` map gives `method`.
    fn method_scope(&self, method: &str) -> Option<&str> {
        self.root["methods"][method]["scope"].as_str()
    }
}

// ------------------------------------------------------------------------------------------
// The recording client
// ------------------------------------------------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How the server closed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Closed {
    code: u16,
    reason: String,
}

/// One text frame the server sent.
struct Entry {
    conn: usize,
    text: String,
    /// For a response: the method of the request it answers, if this client sent one.
    method: Option<String>,
}

/// Every server frame of one test, across all its connections.
#[derive(Clone)]
struct Log {
    name: &'static str,
    entries: Arc<Mutex<Vec<Entry>>>,
    conns: Arc<AtomicUsize>,
}

impl Log {
    fn new(name: &'static str) -> Self {
        // Load (and if needed fetch) the schema before anything else, so a missing schema
        // fails the test first and clearly.
        schema();
        Self {
            name,
            entries: Arc::default(),
            conns: Arc::default(),
        }
    }

    async fn open(&self, port: u16) -> Conn {
        self.open_with(port, &[]).await
    }

    /// Opens a WebSocket to the gateway and reads the `connect.challenge`.
    async fn open_with(&self, port: u16, headers: &[(&'static str, &'static str)]) -> Conn {
        let mut req = format!("ws://127.0.0.1:{port}/")
            .into_client_request()
            .expect("request");
        for (k, v) in headers {
            req.headers_mut().insert(*k, HeaderValue::from_static(v));
        }
        let (ws, _) = tokio::time::timeout(READ_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .unwrap_or_else(|_| panic!("{}: timed out opening a WebSocket", self.name))
            .unwrap_or_else(|e| panic!("{}: cannot open a WebSocket: {e}", self.name));
        let mut conn = Conn {
            ws,
            idx: self.conns.fetch_add(1, Ordering::SeqCst),
            log: self.clone(),
            methods: HashMap::new(),
            stash: VecDeque::new(),
            next_id: 0,
            nonce: String::new(),
            closed: None,
        };
        let first = conn
            .next_frame("connect.challenge")
            .await
            .expect("the server closed before sending connect.challenge");
        assert_eq!(first["type"], "event", "first frame: {first}");
        assert_eq!(first["event"], "connect.challenge", "first frame: {first}");
        // No schema definition for this payload: check {nonce, ts} by hand.
        let p = &first["payload"];
        conn.nonce = p["nonce"].as_str().unwrap_or_default().to_owned();
        assert!(!conn.nonce.is_empty(), "challenge without nonce: {first}");
        assert!(p["ts"].as_u64().is_some(), "challenge without ts: {first}");
        assert_eq!(
            p.as_object().map(|o| o.len()),
            Some(2),
            "challenge payload is {{nonce, ts}}: {first}"
        );
        conn
    }

    /// Validates every recorded frame, prints and returns how many.
    fn finish(self) -> usize {
        let s = schema();
        let entries = std::mem::take(&mut *self.entries.lock().unwrap());
        let mut payloads = 0;
        let mut last_seq: HashMap<usize, u64> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let what = format!("{}: server frame #{i} (connection {})", self.name, e.conn);
            let frame: Value = serde_json::from_str(&e.text)
                .unwrap_or_else(|err| panic!("{what} is not JSON ({err}): {}", e.text));
            s.check_frame(&frame, &what);
            match frame["type"].as_str() {
                Some("res") => {
                    let ok = frame["ok"].as_bool().unwrap_or(false);
                    // The schema does not couple `ok` to payload/error; the protocol does.
                    if ok {
                        assert!(
                            frame.get("error").is_none(),
                            "{what}: ok with error: {frame}"
                        );
                        let payload = frame.get("payload").cloned().unwrap_or(Value::Null);
                        payloads += check_result(s, e.method.as_deref(), &payload, &what);
                    } else {
                        assert!(
                            frame.get("payload").is_none(),
                            "{what}: error with payload: {frame}"
                        );
                        let err = &frame["error"];
                        s.check("ErrorShape", err, &format!("{what} error"));
                        payloads += 1;
                        if err["code"] == "FORBIDDEN" {
                            s.check(
                                "MissingScopeErrorDetails",
                                &err["details"],
                                &format!("{what} FORBIDDEN details"),
                            );
                            payloads += 1;
                        }
                    }
                }
                Some("event") => {
                    let name = frame["event"].as_str().unwrap_or_default();
                    assert!(
                        methods::EVENTS.contains(&name),
                        "{what}: event {name:?} is not in features.events"
                    );
                    if let Some(seq) = frame["seq"].as_u64() {
                        let prev = last_seq.insert(e.conn, seq);
                        assert_eq!(
                            seq,
                            prev.map_or(1, |p| p + 1),
                            "{what}: event seq must count up per connection"
                        );
                    } else {
                        assert_eq!(name, "connect.challenge", "{what}: event without seq");
                    }
                    if let Some(def) = event_definition(name) {
                        s.check(def, &frame["payload"], &format!("{what} {name} payload"));
                        payloads += 1;
                    }
                }
                _ => panic!("{what}: the server sent a non-server frame: {frame}"),
            }
        }
        println!(
            "{}: validated {} frames (+{payloads} payload/error checks against specific definitions)",
            self.name,
            entries.len()
        );
        entries.len()
    }
}

/// Validates a successful result against its method's definition; returns 1 if it had one.
fn check_result(s: &Schema, method: Option<&str>, payload: &Value, what: &str) -> usize {
    let Some(method) = method else { return 0 };
    let what = format!("{what} {method} result");
    if let Some(def) = result_definition(method) {
        s.check(def, payload, &what);
        return 1;
    }
    match method {
        "health" => {
            // No definition for the health result; its ok/ts/durationMs are Snapshot.health's.
            let mut subset = serde_json::Map::new();
            for k in ["ok", "ts", "durationMs"] {
                let v = payload
                    .get(k)
                    .unwrap_or_else(|| panic!("{what}: no {k}: {payload}"));
                subset.insert(k.into(), v.clone());
            }
            s.check(SNAPSHOT_HEALTH, &Value::Object(subset), &what);
            1
        }
        "system-presence" => {
            let list = payload
                .as_array()
                .unwrap_or_else(|| panic!("{what} is not an array: {payload}"));
            for p in list {
                s.check("PresenceEntry", p, &what);
            }
            1
        }
        _ => 0,
    }
}

/// One recording WebSocket connection.
struct Conn {
    ws: Ws,
    idx: usize,
    log: Log,
    /// Request id → method, to validate each response against its method's result.
    methods: HashMap<String, String>,
    /// Frames read while waiting for something else.
    stash: VecDeque<Value>,
    next_id: u64,
    /// The `connect.challenge` nonce.
    nonce: String,
    closed: Option<Closed>,
}

impl Conn {
    /// Reads the next frame off the socket and records it. `Err` once the server closed.
    async fn read(&mut self, what: &str) -> Result<Value, Closed> {
        self.read_within(what, READ_TIMEOUT).await
    }

    /// [`Conn::read`] with its own deadline: silence for `timeout` fails the test.
    async fn read_within(&mut self, what: &str, timeout: Duration) -> Result<Value, Closed> {
        if let Some(c) = &self.closed {
            return Err(c.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: timed out after {timeout:?} waiting for {what} (silence from the server)",
                        self.log.name
                    )
                });
            let closed = match msg {
                Some(Ok(Message::Text(t))) => {
                    let text = t.as_str().to_owned();
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let method = (frame["type"] == "res")
                        .then(|| frame["id"].as_str().and_then(|id| self.methods.get(id)))
                        .flatten()
                        .cloned();
                    self.log.entries.lock().unwrap().push(Entry {
                        conn: self.idx,
                        text,
                        method,
                    });
                    return Ok(frame);
                }
                Some(Ok(Message::Binary(_))) => {
                    panic!("{}: the server sent a binary frame", self.log.name)
                }
                Some(Ok(Message::Close(f))) => Closed {
                    code: f.as_ref().map_or(1005, |f| u16::from(f.code)),
                    reason: f.map(|f| f.reason.to_string()).unwrap_or_default(),
                },
                Some(Ok(_)) => continue,
                Some(Err(e)) => Closed {
                    code: 1006,
                    reason: e.to_string(),
                },
                None => Closed {
                    code: 1006,
                    reason: "end of stream".into(),
                },
            };
            self.closed = Some(closed.clone());
            return Err(closed);
        }
    }

    /// The next frame: stashed first, then from the socket.
    async fn next_frame(&mut self, what: &str) -> Result<Value, Closed> {
        match self.stash.pop_front() {
            Some(f) => Ok(f),
            None => self.read(what).await,
        }
    }

    async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.log.name));
    }

    /// Sends a request with a fresh id; checks our own request against the schema.
    async fn send_req(&mut self, method: &str, params: Option<Value>) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        self.send_req_with_id(&id, method, params).await;
        id
    }

    async fn send_req_with_id(&mut self, id: &str, method: &str, params: Option<Value>) {
        let mut frame = json!({ "type": "req", "id": id, "method": method });
        if let Some(p) = params {
            if let Some(def) = params_definition(method) {
                schema().check(def, &p, &format!("the test's own {method} params"));
            }
            frame["params"] = p;
        }
        schema().check("RequestFrame", &frame, "the test's own request");
        self.methods.insert(id.to_owned(), method.to_owned());
        self.send_text(frame.to_string()).await;
    }

    /// Waits for the response to `id`, stashing anything else.
    async fn response(&mut self, id: &str) -> Result<Value, Closed> {
        if let Some(i) = self
            .stash
            .iter()
            .position(|f| f["type"] == "res" && f["id"] == id)
        {
            return Ok(self.stash.remove(i).expect("stashed"));
        }
        loop {
            let f = self.read(&format!("the response to {id}")).await?;
            if f["type"] == "res" && f["id"] == id {
                return Ok(f);
            }
            self.stash.push_back(f);
        }
    }

    /// Calls `method`: `Ok(payload)` or `Err(error)`.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send_req(method, Some(params)).await;
        let res = self.response(&id).await.unwrap_or_else(|c| {
            panic!(
                "{}: the server closed ({c:?}) instead of answering {method}",
                self.log.name
            )
        });
        if res["ok"] == true {
            Ok(res["payload"].clone())
        } else {
            Err(res["error"].clone())
        }
    }

    async fn call_ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .await
            .unwrap_or_else(|e| panic!("{}: {method} failed: {e}", self.log.name))
    }

    async fn call_err(&mut self, method: &str, params: Value) -> Value {
        match self.call(method, params).await {
            Ok(p) => panic!(
                "{}: {method} succeeded, expected an error: {p}",
                self.log.name
            ),
            Err(e) => e,
        }
    }

    /// Sends `connect`: `Ok(hello-ok payload)` or `Err(error)`.
    async fn connect(&mut self, params: Value) -> Result<Value, Value> {
        self.send_req_with_id("connect", "connect", Some(params))
            .await;
        let res = self.response("connect").await.unwrap_or_else(|c| {
            panic!(
                "{}: the server closed ({c:?}) without answering connect",
                self.log.name
            )
        });
        if res["ok"] == true {
            Ok(res["payload"].clone())
        } else {
            Err(res["error"].clone())
        }
    }

    async fn hello(&mut self, params: Value) -> Value {
        self.connect(params)
            .await
            .unwrap_or_else(|e| panic!("{}: connect refused: {e}", self.log.name))
    }

    /// Waits for the server to close; frames before the close are stashed.
    async fn expect_close(&mut self) -> Closed {
        loop {
            match self.read("the close").await {
                Ok(f) => self.stash.push_back(f),
                Err(c) => return c,
            }
        }
    }

    /// Sends `connect` that must be refused: returns the error and the close.
    async fn rejected(&mut self, params: Value) -> (Value, Closed) {
        let err = match self.connect(params).await {
            Ok(h) => panic!(
                "{}: connect accepted, expected a refusal: {h}",
                self.log.name
            ),
            Err(e) => e,
        };
        (err, self.expect_close().await)
    }

    /// Waits for event `name` (within `timeout`), stashing other frames; returns its payload.
    async fn event(&mut self, name: &str, timeout: Duration) -> Value {
        if let Some(i) = self
            .stash
            .iter()
            .position(|f| f["type"] == "event" && f["event"] == name)
        {
            return self.stash.remove(i).expect("stashed")["payload"].clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: no {name} event within {timeout:?}",
                self.log.name
            );
            let left = deadline.saturating_duration_since(Instant::now());
            let f = match self.read_within(name, left).await {
                Ok(f) => f,
                Err(c) => panic!("{}: closed ({c:?}) while waiting for {name}", self.log.name),
            };
            if f["type"] == "event" && f["event"] == name {
                return f["payload"].clone();
            }
            self.stash.push_back(f);
        }
    }
}

/// Connect params: a schema-valid `test` client.
fn params(scopes: &[&str], auth: Option<Value>) -> Value {
    let mut p = json!({
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "test", "version": "1.0.0", "platform": "linux", "mode": "test"},
        "role": "operator",
        "scopes": scopes,
    });
    if let Some(a) = auth {
        p["auth"] = a;
    }
    p
}

fn token_auth() -> Option<Value> {
    Some(json!({ "token": TOKEN }))
}

/// `params` with a v3 device proof by `key` over `nonce` at `signed_at`.
fn signed(params: Value, key: &DeviceKey, nonce: &str, signed_at: u64) -> Value {
    let mut p: ConnectParams = serde_json::from_value(params).expect("connect params");
    key.sign_connect(&mut p, nonce, signed_at);
    serde_json::to_value(&p).expect("encode connect params")
}

fn detail_code(err: &Value) -> &str {
    err["details"]["code"].as_str().unwrap_or_default()
}

/// A gateway and a frame log for one test.
fn gateway(config: &str, name: &'static str) -> (Home, Gateway, Log) {
    let log = Log::new(name);
    let home = Home::new(MOLT, config);
    let gw = home.start();
    (home, gw, log)
}

// ------------------------------------------------------------------------------------------
// Handshake and hello-ok
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn handshake_without_auth_gives_a_conforming_hello_and_method_table() {
    let (_home, gw, log) = gateway(NO_AUTH, "handshake_without_auth");
    let mut c = log.open(gw.port).await;
    let hello = c.hello(params(&["operator.admin"], None)).await;

    assert_eq!(hello["type"], "hello-ok");
    assert_eq!(hello["protocol"], 4);
    assert_eq!(hello["policy"]["maxPayload"], 25 * 1024 * 1024);
    assert_eq!(hello["policy"]["maxBufferedBytes"], 50 * 1024 * 1024);
    assert_eq!(hello["policy"]["tickIntervalMs"], 15_000);
    assert_eq!(hello["auth"]["role"], "operator");
    assert_eq!(hello["auth"]["scopes"], json!(["operator.admin"]));
    assert!(hello["auth"].get("deviceToken").is_none(), "{hello}");
    assert_eq!(hello["snapshot"]["authMode"], "none");
    assert!(
        hello["snapshot"]["presence"]
            .as_array()
            .is_some_and(|p| p.iter().any(|e| e["mode"] == "test")),
        "the snapshot's presence lists this client: {hello}"
    );

    // features.methods is exactly what molt declares: every declared method has a handler.
    let mut implemented: Vec<&str> = methods::all().map(|m| m.name).collect();
    implemented.sort_unstable();
    let mut listed: Vec<&str> = hello["features"]["methods"]
        .as_array()
        .expect("features.methods")
        .iter()
        .map(|m| m.as_str().expect("method name"))
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, implemented, "features.methods");
    let events: Vec<&str> = hello["features"]["events"]
        .as_array()
        .expect("features.events")
        .iter()
        .map(|m| m.as_str().expect("event name"))
        .collect();
    assert_eq!(events, methods::EVENTS, "features.events");

    // Every protocol method molt implements exists upstream, with the same scope.
    let s = schema();
    for m in methods::all() {
        let method = m.name;
        if method.starts_with("molt.") {
            continue;
        }
        let upstream = s
            .method_scope(method)
            .unwrap_or_else(|| panic!("{method} is not in the schema's methods map"));
        // "dynamic" methods depend on what the call does; molt asks for write, the least a
        // turn or a session change needs. molt grants no `operator.questions` and always
        // answers `question.list` with an empty list, so read suffices.
        let expected = match upstream {
            "dynamic" => "operator.write",
            "operator.questions" => "operator.read",
            s => s,
        };
        assert_eq!(
            m.scope.as_str(),
            expected,
            "the scope molt enforces for {method} differs from the schema's ({upstream})"
        );
    }

    c.call_ok("health", json!({})).await;

    // And molt enforces exactly that scope: with no scopes at all, every protocol method is
    // FORBIDDEN, naming the schema's scope as the missing one.
    let mut bare = log.open(gw.port).await;
    let hello = bare.hello(params(&[], None)).await;
    assert_eq!(hello["auth"]["scopes"], json!([]), "{hello}");
    for m in methods::all() {
        let method = m.name;
        if method.starts_with("molt.") {
            continue;
        }
        let p = match method {
            "tasks.get" | "tasks.cancel" => json!({ "taskId": "run_x" }),
            "device.pair.approve" | "device.pair.reject" => json!({ "requestId": "dev_x" }),
            "chat.send" => json!({ "sessionKey": "k", "message": "m", "idempotencyKey": "i" }),
            "chat.history" | "chat.abort" => json!({ "sessionKey": "k" }),
            "chat.inject" => json!({ "sessionKey": "k", "message": "m" }),
            "agent" => json!({ "message": "m", "idempotencyKey": "i" }),
            "agent.wait" => json!({ "runId": "r" }),
            "sessions.send" => json!({ "key": "k", "message": "m" }),
            "sessions.patch"
            | "sessions.reset"
            | "sessions.delete"
            | "sessions.describe"
            | "sessions.get"
            | "sessions.messages.subscribe"
            | "sessions.messages.unsubscribe" => json!({ "key": "k" }),
            "exec.approval.get" => json!({ "id": "apr-x" }),
            "exec.approval.resolve" => json!({ "id": "apr-x", "decision": "deny" }),
            "cron.add" => json!({
                "name": "n", "schedule": {"kind": "every", "everyMs": 60000},
                "sessionTarget": "main", "wakeMode": "now",
                "payload": {"kind": "systemEvent", "text": "t"},
            }),
            "cron.update" => json!({ "id": "cron-x", "patch": {} }),
            "cron.remove" | "cron.run" | "cron.get" => json!({ "id": "cron-x" }),
            _ => json!({}),
        };
        let err = bare.call_err(method, p).await;
        assert_eq!(err["code"], "FORBIDDEN", "{method}: {err}");
        let expected = match s.method_scope(method).unwrap() {
            "dynamic" => "operator.write",
            "operator.questions" => "operator.read",
            s => s,
        };
        assert_eq!(err["details"]["missingScope"], expected, "{method}: {err}");
    }
    assert!(log.finish() >= 3);
}

#[tokio::test]
async fn with_no_auth_configured_the_generated_token_is_required() {
    let (home, gw, log) = gateway("", "generated_token");
    let path = home.state_dir().join("gateway.token");
    let token = std::fs::read_to_string(&path).expect("the gateway created its token file");
    let token = token.trim();
    assert_eq!(token.len(), 64, "256 bits as hex: {token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600, "token file mode {mode:o}");

    let mut c = log.open(gw.port).await;
    let (err, closed) = c.rejected(params(&["operator.admin"], None)).await;
    assert_eq!(detail_code(&err), "AUTH_TOKEN_MISSING", "{err}");
    assert_eq!(closed.code, 1008);
    let mut c = log.open(gw.port).await;
    let (err, _) = c
        .rejected(params(
            &["operator.admin"],
            Some(json!({ "token": "guess" })),
        ))
        .await;
    assert_eq!(detail_code(&err), "AUTH_TOKEN_MISMATCH", "{err}");

    let mut c = log.open(gw.port).await;
    let hello = c
        .hello(params(&["operator.admin"], Some(json!({ "token": token }))))
        .await;
    assert_eq!(hello["snapshot"]["authMode"], "token");
    c.call_ok("health", json!({})).await;
    assert!(log.finish() >= 3);
}

#[tokio::test]
async fn a_loopback_device_without_the_secret_is_neither_paired_nor_admitted() {
    let (_home, gw, log) = gateway(&token_config(), "no_pairing_without_secret");
    let key = DeviceKey::from_secret([9u8; 32]);
    let mut c = log.open(gw.port).await;
    let nonce = c.nonce.clone();
    let (err, _) = c
        .rejected(signed(
            params(&["operator.admin"], None),
            &key,
            &nonce,
            now_ms(),
        ))
        .await;
    assert_eq!(detail_code(&err), "AUTH_TOKEN_MISSING", "{err}");
    // Nor does a made-up device token stand in for the secret.
    let mut c = log.open(gw.port).await;
    let nonce = c.nonce.clone();
    let auth = Some(json!({ "deviceToken": "made-up" }));
    let (err, _) = c
        .rejected(signed(
            params(&["operator.admin"], auth),
            &key,
            &nonce,
            now_ms(),
        ))
        .await;
    assert_eq!(detail_code(&err), "AUTH_DEVICE_TOKEN_MISMATCH", "{err}");
    assert!(log.finish() >= 2);
}

#[tokio::test]
async fn protocol_version_mismatch_is_refused_and_closed_with_1002() {
    let (_home, gw, log) = gateway(NO_AUTH, "protocol_version_mismatch");
    for (min, max) in [(5, 5), (3, 3)] {
        let mut c = log.open(gw.port).await;
        let mut p = params(&["operator.read"], None);
        p["minProtocol"] = json!(min);
        p["maxProtocol"] = json!(max);
        let (err, closed) = c.rejected(p).await;
        assert_eq!(err["code"], "INVALID_REQUEST", "{err}");
        assert_eq!(err["message"], "protocol mismatch", "{err}");
        assert_eq!(detail_code(&err), "PROTOCOL_MISMATCH", "{err}");
        assert_eq!(err["details"]["expectedProtocol"], 4, "{err}");
        assert_eq!(closed.code, 1002, "{closed:?}");
    }
    log.finish();
}

#[tokio::test]
async fn a_first_request_other_than_connect_is_refused_and_closed_with_1008() {
    let (_home, gw, log) = gateway(NO_AUTH, "missing_connect");
    let mut c = log.open(gw.port).await;
    let id = c.send_req("health", None).await;
    let res = c
        .response(&id)
        .await
        .expect("an error response, not a close");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
    assert_eq!(c.expect_close().await.code, 1008);
    log.finish();
}

#[tokio::test]
async fn a_frame_over_the_pre_auth_limit_is_closed_with_1009() {
    let (_home, gw, log) = gateway(NO_AUTH, "pre_auth_frame_limit");
    // Just under 64 KiB is fine...
    let mut c = log.open(gw.port).await;
    let mut p = params(&["operator.read"], None);
    p["userAgent"] = json!("x".repeat(60 * 1024));
    c.hello(p).await;
    // ...just over is not.
    let mut c = log.open(gw.port).await;
    let mut p = params(&["operator.read"], None);
    p["userAgent"] = json!("x".repeat(64 * 1024 + 1));
    let frame = json!({ "type": "req", "id": "connect", "method": "connect", "params": p });
    c.send_text(frame.to_string()).await;
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 1009, "{closed:?}");
    log.finish();
}

#[tokio::test]
async fn unknown_fields_in_the_connect_frame_or_its_params_are_refused() {
    let (_home, gw, log) = gateway(NO_AUTH, "unknown_fields_in_connect");
    // In the frame.
    let mut c = log.open(gw.port).await;
    let frame = json!({
        "type": "req", "id": "connect", "method": "connect",
        "params": params(&["operator.read"], None), "bogusFrameField": 1,
    });
    c.send_text(frame.to_string()).await;
    let res = c.response("connect").await.expect("an error response");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
    assert_eq!(c.expect_close().await.code, 1008);
    // In the params, and in a nested object of the params.
    for (path, field) in [("", "bogusParam"), ("client", "bogusClientField")] {
        let mut c = log.open(gw.port).await;
        let mut p = params(&["operator.read"], None);
        let target = if path.is_empty() {
            &mut p
        } else {
            &mut p[path]
        };
        target[field] = json!(true);
        assert!(
            !schema().errors("ConnectParams", &p).is_empty(),
            "the schema must refuse these params too"
        );
        let frame = json!({ "type": "req", "id": "connect", "method": "connect", "params": p });
        c.send_text(frame.to_string()).await;
        let res = c.response("connect").await.expect("an error response");
        assert_eq!(res["ok"], false, "{res}");
        assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
        let msg = res["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "the message names {field}: {msg}");
        assert_eq!(c.expect_close().await.code, 1008);
    }
    log.finish();
}

// ------------------------------------------------------------------------------------------
// Auth: shared token, device signatures, device tokens, pairing
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_auth_accepts_the_token_and_refuses_a_wrong_or_missing_one() {
    let (_home, gw, log) = gateway(&token_config(), "token_auth");
    let mut c = log.open(gw.port).await;
    let hello = c.hello(params(&["operator.read"], token_auth())).await;
    assert_eq!(hello["snapshot"]["authMode"], "token");

    let mut c = log.open(gw.port).await;
    let (err, closed) = c
        .rejected(params(
            &["operator.read"],
            Some(json!({ "token": "not-the-token" })),
        ))
        .await;
    assert_eq!(err["code"], "INVALID_REQUEST", "{err}");
    assert_eq!(detail_code(&err), "AUTH_TOKEN_MISMATCH", "{err}");
    assert_eq!(closed.code, 1008, "{closed:?}");

    let mut c = log.open(gw.port).await;
    let (err, closed) = c.rejected(params(&["operator.read"], None)).await;
    assert_eq!(detail_code(&err), "AUTH_TOKEN_MISSING", "{err}");
    assert_eq!(closed.code, 1008, "{closed:?}");
    log.finish();
}

#[tokio::test]
async fn failed_auth_is_rate_limited_before_the_secret_is_checked() {
    let (_home, gw, log) = gateway(&token_config(), "auth_rate_limit");
    let wrong = || params(&["operator.read"], Some(json!({ "token": "guess" })));
    // The limiter allows 10 failures per minute and address.
    for i in 0..10 {
        let mut c = log.open(gw.port).await;
        let (err, closed) = c.rejected(wrong()).await;
        assert_eq!(
            detail_code(&err),
            "AUTH_TOKEN_MISMATCH",
            "attempt {i}: {err}"
        );
        assert_eq!(closed.code, 1008);
    }
    // From now on the address is locked out: a guess must not be checked (or the lockout
    // slows nothing down), and the right token must not be told apart from a wrong one.
    let mut outcomes = Vec::new();
    for p in [wrong(), params(&["operator.read"], token_auth())] {
        let mut c = log.open(gw.port).await;
        let (err, closed) = c.rejected(p).await;
        assert_eq!(closed.code, 1008, "{closed:?}");
        outcomes.push(err);
    }
    // Every frame validates whatever the outcome below.
    log.finish();
    assert_eq!(
        outcomes.iter().map(detail_code).collect::<Vec<_>>(),
        ["AUTH_RATE_LIMITED", "AUTH_RATE_LIMITED"],
        "once locked out, a wrong and the right token must get the same refusal \
         (a lockout that still checks the secret limits nothing): {outcomes:?}"
    );
    for err in &outcomes {
        assert_eq!(err["retryable"], true, "{err}");
        assert!(err["retryAfterMs"].as_u64().is_some(), "{err}");
    }
}

#[tokio::test]
async fn bad_device_signatures_are_refused_with_their_detail_codes() {
    let (_home, gw, log) = gateway(NO_AUTH, "device_signature_failures");
    let key = DeviceKey::from_secret([11; 32]);
    let base = || params(&["operator.read"], None);

    // A signature that does not verify: flip one bit of it.
    let mut c = log.open(gw.port).await;
    let mut p = signed(base(), &key, &c.nonce.clone(), now_ms());
    let sig = p["device"]["signature"].as_str().unwrap().to_owned();
    let mut bytes = device::from_b64url(&sig).unwrap();
    bytes[0] ^= 1;
    p["device"]["signature"] = json!(device::b64url(&bytes));
    let (err, closed) = c.rejected(p).await;
    assert_eq!(err["code"], "INVALID_REQUEST", "{err}");
    assert_eq!(detail_code(&err), "DEVICE_AUTH_SIGNATURE_INVALID", "{err}");
    assert_eq!(closed.code, 1008, "{closed:?}");

    // A valid signature, then the signed scopes raised to admin.
    let mut c = log.open(gw.port).await;
    let mut p = signed(base(), &key, &c.nonce.clone(), now_ms());
    p["scopes"] = json!(["operator.admin"]);
    let (err, closed) = c.rejected(p).await;
    assert_eq!(detail_code(&err), "DEVICE_AUTH_SIGNATURE_INVALID", "{err}");
    assert_eq!(closed.code, 1008, "{closed:?}");

    // Signed too long ago, or too far ahead (the window is ±2 minutes).
    for skew in [-180_000i64, 180_000] {
        let mut c = log.open(gw.port).await;
        let at = now_ms().saturating_add_signed(skew);
        let p = signed(base(), &key, &c.nonce.clone(), at);
        let (err, closed) = c.rejected(p).await;
        assert_eq!(
            detail_code(&err),
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "skew {skew}: {err}"
        );
        assert_eq!(closed.code, 1008, "{closed:?}");
    }

    // Signed over some other nonce than this connection's challenge.
    let mut c = log.open(gw.port).await;
    let p = signed(base(), &key, "not-this-connections-nonce", now_ms());
    let (err, closed) = c.rejected(p).await;
    assert_eq!(detail_code(&err), "DEVICE_AUTH_NONCE_MISMATCH", "{err}");
    assert_eq!(closed.code, 1008, "{closed:?}");

    // The same key, signed properly, is fine.
    let mut c = log.open(gw.port).await;
    let p = signed(base(), &key, &c.nonce.clone(), now_ms());
    c.hello(p).await;
    log.finish();
}

#[tokio::test]
async fn a_loopback_device_is_auto_approved_and_its_device_token_replaces_the_shared_token() {
    let (_home, gw, log) = gateway(&token_config(), "device_token");
    let key = DeviceKey::from_secret([21; 32]);
    let scopes = ["operator.read", "operator.write"];

    let mut c = log.open(gw.port).await;
    let nonce = c.nonce.clone();
    let hello = c
        .hello(signed(
            params(&scopes, token_auth()),
            &key,
            &nonce,
            now_ms(),
        ))
        .await;
    let device_token = hello["auth"]["deviceToken"]
        .as_str()
        .unwrap_or_else(|| panic!("hello-ok.auth.deviceToken missing: {hello}"))
        .to_owned();
    assert!(hello["auth"]["issuedAtMs"].as_u64().is_some(), "{hello}");
    assert_eq!(hello["auth"]["scopes"], json!(scopes));
    let presence = c.call_ok("system-presence", json!({})).await;
    assert!(
        presence
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["deviceId"] == key.id().as_str()),
        "presence names the device: {presence}"
    );

    // Only the device token, no shared token.
    let mut c = log.open(gw.port).await;
    let nonce = c.nonce.clone();
    let auth = Some(json!({ "deviceToken": device_token }));
    let hello = c
        .hello(signed(params(&scopes, auth), &key, &nonce, now_ms()))
        .await;
    assert_eq!(hello["auth"]["deviceToken"], device_token.as_str());
    c.call_ok("health", json!({})).await;

    // A device token without the device proof is no credential.
    let mut c = log.open(gw.port).await;
    let auth = Some(json!({ "deviceToken": device_token }));
    let (err, closed) = c.rejected(params(&scopes, auth)).await;
    assert_eq!(detail_code(&err), "AUTH_TOKEN_MISSING", "{err}");
    assert_eq!(closed.code, 1008);

    // A wrong device token.
    let mut c = log.open(gw.port).await;
    let nonce = c.nonce.clone();
    let auth = Some(json!({ "deviceToken": "0".repeat(64) }));
    let (err, closed) = c
        .rejected(signed(params(&scopes, auth), &key, &nonce, now_ms()))
        .await;
    assert_eq!(detail_code(&err), "AUTH_DEVICE_TOKEN_MISMATCH", "{err}");
    assert_eq!(closed.code, 1008);
    log.finish();
}

#[tokio::test]
async fn a_proxied_device_needs_pairing_and_the_pairing_events_conform() {
    let (_home, gw, log) = gateway(&token_config(), "device_pairing_events");
    let mut admin = log.open(gw.port).await;
    admin.hello(params(&["operator.admin"], token_auth())).await;

    // Through a (local) reverse proxy the connection is not direct loopback: no auto-approval.
    let proxied = [("x-forwarded-for", "127.0.0.1")];
    let key = DeviceKey::from_secret([31; 32]);
    let mut d = log.open_with(gw.port, &proxied).await;
    let nonce = d.nonce.clone();
    let (err, closed) = d
        .rejected(signed(
            params(&["operator.read"], token_auth()),
            &key,
            &nonce,
            now_ms(),
        ))
        .await;
    assert_eq!(err["code"], "NOT_PAIRED", "{err}");
    assert_eq!(detail_code(&err), "PAIRING_REQUIRED", "{err}");
    assert_eq!(closed.code, 1008, "{closed:?}");

    let requested = admin
        .event("device.pair.requested", Duration::from_secs(10))
        .await;
    assert_eq!(requested["deviceId"], key.id().as_str(), "{requested}");
    let request_id = requested["requestId"].as_str().unwrap().to_owned();
    let listed = admin.call_ok("device.pair.list", json!({})).await;
    assert!(
        listed["pending"]
            .as_array()
            .is_some_and(|p| p.iter().any(|d| d["id"] == key.id().as_str())),
        "{listed}"
    );

    admin
        .call_ok("device.pair.approve", json!({ "requestId": request_id }))
        .await;
    let resolved = admin
        .event("device.pair.resolved", Duration::from_secs(10))
        .await;
    assert_eq!(resolved["decision"], "approved", "{resolved}");
    assert_eq!(resolved["deviceId"], key.id().as_str(), "{resolved}");

    let mut d = log.open_with(gw.port, &proxied).await;
    let nonce = d.nonce.clone();
    let hello = d
        .hello(signed(
            params(&["operator.read"], token_auth()),
            &key,
            &nonce,
            now_ms(),
        ))
        .await;
    assert!(hello["auth"]["deviceToken"].is_string(), "{hello}");
    log.finish();
}

// ------------------------------------------------------------------------------------------
// Methods
// ------------------------------------------------------------------------------------------

/// Polls `tasks.get` until the task has `status`.
#[tokio::test]
async fn update_methods_conform_and_refuse_what_molt_cannot_do() {
    let (_home, gw, log) = gateway(&token_config(), "update_methods");
    let mut c = log.open(gw.port).await;
    c.hello(params(&["operator.admin"], token_auth())).await;

    // Nothing has run: no sentinel, no "update available" (molt does not poll).
    let st = c.call_ok("update.status", json!({})).await;
    assert_eq!(st, json!({ "sentinel": null, "updateAvailable": null }));

    // No trusted key: refused, saying how to add one.
    let e = c
        .call_err(
            "update.run",
            json!({ "continuationMessage": "back soon", "note": "conformance" }),
        )
        .await;
    assert_eq!(e["code"], "INVALID_REQUEST", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("trusted_keys")),
        "{e}"
    );
    // A git target is an OpenClaw install method; molt installs signed releases.
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let e = c
        .call_err(
            "update.run",
            json!({ "target": { "kind": "git", "upstreamRef": "main", "upstreamSha": sha } }),
        )
        .await;
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("git")),
        "{e}"
    );
    // Read scope is not enough for update.*.
    let mut reader = log.open(gw.port).await;
    reader.hello(params(&["operator.read"], token_auth())).await;
    let e = reader.call_err("update.status", json!({})).await;
    assert_eq!(detail_code(&e), "MISSING_SCOPE", "{e}");
    assert!(log.finish() > 0);
}

async fn wait_status(c: &mut Conn, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = c.call_ok("tasks.get", json!({ "taskId": id })).await;
        if got["task"]["status"] == status {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not reach {status}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn foundation_methods_and_a_task_lifecycle_conform() {
    let (_home, gw, log) = gateway(&token_config(), "foundation_methods");
    let mut c = log.open(gw.port).await;
    c.hello(params(&["operator.admin"], token_auth())).await;

    let health = c.call_ok("health", json!({})).await;
    assert_eq!(health["ok"], true, "{health}");
    let status = c.call_ok("status", json!({})).await;
    assert_eq!(status["state"], "serving", "{status}");
    assert_eq!(status["connections"], 1, "{status}");

    let presence = c.call_ok("system-presence", json!({})).await;
    let presence = presence.as_array().expect("presence list");
    assert!(
        presence.iter().any(|p| p["mode"] == "gateway"),
        "{presence:?}"
    );
    assert!(presence.iter().any(|p| p["mode"] == "test"), "{presence:?}");

    // No definition for gateway.identity.get: the id is the sha256 of the public key.
    let ident = c.call_ok("gateway.identity.get", json!({})).await;
    let pk: [u8; 32] = ident["publicKey"]
        .as_str()
        .and_then(device::from_b64url)
        .and_then(|k| k.try_into().ok())
        .unwrap_or_else(|| panic!("publicKey is not a base64url Ed25519 key: {ident}"));
    assert_eq!(
        ident["deviceId"],
        device::device_id(&pk).as_str(),
        "{ident}"
    );

    // logs.tail without a cursor: the last lines, and a cursor to continue from.
    let tail = c.call_ok("logs.tail", json!({ "limit": 50 })).await;
    let cursor = tail["cursor"].as_u64().expect("cursor");
    assert!(tail["lines"].as_array().is_some_and(|l| l.len() <= 50));

    // A real run.
    let run = c
        .call_ok(
            "molt.run.exec",
            json!({ "command": "sleep", "args": ["30"], "title": "conformance sleep" }),
        )
        .await;
    let id = run["runId"].as_str().expect("runId").to_owned();
    wait_status(&mut c, &id, "running").await;
    let list = c.call_ok("tasks.list", json!({})).await;
    let task = list["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("tasks.list lacks {id}: {list}"));
    assert_eq!(task["status"], "running", "{task}");
    assert_eq!(task["title"], "conformance sleep", "{task}");
    let running = c
        .call_ok("tasks.list", json!({ "status": ["running"], "limit": 10 }))
        .await;
    assert_eq!(
        running["tasks"].as_array().map(Vec::len),
        Some(1),
        "{running}"
    );

    // logs.tail with the cursor: only what was logged since, which includes the new run.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let more = c.call_ok("logs.tail", json!({ "cursor": cursor })).await;
        assert!(more["cursor"].as_u64().expect("cursor") >= cursor, "{more}");
        let lines = more["lines"].as_array().expect("lines");
        if lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(&id)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the log never mentioned {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cancel = c
        .call_ok(
            "tasks.cancel",
            json!({ "taskId": id, "reason": "conformance" }),
        )
        .await;
    assert_eq!(cancel["found"], true, "{cancel}");
    assert_eq!(cancel["cancelled"], true, "{cancel}");
    let done = wait_status(&mut c, &id, "cancelled").await;
    assert!(done["task"]["endedAt"].is_u64(), "{done}");

    let missing = c
        .call_ok("tasks.cancel", json!({ "taskId": "run_does_not_exist" }))
        .await;
    assert_eq!(missing, json!({ "found": false, "cancelled": false }));
    let err = c
        .call_err("tasks.get", json!({ "taskId": "run_does_not_exist" }))
        .await;
    assert_eq!(err["code"], "INVALID_REQUEST", "{err}");
    log.finish();
}

#[tokio::test]
async fn unknown_methods_and_unknown_fields_after_connect_get_error_frames() {
    let (_home, gw, log) = gateway(NO_AUTH, "unknown_method_and_fields");
    let mut c = log.open(gw.port).await;
    c.hello(params(&["operator.admin"], None)).await;

    // A real protocol method molt does not implement: an error, never silence.
    assert!(schema().method_scope("cron.scratch.get").is_some());
    let err = c.call_err("cron.scratch.get", json!({})).await;
    assert!(
        err["code"] == "INVALID_REQUEST" || err["code"] == "UNAVAILABLE",
        "{err}"
    );

    // An unknown field in the request frame is answered on its id.
    c.send_text(
        json!({ "type": "req", "id": "x1", "method": "health", "bogus": true }).to_string(),
    )
    .await;
    let res = c.response("x1").await.expect("an error response");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");

    // An unknown field in method params.
    let bad = json!({ "bogus": 1 });
    assert!(!schema().errors("TasksListParams", &bad).is_empty());
    c.send_text(
        json!({ "type": "req", "id": "x2", "method": "tasks.list", "params": bad }).to_string(),
    )
    .await;
    let res = c.response("x2").await.expect("an error response");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");

    // The connection is still good.
    c.call_ok("health", json!({})).await;
    log.finish();
}

#[tokio::test]
async fn a_missing_scope_is_forbidden_with_missing_scope_details() {
    let (_home, gw, log) = gateway(NO_AUTH, "missing_scope");
    let mut c = log.open(gw.port).await;
    let hello = c.hello(params(&["operator.read"], None)).await;
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read"]));

    let err = c
        .call_err("tasks.cancel", json!({ "taskId": "run_x" }))
        .await;
    assert_eq!(err["code"], "FORBIDDEN", "{err}");
    assert_eq!(detail_code(&err), "MISSING_SCOPE", "{err}");
    assert_eq!(err["details"]["missingScope"], "operator.write", "{err}");
    let err = c
        .call_err("molt.run.exec", json!({ "command": "true" }))
        .await;
    assert_eq!(err["details"]["missingScope"], "operator.admin", "{err}");
    c.call_ok("tasks.list", json!({})).await;
    log.finish();
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_result() {
    let (_home, gw, log) = gateway(NO_AUTH, "idempotency");
    let mut c = log.open(gw.port).await;
    c.hello(params(&["operator.admin"], None)).await;
    let exec = json!({ "command": "sleep", "args": ["30"], "idempotencyKey": "conf-key-1" });
    let first = c.call_ok("molt.run.exec", exec.clone()).await;
    let second = c.call_ok("molt.run.exec", exec).await;
    let id = first["runId"].as_str().expect("runId").to_owned();
    assert_eq!(second["runId"], id.as_str(), "{first} vs {second}");
    assert_eq!(first, second, "the repeat returns the first result");
    let list = c.call_ok("tasks.list", json!({})).await;
    let ids: Vec<&str> = list["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()], "exactly one run: {list}");
    c.call_ok("tasks.cancel", json!({ "taskId": id })).await;
    wait_status(&mut c, &id, "cancelled").await;
    log.finish();
}

// ------------------------------------------------------------------------------------------
// Liveness and shutdown
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_sends_the_shutdown_event_then_closes_with_1012() {
    let (home, mut gw, log) = gateway(NO_AUTH, "shutdown");
    let mut c = log.open(gw.port).await;
    c.hello(params(&["operator.read"], None)).await;
    c.call_ok("health", json!({})).await;

    gw.signal(libc::SIGTERM);
    let shutdown = c.event("shutdown", Duration::from_secs(10)).await;
    assert!(shutdown["reason"].is_string(), "{shutdown}");
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 1012, "{closed:?}");
    assert!(
        c.stash.is_empty(),
        "nothing after shutdown but the close: {:?}",
        c.stash
    );
    let (code, _) = gw.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "log:\n{}", home.stderr_log());
    log.finish();
}

#[tokio::test]
async fn a_tick_event_arrives_within_the_tick_interval() {
    let (_home, gw, log) = gateway(NO_AUTH, "tick");
    let mut c = log.open(gw.port).await;
    let hello = c.hello(params(&["operator.read"], None)).await;
    let interval = hello["policy"]["tickIntervalMs"].as_u64().expect("tick");
    assert_eq!(interval, 15_000);
    let t0 = Instant::now();
    let tick = c.event("tick", Duration::from_secs(20)).await;
    println!("tick after {:?}", t0.elapsed());
    let ts = tick["ts"].as_u64().expect("ts");
    assert!(ts.abs_diff(now_ms()) < 60_000, "tick ts {ts} is not now");
    log.finish();
}

// ------------------------------------------------------------------------------------------
// The conversation surface, against the fake model
// ------------------------------------------------------------------------------------------

/// A config with the fake model as `main`'s model; the key is inline, so the file is 0600.
fn agent_home(fake: &molt_fake_model::FakeModel) -> Home {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new(
        MOLT,
        &format!(
            "{NO_AUTH}[models.providers.fake]\nbase_url = \"{}\"\napi_key = \"sk-conformance\"\n\
             [[models.providers.fake.models]]\nid = \"fake-1\"\n[agents.defaults]\nmodel = \"fake/fake-1\"\n",
            fake.openai_base_url()
        ),
    );
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    home
}

#[tokio::test]
async fn a_conversation_with_a_tool_call_conforms() {
    use molt_fake_model::{FakeModel, Reply};
    let fake = FakeModel::start();
    let home = agent_home(&fake);
    let _gw = home.start();
    let log = Log::new("conversation");
    let mut c = log.open(home.port).await;
    let mut p = params(&["operator.admin"], None);
    p["caps"] = json!(["tool-events"]);
    c.hello(p).await;

    // What the TUI asks for at start.
    c.call_ok("sessions.subscribe", json!({})).await;
    let agents = c.call_ok("agents.list", json!({})).await;
    assert_eq!(agents["defaultId"], "main");
    let models = c.call_ok("models.list", json!({})).await;
    assert_eq!(models["models"][0]["id"], "fake-1");
    assert_eq!(
        c.call_ok("question.list", json!({})).await,
        json!({"questions": []})
    );
    assert_eq!(
        c.call_ok("plugin.approval.list", json!({})).await,
        json!([])
    );
    assert_eq!(
        c.call_ok("taskSuggestions.list", json!({})).await,
        json!({"suggestions": []})
    );
    let who = c.call_ok("agent.identity.get", json!({})).await;
    assert_eq!(who["agentId"], "main");
    c.call_ok(
        "commands.list",
        json!({"agentId": "main", "scope": "text", "includeArgs": false}),
    )
    .await;
    c.call_ok(
        "sessions.messages.subscribe",
        json!({"key": "agent:main:main"}),
    )
    .await;
    c.call_ok(
        "chat.history",
        json!({"sessionKey": "agent:main:main", "limit": 200}),
    )
    .await;

    // A turn with a tool call: every chat and agent event validates as it is logged.
    fake.push(Reply::tool_call(
        "call_1",
        "exec",
        json!({"command": "echo hi"}),
    ));
    fake.push(Reply::text("done"));
    let sent = c
        .call_ok(
            "chat.send",
            json!({"sessionKey": "agent:main:main", "message": "hello", "deliver": false, "idempotencyKey": "conf-1"}),
        )
        .await;
    assert_eq!(sent, json!({"runId": "conf-1", "status": "started"}));
    let mut states = Vec::new();
    let mut streams = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no final; states {states:?}");
        let f = c.read("conversation events").await.expect("open");
        if f["type"] != "event" {
            continue;
        }
        let payload = &f["payload"];
        match f["event"].as_str() {
            Some("agent") => {
                streams.insert(payload["stream"].as_str().unwrap_or("").to_owned());
            }
            Some("chat") if payload["runId"] == "conf-1" => {
                states.push(payload["state"].as_str().unwrap_or("").to_owned());
                if payload["state"] == "final" {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(states.contains(&"delta".to_owned()), "{states:?}");
    for s in ["lifecycle", "assistant", "item", "command_output", "tool"] {
        assert!(streams.contains(s), "no {s} stream in {streams:?}");
    }

    // The agent method: accepted, then the final answer on the same id.
    fake.push(Reply::text("second"));
    c.send_req_with_id(
        "ag-1",
        "agent",
        Some(json!({"message": "again", "agentId": "main", "deliver": false, "timeout": 60, "idempotencyKey": "conf-2"})),
    )
    .await;
    let first = c.response("ag-1").await.expect("accepted");
    assert_eq!(first["payload"]["status"], "accepted", "{first}");
    let second = c.response("ag-1").await.expect("final");
    assert_eq!(second["payload"]["status"], "ok", "{second}");
    assert_eq!(second["payload"]["result"]["payloads"][0]["text"], "second");
    let waited = c
        .call_ok("agent.wait", json!({"runId": "conf-2", "timeoutMs": 1000}))
        .await;
    assert_eq!(waited["status"], "ok");

    // Sessions.
    let injected = c
        .call_ok(
            "chat.inject",
            json!({"sessionKey": "agent:main:main", "message": "a note", "label": "note"}),
        )
        .await;
    assert_eq!(injected["ok"], true);
    let created = c
        .call_ok(
            "sessions.create",
            json!({"key": "tui-1", "agentId": "main"}),
        )
        .await;
    assert_eq!(created["key"], "agent:main:tui-1");
    c.call_ok(
        "sessions.patch",
        json!({"key": "agent:main:tui-1", "label": "mine"}),
    )
    .await;
    c.call_ok("sessions.describe", json!({"key": "agent:main:tui-1"}))
        .await;
    let list = c.call_ok("sessions.list", json!({"limit": 10})).await;
    assert_eq!(list["count"], 2, "{list}");
    c.call_ok("sessions.reset", json!({"key": "agent:main:tui-1"}))
        .await;
    let aborted = c
        .call_ok("chat.abort", json!({"sessionKey": "agent:main:main"}))
        .await;
    assert_eq!(aborted["aborted"], false);
    c.call_ok("sessions.delete", json!({"key": "agent:main:tui-1"}))
        .await;
    c.call_ok(
        "sessions.messages.unsubscribe",
        json!({"key": "agent:main:main"}),
    )
    .await;
    log.finish();
}

#[test]
fn the_params_molt_clients_send_validate_against_the_schema() {
    use molt_protocol::methods::{approvals, chat, cron, sessions};
    let s = schema();
    let check = |def: &str, v: Value| s.check(def, &v, &format!("molt's {def}"));
    // What `molt cron add` sends, for each schedule and payload kind.
    for (schedule, payload, target) in [
        (
            json!({"kind": "cron", "expr": "0 3 * * *", "tz": "Europe/Berlin"}),
            json!({"kind": "command", "argv": ["restic", "backup"]}),
            "isolated",
        ),
        (
            json!({"kind": "every", "everyMs": 1_800_000}),
            json!({"kind": "systemEvent", "text": "check the disk"}),
            "main",
        ),
        (
            json!({"kind": "at", "at": "2026-12-24T08:00:00.000Z"}),
            json!({"kind": "agentTurn", "message": "Summarize my inbox"}),
            "isolated",
        ),
    ] {
        check(
            "CronAddParams",
            serde_json::to_value(cron::CronAddParams {
                name: "job".into(),
                schedule,
                session_target: target.into(),
                wake_mode: "now".into(),
                payload,
                agent_id: None,
                description: None,
                enabled: Some(false),
                delete_after_run: Some(false),
            })
            .unwrap(),
        );
    }
    check(
        "CronUpdateParams",
        serde_json::to_value(cron::CronUpdateParams {
            id: Some("cron-1".into()),
            job_id: None,
            patch: cron::CronPatch {
                schedule: Some(json!({"kind": "every", "everyMs": 60_000})),
                enabled: Some(false),
                ..Default::default()
            },
        })
        .unwrap(),
    );
    check(
        "CronRunParams",
        serde_json::to_value(cron::CronRunParams {
            id: Some("cron-1".into()),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "CronRemoveParams",
        serde_json::to_value(cron::CronIdParams {
            id: Some("cron-1".into()),
            job_id: None,
        })
        .unwrap(),
    );
    check(
        "CronRunsParams",
        serde_json::to_value(cron::CronRunsParams {
            id: Some("cron-1".into()),
            limit: Some(20),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "CronListParams",
        serde_json::to_value(cron::CronListParams {
            include_disabled: Some(true),
            limit: Some(200),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "ExecApprovalResolveParams",
        serde_json::to_value(approvals::ApprovalResolveParams {
            id: "apr-1".into(),
            decision: "allow-once".into(),
            reviewer: None,
            grant_expires_in_days: None,
        })
        .unwrap(),
    );
    check(
        "ChatSendParams",
        serde_json::to_value(chat::ChatSendParams {
            session_key: "agent:main:main".into(),
            message: "hi".into(),
            idempotency_key: "k".into(),
            queue_mode: Some(chat::QueueMode::Followup),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "ChatHistoryParams",
        serde_json::to_value(chat::ChatHistoryParams {
            session_key: "k".into(),
            limit: Some(20),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "ChatAbortParams",
        serde_json::to_value(chat::ChatAbortParams {
            session_key: "k".into(),
            run_id: Some("r".into()),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "AgentParams",
        serde_json::to_value(chat::AgentParams {
            message: "hi".into(),
            idempotency_key: "k".into(),
            agent_id: Some("main".into()),
            timeout: Some(60),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "AgentWaitParams",
        serde_json::to_value(chat::AgentWaitParams {
            run_id: "r".into(),
            timeout_ms: Some(1000),
        })
        .unwrap(),
    );
    check(
        "SessionsCreateParams",
        serde_json::to_value(sessions::SessionsCreateParams {
            key: Some("k".into()),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "SessionsResetParams",
        serde_json::to_value(sessions::SessionKeyParams {
            key: "k".into(),
            agent_id: None,
        })
        .unwrap(),
    );
    check(
        "SessionsPatchParams",
        serde_json::to_value(sessions::SessionsPatchParams {
            key: "k".into(),
            model: sessions::Patch::Clear,
            label: sessions::Patch::Set("x".into()),
            ..Default::default()
        })
        .unwrap(),
    );
    check(
        "SessionsListParams",
        serde_json::to_value(sessions::SessionsListParams::default()).unwrap(),
    );
}

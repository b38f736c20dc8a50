//! A real headless Chromium, driven over the Chrome DevTools Protocol (JSON over a WebSocket)
//! with a small blocking client: launch, open a page, evaluate, type, click, screenshot, and
//! collect everything the page reports as an error.
//!
//! Chromium runs in its own process group in a temporary profile and is killed (the whole
//! group) when the [`Chromium`] drops, also when a test panics. A missing browser is a panic
//! that says how to install it, never a silent skip.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long one DevTools command may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Events kept for [`Page::take_events`]; older ones are dropped.
const EVENT_CAP: usize = 20_000;

/// The Chromium binary: `$MOLT_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
/// `google-chrome` on `PATH`. Panics with how to install one when there is none.
pub fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MOLT_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "MOLT_CHROMIUM={} is not a file; point it at a Chromium binary",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "Chromium is not installed, and the web chat tests need a real browser: install it \
         with `apt-get install -y chromium chromium-driver` (Debian; .ci/run does this), or \
         set MOLT_CHROMIUM to a Chromium or Chrome binary"
    );
}

/// A headless Chromium with remote debugging on a loopback port of its choosing.
pub struct Chromium {
    child: Option<Child>,
    port: u16,
    /// `/devtools/browser/<id>`.
    browser_path: String,
    dir: tempfile::TempDir,
}

impl Chromium {
    /// Starts Chromium and waits (up to 30 s) for its DevTools port.
    pub fn launch() -> Self {
        let bin = chromium_path();
        let dir = tempfile::Builder::new()
            .prefix("molt-chromium-")
            .tempdir()
            .expect("create a Chromium profile dir");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("chromium.log");
        let child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--mute-audio",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own group, so drop can kill the browser with every helper process it forked.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut c = Self {
            child: Some(child),
            port: 0,
            browser_path: String::new(),
            dir,
        };
        let active = c.dir.path().join("profile/DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse()
                {
                    c.port = port;
                    c.browser_path = path.trim().to_owned();
                    return c;
                }
            }
            if let Some(st) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                panic!(
                    "Chromium exited ({st}) before it opened its DevTools port; its log: {}",
                    std::fs::read_to_string(c.dir.path().join("chromium.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not write {} within 30 s",
                active.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Opens a new tab on `about:blank`, with the Runtime, Log and Page domains enabled and
    /// a `width`×`height` viewport.
    pub fn open(&self, width: u32, height: u32) -> Page {
        let mut browser = Page::connect(self.port, &self.browser_path);
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"]
            .as_str()
            .expect("Target.createTarget returned a targetId")
            .to_owned();
        let mut page = Page::connect(self.port, &format!("/devtools/page/{id}"));
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(domain, json!({}));
        }
        page.viewport(width, height);
        page
    }

    /// The browser's own log (stderr), for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) on the process group we created for this child; no memory
            // is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One tab, over its own DevTools WebSocket.
pub struct Page {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: VecDeque<Value>,
    problems: Vec<String>,
}

impl Page {
    fn connect(port: u16, path: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to Chromium's DevTools port {port}: {e}"));
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools WebSocket handshake with {url}: {e}"));
        // Short reads, so every wait below keeps its own deadline.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        Self {
            ws,
            next_id: 1,
            events: VecDeque::new(),
            problems: Vec::new(),
        }
    }

    /// The next message, or `None` when nothing arrives within the read timeout.
    fn read_one(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => serde_json::from_str(t.as_str()).ok(),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("the DevTools connection broke: {e}"),
        }
    }

    /// Records an event: errors the page reports go to [`Page::problems`].
    fn absorb(&mut self, v: Value) {
        let p = &v["params"];
        let problem = match v["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                x["value"]
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| x["description"].to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(format!("console.error: {}", args.join(" ")))
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                Some(format!(
                    "uncaught exception: {} {}",
                    d["text"].as_str().unwrap_or(""),
                    d["exception"]["description"].as_str().unwrap_or("")
                ))
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!(
                "log error ({}): {} {}",
                p["entry"]["source"].as_str().unwrap_or(""),
                p["entry"]["text"].as_str().unwrap_or(""),
                p["entry"]["url"].as_str().unwrap_or("")
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            self.problems.push(problem);
        }
        if self.events.len() >= EVENT_CAP {
            self.events.pop_front();
        }
        self.events.push_back(v);
    }

    /// Sends a DevTools command and returns its `result`; panics on a protocol error or
    /// after 30 s.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .unwrap_or_else(|e| panic!("send {method} to Chromium: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "Chromium did not answer {method} within {CALL_TIMEOUT:?}"
            );
            let Some(v) = self.read_one() else { continue };
            if v["id"].as_u64() == Some(id) {
                if !v["error"].is_null() {
                    panic!("{method} failed: {}", v["error"]);
                }
                return v["result"].clone();
            }
            self.absorb(v);
        }
    }

    /// Reads events for `d` (the page keeps running meanwhile).
    pub fn pump(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let Some(v) = self.read_one() {
                self.absorb(v);
            }
        }
    }

    /// Evaluates `js` in the page (promises awaited) and returns its value; panics when it
    /// throws.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(d) = r.get("exceptionDetails") {
            panic!(
                "page script threw: {}\nscript: {js}",
                d["exception"]["description"]
                    .as_str()
                    .unwrap_or(&d.to_string())
            );
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `js` every 50 ms until it returns a truthy value (returned); panics naming
    /// `what` after `timeout`, with the page's last problems.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, js: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(js);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let body = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''");
                panic!(
                    "timed out after {timeout:?} waiting for {what}; page problems: {:?}; page text: {body}",
                    self.problems
                );
            }
            self.pump(Duration::from_millis(50));
        }
    }

    /// Navigates and waits (up to 20 s) for the load to complete.
    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = r["errorText"].as_str() {
            panic!("navigation to {url} failed: {e}");
        }
        self.wait_for(
            "the page to load",
            Duration::from_secs(20),
            "document.readyState === 'complete'",
        );
    }

    /// Sets the viewport (CSS pixels, scale 1); widths under 600 emulate a phone.
    pub fn viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
    }

    /// Focuses the element `selector` names.
    pub fn focus(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap_or_default();
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.focus(); return document.activeElement === e; }})()"
        ));
        assert_eq!(found, json!(true), "cannot focus {selector}");
    }

    /// Types `text` into the focused element, as an input method would.
    pub fn insert_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Presses and releases Enter on the focused element.
    pub fn press_enter(&mut self) {
        for kind in ["keyDown", "keyUp"] {
            let mut p = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13});
            if kind == "keyDown" {
                p["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", p);
        }
    }

    /// Clicks the middle of the element `selector` names with the mouse; panics if it is
    /// not visible.
    pub fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap_or_default();
        let r = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'nearest'}}); const r = e.getBoundingClientRect(); return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
        ));
        let (Some(x), Some(y)) = (r[0].as_f64(), r[1].as_f64()) else {
            panic!("cannot click {selector}: not found or not visible");
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Saves a PNG of the viewport to `path` (directories created).
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("screenshot data");
        let png = data_encoding::BASE64
            .decode(data.as_bytes())
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot dir");
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("write screenshot {}: {e}", path.display()));
    }

    /// Errors the page reported so far: `console.error`, uncaught exceptions and error log
    /// entries (failed loads, CSP violations).
    pub fn problems(&mut self) -> Vec<String> {
        self.pump(Duration::from_millis(10));
        self.problems.clone()
    }

    /// Takes every event recorded so far (oldest first).
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }
}

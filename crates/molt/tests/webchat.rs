//! The web chat page in a real headless Chromium, against the real gateway and the fake
//! model on loopback: sign-in, a streamed reply, a handover in the middle of one, a wrong
//! token, the origin check and security headers, and the layout at phone and desktop width.
//!
//! Screenshots go to `target/artifacts/webchat/`. Chromium must be installed (`.ci/run`
//! installs it); without it these tests fail and say how to install it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use molt_fake_model::{FakeModel, Reply};
use serde_json::json;

/// The API key the fake model requires.
const KEY: &str = "sk-molt-webchat-5d2a8c71";

/// A home whose gateway talks to `fake`, with `extra` appended to molt.toml (0600).
fn home_with(fake: &FakeModel, extra: &str) -> Home {
    Home::new_private(
        MOLT,
        &fake_model_config(&fake.openai_base_url(), KEY, extra),
    )
}

/// The page logged no console error, threw nothing and broke no CSP rule.
fn assert_no_problems(page: &mut Page) {
    let problems = page.problems();
    assert!(
        problems.is_empty(),
        "the page reported errors: {problems:?}"
    );
}

/// `target/artifacts/webchat/<name>.png`; the path is printed so CI logs point at it.
fn artifact(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("../artifacts/webchat")
        .join(format!("{name}.png"));
    println!("screenshot: {}", p.display());
    p
}

/// Sends `request` as raw HTTP/1.1 to the gateway; returns the status and the header block.
fn raw_http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Up to the end of the headers: a 101 keeps the connection open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(Instant::now() < deadline, "no HTTP answer within 5 s");
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the headers ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap().to_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase())
}

fn upgrade_request(port: u16, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    )
}

/// Opens the page and waits for its sign-in dialog.
fn open_sign_in(page: &mut Page, port: u16) {
    page.navigate(&format!("http://127.0.0.1:{port}/"));
    page.wait_for(
        "the sign-in dialog",
        Duration::from_secs(10),
        "document.getElementById('login').open",
    );
}

/// Types `secret` into the open sign-in dialog and sends it with Enter.
fn type_secret(page: &mut Page, secret: &str) {
    page.focus("#token");
    page.insert_text(secret);
    page.press_enter();
}

/// Types a `secret` the gateway refuses and presses Connect; returns the message the
/// dialog shows.
fn refused(page: &mut Page, secret: &str) -> String {
    page.focus("#token");
    page.insert_text(secret);
    page.click("#connect");
    let msg = page.wait_for(
        "the refusal",
        Duration::from_secs(15),
        "(() => { const e = document.getElementById('login-error'); return !e.hidden && e.textContent; })()",
    );
    msg.as_str().unwrap_or_default().to_owned()
}

fn wait_connected(page: &mut Page) {
    page.wait_for(
        "the page to connect",
        Duration::from_secs(15),
        "document.body.dataset.conn === 'connected'",
    );
}

/// Opens the page, signs in with `token` by typing it, and waits for "connected".
fn sign_in(page: &mut Page, port: u16, token: &str) {
    open_sign_in(page, port);
    type_secret(page, token);
    wait_connected(page);
}

/// Types `text` into the composer and sends it with Enter.
fn send(page: &mut Page, text: &str) {
    page.focus("#input");
    page.insert_text(text);
    page.press_enter();
}

/// The text of the newest assistant bubble once it is done.
const LAST_REPLY_DONE: &str = "(() => { const m = [...document.querySelectorAll('.msg.assistant')].pop(); \
     return m && !m.classList.contains('streaming') ? m.querySelector('.text').textContent : null; })()";

/// No error is on screen: no failed bubble, no notice, no sign-in error.
const NO_ERROR_SHOWN: &str = "document.querySelectorAll('.msg.failed').length === 0 \
     && document.getElementById('notice').hidden && document.getElementById('login-error').hidden";

#[test]
fn the_page_loads_clean_takes_a_token_and_streams_the_reply() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let token = home.token();
    fake.push(
        Reply::text_chunks(["Hel", "lo ", "from ", "molt"]).interval(Duration::from_millis(30)),
    );

    let browser = Chromium::launch();
    let mut page = browser.open(1280, 800);
    sign_in(&mut page, home.port, &token);
    page.wait_for(
        "the session list",
        Duration::from_secs(10),
        "document.querySelectorAll('#sessions button').length > 0 || document.getElementById('session-title').textContent === 'main'",
    );
    // The page watches its own reply grow: record every text the bubble showed.
    page.eval(
        "window.__texts = []; new MutationObserver(() => { const m = [...document.querySelectorAll('.msg.assistant .text')].pop(); \
         if (m) window.__texts.push(m.textContent); }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true}); true",
    );
    send(&mut page, "hello");
    let reply = page.wait_for("the reply", Duration::from_secs(20), LAST_REPLY_DONE);
    assert_eq!(reply, "Hello from molt");
    let texts = page.eval("window.__texts");
    let partial = texts
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            let t = t.as_str().unwrap_or("");
            !t.is_empty() && t != "Hello from molt"
        })
        .count();
    assert!(partial > 0, "the reply streamed in parts: {texts}");
    assert_eq!(
        page.eval("document.querySelector('.msg.user .text').textContent"),
        "hello"
    );
    assert_eq!(page.eval(NO_ERROR_SHOWN), true);
    // The token is kept for the next visit, in this browser only.
    assert_eq!(
        page.eval("localStorage.getItem('molt.webchat.token')"),
        token.as_str()
    );
    page.screenshot(&artifact("reply-1280"));
    assert_no_problems(&mut page);
    // A reload signs in by itself and shows the conversation from history.
    page.navigate(&format!("http://127.0.0.1:{}/chat", home.port));
    page.wait_for(
        "the history after a reload",
        Duration::from_secs(15),
        "document.body.dataset.conn === 'connected' && [...document.querySelectorAll('.msg.assistant .text')].some(e => e.textContent === 'Hello from molt')",
    );
    assert_no_problems(&mut page);
    // The token never reaches the gateway's logs.
    assert!(
        !home.stderr_log().contains(&token),
        "the gateway log holds the token"
    );
}

#[test]
fn a_handover_mid_stream_shows_restarting_then_the_whole_reply() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let token = home.token();
    let chunks: Vec<String> = (0..24).map(|i| format!("w{i:02} ")).collect();
    let full = chunks.concat();
    fake.push(Reply::text_chunks(chunks).interval(Duration::from_millis(100)));
    let old_pid = readyz_pid(home.port).unwrap();

    let browser = Chromium::launch();
    let mut page = browser.open(1280, 800);
    sign_in(&mut page, home.port, &token);
    // Every state the status indicator shows, in order.
    page.eval(
        "window.__states = []; const s = document.getElementById('status'); \
         new MutationObserver(() => window.__states.push(s.dataset.state)).observe(s, {attributes: true, childList: true, characterData: true, subtree: true}); true",
    );
    send(&mut page, "stream please");
    page.wait_for(
        "part of the reply",
        Duration::from_secs(20),
        "(() => { const m = document.querySelector('.msg.assistant.streaming .text'); return m && m.textContent.length > 0; })()",
    );
    wait_for("five chunks out", Duration::from_secs(20), || {
        (fake.chunks_sent() >= 6).then_some(())
    });
    // SAFETY: kill(2) on the gateway this test started.
    unsafe { libc::kill(old_pid as i32, libc::SIGHUP) };

    let reply = page.wait_for("the whole reply", Duration::from_secs(30), LAST_REPLY_DONE);
    assert_eq!(reply, full.as_str());
    page.wait_for(
        "connected again",
        Duration::from_secs(10),
        "document.body.dataset.conn === 'connected'",
    );
    let states: Vec<String> = serde_json::from_value(page.eval("window.__states")).unwrap();
    println!("status indicator states: {states:?}");
    assert!(
        states.iter().any(|s| s == "restarting"),
        "the page showed the restart: {states:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("connected"));
    assert_eq!(page.eval(NO_ERROR_SHOWN), true, "no error on screen");
    assert_eq!(
        page.eval("document.querySelectorAll('.msg.assistant').length"),
        1,
        "one reply, not a duplicate"
    );
    assert_ne!(readyz_pid(home.port), Some(old_pid), "a successor serves");
    assert_eq!(fake.request_count(), 1, "the model was asked once");
    page.screenshot(&artifact("after-handover-1280"));
    assert_no_problems(&mut page);
}

#[test]
fn a_wrong_token_is_refused_with_a_clear_message() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let token = home.token();
    let browser = Chromium::launch();
    let mut page = browser.open(390, 844);
    open_sign_in(&mut page, home.port);
    let msg = refused(&mut page, "not-the-token");
    assert!(msg.contains("Wrong token"), "{msg}");
    assert_eq!(page.eval("document.getElementById('login').open"), true);
    assert_eq!(
        page.eval("localStorage.getItem('molt.webchat.token')"),
        json!(null),
        "a refused token is not kept"
    );
    assert_eq!(page.eval("document.body.dataset.conn"), "signed-out");
    page.screenshot(&artifact("wrong-token-390"));
    // The right one then works.
    type_secret(&mut page, &token);
    wait_connected(&mut page);
    assert_no_problems(&mut page);
}

#[test]
fn a_password_gateway_asks_for_its_password_and_an_open_one_for_nothing() {
    const PASSWORD: &str = "correct horse 7f3e";
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(
        &fake,
        &format!("[gateway.auth]\nmode = \"password\"\npassword = \"{PASSWORD}\"\n"),
    );
    let _gw = home.start();
    fake.push(Reply::text("Signed in with a password."));

    let browser = Chromium::launch();
    let mut page = browser.open(390, 844);
    open_sign_in(&mut page, home.port);
    assert_eq!(
        page.eval("document.getElementById('token-label').textContent"),
        "Gateway password",
        "the page asks for what the gateway checks"
    );
    assert_eq!(
        page.eval("document.documentElement.outerHTML.includes('correct horse')"),
        false,
        "the page never carries the password"
    );
    let msg = refused(&mut page, "wrong horse");
    assert!(msg.contains("Wrong password"), "{msg}");
    type_secret(&mut page, PASSWORD);
    wait_connected(&mut page);
    send(&mut page, "hello");
    let reply = page.wait_for("the reply", Duration::from_secs(20), LAST_REPLY_DONE);
    assert_eq!(reply, "Signed in with a password.");
    page.screenshot(&artifact("password-390"));
    assert_no_problems(&mut page);
    drop(page);

    // auth.mode = "none" (loopback only): no dialog, no sign-out, straight to the chat.
    let open = home_with(&fake, "[gateway.auth]\nmode = \"none\"\n");
    let _gw2 = open.start();
    let mut page = browser.open(1280, 800);
    page.navigate(&format!("http://127.0.0.1:{}/", open.port));
    page.wait_for(
        "connected without a secret",
        Duration::from_secs(15),
        "document.body.dataset.conn === 'connected'",
    );
    assert_eq!(page.eval("document.getElementById('login').open"), false);
    assert_eq!(page.eval("document.getElementById('signout').hidden"), true);
    assert_no_problems(&mut page);
}

#[test]
fn cross_origin_websockets_are_refused_and_the_page_carries_its_policy() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(
        &fake,
        "[gateway.control_ui]\nallowed_origins = [\"https://chat.example.com\"]\n",
    );
    let _gw = home.start();
    let port = home.port;
    for path in ["/", "/chat", "/app.js", "/app.css"] {
        let (status, head) = raw_http(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self';"),
            "{path}: {head}"
        );
        assert!(head.contains("frame-ancestors 'none'"), "{path}: {head}");
        assert!(!head.contains("unsafe-inline"), "{path}: {head}");
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{path}: {head}"
        );
    }
    let (status, _) = raw_http(port, &upgrade_request(port, Some("http://evil.example")));
    assert_eq!(status, 403, "a foreign origin is refused");
    let (status, _) = raw_http(
        port,
        &upgrade_request(port, Some(&format!("http://127.0.0.1:{}", port + 1))),
    );
    assert_eq!(status, 403, "another port is another origin");
    for ok in [
        None,
        Some(format!("http://127.0.0.1:{port}")),
        Some("https://chat.example.com".into()),
    ] {
        let (status, head) = raw_http(port, &upgrade_request(port, ok.as_deref()));
        assert_eq!(status, 101, "origin {ok:?}: {head}");
    }
    assert!(
        home.stderr_log().contains("allowed_origins"),
        "the refusal is logged with its fix"
    );
}

#[test]
fn the_page_follows_its_config_off_and_under_a_base_path() {
    let fake = FakeModel::start_with_key(KEY);
    let off = home_with(&fake, "[gateway.control_ui]\nenabled = false\n");
    let gw = off.start();
    assert_eq!(http_status(off.port, "/"), Some(404));
    assert_eq!(http_status(off.port, "/chat"), Some(404));
    drop(gw);

    let moved = home_with(&fake, "[gateway.control_ui]\nbase_path = \"/molt\"\n");
    let _gw = moved.start();
    assert_eq!(http_status(moved.port, "/"), Some(404));
    assert_eq!(http_status(moved.port, "/molt"), Some(308));
    for p in ["/molt/", "/molt/chat", "/molt/app.js"] {
        assert_eq!(http_status(moved.port, p), Some(200), "{p}");
    }
    let browser = Chromium::launch();
    let mut page = browser.open(1280, 800);
    page.navigate(&format!("http://127.0.0.1:{}/molt/chat", moved.port));
    type_secret(&mut page, &moved.token());
    wait_connected(&mut page);
    assert_no_problems(&mut page);

    let bad = home_with(&fake, "[gateway.control_ui]\nbase_path = \"molt\"\n");
    let out = bad.cli(&["gateway", "run"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.control_ui.base_path"), "{err}");
}

#[test]
fn the_layout_fits_a_phone_and_a_desktop() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let token = home.token();
    let long = "a-very-long-word-without-spaces-".repeat(8);
    fake.push(Reply::text(format!("Here is a long line: {long}")));
    let browser = Chromium::launch();
    let mut page = browser.open(390, 844);
    sign_in(&mut page, home.port, &token);
    send(&mut page, "something long");
    page.wait_for("the reply", Duration::from_secs(20), LAST_REPLY_DONE);
    for (width, height) in [(390, 844), (1280, 800)] {
        page.viewport(width, height);
        let m = page.wait_for(
            "the layout to settle",
            Duration::from_secs(5),
            &format!("window.innerWidth === {width} && (() => {{ const c = document.getElementById('composer').getBoundingClientRect(); \
               const side = document.getElementById('sidebar').getBoundingClientRect(); \
               return {{ scrollWidth: document.scrollingElement.scrollWidth, inner: window.innerWidth, \
                 composerTop: c.top, composerBottom: c.bottom, composerRight: c.right, innerHeight: window.innerHeight, \
                 sidebarVisible: getComputedStyle(document.getElementById('sidebar')).visibility === 'visible' && side.right > 0, \
                 menuVisible: getComputedStyle(document.getElementById('menu')).display !== 'none', \
                 logOverflow: document.getElementById('log').scrollWidth - document.getElementById('log').clientWidth }}; }})()"),
        );
        println!("layout at {width}px: {m}");
        assert!(
            m["scrollWidth"].as_f64() <= m["inner"].as_f64(),
            "no horizontal overflow at {width}px: {m}"
        );
        assert_eq!(
            m["logOverflow"], 0,
            "the conversation wraps at {width}px: {m}"
        );
        let (top, bottom, right) = (
            m["composerTop"].as_f64().unwrap(),
            m["composerBottom"].as_f64().unwrap(),
            m["composerRight"].as_f64().unwrap(),
        );
        assert!(
            top >= 0.0 && bottom <= m["innerHeight"].as_f64().unwrap() && right <= width as f64,
            "the composer is on screen at {width}px: {m}"
        );
        if width < 700 {
            assert_eq!(m["sidebarVisible"], false, "{m}");
            assert_eq!(m["menuVisible"], true, "{m}");
        } else {
            assert_eq!(m["sidebarVisible"], true, "{m}");
            assert_eq!(m["menuVisible"], false, "{m}");
        }
        page.screenshot(&artifact(&format!("layout-{width}")));
    }
    // Dark mode follows the system's preference.
    let background = "getComputedStyle(document.body).backgroundColor";
    let light = page.eval(background);
    page.call(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    let dark = page.eval(background);
    assert_ne!(light, dark, "the page has a dark mode");
    assert_eq!(dark, "rgb(18, 20, 19)");
    page.screenshot(&artifact("dark-1280"));
    page.call(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}),
    );
    // On a phone the session list opens from the menu button and closes with Escape.
    page.viewport(390, 844);
    page.click("#menu");
    page.wait_for(
        "the session list to open",
        Duration::from_secs(5),
        "document.getElementById('menu').getAttribute('aria-expanded') === 'true' && document.getElementById('sidebar').contains(document.activeElement)",
    );
    page.screenshot(&artifact("sessions-390"));
    page.call(
        "Input.dispatchKeyEvent",
        json!({"type": "keyDown", "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27}),
    );
    page.call(
        "Input.dispatchKeyEvent",
        json!({"type": "keyUp", "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27}),
    );
    page.wait_for(
        "Escape to close the list and return focus to the menu button",
        Duration::from_secs(5),
        "document.getElementById('menu').getAttribute('aria-expanded') === 'false' && document.activeElement === document.getElementById('menu')",
    );
    assert_no_problems(&mut page);
}

#[test]
fn tool_calls_fold_out_turns_stop_and_sessions_come_and_go() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let token = home.token();
    fake.push(Reply::tool_call(
        "call_1",
        "exec",
        json!({"command": "echo hello-from-tool"}),
    ));
    fake.push(Reply::text("The tool said hello."));
    let browser = Chromium::launch();
    let mut page = browser.open(1280, 800);
    sign_in(&mut page, home.port, &token);

    // A tool call: a collapsed item with its output inside, live and again from history.
    send(&mut page, "run the tool");
    let reply = page.wait_for("the reply", Duration::from_secs(20), LAST_REPLY_DONE);
    assert_eq!(reply, "The tool said hello.");
    let tool = "(() => { const d = document.querySelector('details.tool'); return d && { open: d.open, \
        summary: d.querySelector('summary').textContent, output: d.querySelector('.output').textContent }; })()";
    let t = page.wait_for(
        "the tool item's output",
        Duration::from_secs(10),
        &format!("(() => {{ const t = {tool}; return t && t.output ? t : null; }})()"),
    );
    assert_eq!(t["open"], false, "collapsed at first: {t}");
    assert!(t["summary"].as_str().unwrap().contains("exec"), "{t}");
    assert!(
        t["output"].as_str().unwrap().contains("hello-from-tool"),
        "{t}"
    );
    page.click("details.tool summary");
    page.wait_for(
        "the tool item to open",
        Duration::from_secs(5),
        "document.querySelector('details.tool').open",
    );
    page.screenshot(&artifact("tool-1280"));
    page.navigate(&format!("http://127.0.0.1:{}/", home.port));
    page.wait_for(
        "the tool output from history",
        Duration::from_secs(15),
        "document.body.dataset.conn === 'connected' && [...document.querySelectorAll('details.tool .output')].some(e => e.textContent.includes('hello-from-tool'))",
    );

    // Stop: a slow reply is cut short and marked stopped, not failed.
    let slow: Vec<String> = (0..50).map(|i| format!("s{i} ")).collect();
    fake.push(Reply::text_chunks(slow).interval(Duration::from_millis(100)));
    send(&mut page, "talk slowly");
    page.wait_for(
        "the slow reply to start",
        Duration::from_secs(20),
        "(() => { const m = document.querySelector('.msg.assistant.streaming .text'); return m && m.textContent.length > 0 && !document.getElementById('abort').hidden; })()",
    );
    page.click("#abort");
    page.wait_for(
        "the turn to stop",
        Duration::from_secs(15),
        "(() => { const m = [...document.querySelectorAll('.msg.assistant')].pop(); return m.classList.contains('stopped') && document.getElementById('abort').hidden; })()",
    );
    assert_eq!(page.eval(NO_ERROR_SHOWN), true);

    // Sessions: a new one appears in the list and is selected; reset empties it; delete
    // removes it and goes back to main.
    page.click("#new-session");
    let key = page.wait_for(
        "the new session",
        Duration::from_secs(10),
        "(() => { const b = document.querySelector('#sessions button[aria-current=\"true\"]'); return b && b.dataset.key.includes('web-') ? b.dataset.key : null; })()",
    );
    let key = key.as_str().unwrap().to_owned();
    assert_eq!(page.eval("document.querySelectorAll('.msg').length"), 0);
    fake.push(Reply::text("fresh"));
    send(&mut page, "hi there");
    page.wait_for("the reply", Duration::from_secs(20), LAST_REPLY_DONE);
    let listed =
        page.eval("[...document.querySelectorAll('#sessions .meta')].map(e => e.textContent)");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.as_str().unwrap().starts_with("main")),
        "each session names its agent: {listed}"
    );
    page.click("#reset");
    page.click("#reset");
    page.wait_for(
        "the reset",
        Duration::from_secs(10),
        "![...document.querySelectorAll('.msg .text')].some(e => e.textContent === 'fresh')",
    );
    page.click("#delete");
    page.click("#delete");
    page.wait_for(
        "the deletion",
        Duration::from_secs(10),
        &format!(
            "![...document.querySelectorAll('#sessions button')].some(b => b.dataset.key === {}) \
             && document.getElementById('session-title').textContent === 'main'",
            serde_json::to_string(&key).unwrap()
        ),
    );
    assert_no_problems(&mut page);
}

/// The "no errors" checks above could pass by seeing nothing: this shows the harness does
/// see a console error, an uncaught exception and a script the page's CSP blocks.
#[test]
fn the_harness_sees_console_errors_exceptions_and_csp_violations() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let browser = Chromium::launch();
    let mut page = browser.open(1280, 800);
    page.navigate(&format!("http://127.0.0.1:{}/", home.port));
    assert!(page.problems().is_empty(), "{:?}", page.problems());
    page.eval(
        "console.error('first'); setTimeout(() => { throw new Error('second'); }, 0); \
         const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; document.body.append(s); true",
    );
    let found = |p: &[String], what: &str| p.iter().any(|x| x.contains(what));
    let mut problems = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !(found(&problems, "first")
            && found(&problems, "second")
            && found(&problems, "Content Security Policy"))
    {
        page.pump(Duration::from_millis(50));
        problems = page.problems();
    }
    assert!(found(&problems, "first"), "{problems:?}");
    assert!(found(&problems, "second"), "{problems:?}");
    assert!(
        found(&problems, "Content Security Policy"),
        "the inline script was refused: {problems:?}"
    );
    assert_eq!(
        page.eval("window.__ran === undefined"),
        true,
        "and did not run"
    );
}

/// What the newest reply bubble rendered, as data: the elements Markdown made and whether
/// anything script-like got through.
const REPLY_SHAPE: &str = "(() => { const t = [...document.querySelectorAll('.msg.assistant')].pop().querySelector('.text'); \
     const all = (sel) => [...t.querySelectorAll(sel)].map((e) => e.textContent); \
     return { strong: all('strong'), em: all('em'), code: all(':not(pre) > code'), pre: all('pre > code'), \
       links: [...t.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.textContent, a.rel]), \
       elements: [...t.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()).filter((n, i, a) => a.indexOf(n) === i).sort(), \
       text: t.textContent, pwned: window.__pwned === 1 }; })()";

#[test]
fn replies_render_a_safe_markdown_subset_live_and_from_history() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let token = home.token();
    let reply = "Run `ls -la`, then **check** the *output*:\n\
                 ```sh\n\
                 echo \"<b>not bold</b>\"\n\
                 ```\n\
                 Docs: [the guide](https://example.com/guide) or https://example.org/faq.\n\
                 Not a link: [click](javascript:window.__pwned=1)\n\
                 <img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=1</script>\n\
                 2 * 3 * 4 stays as it is.";
    // Streamed in pieces that split the markup, so deltas re-render partial Markdown.
    let pieces: Vec<String> = reply
        .as_bytes()
        .chunks(7)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    fake.push(Reply::text_chunks(pieces).interval(Duration::from_millis(10)));
    let browser = Chromium::launch();
    let mut page = browser.open(390, 844);
    sign_in(&mut page, home.port, &token);
    send(&mut page, "show me");
    page.wait_for("the reply", Duration::from_secs(20), LAST_REPLY_DONE);

    let check = |shape: &serde_json::Value| {
        assert_eq!(shape["strong"], json!(["check"]), "{shape}");
        assert_eq!(shape["em"], json!(["output"]), "{shape}");
        assert_eq!(shape["code"], json!(["ls -la"]), "{shape}");
        assert_eq!(shape["pre"], json!(["echo \"<b>not bold</b>\""]), "{shape}");
        assert_eq!(
            shape["links"],
            json!([
                [
                    "https://example.com/guide",
                    "the guide",
                    "noopener noreferrer"
                ],
                [
                    "https://example.org/faq",
                    "https://example.org/faq",
                    "noopener noreferrer"
                ]
            ]),
            "only http(s) URLs become links: {shape}"
        );
        assert_eq!(
            shape["elements"],
            json!(["a", "code", "em", "pre", "strong"]),
            "no other element was made from the text: {shape}"
        );
        let text = shape["text"].as_str().unwrap();
        assert!(text.contains("<script>window.__pwned=1</script>"), "{text}");
        assert!(
            text.contains("[click](javascript:window.__pwned=1)"),
            "{text}"
        );
        assert!(text.contains("2 * 3 * 4 stays as it is."), "{text}");
        assert_eq!(shape["pwned"], false);
    };
    check(&page.eval(REPLY_SHAPE));
    page.screenshot(&artifact("markdown-390"));

    // The same from history, after a reload.
    page.navigate(&format!("http://127.0.0.1:{}/", home.port));
    wait_connected(&mut page);
    check(&page.eval(REPLY_SHAPE));
    // Nothing overflows the phone width: a long code line scrolls inside its block.
    assert_eq!(
        page.eval("document.scrollingElement.scrollWidth <= window.innerWidth"),
        true
    );
    assert_no_problems(&mut page);
}

#[test]
fn history_pages_back_as_the_person_scrolls_up() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let _gw = home.start();
    let token = home.token();
    // 120 notes in `main`, added over the protocol without the model.
    fake.push(Reply::text("first reply"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = molt_client::Client::connect(home.client_options())
            .await
            .unwrap();
        let r = c
            .call(
                "chat.send",
                Some(json!({"sessionKey": "main", "message": "start", "idempotencyKey": "page-0"})),
            )
            .await
            .unwrap();
        assert_eq!(r["runId"], "page-0");
        let w = c
            .call(
                "agent.wait",
                Some(json!({"runId": "page-0", "timeoutMs": 20000})),
            )
            .await
            .unwrap();
        assert_eq!(w["status"], "ok", "{w}");
        for i in 0..118 {
            c.call(
                "chat.inject",
                Some(json!({"sessionKey": "main", "message": format!("note {i:03}")})),
            )
            .await
            .unwrap();
        }
    });
    let browser = Chromium::launch();
    let mut page = browser.open(390, 844);
    sign_in(&mut page, home.port, &token);
    let count = "document.querySelectorAll('#log .msg').length";
    let first = page.wait_for("the newest page", Duration::from_secs(10), count);
    assert_eq!(first, 50, "one page of history at first");
    assert_eq!(
        page.eval("[...document.querySelectorAll('#log .msg .text')].pop().textContent.endsWith('note 117')"),
        true
    );
    // Scroll to the top, twice: every message arrives, oldest first, none twice.
    for expect in [100, 120] {
        page.eval("document.getElementById('log').scrollTop = 0; true");
        page.wait_for(
            "an older page",
            Duration::from_secs(10),
            &format!("{count} === {expect}"),
        );
    }
    assert_eq!(
        page.eval("document.querySelector('#log .msg .text').textContent"),
        "start"
    );
    let texts: Vec<String> = serde_json::from_value(
        page.eval("[...document.querySelectorAll('#log .msg .text')].map(e => e.textContent)"),
    )
    .unwrap();
    let notes: Vec<&String> = texts.iter().filter(|t| t.contains("note ")).collect();
    assert_eq!(notes.len(), 118);
    assert!(
        notes.windows(2).all(|w| w[0] < w[1]),
        "notes in order, none twice"
    );
    assert_no_problems(&mut page);
}

#[test]
fn after_a_crash_the_page_reconnects_once_the_gateway_is_back() {
    let fake = FakeModel::start_with_key(KEY);
    let home = home_with(&fake, "");
    let gw = home.start();
    let token = home.token();
    let browser = Chromium::launch();
    let mut page = browser.open(1280, 800);
    sign_in(&mut page, home.port, &token);
    // SIGKILL: no `shutdown` event, no close frame.
    drop(gw);
    page.wait_for(
        "the page to notice",
        Duration::from_secs(10),
        "document.body.dataset.conn === 'reconnecting'",
    );
    let _gw = home.start();
    page.wait_for(
        "the page to reconnect by itself",
        Duration::from_secs(30),
        "document.body.dataset.conn === 'connected'",
    );
    assert_eq!(page.eval(NO_ERROR_SHOWN), true);
    // Connects refused while the gateway was down are the only errors the browser logs.
    let problems: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| !p.contains("WebSocket connection to"))
        .collect();
    assert!(
        problems.is_empty(),
        "the page reported errors: {problems:?}"
    );
}

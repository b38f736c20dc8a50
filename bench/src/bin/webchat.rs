//! The web chat page: its weight (bytes transferred for one load, from Chromium's Network
//! events, and the bodies fetched over raw HTTP), and the time from navigation to
//! "connected" (WebSocket open, handshake, session list and history loaded) on loopback,
//! over 50 loads in a real headless Chromium.

use std::time::Duration;

use molt_bench::{bench_home, http_get, ms, percentile, print_header, start};
use molt_test_support::Chromium;
use serde_json::{Value, json};

const LOADS: usize = 50;
/// The page's own files, as the page references them.
const FILES: [&str; 4] = ["/", "/app.js", "/app.css", "/icon.svg"];

/// Recorded in every new document before its own scripts run: the `performance.now()` (ms
/// since navigation start) at which the page first says it is connected, and for the
/// breakdown, when its WebSocket opened and when `hello-ok` arrived.
const WATCH: &str = "new MutationObserver((_, o) => { if (document.body && document.body.dataset.conn === 'connected') { \
    window.__connectedAt = performance.now(); o.disconnect(); } }).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-conn']}); \
    const W = window.WebSocket; window.WebSocket = function (u, p) { const ws = new W(u, p); \
      ws.addEventListener('open', () => { window.__wsOpenAt = performance.now(); }); \
      ws.addEventListener('message', (e) => { if (!window.__helloAt && e.data.includes('hello-ok')) window.__helloAt = performance.now(); }); \
      return ws; }; window.WebSocket.OPEN = W.OPEN;";

fn main() {
    print_header("webchat");
    let home = bench_home(None);
    let _gw = start(&home);
    let port = home.port;
    let token = home.token();

    // The bodies, over plain HTTP.
    let mut body_bytes = 0;
    for f in FILES {
        let (status, body) = http_get(port, f).expect("GET a page file");
        assert_eq!(status, 200, "GET {f}");
        body_bytes += body.len();
    }

    let browser = Chromium::launch();
    let mut page = browser.open(1280, 800);
    page.call("Network.enable", json!({}));
    page.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": WATCH}),
    );
    let url = format!("http://127.0.0.1:{port}/");
    page.navigate(&url);
    page.eval(&format!(
        "localStorage.setItem('molt.webchat.token', {}); true",
        serde_json::to_string(&token).unwrap_or_default()
    ));

    let mut connected = Vec::with_capacity(LOADS);
    let mut parts: [Vec<Duration>; 3] = Default::default();
    let mut transferred = Vec::with_capacity(LOADS);
    for i in 0..LOADS {
        page.take_events();
        page.navigate(&url);
        let at = page.wait_for(
            "connected",
            Duration::from_secs(20),
            "window.__connectedAt || null",
        );
        connected.push(Duration::from_secs_f64(at.as_f64().unwrap_or(0.0) / 1000.0));
        let marks = page.eval(
            "[performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd, window.__wsOpenAt, window.__helloAt]",
        );
        for (k, part) in parts.iter_mut().enumerate() {
            part.push(Duration::from_secs_f64(
                marks[k].as_f64().unwrap_or(0.0) / 1000.0,
            ));
        }
        // Bytes of every HTTP response of this load (headers included); the WebSocket
        // has no loadingFinished.
        let events = page.take_events();
        let bytes: f64 = events
            .iter()
            .filter(|e| e["method"] == "Network.loadingFinished")
            .map(|e: &Value| e["params"]["encodedDataLength"].as_f64().unwrap_or(0.0))
            .sum();
        let requests = events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .count();
        if i == 0 {
            println!(
                "# first measured load: {requests} HTTP requests, {bytes:.0} bytes transferred"
            );
        }
        transferred.push(bytes as u64);
    }
    let problems = page.problems();
    assert!(
        problems.is_empty(),
        "the page reported errors: {problems:?}"
    );
    connected.sort();
    transferred.sort();
    println!(
        "webchat_page_weight body_bytes={body_bytes} transferred_bytes_p50={} transferred_bytes_max={} goal_bytes={}",
        percentile(&transferred, 50.0),
        transferred[transferred.len() - 1],
        100 * 1024
    );
    for (name, part) in ["dom_content_loaded", "websocket_open", "hello_ok"]
        .iter()
        .zip(parts.iter_mut())
    {
        part.sort();
        println!(
            "# breakdown: navigation to {name} p50_ms={}",
            ms(percentile(part, 50.0))
        );
    }
    println!(
        "webchat_connect p50_ms={} p99_ms={} max_ms={} n={LOADS}",
        ms(percentile(&connected, 50.0)),
        ms(percentile(&connected, 99.0)),
        ms(connected[connected.len() - 1]),
    );
}

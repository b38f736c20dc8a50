//! Load: 1,000 concurrent authenticated connections on loopback, each sending `health` in a
//! bounded loop, all in one tokio runtime. Zero errors allowed; prints the request rate and
//! the gateway's resident memory with every connection open.

mod common;

use std::time::{Duration, Instant};

use common::*;
use molt_client::{Client, ClientError, ClientOptions};
use serde_json::json;

const TOKEN: &str = "load-test-token";
const CONNECTIONS: usize = 1000;
const REQUESTS_PER_CONNECTION: usize = 20;
/// Connections opened at once, so the listen backlog never overflows.
const CONNECT_BATCH: usize = 100;

fn options(port: u16) -> ClientOptions {
    let mut o = ClientOptions::new(format!("ws://127.0.0.1:{port}"));
    o.token = Some(TOKEN.into());
    o.identity_file = None;
    o.scopes = vec!["operator.read".into()];
    o.request_timeout = Duration::from_secs(30);
    o
}

#[test]
fn a_thousand_authenticated_connections_send_health_without_errors() {
    let (nofile, _) = raise_nofile_limit();
    assert!(
        nofile >= (CONNECTIONS + 256) as libc::rlim_t,
        "the open-file limit ({nofile}) is too low for {CONNECTIONS} connections"
    );
    let home = Home::new(
        MOLT,
        &format!("[gateway.auth]\nmode = \"token\"\ntoken = \"{TOKEN}\"\n"),
    );
    let gw = home.start();
    let port = gw.port;
    let rss_idle = gw.rss_kib();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // Open all connections, in batches, and keep them.
        let t0 = Instant::now();
        let mut clients: Vec<Client> = Vec::with_capacity(CONNECTIONS);
        let mut connect_errors: Vec<ClientError> = Vec::new();
        let mut batch_times = Vec::new();
        while clients.len() + connect_errors.len() < CONNECTIONS {
            let tb = Instant::now();
            let n = CONNECT_BATCH.min(CONNECTIONS - clients.len() - connect_errors.len());
            let batch: Vec<_> = (0..n)
                .map(|_| tokio::spawn(Client::connect(options(port))))
                .collect();
            for h in batch {
                match h.await.expect("connect task") {
                    Ok(c) => clients.push(c),
                    Err(e) => connect_errors.push(e),
                }
            }
            batch_times.push(tb.elapsed());
        }
        let connect_time = t0.elapsed();
        assert!(
            connect_errors.is_empty(),
            "{} of {CONNECTIONS} connections failed; first: {}",
            connect_errors.len(),
            connect_errors[0]
        );
        let rss_connected = gw.rss_kib();
        // hello-ok carries the whole presence list, so it grows with the connection count.
        let last_hello_bytes = clients
            .last()
            .map(|c| c.hello().to_string().len())
            .unwrap_or(0);

        // Every connection sends its requests; all stay open until all are done.
        let t1 = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    for _ in 0..REQUESTS_PER_CONNECTION {
                        match c.call_once("health", Some(json!({}))).await {
                            Ok(p) if p["ok"] == true => {}
                            Ok(p) => errors.push(format!("health not ok: {p}")),
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                    (c, errors)
                })
            })
            .collect();
        let mut clients = Vec::with_capacity(CONNECTIONS);
        let mut errors = Vec::new();
        for t in tasks {
            let (c, e) = t.await.expect("request task");
            clients.push(c);
            errors.extend(e);
        }
        let elapsed = t1.elapsed();
        let total = CONNECTIONS * REQUESTS_PER_CONNECTION;

        // Still every connection open: the gateway counts them, and this is its footprint.
        let status = clients[0]
            .call_once("status", Some(json!({})))
            .await
            .expect("status");
        let rss_open = gw.rss_kib();
        println!(
            "load: {CONNECTIONS} connections opened in {connect_time:?} (batches of \
             {CONNECT_BATCH}: first {:?}, last {:?})",
            batch_times[0],
            batch_times[batch_times.len() - 1]
        );
        println!("load: the last hello-ok payload was {last_hello_bytes} bytes");
        println!(
            "load: {total} health requests in {elapsed:?} = {:.0} requests/s, {} errors",
            total as f64 / elapsed.as_secs_f64(),
            errors.len()
        );
        println!(
            "load: gateway VmRSS {rss_idle} KiB idle, {rss_connected} KiB with {CONNECTIONS} \
             connections, {rss_open} KiB with {CONNECTIONS} connections open after the requests"
        );
        assert!(
            errors.is_empty(),
            "{} of {total} requests failed; first: {}",
            errors.len(),
            errors[0]
        );
        assert_eq!(status["connections"], CONNECTIONS, "{status}");
        for c in clients {
            c.close().await;
        }
    });
}

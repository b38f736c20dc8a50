//! web_fetch against a real HTTP server on loopback: refused by default (IP literals and
//! names that resolve to loopback), allowed when configured, HTML turned into text,
//! caps, redirects and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use molt_tools::fetch::{self, Extract, FetchErrorKind, FetchPolicy, Fetcher, GuardedResolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAGE: &str = "<!doctype html><html><head><title>Molt test</title>\
    <script>document.write('no')</script><style>p { color: red }</style></head>\
    <body><h1>Hello</h1><p>First &amp; <a href=\"/next\">second</a>.</p>\
    <ul><li>one</li><li>two</li></ul></body></html>";

/// Starts the test server on `addr` and returns its address.
async fn server(addr: &str) -> Option<SocketAddr> {
    let listener = TcpListener::bind(addr).await.ok()?;
    let local = listener.local_addr().ok()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    Some(local)
}

async fn handle(mut s: TcpStream) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&req);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, headers, body): (&str, Vec<(&str, String)>, Vec<u8>) = match path.as_str() {
        "/" => (
            "200 OK",
            vec![("Content-Type", "text/html; charset=utf-8".into())],
            PAGE.into(),
        ),
        "/plain" => (
            "200 OK",
            vec![("Content-Type", "text/plain".into())],
            b"<b>not html</b>\n".to_vec(),
        ),
        "/big" => (
            "200 OK",
            vec![("Content-Type", "text/plain".into())],
            vec![b'a'; 300_000],
        ),
        "/png" => (
            "200 OK",
            vec![("Content-Type", "image/png".into())],
            b"\x89PNG\r\n\x1a\n\0\0\0".to_vec(),
        ),
        "/redirect" => ("302 Found", vec![("Location", "/plain".into())], vec![]),
        "/loop" => ("302 Found", vec![("Location", "/loop".into())], vec![]),
        "/to-file" => (
            "302 Found",
            vec![("Location", "file:///etc/passwd".into())],
            vec![],
        ),
        "/slow" => {
            // Headers and part of the body, then nothing: only the timeout ends this.
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\npartial")
                .await;
            std::future::pending::<()>().await;
            return;
        }
        _ => (
            "404 Not Found",
            vec![("Content-Type", "text/plain".into())],
            b"nope".to_vec(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes()).await;
    let _ = s.write_all(&body).await;
    let _ = s.shutdown().await;
}

fn private_ok() -> FetchPolicy {
    FetchPolicy {
        allow_private: true,
        timeout: Duration::from_secs(10),
        ..FetchPolicy::default()
    }
}

#[tokio::test]
async fn loopback_is_refused_by_default() {
    let addr = server("127.0.0.1:0").await.expect("server");
    let port = addr.port();
    let policy = FetchPolicy::default();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://2130706433:{port}/"),
        // A name: refused by the resolver, after DNS.
        format!("http://localhost:{port}/"),
    ] {
        let e = fetch::fetch(&url, &policy, Extract::Text).await.err();
        let e = e.unwrap_or_else(|| panic!("{url} was fetched"));
        assert_eq!(e.kind, FetchErrorKind::Blocked, "{url}: {e}");
        assert!(e.message.contains("non-public"), "{url}: {e}");
    }
}

#[tokio::test]
async fn the_resolver_drops_disallowed_answers() {
    let e = GuardedResolver::new(false).lookup("localhost").await.err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("localhost resolves to"), "{msg}");
    assert!(msg.contains("127.0.0.1") || msg.contains("::1"), "{msg}");

    let kept = GuardedResolver::new(true)
        .lookup("localhost")
        .await
        .expect("lookup with allow_private");
    assert!(kept.iter().all(|a| a.ip().is_loopback()), "{kept:?}");
    assert!(!kept.is_empty());
}

#[tokio::test]
async fn allowed_when_configured_and_html_becomes_text() {
    let addr = server("127.0.0.1:0").await.expect("server");
    let url = format!("http://127.0.0.1:{}/", addr.port());
    let f = fetch::fetch(&url, &private_ok(), Extract::Text)
        .await
        .expect("fetch");
    assert_eq!(f.status, 200);
    assert_eq!(f.remote_addr, Some(addr));
    assert_eq!(f.url, url);
    assert_eq!(
        f.text,
        "Molt test\n\nHello\n\nFirst & second.\n\n- one\n- two"
    );
    assert!(!f.truncated);
    assert!(
        f.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/html"))
    );

    let md = fetch::fetch(&url, &private_ok(), Extract::Markdown)
        .await
        .expect("fetch");
    assert!(md.text.contains("# Hello"), "{}", md.text);
    assert!(
        md.text
            .contains(&format!("[second](http://127.0.0.1:{}/next)", addr.port())),
        "{}",
        md.text
    );

    // localhost through the resolver, allowed.
    let via_name = format!("http://localhost:{}/plain", addr.port());
    let f = fetch::fetch(&via_name, &private_ok(), Extract::Text).await;
    if let Ok(f) = f {
        assert_eq!(f.text, "<b>not html</b>\n", "text/plain passes through");
    } else if let Err(e) = f {
        // localhost may resolve to ::1 first where the server only listens on IPv4.
        assert_eq!(e.kind, FetchErrorKind::Network, "{e}");
    }
}

#[tokio::test]
async fn ipv6_loopback_when_available() {
    let Some(addr) = server("[::1]:0").await else {
        return; // No IPv6 loopback on this machine; the refusal is tested above.
    };
    let url = format!("http://[::1]:{}/plain", addr.port());
    let e = fetch::fetch(&url, &FetchPolicy::default(), Extract::Text)
        .await
        .err();
    assert!(e.is_some_and(|e| e.kind == FetchErrorKind::Blocked));
    let f = fetch::fetch(&url, &private_ok(), Extract::Text)
        .await
        .expect("fetch");
    assert_eq!(f.remote_addr, Some(addr));
}

#[tokio::test]
async fn caps_truncate() {
    let addr = server("127.0.0.1:0").await.expect("server");
    let policy = FetchPolicy {
        max_bytes: 1000,
        ..private_ok()
    };
    let f = fetch::fetch(
        &format!("http://127.0.0.1:{}/big", addr.port()),
        &policy,
        Extract::Text,
    )
    .await
    .expect("fetch");
    assert!(f.truncated);
    assert_eq!(f.text.len(), 1000);

    let policy = FetchPolicy {
        max_chars: 5,
        ..private_ok()
    };
    let f = fetch::fetch(
        &format!("http://127.0.0.1:{}/", addr.port()),
        &policy,
        Extract::Text,
    )
    .await
    .expect("fetch");
    assert!(f.truncated);
    assert_eq!(f.text, "Molt ");
}

#[tokio::test]
async fn redirects_are_followed_checked_and_capped() {
    let addr = server("127.0.0.1:0").await.expect("server");
    let fetcher = Fetcher::new(private_ok()).expect("fetcher");
    let base = format!("http://127.0.0.1:{}", addr.port());

    let f = fetcher
        .fetch(&format!("{base}/redirect"), Extract::Text)
        .await
        .expect("fetch");
    assert_eq!(f.url, format!("{base}/plain"));

    let e = fetcher
        .fetch(&format!("{base}/loop"), Extract::Text)
        .await
        .err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.kind == FetchErrorKind::TooManyRedirects),
        "{e:?}"
    );

    // A redirect to another scheme is not followed: the redirect itself is the result.
    let f = fetcher
        .fetch(&format!("{base}/to-file"), Extract::Text)
        .await
        .expect("fetch");
    assert_eq!((f.status, f.url), (302, format!("{base}/to-file")));
}

#[tokio::test]
async fn binary_is_refused_and_statuses_are_returned() {
    let addr = server("127.0.0.1:0").await.expect("server");
    let base = format!("http://127.0.0.1:{}", addr.port());
    let e = fetch::fetch(&format!("{base}/png"), &private_ok(), Extract::Text)
        .await
        .err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.kind == FetchErrorKind::Binary && e.message.contains("image/png")),
        "{e:?}"
    );
    let f = fetch::fetch(&format!("{base}/missing"), &private_ok(), Extract::Text)
        .await
        .expect("a 404 is a result");
    assert_eq!((f.status, f.text.as_str()), (404, "nope"));

    for bad in ["not a url", "file:///etc/passwd", "ftp://example.com/"] {
        let e = fetch::fetch(bad, &private_ok(), Extract::Text).await.err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.kind == FetchErrorKind::InvalidUrl),
            "{bad}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let addr = server("127.0.0.1:0").await.expect("server");
    let policy = FetchPolicy {
        timeout: Duration::from_millis(300),
        ..private_ok()
    };
    let started = std::time::Instant::now();
    let e = fetch::fetch(
        &format!("http://127.0.0.1:{}/slow", addr.port()),
        &policy,
        Extract::Text,
    )
    .await
    .err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.kind == FetchErrorKind::Timeout),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

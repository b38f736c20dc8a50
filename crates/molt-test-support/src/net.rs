use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A free loopback port (the OS picks it; we release it for the gateway).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// `GET path` on 127.0.0.1:port with a raw HTTP/1.1 request; returns (status, body).
/// `None` if the port does not accept or the answer is not HTTP.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    // Generous timeouts: tests probe gateways that are busy (floods, handovers under load),
    // and a slow answer there is a figure, not a failure.
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::with_capacity(1024);
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The status code of `GET path`; see [`http_get`].
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(status, _)| status)
}

/// The `pid` that `/readyz` reports, when it answers 200.
pub fn readyz_pid(port: u16) -> Option<i64> {
    let (status, body) = http_get(port, "/readyz")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| v["pid"].as_i64()).flatten()
}

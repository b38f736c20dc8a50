//! `fake-model-serve`: runs [`molt_fake_model::FakeModel`] as a standalone process, for scripts
//! that drive a real client (such as `scripts/openclaw-fixtures.sh` driving the real `openclaw`
//! gateway) against a scripted model on loopback.
//!
//! ```text
//! fake-model-serve [--port N] [--key KEY] [--reply TEXT] [--script FILE]
//! ```
//!
//! - `--port N`: listen on `127.0.0.1:N` instead of a free port. The library binds a free port
//!   itself, so with `--port` this process forwards `127.0.0.1:N` to it (plain TCP relay).
//! - `--key KEY`: answer 401 unless the request carries `Bearer KEY` / `x-api-key: KEY`.
//! - `--reply TEXT`: the reply to every request (default: the library's default text). An
//!   occurrence of `{n}` is replaced by the request's number, counted from 1.
//! - `--script FILE`: replies to queue first, one per line, in order; after them, `--reply`
//!   applies. A line `exec <command>` is a tool call of the `exec` tool with that command
//!   (call ids `call_1`, `call_2`, …); any other line is a text reply. Blank lines and lines
//!   starting with `#` are skipped.
//!
//! On start it prints one line, `http://127.0.0.1:<port>/v1` (the OpenAI-compatible base URL;
//! the Anthropic base is the same without `/v1`), then serves until killed. Each request is
//! logged to stderr as one line: its number, path and the last user message's first 80 chars.
#![warn(missing_docs)]

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use molt_fake_model::{FakeModel, Reply};

fn usage() -> ExitCode {
    eprintln!("usage: fake-model-serve [--port N] [--key KEY] [--reply TEXT]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut port: Option<u16> = None;
    let mut key: Option<String> = None;
    let mut reply: Option<String> = None;
    let mut script: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else {
            return usage();
        };
        match arg.as_str() {
            "--port" => match value.parse() {
                Ok(p) => port = Some(p),
                Err(_) => return usage(),
            },
            "--key" => key = Some(value),
            "--reply" => reply = Some(value),
            "--script" => match std::fs::read_to_string(&value) {
                Ok(text) => script = Some(text),
                Err(e) => {
                    eprintln!("fake-model-serve: cannot read {value}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            _ => return usage(),
        }
    }

    let model = match key {
        Some(k) => FakeModel::start_with_key(k),
        None => FakeModel::start(),
    };
    let public_port = match port {
        None => model.port(),
        Some(p) => match TcpListener::bind(("127.0.0.1", p)) {
            Ok(listener) => {
                let inner = model.port();
                std::thread::spawn(move || relay(listener, inner));
                p
            }
            Err(e) => {
                eprintln!("fake-model-serve: cannot bind 127.0.0.1:{p}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut calls = 0;
    for line in script.as_deref().unwrap_or("").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix("exec ") {
            Some(command) => {
                calls += 1;
                let input = serde_json::json!({ "command": command });
                model.push(Reply::tool_call(format!("call_{calls}"), "exec", input));
            }
            None => model.push(Reply::text(line)),
        }
    }
    println!("http://127.0.0.1:{public_port}/v1");
    let _ = io::stdout().flush();

    // Once the script is used up, keep one numbered reply queued for the next request (the
    // default, unnumbered, covers a request that arrives before the loop refills), and log.
    let text = reply.unwrap_or_else(|| molt_fake_model::DEFAULT_TEXT.to_string());
    model.set_default(Reply::text(text.replace("{n}", "?")));
    let mut seen = 0usize;
    loop {
        let next = seen + 1;
        if model.queued() == 0 {
            model.push(Reply::text(text.replace("{n}", &next.to_string())));
        }
        if model.wait_for_requests(next, Duration::from_millis(200)) {
            let requests = model.requests();
            for (i, r) in requests.iter().enumerate().skip(seen) {
                eprintln!(
                    "fake-model-serve: #{} {} {}",
                    i + 1,
                    r.path,
                    last_user(&r.body)
                );
            }
            seen = requests.len();
        }
    }
}

/// The first 80 chars of the last user message's text in an OpenAI or Anthropic body.
fn last_user(body: &serde_json::Value) -> String {
    let Some(messages) = body.get("messages").and_then(|m| m.as_array()) else {
        return String::new();
    };
    let text = messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))
        .find_map(|m| match m.get("content") {
            Some(serde_json::Value::String(s)) if !s.contains("OPENCLAW_INTERNAL_CONTEXT") => {
                Some(s.clone())
            }
            _ => None,
        })
        .unwrap_or_default();
    text.chars().take(80).collect::<String>().replace('\n', " ")
}

/// Forwards each connection on `listener` to `127.0.0.1:inner`, byte for byte.
fn relay(listener: TcpListener, inner: u16) {
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", inner)) else {
                return;
            };
            let (Ok(mut a_read), Ok(mut b_write)) = (conn.try_clone(), upstream.try_clone()) else {
                return;
            };
            let (mut b_read, mut a_write) = (upstream, conn);
            let up = std::thread::spawn(move || {
                let _ = io::copy(&mut a_read, &mut b_write);
                let _ = b_write.shutdown(std::net::Shutdown::Write);
            });
            let _ = io::copy(&mut b_read, &mut a_write);
            let _ = a_write.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
        });
    }
}

//! REST under `/api/v10`, and the WebSocket upgrade on any path.
//!
//! One handler routes by hand: every response, errors included, needs the same auth check
//! and rate-limit headers, and a WebSocket upgrade must be taken on whatever path the
//! client chose.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Posted;
use crate::clock;
use crate::gateway;
use crate::state::{RateInfo, Shared};

/// Discord's limit on a message's `content`, in characters.
const MAX_CONTENT_CHARS: usize = 2000;
/// Discord's limit on a `nonce` string, in characters.
const MAX_NONCE_CHARS: usize = 25;

/// The one handler for every request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Bytes,
) -> Response {
    if let Ok(ws) = ws {
        let query = uri.query().map(str::to_owned);
        return ws.on_upgrade(move |socket| gateway::serve(shared, socket, query));
    }
    let path = uri.path().trim_end_matches('/');
    let Some(route) = path.strip_prefix("/api/v10") else {
        return plain(
            StatusCode::NOT_FOUND,
            json!({"message": "404: Not Found", "code": 0}),
        );
    };
    let segments: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    let (bucket, major) = bucket_of(&method, &segments);
    let is_post = matches!(
        (&method, segments.as_slice()),
        (&Method::POST, ["channels", _, "messages"])
    );

    let now = Instant::now();
    let mut st = shared.lock();
    if is_post {
        st.post_attempts += 1;
        st.post_requests
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    }
    let expected = format!("Bot {}", shared.opts.token);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return plain(
            StatusCode::UNAUTHORIZED,
            json!({"message": "401: Unauthorized", "code": 0}),
        );
    }
    let key = format!("{bucket}:{major}");
    if is_post {
        if let Some(until) = st.posts_blocked_until.filter(|until| *until > now) {
            st.early_retries += 1;
            let info = RateInfo {
                limit: st.rate_limit,
                remaining: 0,
                reset_after: until - now,
            };
            return too_many(bucket, info, until - now);
        }
        if st.fail_posts > 0 {
            st.fail_posts -= 1;
            let wait = st.fail_retry_after;
            st.posts_blocked_until = Some(now + wait);
            let info = RateInfo {
                limit: st.rate_limit,
                remaining: 0,
                reset_after: wait,
            };
            return too_many(bucket, info, wait);
        }
    }
    let info = match st.take_rate(&key, now) {
        Ok(info) => info,
        Err(info) => return too_many(bucket, info, info.reset_after),
    };
    let (status, body) = route_call(&shared, &mut st, &method, &segments, &body);
    drop(st);
    with_rate_headers(status, body, bucket, info)
}

/// The bucket (shared by every channel, as Discord's bucket hashes are) and its major
/// parameter (the channel), which together key one window.
fn bucket_of(method: &Method, segments: &[&str]) -> (&'static str, String) {
    match (method, segments) {
        (&Method::POST, ["channels", id, "messages"]) => ("create-message", (*id).to_owned()),
        (&Method::POST, ["channels", id, "typing"]) => ("typing", (*id).to_owned()),
        (_, ["channels", id, "messages", ..]) => ("message-reaction", (*id).to_owned()),
        (_, ["channels", id]) => ("channel", (*id).to_owned()),
        (_, ["gateway", ..]) => ("gateway", String::new()),
        (_, ["users", ..]) => ("users", String::new()),
        _ => ("other", String::new()),
    }
}

/// Runs one authorized call: (status, JSON body or none for 204).
fn route_call(
    shared: &Shared,
    st: &mut crate::state::State,
    method: &Method,
    segments: &[&str],
    body: &Bytes,
) -> (StatusCode, Option<Value>) {
    let unknown_channel = || {
        (
            StatusCode::NOT_FOUND,
            Some(json!({"message": "Unknown Channel", "code": 10003})),
        )
    };
    match (method, segments) {
        (&Method::GET, ["gateway", "bot"]) => (
            StatusCode::OK,
            Some(json!({
                "url": shared.gateway_url(),
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000usize.saturating_sub(st.identifies),
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            })),
        ),
        (&Method::GET, ["gateway"]) => (StatusCode::OK, Some(json!({"url": shared.gateway_url()}))),
        (&Method::GET, ["users", "@me"]) => (StatusCode::OK, Some(shared.bot_user())),
        (&Method::GET, ["channels", id]) => match st.channel_object(id) {
            Some(ch) => (StatusCode::OK, Some(ch)),
            None => unknown_channel(),
        },
        (&Method::POST, ["users", "@me", "channels"]) => {
            let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(recipient) = parsed.get("recipient_id").and_then(id_text) else {
                return invalid_form(
                    "recipient_id",
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
            };
            let channel = st.dm_channel(&recipient);
            (StatusCode::OK, st.channel_object(&channel))
        }
        (&Method::POST, ["channels", id, "messages"]) => {
            if !st.channels.contains_key(*id) {
                return unknown_channel();
            }
            create_message(shared, st, id, body)
        }
        (&Method::POST, ["channels", id, "typing"]) => {
            if !st.channels.contains_key(*id) {
                return unknown_channel();
            }
            *st.typing.entry((*id).to_owned()).or_default() += 1;
            (StatusCode::NO_CONTENT, None)
        }
        (&Method::PUT, ["channels", id, "messages", _, "reactions", _, "@me"]) => {
            if !st.channels.contains_key(*id) {
                return unknown_channel();
            }
            (StatusCode::NO_CONTENT, None)
        }
        (&Method::PUT, ["applications", _, "commands"]) => (StatusCode::OK, Some(json!([]))),
        _ => (
            StatusCode::NOT_FOUND,
            Some(json!({"message": "404: Not Found", "code": 0})),
        ),
    }
}

fn create_message(
    shared: &Shared,
    st: &mut crate::state::State,
    channel_id: &str,
    body: &Bytes,
) -> (StatusCode, Option<Value>) {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return (
            StatusCode::BAD_REQUEST,
            Some(json!({"message": "400: Bad Request", "code": 50109})),
        );
    };
    let content = request
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if content.chars().count() > MAX_CONTENT_CHARS {
        return invalid_form(
            "content",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 2000 or fewer in length.",
        );
    }
    let has_other = ["embeds", "sticker_ids", "components", "attachments", "poll"]
        .iter()
        .any(|k| {
            request
                .get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
    if content.is_empty() && !has_other {
        return (
            StatusCode::BAD_REQUEST,
            Some(json!({"message": "Cannot send an empty message", "code": 50006})),
        );
    }
    let nonce = request.get("nonce").and_then(id_text);
    if nonce
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NONCE_CHARS)
    {
        return invalid_form(
            "nonce",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 25 or fewer in length.",
        );
    }
    let enforce = request
        .get("enforce_nonce")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(n) = &nonce {
        if enforce {
            if let Some(earlier) = st.nonces.get(&(channel_id.to_owned(), n.clone())) {
                return (StatusCode::OK, Some(earlier.clone()));
            }
        }
    }
    let id = st.snowflake();
    let guild_id = st.channels.get(channel_id).and_then(|c| c.guild_id.clone());
    let mut message = json!({
        "id": id,
        "channel_id": channel_id,
        "author": shared.bot_user(),
        "content": content,
        "timestamp": clock::iso8601(clock::unix_ms()),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "flags": request.get("flags").and_then(Value::as_u64).unwrap_or(0),
    });
    if let Some(n) = &nonce {
        message["nonce"] = request["nonce"].clone();
        st.nonces
            .entry((channel_id.to_owned(), n.clone()))
            .or_insert_with(|| message.clone());
    }
    if let Some(reference) = request.get("message_reference") {
        message["message_reference"] = reference.clone();
    }
    st.posted.push(Posted {
        id,
        channel_id: channel_id.to_owned(),
        content,
        nonce,
    });
    st.posted_at.push(Instant::now());
    shared.posted_signal.notify_all();
    if st.echo_own {
        // The gateway copy carries guild_id, as Discord's does; the REST answer does not.
        let mut echoed = message.clone();
        if let Some(g) = guild_id {
            echoed["guild_id"] = json!(g);
        }
        st.dispatch_message(&shared.opts.bot_user_id, echoed, false);
    }
    (StatusCode::OK, Some(message))
}

/// A snowflake or nonce given as a string or a number, as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Discord's 50035 "Invalid Form Body" for one field.
fn invalid_form(field: &str, code: &str, message: &str) -> (StatusCode, Option<Value>) {
    let mut errors = serde_json::Map::new();
    errors.insert(
        field.to_owned(),
        json!({"_errors": [{"code": code, "message": message}]}),
    );
    (
        StatusCode::BAD_REQUEST,
        Some(json!({"message": "Invalid Form Body", "code": 50035, "errors": errors})),
    )
}

/// A JSON response without rate-limit accounting (auth failures, unknown origins).
fn plain(status: StatusCode, body: Value) -> Response {
    with_rate_headers(
        status,
        Some(body),
        "other",
        RateInfo {
            limit: 50,
            remaining: 49,
            reset_after: Duration::from_secs(1),
        },
    )
}

/// A 429 in Discord's shape, with `Retry-After` rounded up to whole seconds.
fn too_many(bucket: &str, info: RateInfo, wait: Duration) -> Response {
    let body = json!({"message": "You are being rate limited.", "retry_after": secs(wait), "global": false});
    let mut response = with_rate_headers(StatusCode::TOO_MANY_REQUESTS, Some(body), bucket, info);
    let whole = wait.as_millis().div_ceil(1000).max(1);
    let h = response.headers_mut();
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(u64::try_from(whole).unwrap_or(u64::MAX)),
    );
    h.insert("x-ratelimit-scope", HeaderValue::from_static("user"));
    response
}

fn with_rate_headers(
    status: StatusCode,
    body: Option<Value>,
    bucket: &str,
    info: RateInfo,
) -> Response {
    let mut response = match body {
        Some(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        None => (status, Body::empty()).into_response(),
    };
    let reset = Duration::from_millis(clock::unix_ms()) + info.reset_after;
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(info.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(info.remaining));
    for (name, value) in [
        ("x-ratelimit-reset", format!("{:.3}", reset.as_secs_f64())),
        (
            "x-ratelimit-reset-after",
            format!("{:.3}", info.reset_after.as_secs_f64()),
        ),
        ("x-ratelimit-bucket", bucket_hash(bucket)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    }
    response
}

/// Seconds as Discord's float, rounded up to the millisecond so that waiting exactly that
/// long is always enough.
fn secs(d: Duration) -> f64 {
    (d.as_micros().div_ceil(1000) as f64) / 1000.0
}

/// An opaque, stable bucket id like Discord's: a hex digest of the route name.
fn bucket_hash(bucket: &str) -> String {
    // FNV-1a: stable across runs and processes, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bucket.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

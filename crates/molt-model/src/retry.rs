//! Error classification of HTTP failures, and the backoff between attempts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use molt_config::CallLimits;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::ModelErrorKind;
use crate::accum::{Failure, preview};

/// A `retry-after` longer than `retry_max_ms` is still honoured, up to this.
const RETRY_AFTER_CEILING: Duration = Duration::from_secs(60);

/// Whether a provider's error message (and code) says the prompt is too long.
pub(crate) fn is_context_length(message: &str, code: Option<&Value>) -> bool {
    if code.and_then(Value::as_str) == Some("context_length_exceeded") {
        return true;
    }
    let m = message.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context length",
        "context window",
        "prompt is too long",
        "too many tokens",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Classifies a non-2xx response from its status, body and headers.
pub(crate) fn classify_status(status: u16, body: &[u8], headers: &HeaderMap) -> Failure {
    let text = String::from_utf8_lossy(body);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    // OpenAI: {"error": {"message", "code", "type"}}; Anthropic: {"type": "error",
    // "error": {"type", "message"}}; others vary.
    let err = json.as_ref().map(|j| j.get("error").unwrap_or(j));
    let message = err
        .and_then(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .or_else(|| e.as_str())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| text.to_string());
    let code = err.and_then(|e| e.get("code"));
    let shown = if message.trim().is_empty() {
        "no error message".to_owned()
    } else {
        preview(&message, 200)
    };
    let (kind, retryable) = match status {
        // 429 can say "too many tokens per minute": a rate limit, never a context error.
        429 => (ModelErrorKind::RateLimit, true),
        400 | 413 | 422 if is_context_length(&message, code) => {
            (ModelErrorKind::ContextLength, false)
        }
        401 | 403 => (ModelErrorKind::Auth, false),
        500..=599 => (ModelErrorKind::Http, true),
        _ => (ModelErrorKind::Http, false),
    };
    let what = match kind {
        ModelErrorKind::ContextLength => "the prompt is too long for the model",
        ModelErrorKind::RateLimit => "rate limited",
        ModelErrorKind::Auth => "the API key was refused",
        _ => "the request failed",
    };
    Failure {
        kind,
        message: format!("{what} (HTTP {status}): {shown}"),
        http_status: Some(status),
        retryable,
        retry_after: if retryable {
            retry_after(headers, SystemTime::now())
        } else {
            None
        },
    }
}

/// `retry-after-ms` (OpenAI's), else `retry-after` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_millis(ms as u64));
        }
    }
    let v = get("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// The wait before retry number `retry` (1-based): the provider's `retry-after` when given
/// (above `retry_max_ms` only up to 60 s), else `retry_base_ms` doubling per retry, capped
/// at `retry_max_ms`, with up to a quarter taken off at random so that clients that failed
/// together do not retry together.
pub(crate) fn delay(limits: &CallLimits, retry: u32, retry_after: Option<Duration>) -> Duration {
    let max = Duration::from_millis(limits.retry_max_ms);
    if let Some(ra) = retry_after {
        return ra.min(max.max(RETRY_AFTER_CEILING));
    }
    let exp = limits
        .retry_base_ms
        .saturating_mul(1u64 << retry.saturating_sub(1).min(32));
    let backoff = exp.min(limits.retry_max_ms);
    // Jitter needs no quality: the clock's low bits differ between processes and calls.
    let noise = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    let quarter = backoff / 4;
    Duration::from_millis(backoff - quarter + noise % (quarter + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn limits(base: u64, max: u64) -> CallLimits {
        CallLimits {
            retry_base_ms: base,
            retry_max_ms: max,
            ..CallLimits::default()
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let l = limits(100, 1000);
        for _ in 0..20 {
            let d1 = delay(&l, 1, None).as_millis();
            assert!((75..=100).contains(&d1), "{d1}");
            let d3 = delay(&l, 3, None).as_millis();
            assert!((300..=400).contains(&d3), "{d3}");
            let d9 = delay(&l, 9, None).as_millis();
            assert!((750..=1000).contains(&d9), "{d9}");
        }
        assert!(delay(&l, u32::MAX, None) <= Duration::from_millis(1000));
    }

    #[test]
    fn retry_after_wins_and_may_exceed_the_cap_up_to_a_minute() {
        let l = limits(100, 1000);
        let s = Duration::from_secs;
        assert_eq!(delay(&l, 1, Some(s(1))), s(1));
        assert_eq!(delay(&l, 1, Some(s(30))), s(30));
        assert_eq!(delay(&l, 1, Some(s(600))), s(60));
        assert_eq!(delay(&limits(100, 120_000), 1, Some(s(90))), s(90));
    }

    #[test]
    fn retry_after_header_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:47 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(10)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
    }

    #[test]
    fn statuses_and_bodies_classify() {
        let h = HeaderMap::new();
        let ctx = br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        let f = classify_status(400, ctx, &h);
        assert_eq!(
            (f.kind, f.retryable, f.http_status),
            (ModelErrorKind::ContextLength, false, Some(400))
        );
        assert!(
            f.message.contains("maximum context length"),
            "{}",
            f.message
        );
        let ant = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(
            classify_status(400, ant, &h).kind,
            ModelErrorKind::ContextLength
        );
        let other = br#"{"error":{"message":"bad tool schema"}}"#;
        let f = classify_status(400, other, &h);
        assert_eq!((f.kind, f.retryable), (ModelErrorKind::Http, false));
        assert!(f.message.contains("HTTP 400") && f.message.contains("bad tool schema"));
        assert_eq!(classify_status(401, b"", &h).kind, ModelErrorKind::Auth);
        assert_eq!(classify_status(403, b"nope", &h).kind, ModelErrorKind::Auth);
        assert_eq!(classify_status(404, b"", &h).kind, ModelErrorKind::Http);
        let f = classify_status(429, b"Rate limit: too many tokens per min", &h);
        assert_eq!((f.kind, f.retryable), (ModelErrorKind::RateLimit, true));
        let f = classify_status(503, b"upstream down", &h);
        assert_eq!((f.kind, f.retryable), (ModelErrorKind::Http, true));
        let long = "x".repeat(5000);
        let f = classify_status(500, long.as_bytes(), &h);
        assert!(f.message.len() < 300, "{}", f.message.len());
    }
}

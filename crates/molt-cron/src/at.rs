//! `at` times: parsing what a user or a client writes, and the normalized wire form.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};

use crate::ScheduleError;
use crate::zone;

/// Parses an `at` time into Unix milliseconds.
///
/// Accepted:
/// - RFC 3339 / ISO-8601 with an offset or `Z`: `2026-12-24T08:00:00Z`,
///   `2026-12-24T09:00:00.250+01:00`, `2026-12-24T09:00+0100`, `2026-12-24 09:00Z`;
/// - a local date-time without an offset, read on the wall clock of `tz`:
///   `2026-12-24T09:00`, `2026-12-24 09:00`, `2026-12-24 09:00:30`, `2026-12-24T09:00:30.5`;
/// - a date alone, `2026-12-24`, meaning 00:00 of that day in `tz`.
///
/// `tz` is an IANA name: molt's CLI passes the host zone; OpenClaw's wire format means UTC
/// (`"UTC"`). A local time that does not exist in `tz` (skipped by a DST jump) means the
/// instant of the jump; one that happens twice means its first occurrence (see the crate docs,
/// "Time zones and DST").
pub fn parse_at(s: &str, tz: &str) -> Result<i64, ScheduleError> {
    let text = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let bad = || ScheduleError::At {
        value: s.to_string(),
        reason: format!(
            "expected RFC 3339 such as 2026-12-24T08:00:00Z or 2026-12-24T09:00:00+01:00, or a \
             local date-time such as 2026-12-24T09:00 or 2026-12-24 09:00:30 (read in {tz})"
        ),
    };
    let (date, time) = match text.find(['T', 't', ' ']) {
        Some(i) => (text.get(..i), text.get(i + 1..)),
        None => (Some(text), None),
    };
    let date = NaiveDate::parse_from_str(date.ok_or_else(bad)?, "%Y-%m-%d").map_err(|_| bad())?;
    let Some(time) = time else {
        return local_ms(date.and_time(NaiveTime::MIN), tz);
    };
    let (clock, offset) = split_offset(time.trim()).ok_or_else(bad)?;
    let clock = ["%H:%M:%S%.f", "%H:%M"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(clock.trim(), f).ok())
        .ok_or_else(bad)?;
    let naive = date.and_time(clock);
    match offset {
        Some(offset) => offset
            .from_local_datetime(&naive)
            .single()
            .map(|t| t.timestamp_millis())
            .ok_or_else(bad),
        None => local_ms(naive, tz),
    }
}

/// A wall-clock time of zone `tz`, in Unix ms, by the crate's DST rule.
fn local_ms(naive: NaiveDateTime, tz: &str) -> Result<i64, ScheduleError> {
    let zone = zone::parse_zone(tz)?;
    let millis = i64::from(naive.nanosecond() / 1_000_000);
    let whole = naive.with_nanosecond(0).unwrap_or(naive);
    zone::resolve_wall(zone, whole)
        .and_then(|secs| secs.checked_mul(1000)?.checked_add(millis))
        .ok_or_else(|| ScheduleError::At {
            value: naive.to_string(),
            reason: "out of range".to_string(),
        })
}

/// Splits `09:00:00+01:00` into the clock and its offset (`Z`, `±HH:MM`, `±HHMM`, `±HH`);
/// `None` for a malformed offset.
fn split_offset(time: &str) -> Option<(&str, Option<FixedOffset>)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, FixedOffset::east_opt(0)));
    }
    let Some(i) = time.find(['+', '-']) else {
        return Some((time, None));
    };
    let (clock, offset) = (time.get(..i)?, time.get(i..)?);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits: String = offset.get(1..)?.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits.get(..2)?.parse().ok()?;
    let minutes: i32 = digits
        .get(2..)
        .filter(|m| !m.is_empty())
        .map_or(Ok(0), str::parse)
        .ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((
        clock,
        Some(FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))?),
    ))
}

/// The normalized wire form of an instant: `2026-12-24T08:00:00.000Z` (UTC, milliseconds), as
/// OpenClaw stores `at`. An instant outside chrono's range (beyond ±262,000 years) is written
/// as its number of milliseconds.
pub fn format_at(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

//! Time for the wire: ISO-8601 timestamps and snowflake-like ids.

use std::time::{SystemTime, UNIX_EPOCH};

/// Discord's epoch (2015-01-01T00:00:00Z) in Unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The next id after `last`: Discord's layout (milliseconds since its epoch above bit 22),
/// bumped past `last` so ids strictly increase even within one millisecond.
pub(crate) fn next_snowflake(last: u64) -> u64 {
    let now = unix_ms().saturating_sub(DISCORD_EPOCH_MS) << 22;
    now.max(last.saturating_add(1))
}

/// `unix_ms` as `2026-01-02T03:04:05.678000+00:00`, the shape Discord uses.
pub(crate) fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}000+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            iso8601(1_420_070_400_000),
            "2015-01-01T00:00:00.000000+00:00"
        );
        // 2024-02-29T23:59:59.999Z, a leap day.
        assert_eq!(
            iso8601(1_709_251_199_999),
            "2024-02-29T23:59:59.999000+00:00"
        );
    }

    #[test]
    fn snowflakes_strictly_increase() {
        let a = next_snowflake(0);
        let b = next_snowflake(a);
        let c = next_snowflake(u64::MAX - 1);
        assert!(b > a);
        assert_eq!(c, u64::MAX);
    }
}

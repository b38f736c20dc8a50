//! `every` schedules: parsing `"2h30m"` and the O(1) arithmetic of `anchor + k·every`.

use crate::ScheduleError;

/// The shortest interval an `every` schedule accepts: 1 s. Shorter ones would make a
/// scheduler busy rather than useful.
pub const MIN_EVERY_MS: u64 = 1000;

const FORMS: &str = "expected a number and a unit (ms, s, m, h, d), alone or combined from \
                     largest to smallest, such as 30s, 5m, 1h, 2h30m, 1d or 1500ms";

/// Parses an interval such as `"30s"`, `"5m"`, `"1h"`, `"2h30m"`, `"1d"` or `"1500ms"` into
/// milliseconds. Units: `ms`, `s`, `m`, `h`, `d`; combined parts go from the largest unit to
/// the smallest, each at most once (`"1h30m"`, `"1m30s"`, `"1d 12h"`: spaces between parts are
/// allowed). The result must be at least [`MIN_EVERY_MS`].
pub fn parse_every(s: &str) -> Result<u64, ScheduleError> {
    let err = |reason: &str| ScheduleError::Every {
        value: s.to_string(),
        reason: reason.to_string(),
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(err(FORMS));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    // Rank of the last unit seen; units must strictly decrease so "1m1h" or "5m5m" is refused.
    let mut last_rank = u8::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err(FORMS));
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let (unit_ms, rank) = match unit.to_ascii_lowercase().as_str() {
            "ms" => (1, 0),
            "s" => (1000, 1),
            "m" => (60_000, 2),
            "h" => (3_600_000, 3),
            "d" => (86_400_000, 4),
            "" => return Err(err(&format!("a number needs a unit; {FORMS}"))),
            _ => return Err(err(&format!("unknown unit {unit:?}; {FORMS}"))),
        };
        if rank >= last_rank {
            return Err(err(&format!("units out of order or repeated; {FORMS}")));
        }
        last_rank = rank;
        let part = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .and_then(|ms| total.checked_add(ms));
        total = part.ok_or_else(|| err("too large"))?;
        rest = tail.trim_start();
    }
    check_every_ms(total, s).map(|_| total)
}

/// Checks an interval in ms and returns it as an `i64` for the arithmetic.
pub(crate) fn check_every_ms(every_ms: u64, shown: &str) -> Result<i64, ScheduleError> {
    if every_ms < MIN_EVERY_MS {
        return Err(ScheduleError::Every {
            value: shown.to_string(),
            reason: format!(
                "{every_ms} ms is too short; the shortest interval is {MIN_EVERY_MS} ms (1s)"
            ),
        });
    }
    i64::try_from(every_ms).map_err(|_| ScheduleError::Every {
        value: shown.to_string(),
        reason: format!("too large; expected at most {} ms", i64::MAX),
    })
}

/// The first `anchor + k·every` (k ≥ 0) strictly after `after`. `every` > 0.
pub(crate) fn next_after(every: i64, anchor: i64, after: i64) -> Option<i64> {
    if after < anchor {
        return Some(anchor);
    }
    // i128 so that `after - anchor` and the product cannot overflow.
    let (every, anchor, after) = (i128::from(every), i128::from(anchor), i128::from(after));
    let k = (after - anchor) / every + 1;
    i64::try_from(anchor + k * every).ok()
}

/// How many `anchor + k·every` (k ≥ 0) lie in `(from, to]`, at most `cap`. `every` > 0.
pub(crate) fn count_between(every: i64, anchor: i64, from: i64, to: i64, cap: usize) -> usize {
    let (every, anchor, from, to) = (
        i128::from(every),
        i128::from(anchor),
        i128::from(from),
        i128::from(to),
    );
    if to < anchor {
        return 0;
    }
    // First k whose time is > from, last k whose time is <= to.
    let first = if from < anchor {
        0
    } else {
        (from - anchor) / every + 1
    };
    let last = (to - anchor) / every;
    let n = (last - first + 1).max(0);
    usize::try_from(n).map_or(cap, |n| n.min(cap))
}

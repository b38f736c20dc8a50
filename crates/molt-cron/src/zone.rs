//! Time zones: names, the host's zone, and the wall clock ↔ instant mapping with the crate's
//! DST rule (a missing time → the instant of the change; a repeated time → its first
//! occurrence).

use chrono::{DateTime, MappedLocalTime, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use crate::ScheduleError;

/// Resolves an IANA zone name (exact spelling, as in the tz database).
pub(crate) fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownZone(name.to_string()))
}

/// The host's IANA time zone: `$TZ` when it names one (also in the `:Europe/Berlin` and
/// `:/usr/share/zoneinfo/Europe/Berlin` forms), else the first line of `/etc/timezone`, else
/// the target of the `/etc/localtime` symlink after `zoneinfo/`, else `"UTC"`. A POSIX rule
/// such as `TZ=CET-1CEST,M3.5.0,M10.5.0/3` is not a zone name and is passed over.
pub fn host_timezone() -> String {
    let tz_env = std::env::var("TZ").ok();
    let etc_timezone = std::fs::read_to_string("/etc/timezone").ok();
    let localtime_link = std::fs::read_link("/etc/localtime")
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    host_timezone_from(
        tz_env.as_deref(),
        etc_timezone.as_deref(),
        localtime_link.as_deref(),
    )
}

/// The pure core of [`host_timezone`]: the first of `tz_env` (`$TZ`), `etc_timezone` (the
/// contents of `/etc/timezone`) and `localtime_link` (the target of `/etc/localtime`) that
/// names a known IANA zone, else `"UTC"`.
pub fn host_timezone_from(
    tz_env: Option<&str>,
    etc_timezone: Option<&str>,
    localtime_link: Option<&str>,
) -> String {
    let from_env = tz_env.and_then(|v| {
        let v = v.trim();
        // glibc reads a leading ':' as "implementation-defined", in practice a file name.
        let v = v.strip_prefix(':').unwrap_or(v);
        known(v).or_else(|| after_zoneinfo(v))
    });
    let from_file = || {
        etc_timezone
            .and_then(|text| text.lines().map(str::trim).find(|l| !l.is_empty()))
            .and_then(known)
    };
    let from_link = || localtime_link.and_then(after_zoneinfo);
    from_env
        .or_else(from_file)
        .or_else(from_link)
        .unwrap_or_else(|| "UTC".to_string())
}

fn known(name: &str) -> Option<String> {
    parse_zone(name).ok().map(|tz| tz.name().to_string())
}

/// `/usr/share/zoneinfo/Europe/Berlin` (also `../usr/share/zoneinfo/posix/Europe/Berlin`) →
/// `Europe/Berlin`, when that is a known zone.
fn after_zoneinfo(path: &str) -> Option<String> {
    let (_, name) = path.rsplit_once("zoneinfo/")?;
    let name = name
        .strip_prefix("posix/")
        .or_else(|| name.strip_prefix("right/"))
        .unwrap_or(name);
    known(name)
}

/// The wall clock of `tz` at a Unix second.
pub(crate) fn wall_at(tz: Tz, secs: i64) -> Option<NaiveDateTime> {
    Some(
        DateTime::from_timestamp(secs, 0)?
            .with_timezone(&tz)
            .naive_local(),
    )
}

/// The UTC offset of `tz` at a Unix second, in seconds.
fn offset_at(tz: Tz, secs: i64) -> Option<i64> {
    Some(wall_at(tz, secs)?.and_utc().timestamp() - secs)
}

/// The Unix second a wall-clock time of `tz` stands for, by the crate's DST rule: a time that
/// happens once → that instant; twice → the first; never (skipped by a jump forward) → the
/// instant of the jump, the first one after the missing time.
pub(crate) fn resolve_wall(tz: Tz, wall: NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(&wall) {
        MappedLocalTime::Single(t) => Some(t.timestamp()),
        MappedLocalTime::Ambiguous(first, _) => Some(first.timestamp()),
        MappedLocalTime::None => {
            // The jump is the first instant whose wall clock is at or past `wall`. Offsets
            // lie within -12 h and +14 h, so it lies within 15 h either side of `wall` read
            // as UTC.
            let w = wall.and_utc().timestamp();
            let reached = |x: i64| wall_at(tz, x).is_none_or(|l| l >= wall);
            Some(first_true(w - 15 * 3600, w + 15 * 3600, reached))
        }
    }
}

/// The wall-clock time to search forward from so that every match found maps to an instant
/// after the Unix second `secs`. Normally the wall clock at `secs`. In the second pass of a
/// repeated hour, every wall time of that hour has already been used by its first pass, so the
/// search starts at the last second of the repeated range instead.
pub(crate) fn search_start(tz: Tz, secs: i64) -> Option<NaiveDateTime> {
    let wall = wall_at(tz, secs)?;
    if let MappedLocalTime::Ambiguous(first, second) = tz.from_local_datetime(&wall) {
        let (first, second) = (first.timestamp(), second.timestamp());
        if secs == second && first < second {
            // The change of offset lies in (first, second]; the second before it carries the
            // last wall time of the first pass, the end of the repeated range.
            let later = offset_at(tz, second)?;
            let change = first_true(first, second, |x| offset_at(tz, x) == Some(later));
            return wall_at(tz, change - 1);
        }
    }
    Some(wall)
}

/// The smallest x in (lo, hi] with `pred(x)`, given `pred(lo)` is false and `pred(hi)` true
/// (≈17 steps for a 15-hour span).
fn first_true(mut lo: i64, mut hi: i64, pred: impl Fn(i64) -> bool) -> i64 {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

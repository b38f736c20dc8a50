//! Unit tests on fixed instants; no test reads the clock.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;

/// Unix ms of a UTC time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_millis()
}

/// Unix ms of midnight of a local date in `tz` (never in a gap in the zones used here).
fn local_midnight(tz: &str, y: i32, mo: u32, d: u32) -> i64 {
    let tz: Tz = tz.parse().unwrap();
    tz.with_ymd_and_hms(y, mo, d, 0, 0, 0)
        .earliest()
        .unwrap()
        .timestamp_millis()
}

fn cron(expr: &str, tz: &str) -> Compiled {
    Schedule::Cron {
        expr: expr.to_string(),
        tz: Some(tz.to_string()),
        stagger_ms: None,
    }
    .compile("UTC")
    .unwrap()
}

/// The next `n` fires after `from`, in the wire form for readable comparisons.
fn fires(c: &Compiled, from: i64, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = from;
    for _ in 0..n {
        t = c.next_after(t).unwrap();
        out.push(format_at(t));
    }
    out
}

/// Fires in the local day `date` of `tz`: `(midnight - 1 ms, next midnight - 1 ms]`.
fn fires_on_local_day(c: &Compiled, tz: &str, y: i32, mo: u32, d: u32) -> usize {
    let next = NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .succ_opt()
        .unwrap();
    let start = local_midnight(tz, y, mo, d);
    let end = local_midnight(tz, next.year(), next.month(), next.day());
    c.count_between(start - 1, end - 1, 1000)
}

// ---- wire shape ----

#[test]
fn schedule_serde_matches_the_wire_shapes() {
    let cases = [
        (
            r#"{"kind":"at","at":"2026-12-24T08:00:00.000Z"}"#,
            Schedule::At {
                at: "2026-12-24T08:00:00.000Z".into(),
            },
        ),
        (
            r#"{"kind":"every","everyMs":1800000,"anchorMs":1767225600000}"#,
            Schedule::Every {
                every_ms: 1_800_000,
                anchor_ms: Some(1_767_225_600_000),
            },
        ),
        (
            r#"{"kind":"every","everyMs":60000}"#,
            Schedule::Every {
                every_ms: 60_000,
                anchor_ms: None,
            },
        ),
        (
            r#"{"kind":"cron","expr":"0 3 * * *","tz":"Europe/Berlin","staggerMs":1500}"#,
            Schedule::Cron {
                expr: "0 3 * * *".into(),
                tz: Some("Europe/Berlin".into()),
                stagger_ms: Some(1500),
            },
        ),
        (
            r#"{"kind":"cron","expr":"*/5 * * * *"}"#,
            Schedule::Cron {
                expr: "*/5 * * * *".into(),
                tz: None,
                stagger_ms: None,
            },
        ),
    ];
    for (json, schedule) in cases {
        assert_eq!(serde_json::from_str::<Schedule>(json).unwrap(), schedule);
        assert_eq!(serde_json::to_string(&schedule).unwrap(), json);
    }
    assert!(serde_json::from_str::<Schedule>(r#"{"kind":"on-exit","command":"x"}"#).is_err());
}

// ---- at ----

#[test]
fn at_fires_once_strictly_after() {
    let s = Schedule::At {
        at: "2026-12-24T08:00:00.000Z".into(),
    };
    let c = s.compile("Europe/Berlin").unwrap();
    let at = utc(2026, 12, 24, 8, 0, 0);
    assert!(c.is_one_shot());
    assert_eq!(c.zone(), None);
    assert_eq!(c.next_after(at - 1), Some(at));
    assert_eq!(c.next_after(at), None);
    assert_eq!(c.next_after(at + 1), None);
    assert_eq!(c.count_between(at - 1000, at, 5), 1);
    assert_eq!(c.count_between(at, at + 1000, 5), 0);
    assert_eq!(c.count_between(at - 1000, at, 0), 0);
}

#[test]
fn at_without_offset_on_the_wire_is_utc() {
    let s = Schedule::At {
        at: "2030-01-01T09:00".into(),
    };
    let c = s.compile("America/New_York").unwrap();
    assert_eq!(c.next_after(0), Some(utc(2030, 1, 1, 9, 0, 0)));
}

#[test]
fn parse_at_accepts_rfc3339_and_offsets() {
    let t = utc(2026, 12, 24, 8, 0, 0);
    for s in [
        "2026-12-24T08:00:00Z",
        "2026-12-24T08:00:00.000Z",
        "2026-12-24t08:00:00z",
        "2026-12-24T09:00:00+01:00",
        "2026-12-24T09:00+01:00",
        "2026-12-24T09:00+0100",
        "2026-12-24T09:00:00+01",
        "2026-12-24 08:00Z",
        "2026-12-24T03:00:00-05:00",
        "  2026-12-24T08:00:00Z  ",
    ] {
        assert_eq!(parse_at(s, "Asia/Tokyo").unwrap(), t, "{s}");
    }
    assert_eq!(
        parse_at("2026-12-24T08:00:00.250Z", "UTC").unwrap(),
        t + 250
    );
}

#[test]
fn parse_at_reads_local_times_in_the_zone() {
    // 2026-12-24 09:00 in Berlin (CET, +01:00) is 08:00 UTC.
    let t = utc(2026, 12, 24, 8, 0, 0);
    for s in [
        "2026-12-24T09:00",
        "2026-12-24 09:00",
        "2026-12-24 09:00:00",
        "2026-12-24T09:00:00.000",
    ] {
        assert_eq!(parse_at(s, "Europe/Berlin").unwrap(), t, "{s}");
    }
    assert_eq!(
        parse_at("2026-12-24 09:00:30", "Europe/Berlin").unwrap(),
        t + 30_000
    );
    assert_eq!(
        parse_at("2026-12-24T09:00:00.5", "Europe/Berlin").unwrap(),
        t + 500
    );
    assert_eq!(
        parse_at("2026-12-24T09:00", "UTC").unwrap(),
        utc(2026, 12, 24, 9, 0, 0)
    );
    // Summer time: +02:00.
    assert_eq!(
        parse_at("2026-07-01 12:00", "Europe/Berlin").unwrap(),
        utc(2026, 7, 1, 10, 0, 0)
    );
    // A date alone is its local midnight.
    assert_eq!(
        parse_at("2026-12-24", "Europe/Berlin").unwrap(),
        utc(2026, 12, 23, 23, 0, 0)
    );
}

#[test]
fn dst_parse_at_follows_the_rule_in_gaps_and_repeats() {
    // 02:30 does not exist on 2026-03-08 in New York: the jump, 03:00 EDT = 07:00 UTC.
    assert_eq!(
        parse_at("2026-03-08T02:30", "America/New_York").unwrap(),
        utc(2026, 3, 8, 7, 0, 0)
    );
    // 01:30 happens twice on 2026-11-01: the first, 01:30 EDT = 05:30 UTC.
    assert_eq!(
        parse_at("2026-11-01 01:30", "America/New_York").unwrap(),
        utc(2026, 11, 1, 5, 30, 0)
    );
}

#[test]
fn parse_at_errors_say_what_is_expected() {
    for s in [
        "tomorrow",
        "",
        "2026-13-01T09:00",
        "2026-12-24T25:00",
        "2026-12-24T09:00+1",
        "2026-12-24T09:00+01:00:00",
        "24.12.2026 09:00",
        "1767225600000",
    ] {
        let e = parse_at(s, "Europe/Berlin").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("time {s:?}: expected RFC 3339")),
            "{msg}"
        );
        assert!(
            msg.contains("2026-12-24 09:00:30 (read in Europe/Berlin)"),
            "{msg}"
        );
    }
    assert_eq!(
        parse_at("2026-12-24T09:00", "Mars/Base")
            .unwrap_err()
            .to_string(),
        "unknown time zone \"Mars/Base\": use an IANA name such as Europe/Berlin, \
         America/New_York or UTC"
    );
    // An offset makes the zone irrelevant.
    assert!(parse_at("2026-12-24T09:00Z", "Mars/Base").is_ok());
    let bad_at = Schedule::At { at: "soon".into() };
    assert!(matches!(
        bad_at.compile("UTC"),
        Err(ScheduleError::At { .. })
    ));
}

#[test]
fn format_at_is_the_normalized_wire_form() {
    assert_eq!(
        format_at(utc(2026, 12, 24, 8, 0, 0)),
        "2026-12-24T08:00:00.000Z"
    );
    assert_eq!(
        format_at(utc(2026, 12, 24, 8, 0, 0) + 7),
        "2026-12-24T08:00:00.007Z"
    );
    assert_eq!(format_at(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_at(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(format_at(i64::MAX), i64::MAX.to_string());
    let ms = parse_at("2026-12-24T09:00", "Europe/Berlin").unwrap();
    assert_eq!(parse_at(&format_at(ms), "Asia/Tokyo").unwrap(), ms);
}

// ---- every ----

fn every(every_ms: u64, anchor_ms: Option<i64>) -> Compiled {
    Schedule::Every {
        every_ms,
        anchor_ms,
    }
    .compile("UTC")
    .unwrap()
}

#[test]
fn every_fires_at_anchor_plus_multiples() {
    let anchor = utc(2026, 1, 1, 10, 0, 7);
    let c = every(30 * 60_000, Some(anchor));
    assert!(!c.is_one_shot());
    // Created at the anchor: the first fire is one interval later.
    assert_eq!(c.next_after(anchor), Some(anchor + 1_800_000));
    assert_eq!(c.next_after(anchor + 1), Some(anchor + 1_800_000));
    assert_eq!(c.next_after(anchor + 1_799_999), Some(anchor + 1_800_000));
    assert_eq!(c.next_after(anchor + 1_800_000), Some(anchor + 3_600_000));
    // A year later, still on the grid, in O(1).
    let later = anchor + 365 * 86_400_000 + 123;
    let next = c.next_after(later).unwrap();
    assert_eq!((next - anchor) % 1_800_000, 0);
    assert!(next > later && next - later <= 1_800_000);
    // Before a future anchor, the anchor itself is the first fire.
    assert_eq!(c.next_after(anchor - 5_000_000), Some(anchor));
}

#[test]
fn every_without_anchor_is_aligned_to_the_epoch() {
    let c = every(3_600_000, None);
    assert_eq!(
        c.next_after(utc(2026, 5, 5, 10, 20, 0)),
        Some(utc(2026, 5, 5, 11, 0, 0))
    );
    // Times before the anchor never fire, the epoch included.
    let c = every(1000, None);
    assert_eq!(c.next_after(-1500), Some(0));
}

#[test]
fn every_counts_in_constant_time() {
    let anchor = utc(2026, 1, 1, 0, 0, 0);
    let c = every(1000, Some(anchor));
    // (anchor, anchor + 10 s] holds 10 fires; the anchor itself is excluded.
    assert_eq!(c.count_between(anchor, anchor + 10_000, 100), 10);
    assert_eq!(c.count_between(anchor - 1, anchor + 10_000, 100), 11);
    assert_eq!(c.count_between(anchor - 60_000, anchor - 1, 100), 0);
    assert_eq!(c.count_between(anchor + 500, anchor + 999, 100), 0);
    assert_eq!(c.count_between(anchor, anchor + 10_000, 3), 3);
    // A century of seconds, capped, without iterating.
    assert_eq!(
        c.count_between(anchor, anchor + 100 * 365 * 86_400_000, usize::MAX),
        3_153_600_000
    );
    assert_eq!(c.count_between(i64::MIN, i64::MAX, 7), 7);
    assert_eq!(c.next_after(i64::MAX), None);
}

#[test]
fn every_refuses_short_intervals() {
    for ms in [0, 1, 999] {
        let e = Schedule::Every {
            every_ms: ms,
            anchor_ms: None,
        }
        .compile("UTC")
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "interval \"{ms}\": {ms} ms is too short; the shortest interval is 1000 ms (1s)"
            )
        );
    }
    assert!(
        Schedule::Every {
            every_ms: u64::MAX,
            anchor_ms: None
        }
        .compile("UTC")
        .is_err()
    );
}

#[test]
fn parse_every_accepts_units_and_combinations() {
    for (s, ms) in [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2h30m", 9_000_000),
        ("1d", 86_400_000),
        ("1500ms", 1500),
        ("1m30s", 90_000),
        ("1d 12h", 129_600_000),
        (" 10S ", 10_000),
        ("1h0m5s250ms", 3_605_250),
    ] {
        assert_eq!(parse_every(s).unwrap(), ms, "{s}");
    }
}

#[test]
fn parse_every_errors_say_the_accepted_forms() {
    for (s, why) in [
        ("", "expected a number and a unit"),
        ("5x", "unknown unit \"x\""),
        ("30", "a number needs a unit"),
        ("1.5h", "a number needs a unit"),
        ("m5", "expected a number and a unit"),
        ("5m1h", "units out of order or repeated"),
        ("5m5m", "units out of order or repeated"),
        ("99999999999999999999s", "too large"),
        ("500ms", "500 ms is too short"),
        ("0s", "0 ms is too short"),
    ] {
        let msg = parse_every(s).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("interval {s:?}: ")), "{msg}");
        assert!(msg.contains(why), "{s}: {msg}");
    }
    assert!(
        parse_every("5x")
            .unwrap_err()
            .to_string()
            .contains("such as 30s, 5m, 1h, 2h30m, 1d or 1500ms")
    );
}

// ---- cron ----

#[test]
fn cron_five_fields_fire_at_second_zero_in_the_zone() {
    let c = cron("0 3 * * *", "Europe/Berlin");
    assert_eq!(c.zone(), Some("Europe/Berlin"));
    assert!(!c.is_one_shot());
    // 03:00 CET = 02:00 UTC in winter, 03:00 CEST = 01:00 UTC in summer.
    assert_eq!(
        fires(&c, utc(2026, 1, 10, 12, 0, 0), 2),
        ["2026-01-11T02:00:00.000Z", "2026-01-12T02:00:00.000Z"]
    );
    assert_eq!(
        fires(&c, utc(2026, 7, 10, 12, 0, 0), 1),
        ["2026-07-11T01:00:00.000Z"]
    );
    // Strictly after: a fire time itself is not returned again; sub-seconds are handled.
    let t = utc(2026, 1, 11, 2, 0, 0);
    assert_eq!(c.next_after(t - 1), Some(t));
    assert_eq!(c.next_after(t), Some(t + 86_400_000));
    assert_eq!(c.next_after(t + 999), Some(t + 86_400_000));
}

#[test]
fn cron_six_fields_have_seconds_and_seven_a_year() {
    let c = cron("*/15 * * * * *", "UTC");
    assert_eq!(
        fires(&c, utc(2026, 1, 1, 0, 0, 1), 3),
        [
            "2026-01-01T00:00:15.000Z",
            "2026-01-01T00:00:30.000Z",
            "2026-01-01T00:00:45.000Z"
        ]
    );
    let c = cron("0 0 12 24 12 * 2027", "UTC");
    assert_eq!(
        fires(&c, utc(2026, 1, 1, 0, 0, 0), 1),
        ["2027-12-24T12:00:00.000Z"]
    );
    assert_eq!(c.next_after(utc(2027, 12, 24, 12, 0, 0)), None);
}

#[test]
fn cron_dialect_names_nicknames_and_weekdays() {
    // 2026-01-01 is a Thursday.
    let from = utc(2026, 1, 1, 0, 0, 0);
    assert_eq!(
        fires(&cron("0 9 * * MON-FRI", "UTC"), from, 2),
        ["2026-01-01T09:00:00.000Z", "2026-01-02T09:00:00.000Z"]
    );
    assert_eq!(
        fires(&cron("0 9 * * mon", "UTC"), from, 1),
        ["2026-01-05T09:00:00.000Z"]
    );
    assert_eq!(
        fires(&cron("@daily", "UTC"), from, 1),
        ["2026-01-02T00:00:00.000Z"]
    );
    assert_eq!(
        fires(&cron("@hourly", "UTC"), from, 1),
        ["2026-01-01T01:00:00.000Z"]
    );
    assert_eq!(
        fires(&cron("0 0 L * *", "UTC"), from, 2),
        ["2026-01-31T00:00:00.000Z", "2026-02-28T00:00:00.000Z"]
    );
    assert_eq!(
        fires(&cron("0 0 29 2 *", "UTC"), from, 1),
        ["2028-02-29T00:00:00.000Z"]
    );
}

#[test]
fn cron_without_tz_uses_the_host_zone() {
    let s = Schedule::Cron {
        expr: "0 9 * * *".into(),
        tz: None,
        stagger_ms: None,
    };
    let c = s.compile("Asia/Tokyo").unwrap();
    assert_eq!(c.zone(), Some("Asia/Tokyo"));
    // 09:00 JST is 00:00 UTC.
    assert_eq!(
        fires(&c, utc(2025, 12, 31, 12, 0, 0), 1),
        ["2026-01-01T00:00:00.000Z"]
    );
    let e = s.compile("Mars/Base").unwrap_err();
    assert_eq!(e, ScheduleError::UnknownZone("Mars/Base".into()));
}

#[test]
fn cron_stagger_shifts_every_fire() {
    let s = Schedule::Cron {
        expr: "0 * * * *".into(),
        tz: Some("UTC".into()),
        stagger_ms: Some(90_500),
    };
    let c = s.compile("UTC").unwrap();
    let top = utc(2026, 1, 1, 10, 0, 0);
    // The 10:00 fire happens at 10:01:30.5, so it is still ahead at 10:00:30.
    assert_eq!(c.next_after(top + 30_000), Some(top + 90_500));
    assert_eq!(c.next_after(top + 90_500), Some(top + 3_600_000 + 90_500));
    assert_eq!(c.count_between(top, top + 3 * 3_600_000, 10), 3);
    let huge = Schedule::Cron {
        expr: "0 * * * *".into(),
        tz: None,
        stagger_ms: Some(u64::MAX),
    };
    assert_eq!(
        huge.compile("UTC").unwrap_err(),
        ScheduleError::Stagger(u64::MAX)
    );
}

#[test]
fn cron_count_between_counts_missed_fires_up_to_the_cap() {
    let c = cron("*/10 * * * *", "UTC");
    let t = utc(2026, 1, 1, 10, 0, 0);
    assert_eq!(c.count_between(t, t + 3_600_000, 100), 6);
    assert_eq!(c.count_between(t - 1, t + 3_600_000, 100), 7);
    assert_eq!(c.count_between(t, t + 3_600_000, 2), 2);
    assert_eq!(c.count_between(t, t + 599_999, 100), 0);
    assert_eq!(c.count_between(t + 3_600_000, t, 100), 0);
}

#[test]
fn cron_errors_say_what_is_wrong_and_what_is_expected() {
    let compile = |expr: &str, tz: Option<&str>| {
        Schedule::Cron {
            expr: expr.into(),
            tz: tz.map(Into::into),
            stagger_ms: None,
        }
        .compile("UTC")
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        compile("not a cron", None),
        "cron expression \"not a cron\": expected 5 space-separated fields (minute hour \
         day-of-month month day-of-week), 6 with seconds first, or 7 with a year last, \
         e.g. \"0 3 * * *\" for 03:00 every day; found 3"
    );
    for (expr, why) in [
        ("", "found 0"),
        ("* * * * * * * *", "found 8"),
        (
            "61 * * * *",
            "number out of bounds; the fields are minute 0-59, hour 0-23",
        ),
        ("0 25 * * *", "number out of bounds; the fields are"),
        ("*/0 * * * *", "step cannot be zero; the fields are"),
        (
            "0 3 * * FUNDAY",
            ": contains illegal character 'F' in part 'FUNDAY'; the fields are",
        ),
        ("0/5 * * * *", "Use \"*/5\" for wildcard steps"),
        (
            "@fortnightly",
            "unknown nickname; expected @yearly, @annually, @monthly",
        ),
        (
            "0 0 30 2 *",
            "it matches no date after 1970 (such as 30 February",
        ),
        ("0 0 0 1 1 * 1969", "it matches no date after 1970"),
    ] {
        let msg = compile(expr, None);
        assert!(
            msg.starts_with(&format!("cron expression {expr:?}: ")),
            "{msg}"
        );
        assert!(msg.contains(why), "{expr}: {msg}");
    }
    assert_eq!(
        compile("0 3 * * *", Some("Mars/Base")),
        "unknown time zone \"Mars/Base\": use an IANA name such as Europe/Berlin, \
         America/New_York or UTC"
    );
    // Zone names are spelled as in the tz database.
    assert!(compile("0 3 * * *", Some("europe/berlin")).starts_with("unknown time zone"));
}

// ---- DST (instants listed in the crate docs) ----

const NY: &str = "America/New_York";
const BERLIN: &str = "Europe/Berlin";

#[test]
fn dst_new_york_daily_0230_on_spring_forward_day_fires_at_0300_edt() {
    // 2026-03-08: 01:59:59 EST is followed by 03:00:00 EDT; 02:30 does not exist.
    let c = cron("30 2 * * *", NY);
    assert_eq!(
        fires(&c, utc(2026, 3, 6, 12, 0, 0), 3),
        [
            "2026-03-07T07:30:00.000Z", // 02:30 EST
            "2026-03-08T07:00:00.000Z", // 03:00 EDT, the instant of the jump
            "2026-03-09T06:30:00.000Z", // 02:30 EDT
        ]
    );
    assert_eq!(fires_on_local_day(&c, NY, 2026, 3, 8), 1);
}

#[test]
fn dst_new_york_hourly_on_spring_forward_day() {
    let c = cron("0 * * * *", NY);
    assert_eq!(
        fires(&c, utc(2026, 3, 8, 4, 30, 0), 4),
        [
            "2026-03-08T05:00:00.000Z", // 00:00 EST
            "2026-03-08T06:00:00.000Z", // 01:00 EST
            "2026-03-08T07:00:00.000Z", // 03:00 EDT, also standing for the missing 02:00
            "2026-03-08T08:00:00.000Z", // 04:00 EDT
        ]
    );
    assert_eq!(fires_on_local_day(&c, NY, 2026, 3, 8), 23);
}

#[test]
fn dst_new_york_half_hourly_collapses_the_missing_slots_into_one_fire() {
    let c = cron("*/30 * * * *", NY);
    assert_eq!(
        fires(&c, utc(2026, 3, 8, 6, 15, 0), 3),
        [
            "2026-03-08T06:30:00.000Z", // 01:30 EST
            "2026-03-08T07:00:00.000Z", // 03:00 EDT: 02:00, 02:30 and 03:00 in one fire
            "2026-03-08T07:30:00.000Z", // 03:30 EDT
        ]
    );
}

#[test]
fn dst_new_york_daily_0130_on_fall_back_day_fires_once_at_the_first_pass() {
    // 2026-11-01: 01:59:59 EDT is followed by 01:00:00 EST; 01:00–01:59 happens twice.
    let c = cron("30 1 * * *", NY);
    assert_eq!(
        fires(&c, utc(2026, 10, 30, 12, 0, 0), 3),
        [
            "2026-10-31T05:30:00.000Z", // 01:30 EDT
            "2026-11-01T05:30:00.000Z", // 01:30 EDT, the first pass; not 06:30 (01:30 EST)
            "2026-11-02T06:30:00.000Z", // 01:30 EST
        ]
    );
    // Asked from inside the second pass (01:10 EST), the repeated 01:30 is not fired again.
    assert_eq!(
        c.next_after(utc(2026, 11, 1, 6, 10, 0))
            .map(format_at)
            .as_deref(),
        Some("2026-11-02T06:30:00.000Z")
    );
    assert_eq!(fires_on_local_day(&c, NY, 2026, 11, 1), 1);
}

#[test]
fn dst_new_york_daily_0230_on_fall_back_day() {
    let c = cron("30 2 * * *", NY);
    assert_eq!(
        fires(&c, utc(2026, 10, 30, 12, 0, 0), 3),
        [
            "2026-10-31T06:30:00.000Z", // 02:30 EDT
            "2026-11-01T07:30:00.000Z", // 02:30 EST (02:00–02:59 happens once)
            "2026-11-02T07:30:00.000Z", // 02:30 EST
        ]
    );
    assert_eq!(fires_on_local_day(&c, NY, 2026, 11, 1), 1);
}

#[test]
fn dst_new_york_hourly_on_fall_back_day() {
    let c = cron("0 * * * *", NY);
    assert_eq!(
        fires(&c, utc(2026, 11, 1, 3, 30, 0), 4),
        [
            "2026-11-01T04:00:00.000Z", // 00:00 EDT
            "2026-11-01T05:00:00.000Z", // 01:00 EDT
            "2026-11-01T07:00:00.000Z", // 02:00 EST; 01:00 EST (06:00 UTC) repeats a slot
            "2026-11-01T08:00:00.000Z", // 03:00 EST
        ]
    );
    for inside in [
        utc(2026, 11, 1, 5, 0, 0),
        utc(2026, 11, 1, 5, 59, 59),
        utc(2026, 11, 1, 6, 0, 0),
        utc(2026, 11, 1, 6, 30, 0),
    ] {
        assert_eq!(c.next_after(inside), Some(utc(2026, 11, 1, 7, 0, 0)));
    }
    assert_eq!(fires_on_local_day(&c, NY, 2026, 11, 1), 24);
}

#[test]
fn dst_second_granularity_does_not_replay_the_repeated_hour() {
    let c = cron("*/20 * * * * *", NY);
    // From 01:59:40 EDT the next unused wall slot is 02:00:00, which comes after the repeated
    // hour: 02:00:00 EST. The slots of 01:00:00–01:59:40 EST were used by the first pass.
    assert_eq!(
        fires(&c, utc(2026, 11, 1, 5, 59, 40), 2),
        ["2026-11-01T07:00:00.000Z", "2026-11-01T07:00:20.000Z"]
    );
    // From inside the second pass the same.
    assert_eq!(
        c.next_after(utc(2026, 11, 1, 6, 0, 0)),
        Some(utc(2026, 11, 1, 7, 0, 0))
    );
}

#[test]
fn dst_berlin_daily_0230_on_spring_forward_day_fires_at_0300_cest() {
    // 2026-03-29: 01:59:59 CET is followed by 03:00:00 CEST; 02:30 does not exist.
    let c = cron("30 2 * * *", BERLIN);
    assert_eq!(
        fires(&c, utc(2026, 3, 27, 12, 0, 0), 3),
        [
            "2026-03-28T01:30:00.000Z", // 02:30 CET
            "2026-03-29T01:00:00.000Z", // 03:00 CEST, the instant of the jump
            "2026-03-30T00:30:00.000Z", // 02:30 CEST
        ]
    );
    assert_eq!(fires_on_local_day(&c, BERLIN, 2026, 3, 29), 1);
}

#[test]
fn dst_daily_jobs_fire_exactly_once_every_local_day_of_a_year() {
    // Zones with 1 h changes at 02:00 (New York), at 02:00/03:00 (Berlin), a 30-min change
    // (Lord Howe), a change at midnight (Santiago) and a 45-min offset (Chatham).
    let zones = [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Pacific/Chatham",
    ];
    let exprs = [
        "30 2 * * *",
        "0 0 * * *",
        "15 1 * * *",
        "45 23 * * *",
        "0 12 * * *",
    ];
    for zone in zones {
        let tz: Tz = zone.parse().unwrap();
        for expr in exprs {
            let c = cron(expr, zone);
            let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
            let (start, end) = (utc(2026, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0));
            let mut t = start;
            while let Some(next) = c.next_after(t) {
                assert!(next > t);
                if next > end {
                    break;
                }
                let local = DateTime::from_timestamp_millis(next)
                    .unwrap()
                    .with_timezone(&tz);
                *per_day.entry(local.date_naive()).or_default() += 1;
                t = next;
            }
            // Every local date strictly inside the year fired exactly once.
            let first = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
            let last = NaiveDate::from_ymd_opt(2026, 12, 30).unwrap();
            let mut day = first;
            while day <= last {
                assert_eq!(per_day.get(&day), Some(&1), "{zone} {expr} {day}");
                day = day.succ_opt().unwrap();
            }
        }
    }
}

// ---- backoff, host zone ----

#[test]
fn backoff_steps_then_caps_at_an_hour() {
    let steps: Vec<u64> = (0..8).map(backoff_ms).collect();
    assert_eq!(
        steps,
        [
            0, 30_000, 60_000, 300_000, 900_000, 3_600_000, 3_600_000, 3_600_000
        ]
    );
    assert_eq!(backoff_ms(u32::MAX), 3_600_000);
}

#[test]
fn host_timezone_from_prefers_tz_then_etc_timezone_then_the_localtime_link() {
    let link = Some("/usr/share/zoneinfo/Europe/Lisbon");
    assert_eq!(
        host_timezone_from(Some("Europe/Berlin"), Some("Asia/Tokyo"), link),
        "Europe/Berlin"
    );
    assert_eq!(
        host_timezone_from(Some(":America/New_York"), None, link),
        "America/New_York"
    );
    assert_eq!(
        host_timezone_from(Some(":/usr/share/zoneinfo/Asia/Tokyo"), None, link),
        "Asia/Tokyo"
    );
    // A POSIX rule or junk in $TZ falls through to the files.
    assert_eq!(
        host_timezone_from(
            Some("CET-1CEST,M3.5.0,M10.5.0/3"),
            Some("Europe/Paris\n"),
            link
        ),
        "Europe/Paris"
    );
    assert_eq!(
        host_timezone_from(Some(""), Some("\n  Europe/Paris  \n"), link),
        "Europe/Paris"
    );
    assert_eq!(
        host_timezone_from(None, Some("Not/AZone"), link),
        "Europe/Lisbon"
    );
    assert_eq!(host_timezone_from(None, None, link), "Europe/Lisbon");
    assert_eq!(
        host_timezone_from(None, None, Some("../usr/share/zoneinfo/posix/Asia/Kolkata")),
        "Asia/Kolkata"
    );
    assert_eq!(
        host_timezone_from(None, None, Some("/etc/localtime.bak")),
        "UTC"
    );
    assert_eq!(host_timezone_from(None, None, None), "UTC");
    assert_eq!(host_timezone_from(Some("UTC"), None, link), "UTC");
}

#[test]
fn host_timezone_is_a_known_zone() {
    let name = host_timezone();
    assert!(name.parse::<Tz>().is_ok(), "{name}");
}

// ---- cost ----

#[test]
fn ten_thousand_compiled_cron_schedules_answer_next_after_quickly() {
    let zones = ["UTC", NY, BERLIN, "Asia/Tokyo", "Australia/Sydney"];
    let schedules: Vec<Schedule> = (0..10_000)
        .map(|i| Schedule::Cron {
            expr: match i % 4 {
                0 => format!("{} {} * * *", i % 60, (i / 60) % 24),
                1 => format!("*/{} * * * *", 1 + i % 30),
                2 => format!("{} {} * * MON-FRI", i % 60, (i / 7) % 24),
                _ => format!("{} {} {} * * *", i % 60, (i / 3) % 60, (i / 11) % 24),
            },
            tz: Some(zones[i % zones.len()].to_string()),
            stagger_ms: Some((i as u64 * 37) % 300_000),
        })
        .collect();
    let started = Instant::now();
    let compiled: Vec<Compiled> = schedules
        .iter()
        .map(|s| s.compile("UTC").unwrap())
        .collect();
    let compile_time = started.elapsed();
    // Around the New York fall-back change, where the zone work is heaviest.
    let now = utc(2026, 11, 1, 5, 30, 0);
    let started = Instant::now();
    let mut checksum = 0i64;
    for c in &compiled {
        let next = c.next_after(now).unwrap();
        assert!(next > now);
        checksum = checksum.wrapping_add(next);
    }
    let query_time = started.elapsed();
    println!(
        "10,000 cron schedules: compile {compile_time:?}, next_after {query_time:?} \
         ({:?} each; checksum {checksum})",
        query_time / 10_000
    );
}

#[test]
fn compiled_schedules_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Compiled>();
    assert_send_sync::<Schedule>();
    assert_send_sync::<ScheduleError>();
}

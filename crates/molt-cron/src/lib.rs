//! Cron schedules and their arithmetic: when does a job fire next, and how many fires fell in
//! a span of time.
//!
//! A job's [`Schedule`] has the wire shape of OpenClaw's `CronJob.schedule`, a union on `kind`:
//!
//! - `{"kind":"at","at":"2026-12-24T08:00:00.000Z"}`: once, at an instant;
//! - `{"kind":"every","everyMs":1800000,"anchorMs":1767225600000}`: at `anchor + k·every`;
//! - `{"kind":"cron","expr":"0 3 * * *","tz":"Europe/Berlin","staggerMs":0}`: a cron
//!   expression read on the wall clock of an IANA time zone (the host's when `tz` is absent).
//!
//! [`Schedule::compile`] checks a schedule once and returns a [`Compiled`] one, which answers
//! [`Compiled::next_after`] and [`Compiled::count_between`] on Unix milliseconds. Nothing here
//! reads the clock: the caller passes "now", so every answer is reproducible in a test. The one
//! function that reads the environment is [`host_timezone`]; its pure core is
//! [`host_timezone_from`].
//!
//! Helpers for the CLI and the store: [`parse_at`] and [`format_at`] (the normalized wire form
//! of an `at`), [`parse_every`] (`"2h30m"` → ms) and [`backoff_ms`] (the delay after
//! consecutive errors).
//!
//! # Cron expressions
//!
//! Expressions are parsed by the [`croner`] crate, the Rust port of the JavaScript library that
//! OpenClaw uses, so the dialect is the same:
//!
//! - 5 fields `minute hour day-of-month month day-of-week`, 6 with a seconds field first, or 7
//!   with a year field last; a 5-field expression fires at second 0;
//! - lists, ranges and steps (`1,15`, `9-17`, `*/10`), month and weekday names (`JAN`, `MON`),
//!   `L` (last day / last weekday), `#` (nth weekday), `W` (nearest weekday), `?` as `*`;
//! - day-of-month and day-of-week are OR-ed as in Vixie cron, unless day-of-week starts with
//!   `+` (AND);
//! - the nicknames `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily` and `@hourly`.
//!
//! An expression that matches no date at all (`0 0 30 2 *`, 30 February) is refused by
//! [`Schedule::compile`], so a compiled schedule never searches in vain for long.
//!
//! # Time zones and DST
//!
//! A cron expression is matched against the **wall clock** of its zone, and each wall-clock
//! time it matches fires **exactly once**. Where daylight saving time makes a wall-clock time
//! happen zero times or twice, one rule applies to every expression:
//!
//! - **A time that does not exist** (the clock jumps forward over it) fires at the first instant
//!   after the jump, which is the instant of the change itself: on 2026-03-08 in
//!   `America/New_York` the clock goes from 01:59:59 EST to 03:00:00 EDT, so `30 2 * * *` fires
//!   at 03:00 EDT (07:00 UTC) that day. A daily job therefore never skips a day. Several
//!   missing times (for example the 02:00 and 02:30 of `*/30 * * * *`) fire once together at
//!   that instant, which may also be a regular fire (03:00): one fire then stands for all of
//!   them, never several at the same instant.
//! - **A time that happens twice** (the clock goes back over it) fires once, at its **first**
//!   occurrence, the one still in daylight time: on 2026-11-01 in `America/New_York` 01:00–01:59
//!   happens in EDT and again in EST, so `30 1 * * *` fires at 01:30 EDT (05:30 UTC) and not at
//!   01:30 EST (06:30 UTC). A daily job therefore never fires twice in one day.
//!
//! The rule is about wall-clock slots, not elapsed time, and that shows in hourly and shorter
//! expressions: `0 * * * *` in `America/New_York` fires 23 times on the spring-forward day
//! (…, 01:00 EST, 03:00 EDT, …: the missing 02:00 and the real 03:00 are one fire) and 24 times
//! on the fall-back day (…, 01:00 EDT, 02:00 EST, …: two real hours apart, because 01:00 EST
//! repeats a slot that has fired). A job that must run every real hour uses an `every`
//! schedule, which counts elapsed milliseconds and knows nothing of zones.
//!
//! The instants the tests pin (module `tests`, names starting with `dst_`):
//!
//! | zone, day | expression | fires (UTC) |
//! | --- | --- | --- |
//! | New York, 2026-03-08 (spring forward) | `30 2 * * *` | 03-07 07:30, **03-08 07:00** (03:00 EDT), 03-09 06:30 |
//! | New York, 2026-03-08 | `0 * * * *` | 05:00, 06:00, **07:00** (03:00 EDT), 08:00 |
//! | New York, 2026-11-01 (fall back) | `30 1 * * *` | 10-31 05:30, **11-01 05:30** (01:30 EDT), 11-02 06:30 |
//! | New York, 2026-11-01 | `30 2 * * *` | 10-31 06:30, 11-01 07:30 (02:30 EST), 11-02 07:30 |
//! | New York, 2026-11-01 | `0 * * * *` | 04:00, **05:00** (01:00 EDT), **07:00** (02:00 EST) |
//! | Berlin, 2026-03-29 (spring forward) | `30 2 * * *` | 03-28 01:30, **03-29 01:00** (03:00 CEST), 03-30 00:30 |
//!
//! An `at` written without an offset and read in a zone ([`parse_at`]) follows the same rule:
//! a missing time means the instant of the change, a repeated one its first occurrence.
//!
//! `staggerMs` shifts every fire of a cron schedule by a fixed amount after the rule above
//! has picked the instant.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![warn(missing_docs)]

mod at;
mod every;
mod expr;
mod job;
mod zone;

#[cfg(test)]
mod tests;

pub use at::{format_at, parse_at};
pub use every::{MIN_EVERY_MS, parse_every};
pub use job::{JobSpec, Payload};
pub use zone::{host_timezone, host_timezone_from};

use serde::{Deserialize, Serialize};

/// A job's schedule: OpenClaw's `CronJob.schedule`, a union tagged by `kind`, with camelCase
/// fields. Absent optional fields are left out when serialized.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Schedule {
    /// Once, at an instant: ISO-8601 / RFC 3339. The normalized form is [`format_at`]'s
    /// (`"2026-12-24T08:00:00.000Z"`); a value without an offset is read as UTC, as on
    /// OpenClaw's wire (the CLI resolves local times with [`parse_at`] before storing).
    At {
        /// The instant, as text.
        at: String,
    },
    /// Every `every_ms` milliseconds, at `anchor_ms + k·every_ms` for k ≥ 0.
    #[serde(rename_all = "camelCase")]
    Every {
        /// The interval, at least [`MIN_EVERY_MS`].
        every_ms: u64,
        /// The first fire time (Unix ms). The gateway sets it to the job's creation time; when
        /// absent, fires are aligned to the Unix epoch (every 1 h fires on the UTC hour).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anchor_ms: Option<i64>,
    },
    /// A cron expression, read on the wall clock of `tz`.
    #[serde(rename_all = "camelCase")]
    Cron {
        /// 5, 6 or 7 fields; see the crate docs.
        expr: String,
        /// An IANA zone such as `Europe/Berlin`; the host's zone when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tz: Option<String>,
        /// A fixed offset added to every fire (the caller picks it, e.g. to spread top-of-hour
        /// jobs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stagger_ms: Option<u64>,
    },
}

/// Why a schedule (or a piece of one) was refused. Each message names the bad value, says what
/// is wrong and what is expected, so it can be shown to a user as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A cron expression that does not parse or never matches.
    #[error("cron expression {expr:?}: {reason}")]
    Cron {
        /// The expression as given.
        expr: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A time zone name that is not in the IANA database.
    #[error(
        "unknown time zone {0:?}: use an IANA name such as Europe/Berlin, America/New_York or UTC"
    )]
    UnknownZone(String),
    /// An `at` time that does not parse.
    #[error("time {value:?}: {reason}")]
    At {
        /// The value as given.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// An interval that does not parse or is out of range.
    #[error("interval {value:?}: {reason}")]
    Every {
        /// The value as given (for `everyMs`, the number).
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A `staggerMs` too large to add to a time.
    #[error("staggerMs {0}: too large; expected at most {max} ms", max = i64::MAX)]
    Stagger(u64),
}

/// A validated schedule, cheap to query: the expression is parsed and the zone resolved once.
#[derive(Clone, Debug)]
pub struct Compiled {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    At(i64),
    Every { every: i64, anchor: i64 },
    Cron(Box<expr::CronSchedule>),
}

impl Schedule {
    /// Checks the schedule and prepares it for queries. `host_tz` is the zone a `cron` schedule
    /// without `tz` is read in (normally [`host_timezone`]).
    ///
    /// Refused: a cron expression that does not parse or matches no date, an unknown zone
    /// (`tz`, or `host_tz` when it is needed), an `at` that does not parse, an `everyMs` below
    /// [`MIN_EVERY_MS`] or above `i64::MAX`, and a `staggerMs` above `i64::MAX`.
    pub fn compile(&self, host_tz: &str) -> Result<Compiled, ScheduleError> {
        let kind = match self {
            // The wire format reads an offset-less `at` as UTC.
            Schedule::At { at } => Kind::At(parse_at(at, "UTC")?),
            Schedule::Every {
                every_ms,
                anchor_ms,
            } => {
                let every = every::check_every_ms(*every_ms, &every_ms.to_string())?;
                Kind::Every {
                    every,
                    anchor: anchor_ms.unwrap_or(0),
                }
            }
            Schedule::Cron {
                expr,
                tz,
                stagger_ms,
            } => {
                let zone = zone::parse_zone(tz.as_deref().unwrap_or(host_tz))?;
                let stagger = match stagger_ms {
                    None => 0,
                    Some(s) => i64::try_from(*s).map_err(|_| ScheduleError::Stagger(*s))?,
                };
                Kind::Cron(Box::new(expr::CronSchedule::new(expr, zone, stagger)?))
            }
        };
        Ok(Compiled { kind })
    }
}

impl Compiled {
    /// The first fire time strictly after `after_ms` (Unix ms), or `None`: an `at` at or before
    /// `after_ms`, an expression that never fires again (a year field in the past), or a time
    /// beyond what can be represented (far outside ±262,000 years).
    ///
    /// For `every` this is O(1) arithmetic; for `cron` it is one expression search, plus a
    /// handful of zone look-ups on a day whose clock changes.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match &self.kind {
            Kind::At(at) => (*at > after_ms).then_some(*at),
            Kind::Every { every, anchor } => every::next_after(*every, *anchor, after_ms),
            Kind::Cron(cron) => cron.next_after(after_ms),
        }
    }

    /// How many fire times fall in `(from_ms, to_ms]`, counting at most `cap`: the missed fires
    /// between the last one handled and now. O(1) for `at` and `every`; at most `cap` searches
    /// for `cron`.
    pub fn count_between(&self, from_ms: i64, to_ms: i64, cap: usize) -> usize {
        if to_ms <= from_ms || cap == 0 {
            return 0;
        }
        match &self.kind {
            Kind::At(at) => usize::from(from_ms < *at && *at <= to_ms),
            Kind::Every { every, anchor } => {
                every::count_between(*every, *anchor, from_ms, to_ms, cap)
            }
            Kind::Cron(_) => {
                let mut count = 0;
                let mut t = from_ms;
                while count < cap {
                    match self.next_after(t) {
                        Some(next) if next <= to_ms => {
                            count += 1;
                            t = next;
                        }
                        _ => break,
                    }
                }
                count
            }
        }
    }

    /// Whether the schedule fires at most once (an `at`).
    pub fn is_one_shot(&self) -> bool {
        matches!(self.kind, Kind::At(_))
    }

    /// The IANA zone a `cron` schedule is read in (its `tz`, or the host zone it was compiled
    /// with); `None` for `at` and `every`, which do not depend on a zone.
    pub fn zone(&self) -> Option<&'static str> {
        match &self.kind {
            Kind::Cron(cron) => Some(cron.zone_name()),
            _ => None,
        }
    }
}

/// The delay before retrying a recurring job after `consecutive_errors` failures in a row:
/// 0 → none, 1 → 30 s, 2 → 1 min, 3 → 5 min, 4 → 15 min, 5 or more → 60 min. A success resets
/// the count (the caller's job).
pub fn backoff_ms(consecutive_errors: u32) -> u64 {
    const SECOND: u64 = 1000;
    const MINUTE: u64 = 60 * SECOND;
    match consecutive_errors {
        0 => 0,
        1 => 30 * SECOND,
        2 => MINUTE,
        3 => 5 * MINUTE,
        4 => 15 * MINUTE,
        _ => 60 * MINUTE,
    }
}

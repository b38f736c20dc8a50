//! `cron` schedules: croner matches the expression on a bare wall clock, and [`crate::zone`]
//! maps each wall-clock match to an instant with the crate's DST rule.
//!
//! croner is asked about naive wall-clock times only (`NaiveDateTime`), so its own DST
//! handling never comes into play and the one rule in the crate docs applies to every
//! expression alike.

use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;

use crate::ScheduleError;
use crate::zone;

const FIELDS: &str = "expected 5 space-separated fields (minute hour day-of-month month \
                      day-of-week), 6 with seconds first, or 7 with a year last, \
                      e.g. \"0 3 * * *\" for 03:00 every day";

/// A parsed expression with its zone and stagger.
#[derive(Clone, Debug)]
pub(crate) struct CronSchedule {
    cron: Cron,
    tz: Tz,
    stagger_ms: i64,
}

impl CronSchedule {
    pub(crate) fn new(expr: &str, tz: Tz, stagger_ms: i64) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError::Cron {
            expr: expr.to_string(),
            reason,
        };
        let fields = expr.split_whitespace().count();
        // Nicknames (@daily) are one word; croner expands them.
        if !expr.trim_start().starts_with('@') && !(5..=7).contains(&fields) {
            return Err(err(format!("{FIELDS}; found {fields}")));
        }
        let cron = Cron::from_str(expr).map_err(|e| {
            if expr.trim_start().starts_with('@') {
                err(
                    "unknown nickname; expected @yearly, @annually, @monthly, @weekly, @daily \
                     or @hourly, or 5 to 7 fields"
                        .to_string(),
                )
            } else {
                err(describe(&e))
            }
        })?;
        // Refuse an expression that matches no date at all (30 February), so that queries
        // never pay for a search through the whole calendar.
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default();
        if next_wall(&cron, epoch).is_none() {
            return Err(err(
                "it matches no date after 1970 (such as 30 February, or a year in the past); \
                 check the day-of-month, month, day-of-week and year fields"
                    .to_string(),
            ));
        }
        Ok(Self {
            cron,
            tz,
            stagger_ms,
        })
    }

    pub(crate) fn zone_name(&self) -> &'static str {
        self.tz.name()
    }

    pub(crate) fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Fire = match + stagger, so a fire after `after_ms` is a match after `after_ms - stagger`.
        let base_after = after_ms.checked_sub(self.stagger_ms)?;
        // Matches fall on whole seconds: one is after `base_after` iff it is after its second.
        let after_s = base_after.div_euclid(1000);
        let mut wall = zone::search_start(self.tz, after_s)?;
        // `search_start` makes the first match land after `after_s`; the loop only guards
        // against a zone whose changes come closer together than any real one.
        for _ in 0..4 {
            let found = next_wall(&self.cron, wall)?;
            let secs = zone::resolve_wall(self.tz, found)?;
            if secs > after_s {
                return secs.checked_mul(1000)?.checked_add(self.stagger_ms);
            }
            wall = found;
        }
        None
    }
}

/// The first wall-clock time strictly after `wall` that the expression matches.
fn next_wall(cron: &Cron, wall: NaiveDateTime) -> Option<NaiveDateTime> {
    cron.find_next_occurrence(&wall, false).ok()
}

const RANGES: &str = "the fields are minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 \
                      or JAN-DEC, day-of-week 0-7 or SUN-SAT (0 and 7 are Sunday), with an \
                      optional seconds field 0-59 first and year last";

/// croner's message without its category prefix, then the field layout for orientation.
fn describe(e: &CronError) -> String {
    if let CronError::EmptyPattern = e {
        return format!("it is empty; {FIELDS}");
    }
    let text = e.to_string();
    let detail = [
        "Component error: ",
        "Invalid pattern: ",
        "Pattern contains illegal characters: ",
    ]
    .iter()
    .find_map(|p| text.strip_prefix(p))
    .unwrap_or(&text);
    let detail = detail
        .strip_prefix("CronPattern ")
        .unwrap_or(detail)
        .trim_end_matches('.');
    // croner capitalizes its sentences; here they follow a colon.
    let mut chars = detail.chars();
    let detail = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{detail}; {RANGES}")
}

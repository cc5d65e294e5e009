//! Evaluation: is an instant inside the calling windows of every candidate zone, and if not,
//! the earliest instant that is (`next_allowed_at`).
//!
//! Per zone, the allowed local hours of a date are the intersection of every applicable
//! week's hours (most restrictive wins); local bounds become instants through the zone's rules
//! (jiff, bundled tzdb; a local time skipped by a DST change maps forward, as `compatible`
//! does). Across zones the answer is a fixpoint: while some zone refuses the candidate instant,
//! move it to that zone's next opening; each move goes to an instant no earlier one could beat,
//! so the first instant every zone accepts is the earliest allowed one.

use super::pack::{Hours, Minute, Week};
use super::table::tables;
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// How far ahead `next_allowed_at` is searched (past it: no next instant is given).
pub const HORIZON_DAYS: i64 = 14;
const DAY_MS: i64 = 86_400_000;

/// What the windows say of one call at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Allowed,
    /// Outside the windows; the earliest allowed instant (unix ms) within the horizon.
    Outside {
        next_allowed_at_ms: Option<i64>,
    },
    /// No time zone could be found for the number: the campaign's policy decides.
    UnknownLocation,
}

/// Markers of [`Answer::code`] (an OUTSIDE answer with a next instant is that instant, kept
/// above every marker).
pub(super) const CODE_ALLOWED: i64 = i64::MIN;
const CODE_NEVER: i64 = i64::MIN + 1;
pub(super) const CODE_UNKNOWN: i64 = i64::MIN + 2;
/// A code no answer has: an empty cache slot.
pub(super) const CODE_NONE: i64 = i64::MIN + 3;

impl Answer {
    /// The answer as one i64, so caches hold it in a word: the next allowed instant, or a
    /// marker (instants at or below the markers are 292 million years ago).
    #[inline]
    pub(super) fn code(self) -> i64 {
        match self {
            Answer::Allowed => CODE_ALLOWED,
            Answer::Outside {
                next_allowed_at_ms: None,
            } => CODE_NEVER,
            Answer::Outside {
                next_allowed_at_ms: Some(next),
            } => next.max(CODE_NONE + 1),
            Answer::UnknownLocation => CODE_UNKNOWN,
        }
    }

    /// The answer of a [`Answer::code`] other than [`CODE_NONE`].
    #[inline]
    pub(super) fn from_code(code: i64) -> Answer {
        match code {
            CODE_ALLOWED => Answer::Allowed,
            CODE_NEVER => Answer::Outside {
                next_allowed_at_ms: None,
            },
            CODE_UNKNOWN => Answer::UnknownLocation,
            next => Answer::Outside {
                next_allowed_at_ms: Some(next),
            },
        }
    }
}

/// The hours every week allows on `date`. A holiday row replaces the weekday's row on the
/// scope's holidays; a year the holiday data does not cover counts as a holiday (fail closed).
fn hours_on(weeks: &[&Week], date: Date) -> Hours {
    let mut hours = Hours::all_day();
    for week in weeks {
        let mut today = &week.days[date.weekday().to_monday_zero_offset() as usize];
        if let (Some(holiday), Some(region)) = (&week.holiday, &week.holiday_region)
            && tables()
                .is_holiday(region, date.year(), date.month(), date.day())
                .unwrap_or(true)
        {
            today = holiday;
        }
        hours = hours.intersect(today);
        if hours.0.is_empty() {
            break;
        }
    }
    hours
}

/// The instant of local `minute` on `date` in `zone` (24:00 is the next day's midnight).
fn instant(zone: &TimeZone, date: Date, minute: Minute) -> Option<Timestamp> {
    let (date, minute) = if minute >= 1440 {
        (date.tomorrow().ok()?, minute - 1440)
    } else {
        (date, minute)
    };
    let local = DateTime::new(
        date.year(),
        date.month(),
        date.day(),
        (minute / 60) as i8,
        (minute % 60) as i8,
        0,
        0,
    )
    .ok()?;
    zone.to_ambiguous_timestamp(local).compatible().ok()
}

/// In one zone: `Ok(end of the allowed interval)` when `at` is allowed, else the zone's next opening after `at`
/// (`None` past `limit`).
fn zone_check(
    zone: &TimeZone,
    weeks: &[&Week],
    at: Timestamp,
    limit: Timestamp,
) -> Result<Timestamp, Option<Timestamp>> {
    let mut date = zone.to_datetime(at).date();
    loop {
        for &(start, end) in &hours_on(weeks, date).0 {
            let (Some(start), Some(end)) = (instant(zone, date, start), instant(zone, date, end))
            else {
                return Err(None);
            };
            if end <= at {
                continue;
            }
            return if start <= at {
                Ok(end)
            } else {
                Err(Some(start))
            };
        }
        date = date.tomorrow().map_err(|_| None)?;
        match instant(zone, date, 0) {
            Some(midnight) if midnight <= limit => {}
            _ => return Err(None),
        }
    }
}

/// The answer for a call at `at_ms` to a number in every one of `zones`, under `weeks`, and
/// until when (unix ms, exclusive) the same answer holds for any later instant: the end of
/// the allowed interval, or the next allowed instant (nothing is allowed before it).
pub fn evaluate(zones: &[TimeZone], weeks: &[&Week], at_ms: i64) -> (Answer, i64) {
    if weeks.is_empty() {
        return (Answer::Allowed, i64::MAX);
    }
    if zones.is_empty() {
        return (Answer::UnknownLocation, i64::MAX);
    }
    // Nothing within the horizon: a later instant searches further, so hold it one minute.
    let outside_never = (
        Answer::Outside {
            next_allowed_at_ms: None,
        },
        at_ms.saturating_add(60_000),
    );
    let (Ok(at), Ok(limit)) = (
        Timestamp::from_millisecond(at_ms),
        Timestamp::from_millisecond(at_ms.saturating_add(HORIZON_DAYS * DAY_MS)),
    ) else {
        return outside_never;
    };
    let mut candidate = at;
    // Each round moves the candidate forward to some zone's opening; a handful of rounds
    // settle real data, the bound only guards against a pathological pack.
    for _ in 0..64 * zones.len() {
        let mut moved = false;
        let mut until = i64::MAX;
        for zone in zones {
            match zone_check(zone, weeks, candidate, limit) {
                Ok(end) => until = until.min(end.as_millisecond()),
                Err(Some(next)) if next <= limit => {
                    candidate = next;
                    moved = true;
                }
                Err(_) => return outside_never,
            }
        }
        if !moved {
            let next = candidate.as_millisecond();
            return if candidate == at {
                (Answer::Allowed, until)
            } else {
                (
                    Answer::Outside {
                        next_allowed_at_ms: Some(next),
                    },
                    next,
                )
            };
        }
    }
    outside_never
}

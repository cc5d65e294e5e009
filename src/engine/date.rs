//! Calendar days, the unit of registry freshness and consent expiry.
//!
//! A [`Day`] is a count of days since 1970-01-01 (UTC). Snapshot headers store source dates and
//! consent expiries as days, so a lookup "at a date" is an integer comparison.

use std::fmt;
use time::{Date, OffsetDateTime, macros::format_description};

/// Days since 1970-01-01, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

/// A date string that is not `YYYY-MM-DD`, or not a real calendar day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date '{input}': expected YYYY-MM-DD")]
pub struct DateError {
    pub input: String,
}

impl Day {
    /// Largest day a consent expiry can hold in a snapshot (u16 days: 2149-06-05).
    pub const MAX_EXPIRY: Day = Day(u16::MAX as i32 - 1);

    /// Today in UTC, from the system clock.
    pub fn today() -> Day {
        Day::from_unix_seconds(OffsetDateTime::now_utc().unix_timestamp())
    }

    pub fn from_unix_seconds(seconds: i64) -> Day {
        Day(seconds.div_euclid(86_400) as i32)
    }

    pub fn parse(input: &str) -> Result<Day, DateError> {
        let format = format_description!("[year]-[month]-[day]");
        let date = Date::parse(input.trim(), &format).map_err(|_| DateError {
            input: input.chars().take(32).collect(),
        })?;
        Ok(Day(date.to_julian_day()
            - Date::from_calendar_date(1970, time::Month::January, 1)
                .expect("1970-01-01 is a valid date")
                .to_julian_day()))
    }

    /// The calendar date, or `None` for days outside the `time` crate's range.
    pub fn to_date(self) -> Option<Date> {
        let epoch = Date::from_calendar_date(1970, time::Month::January, 1).ok()?;
        Date::from_julian_day(epoch.to_julian_day().checked_add(self.0)?).ok()
    }

    /// Whole days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: Day) -> i64 {
        i64::from(later.0) - i64::from(self.0)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_date() {
            Some(date) => write!(
                f,
                "{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
            None => write!(f, "day {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for text in ["1970-01-01", "2024-02-29", "2026-11-28", "2149-06-04"] {
            let day = Day::parse(text).unwrap();
            assert_eq!(day.to_string(), text);
        }
        assert_eq!(Day::parse("1970-01-02").unwrap(), Day(1));
        assert_eq!(Day::parse("1969-12-31").unwrap(), Day(-1));
    }

    #[test]
    fn rejects_non_dates() {
        for text in [
            "",
            "2023-02-29",
            "2024-13-01",
            "24-01-01",
            "2024/01/01",
            "tomorrow",
        ] {
            assert!(Day::parse(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn unix_seconds_floor_to_days() {
        assert_eq!(Day::from_unix_seconds(0), Day(0));
        assert_eq!(Day::from_unix_seconds(86_399), Day(0));
        assert_eq!(Day::from_unix_seconds(-1), Day(-1));
        assert_eq!(Day(10).days_until(Day(41)), 31);
    }
}

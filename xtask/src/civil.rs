//! Proleptic Gregorian calendar arithmetic on naive UTC seconds, so the generator needs no
//! date crate and cannot depend on the machine's clock or time zone.
//!
//! The day conversions are Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (<https://howardhinnant.github.io/date_algorithms.html>).

use std::fmt;

pub const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a calendar date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    // The algorithm counts years from March so the leap day is the last day of its year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The calendar date (year, month, day) of a count of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction: 1..=12 and 1..=31.
    (year, month as u32, day as u32)
}

/// Day of the week of a day count, Monday = 0 … Sunday = 6.
pub fn weekday(days: i64) -> u32 {
    // 1970-01-01 was a Thursday.
    (days + 3).rem_euclid(7) as u32
}

/// A naive UTC timestamp in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn days(self) -> i64 {
        self.0.div_euclid(SECS_PER_DAY)
    }

    /// `(year, month)`, the key of the month partition the timestamp falls in.
    pub fn year_month(self) -> (i64, u32) {
        let (y, m, _) = civil_from_days(self.days());
        (y, m)
    }
}

/// ISO 8601 without offset, `2026-03-01T08:15:30`: what CSV readers infer as a timestamp.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d) = civil_from_days(self.days());
        let secs = self.0.rem_euclid(SECS_PER_DAY);
        let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(days_from_civil(2026, 8, 31)), (2026, 8, 31));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2026-03-01 is a Sunday.
        assert_eq!(weekday(days_from_civil(2026, 3, 1)), 6);
    }

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        let start = days_from_civil(1900, 1, 1);
        for days in start..start + 146_097 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn formats_timestamps() {
        let t = Timestamp(days_from_civil(2026, 3, 1) * SECS_PER_DAY + 8 * 3600 + 15 * 60 + 30);
        assert_eq!(t.to_string(), "2026-03-01T08:15:30");
        assert_eq!(t.year_month(), (2026, 3));
    }
}

//! Calendar arithmetic for grains: where a period starts and ends, and the time spine.
//!
//! Periods are local calendar dates in the project's timezone; the SQL side cuts rows into
//! the same periods (see `sql::period_expr`), so the two must agree.

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};

use crate::project::model::Grain;

/// The first day of the period containing `date`.
pub fn period_start(date: NaiveDate, grain: Grain, week_start: Weekday) -> NaiveDate {
    match grain {
        Grain::Day => date,
        Grain::Week => {
            let back =
                (7 + date.weekday().num_days_from_monday() - week_start.num_days_from_monday()) % 7;
            date.checked_sub_days(Days::new(u64::from(back)))
                .unwrap_or(NaiveDate::MIN)
        }
        Grain::Month => date.with_day(1).expect("day 1 exists"),
        Grain::Quarter => {
            let month = (date.month0() / 3) * 3 + 1;
            NaiveDate::from_ymd_opt(date.year(), month, 1).expect("valid quarter start")
        }
        Grain::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1).expect("valid year start"),
    }
}

/// The first day of the period after the one starting at `start`; `None` past the end of
/// the calendar chrono can represent (dates in requests are bounded far before it, data
/// may not be).
pub fn checked_next_period(start: NaiveDate, grain: Grain) -> Option<NaiveDate> {
    match grain {
        Grain::Day => start.checked_add_days(Days::new(1)),
        Grain::Week => start.checked_add_days(Days::new(7)),
        Grain::Month => start.checked_add_months(Months::new(1)),
        Grain::Quarter => start.checked_add_months(Months::new(3)),
        Grain::Year => start.checked_add_months(Months::new(12)),
    }
}

/// The first day of the period after the one starting at `start` ([`NaiveDate::MAX`] past
/// the end of the calendar).
pub fn next_period(start: NaiveDate, grain: Grain) -> NaiveDate {
    checked_next_period(start, grain).unwrap_or(NaiveDate::MAX)
}

/// The period before the one starting at `start` ([`NaiveDate::MIN`] before the beginning
/// of the calendar).
pub fn previous_period(start: NaiveDate, grain: Grain) -> NaiveDate {
    match grain {
        Grain::Day => start.checked_sub_days(Days::new(1)),
        Grain::Week => start.checked_sub_days(Days::new(7)),
        Grain::Month => start.checked_sub_months(Months::new(1)),
        Grain::Quarter => start.checked_sub_months(Months::new(3)),
        Grain::Year => start.checked_sub_months(Months::new(12)),
    }
    .unwrap_or(NaiveDate::MIN)
}

/// Every period start from the period containing `first` to the one containing `last`.
///
/// Callers bound the length first ([`crate::query::bounds::Bounds::check_range`]): this walks it.
pub fn spine(
    first: NaiveDate,
    last: NaiveDate,
    grain: Grain,
    week_start: Weekday,
) -> Vec<NaiveDate> {
    let mut periods = Vec::new();
    let mut p = period_start(first, grain, week_start);
    while p <= last {
        periods.push(p);
        match checked_next_period(p, grain) {
            Some(next) => p = next,
            None => break,
        }
    }
    periods
}

/// Days from `week_start` to the following Monday: shifting a timestamp forward by this many
/// days makes DataFusion's Monday-based `date_trunc('week')` cut weeks at `week_start`.
pub fn week_shift_days(week_start: Weekday) -> u32 {
    (7 - week_start.num_days_from_monday()) % 7
}

/// An ISO-like label for a period: `2026-05-04` for days and weeks, `2026-05`, `2026-Q2`, `2026`.
pub fn label(start: NaiveDate, grain: Grain) -> String {
    match grain {
        Grain::Day | Grain::Week => start.format("%Y-%m-%d").to_string(),
        Grain::Month => start.format("%Y-%m").to_string(),
        Grain::Quarter => format!("{}-Q{}", start.year(), start.month0() / 3 + 1),
        Grain::Year => start.year().to_string(),
    }
}

// Days since the Unix epoch, as Arrow's Date32 counts them.
pub(crate) const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

pub(crate) fn from_days(days: i32) -> NaiveDate {
    EPOCH + chrono::TimeDelta::days(i64::from(days))
}

pub(crate) fn to_days(date: NaiveDate) -> i32 {
    i32::try_from((date - EPOCH).num_days()).expect("dates of the spine fit in Date32")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn weeks_start_on_the_configured_day() {
        // 2026-05-06 is a Wednesday.
        assert_eq!(
            period_start(d("2026-05-06"), Grain::Week, Weekday::Mon),
            d("2026-05-04")
        );
        assert_eq!(
            period_start(d("2026-05-06"), Grain::Week, Weekday::Sun),
            d("2026-05-03")
        );
        assert_eq!(
            period_start(d("2026-05-03"), Grain::Week, Weekday::Sun),
            d("2026-05-03")
        );
        assert_eq!(week_shift_days(Weekday::Mon), 0);
        assert_eq!(week_shift_days(Weekday::Sun), 1);
    }

    #[test]
    fn quarters_and_spines() {
        assert_eq!(
            period_start(d("2026-08-31"), Grain::Quarter, Weekday::Mon),
            d("2026-07-01")
        );
        let months = spine(d("2026-01-15"), d("2026-03-01"), Grain::Month, Weekday::Mon);
        assert_eq!(
            months,
            vec![d("2026-01-01"), d("2026-02-01"), d("2026-03-01")]
        );
        assert_eq!(label(d("2026-07-01"), Grain::Quarter), "2026-Q3");
    }
}

/// A period as people write it: `2026-W20` (ISO week), `2026-05`, `2026-Q2`, `2026`, or a
/// date `2026-05-14` (the period of the grain in use that contains it). Returns the grain the
/// text implies (none for a date) and a date inside the period.
pub fn parse_period(text: &str) -> Result<(Option<Grain>, NaiveDate), String> {
    let (grain, date) = parse_period_unbounded(text)?;
    crate::query::bounds::check_date(crate::query::request::Field::Period, date).map_err(|_| {
        format!(
            "`{}` is outside the calendar, which runs from {} to {}",
            text.trim(),
            crate::query::bounds::FIRST_DAY,
            crate::query::bounds::LAST_DAY
        )
    })?;
    Ok((grain, date))
}

fn parse_period_unbounded(text: &str) -> Result<(Option<Grain>, NaiveDate), String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a period: write 2026-W20, 2026-05, 2026-Q2, 2026 or a date 2026-05-14"
        )
    };
    if let Ok(date) = text.parse::<NaiveDate>() {
        return Ok((None, date));
    }
    if let Some((year, week)) = text.split_once("-W") {
        let (year, week) = (
            year.parse().map_err(|_| bad())?,
            week.parse().map_err(|_| bad())?,
        );
        let monday = NaiveDate::from_isoywd_opt(year, week, Weekday::Mon).ok_or_else(bad)?;
        return Ok((Some(Grain::Week), monday));
    }
    if let Some((year, quarter)) = text.split_once("-Q") {
        let (year, quarter): (i32, u32) = (
            year.parse().map_err(|_| bad())?,
            quarter.parse().map_err(|_| bad())?,
        );
        if !(1..=4).contains(&quarter) {
            return Err(bad());
        }
        let start = NaiveDate::from_ymd_opt(year, (quarter - 1) * 3 + 1, 1).ok_or_else(bad)?;
        return Ok((Some(Grain::Quarter), start));
    }
    if let Some((year, month)) = text.split_once('-') {
        let (year, month) = (
            year.parse().map_err(|_| bad())?,
            month.parse().map_err(|_| bad())?,
        );
        let start = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
        return Ok((Some(Grain::Month), start));
    }
    let year: i32 = text.parse().map_err(|_| bad())?;
    let start = NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(bad)?;
    Ok((Some(Grain::Year), start))
}

/// The same period a year earlier: 52 weeks (364 days) back for days and weeks, so that
/// weekdays line up; 12 months back otherwise.
pub fn year_before(start: NaiveDate, grain: Grain, week_start: Weekday) -> NaiveDate {
    match grain {
        Grain::Day | Grain::Week => period_start(
            start
                .checked_sub_days(Days::new(364))
                .unwrap_or(NaiveDate::MIN),
            grain,
            week_start,
        ),
        Grain::Month | Grain::Quarter | Grain::Year => start
            .checked_sub_months(Months::new(12))
            .unwrap_or(NaiveDate::MIN),
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn periods_parse_as_written() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(
            parse_period("2026-W20").unwrap(),
            (Some(Grain::Week), d("2026-05-11"))
        );
        assert_eq!(
            parse_period("2026-05").unwrap(),
            (Some(Grain::Month), d("2026-05-01"))
        );
        assert_eq!(
            parse_period("2026-Q3").unwrap(),
            (Some(Grain::Quarter), d("2026-07-01"))
        );
        assert_eq!(
            parse_period("2026").unwrap(),
            (Some(Grain::Year), d("2026-01-01"))
        );
        assert_eq!(parse_period("2026-05-14").unwrap(), (None, d("2026-05-14")));
        assert!(parse_period("2026-Q5").is_err());
        assert!(parse_period("May").is_err());
        assert_eq!(
            year_before(d("2026-05-11"), Grain::Week, Weekday::Mon),
            d("2025-05-12")
        );
    }
}

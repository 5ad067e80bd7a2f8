//! Caps on what one request may ask for, checked before its work starts: dates within a sane
//! calendar, time axes (series spines, retention cohorts and periods) no longer than
//! [`Bounds::max_periods`], retention tables no larger than [`Bounds::max_cells`], lists
//! (metrics, breakdowns, filter values, brackets) no longer than [`Bounds::max_list`].
//!
//! The CLI and the server share these checks through the [`Engine`](crate::Engine) (its
//! [`Engine::with_bounds`](crate::Engine::with_bounds)); a request over a cap is an
//! [`OverCap`] error naming the request's field and the setting that raises the cap, which
//! each front-end spells its own way (`--periods` on the command line, parameter `periods` on
//! the HTTP API) through [`crate::query::request::Spelling`].

use std::fmt;

use chrono::{Datelike, NaiveDate};

use crate::project::model::Grain;
use crate::query::request::{Field, Plain, Spelling};

/// The caps. [`Bounds::default`] holds for the CLI and the server unless changed with
/// `--max-periods`, `--max-cells` and `--max-list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Periods on any time axis of one request: a series' spine (its range in periods of its
    /// grain), a retention table's cohorts, its periods `0..=N` and the ends of its brackets.
    pub max_periods: u32,
    /// Cells of one retention table (cohorts × columns).
    pub max_cells: u64,
    /// Items of any list in one request: metrics, breakdown dimensions, filter values,
    /// retention brackets.
    pub max_list: usize,
}

/// Default of [`Bounds::max_periods`]: 27 years of days, 190 years of weeks.
pub const DEFAULT_MAX_PERIODS: u32 = 10_000;
/// Default of [`Bounds::max_cells`]: two years of daily cohorts by their first year of days
/// stays under it; a table this size takes some 50 MiB.
pub const DEFAULT_MAX_CELLS: u64 = 500_000;
/// Default of [`Bounds::max_list`].
pub const DEFAULT_MAX_LIST: usize = 100;

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            max_periods: DEFAULT_MAX_PERIODS,
            max_cells: DEFAULT_MAX_CELLS,
            max_list: DEFAULT_MAX_LIST,
        }
    }
}

/// The first day a request may name.
pub const FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(day) => day,
    None => panic!("1900-01-01 is a date"),
};
/// The last day a request may name.
pub const LAST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(day) => day,
    None => panic!("9999-12-31 is a date"),
};

/// A request over a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverCap {
    /// The request's fields at fault; the HTTP API names them as parameters (`from`), the
    /// CLI as options (`--from`).
    pub fields: Vec<Field>,
    /// What was asked, without the field names: `3000000 periods`.
    pub asked: String,
    /// The cap, in words: `at most 10000 periods`.
    pub cap: String,
    /// The setting that raises the cap (`max-periods`): `--max-periods` of `lodestar` and of
    /// `lodestar serve`. `None`: a fixed limit.
    pub setting: Option<&'static str>,
    /// What to ask instead.
    pub hint: &'static str,
}

impl OverCap {
    /// The message with the fields in `spelling`'s words (`--from` or parameter `from`).
    pub fn message(&self, spelling: &dyn Spelling) -> String {
        let fields: Vec<String> = self.fields.iter().map(|f| spelling.field(*f)).collect();
        let setting = self
            .setting
            .map(|s| format!(" (--{s})"))
            .unwrap_or_default();
        format!(
            "{}: {}, {}{setting}",
            fields.join(", "),
            self.asked,
            self.cap
        )
    }
}

impl OverCap {
    /// The message and its `hint:` line, as a front-end prints them.
    pub fn spelled(&self, spelling: &dyn Spelling) -> String {
        format!("{}\n  hint: {}", self.message(spelling), self.hint)
    }
}

impl fmt::Display for OverCap {
    /// Fields by their names ([`Plain`]); each front-end spells them its own way.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spelled(&Plain))
    }
}

impl std::error::Error for OverCap {}

/// Checks that `date`, given as `field`, is within [`FIRST_DAY`]..=[`LAST_DAY`].
pub fn check_date(field: Field, date: NaiveDate) -> Result<NaiveDate, OverCap> {
    if (FIRST_DAY..=LAST_DAY).contains(&date) {
        return Ok(date);
    }
    Err(OverCap {
        fields: vec![field],
        asked: format!("{} is outside the calendar", date.format("%Y-%m-%d")),
        cap: format!("which runs from {FIRST_DAY} to {LAST_DAY}"),
        setting: None,
        hint: "write a date between 1900-01-01 and 9999-12-31",
    })
}

/// The number of periods of `grain` from the one containing `first` to the one containing
/// `last` (inclusive), computed without walking them; 0 when `last` is before `first`.
pub fn periods_between(first: NaiveDate, last: NaiveDate, grain: Grain) -> u64 {
    if last < first {
        return 0;
    }
    let days = (last - first).num_days().unsigned_abs();
    let months = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
    let month_span = (months(last) - months(first)).unsigned_abs();
    match grain {
        Grain::Day => days + 1,
        // A range of d days touches at most d / 7 + 2 weeks; exact enough for a cap.
        Grain::Week => days / 7 + 1 + u64::from(!days.is_multiple_of(7)),
        Grain::Month => month_span + 1,
        Grain::Quarter => {
            let quarters = |d: NaiveDate| i64::from(d.year()) * 4 + i64::from(d.month0() / 3);
            (quarters(last) - quarters(first)).unsigned_abs() + 1
        }
        Grain::Year => u64::from((last.year() - first.year()).unsigned_abs()) + 1,
    }
}

impl Bounds {
    /// Checks a time axis of `periods` periods, asked through `fields`.
    pub fn check_periods(
        &self,
        fields: Vec<Field>,
        periods: u64,
        grain: Grain,
    ) -> Result<(), OverCap> {
        if periods <= u64::from(self.max_periods) {
            return Ok(());
        }
        Err(OverCap {
            fields,
            asked: format!("{periods} periods of a {grain} asked"),
            cap: format!("at most {}", self.max_periods),
            setting: Some("max-periods"),
            hint: "ask for a shorter range or a coarser grain",
        })
    }

    /// Checks a range from `first` to `last` at `grain`.
    pub fn check_range(
        &self,
        first: NaiveDate,
        last: NaiveDate,
        grain: Grain,
    ) -> Result<(), OverCap> {
        self.check_periods(
            vec![Field::From, Field::To, Field::Grain],
            periods_between(first, last, grain),
            grain,
        )
    }

    /// Checks a list of `len` items given as `field`.
    pub fn check_list(&self, field: Field, len: usize) -> Result<(), OverCap> {
        if len <= self.max_list {
            return Ok(());
        }
        Err(OverCap {
            fields: vec![field],
            asked: format!("{len} items asked"),
            cap: format!("at most {}", self.max_list),
            setting: Some("max-list"),
            hint: "ask for fewer at once",
        })
    }

    /// Checks a retention table of `cohorts` × `columns` cells.
    pub fn check_cells(&self, cohorts: u64, columns: u64) -> Result<(), OverCap> {
        let cells = cohorts.saturating_mul(columns);
        if cells <= self.max_cells {
            return Ok(());
        }
        Err(OverCap {
            fields: vec![Field::From, Field::To, Field::Periods, Field::Grain],
            asked: format!("{cohorts} cohorts × {columns} periods = {cells} cells asked"),
            cap: format!("at most {}", self.max_cells),
            setting: Some("max-cells"),
            hint: "ask for fewer cohorts (from, to), fewer periods, or a coarser grain",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn period_counts_match_the_spine() {
        // Counted against the spine's own walk over many ranges and every grain.
        let starts = ["2024-02-29", "2026-01-01", "2026-05-06", "2025-12-31"];
        let lengths = [0u64, 1, 6, 7, 13, 30, 31, 59, 365, 800];
        for start in starts {
            for len in lengths {
                let (first, last) = (d(start), d(start) + chrono::Days::new(len));
                for grain in [Grain::Day, Grain::Month, Grain::Quarter, Grain::Year] {
                    let walked =
                        crate::project::periods::spine(first, last, grain, chrono::Weekday::Mon)
                            .len();
                    assert_eq!(
                        periods_between(first, last, grain),
                        walked as u64,
                        "{first}..{last} by {grain}"
                    );
                }
                // Weeks: never fewer than the spine (a cap may only over-count by one).
                let weeks =
                    crate::project::periods::spine(first, last, Grain::Week, chrono::Weekday::Mon)
                        .len() as u64;
                let counted = periods_between(first, last, Grain::Week);
                assert!(counted == weeks || counted == weeks + 1, "{first}..{last}");
            }
        }
    }

    #[test]
    fn a_range_over_the_cap_names_its_fields_and_the_setting() {
        let bounds = Bounds {
            max_periods: 100,
            ..Bounds::default()
        };
        assert!(
            bounds
                .check_range(d("2026-01-01"), d("2026-04-10"), Grain::Day)
                .is_ok()
        );
        let over = bounds
            .check_range(d("2026-01-01"), d("2026-04-11"), Grain::Day)
            .unwrap_err();
        assert_eq!(
            over.message(&Plain),
            "`from`, `to`, `grain`: 101 periods of a day asked, at most 100 (--max-periods)"
        );
        assert_eq!(over.fields, [Field::From, Field::To, Field::Grain]);
    }

    #[test]
    fn dates_outside_the_calendar_are_refused() {
        assert!(check_date(Field::To, d("9999-12-31")).is_ok());
        let far: NaiveDate = "+262142-12-31".parse().unwrap();
        let over = check_date(Field::To, far).unwrap_err();
        assert_eq!(
            over.message(&Plain),
            "`to`: +262142-12-31 is outside the calendar, which runs from 1900-01-01 to 9999-12-31"
        );
    }
}

//! The parsers of request values both front-ends take as text: dates and date ranges
//! ([`parse_date`], [`DateRange`]), event columns `source.table.column` ([`EventColumn`]) and
//! retention brackets `1-1,2-7` ([`Brackets`]).

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::model::TableRef;
use crate::retention::EventSpec;

/// A `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a date: write YYYY-MM-DD"))
}

/// Dates, inclusive at both ends, in the project's timezone; an open end is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl fmt::Display for DateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
        write!(f, "{}..{}", show(self.from), show(self.to))
    }
}

impl FromStr for DateRange {
    type Err = String;

    /// `2026-06-01..2026-06-30`; either end may be left open (`2026-07-01..`).
    fn from_str(s: &str) -> Result<DateRange, String> {
        let (from, to) = s.split_once("..").ok_or_else(|| {
            format!("`{s}` is not a date range: write FROM..TO, e.g. 2026-06-01..2026-06-30")
        })?;
        let date = |t: &str| -> Result<Option<NaiveDate>, String> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            parse_date(t).map(Some)
        };
        let range = DateRange {
            from: date(from)?,
            to: date(to)?,
        };
        if let (Some(from), Some(to)) = (range.from, range.to)
            && from > to
        {
            return Err(format!("`{s}` ends before it starts"));
        }
        Ok(range)
    }
}

/// A table's time column, `source.table.column`: where retention's cohort or activity events
/// are. Every part is needed; the column is the rest after the second dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventColumn {
    pub table: TableRef,
    pub time: String,
}

impl EventColumn {
    /// The events of each `entity` at this column's times, among the rows `filter` keeps.
    pub fn events(self, entity: String, filter: Option<String>) -> EventSpec {
        EventSpec {
            table: self.table,
            time: self.time,
            entity,
            filter,
        }
    }
}

impl FromStr for EventColumn {
    type Err = String;

    fn from_str(text: &str) -> Result<EventColumn, String> {
        let mut parts = text.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(source), Some(table), Some(column))
                if !source.is_empty() && !table.is_empty() && !column.is_empty() =>
            {
                Ok(EventColumn {
                    table: TableRef {
                        source: source.to_string(),
                        table: table.to_string(),
                    },
                    time: column.to_string(),
                })
            }
            _ => Err(format!(
                "`{text}` does not name a time column: write source.table.column, e.g. app.users.signed_up_at"
            )),
        }
    }
}

/// Retention's brackets of periods, `1-1,2-7,8-30`: inclusive ranges, a single number for a
/// bracket of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brackets(pub Vec<(u32, u32)>);

impl FromStr for Brackets {
    type Err = String;

    fn from_str(text: &str) -> Result<Brackets, String> {
        text.split(',')
            .map(|part| {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    (Ok(a), Ok(b)) if a <= b => Ok((a, b)),
                    _ => Err(format!(
                        "bracket `{part}` is not a range of periods like 2-7"
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(Brackets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn dates_and_date_ranges_parse() {
        assert_eq!(parse_date("2026-02-28"), Ok(d("2026-02-28")));
        assert_eq!(
            parse_date("2026-02-30"),
            Err("`2026-02-30` is not a date: write YYYY-MM-DD".into())
        );
        let range: DateRange = "2026-06-01..".parse().unwrap();
        assert_eq!((range.from, range.to), (Some(d("2026-06-01")), None));
        let range: DateRange = "..2026-06-30".parse().unwrap();
        assert_eq!((range.from, range.to), (None, Some(d("2026-06-30"))));
        assert!(
            "2026-06-01"
                .parse::<DateRange>()
                .unwrap_err()
                .contains("write FROM..TO")
        );
        assert_eq!(
            "2026-07-01..2026-06-01".parse::<DateRange>(),
            Err("`2026-07-01..2026-06-01` ends before it starts".into())
        );
        assert!(
            "2026-06-01..June"
                .parse::<DateRange>()
                .unwrap_err()
                .contains("`June` is not a date")
        );
    }

    #[test]
    fn event_columns_need_every_part() {
        let column: EventColumn = "app.users.signed_up_at".parse().unwrap();
        assert_eq!(column.table.to_string(), "app.users");
        assert_eq!(column.time, "signed_up_at");
        // The column is the rest: a dotted column name stays whole.
        let column: EventColumn = "app.users.a.b".parse().unwrap();
        assert_eq!(column.time, "a.b");
        let spec = column.events("user_id".into(), None);
        assert_eq!(
            (spec.time.as_str(), spec.entity.as_str()),
            ("a.b", "user_id")
        );
        for bad in [
            "app.users",
            "app",
            "",
            ".users.signed_up_at",
            "app..t",
            "app.users.",
        ] {
            let error = bad.parse::<EventColumn>().unwrap_err();
            assert_eq!(
                error,
                format!(
                    "`{bad}` does not name a time column: write source.table.column, e.g. app.users.signed_up_at"
                )
            );
        }
    }

    #[test]
    fn brackets_are_ranges_or_single_periods() {
        assert_eq!(
            "1-1,2-7, 8 - 30,31".parse::<Brackets>(),
            Ok(Brackets(vec![(1, 1), (2, 7), (8, 30), (31, 31)]))
        );
        for (bad, part) in [("7-2", "7-2"), ("1-1,x", "x"), ("", ""), ("1-", "1-")] {
            assert_eq!(
                bad.parse::<Brackets>(),
                Err(format!(
                    "bracket `{part}` is not a range of periods like 2-7"
                ))
            );
        }
    }
}

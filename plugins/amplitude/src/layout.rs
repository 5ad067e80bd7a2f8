//! Amplitude's export layout: hourly file names, and hours as numbers.
//!
//! Both the Export API's zip entries and the S3 export's objects are named
//! `<project_id>/<project_id>_<YYYY-MM-DD>_<H>#<n>.json.gz`: the UTC hour of upload, without a
//! leading zero, and a part number, since an hour may be split over several files. An hour is
//! kept here as the number of hours since 1970-01-01T00 UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike};

/// Hours since the epoch, UTC.
pub type Hour = i64;

/// What a file's name says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HourFile {
    pub hour: Hour,
    pub part: u32,
    pub project: String,
}

/// Parses the last path segment `<project_id>_<YYYY-MM-DD>_<H>#<n>.json.gz`. The `#<n>` part
/// is optional (older exports), and `_complete` markers and other files give `None`.
pub fn parse_name(path: &str) -> Option<HourFile> {
    let name = path.rsplit(['/', '\\']).next()?;
    let stem = name.strip_suffix(".json.gz")?;
    let (stem, part) = match stem.rsplit_once('#') {
        Some((stem, part)) => (stem, part.parse().ok()?),
        None => (stem, 0),
    };
    let (rest, hour) = stem.rsplit_once('_')?;
    let (project, date) = rest.rsplit_once('_')?;
    let hour: u32 = hour.parse().ok()?;
    if hour > 23 || project.is_empty() {
        return None;
    }
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(HourFile {
        hour: of_datetime(date.and_hms_opt(hour, 0, 0)?),
        part,
        project: project.to_string(),
    })
}

/// The hour a UTC wall-clock time falls in.
pub fn of_datetime(t: NaiveDateTime) -> Hour {
    t.and_utc().timestamp().div_euclid(3600)
}

/// The hour of a timestamp in microseconds.
pub fn of_micros(micros: i64) -> Hour {
    micros.div_euclid(3_600_000_000)
}

/// The first hour of a day.
pub fn of_date(date: NaiveDate) -> Hour {
    of_datetime(date.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

fn datetime(hour: Hour) -> NaiveDateTime {
    DateTime::from_timestamp(hour * 3600, 0)
        .unwrap_or_default()
        .naive_utc()
}

/// The Export API's `YYYYMMDDTHH`.
pub fn api_param(hour: Hour) -> String {
    datetime(hour).format("%Y%m%dT%H").to_string()
}

/// `YYYY-MM-DD HH:00` for messages.
pub fn display(hour: Hour) -> String {
    let t = datetime(hour);
    format!("{} {:02}:00", t.date(), t.hour())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_give_their_hour_and_part() {
        let f = parse_name("187520/187520_2023-01-01_9#3.json.gz").unwrap();
        assert_eq!(display(f.hour), "2023-01-01 09:00");
        assert_eq!(f.part, 3);
        assert_eq!(f.project, "187520");
        let g = parse_name("s3/prefix/187520/187520_2023-01-01_23#0.json.gz").unwrap();
        assert_eq!(g.hour - f.hour, 14);
        assert_eq!(parse_name("187520_2023-01-01_23.json.gz").unwrap().part, 0);
        assert_eq!(api_param(f.hour), "20230101T09");
        for bad in [
            "187520/_complete",
            "187520_2023-01-01_24#0.json.gz",
            "187520_2023-13-01_1#0.json.gz",
            "notes.json.gz",
            "187520_2023-01-01_1#0.json",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}

//! Discovery of value moments: which early activities go with users staying.
//!
//! For users onboarded in a cohort range and old enough to be judged, each activity type and
//! frequency threshold k ("did it at least k times within X of onboarding") splits the users
//! in two; a 2×2 table against "active again in [Y, Y+W) after onboarding" gives retention of
//! both groups, lift, precision, recall and the phi coefficient with a confidence interval.
//! Candidates with enough users on both sides are ranked by phi; an optional later cohort
//! checks that each one holds out of sample. docs/discovery.md defines every number.
//!
//! DataFusion does the heavy lifting in one query: onboarding times, each user's activity
//! counts within X and retained flag, summed into per-(activity, count, retained) user counts.
//! The 2×2 tables and every statistic are computed in pure functions.
//!
//! This module holds the request, its defaults and the result; `stats` the pure statistics
//! (2×2 tables, ranking, validation verdicts), `query` the engine side (resolving the request,
//! the one query, reading its rows), `columns` the checks and guesses on a table's columns,
//! `text` the ranking as a table and the plain-language summary.

mod columns;
mod query;
mod stats;
mod text;

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDateTime, TimeDelta};

use crate::project::error::Result;
use crate::project::model::TableRef;

pub(crate) use query::string_literal;
pub use stats::{Candidate, Cohort, TwoByTwo, Validation, Verdict, verdict};

/// Thresholds tested by default: at least 1, 2, … 5 times.
pub const DEFAULT_MAX_K: u32 = 5;
/// The largest threshold a request may ask for.
pub const MAX_K_LIMIT: u32 = 50;
/// Default minimum support: this many users in each group…
pub const DEFAULT_MIN_SUPPORT_USERS: u64 = 30;
/// …or this share of the judged users, whichever is larger.
pub const DEFAULT_MIN_SUPPORT_SHARE: f64 = 0.01;
/// The normal quantile of a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;
/// Column names tried, in order, when the request does not name the event-type column.
pub const EVENT_COLUMNS: [&str; 4] = ["event_type", "event", "event_name", "type"];
/// Column names preferred, in order, when a table's time column is not named.
pub const TIME_COLUMNS: [&str; 7] = [
    "event_time",
    "timestamp",
    "time",
    "ts",
    "occurred_at",
    "created_at",
    "signed_up_at",
];
pub use crate::project::model::DEFAULT_ENTITY;
/// The activity table used when the request does not name one: a table of this name.
pub const DEFAULT_ACTIVITY_TABLE: &str = "events";

// ---------------------------------------------------------------------------------------
// The request.

/// A length of time counted from each user's onboarding: `1d`, `36h`, `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    seconds: u64,
}

const HOUR: u64 = 3_600;
const DAY: u64 = 24 * HOUR;

impl Span {
    pub const fn days(days: u64) -> Span {
        Span {
            seconds: days * DAY,
        }
    }

    pub const fn hours(hours: u64) -> Span {
        Span {
            seconds: hours * HOUR,
        }
    }

    pub fn seconds(self) -> u64 {
        self.seconds
    }

    fn delta(self) -> TimeDelta {
        TimeDelta::seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX))
    }

    /// The span as an SQL interval literal.
    fn interval(self) -> String {
        format!("INTERVAL '{} seconds'", self.seconds)
    }

    /// In words: `1 day`, `14 days`, `36 hours`.
    pub fn describe(self) -> String {
        let (n, unit) = if self.seconds.is_multiple_of(DAY) {
            (self.seconds / DAY, "day")
        } else {
            (self.seconds / HOUR, "hour")
        };
        format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seconds.is_multiple_of(DAY) {
            write!(f, "{}d", self.seconds / DAY)
        } else {
            write!(f, "{}h", self.seconds / HOUR)
        }
    }
}

impl FromStr for Span {
    type Err = String;

    /// `12h`, `1d`, `14d`, `2w`, or a bare number of days; never zero.
    fn from_str(s: &str) -> Result<Span, String> {
        let text = s.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let bad = || format!("cannot read `{s}` as a length of time: write 12h, 1d, 14d or 2w");
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let unit_seconds = match unit.trim() {
            "" | "d" | "day" | "days" => DAY,
            "h" | "hour" | "hours" => HOUR,
            "w" | "week" | "weeks" => 7 * DAY,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(format!("`{s}` is zero: a span must be at least an hour"));
        }
        n.checked_mul(unit_seconds)
            .filter(|&seconds| seconds <= 100_000 * DAY)
            .map(|seconds| Span { seconds })
            .ok_or_else(|| format!("`{s}` is too long"))
    }
}

/// The least number of users each group (doers and the others) needs for a candidate to be
/// ranked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinSupport {
    Users(u64),
    /// A fraction of the judged users (0.01 for 1%), rounded up.
    Share(f64),
}

impl MinSupport {
    /// The threshold for a cohort of `users`; `None` is the default rule: the larger of
    /// [`DEFAULT_MIN_SUPPORT_USERS`] and [`DEFAULT_MIN_SUPPORT_SHARE`] of the users.
    pub fn threshold(rule: Option<MinSupport>, users: u64) -> u64 {
        let share = |f: f64| (f * users as f64).ceil() as u64;
        match rule {
            Some(MinSupport::Users(n)) => n,
            Some(MinSupport::Share(f)) => share(f),
            None => DEFAULT_MIN_SUPPORT_USERS.max(share(DEFAULT_MIN_SUPPORT_SHARE)),
        }
    }
}

impl FromStr for MinSupport {
    type Err = String;

    /// `30` (users) or `1%` (of the judged users).
    fn from_str(s: &str) -> Result<MinSupport, String> {
        let text = s.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("cannot read `{s}` as a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("`{s}` is not between 0% and 100%"));
            }
            Ok(MinSupport::Share(p / 100.0))
        } else {
            text.parse().map(MinSupport::Users).map_err(|_| {
                format!("cannot read `{s}` as a minimum support: write a number of users (30) or a percentage (1%)")
            })
        }
    }
}

/// Onboarding dates: the cohorts analysed and those candidates are validated on.
pub use crate::query::request::DateRange;

impl DateRange {
    fn overlaps(&self, other: &DateRange) -> bool {
        let starts_before_end = |a: &DateRange, b: &DateRange| match (a.from, b.to) {
            (Some(from), Some(to)) => from <= to,
            _ => true,
        };
        starts_before_end(self, other) && starts_before_end(other, self)
    }
}

/// When a user counts as onboarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onboarding {
    /// The earliest time in a cohort table's column (`app.users.signed_up_at`), per entity;
    /// without a column, the table's time column is guessed (see [`TIME_COLUMNS`]).
    Column {
        table: TableRef,
        time: Option<String>,
    },
    /// The first event of this type in the activity table.
    Event(String),
}

impl Onboarding {
    /// The onboarding `text` means in `project`: a name of its `discovery.onboarding`, else
    /// as [`Onboarding::parse`] reads it.
    pub fn of(project: &crate::project::model::Project, text: &str) -> Onboarding {
        Onboarding::named(project, text)
            .unwrap_or_else(|| Onboarding::parse(text, project.sources.keys().map(String::as_str)))
    }

    /// The onboarding `discovery.onboarding` of the project names `name`.
    pub fn named(project: &crate::project::model::Project, name: &str) -> Option<Onboarding> {
        project.discovery.onboarding.get(name).map(|def| match def {
            crate::project::model::OnboardingDef::Column { table, time } => Onboarding::Column {
                table: table.clone(),
                time: Some(time.clone()),
            },
            crate::project::model::OnboardingDef::Event(kind) => Onboarding::Event(kind.clone()),
        })
    }

    /// `SOURCE.TABLE.COLUMN` or `SOURCE.TABLE` when the first part names one of `sources`;
    /// anything else is an event type.
    pub fn parse<'a>(text: &str, sources: impl IntoIterator<Item = &'a str>) -> Onboarding {
        let parts: Vec<&str> = text.split('.').collect();
        let is_source = sources.into_iter().any(|s| s == parts[0]);
        match parts.as_slice() {
            [source, table] if is_source => Onboarding::Column {
                table: table_ref(source, table),
                time: None,
            },
            [source, table, column] if is_source => Onboarding::Column {
                table: table_ref(source, table),
                time: Some((*column).to_string()),
            },
            _ => Onboarding::Event(text.to_string()),
        }
    }
}

fn table_ref(source: &str, table: &str) -> TableRef {
    TableRef {
        source: source.to_string(),
        table: table.to_string(),
    }
}

/// `SOURCE.TABLE` or `SOURCE.TABLE.TIME_COLUMN`.
pub fn parse_table_column(text: &str) -> Result<(TableRef, Option<String>), String> {
    match text.split('.').collect::<Vec<_>>().as_slice() {
        [source, table] if !source.is_empty() && !table.is_empty() => {
            Ok((table_ref(source, table), None))
        }
        [source, table, column]
            if !source.is_empty() && !table.is_empty() && !column.is_empty() =>
        {
            Ok((table_ref(source, table), Some((*column).to_string())))
        }
        _ => Err(format!(
            "`{text}` is not a table: write SOURCE.TABLE or SOURCE.TABLE.TIME_COLUMN, e.g. app.events.event_time"
        )),
    }
}

/// What to look for: who is onboarded, what counts as activity, and the three spans.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryRequest {
    pub onboarded: Onboarding,
    /// The activity table; `None`: the one table called [`DEFAULT_ACTIVITY_TABLE`].
    pub activity: Option<TableRef>,
    /// Its time column; `None`: guessed (see [`TIME_COLUMNS`]).
    pub activity_time: Option<String>,
    /// The column naming the user, in the activity table and the cohort table;
    /// `None`: [`DEFAULT_ENTITY`].
    pub entity: Option<String>,
    /// The column holding the activity type; `None`: the first of [`EVENT_COLUMNS`].
    pub event_column: Option<String>,
    /// An SQL predicate over the activity table's columns: only matching rows are activity.
    pub filter: Option<String>,
    /// X: activities are counted in `[onboarded, onboarded + within)`.
    pub within: Span,
    /// Y: retained means active at or after `onboarded + retained`…
    pub retained: Span,
    /// W: …and before `onboarded + retained + window`; `None`: any time after.
    pub window: Option<Span>,
    /// Thresholds tested: at least 1, 2, … `max_k` times.
    pub max_k: u32,
    /// `None`: the default rule of [`MinSupport::threshold`].
    pub min_support: Option<MinSupport>,
    /// The cohorts analysed; unbounded, or when validating, the cohorts before validation.
    pub cohorts: DateRange,
    /// A later (or earlier) cohort range on which every candidate is checked again.
    pub validate_on: Option<DateRange>,
    /// Whether error hints may list values of the data (the event types of the activity
    /// table); `false` for callers who may only see what the project declares.
    pub reveal_values: bool,
    /// The least support in users whatever `min_support` says (the server's
    /// `--min-support-floor`); 0: none.
    pub support_floor: u64,
}

impl DiscoveryRequest {
    /// A request with the defaults: activity within 1 day, retained at day 14 or later.
    pub fn new(onboarded: Onboarding) -> DiscoveryRequest {
        DiscoveryRequest {
            onboarded,
            activity: None,
            activity_time: None,
            entity: None,
            event_column: None,
            filter: None,
            within: Span::days(1),
            retained: Span::days(14),
            window: None,
            max_k: DEFAULT_MAX_K,
            min_support: None,
            cohorts: DateRange::default(),
            validate_on: None,
            reveal_values: true,
            support_floor: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The result.

/// The request with every default filled in, as it was run.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    pub onboarded: Onboarding,
    /// The cohort table's time column, when onboarding is a table's column.
    pub onboarded_time: Option<String>,
    pub activity: TableRef,
    pub activity_time: String,
    pub entity: String,
    pub event_column: String,
    pub filter: Option<String>,
    pub within: Span,
    pub retained: Span,
    pub window: Option<Span>,
    pub max_k: u32,
}

impl Setup {
    /// What onboarding means, in words.
    pub fn onboarding_text(&self) -> String {
        match &self.onboarded {
            Onboarding::Event(event) => {
                format!("their first `{event}` event in {}", self.activity)
            }
            Onboarding::Column { table, .. } => format!(
                "{table}.{}",
                self.onboarded_time.as_deref().unwrap_or_default()
            ),
        }
    }

    /// What retained means, in words: `active again between day 14 and day 21 after
    /// onboarding` (days count from 0, as 24-hour spans from the onboarding moment).
    pub fn retention_text(&self) -> String {
        let at = |span: Span| {
            if span.seconds.is_multiple_of(DAY) {
                format!("day {}", span.seconds / DAY)
            } else {
                format!("hour {}", span.seconds / HOUR)
            }
        };
        match self.window {
            Some(w) => format!(
                "active again between {} and {} after onboarding",
                at(self.retained),
                at(Span {
                    seconds: self.retained.seconds + w.seconds
                })
            ),
            None => format!(
                "active again on {} after onboarding or later",
                at(self.retained)
            ),
        }
    }
}

/// The outcome of [`Engine::discover`](crate::query::engine::Engine::discover).
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub setup: Setup,
    /// The last activity seen: users are judged only if onboarded at least Y (+ W) before.
    pub data_end: Option<NaiveDateTime>,
    /// The latest onboarding time that can be judged.
    pub latest_onboarding: Option<NaiveDateTime>,
    pub training: Cohort,
    pub validation: Option<Cohort>,
    /// Candidates with at least the minimum support in both groups, best first.
    pub candidates: Vec<Candidate>,
    /// The other candidates (with at least one doer), by phi.
    pub below_support: Vec<Candidate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_minimum_support_is_30_users_or_1_percent() {
        assert_eq!(MinSupport::threshold(None, 500), 30);
        assert_eq!(MinSupport::threshold(None, 10_001), 101);
        assert_eq!(MinSupport::threshold(Some(MinSupport::Users(5)), 10_000), 5);
        assert_eq!(
            MinSupport::threshold(Some(MinSupport::Share(0.02)), 1_000),
            20
        );
        assert_eq!("2%".parse::<MinSupport>(), Ok(MinSupport::Share(0.02)));
        assert_eq!("50".parse::<MinSupport>(), Ok(MinSupport::Users(50)));
        assert!("many".parse::<MinSupport>().is_err());
    }

    #[test]
    fn spans_ranges_and_onboarding_parse() {
        assert_eq!("1d".parse::<Span>(), Ok(Span::days(1)));
        assert_eq!("36h".parse::<Span>(), Ok(Span::hours(36)));
        assert_eq!("2w".parse::<Span>(), Ok(Span::days(14)));
        assert_eq!("7".parse::<Span>(), Ok(Span::days(7)));
        assert!("0d".parse::<Span>().is_err());
        assert!("3mo".parse::<Span>().is_err());
        assert_eq!(Span::hours(36).to_string(), "36h");
        assert_eq!(Span::days(14).describe(), "14 days");

        let r: DateRange = "2026-06-01..2026-06-30".parse().unwrap();
        assert_eq!(r.to_string(), "2026-06-01..2026-06-30");
        let open: DateRange = "2026-07-01..".parse().unwrap();
        assert_eq!(open.to, None);
        assert!("2026-07-01..2026-06-01".parse::<DateRange>().is_err());
        assert!("2026-07-01".parse::<DateRange>().is_err());
        let before: DateRange = "..2026-06-30".parse().unwrap();
        assert!(!before.overlaps(&open));
        assert!(r.overlaps(&"2026-06-30..".parse().unwrap()));

        let sources = ["app"];
        assert_eq!(
            Onboarding::parse("app.users.signed_up_at", sources),
            Onboarding::Column {
                table: table_ref("app", "users"),
                time: Some("signed_up_at".into())
            }
        );
        assert_eq!(
            Onboarding::parse("signup", sources),
            Onboarding::Event("signup".into())
        );
        assert_eq!(
            Onboarding::parse("web.signup", sources),
            Onboarding::Event("web.signup".into())
        );
    }
}

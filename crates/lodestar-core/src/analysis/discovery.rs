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
//! The 2×2 tables and every statistic are computed here, in pure functions.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{Days, NaiveDateTime, TimeDelta};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampNanosecondType,
};
use datafusion::error::DataFusionError;

use crate::format::{percent, thousands};
use crate::project::error::{Error, Result, did_you_mean};
use crate::project::model::{TableRef, quote_ident};
use crate::query::engine::{Engine, is_parse_failure};
use crate::query::request::{Action, Field as RequestField, Piece, words};
use crate::query::sql::{self, TimeKind, local_time};

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

    /// An SQL condition on a local timestamp; `TRUE` when unbounded.
    fn condition(&self, column: &str) -> String {
        let mut parts = Vec::new();
        if let Some(from) = self.from {
            parts.push(format!("{column} >= {}", timestamp(from.into())));
        }
        if let Some(to) = self.to {
            let end = to + Days::new(1);
            parts.push(format!("{column} < {}", timestamp(end.into())));
        }
        if parts.is_empty() {
            "TRUE".into()
        } else {
            parts.join(" AND ")
        }
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

/// The users of one cohort range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cohort {
    pub range: DateRange,
    /// Users old enough to be judged.
    pub users: u64,
    /// Of those, the retained.
    pub retained: u64,
    /// Users onboarded in the range but too recently to be judged: left out.
    pub too_young: u64,
    /// The minimum support applied to this cohort.
    pub min_support: u64,
}

impl Cohort {
    pub fn retention(&self) -> Option<f64> {
        ratio(self.retained, self.users)
    }
}

/// The 2×2 table of one candidate: did the activity at least k times (or not) × retained
/// (or not), in users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TwoByTwo {
    pub doers_retained: u64,
    pub doers_churned: u64,
    pub others_retained: u64,
    pub others_churned: u64,
}

impl TwoByTwo {
    pub fn users(&self) -> u64 {
        self.doers() + self.others()
    }

    pub fn doers(&self) -> u64 {
        self.doers_retained + self.doers_churned
    }

    pub fn others(&self) -> u64 {
        self.others_retained + self.others_churned
    }

    pub fn retained(&self) -> u64 {
        self.doers_retained + self.others_retained
    }

    /// The doers' share of all users.
    pub fn support(&self) -> Option<f64> {
        ratio(self.doers(), self.users())
    }

    /// P(retained | did).
    pub fn retention_did(&self) -> Option<f64> {
        ratio(self.doers_retained, self.doers())
    }

    /// P(retained | did not).
    pub fn retention_not(&self) -> Option<f64> {
        ratio(self.others_retained, self.others())
    }

    /// P(retained | did) / P(retained | did not); undefined when no non-doer is retained.
    pub fn lift(&self) -> Option<f64> {
        let not = self.retention_not()?;
        (not > 0.0).then_some(self.retention_did()? / not)
    }

    /// P(retained | did): the share of the prediction "will stay" that comes true.
    pub fn precision(&self) -> Option<f64> {
        self.retention_did()
    }

    /// P(did | retained): the share of retained users the activity finds.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.doers_retained, self.retained())
    }

    /// The phi coefficient (Pearson's correlation of the two yes/no variables); undefined
    /// when a row or column of the table is empty.
    pub fn phi(&self) -> Option<f64> {
        let [a, b, c, d] = [
            self.doers_retained,
            self.doers_churned,
            self.others_retained,
            self.others_churned,
        ]
        .map(|x| x as f64);
        let margins = (a + b) * (c + d) * (a + c) * (b + d);
        (margins > 0.0).then(|| ((a * d - b * c) / margins.sqrt()).clamp(-1.0, 1.0))
    }

    /// A confidence interval for phi by Fisher's z-transform: `tanh(atanh(phi) ± z/√(n−3))`.
    /// Approximate for a 2×2 table (phi is a correlation of two binary variables), good once
    /// both groups hold a few dozen users; `None` with fewer than 4 users.
    pub fn phi_interval(&self, z: f64) -> Option<(f64, f64)> {
        let phi = self.phi()?;
        let n = self.users();
        if n <= 3 {
            return None;
        }
        let centre = phi.atanh();
        let half = z / ((n - 3) as f64).sqrt();
        Some(((centre - half).tanh(), (centre + half).tanh()))
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// "Did `activity` at least `at_least` times within X of onboarding."
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub activity: String,
    pub at_least: u32,
    pub table: TwoByTwo,
    /// The same candidate on the validation cohort, when one was asked for.
    pub validation: Option<Validation>,
}

impl Candidate {
    pub fn phi_interval(&self) -> Option<(f64, f64)> {
        self.table.phi_interval(Z_95)
    }

    /// `save_listing ≥ 2`.
    pub fn label(&self) -> String {
        format!("{} ≥ {}", self.activity, self.at_least)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validation {
    pub table: TwoByTwo,
    pub verdict: Verdict,
}

/// Whether a candidate holds on the validation cohort (see [`verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same direction, and the 95% interval excludes no association.
    Holds,
    /// Holds, but the whole interval is weaker than the training estimate.
    Weaker,
    /// No association, or the opposite one, out of sample.
    Fails,
    /// Fewer than the minimum support in a group, or no variation: nothing to tell.
    TooFewUsers,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Weaker => "weaker",
            Verdict::Fails => "fails",
            Verdict::TooFewUsers => "too few users",
        }
    }
}

/// The outcome of [`Engine::discover`].
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

// ---------------------------------------------------------------------------------------
// Pure computation: from per-(activity, count, retained) user counts to ranked candidates.

/// User counts of one cohort, as the query returns them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub users: u64,
    pub retained: u64,
    pub too_young: u64,
    /// activity → index `c` (1 ≤ c ≤ max_k; `max_k` means "max_k or more") → users by
    /// `[churned, retained]`.
    pub by_activity: BTreeMap<String, Vec<[u64; 2]>>,
}

impl Counts {
    pub(crate) fn add(
        &mut self,
        activity: &str,
        count: u32,
        retained: bool,
        users: u64,
        max_k: u32,
    ) {
        let row = self
            .by_activity
            .entry(activity.to_string())
            .or_insert_with(|| vec![[0, 0]; max_k as usize + 1]);
        let c = count.min(max_k) as usize;
        row[c][usize::from(retained)] += users;
    }

    /// The 2×2 table of "did `activity` at least `k` times".
    pub(crate) fn table(&self, activity: &str, k: u32) -> TwoByTwo {
        let (mut churned, mut retained) = (0, 0);
        if let Some(row) = self.by_activity.get(activity) {
            for cell in row.iter().skip(k as usize) {
                churned += cell[0];
                retained += cell[1];
            }
        }
        TwoByTwo {
            doers_retained: retained,
            doers_churned: churned,
            others_retained: self.retained.saturating_sub(retained),
            others_churned: (self.users - self.retained).saturating_sub(churned),
        }
    }
}

/// Every (activity, k) with at least one doer, split by minimum support and sorted by phi.
pub(crate) fn candidates(
    counts: &Counts,
    max_k: u32,
    min_support: u64,
) -> (Vec<Candidate>, Vec<Candidate>) {
    let mut ranked = Vec::new();
    let mut below = Vec::new();
    for activity in counts.by_activity.keys() {
        for k in 1..=max_k {
            let table = counts.table(activity, k);
            if table.doers() == 0 {
                break;
            }
            let candidate = Candidate {
                activity: activity.clone(),
                at_least: k,
                table,
                validation: None,
            };
            let supported = table.doers() >= min_support.max(1)
                && table.others() >= min_support.max(1)
                && table.phi().is_some();
            if supported {
                ranked.push(candidate);
            } else {
                below.push(candidate);
            }
        }
    }
    ranked.sort_by(rank_order);
    below.sort_by(rank_order);
    (ranked, below)
}

/// Phi descending (undefined last), then lift descending, then name and k.
fn rank_order(x: &Candidate, y: &Candidate) -> std::cmp::Ordering {
    let key = |c: &Candidate| c.table.phi().unwrap_or(f64::NEG_INFINITY);
    let lift = |c: &Candidate| c.table.lift().unwrap_or(f64::NEG_INFINITY);
    key(y)
        .total_cmp(&key(x))
        .then(lift(y).total_cmp(&lift(x)))
        .then_with(|| x.activity.cmp(&y.activity))
        .then(x.at_least.cmp(&y.at_least))
}

/// Whether a training association holds on the validation table.
///
/// - too few users: either group has fewer than `min_support` users, or phi is undefined;
/// - fails: the validation phi's 95% interval contains 0, or lies on the other side of it
///   (so the validation lift is ≤ 1 where the training lift was > 1, or the reverse);
/// - weaker: same side, but the whole interval is closer to 0 than the training phi;
/// - holds: otherwise (the interval contains the training phi, or lies beyond it).
pub fn verdict(training: &TwoByTwo, validation: &TwoByTwo, min_support: u64) -> Verdict {
    let min = min_support.max(1);
    let (Some(phi), Some((low, high))) = (training.phi(), validation.phi_interval(Z_95)) else {
        return Verdict::TooFewUsers;
    };
    if validation.doers() < min || validation.others() < min {
        return Verdict::TooFewUsers;
    }
    // Work on the training association's side of zero (a negative one mirrored).
    let (low, high, phi) = if phi >= 0.0 {
        (low, high, phi)
    } else {
        (-high, -low, -phi)
    };
    if low <= 0.0 {
        Verdict::Fails
    } else if high < phi {
        Verdict::Weaker
    } else {
        Verdict::Holds
    }
}

// ---------------------------------------------------------------------------------------
// The engine side: resolving the request, one query, reading it back.

/// What the query needs to know about a time column.
struct TimeColumn {
    name: String,
    kind: TimeKind,
}

impl Engine {
    /// Which early activities go with retention: see the module documentation.
    pub async fn discover(&self, request: &DiscoveryRequest) -> Result<Discovery> {
        if request.max_k > MAX_K_LIMIT {
            return Err(crate::query::bounds::OverCap {
                fields: vec![RequestField::MaxK],
                asked: format!("{} thresholds", request.max_k),
                cap: format!("at most {MAX_K_LIMIT}"),
                setting: None,
                hint: "test fewer thresholds: \"at least K times\" for K up to 5 or 10 is usual",
            }
            .into());
        }
        let validation = request.validate_on.unwrap_or_default();
        for (field, date) in [
            (RequestField::From, request.cohorts.from),
            (RequestField::To, request.cohorts.to),
            (RequestField::ValidateOn, validation.from),
            (RequestField::ValidateOn, validation.to),
        ] {
            if let Some(date) = date {
                crate::query::bounds::check_date(field, date)?;
            }
        }
        let setup = self.resolve(request).await?;
        let (training_range, validation_range) = split_ranges(request)?;
        if request.retained < request.within {
            return Err(Error::request_hint(
                format!(
                    "retention is judged from {} after onboarding, inside the first {} whose activities are counted",
                    request.retained, request.within
                ),
                words![
                    RequestField::Retained,
                    " must be at least ",
                    RequestField::Within,
                    ", or the early activity itself would count as retention"
                ],
            ));
        }
        if request.max_k == 0 || request.max_k > MAX_K_LIMIT {
            return Err(Error::request(format!(
                "the largest threshold must be between 1 and {MAX_K_LIMIT}, not {}",
                request.max_k
            )));
        }

        let tz = self.project().timezone;
        let activity_schema = self.schema_of(&setup.activity).await?;
        let activity_time = time_column(&activity_schema, &setup.activity, &setup.activity_time)?;
        let activity_local = local_time(&activity_time.name, activity_time.kind, tz);
        let data_end = self
            .data_end(&setup.activity, &activity_local, &activity_time)
            .await?;
        let empty = |cohort: DateRange| Cohort {
            range: cohort,
            ..Cohort::default()
        };
        let Some(end) = data_end else {
            return Ok(Discovery {
                setup,
                data_end: None,
                latest_onboarding: None,
                training: empty(training_range),
                validation: validation_range.map(empty),
                candidates: Vec::new(),
                below_support: Vec::new(),
            });
        };
        let horizon = Span {
            seconds: request.retained.seconds + request.window.map_or(0, Span::seconds),
        };
        let latest = end - horizon.delta();

        let sql = self
            .discovery_sql(&setup, training_range, validation_range, latest)
            .await?;
        tracing::debug!(%sql, "discovery");
        // The counts are held while they are ranked: accounted in the request's pool.
        let mut held = self.reserve("discovery");
        let batches = match self.plan(&sql).await {
            Ok(df) => self.collect_reserved(df, &mut held).await,
            Err(e) => Err(e),
        }
        .map_err(|e| self.query_error(e, &setup))?;
        let (training_counts, validation_counts) = read_counts(&batches, setup.max_k)?;
        let nobody = |c: &Counts| c.users + c.too_young == 0;
        if let Onboarding::Event(name) = &setup.onboarded
            && nobody(&training_counts)
            && nobody(&validation_counts)
        {
            self.check_event_exists(&setup, name, request.reveal_values)
                .await?;
        }

        let min_training = MinSupport::threshold(request.min_support, training_counts.users)
            .max(request.support_floor);
        let (mut ranked, below) = candidates(&training_counts, setup.max_k, min_training);
        let validation = validation_range.map(|range| {
            let min = MinSupport::threshold(request.min_support, validation_counts.users)
                .max(request.support_floor);
            for candidate in &mut ranked {
                let table = validation_counts.table(&candidate.activity, candidate.at_least);
                candidate.validation = Some(Validation {
                    table,
                    verdict: verdict(&candidate.table, &table, min),
                });
            }
            cohort(range, &validation_counts, min)
        });
        Ok(Discovery {
            training: cohort(training_range, &training_counts, min_training),
            validation,
            setup,
            data_end: Some(end),
            latest_onboarding: Some(latest),
            candidates: ranked,
            below_support: below,
        })
    }

    /// Fills in the request's defaults and checks every name against the schemas.
    async fn resolve(&self, request: &DiscoveryRequest) -> Result<Setup> {
        // What the request leaves out, the project's `discovery:` gives, then the guesses.
        let declared = &self.project().discovery;
        let activity = match (&request.activity, &declared.activity) {
            (Some(table), _) => table.clone(),
            (None, Some((table, _))) => table.clone(),
            (None, None) => self.default_activity_table()?,
        };
        let schema = self.schema_of(&activity).await?;
        let columns = column_names(&schema);
        let activity_time = match (&request.activity_time, &declared.activity) {
            (Some(name), _) => name.clone(),
            (None, Some((table, time))) if *table == activity => time.clone(),
            (None, _) => guess_time_column(&schema, &activity)?,
        };
        let entity = request
            .entity
            .clone()
            .or_else(|| declared.entity.clone())
            .unwrap_or_else(|| DEFAULT_ENTITY.to_string());
        for (what, name, field) in [
            (
                "time column",
                &activity_time,
                RequestField::Activity.set_to("SOURCE.TABLE.COLUMN"),
            ),
            (
                "entity column",
                &entity,
                RequestField::Entity.set_to("COLUMN"),
            ),
        ] {
            require_column(&columns, &activity, what, name, field)?;
        }
        let event_column = match request.event_column.as_ref().or(declared.event_column.as_ref()) {
            Some(name) => {
                require_column(
                    &columns,
                    &activity,
                    "event column",
                    name,
                    RequestField::EventColumn.set_to("COLUMN"),
                )?;
                name.clone()
            }
            None => EVENT_COLUMNS
                .iter()
                .find(|c| columns.contains(c))
                .map(|c| (*c).to_string())
                .ok_or_else(|| {
                    Error::request_hint(
                        format!(
                            "`{activity}` has none of the usual event-type columns ({}); its columns are: {}",
                            EVENT_COLUMNS.join(", "),
                            columns.join(", ")
                        ),
                        words![
                            "name the column holding the activity type with ",
                            RequestField::EventColumn.set_to("COLUMN")
                        ],
                    )
                })?,
        };
        if let Some(filter) = &request.filter {
            self.check_filter(filter, &activity, &columns).await?;
        }
        let onboarded_time = match &request.onboarded {
            Onboarding::Event(_) => None,
            Onboarding::Column { table, time } => {
                let cohort_schema = self.schema_of(table).await?;
                let cohort_columns = column_names(&cohort_schema);
                let time = match time {
                    Some(name) => name.clone(),
                    None => guess_time_column(&cohort_schema, table)?,
                };
                require_column(
                    &cohort_columns,
                    table,
                    "time column",
                    &time,
                    RequestField::Onboarded.set_to("SOURCE.TABLE.COLUMN"),
                )?;
                require_column(
                    &cohort_columns,
                    table,
                    "entity column",
                    &entity,
                    RequestField::Entity.set_to("COLUMN"),
                )?;
                time_column(&cohort_schema, table, &time)?;
                Some(time)
            }
        };
        Ok(Setup {
            onboarded: request.onboarded.clone(),
            onboarded_time,
            activity,
            activity_time,
            entity,
            event_column,
            filter: request.filter.clone(),
            within: request.within,
            retained: request.retained,
            window: request.window,
            max_k: request.max_k,
        })
    }

    fn default_activity_table(&self) -> Result<TableRef> {
        let found: Vec<TableRef> = self
            .project()
            .sources
            .keys()
            .filter(|source| {
                self.table_names(source)
                    .iter()
                    .any(|t| t == DEFAULT_ACTIVITY_TABLE)
            })
            .map(|source| table_ref(source, DEFAULT_ACTIVITY_TABLE))
            .collect();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::request_hint(
                format!(
                    "no source has a table called `{DEFAULT_ACTIVITY_TABLE}` to take activity from"
                ),
                words![
                    "name the activity table with ",
                    RequestField::Activity.set_to("SOURCE.TABLE.TIME_COLUMN"),
                    ", e.g. app.events.event_time"
                ],
            )),
            several => Err(Error::request_hint(
                format!(
                    "several sources have an `{DEFAULT_ACTIVITY_TABLE}` table: {}",
                    several
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                words![
                    "choose one with ",
                    RequestField::Activity.set_to("SOURCE.TABLE.TIME_COLUMN")
                ],
            )),
        }
    }

    async fn schema_of(&self, table: &TableRef) -> Result<SchemaRef> {
        self.table_schema(table).await.map_err(|message| {
            Error::request_hint(message, words![Action::ListTables, " lists the tables"])
        })
    }

    async fn check_filter(&self, filter: &str, table: &TableRef, columns: &[&str]) -> Result<()> {
        let expr = sql::parse_expr(filter).map_err(|e| {
            Error::request(format!(
                "the filter `{filter}` is not an SQL expression: {e}"
            ))
        })?;
        let names = sql::filter_columns(&expr)
            .map_err(|e| Error::request(format!("the filter `{filter}`: {e}")))?;
        for name in names {
            if !columns.contains(&name.as_str()) {
                let hint = did_you_mean(&name, columns.iter().copied()).unwrap_or_else(|| {
                    format!("the columns of `{table}` are: {}", columns.join(", "))
                });
                return Err(Error::request_hint(
                    format!("the filter names `{name}`, which is not a column of `{table}`"),
                    hint,
                ));
            }
        }
        self.plan(&format!("SELECT 1 FROM {} WHERE ({expr})", table.sql()))
            .await
            .map_err(|e| Error::request(format!("the filter `{filter}` does not compile: {e}")))?;
        Ok(())
    }

    /// When no one is onboarded by an event: an error if the event type does not exist.
    async fn check_event_exists(
        &self,
        setup: &Setup,
        name: &str,
        reveal_values: bool,
    ) -> Result<()> {
        let event = quote_ident(&setup.event_column);
        let sql = format!(
            "SELECT DISTINCT CAST({event} AS VARCHAR) AS kind FROM {} WHERE {event} IS NOT NULL ORDER BY kind LIMIT 1000",
            setup.activity.sql()
        );
        let batches = self.plan(&sql).await?.collect().await?;
        let mut kinds = Vec::new();
        for batch in &batches {
            let column = cast(batch.column(0), &DataType::Utf8)?;
            let column = column.as_string::<i32>();
            kinds.extend((0..column.len()).map(|i| column.value(i).to_string()));
        }
        if kinds.iter().any(|k| k == name) {
            return Ok(());
        }
        if !reveal_values {
            return Err(Error::request_hint(
                format!(
                    "no one in `{}` was onboarded by a `{name}` event",
                    setup.activity
                ),
                "check the event type's spelling in the project's `discovery.onboarding`",
            ));
        }
        let hint = did_you_mean(name, kinds.iter().map(String::as_str)).unwrap_or_else(|| {
            let shown: Vec<&str> = kinds.iter().take(20).map(String::as_str).collect();
            format!(
                "the event types of `{}.{}` include: {}",
                setup.activity,
                setup.event_column,
                shown.join(", ")
            )
        });
        Err(Error::request_hint(
            format!(
                "no `{name}` event in `{}` (column `{}`) to onboard users with",
                setup.activity, setup.event_column
            ),
            format!("{hint}; or onboard by a cohort table's column with SOURCE.TABLE.COLUMN"),
        ))
    }

    /// The last local time with activity.
    async fn data_end(
        &self,
        table: &TableRef,
        local: &str,
        time: &TimeColumn,
    ) -> Result<Option<NaiveDateTime>> {
        let sql = format!(
            "SELECT CAST(max({local}) AS TIMESTAMP) FROM {}",
            table.sql()
        );
        let batches = match self.plan(&sql).await {
            Ok(df) => df.collect().await,
            Err(e) => Err(e),
        }
        .map_err(|e| text_times_error(e, table, time))?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let column = cast(
            batch.column(0),
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )?;
        let values = column.as_primitive::<TimestampNanosecondType>();
        Ok(values
            .is_valid(0)
            .then(|| chrono::DateTime::from_timestamp_nanos(values.value(0)).naive_utc()))
    }

    /// The one query: per cohort part, activity, capped count and retained flag, the number
    /// of users; each user also counted once (`users`) in whatever row comes first for them.
    async fn discovery_sql(
        &self,
        setup: &Setup,
        training: DateRange,
        validation: Option<DateRange>,
        latest: NaiveDateTime,
    ) -> Result<String> {
        let tz = self.project().timezone;
        let activity_schema = self.schema_of(&setup.activity).await?;
        let act_time = time_column(&activity_schema, &setup.activity, &setup.activity_time)?;
        let entity = quote_ident(&setup.entity);
        let event = quote_ident(&setup.event_column);
        let act_entity_type = activity_schema
            .field_with_name(&setup.entity)
            .map(|f| f.data_type().clone())
            .map_err(|e| Error::DataFusion(Box::new(e.into())))?;

        let (onboarded, onboarding_event) = match &setup.onboarded {
            Onboarding::Event(name) => {
                let local = local_time(&act_time.name, act_time.kind, tz);
                (
                    format!(
                        "SELECT {entity} AS e, min({local}) AS t0 FROM {} WHERE {entity} IS NOT NULL AND CAST({event} AS VARCHAR) = {} GROUP BY {entity}",
                        setup.activity.sql(),
                        string_literal(name)
                    ),
                    Some(name.as_str()),
                )
            }
            Onboarding::Column { table, .. } => {
                let schema = self.schema_of(table).await?;
                let time_name = setup.onboarded_time.as_deref().unwrap_or_default();
                let time = time_column(&schema, table, time_name)?;
                let local = local_time(&time.name, time.kind, tz);
                let cohort_entity_type = schema
                    .field_with_name(&setup.entity)
                    .map(|f| f.data_type().clone())
                    .map_err(|e| Error::DataFusion(Box::new(e.into())))?;
                // Join keys of different types (text ids against numbers) meet as text.
                let key = if cohort_entity_type == act_entity_type {
                    entity.clone()
                } else {
                    format!("CAST({entity} AS VARCHAR)")
                };
                (
                    format!(
                        "SELECT {key} AS e, min({local}) AS t0 FROM {} WHERE {entity} IS NOT NULL GROUP BY {key}",
                        table.sql()
                    ),
                    None,
                )
            }
        };
        let activity_key = match &setup.onboarded {
            Onboarding::Column { table, .. } => {
                let schema = self.schema_of(table).await?;
                let same = schema
                    .field_with_name(&setup.entity)
                    .is_ok_and(|f| *f.data_type() == act_entity_type);
                if same {
                    entity.clone()
                } else {
                    format!("CAST({entity} AS VARCHAR)")
                }
            }
            Onboarding::Event(_) => entity.clone(),
        };

        let local = local_time(&act_time.name, act_time.kind, tz);
        let filter = match &setup.filter {
            Some(f) => format!(" AND ({})", sql::parse_expr(f).map_err(Error::request)?),
            None => String::new(),
        };
        let part = match validation {
            Some(v) => format!(
                "CASE WHEN {} THEN 'train' WHEN {} THEN 'validate' END",
                training.condition("t0"),
                v.condition("t0")
            ),
            None => format!("CASE WHEN {} THEN 'train' END", training.condition("t0")),
        };
        // The windows' bounds are computed once per member (cohort `x`, `y0`, `y1`): added to
        // `t0` in the join's filter, they would be computed for every activity row.
        let x = setup.within.interval();
        let y = setup.retained.interval();
        let (late, late_end) = match setup.window {
            Some(w) => {
                let end = Span {
                    seconds: setup.retained.seconds + w.seconds,
                };
                (
                    "a.t >= c.y0 AND a.t < c.y1",
                    format!("t0 + {}", end.interval()),
                )
            }
            // Not compared.
            None => ("a.t >= c.y0", "t0".to_string()),
        };
        // The onboarding event itself is not an activity; its repeats after it are.
        let early = match onboarding_event {
            Some(name) => format!(
                "a.t < c.x AND ((a.kind IS DISTINCT FROM {0}) OR a.t > c.t0)",
                string_literal(name)
            ),
            None => "a.t < c.x".to_string(),
        };
        let max_k = setup.max_k;
        Ok(format!(
            "WITH onboarded AS ({onboarded}),
cohort AS (
  SELECT e, t0, t0 + {x} AS x, t0 + {y} AS y0, {late_end} AS y1,
    {part} AS part, t0 > {latest} AS young
  FROM onboarded
),
activity AS (
  SELECT {activity_key} AS e, CAST({event} AS VARCHAR) AS kind, {local} AS t
  FROM {table} WHERE {entity} IS NOT NULL{filter}
),
per_kind AS (
  SELECT c.part, c.young, c.e, a.kind,
    count(a.t) FILTER (WHERE {early}) AS n,
    bool_or({late}) AS late
  FROM cohort c LEFT JOIN activity a
    ON a.e = c.e AND NOT c.young AND a.t >= c.t0 AND (({early}) OR ({late}))
  WHERE c.part IS NOT NULL
  GROUP BY c.part, c.young, c.e, a.kind
),
per_user AS (
  SELECT part, young, kind, n,
    coalesce(bool_or(late) OVER (PARTITION BY e), false) AS retained,
    row_number() OVER (PARTITION BY e ORDER BY kind) = 1 AS first
  FROM per_kind
)
SELECT part, young, kind, CAST(least(n, {max_k}) AS BIGINT) AS n, retained,
  count(*) FILTER (WHERE n > 0) AS doers,
  count(*) FILTER (WHERE first) AS users
FROM per_user
GROUP BY part, young, kind, least(n, {max_k}), retained",
            latest = timestamp(latest),
            table = setup.activity.sql(),
        ))
    }

    fn query_error(&self, e: DataFusionError, setup: &Setup) -> Error {
        if is_parse_failure(&e) {
            Error::request_hint(
                format!(
                    "a time column holds text that is not a timestamp ({}.{} or the onboarding column): {e}",
                    setup.activity, setup.activity_time
                ),
                "time columns must hold ISO-8601 timestamps such as 2026-05-04T10:00:00Z, or be timestamp or date columns",
            )
        } else {
            e.into()
        }
    }
}

/// The training range, defaulting to the cohorts before validation; the two must not overlap.
fn split_ranges(request: &DiscoveryRequest) -> Result<(DateRange, Option<DateRange>)> {
    let Some(validation) = request.validate_on else {
        return Ok((request.cohorts, None));
    };
    let mut training = request.cohorts;
    if training == DateRange::default() {
        let Some(start) = validation.from else {
            return Err(Error::request_hint(
                format!(
                    "the validation cohorts `{validation}` have no start, so the cohorts before them are not defined"
                ),
                words![
                    "give ",
                    RequestField::ValidateOn,
                    " a start date, or name the training cohorts with ",
                    RequestField::From,
                    " and ",
                    RequestField::To
                ],
            ));
        };
        training.to = start.pred_opt();
    }
    if training.overlaps(&validation) {
        return Err(Error::request_hint(
            format!(
                "the training cohorts ({training}) overlap the validation cohorts ({validation})"
            ),
            "validation checks candidates on users they were not found on: choose ranges that do not overlap",
        ));
    }
    Ok((training, Some(validation)))
}

fn cohort(range: DateRange, counts: &Counts, min_support: u64) -> Cohort {
    Cohort {
        range,
        users: counts.users,
        retained: counts.retained,
        too_young: counts.too_young,
        min_support,
    }
}

/// Reads the query's rows into the training and validation counts.
fn read_counts(batches: &[RecordBatch], max_k: u32) -> Result<(Counts, Counts)> {
    let mut training = Counts::default();
    let mut validation = Counts::default();
    for batch in batches {
        let text = |i: usize| cast(batch.column(i), &DataType::Utf8);
        let int = |i: usize| cast(batch.column(i), &DataType::Int64);
        let (part, kind) = (text(0)?, text(2)?);
        let (part, kind) = (part.as_string::<i32>(), kind.as_string::<i32>());
        let young = batch.column(1).as_boolean();
        let retained = batch.column(4).as_boolean();
        let (n, doers, users) = (int(3)?, int(5)?, int(6)?);
        let (n, doers, users) = (
            n.as_primitive::<Int64Type>(),
            doers.as_primitive::<Int64Type>(),
            users.as_primitive::<Int64Type>(),
        );
        for row in 0..batch.num_rows() {
            let counts = match part.value(row) {
                "validate" => &mut validation,
                _ => &mut training,
            };
            let users = u64::try_from(users.value(row)).unwrap_or(0);
            let is_retained = retained.is_valid(row) && retained.value(row);
            if young.value(row) {
                counts.too_young += users;
                continue;
            }
            counts.users += users;
            if is_retained {
                counts.retained += users;
            }
            let doers = u64::try_from(doers.value(row)).unwrap_or(0);
            let count = if n.is_valid(row) { n.value(row) } else { 0 };
            if kind.is_valid(row) && doers > 0 && count > 0 {
                let count = u32::try_from(count).unwrap_or(max_k);
                counts.add(kind.value(row), count, is_retained, doers, max_k);
            }
        }
    }
    Ok((training, validation))
}

fn column_names(schema: &SchemaRef) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

fn require_column(
    columns: &[&str],
    table: &TableRef,
    what: &str,
    name: &str,
    field: Piece,
) -> Result<()> {
    if columns.contains(&name) {
        return Ok(());
    }
    let hint = match did_you_mean(name, columns.iter().copied()) {
        Some(close) => words![format!("{close} (name it with "), field, ")"],
        None => words![
            format!(
                "the columns of `{table}` are: {}; name the right one with ",
                columns.join(", ")
            ),
            field
        ],
    };
    Err(Error::request_hint(
        format!("{what} `{name}` is not a column of `{table}`"),
        hint,
    ))
}

/// A table's time column when none is named: a usual name with a time type, else the one
/// column with a timestamp or date type.
fn guess_time_column(schema: &SchemaRef, table: &TableRef) -> Result<String> {
    let is_time = |name: &str| {
        schema
            .field_with_name(name)
            .is_ok_and(|f| TimeKind::of(f.data_type()).is_some())
    };
    if let Some(name) = TIME_COLUMNS.iter().find(|n| is_time(n)) {
        return Ok((*name).to_string());
    }
    let typed: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            )
        })
        .map(|f| f.name().as_str())
        .collect();
    match typed.as_slice() {
        [one] => Ok((*one).to_string()),
        _ => Err(Error::request_hint(
            format!(
                "cannot tell which column of `{table}` holds the time ({})",
                if typed.is_empty() {
                    "none has a timestamp type".to_string()
                } else {
                    format!("candidates: {}", typed.join(", "))
                }
            ),
            format!("name it: {table}.COLUMN"),
        )),
    }
}

fn time_column(schema: &SchemaRef, table: &TableRef, name: &str) -> Result<TimeColumn> {
    let field = schema.field_with_name(name).map_err(|_| {
        Error::request(format!("time column `{name}` is not a column of `{table}`"))
    })?;
    let kind = TimeKind::of(field.data_type()).ok_or_else(|| {
        Error::request_hint(
            format!(
                "time column `{name}` of `{table}` has type {}; it must be a timestamp, a date or ISO-8601 text",
                field.data_type()
            ),
            "for epoch numbers, expose a converted column (e.g. a view with to_timestamp())",
        )
    })?;
    Ok(TimeColumn {
        name: name.to_string(),
        kind,
    })
}

fn text_times_error(e: DataFusionError, table: &TableRef, time: &TimeColumn) -> Error {
    if time.kind == TimeKind::Text && is_parse_failure(&e) {
        Error::request_hint(
            format!(
                "time column `{}` of `{table}` holds text that is not a timestamp",
                time.name
            ),
            "the time column must hold ISO-8601 timestamps such as 2026-05-04T10:00:00Z",
        )
    } else {
        e.into()
    }
}

fn timestamp(t: NaiveDateTime) -> String {
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.f"))
}

pub(crate) fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------------------
// Presenting.

impl Discovery {
    /// Every tested candidate, ranked ones first.
    pub fn all_candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().chain(&self.below_support)
    }

    /// The ranked candidates as a table, one row per candidate, best first: `rank`,
    /// `activity`, `at_least`, `users`, `doers`, `support`, the four cells of the 2×2 table,
    /// `retention_did`, `retention_not`, `lift`, `precision`, `recall`, `phi`, `phi_low`,
    /// `phi_high`, then the same on the validation cohort (null without one) and `validation`
    /// (holds, weaker, fails, too few users).
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let rows = &self.candidates;
        let floats = |f: &dyn Fn(&Candidate) -> Option<f64>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<Float64Array>())
        };
        let ints = |f: &dyn Fn(&Candidate) -> Option<u64>| -> ArrayRef {
            Arc::new(
                rows.iter()
                    .map(|c| f(c).map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
                    .collect::<Int64Array>(),
            )
        };
        let valid = |c: &Candidate| c.validation.map(|v| v.table);
        let mut fields = vec![
            Field::new("rank", DataType::UInt32, false),
            Field::new("activity", DataType::Utf8, false),
            Field::new("at_least", DataType::UInt32, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(
                (1..=rows.len()).map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|c| c.activity.as_str()),
            )),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|c| c.at_least),
            )),
        ];
        let int_columns: [IntColumn<'_>; 6] = [
            ("users", &|c| Some(c.table.users())),
            ("doers", &|c| Some(c.table.doers())),
            ("doers_retained", &|c| Some(c.table.doers_retained)),
            ("doers_churned", &|c| Some(c.table.doers_churned)),
            ("others_retained", &|c| Some(c.table.others_retained)),
            ("others_churned", &|c| Some(c.table.others_churned)),
        ];
        for (name, f) in int_columns {
            fields.push(Field::new(name, DataType::Int64, false));
            columns.push(ints(f));
        }
        let float_columns: [FloatColumn<'_>; 9] = [
            ("support", &|c| c.table.support()),
            ("retention_did", &|c| c.table.retention_did()),
            ("retention_not", &|c| c.table.retention_not()),
            ("lift", &|c| c.table.lift()),
            ("precision", &|c| c.table.precision()),
            ("recall", &|c| c.table.recall()),
            ("phi", &|c| c.table.phi()),
            ("phi_low", &|c| c.phi_interval().map(|i| i.0)),
            ("phi_high", &|c| c.phi_interval().map(|i| i.1)),
        ];
        for (name, f) in float_columns {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(floats(f));
        }
        let validation_ints: [IntColumn<'_>; 2] = [
            ("validation_users", &|c| valid(c).map(|t| t.users())),
            ("validation_doers", &|c| valid(c).map(|t| t.doers())),
        ];
        for (name, f) in validation_ints {
            fields.push(Field::new(name, DataType::Int64, true));
            columns.push(ints(f));
        }
        let validation_floats: [FloatColumn<'_>; 6] = [
            ("validation_retention_did", &|c| valid(c)?.retention_did()),
            ("validation_retention_not", &|c| valid(c)?.retention_not()),
            ("validation_lift", &|c| valid(c)?.lift()),
            ("validation_phi", &|c| valid(c)?.phi()),
            ("validation_phi_low", &|c| {
                Some(valid(c)?.phi_interval(Z_95)?.0)
            }),
            ("validation_phi_high", &|c| {
                Some(valid(c)?.phi_interval(Z_95)?.1)
            }),
        ];
        for (name, f) in validation_floats {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(floats(f));
        }
        fields.push(Field::new("validation", DataType::Utf8, true));
        columns.push(Arc::new(
            rows.iter()
                .map(|c| c.validation.map(|v| v.verdict.as_str()))
                .collect::<StringArray>(),
        ));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// A plain-language account of the `top` best candidates, with the caveats.
    pub fn summary(&self, top: usize) -> String {
        summary(self, top)
    }
}

/// A named column of the ranking and how each candidate fills it.
type IntColumn<'a> = (&'a str, &'a dyn Fn(&Candidate) -> Option<u64>);
type FloatColumn<'a> = (&'a str, &'a dyn Fn(&Candidate) -> Option<f64>);

/// "users onboarded from 2026-03-01 up to 2026-08-10 23:59": the judged span of a cohort.
fn onboarded_span(cohort: &Cohort, latest: NaiveDateTime) -> String {
    let from = cohort
        .range
        .from
        .map(|d| format!(" from {d}"))
        .unwrap_or_default();
    let to = match cohort.range.to {
        Some(to) if NaiveDateTime::from(to + Days::new(1)) <= latest => format!(" to {to}"),
        _ => format!(" up to {}", latest.format("%Y-%m-%d %H:%M")),
    };
    format!("onboarded{from}{to}")
}

/// One sentence per cohort: how many were judged, how many retained, how many too young.
fn cohort_text(name: &str, cohort: &Cohort, latest: NaiveDateTime) -> String {
    let mut out = if cohort.users == 0 {
        format!(
            "{name}: no user {} is old enough to be judged.",
            onboarded_span(cohort, latest)
        )
    } else {
        format!(
            "{name}: {} users {} are old enough to be judged; {} of them were retained.",
            thousands(cohort.users),
            onboarded_span(cohort, latest),
            percent(cohort.retention())
        )
    };
    if cohort.too_young > 0 {
        out.push_str(&format!(
            " {} onboarded later are too recent and were left out.",
            thousands(cohort.too_young)
        ));
    }
    out.push('\n');
    out
}

fn summary(d: &Discovery, top: usize) -> String {
    let s = &d.setup;
    let mut out = format!(
        "Which activities within {} of onboarding ({}) go with being {}?\n",
        s.within.describe(),
        s.onboarding_text(),
        s.retention_text()
    );
    let Some(latest) = d.latest_onboarding else {
        out.push_str("\nThere is no activity data to judge anyone on.\n");
        return out;
    };
    out.push('\n');
    out.push_str(&cohort_text("Cohorts analysed", &d.training, latest));
    if let Some(v) = &d.validation {
        out.push_str(&cohort_text("Validation cohorts", v, latest));
    }

    // Each activity at its best threshold, and only where the interval excludes chance.
    let mut seen = Vec::new();
    let mut best = Vec::new();
    for c in &d.candidates {
        if !seen.contains(&c.activity) {
            seen.push(c.activity.clone());
            best.push(c);
        }
    }
    let clear: Vec<&Candidate> = best
        .iter()
        .copied()
        .filter(|c| c.phi_interval().is_some_and(|(low, _)| low > 0.0))
        .collect();
    let others = best.len() - clear.len();
    if d.candidates.is_empty() {
        out.push_str(&format!(
            "\nNo activity has at least {} users both among those who did it and those who did not; lower the minimum support or widen the cohorts.\n",
            thousands(d.training.min_support)
        ));
    } else if clear.is_empty() {
        out.push_str("\nNo activity goes with retention clearly enough to tell it from chance: every 95% interval of phi reaches zero or below.\n");
    } else {
        out.push_str("\nTop candidates (each activity at its best threshold):\n");
        for (i, c) in clear.iter().take(top).enumerate() {
            out.push_str(&format!("  {}. {}\n", i + 1, candidate_text(c)));
        }
        if clear.len() > top {
            out.push_str(&format!(
                "{} more with a clear association {} in the ranking.\n",
                plural(clear.len() - top, "activity", "activities"),
                if clear.len() - top == 1 { "is" } else { "are" }
            ));
        }
        if others > 0 {
            out.push_str(&format!(
                "{others} other {} no association distinguishable from chance, or a negative one.\n",
                if others == 1 { "activity shows" } else { "activities show" }
            ));
        }
    }
    let tested = d.candidates.len() + d.below_support.len();
    out.push_str(&format!(
        "\nThis is correlation, not causation: users who do these things may simply be the ones who were going to stay anyway. Test a candidate (an experiment that gets more users to do it) before making it a goal. {} tested, so some can look strong by chance; {}\n",
        plural(tested, "candidate was", "candidates were"),
        if d.validation.is_some() {
            "trust those that hold on the validation cohorts."
        } else {
            "check them on later cohorts before trusting them."
        }
    ));
    out
}

fn candidate_text(c: &Candidate) -> String {
    let t = &c.table;
    let times = if c.at_least == 1 {
        "at least once".to_string()
    } else {
        format!("at least {} times", c.at_least)
    };
    let lift = t
        .lift()
        .map(|l| format!("{l:.2}× as likely"))
        .unwrap_or_else(|| "none of the others was".into());
    let interval = c
        .phi_interval()
        .map(|(low, high)| format!(" (95% CI {low:.2} to {high:.2})"))
        .unwrap_or_default();
    let validation = match c.validation {
        Some(v) => match v.verdict {
            Verdict::Holds => " It holds on the validation cohorts.".to_string(),
            Verdict::Weaker => format!(
                " On the validation cohorts it is weaker (phi {:.2}).",
                v.table.phi().unwrap_or_default()
            ),
            Verdict::Fails => " It does NOT hold on the validation cohorts.".to_string(),
            Verdict::TooFewUsers => {
                " The validation cohorts have too few users to tell.".to_string()
            }
        },
        None => String::new(),
    };
    format!(
        "{} {times}: {} of users did; {} of them were retained against {} of the others ({lift}). phi {:.2}{interval}; {} of retained users had done it.{validation}",
        c.activity,
        percent(t.support()),
        percent(t.retention_did()),
        percent(t.retention_not()),
        t.phi().unwrap_or_default(),
        percent(t.recall()),
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn table(a: u64, b: u64, c: u64, d: u64) -> TwoByTwo {
        TwoByTwo {
            doers_retained: a,
            doers_churned: b,
            others_retained: c,
            others_churned: d,
        }
    }

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a value");
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn statistics_of_a_hand_computed_table() {
        // 100 users: 30 did it (20 retained), 70 did not (14 retained).
        let t = table(20, 10, 14, 56);
        assert_eq!(
            (t.users(), t.doers(), t.others(), t.retained()),
            (100, 30, 70, 34)
        );
        close(t.support(), 0.3);
        close(t.retention_did(), 20.0 / 30.0);
        close(t.retention_not(), 0.2);
        // (2/3) / (1/5) = 10/3.
        close(t.lift(), 10.0 / 3.0);
        close(t.precision(), 20.0 / 30.0);
        close(t.recall(), 20.0 / 34.0);
        // (20·56 − 10·14) / √(30·70·34·66) = 980 / √4712400 = 980 / 2170.8063…
        close(t.phi(), 980.0 / 4_712_400f64.sqrt());
        close(t.phi(), 0.451_445_160_805);
    }

    #[test]
    fn the_phi_interval_is_fisher_z() {
        let t = table(20, 10, 14, 56);
        let phi: f64 = 0.451_445_160_805;
        // The half width on the z scale is 1.96/√97.
        let (low, high) = t.phi_interval(Z_95).unwrap();
        let z = 0.5 * ((1.0 + phi) / (1.0 - phi)).ln();
        let half = 1.959_963_984_540_054 / 97f64.sqrt();
        assert!((low - (z - half).tanh()).abs() < 1e-9);
        assert!((high - (z + half).tanh()).abs() < 1e-9);
        // Rounded: 0.280 to 0.595.
        assert_eq!(format!("{low:.3} {high:.3}"), "0.280 0.595");
        assert!(low < phi && phi < high);
    }

    #[test]
    fn a_negative_association_and_no_association() {
        // Doers are retained less: 5 of 50 against 25 of 50.
        let t = table(5, 45, 25, 25);
        close(t.lift(), 0.2);
        // (5·25 − 45·25) / √(50·50·30·70) = −1000 / √5250000.
        close(t.phi(), -1000.0 / 5_250_000f64.sqrt());
        // Same retention on both sides: lift 1, phi 0.
        let t = table(10, 30, 15, 45);
        close(t.lift(), 1.0);
        close(t.phi(), 0.0);
    }

    #[test]
    fn degenerate_tables_have_no_statistics() {
        // Everyone did it: no comparison group.
        let all = table(10, 5, 0, 0);
        assert_eq!(all.retention_not(), None);
        assert_eq!(all.lift(), None);
        assert_eq!(all.phi(), None);
        // No non-doer retained: lift is infinite, reported as undefined.
        let t = table(10, 5, 0, 20);
        assert_eq!(t.lift(), None);
        close(t.phi(), 200.0 / (15.0f64 * 20.0 * 10.0 * 25.0).sqrt());
        // A perfect association: phi 1 and an interval at 1.
        let perfect = table(10, 0, 0, 10);
        close(perfect.phi(), 1.0);
        assert_eq!(perfect.phi_interval(Z_95), Some((1.0, 1.0)));
        assert_eq!(table(1, 1, 0, 1).phi_interval(Z_95), None);
    }

    fn counts() -> Counts {
        // 10 users, 4 retained. Users who did "save": 1 time: 1 churned, 1 retained;
        // 2 times: 0 churned, 2 retained; 3+ times: 1 retained.
        let mut c = Counts {
            users: 10,
            retained: 4,
            ..Counts::default()
        };
        c.add("save", 1, false, 1, 3);
        c.add("save", 1, true, 1, 3);
        c.add("save", 2, true, 2, 3);
        c.add("save", 7, true, 1, 3);
        c.add("open", 1, false, 6, 3);
        c.add("open", 1, true, 4, 3);
        c
    }

    #[test]
    fn thresholds_are_cumulative_counts() {
        let c = counts();
        // ≥1: 5 doers (4 retained); others: 5 users, 0 retained.
        assert_eq!(c.table("save", 1), table(4, 1, 0, 5));
        // ≥2: 3 doers, all retained; others: 7 with 1 retained.
        assert_eq!(c.table("save", 2), table(3, 0, 1, 6));
        // ≥3 counts the capped "7 times".
        assert_eq!(c.table("save", 3), table(1, 0, 3, 6));
        assert_eq!(c.table("missing", 1), table(0, 0, 4, 6));
    }

    #[test]
    fn candidates_are_ranked_by_phi_above_the_support() {
        let c = counts();
        let (ranked, below) = candidates(&c, 3, 1);
        let labels: Vec<String> = ranked.iter().map(Candidate::label).collect();
        // save ≥ 1: phi = (4·5 − 0)/√(5·5·4·6) = 0.8165; save ≥ 2: 18/√(3·7·4·6) = 0.8018;
        // save ≥ 3: 6/√(1·9·4·6) = 0.4082. "open" was done by everyone: no comparison.
        assert_eq!(labels, ["save ≥ 1", "save ≥ 2", "save ≥ 3"]);
        assert_eq!(
            below.iter().map(Candidate::label).collect::<Vec<_>>(),
            ["open ≥ 1"]
        );
        // A support of 2 drops "save ≥ 3" (one doer).
        let (ranked, below) = candidates(&c, 3, 2);
        assert_eq!(ranked.len(), 2);
        assert_eq!(below.len(), 2);
    }

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
    fn validation_verdicts() {
        let training = table(200, 100, 140, 560); // phi ≈ 0.45
        // The same proportions, ten times fewer users: the interval contains 0.45.
        assert_eq!(
            verdict(&training, &table(20, 10, 14, 56), 5),
            Verdict::Holds
        );
        // Still positive but clearly smaller: phi ≈ 0.21, interval about 0.15 to 0.27.
        let smaller = table(150, 150, 200, 500);
        let (low, high) = smaller.phi_interval(Z_95).unwrap();
        assert!(low > 0.0 && high < 0.45, "{low} {high}");
        assert_eq!(verdict(&training, &smaller, 5), Verdict::Weaker);
        // No association (lift 1) or the reverse: fails.
        assert_eq!(
            verdict(&training, &table(100, 300, 100, 300), 5),
            Verdict::Fails
        );
        assert_eq!(verdict(&training, &table(5, 45, 25, 25), 5), Verdict::Fails);
        // Below the support in one group: cannot tell.
        assert_eq!(
            verdict(&training, &table(3, 1, 40, 60), 5),
            Verdict::TooFewUsers
        );
        // A negative training association holds when the validation one is negative too.
        let negative = table(10, 90, 50, 50);
        assert_eq!(
            verdict(&negative, &table(12, 88, 48, 52), 5),
            Verdict::Holds
        );
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

    #[test]
    fn validation_defaults_to_the_cohorts_before_it() {
        let mut request = DiscoveryRequest::new(Onboarding::Event("signup".into()));
        request.validate_on = Some("2026-07-01..2026-07-31".parse().unwrap());
        let (training, _) = split_ranges(&request).unwrap();
        assert_eq!(training.to, NaiveDate::from_ymd_opt(2026, 6, 30));
        request.cohorts = "2026-06-01..2026-07-10".parse().unwrap();
        assert!(split_ranges(&request).is_err());
    }

    #[test]
    fn the_summary_names_each_activity_once_and_says_what_this_is_not() {
        let c = counts();
        let (candidates, below_support) = super::candidates(&c, 3, 1);
        let setup = Setup {
            onboarded: Onboarding::Event("signup".into()),
            onboarded_time: None,
            activity: table_ref("app", "events"),
            activity_time: "event_time".into(),
            entity: "user_id".into(),
            event_column: "event_type".into(),
            filter: None,
            within: Span::days(1),
            retained: Span::days(14),
            window: Some(Span::days(7)),
            max_k: 3,
        };
        let latest = NaiveDate::from_ymd_opt(2026, 8, 10)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let d = Discovery {
            setup,
            data_end: Some(latest + TimeDelta::days(21)),
            latest_onboarding: Some(latest),
            training: super::cohort(DateRange::default(), &c, 1),
            validation: None,
            candidates,
            below_support,
        };
        let text = d.summary(3);
        assert!(
            text.contains("between day 14 and day 21 after onboarding"),
            "{text}"
        );
        assert!(
            text.contains("10 users onboarded up to 2026-08-10 12:00"),
            "{text}"
        );
        assert!(text.contains("1. save at least once"), "{text}");
        assert!(!text.contains("2. save"), "{text}");
        assert!(text.contains("correlation, not causation"), "{text}");
        assert!(text.contains("4 candidates were tested"), "{text}");
        let batch = d.to_record_batch().unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), 27);
    }
}

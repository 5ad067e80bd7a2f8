//! The validated metric model: what a project file means once it has been checked.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use indexmap::IndexMap;

use crate::project::error::Location;

/// The entity column used when a request or `discovery:` does not name one.
pub const DEFAULT_ENTITY: &str = "user_id";

/// A loaded, structurally valid project. SQL fragments are checked later, against the
/// sources' schemas, by [`crate::Engine::validate`].
#[derive(Debug, Clone)]
pub struct Project {
    /// The project file.
    pub path: PathBuf,
    /// The directory relative paths in the project file are resolved against.
    pub root: PathBuf,
    pub timezone: Tz,
    pub week_start: Weekday,
    pub engine: EngineSettings,
    /// The per-period result cache (`cache:`); `None` computes everything afresh.
    pub cache: Option<CacheSettings>,
    pub sources: IndexMap<String, SourceDef>,
    pub metrics: IndexMap<String, Metric>,
    /// What retention and discovery may be asked about by name (`discovery:`).
    pub discovery: DiscoverySettings,
}

impl Project {
    pub fn metric(&self, name: &str) -> crate::Result<&Metric> {
        self.metrics.get(name).ok_or_else(|| {
            let hint = match crate::project::error::did_you_mean(
                name,
                self.metrics.keys().map(String::as_str),
            ) {
                Some(close) => close.into(),
                None => crate::query::request::words![
                    crate::query::request::Action::ListMetrics,
                    " shows the metrics of this project"
                ],
            };
            crate::Error::request_hint(format!("unknown metric `{name}`"), hint)
        })
    }

    /// Whether the project declares retention over these columns: a retention metric's
    /// cohort, activity and entity, or an onboarding column of `discovery:` with its activity
    /// table and entity. What a caller who may only see declared inputs may ask for.
    pub fn declares_retention(
        &self,
        cohort: (&TableRef, &str),
        activity: (&TableRef, &str),
        entities: (&str, &str),
    ) -> bool {
        let by_metric = self.metrics.values().any(|m| match &m.kind {
            MetricKind::Retention(r) => {
                (&r.cohort, r.cohort_time.as_str()) == cohort
                    && (&r.activity, r.activity_time.as_str()) == activity
                    && (r.entity.as_str(), r.entity.as_str()) == entities
            }
            _ => false,
        });
        let d = &self.discovery;
        let entity = d.entity.as_deref().unwrap_or(DEFAULT_ENTITY);
        let by_discovery = d
            .activity
            .as_ref()
            .is_some_and(|(t, time)| (t, time.as_str()) == activity)
            && entities == (entity, entity)
            && d.onboarding.values().any(|o| {
                matches!(o, OnboardingDef::Column { table, time } if (table, time.as_str()) == cohort)
            });
        by_metric || by_discovery
    }

    pub fn north_stars(&self) -> impl Iterator<Item = &Metric> {
        self.metrics.values().filter(|m| m.north_star)
    }
}

/// `discovery:`: the activity table and the onboarding events of the project, so that
/// retention and value-moment discovery can be asked for by name (the only way a read token
/// of the server may ask for them), and the defaults of `lodestar discover`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// The activity table and its time column (`activity: app.events.event_time`).
    pub activity: Option<(TableRef, String)>,
    /// The column naming the entity (user, team) in the activity and cohort tables.
    pub entity: Option<String>,
    /// The activity table's column holding the activity type.
    pub event_column: Option<String>,
    /// Named onboarding events, in file order: retention cohorts and discovery's onboarding.
    pub onboarding: IndexMap<String, OnboardingDef>,
}

/// A named onboarding event of `discovery.onboarding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnboardingDef {
    /// Each entity's earliest time in a cohort table's column (`app.users.signed_up_at`).
    Column { table: TableRef, time: String },
    /// Each entity's first activity of this type in the activity table.
    Event(String),
}

/// Settings of the DataFusion runtime.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// Memory the engine may use before it spills to disk; `None` sizes it to the machine.
    pub memory_limit: Option<usize>,
    /// Parallelism of scans and aggregations; `None` uses every core.
    pub target_partitions: Option<usize>,
    /// The Ballista scheduler that runs the queries (`engine: { cluster: df://host:port }`,
    /// or `--cluster`); `None` runs them in this process (docs/cluster.md).
    pub cluster: Option<ClusterUrl>,
    /// Ballista settings the cluster's queries run with (`engine.cluster_settings`), each a
    /// checked `ballista.` key and its value; unused without a cluster.
    pub cluster_settings: IndexMap<String, String>,
}

/// Where a Ballista cluster's scheduler listens: `df://HOST[:PORT]`, port 50050 by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub host: String,
    pub port: u16,
}

impl ClusterUrl {
    /// The port Ballista's scheduler listens on by default.
    pub const DEFAULT_PORT: u16 = 50050;

    /// The scheduler's gRPC endpoint, as Ballista's client takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

impl FromStr for ClusterUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<ClusterUrl, String> {
        let expected = "expected df://HOST or df://HOST:PORT, such as df://scheduler:50050";
        let rest = text
            .strip_prefix("df://")
            .ok_or_else(|| format!("`{text}` is not a cluster address: {expected}"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 address in brackets has colons of its own.
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        format!("`{text}`: the port `{port}` is not a number from 1 to 65535")
                    })?;
                (host, port)
            }
            _ => (rest, ClusterUrl::DEFAULT_PORT),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || "-._[]:".contains(c);
        if host.is_empty() || !host.chars().all(valid) {
            return Err(format!("`{text}` names no host: {expected}"));
        }
        Ok(ClusterUrl {
            host: host.to_string(),
            port,
        })
    }
}

/// The `cache:` settings: where per-period results are kept, and how far back late data may
/// still arrive (see docs/caching.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// The cache directory, resolved against the project file's directory.
    pub dir: PathBuf,
    /// Days: a period ending within this many days of the data's last day is recomputed.
    pub lookback: u32,
}

/// A `sources:` entry: a connector and its options.
#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    pub connector: String,
    /// The connector's options as written (after `${ENV}` interpolation), without `connector`.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Where each option was written.
    pub option_locations: IndexMap<String, Location>,
    pub location: Location,
}

impl SourceDef {
    /// The location of option `key`, or of the source if it was not written.
    pub fn location_of(&self, key: &str) -> &Location {
        self.option_locations.get(key).unwrap_or(&self.location)
    }
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub north_star: bool,
    /// Input metrics: the children of this metric in the metric tree.
    pub inputs: Vec<String>,
    /// How the inputs combine into this metric, as an SQL expression over their names.
    pub formula: Option<String>,
    /// Columns the metric can be broken down and filtered by.
    pub dimensions: Vec<String>,
    /// The grain the metric is usually read at (`tree`, `list`); requests may ask for another.
    pub grain: Option<Grain>,
    pub target: Option<Target>,
    /// Counter-metrics watched beside this one.
    pub guardrails: Vec<Guardrail>,
    pub location: Location,
    /// Where each field was written, for errors about a single field.
    pub field_locations: IndexMap<&'static str, Location>,
    /// Where each item of a list of names (`inputs`, `guardrails`) was written.
    pub item_locations: IndexMap<(&'static str, String), Location>,
}

impl Metric {
    /// The location of `field`, or of the metric itself if the field was not written.
    pub fn location_of(&self, field: &str) -> &Location {
        self.field_locations.get(field).unwrap_or(&self.location)
    }

    /// The location of one name in a list field such as `inputs`.
    pub fn location_of_item(&self, field: &str, item: &str) -> &Location {
        self.item_locations
            .iter()
            .find(|((f, name), _)| *f == field && name == item)
            .map_or_else(|| self.location_of(field), |(_, location)| location)
    }

    /// Metrics this one is computed from (not the tree's `inputs`, which are informative).
    pub fn parents(&self) -> Vec<&str> {
        match &self.kind {
            MetricKind::Simple(_) | MetricKind::Sql { .. } | MetricKind::Retention(_) => vec![],
            MetricKind::Ratio {
                numerator,
                denominator,
            } => vec![numerator, denominator],
            MetricKind::Derived { references, .. } => {
                references.iter().map(String::as_str).collect()
            }
            MetricKind::Cumulative(c) => match &c.over {
                CumulativeOver::Metric(parent) => vec![parent],
                CumulativeOver::Measure(_) => vec![],
            },
        }
    }
}

#[derive(Debug, Clone)]
pub enum MetricKind {
    /// An aggregate over the rows of one table.
    Simple(Measure),
    /// numerator / denominator, each another metric.
    Ratio {
        numerator: String,
        denominator: String,
    },
    /// An SQL expression over other metrics' values.
    Derived {
        expr: String,
        /// The metric names the expression uses, in order of first use.
        references: Vec<String>,
    },
    /// A running total, or a trailing window.
    Cumulative(Cumulative),
    /// A raw SQL query returning `period`, optional dimension columns and `value`.
    Sql { sql: String, grain: Grain },
    /// The N-day retention rate of each period's cohort.
    Retention(RetentionMetric),
}

impl MetricKind {
    pub fn name(&self) -> &'static str {
        match self {
            MetricKind::Simple(_) => "simple",
            MetricKind::Ratio { .. } => "ratio",
            MetricKind::Derived { .. } => "derived",
            MetricKind::Cumulative(_) => "cumulative",
            MetricKind::Sql { .. } => "sql",
            MetricKind::Retention(_) => "retention",
        }
    }
}

/// A retention metric: per period, of the entities whose first cohort event falls in it, the
/// share active in `[cohort event + after, cohort event + after + window)`. A period whose
/// cohort can still change (the period or its last member's window has not ended by the
/// activity data's end) has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionMetric {
    /// The cohort table and its time column: each entity's earliest row is its cohort event.
    pub cohort: TableRef,
    pub cohort_time: String,
    /// The activity table and its time column.
    pub activity: TableRef,
    pub activity_time: String,
    /// The entity column, in both tables.
    pub entity: String,
    pub after_days: u32,
    pub window_days: u32,
    /// SQL predicates on the cohort and the activity rows.
    pub cohort_filter: Option<String>,
    pub activity_filter: Option<String>,
}

/// An aggregate over the rows of one table, filtered, bucketed by a time column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Measure {
    pub table: TableRef,
    pub time: String,
    /// An SQL aggregate expression, for example `count(distinct user_id)`.
    pub measure: String,
    /// An SQL predicate applied before aggregating.
    pub filter: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Cumulative {
    pub over: CumulativeOver,
    /// `None`: everything up to the end of each period. `Some(d)`: the trailing `d` days.
    pub window_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub enum CumulativeOver {
    /// Accumulates another metric's daily series (which must be additive: a count or a sum).
    Metric(String),
    /// Aggregates rows afresh over each window (right for distinct counts).
    Measure(Measure),
}

/// `source.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub source: String,
    pub table: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.source, self.table)
    }
}

impl TableRef {
    /// The table as DataFusion SQL names it, quoted so any table name works.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.source), quote_ident(&self.table))
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A counter-metric: if the metric rises while this one worsens by more than `threshold`
/// (relative change), the period is flagged.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    pub metric: String,
    /// Whether a rise is the bad direction (refund rate) rather than a fall (satisfaction).
    pub worse_when_up: bool,
    /// Relative change tolerated in the bad direction, as a fraction (0.05 for 5%).
    pub threshold: f64,
}

impl Guardrail {
    /// A guardrail where any rise counts as worse.
    pub fn new(metric: String) -> Guardrail {
        Guardrail {
            metric,
            worse_when_up: true,
            threshold: 0.0,
        }
    }

    /// Whether a move from `before` to `after` worsens beyond the threshold.
    pub fn breached(&self, before: f64, after: f64) -> bool {
        if before == 0.0 {
            return if self.worse_when_up {
                after > 0.0
            } else {
                false
            };
        }
        let change = (after - before) / before.abs();
        let worse = if self.worse_when_up { change } else { -change };
        worse > self.threshold
    }
}

/// A North Star target: reach `value` per `period` by the date `by`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub value: f64,
    pub period: Grain,
    pub by: NaiveDate,
    /// When the push towards the target started (for pacing); defaults to the data's start.
    pub start: Option<NaiveDate>,
}

/// The length of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Grain {
    pub const ALL: [Grain; 5] = [
        Grain::Day,
        Grain::Week,
        Grain::Month,
        Grain::Quarter,
        Grain::Year,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
    }
}

impl fmt::Display for Grain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Grain {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Grain::ALL
            .into_iter()
            .find(|g| g.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown grain `{s}`: expected one of day, week, month, quarter, year")
            })
    }
}

#[cfg(test)]
mod cluster_url_tests {
    use super::ClusterUrl;

    #[test]
    fn a_cluster_address_is_df_host_and_port() {
        let url: ClusterUrl = "df://scheduler:50060".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("scheduler", 50060));
        assert_eq!(url.endpoint(), "http://scheduler:50060");
        let url: ClusterUrl = "df://10.0.0.7".parse().unwrap();
        assert_eq!(url.to_string(), "df://10.0.0.7:50050");
        let url: ClusterUrl = "df://[::1]:7000/".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("[::1]", 7000));
        for (bad, says) in [
            ("http://scheduler:50050", "is not a cluster address"),
            ("scheduler:50050", "is not a cluster address"),
            ("df://", "names no host"),
            ("df://sched uler", "names no host"),
            ("df://scheduler:0", "is not a number from 1 to 65535"),
            ("df://scheduler:http", "is not a number from 1 to 65535"),
        ] {
            let error = bad.parse::<ClusterUrl>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}

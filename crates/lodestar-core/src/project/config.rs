//! Reading `lodestar.yaml`: YAML with source positions, `${ENV}` interpolation, and the
//! structural checks (names, kinds, references, cycles, north stars) that need no data.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::ops::ControlFlow;

use crate::project::error::{Error, Location, Result, Subject, did_you_mean};
pub use crate::project::model::CacheSettings;
use crate::project::model::{
    Cumulative, CumulativeOver, DiscoverySettings, EngineSettings, Grain, Guardrail, Measure,
    Metric, MetricKind, OnboardingDef, Project, RetentionMetric, SourceDef, TableRef, Target,
};

/// The name `lodestar` looks for.
pub const PROJECT_FILE: &str = "lodestar.yaml";

/// At most this many north stars: a team that needs more has not chosen one.
pub const MAX_NORTH_STARS: usize = 3;

/// Finds `lodestar.yaml` in `start` or the nearest parent directory that has one.
pub fn find_project_file(start: &Path) -> Result<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::ProjectNotFound {
            start: start.to_path_buf(),
        })
}

/// Reads and checks a project file, taking `${VAR}` values from the process environment.
pub fn load(path: &Path) -> Result<Project> {
    let text = match fs_err::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::request_hint(
                format!("project file {} does not exist", path.display()),
                crate::query::request::Action::ChooseProject,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Parses project text. `path` is used for error locations and to resolve relative paths;
/// `env` answers `${VAR}` look-ups.
pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Project> {
    let raw: RawProject = serde_saphyr::from_str(text).map_err(|e| syntax_error(&e, path))?;
    Builder { path, env }.build(raw)
}

fn syntax_error(e: &serde_saphyr::Error, path: &Path) -> Error {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((0, 0));
    let message = e.without_snippet().to_string();
    // serde-saphyr ends its messages with the position, which our prefix already says.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    };
    // The parser's advice names its own options, which a project author cannot set.
    let message = match message.strip_prefix("duplicate mapping key: ") {
        Some(rest) => {
            let key = rest
                .split(", set DuplicateKeyPolicy")
                .next()
                .unwrap_or(rest);
            format!("`{key}` is defined twice; a name may appear once in its mapping")
        }
        None => message,
    };
    Error::Syntax {
        location: Location {
            file: path.to_path_buf(),
            line,
            column,
        },
        message,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    timezone: Option<Spanned<String>>,
    week_start: Option<Spanned<String>>,
    engine: Option<RawEngine>,
    cache: Option<Spanned<RawCache>>,
    #[serde(default)]
    sources: IndexMap<Spanned<String>, Spanned<IndexMap<Spanned<String>, serde_json::Value>>>,
    #[serde(default)]
    metrics: IndexMap<Spanned<String>, Spanned<RawMetric>>,
    discovery: Option<Spanned<RawDiscovery>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    activity: Option<Spanned<String>>,
    entity: Option<Spanned<String>>,
    event_column: Option<Spanned<String>>,
    #[serde(default)]
    onboarding: IndexMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    memory_limit: Option<Spanned<String>>,
    target_partitions: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: Option<Spanned<String>>,
    lookback: Option<Spanned<serde_json::Value>>,
}

/// The cache directory when `cache:` does not name one.
pub const DEFAULT_CACHE_DIR: &str = ".lodestar-cache";

/// The look-back when `cache:` does not give one, in days.
pub const DEFAULT_CACHE_LOOKBACK: u32 = 3;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    description: Option<String>,
    owner: Option<String>,
    north_star: Option<bool>,
    table: Option<Spanned<String>>,
    time: Option<Spanned<String>>,
    measure: Option<Spanned<String>>,
    filter: Option<Spanned<String>>,
    dimensions: Option<Spanned<Vec<String>>>,
    grain: Option<Spanned<String>>,
    ratio: Option<Spanned<RawRatio>>,
    derived: Option<Spanned<String>>,
    cumulative: Option<Spanned<RawCumulative>>,
    sql: Option<Spanned<String>>,
    retention: Option<Spanned<RawRetention>>,
    inputs: Option<Vec<Spanned<String>>>,
    formula: Option<Spanned<String>>,
    target: Option<Spanned<RawTarget>>,
    guardrails: Option<Vec<Spanned<RawGuardrail>>>,
}

/// `guardrails:` items: a metric name, or a metric with when it counts as worse.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawGuardrail {
    Name(String),
    Rule {
        metric: String,
        /// `up` (the default: refunds, cancellations) or `down` (quality, satisfaction).
        worse: Option<String>,
        /// A relative change such as `5%` or `0.05`; worsening beyond it is flagged.
        threshold: Option<serde_json::Value>,
    },
}

impl RawGuardrail {
    fn metric(&self) -> &str {
        match self {
            RawGuardrail::Name(name) | RawGuardrail::Rule { metric: name, .. } => name,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRatio {
    numerator: Spanned<String>,
    denominator: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCumulative {
    metric: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    cohort: Spanned<String>,
    activity: Spanned<String>,
    entity: Spanned<String>,
    after: Spanned<String>,
    window: Option<Spanned<String>>,
    cohort_filter: Option<Spanned<String>>,
    activity_filter: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    value: f64,
    period: Spanned<String>,
    by: Spanned<String>,
    start: Option<Spanned<String>>,
}

struct Builder<'a> {
    path: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Builder<'_> {
    fn loc<T>(&self, spanned: &Spanned<T>) -> Location {
        Location {
            file: self.path.to_path_buf(),
            line: spanned.referenced.line() as u32,
            column: spanned.referenced.column() as u32,
        }
    }

    fn invalid(&self, location: Location, subject: Subject, message: impl Into<String>) -> Error {
        Error::Invalid {
            location,
            subject,
            message: message.into(),
            hint: None,
        }
    }

    fn build(&self, raw: RawProject) -> Result<Project> {
        let project_loc = Location {
            file: self.path.to_path_buf(),
            line: 0,
            column: 0,
        };
        let timezone = match &raw.timezone {
            None => Tz::UTC,
            Some(tz) => tz.value.parse::<Tz>().map_err(|_| Error::Invalid {
                location: self.loc(tz),
                subject: Subject::Project,
                message: format!("unknown timezone `{}`", tz.value),
                hint: Some(
                    "use an IANA zone name such as UTC, Europe/Paris or America/New_York".into(),
                ),
            })?,
        };
        let week_start = match &raw.week_start {
            None => Weekday::Mon,
            Some(day) => day.value.parse::<Weekday>().map_err(|_| {
                self.invalid(
                    self.loc(day),
                    Subject::Project,
                    format!(
                        "unknown week_start `{}`: expected a weekday such as monday or sunday",
                        day.value
                    ),
                )
            })?,
        };
        let engine = match raw.engine {
            None => EngineSettings::default(),
            Some(e) => EngineSettings {
                memory_limit: e
                    .memory_limit
                    .map(|m| {
                        parse_bytes(&m.value).ok_or_else(|| {
                            self.invalid(
                                self.loc(&m),
                                Subject::Project,
                                format!("cannot read memory_limit `{}`: expected a size such as 512MiB or 4GiB", m.value),
                            )
                        })
                    })
                    .transpose()?,
                target_partitions: e.target_partitions,
            },
        };

        let root = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let cache = raw
            .cache
            .as_ref()
            .map(|c| self.cache(c, &root))
            .transpose()?;

        let mut sources = IndexMap::new();
        for (name, options) in raw.sources {
            let source = self.source(&name, options)?;
            sources.insert(source.name.clone(), source);
        }

        let mut metrics = IndexMap::new();
        for (name, def) in &raw.metrics {
            let metric = self.metric(name, def, &sources)?;
            metrics.insert(metric.name.clone(), metric);
        }
        let discovery = raw
            .discovery
            .as_ref()
            .map(|d| self.discovery(d, &sources))
            .transpose()?
            .unwrap_or_default();
        let project = Project {
            root,
            path: self.path.to_path_buf(),
            timezone,
            week_start,
            engine,
            cache,
            sources,
            metrics,
            discovery,
        };
        check_references(&project)?;
        check_cycles(&project)?;
        check_north_stars(&project, &project_loc)?;
        Ok(project)
    }

    fn cache(&self, raw: &Spanned<RawCache>, root: &Path) -> Result<CacheSettings> {
        let dir = match &raw.value.dir {
            None => root.join(DEFAULT_CACHE_DIR),
            Some(dir) => {
                let text = interpolate_str(&dir.value, self.env).map_err(|var| {
                    self.invalid(
                        self.loc(dir),
                        Subject::Project,
                        format!("cache dir uses ${{{var}}}, which is not set"),
                    )
                })?;
                if text.trim().is_empty() {
                    return Err(self.invalid(
                        self.loc(dir),
                        Subject::Project,
                        "cache dir is empty: name a directory such as .lodestar-cache",
                    ));
                }
                root.join(text)
            }
        };
        let lookback = match &raw.value.lookback {
            None => DEFAULT_CACHE_LOOKBACK,
            Some(value) => parse_lookback(&value.value).ok_or_else(|| Error::Invalid {
                location: self.loc(value),
                subject: Subject::Project,
                message: format!("cannot read cache lookback `{}`", plain(&value.value)),
                hint: Some(
                    "give whole days such as 3d, 1w or 0d: periods ending within them of the data's last day are recomputed".into(),
                ),
            })?,
        };
        Ok(CacheSettings { dir, lookback })
    }

    fn source(
        &self,
        name: &Spanned<String>,
        options: Spanned<IndexMap<Spanned<String>, serde_json::Value>>,
    ) -> Result<SourceDef> {
        let location = self.loc(name);
        let subject = || Subject::Source(name.value.clone());
        check_name(&name.value, &location, subject())?;
        let mut map = serde_json::Map::new();
        let mut option_locations = IndexMap::new();
        let mut connector = None;
        for (key, value) in options.value {
            let key_location = self.loc(&key);
            let key = key.value;
            let value = self.interpolate(value, &name.value, &key, &key_location)?;
            if key == "connector" {
                match value {
                    serde_json::Value::String(c) => connector = Some(c),
                    _ => {
                        return Err(self.invalid(
                            location,
                            subject(),
                            "`connector` must be a name such as files, s3 or postgres",
                        ));
                    }
                }
            } else {
                option_locations.insert(key.clone(), key_location);
                map.insert(key, value);
            }
        }
        let connector = connector.ok_or_else(|| Error::Invalid {
            location: location.clone(),
            subject: subject(),
            message: "no `connector` given".into(),
            hint: Some("for local files write `connector: files` and `path: data/`".into()),
        })?;
        Ok(SourceDef {
            name: name.value.clone(),
            connector,
            options: map,
            option_locations,
            location,
        })
    }

    /// Replaces `${VAR}` (or `${VAR:-default}`) in every string of a source's options.
    fn interpolate(
        &self,
        value: serde_json::Value,
        source: &str,
        option: &str,
        location: &Location,
    ) -> Result<serde_json::Value> {
        use serde_json::Value;
        Ok(match value {
            Value::String(s) => {
                Value::String(interpolate_str(&s, self.env).map_err(|var| Error::Invalid {
                    location: location.clone(),
                    subject: Subject::Source(source.to_string()),
                    message: format!("option `{option}` uses ${{{var}}}, which is not set"),
                    hint: Some(format!(
                        "export {var}=... before running, or write ${{{var}:-default}}"
                    )),
                })?)
            }
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|v| self.interpolate(v, source, option, location))
                    .collect::<Result<_>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| Ok((k, self.interpolate(v, source, option, location)?)))
                    .collect::<Result<_>>()?,
            ),
            other => other,
        })
    }

    fn metric(
        &self,
        name: &Spanned<String>,
        def: &Spanned<RawMetric>,
        sources: &IndexMap<String, SourceDef>,
    ) -> Result<Metric> {
        let location = self.loc(name);
        let subject = || Subject::Metric(name.value.clone());
        check_name(&name.value, &location, subject())?;
        let raw = &def.value;
        let mut field_locations = IndexMap::new();
        macro_rules! field {
            ($f:ident) => {
                if let Some(v) = &raw.$f {
                    field_locations.insert(stringify!($f), self.loc(v));
                }
            };
        }
        field!(table);
        field!(time);
        field!(measure);
        field!(filter);
        field!(dimensions);
        field!(grain);
        field!(ratio);
        field!(derived);
        field!(cumulative);
        field!(sql);
        field!(retention);
        field!(formula);
        field!(target);

        let grain = raw
            .grain
            .as_ref()
            .map(|g| {
                g.value
                    .parse::<Grain>()
                    .map_err(|m| self.invalid(self.loc(g), subject(), m))
            })
            .transpose()?;

        let measure_fields = [
            ("table", raw.table.is_some()),
            ("time", raw.time.is_some()),
            ("measure", raw.measure.is_some()),
        ];
        let has_measure_fields = measure_fields.iter().any(|(_, set)| *set);
        let kinds: Vec<&str> = [
            ("ratio", raw.ratio.is_some()),
            ("derived", raw.derived.is_some()),
            ("sql", raw.sql.is_some()),
            ("retention", raw.retention.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect();
        if kinds.len() > 1 || (kinds.len() == 1 && (has_measure_fields || raw.cumulative.is_some()))
        {
            return Err(Error::Invalid {
                location,
                subject: subject(),
                message: "a metric has exactly one kind, but this one mixes several".into(),
                hint: Some("use table/time/measure for a simple metric, or one of `ratio`, `derived`, `cumulative`, `sql`, `retention`".into()),
            });
        }
        let dimensions = raw
            .dimensions
            .as_ref()
            .map(|d| d.value.clone())
            .unwrap_or_default();

        let measure = if has_measure_fields {
            Some(self.measure(raw, &location, &name.value, sources)?)
        } else {
            None
        };

        let kind = if let Some(ratio) = &raw.ratio {
            MetricKind::Ratio {
                numerator: ratio.value.numerator.value.clone(),
                denominator: ratio.value.denominator.value.clone(),
            }
        } else if let Some(expr) = &raw.derived {
            let references = expression_references(&expr.value).map_err(|m| {
                self.invalid(
                    self.loc(expr),
                    subject(),
                    format!("cannot parse `derived`: {m}"),
                )
            })?;
            MetricKind::Derived {
                expr: expr.value.clone(),
                references,
            }
        } else if let Some(sql) = &raw.sql {
            MetricKind::Sql {
                sql: sql.value.clone(),
                grain: grain.unwrap_or(Grain::Day),
            }
        } else if let Some(retention) = &raw.retention {
            if let Some(filter) = &raw.filter {
                return Err(Error::Invalid {
                    location: self.loc(filter),
                    subject: subject(),
                    message:
                        "a retention metric has no `filter`: it would not say which rows it keeps"
                            .into(),
                    hint: Some(
                        "write `cohort_filter` or `activity_filter` inside `retention:`".into(),
                    ),
                });
            }
            MetricKind::Retention(self.retention(retention, &name.value, sources)?)
        } else if let Some(cumulative) = &raw.cumulative {
            let window_days = cumulative
                .value
                .window
                .as_ref()
                .map(|w| {
                    parse_days(&w.value).ok_or_else(|| {
                        self.invalid(self.loc(w), subject(), format!("cannot read window `{}`: expected days or weeks such as 7d, 28d or 4w", w.value))
                    })
                })
                .transpose()?;
            let over = match (&cumulative.value.metric, measure) {
                (Some(parent), None) => CumulativeOver::Metric(parent.value.clone()),
                (None, Some(measure)) => CumulativeOver::Measure(measure),
                (Some(_), Some(_)) => {
                    return Err(Error::Invalid {
                        location: self.loc(cumulative),
                        subject: subject(),
                        message: "`cumulative` names a metric and also has table/time/measure".into(),
                        hint: Some("accumulate another metric with `cumulative: { metric: NAME }`, or aggregate rows with table/time/measure and `cumulative: { window: 28d }`".into()),
                    });
                }
                (None, None) => {
                    return Err(Error::Invalid {
                        location: self.loc(cumulative),
                        subject: subject(),
                        message: "`cumulative` needs a metric to accumulate or table/time/measure to aggregate".into(),
                        hint: Some("write `cumulative: { metric: bookings }` for a running total".into()),
                    });
                }
            };
            MetricKind::Cumulative(Cumulative { over, window_days })
        } else if let Some(measure) = measure {
            MetricKind::Simple(measure)
        } else {
            return Err(Error::Invalid {
                location,
                subject: subject(),
                message: "no definition: a metric needs table/time/measure, `ratio`, `derived`, `cumulative`, `sql` or `retention`".into(),
                hint: Some("for example `measure: count(*)`, `table: app.orders`, `time: ordered_at`".into()),
            });
        };

        if !dimensions.is_empty()
            && matches!(
                kind,
                MetricKind::Ratio { .. }
                    | MetricKind::Derived { .. }
                    | MetricKind::Retention(_)
                    | MetricKind::Cumulative(Cumulative {
                        over: CumulativeOver::Metric(_),
                        ..
                    })
            )
        {
            return Err(self.invalid(
                field_locations["dimensions"].clone(),
                subject(),
                if matches!(kind, MetricKind::Retention(_)) {
                    "a retention metric is one rate per cohort period and has no dimensions; remove `dimensions` here (use `cohort_filter` for a segment)".to_string()
                } else {
                    format!("a {} metric takes its dimensions from the metrics it is computed from; remove `dimensions` here", kind.name())
                },
            ));
        }

        let target = raw
            .target
            .as_ref()
            .map(|t| self.target(t, &name.value))
            .transpose()?;
        let spanned_names = |list: &Option<Vec<Spanned<String>>>| {
            list.iter()
                .flatten()
                .map(|s| s.value.clone())
                .collect::<Vec<_>>()
        };
        let mut item_locations = IndexMap::new();
        let inputs = raw
            .inputs
            .iter()
            .flatten()
            .map(|i| (i.value.as_str(), self.loc(i)));
        let guardrail_names = raw
            .guardrails
            .iter()
            .flatten()
            .map(|g| (g.value.metric(), self.loc(g)));
        for (field, items) in [
            ("inputs", inputs.collect::<Vec<_>>()),
            ("guardrails", guardrail_names.collect()),
        ] {
            if let Some((_, first)) = items.first() {
                field_locations.insert(field, first.clone());
            }
            for (item, location) in items {
                item_locations
                    .entry((field, item.to_string()))
                    .or_insert(location);
            }
        }
        let guardrails = raw
            .guardrails
            .iter()
            .flatten()
            .map(|g| self.guardrail(g, &name.value))
            .collect::<Result<Vec<_>>>()?;
        let formula = raw.formula.as_ref().map(|f| f.value.clone());
        Ok(Metric {
            name: name.value.clone(),
            kind,
            description: raw.description.clone(),
            owner: raw.owner.clone(),
            north_star: raw.north_star.unwrap_or(false),
            inputs: spanned_names(&raw.inputs),
            formula,
            dimensions,
            grain,
            target,
            guardrails,
            location,
            field_locations,
            item_locations,
        })
    }

    fn measure(
        &self,
        raw: &RawMetric,
        location: &Location,
        metric: &str,
        sources: &IndexMap<String, SourceDef>,
    ) -> Result<Measure> {
        let subject = || Subject::Metric(metric.to_string());
        let missing: Vec<&str> = [
            ("table", raw.table.is_none()),
            ("time", raw.time.is_none()),
            ("measure", raw.measure.is_none()),
        ]
        .into_iter()
        .filter(|(_, m)| *m)
        .map(|(f, _)| f)
        .collect();
        if !missing.is_empty() {
            return Err(Error::Invalid {
                location: location.clone(),
                subject: subject(),
                message: format!("missing `{}`", missing.join("`, `")),
                hint: Some("a simple metric needs `table` (source.table), `time` (a timestamp or date column) and `measure` (an SQL aggregate)".into()),
            });
        }
        let (table, time, measure) = (
            raw.table.as_ref().expect("checked"),
            raw.time.as_ref().expect("checked"),
            raw.measure.as_ref().expect("checked"),
        );
        let Some((source, table_name)) = table.value.split_once('.') else {
            return Err(Error::Invalid {
                location: self.loc(table),
                subject: subject(),
                message: format!("table `{}` does not name its source", table.value),
                hint: Some(format!(
                    "write `source.table`, for example `{}.{}`",
                    sources.keys().next().map(String::as_str).unwrap_or("app"),
                    table.value
                )),
            });
        };
        if !sources.contains_key(source) {
            return Err(Error::Invalid {
                location: self.loc(table),
                subject: subject(),
                message: format!(
                    "table `{}` names source `{source}`, which is not defined",
                    table.value
                ),
                hint: Some(
                    did_you_mean(source, sources.keys().map(String::as_str)).unwrap_or_else(|| {
                        let known: Vec<&str> = sources.keys().map(String::as_str).collect();
                        format!(
                            "the sources are: {}",
                            if known.is_empty() {
                                "none (add a `sources:` section)".to_string()
                            } else {
                                known.join(", ")
                            }
                        )
                    }),
                ),
            });
        }
        Ok(Measure {
            table: TableRef {
                source: source.to_string(),
                table: table_name.to_string(),
            },
            time: time.value.clone(),
            measure: measure.value.clone(),
            filter: raw.filter.as_ref().map(|f| f.value.clone()),
        })
    }

    fn retention(
        &self,
        r: &Spanned<RawRetention>,
        metric: &str,
        sources: &IndexMap<String, SourceDef>,
    ) -> Result<RetentionMetric> {
        let subject = || Subject::Metric(metric.to_string());
        let r = &r.value;
        let column = |field: &str, s: &Spanned<String>| {
            let example = if field == "cohort" {
                "app.users.signed_up_at"
            } else {
                "app.events.event_time"
            };
            self.table_column(
                s,
                &format!("retention `{field}`"),
                example,
                &subject(),
                sources,
            )
        };
        let days = |field: &str, s: &Spanned<String>| {
            parse_days(&s.value).ok_or_else(|| {
                self.invalid(
                    self.loc(s),
                    subject(),
                    format!(
                        "cannot read retention `{field}` `{}`: expected days or weeks such as 1d, 14d or 2w",
                        s.value
                    ),
                )
            })
        };
        let (cohort, cohort_time) = column("cohort", &r.cohort)?;
        let (activity, activity_time) = column("activity", &r.activity)?;
        Ok(RetentionMetric {
            cohort,
            cohort_time,
            activity,
            activity_time,
            entity: r.entity.value.clone(),
            after_days: days("after", &r.after)?,
            window_days: r.window.as_ref().map_or(Ok(1), |w| days("window", w))?,
            cohort_filter: r.cohort_filter.as_ref().map(|f| f.value.clone()),
            activity_filter: r.activity_filter.as_ref().map(|f| f.value.clone()),
        })
    }

    /// `SOURCE.TABLE.COLUMN` naming a defined source, for `field` (``retention `cohort` ``)
    /// of `subject`.
    fn table_column(
        &self,
        s: &Spanned<String>,
        field: &str,
        example: &str,
        subject: &Subject,
        sources: &IndexMap<String, SourceDef>,
    ) -> Result<(TableRef, String)> {
        let parts: Vec<&str> = s.value.split('.').collect();
        let [source, table, column] = parts.as_slice() else {
            return Err(Error::Invalid {
                location: self.loc(s),
                subject: subject.clone(),
                message: format!("{field} is `{}`, which is not SOURCE.TABLE.COLUMN", s.value),
                hint: Some(format!(
                    "name the table and its time column, for example `{example}`"
                )),
            });
        };
        if !sources.contains_key(*source) || table.is_empty() || column.is_empty() {
            return Err(Error::Invalid {
                location: self.loc(s),
                subject: subject.clone(),
                message: format!("{field} names source `{source}`, which is not defined"),
                hint: did_you_mean(source, sources.keys().map(String::as_str)),
            });
        }
        Ok((
            TableRef {
                source: (*source).to_string(),
                table: (*table).to_string(),
            },
            (*column).to_string(),
        ))
    }

    fn discovery(
        &self,
        raw: &Spanned<RawDiscovery>,
        sources: &IndexMap<String, SourceDef>,
    ) -> Result<DiscoverySettings> {
        let subject = Subject::Project;
        let activity = raw
            .value
            .activity
            .as_ref()
            .map(|a| {
                self.table_column(
                    a,
                    "discovery `activity`",
                    "app.events.event_time",
                    &subject,
                    sources,
                )
            })
            .transpose()?;
        let mut onboarding = IndexMap::new();
        for (name, def) in &raw.value.onboarding {
            check_name(&name.value, &self.loc(name), subject.clone())?;
            let first = def.value.split('.').next().unwrap_or_default();
            let parsed = if def.value.contains('.') && sources.contains_key(first) {
                let (table, time) = self.table_column(
                    def,
                    &format!("onboarding `{}`", name.value),
                    "app.users.signed_up_at",
                    &subject,
                    sources,
                )?;
                OnboardingDef::Column { table, time }
            } else if def.value.trim().is_empty() {
                return Err(self.invalid(
                    self.loc(def),
                    Subject::Project,
                    format!(
                        "onboarding `{}` is empty: name an event type or SOURCE.TABLE.COLUMN",
                        name.value
                    ),
                ));
            } else {
                if activity.is_none() {
                    return Err(Error::Invalid {
                        location: self.loc(def),
                        subject: Subject::Project,
                        message: format!(
                            "onboarding `{}` is the event type `{}`, but `discovery` names no activity table to find it in",
                            name.value, def.value
                        ),
                        hint: Some(
                            "add `activity: SOURCE.TABLE.TIME_COLUMN` to `discovery`, or write the onboarding as SOURCE.TABLE.COLUMN".into(),
                        ),
                    });
                }
                OnboardingDef::Event(def.value.clone())
            };
            onboarding.insert(name.value.clone(), parsed);
        }
        Ok(DiscoverySettings {
            activity,
            entity: raw.value.entity.as_ref().map(|e| e.value.clone()),
            event_column: raw.value.event_column.as_ref().map(|e| e.value.clone()),
            onboarding,
        })
    }

    fn guardrail(&self, g: &Spanned<RawGuardrail>, metric: &str) -> Result<Guardrail> {
        let invalid = |message: String| {
            self.invalid(self.loc(g), Subject::Metric(metric.to_string()), message)
        };
        Ok(match &g.value {
            RawGuardrail::Name(name) => Guardrail::new(name.clone()),
            RawGuardrail::Rule { metric: name, worse, threshold } => Guardrail {
                metric: name.clone(),
                worse_when_up: match worse.as_deref() {
                    None | Some("up") => true,
                    Some("down") => false,
                    Some(other) => {
                        return Err(invalid(format!(
                            "guardrail `{name}`: `worse` is `{other}`; write `up` or `down`"
                        )));
                    }
                },
                threshold: match threshold {
                    None => 0.0,
                    Some(value) => parse_fraction(value).ok_or_else(|| {
                        invalid(format!(
                            "guardrail `{name}`: threshold {value} is not a relative change such as 5% or 0.05"
                        ))
                    })?,
                },
            },
        })
    }

    fn target(&self, t: &Spanned<RawTarget>, metric: &str) -> Result<Target> {
        let subject = || Subject::Metric(metric.to_string());
        let date = |s: &Spanned<String>| {
            NaiveDate::parse_from_str(&s.value, "%Y-%m-%d").map_err(|_| {
                self.invalid(
                    self.loc(s),
                    subject(),
                    format!("cannot read date `{}`: expected YYYY-MM-DD", s.value),
                )
            })
        };
        Ok(Target {
            value: t.value.value,
            period: t
                .value
                .period
                .value
                .parse()
                .map_err(|m| self.invalid(self.loc(&t.value.period), subject(), m))?,
            by: date(&t.value.by)?,
            start: t.value.start.as_ref().map(date).transpose()?,
        })
    }
}

fn check_name(name: &str, location: &Location, subject: Subject) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            location: location.clone(),
            subject,
            message: format!("`{name}` is not a valid name"),
            hint: Some("names are letters, digits and underscores, not starting with a digit, so that SQL can use them as they are".into()),
        })
    }
}

/// Every name a metric refers to must be a metric.
fn check_references(project: &Project) -> Result<()> {
    for metric in project.metrics.values() {
        let mut refs: Vec<(&str, &'static str)> = metric
            .parents()
            .into_iter()
            .map(|p| {
                let field = match metric.kind {
                    MetricKind::Ratio { .. } => "ratio",
                    MetricKind::Derived { .. } => "derived",
                    _ => "cumulative",
                };
                (p, field)
            })
            .collect();
        refs.extend(metric.inputs.iter().map(|i| (i.as_str(), "inputs")));
        refs.extend(
            metric
                .guardrails
                .iter()
                .map(|g| (g.metric.as_str(), "guardrails")),
        );
        let formula_refs = match &metric.formula {
            Some(f) => expression_references(f).map_err(|m| Error::Invalid {
                location: metric.location_of("formula").clone(),
                subject: Subject::Metric(metric.name.clone()),
                message: format!("cannot parse `formula`: {m}"),
                hint: None,
            })?,
            None => vec![],
        };
        refs.extend(formula_refs.iter().map(|f| (f.as_str(), "formula")));
        for (name, field) in refs {
            if !project.metrics.contains_key(name) {
                return Err(Error::Invalid {
                    location: metric.location_of_item(field, name).clone(),
                    subject: Subject::Metric(metric.name.clone()),
                    message: format!("`{field}` refers to `{name}`, which is not a metric"),
                    hint: did_you_mean(name, project.metrics.keys().map(String::as_str)),
                });
            }
            if name == metric.name {
                return Err(Error::Invalid {
                    location: metric.location_of_item(field, name).clone(),
                    subject: Subject::Metric(metric.name.clone()),
                    message: format!("`{field}` refers to the metric itself"),
                    hint: None,
                });
            }
        }
        if let Some(formula) = &metric.formula {
            let unlisted: Vec<&String> = formula_refs
                .iter()
                .filter(|r| !metric.inputs.contains(r))
                .collect();
            if !unlisted.is_empty() {
                return Err(Error::Invalid {
                    location: metric.location_of("formula").clone(),
                    subject: Subject::Metric(metric.name.clone()),
                    message: format!("`formula` ({formula}) uses {}, which {} not in `inputs`", join_ticked(&unlisted), if unlisted.len() == 1 { "is" } else { "are" }),
                    hint: Some("a formula links a metric to its inputs: list every metric it uses under `inputs`".into()),
                });
            }
        }
    }
    Ok(())
}

fn join_ticked(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The edges of a graph over metrics.
type Edges = Box<dyn Fn(&Metric) -> Vec<&str>>;

/// Neither the computation graph nor the metric tree may loop.
fn check_cycles(project: &Project) -> Result<()> {
    let graphs: [(&str, Edges); 2] = [
        ("is computed from", Box::new(|m: &Metric| m.parents())),
        (
            "has as input",
            Box::new(|m: &Metric| m.inputs.iter().map(String::as_str).collect()),
        ),
    ];
    for (relation, edges) in graphs {
        // Depth-first search with colours; the path gives the cycle to show.
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in project.metrics.keys() {
            let mut path: Vec<&str> = Vec::new();
            if let Some(cycle) = visit(project, start, &edges, &mut path, &mut done) {
                let first = &project.metrics[cycle[0]];
                return Err(Error::Invalid {
                    location: first.location.clone(),
                    subject: Subject::Metric(first.name.clone()),
                    message: format!(
                        "cycle: {}",
                        cycle
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(&format!(" {relation} "))
                    ),
                    hint: Some(
                        "a metric cannot depend on itself, directly or through others".into(),
                    ),
                });
            }
        }
    }
    Ok(())
}

fn visit<'a>(
    project: &'a Project,
    name: &'a str,
    edges: &dyn Fn(&'a Metric) -> Vec<&'a str>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    if let Some(pos) = path.iter().position(|p| *p == name) {
        let mut cycle = path[pos..].to_vec();
        cycle.push(name);
        return Some(cycle);
    }
    if done.contains(name) {
        return None;
    }
    let metric = project.metrics.get(name)?;
    path.push(name);
    for next in edges(metric) {
        if let Some(cycle) = visit(project, next, edges, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(name);
    None
}

fn check_north_stars(project: &Project, _loc: &Location) -> Result<()> {
    let stars: Vec<&Metric> = project.north_stars().collect();
    if stars.len() > MAX_NORTH_STARS {
        let extra = stars[MAX_NORTH_STARS];
        return Err(Error::Invalid {
            location: extra.location.clone(),
            subject: Subject::Metric(extra.name.clone()),
            message: format!(
                "this is north star number {}, but a project has at most {MAX_NORTH_STARS} ({})",
                stars.len(),
                stars.iter().map(|m| format!("`{}`", m.name)).collect::<Vec<_>>().join(", ")
            ),
            hint: Some("a North Star is the one measure of the value customers get: make the others `inputs` of it".into()),
        });
    }
    Ok(())
}

/// The metric names an expression over metrics uses, in order of first use.
pub(crate) fn expression_references(expr: &str) -> std::result::Result<Vec<String>, String> {
    let parsed = Parser::new(&GenericDialect {})
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| e.to_string())?;
    let mut names: Vec<String> = Vec::new();
    let _ = visit_expressions(&parsed, |e| {
        if let SqlExpr::Identifier(ident) = e
            && !names.contains(&ident.value)
        {
            names.push(ident.value.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(names)
}

/// `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Returns the missing variable's name.
fn interpolate_str(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let spec = &body[..end];
            let (var, default) = match spec.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (spec, None),
            };
            match env(var)
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_string))
            {
                Some(value) => out.push_str(&value),
                None => return Err(var.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `5%`, `0.05` or `5 %` as a fraction.
fn parse_fraction(value: &serde_json::Value) -> Option<f64> {
    let fraction = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => match s.trim().strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
            None => s.trim().parse().ok()?,
        },
        _ => return None,
    };
    (fraction.is_finite() && fraction >= 0.0).then_some(fraction)
}

/// `28d`, `4w`, or a bare number of days.
fn parse_days(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim()),
        None => (s, "d"),
    };
    let n: u32 = num.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "d" | "day" | "days" => Some(n),
        "w" | "week" | "weeks" => n.checked_mul(7),
        _ => None,
    }
}

/// A look-back: `3d`, `1w`, `0d`, or a bare number of days (0 allowed).
fn parse_lookback(value: &serde_json::Value) -> Option<u32> {
    match value {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => {
            let zero = matches!(s.trim(), "0" | "0d" | "0w" | "0 days");
            if zero { Some(0) } else { parse_days(s) }
        }
        _ => None,
    }
}

/// A YAML scalar as written, without JSON quotes.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A size: `512MiB`, `4GiB`, `2GB`, or bytes (as `engine.memory_limit` is written).
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let num: f64 = s[..split].parse().ok()?;
    let mult: f64 = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        _ => return None,
    };
    Some((num * mult) as usize)
}

/// Environment look-ups for tests.
#[cfg(test)]
pub(crate) fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_env_with_defaults_and_escapes() {
        let env = env_from(&[("HOST", "db.internal")]);
        assert_eq!(
            interpolate_str("pg://${HOST}:${PORT:-5432}/x$$y", &env).unwrap(),
            "pg://db.internal:5432/x$y"
        );
        assert_eq!(interpolate_str("${NOPE}", &env).unwrap_err(), "NOPE");
    }

    #[test]
    fn reads_windows_and_sizes() {
        assert_eq!(parse_days("28d"), Some(28));
        assert_eq!(parse_days("4w"), Some(28));
        assert_eq!(parse_days("0d"), None);
        assert_eq!(parse_days("3h"), None);
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn reads_cache_settings_relative_to_the_project_file() {
        let path = Path::new("/srv/metrics/lodestar.yaml");
        let env = env_from(&[]);
        let project = parse(
            "cache:\n  dir: .cache/lodestar\n  lookback: 1w\n",
            path,
            &env,
        )
        .unwrap();
        assert_eq!(
            project.cache,
            Some(CacheSettings {
                dir: PathBuf::from("/srv/metrics/.cache/lodestar"),
                lookback: 7
            })
        );
        let project = parse("cache: { lookback: 0d }\n", path, &env).unwrap();
        assert_eq!(
            project.cache.map(|c| (c.dir, c.lookback)),
            Some((PathBuf::from("/srv/metrics/.lodestar-cache"), 0))
        );
        assert!(
            parse("timezone: UTC\n", path, &env)
                .unwrap()
                .cache
                .is_none()
        );

        let message = parse("timezone: UTC\ncache:\n  lookback: soon\n", path, &env)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(
                "/srv/metrics/lodestar.yaml:3:13: project: cannot read cache lookback `soon`"
            ),
            "{message}"
        );
        let message = parse("cache:\n  directory: x\n", path, &env)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("/srv/metrics/lodestar.yaml:2:"),
            "{message}"
        );
    }

    #[test]
    fn finds_metric_references_in_expressions() {
        assert_eq!(
            expression_references("revenue / (orders + revenue) * 2").unwrap(),
            vec!["revenue", "orders"]
        );
    }
}

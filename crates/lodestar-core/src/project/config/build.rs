//! From the raw YAML shapes to the checked model: each metric's kind, fields and their
//! locations, sources with interpolated options, targets, guardrails and `discovery:`.

use std::path::Path;

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use indexmap::IndexMap;
use serde_saphyr::Spanned;

use super::checks::{
    check_cycles, check_name, check_north_stars, check_references, expression_references,
};
use super::raw::{
    RawCache, RawDiscovery, RawGuardrail, RawMetric, RawProject, RawRetention, RawTarget,
};
use super::{
    DEFAULT_CACHE_DIR, DEFAULT_CACHE_LOOKBACK, interpolate_str, parse_bytes, parse_days,
    parse_fraction, parse_lookback, plain,
};
use crate::project::error::{Error, Location, Result, Subject, did_you_mean};
use crate::project::model::{
    CacheSettings, ClusterUrl, Cumulative, CumulativeOver, DiscoverySettings, EngineSettings,
    Grain, Guardrail, Measure, Metric, MetricKind, OnboardingDef, Project, RetentionMetric,
    SourceDef, TableRef, Target,
};

pub(super) struct Builder<'a> {
    pub(super) path: &'a Path,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
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

    pub(super) fn build(&self, raw: RawProject) -> Result<Project> {
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
                cluster: e
                    .cluster
                    .map(|url| {
                        url.value.parse::<ClusterUrl>().map_err(|message| {
                            self.invalid(
                                self.loc(&url),
                                Subject::Project,
                                format!("engine.cluster: {message}"),
                            )
                        })
                    })
                    .transpose()?,
                cluster_settings: e
                    .cluster_settings
                    .iter()
                    .map(|(key, value)| {
                        let text = plain(&value.value);
                        check_cluster_setting(&key.value, &text)
                            .map(|()| (key.value.clone(), text))
                            .map_err(|message| {
                                self.invalid(
                                    self.loc(key),
                                    Subject::Project,
                                    format!("engine.cluster_settings: {message}"),
                                )
                            })
                    })
                    .collect::<Result<_>>()?,
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

/// A Ballista setting as `engine.cluster_settings` may give it: a `ballista.` key that Ballista
/// knows, with a value of its type. DataFusion's own settings come from the rest of `engine`.
fn check_cluster_setting(key: &str, value: &str) -> std::result::Result<(), String> {
    use ballista_core::config::BallistaConfig;
    use datafusion::arrow::datatypes::DataType;
    if !key.starts_with("ballista.") {
        return Err(format!(
            "`{key}` is not a Ballista setting: the keys start with `ballista.`, such as \
             ballista.optimizer.broadcast_join_threshold_bytes (docs/cluster.md)"
        ));
    }
    let entry = BallistaConfig::valid_entries()
        .get(key)
        .ok_or_else(|| format!("Ballista has no setting `{key}` (docs/cluster.md#tuning)"))?;
    // Ballista itself reads the values later, and panics on one it cannot parse.
    BallistaConfig::parse_value(value, entry.data_type().clone()).map_err(|_| {
        let kind = match entry.data_type() {
            DataType::Boolean => "true or false".to_string(),
            DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                "a whole number (bytes are written out: 67108864, not 64MiB)".to_string()
            }
            other => other.to_string(),
        };
        format!("`{key}` takes {kind}, not `{value}`")
    })
}

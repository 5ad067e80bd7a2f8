//! The JSON wire shapes of the API, and their explicit conversions from the core's types: the
//! core can change its types without changing what clients receive.

use lodestar_core::format;
use lodestar_core::model::{CumulativeOver, Measure, Metric, MetricKind, Project};
use lodestar_core::retention::Retention;
use lodestar_core::targets::TargetStatus;
use lodestar_core::{GuardrailStatus, Link, MetricTree, TreeNode};
use lodestar_report::overview;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::params::DimensionFilter;

/// A date on the wire: `YYYY-MM-DD`.
pub type Date = String;

fn date(d: chrono::NaiveDate) -> Date {
    d.format("%Y-%m-%d").to_string()
}

/// `GET /api/v1/metrics`.
#[derive(Debug, Serialize)]
pub struct MetricList {
    pub north_stars: Vec<String>,
    pub metrics: Vec<MetricInfo>,
    /// The metric tree drawn by `inputs`, from the north stars (or every top-level metric).
    pub tree: Vec<TreeShape>,
}

#[derive(Debug, Serialize)]
pub struct MetricInfo {
    pub name: String,
    pub kind: &'static str,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub north_star: bool,
    pub grain: Option<&'static str>,
    pub dimensions: Vec<String>,
    pub inputs: Vec<String>,
    pub formula: Option<String>,
    pub target: Option<TargetInfo>,
    pub guardrails: Vec<GuardrailInfo>,
    pub definition: Definition,
}

#[derive(Debug, Serialize)]
pub struct TargetInfo {
    pub value: f64,
    pub period: &'static str,
    pub by: Date,
    pub start: Option<Date>,
}

#[derive(Debug, Serialize)]
pub struct GuardrailInfo {
    pub metric: String,
    pub worse_when_up: bool,
    pub threshold: f64,
}

/// How a metric is computed, by kind.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Definition {
    Simple(MeasureInfo),
    Ratio {
        numerator: String,
        denominator: String,
    },
    Derived {
        expression: String,
    },
    Cumulative {
        /// The metric accumulated, or `null` when the metric has its own measure.
        metric: Option<String>,
        measure: Option<MeasureInfo>,
        /// `null`: a running total from the start of the data.
        window_days: Option<u32>,
    },
    Sql {
        sql: String,
        grain: &'static str,
    },
    /// The share of each period's cohort active again `after_days` later, within
    /// `window_days`.
    Retention {
        /// `source.table.column` of the cohort event.
        cohort: String,
        /// `source.table.column` of the activity.
        activity: String,
        entity: String,
        after_days: u32,
        window_days: u32,
        cohort_filter: Option<String>,
        activity_filter: Option<String>,
    },
}

#[derive(Debug, Serialize)]
pub struct MeasureInfo {
    pub table: String,
    pub time: String,
    pub measure: String,
    pub filter: Option<String>,
}

impl From<&Measure> for MeasureInfo {
    fn from(m: &Measure) -> MeasureInfo {
        MeasureInfo {
            table: m.table.to_string(),
            time: m.time.clone(),
            measure: m.measure.clone(),
            filter: m.filter.clone(),
        }
    }
}

impl From<&Metric> for MetricInfo {
    fn from(m: &Metric) -> MetricInfo {
        let definition = match &m.kind {
            MetricKind::Simple(measure) => Definition::Simple(measure.into()),
            MetricKind::Ratio {
                numerator,
                denominator,
            } => Definition::Ratio {
                numerator: numerator.clone(),
                denominator: denominator.clone(),
            },
            MetricKind::Derived { expr, .. } => Definition::Derived {
                expression: expr.clone(),
            },
            MetricKind::Cumulative(c) => {
                let (metric, measure) = match &c.over {
                    CumulativeOver::Metric(name) => (Some(name.clone()), None),
                    CumulativeOver::Measure(measure) => (None, Some(measure.into())),
                };
                Definition::Cumulative {
                    metric,
                    measure,
                    window_days: c.window_days,
                }
            }
            MetricKind::Sql { sql, grain } => Definition::Sql {
                sql: sql.clone(),
                grain: grain.as_str(),
            },
            MetricKind::Retention(r) => Definition::Retention {
                cohort: format!("{}.{}", r.cohort, r.cohort_time),
                activity: format!("{}.{}", r.activity, r.activity_time),
                entity: r.entity.clone(),
                after_days: r.after_days,
                window_days: r.window_days,
                cohort_filter: r.cohort_filter.clone(),
                activity_filter: r.activity_filter.clone(),
            },
        };
        MetricInfo {
            name: m.name.clone(),
            kind: m.kind.name(),
            description: m.description.clone(),
            owner: m.owner.clone(),
            north_star: m.north_star,
            grain: m.grain.map(|g| g.as_str()),
            dimensions: m.dimensions.clone(),
            inputs: m.inputs.clone(),
            formula: m.formula.clone(),
            target: m.target.as_ref().map(|t| TargetInfo {
                value: t.value,
                period: t.period.as_str(),
                by: date(t.by),
                start: t.start.map(date),
            }),
            guardrails: m
                .guardrails
                .iter()
                .map(|g| GuardrailInfo {
                    metric: g.metric.clone(),
                    worse_when_up: g.worse_when_up,
                    threshold: g.threshold,
                })
                .collect(),
            definition,
        }
    }
}

/// A metric and its inputs, recursively: the tree's structure without numbers.
#[derive(Debug, Serialize)]
pub struct TreeShape {
    pub metric: String,
    pub inputs: Vec<TreeShape>,
}

impl MetricList {
    pub fn of(project: &Project) -> MetricList {
        let north_stars: Vec<String> = project.north_stars().map(|m| m.name.clone()).collect();
        let roots = lodestar_core::tree::default_roots(project);
        MetricList {
            north_stars,
            metrics: project.metrics.values().map(MetricInfo::from).collect(),
            tree: roots
                .iter()
                .map(|r| shape(project, r, &mut Vec::new()))
                .collect(),
        }
    }
}

/// The validated project has no cycles in `inputs`; `path` guards anyway.
fn shape(project: &Project, name: &str, path: &mut Vec<String>) -> TreeShape {
    path.push(name.to_string());
    let inputs = project
        .metrics
        .get(name)
        .map(|m| {
            m.inputs
                .iter()
                .filter(|i| !path.contains(i))
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .iter()
        .map(|i| shape(project, i, path))
        .collect();
    path.pop();
    TreeShape {
        metric: name.to_string(),
        inputs,
    }
}

/// `GET /api/v1/metrics/{name}/series`.
#[derive(Debug, Serialize)]
pub struct Series {
    pub metric: String,
    pub grain: &'static str,
    /// The first and last period of the result (`null` when it is empty).
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub dimensions: Vec<String>,
    pub filters: Vec<FilterInfo>,
    /// One object per period and dimension combination: `period`, the dimensions, the metric.
    pub rows: Vec<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
pub struct FilterInfo {
    pub dimension: String,
    pub values: Vec<String>,
}

impl From<DimensionFilter> for FilterInfo {
    fn from(f: DimensionFilter) -> FilterInfo {
        FilterInfo {
            dimension: f.dimension,
            values: f.values,
        }
    }
}

/// `GET /api/v1/tree`.
#[derive(Debug, Serialize)]
pub struct Tree {
    pub grain: &'static str,
    pub period: Option<Date>,
    pub previous_period: Option<Date>,
    pub roots: Vec<Node>,
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub metric: String,
    pub north_star: bool,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    pub change: Option<f64>,
    pub relative_change: Option<f64>,
    /// This metric's part of its parent's change, when the parent has a formula.
    pub contribution_to_parent: Option<f64>,
    /// This metric's part of the root's change (for a root: its change).
    pub contribution: Option<f64>,
    /// How the change relates to the inputs': `leaf`, `not_quantified`, `decomposed`,
    /// `undecomposable`.
    pub link: &'static str,
    /// For `decomposed`: `difference`, `lmdi` or `shapley`.
    pub method: Option<&'static str>,
    /// For `decomposed`: the change the formula does not reproduce.
    pub residual: Option<f64>,
    pub guardrails: Vec<GuardrailValue>,
    pub inputs: Vec<Node>,
}

#[derive(Debug, Serialize)]
pub struct GuardrailValue {
    pub metric: String,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    pub breached: bool,
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

impl From<&MetricTree> for Tree {
    fn from(t: &MetricTree) -> Tree {
        Tree {
            grain: t.grain.as_str(),
            period: t.period.map(date),
            previous_period: t.previous_period.map(date),
            roots: t.roots.iter().map(Node::from).collect(),
        }
    }
}

impl From<&TreeNode> for Node {
    fn from(n: &TreeNode) -> Node {
        let (link, method, residual) = match &n.link {
            Link::Leaf => ("leaf", None, None),
            Link::NotQuantified => ("not_quantified", None, None),
            Link::Decomposed { method, residual } => {
                ("decomposed", Some(method.as_str()), finite(Some(*residual)))
            }
            Link::Undecomposable => ("undecomposable", None, None),
        };
        Node {
            metric: n.metric.clone(),
            north_star: n.north_star,
            value: finite(n.value),
            previous: finite(n.previous),
            change: finite(n.change()),
            relative_change: finite(n.relative_change()),
            contribution_to_parent: finite(n.contribution_to_parent),
            contribution: finite(n.contribution),
            link,
            method,
            residual,
            guardrails: n.guardrails.iter().map(GuardrailValue::from).collect(),
            inputs: n.inputs.iter().map(Node::from).collect(),
        }
    }
}

impl From<&GuardrailStatus> for GuardrailValue {
    fn from(g: &GuardrailStatus) -> GuardrailValue {
        GuardrailValue {
            metric: g.rule.metric.clone(),
            value: finite(g.value),
            previous: finite(g.previous),
            breached: g.breached,
        }
    }
}

/// `GET /api/v1/targets`.
#[derive(Debug, Serialize)]
pub struct Targets {
    pub targets: Vec<TargetValue>,
}

#[derive(Debug, Serialize)]
pub struct TargetValue {
    pub metric: String,
    pub target: TargetInfo,
    /// The last complete period of the target's grain.
    pub period: Option<Date>,
    pub actual: Option<f64>,
    pub expected: Option<f64>,
    pub projected: Option<f64>,
    /// `on_track`, `at_risk`, `off_track` or `unknown`.
    pub status: String,
}

impl From<&TargetStatus> for TargetValue {
    fn from(s: &TargetStatus) -> TargetValue {
        TargetValue {
            metric: s.metric.clone(),
            target: TargetInfo {
                value: s.target.value,
                period: s.target.period.as_str(),
                by: date(s.target.by),
                start: s.target.start.map(date),
            },
            period: s.period.map(date),
            actual: finite(s.actual),
            expected: finite(s.expected),
            projected: finite(s.projected),
            status: s.status.as_str().replace(' ', "_"),
        }
    }
}

/// `GET /api/v1/retention`.
#[derive(Debug, Serialize)]
pub struct RetentionTable {
    pub grain: &'static str,
    /// The period columns: `0`, `1`… or bracket labels.
    pub periods: Vec<String>,
    pub cells: Vec<RetentionCell>,
    pub repeat_rates: Vec<RepeatRate>,
}

#[derive(Debug, Serialize)]
pub struct RetentionCell {
    pub cohort: Date,
    pub period: String,
    pub cohort_size: i64,
    /// `false`: the cohort is too young for this period to have ended; `rate` is null.
    pub eligible: bool,
    pub retained: i64,
    pub rate: Option<f64>,
    /// `rate` as a whole percentage (`46%`), as the report's heat map shows it; empty when
    /// there is no rate.
    pub rate_text: String,
    pub value: Option<f64>,
    pub value_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct RepeatRate {
    pub cohort: Date,
    pub rate: f64,
}

impl From<&Retention> for RetentionTable {
    fn from(r: &Retention) -> RetentionTable {
        RetentionTable {
            grain: r.grain.as_str(),
            periods: r.columns.clone(),
            cells: r
                .cells
                .iter()
                .map(|c| RetentionCell {
                    cohort: date(c.cohort),
                    period: c.period.clone(),
                    cohort_size: c.cohort_size,
                    eligible: c.eligible,
                    retained: c.retained,
                    rate: finite(c.rate),
                    rate_text: finite(c.rate).map_or_else(String::new, format::whole_percent),
                    value: finite(c.value),
                    value_rate: finite(c.value_rate),
                })
                .collect(),
            repeat_rates: r
                .repeat_rates
                .iter()
                .map(|(cohort, rate)| RepeatRate {
                    cohort: date(*cohort),
                    rate: *rate,
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/discover`.
#[derive(Debug, Serialize)]
pub struct Discovery {
    /// What onboarding means, in words.
    pub onboarded: String,
    /// What retained means, in words.
    pub retained: String,
    /// The activity table and its columns, as used (defaults filled in).
    pub activity: String,
    pub activity_time: String,
    pub event_column: String,
    pub entity: String,
    pub within: String,
    pub retained_after: String,
    pub window: Option<String>,
    pub max_k: u32,
    pub training: DiscoveryCohort,
    pub validation: Option<DiscoveryCohort>,
    /// Candidates with enough users in both groups, best first: the rows of
    /// `lodestar discover --format json`.
    pub candidates: Vec<Map<String, Value>>,
    /// How many candidates had too few users to be ranked.
    pub below_support: usize,
}

#[derive(Debug, Serialize)]
pub struct DiscoveryCohort {
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub users: u64,
    pub retained: u64,
    pub retention: Option<f64>,
    pub too_young: u64,
    pub min_support: u64,
}

impl From<&lodestar_core::discovery::Cohort> for DiscoveryCohort {
    fn from(c: &lodestar_core::discovery::Cohort) -> DiscoveryCohort {
        DiscoveryCohort {
            from: c.range.from.map(date),
            to: c.range.to.map(date),
            users: c.users,
            retained: c.retained,
            retention: finite(c.retention()),
            too_young: c.too_young,
            min_support: c.min_support,
        }
    }
}

impl Discovery {
    pub fn new(
        d: &lodestar_core::discovery::Discovery,
        candidates: Vec<Map<String, Value>>,
    ) -> Discovery {
        let s = &d.setup;
        Discovery {
            onboarded: s.onboarding_text(),
            retained: s.retention_text(),
            activity: s.activity.to_string(),
            activity_time: s.activity_time.clone(),
            event_column: s.event_column.clone(),
            entity: s.entity.clone(),
            within: s.within.to_string(),
            retained_after: s.retained.to_string(),
            window: s.window.map(|w| w.to_string()),
            max_k: s.max_k,
            training: DiscoveryCohort::from(&d.training),
            validation: d.validation.as_ref().map(DiscoveryCohort::from),
            candidates,
            below_support: d.below_support.len(),
        }
    }
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<usize>,
}

/// `GET /api/v1/overview`: what the dashboard shows first, decided by the report's rules
/// (`lodestar_report::overview`), each number also as text.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub grain: &'static str,
    /// The last complete period, which the tree looks at.
    pub period: Option<Date>,
    pub previous_period: Option<Date>,
    pub period_text: String,
    pub roots: Vec<OverviewNode>,
    pub north_star: Option<Headline>,
    pub retention: RetentionSettings,
}

#[derive(Debug, Serialize)]
pub struct OverviewNode {
    pub metric: String,
    pub north_star: bool,
    pub value: Option<f64>,
    pub change: Option<f64>,
    pub relative_change: Option<f64>,
    pub contribution: Option<f64>,
    pub text: String,
    pub guardrails: Vec<GuardrailLine>,
    pub inputs: Vec<OverviewNode>,
}

#[derive(Debug, Serialize)]
pub struct GuardrailLine {
    pub metric: String,
    pub value: Option<f64>,
    pub breached: bool,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Headline {
    pub metric: String,
    pub description: Option<String>,
    pub value: Option<f64>,
    pub value_text: String,
    pub period_text: String,
    pub change: Option<f64>,
    pub change_text: String,
    pub target: Option<TargetLine>,
    pub chart: Chart,
}

#[derive(Debug, Serialize)]
pub struct TargetLine {
    /// As in `GET /api/v1/targets`: `on_track`, `at_risk`, `off_track`…
    pub status: String,
    pub text: String,
}

/// `GET /api/v1/metrics/{name}/chart`, and the North Star's chart in the overview.
#[derive(Debug, Serialize)]
pub struct Chart {
    pub metric: String,
    pub grain: &'static str,
    /// Periods after this one are incomplete (`complete: false`).
    pub last_complete: Option<Date>,
    pub series: Vec<ChartSeries>,
    pub ticks: Vec<Tick>,
}

#[derive(Debug, Serialize)]
pub struct ChartSeries {
    pub name: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub period: Date,
    pub value: Option<f64>,
    pub text: String,
    pub complete: bool,
}

#[derive(Debug, Serialize)]
pub struct Tick {
    pub value: f64,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct RetentionSettings {
    pub cohort: Option<String>,
    pub activity: Option<String>,
    pub entity: Option<String>,
    pub grain: &'static str,
    pub periods: u32,
    pub note: Option<String>,
}

impl From<&overview::Overview> for Overview {
    fn from(o: &overview::Overview) -> Overview {
        let r = &o.retention;
        Overview {
            grain: o.grain.as_str(),
            period: o.period.map(date),
            previous_period: o.previous_period.map(date),
            period_text: o.period_text.clone(),
            roots: o.roots.iter().map(OverviewNode::from).collect(),
            north_star: o.north_star.as_ref().map(|h| Headline {
                metric: h.metric.clone(),
                description: h.description.clone(),
                value: finite(h.value),
                value_text: h.value_text.clone(),
                period_text: h.period_text.clone(),
                change: finite(h.change),
                change_text: h.change_text.clone(),
                target: h.target.as_ref().map(|t| TargetLine {
                    status: t.status.as_str().replace(' ', "_"),
                    text: t.text.clone(),
                }),
                chart: Chart::from(&h.chart),
            }),
            retention: RetentionSettings {
                cohort: r.cohort.clone(),
                activity: r.activity.clone(),
                entity: r.entity.clone(),
                grain: r.grain.as_str(),
                periods: r.periods,
                note: r.note.clone(),
            },
        }
    }
}

impl From<&overview::Node> for OverviewNode {
    fn from(n: &overview::Node) -> OverviewNode {
        OverviewNode {
            metric: n.metric.clone(),
            north_star: n.north_star,
            value: finite(n.value),
            change: finite(n.change),
            relative_change: finite(n.relative_change),
            contribution: finite(n.contribution),
            text: n.text.clone(),
            guardrails: n
                .guardrails
                .iter()
                .map(|g| GuardrailLine {
                    metric: g.metric.clone(),
                    value: finite(g.value),
                    breached: g.breached,
                    text: g.text.clone(),
                })
                .collect(),
            inputs: n.inputs.iter().map(OverviewNode::from).collect(),
        }
    }
}

impl From<&overview::Chart> for Chart {
    fn from(c: &overview::Chart) -> Chart {
        Chart {
            metric: c.metric.clone(),
            grain: c.grain.as_str(),
            last_complete: c.last_complete.map(date),
            series: c
                .series
                .iter()
                .map(|s| ChartSeries {
                    name: s.name.clone(),
                    points: s
                        .points
                        .iter()
                        .map(|p| Point {
                            period: date(p.period),
                            value: finite(p.value),
                            text: p.text.clone(),
                            complete: p.complete,
                        })
                        .collect(),
                })
                .collect(),
            ticks: c
                .ticks
                .iter()
                .map(|t| Tick {
                    value: t.value,
                    text: t.text.clone(),
                })
                .collect(),
        }
    }
}

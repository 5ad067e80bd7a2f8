//! What the dashboard shows, decided here rather than in its script: the tree at its last
//! complete period, the North Star's headline and target, charts with their complete periods
//! and axis ticks, and where retention comes from; every number also as text.
//!
//! The server turns these types into its JSON (`/api/v1/overview`, `/api/v1/metrics/{name}/chart`).

use chrono::NaiveDate;
use lodestar_core::datafusion::arrow::array::{Array, AsArray};
use lodestar_core::datafusion::arrow::compute::cast;
use lodestar_core::datafusion::arrow::datatypes::DataType;
use lodestar_core::format::{self, optional, signed, signed_percent};
use lodestar_core::model::Grain;
use lodestar_core::periods;
use lodestar_core::targets::Status;
use lodestar_core::tree::{MetricTree, TreeNode};
use lodestar_core::{Engine, MetricRequest, MetricTable, TreeRequest};

use crate::{DEFAULT_RETENTION_PERIODS, Result, rules, svg};

/// The dashboard's first screen.
#[derive(Debug, Clone)]
pub struct Overview {
    pub grain: Grain,
    /// The tree's period: the last complete one of the data.
    pub period: Option<NaiveDate>,
    pub previous_period: Option<NaiveDate>,
    /// "week 2026-03-09 against 2026-03-02", or that no period is complete.
    pub period_text: String,
    pub roots: Vec<Node>,
    /// The first root's headline; `None` without metrics.
    pub north_star: Option<Headline>,
    pub retention: RetentionSettings,
}

/// A metric of the tree, its numbers and their text.
#[derive(Debug, Clone)]
pub struct Node {
    pub metric: String,
    pub north_star: bool,
    pub value: Option<f64>,
    pub change: Option<f64>,
    pub relative_change: Option<f64>,
    pub contribution: Option<f64>,
    /// "1,234 · +12 (+5.0%)", and "· contributes +3" for an input.
    pub text: String,
    pub guardrails: Vec<GuardrailLine>,
    pub inputs: Vec<Node>,
}

#[derive(Debug, Clone)]
pub struct GuardrailLine {
    pub metric: String,
    pub value: Option<f64>,
    pub breached: bool,
    pub text: String,
}

/// The North Star at the tree's period.
#[derive(Debug, Clone)]
pub struct Headline {
    pub metric: String,
    pub description: Option<String>,
    pub value: Option<f64>,
    pub value_text: String,
    /// "week of 2026-03-09".
    pub period_text: String,
    /// "+12 (+5.0%) vs 2026-03-02".
    pub change_text: String,
    pub change: Option<f64>,
    pub target: Option<TargetLine>,
    pub chart: Chart,
}

#[derive(Debug, Clone)]
pub struct TargetLine {
    pub status: Status,
    pub text: String,
}

/// A line chart's data: series over periods, which periods are complete, the value axis.
#[derive(Debug, Clone)]
pub struct Chart {
    pub metric: String,
    pub grain: Grain,
    /// Periods after this one are incomplete ([`rules::complete_count`]).
    pub last_complete: Option<NaiveDate>,
    pub series: Vec<ChartSeries>,
    /// Round values of the y axis, lowest first (empty without values).
    pub ticks: Vec<Tick>,
}

#[derive(Debug, Clone)]
pub struct ChartSeries {
    /// The metric, or the dimension's value.
    pub name: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone)]
pub struct Point {
    pub period: NaiveDate,
    pub value: Option<f64>,
    pub text: String,
    pub complete: bool,
}

#[derive(Debug, Clone)]
pub struct Tick {
    pub value: f64,
    pub text: String,
}

/// Where the dashboard's retention comes from when its address names none: the project's
/// retention metric ([`rules::declared_retention`]), at the report's cohort length.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// `source.table.column`; `None`: the project has no retention metric.
    pub cohort: Option<String>,
    pub activity: Option<String>,
    pub entity: Option<String>,
    pub grain: Grain,
    pub periods: u32,
    /// What to do when there is none.
    pub note: Option<String>,
}

/// The overview: the tree of the north stars at the last complete period (as
/// `lodestar report` without options), the first one's chart and target.
pub async fn overview(engine: &Engine) -> Result<Overview> {
    let tree = engine.tree(&TreeRequest::default()).await?;
    let north_star = match tree.roots.first() {
        Some(root) => Some(headline(engine, &tree, root).await?),
        None => None,
    };
    Ok(Overview {
        grain: tree.grain,
        period: tree.period,
        previous_period: tree.previous_period,
        period_text: match (tree.period, tree.previous_period) {
            (Some(period), Some(previous)) => format!(
                "{} {} against {}",
                tree.grain,
                periods::label(period, tree.grain),
                periods::label(previous, tree.grain)
            ),
            _ => "No complete period with data.".into(),
        },
        roots: tree.roots.iter().map(node).collect(),
        north_star,
        retention: retention_settings(engine),
    })
}

fn node(n: &TreeNode) -> Node {
    let mut text = format!(
        "{} · {} ({})",
        optional(n.value),
        signed(n.change()),
        signed_percent(n.relative_change())
    );
    if !n.north_star && n.contribution.is_some() {
        text.push_str(&format!(" · contributes {}", signed(n.contribution)));
    }
    Node {
        metric: n.metric.clone(),
        north_star: n.north_star,
        value: n.value,
        change: n.change(),
        relative_change: n.relative_change(),
        contribution: n.contribution,
        text,
        guardrails: n
            .guardrails
            .iter()
            .map(|g| GuardrailLine {
                metric: g.rule.metric.clone(),
                value: g.value,
                breached: g.breached,
                text: format!(
                    " · guardrail {} {}{}",
                    g.rule.metric,
                    optional(g.value),
                    if g.breached { " (breached)" } else { "" }
                ),
            })
            .collect(),
        inputs: n.inputs.iter().map(node).collect(),
    }
}

async fn headline(engine: &Engine, tree: &MetricTree, root: &TreeNode) -> Result<Headline> {
    let grain = tree.grain;
    let metric = engine.project().metric(&root.metric)?;
    let label = |date: Option<NaiveDate>| {
        date.map_or_else(|| format::MISSING.into(), |d| periods::label(d, grain))
    };
    let target = if metric.target.is_some() {
        engine
            .targets(Some(&root.metric))
            .await?
            .first()
            .map(|t| TargetLine {
                status: t.status,
                text: format!(
                    "Target {} per {} by {}: {} in the {} of {}, {} projected — {}",
                    format::number(t.target.value),
                    t.target.period,
                    t.target.by,
                    optional(t.actual),
                    t.target.period,
                    t.period.map_or_else(
                        || format::MISSING.into(),
                        |p| periods::label(p, t.target.period)
                    ),
                    optional(t.projected),
                    t.status.as_str()
                ),
            })
    } else {
        None
    };
    Ok(Headline {
        metric: root.metric.clone(),
        description: metric.description.clone(),
        value: root.value,
        value_text: optional(root.value),
        period_text: format!("{grain} of {}", label(tree.period)),
        change_text: format!(
            "{} ({}) vs {}",
            signed(root.change()),
            signed_percent(root.relative_change()),
            label(tree.previous_period)
        ),
        change: root.change(),
        target,
        chart: chart(engine, &root.metric, grain, None, tree.period).await?,
    })
}

/// A metric's chart at `grain`, one series per value of `dimension` if one is given; periods
/// after `last_complete` are marked incomplete.
pub async fn chart(
    engine: &Engine,
    metric: &str,
    grain: Grain,
    dimension: Option<&str>,
    last_complete: Option<NaiveDate>,
) -> Result<Chart> {
    let mut request = MetricRequest::new([metric], grain);
    request.dimensions = dimension.map(str::to_string).into_iter().collect();
    let table = engine.compute(&request).await?;
    Ok(chart_of(&table, metric, dimension, last_complete))
}

/// The last complete period of `metric` at `grain`, as the tree finds it.
pub async fn last_complete(
    engine: &Engine,
    metric: &str,
    grain: Grain,
) -> Result<Option<NaiveDate>> {
    let tree = engine
        .tree(&TreeRequest {
            root: Some(metric.to_string()),
            grain: Some(grain),
            ..TreeRequest::default()
        })
        .await?;
    Ok(tree.period)
}

fn chart_of(
    table: &MetricTable,
    metric: &str,
    dimension: Option<&str>,
    last_complete: Option<NaiveDate>,
) -> Chart {
    let periods = table.periods();
    let values = table.values(metric).unwrap_or_default();
    let names: Vec<String> = match dimension.and_then(|d| table.batch.column_by_name(d)) {
        Some(column) => match cast(column, &DataType::Utf8) {
            Ok(text) => {
                let text = text.as_string::<i32>();
                (0..text.len())
                    .map(|i| {
                        if text.is_null(i) {
                            "(null)".to_string()
                        } else {
                            text.value(i).to_string()
                        }
                    })
                    .collect()
            }
            Err(_) => vec![metric.to_string(); periods.len()],
        },
        None => vec![metric.to_string(); periods.len()],
    };
    let mut series: Vec<ChartSeries> = Vec::new();
    for ((period, value), name) in periods.iter().zip(&values).zip(names) {
        let point = Point {
            period: *period,
            value: *value,
            text: optional(*value),
            complete: false,
        };
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(ChartSeries {
                name,
                points: vec![point],
            }),
        }
    }
    for s in &mut series {
        let dates: Vec<NaiveDate> = s.points.iter().map(|p| p.period).collect();
        let complete = rules::complete_count(&dates, last_complete, false);
        for (i, point) in s.points.iter_mut().enumerate() {
            point.complete = i < complete;
        }
    }
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let ticks = match (
        present.iter().copied().reduce(f64::min),
        present.iter().copied().reduce(f64::max),
    ) {
        (Some(low), Some(high)) => {
            let low = low.min(0.0);
            let high = if high > low { high } else { low + 1.0 };
            let (ticks, step) = svg::nice_ticks(low, high);
            ticks
                .into_iter()
                .map(|value| Tick {
                    value,
                    text: svg::tick_label(value, step),
                })
                .collect()
        }
        _ => Vec::new(),
    };
    Chart {
        metric: metric.to_string(),
        grain: table.grain,
        last_complete,
        series,
        ticks,
    }
}

fn retention_settings(engine: &Engine) -> RetentionSettings {
    let grain = rules::retention_grain(None, None);
    match rules::declared_retention(engine.project()) {
        Some((cohort, activity)) => RetentionSettings {
            cohort: Some(format!("{}.{}", cohort.table, cohort.time)),
            activity: Some(format!("{}.{}", activity.table, activity.time)),
            entity: Some(cohort.entity),
            grain,
            periods: DEFAULT_RETENTION_PERIODS,
            note: None,
        },
        None => RetentionSettings {
            cohort: None,
            activity: None,
            entity: None,
            grain,
            periods: DEFAULT_RETENTION_PERIODS,
            note: Some(
                "The project has no retention metric: name the cohort and activity time columns (source.table.column) and the entity column to see retention."
                    .into(),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_say_their_numbers_in_words() {
        let mut input = TreeNode {
            metric: "bookings".into(),
            north_star: false,
            value: Some(1_500.0),
            previous: Some(1_200.0),
            link: lodestar_core::Link::Leaf,
            contribution_to_parent: Some(300.0),
            contribution: Some(300.0),
            inputs: Vec::new(),
            guardrails: Vec::new(),
        };
        // 1,500 against 1,200: +300, +25.0%, contributing +300.
        assert_eq!(
            node(&input).text,
            "1,500 · +300 (+25.0%) · contributes +300"
        );
        input.north_star = true;
        assert_eq!(node(&input).text, "1,500 · +300 (+25.0%)");
    }
}

//! The metric tree: north stars and their inputs, each with its value in a period, its change
//! against a comparison period, and its contribution to the root's change.
//!
//! All metrics of the tree are computed in one request covering both periods, so metrics
//! sharing a table are read in one scan. Where a metric has a `formula`, its change is split
//! exactly between its inputs (see [`crate::analysis::decompose`]); a child's contribution to the root
//! is its part of its parent's change, scaled by the parent's share of the root's change.
//! Without a formula the inputs' changes are shown side by side, unlinked.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::analysis::decompose::{Formula, Method};
use crate::project::error::{Error, Result};
use crate::project::model::{
    Cumulative, CumulativeOver, Grain, Guardrail, Measure, MetricKind, Project, TableRef,
};
use crate::project::periods::{
    next_period, parse_period, period_start, previous_period, year_before,
};
use crate::query::compute::{MetricRequest, Scanned};
use crate::query::engine::Engine;

/// Used when neither the request nor the root metric names a grain.
pub const DEFAULT_TREE_GRAIN: Grain = Grain::Week;

/// What the current period is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// The period just before.
    #[default]
    Previous,
    /// The same period a year earlier (52 weeks for days and weeks).
    YearOverYear,
    /// The period containing this date.
    Period(NaiveDate),
}

impl std::str::FromStr for Compare {
    type Err = String;

    /// `previous`, `yoy` (or `year`), or a period as [`parse_period`] reads it.
    fn from_str(text: &str) -> std::result::Result<Compare, String> {
        match text {
            "previous" => Ok(Compare::Previous),
            "yoy" | "year" => Ok(Compare::YearOverYear),
            other => parse_period(other)
                .map(|(_, date)| Compare::Period(date))
                .map_err(|message| {
                    format!("{message}; compare with previous, yoy, or a period like 2026-05 or 2026-W20")
                }),
        }
    }
}

/// Which tree, at which grain, for which period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeRequest {
    /// The root metric; `None`: every north star (every top-level metric if there are none).
    pub root: Option<String>,
    pub grain: Option<Grain>,
    /// A date inside the period to look at; `None`: the last complete period of the data.
    pub period: Option<NaiveDate>,
    pub compare: Compare,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricTree {
    pub grain: Grain,
    /// The period looked at, if there is data.
    pub period: Option<NaiveDate>,
    /// The period it is compared with.
    pub previous_period: Option<NaiveDate>,
    pub roots: Vec<TreeNode>,
    /// The queries that read the sources: about one per table the tree's metrics use, since
    /// every metric of the tree is computed in one request.
    pub scans: Vec<Scanned>,
}

/// How a node's change relates to its inputs' changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// No inputs.
    Leaf,
    /// Inputs without a formula: their changes are shown, not linked to this one's.
    NotQuantified,
    /// The formula splits the change exactly between the inputs.
    Decomposed {
        method: Method,
        /// The metric's actual change minus the formula's change: how far the formula is from
        /// reproducing the metric (zero when it is an identity such as a × (b / a)).
        residual: f64,
    },
    /// The formula could not be evaluated for these values (a division by zero, a missing
    /// value).
    Undecomposable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    pub metric: String,
    pub north_star: bool,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    pub link: Link,
    /// This metric's part of its parent's change, when the parent has a formula.
    pub contribution_to_parent: Option<f64>,
    /// This metric's part of the root's change (for the root: its change).
    pub contribution: Option<f64>,
    /// The metric's inputs, recursively.
    pub inputs: Vec<TreeNode>,
    /// Counter-metrics watched beside this one.
    pub guardrails: Vec<GuardrailStatus>,
}

impl TreeNode {
    /// `value - previous`.
    pub fn change(&self) -> Option<f64> {
        Some(self.value? - self.previous?)
    }

    /// The change as a fraction of the previous value; `None` when that is zero.
    pub fn relative_change(&self) -> Option<f64> {
        let previous = self.previous?;
        (previous != 0.0).then(|| self.change().map(|c| c / previous.abs()))?
    }
}

/// A guardrail beside a metric, in the two periods.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailStatus {
    pub rule: Guardrail,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    /// The metric rose while this guardrail worsened beyond its threshold.
    pub breached: bool,
}

impl Engine {
    /// The metric tree in one period compared with another.
    pub async fn tree(&self, request: &TreeRequest) -> Result<MetricTree> {
        let project = self.project();
        let roots: Vec<String> = match &request.root {
            Some(name) => vec![project.metric(name)?.name.clone()],
            None => default_roots(project),
        };
        let grain = request
            .grain
            .or_else(|| roots.first().and_then(|r| project.metrics[r].grain))
            .unwrap_or(DEFAULT_TREE_GRAIN);
        let mut names = Vec::new();
        for root in &roots {
            collect(project, root, &mut names);
        }
        let Some((current, compared)) = self
            .comparison(&names, grain, request.period, request.compare)
            .await?
        else {
            // No data at all: the tree's shape, without values.
            let values = Values::default();
            return Ok(MetricTree {
                grain,
                period: None,
                previous_period: None,
                roots: roots.iter().map(|r| build(project, r, &values)).collect(),
                scans: Vec::new(),
            });
        };
        // One request over both periods: one scan per table for the whole tree.
        let mut metrics_request = MetricRequest::new(names, grain);
        metrics_request.from = Some(compared.min(current));
        metrics_request.to = Some(compared.max(current));
        let table = self.compute(&metrics_request).await?;
        let periods = table.periods();
        let row_of = |p: NaiveDate| periods.iter().position(|d| *d == p);
        let (now, then) = (row_of(current), row_of(compared));
        let mut values = Values::default();
        for metric in &table.metrics {
            let column = table.values(metric).unwrap_or_default();
            let at = |row: Option<usize>| row.and_then(|r| column.get(r).copied().flatten());
            values.now.insert(metric.clone(), at(now));
            values.then.insert(metric.clone(), at(then));
        }
        let mut roots: Vec<TreeNode> = roots.iter().map(|r| build(project, r, &values)).collect();
        for root in &mut roots {
            root.contribution = root.change();
            let formula_change = match root.link {
                Link::Decomposed { residual, .. } => root.change().map(|c| c - residual),
                _ => None,
            };
            attribute(root, formula_change);
        }
        Ok(MetricTree {
            grain,
            period: Some(current),
            previous_period: Some(compared),
            roots,
            scans: table.scans,
        })
    }

    /// The period looked at (the one containing `period`, else the last complete one of the
    /// metrics' data) and the period it is compared with; `None` when there is no data.
    pub(crate) async fn comparison(
        &self,
        names: &[String],
        grain: Grain,
        period: Option<NaiveDate>,
        compare: Compare,
    ) -> Result<Option<(NaiveDate, NaiveDate)>> {
        let week_start = self.project().week_start;
        let current = match period {
            Some(date) => period_start(date, grain, week_start),
            None => match self.last_complete_period(names, grain).await? {
                Some(current) => current,
                None => return Ok(None),
            },
        };
        let compared = match compare {
            Compare::Previous => previous_period(current, grain),
            Compare::YearOverYear => year_before(current, grain, week_start),
            Compare::Period(date) => period_start(date, grain, week_start),
        };
        if compared == current {
            return Err(Error::request(format!(
                "the comparison period is the period itself ({current}); compare with another"
            )));
        }
        Ok(Some((current, compared)))
    }

    /// The last period of `grain` that the data covers to its end.
    async fn last_complete_period(
        &self,
        names: &[String],
        grain: Grain,
    ) -> Result<Option<NaiveDate>> {
        let Some(last_day) = self.last_data_day(names).await? else {
            return Ok(None);
        };
        let week_start = self.project().week_start;
        let latest = period_start(last_day, grain, week_start);
        Ok(Some(
            if next_period(latest, grain) > last_day + Days::new(1) {
                // The data stops inside this period: comparing it would show a false drop.
                previous_period(latest, grain)
            } else {
                latest
            },
        ))
    }

    /// The last day any of the metrics' tables has rows for: one query per distinct table
    /// and time column, not per metric, and without the metrics' filters (the data ends where
    /// the table ends, even for a metric whose last matching row is older).
    pub(crate) async fn last_data_day(&self, names: &[String]) -> Result<Option<NaiveDate>> {
        let mut tables: Vec<(TableRef, String)> = Vec::new();
        for name in names {
            let (table, time) = match &self.project().metrics[name].kind {
                MetricKind::Simple(m)
                | MetricKind::Cumulative(Cumulative {
                    over: CumulativeOver::Measure(m),
                    ..
                }) => (&m.table, &m.time),
                // A retention metric's data ends with its activity table.
                MetricKind::Retention(r) => (&r.activity, &r.activity_time),
                _ => continue,
            };
            if !tables.iter().any(|(t, c)| t == table && c == time) {
                tables.push((table.clone(), time.clone()));
            }
        }
        let mut last = None;
        for (table, time) in tables {
            let whole_table = Measure {
                table,
                time,
                measure: "count(*)".into(),
                filter: None,
            };
            if let Some((_, day)) = self.data_bounds(&whole_table, None).await? {
                last = last.max(Some(day));
            }
        }
        Ok(last)
    }
}

/// Every metric's value in the current and the comparison period.
#[derive(Debug, Default)]
struct Values {
    now: HashMap<String, Option<f64>>,
    then: HashMap<String, Option<f64>>,
}

impl Values {
    fn known(map: &HashMap<String, Option<f64>>) -> HashMap<String, f64> {
        map.iter()
            .filter_map(|(k, v)| Some((k.clone(), (*v)?)))
            .collect()
    }
}

/// The roots of the tree when none is asked for: the north stars, else every metric that is
/// no other's input.
pub fn default_roots(project: &Project) -> Vec<String> {
    let stars: Vec<String> = project.north_stars().map(|m| m.name.clone()).collect();
    if !stars.is_empty() {
        return stars;
    }
    project
        .metrics
        .keys()
        .filter(|name| !project.metrics.values().any(|m| m.inputs.contains(name)))
        .cloned()
        .collect()
}

/// The metrics of the tree under `name`, with their guardrails.
pub(crate) fn collect(project: &Project, name: &str, out: &mut Vec<String>) {
    if out.iter().any(|n| n == name) {
        return;
    }
    out.push(name.to_string());
    let metric = &project.metrics[name];
    for child in &metric.inputs {
        collect(project, child, out);
    }
    for guardrail in &metric.guardrails {
        if !out.contains(&guardrail.metric) {
            out.push(guardrail.metric.clone());
        }
    }
}

fn build(project: &Project, name: &str, values: &Values) -> TreeNode {
    let metric = &project.metrics[name];
    let value = values.now.get(name).copied().flatten();
    let previous = values.then.get(name).copied().flatten();
    let mut inputs: Vec<TreeNode> = metric
        .inputs
        .iter()
        .map(|i| build(project, i, values))
        .collect();
    let link = if inputs.is_empty() {
        Link::Leaf
    } else {
        match metric.formula.as_deref().map(Formula::parse) {
            None | Some(Err(_)) => Link::NotQuantified,
            Some(Ok(formula)) => {
                let parts =
                    formula.decompose(&Values::known(&values.then), &Values::known(&values.now));
                match (parts, value, previous) {
                    (Some(d), Some(v), Some(p)) => {
                        for input in &mut inputs {
                            input.contribution_to_parent = d
                                .parts
                                .iter()
                                .find(|(n, _)| *n == input.metric)
                                .map(|(_, part)| *part);
                        }
                        Link::Decomposed {
                            method: d.method,
                            residual: (v - p) - (d.after - d.before),
                        }
                    }
                    _ => Link::Undecomposable,
                }
            }
        }
    };
    let rose = matches!((value, previous), (Some(v), Some(p)) if v > p);
    let guardrails = metric
        .guardrails
        .iter()
        .map(|rule| {
            let value = values.now.get(&rule.metric).copied().flatten();
            let previous = values.then.get(&rule.metric).copied().flatten();
            let breached =
                rose && matches!((previous, value), (Some(p), Some(v)) if rule.breached(p, v));
            GuardrailStatus {
                rule: rule.clone(),
                value,
                previous,
                breached,
            }
        })
        .collect();
    TreeNode {
        metric: name.to_string(),
        north_star: metric.north_star,
        value,
        previous,
        link,
        contribution_to_parent: None,
        contribution: None,
        inputs,
        guardrails,
    }
}

/// Passes the root's change down: each input gets its part of its parent's formula change,
/// scaled by the parent's share of the root's change.
fn attribute(node: &mut TreeNode, formula_change: Option<f64>) {
    let scale = match (node.contribution, formula_change) {
        (Some(share), Some(change)) if change != 0.0 => Some(share / change),
        (Some(0.0), Some(_)) => Some(0.0),
        _ => None,
    };
    for input in &mut node.inputs {
        input.contribution = match (input.contribution_to_parent, scale) {
            (Some(part), Some(scale)) => Some(part * scale),
            _ => None,
        };
        let input_formula_change = match input.link {
            Link::Decomposed { residual, .. } => input.change().map(|c| c - residual),
            _ => None,
        };
        attribute(input, input_formula_change);
    }
}

/// One row of the tree table: metric, parent, depth, the six numbers, the method.
type TreeRow = (
    String,
    Option<String>,
    u32,
    [Option<f64>; 6],
    Option<&'static str>,
);

impl MetricTree {
    /// The tree as a table, one row per node in depth-first order: `metric`, `parent`,
    /// `depth`, `value`, `previous`, `change`, `relative_change`, `contribution_to_parent`,
    /// `contribution`, `method`.
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let mut metric = StringBuilder::new();
        let mut parent = StringBuilder::new();
        let mut depth = UInt32Builder::new();
        let mut method = StringBuilder::new();
        let mut numbers: Vec<Float64Builder> = (0..6).map(|_| Float64Builder::new()).collect();
        fn walk(node: &TreeNode, parent_name: Option<&str>, level: u32, out: &mut Vec<TreeRow>) {
            let method = match &node.link {
                Link::Decomposed { method, .. } => Some(method.as_str()),
                Link::NotQuantified => Some("not quantified"),
                Link::Undecomposable => Some("undecomposable"),
                Link::Leaf => None,
            };
            out.push((
                node.metric.clone(),
                parent_name.map(str::to_string),
                level,
                [
                    node.value,
                    node.previous,
                    node.change(),
                    node.relative_change(),
                    node.contribution_to_parent,
                    node.contribution,
                ],
                method,
            ));
            for input in &node.inputs {
                walk(input, Some(&node.metric), level + 1, out);
            }
        }
        let mut rows = Vec::new();
        for root in &self.roots {
            walk(root, None, 0, &mut rows);
        }
        for (m, p, d, nums, how) in rows {
            metric.append_value(m);
            parent.append_option(p);
            depth.append_value(d);
            for (builder, n) in numbers.iter_mut().zip(nums) {
                builder.append_option(n);
            }
            method.append_option(how);
        }
        let number_names = [
            "value",
            "previous",
            "change",
            "relative_change",
            "contribution_to_parent",
            "contribution",
        ];
        let mut fields = vec![
            Field::new("metric", DataType::Utf8, false),
            Field::new("parent", DataType::Utf8, true),
            Field::new("depth", DataType::UInt32, false),
        ];
        fields.extend(
            number_names
                .iter()
                .map(|n| Field::new(*n, DataType::Float64, true)),
        );
        fields.push(Field::new("method", DataType::Utf8, true));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(metric.finish()),
            Arc::new(parent.finish()),
            Arc::new(depth.finish()),
        ];
        columns.extend(numbers.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(method.finish()));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn project(metrics: &str) -> Project {
        let text =
            format!("sources:\n  app: {{ connector: files, path: data }}\nmetrics:\n{metrics}");
        crate::project::config::parse(&text, Path::new("/p/lodestar.yaml"), &|_| None).unwrap()
    }

    const METRIC: &str = "table: app.t, time: at, measure: count(*)";

    #[test]
    fn default_roots_are_the_north_stars_else_the_metrics_no_one_uses() {
        let tree = format!(
            "  a: {{ {METRIC}, inputs: [b] }}\n  b: {{ {METRIC}, inputs: [c] }}\n  c: {{ {METRIC} }}\n  d: {{ {METRIC} }}\n"
        );
        assert_eq!(default_roots(&project(&tree)), ["a", "d"]);
        let starred = tree.replace("  b: { ", "  b: { north_star: true, ");
        assert_eq!(default_roots(&project(&starred)), ["b"]);
    }
}

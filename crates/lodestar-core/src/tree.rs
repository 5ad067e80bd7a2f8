//! The metric tree: north stars and their inputs, each with its latest value and change.
//!
//! All metrics of the tree are computed in one request, so metrics sharing a table are read in
//! one scan. "Latest" is the last complete period of the data (a period the data runs to the
//! end of), compared with the period before; only those two periods are scanned.

use chrono::{Days, NaiveDate};

use crate::compute::MetricRequest;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::{Cumulative, CumulativeOver, Grain, MetricKind, Project};
use crate::periods::{next_period, period_start, previous_period};

/// Used when neither the request nor the root metric names a grain.
pub const DEFAULT_TREE_GRAIN: Grain = Grain::Week;

#[derive(Debug, Clone, PartialEq)]
pub struct MetricTree {
    pub grain: Grain,
    /// The latest period of the data, if there is any.
    pub period: Option<NaiveDate>,
    /// The period it is compared with.
    pub previous_period: Option<NaiveDate>,
    pub roots: Vec<TreeNode>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    pub metric: String,
    pub north_star: bool,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    /// The metric's inputs, recursively.
    pub inputs: Vec<TreeNode>,
    /// Counter-metrics watched beside this one (not expanded further).
    pub guardrails: Vec<TreeNode>,
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

impl Engine {
    /// The tree under `root`, or under every north star (every top-level metric if the
    /// project names none).
    pub async fn tree(&self, root: Option<&str>, grain: Option<Grain>) -> Result<MetricTree> {
        let project = self.project();
        let roots: Vec<String> = match root {
            Some(name) => vec![project.metric(name)?.name.clone()],
            None => default_roots(project),
        };
        let grain = grain
            .or_else(|| roots.first().and_then(|r| project.metrics[r].grain))
            .unwrap_or(DEFAULT_TREE_GRAIN);
        let mut names = Vec::new();
        for root in &roots {
            collect(project, root, &mut names);
        }
        let mut request = MetricRequest::new(names, grain);
        if let Some(last_day) = self.last_data_day(&request.metrics).await? {
            let week_start = project.week_start;
            let mut latest = period_start(last_day, grain, week_start);
            if next_period(latest, grain) > last_day + Days::new(1) {
                // The data stops inside this period: comparing it would show a false drop.
                latest = previous_period(latest, grain);
            }
            request.from = Some(previous_period(latest, grain));
            request.to = Some(latest);
        }
        let table = self.compute(&request).await?;
        let periods = table.periods();
        let last = periods.len().checked_sub(1);
        let previous = periods.len().checked_sub(2);
        let value_at = |metric: &str, row: Option<usize>| -> Option<f64> {
            table.values(metric)?.get(row?).copied().flatten()
        };
        let build = |name: &str| -> TreeNode {
            node(project, name, &|m, latest| {
                value_at(m, if latest { last } else { previous })
            })
        };
        Ok(MetricTree {
            grain,
            period: last.map(|i| periods[i]),
            previous_period: previous.map(|i| periods[i]),
            roots: roots.iter().map(|r| build(r)).collect(),
        })
    }
}

impl Engine {
    /// The last day any of the metrics' tables has rows for.
    async fn last_data_day(&self, names: &[String]) -> Result<Option<NaiveDate>> {
        let mut last = None;
        for name in names {
            let measure = match &self.project().metrics[name].kind {
                MetricKind::Simple(m) => m,
                MetricKind::Cumulative(Cumulative {
                    over: CumulativeOver::Measure(m),
                    ..
                }) => m,
                _ => continue,
            };
            if let Some((_, day)) = self.data_bounds(measure, None).await? {
                last = last.max(Some(day));
            }
        }
        Ok(last)
    }
}

fn default_roots(project: &Project) -> Vec<String> {
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

fn collect(project: &Project, name: &str, out: &mut Vec<String>) {
    if out.iter().any(|n| n == name) {
        return;
    }
    out.push(name.to_string());
    let metric = &project.metrics[name];
    for child in metric.inputs.iter().chain(&metric.guardrails) {
        collect(project, child, out);
    }
}

fn node(project: &Project, name: &str, value: &dyn Fn(&str, bool) -> Option<f64>) -> TreeNode {
    let metric = &project.metrics[name];
    let leaf = |n: &String| TreeNode {
        metric: n.clone(),
        north_star: project.metrics[n].north_star,
        value: value(n, true),
        previous: value(n, false),
        inputs: Vec::new(),
        guardrails: Vec::new(),
    };
    TreeNode {
        metric: name.to_string(),
        north_star: metric.north_star,
        value: value(name, true),
        previous: value(name, false),
        inputs: metric
            .inputs
            .iter()
            .map(|i| node(project, i, value))
            .collect(),
        guardrails: metric.guardrails.iter().map(leaf).collect(),
    }
}

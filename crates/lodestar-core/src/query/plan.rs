//! Planning a request, as pure functions: the metrics it needs ([`closure`]), the scans
//! they fuse into ([`add_to_scan`]: one per table, time column and grain, a distinct count
//! apart), and the names of the columns the scans and the assembly share.

use chrono::NaiveDate;
use datafusion::sql::sqlparser::ast::Expr;
use indexmap::IndexMap;

use crate::project::error::{Error, Result};
use crate::project::model::{Grain, Measure, Metric, Project, TableRef};
use crate::query::sql;

/// What every part of one request shares: the grain it is shown by, its breakdown and its
/// filter, and whether the parts are read for the result cache (which also wants each
/// group's last local day, `__last`, and how many rows each metric's own filter matched).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartContext<'r> {
    pub(crate) grain: Grain,
    pub(crate) dims: &'r [String],
    pub(crate) where_expr: Option<&'r Expr>,
    pub(crate) for_cache: bool,
}

/// A cumulative metric with its own measure, over a trailing window of `days` (`None`: to
/// date).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowMetric<'p> {
    pub(crate) metric: &'p Metric,
    pub(crate) measure: &'p Measure,
    pub(crate) days: Option<u32>,
}

pub(crate) const PERIOD: &str = "__period";

pub(crate) const END: &str = "__end";

/// A trailing window's first instant, beside its period in the spine.
pub(crate) const START: &str = "__start";

/// With the cache: the last local day of the rows a scan read.
pub(crate) const LAST: &str = "__last";

/// The counted values of a distinct count, grouped before they are counted.
pub(crate) const VALUE: &str = "__value";

/// The least span of a distinct count's chunk over a time-partitioned table, in days: two
/// weeks at day or week grain, one period at coarser grains (see `Engine::distinct_chunks`).
pub(crate) const CHUNK_DAYS: i64 = 14;

/// One scan of a table: several metrics' aggregates, at one grain, over one time range.
#[derive(Debug)]
pub(crate) struct Scan<'p> {
    pub(crate) table: TableRef,
    pub(crate) time: String,
    pub(crate) grain: Grain,
    /// `None`: from the beginning of the data.
    pub(crate) lower: Option<NaiveDate>,
    pub(crate) metrics: Vec<(&'p Metric, &'p Measure)>,
}

/// Keyed by table, time column, grain, and the metric for a distinct count (which gets a
/// scan of its own, see [`sql::distinct_count_arg`]).
pub(crate) type Scans<'p> = IndexMap<(TableRef, String, Grain, Option<String>), Scan<'p>>;

/// Adds a metric to the scan of its table at `grain`, widening the scan's range if needed.
pub(crate) fn add_to_scan<'p>(
    scans: &mut Scans<'p>,
    metric: &'p Metric,
    measure: &'p Measure,
    grain: Grain,
    lower: Option<NaiveDate>,
) {
    let distinct =
        sql::parse_expr(&measure.measure).is_ok_and(|e| sql::distinct_count_arg(&e).is_some());
    let key = (
        measure.table.clone(),
        measure.time.clone(),
        grain,
        distinct.then(|| metric.name.clone()),
    );
    let scan = scans.entry(key).or_insert_with(|| Scan {
        table: measure.table.clone(),
        time: measure.time.clone(),
        grain,
        lower,
        metrics: Vec::new(),
    });
    scan.lower = earliest(scan.lower, lower);
    if !scan.metrics.iter().any(|(m, _)| m.name == metric.name) {
        scan.metrics.push((metric, measure));
    }
}

pub(crate) fn parse_fragment(sql: &str) -> Result<Expr> {
    // Validated before; a failure here is a bug, reported as such.
    sql::parse_expr(sql)
        .map_err(|e| Error::DataFusion(Box::new(datafusion::error::DataFusionError::Internal(e))))
}

/// The metrics a request needs, each after the metrics it is computed from.
pub(crate) fn closure<'p>(project: &'p Project, names: &[&str]) -> Result<Vec<&'p Metric>> {
    fn visit<'p>(project: &'p Project, name: &str, out: &mut Vec<&'p Metric>) -> Result<()> {
        if out.iter().any(|m| m.name == name) {
            return Ok(());
        }
        let metric = project.metric(name)?;
        for parent in metric.parents() {
            visit(project, parent, out)?;
        }
        out.push(metric);
        Ok(())
    }
    let mut out = Vec::new();
    for name in names {
        visit(project, name, &mut out)?;
    }
    Ok(out)
}

pub(crate) fn earliest(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    Some(a?.min(b?))
}

//! Planning a request, as pure functions: the metrics it needs ([`closure`]), the scans
//! they fuse into ([`plan_scans`]: one per table, time column and grain, and one more per
//! further distinct-counted key not counted by bitmap), and the names of the columns the scans and the assembly
//! share.

use chrono::{Days, NaiveDate};
use datafusion::sql::sqlparser::ast::Expr;
use indexmap::IndexMap;

use crate::project::error::{Error, Result};
use crate::project::model::{
    CumulativeOver, Grain, Measure, Metric, MetricKind, Project, TableRef,
};
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
    /// The key a scan groups by before it counts (the argument of its distinct counts, see
    /// [`sql::distinct_count_arg`]); `None` when it has no distinct count or counts its keys
    /// by bitmap (query/distinct.rs) in one grouping with the other measures.
    pub(crate) grouped_by: Option<String>,
}

/// Keyed by table, time column, grain, and [`Scan::grouped_by`].
pub(crate) type Scans<'p> = IndexMap<(TableRef, String, Grain, Option<String>), Scan<'p>>;

/// The scans of a request: the simple metrics of `closure` and the parents of cumulative
/// metrics, fused per table, time column and grain, each reading from `from_start` (`None`:
/// the beginning of the data). A cumulative metric to date needs its parent from the
/// beginning; one over a trailing window of N days needs it by day, from N days before the
/// first period.
///
/// A distinct count of an integer key (`by_bitmap` says which keys of which table) is one
/// more aggregate of its table's scan, counted by bitmap. Distinct counts of another key
/// share a scan, which groups by the key and counts the groups. The other measures of the
/// table join the first such scan as partial aggregates when they all combine exactly
/// ([`sql::split_aggregates`]; `is_aggregate` tells aggregate functions apart), so the table
/// is read once; a distinct count of a second such key gets a scan of its own.
pub(crate) fn plan_scans<'p>(
    project: &'p Project,
    closure: &[&'p Metric],
    grain: Grain,
    from_start: Option<NaiveDate>,
    is_aggregate: &dyn Fn(&str) -> bool,
    by_bitmap: &dyn Fn(&TableRef, &str) -> bool,
) -> Result<Scans<'p>> {
    let mut scans: Scans = IndexMap::new();
    for metric in closure {
        match &metric.kind {
            MetricKind::Simple(measure) => {
                add_to_scan(&mut scans, metric, measure, grain, from_start, by_bitmap)
            }
            MetricKind::Cumulative(c) => {
                if let CumulativeOver::Metric(parent) = &c.over {
                    let parent = project.metric(parent)?;
                    let MetricKind::Simple(measure) = &parent.kind else {
                        unreachable!("validated: cumulative metrics accumulate simple metrics")
                    };
                    match c.window_days {
                        None => add_to_scan(&mut scans, parent, measure, grain, None, by_bitmap),
                        Some(days) => add_to_scan(
                            &mut scans,
                            parent,
                            measure,
                            Grain::Day,
                            from_start.map(|d| d - Days::new(u64::from(days))),
                            by_bitmap,
                        ),
                    }
                }
            }
            _ => {}
        }
    }
    fuse_into_distinct(&mut scans, is_aggregate);
    Ok(scans)
}

/// Moves each scan of plain measures into the first distinct-count scan of its table, time
/// column, grain and range, when every one of its measures splits into partial aggregates.
fn fuse_into_distinct(scans: &mut Scans<'_>, is_aggregate: &dyn Fn(&str) -> bool) {
    let splits = |scan: &Scan<'_>| {
        scan.metrics.iter().all(|(_, measure)| {
            sql::parse_expr(&measure.measure).is_ok_and(|e| {
                sql::split_aggregates(&e, &|i| i.to_string(), is_aggregate).is_some()
            })
        })
    };
    let plain: Vec<_> = scans
        .iter()
        .filter(|((.., distinct), scan)| distinct.is_none() && splits(scan))
        .map(|(key, _)| key.clone())
        .collect();
    for key in plain {
        let (table, time, grain, _) = &key;
        let lower = scans[&key].lower;
        // Over the same range only: a distinct count's grouping is not widened.
        let Some(target) = scans
            .iter()
            .find(|((t, c, g, distinct), scan)| {
                distinct.is_some() && t == table && c == time && g == grain && scan.lower == lower
            })
            .map(|(key, _)| key.clone())
        else {
            continue;
        };
        let scan = scans.shift_remove(&key).expect("listed above");
        let target = scans.get_mut(&target).expect("found above");
        let mut metrics = scan.metrics;
        metrics.append(&mut target.metrics);
        target.metrics = metrics;
    }
}

/// Adds a metric to the scan of its table at `grain`, widening the scan's range if needed.
pub(crate) fn add_to_scan<'p>(
    scans: &mut Scans<'p>,
    metric: &'p Metric,
    measure: &'p Measure,
    grain: Grain,
    lower: Option<NaiveDate>,
    by_bitmap: &dyn Fn(&TableRef, &str) -> bool,
) {
    let grouped_by =
        sql::distinct_count_key(&measure.measure).filter(|key| !by_bitmap(&measure.table, key));
    let key = (
        measure.table.clone(),
        measure.time.clone(),
        grain,
        grouped_by.clone(),
    );
    let scan = scans.entry(key).or_insert_with(|| Scan {
        table: measure.table.clone(),
        time: measure.time.clone(),
        grain,
        lower,
        metrics: Vec::new(),
        grouped_by,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::project::config;

    // Two tables; `orders` has two time columns. Expected scans below are read off these
    // definitions: one scan per (table, time column, grain), and one per further key counted
    // distinct.
    const PROJECT: &str = "\
sources:
  app: { connector: files, path: data }
metrics:
  orders: { table: app.orders, time: ordered_at, measure: count(*) }
  revenue: { table: app.orders, time: ordered_at, measure: sum(amount) }
  shipped: { table: app.orders, time: shipped_at, measure: count(*) }
  buyers: { table: app.orders, time: ordered_at, measure: count(DISTINCT user_id) }
  repeat_buyers:
    { table: app.orders, time: ordered_at, measure: count(DISTINCT user_id), filter: repeat }
  products: { table: app.orders, time: ordered_at, measure: count(DISTINCT product_id) }
  basket: { table: app.orders, time: ordered_at, measure: avg(amount) }
  signups: { table: app.users, time: created_at, measure: count(*) }
  aov: { ratio: { numerator: revenue, denominator: orders } }
  per_signup: { derived: orders / signups }
  orders_to_date: { cumulative: { metric: orders } }
  orders_7d: { cumulative: { metric: orders, window: 7d } }
";

    fn project() -> Project {
        config::parse(PROJECT, Path::new("lodestar.yaml"), &config::env_from(&[])).unwrap()
    }

    fn no_bitmap(_: &TableRef, _: &str) -> bool {
        false
    }

    /// The scans of `closure`, no key counted by bitmap.
    fn plan<'p>(
        p: &'p Project,
        closure: &[&'p Metric],
        grain: Grain,
        from_start: Option<NaiveDate>,
    ) -> Scans<'p> {
        plan_scans(p, closure, grain, from_start, &aggregate, &no_bitmap).unwrap()
    }

    fn aggregate(name: &str) -> bool {
        ["sum", "count", "min", "max", "avg"].contains(&name)
    }

    fn names(metrics: &[&Metric]) -> Vec<String> {
        metrics.iter().map(|m| m.name.clone()).collect()
    }

    /// A scan as (table, time column, grain, lower bound, its metrics).
    type Shape = (String, String, Grain, Option<NaiveDate>, Vec<String>);

    fn shape(scans: &Scans<'_>) -> Vec<Shape> {
        scans
            .values()
            .map(|s| {
                let metrics = s.metrics.iter().map(|(m, _)| m.name.clone()).collect();
                (
                    s.table.to_string(),
                    s.time.clone(),
                    s.grain,
                    s.lower,
                    metrics,
                )
            })
            .collect()
    }

    /// A monthly scan of `app.orders` by `ordered_at` with `metrics`.
    fn orders_by_month(metrics: &[&str]) -> Shape {
        (
            "app.orders".to_string(),
            "ordered_at".to_string(),
            Grain::Month,
            None,
            metrics.iter().map(ToString::to_string).collect(),
        )
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, d).unwrap()
    }

    #[test]
    fn the_closure_lists_parents_before_their_metric_once_each() {
        let p = project();
        let closure = closure(&p, &["aov", "orders", "per_signup"]).unwrap();
        // aov needs revenue then orders; orders is already there; per_signup adds signups.
        assert_eq!(
            names(&closure),
            ["revenue", "orders", "aov", "signups", "per_signup"]
        );
    }

    #[test]
    fn the_closure_of_an_unknown_metric_is_an_error() {
        let p = project();
        assert!(closure(&p, &["orders", "nope"]).is_err());
    }

    #[test]
    fn metrics_of_one_table_and_time_column_share_one_scan() {
        let p = project();
        let closure = closure(&p, &["orders", "revenue", "shipped", "signups"]).unwrap();
        let scans = plan(&p, &closure, Grain::Week, Some(day(4)));
        assert_eq!(
            shape(&scans),
            [
                (
                    "app.orders".into(),
                    "ordered_at".into(),
                    Grain::Week,
                    Some(day(4)),
                    vec!["orders".into(), "revenue".into()]
                ),
                (
                    "app.orders".into(),
                    "shipped_at".into(),
                    Grain::Week,
                    Some(day(4)),
                    vec!["shipped".into()]
                ),
                (
                    "app.users".into(),
                    "created_at".into(),
                    Grain::Week,
                    Some(day(4)),
                    vec!["signups".into()]
                ),
            ]
        );
    }

    #[test]
    fn plain_measures_ride_along_with_a_distinct_count() {
        let p = project();
        let closure = closure(&p, &["orders", "buyers", "revenue", "repeat_buyers"]).unwrap();
        let scans = plan(&p, &closure, Grain::Month, None);
        assert_eq!(
            shape(&scans),
            [(
                "app.orders".into(),
                "ordered_at".into(),
                Grain::Month,
                None,
                vec![
                    "orders".into(),
                    "revenue".into(),
                    "buyers".into(),
                    "repeat_buyers".into()
                ]
            )]
        );
    }

    #[test]
    fn another_distinct_key_or_a_measure_that_does_not_split_reads_apart() {
        let p = project();
        let closure = closure(&p, &["buyers", "products", "basket"]).unwrap();
        let scans = plan(&p, &closure, Grain::Month, None);
        assert_eq!(
            shape(&scans),
            [
                orders_by_month(&["buyers"]),
                orders_by_month(&["products"]),
                orders_by_month(&["basket"])
            ]
        );
    }

    #[test]
    fn distinct_counts_by_bitmap_join_the_plain_scan_whatever_else_it_holds() {
        let p = project();
        let closure = closure(&p, &["buyers", "products", "basket", "orders"]).unwrap();
        // `user_id` is an integer key, `product_id` (say) text.
        let user_id =
            |table: &TableRef, key: &str| table.to_string() == "app.orders" && key == "user_id";
        let scans = plan_scans(&p, &closure, Grain::Month, None, &aggregate, &user_id).unwrap();
        // `basket` (an average) does not split, so nothing rides along with `products`.
        assert_eq!(
            shape(&scans),
            [
                orders_by_month(&["buyers", "basket", "orders"]),
                orders_by_month(&["products"])
            ]
        );
        let grouped: Vec<_> = scans.values().map(|s| s.grouped_by.as_deref()).collect();
        assert_eq!(grouped, [None, Some("product_id")]);
    }

    #[test]
    fn ratios_and_derived_metrics_scan_only_their_parents() {
        let p = project();
        let closure = closure(&p, &["aov", "per_signup"]).unwrap();
        let scans = plan(&p, &closure, Grain::Day, Some(day(10)));
        assert_eq!(
            shape(&scans),
            [
                (
                    "app.orders".into(),
                    "ordered_at".into(),
                    Grain::Day,
                    Some(day(10)),
                    vec!["revenue".into(), "orders".into()]
                ),
                (
                    "app.users".into(),
                    "created_at".into(),
                    Grain::Day,
                    Some(day(10)),
                    vec!["signups".into()]
                ),
            ]
        );
    }

    #[test]
    fn a_running_total_reads_its_parent_from_the_beginning() {
        let p = project();
        // The scan of `orders` for itself starts at the 10th; the running total needs every
        // earlier row too, so the fused scan is widened to the beginning.
        let closure = closure(&p, &["orders", "orders_to_date"]).unwrap();
        let scans = plan(&p, &closure, Grain::Week, Some(day(11)));
        assert_eq!(
            shape(&scans),
            [(
                "app.orders".into(),
                "ordered_at".into(),
                Grain::Week,
                None,
                vec!["orders".into()]
            )]
        );
    }

    #[test]
    fn a_trailing_window_reads_its_parent_by_day_from_a_window_before_the_first_period() {
        let p = project();
        let closure = closure(&p, &["orders", "orders_7d"]).unwrap();
        let scans = plan(&p, &closure, Grain::Week, Some(day(11)));
        // `orders` at the request's grain from the 11th; `orders_7d` needs the days of its
        // window: by day, from 11 - 7 = the 4th.
        assert_eq!(
            shape(&scans),
            [
                (
                    "app.orders".into(),
                    "ordered_at".into(),
                    Grain::Week,
                    Some(day(11)),
                    vec!["orders".into()]
                ),
                (
                    "app.orders".into(),
                    "ordered_at".into(),
                    Grain::Day,
                    Some(day(4)),
                    vec!["orders".into()]
                ),
            ]
        );
    }

    #[test]
    fn a_scan_reads_from_the_earliest_lower_bound_any_metric_needs() {
        let p = project();
        let orders = p.metric("orders").unwrap();
        let revenue = p.metric("revenue").unwrap();
        let (MetricKind::Simple(o), MetricKind::Simple(r)) = (&orders.kind, &revenue.kind) else {
            unreachable!("both are simple metrics")
        };
        let mut scans: Scans = IndexMap::new();
        add_to_scan(&mut scans, orders, o, Grain::Day, Some(day(10)), &no_bitmap);
        add_to_scan(&mut scans, revenue, r, Grain::Day, Some(day(3)), &no_bitmap);
        // Added twice, kept once.
        add_to_scan(&mut scans, orders, o, Grain::Day, Some(day(20)), &no_bitmap);
        assert_eq!(
            shape(&scans),
            [(
                "app.orders".into(),
                "ordered_at".into(),
                Grain::Day,
                Some(day(3)),
                vec!["orders".into(), "revenue".into()]
            )]
        );
        // An unbounded need makes the whole scan unbounded.
        add_to_scan(&mut scans, orders, o, Grain::Day, None, &no_bitmap);
        assert_eq!(shape(&scans)[0].3, None);
    }
}

//! Computing metrics: a request compiles into one scan per table and time column, then the
//! series are assembled on a time spine and ratio, derived and cumulative metrics are computed
//! from their parents' series.
//!
//! The result is a [`MetricTable`]: columns `period` (Date32, the local start of the period),
//! the requested dimensions (Utf8), then one column per requested metric (Int64 for integer
//! aggregates, Float64 otherwise), sorted by period and dimensions, nulls last.

use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Expr;
use indexmap::IndexMap;

use crate::project::error::{Error, Result};
use crate::project::model::{CumulativeOver, Grain, Metric, MetricKind};
use crate::project::periods::{next_period, period_start, spine};
use crate::query::assemble::{assemble, finish, merge_bounds, part_bounds, spine_batch};
use crate::query::engine::Engine;
use crate::query::plan::{PartContext, WindowMetric, closure, plan_scans};
use crate::query::request::{Action, DateRange, Field as RequestField, words};
use crate::query::scan::Part;
use crate::query::sql::{self};

pub use crate::query::table::{CacheUse, MetricRequest, MetricTable, Read, Scanned};

impl Engine {
    /// Computes the requested metrics.
    pub async fn compute(&self, request: &MetricRequest) -> Result<MetricTable> {
        let project = self.project();
        let grain = request.grain;
        let week_start = project.week_start;
        if request.metrics.is_empty() {
            return Err(Error::request_hint(
                "no metric to compute",
                words![
                    "name one or more metrics; ",
                    Action::ListMetrics,
                    " shows them"
                ],
            ));
        }
        let mut requested: Vec<&str> = Vec::new();
        for name in &request.metrics {
            project.metric(name)?;
            if !requested.contains(&name.as_str()) {
                requested.push(name);
            }
        }
        let bounds = self.bounds();
        bounds.check_list(RequestField::Metrics, request.metrics.len())?;
        bounds.check_list(RequestField::By, request.dimensions.len())?;
        for (field, date) in [
            (RequestField::From, request.from),
            (RequestField::To, request.to),
        ] {
            if let Some(date) = date {
                crate::query::bounds::check_date(field, date)?;
            }
        }
        if let DateRange {
            from: Some(from),
            to: Some(to),
        } = DateRange::of_fields(request.from, request.to)?
        {
            bounds.check_range(from, to, grain)?;
        }
        let closure = closure(project, &requested)?;
        for metric in &closure {
            self.validate_metric(metric).await?;
        }
        let dims = &request.dimensions;
        let where_expr = self.check_breakdown(&closure, request)?;

        let from_start = request.from.map(|d| period_start(d, grain, week_start));
        let to_end = request
            .to
            .map(|d| next_period(period_start(d, grain, week_start), grain));

        let bitmap_keys = self.bitmap_keys(&closure).await;
        let scans = plan_scans(
            project,
            &closure,
            grain,
            from_start,
            &|name| self.is_aggregate(name),
            &|table, key| bitmap_keys.contains(&(table.clone(), key.to_string())),
        )?;

        let mut assembly_config = SessionConfig::new().with_target_partitions(1);
        // Sized for the engine's memory pool (see `Engine::with_memory_limit`).
        assembly_config
            .options_mut()
            .execution
            .sort_spill_reservation_bytes = self
            .context()
            .copied_config()
            .options()
            .execution
            .sort_spill_reservation_bytes;
        let assembly =
            SessionContext::new_with_config_rt(assembly_config, self.context().runtime_env());
        let mut parts: Vec<Part> = Vec::new();
        // (metric, grain) -> the part holding its series.
        let mut series: IndexMap<(String, Grain), String> = IndexMap::new();
        let cache = self.cache();
        let mut uses = Vec::new();
        let ctx = PartContext {
            grain,
            dims,
            where_expr: where_expr.as_ref(),
            for_cache: false,
        };
        for scan in scans.values() {
            if let Some(cache) = &cache {
                let cached = self
                    .run_scan_cached(cache, &ctx, scan, to_end, parts.len())
                    .await?;
                for (part, used) in cached {
                    series.insert((used.metric.clone(), scan.grain), part.name.clone());
                    uses.push(used);
                    parts.push(part);
                }
                continue;
            }
            let part = self
                .run_scan(&ctx, scan, scan.lower, to_end, parts.len())
                .await?;
            for (metric, _) in &scan.metrics {
                series.insert((metric.name.clone(), scan.grain), part.name.clone());
            }
            parts.push(part);
        }
        for metric in &closure {
            if let MetricKind::Sql {
                sql,
                grain: sql_grain,
            } = &metric.kind
            {
                let part = self
                    .run_sql_metric(
                        &ctx,
                        metric,
                        (sql, *sql_grain),
                        (from_start, to_end),
                        parts.len(),
                    )
                    .await?;
                series.insert((metric.name.clone(), grain), part.name.clone());
                parts.push(part);
            }
            if let MetricKind::Retention(r) = &metric.kind {
                let range = (from_start, to_end);
                let part = match &cache {
                    Some(cache) => {
                        let (part, used) = self
                            .run_retention_cached(cache, metric, r, grain, range, parts.len())
                            .await?;
                        uses.push(used);
                        part
                    }
                    None => {
                        self.run_retention_metric(metric, r, grain, range, parts.len(), false)
                            .await?
                    }
                };
                series.insert((metric.name.clone(), grain), part.name.clone());
                parts.push(part);
            }
        }

        // The time spine: the requested range, or the periods the data covers.
        let cumulative_measures: Vec<WindowMetric> = closure
            .iter()
            .filter_map(|m| match &m.kind {
                MetricKind::Cumulative(c) => match &c.over {
                    CumulativeOver::Measure(measure) => Some(WindowMetric {
                        metric: m,
                        measure,
                        days: c.window_days,
                    }),
                    CumulativeOver::Metric(_) => None,
                },
                _ => None,
            })
            .collect();
        let periods = match (request.from, request.to) {
            (Some(from), Some(to)) => spine(from, to, grain, week_start),
            (from, to) => {
                let mut bounds = part_bounds(&parts);
                for w in &cumulative_measures {
                    let found = self.data_bounds(w.measure, where_expr.as_ref()).await?;
                    bounds = merge_bounds(bounds, found);
                }
                match bounds {
                    Some((first, last)) => {
                        let (first, last) = (from.unwrap_or(first), to.unwrap_or(last));
                        self.bounds().check_range(first, last, grain)?;
                        spine(first, last, grain, week_start)
                    }
                    None => Vec::new(),
                }
            }
        };

        for w in &cumulative_measures {
            if let (Some(cache), Some(days)) = (&cache, w.days) {
                let (part, used) = self
                    .run_window_cached(cache, &ctx, w, days, &periods, parts.len())
                    .await?;
                series.insert((w.metric.name.clone(), grain), part.name.clone());
                uses.push(used);
                parts.push(part);
                continue;
            }
            let part = self.run_window_scan(&ctx, w, &periods, parts.len()).await?;
            series.insert((w.metric.name.clone(), grain), part.name.clone());
            parts.push(part);
        }

        for part in &parts {
            let table = MemTable::try_new(part.schema.clone(), vec![part.batches.clone()])?;
            assembly.register_table(part.name.as_str(), Arc::new(table))?;
        }
        assembly.register_batch("spine", spine_batch(&periods, grain)?)?;

        let sql = assemble(&ctx, &closure, &requested, &parts, &series, &periods);
        tracing::debug!(%sql, "assembling series");
        let batches = assembly.sql(&sql).await?.collect().await?;
        let mut table = finish(grain, dims, &requested, &closure, &batches)?;
        table.scans = parts.into_iter().filter_map(|p| p.scanned).collect();
        table.cache = uses;
        Ok(table)
    }

    /// Checks the breakdown and the filter against the dimensions of every metric the request scans.
    pub(crate) fn check_breakdown(
        &self,
        closure: &[&Metric],
        request: &MetricRequest,
    ) -> Result<Option<Expr>> {
        let where_expr = match &request.filter {
            Some(filter) => Some(sql::parse_expr(filter).map_err(|e| {
                Error::request(format!(
                    "the filter `{filter}` is not an SQL predicate: {e}"
                ))
            })?),
            None => None,
        };
        let mut used: Vec<(String, RequestField)> = request
            .dimensions
            .iter()
            .map(|d| (d.clone(), RequestField::By))
            .collect();
        if let Some(expr) = &where_expr {
            let columns = sql::filter_columns(expr).map_err(|e| {
                Error::request(format!(
                    "the filter `{}`: {e}",
                    request.filter.as_deref().unwrap_or_default()
                ))
            })?;
            used.extend(columns.into_iter().map(|c| (c, RequestField::Filter)));
        }
        for (i, d) in request.dimensions.iter().enumerate() {
            if request.dimensions[..i].contains(d) {
                return Err(Error::request(format!(
                    "dimension `{d}` is asked for twice"
                )));
            }
            if d == "period" || closure.iter().any(|m| &m.name == d) {
                return Err(Error::request(format!(
                    "dimension `{d}` has the name of an output column; rename it in the source"
                )));
            }
        }
        for metric in closure {
            if let (MetricKind::Retention(_), Some((dim, field))) = (&metric.kind, used.first()) {
                return Err(Error::request_hint(
                    words![
                        *field,
                        format!(
                            " uses `{dim}`, but metric `{}` is a retention metric: one rate per cohort period, without dimensions",
                            metric.name
                        )
                    ],
                    "segment a retention metric with `cohort_filter` or `activity_filter` in its definition",
                ));
            }
            let scans_rows = matches!(
                metric.kind,
                MetricKind::Simple(_)
                    | MetricKind::Sql { .. }
                    | MetricKind::Cumulative(crate::project::model::Cumulative {
                        over: CumulativeOver::Measure(_),
                        ..
                    })
            );
            if !scans_rows {
                continue;
            }
            for (dim, field) in &used {
                if !metric.dimensions.contains(dim) {
                    let known = if metric.dimensions.is_empty() {
                        "it has no dimensions".to_string()
                    } else {
                        format!("its dimensions are: {}", metric.dimensions.join(", "))
                    };
                    let hint = crate::project::error::did_you_mean(
                        dim,
                        metric.dimensions.iter().map(String::as_str),
                    )
                    .unwrap_or_else(|| {
                        format!(
                            "list `{dim}` under `dimensions:` of `{}` to allow it",
                            metric.name
                        )
                    });
                    return Err(Error::request_hint(
                        words![
                            *field,
                            format!(
                                " uses `{dim}`, which is not a dimension of metric `{}` ({known})",
                                metric.name
                            )
                        ],
                        hint,
                    ));
                }
            }
        }
        Ok(where_expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config;

    const ORDERS: &str = "\
order_id,ordered_at,status,amount,country
1,2026-05-04T10:00:00,paid,10.0,FR
2,2026-05-04T11:00:00,paid,20.0,DE
3,2026-05-05T09:00:00,refunded,5.0,FR
4,2026-05-18T09:00:00,paid,7.5,FR
";

    const PROJECT: &str = "\
sources:
  app: { connector: files, path: data }
metrics:
  orders: { table: app.orders, time: ordered_at, measure: count(*), filter: \"status = 'paid'\", dimensions: [country] }
  revenue: { table: app.orders, time: ordered_at, measure: sum(amount), filter: \"status = 'paid'\", dimensions: [country] }
  refunds: { table: app.orders, time: ordered_at, measure: count(*), filter: \"status = 'refunded'\", dimensions: [country] }
  aov: { ratio: { numerator: revenue, denominator: orders } }
  orders_to_date: { cumulative: { metric: orders } }
  daily_orders_sql:
    sql: SELECT CAST(ordered_at AS DATE) AS period, count(*) AS value FROM app.orders WHERE status = 'paid' GROUP BY 1
    grain: day
";

    async fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("data")).unwrap();
        fs_err::write(dir.path().join("data/orders.csv"), ORDERS).unwrap();
        let path = dir.path().join("lodestar.yaml");
        fs_err::write(&path, PROJECT).unwrap();
        let project = config::load(&path).unwrap();
        let engine = Engine::open(project).await.unwrap();
        (dir, engine)
    }

    #[tokio::test]
    async fn metrics_of_one_table_share_one_scan() {
        let (_dir, engine) = engine().await;
        let request = MetricRequest::new(["aov", "refunds", "orders_to_date"], Grain::Week);
        let table = engine.compute(&request).await.unwrap();
        assert_eq!(table.scans.len(), 1, "{:#?}", table.scans);
        assert_eq!(table.scans[0].table, "app.orders");
        let mut scanned = table.scans[0].metrics.clone();
        scanned.sort();
        assert_eq!(scanned, ["orders", "refunds", "revenue"]);
        // Weeks of 05-04 (2 paid, 30.0; 1 refund), 05-11 (nothing), 05-18 (1 paid, 7.5).
        assert_eq!(table.values("aov").unwrap(), [Some(15.0), None, Some(7.5)]);
        assert_eq!(
            table.values("refunds").unwrap(),
            [Some(1.0), Some(0.0), Some(0.0)]
        );
        assert_eq!(
            table.values("orders_to_date").unwrap(),
            [Some(2.0), Some(2.0), Some(3.0)]
        );
    }

    #[tokio::test]
    async fn sql_metrics_roll_up_to_coarser_grains() {
        let (_dir, engine) = engine().await;
        let table = engine
            .compute(&MetricRequest::new(
                ["daily_orders_sql", "orders"],
                Grain::Month,
            ))
            .await
            .unwrap();
        assert_eq!(table.values("daily_orders_sql"), table.values("orders"));
        assert_eq!(table.values("orders").unwrap(), [Some(3.0)]);
    }

    #[tokio::test]
    async fn filters_may_only_use_dimensions() {
        let (_dir, engine) = engine().await;
        let mut request = MetricRequest::new(["orders"], Grain::Day);
        request.filter = Some("status = 'paid'".into());
        let message = engine.compute(&request).await.unwrap_err().to_string();
        assert!(
            message.contains("`status`, which is not a dimension of metric `orders`"),
            "{message}"
        );

        request.filter = Some("country = 'FR'; DROP TABLE orders".into());
        let message = engine.compute(&request).await.unwrap_err().to_string();
        assert!(message.contains("is not an SQL predicate"), "{message}");

        request.filter = Some("country IN (SELECT country FROM app.orders)".into());
        let message = engine.compute(&request).await.unwrap_err().to_string();
        assert!(message.contains("subqueries are not allowed"), "{message}");
    }

    #[tokio::test]
    async fn breakdowns_need_every_base_metric_to_have_the_dimension() {
        let (_dir, engine) = engine().await;
        let mut request = MetricRequest::new(["aov", "daily_orders_sql"], Grain::Day);
        request.dimensions = vec!["country".into()];
        let message = engine.compute(&request).await.unwrap_err().to_string();
        assert!(
            message.contains("not a dimension of metric `daily_orders_sql`"),
            "{message}"
        );
    }
}

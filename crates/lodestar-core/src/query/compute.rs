//! Computing metrics: a request compiles into one scan per table and time column, then the
//! series are assembled on a time spine and ratio, derived and cumulative metrics are computed
//! from their parents' series.
//!
//! The result is a [`MetricTable`]: columns `period` (Date32, the local start of the period),
//! the requested dimensions (Utf8), then one column per requested metric (Int64 for integer
//! aggregates, Float64 otherwise), sorted by period and dimensions, nulls last.

use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array, Float64Array, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{Expr, visit_expressions_mut};
use indexmap::IndexMap;

use crate::cache::{self, Cache};
use crate::connect::TimePartition;
use crate::project::error::{Error, Result};
use crate::project::model::{
    CumulativeOver, Grain, Measure, Metric, MetricKind, Project, RetentionMetric, TableRef,
    quote_ident,
};
use crate::project::periods::{next_period, period_start, spine};
use crate::query::engine::Engine;
use crate::query::request::{Action, DateRange, Field as RequestField, words};
use crate::query::sql::{self, TimeKind, date_literal, local_time, period_of, timestamp_literal};

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRequest {
    pub metrics: Vec<String>,
    pub grain: Grain,
    /// First day of interest, inclusive; widened to the start of its period.
    pub from: Option<NaiveDate>,
    /// Last day of interest, inclusive; widened to the end of its period.
    pub to: Option<NaiveDate>,
    /// Dimensions to break the metrics down by.
    pub dimensions: Vec<String>,
    /// An SQL predicate over dimensions, applied to rows before they are aggregated.
    pub filter: Option<String>,
}

impl MetricRequest {
    pub fn new(metrics: impl IntoIterator<Item = impl Into<String>>, grain: Grain) -> Self {
        MetricRequest {
            metrics: metrics.into_iter().map(Into::into).collect(),
            grain,
            from: None,
            to: None,
            dimensions: Vec::new(),
            filter: None,
        }
    }
}

/// Computed series: one row per period and dimension combination.
#[derive(Debug, Clone)]
pub struct MetricTable {
    pub grain: Grain,
    pub dimensions: Vec<String>,
    pub metrics: Vec<String>,
    /// `period`, dimensions, metrics.
    pub batch: RecordBatch,
    /// The queries that read the sources, in the order they ran.
    pub scans: Vec<Scanned>,
    /// With a `cache:` configured: per scanned metric, how many periods came from the cache
    /// and how many were computed from the data.
    pub cache: Vec<CacheUse>,
}

/// How the cache served one metric's series in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUse {
    pub metric: String,
    /// Periods whose values were read from the cache.
    pub reused: usize,
    /// Periods computed from the data (the open periods and the look-back window).
    pub recomputed: usize,
}

/// A query a request ran against the sources: which table, for which metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// `source.table`, or `sql` for a sql metric's own query.
    pub table: String,
    pub metrics: Vec<String>,
    pub sql: String,
}

impl MetricTable {
    pub fn schema(&self) -> SchemaRef {
        self.batch.schema()
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The period of each row.
    pub fn periods(&self) -> Vec<NaiveDate> {
        let column = self.batch.column(0).as_primitive::<Date32Type>();
        column
            .iter()
            .map(|d| from_days(d.unwrap_or_default()))
            .collect()
    }

    /// A metric's values as numbers (`None` for null), row by row.
    pub fn values(&self, metric: &str) -> Option<Vec<Option<f64>>> {
        let column = self.batch.column_by_name(metric)?;
        let floats = cast(column, &DataType::Float64).ok()?;
        Some(
            floats
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .iter()
                .collect(),
        )
    }
}

/// One scan of a table: several metrics' aggregates, at one grain, over one time range.
#[derive(Debug)]
struct Scan<'p> {
    table: TableRef,
    time: String,
    grain: Grain,
    /// `None`: from the beginning of the data.
    lower: Option<NaiveDate>,
    metrics: Vec<(&'p Metric, &'p Measure)>,
}

/// Computed rows registered in the assembly context: `__period`, dimensions, metric columns.
#[derive(Debug)]
struct Part {
    name: String,
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
    /// `None` for a part served from the cache without a query of its own.
    scanned: Option<Scanned>,
}

/// A series read through the result cache: what [`Engine::through_cache`] needs besides the
/// computation itself.
struct CachedSeries<'a> {
    cache: &'a Cache,
    /// The entry's key: a hash of everything the values depend on.
    key: String,
    metric: &'a Metric,
    /// The request's dimensions: the entry's columns are `__period`, these, the metric.
    dims: &'a [String],
    /// The request's periods, `[from, to)`; `None`: unbounded.
    range: (Option<NaiveDate>, Option<NaiveDate>),
    /// The first period that may still change, given the data's last day.
    cut_of: &'a (dyn Fn(NaiveDate) -> NaiveDate + Sync),
}

/// The rows a series through the cache computed from the data.
struct FreshRows {
    /// `__period`, dimensions, the metric.
    rows: RecordBatch,
    /// The last local day of the data read.
    last: Option<NaiveDate>,
    scanned: Option<Scanned>,
    /// How many periods were computed.
    recomputed: usize,
}

impl FreshRows {
    /// Splits the `__last` column (the last local day per group) off a query's rows.
    fn split_last(rows: &RecordBatch, scanned: Option<Scanned>, recomputed: usize) -> Result<Self> {
        let at = rows.schema().index_of(LAST)?;
        let last = datafusion::arrow::compute::max(rows.column(at).as_primitive::<Date32Type>())
            .map(from_days);
        let columns: Vec<usize> = (0..at).collect();
        Ok(FreshRows {
            rows: rows.project(&columns)?,
            last,
            scanned,
            recomputed,
        })
    }
}

const PERIOD: &str = "__period";
const END: &str = "__end";
/// A trailing window's first instant, beside its period in the spine.
const START: &str = "__start";
/// With the cache: the last local day of the rows a scan read.
const LAST: &str = "__last";
/// The counted values of a distinct count, grouped before they are counted.
const VALUE: &str = "__value";
/// The least span of a distinct count's chunk over a time-partitioned table, in days: two
/// weeks at day or week grain, one period at coarser grains (see `Engine::distinct_chunks`).
const CHUNK_DAYS: i64 = 14;

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

        // Scans of simple metrics, fused per table, time column and grain (distinct counts
        // apart).
        let mut scans: Scans = IndexMap::new();
        for metric in &closure {
            match &metric.kind {
                MetricKind::Simple(measure) => {
                    add_to_scan(&mut scans, metric, measure, grain, from_start)
                }
                MetricKind::Cumulative(c) => {
                    if let CumulativeOver::Metric(parent) = &c.over {
                        let parent = project.metric(parent)?;
                        let MetricKind::Simple(measure) = &parent.kind else {
                            unreachable!("validated: cumulative metrics accumulate simple metrics")
                        };
                        match c.window_days {
                            None => add_to_scan(&mut scans, parent, measure, grain, None),
                            Some(days) => add_to_scan(
                                &mut scans,
                                parent,
                                measure,
                                Grain::Day,
                                from_start.map(|d| d - Days::new(u64::from(days))),
                            ),
                        }
                    }
                }
                _ => {}
            }
        }

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
        for scan in scans.values() {
            if let Some(cache) = &cache {
                let cached = self
                    .run_scan_cached(cache, scan, dims, where_expr.as_ref(), to_end, parts.len())
                    .await?;
                for (part, used) in cached {
                    series.insert((used.metric.clone(), scan.grain), part.name.clone());
                    uses.push(used);
                    parts.push(part);
                }
                continue;
            }
            let part = self
                .run_scan(
                    scan,
                    scan.lower,
                    dims,
                    where_expr.as_ref(),
                    to_end,
                    parts.len(),
                    false,
                )
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
                        metric,
                        sql,
                        *sql_grain,
                        request,
                        where_expr.as_ref(),
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
        let cumulative_measures: Vec<(&Metric, &Measure, Option<u32>)> = closure
            .iter()
            .filter_map(|m| match &m.kind {
                MetricKind::Cumulative(c) => match &c.over {
                    CumulativeOver::Measure(measure) => Some((*m, measure, c.window_days)),
                    CumulativeOver::Metric(_) => None,
                },
                _ => None,
            })
            .collect();
        let periods = match (request.from, request.to) {
            (Some(from), Some(to)) => spine(from, to, grain, week_start),
            (from, to) => {
                let mut bounds = part_bounds(&parts);
                for (_, measure, _) in &cumulative_measures {
                    let found = self.data_bounds(measure, where_expr.as_ref()).await?;
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

        for (metric, measure, window) in &cumulative_measures {
            if let (Some(cache), Some(days)) = (&cache, window) {
                let (part, used) = self
                    .run_window_cached(
                        cache,
                        metric,
                        measure,
                        *days,
                        &periods,
                        grain,
                        dims,
                        where_expr.as_ref(),
                        parts.len(),
                    )
                    .await?;
                series.insert((metric.name.clone(), grain), part.name.clone());
                uses.push(used);
                parts.push(part);
                continue;
            }
            let part = self
                .run_window_scan(
                    metric,
                    measure,
                    *window,
                    &periods,
                    grain,
                    dims,
                    where_expr.as_ref(),
                    parts.len(),
                    false,
                )
                .await?;
            series.insert((metric.name.clone(), grain), part.name.clone());
            parts.push(part);
        }

        for part in &parts {
            let table = MemTable::try_new(part.schema.clone(), vec![part.batches.clone()])?;
            assembly.register_table(part.name.as_str(), Arc::new(table))?;
        }
        assembly.register_batch("spine", spine_batch(&periods, grain)?)?;

        let sql = assemble(&closure, &requested, dims, grain, &parts, &series, &periods);
        tracing::debug!(%sql, "assembling series");
        let batches = assembly.sql(&sql).await?.collect().await?;
        let mut table = finish(grain, dims, &requested, &closure, &batches)?;
        table.scans = parts.into_iter().filter_map(|p| p.scanned).collect();
        table.cache = uses;
        Ok(table)
    }

    /// Checks the breakdown and the filter against the dimensions of every metric the request scans.
    fn check_breakdown(
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

    /// The time column of a table as local wall-clock time.
    async fn local_time_of(&self, table: &TableRef, time: &str) -> Result<(String, TimeKind)> {
        let schema = self.table_schema(table).await.map_err(Error::request)?;
        let field = schema
            .field_with_name(time)
            .map_err(|e| Error::DataFusion(Box::new(e.into())))?;
        let kind = TimeKind::of(field.data_type()).ok_or_else(|| {
            Error::request(format!(
                "time column `{time}` of `{table}` is not a timestamp, date or text"
            ))
        })?;
        Ok((local_time(time, kind, self.project().timezone), kind))
    }

    /// One scan of a table from `lower` (inclusive) to `upper` (exclusive). With `for_cache`,
    /// it also returns each group's last local day (`__last`) and, for metrics whose filter
    /// the scan does not apply to every row, how many rows matched it (`__n<i>`), so that each
    /// metric's own rows can be kept apart from the rows only its scan-mates have.
    #[allow(clippy::too_many_arguments)] // two call sites; the arguments are the scan's parts
    async fn run_scan(
        &self,
        scan: &Scan<'_>,
        lower: Option<NaiveDate>,
        dims: &[String],
        where_expr: Option<&Expr>,
        upper: Option<NaiveDate>,
        index: usize,
        for_cache: bool,
    ) -> Result<Part> {
        let (local, kind) = self.local_time_of(&scan.table, &scan.time).await?;
        let period = period_of(&local, scan.grain, self.project().week_start);
        let filters: Vec<Option<Expr>> = scan
            .metrics
            .iter()
            .map(|(_, m)| m.filter.as_deref().map(parse_fragment).transpose())
            .collect::<Result<_>>()?;
        let shared = filters.iter().all(|f| f.is_some() && *f == filters[0]);
        // The conditions besides the time range.
        let mut conditions: Vec<String> =
            where_expr.map(|e| format!("({e})")).into_iter().collect();
        if shared {
            conditions.push(format!("({})", filters[0].as_ref().expect("shared filter")));
        } else if filters.iter().all(Option::is_some) {
            // Rows no metric wants are dropped early, so sources can prune them.
            let any = filters
                .iter()
                .flatten()
                .cloned()
                .map(|f| Expr::Nested(Box::new(f)))
                .reduce(sql::or)
                .expect("at least one metric");
            conditions.push(format!("({any})"));
        }
        let mut select = vec![format!("{period} AS {}", quote_ident(PERIOD))];
        let mut group_by = vec![period];
        for dim in dims {
            let expr = format!("CAST({} AS VARCHAR)", quote_ident(dim));
            select.push(format!("{expr} AS {}", quote_ident(dim)));
            group_by.push(expr);
        }
        let metrics = scan.metrics.iter().map(|(m, _)| m.name.clone()).collect();
        if let [(metric, measure)] = scan.metrics.as_slice() {
            let parsed = parse_fragment(&measure.measure)?;
            if let Some(arg) = sql::distinct_count_arg(&parsed) {
                // The values grouped per period (a grouping can spill), then counted.
                select.push(format!("{arg} AS {}", quote_ident(VALUE)));
                group_by.push(arg.to_string());
                let mut outer: Vec<String> = [PERIOD]
                    .into_iter()
                    .chain(dims.iter().map(String::as_str))
                    .map(quote_ident)
                    .collect();
                let keys = outer.join(", ");
                outer.push(format!(
                    "count({}) AS {}",
                    quote_ident(VALUE),
                    quote_ident(&metric.name)
                ));
                if for_cache {
                    select.push(format!("max({local}) AS {}", quote_ident(LAST)));
                    outer.push(format!("CAST(max({0}) AS DATE) AS {0}", quote_ident(LAST)));
                }
                let chunks = self.distinct_chunks(scan, kind, lower, upper).await?;
                let queries = chunks
                    .into_iter()
                    .map(|(lower, upper)| {
                        let mut range = time_range(&local, lower, upper);
                        range.extend(conditions.iter().cloned());
                        format!(
                            "SELECT {} FROM (SELECT {} FROM {}{} GROUP BY {}) AS v GROUP BY {keys}",
                            outer.join(", "),
                            select.join(", "),
                            scan.table.sql(),
                            where_clause(&range),
                            group_by.join(", ")
                        )
                    })
                    .collect();
                let part = self
                    .collect_chunks(queries, index, scan.table.to_string(), metrics)
                    .await;
                return bad_times(part, kind, metric, &scan.time);
            }
        }
        for ((metric, measure), filter) in scan.metrics.iter().zip(&filters) {
            let parsed = parse_fragment(&measure.measure)?;
            let expr = match filter {
                Some(f) if !shared => sql::filtered_measure(&parsed, f, &|n| self.is_aggregate(n)),
                _ => parsed,
            };
            select.push(format!("{expr} AS {}", quote_ident(&metric.name)));
        }
        if for_cache {
            select.push(format!(
                "CAST(max({local}) AS DATE) AS {}",
                quote_ident(LAST)
            ));
            for (i, filter) in filters.iter().enumerate() {
                if let Some(f) = filter.as_ref().filter(|_| !shared) {
                    select.push(format!(
                        "count(*) FILTER (WHERE {f}) AS {}",
                        quote_ident(&matched_column(i))
                    ));
                }
            }
        }
        let mut range = time_range(&local, lower, upper);
        range.extend(conditions);
        let sql = format!(
            "SELECT {} FROM {}{} GROUP BY {}",
            select.join(", "),
            scan.table.sql(),
            where_clause(&range),
            group_by.join(", ")
        );
        let part = self
            .collect_part(sql, index, scan.table.to_string(), metrics)
            .await;
        bad_times(part, kind, scan.metrics[0].0, &scan.time)
    }

    /// A scan through the cache: each metric's closed periods come from its cache entry, and
    /// the table is read only from the first period that may still change. Returns one part
    /// per metric (cached and fresh rows of one metric), and writes the entries back with the
    /// periods that have closed since.
    async fn run_scan_cached(
        &self,
        cache: &Cache,
        scan: &Scan<'_>,
        dims: &[String],
        where_expr: Option<&Expr>,
        upper: Option<NaiveDate>,
        index: usize,
    ) -> Result<Vec<(Part, CacheUse)>> {
        let project = self.project();
        let week_start = project.week_start;
        let (local, _) = self.local_time_of(&scan.table, &scan.time).await?;
        let period = period_of(&local, scan.grain, week_start);
        let source = source_text(project, &scan.table);
        let table_sql = scan.table.sql();
        let where_text = where_expr.map(ToString::to_string).unwrap_or_default();
        let dims_text = dims.join("\u{1f}");
        let keys: Vec<String> = scan
            .metrics
            .iter()
            .map(|(metric, measure)| {
                cache::key(&[
                    "scan",
                    &metric.name,
                    &table_sql,
                    &local,
                    &period,
                    &measure.measure,
                    measure.filter.as_deref().unwrap_or(""),
                    &source,
                    &dims_text,
                    &where_text,
                ])
            })
            .collect();
        let expected: Vec<String> = std::iter::once(PERIOD.to_string())
            .chain(dims.iter().cloned())
            .collect();
        let lo = scan.lower;
        let entries: Vec<Option<cache::Entry>> = keys
            .iter()
            .zip(&scan.metrics)
            .map(|(key, (metric, _))| {
                let entry = cache.load(key, &metric.name)?;
                entry_fits(&entry, &expected, &metric.name).then_some(entry)
            })
            .collect();
        // An entry serves this request if it starts no later than the request does.
        let usable = |e: &cache::Entry| match (e.header.from, lo) {
            (None, _) => true,
            (Some(from), Some(lo)) => from <= lo,
            (Some(_), None) => false,
        };
        let merge = entries.iter().all(|e| e.as_ref().is_some_and(usable));
        // Periods before `cut` come from the cache (with today's look-back, which may be
        // longer than when an entry was written).
        let cut = merge
            .then(|| {
                entries
                    .iter()
                    .flatten()
                    .map(|e| {
                        e.header
                            .cut
                            .min(cache.cut(e.header.last_day, scan.grain, week_start))
                    })
                    .min()
            })
            .flatten();
        let fresh_lower = match (cut, lo) {
            (Some(cut), Some(lo)) => Some(cut.max(lo)),
            (Some(cut), None) => Some(cut),
            (None, lo) => lo,
        };
        let nothing_to_read = matches!((fresh_lower, upper), (Some(l), Some(u)) if l >= u);
        let fresh = if nothing_to_read {
            None
        } else {
            let part = self
                .run_scan(scan, fresh_lower, dims, where_expr, upper, index, true)
                .await?;
            let batch = concat_batches(&part.schema, &part.batches)?;
            Some((batch, part.scanned))
        };
        let fresh_last = fresh.as_ref().and_then(|(batch, _)| {
            let column = batch.column_by_name(LAST)?;
            let days = column.as_primitive::<Date32Type>();
            datafusion::arrow::compute::max(days).map(from_days)
        });
        let last_day = if merge {
            entries
                .iter()
                .flatten()
                .map(|e| e.header.last_day)
                .chain(fresh_last)
                .max()
        } else {
            fresh_last
        };
        let new_cut = last_day.map(|last| {
            let cut = cache.cut(last, scan.grain, week_start);
            upper.map_or(cut, |u| cut.min(u))
        });

        let mut out = Vec::new();
        let mut scanned = fresh.as_ref().and_then(|(_, s)| s.clone());
        for (i, ((metric, _), (key, entry))) in scan
            .metrics
            .iter()
            .zip(keys.iter().zip(&entries))
            .enumerate()
        {
            // This metric's fresh rows: those its own filter matched.
            let fresh_rows = match &fresh {
                Some((batch, _)) => {
                    let batch = match batch.column_by_name(&matched_column(i)) {
                        Some(matched) => {
                            let mask = datafusion::arrow::compute::kernels::cmp::gt(
                                matched,
                                &datafusion::arrow::array::Int64Array::new_scalar(0),
                            )?;
                            datafusion::arrow::compute::filter_record_batch(batch, &mask)?
                        }
                        None => batch.clone(),
                    };
                    let mut columns: Vec<usize> = (0..=dims.len()).collect();
                    columns.push(batch.schema().index_of(&metric.name)?);
                    Some(batch.project(&columns)?)
                }
                None => None,
            };
            let cached_rows = match (entry, cut) {
                (Some(entry), Some(cut)) if merge => {
                    Some(cache::filter_periods(&entry.batch, |p| {
                        p < cut && lo.is_none_or(|lo| p >= lo) && upper.is_none_or(|u| p < u)
                    })?)
                }
                _ => None,
            };
            let schema = match (&fresh_rows, &cached_rows) {
                (Some(rows), _) | (None, Some(rows)) => rows.schema(),
                (None, None) => unreachable!("a scan is skipped only when the cache covers it"),
            };
            let cached_rows = conform_cached(cached_rows, &schema, &metric.name)?;
            let used = CacheUse {
                metric: metric.name.clone(),
                reused: cached_rows
                    .as_ref()
                    .map_or(0, |r| cache::period_count(std::slice::from_ref(r))),
                recomputed: fresh_rows
                    .as_ref()
                    .map_or(0, |r| cache::period_count(std::slice::from_ref(r))),
            };
            tracing::debug!(
                metric = %metric.name,
                reused = used.reused,
                recomputed = used.recomputed,
                from = ?fresh_lower,
                "cache: periods reused and recomputed"
            );

            // The entry to write: the periods closed by now, when that is more than before.
            if let (Some(new_cut), Some(last_day), Some(fresh_rows)) =
                (new_cut, last_day, &fresh_rows)
            {
                let header_and_rows = match (entry, cut) {
                    (Some(entry), Some(cut)) if merge => {
                        let contiguous = lo.is_none_or(|lo| lo <= cut);
                        (contiguous && new_cut > entry.header.cut).then(|| {
                            let old = cache::filter_periods(&entry.batch, |p| p < cut)
                                .map_err(Error::from)
                                .and_then(|b| cache::conform(&b, &schema).map_err(Error::request));
                            let new = cache::filter_periods(fresh_rows, |p| p < new_cut);
                            (entry.header.from, old, new)
                        })
                    }
                    // Keep a usable entry of a metric whose scan-mates had none.
                    (Some(entry), _) if usable(entry) => None,
                    _ => lo.is_none_or(|lo| new_cut > lo).then(|| {
                        let none = Ok(RecordBatch::new_empty(schema.clone()));
                        let new = cache::filter_periods(fresh_rows, |p| p < new_cut);
                        (lo, none, new)
                    }),
                };
                if let Some((from, Ok(old), Ok(new))) = header_and_rows {
                    let rows = concat_batches(&schema, [&old, &new])?;
                    let header = cache::Header::new(key, &metric.name, from, new_cut, last_day);
                    cache.store(key, &header, &rows);
                }
            }

            let rows: Vec<RecordBatch> = cached_rows.into_iter().chain(fresh_rows).collect();
            out.push((
                Part {
                    name: format!("p{}", index + out.len()),
                    batches: rows,
                    schema,
                    // The one query, on the first metric's part.
                    scanned: scanned.take(),
                },
                used,
            ));
        }
        Ok(out)
    }

    /// A trailing-window metric through the cache: a period's value depends only on the rows
    /// of its window, so closed periods come from the cache and only the others are computed,
    /// reading the data from the first of them minus the window.
    #[allow(clippy::too_many_arguments)] // one call site; the arguments are the request's parts
    async fn run_window_cached(
        &self,
        cache: &Cache,
        metric: &Metric,
        measure: &Measure,
        window: u32,
        periods: &[NaiveDate],
        grain: Grain,
        dims: &[String],
        where_expr: Option<&Expr>,
        index: usize,
    ) -> Result<(Part, CacheUse)> {
        let project = self.project();
        let week_start = project.week_start;
        let (local, _) = self.local_time_of(&measure.table, &measure.time).await?;
        let key = cache::key(&[
            "window",
            &metric.name,
            &measure.table.sql(),
            &local,
            &period_of(&local, grain, week_start),
            &measure.measure,
            measure.filter.as_deref().unwrap_or(""),
            &window.to_string(),
            &source_text(project, &measure.table),
            &dims.join("\u{1f}"),
            &where_expr.map(ToString::to_string).unwrap_or_default(),
        ]);
        let (lo, hi) = match (periods.first(), periods.last()) {
            (Some(first), Some(last)) => (Some(*first), Some(next_period(*last, grain))),
            _ => (None, None),
        };
        let series = CachedSeries {
            cache,
            key,
            metric,
            dims,
            range: (lo, hi),
            cut_of: &|last_day: NaiveDate| cache.cut(last_day, grain, week_start),
        };
        self.through_cache(series, index, |cut| async move {
            let recompute: Vec<NaiveDate> = periods
                .iter()
                .filter(|p| cut.is_none_or(|cut| **p >= cut))
                .copied()
                .collect();
            if recompute.is_empty() && cut.is_some() {
                return Ok(None);
            }
            let part = self
                .run_window_scan(
                    metric,
                    measure,
                    Some(window),
                    &recompute,
                    grain,
                    dims,
                    where_expr,
                    index,
                    true,
                )
                .await?;
            let rows = concat_batches(&part.schema, &part.batches)?;
            Ok(Some(FreshRows::split_last(
                &rows,
                part.scanned,
                recompute.len(),
            )?))
        })
        .await
    }

    /// A retention metric through the cache: a cohort period's rate is final once its last
    /// member's window has ended more than the look-back before the data's last day, so those
    /// come from the cache and only later cohorts are computed, reading activity from the first
    /// of them plus `after`.
    async fn run_retention_cached(
        &self,
        cache: &Cache,
        metric: &Metric,
        r: &RetentionMetric,
        grain: Grain,
        range: (Option<NaiveDate>, Option<NaiveDate>),
        index: usize,
    ) -> Result<(Part, CacheUse)> {
        let project = self.project();
        let week_start = project.week_start;
        let (cohort_local, _) = self.local_time_of(&r.cohort, &r.cohort_time).await?;
        let (activity_local, _) = self.local_time_of(&r.activity, &r.activity_time).await?;
        let key = cache::key(&[
            "retention",
            &metric.name,
            &r.cohort.sql(),
            &cohort_local,
            &period_of(&cohort_local, grain, week_start),
            &r.activity.sql(),
            &activity_local,
            &r.entity,
            r.cohort_filter.as_deref().unwrap_or(""),
            r.activity_filter.as_deref().unwrap_or(""),
            &r.after_days.to_string(),
            &r.window_days.to_string(),
            &source_text(project, &r.cohort),
            &source_text(project, &r.activity),
        ]);
        let reach = Days::new(u64::from(r.after_days + r.window_days));
        let series = CachedSeries {
            cache,
            key,
            metric,
            dims: &[],
            range,
            cut_of: &|last_day: NaiveDate| cache.cut(last_day - reach, grain, week_start),
        };
        self.through_cache(series, index, |cut| async move {
            let lower = match (range.0, cut) {
                (Some(lower), Some(cut)) => Some(lower.max(cut)),
                (lower, cut) => lower.or(cut),
            };
            if let (Some(lower), Some(upper)) = (lower, range.1)
                && lower >= upper
                && cut.is_some()
            {
                return Ok(None);
            }
            let part = self
                .run_retention_metric(metric, r, grain, (lower, range.1), index, true)
                .await?;
            let rows = concat_batches(&part.schema, &part.batches)?;
            let recomputed = rows.num_rows();
            Ok(Some(FreshRows::split_last(
                &rows,
                part.scanned,
                recomputed,
            )?))
        })
        .await
    }

    /// A series through the cache: the periods before the entry's cut come from the cache, the
    /// others from `compute` (given that cut, `None` without an entry; it returns `None` when
    /// nothing is left to compute), and the entry is written back grown by the periods that
    /// have closed since.
    async fn through_cache<F, Fut>(
        &self,
        series: CachedSeries<'_>,
        index: usize,
        compute: F,
    ) -> Result<(Part, CacheUse)>
    where
        F: FnOnce(Option<NaiveDate>) -> Fut,
        Fut: std::future::Future<Output = Result<Option<FreshRows>>>,
    {
        let CachedSeries {
            cache,
            key,
            metric,
            dims,
            range: (lo, hi),
            cut_of,
        } = series;
        let expected: Vec<String> = std::iter::once(PERIOD.to_string())
            .chain(dims.iter().cloned())
            .collect();
        let entry = cache
            .load(&key, &metric.name)
            .filter(|e| entry_fits(e, &expected, &metric.name))
            .filter(|e| match (e.header.from, lo) {
                (None, _) => true,
                (Some(from), Some(lo)) => from <= lo,
                (Some(_), None) => false,
            });
        let cut = entry
            .as_ref()
            .map(|e| e.header.cut.min(cut_of(e.header.last_day)));
        let fresh = compute(cut).await?;
        let cached_rows = match (&entry, cut) {
            (Some(entry), Some(cut)) => Some(cache::filter_periods(&entry.batch, |p| {
                p < cut && lo.is_none_or(|lo| p >= lo) && hi.is_none_or(|hi| p < hi)
            })?),
            _ => None,
        };
        let schema = match (&fresh, &cached_rows) {
            (Some(fresh), _) => fresh.rows.schema(),
            (None, Some(rows)) => rows.schema(),
            (None, None) => unreachable!("a series is computed unless the cache covers it"),
        };
        let cached_rows = conform_cached(cached_rows, &schema, &metric.name)?;
        let used = CacheUse {
            metric: metric.name.clone(),
            reused: cached_rows
                .as_ref()
                .map_or(0, |r| cache::period_count(std::slice::from_ref(r))),
            recomputed: fresh.as_ref().map_or(0, |f| f.recomputed),
        };
        tracing::debug!(
            metric = %metric.name,
            reused = used.reused,
            recomputed = used.recomputed,
            "cache: periods reused and recomputed"
        );
        let last_day = entry
            .as_ref()
            .map(|e| e.header.last_day)
            .max(fresh.as_ref().and_then(|f| f.last));
        let (fresh_rows, scanned) = match fresh {
            Some(fresh) => (Some(fresh.rows), fresh.scanned),
            None => (None, None),
        };
        if let (Some(last_day), Some(fresh_rows)) = (last_day, &fresh_rows) {
            let new_cut = cut_of(last_day);
            let new_cut = hi.map_or(new_cut, |hi| new_cut.min(hi));
            let (from, old) = match (&entry, cut) {
                (Some(entry), Some(cut)) => {
                    let contiguous = lo.is_none_or(|lo| lo <= cut);
                    let grows = contiguous && new_cut > entry.header.cut;
                    let old = cache::filter_periods(&entry.batch, |p| p < cut)?;
                    (
                        grows.then_some(entry.header.from),
                        cache::conform(&old, &schema).ok(),
                    )
                }
                // Without an entry, the computed rows cover the request's range, from the
                // beginning of the data when it has no start.
                _ => (
                    match lo {
                        None => Some(None),
                        Some(lo) => (new_cut > lo).then_some(Some(lo)),
                    },
                    Some(RecordBatch::new_empty(schema.clone())),
                ),
            };
            if let (Some(from), Some(old)) = (from, old) {
                let new = cache::filter_periods(fresh_rows, |p| p < new_cut)?;
                let rows = concat_batches(&schema, [&old, &new])?;
                let header = cache::Header::new(&key, &metric.name, from, new_cut, last_day);
                cache.store(&key, &header, &rows);
            }
        }
        let rows: Vec<RecordBatch> = cached_rows.into_iter().chain(fresh_rows).collect();
        Ok((
            Part {
                name: format!("p{index}"),
                batches: rows,
                schema,
                scanned,
            },
            used,
        ))
    }

    /// A cumulative metric with its own measure, aggregated afresh over each period's window.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    async fn run_window_scan(
        &self,
        metric: &Metric,
        measure: &Measure,
        window: Option<u32>,
        periods: &[NaiveDate],
        grain: Grain,
        dims: &[String],
        where_expr: Option<&Expr>,
        index: usize,
        for_cache: bool,
    ) -> Result<Part> {
        let (local, kind) = self.local_time_of(&measure.table, &measure.time).await?;
        // Each period's window is `[start, end)`, both literals in the spine: the join compares
        // every row with every period, so nothing is computed per pair.
        let bounds = |period: NaiveDate| {
            let end = next_period(period, grain);
            // Without a window the start is not compared; any valid timestamp does.
            let start = window.map_or(period, |days| end - Days::new(u64::from(days)));
            (start, end)
        };
        let spine_rows = if periods.is_empty() {
            // No period to compute: keep the query valid, and let it return nothing.
            let min = timestamp_literal(NaiveDate::MIN);
            format!(
                "SELECT {} AS {}, {min} AS {}, {min} AS {} WHERE false",
                date_literal(NaiveDate::MIN),
                quote_ident(PERIOD),
                quote_ident(START),
                quote_ident(END)
            )
        } else {
            let values: Vec<String> = periods
                .iter()
                .map(|p| {
                    let (start, end) = bounds(*p);
                    format!(
                        "({}, {}, {})",
                        date_literal(*p),
                        timestamp_literal(start),
                        timestamp_literal(end)
                    )
                })
                .collect();
            format!(
                "SELECT * FROM (VALUES {}) AS v({}, {}, {})",
                values.join(", "),
                quote_ident(PERIOD),
                quote_ident(START),
                quote_ident(END)
            )
        };
        let mut on = vec![format!("{local} < s.{}", quote_ident(END))];
        if window.is_some() {
            on.push(format!("{local} >= s.{}", quote_ident(START)));
        }
        let lower = match (periods.first(), window) {
            (Some(first), Some(days)) => Some(*first - Days::new(u64::from(days))),
            _ => None,
        };
        let upper = periods.last().map(|p| next_period(*p, grain));
        let mut conditions = time_range(&local, lower, upper);
        conditions.extend(where_expr.map(|e| format!("({e})")));
        conditions.extend(measure.filter.as_ref().map(|f| format!("({f})")));
        let mut select = vec![format!("s.{0} AS {0}", quote_ident(PERIOD))];
        let mut group_by = vec![format!("s.{}", quote_ident(PERIOD))];
        for dim in dims {
            let expr = format!("CAST({} AS VARCHAR)", quote_ident(dim));
            select.push(format!("{expr} AS {}", quote_ident(dim)));
            group_by.push(expr);
        }
        select.push(format!(
            "{} AS {}",
            parse_fragment(&measure.measure)?,
            quote_ident(&metric.name)
        ));
        if for_cache {
            select.push(format!(
                "CAST(max({local}) AS DATE) AS {}",
                quote_ident(LAST)
            ));
        }
        let sql = format!(
            "SELECT {} FROM {} JOIN ({spine_rows}) AS s ON {}{} GROUP BY {}",
            select.join(", "),
            measure.table.sql(),
            on.join(" AND "),
            where_clause(&conditions),
            group_by.join(", ")
        );
        let part = self
            .collect_part(
                sql,
                index,
                measure.table.to_string(),
                vec![metric.name.clone()],
            )
            .await;
        bad_times(part, kind, metric, &measure.time)
    }

    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    async fn run_sql_metric(
        &self,
        metric: &Metric,
        sql: &str,
        sql_grain: Grain,
        request: &MetricRequest,
        where_expr: Option<&Expr>,
        (lower, upper): (Option<NaiveDate>, Option<NaiveDate>),
        index: usize,
    ) -> Result<Part> {
        let grain = request.grain;
        let rolls_up = sql_grain == grain
            || sql_grain == Grain::Day
            || (sql_grain == Grain::Month && grain >= Grain::Quarter)
            || (sql_grain == Grain::Quarter && grain == Grain::Year);
        if !rolls_up {
            return Err(Error::request_hint(
                format!(
                    "metric `{}` is computed by SQL at {sql_grain} grain and cannot be shown by {grain}",
                    metric.name
                ),
                words![
                    "ask for ",
                    RequestField::Grain.set_to(sql_grain),
                    format!(" or a coarser grain that {sql_grain}s add up to")
                ],
            ));
        }
        let local = "CAST(q.\"period\" AS TIMESTAMP)";
        let period = period_of(local, grain, self.project().week_start);
        let mut conditions = time_range(local, lower, upper);
        conditions.extend(where_expr.map(|e| format!("({e})")));
        let mut select = vec![format!("{period} AS {}", quote_ident(PERIOD))];
        let mut group_by = vec![period];
        for dim in &request.dimensions {
            let expr = format!("CAST(q.{} AS VARCHAR)", quote_ident(dim));
            select.push(format!("{expr} AS {}", quote_ident(dim)));
            group_by.push(expr);
        }
        select.push(format!("sum(q.\"value\") AS {}", quote_ident(&metric.name)));
        let query = format!(
            "SELECT {} FROM ({sql}) AS q{} GROUP BY {}",
            select.join(", "),
            where_clause(&conditions),
            group_by.join(", ")
        );
        self.collect_part(query, index, "sql".into(), vec![metric.name.clone()])
            .await
    }

    /// A retention metric's series: per cohort period, the share of the cohort active again
    /// in its window, null while the cohort can still change. One query: each entity's first
    /// cohort time, whether it has activity in `[t0 + after, t0 + after + window)`, and the
    /// activity table's last time as the data's end. Cohorts from `lower` (inclusive) to
    /// `upper` (exclusive) need only the activity from `lower + after` to `upper + after +
    /// window`, so a partitioned activity table is read only there. With `for_cache`, the rows
    /// also carry the data's last local day (`__last`).
    async fn run_retention_metric(
        &self,
        metric: &Metric,
        r: &RetentionMetric,
        grain: Grain,
        (lower, upper): (Option<NaiveDate>, Option<NaiveDate>),
        index: usize,
        for_cache: bool,
    ) -> Result<Part> {
        let (cohort_local, _) = self.local_time_of(&r.cohort, &r.cohort_time).await?;
        let (activity_local, _) = self.local_time_of(&r.activity, &r.activity_time).await?;
        let entity = quote_ident(&r.entity);
        let entity_type = |table: &TableRef| {
            let table = table.clone();
            let entity = r.entity.clone();
            async move {
                self.table_schema(&table).await.ok().and_then(|s| {
                    s.field_with_name(&entity)
                        .ok()
                        .map(|f| f.data_type().clone())
                })
            }
        };
        // Keys of different types (text ids against numbers) meet as text.
        let key = if entity_type(&r.cohort).await == entity_type(&r.activity).await {
            entity.clone()
        } else {
            format!("CAST({entity} AS VARCHAR)")
        };
        let filter = |f: &Option<String>| -> Result<String> {
            Ok(match f {
                Some(f) => format!(" AND ({})", sql::parse_expr(f).map_err(Error::request)?),
                None => String::new(),
            })
        };
        let (after, reach) = (r.after_days, r.after_days + r.window_days);
        let period = period_of("c.t0", grain, self.project().week_start);
        let length = match grain {
            Grain::Day => "1 day",
            Grain::Week => "7 days",
            Grain::Month => "1 month",
            Grain::Quarter => "3 months",
            Grain::Year => "1 year",
        };
        let in_range = time_range("t0", lower, upper);
        // The activity a cohort in range can have in its window; the data's end is looked for
        // from the same start (when it lies before, no cohort in range is complete either).
        let from_day = |days: u32| move |d: NaiveDate| d + Days::new(u64::from(days));
        let activity_range = time_range(
            &activity_local,
            lower.map(from_day(after)),
            upper.map(from_day(reach)),
        );
        let end_range = time_range(&activity_local, lower.map(from_day(after)), None);
        let and = |conditions: &[String]| -> String {
            conditions.iter().map(|c| format!(" AND {c}")).collect()
        };
        let last = if for_cache {
            format!(",\n  CAST(max(d.t_end) AS DATE) AS {}", quote_ident(LAST))
        } else {
            String::new()
        };
        // The window's bounds are computed once per cohort member: in the join's filter, an
        // interval added to every candidate pair's timestamp costs more than the join itself.
        let sql = format!(
            "WITH first_seen AS (
  SELECT {key} AS e, min({cohort_local}) AS t0 FROM {cohort_table}
  WHERE {entity} IS NOT NULL{cohort_filter} GROUP BY {key}
),
cohort AS (
  SELECT e, t0, t0 + INTERVAL '{after} days' AS w0, t0 + INTERVAL '{reach} days' AS w1
  FROM first_seen
),
activity AS (
  SELECT {key} AS e, {activity_local} AS t FROM {activity_table}
  WHERE {entity} IS NOT NULL{activity_filter}{activity_range}
),
data_end AS (SELECT max({activity_local}) AS t_end FROM {activity_table}{end_range}),
users AS (
  SELECT c.e, c.t0, {period} AS p, bool_or(a.t IS NOT NULL) AS retained
  FROM cohort c LEFT JOIN activity a
    ON a.e = c.e AND a.t >= c.w0 AND a.t < c.w1
  GROUP BY c.e, c.t0
)
SELECT u.p AS {period_col},
  CASE WHEN max(u.t0) + INTERVAL '{reach} days' <= max(d.t_end)
        AND CAST(u.p AS TIMESTAMP) + INTERVAL '{length}' <= max(d.t_end)
    THEN CAST(count(*) FILTER (WHERE u.retained) AS DOUBLE) / CAST(count(*) AS DOUBLE)
  END AS {name}{last}
FROM users u CROSS JOIN data_end d{where_range}
GROUP BY u.p",
            cohort_table = r.cohort.sql(),
            activity_table = r.activity.sql(),
            cohort_filter = filter(&r.cohort_filter)?,
            activity_filter = filter(&r.activity_filter)?,
            activity_range = and(&activity_range),
            end_range = where_clause(&end_range),
            period_col = quote_ident(PERIOD),
            name = quote_ident(&metric.name),
            where_range = where_clause(
                &in_range
                    .iter()
                    .map(|c| format!("u.{c}"))
                    .collect::<Vec<_>>()
            ),
        );
        self.collect_part(
            sql,
            index,
            format!("{} and {}", r.cohort, r.activity),
            vec![metric.name.clone()],
        )
        .await
    }

    /// The time ranges a distinct count is computed in, one query each: the whole range,
    /// unless the table's files are partitioned by the scan's time column and its time bounds
    /// prune them (a date or a zoneless timestamp, in a UTC project). Then it is cut
    /// into chunks of whole periods spanning at least [`CHUNK_DAYS`] (partition-wise
    /// aggregation, as PostgreSQL's): each query reads only its chunk's partitions, and its
    /// grouping holds one chunk's (period, value) pairs rather than the whole range's, which
    /// at a hundred million rows is the difference between a hash table in memory and one that
    /// spills. Cuts fall on period starts, so no period is split between two queries; an open
    /// end of the range stays open in its chunk.
    async fn distinct_chunks(
        &self,
        scan: &Scan<'_>,
        kind: TimeKind,
        lower: Option<NaiveDate>,
        upper: Option<NaiveDate>,
    ) -> Result<Vec<(Option<NaiveDate>, Option<NaiveDate>)>> {
        let whole = vec![(lower, upper)];
        // Only where a time bound prunes partitions: on the column itself, not on its
        // conversion to another zone (see connect/partition.rs).
        let prunes = sql::local_time_is_column(kind, self.project().timezone);
        if !prunes || !partitioned_by(self.project(), &scan.table, &scan.time) {
            return Ok(whole);
        }
        let (first, end) = match (lower, upper) {
            (Some(lower), Some(upper)) => (lower, upper),
            _ => {
                // The column's own dates (a local date is at most a day off its UTC date):
                // Parquet statistics answer this without reading the rows.
                let column = quote_ident(&scan.time);
                let Some((min, max)) = self.bounds_query(&scan.table, &column, &[]).await? else {
                    return Ok(whole);
                };
                (
                    lower.unwrap_or(min - Days::new(1)),
                    upper.unwrap_or(max + Days::new(2)),
                )
            }
        };
        let grain = scan.grain;
        let mut cuts = Vec::new();
        let mut start = period_start(first, grain, self.project().week_start);
        loop {
            let mut cut = next_period(start, grain);
            while (cut - start).num_days() < CHUNK_DAYS {
                cut = next_period(cut, grain);
            }
            if cut >= end {
                break;
            }
            cuts.push(cut);
            start = cut;
        }
        let starts = std::iter::once(lower).chain(cuts.iter().copied().map(Some));
        let ends = cuts.iter().copied().map(Some).chain(std::iter::once(upper));
        Ok(starts.zip(ends).collect())
    }

    /// The first and last local dates of a measure's rows.
    pub(crate) async fn data_bounds(
        &self,
        measure: &Measure,
        where_expr: Option<&Expr>,
    ) -> Result<Option<(NaiveDate, NaiveDate)>> {
        let (local, _) = self.local_time_of(&measure.table, &measure.time).await?;
        let mut conditions: Vec<String> =
            where_expr.map(|e| format!("({e})")).into_iter().collect();
        conditions.extend(measure.filter.as_ref().map(|f| format!("({f})")));
        let Some(cache) = self.cache() else {
            return self.bounds_query(&measure.table, &local, &conditions).await;
        };
        // With the cache, only the rows since the last known day minus the look-back are
        // read: the data's first day is kept, its last day moves forward.
        let key = cache::key(&[
            "bounds",
            &measure.table.sql(),
            &local,
            measure.filter.as_deref().unwrap_or(""),
            &where_expr.map(ToString::to_string).unwrap_or_default(),
            &source_text(self.project(), &measure.table),
        ]);
        if let Some(known) = cache.load_bounds(&key) {
            let since = known.last - Days::new(u64::from(cache.lookback()));
            let mut recent = conditions.clone();
            recent.push(format!("{local} >= {}", timestamp_literal(since)));
            if let Some((first, last)) = self.bounds_query(&measure.table, &local, &recent).await? {
                let bounds = (known.first.min(first), last);
                if bounds != (known.first, known.last) {
                    cache.store_bounds(&key, bounds.0, bounds.1);
                }
                return Ok(Some(bounds));
            }
            tracing::warn!(
                "table `{}` has no rows since {since}, although it had up to {}: reading it whole",
                measure.table,
                known.last
            );
        }
        let found = self
            .bounds_query(&measure.table, &local, &conditions)
            .await?;
        if let Some((first, last)) = found {
            cache.store_bounds(&key, first, last);
        }
        Ok(found)
    }

    /// The first and last dates of `time` (an expression) in the rows of `table` that meet
    /// `conditions`.
    async fn bounds_query(
        &self,
        table: &TableRef,
        time: &str,
        conditions: &[String],
    ) -> Result<Option<(NaiveDate, NaiveDate)>> {
        let sql = format!(
            "SELECT CAST(min({time}) AS DATE), CAST(max({time}) AS DATE) FROM {}{}",
            table.sql(),
            where_clause(conditions)
        );
        let batches = self.plan(&sql).await?.collect().await?;
        let first = batches.iter().find(|b| b.num_rows() > 0);
        Ok(first.and_then(|b| {
            let min = b.column(0).as_primitive::<Date32Type>();
            let max = b.column(1).as_primitive::<Date32Type>();
            (min.is_valid(0) && max.is_valid(0))
                .then(|| (from_days(min.value(0)), from_days(max.value(0))))
        }))
    }

    async fn collect_part(
        &self,
        sql: String,
        index: usize,
        table: String,
        metrics: Vec<String>,
    ) -> Result<Part> {
        self.collect_chunks(vec![sql], index, table, metrics).await
    }

    /// One part from the rows of several queries of the same columns, run one after another.
    async fn collect_chunks(
        &self,
        queries: Vec<String>,
        index: usize,
        table: String,
        metrics: Vec<String>,
    ) -> Result<Part> {
        let mut schema: Option<SchemaRef> = None;
        let mut batches = Vec::new();
        for sql in &queries {
            tracing::debug!(%sql, "scan");
            let df = self.plan(sql).await?;
            schema.get_or_insert_with(|| Arc::new(df.schema().as_arrow().clone()));
            batches.extend(df.collect().await?);
        }
        let schema = schema.expect("at least one query");
        let sql = queries.join(";\n");
        Ok(Part {
            name: format!("p{index}"),
            batches,
            schema,
            scanned: Some(Scanned {
                table,
                metrics,
                sql,
            }),
        })
    }
}

/// Keyed by table, time column, grain, and the metric for a distinct count (which gets a
/// scan of its own, see [`sql::distinct_count_arg`]).
type Scans<'p> = IndexMap<(TableRef, String, Grain, Option<String>), Scan<'p>>;

/// Adds a metric to the scan of its table at `grain`, widening the scan's range if needed.
fn add_to_scan<'p>(
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

/// Whether `table`'s files are partitioned by the date of `time`: the `time_partition`
/// option (`{ column: dt, time: event_time }`, `time` one column or a list) of the `files`
/// and `s3` connectors, given for the source or, with `s3`, for the table under `tables:`.
/// A plugin that prunes partitions the same way declares the same option.
fn partitioned_by(project: &Project, table: &TableRef, time: &str) -> bool {
    let Some(source) = project.sources.get(&table.source) else {
        return false;
    };
    let table_option = source
        .options
        .get("tables")
        .and_then(|tables| tables.get(&table.table))
        .and_then(|t| t.get("time_partition"));
    [source.options.get("time_partition"), table_option]
        .into_iter()
        .flatten()
        .filter_map(TimePartition::parse)
        .any(|tp| tp.time.iter().any(|t| t == time))
}

/// A scan that failed on a text time value is a data problem the user can fix: say so.
fn bad_times(part: Result<Part>, kind: TimeKind, metric: &Metric, column: &str) -> Result<Part> {
    match part {
        Err(Error::DataFusion(e))
            if kind == TimeKind::Text && crate::query::engine::is_parse_failure(&e) =>
        {
            Err(crate::query::engine::not_timestamps(metric, column, &e))
        }
        other => other,
    }
}

/// Whether a cached entry has the columns a request's part has: `__period`, the dimensions,
/// the metric. The key makes a mismatch unlikely; this makes it harmless.
fn entry_fits(entry: &cache::Entry, expected: &[String], metric: &str) -> bool {
    let names: Vec<&str> = entry
        .batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let fits = names.len() == expected.len() + 1
        && names.iter().zip(expected).all(|(a, b)| a == b)
        && names.last() == Some(&metric);
    if !fits {
        tracing::warn!(
            "ignoring a cache file of metric `{metric}`: its columns {names:?} do not fit the request; its periods are computed afresh"
        );
    }
    fits
}

/// A source's definition as text, for cache keys: a moved or re-pointed source is new data.
fn source_text(project: &Project, table: &TableRef) -> String {
    project
        .sources
        .get(&table.source)
        .map(|s| {
            format!(
                "{}:{}",
                s.connector,
                serde_json::Value::Object(s.options.clone())
            )
        })
        .unwrap_or_default()
}

/// The name of the column counting the rows a metric's filter matched in a cached scan.
fn matched_column(metric_index: usize) -> String {
    format!("__n{metric_index}")
}

fn parse_fragment(sql: &str) -> Result<Expr> {
    // Validated before; a failure here is a bug, reported as such.
    sql::parse_expr(sql)
        .map_err(|e| Error::DataFusion(Box::new(datafusion::error::DataFusionError::Internal(e))))
}

/// The metrics a request needs, each after the metrics it is computed from.
fn closure<'p>(project: &'p Project, names: &[&str]) -> Result<Vec<&'p Metric>> {
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

fn earliest(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    Some(a?.min(b?))
}

fn time_range(local: &str, lower: Option<NaiveDate>, upper: Option<NaiveDate>) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(lower) = lower {
        conditions.push(format!("{local} >= {}", timestamp_literal(lower)));
    }
    if let Some(upper) = upper {
        conditions.push(format!("{local} < {}", timestamp_literal(upper)));
    }
    conditions
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

pub(crate) fn from_days(days: i32) -> NaiveDate {
    EPOCH + chrono::TimeDelta::days(i64::from(days))
}

fn to_days(date: NaiveDate) -> i32 {
    i32::try_from((date - EPOCH).num_days()).expect("dates of the spine fit in Date32")
}

fn part_bounds(parts: &[Part]) -> Option<(NaiveDate, NaiveDate)> {
    let mut bounds = None;
    for batch in parts.iter().flat_map(|p| &p.batches) {
        let periods = batch.column(0).as_primitive::<Date32Type>();
        for days in periods.iter().flatten() {
            let date = from_days(days);
            bounds = merge_bounds(bounds, Some((date, date)));
        }
    }
    bounds
}

fn merge_bounds(
    a: Option<(NaiveDate, NaiveDate)>,
    b: Option<(NaiveDate, NaiveDate)>,
) -> Option<(NaiveDate, NaiveDate)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (a, b) => a.or(b),
    }
}

fn spine_batch(periods: &[NaiveDate], grain: Grain) -> Result<RecordBatch> {
    let starts = Date32Array::from_iter_values(periods.iter().map(|p| to_days(*p)));
    let ends =
        Date32Array::from_iter_values(periods.iter().map(|p| to_days(next_period(*p, grain))));
    let schema = Schema::new(vec![
        Field::new(PERIOD, DataType::Date32, false),
        Field::new(END, DataType::Date32, false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(starts), Arc::new(ends)],
    )?)
}

/// The assembly query: spine × dimension values, each base series joined in, then ratio and
/// derived metrics layered on top in dependency order.
#[allow(clippy::too_many_arguments)] // one call site; the arguments are the request's parts
fn assemble(
    closure: &[&Metric],
    requested: &[&str],
    dims: &[String],
    grain: Grain,
    parts: &[Part],
    series: &IndexMap<(String, Grain), String>,
    periods: &[NaiveDate],
) -> String {
    let q = quote_ident;
    let period = q(PERIOD);
    let dim_cols: Vec<String> = dims.iter().map(|d| q(d)).collect();
    let dims_match = |a: &str, b: &str| -> String {
        dim_cols
            .iter()
            .map(|d| format!(" AND {a}.{d} IS NOT DISTINCT FROM {b}.{d}"))
            .collect()
    };
    let mut ctes = Vec::new();
    if dims.is_empty() {
        ctes.push(format!("grid AS (SELECT {period}, {} FROM spine)", q(END)));
    } else {
        let (first, end) = match (periods.first(), periods.last()) {
            (Some(first), Some(last)) => (*first, next_period(*last, grain)),
            _ => (NaiveDate::MIN, NaiveDate::MIN),
        };
        let keys: Vec<String> = parts
            .iter()
            .map(|p| {
                format!(
                    "SELECT DISTINCT {} FROM {} WHERE {period} >= {} AND {period} < {}",
                    dim_cols.join(", "),
                    p.name,
                    date_literal(first),
                    date_literal(end)
                )
            })
            .collect();
        ctes.push(format!("keys AS ({})", keys.join(" UNION ")));
        ctes.push(format!(
            "grid AS (SELECT s.{period}, s.{}, {} FROM spine s CROSS JOIN keys k)",
            q(END),
            dim_cols
                .iter()
                .map(|d| format!("k.{d}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let grid_cols: String = dim_cols.iter().map(|d| format!(", g.{d}")).collect();
    let mut joins: Vec<String> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut joined: Vec<&str> = Vec::new();
    for (i, metric) in closure.iter().enumerate() {
        let name = q(&metric.name);
        match &metric.kind {
            MetricKind::Cumulative(crate::project::model::Cumulative {
                over: CumulativeOver::Metric(parent),
                window_days,
            }) => {
                let (part, condition) = match window_days {
                    None => (
                        &series[&(parent.clone(), grain)],
                        format!("p.{period} <= g.{period}"),
                    ),
                    Some(days) => (
                        &series[&(parent.clone(), Grain::Day)],
                        format!(
                            "p.{period} >= g.{end} - INTERVAL '{days} days' AND p.{period} < g.{end}",
                            end = q(END)
                        ),
                    ),
                };
                let cte = format!("c{i}");
                ctes.push(format!(
                    "{cte} AS (SELECT g.{period}{grid_cols}, sum(p.{}) AS {name} FROM grid g JOIN {part} p ON {condition}{} GROUP BY g.{period}{grid_cols})",
                    q(parent),
                    dims_match("p", "g"),
                ));
                joins.push(format!(
                    " LEFT JOIN {cte} ON {cte}.{period} = g.{period}{}",
                    dims_match(&cte, "g")
                ));
                columns.push(format!("COALESCE({cte}.{name}, 0) AS {name}"));
            }
            MetricKind::Simple(_)
            | MetricKind::Cumulative(_)
            | MetricKind::Sql { .. }
            | MetricKind::Retention(_) => {
                let part = &series[&(metric.name.clone(), grain)];
                if !joined.contains(&part.as_str()) {
                    joined.push(part);
                    joins.push(format!(
                        " LEFT JOIN {part} ON {part}.{period} = g.{period}{}",
                        dims_match(part, "g")
                    ));
                }
                if matches!(metric.kind, MetricKind::Retention(_)) {
                    // A rate: a period without a (complete) cohort has none, not 0.
                    columns.push(format!("{part}.{name} AS {name}"));
                } else {
                    columns.push(format!("COALESCE({part}.{name}, 0) AS {name}"));
                }
            }
            MetricKind::Ratio { .. } | MetricKind::Derived { .. } => {}
        }
    }
    ctes.push(format!(
        "l0 AS (SELECT g.{period}{grid_cols}{} FROM grid g{})",
        columns.iter().map(|c| format!(", {c}")).collect::<String>(),
        joins.concat()
    ));
    let mut layer = 0;
    for metric in closure {
        let expr = match &metric.kind {
            MetricKind::Ratio {
                numerator,
                denominator,
            } => format!(
                "CAST({} AS DOUBLE) / NULLIF(CAST({} AS DOUBLE), 0)",
                q(numerator),
                q(denominator)
            ),
            MetricKind::Derived { expr, references } => derived_sql(expr, references),
            _ => continue,
        };
        ctes.push(format!(
            "l{} AS (SELECT *, {expr} AS {} FROM l{layer})",
            layer + 1,
            q(&metric.name)
        ));
        layer += 1;
    }
    let order: String = dim_cols
        .iter()
        .map(|d| format!(", {d} ASC NULLS LAST"))
        .collect();
    format!(
        "WITH {} SELECT {period} AS \"period\"{}{} FROM l{layer} ORDER BY {period} ASC{order}",
        ctes.join(", "),
        dim_cols
            .iter()
            .map(|d| format!(", {d}"))
            .collect::<String>(),
        requested
            .iter()
            .map(|m| format!(", {}", q(m)))
            .collect::<String>(),
    )
}

/// A derived expression with every metric it names read as a DOUBLE, so `a / b` never
/// truncates to an integer division.
fn derived_sql(expr: &str, references: &[String]) -> String {
    let Ok(mut parsed) = sql::parse_expr(expr) else {
        return expr.to_string();
    };
    let _ = visit_expressions_mut(&mut parsed, |e| {
        if let Expr::Identifier(ident) = e
            && references.contains(&ident.value)
            && let Ok(cast) =
                sql::parse_expr(&format!("CAST({} AS DOUBLE)", quote_ident(&ident.value)))
        {
            *e = Expr::Nested(Box::new(cast));
        }
        ControlFlow::<()>::Continue(())
    });
    parsed.to_string()
}

/// Gives the result its documented types: Date32 periods, Utf8 dimensions, Int64 or Float64
/// metrics, and null where a float is not finite (a division by zero in a derived metric).
fn finish(
    grain: Grain,
    dims: &[String],
    requested: &[&str],
    closure: &[&Metric],
    batches: &[RecordBatch],
) -> Result<MetricTable> {
    let mut fields = vec![Field::new("period", DataType::Date32, false)];
    fields.extend(dims.iter().map(|d| Field::new(d, DataType::Utf8, true)));
    let mut schema_in = None;
    let merged = match batches.first() {
        Some(first) => {
            schema_in = Some(first.schema());
            Some(concat_batches(&first.schema(), batches)?)
        }
        None => None,
    };
    let mut columns: Vec<ArrayRef> = Vec::new();
    let rows = merged.as_ref().map_or(0, RecordBatch::num_rows);
    for (i, name) in std::iter::once("period")
        .chain(dims.iter().map(String::as_str))
        .chain(requested.iter().copied())
        .enumerate()
    {
        let is_metric = i > dims.len();
        let source = merged.as_ref().map(|b| b.column(i).clone());
        let source_type = schema_in.as_ref().map(|s| s.field(i).data_type().clone());
        let target = if i == 0 {
            DataType::Date32
        } else if !is_metric {
            DataType::Utf8
        } else {
            let metric = closure
                .iter()
                .find(|m| m.name == name)
                .expect("requested metrics are in the closure");
            let integral = source_type.as_ref().is_some_and(DataType::is_integer)
                && !matches!(
                    metric.kind,
                    MetricKind::Ratio { .. } | MetricKind::Derived { .. }
                );
            if integral {
                DataType::Int64
            } else {
                DataType::Float64
            }
        };
        let column = match source {
            Some(array) => cast(&array, &target)?,
            None => datafusion::arrow::array::new_empty_array(&target),
        };
        let column = if target == DataType::Float64 {
            finite_or_null(&column)
        } else {
            column
        };
        if is_metric {
            fields.push(Field::new(name, target, true));
        }
        debug_assert_eq!(column.len(), rows);
        columns.push(column);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok(MetricTable {
        grain,
        dimensions: dims.to_vec(),
        metrics: requested.iter().map(|m| m.to_string()).collect(),
        batch,
        scans: Vec::new(),
        cache: Vec::new(),
    })
}

fn finite_or_null(array: &ArrayRef) -> ArrayRef {
    let floats = array.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let out: Float64Array = floats.iter().map(|v| v.filter(|x| x.is_finite())).collect();
    Arc::new(out)
}

/// Cached rows cast to the schema of freshly computed ones; an error naming the metric when
/// they do not fit.
fn conform_cached(
    rows: Option<RecordBatch>,
    schema: &SchemaRef,
    metric: &str,
) -> Result<Option<RecordBatch>> {
    rows.map(|rows| {
        cache::conform(&rows, schema).map_err(|problem| {
            Error::request_hint(
                format!("the cached values of metric `{metric}` cannot be used: {problem}"),
                Action::BypassCache,
            )
        })
    })
    .transpose()
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

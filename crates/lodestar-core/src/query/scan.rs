//! Running one scan: its SQL (time range, filters, breakdowns, the cache's extra columns),
//! distinct counts in chunks over time-partitioned tables, the data's first and last day,
//! and collecting the rows into a [`Part`] of the assembly.

use std::sync::Arc;
use std::time::Instant;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Date32Type, SchemaRef};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::sql::sqlparser::ast::Expr;

use crate::connect::partitioned_by;
use crate::project::error::{Error, Result};
use crate::project::model::{Metric, MetricKind, TableRef, quote_ident};
use crate::project::periods::from_days;
use crate::project::periods::{next_period, period_start};
use crate::query::distinct;
use crate::query::engine::Engine;
use crate::query::plan::{CHUNK_DAYS, LAST, PERIOD, PartContext, Scan, VALUE, parse_fragment};
use crate::query::sql::{self, TimeKind, local_time, period_of, timestamp_literal};
use crate::query::table::{Read, Scanned};

/// Computed rows registered in the assembly context: `__period`, dimensions, metric columns.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) schema: SchemaRef,
    /// `None` for a part served from the cache without a query of its own.
    pub(crate) scanned: Option<Scanned>,
}

/// A scan that failed on a text time value is a data problem the user can fix: say so.
pub(crate) fn bad_times(
    part: Result<Part>,
    kind: TimeKind,
    metric: &Metric,
    column: &str,
) -> Result<Part> {
    match part {
        Err(Error::DataFusion(e))
            if kind == TimeKind::Text && crate::query::engine::is_parse_failure(&e) =>
        {
            Err(crate::query::engine::not_timestamps(metric, column, &e))
        }
        other => other,
    }
}

/// The name of the column counting the rows a metric's filter matched in a cached scan.
pub(crate) fn matched_column(metric_index: usize) -> String {
    format!("__n{metric_index}")
}

pub(crate) fn time_range(
    local: &str,
    lower: Option<NaiveDate>,
    upper: Option<NaiveDate>,
) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(lower) = lower {
        conditions.push(format!("{local} >= {}", timestamp_literal(lower)));
    }
    if let Some(upper) = upper {
        conditions.push(format!("{local} < {}", timestamp_literal(upper)));
    }
    conditions
}

/// Adds the breakdown by `dims` to a scan's `select` (each as text, under its name) and
/// `group_by`.
pub(crate) fn push_breakdown(
    dims: &[String],
    select: &mut Vec<String>,
    group_by: &mut Vec<String>,
) {
    for dim in dims {
        let expr = format!("CAST({} AS VARCHAR)", quote_ident(dim));
        select.push(format!("{expr} AS {}", quote_ident(dim)));
        group_by.push(expr);
    }
}

pub(crate) fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

impl Engine {
    /// The time column of a table as local wall-clock time.
    pub(crate) async fn local_time_of(
        &self,
        table: &TableRef,
        time: &str,
    ) -> Result<(String, TimeKind)> {
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

    /// The name DataFusion gives a distinct count of `key` (SQL over `table`) when the count
    /// is by bitmap (query/distinct.rs): `None` for a key that is not an integer, or whose
    /// type cannot be told here.
    pub(crate) async fn bitmap_key_name(&self, table: &TableRef, key: &str) -> Option<String> {
        // `min` has the key's type; the count, the name of a distinct count of it.
        let sql = format!(
            "SELECT min({key}), count(DISTINCT {key}) FROM {} LIMIT 0",
            table.sql()
        );
        let df = self.plan(&sql).await.ok()?;
        let (key, count) = (df.schema().field(0), df.schema().field(1));
        distinct::counts_by_bitmap(key.data_type()).then(|| count.name().clone())
    }

    /// The keys the distinct counts of `metrics` count by bitmap (query/distinct.rs), as
    /// (table, key's SQL): those of an integer type. A key whose type cannot be told here is
    /// left to the scan, which reports what is wrong with it. So is a key that DataFusion
    /// names as another key of its table (a cast is left out of a name, so
    /// `CAST(id AS BIGINT)` is named as `id`): two aggregates of one name cannot share a
    /// grouping.
    pub(crate) async fn bitmap_keys(&self, metrics: &[&Metric]) -> Vec<(TableRef, String)> {
        let mut keys = Vec::new();
        let mut names: Vec<(TableRef, String)> = Vec::new();
        let mut seen = Vec::new();
        for metric in metrics {
            let MetricKind::Simple(measure) = &metric.kind else {
                continue;
            };
            let Some(key) = sql::distinct_count_key(&measure.measure) else {
                continue;
            };
            let entry = (measure.table.clone(), key);
            if seen.contains(&entry) {
                continue;
            }
            if let Some(name) = self.bitmap_key_name(&entry.0, &entry.1).await {
                let name = (entry.0.clone(), name);
                if !names.contains(&name) {
                    names.push(name);
                    keys.push(entry.clone());
                }
            }
            seen.push(entry);
        }
        keys
    }

    /// One scan of a table from `lower` (inclusive) to `upper` (exclusive). With `for_cache`,
    /// it also returns each group's last local day (`__last`) and, for metrics whose filter
    /// the scan does not apply to every row, how many rows matched it (`__n<i>`), so that each
    /// metric's own rows can be kept apart from the rows only its scan-mates have.
    pub(crate) async fn run_scan(
        &self,
        ctx: &PartContext<'_>,
        scan: &Scan<'_>,
        lower: Option<NaiveDate>,
        upper: Option<NaiveDate>,
        index: usize,
    ) -> Result<Part> {
        let (dims, where_expr, for_cache) = (ctx.dims, ctx.where_expr, ctx.for_cache);
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
        push_breakdown(dims, &mut select, &mut group_by);
        let metrics = scan.metrics.iter().map(|(m, _)| m.name.clone()).collect();
        let measures: Vec<Expr> = scan
            .metrics
            .iter()
            .map(|(_, m)| parse_fragment(&m.measure))
            .collect::<Result<_>>()?;
        let is_aggregate = |name: &str| self.is_aggregate(name);
        if let Some(key) = &scan.grouped_by {
            // Two levels: per period, breakdown and key, the distinct counts' filters and the
            // other measures' partial aggregates (a grouping that can spill); then per period
            // and breakdown, the keys counted and the partials combined.
            let mut inner = select;
            inner.push(format!("{key} AS {}", quote_ident(VALUE)));
            group_by.push(key.clone());
            let mut outer: Vec<String> = [PERIOD]
                .into_iter()
                .chain(dims.iter().map(String::as_str))
                .map(quote_ident)
                .collect();
            let keys = outer.join(", ");
            for (i, (((metric, _), filter), measure)) in
                scan.metrics.iter().zip(&filters).zip(&measures).enumerate()
            {
                let own_filter = filter.as_ref().filter(|_| !shared);
                if sql::distinct_count_arg(measure).is_some() {
                    let mut counted = format!("count({})", quote_ident(VALUE));
                    if let Some(f) = own_filter {
                        let flag = quote_ident(&format!("__d{i}"));
                        inner.push(format!("bool_or({f}) AS {flag}"));
                        counted.push_str(&format!(" FILTER (WHERE {flag})"));
                    }
                    outer.push(format!("{counted} AS {}", quote_ident(&metric.name)));
                    continue;
                }
                let expr = match own_filter {
                    Some(f) => sql::filtered_measure(measure, f, &is_aggregate),
                    None => measure.clone(),
                };
                // The planner fuses only measures that split.
                let split = sql::split_aggregates(&expr, &|j| format!("__a{i}_{j}"), &is_aggregate)
                    .ok_or_else(|| {
                        Error::DataFusion(Box::new(datafusion::error::DataFusionError::Internal(
                            format!(
                                "`{}` was fused with a distinct count but does not split",
                                metric.name
                            ),
                        )))
                    })?;
                for (call, alias) in split.partials {
                    inner.push(format!("{call} AS {}", quote_ident(&alias)));
                }
                outer.push(format!(
                    "{} AS {}",
                    split.combined,
                    quote_ident(&metric.name)
                ));
            }
            if for_cache {
                inner.push(format!("max({local}) AS {}", quote_ident(LAST)));
                outer.push(format!("CAST(max({0}) AS DATE) AS {0}", quote_ident(LAST)));
                for (i, filter) in filters.iter().enumerate() {
                    if let Some(f) = filter.as_ref().filter(|_| !shared) {
                        let matched = quote_ident(&matched_column(i));
                        inner.push(format!("count(*) FILTER (WHERE {f}) AS {matched}"));
                        outer.push(format!("sum({matched}) AS {matched}"));
                    }
                }
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
                        inner.join(", "),
                        scan.table.sql(),
                        where_clause(&range),
                        group_by.join(", ")
                    )
                })
                .collect();
            let part = self
                .collect_chunks(queries, index, scan.table.to_string(), metrics)
                .await;
            return bad_times(part, kind, scan.metrics[0].0, &scan.time);
        }
        for (((metric, _), filter), measure) in scan.metrics.iter().zip(&filters).zip(measures) {
            let expr = match filter {
                Some(f) if !shared => sql::filtered_measure(&measure, f, &is_aggregate),
                _ => measure,
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

    /// The time ranges a distinct count is computed in, one query each: the whole range,
    /// unless the table's files are partitioned by the scan's time column and its time bounds
    /// prune them (a date or a zoneless timestamp, in a UTC project). Then it is cut
    /// into chunks of whole periods spanning at least [`CHUNK_DAYS`] (partition-wise
    /// aggregation, as PostgreSQL's): each query reads only its chunk's partitions, and its
    /// grouping holds one chunk's (period, value) pairs rather than the whole range's, which
    /// at a hundred million rows is the difference between a hash table in memory and one that
    /// spills. Cuts fall on period starts, so no period is split between two queries; an open
    /// end of the range stays open in its chunk.
    pub(crate) async fn distinct_chunks(
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

    /// The first and last dates of `time` (an expression) in the rows of `table` that meet
    /// `conditions`.
    pub(crate) async fn bounds_query(
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

    pub(crate) async fn collect_part(
        &self,
        sql: String,
        index: usize,
        table: String,
        metrics: Vec<String>,
    ) -> Result<Part> {
        self.collect_chunks(vec![sql], index, table, metrics).await
    }

    /// One part from the rows of several queries of the same columns, run one after another.
    pub(crate) async fn collect_chunks(
        &self,
        queries: Vec<String>,
        index: usize,
        table: String,
        metrics: Vec<String>,
    ) -> Result<Part> {
        let mut schema: Option<SchemaRef> = None;
        let mut batches = Vec::new();
        let started = Instant::now();
        let mut read = Read::default();
        for sql in &queries {
            tracing::debug!(%sql, "scan");
            let df = self.plan(sql).await?;
            schema.get_or_insert_with(|| Arc::new(df.schema().as_arrow().clone()));
            let task = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await?;
            batches.extend(collect(Arc::clone(&plan), task).await?);
            add_read(&mut read, &plan);
        }
        read.elapsed = started.elapsed();
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
                read,
            }),
        })
    }
}

/// Adds what the leaves of an executed `plan` read to `read`.
fn add_read(read: &mut Read, plan: &Arc<dyn ExecutionPlan>) {
    let children = plan.children();
    if !children.is_empty() {
        for child in children {
            add_read(read, child);
        }
        return;
    }
    let Some(metrics) = plan.metrics() else {
        return;
    };
    let add = |total: &mut Option<u64>, value: Option<usize>| {
        if let Some(value) = value {
            *total = Some(total.unwrap_or(0) + value as u64);
        }
    };
    add(&mut read.rows, metrics.output_rows());
    add(
        &mut read.bytes,
        metrics
            .sum_by_name("bytes_scanned")
            .map(|v| v.as_usize())
            .or_else(|| text_file_bytes(plan.as_ref())),
    );
}

/// The bytes of the files a text scan (CSV, JSON) read: DataFusion counts `bytes_scanned` for
/// Parquet only, and a text scan reads its files, or its byte ranges of them, whole.
fn text_file_bytes(plan: &dyn ExecutionPlan) -> Option<usize> {
    let exec = plan.downcast_ref::<DataSourceExec>()?;
    let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
    if !matches!(config.file_source.file_type(), "csv" | "json") {
        return None;
    }
    let bytes: u64 = config
        .file_groups
        .iter()
        .flat_map(|group| group.files())
        .map(|file| {
            file.range.as_ref().map_or(file.object_meta.size, |r| {
                u64::try_from(r.end - r.start).unwrap_or(0)
            })
        })
        .sum();
    usize::try_from(bytes).ok()
}

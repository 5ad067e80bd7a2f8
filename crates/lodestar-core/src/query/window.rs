//! Trailing windows (cumulative metrics over the last N days) and SQL metrics: series that
//! are not one grouped scan.

use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema};
use datafusion::arrow::row::{Row, RowConverter, SortField};
use indexmap::IndexMap;
use roaring::RoaringTreemap;

use crate::project::error::{Error, Result};
use crate::project::model::{Grain, Metric, quote_ident};
use crate::project::periods::next_period;
use crate::query::distinct::{self, DaySets};
use crate::query::engine::Engine;
use crate::query::plan::{END, LAST, PERIOD, PartContext, START, WindowMetric, parse_fragment};
use crate::query::request::{Field as RequestField, words};
use crate::query::scan::{Part, bad_times, push_breakdown, time_range, where_clause};
use crate::query::sql::{self, date_literal, period_of, timestamp_literal};

/// The most (period, day) pairs a trailing window's spine lists before the scan compares rows
/// with each period's bounds instead: a year of days with a 28-day window is 10,220.
const MAX_DAY_SPINE: usize = 50_000;

/// A local day of a period's trailing window, beside the period in the spine.
const DAY: &str = "__day";

/// The window of `period` at `grain`, `[start, end)`: the `days` before its end (`None`,
/// without a window: from the beginning).
fn window_of(period: NaiveDate, grain: Grain, days: Option<u32>) -> (Option<NaiveDate>, NaiveDate) {
    let end = next_period(period, grain);
    (days.map(|days| end - Days::new(u64::from(days))), end)
}

/// The rows a trailing window's scan reads: the table's local time, and the conditions
/// (time range, request filter, the metric's own filter).
#[derive(Clone, Copy)]
struct Rows<'a> {
    local: &'a str,
    conditions: &'a [String],
}

/// A day's set of keys, beside the day and the breakdown in a trailing window's scan.
const SET: &str = "__set";

/// The rows of a trailing window's part from the days' key sets of `days` (`__day`, the
/// breakdown, `__set`): per breakdown and period of `periods` whose window (`[start, end)`
/// of local days, `None`: from the beginning) has rows, the count of the union of its days'
/// sets, named `metric`, and with `for_cache` the last of those days (`__last`).
fn count_windows(
    days: &Part,
    periods: &[NaiveDate],
    window: impl Fn(NaiveDate) -> (Option<NaiveDate>, NaiveDate),
    metric: &str,
    for_cache: bool,
) -> Result<RecordBatch> {
    let all = concat_batches(&days.schema, &days.batches)?;
    let columns = all.columns();
    let (day_column, rest) = columns.split_first().expect("the day, then more");
    let (set_column, dim_columns) = rest.split_last().expect("the set, last");
    let day_of = day_column.as_primitive::<Date32Type>();
    let set_of = set_column.as_binary::<i32>();
    let mut sets = DaySets::default();
    // Each breakdown's days, in the order the breakdowns came, with the row of each day.
    let converter = RowConverter::new(
        dim_columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    // Without a breakdown, one group (rows of no columns do not count the rows).
    let dims = (!dim_columns.is_empty())
        .then(|| converter.convert_columns(dim_columns))
        .transpose()?;
    let mut groups: IndexMap<Option<Row<'_>>, Vec<(i32, usize)>> = IndexMap::new();
    for row in 0..all.num_rows() {
        let set = sets.add(set_of.value(row)).map_err(Error::from)?;
        debug_assert_eq!(set, row);
        groups
            .entry(dims.as_ref().map(|d| d.row(row)))
            .or_default()
            .push((day_of.value(row), row));
    }
    let mut period_out = Vec::new();
    let mut first_rows: Vec<u32> = Vec::new();
    let mut counts = Vec::new();
    let mut lasts = Vec::new();
    let date = |d: NaiveDate| Date32Type::from_naive_date(d);
    for days in groups.values_mut() {
        days.sort_unstable();
        let first_row = days[0].1 as u32;
        // A running total adds the days up to each period's end to one union.
        let mut running = RoaringTreemap::new();
        let mut added = 0;
        for &period in periods {
            let (start, end) = window(period);
            let end_at = days.partition_point(|(d, _)| *d < date(end));
            let count = match start {
                Some(start) => {
                    let start_at = days.partition_point(|(d, _)| *d < date(start));
                    if start_at == end_at {
                        continue;
                    }
                    let mut union = RoaringTreemap::new();
                    for &(_, row) in &days[start_at..end_at] {
                        sets.add_to(row, &mut union);
                    }
                    union.len()
                }
                None => {
                    if end_at == 0 {
                        continue;
                    }
                    for &(_, row) in &days[added.min(end_at)..end_at] {
                        sets.add_to(row, &mut running);
                    }
                    added = added.max(end_at);
                    running.len()
                }
            };
            period_out.push(date(period));
            first_rows.push(first_row);
            counts.push(count as i64);
            lasts.push(days[end_at - 1].0);
        }
    }
    let take_rows = UInt32Array::from(first_rows);
    let mut fields = vec![Field::new(PERIOD, DataType::Date32, false)];
    let mut out: Vec<ArrayRef> = vec![Arc::new(Date32Array::from(period_out))];
    for (column, field) in dim_columns.iter().zip(&days.schema.fields()[1..]) {
        fields.push(field.as_ref().clone());
        out.push(take(column, &take_rows, None)?);
    }
    fields.push(Field::new(metric, DataType::Int64, false));
    out.push(Arc::new(Int64Array::from(counts)));
    if for_cache {
        fields.push(Field::new(LAST, DataType::Date32, false));
        out.push(Arc::new(Date32Array::from(lasts)));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), out)?)
}

/// A spine of literal `rows` with `columns` (name, a literal of its type). With no row, a query
/// that is still valid and returns nothing: there is no period to compute.
fn spine(columns: &[(&str, &String)], rows: &[String]) -> String {
    let names: Vec<String> = columns.iter().map(|(name, _)| quote_ident(name)).collect();
    if rows.is_empty() {
        let typed: Vec<String> = columns
            .iter()
            .zip(&names)
            .map(|((_, literal), name)| format!("{literal} AS {name}"))
            .collect();
        return format!("SELECT {} WHERE false", typed.join(", "));
    }
    format!(
        "SELECT * FROM (VALUES {}) AS v({})",
        rows.join(", "),
        names.join(", ")
    )
}

impl Engine {
    /// A cumulative metric with its own measure, aggregated afresh over each period's window.
    pub(crate) async fn run_window_scan(
        &self,
        ctx: &PartContext<'_>,
        w: &WindowMetric<'_>,
        periods: &[NaiveDate],
        index: usize,
    ) -> Result<Part> {
        let (metric, measure, window) = (w.metric, w.measure, w.days);
        let (grain, dims, where_expr, for_cache) =
            (ctx.grain, ctx.dims, ctx.where_expr, ctx.for_cache);
        let (local, kind) = self.local_time_of(&measure.table, &measure.time).await?;
        // The rows of every period's window: from a window before the first period (from the
        // beginning, without a window) to the end of the last.
        let lower = match (periods.first(), window) {
            (Some(first), Some(days)) => Some(*first - Days::new(u64::from(days))),
            _ => None,
        };
        let upper = periods.last().map(|p| next_period(*p, grain));
        let mut conditions = time_range(&local, lower, upper);
        conditions.extend(where_expr.map(|e| format!("({e})")));
        conditions.extend(measure.filter.as_ref().map(|f| format!("({f})")));
        if let Some(key) = sql::distinct_count_key(&measure.measure)
            && self.bitmap_key_name(&measure.table, &key).await.is_some()
        {
            let rows = Rows {
                local: &local,
                conditions: &conditions,
            };
            let part = self
                .run_window_sets(ctx, w, periods, index, &key, rows)
                .await;
            return bad_times(part, kind, metric, &measure.time);
        }
        let bounds = |period: NaiveDate| {
            let (start, end) = window_of(period, grain, window);
            // Without a window the start is not compared; any valid timestamp does.
            (start.unwrap_or(period), end)
        };
        let (spine_rows, on) = match window {
            // A window of whole days: the spine lists each period's days, and a row joins the
            // periods of its local day by equality, a hash join on the spine instead of a
            // comparison of every row with every period.
            Some(days) if periods.len() * days as usize <= MAX_DAY_SPINE => {
                let rows: Vec<String> = periods
                    .iter()
                    .flat_map(|p| {
                        let (start, end) = bounds(*p);
                        start
                            .iter_days()
                            .take_while(move |d| *d < end)
                            .map(move |d| format!("({}, {})", date_literal(*p), date_literal(d)))
                    })
                    .collect();
                let min = date_literal(NaiveDate::MIN);
                (
                    spine(&[(PERIOD, &min), (DAY, &min)], &rows),
                    vec![format!("CAST({local} AS DATE) = s.{}", quote_ident(DAY))],
                )
            }
            // A running total, or a window so long that the days would make a large spine:
            // each row is compared with each period's bounds, both literals in the spine.
            _ => {
                let rows: Vec<String> = periods
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
                let min = timestamp_literal(NaiveDate::MIN);
                let columns = [
                    (PERIOD, &date_literal(NaiveDate::MIN)),
                    (START, &min),
                    (END, &min),
                ];
                let mut on = vec![format!("{local} < s.{}", quote_ident(END))];
                if window.is_some() {
                    on.push(format!("{local} >= s.{}", quote_ident(START)));
                }
                (spine(&columns, &rows), on)
            }
        };
        let mut select = vec![format!("s.{0} AS {0}", quote_ident(PERIOD))];
        let mut group_by = vec![format!("s.{}", quote_ident(PERIOD))];
        push_breakdown(dims, &mut select, &mut group_by);
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

    /// A trailing window (or a running total) of a distinct count by bitmap: one grouping by
    /// local day reads each day's set of keys ([`distinct::SET_NAME`]); each period counts
    /// the union of the sets of its window's days. The table is read once, and no row is
    /// joined to the periods whose window holds its day.
    async fn run_window_sets(
        &self,
        ctx: &PartContext<'_>,
        w: &WindowMetric<'_>,
        periods: &[NaiveDate],
        index: usize,
        key: &str,
        rows: Rows<'_>,
    ) -> Result<Part> {
        let (metric, measure) = (w.metric, w.measure);
        let day = format!("CAST({} AS DATE)", rows.local);
        let mut select = vec![format!("{day} AS {}", quote_ident(DAY))];
        let mut group_by = vec![day];
        push_breakdown(ctx.dims, &mut select, &mut group_by);
        select.push(format!(
            "{}({key}) AS {}",
            distinct::SET_NAME,
            quote_ident(SET)
        ));
        let sql = format!(
            "SELECT {} FROM {}{} GROUP BY {}",
            select.join(", "),
            measure.table.sql(),
            where_clause(rows.conditions),
            group_by.join(", ")
        );
        let days = self
            .collect_part(
                sql,
                index,
                measure.table.to_string(),
                vec![metric.name.clone()],
            )
            .await?;
        let batch = count_windows(
            &days,
            periods,
            |period| window_of(period, ctx.grain, w.days),
            &metric.name,
            ctx.for_cache,
        )?;
        Ok(Part {
            schema: batch.schema(),
            batches: vec![batch],
            ..days
        })
    }

    pub(crate) async fn run_sql_metric(
        &self,
        ctx: &PartContext<'_>,
        metric: &Metric,
        (sql, sql_grain): (&str, Grain),
        (lower, upper): (Option<NaiveDate>, Option<NaiveDate>),
        index: usize,
    ) -> Result<Part> {
        let (grain, where_expr) = (ctx.grain, ctx.where_expr);
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
        for dim in ctx.dims {
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
}

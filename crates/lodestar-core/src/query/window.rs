//! Trailing windows (cumulative metrics over the last N days) and SQL metrics: series that
//! are not one grouped scan.

use chrono::{Days, NaiveDate};

use crate::project::error::{Error, Result};
use crate::project::model::{Grain, Metric, quote_ident};
use crate::project::periods::next_period;
use crate::query::engine::Engine;
use crate::query::plan::{END, LAST, PERIOD, PartContext, START, WindowMetric, parse_fragment};
use crate::query::request::{Field as RequestField, words};
use crate::query::scan::{Part, bad_times, time_range, where_clause};
use crate::query::sql::{date_literal, period_of, timestamp_literal};

/// The most (period, day) pairs a trailing window's spine lists before the scan compares rows
/// with each period's bounds instead: a year of days with a 28-day window is 10,220.
const MAX_DAY_SPINE: usize = 50_000;

/// A local day of a period's trailing window, beside the period in the spine.
const DAY: &str = "__day";

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
        // Each period's window is `[start, end)`.
        let bounds = |period: NaiveDate| {
            let end = next_period(period, grain);
            // Without a window the start is not compared; any valid timestamp does.
            let start = window.map_or(period, |days| end - Days::new(u64::from(days)));
            (start, end)
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

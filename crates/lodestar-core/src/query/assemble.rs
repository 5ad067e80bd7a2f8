//! Assembling parts into the result: a time spine × dimension values, each base series
//! joined in, ratio and derived metrics on top, then the result's documented types.

use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array, Float64Array, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema};
use datafusion::sql::sqlparser::ast::{Expr, visit_expressions_mut};
use indexmap::IndexMap;

use crate::project::error::Result;
use crate::project::model::{CumulativeOver, Grain, Metric, MetricKind, quote_ident};
use crate::project::periods::next_period;
use crate::project::periods::{from_days, to_days};
use crate::query::plan::{END, PERIOD, PartContext};
use crate::query::scan::Part;
use crate::query::sql::{self, date_literal};
use crate::query::table::MetricTable;

pub(crate) fn part_bounds(parts: &[Part]) -> Option<(NaiveDate, NaiveDate)> {
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

pub(crate) fn merge_bounds(
    a: Option<(NaiveDate, NaiveDate)>,
    b: Option<(NaiveDate, NaiveDate)>,
) -> Option<(NaiveDate, NaiveDate)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (a, b) => a.or(b),
    }
}

pub(crate) fn spine_batch(periods: &[NaiveDate], grain: Grain) -> Result<RecordBatch> {
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
pub(crate) fn assemble(
    ctx: &PartContext<'_>,
    closure: &[&Metric],
    requested: &[&str],
    parts: &[Part],
    series: &IndexMap<(String, Grain), String>,
    periods: &[NaiveDate],
) -> String {
    let (dims, grain) = (ctx.dims, ctx.grain);
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
pub(crate) fn derived_sql(expr: &str, references: &[String]) -> String {
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
pub(crate) fn finish(
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

pub(crate) fn finite_or_null(array: &ArrayRef) -> ArrayRef {
    let floats = array.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let out: Float64Array = floats.iter().map(|v| v.filter(|x| x.is_finite())).collect();
    Arc::new(out)
}

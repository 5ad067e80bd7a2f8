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
    // Each comparison in parentheses: the SQL parser reads `x IS NOT DISTINCT FROM y AND z`
    // as `x IS NOT DISTINCT FROM (y AND z)`.
    let dims_match = |a: &str, b: &str| -> String {
        dim_cols
            .iter()
            .map(|d| format!(" AND ({a}.{d} IS NOT DISTINCT FROM {b}.{d})"))
            .collect()
    };
    // A part's rows by period and dimensions. With dimensions, the period is compared the way
    // they are (it is never null), so that every comparison is a key of one hash join: mixed
    // with `=`, the dimensions would be a filter run on every pair of rows of a period.
    let same_row = |part: &str| -> String {
        if dim_cols.is_empty() {
            format!("{part}.{period} = g.{period}")
        } else {
            format!(
                "({part}.{period} IS NOT DISTINCT FROM g.{period}){}",
                dims_match(part, "g")
            )
        }
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
                joins.push(format!(" LEFT JOIN {cte} ON {}", same_row(&cte)));
                columns.push(format!("COALESCE({cte}.{name}, 0) AS {name}"));
            }
            MetricKind::Simple(_)
            | MetricKind::Cumulative(_)
            | MetricKind::Sql { .. }
            | MetricKind::Retention(_) => {
                let part = &series[&(metric.name.clone(), grain)];
                if !joined.contains(&part.as_str()) {
                    joined.push(part);
                    joins.push(format!(" LEFT JOIN {part} ON {}", same_row(part)));
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use datafusion::arrow::array::Int64Array;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::project::config;
    use crate::query::plan::closure;

    const PROJECT: &str = "\
sources:
  app: { connector: files, path: data }
metrics:
  orders: { table: app.orders, time: ordered_at, measure: count(*), dimensions: [country] }
  revenue: { table: app.orders, time: ordered_at, measure: sum(amount), dimensions: [country] }
  aov: { ratio: { numerator: revenue, denominator: orders } }
  doubled: { derived: revenue * 2 + orders }
";

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, d).unwrap()
    }

    /// One scan's part, as a scan would return it: `__period`, the dimensions, the metrics.
    fn part(dims: &[&str], rows: &[(NaiveDate, &[&str], i64, f64)]) -> Part {
        let mut fields = vec![Field::new(PERIOD, DataType::Date32, false)];
        fields.extend(dims.iter().map(|d| Field::new(*d, DataType::Utf8, true)));
        fields.push(Field::new("orders", DataType::Int64, true));
        fields.push(Field::new("revenue", DataType::Float64, true));
        let schema = Arc::new(Schema::new(fields));
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Date32Array::from_iter_values(
            rows.iter().map(|r| to_days(r.0)),
        ))];
        for i in 0..dims.len() {
            columns.push(Arc::new(
                datafusion::arrow::array::StringArray::from_iter_values(
                    rows.iter().map(|r| r.1[i]),
                ),
            ));
        }
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.2),
        )));
        columns.push(Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.3),
        )));
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        Part {
            name: "part_0".into(),
            batches: vec![batch],
            schema,
            scanned: None,
        }
    }

    /// Assembles `requested` from one part over `periods`, as `Engine::compute` does.
    async fn assembled(
        requested: &[&str],
        dims: &[String],
        part: Part,
        periods: &[NaiveDate],
    ) -> MetricTable {
        let project =
            config::parse(PROJECT, Path::new("lodestar.yaml"), &config::env_from(&[])).unwrap();
        let closure = closure(&project, requested).unwrap();
        let ctx = PartContext {
            grain: Grain::Day,
            dims,
            where_expr: None,
            for_cache: false,
        };
        let mut series = IndexMap::new();
        for metric in ["orders", "revenue"] {
            series.insert((metric.to_string(), Grain::Day), part.name.clone());
        }
        let assembly = SessionContext::new();
        let table = MemTable::try_new(part.schema.clone(), vec![part.batches.clone()]).unwrap();
        assembly
            .register_table(part.name.as_str(), Arc::new(table))
            .unwrap();
        assembly
            .register_batch("spine", spine_batch(periods, Grain::Day).unwrap())
            .unwrap();
        let sql = assemble(&ctx, &closure, requested, &[part], &series, periods);
        let batches = assembly.sql(&sql).await.unwrap().collect().await.unwrap();
        finish(Grain::Day, dims, requested, &closure, &batches).unwrap()
    }

    #[tokio::test]
    async fn ratios_and_derived_metrics_are_computed_from_their_parents_per_period() {
        // 4 May: 2 orders, 30.0; 5 May: 1 order, 5.0.
        let part = part(&[], &[(day(4), &[], 2, 30.0), (day(5), &[], 1, 5.0)]);
        let table = assembled(&["orders", "aov", "doubled"], &[], part, &[day(4), day(5)]).await;
        assert_eq!(table.periods(), [day(4), day(5)]);
        assert_eq!(table.values("orders").unwrap(), [Some(2.0), Some(1.0)]);
        // aov = revenue / orders: 30 / 2, 5 / 1.
        assert_eq!(table.values("aov").unwrap(), [Some(15.0), Some(5.0)]);
        // doubled = revenue * 2 + orders: 60 + 2, 10 + 1.
        assert_eq!(table.values("doubled").unwrap(), [Some(62.0), Some(11.0)]);
        // Integer aggregates stay integers; ratios are floats.
        assert_eq!(
            table.batch.column_by_name("orders").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(
            table.batch.column_by_name("aov").unwrap().data_type(),
            &DataType::Float64
        );
    }

    #[tokio::test]
    async fn a_breakdown_joins_each_dimension_value_to_its_own_rows() {
        // 4 May: FR 2 orders 30.0, DE 1 order 20.0; 5 May: FR 1 order 5.0.
        let part = part(
            &["country"],
            &[
                (day(4), &["FR"], 2, 30.0),
                (day(4), &["DE"], 1, 20.0),
                (day(5), &["FR"], 1, 5.0),
            ],
        );
        let dims = vec!["country".to_string()];
        let table = assembled(&["aov"], &dims, part, &[day(4), day(5)]).await;
        let countries = cast(
            table.batch.column_by_name("country").unwrap(),
            &DataType::Utf8,
        )
        .unwrap();
        let countries: Vec<Option<&str>> = countries.as_string::<i32>().iter().collect();
        let rows: Vec<(NaiveDate, Option<&str>, Option<f64>)> = table
            .periods()
            .into_iter()
            .zip(countries)
            .zip(table.values("aov").unwrap())
            .map(|((p, c), v)| (p, c, v))
            .collect();
        // The spine × the dimension values: 2 days × 2 countries, DE with no rows on the 5th.
        assert_eq!(rows.len(), 4);
        // FR: 30 / 2, then 5 / 1; DE: 20 / 1 on the 4th.
        assert!(rows.contains(&(day(4), Some("DE"), Some(20.0))));
        assert!(rows.contains(&(day(4), Some("FR"), Some(15.0))));
        assert!(rows.contains(&(day(5), Some("FR"), Some(5.0))));
    }
}

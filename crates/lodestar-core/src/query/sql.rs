//! SQL building blocks the engine compiles requests into: local time, periods, fused filters.
//!
//! Everything here produces DataFusion SQL text from checked inputs. Identifiers are always
//! quoted with [`quote_ident`] and user SQL fragments are parsed before they are spliced in,
//! so a fragment cannot escape the expression it was written for.

use std::ops::ControlFlow;

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    visit_expressions, visit_expressions_mut,
};

use crate::project::model::{Grain, quote_ident};
use crate::project::periods::week_shift_days;

/// User fragments are parsed with bounded work before they are spliced into SQL text.
pub(crate) use crate::query::parse::parse_expr;

/// How a time column's values become local wall-clock timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeKind {
    /// A timestamp without zone: taken as UTC.
    Naive,
    /// A timestamp with a zone: an instant.
    Zoned,
    /// A calendar date: already local.
    Date,
    /// ISO-8601 text, with or without an offset (without: UTC).
    Text,
}

impl TimeKind {
    pub(crate) fn of(data_type: &DataType) -> Option<TimeKind> {
        match data_type {
            DataType::Timestamp(_, None) => Some(TimeKind::Naive),
            DataType::Timestamp(_, Some(_)) => Some(TimeKind::Zoned),
            DataType::Date32 | DataType::Date64 => Some(TimeKind::Date),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(TimeKind::Text),
            DataType::Dictionary(_, value) => match TimeKind::of(value) {
                Some(TimeKind::Text) => Some(TimeKind::Text),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The column as a naive timestamp of local wall-clock time in `tz`.
pub(crate) fn local_time(column: &str, kind: TimeKind, tz: Tz) -> String {
    let col = quote_ident(column);
    let utc_instant = match kind {
        TimeKind::Date => return format!("CAST({col} AS TIMESTAMP)"),
        TimeKind::Naive if tz == Tz::UTC => return col,
        TimeKind::Text if tz == Tz::UTC => return format!("CAST({col} AS TIMESTAMP)"),
        TimeKind::Naive => col,
        TimeKind::Text => format!("CAST({col} AS TIMESTAMP)"),
        TimeKind::Zoned => {
            return format!("to_local_time(arrow_cast({col}, '{}'))", zoned_type(tz));
        }
    };
    format!(
        "to_local_time(arrow_cast(arrow_cast({utc_instant}, '{}'), '{}'))",
        zoned_type(Tz::UTC),
        zoned_type(tz)
    )
}

/// Whether [`local_time`] leaves the column as it is (at most cast), so that a bound on the
/// local time is a bound on the column, which a source can prune date partitions by. Text is
/// left out: its min and max are by text, not by time.
pub(crate) fn local_time_is_column(kind: TimeKind, tz: Tz) -> bool {
    match kind {
        TimeKind::Date => true,
        TimeKind::Naive => tz == Tz::UTC,
        TimeKind::Zoned | TimeKind::Text => false,
    }
}

fn zoned_type(tz: Tz) -> String {
    format!("Timestamp(Nanosecond, Some(\"{}\"))", tz.name())
}

/// The local start date of the period a local timestamp falls in, as a DATE.
pub(crate) fn period_of(local: &str, grain: Grain, week_start: Weekday) -> String {
    let shift = week_shift_days(week_start);
    if grain == Grain::Week && shift != 0 {
        // date_trunc cuts weeks on Mondays: move the week start onto a Monday and back.
        format!(
            "CAST(date_trunc('week', {local} + INTERVAL '{shift} days') - INTERVAL '{shift} days' AS DATE)"
        )
    } else {
        format!("CAST(date_trunc('{grain}', {local}) AS DATE)")
    }
}

pub(crate) fn timestamp_literal(date: NaiveDate) -> String {
    format!("TIMESTAMP '{date} 00:00:00'")
}

pub(crate) fn date_literal(date: NaiveDate) -> String {
    format!("DATE '{date}'")
}

/// Adds `FILTER (WHERE filter)` to every aggregate call of `measure`, so that several measures
/// with different filters can share one scan. `is_aggregate` tells aggregate functions apart.
pub(crate) fn filtered_measure(
    measure: &Expr,
    filter: &Expr,
    is_aggregate: &dyn Fn(&str) -> bool,
) -> Expr {
    let mut measure = measure.clone();
    let _ = visit_expressions_mut(&mut measure, |e| {
        if let Expr::Function(f) = e
            && f.over.is_none()
            && is_aggregate(&f.name.to_string().to_ascii_lowercase())
        {
            let added = Expr::Nested(Box::new(filter.clone()));
            f.filter = Some(Box::new(match f.filter.take() {
                Some(existing) => and(Expr::Nested(existing), added),
                None => added,
            }));
        }
        ControlFlow::<()>::Continue(())
    });
    measure
}

/// The argument of a measure that is exactly `count(DISTINCT arg)`.
///
/// A distinct count keeps every value it has seen per period, so the engine computes it as a
/// grouping by the value (which can spill) and counts the groups, the way DataFusion rewrites
/// a query with a single distinct aggregate. The scan's other measures ride along in that
/// grouping as partial aggregates ([`split_aggregates`]).
pub(crate) fn distinct_count_arg(measure: &Expr) -> Option<&Expr> {
    let Expr::Function(f) = measure else {
        return None;
    };
    let plain = f.over.is_none()
        && f.filter.is_none()
        && f.within_group.is_empty()
        && f.null_treatment.is_none()
        && matches!(f.parameters, FunctionArguments::None);
    if !plain || !f.name.to_string().eq_ignore_ascii_case("count") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if list.duplicate_treatment != Some(DuplicateTreatment::Distinct) || !list.clauses.is_empty() {
        return None;
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => Some(arg),
        _ => None,
    }
}

/// The key (its SQL) of a measure, given as SQL text, that is exactly `count(DISTINCT key)`.
pub(crate) fn distinct_count_key(measure: &str) -> Option<String> {
    parse_expr(measure)
        .ok()
        .and_then(|e| distinct_count_arg(&e).map(ToString::to_string))
}

/// A measure taken apart for a two-level aggregation: its aggregate calls, each computed per
/// group of a finer grouping (`partials`, as `call AS alias`), and the expression that
/// combines them per coarser group (`combined`, reading the aliases).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Split {
    pub(crate) partials: Vec<(Expr, String)>,
    pub(crate) combined: Expr,
}

/// `measure` as partial aggregates and their combination, when every aggregate call in it
/// combines exactly: `sum` and `count` (summed), `min` and `max`, each without `DISTINCT`,
/// ordering or a window (a `FILTER` stays with the partial). `None` for any other aggregate
/// (`avg`, a distinct count, a percentile, …). `alias(i)` names the `i`th partial.
pub(crate) fn split_aggregates(
    measure: &Expr,
    alias: &dyn Fn(usize) -> String,
    is_aggregate: &dyn Fn(&str) -> bool,
) -> Option<Split> {
    let mut combined = measure.clone();
    let mut partials = Vec::new();
    let flow = visit_expressions_mut(&mut combined, |e| {
        let Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_ascii_lowercase();
        if f.over.is_some() || !is_aggregate(&name) {
            return ControlFlow::Continue(());
        }
        let outer = match name.as_str() {
            "sum" | "count" => "sum",
            "min" => "min",
            "max" => "max",
            _ => return ControlFlow::Break(()),
        };
        let plain_args = match &f.args {
            FunctionArguments::List(list) => {
                list.duplicate_treatment != Some(DuplicateTreatment::Distinct)
                    && list.clauses.is_empty()
            }
            FunctionArguments::None => true,
            FunctionArguments::Subquery(_) => false,
        };
        if !plain_args
            || !f.within_group.is_empty()
            || f.null_treatment.is_some()
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return ControlFlow::Break(());
        }
        let name = alias(partials.len());
        let Ok(combine) = parse_expr(&format!("{outer}({})", quote_ident(&name))) else {
            return ControlFlow::Break(());
        };
        partials.push((std::mem::replace(e, combine), name));
        ControlFlow::Continue(())
    });
    (flow.is_continue() && !partials.is_empty()).then_some(Split { partials, combined })
}

pub(crate) fn and(left: Expr, right: Expr) -> Expr {
    Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::And,
        right: Box::new(right),
    }
}

pub(crate) fn or(left: Expr, right: Expr) -> Expr {
    Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::Or,
        right: Box::new(right),
    }
}

/// What a request's `where` filter refers to; it may only name columns, not subqueries.
pub(crate) fn filter_columns(expr: &Expr) -> Result<Vec<String>, String> {
    let mut columns = Vec::new();
    let flow = visit_expressions(expr, |e| match e {
        Expr::Identifier(ident) => {
            if !columns.contains(&ident.value) {
                columns.push(ident.value.clone());
            }
            ControlFlow::Continue(())
        }
        Expr::CompoundIdentifier(parts) => ControlFlow::Break(format!(
            "`{}`: name dimensions without a table or source prefix",
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join(".")
        )),
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
            ControlFlow::Break("subqueries are not allowed in a filter".to_string())
        }
        _ => ControlFlow::Continue(()),
    });
    match flow {
        ControlFlow::Break(message) => Err(message),
        ControlFlow::Continue(()) => Ok(columns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_go_into_every_aggregate_call() {
        let measure = parse_expr("sum(amount) / count(*)").unwrap();
        let filter = parse_expr("status = 'paid'").unwrap();
        let out = filtered_measure(&measure, &filter, &|name| name == "sum" || name == "count");
        assert_eq!(
            out.to_string(),
            "sum(amount) FILTER (WHERE (status = 'paid')) / count(*) FILTER (WHERE (status = 'paid'))"
        );
    }

    #[test]
    fn only_a_bare_distinct_count_is_one() {
        let arg = |sql: &str| {
            distinct_count_arg(&parse_expr(sql).expect("parses")).map(ToString::to_string)
        };
        assert_eq!(arg("count(DISTINCT user_id)").as_deref(), Some("user_id"));
        assert_eq!(
            arg("COUNT(distinct lower(email))").as_deref(),
            Some("lower(email)")
        );
        assert_eq!(arg("count(user_id)"), None);
        assert_eq!(arg("count(DISTINCT user_id) * 2"), None);
        assert_eq!(arg("count(DISTINCT user_id) FILTER (WHERE x > 1)"), None);
        assert_eq!(arg("sum(DISTINCT amount)"), None);
    }

    #[test]
    fn sums_counts_minima_and_maxima_split_into_partials() {
        let is_aggregate = |name: &str| ["sum", "count", "min", "max", "avg"].contains(&name);
        let split = |sql: &str| {
            split_aggregates(
                &parse_expr(sql).unwrap(),
                &|i| format!("__a{i}"),
                &is_aggregate,
            )
            .map(|s| {
                let partials: Vec<String> = s
                    .partials
                    .iter()
                    .map(|(call, alias)| format!("{call} AS {alias}"))
                    .collect();
                (partials, s.combined.to_string())
            })
        };
        assert_eq!(
            split("round(sum(price * nights) FILTER (WHERE ok) / count(*), 2)").unwrap(),
            (
                vec![
                    "sum(price * nights) FILTER (WHERE ok) AS __a0".to_string(),
                    "count(*) AS __a1".to_string()
                ],
                r#"round(sum("__a0") / sum("__a1"), 2)"#.to_string()
            )
        );
        assert_eq!(
            split("max(t) - min(t)").unwrap().1,
            r#"max("__a0") - min("__a1")"#
        );
        // Averages, distinct aggregates and no aggregate at all do not split.
        assert_eq!(split("avg(amount)"), None);
        assert_eq!(split("sum(DISTINCT amount)"), None);
        assert_eq!(split("count(*) + count(DISTINCT user_id)"), None);
        assert_eq!(split("1"), None);
    }

    #[test]
    fn scalar_functions_are_left_alone() {
        let measure = parse_expr("round(sum(x), 2)").unwrap();
        let filter = parse_expr("x > 0").unwrap();
        let out = filtered_measure(&measure, &filter, &|name| name == "sum");
        assert_eq!(out.to_string(), "round(sum(x) FILTER (WHERE (x > 0)), 2)");
    }

    #[test]
    fn trailing_sql_is_refused() {
        assert!(parse_expr("country = 'FR'; DROP TABLE x").is_err());
        assert!(parse_expr("country = 'FR' OR 1 = 1").is_ok());
    }

    #[test]
    fn request_filters_name_bare_columns_only() {
        let cols = filter_columns(&parse_expr("country = 'FR' AND platform IN ('ios')").unwrap());
        assert_eq!(cols.unwrap(), vec!["country", "platform"]);
        assert!(filter_columns(&parse_expr("app.users.country = 'FR'").unwrap()).is_err());
        assert!(filter_columns(&parse_expr("country IN (SELECT 1)").unwrap()).is_err());
    }

    #[test]
    fn weeks_shift_onto_mondays() {
        assert_eq!(
            period_of("t", Grain::Week, Weekday::Sun),
            "CAST(date_trunc('week', t + INTERVAL '1 days') - INTERVAL '1 days' AS DATE)"
        );
        assert_eq!(
            period_of("t", Grain::Month, Weekday::Sun),
            "CAST(date_trunc('month', t) AS DATE)"
        );
    }
}

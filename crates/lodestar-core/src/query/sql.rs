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
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::project::model::{Grain, quote_ident};
use crate::project::periods::week_shift_days;

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

/// Parses one SQL expression, refusing trailing text (`x = 1; DROP ...`).
pub(crate) fn parse_expr(sql: &str) -> Result<Expr, String> {
    check_name_parts(sql)?;
    let message = |e: datafusion::sql::sqlparser::parser::ParserError| {
        let text = e.to_string();
        text.strip_prefix("sql parser error: ")
            .map(str::to_string)
            .unwrap_or(text)
    };
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .map_err(message)?;
    let expr = parser.parse_expr().map_err(message)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(format!("unexpected `{}` after the expression", next.token));
    }
    Ok(expr)
}

/// The most parts a dotted name may have (`catalog.schema.table.column` has four).
///
/// sqlparser's expression parser backtracks at each `.` of a dotted name, in time exponential
/// in their number: 30 parts took minutes (found by the `formula` fuzz target,
/// docs/fuzzing.md). So longer names are refused before parsing, by its linear tokenizer.
const MAX_NAME_PARTS: usize = 8;

fn check_name_parts(sql: &str) -> Result<(), String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| e.to_string())?;
    // A chain is any tokens joined by periods or subscripts (`a.b[c].d`), not only words:
    // sqlparser's compound expressions go on through a placeholder (`$.a.b`), a quoted name,
    // a parenthesis or a bracket the same way.
    let (mut parts, mut after_period) = (0usize, false);
    for token in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        match token {
            // `a.[b]` goes on too: joiners in a row keep the chain.
            Token::Period | Token::LBracket => after_period = true,
            _ => {
                parts = if after_period { parts + 1 } else { 1 };
                after_period = false;
            }
        }
        if parts > MAX_NAME_PARTS {
            return Err(format!(
                "a dotted name has more than {MAX_NAME_PARTS} parts; write column names, or source.table.column"
            ));
        }
    }
    Ok(())
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
/// Such a measure is not fused with others: a distinct count keeps every value it has seen
/// per period, so the engine computes it as a grouping by the value (which can spill) and
/// counts the groups, the way DataFusion rewrites a query with a single distinct aggregate.
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

    /// A long dotted name is refused at once instead of sending sqlparser into exponential
    /// backtracking (the fuzz input of fuzz/regressions/formula/ ran for minutes).
    #[test]
    fn long_dotted_names_are_refused_before_parsing() {
        let slow = "s *ookii.ooki.gg.oki.oog.oki.ooki.gg.ki.gg.oki.g.gg.i.gg.oki.oog.oki.ooki.gg.ki.gg.oki.g.gg.oki.g.oki.g.";
        let error = parse_expr(slow).unwrap_err();
        assert!(error.contains("more than 8 parts"), "{error}");
        // The second hang the fuzz target found: chains of words joined through placeholders.
        let slow = "$.ccccypy.c.kccp.cu.nckbo.py.c.kcc.$.ccccypy.c.kpccc.c.knkbo.py.c.kcc.$.ccccypy.c.kpccc.c.knubo.py.c.kcc.->->a.";
        let error = parse_expr(slow).unwrap_err();
        assert!(error.contains("more than 8 parts"), "{error}");
        // The third: chains joined through subscripts.
        let slow = "[obay.ay.pe.kpd.ki$[ay.i$y.pe.ky.pea$.pe.kpd.ki$[ay.$aobay.ay.pe.kpd.ki$[ay.i$y.pe.ky.pea$.pe.kpd.ki$[ay.$ay.pe.ky.pea$.%:.%:y.pe.ky.pea$.%:.%:";
        let error = parse_expr(slow).unwrap_err();
        assert!(error.contains("more than 8 parts"), "{error}");
        // The fourth: a period then a subscript (`v5.[m`).
        let slow = "ip_qpv0.v5.[m.p4.M[p.erer_qpv0.v5.[qpv0.v5.[m.p4.pv0.v5.[m.p4.M[p.erer_qpv1.v5.[m.p4.m.p4.pv0.v5.[m.p4.M[p.erer_qpv1.v5.[m.p4.M[m.p4.M[p.ere1";
        let error = parse_expr(slow).unwrap_err();
        assert!(error.contains("more than 8 parts"), "{error}");
        assert!(parse_expr("a[1].b + [1, 2, 3][2] + t.x[2]").is_ok());
        assert!(parse_expr("\"cat\".schema.tbl.col + t.x * 1.5").is_ok());
        assert!(parse_expr("a.b.c.d.e.f.g.h").is_ok());
    }

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

//! Filters pushed to PostgreSQL: DataFusion expressions turned into SQL by DataFusion's
//! unparser, with identifiers quoted and every value bound, never written into the SQL text.
//!
//! Only filters that give the same rows on both engines are pushed: comparisons, `IN`,
//! `BETWEEN`, `LIKE`, `IS NULL`, and `AND`/`OR`/`NOT` over them, on columns whose values read
//! without loss; text only by equality and `LIKE` (`<` follows the column's collation in
//! Postgres); time-range predicates, including Lodestar's local-time periods, on timestamp and
//! date columns. Anything else stays in DataFusion.
//!
//! Values become `$n` placeholders in the unparsed SQL. The scan runs that SQL inside
//! `COPY (...) TO STDOUT`, and COPY takes no bind parameters, so the values travel as bound
//! parameters of `SELECT set_config('lodestar.pN', $N, true)` on the same transaction, and the
//! placeholder `$n` becomes `current_setting('lodestar.pn')::TYPE` in the COPY: the server
//! parses each value with the type's input function, so a value is never read as SQL.

use std::ops::ControlFlow;

use lodestar_connector_api::datafusion::arrow::datatypes::DataType;
use lodestar_connector_api::datafusion::arrow::temporal_conversions::{
    date32_to_datetime, timestamp_us_to_datetime,
};
use lodestar_connector_api::datafusion::common::{Column, ScalarValue};
use lodestar_connector_api::datafusion::logical_expr::expr::{
    InList, Like, Placeholder, ScalarFunction,
};
use lodestar_connector_api::datafusion::logical_expr::{
    Between, BinaryExpr, Cast, Expr, Operator, TableProviderFilterPushDown, TryCast,
};
use lodestar_connector_api::datafusion::sql::sqlparser::ast::{self, Value, visit_expressions_mut};
use lodestar_connector_api::datafusion::sql::sqlparser::dialect::PostgreSqlDialect as ParserDialect;
use lodestar_connector_api::datafusion::sql::sqlparser::parser::Parser;
use lodestar_connector_api::datafusion::sql::unparser::Unparser;
use lodestar_connector_api::datafusion::sql::unparser::dialect::PostgreSqlDialect;

use crate::catalog::TableInfo;
use crate::types::Kind;

/// A value bound to the query: its text form and the PostgreSQL type it is parsed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub text: String,
    pub pg_type: &'static str,
}

/// The pushed filters of one scan, as SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Where {
    /// The condition as run inside the COPY: values read from the settings the parameters
    /// were bound to (empty: no filter).
    pub sql: String,
    /// The same condition with `$n` placeholders, for messages and EXPLAIN.
    pub display: String,
    pub params: Vec<Param>,
}

/// How far `filter` can be pushed to this table.
pub fn support(table: &TableInfo, filter: &Expr) -> TableProviderFilterPushDown {
    let mut rewriter = Rewriter::new(table);
    match rewriter.predicate(filter) {
        Some(_) if rewriter.exact => TableProviderFilterPushDown::Exact,
        Some(_) => TableProviderFilterPushDown::Inexact,
        None => TableProviderFilterPushDown::Unsupported,
    }
}

/// The SQL of the filters that can be pushed (the others are left out: DataFusion applies
/// them), joined by AND.
pub fn translate(table: &TableInfo, filters: &[Expr]) -> Where {
    let mut rewriter = Rewriter::new(table);
    let pushed: Vec<Expr> = filters
        .iter()
        .filter_map(|f| rewriter.predicate(f))
        .collect();
    let Some(condition) = pushed.into_iter().reduce(|a, b| a.and(b)) else {
        return Where::default();
    };
    let unparser = Unparser::new(&PostgreSqlDialect {});
    let Ok(mut ast) = unparser.expr_to_sql(&condition) else {
        // Every construct produced above unparses; should one not, DataFusion still filters.
        return Where::default();
    };
    let display = ast.to_string();
    let params = rewriter.params;
    let _ = visit_expressions_mut(&mut ast, |e: &mut ast::Expr| {
        if let ast::Expr::Value(v) = e
            && let Value::Placeholder(id) = &v.value
            && let Some(n) = id.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            && let Some(param) = params.get(n.wrapping_sub(1))
        {
            *e = setting_reference(n, param.pg_type);
        }
        ControlFlow::<()>::Continue(())
    });
    Where {
        sql: ast.to_string(),
        display,
        params,
    }
}

/// The name of the setting parameter `n` is bound to.
pub fn setting_name(n: usize) -> String {
    format!("lodestar.p{n}")
}

/// `current_setting('lodestar.pN')::TYPE`, parsed from text this module writes itself.
fn setting_reference(n: usize, pg_type: &str) -> ast::Expr {
    let text = format!("current_setting('{}')::{pg_type}", setting_name(n));
    Parser::new(&ParserDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .expect("a constant expression of this module parses")
}

/// Lodestar's own time-zone conversion of a timestamp column, `to_local_time(col)`; pushed as
/// a range on the column.
const TO_LOCAL_TIME: &str = "to_local_time";
/// The largest offset of any time zone from UTC is 14 hours; a day and two hours more than
/// covers it, so a widened range never drops a row whatever the zone rules say.
const ZONE_MARGIN_MICROS: i64 = 26 * 3600 * 1_000_000;

struct Rewriter<'a> {
    table: &'a TableInfo,
    params: Vec<Param>,
    /// False once a part is pushed in a form that may keep more rows than it should.
    exact: bool,
}

impl<'a> Rewriter<'a> {
    fn new(table: &'a TableInfo) -> Self {
        Rewriter {
            table,
            params: Vec::new(),
            exact: true,
        }
    }

    /// A boolean condition, rewritten for Postgres, or `None` if it cannot be pushed.
    fn predicate(&mut self, e: &Expr) -> Option<Expr> {
        // A failed attempt must not leave parameters or inexactness behind.
        let params = self.params.len();
        let exact = self.exact;
        let result = self.predicate_inner(e);
        if result.is_none() {
            self.params.truncate(params);
            self.exact = exact;
        }
        result
    }

    fn predicate_inner(&mut self, e: &Expr) -> Option<Expr> {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And | Operator::Or => {
                    let l = self.predicate(left)?;
                    let r = self.predicate(right)?;
                    Some(binary(l, *op, r))
                }
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq => self.comparison(left, *op, right),
                _ => None,
            },
            Expr::Not(inner) => Some(Expr::Not(Box::new(self.predicate(inner)?))),
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                // NULL is NULL whatever the type, so any column read by this scan will do.
                let column = self.any_column(inner)?;
                Some(if matches!(e, Expr::IsNull(_)) {
                    column.is_null()
                } else {
                    column.is_not_null()
                })
            }
            Expr::Column(_) => match self.operand(e)? {
                (column, Kind::Bool, false) => Some(column),
                _ => None,
            },
            Expr::InList(InList {
                expr,
                list,
                negated,
            }) => {
                let (column, kind, _) = self.column_operand(expr)?;
                let mut values = Vec::with_capacity(list.len());
                for item in list {
                    let Expr::Literal(value, _) = item else {
                        return None;
                    };
                    values.push(self.value(value, kind)?);
                }
                self.note_kind(kind);
                Some(Expr::InList(InList::new(
                    Box::new(column),
                    values,
                    *negated,
                )))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let (column, kind, _) = self.column_operand(expr)?;
                if kind == Kind::Text {
                    return None;
                }
                let (Expr::Literal(low, _), Expr::Literal(high, _)) = (low.as_ref(), high.as_ref())
                else {
                    return None;
                };
                let low = self.value(low, kind)?;
                let high = self.value(high, kind)?;
                self.note_kind(kind);
                Some(Expr::Between(Between::new(
                    Box::new(column),
                    *negated,
                    Box::new(low),
                    Box::new(high),
                )))
            }
            Expr::Like(Like {
                negated,
                expr,
                pattern,
                escape_char,
                case_insensitive: false,
            }) => {
                // ILIKE folds case by the server's locale: not pushed.
                if !matches!(escape_char, None | Some('\\')) {
                    return None;
                }
                let (column, Kind::Text, _) = self.column_operand(expr)? else {
                    return None;
                };
                let Expr::Literal(pattern, _) = pattern.as_ref() else {
                    return None;
                };
                let pattern = self.value(pattern, Kind::Text)?;
                Some(Expr::Like(Like::new(
                    *negated,
                    Box::new(column),
                    Box::new(pattern),
                    *escape_char,
                    false,
                )))
            }
            _ => None,
        }
    }

    /// `left op right` where one side reads a column and the other is a value (or a column of
    /// the same kind).
    fn comparison(&mut self, left: &Expr, op: Operator, right: &Expr) -> Option<Expr> {
        if let Some(range) = self.local_time_range(left, op, right) {
            return Some(range);
        }
        let (left, op, right) = match (left, right) {
            (Expr::Literal(..), _) => (right, op.swap()?, left),
            _ => (left, op, right),
        };
        let (column, kind, _) = self.column_operand(left)?;
        if kind == Kind::Text && !matches!(op, Operator::Eq | Operator::NotEq) {
            return None;
        }
        let other = match right {
            Expr::Literal(value, _) => self.value(value, kind)?,
            _ => {
                let (other, other_kind, _) = self.column_operand(right)?;
                if other_kind != kind {
                    return None;
                }
                other
            }
        };
        self.note_kind(kind);
        Some(binary(column, op, other))
    }

    /// Floats are compared by IEEE rules in Postgres (-0 = 0) and by total order in
    /// DataFusion: push them as a prefilter only.
    fn note_kind(&mut self, kind: Kind) {
        if kind == Kind::Float {
            self.exact = false;
        }
    }

    /// A column (possibly under casts DataFusion added), with the kind of values it compares as.
    fn column_operand(&mut self, e: &Expr) -> Option<(Expr, Kind, bool)> {
        match e {
            Expr::Literal(..) => None,
            _ => self.operand(e),
        }
    }

    /// A column reference or a cast of one; the bool is whether it is a bare column.
    fn operand(&mut self, e: &Expr) -> Option<(Expr, Kind, bool)> {
        match e {
            Expr::Column(c) => {
                let column = self.table.column(&c.name)?;
                let (kind, as_text) = column.pg.filter_kind()?;
                let reference = Expr::Column(Column::new_unqualified(&column.name));
                let reference = if as_text {
                    // Compared as the text it is read as (uuid, enum, json).
                    Expr::Cast(Cast::new(Box::new(reference), DataType::Utf8))
                } else {
                    reference
                };
                Some((reference, kind, !as_text))
            }
            Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                let data_type = field.data_type();
                let (inner, kind, _) = self.operand(expr)?;
                let target = kind_of(data_type)?;
                // Casts DataFusion adds to compare a column with a wider value are dropped:
                // Postgres compares across these types the same way, by value.
                let widening = matches!(
                    (kind, target),
                    (Kind::Int, Kind::Int | Kind::Float | Kind::Decimal)
                        | (Kind::Float, Kind::Float)
                        | (Kind::Decimal, Kind::Decimal)
                        | (Kind::Text, Kind::Text)
                        | (Kind::Date, Kind::Timestamp)
                        | (Kind::Timestamp, Kind::Timestamp)
                        | (Kind::Timestamptz, Kind::Timestamptz)
                ) && self.lossless(expr, data_type);
                widening.then_some((inner, target, false))
            }
            _ => None,
        }
    }

    /// Whether casting `e` to `to` keeps every value (integer and decimal widening only).
    fn lossless(&self, e: &Expr, to: &DataType) -> bool {
        let Some(from) = self.type_of(e) else {
            return false;
        };
        match (&from, to) {
            (f, t) if f == t => true,
            (f, DataType::Int16 | DataType::Int32 | DataType::Int64) if f.is_integer() => {
                int_width(&from) <= int_width(to)
            }
            // Integers of up to 53 bits are exact in a double.
            (DataType::Int16 | DataType::Int32, DataType::Float64) => true,
            (DataType::Float32, DataType::Float64) => true,
            (f, DataType::Decimal128(p, s)) if f.is_integer() => {
                i32::from(*p) - i32::from(*s) >= int_digits(f)
            }
            (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => {
                s2 >= s1 && i32::from(*p2) - i32::from(*s2) >= i32::from(*p1) - i32::from(*s1)
            }
            (DataType::Date32, DataType::Timestamp(_, None)) => true,
            // The unit of a timestamp changes how it is stored, not which instant it is.
            (DataType::Timestamp(_, a), DataType::Timestamp(_, b)) => a == b,
            (
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
            ) => true,
            _ => false,
        }
    }

    fn type_of(&self, e: &Expr) -> Option<DataType> {
        match e {
            Expr::Column(c) => {
                let column = self.table.column(&c.name)?;
                match column.pg.filter_kind()? {
                    (_, true) => Some(DataType::Utf8),
                    _ => Some(column.pg.arrow_type()),
                }
            }
            Expr::Cast(Cast { field, .. }) => Some(field.data_type().clone()),
            _ => None,
        }
    }

    /// Any column of the table (for IS NULL), under casts.
    fn any_column(&self, e: &Expr) -> Option<Expr> {
        match e {
            Expr::Column(c) => {
                let column = self.table.column(&c.name)?;
                Some(Expr::Column(Column::new_unqualified(&column.name)))
            }
            // A cast keeps NULL as NULL and non-NULL as non-NULL (or fails, in DataFusion).
            Expr::Cast(Cast { expr, .. }) => self.any_column(expr),
            _ => None,
        }
    }

    /// A literal compared with a column of `kind`, as a placeholder bound to its text.
    fn value(&mut self, value: &ScalarValue, kind: Kind) -> Option<Expr> {
        let (text, pg_type, value_kind) = param_of(value)?;
        let compatible = value_kind == kind
            || matches!(
                (kind, value_kind),
                (
                    Kind::Int | Kind::Decimal | Kind::Float,
                    Kind::Int | Kind::Decimal | Kind::Float
                ) | (Kind::Date, Kind::Timestamp)
            );
        if !compatible {
            return None;
        }
        Some(self.placeholder(text, pg_type))
    }

    fn placeholder(&mut self, text: String, pg_type: &'static str) -> Expr {
        self.params.push(Param { text, pg_type });
        Expr::Placeholder(Placeholder::new_with_field(
            format!("${}", self.params.len()),
            None,
        ))
    }

    /// `to_local_time(col) op TIMESTAMP '...'`, Lodestar's period bounds on a timestamp column
    /// read in the project's time zone, pushed as a range on the column itself: exact in UTC,
    /// widened by more than any zone's offset elsewhere (DataFusion then applies the bound).
    fn local_time_range(&mut self, left: &Expr, op: Operator, right: &Expr) -> Option<Expr> {
        let (call, op, literal) = match (left, right) {
            (Expr::ScalarFunction(f), Expr::Literal(v, _)) => (f, op, v),
            (Expr::Literal(v, _), Expr::ScalarFunction(f)) => (f, op.swap()?, v),
            _ => return None,
        };
        let ScalarFunction { func, args } = call;
        if func.name() != TO_LOCAL_TIME || args.len() != 1 {
            return None;
        }
        let zone = match self.type_of(&args[0])? {
            DataType::Timestamp(_, zone) => zone,
            _ => return None,
        };
        let (column, kind) = self.timestamp_column(&args[0])?;
        let micros = naive_micros(literal)?;
        let utc = zone.as_deref().is_none_or(is_utc);
        let bound = |this: &mut Self, micros: i64| -> Option<Expr> {
            let (text, pg_type) = timestamp_param(micros, kind == Kind::Timestamptz)?;
            Some(this.placeholder(text, pg_type))
        };
        if utc {
            let value = bound(self, micros)?;
            return Some(binary(column, op, value));
        }
        self.exact = false;
        match op {
            Operator::Gt | Operator::GtEq => {
                let low = bound(self, micros.checked_sub(ZONE_MARGIN_MICROS)?)?;
                Some(binary(column, Operator::GtEq, low))
            }
            Operator::Lt | Operator::LtEq => {
                let high = bound(self, micros.checked_add(ZONE_MARGIN_MICROS)?)?;
                Some(binary(column, Operator::LtEq, high))
            }
            Operator::Eq => {
                let low = bound(self, micros.checked_sub(ZONE_MARGIN_MICROS)?)?;
                let high = bound(self, micros.checked_add(ZONE_MARGIN_MICROS)?)?;
                Some(Expr::Between(Between::new(
                    Box::new(column),
                    false,
                    Box::new(low),
                    Box::new(high),
                )))
            }
            _ => None,
        }
    }

    /// The timestamp column under the casts of a time-zone conversion.
    fn timestamp_column(&self, e: &Expr) -> Option<(Expr, Kind)> {
        match e {
            Expr::Column(c) => {
                let column = self.table.column(&c.name)?;
                match column.pg.filter_kind()? {
                    (kind @ (Kind::Timestamp | Kind::Timestamptz), false) => {
                        Some((Expr::Column(Column::new_unqualified(&column.name)), kind))
                    }
                    _ => None,
                }
            }
            // Between timestamp types these casts keep the instant (naive ones are UTC).
            Expr::Cast(Cast { expr, field })
                if matches!(field.data_type(), DataType::Timestamp(..)) =>
            {
                self.timestamp_column(expr)
            }
            _ => None,
        }
    }
}

fn binary(left: Expr, op: Operator, right: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)))
}

fn is_utc(zone: &str) -> bool {
    matches!(
        zone,
        "UTC" | "utc" | "Etc/UTC" | "+00:00" | "+00" | "Z" | "GMT" | "Etc/GMT"
    )
}

fn int_width(t: &DataType) -> u32 {
    match t {
        DataType::Int8 | DataType::UInt8 => 8,
        DataType::Int16 | DataType::UInt16 => 16,
        DataType::Int32 | DataType::UInt32 => 32,
        _ => 64,
    }
}

/// Decimal digits an integer type may need.
fn int_digits(t: &DataType) -> i32 {
    match t {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        _ => 20,
    }
}

fn kind_of(t: &DataType) -> Option<Kind> {
    Some(match t {
        DataType::Boolean => Kind::Bool,
        t if t.is_integer() => Kind::Int,
        DataType::Float32 | DataType::Float64 => Kind::Float,
        DataType::Decimal128(..) => Kind::Decimal,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
        DataType::Date32 => Kind::Date,
        DataType::Timestamp(_, None) => Kind::Timestamp,
        DataType::Timestamp(_, Some(_)) => Kind::Timestamptz,
        _ => return None,
    })
}

/// A literal as Postgres input text, the type to parse it as, and how it compares; `None` for
/// values that do not round-trip exactly (NULL, sub-microsecond times, far dates).
fn param_of(value: &ScalarValue) -> Option<(String, &'static str, Kind)> {
    Some(match value {
        ScalarValue::Boolean(Some(b)) => (b.to_string(), "bool", Kind::Bool),
        ScalarValue::Int8(Some(v)) => (v.to_string(), "int8", Kind::Int),
        ScalarValue::Int16(Some(v)) => (v.to_string(), "int8", Kind::Int),
        ScalarValue::Int32(Some(v)) => (v.to_string(), "int8", Kind::Int),
        ScalarValue::Int64(Some(v)) => (v.to_string(), "int8", Kind::Int),
        ScalarValue::UInt8(Some(v)) => (v.to_string(), "int8", Kind::Int),
        ScalarValue::UInt16(Some(v)) => (v.to_string(), "int8", Kind::Int),
        ScalarValue::UInt32(Some(v)) => (v.to_string(), "int8", Kind::Int),
        ScalarValue::UInt64(Some(v)) => (v.to_string(), "numeric", Kind::Int),
        ScalarValue::Float32(Some(v)) => (
            float_text(f64::from(*v), v.to_string()),
            "float4",
            Kind::Float,
        ),
        ScalarValue::Float64(Some(v)) => (float_text(*v, v.to_string()), "float8", Kind::Float),
        ScalarValue::Decimal128(Some(v), _, scale) => {
            (decimal_text(*v, *scale), "numeric", Kind::Decimal)
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            // Postgres text cannot hold NUL; such a value matches nothing there, but let
            // DataFusion decide.
            if s.contains('\0') {
                return None;
            }
            (s.clone(), "text", Kind::Text)
        }
        ScalarValue::Date32(Some(days)) => {
            let date = date32_to_datetime(*days)?.date();
            if !(1..=9999).contains(&date.format("%Y").to_string().parse::<i32>().ok()?) {
                return None;
            }
            (date.to_string(), "date", Kind::Date)
        }
        ScalarValue::TimestampSecond(..)
        | ScalarValue::TimestampMillisecond(..)
        | ScalarValue::TimestampMicrosecond(..)
        | ScalarValue::TimestampNanosecond(..) => {
            let micros = timestamp_micros(value)?;
            let zoned = matches!(
                value,
                ScalarValue::TimestampSecond(_, Some(_))
                    | ScalarValue::TimestampMillisecond(_, Some(_))
                    | ScalarValue::TimestampMicrosecond(_, Some(_))
                    | ScalarValue::TimestampNanosecond(_, Some(_))
            );
            let (text, pg_type) = timestamp_param(micros, zoned)?;
            (
                text,
                pg_type,
                if zoned {
                    Kind::Timestamptz
                } else {
                    Kind::Timestamp
                },
            )
        }
        _ => return None,
    })
}

/// Postgres spells the special values its own way.
fn float_text(v: f64, shortest: String) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        shortest
    }
}

fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        let zeros = "0".repeat((-i32::from(scale)) as usize);
        return format!("{v}{zeros}");
    }
    let scale = scale as usize;
    let digits = v.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

/// Microseconds since the epoch of a timestamp literal, if it is a whole number of them.
fn timestamp_micros(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => (v % 1000 == 0).then_some(v / 1000),
        _ => None,
    }
}

fn naive_micros(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampSecond(_, None)
        | ScalarValue::TimestampMillisecond(_, None)
        | ScalarValue::TimestampMicrosecond(_, None)
        | ScalarValue::TimestampNanosecond(_, None) => timestamp_micros(value),
        _ => None,
    }
}

/// A timestamp as Postgres input text (ISO, parsed the same under any DateStyle): naive, or
/// an instant in UTC.
fn timestamp_param(micros: i64, zoned: bool) -> Option<(String, &'static str)> {
    let t = timestamp_us_to_datetime(micros)?;
    let year: i32 = t.format("%Y").to_string().parse().ok()?;
    if !(1..=9999).contains(&year) {
        return None;
    }
    let text = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    Some(if zoned {
        (format!("{text}+00"), "timestamptz")
    } else {
        (text, "timestamp")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column as PgColumn;
    use crate::types::PgType;
    use std::sync::Arc;

    use lodestar_connector_api::datafusion::arrow::datatypes::{Field, Schema};
    use lodestar_connector_api::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use lodestar_connector_api::datafusion::datasource::empty::EmptyTable;
    use lodestar_connector_api::datafusion::logical_expr::LogicalPlan;
    use lodestar_connector_api::datafusion::logical_expr::utils::split_conjunction;
    use lodestar_connector_api::datafusion::prelude::SessionContext;

    fn table() -> TableInfo {
        let columns = vec![
            PgColumn {
                name: "id".into(),
                pg: PgType::Int8,
            },
            PgColumn {
                name: "n".into(),
                pg: PgType::Int4,
            },
            PgColumn {
                name: "status".into(),
                pg: PgType::Text,
            },
            PgColumn {
                name: "code".into(),
                pg: PgType::Bpchar,
            },
            PgColumn {
                name: "amount".into(),
                pg: PgType::Numeric {
                    precision: 12,
                    scale: 2,
                    exact: true,
                },
            },
            PgColumn {
                name: "ratio".into(),
                pg: PgType::Float8,
            },
            PgColumn {
                name: "ts".into(),
                pg: PgType::Timestamp,
            },
            PgColumn {
                name: "at".into(),
                pg: PgType::Timestamptz,
            },
            PgColumn {
                name: "day".into(),
                pg: PgType::Date,
            },
            PgColumn {
                name: "uid".into(),
                pg: PgType::Uuid,
            },
            PgColumn {
                name: "Weird \"Name\"".into(),
                pg: PgType::Int4,
            },
        ];
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, c.pg.arrow_type(), true))
            .collect();
        TableInfo {
            schema: "public".into(),
            name: "t".into(),
            relkind: b'r',
            pages: 0,
            rows: 0.0,
            columns,
            arrow: Arc::new(Schema::new(fields)),
        }
    }

    /// The filters of `WHERE condition` as DataFusion would push them (after its coercion
    /// and simplification).
    async fn pushed(condition: &str) -> Vec<Expr> {
        let ctx = SessionContext::new();
        let t = table();
        ctx.register_table("t", Arc::new(EmptyTable::new(Arc::clone(&t.arrow))))
            .unwrap();
        let plan = ctx
            .sql(&format!("SELECT * FROM t WHERE {condition}"))
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let mut filters = Vec::new();
        plan.apply(|node| {
            if let LogicalPlan::Filter(f) = node {
                filters.extend(split_conjunction(&f.predicate).into_iter().cloned());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        filters
    }

    async fn where_of(condition: &str) -> Where {
        translate(&table(), &pushed(condition).await)
    }

    #[tokio::test]
    async fn comparisons_are_unparsed_with_quoted_names_and_bound_values() {
        let w = where_of("status = 'paid' AND n >= 3").await;
        assert_eq!(w.display, "((\"status\" = $1) AND (\"n\" >= $2))");
        assert_eq!(
            w.sql,
            "((\"status\" = current_setting('lodestar.p1')::TEXT) AND (\"n\" >= current_setting('lodestar.p2')::INT8))"
        );
        assert_eq!(
            w.params,
            [
                Param {
                    text: "paid".into(),
                    pg_type: "text"
                },
                Param {
                    text: "3".into(),
                    pg_type: "int8"
                }
            ]
        );
    }

    #[tokio::test]
    async fn an_injection_attempt_is_only_a_value() {
        let w = where_of("status = 'x'' OR ''1''=''1'").await;
        assert_eq!(w.params[0].text, "x' OR '1'='1");
        assert!(!w.sql.contains("OR"), "{}", w.sql);
        let w = where_of("\"Weird \"\"Name\"\"\" = 1").await;
        assert!(
            w.display.contains("\"Weird \"\"Name\"\"\" = $1"),
            "{}",
            w.display
        );
    }

    #[tokio::test]
    async fn in_between_like_and_null_tests_are_pushed() {
        let w = where_of(
            "status IN ('a', 'b', 'c', 'd', 'e') AND amount BETWEEN 1.5 AND 10 AND status LIKE 'p%' \
             AND ts IS NOT NULL AND NOT (n = 4 OR n IS NULL)",
        )
        .await;
        // DataFusion's simplifier has its say first: NOT is pushed inwards, BETWEEN may become
        // two comparisons; all of it reaches Postgres.
        assert_eq!(w.params.len(), 9, "{w:?}");
        for part in [
            "\"status\" IN ($1, $2, $3, $4, $5)",
            "\"status\" LIKE $",
            "\"ts\" IS NOT NULL",
            "\"n\" IS NOT NULL",
        ] {
            assert!(w.display.contains(part), "{part} in {}", w.display);
        }
        assert!(
            w.params.contains(&Param {
                text: "1.50".into(),
                pg_type: "numeric"
            }),
            "{w:?}"
        );
    }

    #[test]
    fn between_is_pushed_as_written() {
        use lodestar_connector_api::datafusion::logical_expr::{col, lit};
        let w = translate(&table(), &[col("n").between(lit(2i64), lit(5i64))]);
        assert_eq!(w.display, "(\"n\" BETWEEN $1 AND $2)");
        let w = translate(&table(), &[col("status").between(lit("a"), lit("b"))]);
        assert_eq!(w, Where::default(), "text ranges follow the collation");
    }

    #[tokio::test]
    async fn what_would_differ_is_not_pushed() {
        let t = table();
        for condition in [
            "status < 'm'",           // collation order
            "code = 'a'",             // blank-padded char
            "status ILIKE 'p%'",      // locale case folding
            "lower(status) = 'paid'", // a function
            "n + 1 = 4",              // arithmetic
        ] {
            for filter in pushed(condition).await {
                assert_eq!(
                    support(&t, &filter),
                    TableProviderFilterPushDown::Unsupported,
                    "{condition}: {filter}"
                );
            }
        }
        for filter in pushed("ratio > 0.5").await {
            assert_eq!(support(&t, &filter), TableProviderFilterPushDown::Inexact);
        }
        for filter in pushed("n = 4 AND status = 'x' AND amount > 2").await {
            assert_eq!(
                support(&t, &filter),
                TableProviderFilterPushDown::Exact,
                "{filter}"
            );
        }
    }

    #[tokio::test]
    async fn time_ranges_are_pushed() {
        let w = where_of(
            "ts >= TIMESTAMP '2026-01-01 00:00:00' AND ts < TIMESTAMP '2026-02-01 00:00:00'",
        )
        .await;
        assert_eq!(w.display, "((\"ts\" >= $1) AND (\"ts\" < $2))");
        assert_eq!(
            w.params[0],
            Param {
                text: "2026-01-01 00:00:00.000000".into(),
                pg_type: "timestamp"
            }
        );
        let w = where_of("CAST(day AS TIMESTAMP) >= TIMESTAMP '2026-01-01 00:00:00'").await;
        assert_eq!(w.display, "(\"day\" >= $1)");
        let w = where_of("uid = '123e4567-e89b-12d3-a456-426614174000'").await;
        assert_eq!(w.display, "(CAST(\"uid\" AS VARCHAR) = $1)");
    }

    #[tokio::test]
    async fn local_time_bounds_become_column_ranges() {
        let t = table();
        // Lodestar's period bound for a timestamptz column in UTC: exact.
        let utc = "to_local_time(arrow_cast(at, 'Timestamp(Nanosecond, Some(\"UTC\"))')) >= TIMESTAMP '2026-03-01 00:00:00'";
        let filters = pushed(utc).await;
        assert_eq!(
            support(&t, &filters[0]),
            TableProviderFilterPushDown::Exact,
            "{}",
            filters[0]
        );
        let w = translate(&t, &filters);
        assert_eq!(w.display, "(\"at\" >= $1)");
        assert_eq!(
            w.params[0],
            Param {
                text: "2026-03-01 00:00:00.000000+00".into(),
                pg_type: "timestamptz"
            }
        );
        // In another zone, widened by 26 hours and left for DataFusion to finish.
        let paris = "to_local_time(arrow_cast(arrow_cast(ts, 'Timestamp(Nanosecond, Some(\"UTC\"))'), 'Timestamp(Nanosecond, Some(\"Europe/Paris\"))')) < TIMESTAMP '2026-03-02 00:00:00'";
        let filters = pushed(paris).await;
        assert_eq!(
            support(&t, &filters[0]),
            TableProviderFilterPushDown::Inexact,
            "{}",
            filters[0]
        );
        let w = translate(&t, &filters);
        assert_eq!(w.display, "(\"ts\" <= $1)");
        assert_eq!(w.params[0].text, "2026-03-03 02:00:00.000000");
    }

    #[test]
    fn decimals_print_exactly() {
        assert_eq!(decimal_text(150, 2), "1.50");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(12, 0), "12");
        assert_eq!(decimal_text(12, -2), "1200");
    }
}

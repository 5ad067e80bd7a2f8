//! Date partitions: the `time_partition` option and `dt=` pruning.
//!
//! `time_partition: { column: dt, time: event_time }` says that a table's `dt=YYYY-MM-DD`
//! partitions hold the rows whose `event_time` falls on that UTC date. `time` is one column or
//! a list of them (`[event_time, created_at]`): each table uses the first it has. A filter on
//! the time column (every metric query has one) then also becomes a filter on the partition
//! column ([`DatePruning::bounds`]), so a listing table skips the days outside a query's range
//! without opening their files.
//!
//! The option is part of the protocol between the host and the connectors: the host reads it
//! with [`TimePartition::from_json`] too, to know which time columns are partitioned.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, col, lit};
use serde_json::{Value, json};

/// The `time_partition` option: the date partition column, and the time columns whose UTC
/// date it holds (each table uses the first of them it has).
///
/// ```
/// use lodestar_connector_api::kit::partition::TimePartition;
/// use lodestar_connector_api::serde_json::json;
///
/// let tp = TimePartition::from_json(&json!({ "column": "dt", "time": ["ts", "created_at"] }))?;
/// assert_eq!(tp.column, "dt");
/// assert_eq!(tp.time, ["ts", "created_at"]);
/// # Ok::<(), lodestar_connector_api::kit::partition::TimePartitionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimePartition {
    /// The partition column holding dates as `YYYY-MM-DD`, such as `dt`.
    pub column: String,
    /// The time columns, never empty.
    pub time: Vec<String>,
}

/// Why a `time_partition` value was refused. Its text names the option and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimePartitionError {
    /// Not an object of exactly `column` and `time`.
    Shape(String),
    /// `column` is not a non-empty string.
    Column(String),
    /// `time` is neither a non-empty string nor a non-empty list of them.
    Time(String),
}

impl fmt::Display for TimePartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimePartitionError::Shape(value) => write!(
                f,
                "`time_partition` must be {{ column: dt, time: event_time }} (`time` may list several columns, one per table), not {value}"
            ),
            TimePartitionError::Column(value) => write!(
                f,
                "`time_partition.column` must name the date partition column, such as `dt`, not {value}"
            ),
            TimePartitionError::Time(value) => write!(
                f,
                "`time_partition.time` must name a time column or list several, such as `event_time` or [event_time, created_at], not {value}"
            ),
        }
    }
}

impl std::error::Error for TimePartitionError {}

impl TimePartition {
    /// Reads the option's value: `{ column: dt, time: ts }` or `{ column: dt, time: [ts, …] }`.
    pub fn from_json(value: &Value) -> Result<TimePartition, TimePartitionError> {
        let object = value
            .as_object()
            .filter(|o| o.len() == 2 && o.contains_key("column") && o.contains_key("time"))
            .ok_or_else(|| TimePartitionError::Shape(value.to_string()))?;
        let name = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let column = name(&object["column"])
            .ok_or_else(|| TimePartitionError::Column(object["column"].to_string()))?;
        let time = match &object["time"] {
            Value::Array(items) => items.iter().map(name).collect::<Option<Vec<_>>>(),
            single => name(single).map(|t| vec![t]),
        }
        .filter(|time| !time.is_empty())
        .ok_or_else(|| TimePartitionError::Time(object["time"].to_string()))?;
        Ok(TimePartition { column, time })
    }

    /// The option's JSON Schema, for a connector's options schema: the same shape for every
    /// connector that prunes date partitions.
    pub fn schema() -> Value {
        let name = |description: &str| json!({ "type": "string", "minLength": 1, "description": description });
        let time = "The timestamp (naive UTC) or date column whose UTC date the partition holds, such as `ts`";
        json!({
            "type": "object",
            "description": "Prune date partitions by a time column: a filter on `time` (the engine's time range) also skips the partitions `column=YYYY-MM-DD` outside it. Only for data laid out so that each row sits in the partition of its time's UTC date",
            "properties": {
                "column": name("The hive partition column holding dates as YYYY-MM-DD, such as `dt`"),
                "time": {
                    "description": "The time column, or a list of them (each table uses the first it has)",
                    "oneOf": [
                        name(time),
                        { "type": "array", "minItems": 1, "items": name(time) }
                    ]
                }
            },
            "required": ["column", "time"],
            "additionalProperties": false
        })
    }

    /// The first of the time columns that `schema` has.
    pub fn time_column(&self, schema: &Schema) -> Option<&str> {
        self.time
            .iter()
            .map(String::as_str)
            .find(|t| schema.field_with_name(t).is_ok())
    }

    /// The time columns as text for a message: `` `ts` or `created_at` ``.
    pub fn time_names(&self) -> String {
        self.time
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// The pruning of one table: filters on its time column become filters on its date
/// partition column.
///
/// ```
/// use std::sync::Arc;
/// use lodestar_connector_api::datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
/// use lodestar_connector_api::datafusion::common::ScalarValue;
/// use lodestar_connector_api::datafusion::logical_expr::{col, lit};
/// use lodestar_connector_api::kit::partition::{DatePruning, TimePartition};
///
/// let schema = Schema::new(vec![
///     Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
///     Field::new("dt", DataType::Utf8, false),
/// ]);
/// let tp = TimePartition { column: "dt".into(), time: vec!["ts".into()] };
/// let pruning = DatePruning::new(&tp, &schema).unwrap();
/// // 2026-05-01T00:00:00Z in microseconds.
/// let may_1 = lit(ScalarValue::TimestampMicrosecond(Some(1_777_593_600_000_000), None));
/// let bounds = pruning.bounds(&[col("ts").gt_eq(may_1)]);
/// assert_eq!(bounds, [col("dt").gt_eq(lit("2026-05-01"))]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatePruning {
    column: String,
    time: String,
    /// The type of the partition column (dictionary-encoded text when inferred).
    data_type: DataType,
}

impl DatePruning {
    /// `None` if the table lacks the partition column or every time column.
    pub fn new(tp: &TimePartition, schema: &Schema) -> Option<DatePruning> {
        let data_type = schema.field_with_name(&tp.column).ok()?.data_type().clone();
        Some(DatePruning {
            column: tp.column.clone(),
            time: tp.time_column(schema)?.to_string(),
            data_type,
        })
    }

    /// The partition column.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The time column this table prunes by.
    pub fn time(&self) -> &str {
        &self.time
    }

    /// `(operator, YYYY-MM-DD)` bounds on the partition's dates implied by `filters`.
    pub fn date_bounds(&self, filters: &[Expr]) -> Vec<(Operator, String)> {
        filters
            .iter()
            .flat_map(|f| split_conjunction(f))
            .filter_map(|f| date_bound(f, &self.time))
            .collect()
    }

    /// Filters on the partition column implied by `filters`; add them to a listing table's
    /// filters.
    pub fn bounds(&self, filters: &[Expr]) -> Vec<Expr> {
        self.date_bounds(filters)
            .into_iter()
            .map(|(op, date)| {
                Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(col(self.column.as_str())),
                    op,
                    Box::new(lit(partition_literal(&date, &self.data_type))),
                ))
            })
            .collect()
    }
}

/// Whether a partition's date (`YYYY-MM-DD`) satisfies every bound of [`DatePruning::date_bounds`].
pub fn day_in_bounds(day: &str, bounds: &[(Operator, String)]) -> bool {
    bounds.iter().all(|(op, date)| match op {
        Operator::GtEq => day >= date.as_str(),
        Operator::Lt => day < date.as_str(),
        Operator::LtEq => day <= date.as_str(),
        Operator::Eq => day == date.as_str(),
        _ => true,
    })
}

/// `(operator, YYYY-MM-DD)` bounding the date partition of `time`, if `filter` bounds `time`
/// by a literal: `ts >= X` gives `dt >= date(X)`, `ts < X` gives `dt <= date(X)` (or
/// `dt < date(X)` when X is a midnight), and so on.
pub fn date_bound(filter: &Expr, time: &str) -> Option<(Operator, String)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    let (op, value) = match (
        column_of(left),
        column_of(right),
        left.as_ref(),
        right.as_ref(),
    ) {
        (Some(c), None, _, Expr::Literal(v, _)) if c == time => (*op, v),
        (None, Some(c), Expr::Literal(v, _), _) if c == time => (op.swap()?, v),
        _ => return None,
    };
    let (days, midnight) = utc_day(value)?;
    let date = iso_date(days)?;
    match op {
        Operator::GtEq | Operator::Gt => Some((Operator::GtEq, date)),
        Operator::Lt if midnight => Some((Operator::Lt, date)),
        Operator::Lt | Operator::LtEq => Some((Operator::LtEq, date)),
        Operator::Eq => Some((Operator::Eq, date)),
        _ => None,
    }
}

/// The column an expression reads, through casts (the planner may cast the column to the
/// literal's unit).
fn column_of(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(cast) => column_of(&cast.expr),
        Expr::TryCast(cast) => column_of(&cast.expr),
        _ => None,
    }
}

/// Days since 1970-01-01 of a UTC timestamp or date literal, and whether it is a midnight.
fn utc_day(value: &ScalarValue) -> Option<(i64, bool)> {
    let is_utc = |tz: &Option<Arc<str>>| {
        tz.as_deref()
            .is_none_or(|tz| matches!(tz, "UTC" | "+00:00" | "Z" | "utc"))
    };
    let per_day: i64 = 86_400;
    let (ticks, per_second) = match value {
        ScalarValue::TimestampSecond(Some(v), tz) if is_utc(tz) => (*v, 1),
        ScalarValue::TimestampMillisecond(Some(v), tz) if is_utc(tz) => (*v, 1_000),
        ScalarValue::TimestampMicrosecond(Some(v), tz) if is_utc(tz) => (*v, 1_000_000),
        ScalarValue::TimestampNanosecond(Some(v), tz) if is_utc(tz) => (*v, 1_000_000_000),
        ScalarValue::Date32(Some(days)) => return Some((i64::from(*days), true)),
        _ => return None,
    };
    let per = per_day * per_second;
    Some((ticks.div_euclid(per), ticks.rem_euclid(per) == 0))
}

/// `YYYY-MM-DD` of a day number; `None` outside the years 0 to 9999. The partition column is
/// compared as text, and other years do not sort as text the way they sort as dates
/// (`+20000-01-01` < `2026-05-01`), nor can chrono name every day an `i64` literal reaches:
/// no bound is then the safe answer (fuzz/regressions/time_partition/ has both, and an
/// overflow of `days * 86_400`).
fn iso_date(days: i64) -> Option<String> {
    let date = chrono::DateTime::from_timestamp(days.checked_mul(86_400)?, 0)?.date_naive();
    (0..=9999)
        .contains(&chrono::Datelike::year(&date))
        .then(|| date.format("%Y-%m-%d").to_string())
}

/// A text literal of the partition column's type (partition values are often
/// dictionary-encoded text).
fn partition_literal(date: &str, data_type: &DataType) -> ScalarValue {
    let text = ScalarValue::Utf8(Some(date.to_string()));
    match data_type {
        DataType::Dictionary(key, _) => ScalarValue::Dictionary(key.clone(), Box::new(text)),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, TimeUnit};
    use datafusion::logical_expr::Cast;

    use super::*;

    fn ts(micros: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(Some(micros), None))
    }

    fn cmp(l: Expr, op: Operator, r: Expr) -> Expr {
        Expr::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)))
    }

    fn parse(text: &str) -> Result<TimePartition, TimePartitionError> {
        TimePartition::from_json(&serde_json::from_str(text).unwrap())
    }

    fn expected(time: &[&str]) -> TimePartition {
        TimePartition {
            column: "dt".into(),
            time: time.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn the_option_names_a_column_and_one_or_more_time_columns() {
        assert_eq!(
            parse(r#"{"column": "dt", "time": "ts"}"#),
            Ok(expected(&["ts"]))
        );
        assert_eq!(
            parse(r#"{"time": ["ts", "created_at"], "column": "dt"}"#),
            Ok(expected(&["ts", "created_at"]))
        );
        assert_eq!(
            parse(r#"{"column": "dt", "time": ["ts"]}"#),
            Ok(expected(&["ts"]))
        );
    }

    #[test]
    fn a_malformed_option_is_refused_with_what_is_wrong() {
        let shape = |v: &str| Err(TimePartitionError::Shape(v.into()));
        assert_eq!(parse(r#""dt""#), shape(r#""dt""#));
        assert_eq!(parse(r#"{"column": "dt"}"#), shape(r#"{"column":"dt"}"#));
        assert_eq!(
            parse(r#"{"column": "dt", "format": "%Y", "time": "ts"}"#),
            shape(r#"{"column":"dt","format":"%Y","time":"ts"}"#)
        );
        assert_eq!(
            parse(r#"{"column": "dt", "times": "ts"}"#),
            shape(r#"{"column":"dt","times":"ts"}"#)
        );
        assert_eq!(
            parse(r#"{"column": 1, "time": "ts"}"#),
            Err(TimePartitionError::Column("1".into()))
        );
        assert_eq!(
            parse(r#"{"column": "", "time": "ts"}"#),
            Err(TimePartitionError::Column(r#""""#.into()))
        );
        for (bad, shown) in [
            (r#"{"column": "dt", "time": []}"#, "[]"),
            (r#"{"column": "dt", "time": [1]}"#, "[1]"),
            (r#"{"column": "dt", "time": ["ts", ""]}"#, r#"["ts",""]"#),
            (r#"{"column": "dt", "time": 7}"#, "7"),
        ] {
            assert_eq!(
                parse(bad),
                Err(TimePartitionError::Time(shown.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse(r#"{"column": "dt"}"#).unwrap_err().to_string(),
            r#"`time_partition` must be { column: dt, time: event_time } (`time` may list several columns, one per table), not {"column":"dt"}"#
        );
        assert_eq!(
            parse(r#"{"column": "dt", "time": []}"#)
                .unwrap_err()
                .to_string(),
            "`time_partition.time` must name a time column or list several, such as `event_time` or [event_time, created_at], not []"
        );
    }

    #[test]
    fn a_table_prunes_by_the_first_time_column_it_has() {
        let schema = Schema::new(vec![
            Field::new("created_at", DataType::Date32, false),
            Field::new(
                "dt",
                DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
                false,
            ),
        ]);
        let tp = expected(&["ts", "created_at"]);
        assert_eq!(tp.time_column(&schema), Some("created_at"));
        assert_eq!(tp.time_names(), "`ts` or `created_at`");
        let pruning = DatePruning::new(&tp, &schema).unwrap();
        assert_eq!(pruning.time(), "created_at");
        // 2026-05-01 is day 20_574 (56 years of 365 days, 14 leap days, 120 days of 2026).
        let may_1 = lit(ScalarValue::Date32(Some(20_574)));
        let dictionary = |date: &str| {
            lit(ScalarValue::Dictionary(
                Box::new(DataType::UInt16),
                Box::new(ScalarValue::Utf8(Some(date.into()))),
            ))
        };
        let filter = col("created_at")
            .gt_eq(may_1)
            .and(col("created_at").lt(lit(ScalarValue::Date32(Some(20_581)))));
        assert_eq!(
            pruning.bounds(&[filter, col("other").eq(lit(1))]),
            [
                col("dt").gt_eq(dictionary("2026-05-01")),
                col("dt").lt(dictionary("2026-05-08")),
            ]
        );
        let no_dt = Schema::new(vec![Field::new("created_at", DataType::Date32, false)]);
        assert_eq!(DatePruning::new(&tp, &no_dt), None);
        let no_time = Schema::new(vec![Field::new("dt", DataType::Utf8, false)]);
        assert_eq!(DatePruning::new(&tp, &no_time), None);
    }

    #[test]
    fn days_are_kept_by_their_bounds() {
        let bounds = [
            (Operator::GtEq, "2026-05-01".to_string()),
            (Operator::Lt, "2026-05-08".to_string()),
        ];
        assert!(day_in_bounds("2026-05-01", &bounds));
        assert!(day_in_bounds("2026-05-07", &bounds));
        assert!(!day_in_bounds("2026-05-08", &bounds));
        assert!(!day_in_bounds("2026-04-30", &bounds));
        assert!(day_in_bounds("2026-04-30", &[]));
    }

    #[test]
    fn days_are_iso_dates() {
        assert_eq!(iso_date(0).as_deref(), Some("1970-01-01"));
        assert_eq!(iso_date(20_574).as_deref(), Some("2026-05-01"));
        assert_eq!(iso_date(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(iso_date(11_016).as_deref(), Some("2000-02-29"));
    }

    /// 2026-05-01T00:00:00 UTC in microseconds.
    const MAY_1: i64 = 1_777_593_600 * 1_000_000;

    #[test]
    fn time_bounds_become_date_bounds() {
        let c = || col("ts");
        assert_eq!(
            date_bound(&cmp(c(), Operator::GtEq, ts(MAY_1)), "ts"),
            Some((Operator::GtEq, "2026-05-01".into()))
        );
        // Before midnight of May 1st: nothing of May 1st.
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, ts(MAY_1)), "ts"),
            Some((Operator::Lt, "2026-05-01".into()))
        );
        // Before noon of May 1st: May 1st included.
        let noon = MAY_1 + 12 * 3_600 * 1_000_000;
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, ts(noon)), "ts"),
            Some((Operator::LtEq, "2026-05-01".into()))
        );
        // Literal first, and a cast column.
        assert_eq!(
            date_bound(&cmp(ts(noon), Operator::Gt, c()), "ts"),
            Some((Operator::LtEq, "2026-05-01".into()))
        );
        let cast = Expr::Cast(Cast::new(
            Box::new(c()),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
        ));
        assert_eq!(
            date_bound(&cmp(cast, Operator::GtEq, ts(noon)), "ts"),
            Some((Operator::GtEq, "2026-05-01".into()))
        );
        // Other columns, zoned literals and other operators give nothing.
        assert_eq!(
            date_bound(&cmp(col("other"), Operator::GtEq, ts(MAY_1)), "ts"),
            None
        );
        let zoned = lit(ScalarValue::TimestampMicrosecond(
            Some(MAY_1),
            Some("Europe/Paris".into()),
        ));
        assert_eq!(date_bound(&cmp(c(), Operator::GtEq, zoned), "ts"), None);
        assert_eq!(
            date_bound(&cmp(c(), Operator::NotEq, ts(MAY_1)), "ts"),
            None
        );
    }

    /// Cases of the `time_partition` fuzz target (fuzz/regressions/time_partition/): a bound
    /// past year 9999 or past chrono's range became `dt <= +20000-01-01` or `dt <= 1970-01-01`,
    /// which prune this year's folders as text, and `ts >= i64::MIN` seconds overflowed.
    #[test]
    fn literals_outside_four_digit_years_give_no_bound() {
        let secs = |s: i64| lit(ScalarValue::TimestampSecond(Some(s), None));
        let c = || col("ts");
        let year_20000 = 568_971_820_800;
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, secs(year_20000)), "ts"),
            None
        );
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, secs(10_i64.pow(13))), "ts"),
            None
        );
        assert_eq!(
            date_bound(&cmp(c(), Operator::GtEq, secs(i64::MIN)), "ts"),
            None
        );
        let year_9999 = 253_402_300_799; // 9999-12-31T23:59:59
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, secs(year_9999)), "ts"),
            Some((Operator::LtEq, "9999-12-31".into()))
        );
    }
}

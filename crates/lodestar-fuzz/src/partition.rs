//! `time_partition`: the `files` connector's `time_partition` option and the rewrite of a
//! filter on the time column into a filter on the `dt=YYYY-MM-DD` folders
//! (`crates/lodestar-core/src/connect/partition.rs`), which must never drop a matching row.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use lodestar_core::datafusion::common::ScalarValue;
use lodestar_core::datafusion::logical_expr::{BinaryExpr, Expr, Operator, col, lit};
use lodestar_core::fuzzing::{date_bound, time_partition_option};

use crate::bytes::{Bytes, text_then_bytes};

const NANOS_PER_DAY: i128 = 86_400 * 1_000_000_000;

/// `data` is the option's value as JSON text, then optionally a NUL byte and a filter: an
/// operator, the literal's type and zone, which side the column is on, the literal, and a
/// row's time. An option that reads must read the same once written back; a row that the
/// filter keeps must lie in a partition that the date bound keeps.
pub fn time_partition(data: &[u8]) {
    let (text, bytes) = text_then_bytes(data);
    option_round_trips(&text);
    bound_keeps_matching_rows(bytes);
}

fn option_round_trips(text: &str) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let Some((column, time)) = time_partition_option(&value) else {
        return;
    };
    assert!(!time.is_empty(), "{value}: accepted without a time column");
    let written = serde_json::json!({ "column": column, "time": time });
    assert_eq!(
        time_partition_option(&written),
        Some((column, time)),
        "{value} read, written as {written}, read differently"
    );
}

fn bound_keeps_matching_rows(mut bytes: Bytes<'_>) {
    if bytes.0.is_empty() {
        return;
    }
    let ops = [
        Operator::Eq,
        Operator::NotEq,
        Operator::Lt,
        Operator::LtEq,
        Operator::Gt,
        Operator::GtEq,
    ];
    let op = ops[usize::from(bytes.u8()) % ops.len()];
    let unit = bytes.u8() % 5;
    let zone: Option<Arc<str>> = match bytes.u8() % 3 {
        0 => None,
        1 => Some("UTC".into()),
        _ => Some("+01:00".into()),
    };
    let flags = bytes.u8();
    let raw = bytes.i64();
    let row = row_micros(bytes.i64());

    // Ticks of the literal's unit per nanosecond... rather, nanoseconds per tick.
    let nanos_per_tick: i128 = match unit {
        0 => 1_000_000_000,
        1 => 1_000_000,
        2 => 1_000,
        3 => 1,
        _ => NANOS_PER_DAY,
    };
    let row_nanos = i128::from(row) * 1_000;
    // Half the time, a literal within a day or two of the row: midnights and day edges.
    let ticks: i128 = if flags & 2 != 0 {
        row_nanos.div_euclid(nanos_per_tick)
            + i128::from(raw % 3) * NANOS_PER_DAY / nanos_per_tick
            + i128::from(raw % 5)
    } else {
        i128::from(raw)
    };
    let value = match unit {
        0 => ScalarValue::TimestampSecond(i64::try_from(ticks).ok(), zone.clone()),
        1 => ScalarValue::TimestampMillisecond(i64::try_from(ticks).ok(), zone.clone()),
        2 => ScalarValue::TimestampMicrosecond(i64::try_from(ticks).ok(), zone.clone()),
        3 => ScalarValue::TimestampNanosecond(i64::try_from(ticks).ok(), zone.clone()),
        _ => ScalarValue::Date32(i32::try_from(ticks).ok()),
    };
    let Some(ticks) = ticks_of(&value) else {
        return;
    };
    let literal_nanos = ticks * nanos_per_tick;
    let column_left = flags & 1 == 0;
    let filter = if column_left {
        Expr::BinaryExpr(BinaryExpr::new(
            Box::new(col("ts")),
            op,
            Box::new(lit(value)),
        ))
    } else {
        Expr::BinaryExpr(BinaryExpr::new(
            Box::new(lit(value)),
            op,
            Box::new(col("ts")),
        ))
    };
    let Some((date_op, date)) = date_bound(&filter, "ts") else {
        return;
    };
    // A zone other than UTC shifts days: the rewrite must not have read that literal.
    let zoned = matches!(&zone, Some(z) if &**z == "+01:00") && unit != 4;
    assert!(
        !zoned,
        "{filter}: bounded a literal in another zone by `dt {date_op} {date}`"
    );
    let (left, right) = if column_left {
        (row_nanos, literal_nanos)
    } else {
        (literal_nanos, row_nanos)
    };
    let kept = match op {
        Operator::Eq => left == right,
        Operator::NotEq => left != right,
        Operator::Lt => left < right,
        Operator::LtEq => left <= right,
        Operator::Gt => left > right,
        Operator::GtEq => left >= right,
        _ => unreachable!("one of the operators above"),
    };
    if !kept {
        return;
    }
    let folder = DateTime::from_timestamp_micros(row)
        .expect("rows are within years 1 to 9999")
        .format("%Y-%m-%d")
        .to_string();
    // The partition column holds the folder's text: the bound compares as text.
    let folder_kept = match date_op {
        Operator::Eq => folder == date,
        Operator::Lt => folder < date,
        Operator::LtEq => folder <= date,
        Operator::Gt => folder > date,
        Operator::GtEq => folder >= date,
        other => panic!("{filter}: unexpected partition operator {other}"),
    };
    assert!(
        folder_kept,
        "{filter} keeps a row of {folder} (micros {row}), but `dt {date_op} {date}` prunes its folder"
    );
}

/// The literal's value in its own unit; `None` for a null.
fn ticks_of(value: &ScalarValue) -> Option<i128> {
    match value {
        ScalarValue::TimestampSecond(v, _)
        | ScalarValue::TimestampMillisecond(v, _)
        | ScalarValue::TimestampMicrosecond(v, _)
        | ScalarValue::TimestampNanosecond(v, _) => v.map(i128::from),
        ScalarValue::Date32(v) => v.map(i128::from),
        _ => None,
    }
}

/// A row's time in microseconds, within the years a `dt=YYYY-MM-DD` folder can name.
fn row_micros(raw: i64) -> i64 {
    let micros = |y, m, d| {
        NaiveDate::from_ymd_opt(y, m, d)
            .expect("a valid date")
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros()
    };
    let first = micros(1, 1, 1);
    let end = micros(10_000, 1, 1);
    first + raw.rem_euclid(end - first)
}

//! A table's columns for discovery: checking that the named ones exist, what kind of time a
//! time column holds, and guessing the time column when none is named.

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::DataFusionError;

use super::TIME_COLUMNS;
use crate::project::error::{Error, Result, did_you_mean};
use crate::project::model::TableRef;
use crate::query::engine::is_parse_failure;
use crate::query::request::{Piece, words};
use crate::query::sql::TimeKind;

/// What the query needs to know about a time column.
pub(super) struct TimeColumn {
    pub(super) name: String,
    pub(super) kind: TimeKind,
}

pub(super) fn column_names(schema: &SchemaRef) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

pub(super) fn require_column(
    columns: &[&str],
    table: &TableRef,
    what: &str,
    name: &str,
    field: Piece,
) -> Result<()> {
    if columns.contains(&name) {
        return Ok(());
    }
    let hint = match did_you_mean(name, columns.iter().copied()) {
        Some(close) => words![format!("{close} (name it with "), field, ")"],
        None => words![
            format!(
                "the columns of `{table}` are: {}; name the right one with ",
                columns.join(", ")
            ),
            field
        ],
    };
    Err(Error::request_hint(
        format!("{what} `{name}` is not a column of `{table}`"),
        hint,
    ))
}

/// A table's time column when none is named: a usual name with a time type, else the one
/// column with a timestamp or date type.
pub(super) fn guess_time_column(schema: &SchemaRef, table: &TableRef) -> Result<String> {
    let is_time = |name: &str| {
        schema
            .field_with_name(name)
            .is_ok_and(|f| TimeKind::of(f.data_type()).is_some())
    };
    if let Some(name) = TIME_COLUMNS.iter().find(|n| is_time(n)) {
        return Ok((*name).to_string());
    }
    let typed: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            )
        })
        .map(|f| f.name().as_str())
        .collect();
    match typed.as_slice() {
        [one] => Ok((*one).to_string()),
        _ => Err(Error::request_hint(
            format!(
                "cannot tell which column of `{table}` holds the time ({})",
                if typed.is_empty() {
                    "none has a timestamp type".to_string()
                } else {
                    format!("candidates: {}", typed.join(", "))
                }
            ),
            format!("name it: {table}.COLUMN"),
        )),
    }
}

pub(super) fn time_column(schema: &SchemaRef, table: &TableRef, name: &str) -> Result<TimeColumn> {
    let field = schema.field_with_name(name).map_err(|_| {
        Error::request(format!("time column `{name}` is not a column of `{table}`"))
    })?;
    let kind = TimeKind::of(field.data_type()).ok_or_else(|| {
        Error::request_hint(
            format!(
                "time column `{name}` of `{table}` has type {}; it must be a timestamp, a date or ISO-8601 text",
                field.data_type()
            ),
            "for epoch numbers, expose a converted column (e.g. a view with to_timestamp())",
        )
    })?;
    Ok(TimeColumn {
        name: name.to_string(),
        kind,
    })
}

pub(super) fn text_times_error(e: DataFusionError, table: &TableRef, time: &TimeColumn) -> Error {
    if time.kind == TimeKind::Text && is_parse_failure(&e) {
        Error::request_hint(
            format!(
                "time column `{}` of `{table}` holds text that is not a timestamp",
                time.name
            ),
            "the time column must hold ISO-8601 timestamps such as 2026-05-04T10:00:00Z",
        )
    } else {
        e.into()
    }
}

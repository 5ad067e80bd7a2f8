//! Response bodies: JSON, or an Arrow IPC stream when the client asks for
//! `application/vnd.apache.arrow.stream`; and Arrow columns turned into JSON values.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use lodestar_core::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use lodestar_core::datafusion::arrow::compute::cast;
use lodestar_core::datafusion::arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, UInt32Type,
};
use lodestar_core::datafusion::arrow::ipc::writer::StreamWriter;
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::error::ApiError;

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Arrow,
}

impl Format {
    /// Arrow when the `Accept` header names the Arrow stream type, JSON otherwise.
    pub fn of(headers: &HeaderMap) -> Format {
        let arrow = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.split(';').next().unwrap_or_default().trim() == ARROW_STREAM);
        if arrow { Format::Arrow } else { Format::Json }
    }
}

/// A JSON body.
pub fn json<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding_failed",
            format!("cannot encode the answer as JSON: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// An Arrow IPC stream of one batch.
pub fn arrow(batch: &RecordBatch) -> Result<Response, ApiError> {
    let failed = |e: lodestar_core::datafusion::arrow::error::ArrowError| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding_failed",
            format!("cannot encode the answer as Arrow: {e}"),
        )
    };
    let mut body = Vec::new();
    let mut writer = StreamWriter::try_new(&mut body, &batch.schema()).map_err(failed)?;
    writer.write(batch).map_err(failed)?;
    writer.finish().map_err(failed)?;
    drop(writer);
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
        body,
    )
        .into_response())
}

/// The rows of a batch as JSON objects keyed by column name: dates as `YYYY-MM-DD`, integers
/// and floats as numbers (non-finite floats as `null`), text as strings, nulls as `null`.
pub fn rows(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, ApiError> {
    let schema = batch.schema();
    let mut columns: Vec<Vec<Value>> = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        columns.push(values(column.as_ref()).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "encoding_failed",
                format!("cannot encode a column as JSON: {e}"),
            )
        })?);
    }
    Ok((0..batch.num_rows())
        .map(|row| {
            schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(field, column)| (field.name().clone(), column[row].clone()))
                .collect()
        })
        .collect())
}

fn values(
    array: &dyn Array,
) -> Result<Vec<Value>, lodestar_core::datafusion::arrow::error::ArrowError> {
    let n = array.len();
    let out = match array.data_type() {
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            (0..n)
                .map(|i| match a.value_as_date(i) {
                    Some(d) if a.is_valid(i) => Value::String(d.format("%Y-%m-%d").to_string()),
                    _ => Value::Null,
                })
                .collect()
        }
        DataType::Int64 => {
            let a = array.as_primitive::<Int64Type>();
            a.iter()
                .map(|v| v.map_or(Value::Null, Value::from))
                .collect()
        }
        DataType::UInt32 => {
            let a = array.as_primitive::<UInt32Type>();
            a.iter()
                .map(|v| v.map_or(Value::Null, Value::from))
                .collect()
        }
        DataType::Float64 => float_values(array),
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Bool))
            .collect(),
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .map(|v| v.map_or(Value::Null, |s| Value::String(s.to_string())))
            .collect(),
        t if t.is_numeric() => float_values(cast(array, &DataType::Float64)?.as_ref()),
        _ => {
            let text = cast(array, &DataType::Utf8)?;
            return values(text.as_ref());
        }
    };
    Ok(out)
}

fn float_values(array: &dyn Array) -> Vec<Value> {
    array
        .as_primitive::<Float64Type>()
        .iter()
        .map(|v| {
            v.and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number)
        })
        .collect()
}

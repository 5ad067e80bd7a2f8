//! The binary COPY format, decoded straight into Arrow builders.
//!
//! `COPY ... TO STDOUT (FORMAT binary)` sends a signature and header, then one tuple per row
//! (a field count, then each field as a length and the type's binary "send" form, -1 for NULL),
//! then a trailer of field count -1. The server sends a tuple per protocol message, but nothing
//! promises that, so tuples split across messages are joined here.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use lodestar_connector_api::datafusion::arrow::array::builder::NullBufferBuilder;
use lodestar_connector_api::datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder,
    ListArray, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use lodestar_connector_api::datafusion::arrow::buffer::OffsetBuffer;
use lodestar_connector_api::datafusion::arrow::datatypes::{
    Field, IntervalMonthDayNano, SchemaRef,
};
use lodestar_connector_api::datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::types::PgType;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds and days from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// What went wrong decoding: a value of a column, or the stream's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Column index (into the projected columns), what is wrong, and a hint.
    Value {
        column: usize,
        message: String,
        hint: Option<String>,
    },
    Framing(String),
}

type Decoded<T = ()> = Result<T, String>;

/// Rows of one scan being decoded into the next record batch.
#[derive(Debug)]
pub struct BatchDecoder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    /// Bytes of field data in the current batch, to flush wide rows early.
    bytes: usize,
    header_seen: bool,
    trailer_seen: bool,
    /// The start of a tuple whose end has not arrived yet.
    pending: BytesMut,
}

impl BatchDecoder {
    /// `types` are the projected columns' types, in the order of `schema`'s fields.
    pub fn new(schema: SchemaRef, types: &[PgType], capacity: usize) -> BatchDecoder {
        BatchDecoder {
            columns: types
                .iter()
                .map(|t| ColumnBuilder::new(t, capacity))
                .collect(),
            schema,
            rows: 0,
            bytes: 0,
            header_seen: false,
            trailer_seen: false,
            pending: BytesMut::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Decodes every complete tuple of `chunk` (after what was left of the previous one).
    pub fn feed(&mut self, chunk: Bytes) -> Result<(), DecodeError> {
        if self.pending.is_empty() {
            // The usual case: a message holds whole tuples, read in place.
            let mut data = chunk;
            let used = self.decode(data.as_ref())?;
            data.advance(used);
            if !data.is_empty() {
                self.pending.extend_from_slice(&data);
            }
        } else {
            self.pending.extend_from_slice(&chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.decode(&pending)?;
            self.pending = pending;
            self.pending.advance(used);
        }
        Ok(())
    }

    /// Checks that the stream ended where it should.
    pub fn finish_stream(&self) -> Result<(), DecodeError> {
        if !self.trailer_seen {
            return Err(DecodeError::Framing(
                "the data ended before the COPY trailer".into(),
            ));
        }
        if !self.pending.is_empty() {
            return Err(DecodeError::Framing(format!(
                "{} bytes after the COPY trailer",
                self.pending.len()
            )));
        }
        Ok(())
    }

    /// The rows decoded so far as a batch; the builders start over.
    pub fn flush(&mut self) -> Result<RecordBatch, DecodeError> {
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
            .map_err(|e| DecodeError::Framing(e.to_string()))
    }

    /// Decodes complete tuples from the start of `data`; returns the bytes used.
    fn decode(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut at = 0;
        if !self.header_seen {
            // Signature, flags, then a header extension of the length given.
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err(DecodeError::Framing("no binary COPY signature".into()));
            }
            let extension = read_i32(&data[SIGNATURE.len() + 4..]).max(0) as usize;
            let end = SIGNATURE.len() + 8 + extension;
            if data.len() < end {
                return Ok(0);
            }
            at = end;
            self.header_seen = true;
        }
        let width = self.columns.len();
        while at < data.len() {
            if self.trailer_seen {
                return Err(DecodeError::Framing("data after the COPY trailer".into()));
            }
            let Some(end) = tuple_end(&data[at..], width)? else {
                break;
            };
            let tuple = &data[at..at + end];
            if read_i16(tuple) == -1 {
                self.trailer_seen = true;
                at += end;
                continue;
            }
            let mut field_at = 2;
            for (index, column) in self.columns.iter_mut().enumerate() {
                let len = read_i32(&tuple[field_at..]);
                field_at += 4;
                if len < 0 {
                    column.append_null();
                } else {
                    let value = &tuple[field_at..field_at + len as usize];
                    field_at += len as usize;
                    column.append(value).map_err(|message| DecodeError::Value {
                        column: index,
                        hint: hint_for(&message),
                        message,
                    })?;
                }
            }
            self.rows += 1;
            self.bytes += end;
            at += end;
        }
        Ok(at)
    }
}

/// The length of the tuple at the start of `data` if all of it is there.
fn tuple_end(data: &[u8], width: usize) -> Result<Option<usize>, DecodeError> {
    if data.len() < 2 {
        return Ok(None);
    }
    let count = read_i16(data);
    if count == -1 {
        return Ok(Some(2));
    }
    if count as usize != width {
        return Err(DecodeError::Framing(format!(
            "a row of {count} fields where {width} were asked for"
        )));
    }
    let mut at = 2;
    for _ in 0..width {
        if data.len() < at + 4 {
            return Ok(None);
        }
        let len = read_i32(&data[at..]);
        at += 4;
        if len > 0 {
            at += len as usize;
        }
    }
    Ok((data.len() >= at).then_some(at))
}

fn read_i16(data: &[u8]) -> i16 {
    i16::from_be_bytes([data[0], data[1]])
}

fn read_i32(data: &[u8]) -> i32 {
    i32::from_be_bytes([data[0], data[1], data[2], data[3]])
}

fn read_i64(data: &[u8]) -> i64 {
    i64::from_be_bytes(data[..8].try_into().expect("8 bytes"))
}

fn exactly<const N: usize>(value: &[u8], what: &str) -> Decoded<[u8; N]> {
    value
        .try_into()
        .map_err(|_| format!("a {what} value of {} bytes, not {N}", value.len()))
}

fn hint_for(message: &str) -> Option<String> {
    if message.contains("infinity") {
        Some("map it to NULL in a view: CASE WHEN col IN ('infinity', '-infinity') THEN NULL ELSE col END".into())
    } else if message.contains("NaN") || message.contains("does not fit") {
        Some("give the column a precision and scale that fit (numeric(p, s) with p ≤ 38), or read it through a view that casts it to double precision".into())
    } else if message.contains("dimensional") {
        Some("expose the array through a view that flattens or unnests it".into())
    } else {
        None
    }
}

/// An Arrow builder for one column, with its decoder.
#[derive(Debug)]
enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Oid(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Uuid(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    List {
        field: Arc<Field>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<ColumnBuilder>,
    },
}

impl ColumnBuilder {
    fn new(pg: &PgType, capacity: usize) -> ColumnBuilder {
        match pg {
            PgType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => ColumnBuilder::Int16(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => ColumnBuilder::Int32(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => ColumnBuilder::Int64(Int64Builder::with_capacity(capacity)),
            PgType::Oid => ColumnBuilder::Oid(Int64Builder::with_capacity(capacity)),
            PgType::Float4 => ColumnBuilder::Float32(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => ColumnBuilder::Float64(Float64Builder::with_capacity(capacity)),
            PgType::Numeric {
                precision, scale, ..
            } => ColumnBuilder::Decimal {
                builder: Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .expect("precision and scale were checked by the type mapping"),
                precision: *precision,
                scale: *scale,
            },
            PgType::Text | PgType::Bpchar | PgType::Json | PgType::Enum => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Jsonb => {
                ColumnBuilder::Jsonb(StringBuilder::with_capacity(capacity, capacity * 32))
            }
            PgType::Uuid => {
                ColumnBuilder::Uuid(StringBuilder::with_capacity(capacity, capacity * 36))
            }
            PgType::Bytea => {
                ColumnBuilder::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            PgType::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            PgType::Timestamptz => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            PgType::Interval => {
                ColumnBuilder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            PgType::Array(element) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                ColumnBuilder::List {
                    field: Arc::new(Field::new("item", element.arrow_type(), true)),
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    child: Box::new(ColumnBuilder::new(element, capacity)),
                }
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int16(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) | ColumnBuilder::Oid(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Decimal { builder, .. } => builder.append_null(),
            ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Uuid(b) => {
                b.append_null()
            }
            ColumnBuilder::Bytea(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Interval(b) => b.append_null(),
            ColumnBuilder::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("starts with 0"));
                nulls.append_null();
            }
        }
    }

    fn append(&mut self, value: &[u8]) -> Decoded {
        match self {
            ColumnBuilder::Bool(b) => b.append_value(exactly::<1>(value, "bool")?[0] != 0),
            ColumnBuilder::Int16(b) => b.append_value(i16::from_be_bytes(exactly(value, "int2")?)),
            ColumnBuilder::Int32(b) => b.append_value(i32::from_be_bytes(exactly(value, "int4")?)),
            ColumnBuilder::Int64(b) => b.append_value(i64::from_be_bytes(exactly(value, "int8")?)),
            ColumnBuilder::Oid(b) => {
                b.append_value(i64::from(u32::from_be_bytes(exactly(value, "oid")?)))
            }
            ColumnBuilder::Float32(b) => {
                b.append_value(f32::from_be_bytes(exactly(value, "float4")?))
            }
            ColumnBuilder::Float64(b) => {
                b.append_value(f64::from_be_bytes(exactly(value, "float8")?))
            }
            ColumnBuilder::Decimal {
                builder,
                precision,
                scale,
            } => builder.append_value(numeric_to_i128(value, *precision, *scale)?),
            ColumnBuilder::Text(b) => b.append_value(utf8(value)?),
            ColumnBuilder::Jsonb(b) => match value.split_first() {
                // jsonb's binary form is a version byte, then the text.
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => return Err("a jsonb value of an unknown format version".into()),
            },
            ColumnBuilder::Uuid(b) => b.append_value(uuid_text(&exactly::<16>(value, "uuid")?)),
            ColumnBuilder::Bytea(b) => b.append_value(value),
            ColumnBuilder::Date(b) => {
                let days = i32::from_be_bytes(exactly(value, "date")?);
                if days == i32::MAX || days == i32::MIN {
                    return Err("a date of infinity, which an Arrow date cannot hold".into());
                }
                b.append_value(
                    days.checked_add(PG_EPOCH_DAYS)
                        .ok_or("a date beyond the Arrow range")?,
                )
            }
            ColumnBuilder::Time(b) => b.append_value(i64::from_be_bytes(exactly(value, "time")?)),
            ColumnBuilder::Timestamp(b) => {
                let micros = i64::from_be_bytes(exactly(value, "timestamp")?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err(
                        "a timestamp of infinity, which an Arrow timestamp cannot hold".into(),
                    );
                }
                b.append_value(
                    micros
                        .checked_add(PG_EPOCH_MICROS)
                        .ok_or("a timestamp beyond the Arrow range")?,
                )
            }
            ColumnBuilder::Interval(b) => {
                let bytes: [u8; 16] = exactly(value, "interval")?;
                let micros = read_i64(&bytes);
                let days = read_i32(&bytes[8..]);
                let months = read_i32(&bytes[12..]);
                let nanos = micros
                    .checked_mul(1000)
                    .ok_or("an interval whose time part is too long for nanoseconds")?;
                b.append_value(IntervalMonthDayNano::new(months, days, nanos))
            }
            ColumnBuilder::List {
                offsets,
                nulls,
                child,
                ..
            } => {
                let added = append_array(child, value)?;
                let last = *offsets.last().expect("starts with 0");
                let next = i32::try_from(added)
                    .ok()
                    .and_then(|n| last.checked_add(n))
                    .ok_or("more array elements in one batch than a list can hold")?;
                offsets.push(next);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Int16(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) | ColumnBuilder::Oid(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal { builder, .. } => Arc::new(builder.finish()),
            ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Uuid(b) => {
                Arc::new(b.finish())
            }
            ColumnBuilder::Bytea(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Interval(b) => Arc::new(b.finish()),
            ColumnBuilder::List {
                field,
                offsets,
                nulls,
                child,
            } => {
                let values = child.finish();
                let finished = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::new(
                    Arc::clone(field),
                    OffsetBuffer::new(finished.into()),
                    values,
                    nulls.finish(),
                ))
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        use lodestar_connector_api::datafusion::arrow::array::ArrayBuilder;
        match self {
            ColumnBuilder::Int32(b) => b.len(),
            ColumnBuilder::List { offsets, .. } => offsets.len() - 1,
            _ => unimplemented!("only used by tests on these"),
        }
    }
}

/// Appends the elements of an array value to `child`; returns how many.
fn append_array(child: &mut ColumnBuilder, value: &[u8]) -> Decoded<usize> {
    if value.len() < 12 {
        return Err("an array value shorter than its header".into());
    }
    let dimensions = read_i32(value);
    if dimensions == 0 {
        return Ok(0);
    }
    if dimensions != 1 {
        return Err(format!(
            "a {dimensions}-dimensional array; only one-dimensional arrays are read"
        ));
    }
    if value.len() < 20 {
        return Err("an array value shorter than its header".into());
    }
    let count = read_i32(&value[12..]).max(0) as usize;
    let mut at = 20;
    for _ in 0..count {
        if value.len() < at + 4 {
            return Err("an array value shorter than its elements".into());
        }
        let len = read_i32(&value[at..]);
        at += 4;
        if len < 0 {
            child.append_null();
        } else {
            let end = at + len as usize;
            let element = value
                .get(at..end)
                .ok_or("an array value shorter than its elements")?;
            child.append(element)?;
            at = end;
        }
    }
    Ok(count)
}

fn utf8(value: &[u8]) -> Decoded<&str> {
    // tokio-postgres sets client_encoding to UTF8, so text arrives as UTF-8.
    std::str::from_utf8(value).map_err(|e| format!("text that is not UTF-8: {e}"))
}

fn uuid_text(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(HEX[(byte >> 4) as usize] as char);
        text.push(HEX[(byte & 0xf) as usize] as char);
    }
    text
}

/// A `numeric` in binary form as an integer of `scale` decimal places, rounded half away from
/// zero (as PostgreSQL rounds) when it has more.
///
/// The binary form: digit count, weight (the power of 10000 of the first digit), sign, display
/// scale, then base-10000 digits.
pub fn numeric_to_i128(value: &[u8], precision: u8, scale: i8) -> Decoded<i128> {
    if value.len() < 8 {
        return Err("a numeric value shorter than its header".into());
    }
    let ndigits = read_i16(value).max(0) as usize;
    let weight = i32::from(read_i16(&value[2..]));
    let sign = u16::from_be_bytes([value[4], value[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN, which a decimal column cannot hold".into()),
        0xD000 | 0xF000 => {
            return Err("a numeric infinity, which a decimal column cannot hold".into());
        }
        other => return Err(format!("a numeric with an unknown sign 0x{other:04x}")),
    }
    if value.len() < 8 + 2 * ndigits {
        return Err("a numeric value shorter than its digits".into());
    }
    let too_big = || format!("a value that does not fit numeric({precision}, {scale})");
    let scale = i32::from(scale);
    let mut result: i128 = 0;
    let mut round_up = false;
    for i in 0..ndigits {
        let digit = i128::from(u16::from_be_bytes([value[8 + 2 * i], value[9 + 2 * i]]));
        // This digit is worth digit × 10^(4 × (weight − i)); scaled, 10^(exponent).
        let exponent = 4 * (weight - i as i32) + scale;
        if exponent >= 0 {
            let term = 10i128
                .checked_pow(exponent as u32)
                .and_then(|p| p.checked_mul(digit))
                .ok_or_else(too_big)?;
            result = result.checked_add(term).ok_or_else(too_big)?;
        } else if exponent > -4 {
            // Part of this digit is kept, and its first dropped decimal decides the rounding.
            let divisor = 10i128.pow((-exponent) as u32);
            result = result.checked_add(digit / divisor).ok_or_else(too_big)?;
            round_up = (digit % divisor) * 10 / divisor >= 5;
            break;
        } else {
            // Nothing of this digit is kept; its leading decimal decides (it follows a digit
            // kept whole, since digits are 4 decimals and the scale boundary fell between them).
            if exponent == -4 {
                round_up = digit >= 5000;
            }
            break;
        }
    }
    if round_up {
        result = result.checked_add(1).ok_or_else(too_big)?;
    }
    if result >= 10i128.pow(u32::from(precision)) {
        return Err(too_big());
    }
    Ok(if sign == 0x4000 { -result } else { result })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_connector_api::datafusion::arrow::array::{Array, AsArray, Int32Array};
    use lodestar_connector_api::datafusion::arrow::datatypes::{DataType, Int32Type, Schema};

    /// The binary form of a numeric from its base-10000 digits.
    fn numeric(weight: i16, negative: bool, dscale: i16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_become_scaled_integers() {
        // 12345.67 = [1, 2345, 6700] with weight 1.
        assert_eq!(
            numeric_to_i128(&numeric(1, false, 2, &[1, 2345, 6700]), 12, 2),
            Ok(1_234_567)
        );
        assert_eq!(
            numeric_to_i128(&numeric(1, true, 2, &[1, 2345, 6700]), 12, 2),
            Ok(-1_234_567)
        );
        // 0.05 = [500] with weight -1.
        assert_eq!(numeric_to_i128(&numeric(-1, false, 2, &[500]), 5, 2), Ok(5));
        // Zero has no digits.
        assert_eq!(numeric_to_i128(&numeric(0, false, 0, &[]), 5, 2), Ok(0));
        // 1e8 = [1] with weight 2 (trailing zero digits are not sent).
        assert_eq!(
            numeric_to_i128(&numeric(2, false, 0, &[1]), 38, 10),
            Ok(100_000_000 * 10i128.pow(10))
        );
    }

    #[test]
    fn extra_decimals_round_half_away_from_zero() {
        // 1.23456 at scale 2 → 1.23; 1.235 → 1.24; -1.235 → -1.24.
        assert_eq!(
            numeric_to_i128(&numeric(0, false, 5, &[1, 2345, 6000]), 10, 2),
            Ok(123)
        );
        assert_eq!(
            numeric_to_i128(&numeric(0, false, 3, &[1, 2350]), 10, 2),
            Ok(124)
        );
        assert_eq!(
            numeric_to_i128(&numeric(0, true, 3, &[1, 2350]), 10, 2),
            Ok(-124)
        );
        // 0.00005 at scale 4 → 0.0001 (the dropped digit group starts with 5).
        assert_eq!(
            numeric_to_i128(&numeric(-2, false, 5, &[5000]), 10, 4),
            Ok(1)
        );
        // 0.99999 at scale 0 → 1.
        assert_eq!(
            numeric_to_i128(&numeric(-1, false, 5, &[9999, 9000]), 10, 0),
            Ok(1)
        );
    }

    #[test]
    fn numerics_that_do_not_fit_are_errors() {
        // 1000.00 in numeric(5, 2).
        assert!(numeric_to_i128(&numeric(0, false, 2, &[1000]), 5, 2).is_err());
        let mut nan = numeric(0, false, 0, &[]);
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        assert!(numeric_to_i128(&nan, 10, 2).unwrap_err().contains("NaN"));
        // 40 nines do not fit 38 digits.
        let huge = numeric(9, false, 0, &[9999; 10]);
        assert!(numeric_to_i128(&huge, 38, 0).is_err());
    }

    #[test]
    fn uuids_are_hyphenated_lowercase() {
        let bytes: [u8; 16] = [
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00,
        ];
        assert_eq!(uuid_text(&bytes), "123e4567-e89b-12d3-a456-426614174000");
    }

    fn copy_stream(rows: &[Option<i32>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&1i16.to_be_bytes());
            match row {
                Some(v) => {
                    out.extend_from_slice(&4i32.to_be_bytes());
                    out.extend_from_slice(&v.to_be_bytes());
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn tuples_split_across_messages_are_joined() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let data = copy_stream(&[Some(1), None, Some(-7), Some(40)]);
        // Every split point, including inside the header and inside a field.
        for split in 0..data.len() {
            let mut decoder = BatchDecoder::new(Arc::clone(&schema), &[PgType::Int4], 4);
            decoder
                .feed(Bytes::copy_from_slice(&data[..split]))
                .unwrap();
            decoder
                .feed(Bytes::copy_from_slice(&data[split..]))
                .unwrap();
            decoder.finish_stream().unwrap();
            let batch = decoder.flush().unwrap();
            let values = batch.column(0).as_primitive::<Int32Type>();
            assert_eq!(
                values,
                &Int32Array::from(vec![Some(1), None, Some(-7), Some(40)]),
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_stream_cut_short_is_an_error() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let data = copy_stream(&[Some(1)]);
        let mut decoder = BatchDecoder::new(schema, &[PgType::Int4], 4);
        decoder
            .feed(Bytes::copy_from_slice(&data[..data.len() - 3]))
            .unwrap();
        assert!(decoder.finish_stream().is_err());
    }

    #[test]
    fn arrays_become_lists() {
        let mut builder = ColumnBuilder::new(&PgType::Array(Box::new(PgType::Int4)), 2);
        // int4[] {5, NULL}: ndim 1, has nulls, element oid 23, size 2, lower bound 1.
        let mut value = Vec::new();
        for n in [1i32, 1, 23, 2, 1] {
            value.extend_from_slice(&n.to_be_bytes());
        }
        value.extend_from_slice(&4i32.to_be_bytes());
        value.extend_from_slice(&5i32.to_be_bytes());
        value.extend_from_slice(&(-1i32).to_be_bytes());
        builder.append(&value).unwrap();
        builder.append_null();
        // An empty array has no dimensions.
        let mut empty = Vec::new();
        for n in [0i32, 0, 23] {
            empty.extend_from_slice(&n.to_be_bytes());
        }
        builder.append(&empty).unwrap();
        assert_eq!(builder.len(), 3);
        let array = builder.finish();
        let list = array.as_list::<i32>();
        assert_eq!(list.value_length(0), 2);
        assert!(list.is_null(1));
        assert_eq!(list.value_length(2), 0);
        // Two dimensions are refused, naming why.
        let mut two = Vec::new();
        for n in [2i32, 0, 23, 1, 1, 1, 1] {
            two.extend_from_slice(&n.to_be_bytes());
        }
        assert!(builder.append(&two).unwrap_err().contains("2-dimensional"));
    }
}

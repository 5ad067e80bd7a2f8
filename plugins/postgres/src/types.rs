//! PostgreSQL column types and the Arrow types they are read as (the table in
//! docs/connectors/postgres.md), and what a filter on each may be pushed as.

use std::sync::Arc;

use lodestar_connector_api::datafusion::arrow::datatypes::{
    DataType, Field, IntervalUnit, TimeUnit,
};

/// Precision and scale an unconstrained `numeric` (or one beyond Decimal128) is read with.
pub const FALLBACK_PRECISION: u8 = 38;
pub const FALLBACK_SCALE: i8 = 10;

/// A column type this connector reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// `numeric(p, s)`; `exact` is false for the fallback of an unconstrained or too wide one,
    /// whose values are rounded to the fallback scale.
    Numeric {
        precision: u8,
        scale: i8,
        exact: bool,
    },
    /// text, varchar, name.
    Text,
    /// char(n): blank-padded, and compared ignoring the padding, unlike Arrow strings.
    Bpchar,
    /// Read as their text form.
    Json,
    Jsonb,
    Uuid,
    Enum,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    /// A one-dimensional array of a scalar type above.
    Array(Box<PgType>),
}

/// How the values of a pushed-down comparison compare, on both engines alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Decimal,
    /// Compared by equality and LIKE only: `<` follows the column's collation in Postgres and
    /// byte order in DataFusion.
    Text,
    Date,
    /// A timestamp without time zone (Lodestar reads it as UTC).
    Timestamp,
    /// An instant.
    Timestamptz,
}

impl PgType {
    /// The type of a built-in scalar type by OID.
    pub fn builtin(oid: u32, typmod: i32) -> Option<PgType> {
        Some(match oid {
            16 => PgType::Bool,
            17 => PgType::Bytea,
            19 | 25 | 1043 => PgType::Text,
            20 => PgType::Int8,
            21 => PgType::Int2,
            23 => PgType::Int4,
            26 => PgType::Oid,
            114 => PgType::Json,
            700 => PgType::Float4,
            701 => PgType::Float8,
            1042 => PgType::Bpchar,
            1082 => PgType::Date,
            1083 => PgType::Time,
            1114 => PgType::Timestamp,
            1184 => PgType::Timestamptz,
            1186 => PgType::Interval,
            1700 => numeric(typmod),
            2950 => PgType::Uuid,
            3802 => PgType::Jsonb,
            _ => return None,
        })
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 | PgType::Oid => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric {
                precision, scale, ..
            } => DataType::Decimal128(*precision, *scale),
            PgType::Text
            | PgType::Bpchar
            | PgType::Json
            | PgType::Jsonb
            | PgType::Uuid
            | PgType::Enum => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Timestamptz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
            }
            PgType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            PgType::Array(element) => {
                DataType::List(Arc::new(Field::new("item", element.arrow_type(), true)))
            }
        }
    }

    /// How a filter on this column compares, if it can be pushed to Postgres with the same
    /// result DataFusion would give; `cast_to_text` when the column must be compared as its
    /// text form (the form it is read in).
    pub fn filter_kind(&self) -> Option<(Kind, bool)> {
        Some(match self {
            PgType::Bool => (Kind::Bool, false),
            PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => (Kind::Int, false),
            PgType::Float4 | PgType::Float8 => (Kind::Float, false),
            PgType::Numeric { exact: true, .. } => (Kind::Decimal, false),
            PgType::Text => (Kind::Text, false),
            PgType::Uuid | PgType::Enum | PgType::Json | PgType::Jsonb => (Kind::Text, true),
            PgType::Date => (Kind::Date, false),
            PgType::Timestamp => (Kind::Timestamp, false),
            PgType::Timestamptz => (Kind::Timestamptz, false),
            // Rounded values, padded strings, bytes, times of day, intervals, arrays: filtered
            // by DataFusion after the read.
            PgType::Numeric { exact: false, .. }
            | PgType::Bpchar
            | PgType::Bytea
            | PgType::Time
            | PgType::Interval
            | PgType::Array(_) => return None,
        })
    }
}

/// `numeric` with a type modifier: Decimal128 with its precision and scale when they fit,
/// otherwise the documented fallback.
fn numeric(typmod: i32) -> PgType {
    // The modifier is ((precision << 16) | scale) + VARHDRSZ, the scale an 11-bit signed number.
    if typmod >= 4 {
        let t = typmod - 4;
        let precision = (t >> 16) & 0xffff;
        let scale = ((t & 0x7ff) ^ 1024) - 1024;
        if (1..=38).contains(&precision) && (0..=precision).contains(&scale) {
            return PgType::Numeric {
                precision: precision as u8,
                scale: scale as i8,
                exact: true,
            };
        }
    }
    PgType::Numeric {
        precision: FALLBACK_PRECISION,
        scale: FALLBACK_SCALE,
        exact: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_modifiers_give_precision_and_scale() {
        // numeric(12, 2): ((12 << 16) | 2) + 4.
        assert_eq!(
            PgType::builtin(1700, (12 << 16 | 2) + 4),
            Some(PgType::Numeric {
                precision: 12,
                scale: 2,
                exact: true
            })
        );
        assert_eq!(
            PgType::builtin(1700, -1),
            Some(PgType::Numeric {
                precision: 38,
                scale: 10,
                exact: false
            })
        );
        // numeric(50, 2) does not fit Decimal128.
        assert!(matches!(
            PgType::builtin(1700, (50 << 16 | 2) + 4),
            Some(PgType::Numeric { exact: false, .. })
        ));
        // numeric(5, -2) (PostgreSQL 15): a negative scale falls back too.
        let negative = (5 << 16 | (-2i32 & 0x7ff)) + 4;
        assert!(matches!(
            PgType::builtin(1700, negative),
            Some(PgType::Numeric { exact: false, .. })
        ));
    }
}

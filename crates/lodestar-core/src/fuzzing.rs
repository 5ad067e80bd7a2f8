//! Internal parsers behind plain public functions, for `crates/lodestar-fuzz` only.
//!
//! The fuzz targets need a few `pub(crate)` pieces of the core (the `time_partition` option's
//! reader, the rewrite of a time bound into a date-partition bound). Making those items
//! public would widen the core's API; this one hidden module is the whole extra surface, and
//! it promises nothing to anyone else.

use crate::connect::TimePartition;
use datafusion::logical_expr::{Expr, Operator};

/// The `time_partition` option's `(column, time columns)`, as the `files` connector reads it;
/// `None` when the value does not have that shape.
pub fn time_partition_option(value: &serde_json::Value) -> Option<(String, Vec<String>)> {
    TimePartition::parse(value).map(|tp| (tp.column, tp.time))
}

/// The bound on the date partition that a filter on the time column `time` implies:
/// `(operator, YYYY-MM-DD)`, or `None` when the filter does not bound `time` by a literal.
pub fn date_bound(filter: &Expr, time: &str) -> Option<(Operator, String)> {
    crate::connect::partition::date_bound(filter, time)
}

//! Internal parsers behind plain public functions, for `crates/lodestar-fuzz` only.
//!
//! The fuzz targets call the parsers the core uses through this one hidden module, which
//! promises nothing to anyone else. The `time_partition` option's reader and the rewrite of a
//! time bound into a date-partition bound are the connector kit's
//! (`lodestar_connector_api::kit::partition`), which the core and the plugins share.

use datafusion::logical_expr::{Expr, Operator};
use lodestar_connector_api::kit::partition::{self, TimePartition};

/// The `time_partition` option's `(column, time columns)`, as the `files` connector reads it;
/// `None` when the value does not have that shape.
pub fn time_partition_option(value: &serde_json::Value) -> Option<(String, Vec<String>)> {
    TimePartition::from_json(value)
        .ok()
        .map(|tp| (tp.column, tp.time))
}

/// The bound on the date partition that a filter on the time column `time` implies:
/// `(operator, YYYY-MM-DD)`, or `None` when the filter does not bound `time` by a literal.
pub fn date_bound(filter: &Expr, time: &str) -> Option<(Operator, String)> {
    partition::date_bound(filter, time)
}

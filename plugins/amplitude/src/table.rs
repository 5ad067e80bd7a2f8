//! The table `events`: a scan reads the hourly files its time range needs, parses and
//! deduplicates them, and hands the rows over as an in-memory plan.
//!
//! Filters on `event_time` and `server_upload_time` are taken as `Inexact` pushdown: they
//! choose the hours of files read, and the host filters the rows again. Files are named by
//! upload hour, and an event is uploaded at or after it happened, so a range `[from, to)` of
//! `event_time` reads the files of `from`'s hour to `to`'s hour plus `late_hours`; a range of
//! `server_upload_time` reads exactly its hours.

use std::sync::Arc;

use async_trait::async_trait;
use lodestar_connector_api::datafusion::arrow::datatypes::SchemaRef;
use lodestar_connector_api::datafusion::catalog::{Session, TableProvider};
use lodestar_connector_api::datafusion::common::ScalarValue;
use lodestar_connector_api::datafusion::datasource::memory::MemorySourceConfig;
use lodestar_connector_api::datafusion::error::{DataFusionError, Result};
use lodestar_connector_api::datafusion::logical_expr::utils::split_conjunction;
use lodestar_connector_api::datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use lodestar_connector_api::datafusion::physical_plan::ExecutionPlan;
use lodestar_connector_api::kit::secret::Redactor;

use crate::layout::{self, Hour};
use crate::options::{BadLines, Flattened};
use crate::rows::{self, Collector};
use crate::source::{HourRange, Source};

/// `events`.
#[derive(Debug)]
pub struct EventsTable {
    source: Arc<Source>,
    schema: SchemaRef,
    flattened: Vec<Flattened>,
    bad_lines: BadLines,
    late_hours: i64,
    redactor: Redactor,
}

impl EventsTable {
    pub fn new(
        source: Source,
        flattened: Vec<Flattened>,
        bad_lines: BadLines,
        late_hours: i64,
        redactor: Redactor,
    ) -> EventsTable {
        EventsTable {
            source: Arc::new(source),
            schema: rows::schema(&flattened),
            flattened,
            bad_lines,
            late_hours,
            redactor,
        }
    }

    fn error(&self, message: &str) -> DataFusionError {
        self.redactor.datafusion_error(message)
    }

    /// The hours of files a scan with `filters` reads.
    fn hours(&self, filters: &[Expr]) -> HourRange {
        let (mut lo, mut hi): (Option<Hour>, Option<Hour>) = (None, None);
        for filter in filters.iter().flat_map(|f| split_conjunction(f)) {
            let Some((column, bound)) = time_bound(filter) else {
                continue;
            };
            let slack = if column == "event_time" {
                self.late_hours
            } else {
                0
            };
            match bound {
                Bound::From(h) => lo = Some(lo.map_or(h, |l| l.max(h))),
                Bound::To(h) => hi = Some(hi.map_or(h + slack, |x| x.min(h + slack))),
            }
        }
        match (lo, hi) {
            (None, None) => None,
            (lo, hi) => Some((lo.unwrap_or(Hour::MIN / 2), hi.unwrap_or(Hour::MAX / 2))),
        }
    }
}

/// A bound on the hours of files: from this hour on, or up to this hour (included).
#[derive(Debug, PartialEq, Eq)]
enum Bound {
    From(Hour),
    To(Hour),
}

/// Which time column `filter` bounds, and how, if it compares one with a literal.
fn time_bound(filter: &Expr) -> Option<(&str, Bound)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    let (column, op, value) = match (column_of(left), column_of(right), &**left, &**right) {
        (Some(c), None, _, Expr::Literal(v, _)) => (c, *op, v),
        (None, Some(c), Expr::Literal(v, _), _) => (c, op.swap()?, v),
        _ => return None,
    };
    if column != "event_time" && column != "server_upload_time" {
        return None;
    }
    let micros = utc_micros(value)?;
    let bound = match op {
        Operator::GtEq | Operator::Gt => Bound::From(layout::of_micros(micros)),
        // Before a whole hour: nothing of that hour.
        Operator::Lt => Bound::To(layout::of_micros(micros - 1)),
        Operator::LtEq => Bound::To(layout::of_micros(micros)),
        _ => return None,
    };
    Some((column, bound))
}

/// The column an expression reads, through casts.
fn column_of(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(cast) => column_of(&cast.expr),
        Expr::TryCast(cast) => column_of(&cast.expr),
        _ => None,
    }
}

/// Microseconds since the epoch of a UTC (or zone-less) timestamp or date literal.
fn utc_micros(value: &ScalarValue) -> Option<i64> {
    let is_utc = |tz: &Option<Arc<str>>| {
        tz.as_deref()
            .is_none_or(|tz| matches!(tz, "UTC" | "+00:00" | "Z" | "utc"))
    };
    match value {
        ScalarValue::TimestampSecond(Some(v), tz) if is_utc(tz) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), tz) if is_utc(tz) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), tz) if is_utc(tz) => Some(*v),
        ScalarValue::TimestampNanosecond(Some(v), tz) if is_utc(tz) => Some(v.div_euclid(1_000)),
        ScalarValue::Date32(Some(days)) => Some(i64::from(*days) * 86_400_000_000),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if split_conjunction(f).iter().any(|e| time_bound(e).is_some()) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let range = self.hours(filters);
        let files = self.source.read(range).await.map_err(|e| self.error(&e))?;
        let flattened = self.flattened.clone();
        let bad_lines = self.bad_lines;
        let schema = Arc::clone(&self.schema);
        let (batches, collector) = tokio::task::spawn_blocking(move || {
            let mut collector = Collector::default();
            for file in &files {
                collector.read_gz(&file.name, file.gz.as_slice(), &flattened, bad_lines)?;
            }
            let batches = collector.batches(&schema)?;
            Ok::<_, String>((batches, collector))
        })
        .await
        .map_err(|e| self.error(&format!("reading the exports failed: {e}")))?
        .map_err(|e| self.error(&e))?;
        if !collector.bad.is_empty() {
            // `bad_lines: skip`: the lines left out are said, never silently dropped.
            eprintln!(
                "warning: amplitude: skipped {} malformed line(s) (`bad_lines: skip`):",
                collector.bad.len()
            );
            for bad in collector.bad.iter().take(20) {
                eprintln!(
                    "  {} line {}: {}",
                    self.redactor.text(&bad.file),
                    bad.line,
                    bad.problem
                );
            }
            if collector.bad.len() > 20 {
                eprintln!("  ... and {} more", collector.bad.len() - 20);
            }
        }
        let exec = MemorySourceConfig::try_new_exec(
            &[batches],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_connector_api::datafusion::logical_expr::{col, lit};

    fn ts(micros: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(micros * 1000), None))
    }

    fn cmp(l: Expr, op: Operator, r: Expr) -> Expr {
        Expr::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)))
    }

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn time_filters_choose_the_hours() {
        let table = EventsTable::new(
            Source::Files("/nonexistent".into()),
            Vec::new(),
            BadLines::Fail,
            5,
            Redactor::default(),
        );
        let t = |h: i64| ts(h * HOUR);
        let filters = [
            cmp(col("event_time"), Operator::GtEq, t(100)),
            cmp(col("event_time"), Operator::Lt, t(110)),
        ];
        // Files of hours 100 to 109, and five later hours for late uploads.
        assert_eq!(table.hours(&filters), Some((100, 114)));
        let upload = [
            cmp(t(100), Operator::LtEq, col("server_upload_time")),
            cmp(col("server_upload_time"), Operator::LtEq, t(110)),
        ];
        assert_eq!(table.hours(&upload), Some((100, 110)));
        assert_eq!(
            table.hours(&[cmp(col("event_type"), Operator::Eq, lit("x"))]),
            None
        );
        let pushdown = table
            .supports_filters_pushdown(&[&filters[0], &cmp(col("x"), Operator::Eq, lit(1))])
            .unwrap();
        assert_eq!(
            pushdown,
            [
                TableProviderFilterPushDown::Inexact,
                TableProviderFilterPushDown::Unsupported
            ]
        );
    }
}

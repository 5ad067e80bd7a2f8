//! A table of the source: DataFusion's `ListingTable` over `s3://bucket/prefix/table/`, run
//! with the plugin's own runtime environment, where its S3 store is registered.
//!
//! The host's `RuntimeEnv` is invisible across the plugin boundary (the plugin gets a default
//! one in every `Session` and `TaskContext` it is handed), so:
//! - `scan` plans with a session state of the plugin's: the host session's options, the
//!   plugin's runtime environment;
//! - the plan it returns swaps the plugin's runtime environment into the task context when it
//!   executes, so that the file readers find the S3 store;
//! - the host's physical optimizer cannot push filters into a plan behind the boundary, so
//!   `scan` hands the pushed filters to the Parquet source itself, for row-group (statistics
//!   and page index) pruning and filtering while decoding;
//! - the listing table prunes `key=value` partitions with filters on partition columns, and a
//!   `time_partition` turns a filter on the time column into one on its date partition.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use lodestar_connector_api::datafusion::arrow::datatypes::{DataType, SchemaRef};
use lodestar_connector_api::datafusion::catalog::{Session, TableProvider};
use lodestar_connector_api::datafusion::common::tree_node::TreeNodeRecursion;
use lodestar_connector_api::datafusion::common::{DFSchema, ScalarValue, Statistics};
use lodestar_connector_api::datafusion::datasource::listing::ListingTable;
use lodestar_connector_api::datafusion::datasource::physical_plan::FileScanConfig;
use lodestar_connector_api::datafusion::datasource::source::DataSourceExec;
use lodestar_connector_api::datafusion::error::{DataFusionError, Result};
use lodestar_connector_api::datafusion::execution::runtime_env::RuntimeEnv;
use lodestar_connector_api::datafusion::execution::session_state::{
    SessionState, SessionStateBuilder,
};
use lodestar_connector_api::datafusion::execution::{SendableRecordBatchStream, TaskContext};
use lodestar_connector_api::datafusion::logical_expr::utils::split_conjunction;
use lodestar_connector_api::datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType, col, lit,
};
use lodestar_connector_api::datafusion::physical_expr::PhysicalExpr;
use lodestar_connector_api::datafusion::physical_expr::utils::reassign_expr_columns;
use lodestar_connector_api::datafusion::physical_plan::statistics::StatisticsArgs;
use lodestar_connector_api::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use lodestar_connector_api::datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
};
use lodestar_connector_api::datafusion::prelude::SessionConfig;

use crate::options::TimePartition;
use crate::store::Redactor;

/// A table of the source.
#[derive(Debug)]
pub struct S3Table {
    listing: Arc<ListingTable>,
    runtime_env: Arc<RuntimeEnv>,
    partitions: Vec<String>,
    /// The time partition and the type of its column.
    time_partition: Option<(TimePartition, DataType)>,
    redactor: Arc<Redactor>,
}

impl S3Table {
    pub fn new(
        listing: ListingTable,
        runtime_env: Arc<RuntimeEnv>,
        partitions: Vec<String>,
        time_partition: Option<TimePartition>,
        redactor: Arc<Redactor>,
    ) -> S3Table {
        let schema = listing.schema();
        let time_partition = time_partition.and_then(|tp| {
            let data_type = schema.field_with_name(&tp.column).ok()?.data_type().clone();
            Some((tp, data_type))
        });
        S3Table {
            listing: Arc::new(listing),
            runtime_env,
            partitions,
            time_partition,
            redactor,
        }
    }

    /// The plugin's session state for one scan: the host session's options, with Parquet
    /// filter pushdown on, and the plugin's runtime environment.
    fn session(&self, host: &dyn Session) -> SessionState {
        let mut config: SessionConfig = host.config().clone();
        let options = config.options_mut();
        options.execution.parquet.pruning = true;
        options.execution.parquet.pushdown_filters = true;
        options.execution.parquet.reorder_filters = true;
        SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime_env))
            .build()
    }

    /// Whether `filter` reads only partition columns (the listing table prunes with it).
    fn is_partition_filter(&self, filter: &Expr) -> bool {
        let columns = filter.column_refs();
        !columns.is_empty() && columns.iter().all(|c| self.partitions.contains(&c.name))
    }

    /// Filters on the date partition implied by filters on the time column.
    fn partition_bounds(&self, filters: &[Expr]) -> Vec<Expr> {
        let Some((tp, data_type)) = &self.time_partition else {
            return Vec::new();
        };
        filters
            .iter()
            .flat_map(|f| split_conjunction(f))
            .filter_map(|f| date_bound(f, &tp.time))
            .map(|(op, date)| {
                let value = partition_literal(&date, data_type);
                Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(col(tp.column.as_str())),
                    op,
                    Box::new(lit(value)),
                ))
            })
            .collect()
    }

    /// Hands the filters that are not on partition columns to the Parquet source of `plan`.
    fn push_into_files(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        filters: &[Expr],
        session: &SessionState,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(exec) = plan.downcast_ref::<DataSourceExec>() else {
            return Ok(plan); // nothing to read (every partition pruned)
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(plan);
        };
        let table_schema = Arc::clone(config.file_source.table_schema().table_schema());
        let df_schema = DFSchema::try_from(Arc::clone(&table_schema))?;
        let predicates: Vec<Arc<dyn PhysicalExpr>> = filters
            .iter()
            .flat_map(|f| split_conjunction(f))
            .filter(|f| !self.is_partition_filter(f))
            // A filter that does not plan here is still applied by the host: skipping it only
            // loses pruning.
            .filter_map(|f| session.create_physical_expr((*f).clone(), &df_schema).ok())
            .filter_map(|p| reassign_expr_columns(p, &table_schema).ok())
            .collect();
        if predicates.is_empty() {
            return Ok(plan);
        }
        let pushed = config
            .file_source
            .try_pushdown_filters(predicates, session.config_options())?;
        match pushed.updated_node {
            Some(source) => {
                let mut config = config.clone();
                config.file_source = source;
                Ok(DataSourceExec::from_data_source(config))
            }
            None => Ok(plan),
        }
    }
}

#[async_trait]
impl TableProvider for S3Table {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// The listing table's answer: `Exact` for filters on partition columns (it prunes with
    /// them), `Inexact` for the others (they prune files and row groups; the host filters the
    /// rows again).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.listing.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let session = self.session(state);
        let mut all = filters.to_vec();
        all.extend(self.partition_bounds(filters));
        let plan = self
            .listing
            .scan(&session, projection, &all, limit)
            .await
            .map_err(|e| self.redactor.datafusion(e))?;
        let plan = self.push_into_files(plan, filters, &session)?;
        Ok(Arc::new(S3ScanExec {
            inner: plan,
            runtime_env: Arc::clone(&self.runtime_env),
            redactor: Arc::clone(&self.redactor),
        }))
    }

    fn statistics(&self) -> Option<Statistics> {
        self.listing.statistics()
    }
}

/// `(operator, YYYY-MM-DD)` bounding the date partition of `time`, if `filter` bounds `time`
/// by a literal: `ts >= X` gives `dt >= date(X)`, `ts < X` gives `dt <= date(X)` (or
/// `dt < date(X)` when X is a midnight), and so on.
fn date_bound(filter: &Expr, time: &str) -> Option<(Operator, String)> {
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
    let date = iso_date(days);
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

/// `YYYY-MM-DD` of a day number (Howard Hinnant's civil-from-days).
fn iso_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A text literal of the partition column's type (partition values are dictionary-encoded
/// text).
fn partition_literal(date: &str, data_type: &DataType) -> ScalarValue {
    let text = ScalarValue::Utf8(Some(date.to_string()));
    match data_type {
        DataType::Dictionary(key, _) => ScalarValue::Dictionary(key.clone(), Box::new(text)),
        _ => text,
    }
}

/// The plan a scan returns: the listing table's, executed with the plugin's runtime
/// environment (where the S3 store is), its errors explained and masked.
struct S3ScanExec {
    inner: Arc<dyn ExecutionPlan>,
    runtime_env: Arc<RuntimeEnv>,
    redactor: Arc<Redactor>,
}

impl fmt::Debug for S3ScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ScanExec")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for S3ScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for S3ScanExec {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    /// A leaf: the host sees the plugin's plan as one opaque node anyway.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "an S3 scan has no children to replace".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let context = Arc::new(TaskContext::new(
            context.task_id(),
            context.session_id(),
            context.session_config().clone(),
            context.scalar_functions().clone(),
            context.higher_order_functions().clone(),
            context.aggregate_functions().clone(),
            context.window_functions().clone(),
            Arc::clone(&self.runtime_env),
        ));
        let stream = self
            .inner
            .execute(partition, context)
            .map_err(|e| self.redactor.datafusion(e))?;
        let redactor = Arc::clone(&self.redactor);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            stream.schema(),
            stream.map_err(move |e| redactor.datafusion(e)),
        )))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        // The inner plan is a leaf too: it has no inputs' statistics to take.
        self.inner.statistics_from_inputs(&[], args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(micros: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(Some(micros), None))
    }

    fn cmp(l: Expr, op: Operator, r: Expr) -> Expr {
        Expr::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)))
    }

    /// 2026-05-01T00:00:00 UTC in microseconds.
    const MAY_1: i64 = 1_777_593_600 * 1_000_000;

    #[test]
    fn days_are_iso_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(20_574), "2026-05-01");
        assert_eq!(iso_date(-1), "1969-12-31");
        assert_eq!(iso_date(11_016), "2000-02-29");
    }

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
        let cast = Expr::Cast(lodestar_connector_api::datafusion::logical_expr::Cast::new(
            Box::new(c()),
            DataType::Timestamp(
                lodestar_connector_api::datafusion::arrow::datatypes::TimeUnit::Nanosecond,
                None,
            ),
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
}

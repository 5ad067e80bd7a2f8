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
use lodestar_connector_api::datafusion::arrow::datatypes::SchemaRef;
use lodestar_connector_api::datafusion::catalog::{Session, TableProvider};
use lodestar_connector_api::datafusion::common::{DFSchema, Statistics};
use lodestar_connector_api::datafusion::datasource::listing::ListingTable;
use lodestar_connector_api::datafusion::datasource::physical_plan::FileScanConfig;
use lodestar_connector_api::datafusion::datasource::source::DataSourceExec;
use lodestar_connector_api::datafusion::error::Result;
use lodestar_connector_api::datafusion::execution::runtime_env::RuntimeEnv;
use lodestar_connector_api::datafusion::execution::session_state::{
    SessionState, SessionStateBuilder,
};
use lodestar_connector_api::datafusion::execution::{SendableRecordBatchStream, TaskContext};
use lodestar_connector_api::datafusion::logical_expr::utils::split_conjunction;
use lodestar_connector_api::datafusion::logical_expr::{
    Expr, TableProviderFilterPushDown, TableType,
};
use lodestar_connector_api::datafusion::physical_expr::PhysicalExpr;
use lodestar_connector_api::datafusion::physical_expr::utils::reassign_expr_columns;
use lodestar_connector_api::datafusion::physical_plan::ExecutionPlan;
use lodestar_connector_api::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use lodestar_connector_api::datafusion::prelude::SessionConfig;
use lodestar_connector_api::kit::partition::{DatePruning, TimePartition};
use lodestar_connector_api::kit::plan::{Wrap, WrapExec};

use crate::store::S3Errors;

/// A table of the source.
#[derive(Debug)]
pub struct S3Table {
    listing: Arc<ListingTable>,
    runtime_env: Arc<RuntimeEnv>,
    partitions: Vec<String>,
    /// The pruning of its date partition by its time column.
    time_partition: Option<DatePruning>,
    errors: Arc<S3Errors>,
}

impl S3Table {
    pub fn new(
        listing: ListingTable,
        runtime_env: Arc<RuntimeEnv>,
        partitions: Vec<String>,
        time_partition: Option<TimePartition>,
        errors: Arc<S3Errors>,
    ) -> S3Table {
        let schema = listing.schema();
        let time_partition = time_partition.and_then(|tp| DatePruning::new(&tp, &schema));
        S3Table {
            listing: Arc::new(listing),
            runtime_env,
            partitions,
            time_partition,
            errors,
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
        all.extend(
            self.time_partition
                .iter()
                .flat_map(|pruning| pruning.bounds(filters)),
        );
        let plan = self
            .listing
            .scan(&session, projection, &all, limit)
            .await
            .map_err(|e| self.errors.datafusion(e))?;
        let plan = self.push_into_files(plan, filters, &session)?;
        Ok(Arc::new(WrapExec::new(
            plan,
            S3Scan {
                runtime_env: Arc::clone(&self.runtime_env),
                errors: Arc::clone(&self.errors),
            },
        )))
    }

    fn statistics(&self) -> Option<Statistics> {
        self.listing.statistics()
    }
}

/// What wraps the plan a scan returns ([`WrapExec`]): the listing table's plan, executed with
/// the plugin's runtime environment (where the S3 store is), its errors explained and masked.
struct S3Scan {
    runtime_env: Arc<RuntimeEnv>,
    errors: Arc<S3Errors>,
}

impl fmt::Debug for S3Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Scan").finish_non_exhaustive()
    }
}

impl Wrap for S3Scan {
    fn execute(
        &self,
        inner: &dyn ExecutionPlan,
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
        let stream = inner
            .execute(partition, context)
            .map_err(|e| self.errors.datafusion(e))?;
        let errors = Arc::clone(&self.errors);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            stream.schema(),
            stream.map_err(move |e| errors.datafusion(e)),
        )))
    }
}

//! A source's table on a cluster node: [`RemoteTable`], the table the scheduler plans with,
//! and [`SourceScanExec`], a plugin's scan as it travels to an executor.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::TryStreamExt;
use tokio::sync::OnceCell;

use super::sources::{SourceSpec, node_name};

/// A table of the client's sources, as the scheduler decodes it from a plan: its columns are
/// the plan's, and a scan reopens the source on this node and plans there.
#[derive(Debug)]
pub(crate) struct RemoteTable {
    pub spec: SourceSpec,
    pub table: String,
    pub schema: SchemaRef,
}

#[async_trait]
impl TableProvider for RemoteTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// The client has already pushed the filters its connector takes into the scan; any
    /// filter offered again is kept above the scan as well, which is always exact.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.spec.open_table(&self.table).await?;
        if table.schema().fields() != self.schema.fields() {
            return Err(DataFusionError::Execution(format!(
                "on {}: table `{}.{}` has other columns here than where the query was planned",
                node_name(),
                self.spec.name,
                self.table
            )));
        }
        let plan = table.scan(state, projection, filters, limit).await?;
        if !self.spec.is_plugin() {
            return Ok(plan);
        }
        let scan = ScanSpec {
            source: self.spec.clone(),
            table: self.table.clone(),
            projection: projection.cloned(),
            filters: filters.to_vec(),
            limit,
        };
        Ok(Arc::new(SourceScanExec::planned(scan, plan)))
    }
}

/// What a plugin's scan was asked for, enough to ask again on another node.
#[derive(Debug, Clone)]
pub(crate) struct ScanSpec {
    pub source: SourceSpec,
    pub table: String,
    pub projection: Option<Vec<usize>>,
    pub filters: Vec<Expr>,
    pub limit: Option<usize>,
}

/// A plugin's scan on a cluster. The scheduler plans it with the plugin's plan inside; the
/// codec sends the [`ScanSpec`], the schema and the partition count; the executor that runs
/// a partition reopens the source, scans the same table with the same projection, filters and
/// limit, and runs that partition of the plugin's plan.
pub(crate) struct SourceScanExec {
    scan: ScanSpec,
    properties: Arc<PlanProperties>,
    /// Shared by the partitions that run in this process.
    plan: Arc<OnceCell<Arc<dyn ExecutionPlan>>>,
}

impl SourceScanExec {
    /// On the scheduler: the plugin's plan is at hand.
    fn planned(scan: ScanSpec, plan: Arc<dyn ExecutionPlan>) -> SourceScanExec {
        let properties = Arc::new(leaf_properties(
            plan.schema(),
            plan.properties().partitioning.partition_count(),
        ));
        SourceScanExec {
            scan,
            properties,
            plan: Arc::new(OnceCell::new_with(Some(plan))),
        }
    }

    /// On an executor: the plugin's plan is made when a partition first runs.
    pub fn remote(scan: ScanSpec, schema: SchemaRef, partitions: usize) -> SourceScanExec {
        SourceScanExec {
            scan,
            properties: Arc::new(leaf_properties(schema, partitions)),
            plan: Arc::new(OnceCell::new()),
        }
    }

    pub fn scan(&self) -> &ScanSpec {
        &self.scan
    }

    pub fn partitions(&self) -> usize {
        self.properties.partitioning.partition_count()
    }
}

fn leaf_properties(schema: SchemaRef, partitions: usize) -> PlanProperties {
    PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    )
}

/// The plugin's plan for `scan` on this node, planned with the task's configuration.
async fn plan_here(
    scan: &ScanSpec,
    context: &TaskContext,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let table = scan.source.open_table(&scan.table).await?;
    let session = SessionStateBuilder::new()
        .with_session_id(context.session_id())
        .with_config(context.session_config().clone())
        .with_runtime_env(context.runtime_env())
        .build();
    let plan = table
        .scan(
            &session,
            scan.projection.as_ref(),
            &scan.filters,
            scan.limit,
        )
        .await?;
    let here = plan.properties().partitioning.partition_count();
    if here != partitions {
        return Err(DataFusionError::Execution(format!(
            "on {}: the scan of `{}.{}` has {here} partitions here and {partitions} where the query was planned (did the data change meanwhile?)",
            node_name(),
            scan.source.name,
            scan.table
        )));
    }
    Ok(plan)
}

impl fmt::Debug for SourceScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceScanExec")
            .field("source", &self.scan.source)
            .field("table", &self.scan.table)
            .field("partitions", &self.partitions())
            .finish_non_exhaustive()
    }
}

impl DisplayAs for SourceScanExec {
    /// Names the source, table and connector; never the options.
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SourceScanExec: {}.{} (connector {}), partitions={}",
            self.scan.source.name,
            self.scan.table,
            self.scan.source.connector,
            self.partitions()
        )
    }
}

impl ExecutionPlan for SourceScanExec {
    fn name(&self) -> &str {
        "SourceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

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
                "a source's scan has no children to replace".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if let Some(plan) = self.plan.get() {
            return plan.execute(partition, context);
        }
        let scan = self.scan.clone();
        let cell = Arc::clone(&self.plan);
        let partitions = self.partitions();
        let stream = futures::stream::once(async move {
            let plan = cell
                .get_or_try_init(|| plan_here(&scan, &context, partitions))
                .await?;
            plan.execute(partition, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

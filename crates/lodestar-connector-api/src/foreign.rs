//! The host's side of a plugin's providers: what the host hands a plugin when it plans a scan.
//!
//! `datafusion-ffi` sends a table's `scan` the planner's whole session, and the plugin rebuilds
//! it before the connector sees it: every scalar, aggregate and window function the host has
//! registered (several hundred) is wrapped on one side and unwrapped on the other, for every
//! scan of every query. A connector's scan needs the query's configuration, not the host's
//! function registry: the filters it is handed arrive with their functions already resolved
//! (through the codec's task context). So the host passes a session carrying the planner's
//! configuration, runtime and id, without the registry.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{Constraints, Result, Statistics};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// A plugin's schema provider as the host uses it: its tables are [`ForeignTable`]s.
#[derive(Debug)]
pub(crate) struct ForeignSchema {
    inner: Arc<dyn SchemaProvider>,
}

impl ForeignSchema {
    pub(crate) fn new(inner: Arc<dyn SchemaProvider>) -> Self {
        ForeignSchema { inner }
    }
}

#[async_trait]
impl SchemaProvider for ForeignSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .inner
            .table(name)
            .await?
            .map(|inner| Arc::new(ForeignTable { inner }) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// A plugin's table: what Lodestar reads goes to the plugin as is, except that `scan` is given
/// [`scan_session`] of the planner's session. Writes (`insert_into`) are not forwarded and
/// keep DataFusion's default refusal: Lodestar only reads its sources.
#[derive(Debug)]
struct ForeignTable {
    inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for ForeignTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.inner.get_logical_plan()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let session = scan_session(state);
        self.inner.scan(&session, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
}

/// The session a plugin's scan is planned with: the planner's id, configuration and runtime,
/// and no registered functions, catalogs or planner extensions.
fn scan_session(state: &dyn Session) -> SessionState {
    SessionStateBuilder::new()
        .with_session_id(state.session_id().to_string())
        .with_config(state.config().clone())
        .with_runtime_env(Arc::clone(state.runtime_env()))
        .build()
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    #[test]
    fn a_scan_session_keeps_the_configuration_and_leaves_out_the_functions() {
        let config = SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(100);
        let state = SessionContext::new_with_config(config).state();
        let session = scan_session(&state);
        assert_eq!(session.session_id(), state.session_id());
        assert_eq!(session.config().target_partitions(), 3);
        assert_eq!(session.config().batch_size(), 100);
        assert!(Arc::ptr_eq(session.runtime_env(), state.runtime_env()));
        assert!(state.scalar_functions().contains_key("date_trunc"));
        assert!(session.scalar_functions().is_empty());
        assert!(session.aggregate_functions().is_empty());
    }
}

//! [`WrapExec`]: the one execution plan that wraps a connector's scan, to run it with another
//! runtime environment, map its errors, or guard its calls.
//!
//! A wrapped scan is a leaf for the host: a plugin's plan is one opaque node across the
//! boundary anyway, and a leaf keeps the host's optimizer from rewriting what is inside.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// What a [`WrapExec`] does around the plan it wraps. Every method has the plain delegation
/// as its default: override only what the wrapper changes.
///
/// ```
/// use std::sync::Arc;
/// use lodestar_connector_api::datafusion::arrow::datatypes::Schema;
/// use lodestar_connector_api::datafusion::error::Result;
/// use lodestar_connector_api::datafusion::execution::{SendableRecordBatchStream, TaskContext};
/// use lodestar_connector_api::datafusion::physical_plan::ExecutionPlan;
/// use lodestar_connector_api::datafusion::physical_plan::empty::EmptyExec;
/// use lodestar_connector_api::kit::plan::{Wrap, WrapExec};
///
/// /// Counts the partitions started.
/// #[derive(Debug, Default)]
/// struct Counted(std::sync::atomic::AtomicUsize);
///
/// impl Wrap for Counted {
///     fn execute(
///         &self,
///         inner: &dyn ExecutionPlan,
///         partition: usize,
///         context: Arc<TaskContext>,
///     ) -> Result<SendableRecordBatchStream> {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         inner.execute(partition, context)
///     }
/// }
///
/// let scan = WrapExec::new(Arc::new(EmptyExec::new(Arc::new(Schema::empty()))), Counted::default());
/// assert_eq!(scan.name(), "EmptyExec");
/// ```
pub trait Wrap: fmt::Debug + Send + Sync + 'static {
    /// The plan's name.
    fn name<'a>(&'a self, inner: &'a dyn ExecutionPlan) -> &'a str {
        inner.name()
    }

    /// The plan's properties (schema, partitioning, ordering).
    fn properties<'a>(&'a self, inner: &'a dyn ExecutionPlan) -> &'a Arc<PlanProperties> {
        inner.properties()
    }

    /// The plan's display in `EXPLAIN`.
    fn fmt_as(
        &self,
        inner: &dyn ExecutionPlan,
        t: DisplayFormatType,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        inner.fmt_as(t, f)
    }

    /// Starts reading one partition.
    fn execute(
        &self,
        inner: &dyn ExecutionPlan,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        inner.execute(partition, context)
    }

    /// The plan's statistics: the wrapped plan's, as a leaf's (a scan has no inputs).
    fn statistics(
        &self,
        inner: &dyn ExecutionPlan,
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        inner.statistics_from_inputs(&[], args)
    }
}

/// A connector's scan `inner`, as [`Wrap`] `W` changes it; a leaf plan.
#[derive(Debug)]
pub struct WrapExec<W> {
    inner: Arc<dyn ExecutionPlan>,
    wrap: W,
}

impl<W: Wrap> WrapExec<W> {
    pub fn new(inner: Arc<dyn ExecutionPlan>, wrap: W) -> WrapExec<W> {
        WrapExec { inner, wrap }
    }

    /// The wrapped plan.
    pub fn inner(&self) -> &Arc<dyn ExecutionPlan> {
        &self.inner
    }

    /// The wrapper.
    pub fn wrap(&self) -> &W {
        &self.wrap
    }
}

impl<W: Wrap> DisplayAs for WrapExec<W> {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.wrap.fmt_as(self.inner.as_ref(), t, f)
    }
}

impl<W: Wrap> ExecutionPlan for WrapExec<W> {
    fn name(&self) -> &str {
        self.wrap.name(self.inner.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.wrap.properties(self.inner.as_ref())
    }

    /// A leaf: the host sees the connector's plan as one opaque node anyway.
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
                "a connector's scan has no children to replace".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.wrap.execute(self.inner.as_ref(), partition, context)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.wrap.statistics(self.inner.as_ref(), args)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::displayable;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    use super::*;

    /// Renames the plan and fails its execution with a message of its own.
    #[derive(Debug)]
    struct Renamed;

    impl Wrap for Renamed {
        fn name<'a>(&'a self, _inner: &'a dyn ExecutionPlan) -> &'a str {
            "RenamedExec"
        }

        fn execute(
            &self,
            inner: &dyn ExecutionPlan,
            partition: usize,
            context: Arc<TaskContext>,
        ) -> Result<SendableRecordBatchStream> {
            inner
                .execute(partition, context)
                .map_err(|e| DataFusionError::Execution(format!("renamed: {e}")))
        }
    }

    /// Delegates everything.
    #[derive(Debug)]
    struct Plain;

    impl Wrap for Plain {}

    fn empty() -> Arc<dyn ExecutionPlan> {
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        Arc::new(EmptyExec::new(Arc::new(schema)))
    }

    #[test]
    #[expect(deprecated)] // `with_new_children`: DataFusion 55 still calls it, and it is ours.
    fn a_wrapped_scan_is_a_leaf_that_delegates_by_default() {
        let inner = empty();
        let exec: Arc<dyn ExecutionPlan> = Arc::new(WrapExec::new(Arc::clone(&inner), Plain));
        assert_eq!(exec.name(), "EmptyExec");
        assert!(Arc::ptr_eq(exec.properties(), inner.properties()));
        assert!(exec.children().is_empty());
        assert_eq!(
            displayable(exec.as_ref()).one_line().to_string(),
            displayable(inner.as_ref()).one_line().to_string()
        );
        assert!(Arc::clone(&exec).with_new_children(Vec::new()).is_ok());
        let refused = Arc::clone(&exec)
            .with_new_children(vec![empty()])
            .unwrap_err();
        assert!(
            refused
                .strip_backtrace()
                .starts_with("Internal error: a connector's scan has no children to replace"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_wrapper_changes_what_it_overrides() {
        let exec = WrapExec::new(empty(), Renamed);
        assert_eq!(exec.name(), "RenamedExec");
        let rows: Vec<_> = exec
            .execute(0, SessionContext::new().task_ctx())
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(rows.is_empty());
        let error = exec
            .execute(7, SessionContext::new().task_ctx())
            .err()
            .expect("EmptyExec has one partition");
        assert!(
            error.to_string().starts_with("Execution error: renamed: "),
            "{error}"
        );
    }
}

//! Panic guards and the plugin's runtime, around every provider a plugin hands out.
//!
//! `datafusion-ffi` does not catch panics, and a panic unwinding through an `extern "C"`
//! function aborts the process. So every call the host can make into a connector (listing
//! tables, planning a scan, pushing filters, polling a stream) goes through a wrapper here
//! that turns a panic into a `DataFusionError`, and enters the plugin's own Tokio runtime
//! while the connector's code runs (the plugin links its own copy of Tokio, which does not
//! see the host's).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};
use tokio::runtime::{Handle, Runtime};

/// Worker threads of a plugin's runtime: its async work is I/O (HTTP, database protocols);
/// DataFusion's CPU work runs on the host's threads.
const PLUGIN_WORKER_THREADS: usize = 2;

/// The plugin's Tokio runtime, created on first use and kept for the life of the process.
pub(crate) fn plugin_runtime(name: &str) -> Result<Handle, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            install_panic_hook();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(PLUGIN_WORKER_THREADS)
                .thread_name(format!("lodestar-{name}"))
                .enable_all()
                .build()
                .map_err(|e| format!("could not start the connector's runtime: {e}"))
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
        .map_err(Clone::clone)
}

/// Set to print the plugin's panics to stderr as Rust normally does (with a backtrace if
/// `RUST_BACKTRACE` asks for one); otherwise a panic is reported only as the error it becomes.
pub const PANIC_DETAILS_VAR: &str = "LODESTAR_PLUGIN_PANICS";

thread_local! {
    /// Where the last panic on this thread happened, for the error message.
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The plugin links its own copy of std, so this hook is the plugin's alone: it records the
/// panic's location for the error instead of printing over the host's output.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    let verbose = std::env::var_os(PANIC_DETAILS_VAR).is_some();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        PANIC_LOCATION.with(|cell| *cell.borrow_mut() = location);
        if verbose {
            default(info);
        }
    }));
}

/// The text of a panic payload, with where it happened when known.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    };
    match PANIC_LOCATION.with(|cell| cell.borrow_mut().take()) {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

fn panicked(during: &str, payload: &(dyn Any + Send)) -> DataFusionError {
    DataFusionError::External(
        format!(
            "the connector panicked while {during}: {}",
            panic_message(payload)
        )
        .into(),
    )
}

/// Runs `f` inside the runtime, turning a panic into an error.
fn guarded<T>(runtime: &Handle, during: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _entered = runtime.enter();
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panicked(during, p.as_ref())))
}

/// A future polled inside the plugin's runtime, whose panics become errors.
struct Guarded<F> {
    inner: Pin<Box<F>>,
    runtime: Handle,
    during: &'static str,
}

impl<T, F: Future<Output = Result<T>>> Future for Guarded<F> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.runtime.enter();
        let inner = &mut this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(p) => Poll::Ready(Err(panicked(this.during, p.as_ref()))),
        }
    }
}

fn guard_future<T, F: Future<Output = Result<T>>>(
    runtime: &Handle,
    during: &'static str,
    future: F,
) -> Guarded<F> {
    Guarded {
        inner: Box::pin(future),
        runtime: runtime.clone(),
        during,
    }
}

/// The schema provider a plugin exports: the connector's, behind guards.
#[derive(Debug)]
pub(crate) struct GuardedSchemaProvider {
    inner: Arc<dyn SchemaProvider>,
    runtime: Handle,
}

impl GuardedSchemaProvider {
    pub(crate) fn new(inner: Arc<dyn SchemaProvider>, runtime: Handle) -> Self {
        GuardedSchemaProvider { inner, runtime }
    }
}

#[async_trait]
impl SchemaProvider for GuardedSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        guarded(&self.runtime, "listing tables", || {
            Ok(self.inner.table_names())
        })
        .unwrap_or_else(|e| {
            tracing_fallback(&e);
            Vec::new()
        })
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = guard_future(&self.runtime, "opening a table", self.inner.table(name)).await?;
        Ok(table.map(|inner| {
            Arc::new(GuardedTable {
                inner,
                runtime: self.runtime.clone(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        guarded(&self.runtime, "looking up a table", || {
            Ok(self.inner.table_exist(name))
        })
        .unwrap_or(false)
    }
}

/// Nothing to log with (the api crate has no logger); the error surfaces elsewhere.
fn tracing_fallback(e: &DataFusionError) {
    eprintln!("lodestar connector: {e}");
}

#[derive(Debug)]
struct GuardedTable {
    inner: Arc<dyn TableProvider>,
    runtime: Handle,
}

#[async_trait]
impl TableProvider for GuardedTable {
    fn schema(&self) -> SchemaRef {
        guarded(&self.runtime, "describing a table", || {
            Ok(self.inner.schema())
        })
        .unwrap_or_else(|e| {
            tracing_fallback(&e);
            Arc::new(Schema::empty())
        })
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = guard_future(
            &self.runtime,
            "planning a scan",
            self.inner.scan(state, projection, filters, limit),
        )
        .await?;
        Ok(Arc::new(GuardedExec {
            inner: plan,
            runtime: self.runtime.clone(),
        }))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        guarded(&self.runtime, "pushing filters down", || {
            self.inner.supports_filters_pushdown(filters)
        })
    }

    fn statistics(&self) -> Option<Statistics> {
        guarded(&self.runtime, "reading statistics", || {
            Ok(self.inner.statistics())
        })
        .ok()
        .flatten()
    }
}

/// A connector's execution plan, executed in the plugin's runtime behind a panic guard.
/// It is a leaf for the host: the connector's plan is opaque across the boundary anyway.
#[derive(Debug)]
struct GuardedExec {
    inner: Arc<dyn ExecutionPlan>,
    runtime: Handle,
}

impl DisplayAs for GuardedExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for GuardedExec {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
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
                "a connector's scan has no children to replace".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = guarded(&self.runtime, "starting a scan", || {
            self.inner.execute(partition, context)
        })?;
        Ok(Box::pin(GuardedStream {
            schema: stream.schema(),
            inner: Some(stream),
            runtime: self.runtime.clone(),
        }))
    }
}

/// A connector's record batch stream, polled in the plugin's runtime; a panic ends it with an
/// error.
struct GuardedStream {
    schema: SchemaRef,
    /// `None` once a panic ended the stream: a panicked stream is not polled again.
    inner: Option<SendableRecordBatchStream>,
    runtime: Handle,
}

impl Stream for GuardedStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let _entered = this.runtime.enter();
        match catch_unwind(AssertUnwindSafe(|| inner.poll_next_unpin(cx))) {
            Ok(poll) => poll,
            Err(p) => {
                this.inner = None;
                Poll::Ready(Some(Err(panicked("reading rows", p.as_ref()))))
            }
        }
    }
}

impl RecordBatchStream for GuardedStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

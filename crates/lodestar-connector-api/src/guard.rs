//! Panic guards and the plugin's runtime, around every provider a plugin hands out.
//!
//! `datafusion-ffi` does not catch panics, and a panic unwinding through an `extern "C"`
//! function aborts the process. So every call the host can make into a connector (listing,
//! looking up and opening tables, a table's schema, type and statistics, pushing filters,
//! planning a scan, a plan's name, properties and display, starting and polling a stream)
//! goes through a [`Guard`] here that turns a panic into a `DataFusionError` (or, where the
//! call cannot fail, a fallback and an error kept for the next call that can), and enters the
//! plugin's own Tokio runtime while the connector's code runs (the plugin links its own copy
//! of Tokio, which does not see the host's).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};
use tokio::runtime::{Handle, Runtime};

use crate::kit::plan::{Wrap, WrapExec};

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

/// The guard of one source's providers: the plugin's runtime, the connector's name for
/// messages, and a panic kept for later.
///
/// Some calls cannot return an error (a table's type, a plan's name, its display). A panic in
/// one of them returns a harmless fallback and is kept here; the next call from this source
/// that can fail (planning or starting a scan, pushing filters, opening a table) fails with it,
/// so the query that triggered it ends with the panic's message instead of odd results.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    runtime: Handle,
    connector: &'static str,
    pending: Arc<Mutex<Option<String>>>,
}

impl Guard {
    pub(crate) fn new(runtime: Handle, connector: &'static str) -> Guard {
        Guard {
            runtime,
            connector,
            pending: Arc::default(),
        }
    }

    fn panicked(&self, during: &str, payload: &(dyn Any + Send)) -> String {
        format!(
            "the connector `{}` panicked while {during}: {}",
            self.connector,
            panic_message(payload)
        )
    }

    /// Fails with the panic kept from a call that could not fail, if there is one.
    fn take_pending(&self) -> Result<()> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match pending {
            Some(message) => Err(DataFusionError::External(message.into())),
            None => Ok(()),
        }
    }

    /// Runs `f` inside the runtime, turning a panic into an error.
    fn call<T>(&self, during: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.take_pending()?;
        let _entered = self.runtime.enter();
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            Err(DataFusionError::External(
                self.panicked(during, p.as_ref()).into(),
            ))
        })
    }

    /// Runs `f`, which cannot fail, inside the runtime; on a panic, keeps it for the next call
    /// that can fail and returns `fallback(message)`.
    fn call_or<T>(
        &self,
        during: &str,
        fallback: impl FnOnce(&str) -> T,
        f: impl FnOnce() -> T,
    ) -> T {
        let _entered = self.runtime.enter();
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => value,
            Err(p) => {
                let message = self.panicked(during, p.as_ref());
                // Said now as well: the call that triggered it may be the query's last.
                eprintln!("warning: {message}");
                let value = fallback(&message);
                *self
                    .pending
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(message);
                value
            }
        }
    }

    /// `future`, polled inside the runtime, its panics turned into errors.
    fn future<T, F: Future<Output = Result<T>>>(
        &self,
        during: &'static str,
        future: F,
    ) -> Guarded<F> {
        Guarded {
            inner: Box::pin(future),
            guard: self.clone(),
            during,
            started: false,
        }
    }
}

/// A future polled inside the plugin's runtime, whose panics become errors.
struct Guarded<F> {
    inner: Pin<Box<F>>,
    guard: Guard,
    during: &'static str,
    /// Whether it was polled: a panic kept for later fails it on its first poll only.
    started: bool,
}

impl<T, F: Future<Output = Result<T>>> Future for Guarded<F> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.started {
            this.started = true;
            if let Err(e) = this.guard.take_pending() {
                return Poll::Ready(Err(e));
            }
        }
        let _entered = this.guard.runtime.enter();
        let inner = &mut this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(p) => Poll::Ready(Err(DataFusionError::External(
                this.guard.panicked(this.during, p.as_ref()).into(),
            ))),
        }
    }
}

/// The schema provider a plugin exports: the connector's, behind guards.
#[derive(Debug)]
pub(crate) struct GuardedSchemaProvider {
    inner: Arc<dyn SchemaProvider>,
    guard: Guard,
}

impl GuardedSchemaProvider {
    pub(crate) fn new(inner: Arc<dyn SchemaProvider>, guard: Guard) -> Self {
        GuardedSchemaProvider { inner, guard }
    }
}

#[async_trait]
impl SchemaProvider for GuardedSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.guard.call_or(
            "listing tables",
            |_| Vec::new(),
            || self.inner.table_names(),
        )
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self
            .guard
            .future("opening a table", self.inner.table(name))
            .await?;
        let Some(inner) = table else {
            return Ok(None);
        };
        // A table's schema and type are asked for where no error can be returned: ask once,
        // here, where a panic fails the query that opens the table.
        let schema = self
            .guard
            .call("describing a table's columns", || Ok(inner.schema()))?;
        let table_type = self
            .guard
            .call("describing a table's type", || Ok(inner.table_type()))?;
        Ok(Some(Arc::new(GuardedTable {
            inner,
            schema,
            table_type,
            guard: self.guard.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.guard.call_or(
            "looking up a table",
            |_| false,
            || self.inner.table_exist(name),
        )
    }
}

/// A connector's table. Its schema and type are read once, when it is opened.
#[derive(Debug)]
struct GuardedTable {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    table_type: TableType,
    guard: Guard,
}

#[async_trait]
impl TableProvider for GuardedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.table_type
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self
            .guard
            .future(
                "planning a scan",
                self.inner.scan(state, projection, filters, limit),
            )
            .await?;
        // As for tables: what the host reads without a way to fail is read once, here.
        let name = self
            .guard
            .call("naming its scan", || Ok(plan.name().to_string()))?;
        let properties = self.guard.call("describing its scan's properties", || {
            Ok(Arc::clone(plan.properties()))
        })?;
        Ok(Arc::new(WrapExec::new(
            plan,
            GuardedExec {
                name,
                properties,
                guard: self.guard.clone(),
            },
        )))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.guard.call("pushing filters down", || {
            self.inner.supports_filters_pushdown(filters)
        })
    }

    fn statistics(&self) -> Option<Statistics> {
        self.guard
            .call_or("reading statistics", |_| None, || self.inner.statistics())
    }
}

/// What wraps a connector's execution plan: it runs in the plugin's runtime behind a panic
/// guard, and is a leaf for the host ([`WrapExec`]). Its name and properties were read when it
/// was planned.
#[derive(Debug)]
struct GuardedExec {
    name: String,
    properties: Arc<PlanProperties>,
    guard: Guard,
}

/// A plan's `fmt_as` as `Display`, to render it into a string inside a guard.
struct Shown<'a>(&'a dyn ExecutionPlan, DisplayFormatType);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_as(self.1, f)
    }
}

impl Wrap for GuardedExec {
    fn name<'a>(&'a self, _inner: &'a dyn ExecutionPlan) -> &'a str {
        &self.name
    }

    fn properties<'a>(&'a self, _inner: &'a dyn ExecutionPlan) -> &'a Arc<PlanProperties> {
        &self.properties
    }

    fn fmt_as(
        &self,
        inner: &dyn ExecutionPlan,
        t: DisplayFormatType,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        let text = self.guard.call_or(
            "displaying its scan",
            |message| Ok(format!("{} ({message})", self.name)),
            || {
                let mut text = String::new();
                fmt::Write::write_fmt(&mut text, format_args!("{}", Shown(inner, t))).map(|()| text)
            },
        );
        f.write_str(&text?)
    }

    fn execute(
        &self,
        inner: &dyn ExecutionPlan,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (stream, schema) = self.guard.call("starting a scan", || {
            let stream = inner.execute(partition, context)?;
            let schema = stream.schema();
            Ok((stream, schema))
        })?;
        Ok(Box::pin(GuardedStream {
            schema,
            inner: Some(stream),
            guard: self.guard.clone(),
        }))
    }

    /// Unknown, without calling into the connector (where a panic could not become an error).
    fn statistics(
        &self,
        _inner: &dyn ExecutionPlan,
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(
            self.properties.eq_properties.schema(),
        )))
    }
}

/// A connector's record batch stream, polled in the plugin's runtime; a panic ends it with an
/// error.
struct GuardedStream {
    schema: SchemaRef,
    /// `None` once a panic ended the stream: a panicked stream is not polled again.
    inner: Option<SendableRecordBatchStream>,
    guard: Guard,
}

impl Stream for GuardedStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let _entered = this.guard.runtime.enter();
        match catch_unwind(AssertUnwindSafe(|| inner.poll_next_unpin(cx))) {
            Ok(poll) => poll,
            Err(p) => {
                this.inner = None;
                let message = this.guard.panicked("reading rows", p.as_ref());
                Poll::Ready(Some(Err(DataFusionError::External(message.into()))))
            }
        }
    }
}

impl RecordBatchStream for GuardedStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A connector's plan whose display panics. The host never displays a plugin's plan
    /// through `datafusion-ffi` 55 (it shows the plan's name), so this call is tested here.
    #[derive(Debug)]
    struct DisplayPanics;

    impl Wrap for DisplayPanics {
        fn name<'a>(&'a self, _inner: &'a dyn ExecutionPlan) -> &'a str {
            "DisplayPanics"
        }

        fn fmt_as(
            &self,
            _inner: &dyn ExecutionPlan,
            _t: DisplayFormatType,
            _f: &mut fmt::Formatter<'_>,
        ) -> fmt::Result {
            panic!("asked to panic while displaying its scan")
        }
    }

    #[test]
    fn a_panic_while_displaying_a_scan_is_shown_and_fails_the_next_call() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner: Arc<dyn ExecutionPlan> = Arc::new(WrapExec::new(
            Arc::new(EmptyExec::new(Arc::new(Schema::empty()))),
            DisplayPanics,
        ));
        let exec = WrapExec::new(
            Arc::clone(&inner),
            GuardedExec {
                properties: Arc::clone(inner.properties()),
                name: inner.name().to_string(),
                guard: Guard::new(runtime.handle().clone(), "test"),
            },
        );
        let shown = Shown(&exec, DisplayFormatType::Default).to_string();
        assert_eq!(
            shown,
            "DisplayPanics (the connector `test` panicked while displaying its scan: asked to panic while displaying its scan)"
        );
        let error = exec
            .execute(0, SessionContext::new().task_ctx())
            .err()
            .expect("the scan fails after the panic");
        assert!(
            error
                .to_string()
                .contains("the connector `test` panicked while displaying its scan"),
            "{error}"
        );
        // Reported once: the call after that runs.
        assert!(exec.execute(0, SessionContext::new().task_ctx()).is_ok());
    }
}

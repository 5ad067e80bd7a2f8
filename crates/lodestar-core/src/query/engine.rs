//! The engine: a project connected to its sources, ready to validate and compute.
//!
//! One [`Engine`] owns one DataFusion [`SessionContext`] (in an `Arc`, because plugin tables
//! hold it weakly) with a bounded memory pool. Every source is a schema of that context.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNode;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};

use crate::project::error::{Error, Location, Result, Subject, did_you_mean};
use crate::project::model::{
    CumulativeOver, EngineSettings, Measure, Metric, MetricKind, Project, RetentionMetric,
    TableRef, quote_ident,
};
use crate::query::bounds::Bounds;
use crate::query::distinct::{self, CountDistinctByBitmap};
use crate::query::request::{Action, words};
use crate::query::sql::{self, TimeKind};
use crate::{cluster, connect};

/// Used when the machine's memory cannot be read.
const FALLBACK_MEMORY_LIMIT: usize = 4 << 30;

/// A project connected to its sources.
#[derive(Clone)]
pub struct Engine {
    project: Arc<Project>,
    ctx: Arc<SessionContext>,
    /// For an engine made by [`Engine::with_memory_limit`]: the context the sources were
    /// registered with, kept alive because plugin tables hold it weakly.
    registered: Option<Arc<SessionContext>>,
    /// The caps on what one request may ask for.
    bounds: Bounds,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("project", &self.project.path)
            .field("session", &self.ctx.session_id())
            .finish()
    }
}

impl Engine {
    /// Creates the DataFusion context and connects every source of the project.
    /// With `engine.cluster` set, every query runs on that Ballista cluster (docs/cluster.md).
    pub async fn open(project: Project) -> Result<Engine> {
        let sources = Arc::new(cluster::Sources::default());
        let ctx = Arc::new(session(&project.engine, &sources)?);
        for source in project.sources.values() {
            let version = connect::connect(&ctx, source, &project.root).await?;
            sources.insert(source, &project.path, version);
        }
        Ok(Engine {
            project: Arc::new(project),
            ctx,
            registered: None,
            bounds: Bounds::default(),
        })
    }

    /// The same project and sources, whose queries may hold at most `bytes` of memory between
    /// them, apart from the other queries of this engine. Operators that can spill (sorts,
    /// grouped aggregates) spill to disk beyond it; others fail with DataFusion's
    /// `ResourcesExhausted` error (see [`Error::is_memory_exhausted`]).
    ///
    /// Cheap enough to call per request: the catalogs, tables, object stores, caches and the
    /// spill directory are shared; only the memory pool is new.
    pub fn with_memory_limit(&self, bytes: usize) -> Engine {
        let state = self.ctx.state();
        let runtime = RuntimeEnv {
            memory_pool: Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(bytes),
                NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
            )),
            ..RuntimeEnv::clone(state.runtime_env())
        };
        // A sort reserves this much of the pool up front for its final merge (10 MiB by
        // default): more than a small pool holds, so every sort would fail.
        // The catalogs are shared: a new default catalog would hide the sources.
        let mut config = state
            .config()
            .clone()
            .with_create_default_catalog_and_schema(false);
        let execution = &mut config.options_mut().execution;
        execution.sort_spill_reservation_bytes =
            execution.sort_spill_reservation_bytes.min(bytes / 8);
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .with_runtime_env(Arc::new(runtime))
            .build();
        Engine {
            project: Arc::clone(&self.project),
            ctx: Arc::new(SessionContext::new_with_state(state)),
            registered: Some(Arc::clone(self.registered.as_ref().unwrap_or(&self.ctx))),
            bounds: self.bounds,
        }
    }

    /// The same engine, refusing requests over `bounds` instead of the defaults.
    pub fn with_bounds(mut self, bounds: Bounds) -> Engine {
        self.bounds = bounds;
        self
    }

    /// The caps on what one request may ask for.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// A reservation in this engine's memory pool, for what a request holds outside
    /// DataFusion's operators (rows collected for an analysis, its tables): growing it past
    /// the pool's limit fails like a query over its memory limit
    /// ([`Error::is_memory_exhausted`]), and dropping it gives the memory back.
    pub fn reserve(&self, what: &str) -> MemoryReservation {
        MemoryConsumer::new(format!("lodestar {what}"))
            .register(&self.ctx.runtime_env().memory_pool)
    }

    /// Runs `df` and collects its rows, accounted in `reservation` while they are held.
    pub async fn collect_reserved(
        &self,
        df: DataFrame,
        reservation: &mut MemoryReservation,
    ) -> std::result::Result<Vec<RecordBatch>, DataFusionError> {
        use futures::StreamExt;
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            reservation.try_grow(batch.get_array_memory_size())?;
            batches.push(batch);
        }
        Ok(batches)
    }

    /// The bound on the memory of this engine's queries, if it has one.
    pub fn memory_limit(&self) -> Option<usize> {
        match self.ctx.runtime_env().memory_pool.memory_limit() {
            MemoryLimit::Finite(bytes) => Some(bytes),
            MemoryLimit::Infinite | MemoryLimit::Unknown => None,
        }
    }

    pub fn project(&self) -> &Project {
        &self.project
    }

    /// The DataFusion context, with every source registered as a schema.
    pub fn context(&self) -> &Arc<SessionContext> {
        &self.ctx
    }

    /// Plans a read-only SQL query over the sources (`SELECT ... FROM app.orders`).
    pub async fn sql(&self, query: &str) -> Result<DataFrame> {
        self.ctx
            .sql_with_options(query, read_only())
            .await
            .map_err(|e| {
                let message = e.to_string();
                let writes = [
                    "DDL not supported",
                    "DML not supported",
                    "Statement not supported",
                ]
                .iter()
                .any(|w| message.contains(w));
                if writes {
                    Error::request(format!(
                        "the query is refused: Lodestar only reads data ({message})"
                    ))
                } else {
                    Error::request_hint(
                        format!("the query does not compile: {message}"),
                        words![
                            "tables are named `source.table`; ",
                            Action::ListTables,
                            " lists them"
                        ],
                    )
                }
            })
    }

    /// The schema of `source.table`, or an error naming the tables that do exist.
    pub(crate) async fn table_schema(
        &self,
        table: &TableRef,
    ) -> std::result::Result<SchemaRef, String> {
        let reference = TableReference::partial(table.source.as_str(), table.table.as_str());
        match self.ctx.table_provider(reference).await {
            Ok(provider) => Ok(provider.schema()),
            Err(e) => {
                let names = self.table_names(&table.source);
                // A table its source lists but cannot open (a connector's error or panic):
                // say why, rather than that it does not exist.
                if names.contains(&table.table) {
                    return Err(format!("table `{table}` cannot be opened: {e}"));
                }
                let hint = did_you_mean(&table.table, names.iter().map(String::as_str))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                Err(format!(
                    "table `{table}` does not exist{hint} (source `{}` has: {})",
                    table.source,
                    if names.is_empty() {
                        "no tables".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            }
        }
    }

    /// The tables of a source, sorted.
    pub fn table_names(&self, source: &str) -> Vec<String> {
        let catalog_name = self
            .ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        let mut names = self
            .ctx
            .catalog(&catalog_name)
            .and_then(|c| c.schema(source))
            .map(|s| s.table_names())
            .unwrap_or_default();
        names.sort();
        names
    }

    pub(crate) async fn plan(&self, sql: &str) -> std::result::Result<DataFrame, DataFusionError> {
        self.ctx.sql_with_options(sql, read_only()).await
    }

    pub(crate) fn is_aggregate(&self, name: &str) -> bool {
        self.ctx.state().aggregate_functions().contains_key(name)
    }

    /// Checks every metric's SQL against the sources' schemas. Returns every problem found,
    /// not only the first, each naming the metric and where it is defined.
    pub async fn validate(&self) -> Vec<Error> {
        let mut errors = Vec::new();
        for metric in self.project.metrics.values() {
            if let Err(e) = self.validate_metric(metric).await {
                errors.push(e);
            }
        }
        errors
    }

    pub(crate) async fn validate_metric(&self, metric: &Metric) -> Result<()> {
        match &metric.kind {
            MetricKind::Simple(measure) => self.check_measure(metric, measure, "table").await?,
            MetricKind::Cumulative(c) => match &c.over {
                CumulativeOver::Measure(measure) => {
                    self.check_measure(metric, measure, "table").await?
                }
                CumulativeOver::Metric(parent) => {
                    let parent = self.project.metric(parent)?;
                    if !matches!(parent.kind, MetricKind::Simple(_)) {
                        return Err(invalid(
                            metric,
                            "cumulative",
                            format!(
                                "accumulates `{}`, a {} metric; only simple metrics (sums and counts) add up over time",
                                parent.name,
                                parent.kind.name()
                            ),
                            Some("to count distinct users over a window, give this metric its own table, time and measure with `cumulative: { window: 28d }`".into()),
                        ));
                    }
                }
            },
            MetricKind::Sql { sql, .. } => self.check_sql_metric(metric, sql).await?,
            MetricKind::Derived { expr, references } => {
                self.check_expression(metric, "derived", expr, references)
                    .await?
            }
            MetricKind::Retention(r) => self.check_retention(metric, r).await?,
            MetricKind::Ratio { .. } => {}
        }
        if let Some(formula) = &metric.formula {
            // Only arithmetic over inputs: the tree evaluates and decomposes it.
            crate::analysis::decompose::Formula::parse(formula)
                .map_err(|message| invalid(metric, "formula", message, None))?;
        }
        Ok(())
    }

    /// Table, time column, dimensions, filter and measure of a metric that scans rows.
    async fn check_measure(
        &self,
        metric: &Metric,
        m: &Measure,
        table_field: &'static str,
    ) -> Result<()> {
        let schema = self
            .table_schema(&m.table)
            .await
            .map_err(|message| invalid(metric, table_field, message, None))?;
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let missing_column = |field: &'static str, what: &str, name: &str| {
            let hint = did_you_mean(name, columns.iter().copied()).unwrap_or_else(|| {
                format!("the columns of `{}` are: {}", m.table, columns.join(", "))
            });
            invalid(
                metric,
                field,
                format!("{what} `{name}` is not a column of `{}`", m.table),
                Some(hint),
            )
        };
        let time_type = match schema.field_with_name(&m.time) {
            Ok(field) => field.data_type().clone(),
            Err(_) => return Err(missing_column("time", "time column", &m.time)),
        };
        if TimeKind::of(&time_type).is_none() {
            return Err(invalid(
                metric,
                "time",
                format!("time column `{}` has type {time_type}; it must be a timestamp, a date or ISO-8601 text", m.time),
                Some("for epoch numbers, write a `sql` metric that converts them with to_timestamp()".into()),
            ));
        }
        for dim in &metric.dimensions {
            if schema.field_with_name(dim).is_err() {
                return Err(missing_column("dimensions", "dimension", dim));
            }
        }
        let table = m.table.sql();
        // Parse errors are reported against the fragment as written, not the query around it.
        for (field, fragment) in [("measure", Some(&m.measure)), ("filter", m.filter.as_ref())] {
            if let Some(fragment) = fragment {
                sql::parse_expr(fragment).map_err(|e| {
                    invalid(
                        metric,
                        field,
                        format!("{field} `{fragment}` is not an SQL expression: {e}"),
                        None,
                    )
                })?;
            }
        }
        if TimeKind::of(&time_type) == Some(TimeKind::Text) {
            self.check_text_times(metric, m, &table).await?;
        }
        if let Some(filter) = &m.filter {
            self.plan(&format!("SELECT 1 FROM {table} WHERE ({filter})"))
                .await
                .map_err(|e| sql_error(metric, "filter", e, filter, &columns))?;
        }
        let df = self
            .plan(&format!("SELECT {} FROM {table}", m.measure))
            .await
            .map_err(|e| sql_error(metric, "measure", e, &m.measure, &columns))?;
        let aggregates = df
            .logical_plan()
            .exists(|p| Ok(matches!(p, LogicalPlan::Aggregate(_))))
            .unwrap_or(false);
        if !aggregates {
            return Err(invalid(
                metric,
                "measure",
                format!("measure `{}` is not an aggregate", m.measure),
                Some("a measure sums up the rows of a period: sum(amount), count(*), count(distinct user_id), avg(x)".into()),
            ));
        }
        let data_type = df.schema().field(0).data_type();
        if !data_type.is_numeric() {
            return Err(invalid(
                metric,
                "measure",
                format!("measure `{}` returns {data_type}, not a number", m.measure),
                None,
            ));
        }
        Ok(())
    }

    /// The cohort and activity tables of a retention metric: time and entity columns, filters.
    async fn check_retention(&self, metric: &Metric, r: &RetentionMetric) -> Result<()> {
        let sides = [
            ("cohort", &r.cohort, &r.cohort_time, &r.cohort_filter),
            (
                "activity",
                &r.activity,
                &r.activity_time,
                &r.activity_filter,
            ),
        ];
        for (side, table, time, filter) in sides {
            let schema = self.table_schema(table).await.map_err(|message| {
                invalid(
                    metric,
                    "retention",
                    format!("retention `{side}`: {message}"),
                    None,
                )
            })?;
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            for (what, name) in [("time column", time), ("entity column", &r.entity)] {
                let Ok(field) = schema.field_with_name(name) else {
                    let hint = did_you_mean(name, columns.iter().copied()).unwrap_or_else(|| {
                        format!("the columns of `{table}` are: {}", columns.join(", "))
                    });
                    return Err(invalid(
                        metric,
                        "retention",
                        format!("retention `{side}`: {what} `{name}` is not a column of `{table}`"),
                        Some(hint),
                    ));
                };
                if what == "time column" && TimeKind::of(field.data_type()).is_none() {
                    return Err(invalid(
                        metric,
                        "retention",
                        format!(
                            "retention `{side}`: time column `{name}` has type {}; it must be a timestamp, a date or ISO-8601 text",
                            field.data_type()
                        ),
                        None,
                    ));
                }
            }
            if let Some(filter) = filter {
                let field = if side == "cohort" {
                    "cohort_filter"
                } else {
                    "activity_filter"
                };
                let parsed = sql::parse_expr(filter).map_err(|e| {
                    invalid(
                        metric,
                        "retention",
                        format!("retention `{field}` `{filter}` is not an SQL expression: {e}"),
                        None,
                    )
                })?;
                self.plan(&format!("SELECT 1 FROM {} WHERE ({parsed})", table.sql()))
                    .await
                    .map_err(|e| sql_error(metric, "retention", e, filter, &columns))?;
            }
        }
        Ok(())
    }

    /// A text time column must hold timestamps; a sample of its values is read to check.
    async fn check_text_times(&self, metric: &Metric, m: &Measure, table: &str) -> Result<()> {
        let column = quote_ident(&m.time);
        let sql = format!(
            "SELECT CAST({column} AS TIMESTAMP) FROM {table} WHERE {column} IS NOT NULL LIMIT 100"
        );
        let result = match self.plan(&sql).await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        // Only a value that does not parse is bad data; any other failure (the cluster cannot
        // be reached, the source fails) is the engine's, and says so.
        result.map_err(|e| {
            if is_parse_failure(&e) {
                not_timestamps(metric, &m.time, &e)
            } else {
                Error::from(e)
            }
        })
    }

    async fn check_sql_metric(&self, metric: &Metric, sql: &str) -> Result<()> {
        let df = self.plan(sql).await.map_err(|e| Error::Sql {
            location: metric.location_of("sql").clone(),
            subject: Subject::Metric(metric.name.clone()),
            field: "sql",
            source: Box::new(e),
            hint: None,
        })?;
        let schema = df.schema();
        let mut needed = vec!["period", "value"];
        needed.extend(metric.dimensions.iter().map(String::as_str));
        for column in needed {
            if schema.field_with_unqualified_name(column).is_err() {
                return Err(invalid(
                    metric,
                    "sql",
                    format!("the query returns no column `{column}`"),
                    Some("a sql metric returns `period` (a date or timestamp), its dimensions, and `value`".into()),
                ));
            }
        }
        Ok(())
    }

    /// Plans an expression over metric names, each standing for a number.
    async fn check_expression(
        &self,
        metric: &Metric,
        field: &'static str,
        expr: &str,
        names: &[String],
    ) -> Result<()> {
        let columns = if names.is_empty() {
            "1 AS one".to_string()
        } else {
            names
                .iter()
                .map(|n| format!("CAST(NULL AS DOUBLE) AS {}", quote_ident(n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let parsed =
            sql::parse_expr(expr).map_err(|message| invalid(metric, field, message, None))?;
        self.plan(&format!(
            "SELECT {parsed} FROM (SELECT {columns}) AS metrics"
        ))
        .await
        .map_err(|e| Error::Sql {
            location: metric.location_of(field).clone(),
            subject: Subject::Metric(metric.name.clone()),
            field,
            source: Box::new(e),
            hint: None,
        })?;
        Ok(())
    }
}

/// A text time column holding something other than timestamps.
pub(crate) fn not_timestamps(metric: &Metric, column: &str, e: &DataFusionError) -> Error {
    let detail = e.to_string();
    let detail = detail.rsplit("Parser error: ").next().unwrap_or(&detail);
    invalid(
        metric,
        "time",
        format!("time column `{column}` holds text that is not a timestamp: {detail}"),
        Some("the time column must hold ISO-8601 timestamps such as 2026-05-04T10:00:00Z, or be a timestamp or date column".into()),
    )
}

/// Whether a query failed on a value that does not parse (bad data, not a bad query).
pub(crate) fn is_parse_failure(e: &DataFusionError) -> bool {
    matches!(
        e.find_root(),
        DataFusionError::ArrowError(err, _)
            if matches!(**err, datafusion::arrow::error::ArrowError::ParseError(_) | datafusion::arrow::error::ArrowError::CastError(_))
    )
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

pub(crate) fn invalid(
    metric: &Metric,
    field: &str,
    message: String,
    hint: Option<String>,
) -> Error {
    Error::Invalid {
        location: location_of(metric, field),
        subject: Subject::Metric(metric.name.clone()),
        message,
        hint,
    }
}

fn location_of(metric: &Metric, field: &str) -> Location {
    metric.location_of(field).clone()
}

/// A fragment that does not plan; the hint suggests a column when a name is misspelled.
fn sql_error(
    metric: &Metric,
    field: &'static str,
    e: DataFusionError,
    fragment: &str,
    columns: &[&str],
) -> Error {
    let hint = sql::parse_expr(fragment)
        .ok()
        .and_then(|expr| sql::filter_columns(&expr).ok())
        .into_iter()
        .flatten()
        .filter(|name| !columns.contains(&name.as_str()))
        .find_map(|name| {
            did_you_mean(&name, columns.iter().copied()).map(|h| format!("`{name}`: {h}"))
        });
    Error::Sql {
        location: metric.location_of(field).clone(),
        subject: Subject::Metric(metric.name.clone()),
        field,
        source: Box::new(e),
        hint,
    }
}

/// The DataFusion context: bounded memory that spills to disk, information_schema on,
/// distinct counts of integer keys by bitmap ([`CountDistinctByBitmap`]) and the days' key
/// sets of trailing windows ([`distinct::SET_NAME`]); with a cluster,
/// Ballista's planner sends its queries to the scheduler.
fn session(settings: &EngineSettings, sources: &Arc<cluster::Sources>) -> Result<SessionContext> {
    let memory = settings.memory_limit.unwrap_or_else(default_memory_limit);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory, 1.0)
        .with_disk_manager_builder(DiskManagerBuilder::default())
        .build_arc()?;
    let mut config = SessionConfig::new().with_information_schema(true);
    if let Some(n) = settings.target_partitions {
        config = config.with_target_partitions(n);
    }
    let ctx = match &settings.cluster {
        None => SessionContext::new_with_state(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(config)
                .with_runtime_env(runtime)
                .with_analyzer_rule(Arc::new(CountDistinctByBitmap))
                .build(),
        ),
        Some(url) => SessionContext::new_with_state(cluster::client_state(
            url,
            &settings.cluster_settings,
            config,
            runtime,
            Arc::clone(sources),
        )?),
    };
    // Trailing windows' scans call it by name (query/window.rs).
    ctx.register_udaf(distinct::key_set().as_ref().clone());
    Ok(ctx)
}

/// Half of the machine's memory: the rest is for the OS, the page cache and other programs.
fn default_memory_limit() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 2)
        })
        .unwrap_or(FALLBACK_MEMORY_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine over a project with no sources.
    async fn empty_engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lodestar.yaml");
        fs_err::write(&path, "metrics: {}\n").unwrap();
        let engine = Engine::open(crate::project::config::load(&path).unwrap())
            .await
            .unwrap();
        (dir, engine)
    }

    /// Rows an analysis holds are accounted: over the pool's limit, collecting them fails as
    /// a query over its memory limit does, where a plain collect would have held them all.
    #[tokio::test]
    async fn rows_held_beside_the_queries_count_against_the_memory_limit() {
        let (_dir, engine) = empty_engine().await;
        let small = engine.with_memory_limit(256 << 10);
        // Some 2 MiB of text, produced without any operator that reserves memory.
        let sql = "SELECT repeat('x', 1000) AS s FROM generate_series(1, 2000)";
        let plain = small.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(plain.iter().map(RecordBatch::num_rows).sum::<usize>(), 2000);

        let mut held = small.reserve("test");
        let error = small
            .collect_reserved(small.sql(sql).await.unwrap(), &mut held)
            .await
            .unwrap_err();
        assert!(Error::from(error).is_memory_exhausted());

        // Within the limit, the rows come back and the reservation holds their size.
        let mut held = engine.reserve("test");
        let rows = engine
            .collect_reserved(engine.sql(sql).await.unwrap(), &mut held)
            .await
            .unwrap();
        let bytes: usize = rows.iter().map(RecordBatch::get_array_memory_size).sum();
        assert_eq!(held.size(), bytes);
    }
}

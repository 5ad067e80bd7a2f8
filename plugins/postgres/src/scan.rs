//! Scanning a table: the pushed projection, filters and limit as one query, read with binary
//! COPY into record batches as they arrive, split by ctid page ranges over several
//! connections that share one snapshot.
//!
//! A partition reads `COPY (SELECT cols FROM t WHERE filters AND ctid >= '(a,0)' AND ctid <
//! '(b,0)') TO STDOUT (FORMAT binary)`, as DuckDB's postgres scanner does: each range is a
//! TID range scan of its pages, the first range open below and the last open above, so rows
//! on pages added since the size was read are still read. The connections of one scan import
//! the snapshot the first one exports, so together they read the table as of one instant even
//! while it is written to.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use lodestar_connector_api::datafusion::arrow::datatypes::SchemaRef;
use lodestar_connector_api::datafusion::arrow::record_batch::RecordBatch;
use lodestar_connector_api::datafusion::catalog::{Session, TableProvider};
use lodestar_connector_api::datafusion::common::Statistics;
use lodestar_connector_api::datafusion::common::stats::Precision;
use lodestar_connector_api::datafusion::error::{DataFusionError, Result};
use lodestar_connector_api::datafusion::execution::{SendableRecordBatchStream, TaskContext};
use lodestar_connector_api::datafusion::logical_expr::{
    Expr, TableProviderFilterPushDown, TableType,
};
use lodestar_connector_api::datafusion::physical_plan::ExecutionPlan;
use lodestar_connector_api::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use lodestar_connector_api::datafusion::physical_plan::streaming::{
    PartitionStream, StreamingTableExec,
};
use lodestar_connector_api::tokio::sync::{OnceCell, Semaphore};
use tokio_postgres::CopyOutStream;
use tokio_postgres::types::{ToSql, Type};

use crate::catalog::{TableInfo, quote_ident};
use crate::copy::{BatchDecoder, DecodeError};
use crate::error::{self, Error};
use crate::pool::{Conn, Pool, State};
use crate::pushdown::{self, Where, setting_name};
use crate::types::PgType;

/// A batch is cut early past this much row data, so wide rows keep memory bounded too.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// A table or view of the source.
#[derive(Debug)]
pub struct PostgresTable {
    info: Arc<TableInfo>,
    pool: Pool,
}

impl PostgresTable {
    pub fn new(info: TableInfo, pool: Pool) -> PostgresTable {
        PostgresTable {
            info: Arc::new(info),
            pool,
        }
    }
}

#[async_trait]
impl TableProvider for PostgresTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.info.arrow)
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
            .map(|f| pushdown::support(&self.info, f))
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        // The planner's estimate helps DataFusion pick a join's build side.
        (self.info.rows >= 0.0).then(|| {
            let mut stats = Statistics::new_unknown(&self.info.arrow);
            stats.num_rows = Precision::Inexact(self.info.rows as usize);
            stats
        })
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.info.columns.len()).collect(),
        };
        let schema = Arc::new(self.info.arrow.project(&indices)?);
        let types: Vec<PgType> = indices
            .iter()
            .map(|i| self.info.columns[*i].pg.clone())
            .collect();
        let columns = indices
            .iter()
            .map(|i| quote_ident(&self.info.columns[*i].name))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = pushdown::translate(&self.info, filters);
        let settings = self.pool.settings();
        // A limit asks for few rows: one connection, which stops at the limit.
        let wanted = if limit.is_some() || !self.info.splittable() {
            1
        } else {
            let pages = u64::try_from(self.info.pages).unwrap_or(0);
            pages
                .div_ceil(u64::from(settings.pages_per_partition))
                .clamp(
                    1,
                    settings
                        .pool_size
                        .min(state.config().target_partitions())
                        .max(1) as u64,
                ) as usize
        };
        let ranges = page_ranges(self.info.pages, wanted);
        let shared = Arc::new(Scan {
            partitions: ranges.len(),
            info: Arc::clone(&self.info),
            pool: self.pool.clone(),
            select: format!("SELECT {columns} FROM {}", self.info.sql_name()),
            filter,
            limit,
            schema: Arc::clone(&schema),
            types,
            lease: OnceCell::new(),
        });
        let partitions: Vec<Arc<dyn PartitionStream>> = ranges
            .into_iter()
            .map(|range| {
                Arc::new(Partition {
                    scan: Arc::clone(&shared),
                    range,
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            partitions,
            None,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

/// Pages `[from, to)` of the table; `None` is open-ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl PageRange {
    fn condition(&self) -> Option<String> {
        // Page numbers are integers computed here, not user input.
        let mut parts = Vec::new();
        if let Some(from) = self.from {
            parts.push(format!("ctid >= '({from},0)'::tid"));
        }
        if let Some(to) = self.to {
            parts.push(format!("ctid < '({to},0)'::tid"));
        }
        (!parts.is_empty()).then(|| parts.join(" AND "))
    }
}

/// `n` ranges covering every page, the first open below and the last open above.
pub fn page_ranges(pages: i64, n: usize) -> Vec<PageRange> {
    let n = n.max(1) as i64;
    let pages = pages.max(0);
    let bound = |i: i64| pages * i / n;
    (0..n)
        .map(|i| PageRange {
            from: (i > 0).then(|| bound(i)),
            to: (i < n - 1).then(|| bound(i + 1)),
        })
        .collect()
}

/// What the partitions of one scan share: the query, and the connections they read with.
struct Scan {
    info: Arc<TableInfo>,
    pool: Pool,
    select: String,
    filter: Where,
    limit: Option<usize>,
    schema: SchemaRef,
    types: Vec<PgType>,
    /// Partition streams of the plan, one per page range.
    partitions: usize,
    /// Opened by the first partition polled, so a plan that never runs takes no connection.
    lease: OnceCell<std::result::Result<Arc<Lease>, Arc<DataFusionError>>>,
}

impl fmt::Debug for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scan")
            .field("table", &self.info.display_name())
            .field("where", &self.filter.display)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Scan {
    fn reading(&self) -> String {
        format!("reading table `{}`", self.info.display_name())
    }

    fn query_error(&self, e: &tokio_postgres::Error) -> DataFusionError {
        error::query(&self.pool.settings().target, self.reading(), e).into()
    }

    /// The COPY statement of one range.
    fn copy_sql(&self, range: PageRange) -> String {
        let mut conditions = Vec::new();
        if !self.filter.sql.is_empty() {
            conditions.push(self.filter.sql.clone());
        }
        conditions.extend(range.condition());
        let mut query = self.select.clone();
        if !conditions.is_empty() {
            query.push_str(" WHERE ");
            query.push_str(&conditions.join(" AND "));
        }
        if let Some(limit) = self.limit {
            query.push_str(&format!(" LIMIT {limit}"));
        }
        format!("COPY ({query}) TO STDOUT (FORMAT binary)")
    }

    async fn lease(&self, partitions: usize) -> Result<Arc<Lease>> {
        self.lease
            .get_or_init(|| async {
                Lease::open(&self.pool, partitions, self)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .await
            .clone()
            .map_err(DataFusionError::Shared)
    }
}

/// The connections of one scan, inside transactions that share a snapshot. Partitions take a
/// free one, and give it back for the next partition until none is left to start.
struct Lease {
    state: Mutex<LeaseState>,
    /// One permit per connection in `free`, or per one lost (whose waiter opens its own).
    available: Semaphore,
}

struct LeaseState {
    free: Vec<Conn>,
    unstarted: usize,
}

impl Lease {
    /// Takes a connection per partition, as many as the pool has free (at least one).
    async fn open(pool: &Pool, partitions: usize, scan: &Scan) -> Result<Lease> {
        let mut conns = pool.get_up_to(partitions).await?;
        share_snapshot(&mut conns, scan).await?;
        let count = conns.len();
        Ok(Lease {
            state: Mutex::new(LeaseState {
                free: conns,
                unstarted: partitions,
            }),
            available: Semaphore::new(count),
        })
    }

    /// A connection in the scan's snapshot, or `None` if the scan's connections are gone
    /// (the partition then reads on one of its own).
    async fn checkout(&self) -> Option<Conn> {
        let permit = self.available.acquire().await.ok()?;
        permit.forget();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.unstarted = state.unstarted.saturating_sub(1);
        state.free.pop()
    }

    /// A partition is done with `conn`: the next partition gets it, or, when every partition
    /// has started, its transaction ends and it goes back to the pool.
    async fn checkin(&self, mut conn: Conn) -> Result<(), tokio_postgres::Error> {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.unstarted > 0 {
                state.free.push(conn);
                self.available.add_permits(1);
                return Ok(());
            }
        }
        conn.client().batch_execute("COMMIT").await?;
        conn.state = State::Idle;
        Ok(())
    }

    /// A partition failed with its connection: a waiting partition opens its own instead.
    fn lost(&self) {
        self.available.add_permits(1);
    }
}

/// Starts a transaction on `conn`.
async fn begin(conn: &mut Conn, sql: &str) -> Result<(), tokio_postgres::Error> {
    conn.state = State::InTransaction;
    conn.client().batch_execute(sql).await
}

/// Opens a read-only transaction on each connection; with several, the first exports its
/// snapshot and the others import it. Where snapshots cannot be exported (a hot standby, a
/// Postgres-compatible server), each connection keeps its own.
async fn share_snapshot(conns: &mut [Conn], scan: &Scan) -> Result<()> {
    let target = &scan.pool.settings().target;
    if conns.len() == 1 {
        begin(&mut conns[0], "BEGIN READ ONLY")
            .await
            .map_err(|e| scan.query_error(&e))?;
        return Ok(());
    }
    let (first, others) = conns.split_first_mut().expect("at least one");
    begin(first, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| scan.query_error(&e))?;
    let exported = match first
        .client()
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
    {
        Ok(row) => row.get::<_, String>(0),
        Err(_) => {
            // The failed statement aborted the transaction: start again without sharing.
            first
                .client()
                .batch_execute("ROLLBACK; BEGIN READ ONLY")
                .await
                .map_err(|e| scan.query_error(&e))?;
            for conn in others.iter_mut() {
                begin(conn, "BEGIN READ ONLY")
                    .await
                    .map_err(|e| scan.query_error(&e))?;
            }
            return Ok(());
        }
    };
    // The identifier comes from the server; it is checked before it is written into SQL,
    // since SET TRANSACTION SNAPSHOT takes no parameters.
    if exported.is_empty() || !exported.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Error::Invalid {
            target: target.to_string(),
            message: format!("the server exported an unexpected snapshot identifier `{exported}`"),
            hint: None,
        }
        .into());
    }
    let import = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{exported}'"
    );
    futures::future::try_join_all(others.iter_mut().map(|conn| {
        conn.state = State::InTransaction;
        let sql = import.clone();
        async move { conn.client().batch_execute(&sql).await }
    }))
    .await
    .map_err(|e| scan.query_error(&e))?;
    Ok(())
}

/// One page range of a scan.
struct Partition {
    scan: Arc<Scan>,
    range: PageRange,
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} pages {:?}", self.scan, self.range)
    }
}

impl PartitionStream for Partition {
    fn schema(&self) -> &SchemaRef {
        &self.scan.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let scan = Arc::clone(&self.scan);
        let range = self.range;
        let batch_size = ctx.session_config().batch_size().max(1);
        let partitions = scan.partitions;
        let batches = futures::stream::try_unfold(None, move |reader: Option<Box<Reader>>| {
            let scan = Arc::clone(&scan);
            async move {
                let mut reader = match reader {
                    Some(reader) => reader,
                    None => Box::new(Reader::open(scan, range, batch_size, partitions).await?),
                };
                Ok(reader
                    .next_batch()
                    .await?
                    .map(|batch| (batch, Some(reader))))
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.scan.schema),
            batches,
        ))
    }
}

/// A partition being read: its connection, the COPY stream, the decoder.
struct Reader {
    scan: Arc<Scan>,
    lease: Option<Arc<Lease>>,
    conn: Option<Conn>,
    copy: std::pin::Pin<Box<CopyOutStream>>,
    decoder: BatchDecoder,
    batch_size: usize,
    done: bool,
}

impl Reader {
    async fn open(
        scan: Arc<Scan>,
        range: PageRange,
        batch_size: usize,
        partitions: usize,
    ) -> Result<Reader> {
        let lease = scan.lease(partitions).await?;
        let (mut conn, lease) = match lease.checkout().await {
            Some(conn) => (conn, Some(lease)),
            None => {
                // Run again after the scan's connections went back, or after one was lost.
                let mut conn = scan.pool.get().await?;
                conn.state = State::InTransaction;
                conn.client()
                    .batch_execute("BEGIN READ ONLY")
                    .await
                    .map_err(|e| scan.query_error(&e))?;
                (conn, None)
            }
        };
        let started = Self::start(&scan, &mut conn, range).await;
        let copy = match started {
            Ok(copy) => copy,
            Err(e) => {
                if let Some(lease) = &lease {
                    lease.lost();
                }
                return Err(e);
            }
        };
        Ok(Reader {
            decoder: BatchDecoder::new(Arc::clone(&scan.schema), &scan.types, batch_size),
            scan,
            lease,
            conn: Some(conn),
            copy: Box::pin(copy),
            batch_size,
            done: false,
        })
    }

    /// Binds the filter's values to the transaction's settings, then starts the COPY.
    async fn start(scan: &Scan, conn: &mut Conn, range: PageRange) -> Result<CopyOutStream> {
        let params = &scan.filter.params;
        if !params.is_empty() {
            let calls: Vec<String> = (1..=params.len())
                .map(|n| format!("set_config('{}', ${n}, true)", setting_name(n)))
                .collect();
            let values: Vec<(&(dyn ToSql + Sync), Type)> = params
                .iter()
                .map(|p| (&p.text as &(dyn ToSql + Sync), Type::TEXT))
                .collect();
            conn.client()
                .query_typed(&format!("SELECT {}", calls.join(", ")), &values)
                .await
                .map_err(|e| scan.query_error(&e))?;
        }
        let sql = scan.copy_sql(range);
        conn.state = State::Busy;
        conn.client()
            .copy_out(sql.as_str())
            .await
            .map_err(|e| scan.query_error(&e))
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.decoder.rows() >= self.batch_size || self.decoder.bytes() >= MAX_BATCH_BYTES {
                return self.flush().map(Some);
            }
            match self.copy.next().await {
                Some(Ok(chunk)) => self.decoder.feed(chunk).map_err(|e| self.decode_error(e))?,
                Some(Err(e)) => {
                    self.done = true;
                    if let Some(lease) = &self.lease {
                        lease.lost();
                    }
                    return Err(self.scan.query_error(&e));
                }
                None => {
                    self.done = true;
                    self.decoder
                        .finish_stream()
                        .map_err(|e| self.decode_error(e))?;
                    self.finish().await?;
                    return if self.decoder.rows() > 0 {
                        self.flush().map(Some)
                    } else {
                        Ok(None)
                    };
                }
            }
        }
    }

    fn flush(&mut self) -> Result<RecordBatch> {
        self.decoder.flush().map_err(|e| self.decode_error(e))
    }

    /// The COPY ended: the connection is free again.
    async fn finish(&mut self) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        conn.state = State::InTransaction;
        let result = match &self.lease {
            Some(lease) => lease.checkin(conn).await,
            None => match conn.client().batch_execute("COMMIT").await {
                Ok(()) => {
                    conn.state = State::Idle;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| self.scan.query_error(&e))
    }

    fn decode_error(&self, e: DecodeError) -> DataFusionError {
        let target = self.scan.pool.settings().target.to_string();
        let table = self.scan.info.display_name();
        match e {
            DecodeError::Value {
                column,
                message,
                hint,
            } => Error::Value {
                target,
                table,
                column: self.scan.schema.field(column).name().clone(),
                message: format!("a row holds {message}"),
                hint,
            },
            DecodeError::Framing(message) => Error::Protocol {
                target,
                table,
                message,
            },
        }
        .into()
    }
}

//! Date-partition pruning for the `files` connector's `time_partition` option: a filter on a
//! table's time column (every metric query has one) becomes a filter on its `dt=YYYY-MM-DD`
//! folders, so DataFusion's listing table skips the days outside a query's range without
//! opening their files. The option and the rewrite are the connector kit's
//! (`lodestar_connector_api::kit::partition`), shared with the plugins.
//!
//! A file that cannot be read is named in the error (DataFusion's own message, `Invalid Parquet
//! file. Corrupt footer`, does not say which of a year of files it is): Parquet reads while
//! executing go through a reader that names its file, and a scan that fails while planning
//! (reading the footers' statistics) looks for the unreadable footer among the files in range.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileScanConfig, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use lodestar_connector_api::kit::partition::{DatePruning, TimePartition, day_in_bounds};

/// A listing table whose date partition holds the UTC date of its rows' time column.
#[derive(Debug)]
pub(super) struct TimePartitioned {
    listing: Arc<ListingTable>,
    /// The table's folder and its files' extension, to name a file that fails.
    dir: PathBuf,
    extension: String,
    pruning: DatePruning,
}

impl TimePartitioned {
    /// `None` if the table lacks the partition column or every time column.
    pub(super) fn new(
        listing: ListingTable,
        (dir, extension): (&Path, &str),
        time_partition: &TimePartition,
    ) -> Option<Self> {
        let pruning = DatePruning::new(time_partition, &listing.schema())?;
        Some(TimePartitioned {
            listing: Arc::new(listing),
            dir: dir.to_path_buf(),
            extension: extension.to_string(),
            pruning,
        })
    }

    /// The first file of the query's days whose Parquet footer does not read, and why.
    fn unreadable_file(&self, filters: &[Expr]) -> Option<(PathBuf, ParquetError)> {
        let bounds = self.pruning.date_bounds(filters);
        let prefix = format!("{}=", self.pruning.column());
        let in_range = |path: &Path| {
            let Some(day) = path.components().find_map(|c| {
                c.as_os_str()
                    .to_str()?
                    .strip_prefix(&prefix)
                    .map(str::to_string)
            }) else {
                return true;
            };
            day_in_bounds(&day, &bounds)
        };
        let mut stack = vec![self.dir.clone()];
        let mut files = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).ok()?.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(['.', '_']) {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else if name.ends_with(&self.extension) && in_range(&path) {
                    files.push(path);
                }
            }
        }
        files.sort();
        files.into_iter().find_map(|path| {
            let file = std::fs::File::open(&path).ok()?;
            ParquetMetaDataReader::new()
                .parse_and_finish(&file)
                .err()
                .map(|e| (path, e))
        })
    }
}

#[async_trait]
impl TableProvider for TimePartitioned {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

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
        let bounds = self.pruning.bounds(filters);
        let mut all = filters.to_vec();
        all.extend(bounds.iter().cloned());
        match self.listing.scan(state, projection, &all, limit).await {
            Ok(plan) => name_files(plan, state),
            Err(e) if self.extension.ends_with("parquet") || self.extension.ends_with("pq") => {
                match self.unreadable_file(filters) {
                    // The same footer error as `e`, with its file.
                    Some((path, why)) => Err(DataFusionError::External(Box::new(FileError {
                        path: path.display().to_string(),
                        source: why,
                    }))),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn statistics(&self) -> Option<Statistics> {
        self.listing.statistics()
    }
}

/// The plan with its Parquet reader wrapped in [`NamingFactory`].
fn name_files(plan: Arc<dyn ExecutionPlan>, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(exec) = plan.downcast_ref::<DataSourceExec>() else {
        return Ok(plan); // nothing to read (every partition pruned)
    };
    let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
        return Ok(plan);
    };
    let Some(parquet) = config.file_source.downcast_ref::<ParquetSource>() else {
        return Ok(plan);
    };
    let inner = match parquet.parquet_file_reader_factory() {
        Some(factory) => Arc::clone(factory),
        None => Arc::new(DefaultParquetFileReaderFactory::new(
            state.runtime_env().object_store(&config.object_store_url)?,
        )),
    };
    let source = parquet
        .clone()
        .with_parquet_file_reader_factory(Arc::new(NamingFactory { inner }));
    let mut config = config.clone();
    config.file_source = Arc::new(source);
    Ok(DataSourceExec::from_data_source(config))
}

/// Makes readers whose errors name their file.
#[derive(Debug)]
struct NamingFactory {
    inner: Arc<dyn ParquetFileReaderFactory>,
}

impl ParquetFileReaderFactory for NamingFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let path = format!("/{}", partitioned_file.object_meta.location);
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(NamingReader { inner, path }))
    }
}

struct NamingReader {
    inner: Box<dyn AsyncFileReader + Send>,
    path: String,
}

/// A file that could not be read, and why.
#[derive(Debug)]
struct FileError {
    path: String,
    source: ParquetError,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read {}: {}", self.path, self.source)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl NamingReader {
    fn name(path: &str) -> impl Fn(ParquetError) -> ParquetError + '_ {
        move |source| {
            ParquetError::External(Box::new(FileError {
                path: path.to_string(),
                source,
            }))
        }
    }
}

impl AsyncFileReader for NamingReader {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        let name = Self::name(&self.path);
        self.inner.get_bytes(range).map(|r| r.map_err(name)).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        let name = Self::name(&self.path);
        self.inner
            .get_byte_ranges(ranges)
            .map(|r| r.map_err(name))
            .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        let name = Self::name(&self.path);
        self.inner
            .get_metadata(options)
            .map(|r| r.map_err(name))
            .boxed()
    }
}

//! Date-partition pruning for the `files` connector's `time_partition` option: a filter on a
//! table's time column (every metric query has one) becomes a filter on its `dt=YYYY-MM-DD`
//! folders, so DataFusion's listing table skips the days outside a query's range without
//! opening their files.
//!
//! A file that cannot be read is named in the error (DataFusion's own message, `Invalid Parquet
//! file. Corrupt footer`, does not say which of a year of files it is): Parquet reads while
//! executing go through a reader that names its file, and a scan that fails while planning
//! (reading the footers' statistics) looks for the unreadable footer among the files in range.
//!
//! The rewrite is the S3 plugin's (plugins/s3/src/table.rs): the plugin cannot share code
//! with the core but through the connector API, which stays small, so it is kept in both.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileScanConfig, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType, col, lit,
};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;

/// The `time_partition` option, `{ column: dt, time: event_time }`: the date partition column,
/// and the time columns it may cut (`time` is one column or a list; each table uses the first
/// of them it has). The `files` connector's, and the shape plugins that prune date partitions
/// declare too (`s3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimePartition {
    pub column: String,
    pub time: Vec<String>,
}

impl TimePartition {
    /// Reads the option's value; `None` if it does not have that shape.
    pub(crate) fn parse(value: &serde_json::Value) -> Option<TimePartition> {
        let object = value.as_object().filter(|o| o.len() == 2)?;
        let column = object.get("column")?.as_str()?.to_string();
        let time = match object.get("time")? {
            serde_json::Value::String(t) => vec![t.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        (!time.is_empty()).then_some(TimePartition { column, time })
    }
}

/// A listing table whose `column` partition holds the UTC date of its rows' `time`.
#[derive(Debug)]
pub(super) struct TimePartitioned {
    listing: Arc<ListingTable>,
    /// The table's folder and its files' extension, to name a file that fails.
    dir: PathBuf,
    extension: String,
    column: String,
    time: String,
    /// The type of the partition column (dictionary-encoded text when inferred).
    data_type: DataType,
}

impl TimePartitioned {
    /// `None` if the table lacks the partition column.
    pub(super) fn new(
        listing: ListingTable,
        (dir, extension): (&Path, &str),
        column: &str,
        time: &str,
    ) -> Option<Self> {
        let data_type = listing
            .schema()
            .field_with_name(column)
            .ok()?
            .data_type()
            .clone();
        Some(TimePartitioned {
            listing: Arc::new(listing),
            dir: dir.to_path_buf(),
            extension: extension.to_string(),
            column: column.to_string(),
            time: time.to_string(),
            data_type,
        })
    }

    /// The first file of the query's days whose Parquet footer does not read, and why.
    fn unreadable_file(&self, filters: &[Expr]) -> Option<(PathBuf, ParquetError)> {
        let bounds: Vec<(Operator, String)> = filters
            .iter()
            .flat_map(|f| split_conjunction(f))
            .filter_map(|f| date_bound(f, &self.time))
            .collect();
        let prefix = format!("{}=", self.column);
        let in_range = |path: &Path| {
            let Some(day) = path.components().find_map(|c| {
                c.as_os_str()
                    .to_str()?
                    .strip_prefix(&prefix)
                    .map(str::to_string)
            }) else {
                return true;
            };
            bounds.iter().all(|(op, date)| match op {
                Operator::GtEq => day >= *date,
                Operator::Lt => day < *date,
                Operator::LtEq => day <= *date,
                Operator::Eq => day == *date,
                _ => true,
            })
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

    /// Filters on the date partition implied by filters on the time column.
    fn partition_bounds(&self, filters: &[Expr]) -> Vec<Expr> {
        filters
            .iter()
            .flat_map(|f| split_conjunction(f))
            .filter_map(|f| date_bound(f, &self.time))
            .map(|(op, date)| {
                Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(col(self.column.as_str())),
                    op,
                    Box::new(lit(partition_literal(&date, &self.data_type))),
                ))
            })
            .collect()
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
        let bounds = self.partition_bounds(filters);
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

/// `(operator, YYYY-MM-DD)` bounding the date partition of `time`, if `filter` bounds `time`
/// by a literal: `ts >= X` gives `dt >= date(X)`, `ts < X` gives `dt <= date(X)` (or
/// `dt < date(X)` when X is a midnight), and so on.
pub(crate) fn date_bound(filter: &Expr, time: &str) -> Option<(Operator, String)> {
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
    let date = iso_date(days)?;
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

/// `YYYY-MM-DD` of a day number; `None` outside the years 0 to 9999. The partition column is
/// compared as text, and other years do not sort as text the way they sort as dates
/// (`+20000-01-01` < `2026-05-01`), nor can chrono name every day an `i64` literal reaches:
/// no bound is then the safe answer (fuzz/regressions/time_partition/ has both, and an
/// overflow of `days * 86_400`).
fn iso_date(days: i64) -> Option<String> {
    let date = chrono::DateTime::from_timestamp(days.checked_mul(86_400)?, 0)?.date_naive();
    (0..=9999)
        .contains(&chrono::Datelike::year(&date))
        .then(|| date.format("%Y-%m-%d").to_string())
}

/// A text literal of the partition column's type.
fn partition_literal(date: &str, data_type: &DataType) -> ScalarValue {
    let text = ScalarValue::Utf8(Some(date.to_string()));
    match data_type {
        DataType::Dictionary(key, _) => ScalarValue::Dictionary(key.clone(), Box::new(text)),
        _ => text,
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

    #[test]
    fn the_option_names_a_column_and_one_or_more_time_columns() {
        let parse = |text: &str| TimePartition::parse(&serde_json::from_str(text).unwrap());
        let expected = |time: &[&str]| TimePartition {
            column: "dt".into(),
            time: time.iter().map(|t| t.to_string()).collect(),
        };
        assert_eq!(
            parse(r#"{"column": "dt", "time": "ts"}"#),
            Some(expected(&["ts"]))
        );
        assert_eq!(
            parse(r#"{"time": ["ts", "created_at"], "column": "dt"}"#),
            Some(expected(&["ts", "created_at"]))
        );
        for bad in [
            r#""dt""#,
            r#"{"column": "dt"}"#,
            r#"{"column": "dt", "time": []}"#,
            r#"{"column": "dt", "time": [1]}"#,
            r#"{"column": 1, "time": "ts"}"#,
            r#"{"column": "dt", "time": "ts", "format": "%Y"}"#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// 2026-05-01T00:00:00 UTC in microseconds.
    const MAY_1: i64 = 1_777_593_600 * 1_000_000;

    #[test]
    fn time_bounds_become_date_bounds() {
        let c = || col("ts");
        assert_eq!(
            date_bound(&cmp(c(), Operator::GtEq, ts(MAY_1)), "ts"),
            Some((Operator::GtEq, "2026-05-01".into()))
        );
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, ts(MAY_1)), "ts"),
            Some((Operator::Lt, "2026-05-01".into()))
        );
        let noon = MAY_1 + 12 * 3_600 * 1_000_000;
        assert_eq!(
            date_bound(&cmp(ts(noon), Operator::Gt, c()), "ts"),
            Some((Operator::LtEq, "2026-05-01".into()))
        );
        assert_eq!(iso_date(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(
            date_bound(&cmp(col("other"), Operator::GtEq, ts(MAY_1)), "ts"),
            None
        );
    }

    /// Cases of the `time_partition` fuzz target (fuzz/regressions/time_partition/): a bound
    /// past year 9999 or past chrono's range became `dt <= +20000-01-01` or `dt <= 1970-01-01`,
    /// which prune this year's folders as text, and `ts >= i64::MIN` seconds overflowed.
    #[test]
    fn literals_outside_four_digit_years_give_no_bound() {
        let secs = |s: i64| lit(ScalarValue::TimestampSecond(Some(s), None));
        let c = || col("ts");
        let year_20000 = 568_971_820_800;
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, secs(year_20000)), "ts"),
            None
        );
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, secs(10_i64.pow(13))), "ts"),
            None
        );
        assert_eq!(
            date_bound(&cmp(c(), Operator::GtEq, secs(i64::MIN)), "ts"),
            None
        );
        let year_9999 = 253_402_300_799; // 9999-12-31T23:59:59
        assert_eq!(
            date_bound(&cmp(c(), Operator::Lt, secs(year_9999)), "ts"),
            Some((Operator::LtEq, "9999-12-31".into()))
        );
    }
}

//! What a series request asks ([`MetricRequest`]) and what it gets ([`MetricTable`], with
//! the scans it ran and how the cache served it).

use chrono::NaiveDate;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, SchemaRef};

use crate::project::model::Grain;
use crate::project::periods::from_days;

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRequest {
    pub metrics: Vec<String>,
    pub grain: Grain,
    /// First day of interest, inclusive; widened to the start of its period.
    pub from: Option<NaiveDate>,
    /// Last day of interest, inclusive; widened to the end of its period.
    pub to: Option<NaiveDate>,
    /// Dimensions to break the metrics down by.
    pub dimensions: Vec<String>,
    /// An SQL predicate over dimensions, applied to rows before they are aggregated.
    pub filter: Option<String>,
}

impl MetricRequest {
    pub fn new(metrics: impl IntoIterator<Item = impl Into<String>>, grain: Grain) -> Self {
        MetricRequest {
            metrics: metrics.into_iter().map(Into::into).collect(),
            grain,
            from: None,
            to: None,
            dimensions: Vec::new(),
            filter: None,
        }
    }
}

/// Computed series: one row per period and dimension combination.
#[derive(Debug, Clone)]
pub struct MetricTable {
    pub grain: Grain,
    pub dimensions: Vec<String>,
    pub metrics: Vec<String>,
    /// `period`, dimensions, metrics.
    pub batch: RecordBatch,
    /// The queries that read the sources, in the order they ran.
    pub scans: Vec<Scanned>,
    /// With a `cache:` configured: per scanned metric, how many periods came from the cache
    /// and how many were computed from the data.
    pub cache: Vec<CacheUse>,
}

/// How the cache served one metric's series in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUse {
    pub metric: String,
    /// Periods whose values were read from the cache.
    pub reused: usize,
    /// Periods computed from the data (the open periods and the look-back window).
    pub recomputed: usize,
}

/// A query a request ran against the sources: which table, for which metrics, and what it
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// `source.table`, or `sql` for a sql metric's own query.
    pub table: String,
    pub metrics: Vec<String>,
    /// The queries, `;`-separated when the scan ran in chunks.
    pub sql: String,
    pub read: Read,
}

/// What a scan read from its source, summed over its queries' leaf operators (`None` where
/// the source does not count it, or when the queries ran on a cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    /// Rows the source produced, after the filters it applies itself.
    pub rows: Option<u64>,
    /// Bytes read from files: Parquet's `bytes_scanned` (DataFusion's count), the sizes of the
    /// CSV and JSON files (or byte ranges) a text scan read whole.
    pub bytes: Option<u64>,
    /// Wall time of the scan's queries, planning included.
    pub elapsed: std::time::Duration,
}

impl MetricTable {
    pub fn schema(&self) -> SchemaRef {
        self.batch.schema()
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The period of each row.
    pub fn periods(&self) -> Vec<NaiveDate> {
        let column = self.batch.column(0).as_primitive::<Date32Type>();
        column
            .iter()
            .map(|d| from_days(d.unwrap_or_default()))
            .collect()
    }

    /// A metric's values as numbers (`None` for null), row by row.
    pub fn values(&self, metric: &str) -> Option<Vec<Option<f64>>> {
        let column = self.batch.column_by_name(metric)?;
        let floats = cast(column, &DataType::Float64).ok()?;
        Some(
            floats
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .iter()
                .collect(),
        )
    }
}

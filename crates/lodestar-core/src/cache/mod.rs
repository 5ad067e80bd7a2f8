//! Incremental refresh: per-period results kept as Parquet files under the project's `cache:`
//! directory, so that recomputing after new data reads only the periods that can still change.
//!
//! An entry holds one metric's rows (`__period`, the request's dimensions, the metric's value)
//! for the *closed* periods of one scan: those that ended more than `lookback` days before the
//! data's last day when the entry was written. Its file name is a hash of everything the values
//! depend on (the metric's table, time column, measure and filter, the source's definition, the
//! grain, timezone and week start as they appear in the period expression, the request's
//! dimensions and filter), so a changed definition never meets its old numbers. A file that
//! cannot be read is reported and ignored, and the values are computed afresh. Files are written
//! to a temporary name and renamed, so a reader never sees half a file.
//!
//! docs/caching.md is the user's view of this.

pub(crate) mod run;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{Date32Type, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::project::model::{CacheSettings, Grain};
use crate::project::periods::period_start;

/// Bumped whenever what an entry means changes, so old files are never read as new ones.
const FORMAT: u32 = 1;

/// The Parquet key-value metadata key holding an entry's [`Header`].
const HEADER_KEY: &str = "lodestar.cache";

/// The result cache of one project.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
    lookback: u32,
}

/// What an entry covers, stored in the file's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    format: u32,
    /// The key the file is named after: checked on reading, against renamed or mixed-up files.
    key: String,
    /// The metric, for people reading the directory.
    pub metric: String,
    /// The first period covered; `None`: from the beginning of the data.
    #[serde(with = "optional_date")]
    pub from: Option<NaiveDate>,
    /// Rows cover every period with data in `[from, cut)`.
    #[serde(with = "date")]
    pub cut: NaiveDate,
    /// The data's last day when the entry was written.
    #[serde(with = "date")]
    pub last_day: NaiveDate,
}

/// A cached series: its header and its rows (`__period`, dimensions, the metric's value).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub header: Header,
    pub batch: RecordBatch,
}

/// A cached pair of first and last data days, for the time spine and the tree's periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bounds {
    format: u32,
    key: String,
    #[serde(with = "date")]
    pub first: NaiveDate,
    #[serde(with = "date")]
    pub last: NaiveDate,
}

impl Cache {
    pub fn new(settings: &CacheSettings) -> Cache {
        Cache {
            dir: settings.dir.clone(),
            lookback: settings.lookback,
        }
    }

    pub fn lookback(&self) -> u32 {
        self.lookback
    }

    /// The first period start at or after which values may still change, given the data's
    /// last day: periods that end on or before `last_day - lookback` are closed.
    pub fn cut(&self, last_day: NaiveDate, grain: Grain, week_start: chrono::Weekday) -> NaiveDate {
        let watermark = last_day - Days::new(u64::from(self.lookback));
        period_start(watermark, grain, week_start)
    }

    fn path(&self, key: &str, extension: &str) -> PathBuf {
        self.dir.join(format!("{key}.{extension}"))
    }

    /// The entry stored under `key`, if there is a readable one. A missing file is normal; a
    /// file that cannot be read is reported and ignored (it is rewritten after computing).
    pub fn load(&self, key: &str, metric: &str) -> Option<Entry> {
        let path = self.path(key, "parquet");
        if !path.is_file() {
            return None;
        }
        match read_entry(&path, key) {
            Ok(entry) => Some(entry),
            Err(problem) => {
                tracing::warn!(
                    "ignoring cache file {} of metric `{metric}` ({problem}); its periods are computed afresh",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores an entry. A failure to write loses nothing but time, so it is reported, not
    /// returned: the computed result is right either way.
    pub fn store(&self, key: &str, header: &Header, batch: &RecordBatch) {
        let path = self.path(key, "parquet");
        if let Err(problem) = self.write_atomically(&path, |file| write_entry(file, header, batch))
        {
            tracing::warn!(
                "cannot write cache file {} of metric `{}`: {problem}",
                path.display(),
                header.metric
            );
        }
    }

    /// The cached bounds under `key`, if readable.
    pub fn load_bounds(&self, key: &str) -> Option<Bounds> {
        let path = self.path(key, "json");
        let text = fs_err::read_to_string(&path).ok()?;
        match serde_json::from_str::<Bounds>(&text) {
            Ok(bounds) if bounds.format == FORMAT && bounds.key == key => Some(bounds),
            Ok(_) => None,
            Err(problem) => {
                tracing::warn!(
                    "ignoring cache file {} ({problem}); the data's bounds are read afresh",
                    path.display()
                );
                None
            }
        }
    }

    pub fn store_bounds(&self, key: &str, first: NaiveDate, last: NaiveDate) {
        let bounds = Bounds {
            format: FORMAT,
            key: key.to_string(),
            first,
            last,
        };
        let path = self.path(key, "json");
        let result = self.write_atomically(&path, |file| {
            serde_json::to_writer(file, &bounds).map_err(|e| e.to_string())
        });
        if let Err(problem) = result {
            tracing::warn!("cannot write cache file {}: {problem}", path.display());
        }
    }

    /// Writes through [`crate::project::atomic::write_atomically`] (a temporary file in the cache's
    /// directory, renamed over `path`): readers see the old file or the new one, never a part.
    fn write_atomically(
        &self,
        path: &Path,
        write: impl FnOnce(&mut std::io::BufWriter<fs_err::File>) -> Result<(), String>,
    ) -> Result<(), String> {
        fs_err::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        crate::project::atomic::write_atomically(path, |file| write(file).map_err(Problem))
            .map_err(|Problem(problem)| problem)
    }
}

/// An error of a cache write, as the warning shows it.
struct Problem(String);

impl From<std::io::Error> for Problem {
    fn from(e: std::io::Error) -> Self {
        Problem(e.to_string())
    }
}

/// Whether `name` is a file this module writes: `<sha256 hex>.parquet` or `.json`, or one of
/// its temporary files. Only these are counted and removed: the directory is the user's.
fn is_cache_file(name: &str) -> bool {
    let entry = |ext: &str| {
        name.strip_suffix(ext)
            .is_some_and(|stem| stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    entry(".parquet") || entry(".json") || (name.starts_with('.') && name.ends_with(".tmp"))
}

fn cache_files(settings: &CacheSettings) -> crate::Result<Vec<(PathBuf, u64)>> {
    let entries = match fs_err::read_dir(&settings.dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(is_cache_file) && entry.file_type()?.is_file() {
            files.push((entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(files)
}

/// Removes every cached result (`lodestar cache clear`); returns how many files it removed.
pub fn clear(settings: &CacheSettings) -> crate::Result<usize> {
    let files = cache_files(settings)?;
    for (path, _) in &files {
        fs_err::remove_file(path)?;
    }
    Ok(files.len())
}

/// How many cached files there are, and their total size in bytes.
pub fn usage(settings: &CacheSettings) -> crate::Result<(usize, u64)> {
    let files = cache_files(settings)?;
    Ok((files.len(), files.iter().map(|(_, size)| size).sum()))
}

/// The cache key of `parts`: a hex SHA-256 of the format version and every part.
pub(crate) fn key(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT.to_le_bytes());
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

impl Header {
    pub fn new(
        key: &str,
        metric: &str,
        from: Option<NaiveDate>,
        cut: NaiveDate,
        last_day: NaiveDate,
    ) -> Header {
        Header {
            format: FORMAT,
            key: key.to_string(),
            metric: metric.to_string(),
            from,
            cut,
            last_day,
        }
    }
}

fn write_entry(
    file: &mut (impl std::io::Write + Send),
    header: &Header,
    batch: &RecordBatch,
) -> Result<(), String> {
    let header = serde_json::to_string(header).map_err(|e| e.to_string())?;
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(HEADER_KEY.to_string(), header)]))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(|e| e.to_string())?;
    writer.write(batch).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(())
}

fn read_entry(path: &Path, key: &str) -> Result<Entry, String> {
    let file = fs_err::File::open(path).map_err(|e| e.to_string())?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file.into_parts().0).map_err(|e| e.to_string())?;
    let header = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == HEADER_KEY))
        .and_then(|kv| kv.value.as_deref())
        .ok_or("it has no Lodestar header")?;
    let header: Header = serde_json::from_str(header).map_err(|e| format!("bad header: {e}"))?;
    if header.format != FORMAT || header.key != key {
        return Err("it was written for another definition or version".into());
    }
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| e.to_string())?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let batch =
        datafusion::arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())?;
    // The file's metadata (our header) is not part of the rows' schema.
    let plain = Arc::new(schema.as_ref().clone().with_metadata(Default::default()));
    let batch = RecordBatch::try_new(plain, batch.columns().to_vec()).map_err(|e| e.to_string())?;
    let periods_ok = batch.num_columns() >= 2
        && batch.column(0).as_primitive_opt::<Date32Type>().is_some()
        && batch.column(0).null_count() == 0;
    if !periods_ok {
        return Err("its first column is not a period".into());
    }
    Ok(Entry { header, batch })
}

/// The rows of `batch` whose period (column 0, Date32) satisfies `keep`.
pub(crate) fn filter_periods(
    batch: &RecordBatch,
    keep: impl Fn(NaiveDate) -> bool,
) -> datafusion::error::Result<RecordBatch> {
    let periods = batch.column(0).as_primitive::<Date32Type>();
    let mask: BooleanArray = periods
        .iter()
        .map(|d| Some(d.is_some_and(|d| keep(crate::project::periods::from_days(d)))))
        .collect();
    Ok(filter_record_batch(batch, &mask)?)
}

/// `batch` with its columns cast to `schema`'s types (cached files hold what was computed;
/// this guards against a reader that widens or narrows a type).
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if batch.num_columns() != schema.fields().len() {
        return Err(format!(
            "it has {} columns where {} are expected",
            batch.num_columns(),
            schema.fields().len()
        ));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type()).map_err(|e| e.to_string())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

/// The distinct periods of a batch (column 0).
pub(crate) fn period_count(batches: &[RecordBatch]) -> usize {
    let mut periods: Vec<i32> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<Date32Type>()
                .iter()
                .flatten()
                .collect::<Vec<_>>()
        })
        .collect();
    periods.sort_unstable();
    periods.dedup();
    periods.len()
}

impl crate::Engine {
    /// The project's result cache, when `cache:` is configured.
    pub(crate) fn cache(&self) -> Option<Cache> {
        self.project().cache.as_ref().map(Cache::new)
    }
}

/// Dates as `YYYY-MM-DD` text (chrono's own serde support is a feature we do not build).
mod date {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(date)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod optional_date {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
        match date {
            Some(date) => s.collect_str(date),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config;
    use crate::query::compute::MetricRequest;

    const PROJECT: &str = "\
sources:
  app: { connector: files, path: data }
cache: { dir: cache, lookback: 1d }
metrics:
  orders: { table: app.orders, time: ordered_at, measure: count(*), filter: \"status = 'paid'\", dimensions: [country] }
  revenue: { table: app.orders, time: ordered_at, measure: sum(amount), filter: \"status = 'paid'\", dimensions: [country] }
  refunds: { table: app.orders, time: ordered_at, measure: count(*), filter: \"status = 'refunded'\", dimensions: [country] }
  buyers: { table: app.orders, time: ordered_at, measure: count(distinct country) }
  aov: { ratio: { numerator: revenue, denominator: orders } }
  orders_to_date: { cumulative: { metric: orders } }
  countries_7d: { table: app.orders, time: ordered_at, measure: count(distinct country), cumulative: { window: 7d } }
";

    const METRICS: [&str; 7] = [
        "orders",
        "revenue",
        "refunds",
        "buyers",
        "aov",
        "orders_to_date",
        "countries_7d",
    ];

    async fn compute(dir: &Path, cache: bool, request: &MetricRequest) -> crate::MetricTable {
        let mut project = config::load(&dir.join("lodestar.yaml")).unwrap();
        if !cache {
            project.cache = None;
        }
        let engine = crate::Engine::open(project).await.unwrap();
        engine.compute(request).await.unwrap()
    }

    fn add_orders(dir: &Path, name: &str, rows: &str) {
        fs_err::write(
            dir.join("data/orders").join(name),
            format!("order_id,ordered_at,status,amount,country\n{rows}"),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn refreshes_equal_full_recomputes_and_reuse_closed_periods() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("data/orders")).unwrap();
        fs_err::write(dir.path().join("lodestar.yaml"), PROJECT).unwrap();
        add_orders(
            dir.path(),
            "a.csv",
            "1,2026-05-01T10:00:00,paid,10.0,FR\n\
             2,2026-05-02T11:00:00,paid,20.0,DE\n\
             3,2026-05-03T09:00:00,refunded,5.0,FR\n\
             4,2026-05-05T09:00:00,paid,7.5,FR\n",
        );
        let mut request = MetricRequest::new(METRICS, crate::project::model::Grain::Day);
        let by_country = {
            let mut r = MetricRequest::new(
                ["orders", "revenue", "refunds", "aov"],
                crate::project::model::Grain::Day,
            );
            r.dimensions = vec!["country".into()];
            r
        };
        for request in [&request, &by_country] {
            let full = compute(dir.path(), false, request).await;
            let cold = compute(dir.path(), true, request).await;
            assert_eq!(cold.batch, full.batch);
            let warm = compute(dir.path(), true, request).await;
            assert_eq!(warm.batch, full.batch);
        }
        // Data up to 05-05, one day back: 05-01..05-03 are closed (they end by 05-04); paid
        // orders fall on 05-01 and 05-02 (reused) and 05-05 (recomputed).
        let warm = compute(dir.path(), true, &request).await;
        let orders = warm.cache.iter().find(|u| u.metric == "orders").unwrap();
        assert_eq!(
            (orders.reused, orders.recomputed),
            (2, 1),
            "{:?}",
            warm.cache
        );

        // A new day, and a late row inside the look-back (05-04); an old row (05-01) arriving
        // now is beyond it and is knowingly not seen.
        add_orders(
            dir.path(),
            "b.csv",
            "5,2026-05-06T08:00:00,paid,4.0,DE\n\
             6,2026-05-04T08:00:00,paid,1.0,ES\n",
        );
        for request in [&request, &by_country] {
            let full = compute(dir.path(), false, request).await;
            let refreshed = compute(dir.path(), true, request).await;
            assert_eq!(refreshed.batch, full.batch);
        }
        add_orders(dir.path(), "c.csv", "7,2026-05-01T08:00:00,paid,100.0,FR\n");
        request.metrics = vec!["revenue".into()];
        let stale = compute(dir.path(), true, &request).await;
        let full = compute(dir.path(), false, &request).await;
        assert_eq!(stale.values("revenue").unwrap()[0], Some(10.0));
        assert_eq!(full.values("revenue").unwrap()[0], Some(110.0));
    }

    #[test]
    fn entries_round_trip_and_unreadable_files_are_ignored() {
        use datafusion::arrow::array::{Date32Array, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};

        let dir = tempfile::tempdir().unwrap();
        let settings = CacheSettings {
            dir: dir.path().join("nested/cache"),
            lookback: 2,
        };
        let cache = Cache::new(&settings);
        let schema = Arc::new(Schema::new(vec![
            Field::new("__period", DataType::Date32, false),
            Field::new("orders", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from(vec![20_000, 20_001])),
                Arc::new(Int64Array::from(vec![Some(3), None])),
            ],
        )
        .unwrap();
        let k = key(&["scan", "orders"]);
        assert_ne!(k, key(&["scan", "orders", ""]));
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 5, d).unwrap();
        let header = Header::new(&k, "orders", None, day(3), day(5));
        cache.store(&k, &header, &batch);
        let entry = cache.load(&k, "orders").unwrap();
        assert_eq!(entry.header, header);
        assert_eq!(entry.batch, batch);
        // Under another key, the same file is not taken for that key's entry.
        let other = key(&["scan", "refunds"]);
        fs_err::copy(
            settings.dir.join(format!("{k}.parquet")),
            settings.dir.join(format!("{other}.parquet")),
        )
        .unwrap();
        assert!(cache.load(&other, "refunds").is_none());
        fs_err::write(settings.dir.join(format!("{k}.parquet")), "garbage").unwrap();
        assert!(cache.load(&k, "orders").is_none());
        // No temporary file is left behind, and clear removes only cache files.
        fs_err::write(settings.dir.join("notes.txt"), "mine").unwrap();
        assert_eq!(usage(&settings).unwrap().0, 2);
        assert_eq!(clear(&settings).unwrap(), 2);
        assert!(settings.dir.join("notes.txt").is_file());
        // Closed periods: ended at least `lookback` days before the data's last day.
        assert_eq!(cache.cut(day(5), Grain::Day, chrono::Weekday::Mon), day(3));
        assert_eq!(
            cache.cut(day(5), Grain::Month, chrono::Weekday::Mon),
            day(1)
        );
    }
}

//! Computing through the result cache: a scan, a trailing window or a retention metric reads
//! its closed periods from the cache and computes only the periods that may still change,
//! then writes back what has closed since (see the parent module for the files).

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Date32Type, SchemaRef};
use datafusion::sql::sqlparser::ast::Expr;

use crate::cache::{self, Cache};
use crate::project::error::{Error, Result};
use crate::project::model::{Grain, Measure, Metric, Project, RetentionMetric, TableRef};
use crate::project::periods::from_days;
use crate::project::periods::next_period;
use crate::query::engine::Engine;
use crate::query::plan::{LAST, PERIOD, PartContext, Scan, WindowMetric};
use crate::query::request::Action;
use crate::query::scan::{Part, matched_column};
use crate::query::sql::{period_of, timestamp_literal};
use crate::query::table::{CacheUse, Scanned};

/// A series read through the result cache: what [`Engine::through_cache`] needs besides the
/// computation itself.
pub(crate) struct CachedSeries<'a> {
    pub(crate) cache: &'a Cache,
    /// The entry's key: a hash of everything the values depend on.
    pub(crate) key: String,
    pub(crate) metric: &'a Metric,
    /// The request's dimensions: the entry's columns are `__period`, these, the metric.
    pub(crate) dims: &'a [String],
    /// The request's periods, `[from, to)`; `None`: unbounded.
    pub(crate) range: (Option<NaiveDate>, Option<NaiveDate>),
    /// The first period that may still change, given the data's last day.
    pub(crate) cut_of: &'a (dyn Fn(NaiveDate) -> NaiveDate + Sync),
}

/// The rows a series through the cache computed from the data.
pub(crate) struct FreshRows {
    /// `__period`, dimensions, the metric.
    pub(crate) rows: RecordBatch,
    /// The last local day of the data read.
    pub(crate) last: Option<NaiveDate>,
    pub(crate) scanned: Option<Scanned>,
    /// How many periods were computed.
    pub(crate) recomputed: usize,
}

impl FreshRows {
    /// Splits the `__last` column (the last local day per group) off a query's rows.
    fn split_last(rows: &RecordBatch, scanned: Option<Scanned>, recomputed: usize) -> Result<Self> {
        let at = rows.schema().index_of(LAST)?;
        let last = datafusion::arrow::compute::max(rows.column(at).as_primitive::<Date32Type>())
            .map(from_days);
        let columns: Vec<usize> = (0..at).collect();
        Ok(FreshRows {
            rows: rows.project(&columns)?,
            last,
            scanned,
            recomputed,
        })
    }
}

/// Whether a cached entry has the columns a request's part has: `__period`, the dimensions,
/// the metric. The key makes a mismatch unlikely; this makes it harmless.
pub(crate) fn entry_fits(entry: &cache::Entry, expected: &[String], metric: &str) -> bool {
    let names: Vec<&str> = entry
        .batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let fits = names.len() == expected.len() + 1
        && names.iter().zip(expected).all(|(a, b)| a == b)
        && names.last() == Some(&metric);
    if !fits {
        tracing::warn!(
            "ignoring a cache file of metric `{metric}`: its columns {names:?} do not fit the request; its periods are computed afresh"
        );
    }
    fits
}

/// A source's definition as text, for cache keys: a moved or re-pointed source is new data.
pub(crate) fn source_text(project: &Project, table: &TableRef) -> String {
    project
        .sources
        .get(&table.source)
        .map(|s| {
            format!(
                "{}:{}",
                s.connector,
                serde_json::Value::Object(s.options.clone())
            )
        })
        .unwrap_or_default()
}

/// Cached rows cast to the schema of freshly computed ones; an error naming the metric when
/// they do not fit.
pub(crate) fn conform_cached(
    rows: Option<RecordBatch>,
    schema: &SchemaRef,
    metric: &str,
) -> Result<Option<RecordBatch>> {
    rows.map(|rows| {
        cache::conform(&rows, schema).map_err(|problem| {
            Error::request_hint(
                format!("the cached values of metric `{metric}` cannot be used: {problem}"),
                Action::BypassCache,
            )
        })
    })
    .transpose()
}

impl Engine {
    /// A scan through the cache: each metric's closed periods come from its cache entry, and
    /// the table is read only from the first period that may still change. Returns one part
    /// per metric (cached and fresh rows of one metric), and writes the entries back with the
    /// periods that have closed since.
    pub(crate) async fn run_scan_cached(
        &self,
        cache: &Cache,
        ctx: &PartContext<'_>,
        scan: &Scan<'_>,
        upper: Option<NaiveDate>,
        index: usize,
    ) -> Result<Vec<(Part, CacheUse)>> {
        let (dims, where_expr) = (ctx.dims, ctx.where_expr);
        let project = self.project();
        let week_start = project.week_start;
        let (local, _) = self.local_time_of(&scan.table, &scan.time).await?;
        let period = period_of(&local, scan.grain, week_start);
        let source = source_text(project, &scan.table);
        let table_sql = scan.table.sql();
        let where_text = where_expr.map(ToString::to_string).unwrap_or_default();
        let dims_text = dims.join("\u{1f}");
        let keys: Vec<String> = scan
            .metrics
            .iter()
            .map(|(metric, measure)| {
                cache::key(&[
                    "scan",
                    &metric.name,
                    &table_sql,
                    &local,
                    &period,
                    &measure.measure,
                    measure.filter.as_deref().unwrap_or(""),
                    &source,
                    &dims_text,
                    &where_text,
                ])
            })
            .collect();
        let expected: Vec<String> = std::iter::once(PERIOD.to_string())
            .chain(dims.iter().cloned())
            .collect();
        let lo = scan.lower;
        let entries: Vec<Option<cache::Entry>> = keys
            .iter()
            .zip(&scan.metrics)
            .map(|(key, (metric, _))| {
                let entry = cache.load(key, &metric.name)?;
                entry_fits(&entry, &expected, &metric.name).then_some(entry)
            })
            .collect();
        // An entry serves this request if it starts no later than the request does.
        let usable = |e: &cache::Entry| match (e.header.from, lo) {
            (None, _) => true,
            (Some(from), Some(lo)) => from <= lo,
            (Some(_), None) => false,
        };
        let merge = entries.iter().all(|e| e.as_ref().is_some_and(usable));
        // Periods before `cut` come from the cache (with today's look-back, which may be
        // longer than when an entry was written).
        let cut = merge
            .then(|| {
                entries
                    .iter()
                    .flatten()
                    .map(|e| {
                        e.header
                            .cut
                            .min(cache.cut(e.header.last_day, scan.grain, week_start))
                    })
                    .min()
            })
            .flatten();
        let fresh_lower = match (cut, lo) {
            (Some(cut), Some(lo)) => Some(cut.max(lo)),
            (Some(cut), None) => Some(cut),
            (None, lo) => lo,
        };
        let nothing_to_read = matches!((fresh_lower, upper), (Some(l), Some(u)) if l >= u);
        let fresh = if nothing_to_read {
            None
        } else {
            let part = self
                .run_scan(
                    &PartContext {
                        for_cache: true,
                        ..*ctx
                    },
                    scan,
                    fresh_lower,
                    upper,
                    index,
                )
                .await?;
            let batch = concat_batches(&part.schema, &part.batches)?;
            Some((batch, part.scanned))
        };
        let fresh_last = fresh.as_ref().and_then(|(batch, _)| {
            let column = batch.column_by_name(LAST)?;
            let days = column.as_primitive::<Date32Type>();
            datafusion::arrow::compute::max(days).map(from_days)
        });
        let last_day = if merge {
            entries
                .iter()
                .flatten()
                .map(|e| e.header.last_day)
                .chain(fresh_last)
                .max()
        } else {
            fresh_last
        };
        let new_cut = last_day.map(|last| {
            let cut = cache.cut(last, scan.grain, week_start);
            upper.map_or(cut, |u| cut.min(u))
        });

        let mut out = Vec::new();
        let mut scanned = fresh.as_ref().and_then(|(_, s)| s.clone());
        for (i, ((metric, _), (key, entry))) in scan
            .metrics
            .iter()
            .zip(keys.iter().zip(&entries))
            .enumerate()
        {
            // This metric's fresh rows: those its own filter matched.
            let fresh_rows = match &fresh {
                Some((batch, _)) => {
                    let batch = match batch.column_by_name(&matched_column(i)) {
                        Some(matched) => {
                            let mask = datafusion::arrow::compute::kernels::cmp::gt(
                                matched,
                                &datafusion::arrow::array::Int64Array::new_scalar(0),
                            )?;
                            datafusion::arrow::compute::filter_record_batch(batch, &mask)?
                        }
                        None => batch.clone(),
                    };
                    let mut columns: Vec<usize> = (0..=dims.len()).collect();
                    columns.push(batch.schema().index_of(&metric.name)?);
                    Some(batch.project(&columns)?)
                }
                None => None,
            };
            let cached_rows = match (entry, cut) {
                (Some(entry), Some(cut)) if merge => {
                    Some(cache::filter_periods(&entry.batch, |p| {
                        p < cut && lo.is_none_or(|lo| p >= lo) && upper.is_none_or(|u| p < u)
                    })?)
                }
                _ => None,
            };
            let schema = match (&fresh_rows, &cached_rows) {
                (Some(rows), _) | (None, Some(rows)) => rows.schema(),
                (None, None) => unreachable!("a scan is skipped only when the cache covers it"),
            };
            let cached_rows = conform_cached(cached_rows, &schema, &metric.name)?;
            let used = CacheUse {
                metric: metric.name.clone(),
                reused: cached_rows
                    .as_ref()
                    .map_or(0, |r| cache::period_count(std::slice::from_ref(r))),
                recomputed: fresh_rows
                    .as_ref()
                    .map_or(0, |r| cache::period_count(std::slice::from_ref(r))),
            };
            tracing::debug!(
                metric = %metric.name,
                reused = used.reused,
                recomputed = used.recomputed,
                from = ?fresh_lower,
                "cache: periods reused and recomputed"
            );

            // The entry to write: the periods closed by now, when that is more than before.
            if let (Some(new_cut), Some(last_day), Some(fresh_rows)) =
                (new_cut, last_day, &fresh_rows)
            {
                let header_and_rows = match (entry, cut) {
                    (Some(entry), Some(cut)) if merge => {
                        let contiguous = lo.is_none_or(|lo| lo <= cut);
                        (contiguous && new_cut > entry.header.cut).then(|| {
                            let old = cache::filter_periods(&entry.batch, |p| p < cut)
                                .map_err(Error::from)
                                .and_then(|b| cache::conform(&b, &schema).map_err(Error::request));
                            let new = cache::filter_periods(fresh_rows, |p| p < new_cut);
                            (entry.header.from, old, new)
                        })
                    }
                    // Keep a usable entry of a metric whose scan-mates had none.
                    (Some(entry), _) if usable(entry) => None,
                    _ => lo.is_none_or(|lo| new_cut > lo).then(|| {
                        let none = Ok(RecordBatch::new_empty(schema.clone()));
                        let new = cache::filter_periods(fresh_rows, |p| p < new_cut);
                        (lo, none, new)
                    }),
                };
                if let Some((from, Ok(old), Ok(new))) = header_and_rows {
                    let rows = concat_batches(&schema, [&old, &new])?;
                    let header = cache::Header::new(key, &metric.name, from, new_cut, last_day);
                    cache.store(key, &header, &rows);
                }
            }

            let rows: Vec<RecordBatch> = cached_rows.into_iter().chain(fresh_rows).collect();
            out.push((
                Part {
                    name: format!("p{}", index + out.len()),
                    batches: rows,
                    schema,
                    // The one query, on the first metric's part.
                    scanned: scanned.take(),
                },
                used,
            ));
        }
        Ok(out)
    }

    /// A trailing-window metric through the cache: a period's value depends only on the rows
    /// of its window, so closed periods come from the cache and only the others are computed,
    /// reading the data from the first of them minus the window.
    pub(crate) async fn run_window_cached(
        &self,
        cache: &Cache,
        ctx: &PartContext<'_>,
        w: &WindowMetric<'_>,
        window: u32,
        periods: &[NaiveDate],
        index: usize,
    ) -> Result<(Part, CacheUse)> {
        let (metric, measure) = (w.metric, w.measure);
        let (grain, dims, where_expr) = (ctx.grain, ctx.dims, ctx.where_expr);
        let project = self.project();
        let week_start = project.week_start;
        let (local, _) = self.local_time_of(&measure.table, &measure.time).await?;
        let key = cache::key(&[
            "window",
            &metric.name,
            &measure.table.sql(),
            &local,
            &period_of(&local, grain, week_start),
            &measure.measure,
            measure.filter.as_deref().unwrap_or(""),
            &window.to_string(),
            &source_text(project, &measure.table),
            &dims.join("\u{1f}"),
            &where_expr.map(ToString::to_string).unwrap_or_default(),
        ]);
        let (lo, hi) = match (periods.first(), periods.last()) {
            (Some(first), Some(last)) => (Some(*first), Some(next_period(*last, grain))),
            _ => (None, None),
        };
        let series = CachedSeries {
            cache,
            key,
            metric,
            dims,
            range: (lo, hi),
            cut_of: &|last_day: NaiveDate| cache.cut(last_day, grain, week_start),
        };
        self.through_cache(series, index, |cut| async move {
            let recompute: Vec<NaiveDate> = periods
                .iter()
                .filter(|p| cut.is_none_or(|cut| **p >= cut))
                .copied()
                .collect();
            if recompute.is_empty() && cut.is_some() {
                return Ok(None);
            }
            let part = self
                .run_window_scan(
                    &PartContext {
                        for_cache: true,
                        ..*ctx
                    },
                    &WindowMetric {
                        days: Some(window),
                        ..*w
                    },
                    &recompute,
                    index,
                )
                .await?;
            let rows = concat_batches(&part.schema, &part.batches)?;
            Ok(Some(FreshRows::split_last(
                &rows,
                part.scanned,
                recompute.len(),
            )?))
        })
        .await
    }

    /// A retention metric through the cache: a cohort period's rate is final once its last
    /// member's window has ended more than the look-back before the data's last day, so those
    /// come from the cache and only later cohorts are computed, reading activity from the first
    /// of them plus `after`.
    pub(crate) async fn run_retention_cached(
        &self,
        cache: &Cache,
        metric: &Metric,
        r: &RetentionMetric,
        grain: Grain,
        range: (Option<NaiveDate>, Option<NaiveDate>),
        index: usize,
    ) -> Result<(Part, CacheUse)> {
        let project = self.project();
        let week_start = project.week_start;
        let (cohort_local, _) = self.local_time_of(&r.cohort, &r.cohort_time).await?;
        let (activity_local, _) = self.local_time_of(&r.activity, &r.activity_time).await?;
        let key = cache::key(&[
            "retention",
            &metric.name,
            &r.cohort.sql(),
            &cohort_local,
            &period_of(&cohort_local, grain, week_start),
            &r.activity.sql(),
            &activity_local,
            &r.entity,
            r.cohort_filter.as_deref().unwrap_or(""),
            r.activity_filter.as_deref().unwrap_or(""),
            &r.after_days.to_string(),
            &r.window_days.to_string(),
            &source_text(project, &r.cohort),
            &source_text(project, &r.activity),
        ]);
        let reach = Days::new(u64::from(r.after_days + r.window_days));
        let series = CachedSeries {
            cache,
            key,
            metric,
            dims: &[],
            range,
            cut_of: &|last_day: NaiveDate| cache.cut(last_day - reach, grain, week_start),
        };
        self.through_cache(series, index, |cut| async move {
            let lower = match (range.0, cut) {
                (Some(lower), Some(cut)) => Some(lower.max(cut)),
                (lower, cut) => lower.or(cut),
            };
            if let (Some(lower), Some(upper)) = (lower, range.1)
                && lower >= upper
                && cut.is_some()
            {
                return Ok(None);
            }
            let part = self
                .run_retention_metric(metric, r, grain, (lower, range.1), index, true)
                .await?;
            let rows = concat_batches(&part.schema, &part.batches)?;
            let recomputed = rows.num_rows();
            Ok(Some(FreshRows::split_last(
                &rows,
                part.scanned,
                recomputed,
            )?))
        })
        .await
    }

    /// A series through the cache: the periods before the entry's cut come from the cache, the
    /// others from `compute` (given that cut, `None` without an entry; it returns `None` when
    /// nothing is left to compute), and the entry is written back grown by the periods that
    /// have closed since.
    pub(crate) async fn through_cache<F, Fut>(
        &self,
        series: CachedSeries<'_>,
        index: usize,
        compute: F,
    ) -> Result<(Part, CacheUse)>
    where
        F: FnOnce(Option<NaiveDate>) -> Fut,
        Fut: std::future::Future<Output = Result<Option<FreshRows>>>,
    {
        let CachedSeries {
            cache,
            key,
            metric,
            dims,
            range: (lo, hi),
            cut_of,
        } = series;
        let expected: Vec<String> = std::iter::once(PERIOD.to_string())
            .chain(dims.iter().cloned())
            .collect();
        let entry = cache
            .load(&key, &metric.name)
            .filter(|e| entry_fits(e, &expected, &metric.name))
            .filter(|e| match (e.header.from, lo) {
                (None, _) => true,
                (Some(from), Some(lo)) => from <= lo,
                (Some(_), None) => false,
            });
        let cut = entry
            .as_ref()
            .map(|e| e.header.cut.min(cut_of(e.header.last_day)));
        let fresh = compute(cut).await?;
        let cached_rows = match (&entry, cut) {
            (Some(entry), Some(cut)) => Some(cache::filter_periods(&entry.batch, |p| {
                p < cut && lo.is_none_or(|lo| p >= lo) && hi.is_none_or(|hi| p < hi)
            })?),
            _ => None,
        };
        let schema = match (&fresh, &cached_rows) {
            (Some(fresh), _) => fresh.rows.schema(),
            (None, Some(rows)) => rows.schema(),
            (None, None) => unreachable!("a series is computed unless the cache covers it"),
        };
        let cached_rows = conform_cached(cached_rows, &schema, &metric.name)?;
        let used = CacheUse {
            metric: metric.name.clone(),
            reused: cached_rows
                .as_ref()
                .map_or(0, |r| cache::period_count(std::slice::from_ref(r))),
            recomputed: fresh.as_ref().map_or(0, |f| f.recomputed),
        };
        tracing::debug!(
            metric = %metric.name,
            reused = used.reused,
            recomputed = used.recomputed,
            "cache: periods reused and recomputed"
        );
        let last_day = entry
            .as_ref()
            .map(|e| e.header.last_day)
            .max(fresh.as_ref().and_then(|f| f.last));
        let (fresh_rows, scanned) = match fresh {
            Some(fresh) => (Some(fresh.rows), fresh.scanned),
            None => (None, None),
        };
        if let (Some(last_day), Some(fresh_rows)) = (last_day, &fresh_rows) {
            let new_cut = cut_of(last_day);
            let new_cut = hi.map_or(new_cut, |hi| new_cut.min(hi));
            let (from, old) = match (&entry, cut) {
                (Some(entry), Some(cut)) => {
                    let contiguous = lo.is_none_or(|lo| lo <= cut);
                    let grows = contiguous && new_cut > entry.header.cut;
                    let old = cache::filter_periods(&entry.batch, |p| p < cut)?;
                    (
                        grows.then_some(entry.header.from),
                        cache::conform(&old, &schema).ok(),
                    )
                }
                // Without an entry, the computed rows cover the request's range, from the
                // beginning of the data when it has no start.
                _ => (
                    match lo {
                        None => Some(None),
                        Some(lo) => (new_cut > lo).then_some(Some(lo)),
                    },
                    Some(RecordBatch::new_empty(schema.clone())),
                ),
            };
            if let (Some(from), Some(old)) = (from, old) {
                let new = cache::filter_periods(fresh_rows, |p| p < new_cut)?;
                let rows = concat_batches(&schema, [&old, &new])?;
                let header = cache::Header::new(&key, &metric.name, from, new_cut, last_day);
                cache.store(&key, &header, &rows);
            }
        }
        let rows: Vec<RecordBatch> = cached_rows.into_iter().chain(fresh_rows).collect();
        Ok((
            Part {
                name: format!("p{index}"),
                batches: rows,
                schema,
                scanned,
            },
            used,
        ))
    }

    /// The first and last local dates of a measure's rows.
    pub(crate) async fn data_bounds(
        &self,
        measure: &Measure,
        where_expr: Option<&Expr>,
    ) -> Result<Option<(NaiveDate, NaiveDate)>> {
        let (local, _) = self.local_time_of(&measure.table, &measure.time).await?;
        let mut conditions: Vec<String> =
            where_expr.map(|e| format!("({e})")).into_iter().collect();
        conditions.extend(measure.filter.as_ref().map(|f| format!("({f})")));
        let Some(cache) = self.cache() else {
            return self.bounds_query(&measure.table, &local, &conditions).await;
        };
        // With the cache, only the rows since the last known day minus the look-back are
        // read: the data's first day is kept, its last day moves forward.
        let key = cache::key(&[
            "bounds",
            &measure.table.sql(),
            &local,
            measure.filter.as_deref().unwrap_or(""),
            &where_expr.map(ToString::to_string).unwrap_or_default(),
            &source_text(self.project(), &measure.table),
        ]);
        if let Some(known) = cache.load_bounds(&key) {
            let since = known.last - Days::new(u64::from(cache.lookback()));
            let mut recent = conditions.clone();
            recent.push(format!("{local} >= {}", timestamp_literal(since)));
            if let Some((first, last)) = self.bounds_query(&measure.table, &local, &recent).await? {
                let bounds = (known.first.min(first), last);
                if bounds != (known.first, known.last) {
                    cache.store_bounds(&key, bounds.0, bounds.1);
                }
                return Ok(Some(bounds));
            }
            tracing::warn!(
                "table `{}` has no rows since {since}, although it had up to {}: reading it whole",
                measure.table,
                known.last
            );
        }
        let found = self
            .bounds_query(&measure.table, &local, &conditions)
            .await?;
        if let Some((first, last)) = found {
            cache.store_bounds(&key, first, last);
        }
        Ok(found)
    }
}

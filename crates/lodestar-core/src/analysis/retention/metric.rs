//! The retention metric's query: a series of the share of a cohort still active, computed
//! like any metric and assembled with the others.

use chrono::{Days, NaiveDate};

use crate::project::error::{Error, Result};
use crate::project::model::{Grain, Metric, RetentionMetric, TableRef, quote_ident};
use crate::query::distinct::counts_by_bitmap;
use crate::query::engine::Engine;
use crate::query::plan::{LAST, PERIOD};
use crate::query::scan::{Part, time_range, where_clause};
use crate::query::sql::{self, period_of};

impl Engine {
    /// A retention metric's series: per cohort period, the share of the cohort active again
    /// in its window, null while the cohort can still change. One query: each entity's first
    /// cohort time, whether it has activity in `[t0 + after, t0 + after + window)`, and the
    /// activity table's last time as the data's end. Cohorts from `lower` (inclusive) to
    /// `upper` (exclusive) need only the activity from `lower + after` to `upper + after +
    /// window`, so a partitioned activity table is read only there. With `for_cache`, the rows
    /// also carry the data's last local day (`__last`).
    pub(crate) async fn run_retention_metric(
        &self,
        metric: &Metric,
        r: &RetentionMetric,
        grain: Grain,
        (lower, upper): (Option<NaiveDate>, Option<NaiveDate>),
        index: usize,
        for_cache: bool,
    ) -> Result<Part> {
        let (cohort_local, _) = self.local_time_of(&r.cohort, &r.cohort_time).await?;
        let (activity_local, _) = self.local_time_of(&r.activity, &r.activity_time).await?;
        let entity = quote_ident(&r.entity);
        let entity_type = |table: &TableRef| {
            let table = table.clone();
            let entity = r.entity.clone();
            async move {
                self.table_schema(&table).await.ok().and_then(|s| {
                    s.field_with_name(&entity)
                        .ok()
                        .map(|f| f.data_type().clone())
                })
            }
        };
        // Keys of different types (text ids against numbers) meet as text.
        let cohort_type = entity_type(&r.cohort).await;
        let same_type = cohort_type == entity_type(&r.activity).await;
        let key = if same_type {
            entity.clone()
        } else {
            format!("CAST({entity} AS VARCHAR)")
        };
        // Integer keys, in one process: one outer join, and each period's members and those
        // retained counted by bitmap (query/distinct.rs), so the cohort is computed once.
        let one_join = same_type
            && cohort_type.as_ref().is_some_and(counts_by_bitmap)
            && self.project().engine.cluster.is_none();
        let filter = |f: &Option<String>| -> Result<String> {
            Ok(match f {
                Some(f) => format!(" AND ({})", sql::parse_expr(f).map_err(Error::request)?),
                None => String::new(),
            })
        };
        let (after, reach) = (r.after_days, r.after_days + r.window_days);
        let period = period_of("c.t0", grain, self.project().week_start);
        let length = match grain {
            Grain::Day => "1 day",
            Grain::Week => "7 days",
            Grain::Month => "1 month",
            Grain::Quarter => "3 months",
            Grain::Year => "1 year",
        };
        let in_range = time_range("t0", lower, upper);
        // The activity a cohort in range can have in its window; the data's end is looked for
        // from the same start (when it lies before, no cohort in range is complete either).
        let from_day = |days: u32| move |d: NaiveDate| d + Days::new(u64::from(days));
        let activity_range = time_range(
            &activity_local,
            lower.map(from_day(after)),
            upper.map(from_day(reach)),
        );
        let end_range = time_range(&activity_local, lower.map(from_day(after)), None);
        let and = |conditions: &[String]| -> String {
            conditions.iter().map(|c| format!(" AND {c}")).collect()
        };
        let last = if for_cache {
            format!(",\n  CAST(max(d.t_end) AS DATE) AS {}", quote_ident(LAST))
        } else {
            String::new()
        };
        // The window's bounds are computed once per cohort member: in the join's filter, an
        // interval added to every candidate pair's timestamp costs more than the join itself.
        // Only the cohorts in range join the activity: a four-week series joins four weeks of
        // members, not every entity's.
        // With integer keys in one process, one outer join keeps every member, and a period's
        // members and those with activity in their window are two distinct counts by bitmap.
        // Otherwise the members with activity come from an inner join, and the outer join
        // that keeps the others has no filter: the cohort is computed twice (DataFusion
        // inlines a CTE at each use), but DataFusion's sort-merge join, which a Ballista
        // cluster runs a large join as, fails an outer join whose filter reads a column the
        // inner side declares non-nullable (`Column 't' is declared as non-nullable but
        // contains null values`), and text keys counted distinct would group every pair.
        let counted = if one_join {
            format!(
                "per_period AS (
  SELECT {period} AS p, count(DISTINCT c.e) AS members, count(DISTINCT a.e) AS retained,
    max(c.t0) AS last_t0
  FROM cohort c LEFT JOIN activity a ON a.e = c.e AND a.t >= c.w0 AND a.t < c.w1
  GROUP BY {period}
)
SELECT u.p AS {period_col},
  CASE WHEN max(u.last_t0) + INTERVAL '{reach} days' <= max(d.t_end)
        AND CAST(u.p AS TIMESTAMP) + INTERVAL '{length}' <= max(d.t_end)
    THEN CAST(max(u.retained) AS DOUBLE) / CAST(max(u.members) AS DOUBLE)
  END AS {name}{last}
FROM per_period u CROSS JOIN data_end d
GROUP BY u.p",
                period_col = quote_ident(PERIOD),
                name = quote_ident(&metric.name),
            )
        } else {
            format!(
                "active AS (
  SELECT DISTINCT c.e FROM cohort c JOIN activity a
    ON a.e = c.e AND a.t >= c.w0 AND a.t < c.w1
),
users AS (
  SELECT c.e, c.t0, {period} AS p, r.e IS NOT NULL AS retained
  FROM cohort c LEFT JOIN active r ON r.e = c.e
)
SELECT u.p AS {period_col},
  CASE WHEN max(u.t0) + INTERVAL '{reach} days' <= max(d.t_end)
        AND CAST(u.p AS TIMESTAMP) + INTERVAL '{length}' <= max(d.t_end)
    THEN CAST(count(*) FILTER (WHERE u.retained) AS DOUBLE) / CAST(count(*) AS DOUBLE)
  END AS {name}{last}
FROM users u CROSS JOIN data_end d
GROUP BY u.p",
                period_col = quote_ident(PERIOD),
                name = quote_ident(&metric.name),
            )
        };
        let sql = format!(
            "WITH first_seen AS (
  SELECT {key} AS e, min({cohort_local}) AS t0 FROM {cohort_table}
  WHERE {entity} IS NOT NULL{cohort_filter} GROUP BY {key}
),
cohort AS (
  SELECT e, t0, t0 + INTERVAL '{after} days' AS w0, t0 + INTERVAL '{reach} days' AS w1
  FROM first_seen{cohort_range}
),
activity AS (
  SELECT {key} AS e, {activity_local} AS t FROM {activity_table}
  WHERE {entity} IS NOT NULL{activity_filter}{activity_range}
),
data_end AS (SELECT max({activity_local}) AS t_end FROM {activity_table}{end_range}),
{counted}",
            cohort_table = r.cohort.sql(),
            activity_table = r.activity.sql(),
            cohort_filter = filter(&r.cohort_filter)?,
            activity_filter = filter(&r.activity_filter)?,
            activity_range = and(&activity_range),
            end_range = where_clause(&end_range),
            cohort_range = where_clause(&in_range),
        );
        self.collect_part(
            sql,
            index,
            format!("{} and {}", r.cohort, r.activity),
            vec![metric.name.clone()],
        )
        .await
    }
}

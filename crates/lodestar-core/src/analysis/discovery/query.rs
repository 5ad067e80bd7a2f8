//! The engine side of discovery: resolving the request against the schemas, the one query
//! that counts users, and reading its rows back into [`Counts`].

use chrono::{Days, NaiveDateTime};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Int64Type, SchemaRef, TimeUnit, TimestampNanosecondType,
};
use datafusion::error::DataFusionError;

use super::columns::{
    TimeColumn, column_names, guess_time_column, require_column, text_times_error, time_column,
};
use super::stats::{Counts, candidates, cohort};
use super::{
    Cohort, DEFAULT_ACTIVITY_TABLE, DEFAULT_ENTITY, DateRange, Discovery, DiscoveryRequest,
    EVENT_COLUMNS, MAX_K_LIMIT, MinSupport, Onboarding, Setup, Span, Validation, table_ref,
    verdict,
};
use crate::project::error::{Error, Result, did_you_mean};
use crate::project::model::{TableRef, quote_ident};
use crate::query::engine::{Engine, is_parse_failure};
use crate::query::request::{Action, Field as RequestField, words};
use crate::query::sql::{self, local_time};

impl DateRange {
    /// An SQL condition on a local timestamp; `TRUE` when unbounded.
    fn condition(&self, column: &str) -> String {
        let mut parts = Vec::new();
        if let Some(from) = self.from {
            parts.push(format!("{column} >= {}", timestamp(from.into())));
        }
        if let Some(to) = self.to {
            let end = to + Days::new(1);
            parts.push(format!("{column} < {}", timestamp(end.into())));
        }
        if parts.is_empty() {
            "TRUE".into()
        } else {
            parts.join(" AND ")
        }
    }
}

impl Engine {
    /// Which early activities go with retention: see the module documentation.
    pub async fn discover(&self, request: &DiscoveryRequest) -> Result<Discovery> {
        if request.max_k > MAX_K_LIMIT {
            return Err(crate::query::bounds::OverCap {
                fields: vec![RequestField::MaxK],
                asked: format!("{} thresholds", request.max_k),
                cap: format!("at most {MAX_K_LIMIT}"),
                setting: None,
                hint: "test fewer thresholds: \"at least K times\" for K up to 5 or 10 is usual",
            }
            .into());
        }
        let validation = request.validate_on.unwrap_or_default();
        for (field, date) in [
            (RequestField::From, request.cohorts.from),
            (RequestField::To, request.cohorts.to),
            (RequestField::ValidateOn, validation.from),
            (RequestField::ValidateOn, validation.to),
        ] {
            if let Some(date) = date {
                crate::query::bounds::check_date(field, date)?;
            }
        }
        let setup = self.resolve(request).await?;
        let (training_range, validation_range) = split_ranges(request)?;
        if request.retained < request.within {
            return Err(Error::request_hint(
                format!(
                    "retention is judged from {} after onboarding, inside the first {} whose activities are counted",
                    request.retained, request.within
                ),
                words![
                    RequestField::Retained,
                    " must be at least ",
                    RequestField::Within,
                    ", or the early activity itself would count as retention"
                ],
            ));
        }
        if request.max_k == 0 || request.max_k > MAX_K_LIMIT {
            return Err(Error::request(format!(
                "the largest threshold must be between 1 and {MAX_K_LIMIT}, not {}",
                request.max_k
            )));
        }

        let tz = self.project().timezone;
        let activity_schema = self.schema_of(&setup.activity).await?;
        let activity_time = time_column(&activity_schema, &setup.activity, &setup.activity_time)?;
        let activity_local = local_time(&activity_time.name, activity_time.kind, tz);
        let data_end = self
            .data_end(&setup.activity, &activity_local, &activity_time)
            .await?;
        let empty = |cohort: DateRange| Cohort {
            range: cohort,
            ..Cohort::default()
        };
        let Some(end) = data_end else {
            return Ok(Discovery {
                setup,
                data_end: None,
                latest_onboarding: None,
                training: empty(training_range),
                validation: validation_range.map(empty),
                candidates: Vec::new(),
                below_support: Vec::new(),
            });
        };
        let horizon = Span {
            seconds: request.retained.seconds + request.window.map_or(0, Span::seconds),
        };
        let latest = end - horizon.delta();

        let sql = self
            .discovery_sql(&setup, training_range, validation_range, latest)
            .await?;
        tracing::debug!(%sql, "discovery");
        // The counts are held while they are ranked: accounted in the request's pool.
        let mut held = self.reserve("discovery");
        let batches = match self.plan(&sql).await {
            Ok(df) => self.collect_reserved(df, &mut held).await,
            Err(e) => Err(e),
        }
        .map_err(|e| self.query_error(e, &setup))?;
        let (training_counts, validation_counts) = read_counts(&batches, setup.max_k)?;
        let nobody = |c: &Counts| c.users + c.too_young == 0;
        if let Onboarding::Event(name) = &setup.onboarded
            && nobody(&training_counts)
            && nobody(&validation_counts)
        {
            self.check_event_exists(&setup, name, request.reveal_values)
                .await?;
        }

        let min_training = MinSupport::threshold(request.min_support, training_counts.users)
            .max(request.support_floor);
        let (mut ranked, below) = candidates(&training_counts, setup.max_k, min_training);
        let validation = validation_range.map(|range| {
            let min = MinSupport::threshold(request.min_support, validation_counts.users)
                .max(request.support_floor);
            for candidate in &mut ranked {
                let table = validation_counts.table(&candidate.activity, candidate.at_least);
                candidate.validation = Some(Validation {
                    table,
                    verdict: verdict(&candidate.table, &table, min),
                });
            }
            cohort(range, &validation_counts, min)
        });
        Ok(Discovery {
            training: cohort(training_range, &training_counts, min_training),
            validation,
            setup,
            data_end: Some(end),
            latest_onboarding: Some(latest),
            candidates: ranked,
            below_support: below,
        })
    }

    /// Fills in the request's defaults and checks every name against the schemas.
    async fn resolve(&self, request: &DiscoveryRequest) -> Result<Setup> {
        // What the request leaves out, the project's `discovery:` gives, then the guesses.
        let declared = &self.project().discovery;
        let activity = match (&request.activity, &declared.activity) {
            (Some(table), _) => table.clone(),
            (None, Some((table, _))) => table.clone(),
            (None, None) => self.default_activity_table()?,
        };
        let schema = self.schema_of(&activity).await?;
        let columns = column_names(&schema);
        let activity_time = match (&request.activity_time, &declared.activity) {
            (Some(name), _) => name.clone(),
            (None, Some((table, time))) if *table == activity => time.clone(),
            (None, _) => guess_time_column(&schema, &activity)?,
        };
        let entity = request
            .entity
            .clone()
            .or_else(|| declared.entity.clone())
            .unwrap_or_else(|| DEFAULT_ENTITY.to_string());
        for (what, name, field) in [
            (
                "time column",
                &activity_time,
                RequestField::Activity.set_to("SOURCE.TABLE.COLUMN"),
            ),
            (
                "entity column",
                &entity,
                RequestField::Entity.set_to("COLUMN"),
            ),
        ] {
            require_column(&columns, &activity, what, name, field)?;
        }
        let event_column = match request.event_column.as_ref().or(declared.event_column.as_ref()) {
            Some(name) => {
                require_column(
                    &columns,
                    &activity,
                    "event column",
                    name,
                    RequestField::EventColumn.set_to("COLUMN"),
                )?;
                name.clone()
            }
            None => EVENT_COLUMNS
                .iter()
                .find(|c| columns.contains(c))
                .map(|c| (*c).to_string())
                .ok_or_else(|| {
                    Error::request_hint(
                        format!(
                            "`{activity}` has none of the usual event-type columns ({}); its columns are: {}",
                            EVENT_COLUMNS.join(", "),
                            columns.join(", ")
                        ),
                        words![
                            "name the column holding the activity type with ",
                            RequestField::EventColumn.set_to("COLUMN")
                        ],
                    )
                })?,
        };
        if let Some(filter) = &request.filter {
            self.check_filter(filter, &activity, &columns).await?;
        }
        let onboarded_time = match &request.onboarded {
            Onboarding::Event(_) => None,
            Onboarding::Column { table, time } => {
                let cohort_schema = self.schema_of(table).await?;
                let cohort_columns = column_names(&cohort_schema);
                let time = match time {
                    Some(name) => name.clone(),
                    None => guess_time_column(&cohort_schema, table)?,
                };
                require_column(
                    &cohort_columns,
                    table,
                    "time column",
                    &time,
                    RequestField::Onboarded.set_to("SOURCE.TABLE.COLUMN"),
                )?;
                require_column(
                    &cohort_columns,
                    table,
                    "entity column",
                    &entity,
                    RequestField::Entity.set_to("COLUMN"),
                )?;
                time_column(&cohort_schema, table, &time)?;
                Some(time)
            }
        };
        Ok(Setup {
            onboarded: request.onboarded.clone(),
            onboarded_time,
            activity,
            activity_time,
            entity,
            event_column,
            filter: request.filter.clone(),
            within: request.within,
            retained: request.retained,
            window: request.window,
            max_k: request.max_k,
        })
    }

    fn default_activity_table(&self) -> Result<TableRef> {
        let found: Vec<TableRef> = self
            .project()
            .sources
            .keys()
            .filter(|source| {
                self.table_names(source)
                    .iter()
                    .any(|t| t == DEFAULT_ACTIVITY_TABLE)
            })
            .map(|source| table_ref(source, DEFAULT_ACTIVITY_TABLE))
            .collect();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::request_hint(
                format!(
                    "no source has a table called `{DEFAULT_ACTIVITY_TABLE}` to take activity from"
                ),
                words![
                    "name the activity table with ",
                    RequestField::Activity.set_to("SOURCE.TABLE.TIME_COLUMN"),
                    ", e.g. app.events.event_time"
                ],
            )),
            several => Err(Error::request_hint(
                format!(
                    "several sources have an `{DEFAULT_ACTIVITY_TABLE}` table: {}",
                    several
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                words![
                    "choose one with ",
                    RequestField::Activity.set_to("SOURCE.TABLE.TIME_COLUMN")
                ],
            )),
        }
    }

    async fn schema_of(&self, table: &TableRef) -> Result<SchemaRef> {
        self.table_schema(table).await.map_err(|message| {
            Error::request_hint(message, words![Action::ListTables, " lists the tables"])
        })
    }

    async fn check_filter(&self, filter: &str, table: &TableRef, columns: &[&str]) -> Result<()> {
        let expr = sql::parse_expr(filter).map_err(|e| {
            Error::request(format!(
                "the filter `{filter}` is not an SQL expression: {e}"
            ))
        })?;
        let names = sql::filter_columns(&expr)
            .map_err(|e| Error::request(format!("the filter `{filter}`: {e}")))?;
        for name in names {
            if !columns.contains(&name.as_str()) {
                let hint = did_you_mean(&name, columns.iter().copied()).unwrap_or_else(|| {
                    format!("the columns of `{table}` are: {}", columns.join(", "))
                });
                return Err(Error::request_hint(
                    format!("the filter names `{name}`, which is not a column of `{table}`"),
                    hint,
                ));
            }
        }
        self.plan(&format!("SELECT 1 FROM {} WHERE ({expr})", table.sql()))
            .await
            .map_err(|e| Error::request(format!("the filter `{filter}` does not compile: {e}")))?;
        Ok(())
    }

    /// When no one is onboarded by an event: an error if the event type does not exist.
    async fn check_event_exists(
        &self,
        setup: &Setup,
        name: &str,
        reveal_values: bool,
    ) -> Result<()> {
        let event = quote_ident(&setup.event_column);
        let sql = format!(
            "SELECT DISTINCT CAST({event} AS VARCHAR) AS kind FROM {} WHERE {event} IS NOT NULL ORDER BY kind LIMIT 1000",
            setup.activity.sql()
        );
        let batches = self.plan(&sql).await?.collect().await?;
        let mut kinds = Vec::new();
        for batch in &batches {
            let column = cast(batch.column(0), &DataType::Utf8)?;
            let column = column.as_string::<i32>();
            kinds.extend((0..column.len()).map(|i| column.value(i).to_string()));
        }
        if kinds.iter().any(|k| k == name) {
            return Ok(());
        }
        if !reveal_values {
            return Err(Error::request_hint(
                format!(
                    "no one in `{}` was onboarded by a `{name}` event",
                    setup.activity
                ),
                "check the event type's spelling in the project's `discovery.onboarding`",
            ));
        }
        let hint = did_you_mean(name, kinds.iter().map(String::as_str)).unwrap_or_else(|| {
            let shown: Vec<&str> = kinds.iter().take(20).map(String::as_str).collect();
            format!(
                "the event types of `{}.{}` include: {}",
                setup.activity,
                setup.event_column,
                shown.join(", ")
            )
        });
        Err(Error::request_hint(
            format!(
                "no `{name}` event in `{}` (column `{}`) to onboard users with",
                setup.activity, setup.event_column
            ),
            format!("{hint}; or onboard by a cohort table's column with SOURCE.TABLE.COLUMN"),
        ))
    }

    /// The last local time with activity.
    async fn data_end(
        &self,
        table: &TableRef,
        local: &str,
        time: &TimeColumn,
    ) -> Result<Option<NaiveDateTime>> {
        let sql = format!(
            "SELECT CAST(max({local}) AS TIMESTAMP) FROM {}",
            table.sql()
        );
        let batches = match self.plan(&sql).await {
            Ok(df) => df.collect().await,
            Err(e) => Err(e),
        }
        .map_err(|e| text_times_error(e, table, time))?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let column = cast(
            batch.column(0),
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )?;
        let values = column.as_primitive::<TimestampNanosecondType>();
        Ok(values
            .is_valid(0)
            .then(|| chrono::DateTime::from_timestamp_nanos(values.value(0)).naive_utc()))
    }

    /// The one query: per cohort part, activity, capped count and retained flag, the number
    /// of users; each user also counted once (`users`) in whatever row comes first for them.
    async fn discovery_sql(
        &self,
        setup: &Setup,
        training: DateRange,
        validation: Option<DateRange>,
        latest: NaiveDateTime,
    ) -> Result<String> {
        let tz = self.project().timezone;
        let activity_schema = self.schema_of(&setup.activity).await?;
        let act_time = time_column(&activity_schema, &setup.activity, &setup.activity_time)?;
        let entity = quote_ident(&setup.entity);
        let event = quote_ident(&setup.event_column);
        let act_entity_type = activity_schema
            .field_with_name(&setup.entity)
            .map(|f| f.data_type().clone())
            .map_err(|e| Error::DataFusion(Box::new(e.into())))?;

        let (onboarded, onboarding_event) = match &setup.onboarded {
            Onboarding::Event(name) => {
                let local = local_time(&act_time.name, act_time.kind, tz);
                (
                    format!(
                        "SELECT {entity} AS e, min({local}) AS t0 FROM {} WHERE {entity} IS NOT NULL AND CAST({event} AS VARCHAR) = {} GROUP BY {entity}",
                        setup.activity.sql(),
                        string_literal(name)
                    ),
                    Some(name.as_str()),
                )
            }
            Onboarding::Column { table, .. } => {
                let schema = self.schema_of(table).await?;
                let time_name = setup.onboarded_time.as_deref().unwrap_or_default();
                let time = time_column(&schema, table, time_name)?;
                let local = local_time(&time.name, time.kind, tz);
                let cohort_entity_type = schema
                    .field_with_name(&setup.entity)
                    .map(|f| f.data_type().clone())
                    .map_err(|e| Error::DataFusion(Box::new(e.into())))?;
                // Join keys of different types (text ids against numbers) meet as text.
                let key = if cohort_entity_type == act_entity_type {
                    entity.clone()
                } else {
                    format!("CAST({entity} AS VARCHAR)")
                };
                (
                    format!(
                        "SELECT {key} AS e, min({local}) AS t0 FROM {} WHERE {entity} IS NOT NULL GROUP BY {key}",
                        table.sql()
                    ),
                    None,
                )
            }
        };
        let activity_key = match &setup.onboarded {
            Onboarding::Column { table, .. } => {
                let schema = self.schema_of(table).await?;
                let same = schema
                    .field_with_name(&setup.entity)
                    .is_ok_and(|f| *f.data_type() == act_entity_type);
                if same {
                    entity.clone()
                } else {
                    format!("CAST({entity} AS VARCHAR)")
                }
            }
            Onboarding::Event(_) => entity.clone(),
        };

        let local = local_time(&act_time.name, act_time.kind, tz);
        let filter = match &setup.filter {
            Some(f) => format!(" AND ({})", sql::parse_expr(f).map_err(Error::request)?),
            None => String::new(),
        };
        let part = match validation {
            Some(v) => format!(
                "CASE WHEN {} THEN 'train' WHEN {} THEN 'validate' END",
                training.condition("t0"),
                v.condition("t0")
            ),
            None => format!("CASE WHEN {} THEN 'train' END", training.condition("t0")),
        };
        // The windows' bounds are computed once per member (cohort `x`, `y0`, `y1`): added to
        // `t0` in the join's filter, they would be computed for every activity row. Activity
        // is matched by an inner join and the members without any kept by an outer join
        // without a filter, as the retention metric's query does (a sort-merge join on a
        // cluster fails an outer join whose filter reads the inner side's non-null columns).
        let x = setup.within.interval();
        let y = setup.retained.interval();
        let (late, late_end) = match setup.window {
            Some(w) => {
                let end = Span {
                    seconds: setup.retained.seconds + w.seconds,
                };
                (
                    "a.t >= c.y0 AND a.t < c.y1",
                    format!("t0 + {}", end.interval()),
                )
            }
            // Not compared.
            None => ("a.t >= c.y0", "t0".to_string()),
        };
        // The onboarding event itself is not an activity; its repeats after it are.
        let early = match onboarding_event {
            Some(name) => format!(
                "a.t < c.x AND ((a.kind IS DISTINCT FROM {0}) OR a.t > c.t0)",
                string_literal(name)
            ),
            None => "a.t < c.x".to_string(),
        };
        let max_k = setup.max_k;
        Ok(format!(
            "WITH onboarded AS ({onboarded}),
cohort AS (
  SELECT e, t0, t0 + {x} AS x, t0 + {y} AS y0, {late_end} AS y1,
    {part} AS part, t0 > {latest} AS young
  FROM onboarded
),
activity AS (
  SELECT {activity_key} AS e, CAST({event} AS VARCHAR) AS kind, {local} AS t
  FROM {table} WHERE {entity} IS NOT NULL{filter}
),
matched AS (
  SELECT c.e, a.kind,
    count(a.t) FILTER (WHERE {early}) AS n,
    bool_or({late}) AS late
  FROM cohort c JOIN activity a
    ON a.e = c.e AND NOT c.young AND a.t >= c.t0 AND (({early}) OR ({late}))
  WHERE c.part IS NOT NULL
  GROUP BY c.e, a.kind
),
per_kind AS (
  SELECT c.part, c.young, c.e, m.kind, coalesce(m.n, 0) AS n, m.late
  FROM cohort c LEFT JOIN matched m ON m.e = c.e
  WHERE c.part IS NOT NULL
),
per_user AS (
  SELECT part, young, kind, n,
    coalesce(bool_or(late) OVER (PARTITION BY e), false) AS retained,
    row_number() OVER (PARTITION BY e ORDER BY kind) = 1 AS first
  FROM per_kind
)
SELECT part, young, kind, CAST(least(n, {max_k}) AS BIGINT) AS n, retained,
  count(*) FILTER (WHERE n > 0) AS doers,
  count(*) FILTER (WHERE first) AS users
FROM per_user
GROUP BY part, young, kind, least(n, {max_k}), retained",
            latest = timestamp(latest),
            table = setup.activity.sql(),
        ))
    }

    fn query_error(&self, e: DataFusionError, setup: &Setup) -> Error {
        if is_parse_failure(&e) {
            Error::request_hint(
                format!(
                    "a time column holds text that is not a timestamp ({}.{} or the onboarding column): {e}",
                    setup.activity, setup.activity_time
                ),
                "time columns must hold ISO-8601 timestamps such as 2026-05-04T10:00:00Z, or be timestamp or date columns",
            )
        } else {
            e.into()
        }
    }
}

/// The training range, defaulting to the cohorts before validation; the two must not overlap.
fn split_ranges(request: &DiscoveryRequest) -> Result<(DateRange, Option<DateRange>)> {
    let Some(validation) = request.validate_on else {
        return Ok((request.cohorts, None));
    };
    let mut training = request.cohorts;
    if training == DateRange::default() {
        let Some(start) = validation.from else {
            return Err(Error::request_hint(
                format!(
                    "the validation cohorts `{validation}` have no start, so the cohorts before them are not defined"
                ),
                words![
                    "give ",
                    RequestField::ValidateOn,
                    " a start date, or name the training cohorts with ",
                    RequestField::From,
                    " and ",
                    RequestField::To
                ],
            ));
        };
        training.to = start.pred_opt();
    }
    if training.overlaps(&validation) {
        return Err(Error::request_hint(
            format!(
                "the training cohorts ({training}) overlap the validation cohorts ({validation})"
            ),
            "validation checks candidates on users they were not found on: choose ranges that do not overlap",
        ));
    }
    Ok((training, Some(validation)))
}

/// Reads the query's rows into the training and validation counts.
fn read_counts(batches: &[RecordBatch], max_k: u32) -> Result<(Counts, Counts)> {
    let mut training = Counts::default();
    let mut validation = Counts::default();
    for batch in batches {
        let text = |i: usize| cast(batch.column(i), &DataType::Utf8);
        let int = |i: usize| cast(batch.column(i), &DataType::Int64);
        let (part, kind) = (text(0)?, text(2)?);
        let (part, kind) = (part.as_string::<i32>(), kind.as_string::<i32>());
        let young = batch.column(1).as_boolean();
        let retained = batch.column(4).as_boolean();
        let (n, doers, users) = (int(3)?, int(5)?, int(6)?);
        let (n, doers, users) = (
            n.as_primitive::<Int64Type>(),
            doers.as_primitive::<Int64Type>(),
            users.as_primitive::<Int64Type>(),
        );
        for row in 0..batch.num_rows() {
            let counts = match part.value(row) {
                "validate" => &mut validation,
                _ => &mut training,
            };
            let users = u64::try_from(users.value(row)).unwrap_or(0);
            let is_retained = retained.is_valid(row) && retained.value(row);
            if young.value(row) {
                counts.too_young += users;
                continue;
            }
            counts.users += users;
            if is_retained {
                counts.retained += users;
            }
            let doers = u64::try_from(doers.value(row)).unwrap_or(0);
            let count = if n.is_valid(row) { n.value(row) } else { 0 };
            if kind.is_valid(row) && doers > 0 && count > 0 {
                let count = u32::try_from(count).unwrap_or(max_k);
                counts.add(kind.value(row), count, is_retained, doers, max_k);
            }
        }
    }
    Ok((training, validation))
}

fn timestamp(t: NaiveDateTime) -> String {
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.f"))
}

pub(crate) fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn validation_defaults_to_the_cohorts_before_it() {
        let mut request = DiscoveryRequest::new(Onboarding::Event("signup".into()));
        request.validate_on = Some("2026-07-01..2026-07-31".parse().unwrap());
        let (training, _) = split_ranges(&request).unwrap();
        assert_eq!(training.to, NaiveDate::from_ymd_opt(2026, 6, 30));
        request.cohorts = "2026-06-01..2026-07-10".parse().unwrap();
        assert!(split_ranges(&request).is_err());
    }
}

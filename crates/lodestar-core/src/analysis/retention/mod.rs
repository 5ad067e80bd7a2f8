//! Retention and cohorts: of the entities whose cohort event fell in a period, how many came
//! back N periods later.
//!
//! - Cohorts are cut at day, week or month grain by each entity's first cohort event.
//! - Period N of an entity is counted either in **rolling** windows from its own cohort event
//!   (24 hours for days, 7 × 24 hours for weeks, 30 × 24 hours for months) or in **calendar**
//!   periods (day, week, month boundaries in the project's timezone).
//! - "On" N counts entities active in period N; "on or after" N counts those active in N or
//!   any later period; brackets `[a, b]` count those active in any period from a to b.
//! - A cohort too young for period N to have ended by the end of the data is left out of
//!   that column (null), not counted as churned.
//! - With a `value` aggregate (such as `sum(amount)`), the table also sums it per period:
//!   revenue retention, its rate relative to period 0.

mod metric;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{Days, Months, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch,
    StringArray,
};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Float64Type, Int64Type, Schema};

use crate::project::error::{Error, Result};
use crate::project::model::{Grain, quote_ident};
use crate::query::engine::Engine;
use crate::query::request::Field as RequestField;
use crate::query::sql::{self, TimeKind, local_time, period_of, timestamp_literal};

pub use crate::query::request::EventSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DayMode {
    /// Windows of 24 hours (× 7, × 30) from each entity's cohort event.
    #[default]
    Rolling,
    /// Calendar periods in the project's timezone.
    Calendar,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Active in period N.
    #[default]
    On,
    /// Active in period N or later.
    OnOrAfter,
    /// Active in any period of each bracket `[from, to]`.
    Brackets(Vec<(u32, u32)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRequest {
    pub cohort: EventSpec,
    pub activity: EventSpec,
    pub grain: Grain,
    pub mode: Mode,
    pub days: DayMode,
    /// Periods 0..=N to show; `None`: as many as the data reaches.
    pub periods: Option<u32>,
    /// An aggregate over activity rows (revenue retention), besides the entity counts.
    pub value: Option<String>,
    /// Cohorts from and to (inclusive dates).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// One cell of the cohort triangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub cohort: NaiveDate,
    /// `N` for "on" and "on or after", the bracket's label otherwise.
    pub period: String,
    pub cohort_size: i64,
    /// `false`: the cohort is too young for this period to have ended.
    pub eligible: bool,
    pub retained: i64,
    pub rate: Option<f64>,
    pub value: Option<f64>,
    /// `value` relative to the cohort's period-0 value.
    pub value_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub grain: Grain,
    pub columns: Vec<String>,
    pub cells: Vec<Cell>,
    /// Per cohort: the share of entities active again after their cohort event (any time
    /// later); with the same event as cohort and activity, the repeat purchase rate.
    pub repeat_rates: Vec<(NaiveDate, f64)>,
}

/// An entity's cohort: when it started, and the periods it was active in.
type Activity = BTreeMap<NaiveDate, CohortRows>;

#[derive(Debug, Default)]
struct CohortRows {
    size: i64,
    /// The latest cohort event in the cohort (for rolling eligibility).
    last_start: Option<NaiveDateTime>,
    /// Entity → the periods it was active in.
    active: HashMap<String, Vec<u32>>,
    /// Period → the value aggregate.
    values: HashMap<u32, f64>,
    repeaters: i64,
}

impl Engine {
    pub async fn retention(&self, request: &RetentionRequest) -> Result<Retention> {
        if !matches!(request.grain, Grain::Day | Grain::Week | Grain::Month) {
            return Err(Error::request(format!(
                "retention is cut by day, week or month, not by {}",
                request.grain
            )));
        }
        self.check_retention_bounds(request)?;
        let week_start = self.project().week_start;
        let cohort_time = self.event_time(&request.cohort).await?;
        let activity_time = self.event_time(&request.activity).await?;
        let cohort_period = period_of("c.\"__start\"", request.grain, week_start);
        let mut cohort_conditions: Vec<String> = request
            .cohort
            .filter
            .iter()
            .map(|f| parsed(f, "cohort filter"))
            .collect::<Result<_>>()?;
        let activity_conditions: Vec<String> = request
            .activity
            .filter
            .iter()
            .map(|f| parsed(f, "activity filter"))
            .collect::<Result<_>>()?;
        let mut outer = Vec::new();
        if let Some(from) = request.from {
            outer.push(format!("c.\"__start\" >= {}", timestamp_literal(from)));
        }
        if let Some(to) = request.to {
            outer.push(format!(
                "c.\"__start\" < {}",
                timestamp_literal(to + Days::new(1))
            ));
        }
        cohort_conditions.push(format!(
            "{} IS NOT NULL",
            quote_ident(&request.cohort.entity)
        ));
        let cohorts = format!(
            "SELECT CAST({} AS VARCHAR) AS \"__e\", min({cohort_time}) AS \"__start\" FROM {}{} GROUP BY 1",
            quote_ident(&request.cohort.entity),
            request.cohort.table.sql(),
            where_clause(&cohort_conditions),
        );
        let cohorts = format!(
            "SELECT c.\"__e\", c.\"__start\", {cohort_period} AS \"__cohort\" FROM ({cohorts}) AS c{}",
            where_clause(&outer)
        );
        let activity = format!(
            "SELECT *, CAST({} AS VARCHAR) AS \"__ae\", {activity_time} AS \"__at\" FROM {}{}",
            quote_ident(&request.activity.entity),
            request.activity.table.sql(),
            where_clause(&activity_conditions),
        );
        let n = self.period_number(request);
        let joined = format!(
            "FROM ({cohorts}) AS c JOIN ({activity}) AS a ON a.\"__ae\" = c.\"__e\" AND a.\"__at\" >= c.\"__start\""
        );
        // Everything this request holds outside DataFusion's operators (the rows it reads
        // back, the per-entity activity) is accounted in the request's memory pool.
        let reservation = std::sync::Mutex::new(self.reserve("retention"));
        let query = |sql: String| {
            let reservation = &reservation;
            async move {
                let df = self.plan(&sql).await.map_err(|e| {
                    Error::request_hint(
                        format!("the retention query does not compile: {e}"),
                        "check the tables, columns and filters given",
                    )
                })?;
                let mut held = self.reserve("retention query");
                let batches = self.collect_reserved(df, &mut held).await?;
                reservation
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .try_grow(held.size())?;
                Ok::<_, Error>(batches)
            }
        };

        let mut by_cohort: Activity = BTreeMap::new();
        // Cohort sizes, and the latest start in each (rolling eligibility).
        for batch in query(format!(
            "SELECT \"__cohort\", count(*), max(\"__start\") FROM ({cohorts}) AS c GROUP BY 1"
        ))
        .await?
        {
            let cohort = batch.column(0).as_primitive::<Date32Type>();
            let size = batch.column(1).as_primitive::<Int64Type>();
            let last = datafusion::arrow::compute::cast(
                batch.column(2),
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
            )?;
            let last =
                last.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
            for i in 0..batch.num_rows() {
                let rows = by_cohort.entry(date(cohort.value(i))).or_default();
                rows.size = size.value(i);
                rows.last_start = last.is_valid(i).then(|| micros(last.value(i))).flatten();
            }
        }
        // Each entity's active periods.
        for batch in query(format!(
            "SELECT c.\"__cohort\", c.\"__e\", {n} AS \"__n\" {joined} GROUP BY 1, 2, 3"
        ))
        .await?
        {
            let cohort = batch.column(0).as_primitive::<Date32Type>();
            let entity = datafusion::arrow::compute::cast(batch.column(1), &DataType::Utf8)?;
            let entity = entity.as_string::<i32>();
            let n = datafusion::arrow::compute::cast(batch.column(2), &DataType::Int64)?;
            let n = n.as_primitive::<Int64Type>();
            // The map's keys and period lists, roughly: the entity's text, a map slot, a period.
            let bytes: usize = (0..batch.num_rows())
                .map(|i| entity.value(i).len() + 64)
                .sum();
            reservation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .try_grow(bytes)?;
            // A cooperative point: a request past its time limit is dropped here.
            tokio::task::yield_now().await;
            for i in 0..batch.num_rows() {
                let Ok(period) = u32::try_from(n.value(i)) else {
                    continue;
                };
                by_cohort
                    .entry(date(cohort.value(i)))
                    .or_default()
                    .active
                    .entry(entity.value(i).to_string())
                    .or_default()
                    .push(period);
            }
        }
        if let Some(value) = &request.value {
            let value = parsed(value, "value")?;
            for batch in query(format!(
                "SELECT c.\"__cohort\", {n} AS \"__n\", CAST({value} AS DOUBLE) {joined} GROUP BY 1, 2"
            ))
            .await?
            {
                let cohort = batch.column(0).as_primitive::<Date32Type>();
                let n = datafusion::arrow::compute::cast(batch.column(1), &DataType::Int64)?;
                let n = n.as_primitive::<Int64Type>();
                let v = batch.column(2).as_primitive::<Float64Type>();
                for i in 0..batch.num_rows() {
                    if let (Ok(period), true) = (u32::try_from(n.value(i)), v.is_valid(i)) {
                        by_cohort.entry(date(cohort.value(i))).or_default().values.insert(period, v.value(i));
                    }
                }
            }
        }
        for batch in query(format!(
            "SELECT c.\"__cohort\", count(DISTINCT c.\"__e\") FROM ({cohorts}) AS c JOIN ({activity}) AS a ON a.\"__ae\" = c.\"__e\" AND a.\"__at\" > c.\"__start\" GROUP BY 1"
        ))
        .await?
        {
            let cohort = batch.column(0).as_primitive::<Date32Type>();
            let count = batch.column(1).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                by_cohort.entry(date(cohort.value(i))).or_default().repeaters = count.value(i);
            }
        }
        // The end of the data: periods ending after it have not been seen whole.
        let data_end = query(format!(
            "SELECT max({activity_time}) FROM {}{}",
            request.activity.table.sql(),
            where_clause(&activity_conditions)
        ))
        .await?
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            let column = datafusion::arrow::compute::cast(
                b.column(0),
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
            )
            .ok()?;
            let column =
                column.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
            column
                .is_valid(0)
                .then(|| micros(column.value(0)))
                .flatten()
        });
        let columns = columns(request, &by_cohort, self.bounds().max_periods);
        self.bounds()
            .check_cells(by_cohort.len() as u64, columns.len() as u64)?;
        reservation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_grow(by_cohort.len() * columns.len() * std::mem::size_of::<Cell>())?;
        tokio::task::yield_now().await;
        Ok(assemble(request, columns, &by_cohort, data_end))
    }

    /// The request's own caps, checked before any query: its dates, lists, periods, and the
    /// cells it implies when its cohorts and periods are both given.
    fn check_retention_bounds(&self, request: &RetentionRequest) -> Result<()> {
        let bounds = self.bounds();
        for (field, date) in [
            (RequestField::From, request.from),
            (RequestField::To, request.to),
        ] {
            if let Some(date) = date {
                crate::query::bounds::check_date(field, date)?;
            }
        }
        let columns = match (&request.mode, request.periods) {
            (Mode::Brackets(brackets), _) => {
                bounds.check_list(RequestField::Brackets, brackets.len())?;
                let end = brackets.iter().map(|(_, b)| *b).max().unwrap_or(0);
                bounds.check_periods(
                    vec![RequestField::Brackets],
                    u64::from(end) + 1,
                    request.grain,
                )?;
                Some(brackets.len() as u64)
            }
            (_, Some(periods)) => {
                bounds.check_periods(
                    vec![RequestField::Periods],
                    u64::from(periods) + 1,
                    request.grain,
                )?;
                Some(u64::from(periods) + 1)
            }
            (_, None) => None,
        };
        if let (Some(from), Some(to)) = (request.from, request.to) {
            let cohorts = crate::query::bounds::periods_between(from, to, request.grain);
            bounds.check_periods(
                vec![RequestField::From, RequestField::To, RequestField::Grain],
                cohorts,
                request.grain,
            )?;
            if let Some(columns) = columns {
                bounds.check_cells(cohorts, columns)?;
            }
        }
        Ok(())
    }

    /// The cohort and activity the project's `discovery:` declares for the onboarding named
    /// `name`: its cohort table's column, or its first event of that type in the activity
    /// table; the activity is the declared activity table. `None` when the project declares
    /// no such onboarding.
    pub async fn declared_retention(&self, name: &str) -> Result<Option<(EventSpec, EventSpec)>> {
        let declared = &self.project().discovery;
        let Some(onboarding) = declared.onboarding.get(name) else {
            return Ok(None);
        };
        let Some((table, time)) = declared.activity.clone() else {
            return Err(Error::request_hint(
                format!(
                    "the project declares no activity table for onboarding `{name}`'s retention"
                ),
                "add `activity: SOURCE.TABLE.TIME_COLUMN` under `discovery:` in the project file",
            ));
        };
        let entity = declared
            .entity
            .clone()
            .unwrap_or_else(|| crate::project::model::DEFAULT_ENTITY.to_string());
        let activity = EventSpec {
            table,
            time,
            entity: entity.clone(),
            filter: None,
        };
        let cohort = match onboarding {
            crate::project::model::OnboardingDef::Column { table, time } => EventSpec {
                table: table.clone(),
                time: time.clone(),
                entity,
                filter: None,
            },
            crate::project::model::OnboardingDef::Event(kind) => {
                let column = match &declared.event_column {
                    Some(column) => column.clone(),
                    None => {
                        let schema = self
                            .table_schema(&activity.table)
                            .await
                            .map_err(Error::request)?;
                        crate::analysis::discovery::EVENT_COLUMNS
                            .iter()
                            .find(|c| schema.field_with_name(c).is_ok())
                            .map(|c| (*c).to_string())
                            .ok_or_else(|| {
                                Error::request_hint(
                                    format!(
                                        "`{}` has none of the usual event-type columns ({})",
                                        activity.table,
                                        crate::analysis::discovery::EVENT_COLUMNS.join(", ")
                                    ),
                                    "name it with `event_column:` under `discovery:`",
                                )
                            })?
                    }
                };
                EventSpec {
                    filter: Some(format!(
                        "{} = {}",
                        quote_ident(&column),
                        crate::analysis::discovery::string_literal(kind)
                    )),
                    ..activity.clone()
                }
            }
        };
        Ok(Some((cohort, activity)))
    }

    /// The time column as local wall-clock time, checked.
    async fn event_time(&self, spec: &EventSpec) -> Result<String> {
        let schema = self
            .table_schema(&spec.table)
            .await
            .map_err(Error::request)?;
        for column in [&spec.time, &spec.entity] {
            if schema.field_with_name(column).is_err() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let hint = crate::project::error::did_you_mean(column, names.iter().copied())
                    .unwrap_or_else(|| format!("its columns are: {}", names.join(", ")));
                return Err(Error::request_hint(
                    format!("`{column}` is not a column of `{}`", spec.table),
                    hint,
                ));
            }
        }
        let field = schema.field_with_name(&spec.time).expect("checked above");
        let kind = TimeKind::of(field.data_type()).ok_or_else(|| {
            Error::request(format!(
                "`{}` of `{}` is not a timestamp, date or text column",
                spec.time, spec.table
            ))
        })?;
        Ok(local_time(&spec.time, kind, self.project().timezone))
    }

    /// SQL for the period number of activity `a` relative to cohort event `c`.
    fn period_number(&self, request: &RetentionRequest) -> String {
        let week_start = self.project().week_start;
        let (start, at) = ("c.\"__start\"", "a.\"__at\"");
        match request.days {
            DayMode::Rolling => {
                let seconds = match request.grain {
                    Grain::Day => 86_400,
                    Grain::Week => 7 * 86_400,
                    _ => 30 * 86_400,
                };
                format!(
                    "CAST(floor((to_unixtime({at}) - to_unixtime({start})) / {seconds}.0) AS BIGINT)"
                )
            }
            DayMode::Calendar => match request.grain {
                Grain::Month => format!(
                    "CAST((date_part('year', {at}) * 12 + date_part('month', {at})) - (date_part('year', {start}) * 12 + date_part('month', {start})) AS BIGINT)"
                ),
                grain => {
                    let days = if grain == Grain::Week { 7 } else { 1 };
                    let (pa, pc) = (
                        period_of(at, grain, week_start),
                        period_of(start, grain, week_start),
                    );
                    format!(
                        "CAST(round((to_unixtime(CAST({pa} AS TIMESTAMP)) - to_unixtime(CAST({pc} AS TIMESTAMP))) / {}.0) AS BIGINT)",
                        days * 86_400
                    )
                }
            },
        }
    }
}

fn parsed(fragment: &str, what: &str) -> Result<String> {
    sql::parse_expr(fragment)
        .map(|e| format!("({e})"))
        .map_err(|e| {
            Error::request(format!(
                "the {what} `{fragment}` is not an SQL expression: {e}"
            ))
        })
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

fn date(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
        + chrono::TimeDelta::days(i64::from(days))
}

fn micros(us: i64) -> Option<NaiveDateTime> {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.naive_utc())
}

/// The end (exclusive) of period `n` of a cohort, for eligibility.
fn period_end(
    request: &RetentionRequest,
    cohort: NaiveDate,
    rows: &CohortRows,
    n: u32,
) -> Option<NaiveDateTime> {
    let periods = n + 1;
    match request.days {
        DayMode::Rolling => {
            let days = match request.grain {
                Grain::Day => 1,
                Grain::Week => 7,
                _ => 30,
            } * u64::from(periods);
            rows.last_start.map(|s| s + Days::new(days))
        }
        DayMode::Calendar => {
            let start = cohort.and_hms_opt(0, 0, 0)?;
            Some(match request.grain {
                Grain::Day => start + Days::new(u64::from(periods)),
                Grain::Week => start + Days::new(7 * u64::from(periods)),
                _ => start.checked_add_months(Months::new(periods))?,
            })
        }
    }
}

/// The table's columns: `(label, first period, last period)`. Without `periods`, as far as
/// the data reaches, up to `max_periods` columns.
fn columns(
    request: &RetentionRequest,
    by_cohort: &Activity,
    max_periods: u32,
) -> Vec<(String, u32, u32)> {
    match &request.mode {
        Mode::On | Mode::OnOrAfter => {
            let last = request.periods.unwrap_or_else(|| {
                by_cohort
                    .values()
                    .flat_map(|c| c.active.values().flatten())
                    .copied()
                    .max()
                    .unwrap_or(0)
                    .min(max_periods.saturating_sub(1))
            });
            (0..=last).map(|n| (n.to_string(), n, n)).collect()
        }
        Mode::Brackets(brackets) => brackets
            .iter()
            .map(|(a, b)| (format!("{a}-{b}"), *a, *b))
            .collect(),
    }
}

/// The cohort triangle from the per-entity activity: for each cohort, one pass over its
/// entities and one over its columns.
fn assemble(
    request: &RetentionRequest,
    columns: Vec<(String, u32, u32)>,
    by_cohort: &Activity,
    data_end: Option<NaiveDateTime>,
) -> Retention {
    let mut cells = Vec::with_capacity(by_cohort.len() * columns.len());
    let mut repeat_rates = Vec::new();
    for (cohort, rows) in by_cohort {
        if rows.size == 0 {
            continue;
        }
        repeat_rates.push((*cohort, rows.repeaters as f64 / rows.size as f64));
        let base_value = rows.values.get(&0).copied();
        let retained = retained_per_column(&request.mode, &columns, rows);
        let values = request
            .value
            .as_ref()
            .map(|_| values_per_column(&request.mode, &columns, rows));
        for (i, (label, _, to)) in columns.iter().enumerate() {
            let eligible = match (period_end(request, *cohort, rows, *to), data_end) {
                (Some(end), Some(data_end)) => end <= data_end,
                _ => false,
            };
            let retained = retained[i];
            let value = values.as_ref().map(|v| v[i]);
            cells.push(Cell {
                cohort: *cohort,
                period: label.clone(),
                cohort_size: rows.size,
                eligible,
                retained: if eligible { retained } else { 0 },
                rate: eligible.then(|| retained as f64 / rows.size as f64),
                value: if eligible { value } else { None },
                value_rate: match (eligible, value, base_value) {
                    (true, Some(v), Some(b)) if b != 0.0 => Some(v / b),
                    _ => None,
                },
            });
        }
    }
    Retention {
        grain: request.grain,
        columns: columns.into_iter().map(|(l, _, _)| l).collect(),
        cells,
        repeat_rates,
    }
}

/// Per column, the entities of a cohort active in it: "on" counts each entity in each of its
/// periods, "on or after" in every column up to its last period, brackets in each bracket
/// one of its periods falls in.
fn retained_per_column(mode: &Mode, columns: &[(String, u32, u32)], rows: &CohortRows) -> Vec<i64> {
    let mut counts = vec![0i64; columns.len()];
    let Some(last) = columns.len().checked_sub(1) else {
        return counts;
    };
    match mode {
        Mode::On => {
            let mut seen = vec![u32::MAX; columns.len()];
            for (entity, periods) in rows.active.values().enumerate() {
                let entity = u32::try_from(entity).unwrap_or(u32::MAX);
                for &n in periods {
                    let Some(slot) = usize::try_from(n).ok().filter(|&n| n <= last) else {
                        continue;
                    };
                    // Each entity once per column, however many rows it has there.
                    if seen[slot] != entity {
                        seen[slot] = entity;
                        counts[slot] += 1;
                    }
                }
            }
        }
        Mode::OnOrAfter => {
            for periods in rows.active.values() {
                if let Some(&latest) = periods.iter().max() {
                    let slot = usize::try_from(latest).map_or(last, |n| n.min(last));
                    counts[slot] += 1;
                }
            }
            for i in (0..last).rev() {
                counts[i] += counts[i + 1];
            }
        }
        Mode::Brackets(_) => {
            for periods in rows.active.values() {
                for (count, (_, from, to)) in counts.iter_mut().zip(columns) {
                    if periods.iter().any(|n| n >= from && n <= to) {
                        *count += 1;
                    }
                }
            }
        }
    }
    counts
}

/// Per column, the sum of the value aggregate over the periods the column covers.
fn values_per_column(mode: &Mode, columns: &[(String, u32, u32)], rows: &CohortRows) -> Vec<f64> {
    let mut sums = vec![0.0; columns.len()];
    let Some(last) = columns.len().checked_sub(1) else {
        return sums;
    };
    match mode {
        Mode::On => {
            for (&n, v) in &rows.values {
                if let Some(slot) = usize::try_from(n).ok().filter(|&n| n <= last) {
                    sums[slot] += v;
                }
            }
        }
        Mode::OnOrAfter => {
            for (&n, v) in &rows.values {
                sums[usize::try_from(n).map_or(last, |n| n.min(last))] += v;
            }
            for i in (0..last).rev() {
                sums[i] += sums[i + 1];
            }
        }
        Mode::Brackets(_) => {
            for (sum, (_, from, to)) in sums.iter_mut().zip(columns) {
                *sum = rows
                    .values
                    .iter()
                    .filter(|(n, _)| *n >= from && *n <= to)
                    .map(|(_, v)| v)
                    .sum();
            }
        }
    }
    sums
}

impl Retention {
    /// The triangle in long form: `cohort`, `period`, `cohort_size`, `eligible`, `retained`,
    /// `rate`, `value`, `value_rate`, `repeat_rate`.
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
        let days = |d: NaiveDate| (d - epoch).num_days() as i32;
        let repeat: HashMap<NaiveDate, f64> = self.repeat_rates.iter().copied().collect();
        let schema = Schema::new(vec![
            Field::new("cohort", DataType::Date32, false),
            Field::new("period", DataType::Utf8, false),
            Field::new("cohort_size", DataType::Int64, false),
            Field::new("eligible", DataType::Boolean, false),
            Field::new("retained", DataType::Int64, true),
            Field::new("rate", DataType::Float64, true),
            Field::new("value", DataType::Float64, true),
            Field::new("value_rate", DataType::Float64, true),
            Field::new("repeat_rate", DataType::Float64, true),
        ]);
        let c = &self.cells;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from_iter_values(
                c.iter().map(|x| days(x.cohort)),
            )),
            Arc::new(StringArray::from_iter_values(
                c.iter().map(|x| x.period.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                c.iter().map(|x| x.cohort_size),
            )),
            Arc::new(BooleanArray::from(
                c.iter().map(|x| x.eligible).collect::<Vec<_>>(),
            )),
            Arc::new(
                c.iter()
                    .map(|x| x.eligible.then_some(x.retained))
                    .collect::<Int64Array>(),
            ),
            Arc::new(c.iter().map(|x| x.rate).collect::<Float64Array>()),
            Arc::new(c.iter().map(|x| x.value).collect::<Float64Array>()),
            Arc::new(c.iter().map(|x| x.value_rate).collect::<Float64Array>()),
            Arc::new(
                c.iter()
                    .map(|x| repeat.get(&x.cohort).copied())
                    .collect::<Float64Array>(),
            ),
        ];
        Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, entity by entity and column by column: active in a period the column
    /// covers ("on or after": in it or any later one).
    fn by_definition(mode: &Mode, columns: &[(String, u32, u32)], rows: &CohortRows) -> Vec<i64> {
        columns
            .iter()
            .map(|(_, from, to)| {
                rows.active
                    .values()
                    .filter(|periods| {
                        periods.iter().any(|n| match mode {
                            Mode::OnOrAfter => n >= from,
                            _ => n >= from && n <= to,
                        })
                    })
                    .count() as i64
            })
            .collect()
    }

    #[test]
    fn one_pass_counts_equal_the_definition() {
        let mut rows = CohortRows::default();
        // Periods per entity, some past the last column, some repeated.
        let activity: [&[u32]; 6] = [&[0], &[0, 1, 1, 4], &[2], &[9, 3], &[], &[0, 7, 12]];
        for (i, periods) in activity.iter().enumerate() {
            rows.active.insert(format!("e{i}"), periods.to_vec());
        }
        let on: Vec<(String, u32, u32)> = (0..=5).map(|n| (n.to_string(), n, n)).collect();
        let brackets = vec![
            ("0-0".to_string(), 0, 0),
            ("1-3".to_string(), 1, 3),
            ("4-20".to_string(), 4, 20),
        ];
        for (mode, columns) in [
            (Mode::On, &on),
            (Mode::OnOrAfter, &on),
            (Mode::Brackets(vec![(0, 0), (1, 3), (4, 20)]), &brackets),
        ] {
            assert_eq!(
                retained_per_column(&mode, columns, &rows),
                by_definition(&mode, columns, &rows),
                "{mode:?}"
            );
        }
        // By hand, "on": period 0 has e0, e1, e5; period 1 e1; 2 e2; 3 e3; 4 e1; 5 nobody.
        assert_eq!(
            retained_per_column(&Mode::On, &on, &rows),
            [3, 1, 1, 1, 1, 0]
        );
    }
}

//! Targets: where a metric stands against its `target`, and where its trend takes it.
//!
//! For a target of `value` per `period` by the date `by`:
//! - **actual**: the metric in the last complete period;
//! - **expected**: linear pacing from the value at the start (`start`, or the data's first
//!   period) to the target at `by`, evaluated at that period;
//! - **projected**: a least-squares line through the last [`TREND_PERIODS`] complete periods,
//!   extended to the period containing `by`;
//! - **status**: on track if the projection reaches the target, at risk if it covers at least
//!   [`AT_RISK_SHARE`] of the way from the start value, off track otherwise.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::project::error::Result;
use crate::project::model::Target;
use crate::project::periods::{next_period, period_start};
use crate::query::compute::MetricRequest;
use crate::query::engine::Engine;

/// Periods the trend is fitted on.
pub const TREND_PERIODS: usize = 8;
/// The share of the way to the target a projection must cover not to be off track.
pub const AT_RISK_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    OnTrack,
    AtRisk,
    OffTrack,
    /// Not enough data to say.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::OnTrack => "on track",
            Status::AtRisk => "at risk",
            Status::OffTrack => "off track",
            Status::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    pub metric: String,
    pub target: Target,
    /// The last complete period of the target's grain.
    pub period: Option<NaiveDate>,
    pub actual: Option<f64>,
    /// The value the pacing line asks for in `period`.
    pub expected: Option<f64>,
    /// The trend's value in the period containing `by`.
    pub projected: Option<f64>,
    pub status: Status,
}

impl Engine {
    /// The status of every target (or of `metric`'s).
    pub async fn targets(&self, metric: Option<&str>) -> Result<Vec<TargetStatus>> {
        let project = self.project();
        let names: Vec<String> = match metric {
            Some(name) => vec![project.metric(name)?.name.clone()],
            None => project
                .metrics
                .values()
                .filter(|m| m.target.is_some())
                .map(|m| m.name.clone())
                .collect(),
        };
        let mut out = Vec::new();
        for name in names {
            let Some(target) = project.metrics[&name].target.clone() else {
                continue;
            };
            out.push(self.target_status(&name, target).await?);
        }
        Ok(out)
    }

    async fn target_status(&self, name: &str, target: Target) -> Result<TargetStatus> {
        let grain = target.period;
        let week_start = self.project().week_start;
        let last_day = self.last_data_day(&[name.to_string()]).await?;
        let mut request = MetricRequest::new([name], grain);
        request.from = target.start;
        // Only complete periods: a partial last period would drag the trend down.
        request.to = last_day.and_then(|day| {
            let latest = period_start(day, grain, week_start);
            let complete = next_period(latest, grain) <= day + chrono::Days::new(1);
            if complete {
                Some(latest)
            } else {
                latest
                    .pred_opt()
                    .map(|d| period_start(d, grain, week_start))
            }
        });
        let series: Vec<(NaiveDate, f64)> = if request.to.is_some() {
            let table = self.compute(&request).await?;
            table
                .periods()
                .into_iter()
                .zip(table.values(name).unwrap_or_default())
                .filter_map(|(p, v)| Some((p, v?)))
                .collect()
        } else {
            Vec::new()
        };
        let by_period = period_start(target.by, grain, week_start);
        Ok(assess(name, target, &series, by_period))
    }
}

/// The pure part: pacing, trend and status from a metric's series.
fn assess(
    name: &str,
    target: Target,
    series: &[(NaiveDate, f64)],
    by_period: NaiveDate,
) -> TargetStatus {
    let x = |d: NaiveDate| (d - NaiveDate::MIN).num_days() as f64;
    let (period, actual) = match series.last() {
        Some((p, v)) => (Some(*p), Some(*v)),
        None => (None, None),
    };
    let start = series.first().copied();
    let expected = match (start, period) {
        (Some((s, v0)), Some(p)) if by_period > s => {
            let share = ((x(p) - x(s)) / (x(by_period) - x(s))).clamp(0.0, 1.0);
            Some(v0 + (target.value - v0) * share)
        }
        _ => None,
    };
    let recent = &series[series.len().saturating_sub(TREND_PERIODS)..];
    let projected = fit(recent.iter().map(|(d, v)| (x(*d), *v))).map(|(a, b)| a + b * x(by_period));
    let status = match (start, projected) {
        (Some((_, v0)), Some(projected)) if recent.len() >= 2 => {
            let needed = target.value - v0;
            let covered = if needed == 0.0 {
                if projected >= target.value { 1.0 } else { 0.0 }
            } else {
                (projected - v0) / needed
            };
            if covered >= 1.0 {
                Status::OnTrack
            } else if covered >= AT_RISK_SHARE {
                Status::AtRisk
            } else {
                Status::OffTrack
            }
        }
        _ => Status::Unknown,
    };
    TargetStatus {
        metric: name.to_string(),
        target,
        period,
        actual,
        expected,
        projected,
        status,
    }
}

/// Least squares `y = a + b·x`; `None` with fewer than two distinct points.
fn fit(points: impl Iterator<Item = (f64, f64)>) -> Option<(f64, f64)> {
    let points: Vec<(f64, f64)> = points.collect();
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let b = sxy / sxx;
    Some((mean_y - b * mean_x, b))
}

/// Target statuses as a table: `metric`, `period`, `actual`, `expected`, `projected`,
/// `target`, `by`, `status`.
pub fn to_record_batch(statuses: &[TargetStatus]) -> Result<RecordBatch> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let days = |d: NaiveDate| (d - epoch).num_days() as i32;
    let floats = |f: &dyn Fn(&TargetStatus) -> Option<f64>| -> ArrayRef {
        Arc::new(statuses.iter().map(f).collect::<Float64Array>())
    };
    let schema = Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("period", DataType::Date32, true),
        Field::new("actual", DataType::Float64, true),
        Field::new("expected", DataType::Float64, true),
        Field::new("projected", DataType::Float64, true),
        Field::new("target", DataType::Float64, true),
        Field::new("by", DataType::Date32, false),
        Field::new("status", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            statuses.iter().map(|s| s.metric.as_str()),
        )),
        Arc::new(
            statuses
                .iter()
                .map(|s| s.period.map(days))
                .collect::<Date32Array>(),
        ),
        floats(&|s| s.actual),
        floats(&|s| s.expected),
        floats(&|s| s.projected),
        floats(&|s| Some(s.target.value)),
        Arc::new(Date32Array::from_iter_values(
            statuses.iter().map(|s| days(s.target.by)),
        )),
        Arc::new(StringArray::from_iter_values(
            statuses.iter().map(|s| s.status.as_str()),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::model::Grain;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn target(value: f64) -> Target {
        Target {
            value,
            period: Grain::Month,
            by: d("2026-12-31"),
            start: None,
        }
    }

    fn months(values: &[f64]) -> Vec<(NaiveDate, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (NaiveDate::from_ymd_opt(2026, 1 + i as u32, 1).unwrap(), *v))
            .collect()
    }

    #[test]
    fn a_steady_climb_that_reaches_the_target_is_on_track() {
        // +100 a month from 1000 in January: the day-based line projects 2110.17 on December 1
        // (computed independently with the least-squares formulas).
        let series = months(&[1000.0, 1100.0, 1200.0, 1300.0, 1400.0, 1500.0]);
        let s = assess("m", target(2000.0), &series, d("2026-12-01"));
        assert_eq!(s.status, Status::OnTrack);
        assert_eq!(s.actual, Some(1500.0));
        let projected = s.projected.unwrap();
        assert!((projected - 2110.172843662224).abs() < 1e-6, "{projected}");
        // Pacing: June is 151 of 334 days from January 1 to December 1.
        let expected = 1000.0 + 1000.0 * 151.0 / 334.0;
        assert!((s.expected.unwrap() - expected).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn falling_short_is_at_risk_then_off_track() {
        let series = months(&[1000.0, 1100.0, 1200.0, 1300.0, 1400.0, 1500.0]);
        // 1110 of the 1200 needed is 92.5%: at risk; of 2000 needed, 55%: off track.
        assert_eq!(
            assess("m", target(2200.0), &series, d("2026-12-01")).status,
            Status::AtRisk
        );
        assert_eq!(
            assess("m", target(3000.0), &series, d("2026-12-01")).status,
            Status::OffTrack
        );
    }

    #[test]
    fn targets_below_the_start_count_falls_as_progress() {
        // A churn target: from 500 down to 300.
        let series = months(&[500.0, 470.0, 440.0, 410.0]);
        assert_eq!(
            assess("m", target(300.0), &series, d("2026-12-01")).status,
            Status::OnTrack
        );
    }

    #[test]
    fn one_period_is_not_a_trend() {
        let s = assess("m", target(10.0), &months(&[5.0]), d("2026-12-01"));
        assert_eq!(s.status, Status::Unknown);
    }
}

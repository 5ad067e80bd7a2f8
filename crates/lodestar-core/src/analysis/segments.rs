//! Which segments of a dimension (country, platform…) explain a metric's change between two
//! periods.
//!
//! For a metric that adds up over segments (a count, a sum), each segment's part is its own
//! change. For a ratio, each segment's part is split into a rate effect (its ratio moved) and a
//! mix effect (its share of the denominator moved), with midpoint weights, so that the parts
//! of all segments sum exactly to the ratio's change:
//!
//! `R = Σ wᵢ·rᵢ` with `wᵢ = dᵢ / Σd` and `rᵢ = nᵢ / dᵢ`, and `Δ(wᵢ·rᵢ) = w̄ᵢ·Δrᵢ + r̄ᵢ·Δwᵢ`.
//!
//! A segment present in one period only has no rate in the other: its whole part is mix.
//! Where segments overlap (a user in two countries counted once in the total, a distinct count,
//! an average), the parts do not add up to the total change; the difference is reported as the
//! residual rather than hidden. docs/cli.md (`lodestar segments`) explains the methods.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::analysis::tree::{Compare, DEFAULT_TREE_GRAIN};
use crate::project::error::{Error, Result};
use crate::project::model::{Grain, MetricKind, Project};
use crate::query::compute::{MetricRequest, MetricTable};
use crate::query::engine::Engine;

/// Which metric, broken down by which dimension, in which period against which.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRequest {
    pub metric: String,
    pub dimension: String,
    /// `None`: the metric's grain, else week.
    pub grain: Option<Grain>,
    /// A date inside the period to look at; `None`: the last complete period of the data.
    pub period: Option<NaiveDate>,
    pub compare: Compare,
}

/// How the segments' parts are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentMethod {
    /// Each segment's part is its change.
    Additive,
    /// A ratio: each segment's part is its rate effect plus its mix effect.
    RateMix,
}

impl SegmentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentMethod::Additive => "additive",
            SegmentMethod::RateMix => "rate and mix",
        }
    }
}

/// One segment's values and its part of the metric's change.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The dimension's value; `None` for rows without one.
    pub segment: Option<String>,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    /// Ratios: the segment's share of the denominator, now and before.
    pub weight: Option<f64>,
    pub previous_weight: Option<f64>,
    /// Ratios: the part due to the segment's own ratio moving.
    pub rate_effect: Option<f64>,
    /// Ratios: the part due to the segment's share of the denominator moving.
    pub mix_effect: Option<f64>,
    /// The segment's part of the metric's change.
    pub contribution: Option<f64>,
}

impl Segment {
    /// `value - previous`.
    pub fn change(&self) -> Option<f64> {
        Some(self.value? - self.previous?)
    }
}

/// A metric's change, explained by the segments of one dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentAnalysis {
    pub metric: String,
    pub dimension: String,
    pub grain: Grain,
    /// The period looked at, if there is data.
    pub period: Option<NaiveDate>,
    pub previous_period: Option<NaiveDate>,
    pub method: SegmentMethod,
    /// The metric's total, now and before.
    pub value: Option<f64>,
    pub previous: Option<f64>,
    /// Ranked by the size of their part, largest first.
    pub segments: Vec<Segment>,
}

impl SegmentAnalysis {
    /// The metric's total change.
    pub fn change(&self) -> Option<f64> {
        Some(self.value? - self.previous?)
    }

    /// The total change minus the sum of the segments' parts: zero when the segments partition
    /// the metric, the overlap otherwise (a distinct count, an average).
    pub fn residual(&self) -> Option<f64> {
        let parts: Option<f64> = self.segments.iter().map(|s| s.contribution).sum();
        Some(self.change()? - parts?)
    }

    /// The segments as a table, in rank order: `segment`, `value`, `previous`, `change`,
    /// `contribution`, `share_of_change` (of the total change), and for ratios `weight`,
    /// `previous_weight`, `rate_effect`, `mix_effect`.
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let total = self.change().filter(|c| *c != 0.0);
        let number = |f: &dyn Fn(&Segment) -> Option<f64>| -> ArrayRef {
            Arc::new(self.segments.iter().map(f).collect::<Float64Array>())
        };
        let mut fields = vec![Field::new(&self.dimension, DataType::Utf8, true)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(
            self.segments
                .iter()
                .map(|s| s.segment.as_deref())
                .collect::<StringArray>(),
        )];
        let mut add = |name: &str, column: ArrayRef| {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(column);
        };
        add("value", number(&|s| s.value));
        add("previous", number(&|s| s.previous));
        add("change", number(&|s| s.change()));
        add("contribution", number(&|s| s.contribution));
        add(
            "share_of_change",
            number(&|s| Some(s.contribution? / total?)),
        );
        if self.method == SegmentMethod::RateMix {
            add("weight", number(&|s| s.weight));
            add("previous_weight", number(&|s| s.previous_weight));
            add("rate_effect", number(&|s| s.rate_effect));
            add("mix_effect", number(&|s| s.mix_effect));
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

impl Engine {
    /// Explains a metric's change between two periods by the segments of a dimension.
    pub async fn segments(&self, request: &SegmentRequest) -> Result<SegmentAnalysis> {
        let project = self.project();
        let metric = project.metric(&request.metric)?;
        check_dimension(project, &metric.name, &request.dimension)?;
        let grain = request.grain.or(metric.grain).unwrap_or(DEFAULT_TREE_GRAIN);
        let ratio = match &metric.kind {
            MetricKind::Ratio {
                numerator,
                denominator,
            } => Some((numerator.clone(), denominator.clone())),
            _ => None,
        };
        let method = if ratio.is_some() {
            SegmentMethod::RateMix
        } else {
            SegmentMethod::Additive
        };
        let mut analysis = SegmentAnalysis {
            metric: metric.name.clone(),
            dimension: request.dimension.clone(),
            grain,
            period: None,
            previous_period: None,
            method,
            value: None,
            previous: None,
            segments: Vec::new(),
        };
        let mut names = vec![metric.name.clone()];
        base_metrics(project, &metric.name, &mut names);
        let Some((current, compared)) = self
            .comparison(&names, grain, request.period, request.compare)
            .await?
        else {
            return Ok(analysis);
        };
        analysis.period = Some(current);
        analysis.previous_period = Some(compared);

        let mut wanted = vec![metric.name.clone()];
        if let Some((numerator, denominator)) = &ratio {
            wanted.extend([numerator.clone(), denominator.clone()]);
        }
        let mut by_segment = MetricRequest::new(wanted, grain);
        by_segment.from = Some(current.min(compared));
        by_segment.to = Some(current.max(compared));
        by_segment.dimensions = vec![request.dimension.clone()];
        let mut totals = by_segment.clone();
        totals.metrics.truncate(1);
        totals.dimensions.clear();
        let totals = self.compute(&totals).await?;
        let by_segment = self.compute(&by_segment).await?;

        let total = values_at(&totals, &metric.name, None, current, compared);
        (analysis.value, analysis.previous) = total.get(&None).copied().unwrap_or_default();
        let values = values_at(&by_segment, &metric.name, Some(0), current, compared);
        analysis.segments = match &ratio {
            None => values
                .into_iter()
                .map(|(segment, (value, previous))| {
                    let mut s = Segment {
                        segment,
                        value,
                        previous,
                        weight: None,
                        previous_weight: None,
                        rate_effect: None,
                        mix_effect: None,
                        contribution: None,
                    };
                    s.contribution = s.change();
                    s
                })
                .collect(),
            Some((numerator, denominator)) => {
                let numerators = values_at(&by_segment, numerator, Some(0), current, compared);
                let denominators = values_at(&by_segment, denominator, Some(0), current, compared);
                rate_and_mix(values, &numerators, &denominators)
            }
        };
        rank(&mut analysis.segments);
        Ok(analysis)
    }
}

/// The metrics `name` is computed from, recursively (a ratio's numerator and denominator, a
/// derived metric's references), whose data bounds tell the last complete period.
fn base_metrics(project: &Project, name: &str, out: &mut Vec<String>) {
    let children: Vec<String> = match &project.metrics[name].kind {
        MetricKind::Ratio {
            numerator,
            denominator,
        } => vec![numerator.clone(), denominator.clone()],
        MetricKind::Derived { references, .. } => references.clone(),
        _ => Vec::new(),
    };
    for child in children {
        if !out.contains(&child) {
            out.push(child.clone());
            base_metrics(project, &child, out);
        }
    }
}

type Pair = (Option<f64>, Option<f64>);

/// A metric's value in the current and the compared period, per value of the dimension column
/// at index `dimension` of the table's dimensions (`None`: one total under the key `None`).
fn values_at(
    table: &MetricTable,
    metric: &str,
    dimension: Option<usize>,
    current: NaiveDate,
    compared: NaiveDate,
) -> BTreeMap<Option<String>, Pair> {
    let mut out: BTreeMap<Option<String>, Pair> = BTreeMap::new();
    let Some(values) = table.values(metric) else {
        return out;
    };
    let segments = dimension.map(|d| {
        let column = table.batch.column(1 + d);
        datafusion::arrow::compute::cast(column, &DataType::Utf8)
            .map(|c| c.as_string::<i32>().clone())
    });
    for (row, period) in table.periods().into_iter().enumerate() {
        let key = match &segments {
            Some(Ok(column)) => column.is_valid(row).then(|| column.value(row).to_string()),
            _ => None,
        };
        let entry = out.entry(key).or_default();
        if period == current {
            entry.0 = values[row];
        } else if period == compared {
            entry.1 = values[row];
        }
    }
    out
}

/// Rate and mix effects of each segment of a ratio, with midpoint weights; segment values are
/// the metric's own per-segment ratios.
fn rate_and_mix(
    values: BTreeMap<Option<String>, Pair>,
    numerators: &BTreeMap<Option<String>, Pair>,
    denominators: &BTreeMap<Option<String>, Pair>,
) -> Vec<Segment> {
    let sum =
        |pick: fn(&Pair) -> Option<f64>| -> f64 { denominators.values().filter_map(pick).sum() };
    let (total_now, total_then) = (sum(|p| p.0), sum(|p| p.1));
    values
        .into_iter()
        .map(|(segment, (value, previous))| {
            let (n_now, n_then) = numerators.get(&segment).copied().unwrap_or_default();
            let (d_now, d_then) = denominators.get(&segment).copied().unwrap_or_default();
            let weight = d_now.filter(|_| total_now != 0.0).map(|d| d / total_now);
            let previous_weight = d_then.filter(|_| total_then != 0.0).map(|d| d / total_then);
            let rate = |n: Option<f64>, d: Option<f64>| match (n, d) {
                (Some(n), Some(d)) if d != 0.0 => Some(n / d),
                _ => None,
            };
            let (r_now, r_then) = (rate(n_now, d_now), rate(n_then, d_then));
            // A segment with no denominator in a period weighs nothing there.
            let w_now = weight.unwrap_or(0.0);
            let w_then = previous_weight.unwrap_or(0.0);
            let (rate_effect, mix_effect) = if total_now == 0.0 || total_then == 0.0 {
                (None, None)
            } else {
                match (r_now, r_then) {
                    (Some(a), Some(b)) => (
                        Some((w_now + w_then) / 2.0 * (a - b)),
                        Some((a + b) / 2.0 * (w_now - w_then)),
                    ),
                    (Some(a), None) => (Some(0.0), Some(w_now * a)),
                    (None, Some(b)) => (Some(0.0), Some(-w_then * b)),
                    (None, None) => (Some(0.0), Some(0.0)),
                }
            };
            Segment {
                segment,
                value,
                previous,
                weight,
                previous_weight,
                rate_effect,
                mix_effect,
                contribution: rate_effect.zip(mix_effect).map(|(r, m)| r + m),
            }
        })
        .collect()
}

/// Largest part first (by size, whatever its sign); segments without a part last.
fn rank(segments: &mut [Segment]) {
    segments.sort_by(|a, b| {
        let size = |s: &Segment| s.contribution.map(f64::abs);
        size(b)
            .partial_cmp(&size(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.segment.cmp(&b.segment))
    });
}

/// Checks that a request's dimension is one the metric can be broken down by, so the error
/// names the metric rather than one of its inputs.
pub(crate) fn check_dimension(project: &Project, metric: &str, dimension: &str) -> Result<()> {
    let m = project.metric(metric)?;
    if m.dimensions.is_empty() || m.dimensions.iter().any(|d| d == dimension) {
        return Ok(());
    }
    Err(Error::request_hint(
        format!(
            "metric `{metric}` cannot be broken down by `{dimension}`; its dimensions are: {}",
            m.dimensions.join(", ")
        ),
        format!("list `{dimension}` under `dimensions:` of `{metric}` to allow it"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, f64, f64)]) -> BTreeMap<Option<String>, Pair> {
        items
            .iter()
            .map(|(k, a, b)| (Some(k.to_string()), (Some(*a), Some(*b))))
            .collect()
    }

    /// Two countries; France's conversion holds while its share of visits grows, Germany's
    /// conversion rises. Total conversion: before 30/200 = 0.15, now 52/300 ≈ 0.17333.
    #[test]
    fn rate_and_mix_sum_to_the_ratio_change() {
        // visits (denominator) and orders (numerator), now and before.
        let d = pairs(&[("FR", 200.0, 100.0), ("DE", 100.0, 100.0)]);
        let n = pairs(&[("FR", 20.0, 10.0), ("DE", 32.0, 20.0)]);
        let v = pairs(&[("FR", 0.1, 0.1), ("DE", 0.32, 0.2)]);
        let segments = rate_and_mix(v, &n, &d);
        let fr = segments
            .iter()
            .find(|s| s.segment.as_deref() == Some("FR"))
            .unwrap();
        let de = segments
            .iter()
            .find(|s| s.segment.as_deref() == Some("DE"))
            .unwrap();
        // France: rate unchanged, so no rate effect; its weight went 0.5 → 2/3.
        assert_eq!(fr.rate_effect, Some(0.0));
        let fr_mix = 0.1 * (2.0 / 3.0 - 0.5);
        assert!((fr.mix_effect.unwrap() - fr_mix).abs() < 1e-12);
        // Germany: rate 0.2 → 0.32 at mean weight (1/3 + 1/2) / 2; weight 0.5 → 1/3.
        let de_rate = (1.0 / 3.0 + 0.5) / 2.0 * 0.12;
        let de_mix = (0.32 + 0.2) / 2.0 * (1.0 / 3.0 - 0.5);
        assert!((de.rate_effect.unwrap() - de_rate).abs() < 1e-12);
        assert!((de.mix_effect.unwrap() - de_mix).abs() < 1e-12);
        let total: f64 = segments.iter().map(|s| s.contribution.unwrap()).sum();
        assert!((total - (52.0 / 300.0 - 0.15)).abs() < 1e-12);
    }

    #[test]
    fn a_new_segment_is_all_mix() {
        let d: BTreeMap<_, _> = [
            (Some("FR".to_string()), (Some(100.0), Some(100.0))),
            (Some("IT".to_string()), (Some(100.0), None)),
        ]
        .into_iter()
        .collect();
        let n: BTreeMap<_, _> = [
            (Some("FR".to_string()), (Some(10.0), Some(10.0))),
            (Some("IT".to_string()), (Some(30.0), None)),
        ]
        .into_iter()
        .collect();
        let v: BTreeMap<_, _> = [
            (Some("FR".to_string()), (Some(0.1), Some(0.1))),
            (Some("IT".to_string()), (Some(0.3), None)),
        ]
        .into_iter()
        .collect();
        let segments = rate_and_mix(v, &n, &d);
        let it = segments
            .iter()
            .find(|s| s.segment.as_deref() == Some("IT"))
            .unwrap();
        assert_eq!(it.rate_effect, Some(0.0));
        assert!((it.mix_effect.unwrap() - 0.15).abs() < 1e-12);
        let total: f64 = segments.iter().map(|s| s.contribution.unwrap()).sum();
        // 40/200 - 10/100.
        assert!((total - 0.1).abs() < 1e-12);
    }
}

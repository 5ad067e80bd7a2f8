//! Guardrail checks over a computed series: periods where a metric rose while one of its
//! guardrails worsened beyond its threshold.

use chrono::NaiveDate;

use crate::project::error::Result;
use crate::query::compute::{MetricRequest, MetricTable};
use crate::query::engine::Engine;

/// One flagged period.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub period: NaiveDate,
    pub metric: String,
    pub guardrail: String,
    /// The guardrail in the period before and in this one.
    pub before: f64,
    pub after: f64,
}

impl Engine {
    /// The guardrail breaches of the metrics in `table` (not broken down by dimension), over
    /// its periods. Guardrails are computed in one request of their own.
    pub async fn guardrail_breaches(&self, table: &MetricTable) -> Result<Vec<Breach>> {
        if !table.dimensions.is_empty() {
            return Ok(Vec::new());
        }
        let project = self.project();
        let watched: Vec<(&String, &crate::project::model::Guardrail)> = table
            .metrics
            .iter()
            .flat_map(|m| project.metrics[m].guardrails.iter().map(move |g| (m, g)))
            .collect();
        let periods = table.periods();
        let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
            return Ok(Vec::new());
        };
        if watched.is_empty() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = Vec::new();
        for (_, g) in &watched {
            if !names.contains(&g.metric) {
                names.push(g.metric.clone());
            }
        }
        let mut request = MetricRequest::new(names, table.grain);
        request.from = Some(*first);
        request.to = Some(*last);
        let guards = self.compute(&request).await?;
        let guard_periods = guards.periods();
        let mut breaches = Vec::new();
        for (metric, rule) in watched {
            let values = table.values(metric).unwrap_or_default();
            let guard = guards.values(&rule.metric).unwrap_or_default();
            for i in 1..periods.len() {
                let (Some(now), Some(then)) = (values[i], values[i - 1]) else {
                    continue;
                };
                let at = |p: NaiveDate| {
                    guard_periods
                        .iter()
                        .position(|d| *d == p)
                        .and_then(|r| guard[r])
                };
                let (Some(after), Some(before)) = (at(periods[i]), at(periods[i - 1])) else {
                    continue;
                };
                if now > then && rule.breached(before, after) {
                    breaches.push(Breach {
                        period: periods[i],
                        metric: metric.clone(),
                        guardrail: rule.metric.clone(),
                        before,
                        after,
                    });
                }
            }
        }
        Ok(breaches)
    }
}

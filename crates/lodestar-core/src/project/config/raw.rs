//! The shapes of `lodestar.yaml` as serde reads them, every key with its position
//! (`Spanned`); `build` turns them into the model.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProject {
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) week_start: Option<Spanned<String>>,
    pub(super) engine: Option<RawEngine>,
    pub(super) cache: Option<Spanned<RawCache>>,
    #[serde(default)]
    pub(super) sources:
        IndexMap<Spanned<String>, Spanned<IndexMap<Spanned<String>, serde_json::Value>>>,
    #[serde(default)]
    pub(super) metrics: IndexMap<Spanned<String>, Spanned<RawMetric>>,
    pub(super) discovery: Option<Spanned<RawDiscovery>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    pub(super) activity: Option<Spanned<String>>,
    pub(super) entity: Option<Spanned<String>>,
    pub(super) event_column: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) onboarding: IndexMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEngine {
    pub(super) memory_limit: Option<Spanned<String>>,
    pub(super) target_partitions: Option<usize>,
    pub(super) cluster: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) cluster_settings: IndexMap<Spanned<String>, Spanned<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) dir: Option<Spanned<String>>,
    pub(super) lookback: Option<Spanned<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetric {
    pub(super) description: Option<String>,
    pub(super) owner: Option<String>,
    pub(super) north_star: Option<bool>,
    pub(super) table: Option<Spanned<String>>,
    pub(super) time: Option<Spanned<String>>,
    pub(super) measure: Option<Spanned<String>>,
    pub(super) filter: Option<Spanned<String>>,
    pub(super) dimensions: Option<Spanned<Vec<String>>>,
    pub(super) grain: Option<Spanned<String>>,
    pub(super) ratio: Option<Spanned<RawRatio>>,
    pub(super) derived: Option<Spanned<String>>,
    pub(super) cumulative: Option<Spanned<RawCumulative>>,
    pub(super) sql: Option<Spanned<String>>,
    pub(super) retention: Option<Spanned<RawRetention>>,
    pub(super) inputs: Option<Vec<Spanned<String>>>,
    pub(super) formula: Option<Spanned<String>>,
    pub(super) target: Option<Spanned<RawTarget>>,
    pub(super) guardrails: Option<Vec<Spanned<RawGuardrail>>>,
}

/// `guardrails:` items: a metric name, or a metric with when it counts as worse.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawGuardrail {
    Name(String),
    Rule {
        metric: String,
        /// `up` (the default: refunds, cancellations) or `down` (quality, satisfaction).
        worse: Option<String>,
        /// A relative change such as `5%` or `0.05`; worsening beyond it is flagged.
        threshold: Option<serde_json::Value>,
    },
}

impl RawGuardrail {
    pub(super) fn metric(&self) -> &str {
        match self {
            RawGuardrail::Name(name) | RawGuardrail::Rule { metric: name, .. } => name,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRatio {
    pub(super) numerator: Spanned<String>,
    pub(super) denominator: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCumulative {
    pub(super) metric: Option<Spanned<String>>,
    pub(super) window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) cohort: Spanned<String>,
    pub(super) activity: Spanned<String>,
    pub(super) entity: Spanned<String>,
    pub(super) after: Spanned<String>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) cohort_filter: Option<Spanned<String>>,
    pub(super) activity_filter: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) value: f64,
    pub(super) period: Spanned<String>,
    pub(super) by: Spanned<String>,
    pub(super) start: Option<Spanned<String>>,
}

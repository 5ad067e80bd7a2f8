//! Prometheus metrics at `/metrics`: requests by route and status, their durations, cache hits
//! and misses, and the North Star values themselves, in the text exposition format.
//!
//! A scrape computes nothing: the North Star values are computed in the background (at start,
//! when the data changed, after a reload; see `cache::refresh`), and a scrape shows the last
//! ones with their age.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lodestar_core::TreeRequest;

use crate::AppState;

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, method, status) → count.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → histogram.
    durations: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Metrics {
    fn record(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let histogram = inner.durations.entry(route.to_string()).or_default();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }
}

/// The North Star values, as last computed.
#[derive(Debug)]
pub struct NorthStars {
    /// (metric, grain, value) of each North Star with a finite value.
    values: Vec<(String, String, f64)>,
    /// When the computation finished.
    computed: Instant,
    /// How long it took.
    seconds: f64,
}

/// Computes the North Stars in their last complete period, as the tree does, in one
/// request's memory pool and time limit; the values replace the previous ones. A computation
/// that fails keeps the previous values (their age tells), unless there were none yet.
pub async fn compute_north_stars(state: &AppState) {
    let engine = state.engine();
    let started = Instant::now();
    let tree = tokio::time::timeout(
        state.settings().query_timeout,
        engine.tree(&TreeRequest::default()),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let values = match tree {
        Ok(Ok(tree)) => Some(
            tree.roots
                .iter()
                .filter(|r| r.north_star)
                .filter_map(|root| {
                    root.value
                        .filter(|v| v.is_finite())
                        .map(|v| (root.metric.clone(), tree.grain.to_string(), v))
                })
                .collect(),
        ),
        Ok(Err(e)) => {
            tracing::warn!("the North Stars could not be computed for /metrics: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("the North Stars took too long to compute for /metrics");
            None
        }
    };
    let failed = values.is_none();
    let values = values.unwrap_or_default();
    state.north_stars().send_if_modified(|kept| {
        if failed && kept.is_some() {
            return false;
        }
        *kept = Some(Arc::new(NorthStars {
            values,
            computed: Instant::now(),
            seconds,
        }));
        true
    });
}

/// Counts every routed request and its duration, by route template (not by raw path, so
/// metric names do not multiply the series).
pub async fn measure(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    if request
        .extensions()
        .get::<crate::cache::Refresh>()
        .is_some()
    {
        // Counted as `lodestar_cache_refreshes_total`, not as a client's request.
        return next.run(request).await;
    }
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics().record(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn exposition(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    {
        let inner = state
            .metrics()
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        out.push_str(
            "# HELP lodestar_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE lodestar_http_requests_total counter\n");
        for ((route, method, status), count) in &inner.requests {
            let _ = writeln!(
                out,
                "lodestar_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        out.push_str("# HELP lodestar_http_request_duration_seconds Time to answer, by route (queries included).\n");
        out.push_str("# TYPE lodestar_http_request_duration_seconds histogram\n");
        for (route, h) in &inner.durations {
            let route = escape(route);
            for (bound, count) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "lodestar_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "lodestar_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "lodestar_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "lodestar_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
    }
    let cache = state.cache();
    let _ = writeln!(
        out,
        "# HELP lodestar_cache_hits_total API answers served from the cache.\n# TYPE lodestar_cache_hits_total counter\nlodestar_cache_hits_total {}",
        cache.hits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP lodestar_cache_misses_total API answers computed.\n# TYPE lodestar_cache_misses_total counter\nlodestar_cache_misses_total {}",
        cache.misses.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP lodestar_cache_bytes Bytes of answers the cache holds (at most --answer-cache-size).\n# TYPE lodestar_cache_bytes gauge\nlodestar_cache_bytes {}",
        cache.bytes()
    );
    let _ = writeln!(
        out,
        "# HELP lodestar_cache_refreshes_total Cached answers recomputed in the background after the data changed.\n# TYPE lodestar_cache_refreshes_total counter\nlodestar_cache_refreshes_total {}",
        cache.refreshed.load(Ordering::Relaxed)
    );
    // The North Stars as last computed in the background; before the first computation ends,
    // the scrape waits for it (within the time limit of a query).
    let mut receiver = state.north_stars().subscribe();
    let waited = tokio::time::timeout(
        state.settings().query_timeout,
        receiver.wait_for(Option::is_some),
    )
    .await;
    drop(waited);
    let snapshot = receiver.borrow().clone();
    out.push_str("# HELP lodestar_north_star_value Each North Star in the last complete period of its grain, as last computed.\n");
    out.push_str("# TYPE lodestar_north_star_value gauge\n");
    if let Some(snapshot) = &snapshot {
        for (metric, grain, value) in &snapshot.values {
            let _ = writeln!(
                out,
                "lodestar_north_star_value{{metric=\"{}\",grain=\"{grain}\"}} {value}",
                escape(metric),
            );
        }
        let _ = writeln!(
            out,
            "# HELP lodestar_north_star_age_seconds Time since the North Star values were computed.\n# TYPE lodestar_north_star_age_seconds gauge\nlodestar_north_star_age_seconds {}",
            snapshot.computed.elapsed().as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# HELP lodestar_north_star_query_seconds Time the last North Star computation took.\n# TYPE lodestar_north_star_query_seconds gauge\nlodestar_north_star_query_seconds {}",
            snapshot.seconds
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

//! Prometheus metrics at `/metrics`: requests by route and status, their durations, cache hits
//! and misses, and the North Star values themselves, in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
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
        "# HELP lodestar_cache_refreshes_total Cached answers recomputed in the background after the data changed.\n# TYPE lodestar_cache_refreshes_total counter\nlodestar_cache_refreshes_total {}",
        cache.refreshed.load(Ordering::Relaxed)
    );
    // The North Stars in their last complete period, as the tree computes them.
    let engine = state.engine();
    let started = Instant::now();
    let tree = tokio::time::timeout(
        state.settings().query_timeout,
        engine.tree(&TreeRequest::default()),
    )
    .await;
    let query_seconds = started.elapsed().as_secs_f64();
    out.push_str("# HELP lodestar_north_star_value Each North Star in the last complete period of its grain.\n");
    out.push_str("# TYPE lodestar_north_star_value gauge\n");
    match tree {
        Ok(Ok(tree)) => {
            for root in tree.roots.iter().filter(|r| r.north_star) {
                if let Some(value) = root.value.filter(|v| v.is_finite()) {
                    let _ = writeln!(
                        out,
                        "lodestar_north_star_value{{metric=\"{}\",grain=\"{}\"}} {value}",
                        escape(&root.metric),
                        tree.grain
                    );
                }
            }
        }
        Ok(Err(e)) => tracing::warn!("the North Stars could not be computed for /metrics: {e}"),
        Err(_) => tracing::warn!("the North Stars took too long to compute for /metrics"),
    }
    let _ = writeln!(
        out,
        "# HELP lodestar_north_star_query_seconds Time the last North Star query took.\n# TYPE lodestar_north_star_query_seconds gauge\nlodestar_north_star_query_seconds {query_seconds}"
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

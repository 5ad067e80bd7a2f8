//! Request ids, one log line per request, and the limits on queries: at most N at once (503
//! with `Retry-After` beyond), a time limit on each (504, the query cancelled), and the
//! memory limit (507; the engine enforces it, this names it in the answer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::error::{ApiError, ErrorCode, MEMORY_LIMIT};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The id of the request being answered, for answers made without the request at hand
    /// (the 500 after a panic).
    static CURRENT_ID: HeaderValue;
}

/// The id of the request this task is answering, inside [`observe`].
pub fn current_request_id() -> Option<String> {
    CURRENT_ID
        .try_with(|id| id.to_str().ok().map(str::to_string))
        .ok()
        .flatten()
}

/// Seconds a client is told to wait when every query slot is taken.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Gives every request an id (the client's `X-Request-Id` if it is short and printable, else a
/// new one), echoes it in the answer, and logs the answer with its status and duration.
pub async fn observe(mut request: Request, next: Next) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            v.len() <= 64
                && v.to_str()
                    .is_ok_and(|s| s.chars().all(|c| c.is_ascii_graphic()))
        })
        .cloned()
        .unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            HeaderValue::from_str(&format!("{:x}-{n}", std::process::id()))
                .unwrap_or_else(|_| HeaderValue::from_static("0"))
        });
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let span = tracing::info_span!(
        "request",
        id = %id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    span.in_scope(|| tracing::debug!("received"));
    let mut response = CURRENT_ID
        .scope(id.clone(), next.run(request).instrument(span.clone()))
        .await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::info!(status, elapsed_ms, "answered"));
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// The query slots and the time limit.
#[derive(Debug, Clone)]
pub struct Limits {
    permits: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
    /// The per-query memory limit, in bytes, to name in 507 answers.
    memory: Option<usize>,
}

impl Limits {
    pub fn new(max_concurrent: usize, timeout: Duration) -> Limits {
        Limits {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max: max_concurrent,
            timeout,
            memory: None,
        }
    }

    /// Names `bytes`, the per-query memory limit, in the answers to queries over it.
    pub fn with_memory(mut self, bytes: usize) -> Limits {
        self.memory = Some(bytes);
        self
    }
}

/// `512 MiB`, `1.5 GiB`, `900 KiB` ([`lodestar_core::format::bytes`]).
pub fn format_bytes(bytes: usize) -> String {
    lodestar_core::format::bytes(bytes as u64)
}

/// Runs the request in a query slot, within the time limit.
pub async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&limits.permits).try_acquire_owned() else {
        tracing::warn!(max = limits.max, "refused: every query slot is taken");
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "the server is answering {} queries already; try again shortly",
                limits.max
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return response;
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => match (response.extensions().get::<ErrorCode>(), limits.memory) {
            (Some(ErrorCode(MEMORY_LIMIT)), Some(bytes)) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                MEMORY_LIMIT,
                format!(
                    "the query needs more than {}, the memory one request may use",
                    format_bytes(bytes)
                ),
            )
            .with_hint(
                "ask for less (a shorter range, fewer dimensions), or raise --query-memory-limit",
            )
            .into_response(),
            _ => response,
        },
        // Dropping the request's future cancels its query.
        Err(_) => {
            tracing::warn!(
                timeout_s = limits.timeout.as_secs_f64(),
                "query stopped: too slow"
            );
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the query took longer than {} s and was stopped",
                    limits.timeout.as_secs_f64()
                ),
            )
            .with_hint("ask for less (a shorter range, fewer dimensions), or raise --query-timeout")
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    use super::*;

    async fn get_raw(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// A router whose `/hold` waits until released, behind the limits, on a real socket.
    async fn serve(limits: Limits, entered: Arc<Notify>, release: Arc<Notify>) -> SocketAddr {
        let app = Router::new()
            .route(
                "/hold",
                get(move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }),
            )
            .route("/quick", get(|| async { "quick" }))
            .layer(axum::middleware::from_fn_with_state(limits, limit))
            .layer(axum::middleware::from_fn(observe));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn beyond_the_slots_the_answer_is_503_with_retry_after() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let addr = serve(
            Limits::new(1, Duration::from_secs(3600)),
            Arc::clone(&entered),
            Arc::clone(&release),
        )
        .await;
        let first = tokio::spawn(get_raw(addr, "/hold"));
        entered.notified().await;
        let refused = get_raw(addr, "/quick").await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(
            refused.to_ascii_lowercase().contains("retry-after: 1"),
            "{refused}"
        );
        assert!(refused.contains("\"code\":\"overloaded\""), "{refused}");
        release.notify_one();
        let first = first.await.unwrap();
        assert!(
            first.starts_with("HTTP/1.1 200") && first.ends_with("done"),
            "{first}"
        );
        // The slot is free again.
        let again = get_raw(addr, "/quick").await;
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        assert!(
            again.to_ascii_lowercase().contains("x-request-id: "),
            "{again}"
        );
    }

    #[tokio::test]
    async fn a_request_past_its_time_limit_is_stopped_with_504() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        // Never released: the handler would wait forever.
        let addr = serve(Limits::new(4, Duration::from_millis(50)), entered, release).await;
        let answer = get_raw(addr, "/hold").await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    }
}

//! Errors: the crate's error type for starting and running the server, and [`ApiError`], the
//! JSON error body every endpoint answers with.

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading the project or opening its sources failed.
    #[error(transparent)]
    Core(#[from] lodestar_core::Error),

    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no API tokens are configured, so the server listens on loopback addresses only, and {addr} is not one\n  hint: configure tokens (--tokens-file, LODESTAR_READ_TOKENS; docs/server.md#authentication), listen on 127.0.0.1, or pass --allow-anonymous to let anyone who reaches {addr} read the metrics"
    )]
    Anonymous { addr: SocketAddr },

    #[error(
        "--cors-origin `{origin}` is not an origin: {reason}\n  hint: write `*` or scheme://host[:port] as a browser sends it, e.g. https://dash.example.com or http://localhost:3000"
    )]
    CorsOrigin { origin: String, reason: String },

    #[error("the server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error answer: a status and `{"error": {"code", "message", "hint"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A 400: the request's parameters are wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }

    /// A 404 for a metric the project does not define, with the core's suggestion.
    pub fn unknown_metric(e: lodestar_core::Error) -> ApiError {
        let mut error = ApiError::from(e);
        error.status = StatusCode::NOT_FOUND;
        error.code = "unknown_metric";
        error
    }
}

impl From<lodestar_core::Error> for ApiError {
    fn from(e: lodestar_core::Error) -> ApiError {
        use lodestar_core::Error as E;
        if e.is_memory_exhausted() {
            tracing::warn!(error = %e, "query stopped: over the per-query memory limit");
            // `limits::limit` names the limit in the message.
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                MEMORY_LIMIT,
                "the query needs more memory than one request may use",
            )
            .with_hint(
                "ask for less (a shorter range, fewer dimensions), or raise --query-memory-limit",
            );
        }
        match e {
            E::OverCap(over) => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: OVER_LIMIT,
                message: over.message(|field| format!("parameter `{field}`")),
                hint: Some(over.hint.to_string()),
            },
            E::Request { message, hint } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                // The core words some messages for the command line; say them as parameters.
                message: message
                    .replacen("--by uses", "parameter `by` uses", 1)
                    .replacen("the filter uses", "parameter `filter` uses", 1),
                hint: hint.filter(|h| !h.contains("lodestar ")),
            },
            // The project is wrong, not the request: the operator has to fix the file.
            E::Invalid { .. } | E::Sql { .. } | E::Syntax { .. } | E::Source { .. } => {
                tracing::error!(error = %e, "a metric does not work against its sources");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "definition_error",
                    e.to_string(),
                )
            }
            E::Io(_) | E::DataFusion(_) | E::ProjectNotFound { .. } => {
                tracing::error!(error = %e, "query failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "query_failed",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<lodestar_core::bounds::OverCap> for ApiError {
    fn from(over: lodestar_core::bounds::OverCap) -> ApiError {
        ApiError::from(lodestar_core::Error::from(over))
    }
}

/// The code of the answer to a request over one of the caps on what it may ask (400).
pub const OVER_LIMIT: &str = "over_limit";

/// The code of the answer to a query over its memory limit (507).
pub const MEMORY_LIMIT: &str = "memory_limit";

/// The `code` of an error answer, kept in the response's extensions for the middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = ErrorCode(self.code);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                hint: self.hint.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(code);
        response
    }
}

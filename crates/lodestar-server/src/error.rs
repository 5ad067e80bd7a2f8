//! Errors: the crate's error type for starting and running the server, and [`ApiError`], the
//! JSON error body every endpoint answers with.

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lodestar_core::request::{Action, Field, Spelling};
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
                message: over.message(&Parameters),
                hint: Some(over.hint.to_string()),
            },
            E::Request(request) => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                message: request.message(&Parameters),
                hint: request.hint(&Parameters),
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

/// The API's words for a request's fields: its query parameters.
#[derive(Debug, Clone, Copy)]
pub struct Parameters;

impl Spelling for Parameters {
    fn field(&self, field: Field) -> String {
        format!("parameter `{}`", field.name())
    }

    fn given(&self, field: Field, value: &str) -> String {
        format!("parameter `{}` ({value})", field.name())
    }

    fn set_to(&self, field: Field, value: &str) -> String {
        format!("`{}={value}`", field.name())
    }

    fn action(&self, action: Action) -> Option<String> {
        match action {
            Action::ListMetrics => Some("`GET /api/v1/metrics`".into()),
            // Ad-hoc SQL is for admins and may be off; the cache and the project file are the
            // operator's.
            Action::ListTables | Action::BypassCache | Action::ChooseProject => None,
        }
    }
}

/// The server's words in the HTML report (`GET /api/v1/report`): parameters, and the
/// project file for what only it can declare.
#[derive(Debug, Clone, Copy)]
pub struct ServerVoice;

impl lodestar_report::Voice for ServerVoice {
    fn spelling(&self) -> &dyn Spelling {
        &Parameters
    }

    fn no_retention(&self) -> String {
        "No retention here: the project has no retention metric. Add one to the project file \
         (a metric with `retention:`), or run `lodestar report --cohort … --activity …` where \
         the data is."
            .into()
    }

    fn no_onboarding(&self) -> String {
        "No discovery here: it needs to know when users are onboarded. Ask with \
         `onboarded=NAME`, an onboarding event the project declares under `discovery:`."
            .into()
    }

    fn discovery_failed(&self, error: &str) -> String {
        format!(
            "No discovery here: with the retention cohort as onboarding, it failed: {error}. \
             Ask with `onboarded=NAME` (an onboarding event the project declares) to include it."
        )
    }

    fn made_with(&self) -> &str {
        "lodestar serve"
    }
}

impl From<lodestar_core::bounds::OverCap> for ApiError {
    fn from(over: lodestar_core::bounds::OverCap) -> ApiError {
        ApiError::from(lodestar_core::Error::from(over))
    }
}

impl From<lodestar_core::request::RequestError> for ApiError {
    fn from(error: lodestar_core::request::RequestError) -> ApiError {
        ApiError::from(lodestar_core::Error::from(error))
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

#[cfg(test)]
mod tests {
    use lodestar_core::request::{DateRange, RequestError, Wording};

    use super::*;

    fn answer(e: impl Into<lodestar_core::Error>) -> ApiError {
        ApiError::from(e.into())
    }

    #[test]
    fn request_errors_name_parameters() {
        let after =
            DateRange::of_fields("2026-03-10".parse().ok(), "2026-03-01".parse().ok()).unwrap_err();
        let error = answer(after);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "parameter `from` (2026-03-10) is after parameter `to` (2026-03-01)"
        );
        let by = RequestError::new(Wording::new(vec![
            Field::By.into(),
            " uses `platform`, which is not a dimension of metric `revenue`".into(),
        ]))
        .with_fix(Wording::new(vec![
            "ask for ".into(),
            Field::Grain.set_to("week"),
        ]));
        let error = answer(by);
        assert_eq!(
            error.message,
            "parameter `by` uses `platform`, which is not a dimension of metric `revenue`"
        );
        assert_eq!(error.hint.as_deref(), Some("ask for `grain=week`"));
    }

    #[test]
    fn hints_the_api_cannot_follow_are_left_out() {
        let cache =
            RequestError::new("the cached values cannot be used").with_fix(Action::BypassCache);
        assert_eq!(answer(cache).hint, None);
        let list = RequestError::new("unknown metric `x`").with_fix(Wording::new(vec![
            Action::ListMetrics.into(),
            " shows the metrics of this project".into(),
        ]));
        assert_eq!(
            answer(list).hint.as_deref(),
            Some("`GET /api/v1/metrics` shows the metrics of this project")
        );
    }

    #[test]
    fn caps_name_parameters() {
        let over = lodestar_core::bounds::Bounds::default()
            .check_list(Field::Filter, 101)
            .unwrap_err();
        let error = answer(over);
        assert_eq!(error.code, OVER_LIMIT);
        assert_eq!(
            error.message,
            "parameter `filter`: 101 items asked, at most 100 (--max-list)"
        );
    }
}

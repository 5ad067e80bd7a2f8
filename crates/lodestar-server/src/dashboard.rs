//! The web dashboard at `/`: one HTML page, a stylesheet and a script, embedded in the binary.
//!
//! The page holds no data: its script asks the JSON API (with the bearer token the user pastes,
//! when the server has tokens), so the page and its assets are served without a token. It
//! holds no rules either: what to show (the grain, the last complete period, where retention
//! comes from) and every number's text come from `/api/v1/overview` and
//! `/api/v1/metrics/{name}/chart`, which apply lodestar-report's rules. Every
//! answer carries a Content-Security-Policy that allows only this origin: no inline script, no
//! CDN, no external font.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// `'self'` only; SVG drawn by the script uses attributes, not inline styles.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes (not part of the API, so not in openapi.json).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The assets change with the binary, not with the data: revalidate each load.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

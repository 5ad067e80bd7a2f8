//! HTTP hygiene before any handler runs: the URL and body size limits (414, 413), the `Host`
//! check of a server without tokens (421, against DNS rebinding), the CORS origins checked at
//! start, and the 500 answer to a request whose handler panicked.

use std::any::Any;
use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::AppState;
use crate::error::ApiError;
use crate::limits::{self, REQUEST_ID, format_bytes};

/// The largest request body read (the only body is `POST /api/v1/sql`'s JSON); more: 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The longest request target (path and query) answered; longer: 414.
pub const MAX_URL_BYTES: usize = 8 << 10;

/// Refuses requests too large to read, and, on a server without tokens, requests that do not
/// name it by a loopback name in `Host`.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let url = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if url > MAX_URL_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the URL is {url} bytes long; this server reads URLs of at most {}",
                format_bytes(MAX_URL_BYTES)
            ),
        )
        .with_hint("ask for less in one request: fewer `by` dimensions or filter values")
        .into_response();
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&n| n > MAX_BODY_BYTES as u64) {
        return body_too_large(Some(length)).into_response();
    }
    // The background refresh's own requests carry no `Host`.
    let internal = request
        .extensions()
        .get::<crate::cache::Refresh>()
        .is_some();
    let listen = state.listen();
    // With --allow-anonymous on a public address every name is meant to reach it.
    let loopback_only = listen.is_none_or(|addr| addr.ip().is_loopback());
    if state.anonymous() && loopback_only && !internal {
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
        if !host.as_deref().is_some_and(|h| host_allowed(h, listen)) {
            let port = listen.map_or_else(|| "PORT".to_string(), |a| a.port().to_string());
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                format!(
                    "{}; without tokens this server answers only requests addressed to localhost, 127.0.0.1 or [::1]",
                    match &host {
                        Some(host) => format!("`Host: {host}` does not name this server"),
                        None => "the request has no `Host` header".to_string(),
                    }
                ),
            )
            .with_hint(format!(
                "call http://127.0.0.1:{port}/ directly; to serve other names, configure tokens (docs/server.md#authentication)"
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// The 413 answer to a body over [`MAX_BODY_BYTES`] (`length`, when it was declared).
pub fn body_too_large(length: Option<u64>) -> ApiError {
    let size = match length {
        Some(n) => format!("the request body is {n} bytes"),
        None => "the request body is too large".to_string(),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "{size}; this server reads bodies of at most {}",
            format_bytes(MAX_BODY_BYTES)
        ),
    )
    .with_hint("send a shorter SQL statement")
}

/// Whether `host` (a `Host` header: name and optional port) is a loopback name of the server
/// listening on `listen`: `localhost`, `127.0.0.1`, `[::1]` or the listening address, without
/// a port or with the listening port.
fn host_allowed(host: &str, listen: Option<SocketAddr>) -> bool {
    let host = host.to_ascii_lowercase();
    let (name, port) = match host.rfind(':') {
        // `[::1]` alone has colons but no port.
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host.as_str(), None),
    };
    let port_ok = match (port, listen) {
        (None, _) => true,
        (Some(port), Some(addr)) => port.parse::<u16>() == Ok(addr.port()),
        (Some(port), None) => port.parse::<u16>().is_ok(),
    };
    let listen_name = listen.map(|addr| match addr {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    });
    let name_ok =
        matches!(name, "localhost" | "127.0.0.1" | "[::1]") || listen_name.as_deref() == Some(name);
    port_ok && name_ok
}

/// Checks that `origin` is `*` or an origin as a browser sends it in `Origin`:
/// `scheme://host[:port]`, nothing more.
pub fn check_cors_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("it has no scheme (such as `https://`)".into());
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !scheme_ok {
        return Err(format!("`{scheme}` is not a scheme in lower case"));
    }
    if rest.contains('/') {
        return Err("an origin has no path, not even a trailing `/`".into());
    }
    if rest.contains(['?', '#', '@']) {
        return Err("an origin has no query, fragment or user name".into());
    }
    let authority: axum::http::uri::Authority = rest
        .parse()
        .map_err(|_| format!("`{rest}` is not host[:port]"))?;
    if authority.host().is_empty() {
        return Err("it has no host".into());
    }
    let port = rest
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| !port.contains(']'));
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err("its port is not a number up to 65535".into());
    }
    if rest.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("browsers send host names in lower case".into());
    }
    HeaderValue::from_str(origin).map_err(|_| "it holds characters a header cannot".to_string())?;
    Ok(())
}

/// Catches a panic of the handler, per request: the request is answered 500 (code
/// `internal`, with its request id), the panic logged, and the server goes on.
pub fn catch_panic() -> CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response> {
    CatchPanicLayer::custom(panicked as fn(Box<dyn Any + Send + 'static>) -> Response)
}

// The signature CatchPanicLayer::custom takes: the panic's payload, owned.
#[allow(clippy::needless_pass_by_value)]
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    let id = limits::current_request_id();
    tracing::error!(
        request_id = id.as_deref().unwrap_or("-"),
        "a request failed with a panic (a bug; the server goes on): {what}"
    );
    let mut response = ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!(
            "the server failed while answering this request (request id {}); the failure is in its log",
            id.as_deref().unwrap_or("unknown")
        ),
    )
    .with_hint("this is a bug: report it with the request id; other requests are not affected")
    .into_response();
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn only_loopback_names_of_this_server_pass_the_host_check() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(host_allowed(host, Some(listen)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost:9999",
            "localhost.evil.example",
            "127.0.0.2:8080",
            "[::2]:8080",
            "",
        ] {
            assert!(!host_allowed(host, Some(listen)), "{host}");
        }
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert!(host_allowed("[::1]:9000", Some(v6)));
        assert!(!host_allowed("[::1]:8080", Some(v6)));
    }

    #[test]
    fn cors_origins_are_checked_as_browsers_send_them() {
        for good in [
            "*",
            "https://dash.example.com",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            assert_eq!(check_cors_origin(good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            ("dash.example.com", "no scheme"),
            ("https://dash.example.com/", "no path"),
            ("https://dash.example.com/app", "no path"),
            ("https://", "not host[:port]"),
            ("https://x.com:99999", "port"),
            ("https://Dash.example.com", "lower case"),
            ("HTTPS://dash.example.com", "not a scheme"),
            ("https://user@dash.example.com", "user name"),
            ("**", "no scheme"),
        ] {
            let error = check_cors_origin(bad)
                .err()
                .unwrap_or_else(|| panic!("`{bad}` was accepted"));
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }

    /// The same layers as `api::router` around a handler that panics.
    #[tokio::test]
    async fn a_panic_is_answered_500_with_the_request_id_and_the_server_goes_on() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    let empty: Vec<u32> = Vec::new();
                    // An out-of-bounds index, as a bug would have it.
                    empty[usize::from(empty.is_empty())].to_string()
                }),
            )
            .route("/fine", get(|| async { "fine" }))
            .layer(catch_panic())
            .layer(axum::middleware::from_fn(limits::observe));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-42\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let answer = get("/boom").await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("x-request-id: req-42"),
            "{answer}"
        );
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "internal", "{answer}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("(request id req-42)"),
            "{answer}"
        );
        // The server is still up.
        let fine = get("/fine").await;
        assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
        assert!(fine.ends_with("fine"), "{fine}");
    }
}

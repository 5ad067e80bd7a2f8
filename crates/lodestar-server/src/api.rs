//! The routes and their handlers: parameters in, core calls, wire types out.

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use lodestar_core::discovery::{DiscoveryRequest, MinSupport, Onboarding, Span};
use lodestar_core::model::Grain;
use lodestar_core::periods;
use lodestar_core::request::{Brackets, DateRange, EventColumn, Field, RequestError};
use lodestar_core::retention::{DayMode, EventSpec, Mode, RetentionRequest};
use lodestar_core::{Compare, MetricRequest, TreeRequest};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;
use crate::auth::{self, Role};
use crate::cache;
use crate::encode::{self, Format};
use crate::error::ApiError;
use crate::limits::{self, Limits};
use crate::metrics;
use crate::params::{Params, dimension_filter};
use crate::wire;

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/metrics", get(list_metrics))
        .route("/api/v1/metrics/{name}", get(get_metric))
        .route("/api/v1/metrics/{name}/series", get(series))
        .route("/api/v1/metrics/{name}/chart", get(chart))
        .route("/api/v1/tree", get(tree))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/report", get(report))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/retention", get(retention))
        .route("/api/v1/discover", get(discover))
        .route("/api/v1/sql", post(sql))
        .route_layer(middleware::from_fn_with_state(
            Limits::new(
                state.settings().max_concurrent_queries,
                state.settings().query_timeout,
            )
            .with_memory(state.query_memory_limit()),
            limits::limit,
        ))
        .route_layer(middleware::from_fn_with_state(
            std::sync::Arc::clone(state.cache()),
            cache::cached,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::measure,
        ));
    // Not cached nor counted as a query; behind the tokens: it shows the North Star values.
    let scrape = Router::new()
        .route("/metrics", get(metrics::exposition))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .merge(scrape)
        .merge(crate::dashboard::router())
        .fallback(not_found)
        // Bodies sent without a length stop being read here (413); declared ones in `guard`.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::hygiene::MAX_BODY_BYTES,
        ))
        .layer(crate::hygiene::catch_panic())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::hygiene::guard,
        ))
        .layer(middleware::from_fn(limits::observe));
    let router = match cors(&state.settings().cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    router.with_state(state)
}

/// CORS for the configured origins; invalid origins were refused when the server started.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE]),
    )
}

/// `POST /api/v1/sql` with `{"sql": "SELECT ..."}`: a read-only query, for admins, when
/// enabled.
async fn sql(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    if !state.settings().enable_sql {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sql_disabled",
            "ad-hoc SQL is disabled on this server",
        )
        .with_hint("start it with `lodestar serve --enable-sql`"));
    }
    if role != Role::Admin || state.tokens().is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "ad-hoc SQL needs an admin token",
        ));
    }
    #[derive(serde::Deserialize)]
    struct Query {
        sql: String,
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::hygiene::body_too_large(None)
        } else {
            ApiError::bad_request(format!(
                "the body cannot be read: {}",
                rejection.body_text()
            ))
        }
    })?;
    let query: Query = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not {{\"sql\": \"...\"}}: {e}")))?;
    let engine = state.engine();
    let df = engine.sql(&query.sql).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let batches = collect_capped(
        df,
        state.settings().sql_max_rows,
        state.settings().sql_max_bytes,
    )
    .await?;
    let batch = lodestar_core::datafusion::arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| ApiError::from(lodestar_core::Error::from(e)))?;
    match Format::of(&headers) {
        Format::Arrow => encode::arrow(&batch),
        Format::Json => encode::json(&serde_json::json!({ "rows": encode::rows(&batch)? })),
    }
}

type Answer = Result<Response, ApiError>;

/// The batches of an ad-hoc query, read as they come: past `max_rows` rows or `max_bytes` of
/// Arrow data the query is stopped (the stream dropped) and the answer is 413.
async fn collect_capped(
    df: lodestar_core::datafusion::dataframe::DataFrame,
    max_rows: usize,
    max_bytes: usize,
) -> Result<Vec<lodestar_core::datafusion::arrow::array::RecordBatch>, ApiError> {
    use futures::StreamExt;
    use lodestar_core::datafusion::arrow::array::Array;
    let failed = |e| ApiError::from(lodestar_core::Error::from(e));
    let mut stream = df.execute_stream().await.map_err(failed)?;
    let (mut rows, mut bytes, mut batches) = (0usize, 0usize, Vec::new());
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(failed)?;
        rows += batch.num_rows();
        // Of the rows in this batch only: a slice of a larger batch shares its buffers.
        bytes += batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum::<usize>();
        if rows > max_rows {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the query returns more than {max_rows} rows, the most one ad-hoc SQL answer may hold; it was stopped"
                ),
            )
            .with_hint("aggregate or add a LIMIT, or start the server with a larger --sql-max-rows"));
        }
        if bytes > max_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the query's answer holds more than {} of data, the most one ad-hoc SQL answer may hold; it was stopped",
                    limits::format_bytes(max_bytes)
                ),
            )
            .with_hint("select fewer columns or rows (LIMIT), or start the server with a larger --sql-max-bytes"));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// The OpenAPI document of these routes; a test keeps the two in step.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        .with_hint("the API is under /api/v1; docs/server.md lists the endpoints")
}

/// The process is up.
async fn healthz() -> Answer {
    encode::json(&wire::Health {
        status: "ok",
        project: None,
        metrics: None,
    })
}

/// The project is loaded and its sources are open: requests can be answered.
async fn readyz(State(state): State<AppState>) -> Answer {
    let engine = state.engine();
    encode::json(&wire::Health {
        status: "ready",
        project: Some(engine.project().path.display().to_string()),
        metrics: Some(engine.project().metrics.len()),
    })
}

/// Arrow is for tables; a document that is not one is refused in that format.
fn json_only(headers: &HeaderMap) -> Result<(), ApiError> {
    match Format::of(headers) {
        Format::Json => Ok(()),
        Format::Arrow => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this endpoint answers in JSON only",
        )
        .with_hint("Arrow is offered by series, tree, targets, retention and discover")),
    }
}

async fn list_metrics(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    Params::parse(query.as_deref(), &[]).finish()?;
    json_only(&headers)?;
    let engine = state.engine();
    encode::json(&wire::MetricList::of(engine.project()))
}

async fn get_metric(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    Params::parse(query.as_deref(), &[]).finish()?;
    json_only(&headers)?;
    let engine = state.engine();
    let metric = engine
        .project()
        .metric(&name)
        .map_err(ApiError::unknown_metric)?;
    encode::json(&wire::MetricInfo::from(metric))
}

const SERIES_PARAMS: &[&str] = &["grain", "from", "to", "by", "filter"];

async fn series(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let engine = state.engine();
    let metric = engine
        .project()
        .metric(&name)
        .map_err(ApiError::unknown_metric)?;
    let mut params = Params::parse(query.as_deref(), SERIES_PARAMS);
    let grain = params
        .grain("grain")?
        .or(metric.grain)
        .unwrap_or(Grain::Day);
    let DateRange { from, to } =
        DateRange::of_fields(params.date(Field::From)?, params.date(Field::To)?)?;
    let mut dimensions = Vec::new();
    for by in params.all("by") {
        for dimension in by.split(',') {
            if dimension.is_empty() {
                return Err(ApiError::bad_request(
                    "parameter `by` names an empty dimension",
                ));
            }
            dimensions.push(dimension.to_string());
        }
    }
    let mut known: Vec<&str> = Vec::new();
    for dimension in engine
        .project()
        .metrics
        .values()
        .flat_map(|m| &m.dimensions)
    {
        if !known.contains(&dimension.as_str()) {
            known.push(dimension);
        }
    }
    let filters = params.all("filter");
    // The engine carries the server's bounds, as for the checks the core makes itself.
    engine
        .bounds()
        .check_list(Field::Filter, filters.len())
        .map_err(ApiError::from)?;
    let filters = dimension_filter(&filters, &known)?;
    params.finish()?;
    let (filters, filter) = match filters {
        Some((groups, sql)) => (groups, Some(sql)),
        None => (Vec::new(), None),
    };
    let request = MetricRequest {
        metrics: vec![metric.name.clone()],
        grain,
        from,
        to,
        dimensions,
        filter,
    };
    let table = engine.compute(&request).await?;
    match Format::of(&headers) {
        Format::Arrow => encode::arrow(&table.batch),
        Format::Json => {
            let periods = table.periods();
            encode::json(&wire::Series {
                metric: metric.name.clone(),
                grain: grain.as_str(),
                from: periods.first().map(|d| d.format("%Y-%m-%d").to_string()),
                to: periods.last().map(|d| d.format("%Y-%m-%d").to_string()),
                dimensions: request.dimensions,
                filters: filters.into_iter().map(wire::FilterInfo::from).collect(),
                rows: encode::rows(&table.batch)?,
            })
        }
    }
}

/// `GET /api/v1/overview`: what the dashboard shows first, by the report's rules.
async fn overview(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    Params::parse(query.as_deref(), &[]).finish()?;
    json_only(&headers)?;
    let engine = state.engine();
    let overview = lodestar_report::overview::overview(&engine)
        .await
        .map_err(report_error)?;
    encode::json(&wire::Overview::from(&overview))
}

/// `GET /api/v1/metrics/{name}/chart`: a metric's series as the dashboard draws it, with its
/// complete periods, axis ticks and numbers as text.
async fn chart(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let engine = state.engine();
    let metric = engine
        .project()
        .metric(&name)
        .map_err(ApiError::unknown_metric)?;
    let mut params = Params::parse(query.as_deref(), &["grain", "by"]);
    let grain = params
        .grain("grain")?
        .or(metric.grain)
        .unwrap_or(Grain::Day);
    let by = params.one("by")?;
    params.finish()?;
    json_only(&headers)?;
    let last_complete = lodestar_report::overview::last_complete(&engine, &metric.name, grain)
        .await
        .map_err(report_error)?;
    let chart = lodestar_report::overview::chart(
        &engine,
        &metric.name,
        grain,
        by.as_deref(),
        last_complete,
    )
    .await
    .map_err(report_error)?;
    encode::json(&wire::Chart::from(&chart))
}

const REPORT_PARAMS: &[&str] = &[
    "metric",
    "grain",
    "period",
    "compare",
    "retention_grain",
    "retention_periods",
    "onboarded",
    "within",
    "retained",
    "window",
    "top",
];

/// The most candidates a report's ranking may show.
const MAX_REPORT_TOP: u32 = 100;

/// `GET /api/v1/report`: the page `lodestar report` writes, from what the project declares
/// (its retention metric, its onboarding events): no parameter names a table.
async fn report(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let engine = state.engine();
    let project = engine.project();
    let mut params = Params::parse(query.as_deref(), REPORT_PARAMS);
    let mut options = lodestar_report::Options {
        metric: params.one("metric")?,
        grain: params.grain("grain")?,
        retention_grain: params.grain("retention_grain")?,
        // Whether error hints may list values of the data: admins only, as for discovery.
        reveal_values: role == Role::Admin,
        support_floor: state.settings().min_support_floor,
        ..lodestar_report::Options::default()
    };
    if let Some(metric) = &options.metric {
        project.metric(metric).map_err(ApiError::unknown_metric)?;
    }
    if let Some(text) = params.one("period")? {
        let (grain, date) = periods::parse_period(&text)
            .map_err(|message| ApiError::bad_request(format!("parameter `period`: {message}")))?;
        options.period = Some((grain, date));
    }
    if let Some(text) = params.one("compare")? {
        options.compare = text
            .parse()
            .map_err(|message| ApiError::bad_request(format!("parameter `compare`: {message}")))?;
    }
    if let Some(periods) = params.number("retention_periods")? {
        options.retention_periods = periods;
    }
    if let Some(text) = params.one("onboarded")? {
        // As for `GET /api/v1/discover`: a read token asks for a declared onboarding event,
        // in the declared activity table.
        if role != Role::Admin
            && (!declares_onboarding(project, &Onboarding::of(project, &text))
                || project.discovery.activity.is_none())
        {
            return Err(undeclared("onboarded", &text, project));
        }
        options.onboarded = Some(text);
    }
    if let Some(span) = params.parsed::<Span>("within")? {
        options.within = span;
    }
    if let Some(span) = params.parsed::<Span>("retained")? {
        options.retained = span;
    }
    options.window = params.parsed::<Span>("window")?;
    if let Some(top) = params.number("top")? {
        if top == 0 || top > MAX_REPORT_TOP {
            return Err(ApiError::bad_request(format!(
                "parameter `top`: the ranking shows 1 to {MAX_REPORT_TOP} candidates, not {top}"
            )));
        }
        options.top = top as usize;
    }
    params.finish()?;
    if Format::of(&headers) == Format::Arrow {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this endpoint answers in HTML only",
        ));
    }
    let html = lodestar_report::render(&engine, &options, &crate::error::ServerVoice)
        .await
        .map_err(report_error)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(REPORT_CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        html,
    )
        .into_response())
}

/// The report holds no script and fetches nothing: only its inline stylesheet and style
/// attributes are allowed.
pub const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                              form-action 'none'; frame-ancestors 'none'";

fn report_error(e: lodestar_report::Error) -> ApiError {
    ApiError::from(e.into_core())
}

const TREE_PARAMS: &[&str] = &["root", "grain", "period", "compare"];

async fn tree(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let engine = state.engine();
    let mut params = Params::parse(query.as_deref(), TREE_PARAMS);
    let root = params.one("root")?;
    if let Some(root) = &root {
        engine
            .project()
            .metric(root)
            .map_err(ApiError::unknown_metric)?;
    }
    let grain = params.grain("grain")?;
    let (period_grain, period) = match params.one("period")? {
        Some(text) => {
            let (grain, date) = periods::parse_period(&text).map_err(|message| {
                ApiError::bad_request(format!("parameter `period`: {message}"))
            })?;
            (grain, Some(date))
        }
        None => (None, None),
    };
    let compare = match params.one("compare")? {
        None => Compare::Previous,
        Some(text) => text
            .parse()
            .map_err(|message| ApiError::bad_request(format!("parameter `compare`: {message}")))?,
    };
    params.finish()?;
    let request = TreeRequest {
        root,
        grain: grain.or(period_grain),
        period,
        compare,
    };
    let tree = engine.tree(&request).await?;
    match Format::of(&headers) {
        Format::Arrow => encode::arrow(&tree.to_record_batch()?),
        Format::Json => encode::json(&wire::Tree::from(&tree)),
    }
}

async fn targets(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let engine = state.engine();
    let mut params = Params::parse(query.as_deref(), &["metric"]);
    let metric = params.one("metric")?;
    params.finish()?;
    if let Some(metric) = &metric {
        engine
            .project()
            .metric(metric)
            .map_err(ApiError::unknown_metric)?;
    }
    let statuses = engine.targets(metric.as_deref()).await?;
    match Format::of(&headers) {
        Format::Arrow => encode::arrow(&lodestar_core::targets::to_record_batch(&statuses)?),
        Format::Json => encode::json(&wire::Targets {
            targets: statuses.iter().map(wire::TargetValue::from).collect(),
        }),
    }
}

const RETENTION_PARAMS: &[&str] = &[
    "cohort",
    "activity",
    "entity",
    "activity_entity",
    "grain",
    "periods",
    "mode",
    "brackets",
    "calendar",
    "from",
    "to",
];

async fn retention(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let engine = state.engine();
    let mut params = Params::parse(query.as_deref(), RETENTION_PARAMS);
    let (cohort, activity) = retention_events(&engine, role, &mut params).await?;
    let grain = params.grain("grain")?.unwrap_or(Grain::Week);
    let periods = params.number("periods")?;
    let mode = match (params.one("brackets")?, params.one("mode")?.as_deref()) {
        (Some(text), _) => {
            let Brackets(brackets) = parse_param(Field::Brackets, &text)?;
            Mode::Brackets(brackets)
        }
        (None, None | Some("on")) => Mode::On,
        (None, Some("on-or-after")) => Mode::OnOrAfter,
        (None, Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "parameter `mode`: `{other}` is not `on` or `on-or-after`"
            )));
        }
    };
    let days = if params.flag("calendar")? {
        DayMode::Calendar
    } else {
        DayMode::Rolling
    };
    let from = params.date(Field::From)?;
    let to = params.date(Field::To)?;
    params.finish()?;
    let request = RetentionRequest {
        cohort,
        activity,
        grain,
        mode,
        days,
        periods,
        // SQL fragments (filters, value aggregates) are ad-hoc SQL: not on the read API.
        value: None,
        from,
        to,
    };
    let result = engine.retention(&request).await?;
    match Format::of(&headers) {
        Format::Arrow => encode::arrow(&result.to_record_batch()?),
        Format::Json => encode::json(&wire::RetentionTable::from(&result)),
    }
}

const DISCOVER_PARAMS: &[&str] = &[
    "onboarded",
    "within",
    "retained",
    "window",
    "activity",
    "event_column",
    "entity",
    "max_k",
    "min_support",
    "from",
    "to",
    "validate_on",
];

/// `GET /api/v1/discover`: candidate value moments, as `lodestar discover` ranks them. The
/// parameters are the CLI's options (`--max-k` is `max_k`), less `--where`: SQL is not on
/// the read API.
async fn discover(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let engine = state.engine();
    let mut params = Params::parse(query.as_deref(), DISCOVER_PARAMS);
    let onboarded = params.required("onboarded")?;
    let admin = role == Role::Admin;
    let project = engine.project();
    let onboarding = Onboarding::of(project, &onboarded);
    // A read token asks only for what the project declares under `discovery:`: its
    // onboarding events (by name, or as written there), its activity table and columns.
    if !admin && !declares_onboarding(project, &onboarding) {
        return Err(undeclared("onboarded", &onboarded, project));
    }
    let mut request = DiscoveryRequest::new(onboarding);
    // Only admins see values of the data in hints.
    request.reveal_values = admin;
    if let Some(text) = params.one("activity")? {
        let (table, time) = lodestar_core::discovery::parse_table_column(&text)
            .map_err(|message| ApiError::from(RequestError::about(Field::Activity, message)))?;
        request.activity = Some(table);
        request.activity_time = time;
    }
    request.event_column = params.one("event_column")?;
    request.entity = params.one("entity")?;
    if !admin {
        let declared = &project.discovery;
        let Some((declared_table, declared_time)) = &declared.activity else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the project declares no activity table (`discovery: activity:`), so read tokens cannot ask for discovery",
            ));
        };
        // The declared activity table, with its declared time column if one is given.
        let activity = request.activity.as_ref().is_none_or(|table| {
            table == declared_table
                && request
                    .activity_time
                    .as_ref()
                    .is_none_or(|t| t == declared_time)
        });
        let undeclared = [
            ("activity", !activity),
            (
                "event_column",
                request.event_column.is_some() && request.event_column != declared.event_column,
            ),
            (
                "entity",
                request.entity.is_some() && request.entity != declared.entity,
            ),
        ];
        if let Some((name, _)) = undeclared.iter().find(|(_, bad)| *bad) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "parameter `{name}`: read tokens use what the project's `discovery:` declares; other tables and columns need an admin token"
                ),
            ));
        }
    }
    if let Some(span) = params.parsed::<Span>("within")? {
        request.within = span;
    }
    if let Some(span) = params.parsed::<Span>("retained")? {
        request.retained = span;
    }
    request.window = params.parsed::<Span>("window")?;
    if let Some(k) = params.number("max_k")? {
        let limit = lodestar_core::discovery::MAX_K_LIMIT;
        if k == 0 || k > limit {
            return Err(ApiError::bad_request(format!(
                "parameter `max_k`: thresholds go from 1 to {limit}, not {k}"
            )));
        }
        request.max_k = k;
    }
    request.min_support = params.parsed::<MinSupport>("min_support")?;
    let floor = state.settings().min_support_floor;
    if let Some(MinSupport::Users(users)) = request.min_support
        && users < floor
    {
        return Err(ApiError::bad_request(format!(
            "parameter `min_support`: {users} users asked, at least {floor} on this server (--min-support-floor)"
        ))
        .with_hint("groups this small would tell about a handful of people"));
    }
    // A share of a small cohort is raised to the floor too.
    request.support_floor = floor;
    request.cohorts = DateRange::of_fields(params.date(Field::From)?, params.date(Field::To)?)?;
    request.validate_on = params.parsed::<DateRange>("validate_on")?;
    params.finish()?;
    let discovery = engine.discover(&request).await?;
    let batch = discovery.to_record_batch()?;
    match Format::of(&headers) {
        Format::Arrow => encode::arrow(&batch),
        Format::Json => encode::json(&wire::Discovery::new(&discovery, encode::rows(&batch)?)),
    }
}

/// `text`, already taken from parameter `field`, read with the core's parser for it.
fn parse_param<T: std::str::FromStr<Err = String>>(
    field: Field,
    text: &str,
) -> Result<T, ApiError> {
    text.parse::<T>()
        .map_err(|message| RequestError::about(field, message).into())
}

/// The cohort and activity of a retention request: an onboarding the project declares
/// (`cohort=NAME`, with its declared activity table), or for admin tokens ad-hoc tables
/// (`cohort=source.table.column&activity=source.table.column&entity=COLUMN`). A read token
/// sees only what the project declares.
async fn retention_events(
    engine: &lodestar_core::Engine,
    role: Role,
    params: &mut Params,
) -> Result<(EventSpec, EventSpec), ApiError> {
    let cohort = params.required("cohort")?;
    let activity = params.one("activity")?;
    let entity = params.one("entity")?;
    let activity_entity = params.one("activity_entity")?;
    if let Some(declared) = engine.declared_retention(&cohort).await? {
        let extra = [
            ("activity", &activity),
            ("entity", &entity),
            ("activity_entity", &activity_entity),
        ];
        if let Some((name, _)) = extra.iter().find(|(_, v)| v.is_some()) {
            return Err(ApiError::bad_request(format!(
                "parameter `{name}`: onboarding `{cohort}` comes with the project's activity table and entity"
            ))
            .with_hint("leave it out; `discovery:` in the project file declares them"));
        }
        return Ok(declared);
    }
    if role != Role::Admin && !cohort.contains('.') {
        return Err(undeclared("cohort", &cohort, engine.project()));
    }
    let entity = entity.ok_or_else(|| {
        ApiError::bad_request(
            "parameter `entity` is required with tables named by their columns (cohort=source.table.column)",
        )
    })?;
    let activity_entity = activity_entity.unwrap_or_else(|| entity.clone());
    let activity =
        activity.ok_or_else(|| ApiError::bad_request("parameter `activity` is required"))?;
    let (cohort_spec, activity_spec) = (
        parse_param::<EventColumn>(Field::Cohort, &cohort)?.events(entity, None),
        parse_param::<EventColumn>(Field::Activity, &activity)?.events(activity_entity, None),
    );
    let declared = engine.project().declares_retention(
        (&cohort_spec.table, &cohort_spec.time),
        (&activity_spec.table, &activity_spec.time),
        (&cohort_spec.entity, &activity_spec.entity),
    );
    if role != Role::Admin && !declared {
        return Err(undeclared("cohort", &cohort, engine.project()));
    }
    Ok((cohort_spec, activity_spec))
}

/// A read token named an onboarding the project does not declare: 403 for a table's column
/// (only admins name tables), 400 for an unknown name.
fn undeclared(param: &str, text: &str, project: &lodestar_core::model::Project) -> ApiError {
    let names: Vec<&str> = project
        .discovery
        .onboarding
        .keys()
        .map(String::as_str)
        .collect();
    let hint = if names.is_empty() {
        "the project declares no onboarding events: add them under `discovery: onboarding:` in the project file".to_string()
    } else {
        format!("the project declares: {}", names.join(", "))
    };
    if text.contains('.') {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "parameter `{param}`: naming a table's column needs an admin token; read tokens ask for the onboarding events the project declares"
            ),
        )
        .with_hint(hint)
    } else {
        ApiError::bad_request(format!(
            "parameter `{param}`: `{text}` is not an onboarding event the project declares"
        ))
        .with_hint(hint)
    }
}

/// Whether `onboarding` is one the project's `discovery:` declares.
fn declares_onboarding(project: &lodestar_core::model::Project, onboarding: &Onboarding) -> bool {
    use lodestar_core::model::OnboardingDef;
    project
        .discovery
        .onboarding
        .values()
        .any(|def| match (def, onboarding) {
            (OnboardingDef::Event(a), Onboarding::Event(b)) => a == b,
            (OnboardingDef::Column { table, time }, Onboarding::Column { table: t, time: c }) => {
                table == t && c.as_deref() == Some(time.as_str())
            }
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    /// `(method, path)` of every `.route(...)` in this file's router.
    fn routes_in_router() -> BTreeSet<(String, String)> {
        let source = include_str!("api.rs");
        let marker = concat!(".route", "(\"");
        let mut routes = BTreeSet::new();
        for (at, _) in source.match_indices(marker) {
            let rest = &source[at + marker.len()..];
            let path = &rest[..rest.find('"').unwrap()];
            let after = rest[path.len() + 1..].trim_start_matches([',', ' ', '\n']);
            let method = &after[..after.find('(').unwrap()];
            routes.insert((method.to_uppercase(), path.to_string()));
        }
        routes
    }

    fn routes_in_openapi() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut routes = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
        routes
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let router = routes_in_router();
        assert!(
            router.len() >= 10,
            "the scan found too few routes: {router:?}"
        );
        let openapi = routes_in_openapi();
        let missing: Vec<_> = router.difference(&openapi).collect();
        let extra: Vec<_> = openapi.difference(&router).collect();
        assert!(
            missing.is_empty(),
            "routes missing from openapi.json: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "openapi.json lists routes the server lacks: {extra:?}"
        );
    }

    /// Each documented route is answered by the real router, not by its fallback.
    #[tokio::test]
    async fn every_documented_route_is_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("data/events.csv"),
            "user_id,event_time\nu1,2026-01-01T10:00:00\n",
        )
        .unwrap();
        let project = dir.path().join("lodestar.yaml");
        std::fs::write(
            &project,
            "sources:\n  app: { connector: files, path: data }\nmetrics:\n  events: { table: app.events, time: event_time, measure: count(*) }\n",
        )
        .unwrap();
        let engine = lodestar_core::Engine::open(lodestar_core::config::load(&project).unwrap())
            .await
            .unwrap();
        let app = router(AppState::new(engine, crate::Settings::default()));
        for (method, path) in routes_in_openapi() {
            let uri = path.replace("{name}", "events");
            let request = Request::builder()
                .method(method.as_str())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = String::from_utf8_lossy(&body);
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("\"not_found\""),
                "{method} {uri}: {status} {body}"
            );
        }
    }
}

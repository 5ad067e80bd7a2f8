//! `lodestar serve`: the HTTP API over lodestar-core, on axum and tokio.
//!
//! The server loads the project and opens its sources once, like the CLI, then answers
//! requests from the shared [`Engine`]. It is the only crate that knows HTTP and the JSON wire
//! shapes: handlers (`api`) call the core and convert its results into the response types of
//! `wire` explicitly, so the core can change without changing the API. docs/server.md is the
//! user's guide.

mod api;
mod auth;
mod cache;
mod dashboard;
mod encode;
mod error;
mod hygiene;
mod limits;
mod metrics;
mod params;
mod reload;
mod serve;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use lodestar_core::{Engine, config};
use tokio::net::TcpListener;

pub use crate::api::router;
pub use crate::auth::{Role, Tokens, TokensError};
pub use crate::error::{ApiError, Error, Result};
pub use crate::hygiene::{MAX_BODY_BYTES, MAX_URL_BYTES, check_cors_origin};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project file.
    pub project: PathBuf,
    /// Where to listen; port 0 picks a free port (see [`Server::local_addr`]).
    pub listen: SocketAddr,
    pub settings: Settings,
}

/// What the server allows, beyond the project.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Accepted bearer tokens; none: authentication is off.
    pub tokens: Tokens,
    /// Whether admins may run ad-hoc SQL (`POST /api/v1/sql`).
    pub enable_sql: bool,
    /// Origins allowed to call the API from a browser (`*`: any); none: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Queries answered at once; more get 503 with `Retry-After`.
    pub max_concurrent_queries: usize,
    /// How long a request may take before it is stopped with 504.
    pub query_timeout: std::time::Duration,
    /// How often the data is checked for changes (cached answers are recomputed when it
    /// changed); also the `max-age` of answers.
    pub refresh_interval: std::time::Duration,
    /// The memory one request's queries may hold (beyond it they spill to disk, or fail with
    /// 507); `None`: the engine's memory limit shared evenly by the query slots.
    pub query_memory_limit: Option<usize>,
    /// The caps on what one request may ask for (400 beyond them).
    pub bounds: lodestar_core::bounds::Bounds,
    /// The least `min_support` a value-moment discovery may use, in users: a small group
    /// would let a caller learn about a handful of people.
    pub min_support_floor: u64,

    // -- Operational limits and fail-closed authentication (docs/server.md "Running it"). --
    /// The tokens file `tokens` was read from, read again on SIGHUP (with the environment's).
    pub tokens_file: Option<PathBuf>,
    /// Serve without tokens on an address that is not loopback.
    pub allow_anonymous: bool,
    /// Bytes of answers the cache keeps; `None`: [`default_answer_cache_size`].
    pub answer_cache_size: Option<usize>,
    /// Rows an ad-hoc SQL answer may have; more: 413.
    pub sql_max_rows: usize,
    /// Bytes (as Arrow data in memory) an ad-hoc SQL answer may hold; more: 413.
    pub sql_max_bytes: usize,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Time to receive a request's headers (also how long a keep-alive connection may idle).
    pub header_timeout: std::time::Duration,
    /// After SIGTERM, how long requests in flight may take before they are cancelled.
    pub shutdown_timeout: std::time::Duration,
    /// The Ballista cluster that runs the queries, over `engine.cluster` of the project
    /// (`--cluster`; docs/cluster.md).
    pub cluster: Option<lodestar_core::model::ClusterUrl>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            tokens: Tokens::default(),
            enable_sql: false,
            cors_origins: Vec::new(),
            max_concurrent_queries: DEFAULT_MAX_CONCURRENT_QUERIES,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            query_memory_limit: None,
            bounds: lodestar_core::bounds::Bounds::default(),
            min_support_floor: DEFAULT_MIN_SUPPORT_FLOOR,
            tokens_file: None,
            allow_anonymous: false,
            answer_cache_size: None,
            sql_max_rows: DEFAULT_SQL_MAX_ROWS,
            sql_max_bytes: DEFAULT_SQL_MAX_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            cluster: None,
        }
    }
}

/// Default of [`Settings::min_support_floor`].
pub const DEFAULT_MIN_SUPPORT_FLOOR: u64 = 10;
/// Default of [`Settings::sql_max_rows`].
pub const DEFAULT_SQL_MAX_ROWS: usize = 100_000;
/// Default of [`Settings::sql_max_bytes`].
pub const DEFAULT_SQL_MAX_BYTES: usize = 64 << 20;
/// Default of [`Settings::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`Settings::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Default of [`Settings::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The answer cache's size when not set: a sixteenth of the engine's memory limit (which is
/// half the machine's memory by default), between 16 MiB and 1 GiB; 64 MiB when unknown.
pub fn default_answer_cache_size(engine_memory_limit: Option<usize>) -> usize {
    engine_memory_limit.map_or(64 << 20, |total| (total / 16).clamp(16 << 20, 1 << 30))
}

/// Default of [`Settings::max_concurrent_queries`].
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 16;
/// Default of [`Settings::refresh_interval`].
pub const DEFAULT_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Default of [`Settings::query_timeout`].
pub const DEFAULT_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The smallest default per-query memory limit, however many query slots share the engine's.
const MIN_DEFAULT_QUERY_MEMORY: usize = 64 << 20;
/// The per-query memory limit when the engine's own is unknown.
const FALLBACK_QUERY_MEMORY: usize = 512 << 20;

/// What every request handler shares: the engine over the loaded project.
///
/// Cloning is cheap (one `Arc`). The engine sits behind a lock so that a reloaded project can
/// replace it; a request takes its own clone (two `Arc`s) and keeps using it to the end.
#[derive(Debug, Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    engine: RwLock<Engine>,
    settings: Settings,
    cache: Arc<cache::Cache>,
    metrics: metrics::Metrics,
    /// The memory limit of each request's queries, in bytes.
    query_memory: usize,
    /// The accepted tokens, replaced when SIGHUP reloads them.
    tokens: RwLock<Arc<Tokens>>,
    /// Whether the server started without tokens (fixed: a reload never empties them).
    anonymous: bool,
    /// Where the server listens, for the `Host` check; `None` for a router without a server.
    listen: Option<SocketAddr>,
    /// The North Star values `/metrics` shows, computed in the background.
    north_stars: tokio::sync::watch::Sender<Option<Arc<metrics::NorthStars>>>,
}

impl AppState {
    pub fn new(engine: Engine, settings: Settings) -> AppState {
        AppState::build(engine, settings, None)
    }

    fn build(engine: Engine, settings: Settings, listen: Option<SocketAddr>) -> AppState {
        let cache_size = settings
            .answer_cache_size
            .unwrap_or_else(|| default_answer_cache_size(engine.memory_limit()));
        let query_memory = settings.query_memory_limit.unwrap_or_else(|| {
            engine
                .memory_limit()
                .map_or(FALLBACK_QUERY_MEMORY, |total| {
                    (total / settings.max_concurrent_queries.max(1)).max(MIN_DEFAULT_QUERY_MEMORY)
                })
        });
        AppState {
            shared: Arc::new(Shared {
                query_memory,
                engine: RwLock::new(engine),
                cache: Arc::new(cache::Cache::new(settings.refresh_interval, cache_size)),
                tokens: RwLock::new(Arc::new(settings.tokens.clone())),
                anonymous: settings.tokens.is_empty(),
                listen,
                north_stars: tokio::sync::watch::Sender::new(None),
                settings,
                metrics: metrics::Metrics::default(),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Serves a newly loaded project from now on; requests in flight finish on the old one.
    fn replace_engine(&self, engine: Engine) {
        *self
            .shared
            .engine
            .write()
            .unwrap_or_else(PoisonError::into_inner) = engine;
        self.shared.cache.invalidate();
    }

    /// The tokens accepted now.
    pub(crate) fn tokens(&self) -> Arc<Tokens> {
        Arc::clone(
            &self
                .shared
                .tokens
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Accepts `tokens` from now on, instead of the previous ones.
    fn replace_tokens(&self, tokens: Tokens) {
        *self
            .shared
            .tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
    }

    /// Whether the server started without any token.
    pub(crate) fn anonymous(&self) -> bool {
        self.shared.anonymous
    }

    /// Where the server listens (`None` for a router tested without a server).
    pub(crate) fn listen(&self) -> Option<SocketAddr> {
        self.shared.listen
    }

    pub(crate) fn north_stars(
        &self,
    ) -> &tokio::sync::watch::Sender<Option<Arc<metrics::NorthStars>>> {
        &self.shared.north_stars
    }

    pub(crate) fn metrics(&self) -> &metrics::Metrics {
        &self.shared.metrics
    }

    pub(crate) fn cache(&self) -> &Arc<cache::Cache> {
        &self.shared.cache
    }

    /// The engine of the current project, for one request: its queries run in a memory pool
    /// of their own, bounded by the per-query limit ([`AppState::query_memory_limit`]).
    pub fn engine(&self) -> Engine {
        self.shared_engine()
            .with_memory_limit(self.shared.query_memory)
            .with_bounds(self.shared.settings.bounds)
    }

    /// The memory one request's queries may hold, in bytes.
    pub fn query_memory_limit(&self) -> usize {
        self.shared.query_memory
    }

    /// The engine of the current project, as loaded (for its project, not for queries).
    pub(crate) fn shared_engine(&self) -> Engine {
        self.shared
            .engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A server bound to its address, not yet answering.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    hangup: reload::Hangup,
}

impl Server {
    /// Loads the project, opens its sources and binds the listening socket.
    ///
    /// Fails closed: without tokens it listens on a loopback address only, unless
    /// [`Settings::allow_anonymous`]; and every CORS origin must be one a browser can send.
    pub async fn bind(options: &Options) -> Result<Server> {
        let settings = &options.settings;
        for origin in &settings.cors_origins {
            check_cors_origin(origin).map_err(|reason| Error::CorsOrigin {
                origin: origin.clone(),
                reason,
            })?;
        }
        if settings.tokens.is_empty()
            && !options.listen.ip().is_loopback()
            && !settings.allow_anonymous
        {
            return Err(Error::Anonymous {
                addr: options.listen,
            });
        }
        let project = load_project(&options.project, settings)?;
        let engine = Engine::open(project).await?;
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: options.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(Error::Serve)?;
        if settings.tokens.is_empty() {
            if local.ip().is_loopback() {
                tracing::warn!(
                    "no API tokens are configured: anyone on this machine can read the metrics at {local} (requests must name it in `Host`)"
                );
            } else {
                tracing::warn!(
                    "no API tokens are configured and --allow-anonymous is given: anyone who can reach {local} can read the metrics"
                );
            }
        }
        Ok(Server {
            listener,
            state: AppState::build(engine, settings.clone(), Some(local)),
            hangup: reload::catch_hangup(),
        })
    }

    /// The address the server listens on (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// Answers requests until `shutdown` completes, then stops accepting connections (the
    /// listening socket is closed: new connections are refused) and returns once the requests
    /// in flight are answered, or after [`Settings::shutdown_timeout`] with the ones still
    /// running cancelled. Idle keep-alive connections are closed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let app = router(self.state.clone());
        // A quarter of the query slots at most: requests keep the rest.
        let refresh_concurrency = (self.state.settings().max_concurrent_queries / 4).max(1);
        let refresher = tokio::spawn(cache::refresh(
            Arc::clone(self.state.cache()),
            self.state.clone(),
            app.clone(),
            self.state.settings().refresh_interval,
            refresh_concurrency,
        ));
        let watcher = tokio::spawn(reload::watch(
            self.state.clone(),
            self.state.settings().refresh_interval,
            self.hangup,
        ));
        let settings = self.state.settings();
        let limits = serve::ConnectionLimits {
            max_connections: settings.max_connections,
            header_timeout: settings.header_timeout,
            shutdown_timeout: settings.shutdown_timeout,
        };
        serve::serve(self.listener, app, limits, shutdown).await;
        refresher.abort();
        watcher.abort();
        Ok(())
    }
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and systemd send).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

/// The project file as the server computes it: `--cluster` over its `engine.cluster`.
pub(crate) fn load_project(
    path: &std::path::Path,
    settings: &Settings,
) -> lodestar_core::Result<lodestar_core::model::Project> {
    let mut project = config::load(path)?;
    if let Some(url) = &settings.cluster {
        project.engine.cluster = Some(url.clone());
    }
    Ok(project)
}

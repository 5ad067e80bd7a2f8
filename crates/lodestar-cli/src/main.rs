//! `lodestar`: the command line over lodestar-core. Parses arguments, calls the core, prints.

mod discover;
mod output;
mod render;
mod report;
mod spelling;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lodestar_connector_api::kit::error::causes;
use lodestar_core::model::{ClusterUrl, Grain};
use lodestar_core::periods;
use lodestar_core::request::{self, Brackets, EventColumn, Field, RequestError};
use lodestar_core::retention::{DayMode, Mode, RetentionRequest};
use lodestar_core::{Compare, Engine, MetricRequest, SegmentRequest, TreeRequest, bounds, config};

use crate::output::Format;

/// mimalloc rather than glibc's malloc: DataFusion's many short-lived buffers fragment glibc's
/// arenas, and its trimming returns pages only to fault them in again (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
Examples:
  lodestar validate
  lodestar list
  lodestar compute nights_booked bookings --grain month --from 2026-03-01
  lodestar compute revenue --by country --where \"platform = 'ios'\" --format csv
  lodestar tree nights_booked --grain week
  lodestar sql \"SELECT status, count(*) FROM app.bookings GROUP BY status\"";

/// Lodestar computes a North Star Metric and its input metrics, defined in SQL in one
/// lodestar.yaml, over your own data.
#[derive(Debug, Parser)]
#[command(name = "lodestar", version, after_help = EXAMPLES)]
struct Cli {
    /// The project file [default: lodestar.yaml in this directory or the nearest parent]
    #[arg(long, global = true, env = "LODESTAR_PROJECT", value_name = "PATH")]
    project: Option<PathBuf>,

    /// Log more to stderr (-v: debug, -vv: trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Print nothing but results and errors
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Compute from the data alone: neither read nor write the project's result cache
    /// (`cache:` in lodestar.yaml; docs/caching.md)
    #[arg(long, global = true)]
    no_cache: bool,

    /// Run the queries on this Ballista cluster's scheduler, e.g. df://scheduler:50050
    /// (overrides `engine.cluster` in lodestar.yaml; docs/cluster.md)
    #[arg(
        long,
        global = true,
        env = "LODESTAR_CLUSTER",
        value_name = "df://HOST:PORT"
    )]
    cluster: Option<ClusterUrl>,

    #[command(flatten)]
    bounds: BoundsArgs,

    #[command(subcommand)]
    command: Command,
}

/// The caps on one request (docs/cli.md "Limits"); `lodestar serve` applies them to every
/// HTTP request.
#[derive(Debug, Args)]
struct BoundsArgs {
    /// Periods on any time axis of one request: a series' range, a retention table's
    /// cohorts and periods
    #[arg(long, global = true, value_name = "N", default_value_t = bounds::DEFAULT_MAX_PERIODS, value_parser = clap::value_parser!(u32).range(1..))]
    max_periods: u32,
    /// Cells of one retention table (cohorts × periods)
    #[arg(long, global = true, value_name = "N", default_value_t = bounds::DEFAULT_MAX_CELLS, value_parser = clap::value_parser!(u64).range(1..))]
    max_cells: u64,
    /// Items of any list in one request: metrics, --by dimensions, filter values, brackets
    #[arg(long, global = true, value_name = "N", default_value_t = bounds::DEFAULT_MAX_LIST)]
    max_list: usize,
}

impl BoundsArgs {
    fn bounds(&self) -> bounds::Bounds {
        bounds::Bounds {
            max_periods: self.max_periods,
            max_cells: self.max_cells,
            max_list: self.max_list.max(1),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the project: names, references, and every SQL fragment against the sources
    Validate,
    /// List the metrics: kind, grain, north star, owner, inputs
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Compute metrics by period, optionally broken down by dimensions
    #[command(after_help = "\
Examples:
  lodestar compute nights_booked --grain month
  lodestar compute nights_booked bookings --grain week --from 2026-06-01 --to 2026-06-30
  lodestar compute revenue --by country --by platform --format csv --output revenue.csv
  lodestar compute bookings --where \"country IN ('FR', 'DE')\" --format json

Periods are labelled by their first day, in the project's timezone. --from and --to are
inclusive and widen to whole periods; without them the result covers the data's periods.")]
    Compute(ComputeArgs),
    /// Show the metric tree: each metric's value, change, and contribution to the root's change
    #[command(after_help = "\
Examples:
  lodestar tree
  lodestar tree nights_booked --grain month
  lodestar tree nights_booked --period 2026-W20 --compare yoy
  lodestar tree nights_booked --period 2026-07 --compare 2026-05

With a `formula`, a metric's change is split exactly between its inputs: by difference for
sums, by LMDI for products and quotients, by Shapley values otherwise. Without one, the
inputs' changes are shown side by side, unlinked.")]
    Tree {
        /// The root metric [default: the north stars]
        metric: Option<String>,
        /// Period length [default: the --period's, the root metric's grain, else week]
        #[arg(long, value_parser = parse_grain)]
        grain: Option<Grain>,
        /// The period: 2026-W20, 2026-05, 2026-Q2, 2026 or a date [default: the last complete one]
        #[arg(long)]
        period: Option<String>,
        /// Compare with: previous, yoy, or a period like --period [default: previous]
        #[arg(long, default_value = "previous")]
        compare: String,
        /// Print the tree as a table (json, csv...) instead of a drawing
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Which segments of a dimension explain a metric's change between two periods
    #[command(after_help = "\
Examples:
  lodestar segments bookings --by country
  lodestar segments conversion_rate --by platform --period 2026-W20 --compare yoy
  lodestar segments revenue --by country --period 2026-07 --format csv

A metric that adds up over segments (a count, a sum) is split by each segment's change. A ratio
is split into each segment's rate effect (its own ratio moved) and mix effect (its share of the
denominator moved); the parts sum to the ratio's change. Where segments overlap, the remainder
is shown as the residual.")]
    Segments {
        metric: String,
        /// The dimension to break the change down by
        #[arg(long = "by", value_name = "DIMENSION")]
        by: String,
        /// Period length [default: the --period's, the metric's grain, else week]
        #[arg(long, value_parser = parse_grain)]
        grain: Option<Grain>,
        /// The period: 2026-W20, 2026-05, 2026-Q2, 2026 or a date [default: the last complete one]
        #[arg(long)]
        period: Option<String>,
        /// Compare with: previous, yoy, or a period like --period [default: previous]
        #[arg(long, default_value = "previous")]
        compare: String,
        /// Print the segments as a table (json, csv...) instead of a summary
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Show each target: actual, expected to date, projected, and on track / at risk / off track
    #[command(after_help = "\
Expected: linear pacing from the value at the target's start to the target at its date.
Projected: a least-squares line through the last 8 complete periods, extended to that date.
On track if the projection reaches the target; at risk if it covers 90% of the way.")]
    Targets {
        /// Only this metric's target
        metric: Option<String>,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Cohort retention: of the entities that started in a period, how many came back
    #[command(after_help = "\
Examples:
  lodestar retention --cohort app.users.signed_up_at --activity app.events.event_time --entity user_id
  lodestar retention --cohort app.users.signed_up_at --activity app.bookings.booked_at \\
      --entity user_id --grain month --mode on-or-after --value 'sum(price)'
  lodestar retention --cohort app.users.signed_up_at --activity app.events.event_time \\
      --entity user_id --grain day --brackets 1-1,2-7,8-14,15-30 --calendar

A cohort too young for a period to have ended is left blank in that column.")]
    Retention(RetentionArgs),
    /// Value moments: which early activities go with users staying (correlation, not causation)
    #[command(after_help = discover::AFTER_HELP)]
    Discover(discover::DiscoverArgs),
    /// Write a self-contained HTML report: the North Star over time and against its target, the
    /// tree, retention and value moments
    #[command(after_help = report::AFTER_HELP)]
    Report(report::ReportArgs),
    /// Run a read-only SQL query over the sources (table `orders` of source `app` is app.orders)
    #[command(after_help = "\
Examples:
  lodestar sql \"SHOW TABLES\"
  lodestar sql \"SELECT * FROM app.bookings LIMIT 5\"
  lodestar sql \"DESCRIBE app.events\"")]
    Sql {
        query: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the connectors: built-in, and plugins found on the plugin path
    #[command(after_help = "\
Plugins are looked for in LODESTAR_PLUGIN_PATH (a path list), then plugins/ beside the
project file, then the directory of the lodestar binary.")]
    Connectors {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Serve the HTTP API over the project (docs/server.md)
    #[command(after_help = "\
Examples:
  lodestar serve
  lodestar --project /srv/metrics/lodestar.yaml serve --listen 0.0.0.0:8080 --tokens-file tokens

Stops on Ctrl-C or SIGTERM after answering the requests in flight (at most
--shutdown-timeout seconds). Without tokens it listens on loopback only, unless
--allow-anonymous is given.")]
    Serve {
        /// The address and port to listen on (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// Accepted tokens, as `ROLE SHA256-HEX [label]` lines (also LODESTAR_READ_TOKENS and
        /// LODESTAR_ADMIN_TOKENS, in clear, comma separated)
        #[arg(long, env = "LODESTAR_TOKENS_FILE", value_name = "PATH")]
        tokens_file: Option<PathBuf>,
        /// Let admin tokens run ad-hoc SQL (POST /api/v1/sql)
        #[arg(long)]
        enable_sql: bool,
        /// Allow browsers on this origin to call the API (repeatable; `*` for any)
        #[arg(long = "cors-origin", value_name = "ORIGIN")]
        cors_origins: Vec<String>,
        /// Queries answered at once; more get 503 with Retry-After
        #[arg(long, default_value_t = lodestar_server::DEFAULT_MAX_CONCURRENT_QUERIES, value_name = "N")]
        max_concurrent: usize,
        /// Seconds a request may take before it is stopped with 504
        #[arg(long, default_value_t = lodestar_server::DEFAULT_QUERY_TIMEOUT.as_secs(), value_name = "SECONDS")]
        query_timeout: u64,
        /// Seconds between checks of the data for changes (cached answers are dropped then)
        #[arg(long, default_value_t = lodestar_server::DEFAULT_REFRESH_INTERVAL.as_secs(), value_name = "SECONDS")]
        refresh_interval: u64,
        /// Memory one request's queries may use, e.g. 512MiB (beyond: spill to disk, or 507);
        /// default: the engine's memory limit divided by --max-concurrent
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        query_memory_limit: Option<usize>,
        /// Users each group of a value-moment candidate needs at least, whatever a request
        /// asks (`min_support` of /api/v1/discover)
        #[arg(long, default_value_t = lodestar_server::DEFAULT_MIN_SUPPORT_FLOOR, value_name = "USERS")]
        min_support_floor: u64,

        // -- Operational limits and fail-closed authentication (docs/server.md). --
        /// Serve without tokens on an address that is not loopback (anyone who can reach it
        /// reads the metrics)
        #[arg(long)]
        allow_anonymous: bool,
        /// Memory for cached answers, e.g. 256MiB; an answer over a quarter of it is sent
        /// uncached [default: a sixteenth of the engine's memory limit, 16MiB to 1GiB]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        answer_cache_size: Option<usize>,
        /// Rows an ad-hoc SQL answer may have; a larger one is stopped and answered 413
        #[arg(long, default_value_t = lodestar_server::DEFAULT_SQL_MAX_ROWS, value_name = "N")]
        sql_max_rows: usize,
        /// Data an ad-hoc SQL answer may hold, e.g. 64MiB; more is stopped and answered 413
        #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
        sql_max_bytes: usize,
        /// Connections served at once; more wait to be accepted
        #[arg(long, default_value_t = lodestar_server::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
        max_connections: usize,
        /// Seconds a client has to send a request's headers; also how long an idle
        /// keep-alive connection stays open
        #[arg(long, default_value_t = lodestar_server::DEFAULT_HEADER_TIMEOUT.as_secs(), value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        header_timeout: u64,
        /// Seconds the requests in flight may take after SIGTERM before they are cancelled
        #[arg(long, default_value_t = lodestar_server::DEFAULT_SHUTDOWN_TIMEOUT.as_secs(), value_name = "SECONDS")]
        shutdown_timeout: u64,
    },
    /// Manage the result cache of incremental refresh (`cache:` in lodestar.yaml)
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Run a node of a Ballista cluster that computes Lodestar projects (docs/cluster.md)
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print a shell completion script (e.g. `lodestar completions bash > ~/.local/share/bash-completion/completions/lodestar`)
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Run the scheduler: clients send it their queries, it plans them and hands the tasks
    /// to the executors
    #[command(after_help = "\
Examples:
  lodestar cluster scheduler --bind 0.0.0.0:50050 --external-host scheduler

Prints `lodestar cluster scheduler: listening on ADDR` on stderr once clients can connect.")]
    Scheduler {
        /// The address and port to listen on (port 0: any free port)
        #[arg(long, default_value = "0.0.0.0:50050", value_name = "ADDR:PORT")]
        bind: std::net::SocketAddr,
        /// The host name executors reach the scheduler by [default: the bound address]
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Seconds without a heartbeat after which an executor is taken for dead and its
        /// tasks run elsewhere [default: Ballista's, 180]
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        executor_timeout: Option<u64>,
    },
    /// Run an executor: it registers with the scheduler and runs the tasks it is given,
    /// reopening the projects' sources with its own connectors and plugins
    #[command(after_help = "\
Examples:
  lodestar cluster executor --scheduler df://scheduler:50050 --external-host executor-1

Plugins are found as `lodestar` finds them: LODESTAR_PLUGIN_PATH, the project's plugins/
directory, then the directory of the lodestar binary.")]
    Executor {
        /// The scheduler to register with
        #[arg(long, value_name = "df://HOST:PORT")]
        scheduler: ClusterUrl,
        /// The address to listen on
        #[arg(long, default_value = "0.0.0.0", value_name = "ADDR")]
        bind_host: String,
        /// The host name the scheduler, other executors and clients reach this one by
        /// [default: the bind address]
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Arrow Flight port: results and shuffle data are fetched from it
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// gRPC port: the scheduler sends tasks to it
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks run at once [default: one per core]
        #[arg(long, default_value_t = 0, value_name = "N")]
        concurrency: usize,
        /// Where shuffle data is written [default: a temporary directory]
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Memory for the tasks' operators, e.g. 8GiB; beyond it they spill [default:
        /// Ballista's share of the machine]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        memory_limit: Option<usize>,
        /// Seconds between heartbeats to the scheduler [default: Ballista's, 60]
        #[arg(long, value_name = "SECONDS")]
        heartbeat: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Delete every cached result: the next computation reads all the data again
    Clear,
    /// Show where the cache is and how much it holds
    Info,
}

#[derive(Debug, Args)]
struct ComputeArgs {
    /// Metrics to compute, in the order of the output columns
    #[arg(required = true, value_name = "METRIC")]
    metrics: Vec<String>,
    /// Period length [default: the first metric's grain, else day]
    #[arg(long, value_parser = parse_grain)]
    grain: Option<Grain>,
    /// First day (YYYY-MM-DD), inclusive
    #[arg(long, value_parser = request::parse_date)]
    from: Option<NaiveDate>,
    /// Last day (YYYY-MM-DD), inclusive
    #[arg(long, value_parser = request::parse_date)]
    to: Option<NaiveDate>,
    /// Break down by a dimension (repeatable)
    #[arg(long = "by", value_name = "DIMENSION")]
    by: Vec<String>,
    /// Keep only rows matching an SQL predicate over dimensions, before aggregating
    #[arg(long = "where", value_name = "PREDICATE")]
    filter: Option<String>,
    /// Instead of the result, print the scans the request made: each one's table, metrics,
    /// rows and bytes read, and SQL; `--explain analyze` adds each scan's time
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        default_missing_value = "scans",
        value_parser = ["scans", "analyze"]
    )]
    explain: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct RetentionArgs {
    /// The cohort event: source.table.time_column (each entity's first row defines its cohort)
    #[arg(long, value_name = "SOURCE.TABLE.COLUMN")]
    cohort: EventColumn,
    /// The activity: source.table.time_column
    #[arg(long, value_name = "SOURCE.TABLE.COLUMN")]
    activity: EventColumn,
    /// The entity column (in both tables, unless --activity-entity is given)
    #[arg(long)]
    entity: String,
    /// The entity column of the activity table, if named differently
    #[arg(long)]
    activity_entity: Option<String>,
    /// Only cohort rows matching this SQL predicate
    #[arg(long)]
    cohort_filter: Option<String>,
    /// Only activity rows matching this SQL predicate (e.g. "event = 'booking'")
    #[arg(long)]
    activity_filter: Option<String>,
    /// Cohort and period length: day, week or month
    #[arg(long, value_parser = parse_grain, default_value = "week")]
    grain: Grain,
    /// Show periods 0..=N [default: as far as the data reaches]
    #[arg(long)]
    periods: Option<u32>,
    /// on: active in period N; on-or-after: in N or later
    #[arg(long, default_value = "on", value_parser = ["on", "on-or-after"])]
    mode: String,
    /// Custom brackets of periods, e.g. 1-1,2-7,8-30 (overrides --mode)
    #[arg(long)]
    brackets: Option<Brackets>,
    /// Count periods on the calendar instead of 24-hour windows from each cohort event
    #[arg(long)]
    calendar: bool,
    /// Also aggregate this over activity rows (revenue retention), e.g. "sum(price)"
    #[arg(long)]
    value: Option<String>,
    /// First cohort day (YYYY-MM-DD)
    #[arg(long, value_parser = request::parse_date)]
    from: Option<NaiveDate>,
    /// Last cohort day (YYYY-MM-DD)
    #[arg(long, value_parser = request::parse_date)]
    to: Option<NaiveDate>,
    /// Print the long table (csv, json...) instead of the triangle
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Debug, Args)]
struct OutputArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write to this file (atomically) instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

/// `--period` (which may also set the grain) and `--compare`, as `tree` and `segments` take them.
fn period_and_compare(
    period: Option<&str>,
    compare: &str,
) -> Result<(Option<Grain>, Option<NaiveDate>, Compare), lodestar_core::Error> {
    let (grain, period) = match period.map(periods::parse_period) {
        Some(Ok((g, date))) => (g, Some(date)),
        Some(Err(message)) => return Err(RequestError::about(Field::Period, message).into()),
        None => (None, None),
    };
    let compare = compare
        .parse()
        .map_err(|message: String| RequestError::about(Field::Compare, message))?;
    Ok((grain, period, compare))
}

fn parse_grain(s: &str) -> Result<Grain, String> {
    s.parse()
}

/// Exit codes: documented in docs/cli.md.
const EXIT_USER_ERROR: u8 = 1;
const EXIT_INTERNAL_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USER_ERROR),
            };
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Planning recurses over a query's plan: a cluster scheduler given discovery's query
        // overflowed tokio's default 2 MiB (in a debug build). Reserved, not committed.
        .thread_stack_size(16 << 20)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL_ERROR);
        }
    };
    let result = runtime.block_on(run(cli));
    // Work cancelled at a deadline (`serve`'s shutdown timeout) may leave blocking threads
    // behind, such as a file read; dropping the runtime would wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<ValidationFailed>().is_none() {
                print_error(e.as_ref());
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "warn,lodestar={level},lodestar_core={level},lodestar_server={}",
            if verbose == 0 && !quiet {
                "info"
            } else {
                level
            }
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // One JSON object per line, for log collectors (documented in docs/server.md).
    if std::env::var("LODESTAR_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Prints the error and its causes, skipping causes the message already shows; the core's
/// errors name the request's fields as options ([`spelling::Flags`]).
fn print_error(e: &(dyn std::error::Error + 'static)) {
    let parts = causes(e, spelling::describe);
    let (message, causes) = parts.split_first().expect("an error has a message");
    eprintln!("error: {message}");
    for cause in causes {
        eprintln!("  caused by: {cause}");
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ValidationFailed>().is_some() {
        return EXIT_USER_ERROR;
    }
    let user_error = e
        .chain()
        .find_map(|c| c.downcast_ref::<lodestar_core::Error>())
        .is_none_or(lodestar_core::Error::is_user_error);
    // Errors the CLI raises itself (bad output path, Parquet to a terminal) are the user's.
    if user_error {
        EXIT_USER_ERROR
    } else {
        EXIT_INTERNAL_ERROR
    }
}

/// `validate` found problems; each was already printed.
#[derive(Debug)]
struct ValidationFailed;

impl std::fmt::Display for ValidationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the project has errors")
    }
}

impl std::error::Error for ValidationFailed {}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "lodestar",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    if let Command::Connectors { format } = cli.command {
        // A project is optional here: it only adds its plugins/ directory to the search.
        let path = match &cli.project {
            Some(path) => Some(path.clone()),
            None => config::find_project_file(&std::env::current_dir()?).ok(),
        };
        let root = path.as_deref().and_then(Path::parent);
        return render::connectors(root, format == ListFormat::Json);
    }
    if let Command::Cluster(command) = cli.command {
        return cluster(command).await;
    }
    let path = match &cli.project {
        Some(path) => path.clone(),
        None => config::find_project_file(&std::env::current_dir()?)?,
    };
    if let Command::Serve {
        listen,
        tokens_file,
        enable_sql,
        cors_origins,
        max_concurrent,
        query_timeout,
        refresh_interval,
        query_memory_limit,
        min_support_floor,
        allow_anonymous,
        answer_cache_size,
        sql_max_rows,
        sql_max_bytes,
        max_connections,
        header_timeout,
        shutdown_timeout,
    } = cli.command
    {
        let tokens = lodestar_server::Tokens::load(tokens_file.as_deref())?;
        let settings = lodestar_server::Settings {
            tokens,
            enable_sql,
            cors_origins,
            max_concurrent_queries: max_concurrent,
            query_timeout: Duration::from_secs(query_timeout),
            refresh_interval: Duration::from_secs(refresh_interval.max(1)),
            query_memory_limit,
            bounds: cli.bounds.bounds(),
            min_support_floor,
            tokens_file,
            allow_anonymous,
            answer_cache_size,
            sql_max_rows,
            sql_max_bytes,
            max_connections: max_connections.max(1),
            header_timeout: Duration::from_secs(header_timeout),
            shutdown_timeout: Duration::from_secs(shutdown_timeout),
            cluster: cli.cluster,
        };
        return serve(path, listen, settings).await;
    }
    let mut project = config::load(&path)?;
    if let Some(url) = cli.cluster {
        project.engine.cluster = Some(url);
    }
    if let Command::Cache(command) = &cli.command {
        return cache_command(&project, command);
    }
    if cli.no_cache {
        project.cache = None;
    }
    let engine = Engine::open(project)
        .await?
        .with_bounds(cli.bounds.bounds());
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Validate => validate(&engine, &progress).await,
        Command::List { format } => render::list(engine.project(), format == ListFormat::Json),
        Command::Compute(args) => compute(&engine, args, &progress).await,
        Command::Tree {
            metric,
            grain,
            period,
            compare,
            format,
        } => {
            let (period_grain, period, compare) = period_and_compare(period.as_deref(), &compare)?;
            let request = TreeRequest {
                root: metric,
                grain: grain.or(period_grain),
                period,
                compare,
            };
            progress.start("computing the metric tree");
            let tree = engine.tree(&request).await;
            progress.finish();
            let tree = tree?;
            match format {
                Some(format) => output::write_batch(&tree.to_record_batch()?, format),
                None => {
                    // Targets of the tree's metrics, shown under it.
                    let mut statuses = Vec::new();
                    for root in &tree.roots {
                        if engine.project().metrics[&root.metric].target.is_some() {
                            statuses.extend(engine.targets(Some(&root.metric)).await?);
                        }
                    }
                    render::tree(engine.project(), &tree);
                    if !statuses.is_empty() {
                        println!();
                        render::targets(&statuses);
                    }
                    Ok(())
                }
            }
        }
        Command::Segments {
            metric,
            by,
            grain,
            period,
            compare,
            format,
        } => {
            let (period_grain, period, compare) = period_and_compare(period.as_deref(), &compare)?;
            let request = SegmentRequest {
                metric,
                dimension: by,
                grain: grain.or(period_grain),
                period,
                compare,
            };
            progress.start("computing segments");
            let analysis = engine.segments(&request).await;
            progress.finish();
            let analysis = analysis?;
            match format {
                Some(format) => output::write_batch(&analysis.to_record_batch()?, format),
                None => {
                    render::segments(&analysis);
                    Ok(())
                }
            }
        }
        Command::Targets { metric, format } => {
            progress.start("computing targets");
            let statuses = engine.targets(metric.as_deref()).await;
            progress.finish();
            let statuses = statuses?;
            match format {
                Some(format) => output::write_batch(
                    &lodestar_core::targets::to_record_batch(&statuses)?,
                    format,
                ),
                None => {
                    render::targets(&statuses);
                    Ok(())
                }
            }
        }
        Command::Retention(args) => {
            let format = args.format;
            let request = retention_request(args);
            progress.start("computing retention");
            let result = engine.retention(&request).await;
            progress.finish();
            let result = result?;
            match format {
                Some(format) => output::write_batch(&result.to_record_batch()?, format),
                None => {
                    render::retention(&result, request.value.is_some());
                    Ok(())
                }
            }
        }
        Command::Discover(args) => {
            let request = args.request(&engine)?;
            progress.start("looking for value moments");
            let discovery = engine.discover(&request).await;
            progress.finish();
            discover::print(&discovery?, &args)
        }
        Command::Report(args) => {
            progress.start("building the report");
            let result = report::run(&engine, &args).await;
            progress.finish();
            result?;
            if !cli.quiet {
                eprintln!("wrote {}", args.output.display());
            }
            Ok(())
        }
        Command::Sql { query, output } => {
            let df = engine.sql(&query).await?;
            let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
            progress.start("running the query");
            let batches = df.collect().await;
            progress.finish();
            let batches = batches.map_err(lodestar_core::Error::from)?;
            output::write(&schema, &batches, output.format, output.output.as_deref())
        }
        Command::Completions { .. }
        | Command::Connectors { .. }
        | Command::Serve { .. }
        | Command::Cluster(_)
        | Command::Cache(_) => {
            unreachable!("handled above")
        }
    }
}

fn cache_command(
    project: &lodestar_core::model::Project,
    command: &CacheCommand,
) -> anyhow::Result<()> {
    let Some(settings) = &project.cache else {
        anyhow::bail!(
            "{} has no `cache:` settings, so nothing is cached\n  hint: add `cache: {{ dir: .lodestar-cache, lookback: 3d }}` to cache per-period results (docs/caching.md)",
            project.path.display()
        );
    };
    match command {
        CacheCommand::Clear => {
            let removed = lodestar_core::cache::clear(settings)?;
            println!(
                "removed {removed} cached file{} from {}",
                if removed == 1 { "" } else { "s" },
                settings.dir.display()
            );
        }
        CacheCommand::Info => {
            let (files, bytes) = lodestar_core::cache::usage(settings)?;
            println!(
                "{}: {files} file{}, {bytes} bytes; look-back {} days",
                settings.dir.display(),
                if files == 1 { "" } else { "s" },
                settings.lookback
            );
        }
    }
    Ok(())
}

/// A size such as `512MiB`, for clap.
fn parse_size(text: &str) -> Result<usize, String> {
    match config::parse_bytes(text) {
        Some(0) => Err("the size must be more than 0".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!(
            "`{text}` is not a size: write a number with a unit, e.g. 512MiB or 2GiB"
        )),
    }
}

async fn serve(
    project: PathBuf,
    listen: std::net::SocketAddr,
    settings: lodestar_server::Settings,
) -> anyhow::Result<()> {
    let options = lodestar_server::Options {
        project,
        listen,
        settings,
    };
    let server = lodestar_server::Server::bind(&options).await?;
    // On stderr whatever the log level: scripts and tests read the port chosen for port 0.
    eprintln!(
        "lodestar serve: listening on http://{}",
        server.local_addr()?
    );
    server.run(lodestar_server::shutdown_signal()).await?;
    Ok(())
}

/// `lodestar cluster scheduler|executor`: runs until stopped.
async fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Scheduler {
            bind,
            external_host,
            executor_timeout,
        } => {
            let options = lodestar_cluster::SchedulerOptions {
                bind,
                external_host,
                executor_timeout_seconds: executor_timeout,
            };
            lodestar_cluster::run_scheduler(options, |addr| {
                // On stderr whatever the log level: scripts and tests read the port.
                eprintln!("lodestar cluster scheduler: listening on {addr}");
            })
            .await
            .context("the scheduler stopped")
        }
        ClusterCommand::Executor {
            scheduler,
            bind_host,
            external_host,
            port,
            grpc_port,
            concurrency,
            work_dir,
            memory_limit,
            heartbeat,
        } => {
            eprintln!(
                "lodestar cluster executor: serving on {bind_host}:{port} (tasks on {grpc_port}), registering with {scheduler}"
            );
            let options = lodestar_cluster::ExecutorOptions {
                scheduler,
                bind_host,
                external_host,
                port,
                grpc_port,
                concurrency,
                work_dir,
                memory_limit: memory_limit.map(|m| m as u64),
                heartbeat_seconds: heartbeat,
            };
            lodestar_cluster::run_executor(options)
                .await
                .context("the executor stopped")
        }
    }
}

async fn validate(engine: &Engine, progress: &Progress) -> anyhow::Result<()> {
    progress.start("checking every metric against the sources");
    let errors = engine.validate().await;
    progress.finish();
    let project = engine.project();
    if errors.is_empty() {
        println!(
            "{} is valid: {}, {}",
            display_path(&project.path),
            plural(project.metrics.len(), "metric"),
            plural(project.sources.len(), "source")
        );
        return Ok(());
    }
    for error in &errors {
        print_error(error);
    }
    eprintln!(
        "{} has {}",
        display_path(&project.path),
        plural(errors.len(), "error")
    );
    Err(ValidationFailed.into())
}

async fn compute(engine: &Engine, args: ComputeArgs, progress: &Progress) -> anyhow::Result<()> {
    let project = engine.project();
    let grain = match args.grain {
        Some(grain) => grain,
        None => project
            .metric(&args.metrics[0])?
            .grain
            .unwrap_or(Grain::Day),
    };
    let request = MetricRequest {
        metrics: args.metrics,
        grain,
        from: args.from,
        to: args.to,
        dimensions: args.by,
        filter: args.filter,
    };
    progress.start(&format!("computing {}", request.metrics.join(", ")));
    let table = engine.compute(&request).await;
    progress.finish();
    let table = table?;
    if let Some(mode) = &args.explain {
        render::scans(&table.scans, mode == "analyze");
        return Ok(());
    }
    for breach in engine.guardrail_breaches(&table).await? {
        eprintln!(
            "warning: {} {}: {} rose while its guardrail {} worsened from {} to {}",
            grain,
            periods::label(breach.period, grain),
            breach.metric,
            breach.guardrail,
            breach.before,
            breach.after
        );
    }
    output::write(
        &table.schema(),
        std::slice::from_ref(&table.batch),
        args.output.format,
        args.output.output.as_deref(),
    )
    .context("writing the result")
}

fn retention_request(args: RetentionArgs) -> RetentionRequest {
    let mode = match args.brackets {
        Some(Brackets(brackets)) => Mode::Brackets(brackets),
        None if args.mode == "on-or-after" => Mode::OnOrAfter,
        None => Mode::On,
    };
    let activity_entity = args
        .activity_entity
        .clone()
        .unwrap_or_else(|| args.entity.clone());
    RetentionRequest {
        cohort: args.cohort.events(args.entity, args.cohort_filter),
        activity: args.activity.events(activity_entity, args.activity_filter),
        grain: args.grain,
        mode,
        days: if args.calendar {
            DayMode::Calendar
        } else {
            DayMode::Rolling
        },
        periods: args.periods,
        value: args.value,
        from: args.from,
        to: args.to,
    }
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// A spinner on stderr while a query runs, only when a person is watching (stdout and stderr
/// both terminals: a piped or redirected result means a script is running us).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let watched = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = (!quiet && watched).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            bar
        });
        Progress { bar }
    }

    fn start(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

//! The same projects on a Ballista cluster on loopback: `lodestar cluster scheduler` and two
//! `lodestar cluster executor`s, child processes of the test, computing what a local run
//! computes — the example project, a `dt=`-partitioned lake of Parquet files, Parquet on S3
//! through the `s3` plugin (the in-process S3 server), and a PostgreSQL table through the
//! `postgres` plugin (a throwaway PostgreSQL cluster). Also: an executor that lacks the
//! plugin fails the query naming itself and the plugin, no node logs a source's secret, and
//! an executor killed mid-query gives an error or the right numbers, never a hang.
//!
//! The expected numbers are the local run's: the cluster must give the same rows and values
//! (numbers within 1e-9 relative).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{
    Run, Table, cell_matches, example_project, lodestar, lodestar_bin, lodestar_project,
    workspace_root,
};

/// How long a node may take to start listening.
const START: Duration = Duration::from_secs(60);

/// Logging of the nodes: Lodestar's and Ballista's debug lines (plans, tasks), without the
/// wire-level chatter of the HTTP/2 stack.
const NODE_LOG: &str =
    "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info,reqwest=info";

/// A child process, killed when dropped; its stderr goes to a file.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn spawn(mut cmd: Command, log: PathBuf) -> Node {
        let file = fs_err::File::create(&log).unwrap();
        cmd.stdout(Stdio::null())
            .stderr(file.into_parts().0)
            .env("RUST_LOG", NODE_LOG);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Node { child, log }
    }

    fn log(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scheduler and its executors on loopback.
struct Cluster {
    dir: TempDir,
    scheduler: Node,
    executors: Vec<Node>,
    url: String,
}

impl Cluster {
    /// A scheduler and `executors` executors, all the `lodestar` under test.
    fn start(executors: usize) -> Cluster {
        Cluster::start_with(executors, lodestar_bin())
    }

    /// A scheduler (the `lodestar` under test) and `executors` executors running `binary`.
    fn start_with(executors: usize, binary: &Path) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("lodestar-cluster-")
            .tempdir()
            .unwrap();
        let mut cmd = lodestar();
        cmd.args(["cluster", "scheduler", "--bind", "127.0.0.1:0"])
            // A killed executor is taken for dead within seconds, not Ballista's three minutes.
            .args(["--executor-timeout", "5"]);
        let scheduler = Node::spawn(cmd, dir.path().join("scheduler.log"));
        let addr = wait_for_line(&scheduler, "lodestar cluster scheduler: listening on ");
        let url = format!("df://{addr}");
        let mut cluster = Cluster {
            dir,
            scheduler,
            executors: Vec::new(),
            url,
        };
        for i in 0..executors {
            let (port, grpc_port) = (free_port(), free_port());
            let work = cluster.dir.path().join(format!("executor-{i}"));
            fs_err::create_dir_all(&work).unwrap();
            let mut cmd = if binary == lodestar_bin() {
                lodestar()
            } else {
                let mut other = Command::new(binary);
                other
                    .env_remove("LODESTAR_PLUGIN_PATH")
                    .current_dir(std::env::temp_dir());
                other
            };
            cmd.args(["cluster", "executor", "--scheduler", &cluster.url])
                .args(["--bind-host", "127.0.0.1"])
                .args(["--port", &port.to_string()])
                .args(["--grpc-port", &grpc_port.to_string()])
                .args(["--concurrency", "2", "--heartbeat", "1"])
                .arg("--work-dir")
                .arg(&work);
            let node = Node::spawn(cmd, cluster.dir.path().join(format!("executor-{i}.log")));
            wait_for_port(&node, port);
            cluster.executors.push(node);
        }
        cluster
    }

    fn url(&self) -> &str {
        &self.url
    }

    /// Every node's log, for failure messages and the secret check.
    fn logs(&self) -> String {
        let mut all = format!("--- scheduler\n{}", self.scheduler.log());
        for (i, node) in self.executors.iter().enumerate() {
            all.push_str(&format!("\n--- executor {i}\n{}", node.log()));
        }
        all
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `node`'s log has a line starting with `prefix`; returns the rest of it.
fn wait_for_line(node: &Node, prefix: &str) -> SocketAddr {
    let start = Instant::now();
    loop {
        if let Some(rest) = node.log().lines().find_map(|l| l.strip_prefix(prefix)) {
            return rest.trim().parse().unwrap();
        }
        assert!(
            start.elapsed() < START,
            "no `{prefix}` within {START:?}:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `node` accepts connections on `port`.
fn wait_for_port(node: &Node, port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < START,
            "the executor is not listening on {port} within {START:?}:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` with a bound on its time: a query on a cluster must end, with an answer or an
/// error. Returns the run, or panics after `limit` with the cluster's logs.
fn run_bounded(cmd: &mut Command, limit: Duration, cluster: &Cluster) -> Run {
    run_bounded_after(cmd, limit, cluster, |_| {})
}

/// [`run_bounded`], calling `meanwhile` with the running command once it has started.
fn run_bounded_after(
    cmd: &mut Command,
    limit: Duration,
    cluster: &Cluster,
    meanwhile: impl FnOnce(&mut Child),
) -> Run {
    let command = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    meanwhile(&mut child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` still ran after {limit:?}\n{}", cluster.logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        command,
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Asserts two CSV outputs have the same header and rows, numbers within 1e-9 relative.
fn assert_same(local: &Run, cluster: &Run) {
    let parse =
        |run: &Run| Table::parse(&run.stdout).unwrap_or_else(|e| panic!("not CSV: {e}\n{run}"));
    let (expected, actual) = (parse(local), parse(cluster));
    assert_eq!(expected.header, actual.header, "{cluster}");
    assert_eq!(expected.rows.len(), actual.rows.len(), "{local}\n{cluster}");
    assert!(!expected.rows.is_empty(), "nothing to compare: {local}");
    for (e, a) in expected.rows.iter().zip(&actual.rows) {
        assert!(
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| cell_matches(e, a)),
            "local row {e:?}, cluster row {a:?}\n{cluster}"
        );
    }
}

/// `args` on `project` locally, then on `cluster`; both must succeed with the same table.
fn compare(project: &Path, cluster: &Cluster, args: &[&str]) {
    compare_with(project, cluster, args, &[]);
}

fn compare_with(project: &Path, cluster: &Cluster, args: &[&str], env: &[(&str, &str)]) {
    let command = |cluster_url: Option<&str>| {
        let mut cmd = lodestar_project(project, args);
        cmd.arg("--no-cache");
        if let Some(url) = cluster_url {
            cmd.args(["--cluster", url]);
        }
        cmd.envs(env.iter().copied());
        cmd
    };
    let local = Run::of(&mut command(None)).success();
    let remote = run_bounded(
        &mut command(Some(cluster.url())),
        Duration::from_secs(300),
        cluster,
    );
    assert_eq!(remote.code, Some(0), "{remote}\n{}", cluster.logs());
    assert_same(&local, &remote);
}

/// The keys `crate::s3::project` reads through `${ENV}`.
const S3_KEYS: &[(&str, &str)] = &[
    ("LODESTAR_TEST_S3_KEY", lodestar_testkit::s3::ACCESS_KEY),
    ("LODESTAR_TEST_S3_SECRET", lodestar_testkit::s3::SECRET_KEY),
];

/// Every metric of the example project by week, broken down and filtered, its tree, a
/// retention table and the discovery of its value moments.
#[test]
fn the_example_project_computes_the_same_on_a_cluster() {
    let project = example_project();
    let cluster = Cluster::start(2);
    let list = Run::of(&mut lodestar_project(project, ["list", "--format", "json"])).success();
    let metrics: Vec<String> = serde_json::from_str::<serde_json::Value>(&list.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert!(metrics.len() >= 5, "{list}");
    let mut args = vec!["compute"];
    args.extend(metrics.iter().map(String::as_str));
    args.extend(["--grain", "week", "--format", "csv"]);
    compare(project, &cluster, &args);
    compare(
        project,
        &cluster,
        &[
            "compute",
            "nights_booked",
            "bookings",
            "--grain",
            "month",
            "--by",
            "country",
            "--where",
            "platform = 'ios'",
            "--format",
            "csv",
        ],
    );
    compare(
        project,
        &cluster,
        &["tree", "--grain", "month", "--format", "csv"],
    );
    compare(
        project,
        &cluster,
        &[
            "retention",
            "--cohort",
            "app.users.signed_up_at",
            "--activity",
            "app.events.event_time",
            "--entity",
            "user_id",
            "--format",
            "csv",
        ],
    );
    compare(
        project,
        &cluster,
        &[
            "discover",
            "--onboarded",
            "signup",
            "--window",
            "7d",
            "--format",
            "csv",
        ],
    );
}

/// A year of `dt=` folders read through `time_partition`: a month and the whole year (with a
/// text key's distinct count, and a trailing window's from the days' key sets), and a
/// retention metric whose outer join the cluster is made to run as a sort-merge join, the plan
/// Ballista falls back to when a join's build side is large (over 64 MiB a partition).
#[test]
fn a_partitioned_lake_computes_the_same_on_a_cluster() {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-cluster-lake-")
        .tempdir()
        .unwrap();
    crate::files_partitions::write_year(&dir.path().join("lake"));
    let project = dir.path().join("lodestar.yaml");
    fs_err::write(
        &project,
        "\
sources:
  app:
    connector: files
    path: lake/
    time_partition: { column: dt, time: event_time }
engine:
  cluster_settings:
    ballista.optimizer.hash_join_max_build_partition_bytes: 1
    ballista.optimizer.broadcast_join_threshold_bytes: 0
    ballista.optimizer.broadcast_join_threshold_rows: 0
metrics:
  events: { table: app.events, time: event_time, measure: count(*) }
  users: { table: app.events, time: event_time, measure: count(distinct user_id) }
  event_types: { table: app.events, time: event_time, measure: count(distinct event_type) }
  users_7d:
    { table: app.events, time: event_time, measure: count(distinct user_id), cumulative: { window: 7d } }
  returning:
    grain: day
    retention:
      cohort: app.events.event_time
      activity: app.events.event_time
      entity: user_id
      after: 1d
      window: 7d
      activity_filter: event_type = 'click'
",
    )
    .unwrap();
    let cluster = Cluster::start(2);
    compare(
        &project,
        &cluster,
        &[
            "compute",
            "events",
            "users",
            "event_types",
            "users_7d",
            "--grain",
            "week",
            "--format",
            "csv",
        ],
    );
    // User 0, first seen on Jan 1st, never clicks: the outer join's unmatched row. Users 1
    // and 2, first seen on the 2nd, both click on the 6th.
    let local = Run::of(&mut lodestar_project(
        &project,
        ["compute", "returning", "--format", "csv", "--no-cache"],
    ))
    .success();
    assert!(
        local.stdout.contains("2025-01-01,0.0\n2025-01-02,1.0\n"),
        "{local}"
    );
    compare(
        &project,
        &cluster,
        &["compute", "returning", "--format", "csv"],
    );
    compare(
        &project,
        &cluster,
        &[
            "compute",
            "events",
            "users",
            "--grain",
            "day",
            "--from",
            "2025-03-01",
            "--to",
            "2025-03-31",
            "--format",
            "csv",
        ],
    );
}

/// Parquet on S3 through the `s3` plugin, reopened by each executor from its own copy of the
/// plugin; the secret key reaches the nodes but none of them logs it.
#[test]
fn parquet_on_s3_through_the_plugin_computes_the_same_on_a_cluster() {
    let server = lodestar_testkit::s3::S3Server::start();
    crate::s3::write_lake(&server);
    let dir = crate::s3::project(&server, "    prefix: prod/\n", crate::s3::METRICS);
    let project = dir.path().join("lodestar.yaml");
    let cluster = Cluster::start(2);
    compare_with(
        &project,
        &cluster,
        &[
            "compute", "events", "revenue", "buyers", "--grain", "month", "--format", "csv",
        ],
        S3_KEYS,
    );
    let logs = cluster.logs();
    assert!(
        logs.contains("SourceScanExec"),
        "the scans did not run as plugin scans on the cluster:\n{logs}"
    );
    assert!(
        !logs.contains(lodestar_testkit::s3::SECRET_KEY),
        "a node logged the secret key"
    );
}

/// A Postgres table (the `postgres` plugin, a throwaway PostgreSQL cluster) by country, and a
/// metric joining it with a local CSV file: each executor opens its own connections; the
/// password travels with the plan and no node logs it.
#[test]
fn a_postgres_table_and_a_join_with_a_local_file_compute_the_same_on_a_cluster() {
    let db = crate::postgres_server::Database::new("cluster");
    crate::postgres::create_orders(&db, &crate::postgres::orders(300));
    let dir = crate::postgres::metrics_project(&db);
    let project = dir.path().join("lodestar.yaml");
    let cluster = Cluster::start(2);
    compare(
        &project,
        &cluster,
        &[
            "compute",
            "paid_revenue",
            "--by",
            "country",
            "--grain",
            "day",
            "--format",
            "csv",
        ],
    );
    compare(
        &project,
        &cluster,
        &["compute", "pro_orders", "--grain", "day", "--format", "csv"],
    );
    let logs = cluster.logs();
    assert!(logs.contains("SourceScanExec"), "{logs}");
    assert!(
        !logs.contains(crate::postgres_server::PASSWORD),
        "a node logged the database password"
    );
}

/// Executors without the plugin (a copy of the binary alone in a directory): the query fails,
/// naming the executor and the connector, and the cluster keeps serving.
#[test]
fn an_executor_without_the_plugin_fails_the_query_naming_itself_and_the_plugin() {
    let server = lodestar_testkit::s3::S3Server::start();
    crate::s3::write_lake(&server);
    let dir = crate::s3::project(&server, "    prefix: prod/\n", crate::s3::METRICS);
    let project = dir.path().join("lodestar.yaml");
    let bare = tempfile::Builder::new()
        .prefix("lodestar-bare-")
        .tempdir()
        .unwrap();
    let binary = bare.path().join("lodestar");
    fs_err::copy(lodestar_bin(), &binary).unwrap();
    let cluster = Cluster::start_with(1, &binary);
    let mut cmd = lodestar_project(
        &project,
        [
            "--no-cache",
            "--cluster",
            cluster.url(),
            "compute",
            "events",
            "--grain",
            "month",
        ],
    );
    cmd.envs(S3_KEYS.iter().copied());
    let run = run_bounded(&mut cmd, Duration::from_secs(300), &cluster);
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains("on executor 127.0.0.1:")
            && run.stderr.contains("unknown connector `s3`"),
        "{run}\n{}",
        cluster.logs()
    );
    assert!(
        !run.stderr.contains(lodestar_testkit::s3::SECRET_KEY),
        "{run}"
    );
}

/// An executor killed while a query runs: the query ends within a bound, with the local
/// numbers or an error, never a hang or other numbers.
#[test]
fn a_killed_executor_gives_an_error_or_the_right_numbers() {
    let project = example_project();
    let cluster = Cluster::start(2);
    let args = [
        "compute",
        "nights_booked",
        "bookings",
        "--grain",
        "day",
        "--by",
        "country",
        "--format",
        "csv",
    ];
    let local = Run::of(&mut lodestar_project(project, args)).success();
    let mut cmd = lodestar_project(project, args);
    cmd.args(["--no-cache", "--cluster", cluster.url()]);
    let victim = cluster.executors[0].child.id().to_string();
    let run = run_bounded_after(&mut cmd, Duration::from_secs(240), &cluster, |query| {
        std::thread::sleep(Duration::from_millis(300));
        // Otherwise the test would prove nothing about a loss mid-query.
        assert!(
            query.try_wait().unwrap().is_none(),
            "the query ended before the executor could be killed"
        );
        let killed = Command::new("kill")
            .args(["-KILL", &victim])
            .status()
            .unwrap();
        assert!(killed.success(), "cannot kill executor {victim}");
    });
    if run.code == Some(0) {
        assert_same(&local, &run);
    } else {
        assert!(
            run.stderr.starts_with("error: "),
            "not a clear error:\n{run}"
        );
    }
}

/// A bad address is refused where it is written: in the project file with its line, on the
/// command line as a usage error; an address where no scheduler listens fails the query with
/// the connection error, promptly.
#[test]
fn a_bad_or_unreachable_cluster_address_is_a_clear_error() {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-cluster-address-")
        .tempdir()
        .unwrap();
    let project = dir.path().join("lodestar.yaml");
    fs_err::write(
        &project,
        "engine:\n  cluster: http://scheduler:50050\nmetrics: {}\n",
    )
    .unwrap();
    let run = Run::of(&mut lodestar_project(&project, ["validate"])).expect_code(1);
    assert!(
        run.stderr.contains("lodestar.yaml:2:")
            && run.stderr.contains(
                "engine.cluster: `http://scheduler:50050` is not a cluster address: expected df://HOST or df://HOST:PORT"
            ),
        "{run}"
    );

    let run = Run::of(&mut lodestar_project(
        example_project(),
        ["--cluster", "scheduler:50050", "list"],
    ))
    .expect_code(1);
    assert!(run.stderr.contains("is not a cluster address"), "{run}");

    let url = format!("df://127.0.0.1:{}", free_port());
    let start = Instant::now();
    let run = Run::of(&mut lodestar_project(
        example_project(),
        ["--no-cache", "--cluster", &url, "compute", "bookings"],
    ));
    assert_eq!(run.code, Some(2), "an engine failure:\n{run}");
    assert!(start.elapsed() < Duration::from_secs(60), "{run}");
    assert!(run.stderr.starts_with("error: "), "{run}");
    assert!(
        run.stderr.contains("127.0.0.1"),
        "the error names no address:\n{run}"
    );
}

/// The commands of the deployment files (`deploy/cluster/`), which this machine cannot run in
/// containers: each one's arguments must be ones the `lodestar` under test accepts. `--help`
/// after them makes the command stop once they are parsed, and parsing stops at the first
/// argument it does not know.
#[test]
fn the_deployment_files_give_arguments_lodestar_accepts() {
    let mut checked = 0;
    for file in ["docker-compose.yaml", "kubernetes.yaml"] {
        let path = workspace_root().join("deploy/cluster").join(file);
        let text = fs_err::read_to_string(&path).unwrap();
        // Each command is a flow list, `command: [...]` or `args: [...]`, in JSON's syntax.
        for key in ["command: [", "args: ["] {
            for (at, _) in text.match_indices(key) {
                let start = at + key.len() - 1;
                let end = start + text[start..].find(']').unwrap() + 1;
                let args: Vec<String> = serde_json::from_str(&text[start..end])
                    .unwrap_or_else(|e| panic!("{file}: {} is not a list: {e}", &text[start..end]));
                let run = Run::of(lodestar().args(&args).arg("--help")).success();
                assert!(run.stdout.contains("Usage:"), "{file}: {args:?}\n{run}");
                checked += 1;
            }
        }
    }
    // The compose file's scheduler, two executors and server; the manifests' three.
    assert_eq!(checked, 7);
}

//! `lodestar-bench cluster`: the `lake` benchmark's tree (`lake/lodestar.yaml` over a year of
//! hive-partitioned Parquet) computed in one process, then on a Ballista cluster on loopback
//! of 1 and 2 executors (`lodestar cluster scheduler|executor`, release binaries beside this
//! one), over the whole year and its last four weeks.
//!
//! Each cluster run checks its numbers against the local run's before it times anything. Per
//! variant: the median wall time of a request (the whole tree in one request), the client's
//! peak memory, each node's peak memory (`VmHWM`, read before the node is stopped), and the
//! bytes the executors wrote to their work directories per request — the shuffle files,
//! final results included, that Ballista moves between stages and to the client. A cluster
//! is started afresh for each variant, so peaks and bytes are the variant's own. The table is
//! printed and written as JSON under `TARGET/bench/cluster-N.json`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::lake::{self, MEMORY_LIMIT, Range, run_child, status_kib, target_dir};
use crate::lake_data;

pub const USAGE: &str = "\
       lodestar-bench cluster [--events N] [--runs N] [--threads N] [--executors 1,2]";

#[derive(Debug)]
struct Options {
    events: u64,
    runs: usize,
    threads: usize,
    executors: Vec<usize>,
}

/// `cluster ARGS`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut options = Options {
        events: 10_000_000,
        runs: 5,
        threads: std::thread::available_parallelism().map_or(4, usize::from),
        executors: vec![1, 2],
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value\nusage:{USAGE}"))?;
        match flag.as_str() {
            "--events" => options.events = lake::parse_count(value).context("--events")?,
            "--runs" => options.runs = value.parse().context("--runs")?,
            "--threads" => options.threads = value.parse().context("--threads")?,
            "--executors" => {
                options.executors = value
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--executors takes counts such as 1,2")?;
            }
            other => bail!("unknown flag {other}\nusage:{USAGE}"),
        }
    }
    options.runs = options.runs.max(1);
    options.threads = options.threads.max(1);
    options.executors.retain(|&n| n > 0);
    bench(&options)
}

fn bench(options: &Options) -> anyhow::Result<()> {
    let target = target_dir()?;
    let (shape, dir, project) = lake::data_set(&target, lake::LAKE, options.events)?;
    let exe = std::env::current_exe()?;
    let lodestar = exe.with_file_name(format!("lodestar{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        lodestar.is_file(),
        "no `lodestar` binary at {}\nhint: `cargo xtask bench cluster` builds it beside the bench",
        lodestar.display()
    );
    let nodes_dir = target.join("bench-cluster");

    let mut rows = Vec::new();
    for range in lake::ranges() {
        let events = lake::events_in(range, shape);
        eprintln!("cluster: {} — one process", range.name);
        let child = |cluster: Option<&str>, expect: Option<&Path>| {
            let mut command = Command::new(&exe);
            command
                .args(["lake-child", "--project"])
                .arg(&project)
                .args([
                    "--mode",
                    "fused",
                    "--threads",
                    &options.threads.to_string(),
                    "--runs",
                    &options.runs.to_string(),
                ]);
            if let Some((from, to)) = range.bounds {
                command.args(["--from", &from.to_string(), "--to", &to.to_string()]);
            }
            if let Some(url) = cluster {
                command.args(["--cluster", url]);
            }
            if let Some(expect) = expect {
                command.arg("--expect").arg(expect);
            }
            command
        };
        let local = run_child(&mut child(None, None), "Lodestar in one process")?;
        let expected = dir.join(".expected-local.json");
        fs_err::write(&expected, serde_json::to_string(&local["metrics"])?)?;
        let local_seconds = local["median_seconds"].as_f64().unwrap_or(f64::NAN);
        rows.push(row(
            range,
            events,
            "one process",
            &local,
            local_seconds,
            &json!([]),
            None,
        ));

        for &executors in &options.executors {
            let label = format!(
                "cluster, {executors} executor{}",
                if executors == 1 { "" } else { "s" }
            );
            eprintln!("cluster: {} — {label}", range.name);
            let cluster = Loopback::start(&lodestar, &nodes_dir, executors, options.threads)?;
            let out = run_child(&mut child(Some(&cluster.url), Some(&expected)), &label)
                .with_context(|| format!("the nodes' logs are in {}", nodes_dir.display()))?;
            // The check run and the timed runs each wrote their shuffle files.
            let requests = options.runs as u64 + 1;
            let shuffle = cluster.work_bytes()? / requests;
            let nodes = cluster.peaks();
            drop(cluster);
            rows.push(row(
                range,
                events,
                &label,
                &out,
                local_seconds,
                &nodes,
                Some(shuffle),
            ));
        }
    }

    print_table(options, &rows);
    let report = json!({
        "benchmark": "cluster",
        "events": options.events,
        "days": lake_data::DAYS,
        "runs": options.runs,
        "threads": options.threads,
        "memory_limit": MEMORY_LIMIT,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": lake::machine(),
        "rows": rows,
    });
    let out = target
        .join("bench")
        .join(format!("cluster-{}.json", options.events));
    fs_err::create_dir_all(out.parent().expect("a parent"))?;
    fs_err::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten to {}", out.display());
    Ok(())
}

fn row(
    range: Range,
    events: u64,
    variant: &str,
    out: &Value,
    local_seconds: f64,
    nodes: &Value,
    shuffle_bytes: Option<u64>,
) -> Value {
    let seconds = out["median_seconds"].as_f64().unwrap_or(f64::NAN);
    json!({
        "range": range.name,
        "variant": variant,
        "median_seconds": seconds,
        "vs_one_process": seconds / local_seconds,
        "events": events,
        "rows_per_second": events as f64 / seconds,
        "client_peak_rss_bytes": out["peak_rss_bytes"],
        "nodes": nodes,
        "shuffle_bytes_per_request": shuffle_bytes,
    })
}

fn print_table(options: &Options, rows: &[Value]) {
    println!(
        "\ncluster: {} events, {} threads, median of {} runs ({} build)\n",
        options.events,
        options.threads,
        options.runs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "| range        | variant              | wall time  | / one process | client peak | shuffle / request | node peaks (MiB) |"
    );
    println!(
        "|--------------|----------------------|------------|---------------|-------------|-------------------|------------------|"
    );
    let mib = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64;
    for row in rows {
        let nodes: Vec<String> = row["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                format!(
                    "{} {:.0}",
                    n["node"].as_str().unwrap_or_default(),
                    mib(&n["peak_rss_bytes"])
                )
            })
            .collect();
        let shuffle = match row["shuffle_bytes_per_request"].as_f64() {
            Some(bytes) => format!("{:.1} MiB", bytes / (1 << 20) as f64),
            None => "—".into(),
        };
        println!(
            "| {:<12} | {:<20} | {:>8.1}ms | {:>13.2} | {:>7.0} MiB | {:>17} | {} |",
            row["range"].as_str().unwrap_or_default(),
            row["variant"].as_str().unwrap_or_default(),
            row["median_seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            row["vs_one_process"].as_f64().unwrap_or(f64::NAN),
            mib(&row["client_peak_rss_bytes"]),
            shuffle,
            if nodes.is_empty() {
                "—".to_string()
            } else {
                nodes.join(", ")
            },
        );
    }
}

/// How long a node may take to listen.
const START: Duration = Duration::from_secs(60);

/// A scheduler and its executors on loopback, child processes stopped when dropped; their
/// logs and work directories under one folder, emptied first.
struct Loopback {
    url: String,
    /// (name, process, work directory).
    nodes: Vec<(String, Child, Option<PathBuf>)>,
}

impl Loopback {
    fn start(
        lodestar: &Path,
        dir: &Path,
        executors: usize,
        threads: usize,
    ) -> anyhow::Result<Loopback> {
        if dir.exists() {
            fs_err::remove_dir_all(dir)?;
        }
        fs_err::create_dir_all(dir)?;
        let spawn = |args: &[&str], log: &Path| -> anyhow::Result<Child> {
            let log = fs_err::File::create(log)?;
            Command::new(lodestar)
                .args(args)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log.into_parts().0)
                .spawn()
                .with_context(|| format!("cannot start {} {}", lodestar.display(), args.join(" ")))
        };
        let scheduler_log = dir.join("scheduler.log");
        let scheduler = spawn(
            &["cluster", "scheduler", "--bind", "127.0.0.1:0"],
            &scheduler_log,
        )?;
        let mut cluster = Loopback {
            url: String::new(),
            nodes: vec![("scheduler".into(), scheduler, None)],
        };
        let started = Instant::now();
        let prefix = "lodestar cluster scheduler: listening on ";
        cluster.url = loop {
            let log = fs_err::read_to_string(&scheduler_log).unwrap_or_default();
            if let Some(addr) = log.lines().find_map(|l| l.strip_prefix(prefix)) {
                break format!("df://{}", addr.trim());
            }
            if started.elapsed() > START {
                bail!("the scheduler did not start within {START:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for i in 1..=executors {
            let (port, grpc_port) = (free_port()?, free_port()?);
            let work = dir.join(format!("executor-{i}"));
            fs_err::create_dir_all(&work)?;
            let log = dir.join(format!("executor-{i}.log"));
            let child = spawn(
                &[
                    "cluster",
                    "executor",
                    "--scheduler",
                    &cluster.url,
                    "--bind-host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--grpc-port",
                    &grpc_port.to_string(),
                    "--concurrency",
                    &threads.to_string(),
                    "--memory-limit",
                    MEMORY_LIMIT,
                    "--work-dir",
                    &work.to_string_lossy(),
                ],
                &log,
            )?;
            cluster
                .nodes
                .push((format!("executor {i}"), child, Some(work)));
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if started.elapsed() > START {
                    bail!(
                        "executor {i} did not listen within {START:?}:\n{}",
                        fs_err::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// Each node's peak resident memory so far.
    fn peaks(&self) -> Value {
        self.nodes
            .iter()
            .map(|(name, child, _)| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                    .unwrap_or_default();
                json!({
                    "node": name,
                    "peak_rss_bytes": status_kib(&status, "VmHWM:").map(|kib| kib * 1024),
                })
            })
            .collect()
    }

    /// The bytes in the executors' work directories.
    fn work_bytes(&self) -> anyhow::Result<u64> {
        self.nodes
            .iter()
            .filter_map(|(_, _, work)| work.as_deref())
            .map(tree_bytes)
            .sum()
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tree_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

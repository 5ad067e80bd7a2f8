//! `lodestar-bench lake`: the metric tree of `lake/lodestar.yaml` over a year of hive-partitioned
//! Parquet (`lake_data.rs`), side by side with DuckDB running the same metrics as hand-written
//! SQL (`lake/duckdb_bench.py`), on the same files with the same thread count and memory limit.
//!
//! Three variants, over the whole year and over its last four weeks, at week grain:
//! - Lodestar: every metric in one request (metrics of a table share a scan, distinct counts
//!   apart; partitions pruned);
//! - Lodestar without scan fusion: one request per metric;
//! - DuckDB: one query per metric.
//!
//! Each variant runs in a child process (this binary's hidden `lake-child` command, or Python),
//! so its peak memory is its own (`VmHWM`, `ru_maxrss`). DuckDB runs first; every Lodestar child
//! checks its numbers against DuckDB's before it times anything, and fails naming the metric
//! and period that differ. The table is printed and written as JSON under
//! `TARGET/bench/lake-N.json`.
//!
//! `--tree shapes` runs the second tree instead (`lake/shapes.yaml` over `shapes_data.rs`),
//! whose metrics have the shapes the lake's lack: distinct counts over several keys (one of
//! them text), a trailing 28-day window, a retention with an activity filter, and, as a second
//! request beside the tree's, a breakdown by a dimension of 10,000 values.
//!
//! `--refresh` measures the incremental refresh of a project with `cache:` configured: a
//! full compute into an empty cache, one more day of data, the refresh. It needs the
//! engine's result cache (the project-level `cache:` key); until the engine has it, loading
//! the project fails and `--refresh` says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{Datelike, Days, NaiveDate};
use lodestar_core::datafusion::arrow::array::AsArray;
use lodestar_core::datafusion::arrow::compute::cast;
use lodestar_core::datafusion::arrow::datatypes::DataType;
use lodestar_core::model::{ClusterUrl, Grain};
use lodestar_core::{Engine, MetricRequest, config};
use serde_json::{Value, json};

use crate::lake_data::{self, DAYS, Shape};
use crate::shapes_data;

/// The DuckDB release the comparison runs against (PyPI `duckdb`).
const DUCKDB_VERSION: &str = "2.0.0";
const PROJECT: &str = include_str!("../lake/lodestar.yaml");
const SHAPES_PROJECT: &str = include_str!("../lake/shapes.yaml");
const DUCKDB_SCRIPT: &str = include_str!("../lake/duckdb_bench.py");
/// The engine's `memory_limit` in the project, given to DuckDB too.
pub(crate) const MEMORY_LIMIT: &str = "1536MiB";

pub const USAGE: &str = "\
       lodestar-bench lake [--tree lake|shapes] [--events N] [--runs N] [--threads N] [--refresh]";

/// A metric tree the benchmark runs, with its data set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tree {
    pub name: &'static str,
    /// Before the names of its data folder (`bench-data/{prefix}events-N`) and its result
    /// file (`bench/lake-{prefix}N.json`): empty for the lake tree, whose names came first.
    prefix: &'static str,
    project: &'static str,
    /// Writes the data set into a folder unless it is already there.
    ensure: fn(&Path, Shape) -> anyhow::Result<bool>,
    /// A second request beside the whole tree's: these metrics broken down by a dimension.
    breakdown: Option<(&'static str, &'static [&'static str])>,
}

/// The lake tree: revenue over orders, events and a 7-day retention.
pub(crate) const LAKE: Tree = Tree {
    name: "lake",
    prefix: "",
    project: PROJECT,
    ensure: lake_data::ensure,
    breakdown: None,
};

/// The second tree: nights booked, with the shapes the lake's metrics lack.
const SHAPES: Tree = Tree {
    name: "shapes",
    prefix: "shapes-",
    project: SHAPES_PROJECT,
    ensure: shapes_data::ensure,
    breakdown: Some((
        "listing_id",
        &["nights_booked", "bookers", "visitors", "listing_views"],
    )),
};

#[derive(Debug)]
struct Options {
    tree: Tree,
    events: u64,
    runs: usize,
    threads: usize,
    refresh: bool,
}

/// `lake ARGS`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut options = Options {
        tree: LAKE,
        events: 10_000_000,
        runs: 5,
        threads: std::thread::available_parallelism().map_or(4, usize::from),
        refresh: false,
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        if flag == "--refresh" {
            options.refresh = true;
            continue;
        }
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value\nusage:{USAGE}"))?;
        match flag.as_str() {
            "--events" => options.events = parse_count(value).context("--events")?,
            "--tree" => {
                options.tree = [LAKE, SHAPES]
                    .into_iter()
                    .find(|t| t.name == value)
                    .with_context(|| format!("--tree {value}: the trees are lake and shapes"))?
            }
            "--runs" => options.runs = value.parse().context("--runs")?,
            "--threads" => options.threads = value.parse().context("--threads")?,
            other => bail!("unknown flag {other}\nusage:{USAGE}"),
        }
    }
    options.runs = options.runs.max(1);
    options.threads = options.threads.max(1);
    bench(&options)
}

/// `10000000`, `10M`, `100m`, `200k`.
pub(crate) fn parse_count(text: &str) -> anyhow::Result<u64> {
    let lower = text.to_ascii_lowercase();
    let (digits, factor) = match lower.strip_suffix('m') {
        Some(d) => (d, 1_000_000),
        None => match lower.strip_suffix('k') {
            Some(d) => (d, 1_000),
            None => (lower.as_str(), 1),
        },
    };
    let n: u64 = digits
        .replace('_', "")
        .parse()
        .with_context(|| format!("`{text}` is not a count such as 1000000, 200k or 10M"))?;
    Ok(n * factor)
}

/// The cargo target directory this binary was built in (`TARGET/release/lodestar-bench`).
pub(crate) fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("cannot tell the target directory from this binary's path")
}

/// A compared range: `None` is the whole data set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    pub name: &'static str,
    /// First Monday and the Monday after the last week.
    pub bounds: Option<(NaiveDate, NaiveDate)>,
}

/// The ranges every lake benchmark compares: the whole year, its last four weeks.
pub(crate) fn ranges() -> [Range; 2] {
    [
        Range {
            name: "whole year",
            bounds: None,
        },
        Range {
            name: "last 4 weeks",
            bounds: Some(last_four_weeks()),
        },
    ]
}

/// The events a range scans.
pub(crate) fn events_in(range: Range, shape: Shape) -> u64 {
    match range.bounds {
        None => shape.events,
        Some((from, to)) => (0..DAYS)
            .filter(|d| {
                let day = lake_data::first_day() + Days::new(*d);
                day >= from && day < to
            })
            .map(|d| shape.events_on(d))
            .sum(),
    }
}

fn last_four_weeks() -> (NaiveDate, NaiveDate) {
    let last_day = lake_data::first_day() + Days::new(DAYS - 1);
    // The Monday after the last complete week.
    let end = last_day
        - Days::new(u64::from(
            (last_day.weekday().num_days_from_monday() + 1) % 7,
        ));
    let end = end + Days::new(1);
    (end - Days::new(28), end)
}

/// The data set of `events` events of `tree` under `target/bench-data/events-N/` for the lake,
/// `TREE-events-N/` for another (written if missing) with the tree's project beside it: its
/// shape, folder and project file.
pub(crate) fn data_set(
    target: &Path,
    tree: Tree,
    events: u64,
) -> anyhow::Result<(Shape, PathBuf, PathBuf)> {
    let shape = Shape { events };
    let dir = target
        .join("bench-data")
        .join(format!("{}events-{events}", tree.prefix));
    (tree.ensure)(&dir, shape)?;
    let project = dir.join("lodestar.yaml");
    fs_err::write(&project, tree.project)?;
    Ok((shape, dir, project))
}

fn bench(options: &Options) -> anyhow::Result<()> {
    let target = target_dir()?;
    let tree = options.tree;
    if options.refresh && tree.name != LAKE.name {
        bail!("--refresh measures the lake tree; run it without --tree");
    }
    let (shape, dir, project) = data_set(&target, tree, options.events)?;
    let script = dir.join("duckdb_bench.py");
    fs_err::write(&script, DUCKDB_SCRIPT)?;
    let python = duckdb_python(&target)?;
    let exe = std::env::current_exe()?;

    let mut rows = Vec::new();
    let mut duckdb_version = String::new();
    for range in ranges() {
        let events_scanned = events_in(range, shape);
        eprintln!("lake: {} — DuckDB, one query per metric", range.name);
        let mut duckdb = Command::new(&python);
        duckdb.arg(&script).arg(&dir).args([
            tree.name.to_string(),
            options.threads.to_string(),
            MEMORY_LIMIT.to_string(),
            options.runs.to_string(),
        ]);
        if let Some((from, to)) = range.bounds {
            duckdb.args([from.to_string(), to.to_string()]);
        }
        let duck = run_child(&mut duckdb, "DuckDB")?;
        duckdb_version = duck["duckdb_version"].as_str().unwrap_or_default().into();
        let expected = dir.join(".expected.json");
        fs_err::write(&expected, serde_json::to_string(&duck["metrics"])?)?;
        let duck_seconds = duck["median_seconds"].as_f64().unwrap_or(f64::NAN);
        let mut variants = Vec::new();
        for (mode, label) in [
            ("fused", "Lodestar"),
            ("per-metric", "Lodestar, no scan fusion"),
        ] {
            eprintln!("lake: {} — {label}", range.name);
            let mut child = Command::new(&exe);
            child.args(["lake-child", "--project"]).arg(&project).args([
                "--mode",
                mode,
                "--threads",
                &options.threads.to_string(),
                "--runs",
                &options.runs.to_string(),
            ]);
            if let Some((dimension, metrics)) = tree.breakdown {
                child.args(["--by", dimension, "--by-metrics", &metrics.join(",")]);
            }
            child.arg("--expect").arg(&expected);
            if let Some((from, to)) = range.bounds {
                child.args(["--from", &from.to_string(), "--to", &to.to_string()]);
            }
            let out = run_child(&mut child, label)?;
            variants.push((label, out));
        }
        variants.push(("DuckDB, query per metric", duck));
        for (label, out) in variants {
            let seconds = out["median_seconds"].as_f64().unwrap_or(f64::NAN);
            rows.push(json!({
                "range": range.name,
                "variant": label,
                "median_seconds": seconds,
                "peak_rss_bytes": out["peak_rss_bytes"],
                "events": events_scanned,
                "rows_per_second": events_scanned as f64 / seconds,
                "vs_duckdb": seconds / duck_seconds,
                "scans": out.get("scans").cloned().unwrap_or(Value::Null),
            }));
        }
    }

    print_table(options, &rows);
    let mut report = json!({
        "benchmark": "lake",
        "tree": tree.name,
        "events": options.events,
        "users": shape.users(),
        "days": DAYS,
        "runs": options.runs,
        "threads": options.threads,
        "memory_limit": MEMORY_LIMIT,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "duckdb_version": duckdb_version,
        "machine": machine(),
        "rows": rows,
        "refresh": null,
    });
    let out = target
        .join("bench")
        .join(format!("lake-{}{}.json", tree.prefix, options.events));
    fs_err::create_dir_all(out.parent().expect("a parent"))?;
    fs_err::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten to {}", out.display());

    // After the table is out: the refresh needs the engine's cache, which may be missing.
    if options.refresh {
        let r = refresh(&exe, &dir, shape, options)?;
        println!(
            "\nrefresh after one more day: full {:.1}ms, refresh {:.1}ms, refresh / full = {:.3}",
            r["full_seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            r["refresh_seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            r["refresh_over_full"].as_f64().unwrap_or(f64::NAN),
        );
        report["refresh"] = r;
        fs_err::write(&out, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn print_table(options: &Options, rows: &[Value]) {
    println!(
        "\nlake, {} tree: {} events, {} threads, median of {} runs ({} build)\n",
        options.tree.name,
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
        "| range        | variant                  | wall time  | peak memory | rows/s      | / DuckDB |"
    );
    println!(
        "|--------------|--------------------------|------------|-------------|-------------|----------|"
    );
    for row in rows {
        let mib = row["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64;
        println!(
            "| {:<12} | {:<24} | {:>8.1}ms | {:>7.0} MiB | {:>11.0} | {:>8.2} |",
            row["range"].as_str().unwrap_or_default(),
            row["variant"].as_str().unwrap_or_default(),
            row["median_seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            mib,
            row["rows_per_second"].as_f64().unwrap_or(f64::NAN),
            row["vs_duckdb"].as_f64().unwrap_or(f64::NAN),
        );
    }
}

/// The machine, for the report: CPU model, cores, memory.
pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| status_kib(&m, "MemTotal:"))
        .map(|kib| kib * 1024);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "memory_bytes": memory,
        "os": std::env::consts::OS,
    })
}

/// Runs a child that prints one JSON object, its stderr shown as it goes.
pub(crate) fn run_child(command: &mut Command, what: &str) -> anyhow::Result<Value> {
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {what}: {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}); its errors are above\ncommand: {command:?}",
            output.status
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{what} printed no JSON result: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The virtual environment's Python with DuckDB, created in `TARGET/bench-venv` if missing.
fn duckdb_python(target: &Path) -> anyhow::Result<PathBuf> {
    let venv = target.join("bench-venv");
    let python = venv.join("bin").join("python");
    let installed = || {
        Command::new(&python)
            .args(["-c", "import duckdb; print(duckdb.__version__)"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if installed().as_deref() == Some(DUCKDB_VERSION) {
        return Ok(python);
    }
    if !python.exists() {
        eprintln!("lake: creating {} for DuckDB", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context(
                "cannot run python3, which the DuckDB comparison needs\n\
                 hint: install Python 3 with its venv module (Debian/Ubuntu: apt install python3-venv)",
            )?;
        if !status.success() {
            bail!(
                "`python3 -m venv {}` failed ({status})\n\
                 hint: install Python's venv module (Debian/Ubuntu: apt install python3-venv)",
                venv.display()
            );
        }
    }
    eprintln!("lake: installing duckdb=={DUCKDB_VERSION} from PyPI");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .arg(format!("duckdb=={DUCKDB_VERSION}"))
        .status()
        .context("cannot run pip in the benchmark's virtual environment")?;
    if !status.success() || installed().as_deref() != Some(DUCKDB_VERSION) {
        bail!(
            "installing duckdb=={DUCKDB_VERSION} into {} failed\n\
             hint: PyPI must be reachable; delete the folder to start over",
            venv.display()
        );
    }
    Ok(python)
}

/// One more day of data and the engine's result cache: full compute into an empty cache,
/// the new day, the refresh. Works on a hard-linked copy of the data set, so the data set
/// itself keeps its year.
fn refresh(exe: &Path, dir: &Path, shape: Shape, options: &Options) -> anyhow::Result<Value> {
    let scratch = dir.with_file_name(format!(
        "{}-refresh",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    if scratch.exists() {
        fs_err::remove_dir_all(&scratch)?;
    }
    link_tree(&dir.join("lake"), &scratch.join("lake"))?;
    let project = scratch.join("lodestar.yaml");
    fs_err::write(
        &project,
        format!(
            "{PROJECT}\n# The engine's result cache, for the refresh measurement.\ncache: {{ dir: cache/, lookback: 3d }}\n"
        ),
    )?;
    let compute = |label: &str| -> anyhow::Result<Value> {
        let mut command = Command::new(exe);
        command
            .args(["lake-child", "--project"])
            .arg(&project)
            .args([
                "--mode",
                "fused",
                "--threads",
                &options.threads.to_string(),
                "--runs",
                "1",
                "--cold",
            ]);
        run_child(&mut command, label)
    };
    eprintln!("lake: refresh — full compute into an empty cache");
    let full = compute("the full compute with the cache").context(
        "hint: `--refresh` needs the engine's result cache (the project-level `cache:` key); \
         without it, run the benchmark without `--refresh`",
    )?;
    lake_data::write_day(&scratch.join("lake"), shape, DAYS)?;
    eprintln!("lake: refresh — one more day, recomputed with the warm cache");
    let warm = compute("the refresh with the warm cache")?;
    // The refreshed numbers must be those of a computation without the cache.
    fs_err::write(&project, PROJECT)?;
    let fresh = compute("the compute without the cache")?;
    if let Some(difference) = compare(&fresh["metrics"], &warm["metrics"]) {
        bail!("the refreshed results differ from a computation without the cache: {difference}");
    }
    let (full, warm) = (
        full["median_seconds"].as_f64().unwrap_or(f64::NAN),
        warm["median_seconds"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(json!({
        "full_seconds": full,
        "refresh_seconds": warm,
        "refresh_over_full": warm / full,
    }))
}

/// Hard links of every file below `from`, in the same layout below `to`.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs_err::create_dir_all(to)?;
    for entry in fs_err::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            fs_err::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The first difference between two `{metric: {period: value}}` maps, if any. A period one
/// side lacks counts as null, and null matches 0 (an empty week's count).
fn compare(expected: &Value, actual: &Value) -> Option<String> {
    let empty = serde_json::Map::new();
    let expected = expected.as_object().unwrap_or(&empty);
    let actual = actual.as_object().unwrap_or(&empty);
    for (metric, want) in expected {
        let Some(got) = actual.get(metric).and_then(Value::as_object) else {
            return Some(format!("`{metric}` is missing"));
        };
        let want = want.as_object().unwrap_or(&empty);
        let periods: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        for period in periods {
            let a = want.get(period).and_then(Value::as_f64);
            let b = got.get(period).and_then(Value::as_f64);
            let same = match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                (None, None) | (None, Some(0.0)) | (Some(0.0), None) => true,
                _ => false,
            };
            if !same {
                return Some(format!(
                    "`{metric}` in the week of {period}: expected {a:?}, got {b:?}"
                ));
            }
        }
    }
    None
}

/// `lake-child ARGS`: one Lodestar variant, its values and median time as JSON on stdout.
pub fn child(args: &[String]) -> anyhow::Result<()> {
    let mut project = None;
    let (mut mode, mut threads, mut runs) = (String::from("fused"), 1_usize, 1_usize);
    let (mut from, mut to, mut expect, mut cold) = (None, None, None, false);
    let mut cluster: Option<ClusterUrl> = None;
    let (mut by, mut by_metrics): (Option<String>, Vec<String>) = (None, Vec::new());
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        if flag == "--cold" {
            cold = true;
            continue;
        }
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--project" => project = Some(PathBuf::from(value)),
            "--mode" => mode.clone_from(value),
            "--threads" => threads = value.parse()?,
            "--runs" => runs = value.parse()?,
            "--from" => from = Some(value.parse::<NaiveDate>()?),
            "--to" => to = Some(value.parse::<NaiveDate>()?),
            "--expect" => expect = Some(PathBuf::from(value)),
            "--cluster" => cluster = Some(value.parse().map_err(anyhow::Error::msg)?),
            "--by" => by = Some(value.clone()),
            "--by-metrics" => by_metrics = value.split(',').map(String::from).collect(),
            other => bail!("unknown flag {other}"),
        }
    }
    let project = project.context("--project is required")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut loaded =
            config::load(&project).with_context(|| format!("loading {}", project.display()))?;
        loaded.engine.target_partitions = Some(threads);
        loaded.engine.cluster = cluster;
        let names: Vec<String> = loaded.metrics.keys().cloned().collect();
        let engine = Engine::open(loaded).await?;
        let request = |metrics: &[String], by: Option<&String>| {
            let mut r = MetricRequest::new(metrics.iter().cloned(), Grain::Week);
            r.from = from;
            // `--to` is the Monday after the last week; a request's `to` is inclusive.
            r.to = to.map(|t| t - Days::new(1));
            r.dimensions.extend(by.cloned());
            r
        };
        let breakdown = |metrics: &[String]| by.as_ref().map(|by| request(metrics, Some(by)));
        let requests: Vec<MetricRequest> = match mode.as_str() {
            "fused" => std::iter::once(request(&names, None))
                .chain(breakdown(&by_metrics))
                .collect(),
            "per-metric" => names
                .iter()
                .map(|n| request(std::slice::from_ref(n), None))
                .chain(
                    by_metrics
                        .iter()
                        .filter_map(|n| breakdown(std::slice::from_ref(n))),
                )
                .collect(),
            other => bail!("unknown mode {other}: fused or per-metric"),
        };
        let compute_all = || async {
            let mut values: BTreeMap<String, BTreeMap<String, Option<f64>>> = BTreeMap::new();
            let mut scans = 0;
            for request in &requests {
                let table = engine.compute(request).await?;
                scans += table.scans.len();
                // A breakdown's rows are keyed `PERIOD|VALUE`, its metrics `METRIC by DIM`.
                let mut keys: Vec<String> =
                    table.periods().iter().map(ToString::to_string).collect();
                let mut suffix = String::new();
                for dim in &request.dimensions {
                    let column = table
                        .batch
                        .column_by_name(dim)
                        .with_context(|| format!("the result has no column `{dim}`"))?;
                    let text = cast(column, &DataType::Utf8)?;
                    for (key, value) in keys.iter_mut().zip(text.as_string::<i32>()) {
                        key.push('|');
                        key.push_str(value.unwrap_or("null"));
                    }
                    suffix = format!(" by {dim}");
                }
                for metric in &request.metrics {
                    let column = table.values(metric).unwrap_or_default();
                    let series = values.entry(format!("{metric}{suffix}")).or_default();
                    for (key, value) in keys.iter().zip(column) {
                        series.insert(key.clone(), value);
                    }
                }
            }
            anyhow::Ok((values, scans))
        };
        let started = Instant::now();
        let (values, scans) = compute_all().await?;
        let first = started.elapsed().as_secs_f64();
        let values = serde_json::to_value(&values)?;
        if let Some(expect) = &expect {
            let expected: Value = serde_json::from_str(&fs_err::read_to_string(expect)?)?;
            if let Some(difference) = compare(&expected, &values) {
                bail!("Lodestar ({mode}) and the expected numbers ({}) disagree: {difference}; nothing was timed", expect.display());
            }
        }
        // `--cold`: the first run is the measurement (a cache's cold and warm runs differ).
        let mut times = vec![first];
        if !cold {
            times.clear();
            for _ in 0..runs {
                let started = Instant::now();
                compute_all().await?;
                times.push(started.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let peak = status_kib(&status, "VmHWM:").map(|kib| kib * 1024);
        println!(
            "{}",
            json!({
                "metrics": values,
                "median_seconds": times[times.len() / 2],
                "peak_rss_bytes": peak,
                "scans": scans,
            })
        );
        anyhow::Ok(())
    })
}

/// A `Key:   123 kB` line of /proc/self/status or /proc/meminfo, in KiB.
pub(crate) fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_four_weeks_are_whole_monday_weeks_of_2025() {
        let (from, to) = last_four_weeks();
        assert_eq!(from, NaiveDate::from_ymd_opt(2025, 12, 1).unwrap());
        assert_eq!(to, NaiveDate::from_ymd_opt(2025, 12, 29).unwrap());
    }

    #[test]
    fn counts_take_suffixes() {
        assert_eq!(parse_count("10M").unwrap(), 10_000_000);
        assert_eq!(parse_count("200k").unwrap(), 200_000);
        assert_eq!(parse_count("1_000").unwrap(), 1_000);
        assert!(parse_count("ten").is_err());
    }

    #[test]
    fn differences_name_the_metric_and_week() {
        let duck = json!({"buyers": {"2025-01-06": 3.0, "2025-01-13": null}});
        let same =
            json!({"buyers": {"2025-01-06": 3.0000000001, "2025-01-13": null, "2025-01-20": 0.0}});
        assert_eq!(compare(&duck, &same), None);
        let off = json!({"buyers": {"2025-01-06": 4.0}});
        assert_eq!(
            compare(&duck, &off).unwrap(),
            "`buyers` in the week of 2025-01-06: expected Some(3.0), got Some(4.0)"
        );
    }
}

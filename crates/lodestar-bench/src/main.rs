//! `lodestar-bench`: benchmarks, run in release mode by `cargo xtask bench`.
//!
//! - `ffi`: what the plugin boundary costs (`ffi.rs`).
//! - `tree`: the metric tree computed in one request, against one request per metric
//!   (`tree.rs`): the scans saved by reading each table once.
//! - `postgres`: the Postgres connector's rows/s against `psql \copy` (`postgres.rs`).
//! - `lake`: the metric tree over a year of hive-partitioned Parquet against DuckDB
//!   (`lake.rs`, its data set in `lake_data.rs`).
//! - `cluster`: the `lake` tree in one process and on a Ballista cluster on loopback of 1 and 2
//!   executors, numbers checked equal, with each node's memory and the shuffle bytes
//!   (`cluster.rs`).
//! - `server`: `lodestar serve` under many keep-alive clients on loopback: a cached series, a
//!   cold series mix and a soak, with latency percentiles and the server's memory
//!   (`server.rs`).

mod cluster;
mod ffi;
mod lake;
mod lake_data;
mod postgres;
mod server;
mod shapes_data;
mod tree;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// The allocator of the `lodestar` binary (the CLI and the server), so that the bench measures
/// what users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: lodestar-bench ffi [--rows N] [--runs N]
       lodestar-bench tree [--project PATH] [--runs N]
       lodestar-bench postgres [--rows N] [--runs N]
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{USAGE}{}\n{}\n{}",
            lake::USAGE,
            cluster::USAGE,
            server::USAGE
        );
        return Ok(());
    }
    // `lake` runs its variants in child processes, each with its own runtime.
    match args.first().map(String::as_str) {
        Some("lake") => return lake::run(&args[1..]),
        Some("lake-child") => return lake::child(&args[1..]),
        // `cluster` starts the nodes and the client variants as child processes.
        Some("cluster") => return cluster::run(&args[1..]),
        // `server` drives a `lodestar serve` child with its own runtime.
        Some("server") => return server::run(&args[1..]),
        _ => {}
    }
    let mut iter = args.iter();
    let command = iter.next().map(String::as_str);
    let mut rows: Option<u64> = None;
    let mut runs: usize = 7;
    let mut project = PathBuf::from("examples/lodestar.yaml");
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--rows" if matches!(command, Some("ffi" | "postgres")) => {
                rows = Some(value.parse().context("--rows")?)
            }
            "--project" if command == Some("tree") => project = PathBuf::from(value),
            "--runs" => runs = value.parse().context("--runs")?,
            other => bail!("unknown flag {other}\n{USAGE}{}", lake::USAGE),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        Some("ffi") => runtime.block_on(ffi::ffi_overhead(rows.unwrap_or(10_000_000), runs.max(1))),
        Some("postgres") => {
            runtime.block_on(postgres::copy_rate(rows.unwrap_or(2_000_000), runs.max(1)))
        }
        Some("tree") => runtime.block_on(tree::tree_scans(&project, runs.max(1))),
        _ => bail!("{USAGE}{}{}", lake::USAGE, server::USAGE),
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

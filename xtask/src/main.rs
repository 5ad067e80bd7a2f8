//! `cargo xtask`: project automation that needs nothing beyond a Rust toolchain.

// Shared with the tests' nested builds; by path, as xtask depends on nothing of the workspace.
#[path = "../../crates/lodestar-testkit/src/cargo.rs"]
mod cargo_env;
mod civil;
mod fuzz;
mod sample;
mod tasks;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <COMMAND>

Commands:
  sample [--out DIR] [--force]
        Write the synthetic lodging-marketplace data set (default DIR: examples/data).
        Skips when DIR already holds it, unless --force. Output is byte-identical on
        every run and machine.
  plugins [--release]
        Build every connector plugin under plugins/. The libraries land in
        target/<profile>/, beside the `lodestar` binary, where the CLI finds them.
  example
        Run the example project: `sample` and `plugins` if needed, then the CLI's
        `validate`, `tree` and `compute nights_booked bookings nights_per_booking --grain month`.
  test
        Run all tests: `sample` and `plugins`, then `cargo test --workspace --all-targets`
        and the documentation examples (`cargo test --workspace --doc`).
  bench [ffi|tree|postgres|lake|cluster|server] [--rows N] [--runs N] [--events N] [--tree lake|shapes]
        [--threads N] [--refresh] [--executors 1,2] [--clients N] [--soak-seconds S] [--phase-seconds S] [--slots N]
        [--cached-requests N] [--cold-requests N] [--sample-seconds S]
        Build in release mode and run the benchmarks (all unless one is named): `ffi`, the
        plugin boundary's cost (the same table natively and through its plugin, 10 million
        rows by default); `tree`, the example's metric tree in one request against one
        request per metric (scans and medians); `postgres`, the Postgres connector's rows/s
        against `psql \\copy` on a throwaway cluster (2 million rows by default); `lake`, a
        North Star tree over a year of hive-partitioned Parquet (--events, default 10M)
        against DuckDB's per-metric SQL on the same files and threads, with and without scan
        fusion, whole year and last 4 weeks: wall time, peak memory, rows/s, JSON in
        target/bench/ (docs/performance.md). --refresh adds the result cache's refresh.
        `--tree shapes` runs a second tree instead: distinct counts over four keys (one
        text), a trailing 28-day window, a 28-day retention and a breakdown by a listing
        with 10,000 values.
        `cluster`: the same tree in one process and on Ballista clusters on loopback of
        --executors executors (default 1,2), numbers checked equal: wall time, each
        process's peak memory, shuffle bytes per request, JSON in target/bench/.
        `server`: the release `lodestar serve` on loopback under --clients keep-alive
        clients (default 64, with 16 query slots): a cached series, a cold series mix, then
        a soak (--soak-seconds, default 600); requests/s, p50/p99/max latency, errors, the
        server's peak and sampled memory, JSON in target/bench/server.json.
  fuzz [TARGET] [--seconds N]
        Build the fuzz targets (fuzz/, nightly and cargo-fuzz, which this does not install)
        and run each (all the files of fuzz/fuzz_targets/ unless one is named) for N seconds
        (default 60), one at a time. Prints a table of executions and corpus sizes; on a
        crash, the artifact and the commands to minimize it and keep it as a regression case
        in fuzz/regressions/ (docs/fuzzing.md).
  help
        Print this help.
";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<OsString>) -> Result<()> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        print!("{HELP}");
        return Ok(());
    };
    let rest: Vec<OsString> = args.collect();
    match command.to_str() {
        Some("sample") => {
            let opts = parse_sample_args(rest)?;
            sample::run(&opts).map(|_| ())
        }
        Some("plugins") => {
            let release = match rest.first().and_then(|a| a.to_str()) {
                None => false,
                Some("--release") if rest.len() == 1 => true,
                Some(other) => {
                    bail!("unexpected argument `{other}` to `plugins`; it takes --release")
                }
            };
            tasks::plugins(release).map(|_| ())
        }
        Some("example") => {
            no_args("example", &rest)?;
            tasks::example()
        }
        Some("test") => {
            no_args("test", &rest)?;
            tasks::test()
        }
        Some("bench") => {
            let rest: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            tasks::bench(&rest)
        }
        Some("fuzz") => {
            let rest: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            fuzz::run(&rest)
        }
        Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            Ok(())
        }
        _ => bail!(
            "unknown command `{}`; `cargo xtask help` lists the commands",
            command.to_string_lossy()
        ),
    }
}

fn no_args(command: &str, rest: &[OsString]) -> Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => bail!(
            "`{command}` takes no arguments, got `{}`",
            arg.to_string_lossy()
        ),
    }
}

fn parse_sample_args(rest: Vec<OsString>) -> Result<sample::Options> {
    let mut opts = sample::Options {
        out: tasks::workspace_root().join(sample::DEFAULT_DIR),
        force: false,
    };
    let mut rest = rest.into_iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if text == "--force" {
            opts.force = true;
        } else if text == "--out" {
            let dir = rest.next().context("`--out` needs a directory")?;
            opts.out = PathBuf::from(dir);
        } else if let Some(dir) = text.strip_prefix("--out=") {
            opts.out = PathBuf::from(dir);
        } else {
            bail!("unexpected argument `{text}` to `sample`; see `cargo xtask help`");
        }
    }
    Ok(opts)
}

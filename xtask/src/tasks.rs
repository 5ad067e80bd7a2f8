//! The README's workflows (`example`, `test`), as sequences of cargo invocations.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::sample;

/// The workspace root, so every command works from any directory of the checkout.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The example project's file, relative to the workspace root.
const EXAMPLE_PROJECT: &str = "examples/lodestar.yaml";

/// `cargo xtask example`: the CLI's main commands on the example project.
pub fn example() -> Result<()> {
    ensure_sample_data()?;
    let lodestar = [
        "run",
        "--quiet",
        "-p",
        "lodestar-cli",
        "--bin",
        "lodestar",
        "--",
    ];
    let project = ["--project", EXAMPLE_PROJECT];
    let steps: [&[&str]; 3] = [
        &["validate"],
        &["tree"],
        &[
            "compute",
            "nights_booked",
            "bookings",
            "nights_per_booking",
            "--grain",
            "month",
        ],
    ];
    for step in steps {
        let args = lodestar.iter().chain(&project).chain(step);
        cargo(args).with_context(|| format!("`lodestar {}` failed", step.join(" ")))?;
    }
    Ok(())
}

/// `cargo xtask test`: everything needed for the whole test suite, then the suite.
///
/// Each prerequisite is a function called before [`run_tests`]; steps that need more than
/// the sample data (building plugins, a throwaway Postgres, an S3-compatible server) slot
/// in there, and should clean up after themselves even when the tests fail.
pub fn test() -> Result<()> {
    ensure_sample_data()?;
    run_tests()
}

fn run_tests() -> Result<()> {
    cargo(["test", "--workspace", "--all-targets"]).context("the test suite failed")
}

/// Generates the example data unless it is already there: the example project and the
/// end-to-end tests read it, and it is not committed.
fn ensure_sample_data() -> Result<()> {
    let opts = sample::Options {
        out: workspace_root().join(sample::DEFAULT_DIR),
        force: false,
    };
    sample::run(&opts)?;
    Ok(())
}

/// Runs cargo in the workspace root with inherited stdio.
fn cargo<I>(args: I) -> Result<()>
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    // `CARGO` is the cargo that started xtask, so nested builds use the same toolchain.
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&program);
    command.args(args).current_dir(workspace_root());
    let shown = format!(
        "{} {}",
        program.to_string_lossy(),
        command
            .get_args()
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("xtask: running `{shown}`");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

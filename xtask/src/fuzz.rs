//! `cargo xtask fuzz [TARGET] [--seconds N]`: builds the cargo-fuzz crate in `fuzz/` with
//! nightly and runs each target (or the one named) for N seconds, one at a time.
//!
//! The targets are the files of `fuzz/fuzz_targets/`, so adding one needs no change here.
//! Nothing is installed: without nightly or cargo-fuzz this says how to get them and fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::tasks::{run_status, shown, workspace_root};

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// cargo-fuzz's flags for every build and run: no sanitizer (the code under test is safe
/// Rust; ASan would double the build of DataFusion), debug assertions on (overflow checks).
const FUZZ_FLAGS: &[&str] = &["--sanitizer", "none", "--debug-assertions"];

pub fn run(rest: &[String]) -> Result<()> {
    let (only, seconds) = parse_args(rest)?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = match only {
        Some(name) if all.contains(&name) => vec![name],
        Some(name) => bail!(
            "no fuzz target `{name}`\nhint: the targets are the files of fuzz/fuzz_targets/: {}",
            all.join(", ")
        ),
        None => all,
    };
    check_tools()?;

    let mut build = nightly_cargo(&root);
    build.args(["fuzz", "build"]).args(FUZZ_FLAGS);
    if let [one] = chosen.as_slice() {
        build.arg(one);
    }
    run_status(&mut build)?;

    let mut runs = Vec::new();
    for target in &chosen {
        runs.push(run_target(&root, &fuzz_dir, target, seconds)?);
    }

    println!("| date (UTC) | target | seconds | executions | corpus | crash |");
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.date,
            r.target,
            r.seconds,
            r.executions.map_or("?".into(), |n| n.to_string()),
            r.corpus,
            r.crash
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
        );
    }
    let crashed: Vec<&Run> = runs.iter().filter(|r| r.crash.is_some()).collect();
    for r in &crashed {
        let artifact = r.crash.as_ref().expect("filtered on crashes");
        let name = artifact
            .file_name()
            .map_or("crash".into(), |n| n.to_string_lossy().into_owned());
        eprintln!(
            "\n`{target}` crashed on {artifact}.\n\
             Reproduce:  cargo +nightly fuzz run {flags} {target} {artifact}\n\
             Minimize:   cargo +nightly fuzz tmin {flags} {target} {artifact}\n\
             Then fix the parser, keep the (minimized) input as a regression case and run it on stable:\n\
             \x20           mkdir -p fuzz/regressions/{target} && cp <minimized> fuzz/regressions/{target}/{name}\n\
             \x20           cargo test -p lodestar-fuzz",
            target = r.target,
            artifact = artifact.display(),
            flags = FUZZ_FLAGS.join(" "),
        );
    }
    if !crashed.is_empty() {
        bail!("{} of {} fuzz targets crashed", crashed.len(), runs.len());
    }
    Ok(())
}

fn parse_args(rest: &[String]) -> Result<(Option<String>, u64)> {
    let mut only = None;
    let mut seconds = DEFAULT_SECONDS;
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        let value = if arg == "--seconds" {
            Some(args.next().context("`--seconds` needs a number")?.as_str())
        } else {
            arg.strip_prefix("--seconds=")
        };
        if let Some(value) = value {
            seconds =
                value.parse().ok().filter(|s| *s > 0).with_context(|| {
                    format!("`--seconds` takes a positive number, not `{value}`")
                })?;
        } else if arg.starts_with('-') {
            bail!("unexpected option `{arg}` to `fuzz`; see `cargo xtask help`");
        } else if only.is_none() {
            only = Some(arg.clone());
        } else {
            bail!("`fuzz` runs one target or all of them; got `{arg}` as well");
        }
    }
    Ok((only, seconds))
}

/// The names of the files of `fuzz/fuzz_targets/`, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs_err::read_dir(fuzz_dir.join("fuzz_targets"))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!(
            "no fuzz targets in {}",
            fuzz_dir.join("fuzz_targets").display()
        );
    }
    Ok(names)
}

/// `cargo +nightly` in the workspace root, without the variables that the stable `cargo run`
/// behind `cargo xtask` set: the toolchain's would pin the nested build to stable, and the
/// package's would rebuild half of DataFusion (see `cargo_env`).
fn nightly_cargo(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.arg("+nightly").current_dir(root);
    crate::cargo_env::clear_package_variables(&mut command);
    for key in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC"] {
        command.env_remove(key);
    }
    command
}

fn check_tools() -> Result<()> {
    let works = |args: &[&str]| {
        nightly_cargo(&workspace_root())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["--version"]) {
        bail!(
            "fuzzing needs the nightly toolchain (libFuzzer's coverage flags), which is not installed\n\
             hint: rustup toolchain install nightly --profile minimal"
        );
    }
    if !works(&["fuzz", "--version"]) {
        bail!(
            "fuzzing needs cargo-fuzz, which is not installed\n\
             hint: cargo install cargo-fuzz --locked"
        );
    }
    Ok(())
}

/// One target's run, for the table.
#[derive(Debug)]
struct Run {
    date: String,
    target: String,
    seconds: u64,
    executions: Option<u64>,
    corpus: usize,
    crash: Option<PathBuf>,
}

/// Runs one target for `seconds`, echoing libFuzzer's output, and reads its statistics and
/// crash artifact off that output. New inputs go to `fuzz/corpus/<target>` (not committed);
/// the committed seeds in `fuzz/seeds/<target>` are read too.
fn run_target(root: &Path, fuzz_dir: &Path, target: &str, seconds: u64) -> Result<Run> {
    let corpus = fuzz_dir.join("corpus").join(target);
    fs_err::create_dir_all(&corpus)?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let mut command = nightly_cargo(root);
    command
        .args(["fuzz", "run"])
        .args(FUZZ_FLAGS)
        .arg(target)
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    // One process (no -jobs/-workers: libFuzzer would fork workers); a hang of 10 s is a
    // crash; the final statistics give the executions.
    command.args([
        "--".to_string(),
        format!("-max_total_time={seconds}"),
        "-timeout=10".to_string(),
        "-rss_limit_mb=4096".to_string(),
        "-print_final_stats=1".to_string(),
    ]);
    command.stderr(Stdio::piped());
    let date = utc_now();
    let shown = shown(&command);
    eprintln!("xtask: running `{shown}`");
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let mut executions = None;
    let mut crash = None;
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        eprintln!("{line}");
        match read_line(&line) {
            Some(Output::Executions(n)) => executions = Some(n),
            Some(Output::Artifact(path)) if path.is_relative() => crash = Some(fuzz_dir.join(path)),
            Some(Output::Artifact(path)) => crash = Some(path),
            None => {}
        }
    }
    let status = child.wait()?;
    if !status.success() && crash.is_none() {
        bail!("`{shown}` exited with {status} and no crash artifact");
    }
    let corpus = fs_err::read_dir(&corpus)?.count();
    Ok(Run {
        date,
        target: target.to_string(),
        seconds,
        executions,
        corpus,
        crash,
    })
}

/// What a line of libFuzzer's output tells.
#[derive(Debug, PartialEq)]
enum Output {
    /// `stat::number_of_executed_units: N` (with `-print_final_stats=1`).
    Executions(u64),
    /// `… Test unit written to <path>`: a crash, a timeout or an out-of-memory input.
    Artifact(PathBuf),
}

fn read_line(line: &str) -> Option<Output> {
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        return n.trim().parse().ok().map(Output::Executions);
    }
    let path = line.split("Test unit written to ").nth(1)?;
    Some(Output::Artifact(PathBuf::from(path.trim())))
}

/// Today's date, `YYYY-MM-DD`, UTC, from the system clock.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = crate::civil::civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics_and_artifacts() {
        assert_eq!(
            read_line("stat::number_of_executed_units: 351275"),
            Some(Output::Executions(351_275))
        );
        assert_eq!(
            read_line(
                "artifact_prefix='/w/fuzz/artifacts/formula/'; Test unit written to /w/fuzz/artifacts/formula/crash-3f2a"
            ),
            Some(Output::Artifact(
                "/w/fuzz/artifacts/formula/crash-3f2a".into()
            ))
        );
        assert_eq!(
            read_line("#2048\tpulse  cov: 5810 ft: 17987 corp: 442/458Kb"),
            None
        );
    }

    #[test]
    fn takes_one_target_and_a_number_of_seconds() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(args(&[]).unwrap(), (None, DEFAULT_SECONDS));
        assert_eq!(
            args(&["formula", "--seconds", "600"]).unwrap(),
            (Some("formula".into()), 600)
        );
        assert_eq!(args(&["--seconds=5"]).unwrap(), (None, 5));
        assert!(args(&["--seconds", "0"]).is_err());
        assert!(args(&["a", "b"]).is_err());
        assert!(args(&["--jobs"]).is_err());
    }
}

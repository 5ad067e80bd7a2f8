//! The README's workflows (`example`, `test`), as sequences of cargo invocations.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::sample;

/// The workspace root, so every command works from any directory of the checkout.
///
/// `cargo run` sets `CARGO_MANIFEST_DIR` for the process; it is read at run time because cargo
/// reuses an xtask binary built from an identical checkout at another path, whose compiled-in
/// directory would be that other checkout (or gone).
pub fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The example project's file, relative to the workspace root.
const EXAMPLE_PROJECT: &str = "examples/lodestar.yaml";

/// `cargo xtask example`: the CLI's main commands on the example project.
pub fn example() -> Result<()> {
    ensure_sample_data()?;
    // One build of the workspace's libraries and binaries, plugins included, then the built
    // `lodestar`: a `cargo run -p lodestar-cli` would resolve features for that package alone
    // and compile DataFusion a second time.
    let built = cargo_build(["build", "--workspace"]).context("building the workspace failed")?;
    let lodestar = executable(&built, "lodestar")?;
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
        let args: Vec<&str> = project.iter().chain(step).copied().collect();
        run_program(&lodestar, &args)
            .with_context(|| format!("`lodestar {}` failed", step.join(" ")))?;
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
    // Everything the tests build, in one invocation and one feature set: the workspace with
    // every target, plugins and the `lodestar` binary included. The e2e tests ask cargo for the
    // same selection (`tests/it/support.rs`), a no-op after this; any other selection (the
    // plugins alone, `-p lodestar-cli`) would compile DataFusion again for its feature set.
    cargo(["build", "--workspace", "--all-targets"]).context("building the workspace failed")?;
    run_tests()
}

fn run_tests() -> Result<()> {
    cargo(["test", "--workspace", "--all-targets"]).context("the test suite failed")?;
    // `--all-targets` leaves out doctests, and the connector guide's example is one.
    cargo(["test", "--workspace", "--doc"]).context("the documentation examples failed")
}

/// `cargo xtask plugins`: builds every package under `plugins/`. Cargo puts each library in
/// `target/<profile>/`, the directory of the `lodestar` binary, which is on the CLI's plugin
/// search path; returns the packages built. (`example` and `test` build the plugins with the
/// rest of the workspace instead, in one feature set.)
pub fn plugins(release: bool) -> Result<Vec<String>> {
    let packages = plugin_packages()?;
    let mut args: Vec<String> = vec!["build".into()];
    if release {
        args.push("--release".into());
    }
    for package in &packages {
        args.push("--package".into());
        args.push(package.clone());
    }
    cargo(&args).context("building the plugins failed")?;
    eprintln!(
        "xtask: built {} plugin{}: {}",
        packages.len(),
        if packages.len() == 1 { "" } else { "s" },
        packages.join(", ")
    );
    Ok(packages)
}

/// `cargo xtask bench`: builds the benchmarks and plugins in release mode and runs them:
/// every benchmark, or the one named first (`ffi`, `tree`, `postgres`, `lake`, `cluster`,
/// `server`), each
/// with the flags it takes out of the remaining ones.
pub fn bench(rest: &[String]) -> Result<()> {
    let (only, flags) = match rest.first().map(String::as_str) {
        Some(name @ ("ffi" | "tree" | "postgres" | "lake" | "cluster" | "server")) => {
            (Some(name), &rest[1..])
        }
        _ => (None, rest),
    };
    check_bench_flags(only, flags)?;
    // One release build of the bench, the server it starts and only the plugins a chosen
    // benchmark loads (a release plugin links all of DataFusion with LTO, which takes minutes
    // each), in one invocation: two would be two feature sets, DataFusion compiled twice.
    let mut build: Vec<String> = ["build", "--release", "--package", "lodestar-cli"]
        .map(String::from)
        .into();
    build.extend(["--package".into(), "lodestar-bench".into()]);
    for (bench, plugin) in [("ffi", "generate"), ("postgres", "postgres")] {
        if only.is_none_or(|b| b == bench) {
            build.extend(["--package".into(), format!("lodestar-connector-{plugin}")]);
        }
    }
    let built = cargo_build(&build)
        .context("building the release `lodestar`, `lodestar-bench` and plugins failed")?;
    let bench_bin = executable(&built, "lodestar-bench")?;
    let run = |bench: &str, args: &[String]| {
        let shown = format!("{} {bench} {}", bench_bin.display(), args.join(" "));
        eprintln!("xtask: running `{shown}`");
        let status = Command::new(&bench_bin)
            .arg(bench)
            .args(args)
            .current_dir(workspace_root())
            .status()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !status.success() {
            bail!("the `{bench}` benchmark failed: `{shown}` exited with {status}");
        }
        Ok(())
    };
    if only.is_none_or(|b| b == "ffi") {
        run("ffi", &pick_flags(flags, &["--rows", "--runs"]))?;
    }
    if only.is_none_or(|b| b == "tree") {
        ensure_sample_data()?;
        let mut args = vec![
            "--project".to_string(),
            workspace_root()
                .join(EXAMPLE_PROJECT)
                .to_string_lossy()
                .into_owned(),
        ];
        args.extend(pick_flags(flags, &["--runs"]));
        run("tree", &args)?;
    }
    if only.is_none_or(|b| b == "postgres") {
        // A throwaway cluster from the machine's PostgreSQL binaries; `--rows` would size the
        // ffi benchmark's table, so only an explicit `postgres` run passes it on.
        let args = if only.is_some() {
            pick_flags(flags, &["--rows", "--runs"])
        } else {
            pick_flags(flags, &["--runs"])
        };
        run("postgres", &args)?;
    }
    if only.is_none_or(|b| b == "lake") {
        // DuckDB side by side on a generated lake; its data and Python environment are kept
        // under the target directory between runs.
        run(
            "lake",
            &pick_flags(
                flags,
                &["--tree", "--events", "--runs", "--threads", "--refresh"],
            ),
        )?;
    }
    if only.is_none_or(|b| b == "cluster") {
        // The lake's tree in one process and on loopback clusters of the release `lodestar`
        // built above (its data shared with `lake`).
        run(
            "cluster",
            &pick_flags(flags, &["--events", "--runs", "--threads", "--executors"]),
        )?;
    }
    if only.is_none_or(|b| b == "server") {
        // The release server built above, beside the bench; no plugin (the example project
        // reads local files).
        ensure_sample_data()?;
        let mut args = vec![
            "--project".to_string(),
            workspace_root()
                .join(EXAMPLE_PROJECT)
                .to_string_lossy()
                .into_owned(),
        ];
        args.extend(pick_flags(flags, SERVER_FLAGS));
        run("server", &args)?;
    }
    Ok(())
}

/// Flags of the `server` benchmark.
const SERVER_FLAGS: &[&str] = &[
    "--clients",
    "--slots",
    "--cached-requests",
    "--cold-requests",
    "--phase-seconds",
    "--soak-seconds",
    "--sample-seconds",
];

/// Flags the benchmarks take; `--refresh` alone has no value.
const BENCH_FLAGS: &[&str] = &[
    "--tree",
    "--rows",
    "--runs",
    "--events",
    "--threads",
    "--refresh",
    "--executors",
    "--clients",
    "--slots",
    "--cached-requests",
    "--cold-requests",
    "--phase-seconds",
    "--soak-seconds",
    "--sample-seconds",
];

/// Refuses a flag no benchmark takes, before minutes of release build.
fn check_bench_flags(only: Option<&str>, flags: &[String]) -> Result<()> {
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        if !BENCH_FLAGS.contains(&flag.as_str()) {
            bail!(
                "unknown flag `{flag}` for `bench{}`; see `cargo xtask help`",
                only.map(|o| format!(" {o}")).unwrap_or_default()
            );
        }
        if flag != "--refresh" && iter.next().is_none() {
            bail!("`{flag}` needs a value");
        }
    }
    Ok(())
}

/// The flags among `wanted` (with their values) out of a benchmark's flags.
fn pick_flags(flags: &[String], wanted: &[&str]) -> Vec<String> {
    let mut picked = Vec::new();
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        let value = if flag == "--refresh" {
            None
        } else {
            iter.next()
        };
        if wanted.contains(&flag.as_str()) {
            picked.push(flag.clone());
            picked.extend(value.cloned());
        }
    }
    picked
}

/// The package names of `plugins/*/Cargo.toml`.
fn plugin_packages() -> Result<Vec<String>> {
    let dir = workspace_root().join("plugins");
    let mut packages = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let manifest = entry?.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        // The first `name = "..."` of a manifest is the package's (it opens with [package]).
        let name = text
            .lines()
            .find_map(|line| {
                let value = line.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })
            .with_context(|| format!("no package name in {}", manifest.display()))?;
        packages.push(name);
    }
    packages.sort();
    Ok(packages)
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
    // The cargo that started xtask, so nested builds use the same toolchain.
    let mut command = crate::cargo_env::command();
    run_status(command.args(args).current_dir(workspace_root()))
}

/// Runs `command` with inherited stdio, saying so first; an exit other than success is an
/// error showing the command.
pub(crate) fn run_status(command: &mut Command) -> Result<()> {
    let shown = shown(command);
    eprintln!("xtask: running `{shown}`");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

/// Runs a cargo build (`args` start with `build`) with cargo's JSON messages on stdout and its
/// rendered diagnostics and progress on stderr; returns the executables it built or found up
/// to date. Their paths come from cargo, so a target directory set anywhere cargo reads one
/// (`CARGO_TARGET_DIR`, `build.target-dir` in a config file) is followed.
fn cargo_build<I>(args: I) -> Result<Vec<PathBuf>>
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    let mut command = crate::cargo_env::command();
    command
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .stdout(Stdio::piped());
    let shown = shown(&command);
    eprintln!("xtask: running `{shown}`");
    let output = command
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!("`{shown}` exited with {}", output.status);
    }
    Ok(executables(&String::from_utf8_lossy(&output.stdout)))
}

/// The `"executable"` paths of cargo's JSON messages (one object per line). xtask has no JSON
/// parser: the field's string is read with JSON's escapes, which is all a path needs.
fn executables(messages: &str) -> Vec<PathBuf> {
    const FIELD: &str = "\"executable\":\"";
    messages
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|line| {
            let rest = &line[line.find(FIELD)? + FIELD.len()..];
            let mut path = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(PathBuf::from(path)),
                    '\\' => match chars.next()? {
                        'n' => path.push('\n'),
                        't' => path.push('\t'),
                        'u' => {
                            let code: String = chars.by_ref().take(4).collect();
                            path.push(char::from_u32(u32::from_str_radix(&code, 16).ok()?)?);
                        }
                        other => path.push(other),
                    },
                    c => path.push(c),
                }
            }
            None
        })
        .collect()
}

/// The executable named `name` among those a build reported.
fn executable(built: &[PathBuf], name: &str) -> Result<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    built
        .iter()
        .find(|path| path.file_name().is_some_and(|f| f == file.as_str()))
        .cloned()
        .with_context(|| format!("the build reported no `{file}` executable"))
}

/// Runs a program built here, in the workspace root, with inherited stdio.
fn run_program(program: &Path, args: &[&str]) -> Result<()> {
    run_status(
        Command::new(program)
            .args(args)
            .current_dir(workspace_root()),
    )
}

/// A command as a line to show.
pub(crate) fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_read_from_cargos_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","package_id":"x","target":{"name":"lodestar"},"executable":"/t/debug/lodestar","fresh":true}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"lodestar_core"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"b"},"executable":"/a \"q\"\\b\u00e9/lodestar-bench"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        let built = executables(messages);
        assert_eq!(
            built,
            [
                PathBuf::from("/t/debug/lodestar"),
                PathBuf::from("/a \"q\"\\b\u{e9}/lodestar-bench")
            ]
        );
        assert_eq!(
            executable(&built, "lodestar-bench").unwrap(),
            PathBuf::from("/a \"q\"\\b\u{e9}/lodestar-bench")
        );
        assert!(executable(&built, "lodestar-cli").is_err());
    }
}

//! Shared helpers: finding (and building) the `lodestar` binary, running it, and copying
//! fixture projects to scratch directories.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

/// This crate's directory, as cargo reports it when it runs the tests.
///
/// Read at run time rather than with `env!`: cargo reuses a test binary built from an
/// identical checkout at another path (its fingerprints are relative to the workspace), and a
/// compiled-in path would then point at that other checkout's files.
fn crate_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    })
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    crate_dir()
        .parent()
        .expect("the e2e crate lives one level below the workspace root")
}

/// A directory of this crate, such as `cases` or `errors`.
pub fn test_dir(name: &str) -> PathBuf {
    crate_dir().join(name)
}

/// The `lodestar` binary under test.
///
/// Cargo builds binaries only for the packages being tested, and a bin-only package such as
/// `lodestar-cli` cannot be a dependency (artifact dependencies are unstable), so
/// `cargo test -p lodestar-e2e` on its own would not build it, and a path guessed from the
/// test executable's directory could point at a stale binary. Instead, the first test that
/// needs the binary or the plugins runs [`WORKSPACE_BUILD`] with the cargo that runs the
/// tests (`$CARGO`), in the same profile, with the inherited `CARGO_TARGET_DIR`, and takes the
/// binary's path from cargo's JSON messages.
///
/// `LODESTAR_BIN=/path/to/lodestar` skips the build and tests that binary instead.
pub fn lodestar_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| match std::env::var_os("LODESTAR_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => build_workspace(),
    }) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

/// What the tests build: the whole workspace with every target, the packages and features
/// `cargo test --workspace --all-targets` (and `cargo xtask test`) builds. Cargo unifies
/// features over the packages of one invocation, so a build of `-p lodestar-cli` alone, or of
/// the plugins alone, would be another feature set of DataFusion and its dependencies: all of
/// it compiled again (about ten minutes here), inside the first test that asked. The same
/// selection is a no-op after `cargo test --workspace` and builds the binary and every plugin
/// (workspace members, among them the test plugins) in one go after
/// `cargo test -p lodestar-e2e`.
pub const WORKSPACE_BUILD: &[&str] = &["build", "--workspace", "--all-targets"];

fn build_workspace() -> Result<PathBuf, String> {
    let output = lodestar_testkit::cargo::command()
        .current_dir(workspace_root())
        .args(WORKSPACE_BUILD)
        .args(["--profile", &current_profile()])
        .arg("--message-format=json-render-diagnostics")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let shown = WORKSPACE_BUILD.join(" ");
    if !output.status.success() {
        return Err(format!(
            "`cargo {shown}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        // `--all-targets` also builds the binary's unit-test harness (`deps/lodestar-<hash>`),
        // reported under the same target name with a test profile.
        .filter(|msg| {
            msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == "lodestar"
                && msg["profile"]["test"] == false
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("`cargo {shown}` reported no `lodestar` executable"))
}

/// The directory holding the connector plugins under test: cargo puts the workspace's plugin
/// libraries, built with the binary, beside it, on the CLI's plugin search path. With
/// `LODESTAR_BIN`, the plugins are expected beside that binary.
pub fn plugin_dir() -> &'static Path {
    lodestar_bin()
        .parent()
        .expect("the `lodestar` executable is a file in a directory")
}

/// The file name of connector `name`'s library on this platform.
pub fn plugin_file(name: &str) -> String {
    format!(
        "{}lodestar_connector_{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The cargo profile this test binary was built with, from its directory:
/// `target/<dir>/deps/it-<hash>`, where `<dir>` is `debug` for the `dev` profile.
fn current_profile() -> String {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(OsStr::to_str)
        .unwrap_or("debug");
    match dir {
        "debug" => "dev".to_string(),
        other => other.to_string(),
    }
}

/// A `lodestar` command with an environment that does not depend on the developer's shell.
pub fn lodestar() -> Command {
    let mut cmd = Command::new(lodestar_bin());
    cmd.env_remove("RUST_LOG")
        .env_remove("LODESTAR_PROJECT")
        .env_remove("LODESTAR_PLUGIN_PATH")
        .env("NO_COLOR", "1")
        // Tests that do not choose a directory run where no project can be found by accident.
        .current_dir(std::env::temp_dir());
    cmd
}

/// `lodestar --project <project> <args...>`.
pub fn lodestar_project<I, S>(project: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = lodestar();
    cmd.arg("--project").arg(project).args(args);
    cmd
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub command: String,
    /// `None` when the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion, capturing its output.
    pub fn of(cmd: &mut Command) -> Run {
        let command = describe(cmd);
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        Run {
            command,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics, showing everything, unless the command exited with `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    pub fn success(self) -> Run {
        self.expect_code(0)
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "exit code: {:?}", self.code)?;
        writeln!(f, "--- stdout\n{}", self.stdout)?;
        write!(f, "--- stderr\n{}", self.stderr)
    }
}

/// The command line, quoted so that it can be pasted into a shell.
fn describe(cmd: &Command) -> String {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args = cmd.get_args().map(|a| a.to_string_lossy().into_owned());
    shell_words::join(std::iter::once(program).chain(args))
}

/// A scratch copy of a fixture directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    /// Copies `fixture` (a directory) into a new temporary directory.
    pub fn copy_of(fixture: &Path) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("lodestar-e2e-")
            .tempdir()
            .expect("cannot create a temporary directory");
        copy_dir(fixture, dir.path());
        Scratch { dir }
    }

    /// A new, empty temporary directory.
    pub fn empty() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("lodestar-e2e-")
                .tempdir()
                .expect("cannot create a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The copy's `lodestar.yaml`.
    pub fn project(&self) -> PathBuf {
        self.dir.path().join("lodestar.yaml")
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The sub-directories of `dir`, sorted by name.
pub fn sub_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Reads a one-line `args` file: the arguments after `lodestar --project ...`, shell-quoted.
pub fn read_args(file: &Path) -> Vec<String> {
    let text = fs_err::read_to_string(file).unwrap();
    shell_words::split(text.trim())
        .unwrap_or_else(|e| panic!("{}: cannot split arguments: {e}", file.display()))
}

/// A parsed CSV document: its header and rows, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn parse(text: &str) -> Result<Table, csv::Error> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(text.as_bytes());
        let header = reader.headers()?.iter().map(str::to_string).collect();
        let rows = reader
            .records()
            .map(|r| r.map(|r| r.iter().map(str::to_string).collect()))
            .collect::<Result<_, _>>()?;
        Ok(Table { header, rows })
    }

    /// The column named `name`, as text.
    pub fn column(&self, name: &str) -> Vec<&str> {
        let i = self
            .header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column `{name}` in {:?}", self.header));
        self.rows
            .iter()
            .map(|r| r.get(i).map_or("", String::as_str))
            .collect()
    }
}

/// Whether an actual cell matches an expected one: the same text, both empty or null, or
/// both numbers equal within a relative tolerance of 1e-9 (so `2` matches `2.0`, and
/// `4.166666666666667` matches `4.1666666666666667`).
pub fn cell_matches(expected: &str, actual: &str) -> bool {
    let (expected, actual) = (expected.trim(), actual.trim());
    if expected == actual {
        return true;
    }
    let is_null = |s: &str| s.is_empty() || s.eq_ignore_ascii_case("null");
    if is_null(expected) || is_null(actual) {
        return is_null(expected) && is_null(actual);
    }
    match (expected.parse::<f64>(), actual.parse::<f64>()) {
        (Ok(e), Ok(a)) if e.is_finite() && a.is_finite() => {
            (e - a).abs() <= 1e-9 * e.abs().max(a.abs())
        }
        _ => false,
    }
}

/// The 1-based line and column where `needle` first occurs in `text`, after `after` if given
/// (to find, say, the `grain` of one metric among several).
pub fn position_of(text: &str, after: Option<&str>, needle: &str) -> (usize, usize) {
    let start = after.map_or(0, |a| {
        text.find(a)
            .unwrap_or_else(|| panic!("`{a}` does not occur in the fixture"))
    });
    let offset = start
        + text[start..]
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` does not occur in the fixture"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
    (line, column)
}

#[test]
fn cells_compare_as_numbers_text_and_nulls() {
    assert!(cell_matches("2", "2.0"));
    assert!(cell_matches("4.166666666666667", "4.1666666666666667"));
    assert!(cell_matches("", "null"));
    assert!(cell_matches("DE", "DE"));
    assert!(!cell_matches("0", ""));
    assert!(!cell_matches("19.75", "19.76"));
    assert!(!cell_matches("2026-03-01", "2026-03-01T00:00:00"));
}

#[test]
fn positions_are_one_based() {
    let text = "a: 1\nmetrics:\n  x:\n    grain: fortnight\n";
    assert_eq!(position_of(text, None, "fortnight"), (4, 12));
    assert_eq!(position_of(text, Some("x:"), "grain"), (4, 5));
    assert_eq!(position_of(text, None, "a"), (1, 1));
}

/// `examples/lodestar.yaml`, after making sure its generated data exists (generated once per
/// test run, by `cargo xtask sample`).
pub fn example_project() -> &'static Path {
    static PROJECT: OnceLock<PathBuf> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let root = workspace_root();
        if !root.join("examples/data").is_dir() {
            let mut cmd = lodestar_testkit::cargo::command();
            cmd.current_dir(root)
                .args(["run", "--quiet", "--package", "xtask", "--", "sample"]);
            Run::of(&mut cmd).success();
        }
        root.join("examples/lodestar.yaml")
    })
}

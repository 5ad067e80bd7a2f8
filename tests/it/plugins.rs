//! Connector plugins, loaded from real shared libraries by the real host: the `generate`
//! plugin (a deterministic event table) and `abi_mismatch` (built for a future ABI).
//!
//! Expected numbers come from the generator's documented formulas, evaluated here row by row.

use std::path::Path;

use lodestar_core::datafusion::arrow::array::{AsArray, RecordBatch};
use lodestar_core::datafusion::arrow::datatypes::Int64Type;
use lodestar_core::model::Grain;
use lodestar_core::{Engine, MetricRequest, config};
use tempfile::TempDir;

use crate::support::{Run, lodestar, lodestar_project, plugin_dir, plugin_file};

/// 2026-01-01T00:00:00 UTC, the generator's row 0, in seconds.
const START: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

/// A project directory with this `lodestar.yaml`.
fn project(yaml: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-plugins-")
        .tempdir()
        .unwrap();
    fs_err::write(dir.path().join("lodestar.yaml"), yaml).unwrap();
    dir
}

/// Puts connector `name`'s library into `dir` (a symbolic link: debug plugins are large).
fn place_plugin(name: &str, dir: &Path) {
    let file = plugin_file(name);
    let from = plugin_dir().join(&file);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&from, dir.join(&file)).unwrap();
    #[cfg(not(unix))]
    fs_err::copy(&from, dir.join(&file)).unwrap();
}

fn run(dir: &TempDir, args: &[&str]) -> Run {
    plugin_dir();
    Run::of(&mut lodestar_project(
        &dir.path().join("lodestar.yaml"),
        args,
    ))
}

const GENERATED: &str = "\
sources:
  gen: { connector: generate, rows: 10000, step_seconds: 60 }
metrics:
  events: { table: gen.events, time: ts, measure: count(*) }
  purchase_amount:
    table: gen.events
    time: ts
    measure: sum(amount)
    filter: kind = 'purchase'
";

/// Row ids of the generator whose timestamp (a row a minute) falls in day `day` (0-based).
fn ids_of_day(day: i64) -> std::ops::Range<i64> {
    let per_day = DAY / 60;
    (day * per_day)..((day + 1) * per_day)
}

#[test]
fn a_metric_is_computed_through_a_plugin() {
    let dir = project(GENERATED);
    let out = run(
        &dir,
        &[
            "compute",
            "events",
            "purchase_amount",
            "--grain",
            "day",
            "--format",
            "csv",
        ],
    )
    .success();
    // 10,000 rows a minute apart: days 0..6 are full (1440 rows), day 6 has 1360.
    let mut expected = String::from("period,events,purchase_amount\n");
    for day in 0..7 {
        let ids: Vec<i64> = ids_of_day(day).filter(|id| *id < 10_000).collect();
        let purchases: i64 = ids
            .iter()
            .filter(|id| *id % 10 == 0)
            .map(|id| id % 100)
            .sum();
        let date = 1 + day;
        expected.push_str(&format!("2026-01-{date:02},{},{purchases}.0\n", ids.len()));
    }
    assert_eq!(out.stdout, expected, "{out}");
}

#[test]
fn connectors_lists_built_in_and_plugins_with_versions_and_options() {
    plugin_dir();
    let out = Run::of(lodestar().args(["connectors", "--format", "json"])).success();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no connector `{name}` listed\n{out}"))
            .clone()
    };
    assert_eq!(row("files")["kind"], "built-in");
    let generate = row("generate");
    assert_eq!(generate["kind"], "plugin");
    assert_eq!(generate["version"], "0.1.0");
    assert!(
        generate["options"]
            .as_array()
            .unwrap()
            .contains(&"rows".into())
    );
    assert!(
        generate["path"]
            .as_str()
            .unwrap()
            .ends_with(&plugin_file("generate")),
        "{generate}"
    );
    let mismatch = row("abi_mismatch");
    assert_eq!(mismatch["kind"], "refused");
    assert!(
        mismatch["error"].as_str().unwrap().contains("version 999"),
        "{mismatch}"
    );
}

#[test]
fn the_plugin_path_variable_comes_first() {
    let extra = TempDir::new().unwrap();
    place_plugin("generate", extra.path());
    let out = Run::of(lodestar().env("LODESTAR_PLUGIN_PATH", extra.path()).args([
        "connectors",
        "--format",
        "json",
    ]))
    .success();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let generate = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "generate")
        .unwrap();
    let path = Path::new(generate["path"].as_str().unwrap());
    assert_eq!(path.parent(), Some(extra.path()), "{out}");
}

#[test]
fn an_abi_mismatch_is_refused_naming_both_versions_and_the_path() {
    let dir = project("sources:\n  future: { connector: abi_mismatch }\nmetrics: {}\n");
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(
        out.stderr.contains("lodestar.yaml:2:3: source `future`"),
        "{out}"
    );
    assert!(out.stderr.contains("ABI version 999"), "{out}");
    assert!(out.stderr.contains("speaks version 1"), "{out}");
    assert!(out.stderr.contains(&plugin_file("abi_mismatch")), "{out}");
}

/// A library a user can put on the plugin path by mistake, named like a plugin.
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// A text file.
    NotALibrary,
    /// A real shared library without the entry point (fixture `plugins/no-entry`).
    NoEntry,
    /// A plugin of this ABI declaring DataFusion 54 (fixture `plugins/datafusion-mismatch`).
    DataFusion54,
}

impl Refused {
    const ALL: [Refused; 3] = [
        Refused::NotALibrary,
        Refused::NoEntry,
        Refused::DataFusion54,
    ];

    fn connector(self) -> &'static str {
        match self {
            Refused::NotALibrary => "notes",
            Refused::NoEntry => "no_entry",
            Refused::DataFusion54 => "datafusion_mismatch",
        }
    }

    /// What the user is told is wrong, and part of the hint.
    fn problem(self) -> (&'static str, &'static str) {
        match self {
            Refused::NotALibrary => (
                "it is not a shared library this system can load",
                "a file named like liblodestar_connector_notes.so on the plugin path must be a connector plugin",
            ),
            Refused::NoEntry => (
                "is not a Lodestar connector plugin: it exports no `lodestar_connector_descriptor`",
                "a file named like liblodestar_connector_no_entry.so on the plugin path must be a connector plugin",
            ),
            Refused::DataFusion54 => (
                "was built with DataFusion 54.0.0, but this Lodestar uses DataFusion 55",
                "rebuild liblodestar_connector_datafusion_mismatch.so with DataFusion 55",
            ),
        }
    }

    /// A project whose `plugins/` holds the text file, and whose source `bad` uses `self`
    /// (the fixtures are found beside the binary).
    fn project(self) -> TempDir {
        let dir = project(&format!(
            "sources:\n  bad: {{ connector: {} }}\nmetrics:\n  n: {{ table: bad.events, time: ts, measure: count(*) }}\n",
            self.connector()
        ));
        let plugins = dir.path().join("plugins");
        fs_err::create_dir(&plugins).unwrap();
        fs_err::write(
            plugins.join(plugin_file("notes")),
            "These are my notes, not a plugin.\n",
        )
        .unwrap();
        dir
    }

    /// The library's path, as the messages name it.
    fn path(self, project: &TempDir) -> std::path::PathBuf {
        let file = plugin_file(self.connector());
        match self {
            Refused::NotALibrary => project.path().join("plugins").join(file),
            _ => plugin_dir().join(file),
        }
    }
}

#[test]
fn refused_libraries_are_listed_with_the_problem_and_a_hint() {
    for refused in Refused::ALL {
        let dir = refused.project();
        let out = run(&dir, &["connectors", "--format", "json"]).success();
        let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == refused.connector())
            .unwrap_or_else(|| panic!("{refused:?} is not listed\n{out}"));
        let (problem, hint) = refused.problem();
        assert_eq!(row["kind"], "refused", "{row}");
        let error = row["error"].as_str().unwrap();
        assert!(error.contains(problem), "{refused:?}: {row}");
        let path = refused.path(&dir).canonicalize().unwrap();
        assert!(error.contains(&path.display().to_string()), "{row}");
        assert!(row["hint"].as_str().unwrap().contains(hint), "{row}");

        // The table the user reads says the same, and the other connectors are still listed.
        let out = run(&dir, &["connectors"]).success();
        assert!(out.stdout.contains("refused"), "{out}");
        assert!(out.stdout.contains("generate"), "{out}");
    }
}

#[test]
fn a_source_using_a_refused_library_is_an_error_naming_the_file_with_a_hint() {
    for refused in Refused::ALL {
        let dir = refused.project();
        let (problem, hint) = refused.problem();
        let path = refused.path(&dir).canonicalize().unwrap();
        for args in [&["validate"][..], &["compute", "n", "--grain", "day"][..]] {
            // Exit code 1 (the user's to fix), not a crash.
            let out = run(&dir, args).expect_code(1);
            assert!(
                out.stderr.contains("lodestar.yaml:2:3: source `bad`: "),
                "{refused:?}\n{out}"
            );
            assert!(out.stderr.contains(problem), "{refused:?}\n{out}");
            assert!(
                out.stderr.contains(&path.display().to_string()),
                "{refused:?}\n{out}"
            );
            assert!(
                out.stderr.contains(&format!("hint: {hint}")),
                "{refused:?}\n{out}"
            );
        }
    }
}

#[test]
fn a_panic_while_connecting_is_an_error_naming_the_source() {
    let dir = project("sources:\n  gen: { connector: generate, panic: connect }\nmetrics: {}\n");
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(out.stderr.contains("source `gen`"), "{out}");
    assert!(
        out.stderr.contains(
            "connector `generate`: the connector panicked: asked to panic while connecting"
        ),
        "{out}"
    );
}

/// Runs `lodestar ARGS` on the generator asked to panic in `call`.
fn run_with_panic(call: &str, args: &[&str]) -> Run {
    let dir = project(&GENERATED.replace(
        "step_seconds: 60",
        &format!("step_seconds: 60, panic: {call}"),
    ));
    run(&dir, args)
}

/// The host survived (an exit code, not a signal) and the user is told which connector
/// panicked, in which call, and where in its code.
fn assert_panic_reported(out: &Run, during: &str) {
    assert!(out.code.is_some(), "killed by a signal\n{out}");
    assert!(
        out.stderr.contains(&format!(
            "the connector `generate` panicked while {during}: asked to panic while"
        )),
        "{out}"
    );
    assert!(
        out.stderr.contains("crates/lodestar-generate/src/lib.rs"),
        "the panic's place\n{out}"
    );
}

/// `lodestar compute` on the generator asked to panic in `call`: the query fails with exit
/// code 2 (an internal error: the connector's bug, not the user's) and the panic's message.
fn assert_compute_reports_panic(call: &str, during: &str) {
    let out = run_with_panic(call, &["compute", "events", "--grain", "day"]);
    assert_panic_reported(&out, during);
    assert_eq!(out.code, Some(2), "{out}");
}

/// `lodestar compute` on the generator asked to panic in `call`, a call made while the
/// metric is checked against its table: the table cannot be opened, exit code 1 as for a
/// source that cannot be opened (a panic while connecting), with the panic's message.
fn assert_opening_reports_panic(call: &str, during: &str) {
    let out = run_with_panic(call, &["compute", "events", "--grain", "day"]);
    assert_panic_reported(&out, during);
    assert!(
        out.stderr.contains("table `gen.events` cannot be opened"),
        "{out}"
    );
    assert_eq!(out.code, Some(1), "{out}");
}

#[test]
fn a_panic_while_opening_a_table_fails_the_query_not_the_process() {
    assert_opening_reports_panic("table", "opening a table");
}

#[test]
fn a_panic_in_a_tables_schema_fails_the_query_not_the_process() {
    assert_opening_reports_panic("schema", "describing a table's columns");
}

#[test]
fn a_panic_in_a_tables_type_fails_the_query_not_the_process() {
    assert_opening_reports_panic("table_type", "describing a table's type");
}

#[test]
fn a_panic_while_pushing_filters_fails_the_query_not_the_process() {
    // Filters are offered to the connector only when the query has some: a metric's filter
    // and the request's range.
    let out = run_with_panic(
        "filters",
        &[
            "compute",
            "purchase_amount",
            "--grain",
            "day",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-02",
        ],
    );
    assert_panic_reported(&out, "pushing filters down");
    assert_eq!(out.code, Some(2), "{out}");
}

#[test]
fn a_panic_while_planning_a_scan_fails_the_query_not_the_process() {
    assert_compute_reports_panic("plan", "planning a scan");
}

#[test]
fn a_panic_in_a_scans_name_fails_the_query_not_the_process() {
    assert_compute_reports_panic("name", "naming its scan");
}

#[test]
fn a_panic_in_a_scans_properties_fails_the_query_not_the_process() {
    assert_compute_reports_panic("properties", "describing its scan's properties");
}

#[test]
fn a_panic_while_starting_a_scan_fails_the_query_not_the_process() {
    assert_compute_reports_panic("execute", "starting a scan");
}

#[test]
fn a_panic_while_reading_rows_fails_the_query_not_the_process() {
    assert_compute_reports_panic("stream", "reading rows");
}

/// Listing tables cannot fail: the list is empty and the panic is reported on stderr, here
/// when `validate` lists the tables of a source to say that a metric's table is not one.
#[test]
fn a_panic_while_listing_tables_is_reported_not_fatal() {
    let dir = project(
        "sources:\n  gen: { connector: generate, panic: table_names }\nmetrics:\n  n: { table: gen.nope, time: ts, measure: count(*) }\n",
    );
    let out = run(&dir, &["validate"]).expect_code(1);
    assert_panic_reported(&out, "listing tables");
}

/// An engine on the generator asked to panic in `call`, in this process: the calls a query
/// does not make are made here directly on the host's side of the plugin's providers.
async fn engine_with_panic(call: &str) -> (TempDir, Engine) {
    let dir = project(&GENERATED.replace(
        "step_seconds: 60",
        &format!("step_seconds: 60, panic: {call}"),
    ));
    fs_err::create_dir(dir.path().join("plugins")).unwrap();
    place_plugin("generate", &dir.path().join("plugins"));
    let project = config::load(&dir.path().join("lodestar.yaml")).unwrap();
    let engine = Engine::open(project).await.unwrap();
    (dir, engine)
}

fn source_schema(
    engine: &Engine,
) -> std::sync::Arc<dyn lodestar_core::datafusion::catalog::SchemaProvider> {
    let ctx = engine.context();
    let catalog = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    ctx.catalog(&catalog).unwrap().schema("gen").unwrap()
}

/// The error of the next query on `engine`'s source `gen`.
async fn next_query_error(engine: &Engine) -> String {
    let result = match engine.sql("SELECT count(*) FROM gen.events").await {
        Ok(frame) => frame.collect().await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => panic!("the query after a panic succeeded"),
        Err(e) => e,
    }
}

/// Looking a table up cannot fail: the answer is "no", and the next query of the source fails
/// with the panic.
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_while_looking_up_a_table_answers_no_and_fails_the_next_query() {
    let (_dir, engine) = engine_with_panic("table_exist").await;
    assert!(!source_schema(&engine).table_exist("events"));
    let error = next_query_error(&engine).await;
    assert!(
        error.contains("the connector `generate` panicked while looking up a table: asked to panic while looking up a table"),
        "{error}"
    );
}

/// Statistics cannot fail: there are none, and the next query of the source fails with the
/// panic.
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_while_reading_statistics_answers_none_and_fails_the_next_query() {
    let (_dir, engine) = engine_with_panic("statistics").await;
    let table = source_schema(&engine)
        .table("events")
        .await
        .unwrap()
        .unwrap();
    assert!(table.statistics().is_none());
    let error = next_query_error(&engine).await;
    assert!(
        error.contains("the connector `generate` panicked while reading statistics: asked to panic while reading statistics"),
        "{error}"
    );
}

#[test]
fn options_are_checked_against_the_plugin_schema_with_their_line() {
    let dir = project("sources:\n  gen:\n    connector: generate\n    row: 10\nmetrics: {}\n");
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(
        out.stderr.contains(
            "lodestar.yaml:4:5: source `gen`: unknown option `row` for connector `generate`"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("did you mean `rows`?"), "{out}");

    let dir = project("sources:\n  gen:\n    connector: generate\n    rows: many\nmetrics: {}\n");
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(
        out.stderr
            .contains("lodestar.yaml:4:5: source `gen`: option `rows`"),
        "{out}"
    );
}

#[test]
fn secrets_in_options_are_never_echoed() {
    let dir = project(
        "sources:\n  gen:\n    connector: generate\n    password: hunter2-secret\nmetrics: {}\n",
    );
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(out.stderr.contains("unknown option `password`"), "{out}");
    assert!(!out.stderr.contains("hunter2"), "{out}");
}

/// Options nested under `api:` and `s3:` (the amplitude plugin's) that fail its schema: the
/// message names the option by its path and says what was expected, and no value written
/// anywhere in the options appears.
#[test]
fn secrets_nested_in_options_are_never_echoed() {
    let cases = [
        (
            "api: { api_key: hunter2-key, secret_key: [hunter2-secret] }",
            "lodestar.yaml:4:5: source `amp`: option `api.secret_key` must be of type string",
        ),
        (
            "api: { api_key: hunter2-key, secret_key: hunter2-secret, residency: hunter2-eu }",
            "option `api.residency` must be one of",
        ),
        (
            "api: { api_key: hunter2-key, secret_key: hunter2-secret, max_retries: -1 }",
            "option `api.max_retries` must be at least 0",
        ),
        (
            "api: { api_key: hunter2-key, secret_key: hunter2-secret, passw0rd: hunter2-pw }",
            "unknown option `api.passw0rd` for connector `amplitude`",
        ),
        (
            "api: { api_key: hunter2-key }",
            "option `api.secret_key` is required by connector `amplitude`",
        ),
        (
            "s3: { bucket: b, secret_access_key: { value: hunter2-secret } }",
            "option `s3.secret_access_key` must be of type string",
        ),
        (
            "s3: { bucket: b, allow_http: hunter2-http }",
            "option `s3.allow_http` must be of type boolean",
        ),
        (
            "api: hunter2-key-in-the-wrong-place",
            "option `api` must be of type object",
        ),
    ];
    for (options, expected) in cases {
        let dir = project(&format!(
            "sources:\n  amp:\n    connector: amplitude\n    {options}\nmetrics: {{}}\n"
        ));
        let out = run(&dir, &["validate"]).expect_code(1);
        assert!(out.stderr.contains(expected), "{options}\n{out}");
        assert!(!out.stderr.contains("hunter2"), "{options}\n{out}");
        assert!(!out.stdout.contains("hunter2"), "{options}\n{out}");
    }
}

#[test]
fn an_unknown_connector_lists_those_found() {
    let dir = project("sources:\n  gen: { connector: generat }\nmetrics: {}\n");
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(out.stderr.contains("unknown connector `generat`"), "{out}");
    assert!(out.stderr.contains("did you mean `generate`?"), "{out}");
    assert!(out.stderr.contains("files"), "{out}");
}

/// The plugin's own counters (table `gen.stats`), read in this process.
async fn generated(engine: &Engine) -> i64 {
    let batches: Vec<RecordBatch> = engine
        .sql("SELECT rows_generated FROM gen.stats")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Filters, including the engine's own time range, reach the plugin: it generates only the
/// rows they select. Checked in this process, where the plugin's counters are visible; the
/// plugin is found in `plugins/` beside the project file.
#[tokio::test(flavor = "multi_thread")]
async fn filters_and_time_ranges_are_pushed_into_the_plugin() {
    let dir = project(&GENERATED.replace("rows: 10000", "rows: 1000000"));
    fs_err::create_dir(dir.path().join("plugins")).unwrap();
    let name = plugin_file("generate");
    fs_err::copy(
        plugin_dir().join(&name),
        dir.path().join("plugins").join(&name),
    )
    .unwrap();
    let project = config::load(&dir.path().join("lodestar.yaml")).unwrap();
    let engine = Engine::open(project).await.unwrap();

    let before = generated(&engine).await;
    let batches = engine
        .sql("SELECT count(*) FROM gen.events WHERE id >= 5000 AND id < 5100")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        100
    );
    assert_eq!(
        generated(&engine).await - before,
        100,
        "only the filtered ids are generated"
    );

    // One day of a million minutes (almost two years): the request's range reaches the scan.
    let before = generated(&engine).await;
    let mut request = MetricRequest::new(["events"], Grain::Day);
    let day = chrono_date(START + 3 * DAY);
    request.from = Some(day);
    request.to = Some(day);
    let table = engine.compute(&request).await.unwrap();
    assert_eq!(table.values("events").unwrap(), [Some(1440.0)]);
    assert_eq!(
        generated(&engine).await - before,
        1440,
        "only one day is generated"
    );
}

fn chrono_date(seconds: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap()
        .date_naive()
}

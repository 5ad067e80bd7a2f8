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

#[test]
fn a_panic_while_connecting_is_an_error_naming_the_source() {
    let dir = project("sources:\n  gen: { connector: generate, panic: connect }\nmetrics: {}\n");
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(out.stderr.contains("source `gen`"), "{out}");
    assert!(
        out.stderr
            .contains("the connector panicked: asked to panic while connecting"),
        "{out}"
    );
}

#[test]
fn a_panic_while_planning_or_streaming_fails_the_query_not_the_process() {
    for (step, during) in [("plan", "planning a scan"), ("stream", "reading rows")] {
        let dir = project(&GENERATED.replace(
            "step_seconds: 60",
            &format!("step_seconds: 60, panic: {step}"),
        ));
        // Exit code 2 (an internal error), not a signal: the host caught it.
        let out = run(&dir, &["compute", "events", "--grain", "day"]).expect_code(2);
        assert!(
            out.stderr
                .contains(&format!("the connector panicked while {during}")),
            "{out}"
        );
        assert!(
            out.stderr.contains("crates/lodestar-generate/src/lib.rs"),
            "the panic's place\n{out}"
        );
    }
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

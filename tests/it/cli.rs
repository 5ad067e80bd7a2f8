//! The `lodestar` command line as a user drives it: each subcommand, the output formats,
//! `--output`, project discovery, help, completions, exit codes and the example project.
//!
//! Expected numbers come from the hand counts in `tests/cases/*/README.md` and
//! `tests/fixtures/shop/README.md`.

use std::path::Path;

use serde_json::Value;

use crate::support::{
    Run, Scratch, Table, cell_matches, example_project, lodestar, lodestar_project, test_dir,
};

fn case(name: &str) -> Scratch {
    Scratch::copy_of(&test_dir("cases").join(name))
}

fn shop() -> Scratch {
    Scratch::copy_of(&test_dir("fixtures").join("shop"))
}

/// Asserts that a CSV text equals `tests/cases/<name>/expected.csv` (numbers compared with
/// a tolerance, as in the cases test).
fn assert_csv_matches_case(csv_text: &str, name: &str, context: &dyn std::fmt::Display) {
    let expected_text =
        fs_err::read_to_string(test_dir("cases").join(name).join("expected.csv")).unwrap();
    let expected = Table::parse(&expected_text).unwrap();
    let actual =
        Table::parse(csv_text).unwrap_or_else(|e| panic!("not CSV: {e}\n{csv_text}\n{context}"));
    assert_eq!(actual.header, expected.header, "{context}");
    assert_eq!(actual.rows.len(), expected.rows.len(), "{context}");
    for (e, a) in expected.rows.iter().zip(&actual.rows) {
        assert!(
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| cell_matches(e, a)),
            "expected row {e:?}, got {a:?}\n{context}"
        );
    }
}

fn parse_json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{run}"))
}

fn assert_close(actual: &Value, expected: f64, context: &dyn std::fmt::Display) {
    let number = actual.as_f64().unwrap_or_else(|| {
        panic!("expected a number close to {expected}, got {actual}\n{context}")
    });
    assert!(
        (number - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "expected {expected}, got {number}\n{context}"
    );
}

// ---------------------------------------------------------------- validate

#[test]
fn validate_accepts_a_good_project() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(&project.project(), ["validate"])).success();
    assert!(run.stdout.contains("valid"), "{run}");
    assert!(!run.stdout.contains("invalid"), "{run}");
}

// ---------------------------------------------------------------- list

/// The shop's metrics with the kind each must be listed as.
const SHOP_KINDS: &[(&str, &str)] = &[
    ("revenue", "simple"),
    ("orders", "simple"),
    ("aov", "ratio"),
    ("signups", "simple"),
    ("total_signups", "cumulative"),
    ("revenue_net", "derived"),
    ("large_orders", "sql"),
];

#[test]
fn list_as_json_describes_every_metric() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["list", "--format", "json"],
    ))
    .success();
    let json = parse_json(&run);
    let metrics = json
        .as_array()
        .unwrap_or_else(|| panic!("not an array\n{run}"));
    let names: Vec<&str> = metrics.iter().filter_map(|m| m["name"].as_str()).collect();
    let expected_names: Vec<&str> = SHOP_KINDS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, expected_names, "metrics in file order\n{run}");

    for (name, kind) in SHOP_KINDS {
        let metric = metrics.iter().find(|m| m["name"] == *name).unwrap();
        assert_eq!(metric["kind"], *kind, "kind of `{name}`\n{run}");
        assert_eq!(
            metric["north_star"],
            *name == "revenue",
            "north_star of `{name}`\n{run}"
        );
        for key in ["owner", "inputs", "description", "grain"] {
            assert!(metric.get(key).is_some(), "`{name}` has no `{key}`\n{run}");
        }
    }
    let revenue = metrics.iter().find(|m| m["name"] == "revenue").unwrap();
    assert_eq!(revenue["owner"], "sales@example.com", "{run}");
    assert_eq!(
        revenue["inputs"],
        serde_json::json!(["orders", "aov"]),
        "{run}"
    );
    assert_eq!(revenue["description"], "Revenue of paid orders", "{run}");
    assert_eq!(revenue["grain"], "week", "{run}");
    let orders = metrics.iter().find(|m| m["name"] == "orders").unwrap();
    assert_eq!(orders["inputs"], serde_json::json!(["signups"]), "{run}");
    let signups = metrics.iter().find(|m| m["name"] == "signups").unwrap();
    assert_eq!(signups["inputs"], serde_json::json!([]), "{run}");
    assert_eq!(signups["owner"], Value::Null, "no owner is null\n{run}");
}

#[test]
fn list_as_a_table_shows_names_kinds_and_owners() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(&project.project(), ["list"])).success();
    for (name, kind) in SHOP_KINDS {
        assert!(
            run.stdout
                .lines()
                .any(|l| contains_word(l, name) && contains_word(l, kind)),
            "no line shows `{name}` as {kind}\n{run}"
        );
    }
    let revenue_line = run
        .stdout
        .lines()
        .find(|l| contains_word(l, "revenue"))
        .unwrap();
    assert!(revenue_line.contains("sales@example.com"), "{run}");
    let explicit = Run::of(&mut lodestar_project(
        &project.project(),
        ["list", "--format", "table"],
    ))
    .success();
    assert_eq!(explicit.stdout, run.stdout, "table is the default format");
}

/// Whether `word` occurs in `line` on its own, not as part of a longer name.
fn contains_word(line: &str, word: &str) -> bool {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

// ---------------------------------------------------------------- compute

#[test]
fn compute_csv_on_stdout_with_a_quiet_stderr() {
    let project = case("simple_day");
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        [
            "compute", "orders", "revenue", "--grain", "day", "--format", "csv",
        ],
    ))
    .success();
    assert_csv_matches_case(&run.stdout, "simple_day", &run);
    assert_eq!(
        run.stderr, "",
        "no progress or logs when stderr is not a terminal\n{run}"
    );
}

#[test]
fn compute_json_is_an_array_of_rows() {
    let project = case("simple_day");
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        [
            "compute", "orders", "revenue", "--grain", "day", "--format", "json",
        ],
    ))
    .success();
    let json = parse_json(&run);
    let rows = json
        .as_array()
        .unwrap_or_else(|| panic!("not an array\n{run}"));
    let periods: Vec<&str> = rows.iter().filter_map(|r| r["period"].as_str()).collect();
    assert_eq!(
        periods,
        [
            "2026-03-01",
            "2026-03-02",
            "2026-03-03",
            "2026-03-04",
            "2026-03-05"
        ],
        "{run}"
    );
    // Hand counts from tests/cases/simple_day/README.md.
    for (row, (orders, revenue)) in rows.iter().zip([
        (2.0, 19.75),
        (2.0, 15.5),
        (0.0, 0.0),
        (0.0, 0.0),
        (2.0, 22.75),
    ]) {
        assert_close(&row["orders"], orders, &run);
        assert_close(&row["revenue"], revenue, &run);
    }
}

#[test]
fn compute_json_writes_explicit_nulls() {
    let project = case("ratio_zero_denominator");
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        [
            "compute",
            "aov",
            "--grain",
            "day",
            "--from",
            "2026-04-01",
            "--to",
            "2026-04-02",
            "--format",
            "json",
        ],
    ))
    .success();
    let json = parse_json(&run);
    let rows = json
        .as_array()
        .unwrap_or_else(|| panic!("not an array\n{run}"));
    assert_eq!(rows.len(), 2, "{run}");
    // 04-01 has no orders: the ratio is null, and the key is there.
    assert_eq!(rows[0]["period"], "2026-04-01", "{run}");
    assert_eq!(rows[0].get("aov"), Some(&Value::Null), "{run}");
    assert_eq!(rows[1]["period"], "2026-04-02", "{run}");
    assert_close(&rows[1]["aov"], 22.5, &run);
}

#[test]
fn compute_output_writes_the_csv_to_a_file() {
    let project = case("simple_day");
    let out_dir = project.path().join("results");
    fs_err::create_dir(&out_dir).unwrap();
    let out = out_dir.join("series.csv");
    // An existing file is replaced.
    fs_err::write(&out, "stale\n").unwrap();
    let run = Run::of(
        lodestar_project(
            &project.project(),
            [
                "compute", "orders", "revenue", "--grain", "day", "--format", "csv",
            ],
        )
        .arg("--output")
        .arg(&out),
    )
    .success();
    assert!(
        !run.stdout.contains("2026-03-01"),
        "the rows go to the file, not stdout\n{run}"
    );
    let written = fs_err::read_to_string(&out).unwrap();
    assert_csv_matches_case(&written, "simple_day", &run);
    assert_eq!(
        dir_entries(&out_dir),
        ["series.csv"],
        "an atomic write leaves no temporary file behind"
    );
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn compute_parquet_output_reads_back() {
    let project = case("simple_day");
    let results = project.path().join("results");
    fs_err::create_dir(&results).unwrap();
    let file = results.join("series.parquet");
    Run::of(
        lodestar_project(
            &project.project(),
            [
                "compute", "orders", "revenue", "--grain", "day", "--format", "parquet",
            ],
        )
        .arg("--output")
        .arg(&file),
    )
    .success();
    let bytes = fs_err::read(&file).unwrap();
    assert!(
        bytes.len() > 8 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
        "not a Parquet file ({} bytes)",
        bytes.len()
    );

    // Read it back through a project whose source is the results folder.
    let reader = project.path().join("reader.yaml");
    fs_err::write(
        &reader,
        "sources:\n  out: { connector: files, path: results }\nmetrics: {}\n",
    )
    .unwrap();
    let run = Run::of(&mut lodestar_project(
        &reader,
        [
            "sql",
            "SELECT CAST(period AS DATE) AS period, orders, revenue FROM out.series ORDER BY 1",
            "--format",
            "csv",
        ],
    ))
    .success();
    assert_csv_matches_case(&run.stdout, "simple_day", &run);
}

#[test]
fn compute_parquet_needs_an_output_file() {
    let project = case("simple_day");
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["compute", "orders", "--grain", "day", "--format", "parquet"],
    ))
    .expect_code(1);
    assert!(run.stdout.is_empty(), "no binary data on a terminal\n{run}");
    assert!(run.stderr.contains("--output"), "{run}");
}

#[test]
fn compute_unknown_metric_is_a_user_error() {
    let project = case("simple_day");
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["compute", "orders", "revenu", "--grain", "day"],
    ))
    .expect_code(1);
    assert!(
        run.stderr.contains("error: unknown metric `revenu`"),
        "{run}"
    );
    assert!(
        run.stderr.contains("`revenue`"),
        "suggests the close name\n{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn compute_bad_date_is_a_user_error() {
    let project = case("simple_day");
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        [
            "compute",
            "orders",
            "--grain",
            "day",
            "--from",
            "2026-13-01",
        ],
    ))
    .expect_code(1);
    assert!(run.stderr.contains("2026-13-01"), "{run}");
}

#[test]
fn explain_shows_the_bytes_of_the_text_files_a_scan_read() {
    let scratch = Scratch::empty();
    let data = scratch.path().join("data");
    fs_err::create_dir_all(&data).unwrap();
    fs_err::write(
        data.join("orders.csv"),
        "order_id,ordered_at\n1,2026-03-02T10:00:00\n2,2026-03-02T11:00:00\n3,2026-03-03T09:00:00\n",
    )
    .unwrap();
    fs_err::write(
        data.join("visits.ndjson"),
        "{\"visited_at\": \"2026-03-02T08:00:00\"}\n{\"visited_at\": \"2026-03-03T08:00:00\"}\n",
    )
    .unwrap();
    fs_err::write(
        scratch.project(),
        "sources:\n  app: { connector: files, path: data }\nmetrics:\n  \
           orders: { table: app.orders, time: ordered_at, measure: count(*) }\n  \
           visits: { table: app.visits, time: visited_at, measure: count(*) }\n",
    )
    .unwrap();
    let run = Run::of(&mut lodestar_project(
        &scratch.project(),
        ["compute", "orders", "visits", "--explain"],
    ))
    .success();
    // Both files are read whole, and both are under a KiB, so their sizes show in bytes.
    let size = |name: &str| fs_err::metadata(data.join(name)).unwrap().len();
    let (csv, ndjson) = (size("orders.csv"), size("visits.ndjson"));
    assert!(
        run.stdout
            .contains(&format!("app.orders (orders)\n  read: 3 rows, {csv} B\n")),
        "{run}"
    );
    assert!(
        run.stdout.contains(&format!(
            "app.visits (visits)\n  read: 2 rows, {ndjson} B\n"
        )),
        "{run}"
    );
    assert!(
        run.stdout
            .contains(&format!("2 scans: 5 rows, {} B\n", csv + ndjson)),
        "{run}"
    );
}

#[test]
fn compute_by_an_undeclared_dimension_is_a_user_error() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["compute", "orders", "--by", "channel", "--grain", "week"],
    ))
    .expect_code(1);
    assert!(
        run.stderr.contains("`channel`"),
        "names the dimension\n{run}"
    );
    assert!(run.stderr.contains("`orders`"), "names the metric\n{run}");
}

#[test]
fn compute_output_into_a_missing_directory_is_a_user_error() {
    let project = case("simple_day");
    let out = project.path().join("no-such-dir").join("series.csv");
    let run = Run::of(
        lodestar_project(&project.project(), ["compute", "orders", "--format", "csv"])
            .arg("--output")
            .arg(&out),
    )
    .expect_code(1);
    assert!(run.stderr.contains("no-such-dir"), "names the path\n{run}");
    assert!(!out.exists());
}

#[test]
fn verbose_logs_go_to_stderr_without_colour_codes_when_piped() {
    let project = case("simple_day");
    let mut cmd = lodestar_project(
        &project.project(),
        [
            "-v", "compute", "orders", "revenue", "--grain", "day", "--format", "csv",
        ],
    );
    // Colour must follow the terminal, not only NO_COLOR.
    cmd.env_remove("NO_COLOR");
    let run = Run::of(&mut cmd).success();
    assert_csv_matches_case(&run.stdout, "simple_day", &run);
    assert!(
        !run.stderr.contains('\u{1b}'),
        "escape codes in piped stderr\n{run}"
    );
}

#[test]
fn compute_finds_the_project_upward_from_a_subdirectory() {
    let project = case("simple_day");
    let deeper = project.path().join("reports").join("2026");
    fs_err::create_dir_all(&deeper).unwrap();
    let mut cmd = lodestar();
    cmd.current_dir(&deeper).args([
        "compute", "orders", "revenue", "--grain", "day", "--format", "csv",
    ]);
    let run = Run::of(&mut cmd).success();
    assert_csv_matches_case(&run.stdout, "simple_day", &run);
}

#[test]
fn no_project_anywhere_is_a_user_error_with_a_hint() {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = lodestar();
    cmd.current_dir(empty.path()).arg("validate");
    let run = Run::of(&mut cmd).expect_code(1);
    assert!(run.stderr.contains("lodestar.yaml"), "{run}");
    assert!(run.stderr.contains("--project"), "{run}");
}

// ---------------------------------------------------------------- tree

/// A line of `lodestar tree`: the metric it is about, and how deep it is indented.
struct TreeLine<'a> {
    text: &'a str,
    metric: &'a str,
    indent: usize,
}

fn tree_lines(stdout: &str) -> Vec<TreeLine<'_>> {
    let is_name_char = |c: char| c.is_alphanumeric() || c == '_';
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|text| {
            // Spaces and tree-drawing characters indent; a marker such as `*` may follow.
            let indent = text
                .chars()
                .take_while(|c| {
                    c.is_whitespace()
                        || ('\u{2500}'..='\u{257f}').contains(c)
                        || "|`-+\\".contains(*c)
                })
                .count();
            let start = text.find(is_name_char).unwrap_or(text.len());
            let rest = &text[start..];
            let metric = &rest[..rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len())];
            TreeLine {
                text,
                metric,
                indent,
            }
        })
        .collect()
}

/// The line about `metric` (the first word on the line), and its index.
fn find_line<'a, 'b>(
    lines: &'b [TreeLine<'a>],
    metric: &str,
    run: &Run,
) -> (usize, &'b TreeLine<'a>) {
    lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.metric == metric)
        .unwrap_or_else(|| panic!("no line for `{metric}`\n{run}"))
}

/// The numbers written on a line (`+30`, `-10%`, `18.00`, `1,234`), skipping dates.
fn numbers_in(line: &str) -> Vec<f64> {
    line.split(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | ',' | '−')))
        .filter_map(|token| {
            let token = token.trim_matches(|c: char| c == '.' || c == ',');
            token.replace(',', "").replace('−', "-").parse::<f64>().ok()
        })
        .collect()
}

/// Asserts that a tree line shows `value` and the change from `previous`, as an absolute
/// change, a percentage (rounded to at least a whole percent) or the previous value.
fn assert_value_and_change(line: &TreeLine<'_>, value: f64, previous: f64, run: &Run) {
    let numbers = numbers_in(line.text);
    let close = |x: f64, y: f64, tolerance: f64| (x - y).abs() <= tolerance;
    assert!(
        numbers.iter().any(|n| close(*n, value, 1e-9)),
        "line {:?} should show the latest value {value}\n{run}",
        line.text
    );
    let delta = value - previous;
    let percent = delta / previous * 100.0;
    assert!(
        numbers.iter().any(|n| {
            close(n.abs(), delta.abs(), 1e-9)
                || close(n.abs(), percent.abs(), 0.5)
                || close(*n, previous, 1e-9)
        }),
        "line {:?} should show the change from {previous} to {value}\n{run}",
        line.text
    );
}

#[test]
fn tree_shows_the_north_star_and_its_inputs_with_latest_values() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["tree", "--grain", "week"],
    ))
    .success();
    let lines = tree_lines(&run.stdout);
    let (revenue_at, revenue) = find_line(&lines, "revenue", &run);
    let (orders_at, orders) = find_line(&lines, "orders", &run);
    let (signups_at, signups) = find_line(&lines, "signups", &run);
    let (aov_at, aov) = find_line(&lines, "aov", &run);

    // revenue ─ orders ─ signups, then revenue ─ aov: depth-first in `inputs` order.
    assert!(
        revenue_at < orders_at && orders_at < signups_at && signups_at < aov_at,
        "order of the tree\n{run}"
    );
    assert!(
        orders.indent > revenue.indent,
        "orders is under revenue\n{run}"
    );
    assert!(
        signups.indent > orders.indent,
        "signups is under orders\n{run}"
    );
    assert_eq!(aov.indent, orders.indent, "aov is beside orders\n{run}");
    assert!(
        !lines.iter().any(|l| l.metric == "large_orders"),
        "metrics outside the tree are not shown\n{run}"
    );

    // Week of 2026-03-09 against the week of 2026-03-02 (tests/fixtures/shop/README.md).
    assert_value_and_change(revenue, 90.0, 60.0, &run);
    assert_value_and_change(orders, 5.0, 3.0, &run);
    assert_value_and_change(signups, 6.0, 4.0, &run);
    assert_value_and_change(aov, 18.0, 20.0, &run);
}

#[test]
fn tree_of_one_metric_starts_there() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["tree", "orders", "--grain", "week"],
    ))
    .success();
    let lines = tree_lines(&run.stdout);
    let (orders_at, orders) = find_line(&lines, "orders", &run);
    let (signups_at, signups) = find_line(&lines, "signups", &run);
    assert!(
        orders_at < signups_at && signups.indent > orders.indent,
        "{run}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.metric == "revenue" || l.metric == "aov"),
        "only the subtree of `orders`\n{run}"
    );
}

// ---------------------------------------------------------------- sql

#[test]
fn sql_queries_the_sources_by_source_and_table() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        [
            "sql",
            "SELECT status, count(*) AS n FROM app.orders GROUP BY status ORDER BY status",
            "--format",
            "csv",
        ],
    ))
    .success();
    let table = Table::parse(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(table.header, ["status", "n"], "{run}");
    assert_eq!(
        table.rows,
        [["cancelled", "1"], ["paid", "8"], ["refunded", "1"]],
        "{run}"
    );
}

#[test]
fn sql_with_an_unknown_table_is_a_user_error() {
    let project = shop();
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["sql", "SELECT count(*) FROM app.refunds"],
    ))
    .expect_code(1);
    assert!(run.stderr.contains("refunds"), "{run}");
}

#[test]
fn sql_does_not_write_files() {
    let project = shop();
    let target = project.path().join("copied.csv");
    let query = format!("COPY (SELECT 1 AS a) TO '{}'", target.display());
    let run = Run::of(&mut lodestar_project(&project.project(), ["sql", &query])).expect_code(1);
    assert!(!target.exists(), "`lodestar sql` is read-only\n{run}");
}

// ---------------------------------------------------------------- help and completions

#[test]
fn compute_help_shows_an_example() {
    let run = Run::of(lodestar().args(["compute", "--help"])).success();
    assert!(
        run.stdout.to_lowercase().contains("example"),
        "`compute --help` has an example section\n{run}"
    );
    assert!(
        run.stdout.lines().any(|l| l
            .trim_start()
            .trim_start_matches("$ ")
            .starts_with("lodestar compute ")),
        "`compute --help` shows a command to copy\n{run}"
    );
    for flag in [
        "--grain", "--from", "--to", "--by", "--where", "--format", "--output",
    ] {
        assert!(run.stdout.contains(flag), "`{flag}` is documented\n{run}");
    }
}

#[test]
fn help_lists_the_commands() {
    let run = Run::of(lodestar().arg("--help")).success();
    for command in ["validate", "list", "compute", "tree", "sql", "completions"] {
        assert!(
            run.stdout.lines().any(|l| contains_word(l, command)),
            "`{command}` is listed\n{run}"
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _lodestar"),
        ("zsh", "#compdef lodestar"),
        ("fish", "complete -c lodestar"),
    ] {
        let run = Run::of(lodestar().args(["completions", shell])).success();
        assert!(
            run.stdout.contains(marker),
            "{shell}: expected {marker:?}\n{run}"
        );
        assert!(
            run.stdout.contains("compute"),
            "{shell}: completes subcommands\n{run}"
        );
    }
}

// ---------------------------------------------------------------- the example project

#[test]
fn example_project_validates() {
    let run = Run::of(&mut lodestar_project(example_project(), ["validate"])).success();
    assert!(run.stdout.contains("valid"), "{run}");
}

#[test]
fn example_project_metrics_agree_with_each_other_and_with_sql() {
    let project = example_project();
    let run = Run::of(&mut lodestar_project(
        project,
        [
            "compute",
            "nights_booked",
            "bookings",
            "nights_per_booking",
            "cumulative_nights",
            "--grain",
            "month",
            "--format",
            "csv",
        ],
    ))
    .success();
    let table = Table::parse(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    // The sample data covers March to August 2026.
    assert_eq!(
        table.column("period"),
        [
            "2026-03-01",
            "2026-04-01",
            "2026-05-01",
            "2026-06-01",
            "2026-07-01",
            "2026-08-01"
        ],
        "{run}"
    );
    let number = |s: &str| -> f64 {
        s.parse()
            .unwrap_or_else(|_| panic!("{s:?} is not a number\n{run}"))
    };
    let nights: Vec<f64> = table
        .column("nights_booked")
        .into_iter()
        .map(number)
        .collect();
    let bookings: Vec<f64> = table.column("bookings").into_iter().map(number).collect();
    let per_booking: Vec<f64> = table
        .column("nights_per_booking")
        .into_iter()
        .map(number)
        .collect();
    let cumulative: Vec<f64> = table
        .column("cumulative_nights")
        .into_iter()
        .map(number)
        .collect();
    let mut running = 0.0;
    for i in 0..nights.len() {
        assert!(nights[i] > 0.0 && bookings[i] > 0.0, "{run}");
        assert!(
            (per_booking[i] - nights[i] / bookings[i]).abs() <= 1e-9 * per_booking[i].abs(),
            "nights_per_booking = nights_booked / bookings in row {i}\n{run}"
        );
        running += nights[i];
        assert!(
            (cumulative[i] - running).abs() <= 1e-9 * running,
            "cumulative_nights is the running total in row {i}\n{run}"
        );
    }

    // The same total asked of plain SQL over the raw table.
    let sql = Run::of(&mut lodestar_project(
        project,
        [
            "sql",
            "SELECT sum(nights) AS nights FROM app.bookings WHERE status = 'confirmed'",
            "--format",
            "csv",
        ],
    ))
    .success();
    let total = Table::parse(&sql.stdout).unwrap_or_else(|e| panic!("{e}\n{sql}"));
    assert!(
        cell_matches(total.column("nights")[0], &running.to_string()),
        "sum of monthly nights_booked {running} = SQL total\n{sql}"
    );
}

#[test]
fn example_project_tree_starts_at_the_north_star() {
    let run = Run::of(&mut lodestar_project(example_project(), ["tree"])).success();
    let lines = tree_lines(&run.stdout);
    let (root_at, root) = find_line(&lines, "nights_booked", &run);
    let (bookings_at, bookings) = find_line(&lines, "bookings", &run);
    let (signups_at, signups) = find_line(&lines, "signups", &run);
    assert!(
        root_at < bookings_at && bookings_at < signups_at,
        "nights_booked, then its input bookings, then its input signups\n{run}"
    );
    assert!(
        root.indent < bookings.indent && bookings.indent < signups.indent,
        "{run}"
    );
}

/// The whole tree is computed in one request, so each table is read once, not once per
/// metric: the example's tree has seven measured metrics over three tables.
#[tokio::test(flavor = "multi_thread")]
async fn example_tree_reads_each_table_once() {
    let project = lodestar_core::config::load(example_project()).expect("the example loads");
    let engine = lodestar_core::Engine::open(project)
        .await
        .expect("the example opens");
    let request = lodestar_core::TreeRequest {
        root: Some("nights_booked".into()),
        ..Default::default()
    };
    let tree = engine.tree(&request).await.expect("the tree computes");
    let mut tables: Vec<&str> = tree.scans.iter().map(|s| s.table.as_str()).collect();
    tables.sort();
    assert_eq!(
        tables,
        ["app.bookings", "app.events", "app.users"],
        "{:#?}",
        tree.scans
    );
    let bookings = tree
        .scans
        .iter()
        .find(|s| s.table == "app.bookings")
        .expect("a scan of app.bookings");
    let mut metrics = bookings.metrics.clone();
    metrics.sort();
    assert_eq!(
        metrics,
        [
            "all_bookings",
            "bookings",
            "cancelled_bookings",
            "nights_booked"
        ]
    );
}

//! Mistakes a user makes, from `tests/errors/<name>/`: each must exit with code 1 and say
//! where the mistake is (file, line, column, metric), and its wording is reviewed in a snapshot.
//!
//! Places are computed from the fixture text (the offending value), not hard-coded, so that
//! editing a fixture's comments does not silently move what is checked.

use crate::support::{Run, Scratch, lodestar_project, position_of, read_args, sub_dirs, test_dir};

/// The variable the `unset_env` fixture uses, removed from the environment of every run.
const UNSET_VAR: &str = "LODESTAR_E2E_UNSET_DIR";

/// A fixture run that failed as a user error.
struct Failure {
    scratch: Scratch,
    yaml: String,
    run: Run,
}

/// Copies `tests/errors/<name>` to a scratch directory, runs it with its `args`, and checks
/// that it exits with code 1 and prints nothing to stdout.
fn fail(name: &str) -> Failure {
    let args = read_args(&test_dir("errors").join(name).join("args"));
    fail_with(name, &args)
}

/// As [`fail`], with other arguments than the fixture's `args`.
fn fail_with(name: &str, args: &[String]) -> Failure {
    let scratch = Scratch::copy_of(&test_dir("errors").join(name));
    let yaml = fs_err::read_to_string(scratch.project()).unwrap();
    let mut cmd = lodestar_project(&scratch.project(), args);
    cmd.current_dir(scratch.path()).env_remove(UNSET_VAR);
    let run = Run::of(&mut cmd).expect_code(1);
    assert!(
        run.stdout.trim().is_empty(),
        "errors go to stderr, not stdout\n{run}"
    );
    Failure { scratch, yaml, run }
}

impl Failure {
    /// Where `needle` first occurs in the `metrics:` section of the fixture.
    fn place_of(&self, needle: &str) -> (usize, usize) {
        position_of(&self.yaml, Some("metrics:"), needle)
    }

    /// Where `needle` first occurs after `after` (such as a metric's own key).
    fn place_after(&self, after: &str, needle: &str) -> (usize, usize) {
        position_of(&self.yaml, Some(after), needle)
    }

    /// Asserts that an `error:` line names the project file, `line:column` and `subject`
    /// (such as ``metric `revenue` ``), and returns that line.
    fn assert_error_at(&self, (line, column): (usize, usize), subject: &str) -> &str {
        let place = format!("lodestar.yaml:{line}:{column}: {subject}: ");
        self.run
            .stderr
            .lines()
            .find(|l| l.starts_with("error: ") && l.contains(&place))
            .unwrap_or_else(|| panic!("expected an `error: ...{place}...` line\n{}", self.run))
    }

    /// Asserts that an `error:` line names the project file and `line` (syntax errors, which
    /// are about the text rather than a metric), and returns that line.
    fn assert_error_on_line(&self, line: usize) -> &str {
        let place = format!("lodestar.yaml:{line}:");
        self.run
            .stderr
            .lines()
            .find(|l| l.starts_with("error: ") && l.contains(&place))
            .unwrap_or_else(|| panic!("expected an `error: ...{place}...` line\n{}", self.run))
    }

    fn assert_stderr_contains(&self, text: &str) {
        assert!(
            self.run.stderr.contains(text),
            "stderr should mention {text:?}\n{}",
            self.run
        );
    }

    /// stderr with the scratch directory replaced by `[PROJECT_DIR]`, for snapshots.
    fn normalized_stderr(&self) -> String {
        let dir = self.scratch.path();
        let mut text = self.run.stderr.clone();
        for form in [dir.canonicalize().ok(), Some(dir.to_path_buf())]
            .into_iter()
            .flatten()
        {
            text = text.replace(&*form.to_string_lossy(), "[PROJECT_DIR]");
        }
        text
    }
}

macro_rules! snapshot {
    ($name:literal, $failure:expr) => {
        insta::assert_snapshot!($name, $failure.normalized_stderr())
    };
}

#[test]
fn every_error_fixture_has_a_test() {
    let source = include_str!("errors.rs");
    for dir in sub_dirs(&test_dir("errors")) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for file in ["lodestar.yaml", "args"] {
            assert!(
                dir.join(file).is_file(),
                "tests/errors/{name}/{file} is missing"
            );
        }
        assert!(
            source.contains(&format!("fail(\"{name}\")")),
            "tests/errors/{name} is not used by any test in errors.rs"
        );
    }
}

#[test]
fn malformed_yaml_names_the_line() {
    let f = fail("malformed_yaml");
    let (line, _) = f.place_of("measure: count(*): all");
    f.assert_error_on_line(line);
    snapshot!("malformed_yaml", f);
}

#[test]
fn misspelled_key_is_named_with_its_line() {
    let f = fail("unknown_field");
    let (line, _) = f.place_of("mesure");
    let error = f.assert_error_on_line(line);
    assert!(error.contains("mesure"), "{}", f.run);
    snapshot!("unknown_field", f);
}

#[test]
fn unknown_metric_in_a_request_suggests_the_close_name() {
    let f = fail("unknown_metric_request");
    assert!(
        f.run
            .stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("unknown metric `ordrs`")),
        "{}",
        f.run
    );
    assert!(
        f.run
            .stderr
            .lines()
            .any(|l| l.trim_start().starts_with("hint: ") && l.contains("`orders`")),
        "expected a `hint:` line suggesting `orders`\n{}",
        f.run
    );
    snapshot!("unknown_metric_request", f);
}

#[test]
fn unknown_input_points_at_the_unknown_name() {
    let f = fail("unknown_input");
    let error = f.assert_error_at(f.place_of("signupz"), "metric `revenue`");
    assert!(error.contains("signupz"), "{}", f.run);
    snapshot!("unknown_input", f);
}

#[test]
fn cycle_in_inputs_names_its_metrics() {
    let f = fail("cycle_in_inputs");
    // The search for cycles starts from the first metric in the file that is on one.
    let error = f.assert_error_at(f.place_of("activation:"), "metric `activation`");
    assert!(error.contains("cycle"), "{}", f.run);
    assert!(error.contains("`retention`"), "{}", f.run);
    assert!(
        !error.contains("`orders`"),
        "`orders` is not on the cycle\n{}",
        f.run
    );
    snapshot!("cycle_in_inputs", f);
}

#[test]
fn bad_sql_in_a_measure_points_at_the_measure() {
    let f = fail("bad_sql_measure");
    let error = f.assert_error_at(f.place_of("sum(amount * )"), "metric `revenue`");
    assert!(error.contains("measure"), "{}", f.run);
    snapshot!("bad_sql_measure", f);
}

#[test]
fn missing_column_in_a_filter_points_at_the_filter() {
    let f = fail("missing_column_filter");
    let error = f.assert_error_at(f.place_of("stauts = 'paid'"), "metric `paid_orders`");
    assert!(error.contains("stauts"), "{}", f.run);
    snapshot!("missing_column_filter", f);
}

#[test]
fn compute_of_a_broken_metric_names_the_place_too() {
    let args = [
        "compute",
        "paid_orders",
        "--grain",
        "day",
        "--format",
        "csv",
    ]
    .map(String::from);
    let f = fail_with("missing_column_filter", &args);
    f.assert_error_at(f.place_of("stauts = 'paid'"), "metric `paid_orders`");
}

#[test]
fn unknown_table_points_at_the_table() {
    let f = fail("unknown_table");
    let place = f.place_after("  orders:", "app.order");
    let error = f.assert_error_at(place, "metric `orders`");
    assert!(
        error.contains("app.order`") || error.contains("`order`"),
        "{}",
        f.run
    );
    snapshot!("unknown_table", f);
}

#[test]
fn unknown_source_points_at_the_table_and_suggests_the_source() {
    let f = fail("unknown_source");
    let error = f.assert_error_at(f.place_of("ap.orders"), "metric `orders`");
    assert!(error.contains("`ap`"), "{}", f.run);
    f.assert_stderr_contains("hint: did you mean `app`?");
    snapshot!("unknown_source", f);
}

#[test]
fn bad_grain_in_the_project_points_at_the_grain() {
    let f = fail("bad_grain_yaml");
    let error = f.assert_error_at(f.place_of("fortnight"), "metric `revenue`");
    assert!(error.contains("fortnight"), "{}", f.run);
    snapshot!("bad_grain_yaml", f);
}

#[test]
fn bad_grain_on_the_command_line_lists_the_grains() {
    let f = fail("bad_grain_cli");
    f.assert_stderr_contains("fortnight");
    for grain in ["day", "week", "month", "quarter", "year"] {
        f.assert_stderr_contains(grain);
    }
    snapshot!("bad_grain_cli", f);
}

#[test]
fn fourth_north_star_is_named_and_explained() {
    let f = fail("fourth_north_star");
    let error = f.assert_error_at(f.place_of("refunds:"), "metric `refunds`");
    assert!(error.contains("north star"), "{}", f.run);
    assert!(error.contains('3') || error.contains("three"), "{}", f.run);
    snapshot!("fourth_north_star", f);
}

#[test]
fn unset_env_variable_is_named_with_its_source() {
    let f = fail("unset_env");
    // The source's own key or the option that uses the variable are both the right place.
    let at_source = f.place_after("sources:", "app:");
    let at_option = f.place_after("sources:", "path:");
    let error = f
        .run
        .stderr
        .lines()
        .find(|l| {
            l.starts_with("error: ")
                && [at_source, at_option].iter().any(|(line, column)| {
                    l.contains(&format!("lodestar.yaml:{line}:{column}: source `app`: "))
                })
        })
        .unwrap_or_else(|| panic!("expected an error at source `app`\n{}", f.run));
    assert!(error.contains(UNSET_VAR), "{}", f.run);
    snapshot!("unset_env", f);
}

#[test]
fn validate_reports_every_sql_error() {
    let f = fail("every_sql_error");
    f.assert_error_at(f.place_of("stauts = 'paid'"), "metric `paid_orders`");
    f.assert_error_at(f.place_of("sum(amont)"), "metric `revenue`");
    snapshot!("every_sql_error", f);
}

#[test]
fn duplicate_metric_names_the_second_definition() {
    let f = fail("duplicate_metric");
    let second = f.place_after("  revenue:", "orders:");
    let error = f.assert_error_on_line(second.0);
    assert!(error.contains("orders"), "{}", f.run);
    assert!(
        !f.run.stderr.contains("DuplicateKeyPolicy"),
        "the parser's option names are not advice a user can act on\n{}",
        f.run
    );
    snapshot!("duplicate_metric", f);
}

#[test]
fn time_column_that_is_not_timestamps_is_a_user_error_naming_the_metric() {
    let f = fail("time_column_not_timestamps");
    f.assert_stderr_contains("`orders`");
    f.assert_stderr_contains("status");
    snapshot!("time_column_not_timestamps", f);
}

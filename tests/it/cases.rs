//! The data-driven cases of `tests/cases/<name>/`: a project and its data in, the CSV that
//! `lodestar compute` prints out, compared with a table counted by hand.
//!
//! Each case directory holds `lodestar.yaml`, `data/`, `args` (one line: the arguments after
//! `lodestar --project <case>/lodestar.yaml`, shell-quoted), `expected.csv` and a `README.md`
//! that shows how the expected numbers were counted. Adding a case is adding a directory.
//!
//! `LODESTAR_CASE=name[,name...]` runs only the named cases.

use std::fmt::Write as _;
use std::path::Path;

use crate::support::{
    Run, Scratch, Table, cell_matches, lodestar_project, read_args, sub_dirs, test_dir,
};

#[test]
fn cases_match_hand_counted_tables() {
    let cases = selected_cases();
    let failures: Vec<String> = cases.iter().filter_map(|case| run_case(case)).collect();
    if !failures.is_empty() {
        panic!(
            "{} of {} cases failed:\n\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

/// Every case directory, or those named by `LODESTAR_CASE`.
fn selected_cases() -> Vec<std::path::PathBuf> {
    let all = sub_dirs(&test_dir("cases"));
    assert!(!all.is_empty(), "no cases found in tests/cases");
    let Ok(wanted) = std::env::var("LODESTAR_CASE") else {
        return all;
    };
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    for name in &wanted {
        assert!(
            all.iter()
                .any(|c| c.file_name().is_some_and(|f| f == *name)),
            "LODESTAR_CASE names `{name}`, but tests/cases/{name} does not exist"
        );
    }
    all.into_iter()
        .filter(|c| {
            wanted
                .iter()
                .any(|w| c.file_name().is_some_and(|f| f == *w))
        })
        .collect()
}

/// Runs one case; returns a report of what went wrong, or `None` if it passed.
fn run_case(case: &Path) -> Option<String> {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let args = read_args(&case.join("args"));
    let expected_text = fs_err::read_to_string(case.join("expected.csv")).unwrap();
    let expected = Table::parse(&expected_text)
        .unwrap_or_else(|e| panic!("tests/cases/{name}/expected.csv: {e}"));

    // A copy, so that nothing the engine might write (caches, spill files) lands in the repo.
    let scratch = Scratch::copy_of(case);
    let run = Run::of(&mut lodestar_project(&scratch.project(), &args));

    let mut report = String::new();
    let _ = writeln!(report, "=== case `{name}` (tests/cases/{name})");
    let _ = writeln!(report, "args: {}", shell_words::join(&args));
    if run.code != Some(0) {
        let _ = writeln!(report, "exit code {:?}, expected 0", run.code);
        let _ = writeln!(report, "--- stderr\n{}", run.stderr);
        return Some(report);
    }
    let actual = match Table::parse(&run.stdout) {
        Ok(table) => table,
        Err(e) => {
            let _ = writeln!(report, "stdout is not CSV: {e}\n--- stdout\n{}", run.stdout);
            return Some(report);
        }
    };
    let diff = diff_tables(&expected, &actual)?;
    report.push_str(&diff);
    if !run.stderr.trim().is_empty() {
        let _ = writeln!(report, "--- stderr\n{}", run.stderr);
    }
    Some(report)
}

/// A readable difference between two tables, or `None` if they match.
///
/// Lines that match are shown with two spaces, others as `-` expected / `+` actual, with
/// the differing cells marked `[...]` on the `+` line.
fn diff_tables(expected: &Table, actual: &Table) -> Option<String> {
    let mut out = String::new();
    if expected.header != actual.header {
        let _ = writeln!(out, "header differs");
        let _ = writeln!(out, "- {}", expected.header.join(","));
        let _ = writeln!(out, "+ {}", actual.header.join(","));
    } else {
        let _ = writeln!(out, "  {}", expected.header.join(","));
    }
    let mut differs = expected.header != actual.header;
    if expected.rows.len() != actual.rows.len() {
        differs = true;
        let _ = writeln!(
            out,
            "(expected {} rows, got {})",
            expected.rows.len(),
            actual.rows.len()
        );
    }
    for i in 0..expected.rows.len().max(actual.rows.len()) {
        match (expected.rows.get(i), actual.rows.get(i)) {
            (Some(e), Some(a)) if rows_match(e, a) => {
                let _ = writeln!(out, "  {}", a.join(","));
            }
            (Some(e), Some(a)) => {
                differs = true;
                let marked: Vec<String> = (0..e.len().max(a.len()))
                    .map(|c| {
                        let (ec, ac) = (e.get(c), a.get(c));
                        let cell = ac.map_or("", String::as_str);
                        match (ec, ac) {
                            (Some(ec), Some(ac)) if cell_matches(ec, ac) => cell.to_string(),
                            _ => format!("[{cell}]"),
                        }
                    })
                    .collect();
                let _ = writeln!(out, "- {}", e.join(","));
                let _ = writeln!(out, "+ {}", marked.join(","));
            }
            (Some(e), None) => {
                differs = true;
                let _ = writeln!(out, "- {}", e.join(","));
            }
            (None, Some(a)) => {
                differs = true;
                let _ = writeln!(out, "+ {}", a.join(","));
            }
            (None, None) => unreachable!(),
        }
    }
    differs.then_some(out)
}

fn rows_match(expected: &[String], actual: &[String]) -> bool {
    expected.len() == actual.len() && expected.iter().zip(actual).all(|(e, a)| cell_matches(e, a))
}

#[test]
fn diff_marks_the_differing_cells() {
    let expected = Table::parse("period,orders\n2026-03-01,2\n2026-03-02,0\n").unwrap();
    let same = Table::parse("period,orders\n2026-03-01,2.0\n2026-03-02,0\n").unwrap();
    assert_eq!(diff_tables(&expected, &same), None);

    let wrong = Table::parse("period,orders\n2026-03-01,3\n").unwrap();
    let diff = diff_tables(&expected, &wrong).expect("tables differ");
    assert!(diff.contains("+ 2026-03-01,[3]"), "{diff}");
    assert!(diff.contains("(expected 2 rows, got 1)"), "{diff}");
    assert!(diff.contains("- 2026-03-02,0"), "{diff}");

    let renamed = Table::parse("period,order_count\n2026-03-01,2\n2026-03-02,0\n").unwrap();
    assert!(diff_tables(&expected, &renamed).is_some());
}

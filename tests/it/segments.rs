//! `lodestar segments` on a fixture counted by hand (tests/fixtures/segments/README.md).

use crate::support::{Run, Scratch, lodestar_project, test_dir};

/// The segments' rows as `segment → column → value` from `--format csv`.
fn segments(metric: &str, by: &str) -> Vec<(String, Vec<(String, String)>)> {
    let fixture = Scratch::copy_of(&test_dir("fixtures/segments"));
    let args = [
        "segments",
        metric,
        "--by",
        by,
        "--period",
        "2026-01-12",
        "--grain",
        "week",
        "--format",
        "csv",
    ];
    let out = Run::of(&mut lodestar_project(&fixture.project(), args)).success();
    let mut reader = csv::Reader::from_reader(out.stdout.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a header")
        .iter()
        .map(String::from)
        .collect();
    reader
        .records()
        .map(|record| {
            let record = record.expect("a CSV row");
            let cells = header
                .iter()
                .cloned()
                .zip(record.iter().map(String::from))
                .collect();
            (record[0].to_string(), cells)
        })
        .collect()
}

fn number(cells: &[(String, String)], column: &str) -> f64 {
    let (_, text) = cells
        .iter()
        .find(|(c, _)| c == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    text.parse()
        .unwrap_or_else(|_| panic!("{column} = {text:?} is not a number"))
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-12
}

#[test]
fn a_ratio_splits_into_rate_and_mix_effects_that_sum_to_its_change() {
    let rows = segments("conversion", "country");
    let order: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
    // Ranked by the size of their part: IT 1/6, DE −1/12, FR 1/24.
    assert_eq!(order, ["IT", "DE", "FR"]);
    let expected = [
        ("IT", 0.0, 1.0 / 6.0),
        ("DE", 1.0 / 6.0, -0.25),
        ("FR", 0.0, 1.0 / 24.0),
    ];
    let mut total = 0.0;
    for ((segment, cells), (name, rate, mix)) in rows.iter().zip(expected) {
        assert_eq!(segment, name);
        assert!(
            close(number(cells, "rate_effect"), rate),
            "{name}: {cells:?}"
        );
        assert!(close(number(cells, "mix_effect"), mix), "{name}: {cells:?}");
        assert!(close(number(cells, "contribution"), rate + mix), "{name}");
        total += number(cells, "contribution");
    }
    // 6/12 − 3/8.
    assert!(close(total, 0.125));
    let (_, fr) = &rows[2];
    assert!(close(number(fr, "weight"), 2.0 / 3.0));
    assert!(close(number(fr, "previous_weight"), 0.5));
}

#[test]
fn an_additive_metric_splits_by_each_segments_change() {
    let rows = segments("orders", "country");
    let parts: Vec<(&str, f64, f64)> = rows
        .iter()
        .map(|(s, cells)| {
            (
                s.as_str(),
                number(cells, "contribution"),
                number(cells, "share_of_change"),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            ("IT", 2.0, 2.0 / 3.0),
            ("FR", 1.0, 1.0 / 3.0),
            ("DE", 0.0, 0.0)
        ]
    );
}

#[test]
fn overlapping_segments_leave_a_residual_that_is_reported() {
    let fixture = Scratch::copy_of(&test_dir("fixtures/segments"));
    let args = [
        "segments",
        "buyers",
        "--by",
        "platform",
        "--period",
        "2026-01-12",
        "--grain",
        "week",
    ];
    let out = Run::of(&mut lodestar_project(&fixture.project(), args)).success();
    assert!(
        out.stdout.contains("total 6  (+4, +200.0%)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("the segments' parts leave 1 of the change unexplained"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_dimension_the_metric_lacks_is_an_error_naming_both() {
    let fixture = Scratch::copy_of(&test_dir("fixtures/segments"));
    let out = Run::of(&mut lodestar_project(
        &fixture.project(),
        ["segments", "visits", "--by", "platform"],
    ))
    .expect_code(1);
    assert!(
        out.stderr.contains(
            "metric `visits` cannot be broken down by `platform`; its dimensions are: country"
        ),
        "{}",
        out.stderr
    );
}

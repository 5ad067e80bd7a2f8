//! `lodestar retention`, and retention metrics (`retention:`) in the tree, on a fixture small
//! enough to count by hand.
//!
//! Users (cohort = signup): u1 2026-01-01 10:00, u2 2026-01-01 20:00, u3 2026-01-02 09:00.
//! Events: u1 at 01-01 10:00, 01-02 09:00, 01-02 11:00, 01-04 10:00; u2 at 01-03 21:00;
//! u3 at 01-03 08:00, 01-05 10:00. The data ends at 01-05 10:00.
//!
//! Rolling days (24-hour windows from each signup): u1 is active in periods 0, 0, 1, 3;
//! u2 in 2; u3 in 0 (23 hours after) and 3 (73 hours). Cohort 01-01's last signup (u2,
//! 20:00) reaches the end of period N at 01-(N+2) 20:00, so periods 0-2 have ended by the
//! data's end and period 3 has not; likewise for cohort 01-02 (09:00 + N+1 days).
//!
//! Calendar days: u1 in 0, 1, 1, 3; u2 in 2; u3 (cohort 01-02) in 1 and 3; cohort 01-01 has
//! seen periods 0-3 whole (01-05 00:00 ≤ 01-05 10:00), cohort 01-02 periods 0-2.

use crate::support::{Run, Scratch, lodestar_project, test_dir};

const COMMON: [&str; 8] = [
    "retention",
    "--cohort",
    "app.users.signed_up_at",
    "--activity",
    "app.events.event_time",
    "--entity",
    "user_id",
    "--grain=day",
];

/// `cohort,period,rate` rows of the long table (rate empty when the cohort is too young).
fn rates(extra: &[&str]) -> Vec<String> {
    let fixture = Scratch::copy_of(&test_dir("fixtures/retention"));
    let mut args: Vec<&str> = COMMON.to_vec();
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--format", "csv"]);
    let out = Run::of(&mut lodestar_project(&fixture.project(), &args)).success();
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (cohort, period, rate) = (at("cohort"), at("period"), at("rate"));
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            format!("{} {} {}", cells[cohort], cells[period], cells[rate])
        })
        .collect()
}

#[test]
fn rolling_days_on_period_n() {
    assert_eq!(
        rates(&[]),
        [
            "2026-01-01 0 0.5",
            "2026-01-01 1 0.5",
            "2026-01-01 2 0.5",
            "2026-01-01 3 ",
            "2026-01-02 0 1.0",
            "2026-01-02 1 0.0",
            "2026-01-02 2 0.0",
            "2026-01-02 3 ",
        ]
    );
}

#[test]
fn rolling_days_on_or_after_period_n() {
    assert_eq!(
        rates(&["--mode", "on-or-after"]),
        [
            "2026-01-01 0 1.0",
            "2026-01-01 1 1.0",
            "2026-01-01 2 1.0",
            "2026-01-01 3 ",
            "2026-01-02 0 1.0",
            "2026-01-02 1 1.0",
            "2026-01-02 2 1.0",
            "2026-01-02 3 ",
        ]
    );
}

#[test]
fn calendar_days() {
    assert_eq!(
        rates(&["--calendar"]),
        [
            "2026-01-01 0 0.5",
            "2026-01-01 1 0.5",
            "2026-01-01 2 0.5",
            "2026-01-01 3 0.5",
            "2026-01-02 0 0.0",
            "2026-01-02 1 1.0",
            "2026-01-02 2 0.0",
            "2026-01-02 3 ",
        ]
    );
}

#[test]
fn custom_brackets() {
    // Period 0, and periods 1 to 2: u1 (1) and u2 (2) in cohort 01-01; nobody in 01-02.
    assert_eq!(
        rates(&["--brackets", "0-0,1-2"]),
        [
            "2026-01-01 0-0 0.5",
            "2026-01-01 1-2 1.0",
            "2026-01-02 0-0 1.0",
            "2026-01-02 1-2 0.0"
        ]
    );
}

#[test]
fn value_retention_sums_the_aggregate_per_period() {
    let fixture = Scratch::copy_of(&test_dir("fixtures/retention"));
    let mut args: Vec<&str> = COMMON.to_vec();
    args.extend_from_slice(&["--value", "sum(amount)", "--format", "csv"]);
    let out = Run::of(&mut lodestar_project(&fixture.project(), &args)).success();
    let table = crate::support::Table::parse(&out.stdout).unwrap();
    let values: Vec<&str> = table.column("value");
    let value_rates: Vec<&str> = table.column("value_rate");
    // Cohort 01-01: period 0 = u1's 1 + 2; period 1 = u1's 3; period 2 = u2's 5.
    assert_eq!(&values[..3], ["3.0", "3.0", "5.0"], "{out}");
    assert!(
        crate::support::cell_matches("1.6666666666666667", value_rates[2]),
        "{out}"
    );
    // Cohort 01-02: period 0 = u3's 6.
    assert_eq!(values[4], "6.0", "{out}");
}

#[test]
fn the_triangle_leaves_young_cohorts_blank() {
    let fixture = Scratch::copy_of(&test_dir("fixtures/retention"));
    let out = Run::of(&mut lodestar_project(&fixture.project(), COMMON)).success();
    let first = out
        .stdout
        .lines()
        .find(|l| l.contains("2026-01-01"))
        .expect("cohort 01-01");
    assert!(first.contains("50.0%"), "{out}");
    assert_eq!(
        first.matches('%').count(),
        3,
        "period 3 has not ended: {out}"
    );
}

// ------------------------------------------------- retention as a metric kind (`retention:`)

/// The fixture with `lodestar.yaml` replaced by `yaml`.
fn project_with(yaml: &str) -> Scratch {
    let fixture = Scratch::copy_of(&test_dir("fixtures/retention"));
    fs_err::write(fixture.project(), yaml).unwrap();
    fixture
}

const TREE: &str = "\
sources:
  app: { connector: files, path: data }
metrics:
  events:
    north_star: true
    table: app.events
    time: event_time
    measure: count(*)
    inputs: [signups, d1_retention]
  signups: { table: app.users, time: signed_up_at, measure: count(*) }
  d1_retention:
    retention: { cohort: app.users.signed_up_at, activity: app.events.event_time, entity: user_id, after: 1d }
";

/// Hand count (tests/cases/retention_metric_day/README.md): d1 retention of cohort 01-01 is
/// 1/2 (u1 back in [01-02 10:00, 01-03 10:00), u2 not), of cohort 01-02 0/1 (u3 not).
#[test]
fn a_retention_metric_is_an_input_of_the_tree() {
    let fixture = project_with(TREE);
    let args = [
        "tree",
        "--grain",
        "day",
        "--period",
        "2026-01-02",
        "--format",
        "csv",
    ];
    let out = Run::of(&mut lodestar_project(&fixture.project(), args)).success();
    let table = crate::support::Table::parse(&out.stdout).unwrap();
    let row = table
        .rows
        .iter()
        .find(|r| r[0] == "d1_retention")
        .unwrap_or_else(|| panic!("no d1_retention row\n{out}"));
    let cell = |name: &str| {
        let i = table.header.iter().position(|h| h == name).unwrap();
        row[i].as_str()
    };
    assert_eq!(cell("parent"), "events", "{out}");
    for (name, expected) in [("value", "0"), ("previous", "0.5"), ("change", "-0.5")] {
        assert!(
            crate::support::cell_matches(expected, cell(name)),
            "{name}: {}\n{out}",
            cell(name)
        );
    }
}

#[test]
fn retention_metric_mistakes_name_their_place() {
    let check = |yaml: &str, args: &[&str], wanted: &[&str]| {
        let fixture = project_with(yaml);
        let out = Run::of(&mut lodestar_project(&fixture.project(), args)).expect_code(1);
        for w in wanted {
            assert!(out.stderr.contains(w), "wanted `{w}`\n{out}");
        }
    };
    // Not SOURCE.TABLE.COLUMN: reported at the value.
    let yaml = TREE.replace("cohort: app.users.signed_up_at", "cohort: app.users");
    let (line, column) = crate::support::position_of(&yaml, Some("d1_retention:"), "app.users,");
    check(
        &yaml,
        &["validate"],
        &[
            &format!("lodestar.yaml:{line}:{column}: metric `d1_retention`"),
            "retention `cohort` is `app.users`, which is not SOURCE.TABLE.COLUMN",
            "hint: name the table and its time column",
        ],
    );
    let yaml = TREE.replace("after: 1d", "after: 1 fortnight");
    check(
        &yaml,
        &["validate"],
        &["cannot read retention `after` `1 fortnight`"],
    );
    // A column that is not there, found when the tables are opened.
    let yaml = TREE.replace("entity: user_id", "entity: usr_id");
    check(
        &yaml,
        &["validate"],
        &[
            "metric `d1_retention`",
            "entity column `usr_id` is not a column of `app.users`",
            "did you mean `user_id`",
        ],
    );
    let yaml = TREE.replace("after: 1d }", "after: 1d }\n    dimensions: [country]");
    check(
        &yaml,
        &["validate"],
        &["a retention metric is one rate per cohort period and has no dimensions"],
    );
    check(
        TREE,
        &["compute", "d1_retention", "--by", "user_id"],
        &[
            "metric `d1_retention` is a retention metric",
            "hint: segment",
        ],
    );
}

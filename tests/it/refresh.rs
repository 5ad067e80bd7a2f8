//! Incremental refresh (`cache:` in lodestar.yaml, docs/caching.md), through the binary on a
//! copy of the example project: cached results equal a full recompute (`--no-cache`) for every
//! metric kind the example uses, before and after new data arrives; the refresh reads only
//! the periods that can still change; changed definitions and broken cache files never give a
//! wrong answer.
//!
//! The example's data runs from 2026-03-01 to 2026-08-31 (a Monday); weeks start on Monday.

use std::path::Path;

use crate::support::{Run, Scratch, Table, cell_matches, example_project, lodestar_project};

/// Every metric of the example: simple (sums, counts, a distinct count), ratios, a derived
/// metric, a running total and a trailing-window distinct count; and a retention rate.
const METRICS: [&str; 13] = [
    "nights_booked",
    "bookings",
    "nights_per_booking",
    "cancellation_rate",
    "cancelled_bookings",
    "all_bookings",
    "active_users",
    "active_users_28d",
    "cumulative_nights",
    "signups",
    "revenue",
    "revenue_per_night",
    "d7_retention",
];

/// A copy of the example project with its data and `cache:` settings.
pub(crate) fn cached_example() -> Scratch {
    let example = example_project();
    let copy = Scratch::copy_of(example.parent().expect("the example has a directory"));
    let mut text = fs_err::read_to_string(copy.project()).unwrap();
    text.push_str("\ncache:\n  dir: .lodestar-cache\n  lookback: 3d\n");
    // A retention metric too, which the example itself leaves to `lodestar retention`.
    let text = text.replacen(
        "\nmetrics:\n",
        "\nmetrics:\n  d7_retention:\n    grain: week\n    retention: { cohort: app.users.signed_up_at, activity: app.events.event_time, entity: user_id, after: 7d, window: 7d }\n",
        1,
    );
    fs_err::write(copy.project(), text).unwrap();
    copy
}

/// `lodestar compute <METRICS> <extra> --format csv`, with or without the cache.
fn compute(project: &Path, extra: &[&str], cache: bool) -> Run {
    let mut args: Vec<&str> = vec!["compute"];
    args.extend(METRICS);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--format", "csv"]);
    if !cache {
        args.push("--no-cache");
    }
    Run::of(&mut lodestar_project(project, &args)).success()
}

fn table(run: &Run) -> Table {
    Table::parse(&run.stdout).unwrap_or_else(|e| panic!("not CSV: {e}\n{run}"))
}

/// Asserts two result tables are the same, cell by cell (numbers within 1e-9 relative: a
/// float sum may add the same values in another order), naming the first difference.
fn assert_same(expected: &Table, actual: &Table, what: &str) {
    assert_eq!(expected.header, actual.header, "{what}: columns differ");
    assert_eq!(
        expected.rows.len(),
        actual.rows.len(),
        "{what}: row counts differ"
    );
    for (e, a) in expected.rows.iter().zip(&actual.rows) {
        for (i, (ec, ac)) in e.iter().zip(a).enumerate() {
            assert!(
                cell_matches(ec, ac),
                "{what}: column `{}` of row {e:?}: expected {ec}, got {ac}",
                expected.header[i]
            );
        }
    }
}

/// The value of `metric` in the row of `period`.
fn value(table: &Table, period: &str, metric: &str) -> String {
    let periods = table.column("period");
    let row = periods
        .iter()
        .position(|p| *p == period)
        .unwrap_or_else(|| panic!("no period {period} in {periods:?}"));
    table.column(metric)[row].to_string()
}

fn tree_json(project: &Path, cache: bool) -> serde_json::Value {
    let mut args = vec!["tree", "--format", "json"];
    if !cache {
        args.push("--no-cache");
    }
    let run = Run::of(&mut lodestar_project(project, &args)).success();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{run}"))
}

/// Asserts two JSON documents are the same, numbers within 1e-9 relative.
fn assert_same_json(expected: &serde_json::Value, actual: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Number(e), Value::Number(a)) => assert!(
            cell_matches(&e.to_string(), &a.to_string()),
            "{at}: expected {e}, got {a}"
        ),
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{at}: lengths differ");
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                assert_same_json(e, a, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            assert_eq!(
                e.keys().collect::<Vec<_>>(),
                a.keys().collect::<Vec<_>>(),
                "{at}: keys differ"
            );
            for (key, e) in e {
                assert_same_json(e, &a[key], &format!("{at}.{key}"));
            }
        }
        (e, a) => assert_eq!(e, a, "{at}"),
    }
}

/// One more day of data: events in a new `month=2026-09` partition, bookings appended to
/// their file, and a signup.
pub(crate) fn append_a_day(root: &Path) {
    let events = root.join("data/events/month=2026-09");
    fs_err::create_dir_all(&events).unwrap();
    fs_err::write(
        events.join("events.csv"),
        "event_time,user_id,event_type,platform,country\n\
         2026-09-01T08:00:00,1,app_open,android,US\n\
         2026-09-01T08:05:00,1,search,android,US\n\
         2026-09-01T09:00:00,9001,app_open,web,FR\n\
         2026-09-01T21:30:00,2,app_open,ios,DE\n",
    )
    .unwrap();
    let mut bookings = fs_err::read_to_string(root.join("data/bookings.ndjson")).unwrap();
    if !bookings.ends_with('\n') {
        bookings.push('\n');
    }
    bookings.push_str(
        "{\"booking_id\":990001,\"user_id\":1,\"booked_at\":\"2026-09-01T10:00:00\",\"nights\":4,\"price\":400.0,\"status\":\"confirmed\",\"country\":\"US\",\"platform\":\"android\"}\n\
         {\"booking_id\":990002,\"user_id\":2,\"booked_at\":\"2026-09-01T11:00:00\",\"nights\":2,\"price\":180.5,\"status\":\"cancelled\",\"country\":\"DE\",\"platform\":\"ios\"}\n",
    );
    fs_err::write(root.join("data/bookings.ndjson"), bookings).unwrap();
    let mut users = fs_err::read_to_string(root.join("data/users.csv")).unwrap();
    if !users.ends_with('\n') {
        users.push('\n');
    }
    users.push_str("9001,2026-09-01T09:00:00,FR,web,organic\n");
    fs_err::write(root.join("data/users.csv"), users).unwrap();
}

fn cache_files(root: &Path) -> Vec<std::path::PathBuf> {
    let dir = root.join(".lodestar-cache");
    let mut files: Vec<_> = fs_err::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

#[test]
fn cached_results_equal_a_full_recompute_before_and_after_a_new_day() {
    let project = cached_example();
    let path = project.project();
    for grain in [
        &["--grain", "week"][..],
        &["--grain", "day", "--from", "2026-08-01"],
    ] {
        let full = table(&compute(&path, grain, false));
        let cold = table(&compute(&path, grain, true));
        assert_same(&full, &cold, &format!("{grain:?}, cache cold"));
        let warm = table(&compute(&path, grain, true));
        assert_same(&full, &warm, &format!("{grain:?}, cache warm"));
    }
    assert!(
        !cache_files(project.path()).is_empty(),
        "nothing was cached"
    );
    assert_same_json(&tree_json(&path, false), &tree_json(&path, true), "tree");

    append_a_day(project.path());
    for grain in [
        &["--grain", "week"][..],
        &["--grain", "day", "--from", "2026-08-01"],
    ] {
        let refreshed = table(&compute(&path, grain, true));
        let full = table(&compute(&path, grain, false));
        assert_same(&full, &refreshed, &format!("{grain:?}, after a new day"));
    }
    let full = table(&compute(
        &path,
        &["--grain", "day", "--from", "2026-08-01"],
        false,
    ));
    assert_eq!(full.rows.len(), 32, "August and 2026-09-01");
    assert_eq!(value(&full, "2026-09-01", "nights_booked"), "4");
    assert_eq!(value(&full, "2026-09-01", "active_users"), "3");
    assert_same_json(
        &tree_json(&path, false),
        &tree_json(&path, true),
        "tree after a new day",
    );
}

#[test]
fn a_refresh_reads_only_the_periods_that_can_still_change() {
    let project = cached_example();
    let path = project.path().join("lodestar.yaml");
    let week = ["--grain", "week"];
    let before = table(&compute(&path, &week, true));

    // An old partition disappears: the cached periods keep their numbers, which only a
    // computation that does not read that partition can give; without the cache they change.
    fs_err::remove_dir_all(project.path().join("data/events/month=2026-03")).unwrap();
    // Late data inside the look-back window (the data ends 2026-08-31; 3 days back).
    fs_err::write(
        project.path().join("data/events/month=2026-08/late.csv"),
        "event_time,user_id,event_type,platform,country\n\
         2026-08-30T12:00:00,9101,app_open,web,FR\n\
         2026-08-30T12:01:00,9102,app_open,web,FR\n",
    )
    .unwrap();
    let cached = table(&compute(&path, &week, true));
    let full = table(&compute(&path, &week, false));

    assert_eq!(
        value(&cached, "2026-03-02", "active_users"),
        value(&before, "2026-03-02", "active_users"),
        "a closed week was recomputed from the data"
    );
    assert_eq!(value(&full, "2026-03-02", "active_users"), "0");
    assert_ne!(value(&before, "2026-03-02", "active_users"), "0");
    // So do closed cohorts: the March cohorts' second weeks were in the removed partition.
    let rate = |t: &Table, week: &str| -> f64 {
        let text = value(t, week, "d7_retention");
        text.parse()
            .unwrap_or_else(|_| panic!("d7_retention of {week}: {text:?}"))
    };
    assert!(rate(&before, "2026-03-02") > 0.0);
    assert_eq!(
        rate(&cached, "2026-03-02"),
        rate(&before, "2026-03-02"),
        "a closed cohort was recomputed from the data"
    );
    assert_eq!(rate(&full, "2026-03-02"), 0.0);
    // The last complete cohort is computed afresh either way.
    assert_eq!(
        value(&cached, "2026-08-10", "d7_retention"),
        value(&full, "2026-08-10", "d7_retention")
    );
    // The week of 08-24 ends within the look-back: recomputed, with the late users.
    let late_week = |t: &Table| {
        value(t, "2026-08-24", "active_users")
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(late_week(&cached), late_week(&before) + 2);
    assert_eq!(late_week(&cached), late_week(&full));
    assert_eq!(
        value(&cached, "2026-08-24", "active_users_28d"),
        value(&full, "2026-08-24", "active_users_28d")
    );
}

#[test]
fn changed_definitions_and_broken_cache_files_never_give_old_or_wrong_numbers() {
    let project = cached_example();
    let path = project.project();
    let range = ["--grain", "week", "--from", "2026-06-01"];
    let before = table(&compute(&path, &range, true));

    // A new definition is a new cache entry: the old numbers are not reused.
    let text = fs_err::read_to_string(&path).unwrap();
    let text = text.replacen("measure: sum(price)", "measure: sum(price * 2)", 1);
    fs_err::write(&path, text).unwrap();
    let changed = table(&compute(&path, &range, true));
    let old: f64 = value(&before, "2026-06-01", "revenue").parse().unwrap();
    let new: f64 = value(&changed, "2026-06-01", "revenue").parse().unwrap();
    assert!(
        cell_matches(&(old * 2.0).to_string(), &new.to_string()),
        "{old} -> {new}"
    );
    assert_same(
        &table(&compute(&path, &range, false)),
        &changed,
        "changed definition",
    );

    // Every cache file broken: reported, ignored, rebuilt.
    let files = cache_files(project.path());
    assert!(!files.is_empty());
    for file in &files {
        fs_err::write(file, b"not parquet").unwrap();
    }
    let run = compute(&path, &range, true);
    assert!(
        run.stderr.contains("ignoring cache file") && run.stderr.contains(".parquet"),
        "no warning about the broken files\n{run}"
    );
    assert_same(&changed, &table(&run), "after broken cache files");
    let again = compute(&path, &range, true);
    assert!(!again.stderr.contains("ignoring cache file"), "{again}");
    assert_same(&changed, &table(&again), "after rebuilding");

    // `lodestar cache clear` empties it.
    let cleared = Run::of(&mut lodestar_project(&path, ["cache", "clear"])).success();
    assert!(cleared.stdout.contains("removed"), "{cleared}");
    assert!(cache_files(project.path()).is_empty());
}

//! The `files` connector's `time_partition` option on a year of `dt=` folders: a four-week
//! query reads only those weeks' folders. Proved by a corrupt file planted in a day outside
//! the weeks: the four-week query succeeds with the right numbers, the whole year fails
//! naming that file.
//!
//! Expected numbers are counted here from the rows the test writes.

use std::path::Path;
use std::sync::Arc;

use chrono::{Datelike, Days, NaiveDate};
use lodestar_core::datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use lodestar_core::datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use lodestar_core::datafusion::parquet::arrow::ArrowWriter;

use crate::support::{Run, Table, cell_matches, lodestar_project};

fn jan_1() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
}

/// Events of day `d` (0-based from Jan 1st): `1 + d % 3` of them, hourly from midnight, by
/// users `d % 5` and up.
fn day_events(d: u64) -> Vec<(i64, i64, &'static str)> {
    let date = jan_1() + Days::new(d);
    let midnight = date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
    (0..1 + d % 3)
        .map(|k| {
            let micros = (midnight + k as i64 * 3_600) * 1_000_000;
            let kind = if k == 0 { "open" } else { "click" };
            (micros, (d % 5 + k) as i64, kind)
        })
        .collect()
}

fn write_day(dir: &Path, d: u64) {
    let date = jan_1() + Days::new(d);
    let rows = day_events(d);
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            rows.iter().map(|r| r.0),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    let folder = dir.join(format!("events/dt={date}"));
    fs_err::create_dir_all(&folder).unwrap();
    let file = fs_err::File::create(folder.join("part-0.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A year of days (2025) under `dir/events/dt=…/`, one Parquet file a day.
pub(crate) fn write_year(dir: &Path) {
    for d in 0..365 {
        write_day(dir, d);
    }
}

#[test]
fn a_four_week_query_reads_only_its_partitions() {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-files-partitions-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("lake");
    write_year(&data);
    // Not Parquet, in a day far from the four weeks (and neither the first nor the last file,
    // which the schema is read from).
    let corrupt = data.join("events/dt=2025-03-15/part-1.parquet");
    fs_err::write(&corrupt, b"this is not a parquet file").unwrap();
    let project = dir.path().join("lodestar.yaml");
    fs_err::write(
        &project,
        "\
sources:
  app:
    connector: files
    path: lake/
    time_partition: { column: dt, time: event_time }
metrics:
  events: { table: app.events, time: event_time, measure: count(*) }
  users: { table: app.events, time: event_time, measure: count(distinct user_id) }
  clicks:
    table: app.events
    time: event_time
    measure: count(*)
    filter: event_type = 'click'
",
    )
    .unwrap();

    // Four Monday weeks: June 2nd to June 29th 2025.
    let monday = NaiveDate::from_ymd_opt(2025, 6, 2).unwrap();
    assert_eq!(monday.weekday(), chrono::Weekday::Mon);
    let four_weeks = [
        "compute",
        "events",
        "users",
        "clicks",
        "--grain",
        "week",
        "--from",
        "2025-06-02",
        "--to",
        "2025-06-29",
    ];
    let run = Run::of(&mut lodestar_project(
        &project,
        four_weeks.iter().chain(&["--format", "csv"]),
    ))
    .success();
    let table = Table::parse(&run.stdout).unwrap();
    assert_eq!(
        table.header,
        ["period", "events", "users", "clicks"],
        "{run}"
    );
    assert_eq!(table.rows.len(), 4, "{run}");
    for (week, row) in table.rows.iter().enumerate() {
        let start = monday + Days::new(7 * week as u64);
        let days = (0..7).map(|i| (start + Days::new(i) - jan_1()).num_days() as u64);
        let rows: Vec<_> = days.flat_map(day_events).collect();
        let users: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.1).collect();
        let clicks = rows.iter().filter(|r| r.2 == "click").count();
        let expected = [
            start.to_string(),
            rows.len().to_string(),
            users.len().to_string(),
            clicks.to_string(),
        ];
        assert!(
            expected.iter().zip(row).all(|(e, a)| cell_matches(e, a)),
            "week {week}: expected {expected:?}, got {row:?}\n{run}"
        );
    }

    // One scan answers all three (the distinct count of an integer key is one more aggregate,
    // counted by bitmap), and it read the four weeks' rows once: nothing of the other folders.
    let explain = Run::of(&mut lodestar_project(
        &project,
        four_weeks.iter().chain(&["--explain", "analyze"]),
    ))
    .success();
    let first = (monday - jan_1()).num_days() as u64;
    let rows: usize = (first..first + 28).map(|d| day_events(d).len()).sum();
    assert!(
        explain
            .stdout
            .contains("scan 1 of 1: app.events (events, users, clicks)"),
        "{explain}"
    );
    assert!(
        explain.stdout.contains(&format!("1 scan: {rows} rows, ")),
        "{rows} rows\n{explain}"
    );
    assert!(explain.stdout.contains(" ms\n"), "{explain}");

    // The whole year reads every folder, the corrupt file too, and says which file it is.
    let run = Run::of(&mut lodestar_project(
        &project,
        ["compute", "events", "--grain", "week", "--format", "csv"],
    ));
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains("dt=2025-03-15/part-1.parquet"),
        "the error names the corrupt file\n{run}"
    );
}

#[test]
fn a_time_partition_that_matches_no_table_is_refused() {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-files-partitions-")
        .tempdir()
        .unwrap();
    write_day(&dir.path().join("lake"), 0);
    let project = dir.path().join("lodestar.yaml");
    fs_err::write(
        &project,
        "\
sources:
  app:
    connector: files
    path: lake/
    time_partition: { column: dt, time: ts }
metrics:
  events: { table: app.events, time: event_time, measure: count(*) }
",
    )
    .unwrap();
    let run = Run::of(&mut lodestar_project(&project, ["validate"]));
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stderr
            .contains("no table of the source has both the partition column `dt`"),
        "{run}"
    );
    assert!(run.stderr.contains("`ts`"), "{run}");
}

/// A distinct count of a key that is not an integer, over a time-partitioned table, runs as
/// one query per chunk of whole periods (`-v` logs each): the counts equal the rows' own, at
/// every grain, and equal those of the same files read without `time_partition`, in one
/// query. In another time zone, where time bounds do not prune partitions, it stays one
/// query. The same count of the integer key itself, by bitmap, gives the same numbers.
#[test]
fn distinct_counts_over_partitions_are_computed_chunk_by_chunk_with_the_same_numbers() {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-files-partitions-")
        .tempdir()
        .unwrap();
    write_year(&dir.path().join("lake"));
    let project = |name: &str, zone: &str, partition: &str| {
        let path = dir.path().join(name);
        fs_err::write(
            &path,
            format!(
                "\
{zone}
sources:
  app:
    connector: files
    path: lake/
{partition}
metrics:
  events: {{ table: app.events, time: event_time, measure: count(*) }}
  users: {{ table: app.events, time: event_time, measure: count(distinct CAST(user_id AS VARCHAR)) }}
  user_ids: {{ table: app.events, time: event_time, measure: count(distinct user_id) }}
"
            ),
        )
        .unwrap();
        path
    };
    let partition = "    time_partition: { column: dt, time: event_time }";
    let partitioned = project("partitioned.yaml", "", partition);
    let plain = project("plain.yaml", "", "");
    let paris = project("paris.yaml", "timezone: Europe/Paris", partition);
    let compute = |project: &Path, grain: &str| {
        let run = Run::of(&mut lodestar_project(
            project,
            [
                "-v", "compute", "events", "users", "user_ids", "--grain", grain, "--format", "csv",
            ],
        ))
        .success();
        let queries = run
            .stderr
            .lines()
            .filter(|l| l.contains("scan") && l.contains("__value"))
            .count();
        (run, queries)
    };
    for grain in ["day", "week", "month"] {
        let (chunked, queries) = compute(&partitioned, grain);
        assert!(queries > 1, "{grain}: one query per chunk\n{chunked}");
        let (whole, queries) = compute(&plain, grain);
        assert_eq!(
            queries, 1,
            "{grain}: without partitions, one query\n{whole}"
        );
        assert_eq!(chunked.stdout, whole.stdout, "{grain}\n{chunked}\n{whole}");
    }
    let (run, queries) = compute(&paris, "week");
    assert_eq!(queries, 1, "no pruning, no chunks\n{run}");

    // Week by week, as counted from the rows (the year starts on a Wednesday: its first
    // week is Monday Dec 30th's, and its last Monday Dec 29th's).
    let (run, _) = compute(&partitioned, "week");
    let table = Table::parse(&run.stdout).unwrap();
    assert_eq!(table.rows.len(), 53, "{run}");
    let first_monday = NaiveDate::from_ymd_opt(2024, 12, 30).unwrap();
    for (week, row) in table.rows.iter().enumerate() {
        let start = first_monday + Days::new(7 * week as u64);
        let rows: Vec<_> = (0..7)
            .map(|i| (start + Days::new(i) - jan_1()).num_days())
            .filter(|d| (0..365).contains(d))
            .flat_map(|d| day_events(d as u64))
            .collect();
        let users: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.1).collect();
        let expected = [
            start.to_string(),
            rows.len().to_string(),
            users.len().to_string(),
            users.len().to_string(),
        ];
        assert!(
            expected.iter().zip(row).all(|(e, a)| cell_matches(e, a)),
            "week {week}: expected {expected:?}, got {row:?}\n{run}"
        );
    }
}

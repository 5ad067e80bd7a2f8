//! The `s3` connector plugin against a real S3-protocol server (`s3s-fs` on a loopback port,
//! started here; see `lodestar_testkit::s3`), loaded from its shared library by the `lodestar`
//! binary: discovery and schemas, filtered queries, partition and row-group pruning measured
//! in requests and bytes served, a metric end to end, retries, timeouts and the errors.
//!
//! Expected numbers are computed here from the rows the tests write, never by Lodestar.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use lodestar_core::datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use lodestar_core::datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use lodestar_core::datafusion::parquet::arrow::ArrowWriter;
use lodestar_core::datafusion::parquet::file::properties::WriterProperties;
use lodestar_testkit::s3::{ACCESS_KEY, Fault, S3Server, SECRET_KEY};
use tempfile::TempDir;

use crate::support::{Run, Table, cell_matches, lodestar, lodestar_project, plugin_dir};

const BUCKET: &str = "lake";
const DAY_SECONDS: i64 = 86_400;
const MICROS: i64 = 1_000_000;

fn jan_1() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
}

/// Seconds since the epoch of midnight UTC of `date`.
fn epoch_seconds(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

/// One row of table `events`.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    date: NaiveDate,
    ts_micros: i64,
    user_id: i64,
    kind: &'static str,
    amount: f64,
}

/// Twelve events a day through 2025, by formula: a year of data, one partition a day.
fn year_of_events() -> Vec<Event> {
    let mut events = Vec::new();
    for d in 0..365i64 {
        let date = jan_1() + chrono::Days::new(d as u64);
        for k in 0..12i64 {
            let seconds = epoch_seconds(date) + k * 7_200 + (d * 37 % 60) * 60;
            events.push(Event {
                date,
                ts_micros: seconds * MICROS,
                user_id: (d * 7 + k * 3) % 40,
                kind: if (d + k) % 4 == 0 { "purchase" } else { "view" },
                // Quarters add up exactly in binary floating point.
                amount: ((d * 31 + k * 17) % 200) as f64 * 0.25,
            });
        }
    }
    events
}

fn parquet_bytes(batch: &RecordBatch, properties: Option<WriterProperties>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), properties).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    bytes
}

fn events_batch(rows: &[&Event]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("user_id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            rows.iter().map(|r| r.ts_micros),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.user_id))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.amount),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// The key of the events file of `date`.
fn events_key(date: NaiveDate) -> String {
    format!("prod/events/dt={date}/part-0.parquet")
}

/// Bucket `lake`, prefix `prod/`: `events` (Parquet, a `dt=` partition a day of 2025, with a
/// Spark-style empty `_SUCCESS`), `users` (CSV), `sessions` (NDJSON), and a hidden folder that
/// is not a table. Returns the events written.
pub(crate) fn write_lake(server: &S3Server) -> Vec<Event> {
    let events = year_of_events();
    let mut by_day: BTreeMap<NaiveDate, Vec<&Event>> = BTreeMap::new();
    for event in &events {
        by_day.entry(event.date).or_default().push(event);
    }
    for (date, rows) in &by_day {
        server.put(
            BUCKET,
            &events_key(*date),
            &parquet_bytes(&events_batch(rows), None),
        );
    }
    server.put(BUCKET, "prod/events/_SUCCESS", b"");
    let mut users = String::from("user_id,country\n");
    for id in 0..40 {
        users.push_str(&format!("{id},{}\n", ["DE", "FR", "US"][id % 3]));
    }
    server.put(BUCKET, "prod/users/users.csv", users.as_bytes());
    let sessions: String = (0..40)
        .map(|id| format!("{{\"user_id\": {id}, \"seconds\": {}}}\n", id * 10 + 5))
        .collect();
    server.put(BUCKET, "prod/sessions/part-0.ndjson", sessions.as_bytes());
    server.put(BUCKET, "prod/_staging/tmp.parquet", b"not parquet");
    events
}

pub(crate) const METRICS: &str = "\
metrics:
  events: { table: lake.events, time: ts, measure: count(*) }
  revenue:
    table: lake.events
    time: ts
    measure: sum(amount)
    filter: kind = 'purchase'
  buyers:
    table: lake.events
    time: ts
    measure: count(distinct user_id)
    filter: kind = 'purchase'
";

/// A project whose source `lake` reads `server` with the test keys (through `${ENV}`), with
/// `extra` option lines (YAML, indented four spaces) and `metrics`.
pub(crate) fn project(server: &S3Server, extra: &str, metrics: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-s3-project-")
        .tempdir()
        .unwrap();
    let yaml = format!(
        "\
sources:
  lake:
    connector: s3
    bucket: {BUCKET}
    endpoint: {endpoint}
    allow_http: true
    region: eu-west-1
    access_key_id: ${{LODESTAR_TEST_S3_KEY}}
    secret_access_key: ${{LODESTAR_TEST_S3_SECRET}}
{extra}{metrics}",
        endpoint = server.endpoint(),
    );
    fs_err::write(dir.path().join("lodestar.yaml"), yaml).unwrap();
    dir
}

/// Runs `lodestar --project DIR/lodestar.yaml ARGS` with the test keys in the environment and
/// no AWS variables of the developer's.
fn run_with_secret(dir: &TempDir, secret: &str, args: &[&str]) -> Run {
    plugin_dir();
    let mut cmd = lodestar_project(&dir.path().join("lodestar.yaml"), args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("LODESTAR_TEST_S3_KEY", ACCESS_KEY)
        .env("LODESTAR_TEST_S3_SECRET", secret);
    Run::of(&mut cmd)
}

fn run(dir: &TempDir, args: &[&str]) -> Run {
    run_with_secret(dir, SECRET_KEY, args)
}

fn csv(run: &Run) -> Table {
    Table::parse(&run.stdout).unwrap_or_else(|e| panic!("not CSV: {e}\n{run}"))
}

/// Asserts rows of text cells, numbers compared with a tolerance.
fn assert_rows(actual: &Table, expected: &[Vec<String>], context: &dyn std::fmt::Display) {
    assert_eq!(actual.rows.len(), expected.len(), "{context}");
    for (e, a) in expected.iter().zip(&actual.rows) {
        assert!(
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| cell_matches(e, a)),
            "expected row {e:?}, got {a:?}\n{context}"
        );
    }
}

/// Object reads served, by key: (requests, bytes).
fn reads(server: &S3Server) -> BTreeMap<String, (usize, u64)> {
    let mut reads: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for served in server.log().iter().filter(|s| s.is_object_read()) {
        let key = served.key().unwrap().to_string();
        let entry = reads.entry(key).or_default();
        entry.0 += 1;
        entry.1 += served.bytes();
    }
    reads
}

/// `(events, revenue, buyers)` of the events in `[from, to)`, counted here.
fn expected_metrics<'a>(events: impl Iterator<Item = &'a Event>) -> (usize, f64, usize) {
    let events: Vec<&Event> = events.collect();
    let purchases: Vec<&&Event> = events.iter().filter(|e| e.kind == "purchase").collect();
    let buyers: BTreeSet<i64> = purchases.iter().map(|e| e.user_id).collect();
    (
        events.len(),
        purchases.iter().map(|e| e.amount).sum(),
        buyers.len(),
    )
}

#[test]
fn the_connector_is_listed_with_its_options() {
    plugin_dir();
    let out = Run::of(lodestar().args(["connectors", "--format", "json"])).success();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let s3 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "s3")
        .unwrap_or_else(|| panic!("no s3 connector listed\n{out}"));
    assert_eq!(s3["kind"], "plugin", "{out}");
    let options: Vec<&str> = s3["options"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.as_str())
        .collect();
    for option in [
        "bucket",
        "prefix",
        "endpoint",
        "tables",
        "time_partition",
        "max_retries",
    ] {
        assert!(options.contains(&option), "no option `{option}`\n{out}");
    }
}

#[test]
fn tables_are_discovered_with_their_schemas_and_partitions() {
    let server = S3Server::start();
    write_lake(&server);
    let dir = project(&server, "    prefix: prod/\n", "metrics: {}\n");

    let out = run(
        &dir,
        &[
            "sql",
            "SELECT table_name, column_name, data_type FROM information_schema.columns \
             WHERE table_schema = 'lake' ORDER BY table_name, ordinal_position",
            "--format",
            "csv",
        ],
    )
    .success();
    let table = csv(&out);
    let columns: Vec<String> = table
        .rows
        .iter()
        .map(|r| format!("{}.{}", r[0], r[1]))
        .collect();
    assert_eq!(
        columns,
        [
            "events.ts",
            "events.user_id",
            "events.kind",
            "events.amount",
            "events.dt",
            // NDJSON columns are inferred in name order.
            "sessions.seconds",
            "sessions.user_id",
            "users.user_id",
            "users.country",
        ],
        "the hidden `_staging` folder is no table; `dt=` folders are a column\n{out}"
    );
    assert!(table.rows[0][2].starts_with("Timestamp"), "{out}");

    let out = run(&dir, &["sql", "SHOW TABLES", "--format", "csv"]).success();
    let tables: BTreeSet<String> = csv(&out)
        .rows
        .iter()
        .filter(|r| r[1] == "lake")
        .map(|r| r[2].clone())
        .collect();
    assert_eq!(
        tables,
        BTreeSet::from(["events".into(), "sessions".into(), "users".into()]),
        "{out}"
    );
}

#[test]
fn filtered_queries_over_parquet_csv_and_ndjson() {
    let server = S3Server::start();
    let events = write_lake(&server);
    let dir = project(&server, "    prefix: prod/\n", "metrics: {}\n");

    let out = run(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n, sum(amount) AS amount FROM lake.events \
             WHERE kind = 'purchase' AND user_id < 10 AND dt >= '2025-11-01'",
            "--format",
            "csv",
        ],
    )
    .success();
    let chosen: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == "purchase" && e.user_id < 10 && e.date.month() >= 11)
        .collect();
    let amount: f64 = chosen.iter().map(|e| e.amount).sum();
    assert_rows(
        &csv(&out),
        &[vec![chosen.len().to_string(), amount.to_string()]],
        &out,
    );

    let out = run(
        &dir,
        &[
            "sql",
            "SELECT u.country, count(*) AS users, sum(s.seconds) AS seconds \
             FROM lake.users u JOIN lake.sessions s ON s.user_id = u.user_id \
             WHERE u.country <> 'US' GROUP BY 1 ORDER BY 1",
            "--format",
            "csv",
        ],
    )
    .success();
    let expected: Vec<Vec<String>> = ["DE", "FR"]
        .iter()
        .enumerate()
        .map(|(i, country)| {
            let ids: Vec<i64> = (0..40).filter(|id| id % 3 == i as i64).collect();
            let seconds: i64 = ids.iter().map(|id| id * 10 + 5).sum();
            vec![
                country.to_string(),
                ids.len().to_string(),
                seconds.to_string(),
            ]
        })
        .collect();
    assert_rows(&csv(&out), &expected, &out);
}

/// A one-week query over a year of daily partitions reads the week's files and nothing else
/// of the table but the two the schema is read from when connecting: the engine's time range
/// on `ts` becomes a range of `dt` partitions (`time_partition`). A filter on `dt` itself
/// prunes without it.
#[test]
fn a_week_of_a_year_reads_a_week_of_files() {
    let server = S3Server::start();
    let events = write_lake(&server);
    let dir = project(
        &server,
        "    prefix: prod/\n    time_partition: { column: dt, time: ts }\n",
        METRICS,
    );
    let from = NaiveDate::from_ymd_opt(2025, 6, 2).unwrap();
    let week: Vec<NaiveDate> = (0..7).map(|d| from + chrono::Days::new(d)).collect();

    server.clear_log();
    let out = run(
        &dir,
        &[
            "compute",
            "events",
            "revenue",
            "buyers",
            "--grain",
            "day",
            "--from",
            "2025-06-02",
            "--to",
            "2025-06-08",
            "--format",
            "csv",
        ],
    )
    .success();
    let expected: Vec<Vec<String>> = week
        .iter()
        .map(|day| {
            let (n, revenue, buyers) = expected_metrics(events.iter().filter(|e| e.date == *day));
            vec![
                day.to_string(),
                n.to_string(),
                revenue.to_string(),
                buyers.to_string(),
            ]
        })
        .collect();
    let table = csv(&out);
    assert_eq!(
        table.header,
        ["period", "events", "revenue", "buyers"],
        "{out}"
    );
    assert_rows(&table, &expected, &out);

    let week_reads = reads(&server);
    let schema_files: BTreeSet<String> = [
        events_key(jan_1()),
        events_key(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()),
    ]
    .into();
    let week_files: BTreeSet<String> = week.iter().map(|d| events_key(*d)).collect();
    let event_files_read: BTreeSet<String> = week_reads
        .keys()
        .filter(|k| k.starts_with("prod/events/"))
        .cloned()
        .collect();
    let expected_files: BTreeSet<String> = week_files.union(&schema_files).cloned().collect();
    assert_eq!(
        event_files_read, expected_files,
        "only the week's files (and the schema's two) are read\n{week_reads:#?}"
    );
    let size =
        |keys: &BTreeSet<String>| -> u64 { keys.iter().map(|k| server.size(BUCKET, k)).sum() };
    let all_files: BTreeSet<String> = events.iter().map(|e| events_key(e.date)).collect();
    let served: u64 = week_reads
        .iter()
        .filter(|(k, _)| k.starts_with("prod/events/"))
        .map(|(_, (_, bytes))| bytes)
        .sum();
    // Each file read is at most its footer fetch (the whole of a small file) and its pages.
    let bound = 2 * size(&week_files) + size(&schema_files);
    assert!(
        served <= bound,
        "served {served} bytes of events; the week and the schema files are {bound} at most, the year {}\n{week_reads:#?}",
        size(&all_files)
    );
    assert!(
        served * 10 < size(&all_files),
        "served {served} bytes of a year of {}",
        size(&all_files)
    );

    // A filter on the partition column prunes by itself.
    server.clear_log();
    let out = run(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n FROM lake.events WHERE dt = '2025-03-01'",
            "--format",
            "csv",
        ],
    )
    .success();
    let march_1 = NaiveDate::from_ymd_opt(2025, 3, 1).unwrap();
    let n = events.iter().filter(|e| e.date == march_1).count();
    assert_rows(&csv(&out), &[vec![n.to_string()]], &out);
    let read: BTreeSet<String> = reads(&server)
        .into_keys()
        .filter(|k| k.starts_with("prod/events/"))
        .collect();
    let expected: BTreeSet<String> = schema_files
        .iter()
        .cloned()
        .chain([events_key(march_1)])
        .collect();
    assert_eq!(read, expected, "{out}");
}

/// A metric tree's numbers, computed end to end through `lodestar compute` over the whole
/// year, match the months counted here.
#[test]
fn metrics_are_computed_end_to_end() {
    let server = S3Server::start();
    let events = write_lake(&server);
    let dir = project(&server, "    prefix: prod/\n", METRICS);
    run(&dir, &["validate"]).success();
    let out = run(
        &dir,
        &[
            "compute", "events", "revenue", "buyers", "--grain", "month", "--format", "csv",
        ],
    )
    .success();
    let expected: Vec<Vec<String>> = (1..=12)
        .map(|month| {
            let (n, revenue, buyers) =
                expected_metrics(events.iter().filter(|e| e.date.month() == month));
            vec![
                format!("2025-{month:02}-01"),
                n.to_string(),
                revenue.to_string(),
                buyers.to_string(),
            ]
        })
        .collect();
    assert_rows(&csv(&out), &expected, &out);
}

/// Within one file, a narrow time range reads the footer and the row groups it needs: the
/// filter reaches the Parquet reader's statistics and page index.
#[test]
fn row_groups_outside_the_range_are_not_read() {
    let server = S3Server::start();
    // A click every five minutes of 2025, a row group a week, and a payload that does not
    // compress, so the file is several MB.
    let step = 300;
    let rows = (365 * DAY_SECONDS / step) as usize;
    let start = epoch_seconds(jan_1());
    let ts: Vec<i64> = (0..rows as i64)
        .map(|i| (start + i * step) * MICROS)
        .collect();
    let payload: Vec<String> = (0..rows as u64)
        .map(|i| {
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
            (0..3)
                .map(|_| {
                    x ^= x >> 29;
                    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    format!("{x:016x}")
                })
                .collect()
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("payload", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts.clone())),
            Arc::new(StringArray::from(payload)),
        ],
    )
    .unwrap();
    let week_rows = (7 * DAY_SECONDS / step) as usize;
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(week_rows))
        .set_dictionary_enabled(false)
        .build();
    server.put(
        BUCKET,
        "flat/clicks/clicks.parquet",
        &parquet_bytes(&batch, Some(properties)),
    );
    let dir = project(&server, "    prefix: flat/\n", "metrics: {}\n");

    server.clear_log();
    let out = run(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n, min(payload) IS NOT NULL AS has_payload FROM lake.clicks \
             WHERE ts >= TIMESTAMP '2025-03-03 00:00:00' AND ts < TIMESTAMP '2025-03-10 00:00:00'",
            "--format",
            "csv",
        ],
    )
    .success();
    let lo = epoch_seconds(NaiveDate::from_ymd_opt(2025, 3, 3).unwrap()) * MICROS;
    let hi = epoch_seconds(NaiveDate::from_ymd_opt(2025, 3, 10).unwrap()) * MICROS;
    let n = ts.iter().filter(|t| **t >= lo && **t < hi).count();
    assert_rows(&csv(&out), &[vec![n.to_string(), "true".into()]], &out);

    let size = server.size(BUCKET, "flat/clicks/clicks.parquet");
    let (requests, served) = reads(&server)["flat/clicks/clicks.parquet"];
    eprintln!("TEMP rowgroups: served {served} in {requests} of {size}");
    assert!(
        served * 4 < size,
        "served {served} bytes in {requests} reads of a {size}-byte file for one week of 52"
    );
}

/// Throttling (503 SlowDown) is retried with backoff; with retries off it is an error that
/// says what the service answered.
#[test]
fn throttled_requests_are_retried() {
    assert_retried_then_named(Fault::SlowDown, 503, "SlowDown");
}

/// A 500 `InternalError` is retried like throttling; with retries off it is an error that
/// names the source and what the service answered, and never the secret key.
#[test]
fn server_errors_are_retried_then_named() {
    assert_retried_then_named(Fault::InternalError, 500, "InternalError");
}

/// Two `fault`s answered `status` are retried until every object is served (the count is
/// right); with retries off, one is an error naming the source, the status and `code`.
fn assert_retried_then_named(fault: Fault, status: u16, code: &str) {
    let server = S3Server::start();
    write_lake(&server);
    let dir = project(
        &server,
        "    prefix: prod/\n    max_retries: 3\n",
        "metrics: {}\n",
    );
    server.inject(&[fault, fault]);
    let out = run(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n FROM lake.users",
            "--format",
            "csv",
        ],
    )
    .success();
    assert_rows(&csv(&out), &[vec!["40".into()]], &out);
    let log = server.log();
    let failed: Vec<&str> = log
        .iter()
        .filter(|s| s.status == status)
        .filter_map(|s| s.key())
        .collect();
    assert_eq!(failed.len(), 2, "{log:#?}");
    for key in failed {
        assert!(
            log.iter()
                .any(|s| s.key() == Some(key) && (200..300).contains(&s.status)),
            "`{key}` was retried until served\n{log:#?}"
        );
    }

    let dir = project(
        &server,
        "    prefix: prod/\n    max_retries: 0\n",
        "metrics: {}\n",
    );
    server.inject(&[fault]);
    let out = run(&dir, &["validate"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("source `lake`"), "{out}");
    assert!(out.stderr.contains(&status.to_string()), "{out}");
    assert!(out.stderr.contains(code), "{out}");
    assert!(!out.stderr.contains(SECRET_KEY), "{out}");
}

/// A request that takes longer than `request_timeout_secs` fails instead of hanging.
#[test]
fn a_stalled_request_times_out() {
    let server = S3Server::start();
    write_lake(&server);
    let dir = project(
        &server,
        "    prefix: prod/\n    request_timeout_secs: 1\n    max_retries: 0\n",
        "metrics: {}\n",
    );
    server.inject(&[Fault::Stall(Duration::from_secs(30))]);
    let out = run(&dir, &["validate"]);
    eprintln!("TEMP {out}");
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("source `lake`"), "{out}");
    assert!(
        out.stderr.to_lowercase().contains("timed out") || out.stderr.contains("timeout"),
        "{out}"
    );
}

#[test]
fn a_missing_bucket_is_named_with_the_endpoint() {
    let server = S3Server::start();
    write_lake(&server);
    let dir = project(&server, "    prefix: prod/\n", "metrics: {}\n");
    let yaml = fs_err::read_to_string(dir.path().join("lodestar.yaml")).unwrap();
    fs_err::write(
        dir.path().join("lodestar.yaml"),
        yaml.replace("bucket: lake", "bucket: no-such-bucket"),
    )
    .unwrap();
    let out = run(&dir, &["validate"]).expect_code(1);
    eprintln!("TEMP {out}");
    assert!(
        out.stderr.contains("lodestar.yaml:2:3: source `lake`"),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "bucket `no-such-bucket` does not exist at {}",
            server.endpoint()
        )),
        "{out}"
    );
}

/// Wrong keys are refused by the server; the message says so and which credentials were
/// used, and never shows the secret key or the session token, in the error or in the logs.
#[test]
fn access_denied_never_shows_the_secret() {
    let server = S3Server::start();
    write_lake(&server);
    let token = "LodestarSessionToken-abcdef-0123456789";
    let dir = project(
        &server,
        &format!("    prefix: prod/\n    session_token: {token}\n"),
        "metrics: {}\n",
    );
    let wrong = "not-the-secret-key-9876543210";
    for args in [&["validate"][..], &["-vv", "sql", "SELECT 1"][..]] {
        let out = run_with_secret(&dir, wrong, args).expect_code(1);
        eprintln!("TEMP {out}");
        assert!(out.stderr.contains("source `lake`"), "{out}");
        assert!(out.stderr.contains("access denied"), "{out}");
        assert!(
            out.stderr
                .contains("with the access key in the source's options"),
            "{out}"
        );
        for secret in [wrong, token, SECRET_KEY] {
            assert!(!out.stderr.contains(secret), "`{secret}` shown\n{out}");
            assert!(!out.stdout.contains(secret), "`{secret}` shown\n{out}");
        }
    }
}

#[test]
fn a_prefix_without_files_names_the_bucket_and_prefix() {
    let server = S3Server::start();
    write_lake(&server);
    let dir = project(&server, "    prefix: nothing/here\n", "metrics: {}\n");
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(out.stderr.contains("source `lake`"), "{out}");
    assert!(
        out.stderr
            .contains("found no files under s3://lake/nothing/here/"),
        "{out}"
    );

    // A table named in `tables` whose prefix is empty is named too.
    let dir = project(
        &server,
        "    prefix: prod/\n    tables:\n      orders: { format: parquet }\n",
        "metrics: {}\n",
    );
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(
        out.stderr
            .contains("table `orders`: found no parquet files under s3://lake/prod/orders/"),
        "{out}"
    );
}

//! The `postgres` connector plugin against a real PostgreSQL server (a throwaway cluster, see
//! `postgres_server`): type mapping, pushdown that reaches the server as bound values,
//! parallel ctid ranges, metrics end to end with a local file, and the errors.
//!
//! Expected numbers are computed here from the rows each test inserts.

use std::collections::BTreeMap;
use std::path::Path;

use lodestar_core::datafusion::arrow::array::{AsArray, RecordBatch};
use lodestar_core::datafusion::arrow::datatypes::{
    DataType, Field, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
};
use lodestar_core::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use lodestar_core::{Engine, config};
use tempfile::TempDir;

use crate::postgres_server::{Database, PASSWORD};
use crate::support::{
    Run, Table, cell_matches, lodestar, lodestar_project, plugin_dir, plugin_file,
};

/// A project directory with this `lodestar.yaml` (and the given data files).
fn project(yaml: &str, files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-postgres-")
        .tempdir()
        .unwrap();
    fs_err::write(dir.path().join("lodestar.yaml"), yaml).unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    }
    dir
}

/// `lodestar --project DIR/lodestar.yaml ARGS`, with the plugins built.
fn run(dir: &TempDir, args: &[&str]) -> Run {
    plugin_dir();
    Run::of(&mut lodestar_project(
        &dir.path().join("lodestar.yaml"),
        args,
    ))
}

/// A source `pg` on `db` with extra options (`", pool_size: 2"`).
fn source(db: &Database, extra: &str) -> String {
    format!(
        "sources:\n  pg: {{ connector: postgres, url: \"{}\"{extra} }}\n",
        db.url()
    )
}

/// Opens the project in this process (for what only the engine shows: Arrow types, batches),
/// the plugin found in `plugins/` beside the project file.
async fn engine(dir: &TempDir) -> Engine {
    let plugins = dir.path().join("plugins");
    fs_err::create_dir_all(&plugins).unwrap();
    let name = plugin_file("postgres");
    if !plugins.join(&name).exists() {
        link(&plugin_dir().join(&name), &plugins.join(&name));
    }
    let project = config::load(&dir.path().join("lodestar.yaml")).unwrap();
    Engine::open(project).await.unwrap()
}

fn link(from: &Path, to: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(from, to).unwrap();
    #[cfg(not(unix))]
    fs_err::copy(from, to).unwrap();
}

async fn query(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    engine.sql(sql).await.unwrap().collect().await.unwrap()
}

/// Every value of a one-batch result as display text, column by column.
fn texts(batch: &RecordBatch, row: usize) -> BTreeMap<String, String> {
    let options = FormatOptions::default().with_null("NULL");
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options).unwrap();
            (field.name().clone(), formatter.value(row).to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn column_types_map_to_arrow_types_and_values() {
    let db = Database::new("types");
    db.run(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN positive AS int4 CHECK (VALUE > 0);
         CREATE TABLE all_types (
           i2 int2, i4 int4 NOT NULL, i8 int8, f4 float4, f8 float8,
           dec numeric(12, 2), num numeric, t text, vc varchar(10), bp char(3), b bool,
           d date, ts timestamp, tstz timestamptz, iv interval, u uuid, j json, jb jsonb,
           ia int4[], ta text[], by bytea, tm time, m mood, p positive, pt point
         );
         INSERT INTO all_types VALUES (
           1, -2, 9000000000, 1.5, 2.25, 12345.67, 3.14159, 'héllo', 'vc', 'ab', true,
           '2026-03-01', '2026-03-01 12:30:00', '2026-03-01 12:00:00+02', '1 mon 2 days 03:04:05',
           'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{\"a\": [1, 2]}', '{\"b\": 2, \"a\": 1}',
           '{1,NULL,3}', '{x,\"y z\"}', '\\x616263', '13:14:15.5', 'happy', 7, '(1,2)'
         );
         INSERT INTO all_types (i4) VALUES (0);",
    );
    let dir = project(&format!("{}metrics: {{}}\n", source(&db, "")), &[]);
    let engine = engine(&dir).await;
    let batches = query(&engine, "SELECT * FROM pg.all_types ORDER BY i4").await;
    let batch = &batches[0];
    let utc = Some("UTC".into());
    let expected_types: Vec<(&str, DataType)> = vec![
        ("i2", DataType::Int16),
        ("i4", DataType::Int32),
        ("i8", DataType::Int64),
        ("f4", DataType::Float32),
        ("f8", DataType::Float64),
        ("dec", DataType::Decimal128(12, 2)),
        ("num", DataType::Decimal128(38, 10)),
        ("t", DataType::Utf8),
        ("vc", DataType::Utf8),
        ("bp", DataType::Utf8),
        ("b", DataType::Boolean),
        ("d", DataType::Date32),
        ("ts", DataType::Timestamp(TimeUnit::Microsecond, None)),
        ("tstz", DataType::Timestamp(TimeUnit::Microsecond, utc)),
        ("iv", DataType::Interval(IntervalUnit::MonthDayNano)),
        ("u", DataType::Utf8),
        ("j", DataType::Utf8),
        ("jb", DataType::Utf8),
        (
            "ia",
            DataType::List(Field::new("item", DataType::Int32, true).into()),
        ),
        (
            "ta",
            DataType::List(Field::new("item", DataType::Utf8, true).into()),
        ),
        ("by", DataType::Binary),
        ("tm", DataType::Time64(TimeUnit::Microsecond)),
        ("m", DataType::Utf8),
        ("p", DataType::Int32),
    ];
    let schema = batch.schema();
    let actual: Vec<(&str, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    // `pt` (a point) is left out, with a warning.
    assert_eq!(actual, expected_types);
    assert!(!schema.field_with_name("i4").unwrap().is_nullable());
    assert!(schema.field_with_name("i2").unwrap().is_nullable());

    // Row 1 (i4 = -2) has a value in every column.
    let row = texts(batch, 0);
    let expected = [
        ("i2", "1"),
        ("i4", "-2"),
        ("i8", "9000000000"),
        ("f4", "1.5"),
        ("f8", "2.25"),
        ("dec", "12345.67"),
        ("num", "3.1415900000"),
        ("t", "héllo"),
        ("vc", "vc"),
        ("bp", "ab "),
        ("b", "true"),
        ("d", "2026-03-01"),
        ("ts", "2026-03-01T12:30:00"),
        // 12:00 at +02 is 10:00 UTC.
        ("tstz", "2026-03-01T10:00:00Z"),
        ("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("j", "{\"a\": [1, 2]}"),
        ("jb", "{\"a\": 1, \"b\": 2}"),
        ("ia", "[1, NULL, 3]"),
        ("ta", "[x, y z]"),
        ("by", "616263"),
        ("tm", "13:14:15.500"),
        ("m", "happy"),
        ("p", "7"),
    ];
    for (column, value) in expected {
        assert_eq!(row[column], value, "column {column}");
    }
    let interval = batch
        .column_by_name("iv")
        .unwrap()
        .as_primitive::<IntervalMonthDayNanoType>()
        .value(0);
    assert_eq!(
        (interval.months, interval.days, interval.nanoseconds),
        (1, 2, ((3 * 60 + 4) * 60 + 5) * 1_000_000_000)
    );
    // Row 2 (i4 = 0) is NULL everywhere else.
    let row = texts(batch, 1);
    for (column, _) in &expected_types {
        if *column != "i4" {
            assert_eq!(row[*column], "NULL", "column {column}");
        }
    }
}

#[test]
fn an_unsupported_column_is_left_out_with_a_warning() {
    let db = Database::new("skipped");
    db.run("CREATE TABLE places (id int4, at point); INSERT INTO places VALUES (1, '(1,2)');");
    let dir = project(&format!("{}metrics: {{}}\n", source(&db, "")), &[]);
    let out = run(&dir, &["sql", "SELECT * FROM pg.places", "--format", "csv"]).success();
    assert_eq!(out.stdout, "id\n1\n", "{out}");
    assert!(
        out.stderr.contains(
            "table `public.places`: column `at` has type point, which the postgres connector does not read; it is left out"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("`at::text`"), "{out}");
}

/// Orders of the end-to-end tests, generated here so expected numbers come from these rows.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    id: i64,
    user_id: i64,
    paid: bool,
    country: &'static str,
    /// In cents.
    cents: i64,
    /// Minutes after 2026-03-01T00:00:00Z.
    minute: i64,
}

pub(crate) fn orders(n: i64) -> Vec<Order> {
    (0..n)
        .map(|i| Order {
            id: i,
            user_id: i % 7,
            paid: i % 4 != 0,
            country: if i % 3 == 0 { "FR" } else { "DE" },
            cents: (i % 50) * 100 + 50,
            minute: i * 137,
        })
        .collect()
}

fn day_of(minute: i64) -> String {
    let day = minute / (24 * 60);
    let date = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + chrono::Days::new(day as u64);
    date.to_string()
}

pub(crate) fn create_orders(db: &Database, rows: &[Order]) {
    let values: Vec<String> = rows
        .iter()
        .map(|o| {
            format!(
                "({}, {}, '{}', '{}', {}.{:02}, timestamptz '2026-03-01 00:00:00+00' + interval '{} minutes')",
                o.id,
                o.user_id,
                if o.paid { "paid" } else { "refunded" },
                o.country,
                o.cents / 100,
                o.cents % 100,
                o.minute
            )
        })
        .collect();
    db.run(&format!(
        "CREATE TABLE orders (id int8 PRIMARY KEY, user_id int8 NOT NULL, status text NOT NULL,
           country text NOT NULL, amount numeric(10, 2) NOT NULL, ordered_at timestamptz NOT NULL);
         INSERT INTO orders VALUES {};
         ANALYZE orders;",
        values.join(",\n")
    ));
}

/// Users of the local file, and which of them are on the `pro` plan.
const USERS_CSV: &str = "id,plan\n0,free\n1,pro\n2,free\n3,free\n4,pro\n5,pro\n6,free\n";
fn is_pro(user_id: i64) -> bool {
    [1, 4, 5].contains(&user_id)
}

pub(crate) fn metrics_project(db: &Database) -> TempDir {
    let yaml = format!(
        "{}  app: {{ connector: files, path: data }}
metrics:
  paid_revenue:
    table: pg.orders
    time: ordered_at
    measure: sum(amount)
    filter: status = 'paid'
    dimensions: [country]
  pro_orders:
    description: Paid orders of users on the pro plan (users live in a local file)
    sql: |
      SELECT date_trunc('day', o.ordered_at) AS period, count(*) AS value
      FROM pg.orders o JOIN app.users u ON o.user_id = u.id
      WHERE u.plan = 'pro' AND o.status = 'paid'
      GROUP BY 1
",
        source(db, "")
    );
    project(&yaml, &[("data/users.csv", USERS_CSV)])
}

#[test]
fn metrics_are_computed_end_to_end_joining_a_postgres_table_with_a_local_file() {
    let db = Database::new("compute");
    let rows = orders(300);
    create_orders(&db, &rows);
    let dir = metrics_project(&db);
    let days: Vec<String> = {
        let mut d: Vec<String> = rows.iter().map(|o| day_of(o.minute)).collect();
        d.dedup();
        d
    };

    // A simple metric on the Postgres table, by country.
    let out = run(
        &dir,
        &[
            "compute",
            "paid_revenue",
            "--grain",
            "day",
            "--by",
            "country",
            "--format",
            "csv",
        ],
    )
    .success();
    let table = Table::parse(&out.stdout).unwrap();
    assert_eq!(table.header, ["period", "country", "paid_revenue"], "{out}");
    let mut expected = Vec::new();
    for day in &days {
        for country in ["DE", "FR"] {
            let cents: i64 = rows
                .iter()
                .filter(|o| o.paid && o.country == country && day_of(o.minute) == *day)
                .map(|o| o.cents)
                .sum();
            expected.push(vec![
                day.clone(),
                country.to_string(),
                format!("{}", cents as f64 / 100.0),
            ]);
        }
    }
    assert_rows(&table.rows, &expected, &out);

    // An sql metric joining it with users from a CSV file.
    let out = run(
        &dir,
        &["compute", "pro_orders", "--grain", "day", "--format", "csv"],
    )
    .success();
    let table = Table::parse(&out.stdout).unwrap();
    let expected: Vec<Vec<String>> = days
        .iter()
        .map(|day| {
            let count = rows
                .iter()
                .filter(|o| o.paid && is_pro(o.user_id) && day_of(o.minute) == *day)
                .count();
            vec![day.clone(), count.to_string()]
        })
        .collect();
    assert_rows(&table.rows, &expected, &out);
}

fn assert_rows(actual: &[Vec<String>], expected: &[Vec<String>], out: &Run) {
    assert_eq!(actual.len(), expected.len(), "rows\n{out}");
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            a.len() == e.len() && a.iter().zip(e).all(|(a, e)| cell_matches(e, a)),
            "expected {e:?}, got {a:?}\n{out}"
        );
    }
}

/// The server log's COPY statements on table `table`.
fn copies(db: &Database, table: &str) -> Vec<String> {
    let from = format!("FROM \"public\".\"{table}\"");
    db.log()
        .into_iter()
        .filter(|l| l.contains("COPY (") && l.contains(&from))
        .collect()
}

#[test]
fn filters_and_time_ranges_reach_postgres_as_bound_values() {
    let db = Database::new("pushdown");
    let rows = orders(300);
    create_orders(&db, &rows);
    let dir = metrics_project(&db);
    let out = run(
        &dir,
        &[
            "compute",
            "paid_revenue",
            "--grain",
            "day",
            "--from",
            "2026-03-03",
            "--to",
            "2026-03-04",
            "--where",
            "country = 'FR'",
            "--format",
            "csv",
        ],
    )
    .success();
    let table = Table::parse(&out.stdout).unwrap();
    let expected: Vec<Vec<String>> = ["2026-03-03", "2026-03-04"]
        .iter()
        .map(|day| {
            let cents: i64 = rows
                .iter()
                .filter(|o| o.paid && o.country == "FR" && day_of(o.minute) == *day)
                .map(|o| o.cents)
                .sum();
            vec![day.to_string(), format!("{}", cents as f64 / 100.0)]
        })
        .collect();
    assert_rows(&table.rows, &expected, &out);

    // The server ran the filter, the --where and the range itself, reading each value from a
    // setting bound as a parameter.
    let copies = copies(&db, "orders");
    let scan = copies
        .iter()
        .find(|l| l.contains("\"ordered_at\" >= current_setting("))
        .unwrap_or_else(|| panic!("no ranged COPY in {copies:#?}"));
    for part in [
        "\"country\" = current_setting('lodestar.p",
        "\"status\" = current_setting('lodestar.p",
        "\"ordered_at\" < current_setting('lodestar.p",
        "TO STDOUT (FORMAT binary)",
    ] {
        assert!(scan.contains(part), "{part} in {scan}");
    }
    assert!(!scan.contains("'FR'") && !scan.contains("'paid'"), "{scan}");
    let log = db.log().join("\n");
    assert!(
        log.contains("SELECT set_config('lodestar.p1', $1, true)"),
        "{log}"
    );
    for value in [
        "'FR'",
        "'paid'",
        "'2026-03-03 00:00:00.000000+00'",
        "'2026-03-05 00:00:00.000000+00'",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("DETAIL:  parameters:") && l.contains(value)),
            "{value} bound in\n{log}"
        );
    }
}

#[test]
fn an_injection_attempt_in_a_filter_value_stays_a_value() {
    let db = Database::new("injection");
    let rows = orders(100);
    create_orders(&db, &rows);
    let dir = metrics_project(&db);
    for attempt in ["FR' OR '1'='1", "x'; DROP TABLE orders; --"] {
        let filter = format!("country = '{}'", attempt.replace('\'', "''"));
        let out = run(
            &dir,
            &[
                "compute",
                "paid_revenue",
                "--grain",
                "day",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--where",
                &filter,
                "--format",
                "csv",
            ],
        )
        .success();
        // No country has that name: nothing matches, where an interpolated value would have
        // matched every row (or dropped the table).
        let table = Table::parse(&out.stdout).unwrap();
        let values = table.column("paid_revenue");
        assert!(
            values.len() == 2 && values.iter().all(|v| cell_matches("0", v)),
            "{out}"
        );
    }
    assert_eq!(db.run("SELECT count(*) FROM orders").trim(), "100");
    for copy in copies(&db, "orders") {
        assert!(
            !copy.contains("DROP") && !copy.contains("'1'='1'"),
            "{copy}"
        );
    }
    let log = db.log().join("\n");
    assert!(log.contains("$1 = 'x''; DROP TABLE orders; --'"), "{log}");
}

#[test]
fn a_large_scan_is_split_into_ctid_ranges_over_several_connections() {
    let db = Database::new("parallel");
    db.run(
        "CREATE TABLE events (id int8, v int4, pad text);
         INSERT INTO events SELECT g, g % 97, repeat('x', 60) FROM generate_series(1, 30000) g;",
    );
    let yaml = format!(
        "engine: {{ target_partitions: 4 }}\n{}metrics: {{}}\n",
        source(&db, ", pool_size: 4, pages_per_partition: 20")
    );
    let dir = project(&yaml, &[]);
    let out = run(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n, sum(v) AS s FROM pg.events",
            "--format",
            "csv",
        ],
    )
    .success();
    let sum: i64 = (1..=30000i64).map(|g| g % 97).sum();
    assert_eq!(out.stdout, format!("n,s\n30000,{sum}\n"), "{out}");

    let copies = copies(&db, "events");
    assert_eq!(copies.len(), 4, "{copies:#?}");
    let ranged = copies
        .iter()
        .filter(|c| c.contains("ctid >= '(") || c.contains("ctid < '("))
        .count();
    assert_eq!(ranged, 4, "{copies:#?}");
    // `[pid]` in the log prefix: the ranges were read by several backends, one snapshot.
    let pids: std::collections::HashSet<&str> = copies
        .iter()
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        pids.len() > 1,
        "one connection read every range: {copies:#?}"
    );
    let log = db.log().join("\n");
    assert!(log.contains("SELECT pg_export_snapshot()"), "{log}");
    assert!(log.contains("SET TRANSACTION SNAPSHOT '"), "{log}");

    // A limit is pushed, and read on one connection.
    let before = copies.len();
    run(
        &dir,
        &["sql", "SELECT id FROM pg.events LIMIT 5", "--format", "csv"],
    )
    .success();
    let copies = self::copies(&db, "events");
    let limited = &copies[before..];
    assert_eq!(limited.len(), 1, "{limited:#?}");
    assert!(
        limited[0].contains("LIMIT 5") && !limited[0].contains("ctid"),
        "{limited:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_stream_in_batches() {
    let db = Database::new("stream");
    db.run("CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 50000) g;");
    let dir = project(&format!("{}metrics: {{}}\n", source(&db, "")), &[]);
    let engine = engine(&dir).await;
    // `collect` keeps the batches as the scan produced them.
    let batches = query(&engine, "SELECT id FROM pg.big").await;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let largest = batches.iter().map(RecordBatch::num_rows).max().unwrap_or(0);
    assert_eq!(rows, 50000);
    // Read a batch at a time (DataFusion's batch size), not as one block.
    assert!(
        batches.len() >= 7 && largest <= 8192,
        "{} batches, largest {largest}",
        batches.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_modes_are_honoured() {
    let db = Database::new("tls");
    db.run("CREATE TABLE t AS SELECT 1 AS x;");
    let yaml = format!(
        "sources:
  secure: {{ connector: postgres, url: \"{0}?application_name=lodestar_tls\", tls: require }}
  plain: {{ connector: postgres, url: \"{0}?application_name=lodestar_plain\", tls: disable }}
metrics: {{}}
",
        db.url()
    );
    let dir = project(&yaml, &[]);
    let engine = engine(&dir).await;
    assert_eq!(
        query(&engine, "SELECT x FROM secure.t").await[0].num_rows(),
        1
    );
    // The sources keep their connections open in their pools while the engine lives.
    let ssl = db.run(&format!(
        "SELECT a.application_name || '=' || s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = '{}' AND a.application_name LIKE 'lodestar_%' ORDER BY 1",
        db.name
    ));
    assert_eq!(ssl.trim(), "lodestar_plain=false\nlodestar_tls=true");
    drop(engine);
}

/// A project with source `pg` on `url` (options in `extra`) and metric `orders`, a count of
/// table `orders` by `ts`.
fn tls_project(url: &str, extra: &str) -> TempDir {
    project(
        &format!(
            "sources:\n  pg: {{ connector: postgres, url: \"{url}\"{extra} }}\nmetrics:\n  orders: {{ table: pg.orders, time: ts, measure: count(*) }}\n"
        ),
        &[],
    )
}

/// 48 orders an hour apart from 2026-01-01 10:00: 14, 24 and 10 a day.
fn tls_database(label: &str) -> Database {
    let db = Database::new(label);
    db.run(
        "CREATE TABLE orders AS SELECT TIMESTAMP '2026-01-01 10:00' + i * INTERVAL '1 hour' AS ts FROM generate_series(0, 47) i;",
    );
    db
}

const TLS_ORDERS: &str = "period,orders\n2026-01-01,14\n2026-01-02,24\n2026-01-03,10\n";

/// `sslrootcert` of the cluster's CA: verify-full (the option, or the URL's sslmode) checks
/// the chain and the name `127.0.0.1`, and the metric is computed over the verified session.
#[test]
fn verify_full_with_the_servers_ca_computes_a_metric() {
    let db = tls_database("verify_full");
    let ca = db.cluster.ca_file();
    for (url, extra) in [
        (
            db.url(),
            format!(", tls: verify-full, sslrootcert: \"{}\"", ca.display()),
        ),
        (
            format!("{}?sslmode=verify-full", db.url()),
            format!(", sslrootcert: \"{}\"", ca.display()),
        ),
    ] {
        let dir = tls_project(&url, &extra);
        let out = run(
            &dir,
            &["compute", "orders", "--grain", "day", "--format", "csv"],
        )
        .success();
        assert_eq!(out.stdout, TLS_ORDERS, "{out}");
    }
}

#[test]
fn verify_full_refuses_a_certificate_from_another_ca() {
    let db = tls_database("verify_wrong_ca");
    let scratch = TempDir::new().unwrap();
    let other = scratch.path().join("other-ca.crt");
    crate::postgres_server::other_ca(&other);
    for mode in ["verify-full", "verify-ca"] {
        let dir = tls_project(
            &db.url(),
            &format!(", tls: {mode}, sslrootcert: \"{}\"", other.display()),
        );
        let out = run(&dir, &["validate"]).expect_code(1);
        assert!(
            out.stderr.contains(&format!(
                "lodestar.yaml:2:3: source `pg`: connector `postgres`: cannot connect to PostgreSQL 127.0.0.1:{}/{}",
                db.cluster.port, db.name
            )),
            "{mode}\n{out}"
        );
        assert!(
            out.stderr.contains("invalid peer certificate"),
            "{mode}\n{out}"
        );
        assert!(
            out.stderr
                .contains("hint: the server's certificate is not signed by a trusted authority"),
            "{mode}\n{out}"
        );
        assert!(!out.stderr.contains(PASSWORD), "{mode}\n{out}");
    }
}

/// The certificate names `localhost` and `127.0.0.1`; connecting to 127.0.0.1 under another
/// name (`hostaddr`): verify-full refuses, verify-ca (the chain only) accepts.
#[test]
fn verify_full_refuses_a_host_name_not_in_the_certificate() {
    let db = tls_database("verify_name");
    let url = db.url().replace("@127.0.0.1:", "@wrong-name.invalid:") + "?hostaddr=127.0.0.1";
    let ca = db.cluster.ca_file();
    let dir = tls_project(
        &url,
        &format!(", tls: verify-full, sslrootcert: \"{}\"", ca.display()),
    );
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(
        out.stderr
            .contains("cannot connect to PostgreSQL wrong-name.invalid:"),
        "{out}"
    );
    assert!(out.stderr.contains("not valid for name"), "{out}");
    assert!(
        out.stderr
            .contains("hint: the server's certificate does not name `wrong-name.invalid`"),
        "{out}"
    );
    assert!(!out.stderr.contains(PASSWORD), "{out}");

    let dir = tls_project(
        &url,
        &format!(", tls: verify-ca, sslrootcert: \"{}\"", ca.display()),
    );
    let out = run(
        &dir,
        &["compute", "orders", "--grain", "day", "--format", "csv"],
    )
    .success();
    assert_eq!(out.stdout, TLS_ORDERS, "{out}");
}

/// A server with `ssl = off`: `require` (and the verifying modes) fail rather than fall back
/// to plain text; `prefer` falls back, as documented.
#[test]
fn require_never_falls_back_to_plain_text() {
    let db = Database::new_on(crate::postgres_server::cluster_without_tls(), "plain_only");
    db.run(
        "CREATE TABLE orders AS SELECT TIMESTAMP '2026-01-01 10:00' + i * INTERVAL '1 hour' AS ts FROM generate_series(0, 47) i;",
    );
    // Any CA will do (the server offers no TLS at all), but its file must outlive the loop:
    // the TLS cluster, and its directory, go when the last test holding it lets go.
    let tls_cluster = crate::postgres_server::cluster();
    let ca = tls_cluster.ca_file();
    for extra in [
        ", tls: require".to_string(),
        format!(", tls: verify-full, sslrootcert: \"{}\"", ca.display()),
    ] {
        let mode = &extra;
        let dir = tls_project(&db.url(), &extra);
        let out = run(&dir, &["validate"]).expect_code(1);
        assert!(out.stderr.contains("source `pg`"), "{mode}\n{out}");
        assert!(
            out.stderr.contains("server does not support TLS"),
            "{mode}\n{out}"
        );
        assert!(
            out.stderr
                .contains("hint: the server has TLS turned off and this source requires it"),
            "{mode}\n{out}"
        );
        assert!(!out.stderr.contains(PASSWORD), "{mode}\n{out}");
    }
    let dir = tls_project(&db.url(), ", tls: prefer");
    let out = run(
        &dir,
        &["compute", "orders", "--grain", "day", "--format", "csv"],
    )
    .success();
    assert_eq!(out.stdout, TLS_ORDERS, "{out}");
}

#[test]
fn connection_errors_name_the_source_and_never_the_password() {
    let db = Database::new("errors");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("postgres://lodestar_app:{PASSWORD}@127.0.0.1:{port}/x");
    let dir = project(
        &format!("sources:\n  pg: {{ connector: postgres, url: \"{refused}\" }}\nmetrics: {{}}\n"),
        &[],
    );
    let out = run(&dir, &["validate"]).expect_code(1);
    assert!(
        out.stderr.contains(&format!(
            "lodestar.yaml:2:3: source `pg`: connector `postgres`: cannot connect to PostgreSQL 127.0.0.1:{port}/x (user `lodestar_app`): connection refused"
        )),
        "{out}"
    );
    assert!(out.stderr.contains("hint: is PostgreSQL running"), "{out}");
    assert!(!out.stderr.contains(PASSWORD), "{out}");

    let wrong = "wrong-pw-3c9d71";
    let url = db.url().replace(PASSWORD, wrong);
    let dir = project(
        &format!("sources:\n  pg: {{ connector: postgres, url: \"{url}\" }}\nmetrics: {{}}\n"),
        &[],
    );
    let out = Run::of(
        lodestar_project(&dir.path().join("lodestar.yaml"), ["-vv", "validate"])
            .env("RUST_LOG", "trace"),
    )
    .expect_code(1);
    assert!(
        out.stderr.contains("source `pg`")
            && out
                .stderr
                .contains("password authentication failed for user \"lodestar_app\""),
        "{out}"
    );
    assert!(
        out.stderr.contains("hint: check the user and password"),
        "{out}"
    );
    assert!(
        !out.stderr.contains(wrong) && !out.stderr.contains(PASSWORD),
        "{out}"
    );

    // Nor in the server's log.
    let log = fs_err::read_to_string(db.cluster_log()).unwrap();
    assert!(!log.contains(wrong) && !log.contains(PASSWORD));
}

#[test]
fn a_missing_table_or_schema_is_an_error_naming_the_source() {
    let db = Database::new("missing");
    db.run("CREATE TABLE orders (id int8, at timestamptz);");
    let yaml = format!(
        "{}metrics:\n  m: {{ table: pg.ordres, time: at, measure: count(*) }}\n",
        source(&db, "")
    );
    let out = run(&project(&yaml, &[]), &["validate"]).expect_code(1);
    assert!(
        out.stderr
            .contains("metric `m`: table `pg.ordres` does not exist")
            && out.stderr.contains("did you mean `orders`?")
            && out.stderr.contains("(source `pg` has: orders)"),
        "{out}"
    );
    let yaml = format!(
        "{}metrics: {{}}\n",
        source(&db, ", schemas: [public, analytics]")
    );
    let out = run(&project(&yaml, &[]), &["validate"]).expect_code(1);
    assert!(
        out.stderr.contains("source `pg`: connector `postgres`:")
            && out.stderr.contains("schema `analytics` does not exist"),
        "{out}"
    );
}

#[test]
fn a_connection_lost_mid_query_is_an_error_naming_the_server_and_table() {
    let db = Database::new("dropped");
    // The server ends the scan's own session halfway through the rows.
    db.run(
        "CREATE VIEW doomed AS SELECT g AS n FROM generate_series(1, 100000) g
         WHERE CASE WHEN g = 50000 THEN pg_terminate_backend(pg_backend_pid()) ELSE true END;",
    );
    let dir = project(&format!("{}metrics: {{}}\n", source(&db, "")), &[]);
    let out = run(&dir, &["sql", "SELECT count(*) FROM pg.doomed"]).expect_code(2);
    assert!(
        out.stderr.contains(&format!(
            "PostgreSQL 127.0.0.1:{}/{} (user `lodestar_app`): reading table `public.doomed`: the connection was lost",
            db.cluster.port, db.name
        )),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("hint: the connection to the server was lost mid-query"),
        "{out}"
    );
    assert!(!out.stderr.contains(PASSWORD), "{out}");
}

#[test]
fn values_arrow_cannot_hold_and_timeouts_are_errors_naming_the_column_or_limit() {
    let db = Database::new("values");
    db.run(
        "CREATE TABLE forever (id int4, until timestamp);
         INSERT INTO forever VALUES (1, 'infinity');
         CREATE VIEW slow AS SELECT 1 AS x FROM pg_sleep(3);",
    );
    let dir = project(
        &format!(
            "{}metrics: {{}}\n",
            source(&db, ", statement_timeout: 50ms")
        ),
        &[],
    );
    let out = run(&dir, &["sql", "SELECT * FROM pg.forever"]).expect_code(2);
    assert!(
        out.stderr.contains(
            "reading table `public.forever`: column `until`: a row holds a timestamp of infinity"
        ),
        "{out}"
    );
    assert!(
        out.stderr.contains("hint: map it to NULL in a view"),
        "{out}"
    );
    let out = run(&dir, &["sql", "SELECT * FROM pg.slow"]).expect_code(2);
    assert!(
        out.stderr
            .contains("canceling statement due to statement timeout"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("hint: the statement ran longer than `statement_timeout`"),
        "{out}"
    );
}

#[test]
fn the_connector_is_listed_with_its_options() {
    plugin_dir();
    let out = Run::of(lodestar().args(["connectors", "--format", "json"])).success();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let postgres = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "postgres")
        .unwrap_or_else(|| panic!("no postgres connector\n{out}"));
    assert_eq!(postgres["kind"], "plugin");
    let options: Vec<&str> = postgres["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    for option in [
        "url",
        "schemas",
        "tls",
        "pool_size",
        "statement_timeout",
        "pages_per_partition",
    ] {
        assert!(options.contains(&option), "{option} in {options:?}");
    }
}

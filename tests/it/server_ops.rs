//! `lodestar serve` in operation: the per-query memory limit, the background refresh of cached
//! answers, a graceful stop with a request in flight, and a Postgres-backed project. Expected
//! numbers are hand counts of `tests/fixtures/shop` and of the rows the tests insert.

use std::path::Path;

use serde_json::json;

use crate::postgres_server::{Database, PASSWORD};
use crate::server::{Served, compute_json, http_request, wait_until};
use crate::support::{Run, Scratch, lodestar_project, plugin_dir};

const ADMIN: &str = "admin-token-5e1f";

fn admin_sql(server: &Served, sql: &str) -> crate::server::Response {
    let body = json!({ "sql": sql }).to_string();
    server.post(
        "/api/v1/sql",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        &body,
    )
}

/// Replaces a file at once (write beside, then rename), so the server never reads half of it.
fn replace_file(path: &Path, text: &str) {
    let beside = path.with_extension("partial");
    fs_err::write(&beside, text).unwrap();
    fs_err::rename(&beside, path).unwrap();
}

// ---------------------------------------------------------------- memory limit

#[test]
fn a_query_over_the_memory_limit_gets_507_naming_it_and_the_server_keeps_serving() {
    let server = Served::start_with(
        "shop",
        |_| {},
        &["--enable-sql", "--query-memory-limit", "1MiB"],
        &[("LODESTAR_ADMIN_TOKENS", ADMIN)],
    );
    // A distinct count keeps every value in one hash set: 200,000 integers need more than
    // 1 MiB, and this operator cannot spill.
    let heavy = admin_sql(
        &server,
        "SELECT count(DISTINCT value) AS n FROM range(200000)",
    );
    assert_eq!(heavy.status, 507, "{heavy}");
    let error = &heavy.json()["error"];
    assert_eq!(error["code"], "memory_limit", "{heavy}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("needs more than 1 MiB"),
        "{heavy}"
    );
    assert!(
        error["hint"]
            .as_str()
            .unwrap()
            .contains("--query-memory-limit"),
        "{heavy}"
    );
    // Small questions still fit, right after: a series (hand count) and a small query.
    let series = server.request(
        "/api/v1/metrics/revenue/series?grain=week",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    );
    assert_eq!(series.status, 200, "{series}");
    assert_eq!(
        series.json()["rows"],
        json!([
            {"period": "2026-03-02", "revenue": 60.0},
            {"period": "2026-03-09", "revenue": 90.0}
        ])
    );
    let small = admin_sql(&server, "SELECT count(*) AS n FROM app.orders");
    assert_eq!(small.status, 200, "{small}");
    assert_eq!(small.json()["rows"], json!([{"n": 10}]));
    // The same heavy query fits in the default limit.
    drop(server);
    let roomy = Served::start_with(
        "shop",
        |_| {},
        &["--enable-sql"],
        &[("LODESTAR_ADMIN_TOKENS", ADMIN)],
    );
    let answer = admin_sql(
        &roomy,
        "SELECT count(DISTINCT value) AS n FROM range(200000)",
    );
    assert_eq!(answer.status, 200, "{answer}");
    assert_eq!(answer.json()["rows"], json!([{"n": 200000}]));
}

#[test]
fn a_memory_limit_that_is_not_a_size_is_refused() {
    let project = Scratch::copy_of(&crate::support::test_dir("fixtures").join("shop"));
    let run = Run::of(&mut lodestar_project(
        &project.project(),
        ["serve", "--query-memory-limit", "lots"],
    ))
    // A bad command line is a user error (docs/cli.md#exit-codes).
    .expect_code(1);
    assert!(
        run.stderr
            .contains("`lots` is not a size: write a number with a unit, e.g. 512MiB"),
        "{run}"
    );
}

// ---------------------------------------------------------------- background refresh

#[test]
fn after_a_data_change_cached_answers_are_recomputed_in_the_background() {
    let server = Served::start_with("shop", |_| {}, &["--refresh-interval", "1"], &[]);
    let target = "/api/v1/metrics/revenue/series?grain=week";
    let first = server.get(target);
    assert_eq!(first.status, 200, "{first}");
    assert_eq!(first.header("x-cache"), Some("miss"), "{first}");
    assert_eq!(first.json()["rows"][1]["revenue"], json!(90.0));
    let second = server.get(target);
    assert_eq!(second.header("x-cache"), Some("hit"), "{second}");

    // A new paid order of 5 in the second week: revenue 90 -> 95.
    let orders = server.scratch().path().join("data/orders.csv");
    let mut text = fs_err::read_to_string(&orders).unwrap();
    text.push_str("11,u8,2026-03-13T10:00:00,paid,5.0,DE\n");
    replace_file(&orders, &text);
    wait_until(&server, "cached answers recomputed");

    // The first request after the refresh is a hit, with the new number.
    let after = server.get(target);
    assert_eq!(after.status, 200, "{after}");
    assert_eq!(after.header("x-cache"), Some("hit"), "{after}");
    assert_eq!(after.json()["rows"][1]["revenue"], json!(95.0), "{after}");
    assert_ne!(after.header("etag"), first.header("etag"));
    let metrics = server.get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "lodestar_cache_refreshes_total 1"),
        "{metrics}"
    );
    // Only the two client requests of the series were computed or served by request.
    assert!(
        metrics
            .lines()
            .any(|l| l == "lodestar_cache_misses_total 1"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------- graceful stop

/// Rows of `range(N)` whose value is a multiple of 3, counted and summed: slow enough in a
/// debug build to still be running when the server is told to stop.
const SLOW_ROWS: u64 = 10_000_000;

#[test]
fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0() {
    let mut server = Served::start_with(
        "shop",
        |_| {},
        &["--enable-sql", "--query-timeout", "600"],
        &[
            ("LODESTAR_ADMIN_TOKENS", ADMIN),
            ("RUST_LOG", "lodestar_server=debug"),
        ],
    );
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let body = json!({
            "sql": format!(
                "SELECT count(*) AS n, sum(value) AS total FROM range({SLOW_ROWS}) WHERE value % 3 = 0"
            )
        })
        .to_string();
        http_request(
            addr,
            "POST",
            "/api/v1/sql",
            &[
                ("Authorization", &format!("Bearer {ADMIN}")),
                ("X-Request-Id", "slow-1"),
            ],
            &body,
        )
    });
    // The server has the request (a debug line says so) before it is told to stop.
    wait_for_line(&server, &["id=slow-1", "received"]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
    wait_until(&server, "shutting down");

    // New connections are refused (or closed unanswered) from now on.
    let mut refused = false;
    for _ in 0..400 {
        match http_request(addr, "GET", "/healthz", &[], "") {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    assert!(
        refused,
        "the server kept answering new requests after SIGTERM:\n{}",
        server.log()
    );

    // The request in flight gets its whole answer.
    let answer = slow
        .join()
        .expect("the client thread")
        .unwrap_or_else(|e| panic!("the request in flight failed: {e}\n{}", server.log()));
    assert_eq!(answer.status, 200, "{answer}");
    let multiples = SLOW_ROWS.div_ceil(3);
    let total = 3 * multiples * (multiples - 1) / 2;
    assert_eq!(
        answer.json()["rows"],
        json!([{"n": multiples, "total": total}]),
        "{answer}"
    );
    let exit = server.child.wait().expect("the server's exit status");
    assert_eq!(exit.code(), Some(0), "{}", server.log());
    // It was in flight: the stop was logged before its answer.
    let log = server.final_log();
    let stop = log.find("shutting down").unwrap();
    let answered = log
        .lines()
        .find(|l| l.contains("id=slow-1") && l.contains("answered"))
        .and_then(|l| log.find(l))
        .unwrap_or_else(|| panic!("no answer logged for slow-1:\n{log}"));
    assert!(
        stop < answered,
        "the request finished before the stop:\n{log}"
    );
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Waits (bounded) for a log line holding every one of `parts`.
fn wait_for_line(server: &Served, parts: &[&str]) {
    for _ in 0..2400 {
        if server
            .log()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the server never logged {parts:?}:\n{}", server.log());
}

// ---------------------------------------------------------------- Postgres

/// Paid orders in Postgres and users in a local file, as a deployment mixes them.
fn postgres_project(db: &Database) -> Scratch {
    db.run(
        "CREATE TABLE orders (id int8, ordered_at timestamptz, status text, amount float8, country text);
         INSERT INTO orders VALUES
           (1, '2026-03-02 10:00:00+00', 'paid', 10, 'DE'),
           (2, '2026-03-04 12:30:00+00', 'paid', 20, 'FR'),
           (3, '2026-03-06 18:00:00+00', 'refunded', 50, 'FR'),
           (4, '2026-03-08 23:59:00+00', 'paid', 30, 'DE'),
           (5, '2026-03-09 00:00:00+00', 'paid', 10, 'FR'),
           (6, '2026-03-11 14:00:00+00', 'paid', 25, 'DE');
         CREATE TABLE doomed (id int8, at timestamptz);
         INSERT INTO doomed VALUES (1, '2026-03-02 10:00:00+00');",
    );
    let project = Scratch::empty();
    let yaml = format!(
        "timezone: UTC\nweek_start: monday\nsources:\n  pg: {{ connector: postgres, url: \"{}\" }}\n  app: {{ connector: files, path: data }}\nmetrics:\n  revenue: {{ table: pg.orders, time: ordered_at, measure: sum(amount), filter: \"status = 'paid'\", dimensions: [country], grain: week }}\n  signups: {{ table: app.users, time: signed_up_at, measure: count(*), grain: week }}\n  doomed: {{ table: pg.doomed, time: at, measure: count(*) }}\n",
        db.url()
    );
    fs_err::write(project.project(), yaml).unwrap();
    fs_err::create_dir_all(project.path().join("data")).unwrap();
    fs_err::write(
        project.path().join("data/users.csv"),
        "user_id,signed_up_at\nu1,2026-03-02T09:00:00\nu2,2026-03-03T09:00:00\nu3,2026-03-10T09:00:00\n",
    )
    .unwrap();
    project
}

#[test]
fn a_postgres_backed_project_is_served_and_the_password_never_shows() {
    plugin_dir();
    let db = Database::new("serve");
    let project = postgres_project(&db);
    let project_file = project.project();
    let mut server = Served::start_in(
        project,
        &["--refresh-interval", "1"],
        &[("RUST_LOG", "debug")],
    );
    // By hand: week of 03-02 paid 10 + 20 + 30 = 60; week of 03-09 10 + 25 = 35.
    let revenue = server.json("/api/v1/metrics/revenue/series?grain=week");
    assert_eq!(
        revenue["rows"],
        json!([
            {"period": "2026-03-02", "revenue": 60.0},
            {"period": "2026-03-09", "revenue": 35.0}
        ])
    );
    let by_country = server.json("/api/v1/metrics/revenue/series?grain=week&by=country");
    assert_eq!(
        by_country["rows"],
        compute_json(
            &project_file,
            &["revenue", "--grain", "week", "--by", "country"]
        )
    );
    let signups = server.json("/api/v1/metrics/signups/series?grain=week");
    assert_eq!(
        signups["rows"],
        json!([
            {"period": "2026-03-02", "signups": 2},
            {"period": "2026-03-09", "signups": 1}
        ])
    );
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}");

    // A table dropped under the server: an error naming it, without the password.
    db.run("DROP TABLE doomed;");
    let failed = server.get("/api/v1/metrics/doomed/series?grain=day");
    assert!(failed.status >= 500, "{failed}");
    assert!(failed.text().contains("doomed"), "{failed}");
    assert!(!failed.text().contains(PASSWORD), "{failed}");

    // A new password that is wrong: the reload is refused and the old project keeps serving.
    let wrong = "wrong-pw-77e0b3";
    let text = fs_err::read_to_string(&project_file).unwrap();
    replace_file(&project_file, &text.replace(PASSWORD, wrong));
    wait_until(&server, "project reload refused");
    assert!(
        server.log().contains("password authentication failed"),
        "{}",
        server.log()
    );
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}");
    assert!(!ready.text().contains(PASSWORD) && !ready.text().contains(wrong));
    assert_eq!(
        server.json("/api/v1/metrics/revenue/series?grain=week")["rows"][1]["revenue"],
        json!(35.0)
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    let log = server.final_log();
    assert!(
        !log.contains(PASSWORD) && !log.contains(wrong),
        "a password is in the log:\n{log}"
    );

    // Started with the wrong password, the server does not start, and says why without it.
    let run = Run::of(&mut lodestar_project(
        &project_file,
        ["serve", "--listen", "127.0.0.1:0"],
    ))
    .expect_code(1);
    assert!(
        run.stderr.contains("source `pg`") && run.stderr.contains("password authentication failed"),
        "{run}"
    );
    assert!(!run.stderr.contains("listening on"), "{run}");
    assert!(
        !run.stderr.contains(wrong) && !run.stderr.contains(PASSWORD),
        "{run}"
    );
}

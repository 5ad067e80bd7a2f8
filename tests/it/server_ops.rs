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

/// 200,000 distinct integer keys, 1,000,003 apart.
const HEAVY: &str = "SELECT count(DISTINCT value * 1000003) AS n FROM range(200000)";

#[test]
fn a_query_over_the_memory_limit_gets_507_naming_it_and_the_server_keeps_serving() {
    let server = Served::start_with(
        "shop",
        |_| {},
        &["--enable-sql", "--query-memory-limit", "1MiB"],
        &[("LODESTAR_ADMIN_TOKENS", ADMIN)],
    );
    // A distinct count keeps every value in one set that cannot spill. Integer keys are
    // counted by bitmap, which holds 200,000 keys far apart (a container each) in some 10 MiB:
    // more than 1 MiB, and accounted as such.
    let heavy = admin_sql(&server, HEAVY);
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
    let answer = admin_sql(&roomy, HEAVY);
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

// ---------------------------------------------------------------- hardening: stopping

/// `kill -SIG PID`.
fn signal(server: &Served, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &server.child.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
}

/// Waits for the server to exit, at most `seconds` (a generous bound: "it did stop").
fn exits_within(server: &mut Served, seconds: u64) -> std::process::ExitStatus {
    for _ in 0..seconds * 20 {
        if let Some(status) = server.child.try_wait().expect("the server's status") {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "the server had not exited {seconds} s after being told to stop:\n{}",
        server.log()
    );
}

#[test]
fn after_sigterm_a_request_still_running_at_the_shutdown_timeout_is_cancelled_and_the_process_exits()
 {
    let mut server = Served::start_with(
        "shop",
        |_| {},
        &[
            "--enable-sql",
            "--query-timeout",
            "3600",
            "--shutdown-timeout",
            "1",
        ],
        &[
            ("LODESTAR_ADMIN_TOKENS", ADMIN),
            ("RUST_LOG", "lodestar_server=debug"),
        ],
    );
    let addr = server.addr;
    // Ten billion rows: hours in any build, so still running at the deadline.
    let stuck = std::thread::spawn(move || {
        let body = json!({
            "sql": "SELECT count(*) AS n FROM range(10000000000) WHERE value % 7 = 3"
        })
        .to_string();
        http_request(
            addr,
            "POST",
            "/api/v1/sql",
            &[
                ("Authorization", &format!("Bearer {ADMIN}")),
                ("X-Request-Id", "stuck-1"),
            ],
            &body,
        )
    });
    wait_for_line(&server, &["id=stuck-1", "received"]);
    signal(&server, "TERM");
    let exit = exits_within(&mut server, 60);
    assert_eq!(exit.code(), Some(0), "{}", server.log());
    let log = server.final_log();
    assert!(
        log.contains("stopped after the shutdown timeout of 1 s: 1 request in flight cancelled"),
        "{log}"
    );
    // The client sees its connection closed without an answer.
    let answer = stuck.join().expect("the client thread");
    assert!(answer.is_err(), "{answer:?}");
}

#[test]
fn a_client_that_sends_half_its_headers_is_disconnected_and_does_not_hold_up_a_stop() {
    use std::io::{Read, Write};
    let mut server = Served::start_with("shop", |_| {}, &["--header-timeout", "1"], &[]);
    let mut half = std::net::TcpStream::connect(server.addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: ")
        .unwrap();
    half.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    // Ends (the server closed the connection) long before the read timeout.
    half.read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("the half request was not disconnected: {e}"));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // Meanwhile and after, the server answers.
    assert_eq!(server.get("/healthz").status, 200);

    // A stop is not held up by a half-sent request either.
    let mut pending = std::net::TcpStream::connect(server.addr).unwrap();
    pending.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    signal(&server, "TERM");
    let exit = exits_within(&mut server, 30);
    assert_eq!(exit.code(), Some(0), "{}", server.log());
    drop(pending);
}

#[test]
fn a_keep_alive_connection_left_idle_is_closed_after_the_header_timeout() {
    use std::io::{Read, Write};
    let server = Served::start_with("shop", |_| {}, &["--header-timeout", "1"], &[]);
    let mut idle = std::net::TcpStream::connect(server.addr).unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // The answer comes on a connection kept alive; then, idle, the server closes it: the
    // read ends instead of running into its own 30 s timeout (an error).
    let mut answer = Vec::new();
    idle.read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("the idle connection was not closed: {e}"));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "the server did not keep the connection alive: {answer}"
    );
}

// ---------------------------------------------------------------- hardening: HTTP hygiene

#[test]
fn connections_past_the_cap_wait_and_are_served_once_one_closes() {
    use std::io::{Read, Write};
    let server = Served::start_with(
        "shop",
        |_| {},
        &["--max-connections", "2", "--header-timeout", "600"],
        &[],
    );
    // Two idle connections take both places.
    let first = std::net::TcpStream::connect(server.addr).unwrap();
    let second = std::net::TcpStream::connect(server.addr).unwrap();
    // A third connection is made (the kernel queues it) but not served.
    let mut third = std::net::TcpStream::connect(server.addr).unwrap();
    third
        .write_all(
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .unwrap();
    third
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut buffer = [0u8; 64];
    let early = third.read(&mut buffer);
    assert!(
        early.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "a connection past the cap was served: {early:?}"
    );
    // One place frees up: the waiting request is answered.
    drop(first);
    third
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    third.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn a_body_over_1_mib_gets_413_and_a_url_over_8_kib_gets_414() {
    use std::io::{Read, Write};
    let server = Served::start_with(
        "shop",
        |_| {},
        &["--enable-sql"],
        &[("LODESTAR_ADMIN_TOKENS", ADMIN)],
    );
    // A 2 MiB body, declared: refused before it is read.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        2 << 20
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    let body: serde_json::Value =
        serde_json::from_str(&raw[raw.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"]["code"], "too_large", "{raw}");
    assert_eq!(
        body["error"]["message"],
        "the request body is 2097152 bytes; this server reads bodies of at most 1 MiB"
    );

    // A 2 MiB body sent whole, in chunks (no length declared): 413 once 1 MiB is read.
    let sql = format!("{{\"sql\": \"SELECT 1 AS n -- {}\"}}", "x".repeat(2 << 20));
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // The server may stop reading once it has refused: later writes may fail.
        for chunk in sql.as_bytes().chunks(64 << 10) {
            let frame = [
                format!("{:x}\r\n", chunk.len()).as_bytes(),
                chunk,
                &b"\r\n"[..],
            ]
            .concat();
            if writer.write_all(&frame).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    sender.join().unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("\"code\":\"too_large\""), "{raw}");

    // A 20 KiB URL.
    let long = format!(
        "/api/v1/metrics/revenue/series?grain=week&filter={}",
        "a".repeat(20 << 10)
    );
    let answer = server.request(&long, &[("Authorization", &format!("Bearer {ADMIN}"))]);
    assert_eq!(answer.status, 414, "{answer}");
    assert_eq!(answer.json()["error"]["code"], "uri_too_long");
    assert!(
        answer
            .error_message()
            .contains("this server reads URLs of at most 8 KiB"),
        "{answer}"
    );
    // The server goes on.
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn without_tokens_a_request_for_another_host_name_is_refused_421() {
    let server = Served::start_with("shop", |_| {}, &[], &[]);
    let port = server.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
    ] {
        let answer = server.request("/api/v1/metrics", &[("Host", &host)]);
        assert_eq!(answer.status, 200, "Host: {host}\n{answer}");
    }
    // A DNS-rebinding page: its own name, resolving to 127.0.0.1.
    let answer = server.request(
        "/api/v1/metrics",
        &[("Host", &format!("evil.example:{port}"))],
    );
    assert_eq!(answer.status, 421, "{answer}");
    assert_eq!(answer.json()["error"]["code"], "misdirected");
    assert!(
        answer.error_message().contains(&format!(
            "`Host: evil.example:{port}` does not name this server; without tokens this server answers only requests addressed to localhost, 127.0.0.1 or [::1]"
        )),
        "{answer}"
    );
    // With tokens the token protects the server, whatever name it is called by.
    drop(server);
    let guarded = Served::start_with("shop", |_| {}, &[], &[("LODESTAR_READ_TOKENS", "r-1")]);
    let answer = guarded.request(
        "/api/v1/metrics",
        &[
            ("Host", "metrics.example.com"),
            ("Authorization", "Bearer r-1"),
        ],
    );
    assert_eq!(answer.status, 200, "{answer}");
}

#[test]
fn a_bad_cors_origin_stops_the_server_at_start_naming_it() {
    let project = Scratch::copy_of(&crate::support::test_dir("fixtures").join("shop"));
    for (origin, reason) in [
        ("dash.example.com", "it has no scheme"),
        ("https://dash.example.com/", "an origin has no path"),
    ] {
        let run = Run::of(&mut lodestar_project(
            &project.project(),
            ["serve", "--listen", "127.0.0.1:0", "--cors-origin", origin],
        ))
        // A bad command line is a user error (docs/cli.md#exit-codes).
        .expect_code(1);
        assert!(
            run.stderr.contains(&format!(
                "--cors-origin `{origin}` is not an origin: {reason}"
            )),
            "{run}"
        );
        assert!(!run.stderr.contains("listening on"), "{run}");
    }
}

// ---------------------------------------------------------------- hardening: fail closed

#[test]
fn a_tokens_file_without_tokens_stops_the_server_at_start_naming_it() {
    let project = Scratch::copy_of(&crate::support::test_dir("fixtures").join("shop"));
    let tokens = project.path().join("tokens");
    fs_err::write(&tokens, "# nobody yet\n\n").unwrap();
    let run = Run::of(
        lodestar_project(
            &project.project(),
            ["serve", "--listen", "127.0.0.1:0", "--tokens-file"],
        )
        .arg(&tokens),
    )
    .expect_code(1);
    assert!(
        run.stderr.contains(&format!(
            "the tokens file {} holds no token: it would turn authentication off",
            tokens.display()
        )),
        "{run}"
    );
    assert!(!run.stderr.contains("listening on"), "{run}");
}

#[test]
fn without_tokens_only_loopback_is_served_unless_anonymous_is_allowed() {
    let project = Scratch::copy_of(&crate::support::test_dir("fixtures").join("shop"));
    let mut command = lodestar_project(&project.project(), ["serve", "--listen", "0.0.0.0:0"]);
    command.env_remove("LODESTAR_READ_TOKENS");
    command.env_remove("LODESTAR_ADMIN_TOKENS");
    command.env_remove("LODESTAR_TOKENS_FILE");
    let run = Run::of(&mut command).expect_code(1);
    assert!(
        run.stderr.contains(
            "no API tokens are configured, so the server listens on loopback addresses only, and 0.0.0.0:0 is not one"
        ),
        "{run}"
    );
    assert!(run.stderr.contains("--allow-anonymous"), "{run}");
    assert!(!run.stderr.contains("listening on"), "{run}");

    // Explicitly allowed, it serves (the test talks to it on loopback).
    let mut command = lodestar_project(
        &project.project(),
        ["serve", "--listen", "0.0.0.0:0", "--allow-anonymous"],
    );
    command.env_remove("LODESTAR_READ_TOKENS");
    command.env_remove("LODESTAR_ADMIN_TOKENS");
    command.env_remove("LODESTAR_TOKENS_FILE");
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start `lodestar serve`");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut port = None;
    let mut lines = std::io::BufRead::lines(stderr);
    for line in lines.by_ref().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if let Some(addr) = line.split("listening on http://").nth(1) {
            port = addr
                .trim()
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.port());
            break;
        }
    }
    // Keep reading its log: a server whose stderr is closed cannot log its answers.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let port = port.unwrap_or_else(|| panic!("the server did not start:\n{seen}"));
    assert!(seen.contains("--allow-anonymous is given"), "{seen}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let health = http_request(addr, "GET", "/healthz", &[], "");
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
    assert_eq!(health.expect("GET /healthz").status, 200);
}

#[test]
fn sighup_reloads_the_tokens_file_so_a_removed_token_stops_working() {
    let keep = "keep-token-81c2";
    let revoke = "revoke-token-4d7a";
    let line =
        |token: &str, label: &str| format!("read {} {label}\n", crate::server::sha256_hex(token));
    let dir = Scratch::empty();
    let tokens = dir.path().join("tokens");
    fs_err::write(
        &tokens,
        format!("{}{}", line(keep, "kept"), line(revoke, "revoked")),
    )
    .unwrap();
    let tokens_arg = tokens.to_str().unwrap().to_string();
    let server = Served::start_with(
        "shop",
        |_| {},
        &["--tokens-file", &tokens_arg, "--refresh-interval", "3600"],
        &[],
    );
    let status = |token: &str| {
        server
            .request(
                "/api/v1/metrics",
                &[("Authorization", &format!("Bearer {token}"))],
            )
            .status
    };
    assert_eq!(status(keep), 200);
    assert_eq!(status(revoke), 200);

    replace_file(&tokens, &line(keep, "kept"));
    signal(&server, "HUP");
    wait_until(&server, "tokens reloaded");
    let refused = server.request(
        "/api/v1/metrics",
        &[("Authorization", &format!("Bearer {revoke}"))],
    );
    assert_eq!(refused.status, 401, "{refused}");
    assert_eq!(refused.json()["error"]["code"], "unauthorized");
    assert_eq!(status(keep), 200);

    // A file emptied by mistake is refused: the previous tokens stay.
    replace_file(&tokens, "# rotating\n");
    signal(&server, "HUP");
    wait_until(&server, "tokens reload refused");
    assert!(server.log().contains("holds no token"), "{}", server.log());
    assert_eq!(status(keep), 200);
    assert_eq!(status(revoke), 401);
}

// ---------------------------------------------------------------- hardening: answer sizes

#[test]
fn an_sql_answer_past_the_row_cap_is_stopped_with_413() {
    let server = Served::start_with(
        "shop",
        |_| {},
        &["--enable-sql", "--sql-max-rows", "1000"],
        &[("LODESTAR_ADMIN_TOKENS", ADMIN)],
    );
    let big = admin_sql(&server, "SELECT value FROM range(1000000)");
    assert_eq!(big.status, 413, "{big}");
    let error = &big.json()["error"];
    assert_eq!(error["code"], "too_large", "{big}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the query returns more than 1000 rows"),
        "{big}"
    );
    assert!(
        error["hint"].as_str().unwrap().contains("--sql-max-rows"),
        "{big}"
    );
    let fits = admin_sql(&server, "SELECT value FROM range(1000)");
    assert_eq!(fits.status, 200, "{fits}");
    assert_eq!(fits.json()["rows"].as_array().unwrap().len(), 1000);

    // The byte cap: 2,000 rows of a 1 KiB string are about 2 MiB.
    drop(server);
    let server = Served::start_with(
        "shop",
        |_| {},
        &["--enable-sql", "--sql-max-bytes", "1MiB"],
        &[("LODESTAR_ADMIN_TOKENS", ADMIN)],
    );
    let wide = admin_sql(&server, "SELECT repeat('x', 1024) AS s FROM range(2000)");
    assert_eq!(wide.status, 413, "{wide}");
    assert!(
        wide.error_message()
            .contains("the query's answer holds more than 1 MiB of data"),
        "{wide}"
    );
}

#[test]
fn an_answer_larger_than_a_quarter_of_the_cache_is_served_uncached() {
    let server = Served::start_with("shop", |_| {}, &["--answer-cache-size", "8KiB"], &[]);
    // The metric list (several KiB of definitions) is over 2 KiB: computed each time.
    for _ in 0..2 {
        let list = server.get("/api/v1/metrics");
        assert_eq!(list.status, 200, "{list}");
        assert!(
            list.body.len() > 2048,
            "the list is {} bytes",
            list.body.len()
        );
        assert_eq!(list.header("x-cache"), Some("miss"), "{list}");
        assert_eq!(list.header("etag"), None, "{list}");
        assert_eq!(list.json()["north_stars"], json!(["revenue"]));
    }
    // A small answer is kept.
    let target = "/api/v1/metrics/revenue/series?grain=week";
    assert_eq!(server.get(target).header("x-cache"), Some("miss"));
    assert_eq!(server.get(target).header("x-cache"), Some("hit"));
}

#[test]
fn metrics_scrapes_show_the_last_computed_north_stars_without_computing() {
    let server = Served::start_with("shop", |_| {}, &["--refresh-interval", "3600"], &[]);
    let line = |text: &str, prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
            .to_string()
    };
    let first = server.get("/metrics").text();
    let second = server.get("/metrics").text();
    // By hand: the last complete week's revenue is 90.
    assert_eq!(
        line(&second, "lodestar_north_star_value{"),
        "lodestar_north_star_value{metric=\"revenue\",grain=\"week\"} 90"
    );
    // One computation for both scrapes: the same duration, and an age.
    assert_eq!(
        line(&first, "lodestar_north_star_query_seconds "),
        line(&second, "lodestar_north_star_query_seconds ")
    );
    let age: f64 = line(&second, "lodestar_north_star_age_seconds ")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(age >= 0.0, "{second}");
}

//! The `amplitude` connector plugin, loaded from its shared library by the `lodestar` binary:
//! the Export API against a real HTTP server on a loopback port (`lodestar_testkit::amplitude`,
//! serving zip archives of gzipped JSON lines, checking basic auth, answering 404/400/429/504
//! when asked), export files on disk (zip archives and hourly files), and Amplitude's S3
//! export in the in-process S3 server of the `s3` tests.
//!
//! Fixture exports are built here in Amplitude's exact layout
//! (`<project_id>/<project_id>_<YYYY-MM-DD>_<H>#<n>.json.gz`, by upload hour, several parts
//! an hour, with retried duplicates and late uploads). Expected numbers are computed here from
//! the events written, never by Lodestar.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use chrono::{Duration, NaiveDate, NaiveDateTime, Timelike};
use flate2::Compression;
use flate2::write::GzEncoder;
use lodestar_testkit::amplitude::{self as export_server, API_KEY, ExportServer, SECRET_KEY};
use lodestar_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY as S3_SECRET};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{Run, Table, lodestar_project, plugin_dir};

const PROJECT: &str = "187520";

/// One event of the fixture history.
#[derive(Debug, Clone)]
struct Event {
    i: usize,
    event_time: NaiveDateTime,
    upload: NaiveDateTime,
    user_id: Option<String>,
    device_id: String,
    insert_id: String,
    event_type: &'static str,
    platform: &'static str,
    plan: &'static str,
}

impl Event {
    /// Who counts as a user: the user id, else the device id.
    fn distinct(&self) -> String {
        self.user_id
            .clone()
            .unwrap_or_else(|| self.device_id.clone())
    }
}

fn monday_jan_6() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 1, 6)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

/// 500 events over the three weeks from Monday 2025-01-06, by formula. Every 23rd is uploaded
/// 30 hours late (the others within the hour).
fn history() -> Vec<Event> {
    (0..500usize)
        .map(|i| {
            let minutes = (i * 59 + (i * 17) % 40) as i64;
            let event_time = monday_jan_6()
                + Duration::minutes(minutes)
                + Duration::milliseconds(((i * 137) % 1000) as i64);
            let delay = if i.is_multiple_of(23) {
                Duration::hours(30)
            } else {
                Duration::seconds((i % 50) as i64 + 1)
            };
            Event {
                i,
                event_time,
                upload: event_time + delay,
                user_id: (!i.is_multiple_of(9)).then(|| format!("user-{}", (i * 7) % 37)),
                device_id: format!("device-{}", (i * 11) % 45),
                insert_id: format!("ins-{i:05}"),
                event_type: ["Open", "View", "Purchase"][i % 3],
                platform: ["iOS", "Android", "Web"][(i / 2) % 3],
                plan: if i.is_multiple_of(4) { "pro" } else { "free" },
            }
        })
        .collect()
}

/// A timestamp in one of the three spellings exports use.
fn spell(t: NaiveDateTime, style: usize) -> String {
    match style % 3 {
        0 => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        1 => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
    }
}

/// The export line of an event, uploaded at `upload`.
fn line(e: &Event, upload: NaiveDateTime) -> String {
    let mut value = json!({
        "event_type": e.event_type,
        "user_id": e.user_id,
        "device_id": e.device_id,
        "$insert_id": e.insert_id,
        "amplitude_id": 9_000_000 + e.i,
        "session_id": if e.i.is_multiple_of(5) { -1 } else { 1_700_000_000_000i64 + (e.i / 10) as i64 },
        "client_event_time": spell(e.event_time, e.i),
        "server_received_time": spell(upload, e.i + 1),
        "server_upload_time": spell(upload, e.i + 2),
        "client_upload_time": spell(upload, e.i),
        "processed_time": spell(upload, e.i),
        "user_creation_time": null,
        "platform": e.platform,
        "os_name": if e.platform == "Web" { "Chrome" } else { e.platform },
        "country": "Germany",
        "city": "Berlin",
        "language": "German",
        "version_name": "1.4.2",
        "sample_rate": null,
        "event_properties": { "plan": e.plan, "step": e.i % 7 },
        "user_properties": {},
        "group_properties": {},
        "groups": {},
        "app": PROJECT.parse::<i64>().unwrap(),
        "uuid": format!("00000000-0000-0000-0000-{:012}", e.i),
    });
    // Some lines have no `event_time`: the connector falls back to `client_event_time`.
    if !e.i.is_multiple_of(13) {
        value["event_time"] = json!(spell(e.event_time, e.i));
    }
    value.to_string()
}

fn gzip(lines: &[String]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap()
}

/// The start of the hour of `t`.
fn hour_of(t: NaiveDateTime) -> NaiveDateTime {
    t.date().and_hms_opt(t.hour(), 0, 0).unwrap()
}

/// Amplitude's name of part `n` of an hour: `<project>/<project>_<date>_<H>#<n>.json.gz`.
fn entry_name(hour: NaiveDateTime, n: usize) -> String {
    format!(
        "{PROJECT}/{PROJECT}_{}_{}#{n}.json.gz",
        hour.date(),
        hour.hour()
    )
}

/// The hourly files of `events` by upload hour, at most four lines a part. Every 25th event
/// is also sent again two hours later (a retry: same device and insert id), which
/// deduplication must drop. Entry name to (hour, gzipped bytes).
fn hourly_files(events: &[Event]) -> BTreeMap<String, (NaiveDateTime, Vec<u8>)> {
    let mut by_hour: BTreeMap<NaiveDateTime, Vec<String>> = BTreeMap::new();
    for e in events {
        by_hour
            .entry(hour_of(e.upload))
            .or_default()
            .push(line(e, e.upload));
        if e.i.is_multiple_of(25) {
            let again = e.upload + Duration::hours(2);
            by_hour
                .entry(hour_of(again))
                .or_default()
                .push(line(e, again));
        }
    }
    let mut files = BTreeMap::new();
    for (hour, lines) in by_hour {
        for (n, part) in lines.chunks(4).enumerate() {
            files.insert(entry_name(hour, n), (hour, gzip(part)));
        }
    }
    files
}

/// Per Monday-based week of `[from, to)` (days): (weekly active users, iOS events), counted
/// here from the events.
fn expected_weeks(events: &[&Event], from: NaiveDate, weeks: usize) -> Vec<Vec<String>> {
    (0..weeks)
        .map(|w| {
            let start = (from + Duration::days(7 * w as i64))
                .and_hms_opt(0, 0, 0)
                .unwrap();
            let end = start + Duration::days(7);
            let in_week: Vec<&&Event> = events
                .iter()
                .filter(|e| start <= e.event_time && e.event_time < end)
                .collect();
            let users: BTreeSet<String> = in_week.iter().map(|e| e.distinct()).collect();
            let ios = in_week.iter().filter(|e| e.platform == "iOS").count();
            vec![
                start.date().to_string(),
                users.len().to_string(),
                ios.to_string(),
            ]
        })
        .collect()
}

const METRICS: &str = "\
metrics:
  weekly_active_users:
    table: amp.events
    time: event_time
    measure: count(distinct distinct_id)
    grain: week
  ios_events:
    table: amp.events
    time: event_time
    measure: count(*)
    filter: platform = 'iOS'
";

/// A project with source `amp` (`connector: amplitude`) and the `options` lines (YAML,
/// indented four spaces).
fn project(options: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lodestar-amplitude-project-")
        .tempdir()
        .unwrap();
    let yaml = format!("sources:\n  amp:\n    connector: amplitude\n{options}{METRICS}");
    fs_err::write(dir.path().join("lodestar.yaml"), yaml).unwrap();
    dir
}

/// API options for `server`, the secret through `${ENV}`, caching under `cache`.
fn api_options(server: &ExportServer, cache: &Path, extra: &str) -> String {
    format!(
        "    api:\n      api_key: {API_KEY}\n      secret_key: ${{LODESTAR_TEST_AMP_SECRET}}\n      base_url: {}\n      cache_dir: {}\n      backoff_ms: 1\n{extra}    late_hours: 48\n",
        server.base_url(),
        cache.display()
    )
}

fn run_with(dir: &TempDir, secret: &str, args: &[&str]) -> Run {
    plugin_dir();
    let mut cmd = lodestar_project(&dir.path().join("lodestar.yaml"), args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("LODESTAR_TEST_AMP_SECRET", secret)
        .env("LODESTAR_TEST_S3_KEY", ACCESS_KEY)
        .env("LODESTAR_TEST_S3_SECRET", S3_SECRET);
    Run::of(&mut cmd)
}

fn run(dir: &TempDir, args: &[&str]) -> Run {
    run_with(dir, SECRET_KEY, args)
}

fn csv(run: &Run) -> Table {
    Table::parse(&run.stdout).unwrap_or_else(|e| panic!("not CSV: {e}\n{run}"))
}

/// `lodestar compute weekly_active_users ios_events` by week over `[from, to]`.
fn compute_weeks(dir: &TempDir, from: &str, to: &str) -> Run {
    run(
        dir,
        &[
            "compute",
            "weekly_active_users",
            "ios_events",
            "--grain",
            "week",
            "--from",
            from,
            "--to",
            to,
            "--format",
            "csv",
        ],
    )
}

fn assert_weeks(out: &Run, expected: &[Vec<String>]) {
    let table = csv(out);
    assert_eq!(
        table.header,
        ["period", "weekly_active_users", "ios_events"],
        "{out}"
    );
    assert_eq!(table.rows, expected, "{out}");
}

/// One number of a one-row SQL answer.
fn sql_number(dir: &TempDir, query: &str) -> i64 {
    let out = run(dir, &["sql", query, "--format", "csv"]).success();
    let table = csv(&out);
    table.rows[0][0]
        .parse()
        .unwrap_or_else(|_| panic!("not a number\n{out}"))
}

fn server_with_history(events: &[Event]) -> ExportServer {
    let server = ExportServer::start();
    for (name, (hour, gz)) in hourly_files(events) {
        server.add(&name, hour, gz);
    }
    server
}

#[test]
fn weekly_active_users_through_the_export_api_then_from_the_cache() {
    let events = history();
    let server = server_with_history(&events);
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(&server, cache.path(), ""));
    let all: Vec<&Event> = events.iter().collect();
    let jan_6 = monday_jan_6().date();

    let out = compute_weeks(&dir, "2025-01-06", "2025-01-19").success();
    assert_weeks(&out, &expected_weeks(&all, jan_6, 2));
    let first = server.log();
    assert!(!first.is_empty(), "the export was fetched");
    assert!(
        first.iter().all(|s| s.status == 200 || s.status == 404),
        "{first:?}"
    );
    // Two weeks and the late hours after them: one request, the range of the query.
    assert_eq!(first[0].start, "20250106T00", "{first:?}");
    assert_eq!(first.last().unwrap().end, "20250121T23", "{first:?}");

    // A second run reads the cache only.
    server.clear_log();
    let again = compute_weeks(&dir, "2025-01-06", "2025-01-19").success();
    assert_eq!(again.stdout, out.stdout);
    assert_eq!(server.log(), [], "the second run downloads nothing");

    // The third week fetches only the hours not cached yet.
    let out = compute_weeks(&dir, "2025-01-20", "2025-01-26").success();
    assert_weeks(&out, &expected_weeks(&all, jan_6 + Duration::days(14), 1));
    let log = server.log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|s| s.start.as_str() >= "20250122T00"),
        "only hours after those cached are asked for: {log:?}"
    );

    // No secret in the cache's paths.
    let mut stack = vec![cache.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs_err::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            assert!(!path.to_string_lossy().contains(SECRET_KEY));
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
}

#[test]
fn export_api_answers_404_400_429_and_504() {
    let events = history();
    let all: Vec<&Event> = events.iter().collect();
    let day = |d: u32| {
        format!(
            "SELECT count(*) FROM amp.events WHERE event_time >= TIMESTAMP '2025-01-{d:02} 00:00:00' \
             AND event_time < TIMESTAMP '2025-01-{:02} 00:00:00'",
            d + 1
        )
    };
    let count_day = |d: u32| {
        let start = NaiveDate::from_ymd_opt(2025, 1, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        all.iter()
            .filter(|e| start <= e.event_time && e.event_time < start + Duration::days(1))
            .count() as i64
    };

    // 404: no data in the range is an empty result.
    let server = server_with_history(&events);
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(&server, cache.path(), ""));
    assert_eq!(sql_number(&dir, &day(2)), 0);
    assert!(
        server.log().iter().any(|s| s.status == 404),
        "{:?}",
        server.log()
    );

    // 429 twice: backed off and retried.
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(&server, cache.path(), ""));
    server.clear_log();
    server.answer_next(&[429, 429]);
    assert_eq!(sql_number(&dir, &day(8)), count_day(8));
    let statuses: Vec<u16> = server.log().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 429, 200]);

    // 504: asked again as two halves.
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(&server, cache.path(), ""));
    server.clear_log();
    server.answer_next(&[504]);
    assert_eq!(sql_number(&dir, &day(9)), count_day(9));
    let log = server.log();
    assert_eq!(log[0].status, 504, "{log:?}");
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        (log[1].start.as_str(), log[2].end.as_str()),
        (log[0].start.as_str(), log[0].end.as_str()),
        "the halves cover the range: {log:?}"
    );
    assert!(log[1].end < log[2].start, "{log:?}");

    // 400 (an export over 4 GB) for anything over 12 hours: split until it fits.
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(&server, cache.path(), ""));
    server.clear_log();
    server.refuse_ranges_over(12);
    assert_eq!(sql_number(&dir, &day(10)), count_day(10));
    let log = server.log();
    assert!(log.iter().any(|s| s.status == 400), "{log:?}");
    assert!(
        log.iter()
            .filter(|s| s.status == 200)
            .all(|s| hours_between(&s.start, &s.end) <= 12),
        "{log:?}"
    );

    // 429 beyond the retries allowed: an error saying so.
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(
        &server,
        cache.path(),
        "      max_retries: 1\n",
    ));
    server.answer_next(&[429, 429]);
    let out = run(&dir, &["sql", &day(11), "--format", "csv"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("429"), "{out}");
    assert!(out.stderr.contains("max_retries"), "{out}");
}

/// `SELECT count(*)` of the events of 2025-01-`d` (UTC).
fn day_query(d: u32) -> String {
    format!(
        "SELECT count(*) FROM amp.events WHERE event_time >= TIMESTAMP '2025-01-{d:02} 00:00:00' \
         AND event_time < TIMESTAMP '2025-01-{:02} 00:00:00'",
        d + 1
    )
}

fn count_day(events: &[Event], d: u32) -> i64 {
    let start = NaiveDate::from_ymd_opt(2025, 1, d)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    events
        .iter()
        .filter(|e| start <= e.event_time && e.event_time < start + Duration::days(1))
        .count() as i64
}

#[test]
fn export_api_server_errors_are_retried_until_it_answers() {
    let events = history();
    let server = server_with_history(&events);
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(&server, cache.path(), ""));
    server.answer_next(&[500, 502, 503]);
    assert_eq!(sql_number(&dir, &day_query(8)), count_day(&events, 8));
    let statuses: Vec<u16> = server.log().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [500, 502, 503, 200]);
}

/// A server asking to come back in an hour is asked again after `max_retry_wait_ms`.
#[test]
fn a_long_retry_after_is_capped() {
    let events = history();
    let server = server_with_history(&events);
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(
        &server,
        cache.path(),
        "      max_retry_wait_ms: 200\n",
    ));
    server.retry_after("3600");
    server.answer_next(&[429, 503]);
    // The binary and the plugins first, so that the clock counts only the query.
    plugin_dir();
    let started = std::time::Instant::now();
    assert_eq!(sql_number(&dir, &day_query(8)), count_day(&events, 8));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(600),
        "waited the Retry-After"
    );
    let statuses: Vec<u16> = server.log().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 503, 200]);
}

#[test]
fn server_errors_beyond_the_retries_name_the_hours_and_the_status() {
    let events = history();
    let server = server_with_history(&events);
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(
        &server,
        cache.path(),
        "      max_retries: 2\n",
    ));
    server.answer_next(&[503, 502, 503]);
    let out = run(&dir, &["sql", &day_query(11), "--format", "csv"]).expect_code(2);
    let statuses: Vec<u16> = server.log().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 502, 503], "three attempts, then no more");
    assert!(
        out.stderr.contains("failed for the hours 20250111T00 to "),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("after 3 attempts; the last one answered 503 Service Unavailable"),
        "{out}"
    );
    assert!(out.stderr.contains("hint: "), "{out}");
    assert!(
        out.stderr.contains("raise `api.max_retries` (now 2)"),
        "{out}"
    );
    assert!(!out.stderr.contains(SECRET_KEY), "{out}");
}

fn hours_between(start: &str, end: &str) -> i64 {
    let parse =
        |t: &str| NaiveDateTime::parse_from_str(&format!("{t}:00"), "%Y%m%dT%H:%M").unwrap();
    (parse(end) - parse(start)).num_hours() + 1
}

#[test]
fn refused_credentials_are_explained_without_the_secret() {
    let server = server_with_history(&history());
    let cache = TempDir::new().unwrap();
    let dir = project(&api_options(&server, cache.path(), ""));
    let wrong = "wrong-secret-value-42";
    let out = run_with(
        &dir,
        wrong,
        &[
            "sql",
            "SELECT count(*) FROM amp.events WHERE event_time >= TIMESTAMP '2025-01-06 00:00:00' AND event_time < TIMESTAMP '2025-01-07 00:00:00'",
        ],
    );
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("refused the credentials"), "{out}");
    assert!(out.stderr.contains("secret_key"), "{out}");
    assert!(
        !out.stderr.contains(wrong) && !out.stdout.contains(wrong),
        "{out}"
    );
    assert_eq!(server.log()[0].status, 401);
}

#[test]
fn export_files_on_disk_zip_archives_and_hourly_files_overlapping() {
    let events = history();
    let files = hourly_files(&events);
    let exports = TempDir::new().unwrap();
    // The first two weeks of uploads as an Export API archive, the last week and a half as
    // loose hourly files: week two is in both, as after a backfill.
    let split_early = monday_jan_6() + Duration::days(14);
    let split_late = monday_jan_6() + Duration::days(7);
    let archived: Vec<(&String, &Vec<u8>)> = files
        .iter()
        .filter(|(_, (hour, _))| *hour < split_early)
        .map(|(name, (_, gz))| (name, gz))
        .collect();
    fs_err::create_dir_all(exports.path().join("archives")).unwrap();
    fs_err::write(
        exports.path().join("archives/export-2025-01.zip"),
        export_server::zip_of(&archived),
    )
    .unwrap();
    for (name, (hour, gz)) in &files {
        if *hour >= split_late {
            let path = exports.path().join("hourly").join(name);
            fs_err::create_dir_all(path.parent().unwrap()).unwrap();
            fs_err::write(path, gz).unwrap();
        }
    }
    let dir = project(&format!(
        "    path: {}\n    properties:\n      plan: event_properties.plan\n",
        exports.path().display()
    ));

    let out = run(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n, count(DISTINCT distinct_id) AS users, \
             sum(CASE WHEN plan = 'pro' THEN 1 ELSE 0 END) AS pro FROM amp.events",
            "--format",
            "csv",
        ],
    )
    .success();
    let users: BTreeSet<String> = events.iter().map(Event::distinct).collect();
    let pro = events.iter().filter(|e| e.plan == "pro").count();
    assert_eq!(
        csv(&out).rows,
        [vec![
            events.len().to_string(),
            users.len().to_string(),
            pro.to_string()
        ]],
        "each event once, despite the retries and the overlap\n{out}"
    );

    // A metric over the files, with its time range.
    let all: Vec<&Event> = events.iter().collect();
    let out = compute_weeks(&dir, "2025-01-06", "2025-01-26").success();
    assert_weeks(&out, &expected_weeks(&all, monday_jan_6().date(), 3));
}

#[test]
fn the_s3_export_reads_late_hours_after_the_range() {
    let events = history();
    let s3 = S3Server::start();
    for (name, (hour, gz)) in hourly_files(&events) {
        s3.put("amp-export", &format!("amplitude/{name}"), &gz);
        let marker = format!(
            "amplitude/{PROJECT}/{PROJECT}_{}_{}_complete",
            hour.date(),
            hour.hour()
        );
        s3.put("amp-export", &marker, b"");
    }
    let options = |late: u32| {
        format!(
            "    s3:\n      bucket: amp-export\n      prefix: amplitude/\n      endpoint: {}\n      allow_http: true\n      region: us-east-1\n      access_key_id: ${{LODESTAR_TEST_S3_KEY}}\n      secret_access_key: ${{LODESTAR_TEST_S3_SECRET}}\n    late_hours: {late}\n",
            s3.endpoint()
        )
    };
    let all: Vec<&Event> = events.iter().collect();
    let week_2 = monday_jan_6().date() + Duration::days(7);

    let dir = project(&options(48));
    let out = compute_weeks(&dir, "2025-01-13", "2025-01-19").success();
    assert_weeks(&out, &expected_weeks(&all, week_2, 1));
    // Only the files of the week and the late hours after it were read.
    let read: BTreeSet<String> = s3
        .log()
        .iter()
        .filter(|s| s.is_object_read())
        .filter_map(|s| s.key().map(str::to_string))
        .collect();
    assert!(!read.is_empty());
    assert!(
        read.iter()
            .all(|k| k.as_str() >= "amplitude/187520/187520_2025-01-13"
                && k.as_str() < "amplitude/187520/187520_2025-01-22"),
        "{read:?}"
    );

    // Without the late hours, the week's late uploads are missed: the slack is what finds them.
    let dir = project(&options(0));
    let out = compute_weeks(&dir, "2025-01-13", "2025-01-19").success();
    let week_end = (week_2 + Duration::days(7)).and_hms_opt(0, 0, 0).unwrap();
    let on_time: Vec<&Event> = events.iter().filter(|e| e.upload < week_end).collect();
    let expected = expected_weeks(&on_time, week_2, 1);
    assert_weeks(&out, &expected);
    // Counted over the week's events: the late hours find the events uploaded after it.
    let week_count = "SELECT count(*) FROM amp.events \
        WHERE event_time >= TIMESTAMP '2025-01-13 00:00:00' AND event_time < TIMESTAMP '2025-01-20 00:00:00'";
    let in_week = |e: &&Event| {
        week_2.and_hms_opt(0, 0, 0).unwrap() <= e.event_time && e.event_time < week_end
    };
    let on_time_count = on_time.iter().filter(|e| in_week(e)).count() as i64;
    let all_count = all.iter().filter(|e| in_week(e)).count() as i64;
    assert!(on_time_count < all_count, "the fixture has late uploads");
    assert_eq!(sql_number(&dir, week_count), on_time_count);
    let dir = project(&options(48));
    assert_eq!(sql_number(&dir, week_count), all_count);
}

#[test]
fn columns_timestamps_sessions_users_and_properties() {
    let exports = TempDir::new().unwrap();
    let lines = [
        r#"{"event_type":"Open","user_id":"u1","device_id":"d1","$insert_id":"a","event_time":"2023-01-01 19:02:52.749000","server_upload_time":"2023-01-01 19:03:00.000000","session_id":1672599772749,"amplitude_id":11,"platform":"iOS","sample_rate":0.5,"event_properties":{"plan":"pro","n":3},"user_properties":{"tier":{"level":2}}}"#,
        r#"{"event_type":"View","user_id":null,"device_id":"d2","$insert_id":"b","event_time":"2023-01-01 19:02:52","server_upload_time":"2023-01-01 19:03:00","session_id":-1,"amplitude_id":"12","platform":"Web","event_properties":{}}"#,
        r#"{"event_type":"View","user_id":"","device_id":"d3","$insert_id":"c","event_time":"2023-01-01T19:02:52.749","server_upload_time":"2023-01-01T19:03:00.000","platform":"Android"}"#,
        r#"{"event_type":"Close","user_id":"u4","device_id":"d4","$insert_id":"d","client_event_time":"2023-01-01 18:00:00.5","server_upload_time":"2023-01-01 19:03:00"}"#,
        r#"{"event_type":"Close","user_id":"u5","device_id":"d5","$insert_id":"e","server_received_time":"2023-01-01 17:00:00","server_upload_time":"2023-01-01 19:03:00"}"#,
    ]
    .map(String::from);
    let path = exports
        .path()
        .join(format!("{PROJECT}/{PROJECT}_2023-01-01_19#0.json.gz"));
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(&path, gzip(&lines)).unwrap();
    let dir = project(&format!(
        "    path: {}\n    properties:\n      plan: event_properties.plan\n      level: user_properties.tier.level\n",
        exports.path().display()
    ));
    let out = run(
        &dir,
        &[
            "sql",
            "SELECT insert_id, CAST(event_time AS BIGINT) AS t, session_id, distinct_id, \
             amplitude_id, sample_rate, plan, level, event_properties \
             FROM amp.events ORDER BY insert_id",
            "--format",
            "csv",
        ],
    )
    .success();
    let micros = |s: &str| {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_micros()
            .to_string()
    };
    let table = csv(&out);
    let cells = |col: &str| {
        table
            .column(col)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(cells("insert_id"), ["a", "b", "c", "d", "e"], "{out}");
    assert_eq!(
        cells("t"),
        [
            micros("2023-01-01 19:02:52.749"),
            micros("2023-01-01 19:02:52"),
            micros("2023-01-01 19:02:52.749"),
            // No event_time: client_event_time, then server_received_time.
            micros("2023-01-01 18:00:00.5"),
            micros("2023-01-01 17:00:00"),
        ],
        "{out}"
    );
    assert_eq!(
        cells("session_id"),
        ["1672599772749", "", "", "", ""],
        "-1 is no session\n{out}"
    );
    assert_eq!(
        cells("distinct_id"),
        ["u1", "d2", "d3", "u4", "u5"],
        "{out}"
    );
    assert_eq!(cells("amplitude_id"), ["11", "12", "", "", ""], "{out}");
    assert_eq!(cells("sample_rate"), ["0.5", "", "", "", ""], "{out}");
    assert_eq!(cells("plan"), ["pro", "", "", "", ""], "{out}");
    assert_eq!(cells("level"), ["2", "", "", "", ""], "{out}");
    let props: Value = serde_json::from_str(&cells("event_properties")[0]).unwrap();
    assert_eq!(props, json!({"plan": "pro", "n": 3}), "{out}");
}

#[test]
fn a_bad_line_fails_with_its_file_and_line_or_is_skipped_and_reported() {
    let exports = TempDir::new().unwrap();
    let good = |id: &str| {
        format!(
            r#"{{"event_type":"Open","device_id":"d","$insert_id":"{id}","event_time":"2025-01-06 10:00:00"}}"#
        )
    };
    let lines = vec![
        good("a"),
        good("b"),
        "{\"event_type\": \"Open\", ".to_string(),
        good("c"),
    ];
    let name = format!("{PROJECT}_2025-01-06_10#0.json.gz");
    fs_err::write(exports.path().join(&name), gzip(&lines)).unwrap();
    let query = "SELECT count(*) FROM amp.events";

    let dir = project(&format!("    path: {}\n", exports.path().display()));
    let out = run(&dir, &["sql", query, "--format", "csv"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains(&name), "{out}");
    assert!(out.stderr.contains("line 3"), "{out}");
    assert!(out.stderr.contains("bad_lines: skip"), "{out}");

    let dir = project(&format!(
        "    path: {}\n    bad_lines: skip\n",
        exports.path().display()
    ));
    let out = run(&dir, &["sql", query, "--format", "csv"]).success();
    assert_eq!(csv(&out).rows, [vec!["3".to_string()]], "{out}");
    assert!(out.stderr.contains("skipped 1 malformed line"), "{out}");
    assert!(out.stderr.contains(&format!("{name} line 3")), "{out}");
}

/// Onboarding data for discovery, by formula: 120 users sign up (`Sign Up`) over the first
/// week from 2025-01-06. Every third user saves two items within hours of signing up and
/// three in four of those come back between day 7 and day 14; of the others, every fifth comes
/// back. A 121st user signs up on day 22 and sets the data's end.
fn onboarding_history() -> Vec<Event> {
    let mut events = Vec::new();
    let mut push = |user: usize, at: NaiveDateTime, event_type: &'static str| {
        let i = events.len();
        events.push(Event {
            i,
            event_time: at,
            upload: at + Duration::minutes(1),
            user_id: Some(format!("user-{user}")),
            device_id: format!("device-{user}"),
            insert_id: format!("ins-{i:05}"),
            event_type,
            platform: ["iOS", "Android", "Web"][user % 3],
            plan: "free",
        });
    };
    for u in 0..120 {
        let t0 = monday_jan_6() + Duration::minutes(((u * 97) % (7 * 24 * 60)) as i64);
        push(u, t0, "Sign Up");
        if u % 2 == 0 {
            push(u, t0 + Duration::hours(1), "Search");
        }
        match u % 3 {
            0 => {
                push(u, t0 + Duration::hours(2), "Save Item");
                push(u, t0 + Duration::hours(5), "Save Item");
            }
            1 => push(u, t0 + Duration::hours(3), "Save Item"),
            _ => {}
        }
        let back = if u % 3 == 0 { u % 4 != 3 } else { u % 5 == 0 };
        if back {
            push(u, t0 + Duration::days(8), "Open");
        }
    }
    push(120, monday_jan_6() + Duration::days(22), "Sign Up");
    events
}

/// Discovery's 2×2 table for "did `activity` at least `k` times within a day of signing up",
/// counted here from the events: (doers retained, doers churned, others retained, others
/// churned) over the users judged (signed up at least 14 days before the data's end), with
/// retained = any event in days [7, 14) after signing up.
fn onboarding_two_by_two(events: &[Event], activity: &str, k: usize) -> ([usize; 4], usize) {
    let end = events.iter().map(|e| e.event_time).max().unwrap();
    let mut by_user: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_user.entry(e.distinct()).or_default().push(e);
    }
    let (mut cells, mut judged) = ([0; 4], 0);
    for rows in by_user.values() {
        let t0 = rows
            .iter()
            .filter(|e| e.event_type == "Sign Up")
            .map(|e| e.event_time)
            .min()
            .unwrap();
        if t0 + Duration::days(14) > end {
            continue;
        }
        judged += 1;
        let early = rows
            .iter()
            .filter(|e| e.event_type == activity)
            .filter(|e| !(e.event_type == "Sign Up" && e.event_time == t0))
            .filter(|e| t0 <= e.event_time && e.event_time < t0 + Duration::days(1))
            .count();
        let retained = rows.iter().any(|e| {
            t0 + Duration::days(7) <= e.event_time && e.event_time < t0 + Duration::days(14)
        });
        cells[usize::from(early < k) * 2 + usize::from(!retained)] += 1;
    }
    (cells, judged)
}

#[test]
fn discovery_over_amplitude_events_matches_a_recount() {
    let events = onboarding_history();
    let exports = TempDir::new().unwrap();
    for (name, (_, gz)) in hourly_files(&events) {
        let path = exports.path().join(name);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, gz).unwrap();
    }
    let dir = project(&format!("    path: {}\n", exports.path().display()));
    let out = run(
        &dir,
        &[
            "discover",
            "--onboarded",
            "Sign Up",
            "--activity",
            "amp.events.event_time",
            "--entity",
            "distinct_id",
            "--within",
            "1d",
            "--retained",
            "7d",
            "--window",
            "7d",
            "--format",
            "csv",
        ],
    )
    .success();
    let table = csv(&out);
    let (activity, at_least) = (table.column("activity"), table.column("at_least"));
    assert_eq!(
        (activity.first().copied(), at_least.first().copied()),
        (Some("Save Item"), Some("2")),
        "the planted moment ranks first\n{out}"
    );
    for (i, row) in table.rows.iter().enumerate() {
        let k: usize = at_least[i].parse().unwrap();
        let (cells, judged) = onboarding_two_by_two(&events, activity[i], k);
        let cell = |name: &str| table.column(name)[i].to_string();
        assert_eq!(cell("users"), judged.to_string(), "{row:?}\n{out}");
        assert_eq!(
            [
                cell("doers_retained"),
                cell("doers_churned"),
                cell("others_retained"),
                cell("others_churned"),
            ],
            cells.map(|n| n.to_string()),
            "{} at least {k}: {row:?}\n{out}",
            activity[i]
        );
    }
    // Users 0..120 are judged; the one who signed up on day 22 is too recent.
    assert_eq!(table.column("users").first().copied(), Some("120"), "{out}");
}

//! The report and the dashboard's answers from `lodestar serve`: `GET /api/v1/report` is the
//! page `lodestar report` writes (same rows, same numbers), behind the same tokens and caps as
//! the other endpoints; `GET /api/v1/overview` and `/api/v1/metrics/{name}/chart` give the
//! dashboard the report's rules and numbers as text. Expected numbers are hand counts
//! (`tests/fixtures/shop/README.md`, the retention fixture's in `tests/it/retention.rs`).

use serde_json::json;

use crate::report::elements;
use crate::server::Served;
use crate::support::{Run, lodestar_project};

/// The retention fixture with a north star and a retention metric (as in tests/it/report.rs).
const RETENTION_PROJECT: &str = "\
sources:
  app: { connector: files, path: data }
metrics:
  events:
    north_star: true
    table: app.events
    time: event_time
    measure: count(*)
    inputs: [d1_retention]
  d1_retention:
    retention: { cohort: app.users.signed_up_at, activity: app.events.event_time, entity: user_id, after: 1d }
";

/// The rows a reader can check: every `<tr>` and heat-map cell with data, as their tags.
fn checked_rows(html: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for (tag, having) in [
        ("tr", "data-period"),
        ("tr", "data-depth"),
        ("g", "data-cohort"),
        ("tr", "data-activity"),
    ] {
        for attributes in elements(html, tag, having) {
            rows.push(format!("{tag} {attributes:?}"));
        }
    }
    rows
}

#[test]
fn the_servers_report_is_the_clis_behind_a_read_token() {
    let token = "report-reader";
    let server = Served::start_with(
        "retention",
        |project| fs_err::write(project, RETENTION_PROJECT).unwrap(),
        &[],
        &[("LODESTAR_READ_TOKENS", token)],
    );
    let auth = format!("Bearer {token}");
    let read = [("Authorization", auth.as_str())];
    assert_eq!(server.get("/api/v1/report").status, 401);

    let response = server.request("/api/v1/report?grain=day", &read);
    assert_eq!(response.status, 200, "{response}");
    assert!(
        response
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{response}"
    );
    let policy = response
        .header("content-security-policy")
        .unwrap_or_default()
        .to_string();
    assert!(
        policy.contains("default-src 'none'") && !policy.contains("script-src"),
        "no script may run in the report: {policy}"
    );
    let html = response.text();
    assert!(!html.contains("<script"), "the report holds no script");
    assert!(html.contains("Made with <code>lodestar serve</code>"));

    // The heat map from the project's retention metric: the hand counts of
    // tests/it/retention.rs (rolling days, active on day N).
    let cells: Vec<String> = elements(&html, "g", "data-cohort")
        .into_iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["data-cohort"], c["data-period"], c["data-rate"]
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            "2026-01-01 0 0.5",
            "2026-01-01 1 0.5",
            "2026-01-01 2 0.5",
            "2026-01-02 0 1",
            "2026-01-02 1 0",
            "2026-01-02 2 0",
        ]
    );

    // The same rows as the file `lodestar report` writes for the same project.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    Run::of(&mut lodestar_project(
        &server.scratch().project(),
        ["report", "--grain", "day", "-o", file.to_str().unwrap()],
    ))
    .success();
    let written = fs_err::read_to_string(&file).unwrap();
    let rows = checked_rows(&html);
    assert!(rows.len() > 6, "{rows:?}");
    assert_eq!(
        rows,
        checked_rows(&written),
        "the server's rows and the CLI's"
    );

    // A second request is the cached answer, with its policy still on.
    let again = server.request("/api/v1/report?grain=day", &read);
    assert_eq!(again.header("x-cache"), Some("hit"), "{again}");
    assert_eq!(
        again.header("content-security-policy"),
        Some(policy.as_str())
    );

    // Parameters are checked as everywhere; a read token names no table.
    for (target, status) in [
        ("/api/v1/report?metric=nope", 404),
        ("/api/v1/report?top=0", 400),
        ("/api/v1/report?cohort=app.users.signed_up_at", 400),
        ("/api/v1/report?onboarded=app.users.signed_up_at", 403),
        ("/api/v1/report?retention_periods=100000", 400),
    ] {
        let response = server.request(target, &read);
        assert_eq!(response.status, status, "{target}\n{response}");
    }
    let arrow = server.request(
        "/api/v1/report",
        &[
            ("Authorization", auth.as_str()),
            ("Accept", "application/vnd.apache.arrow.stream"),
        ],
    );
    assert_eq!(arrow.status, 406, "{arrow}");
}

#[test]
fn the_overview_gives_the_dashboard_the_reports_rules_and_text() {
    let server = Served::start_with("shop", |_| {}, &[], &[]);
    let overview = server.json("/api/v1/overview");
    // The shop's last complete week is 03-09, against 03-02: revenue 60 → 90 (+30, +50%),
    // orders 3 → 5 (+2, +66.7%).
    assert_eq!(overview["grain"], "week");
    assert_eq!(overview["period"], "2026-03-09");
    assert_eq!(overview["previous_period"], "2026-03-02");
    assert_eq!(
        overview["period_text"],
        "week 2026-03-09 against 2026-03-02"
    );
    let revenue = &overview["roots"][0];
    assert_eq!(revenue["metric"], "revenue");
    assert_eq!(revenue["value"], json!(90.0));
    assert_eq!(revenue["text"], "90 · +30 (+50.0%)");
    let orders = &revenue["inputs"][0];
    assert_eq!(orders["metric"], "orders");
    assert!(
        orders["text"]
            .as_str()
            .unwrap()
            .starts_with("5 · +2 (+66.7%) · contributes +"),
        "{orders}"
    );
    let head = &overview["north_star"];
    assert_eq!(head["metric"], "revenue");
    assert_eq!(head["value_text"], "90");
    assert_eq!(head["period_text"], "week of 2026-03-09");
    assert_eq!(head["change_text"], "+30 (+50.0%) vs 2026-03-02");
    // Both weeks are whole: both complete. Ticks from 0 past 90, round.
    let points = &head["chart"]["series"][0]["points"];
    assert_eq!(
        points,
        &json!([
            {"period": "2026-03-02", "value": 60.0, "text": "60", "complete": true},
            {"period": "2026-03-09", "value": 90.0, "text": "90", "complete": true},
        ])
    );
    let ticks = head["chart"]["ticks"].as_array().unwrap();
    assert_eq!(ticks[0], json!({"value": 0.0, "text": "0"}));
    assert!(ticks.last().unwrap()["value"].as_f64().unwrap() >= 90.0);
    // No retention metric in the shop: the dashboard is told so, and how to name one.
    assert_eq!(overview["retention"]["cohort"], json!(null));
    assert!(
        overview["retention"]["note"]
            .as_str()
            .unwrap()
            .contains("no retention metric")
    );

    // A drill-down chart by a dimension: one series per country, with the API's complete
    // periods; in total 60 then 90.
    let chart = server.json("/api/v1/metrics/revenue/chart?grain=week&by=country");
    assert_eq!(chart["last_complete"], "2026-03-09");
    let series = chart["series"].as_array().unwrap();
    assert!(series.len() > 1, "{chart}");
    for (week, total) in [("2026-03-02", 60.0), ("2026-03-09", 90.0)] {
        let sum: f64 = series
            .iter()
            .flat_map(|s| s["points"].as_array().unwrap())
            .filter(|p| p["period"] == week)
            .filter_map(|p| p["value"].as_f64())
            .sum();
        assert_eq!(sum, total, "revenue in the week of {week}");
    }
    assert_eq!(
        server.get("/api/v1/metrics/nope/chart").status,
        404,
        "an unknown metric"
    );
}

//! What a client may ask of `lodestar serve` and what it may see: requests over the caps on
//! dates, ranges, periods and lists get a 400 naming the parameter and the cap (the command
//! line refuses the same requests with exit code 2 and the same words), and a read token sees
//! only what the project declares under `discovery:`.

use serde_json::Value;

use crate::server::Served;
use crate::support::{Run, Scratch, example_project, lodestar_project, workspace_root};

/// Each request gets `status` with `code`, and a message holding `words`.
fn refused(server: &Served, headers: &[(&str, &str)], cases: &[(&str, u16, &str, &str)]) {
    for (target, status, code, words) in cases {
        let response = server.request(target, headers);
        assert_eq!(response.status, *status, "GET {target}\n{response}");
        let body = response.json();
        assert_eq!(body["error"]["code"], *code, "GET {target}\n{response}");
        let message = response.error_message();
        assert!(
            message.contains(words),
            "GET {target}: `{words}` not in `{message}`"
        );
    }
}

/// The requests of the hardening issue, and their neighbours, on the example project.
#[test]
fn requests_over_the_caps_get_400_naming_the_parameter_and_the_cap() {
    let server = Served::example();
    refused(
        &server,
        &[],
        &[
            // A year chrono can hold but no calendar arithmetic should be asked to walk to.
            (
                "/api/v1/metrics/nights_booked/series?to=%2B262142-12-31",
                400,
                "over_limit",
                "parameter `to`: +262142-12-31 is outside the calendar, which runs from 1900-01-01 to 9999-12-31",
            ),
            (
                "/api/v1/metrics/nights_booked/series?from=0999-12-31",
                400,
                "over_limit",
                "parameter `from`: 0999-12-31 is outside the calendar",
            ),
            // 1990-01-01 to 2026-12-31 is 13,514 days.
            (
                "/api/v1/metrics/nights_booked/series?from=1990-01-01&to=2026-12-31&grain=day",
                400,
                "over_limit",
                "parameter `from`, parameter `to`, parameter `grain`: 13514 periods of a day asked, at most 10000 (--max-periods)",
            ),
            (
                "/api/v1/retention?cohort=app.users.signed_up_at&activity=app.events.event_time&entity=user_id&periods=3000000",
                400,
                "over_limit",
                "parameter `periods`: 3000001 periods of a week asked, at most 10000 (--max-periods)",
            ),
            (
                "/api/v1/retention?cohort=signup&brackets=1-1,2-70000",
                400,
                "over_limit",
                "parameter `brackets`: 70001 periods of a week asked, at most 10000",
            ),
            // 2 years of daily cohorts by 1,000 periods: 731,000 cells.
            (
                "/api/v1/retention?cohort=signup&grain=day&from=2025-01-01&to=2026-12-31&periods=999",
                400,
                "over_limit",
                "730 cohorts × 1000 periods = 730000 cells asked, at most 500000 (--max-cells)",
            ),
            (
                "/api/v1/tree?period=%2B262142",
                400,
                "bad_request",
                "parameter `period`: `+262142` is outside the calendar",
            ),
            (
                "/api/v1/discover?onboarded=signup&from=%2B200000-01-01",
                400,
                "over_limit",
                "parameter `from`: +200000-01-01 is outside the calendar",
            ),
        ],
    );
    // 101 filter values: one more than a list may hold.
    let filters: Vec<String> = (0..101).map(|i| format!("filter=country:C{i}")).collect();
    refused(
        &server,
        &[],
        &[(
            &format!("/api/v1/metrics/nights_booked/series?{}", filters.join("&")),
            400,
            "over_limit",
            "parameter `filter`: 101 items asked, at most 100 (--max-list)",
        )],
    );
    // The server answered each cleanly and goes on answering.
    assert_eq!(server.get("/healthz").status, 200);
    let series =
        server.json("/api/v1/metrics/nights_booked/series?from=2026-03-01&to=2026-03-31&grain=day");
    assert_eq!(series["rows"].as_array().unwrap().len(), 31);
}

/// The caps are the server's settings: `--max-periods 30` refuses a 31-day series.
#[test]
fn the_caps_are_settable() {
    let server = Served::start_in(
        example_copy(""),
        &["--max-periods", "30", "--max-list", "1"],
        &[],
    );
    refused(
        &server,
        &[],
        &[
            (
                "/api/v1/metrics/nights_booked/series?from=2026-03-01&to=2026-03-31&grain=day",
                400,
                "over_limit",
                "31 periods of a day asked, at most 30 (--max-periods)",
            ),
            (
                "/api/v1/metrics/nights_booked/series?grain=day&by=country,platform",
                400,
                "over_limit",
                "parameter `by`: 2 items asked, at most 1 (--max-list)",
            ),
        ],
    );
    let series =
        server.json("/api/v1/metrics/nights_booked/series?from=2026-03-01&to=2026-03-30&grain=day");
    assert_eq!(series["rows"].as_array().unwrap().len(), 30);
    // Open ranges are held to the cap too, once the data's range is known: the example's
    // six months of days are more than 30.
    refused(
        &server,
        &[],
        &[(
            "/api/v1/metrics/nights_booked/series?grain=day",
            400,
            "over_limit",
            "at most 30 (--max-periods)",
        )],
    );
}

/// `lodestar` refuses what the server refuses, with exit code 2 and the same words, the
/// request's fields written as options.
#[test]
fn the_command_line_refuses_the_same_requests_with_exit_code_2() {
    let project = example_project();
    let cases: [(&[&str], &str); 4] = [
        (
            &["compute", "nights_booked", "--to", "+262142-12-31"],
            "--to: +262142-12-31 is outside the calendar, which runs from 1900-01-01 to 9999-12-31",
        ),
        (
            &[
                "retention",
                "--cohort",
                "app.users.signed_up_at",
                "--activity",
                "app.events.event_time",
                "--entity",
                "user_id",
                "--periods",
                "3000000",
            ],
            "--periods: 3000001 periods of a week asked, at most 10000 (--max-periods)",
        ),
        (
            &[
                "--max-periods",
                "30",
                "compute",
                "nights_booked",
                "--grain",
                "day",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-31",
            ],
            "--from, --to, --grain: 31 periods of a day asked, at most 30 (--max-periods)",
        ),
        (
            &["discover", "--onboarded", "signup", "--max-k", "51"],
            "--max-k: 51 thresholds, at most 50",
        ),
    ];
    for (args, words) in cases {
        let run = Run::of(&mut lodestar_project(project, args)).expect_code(2);
        assert!(run.stderr.contains(words), "`{words}` not in\n{run}");
        assert!(run.stderr.contains("hint: "), "{run}");
    }
    // Within the cap, the same question is answered: 30 days, one row each.
    let run = Run::of(&mut lodestar_project(
        project,
        [
            "--max-periods",
            "30",
            "compute",
            "nights_booked",
            "--grain",
            "day",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-30",
            "--format",
            "csv",
        ],
    ))
    .success();
    assert_eq!(run.stdout.lines().count(), 31, "{run}");
}

/// A copy of the example project's file beside its data (read in place), with `extra`
/// appended to the file.
fn example_copy(extra: &str) -> Scratch {
    let scratch = Scratch::empty();
    let data = workspace_root().join("examples/data");
    let text = fs_err::read_to_string(example_project())
        .unwrap()
        .replace("path: data", &format!("path: {}", data.display()));
    fs_err::write(scratch.project(), format!("{text}{extra}")).unwrap();
    scratch
}

/// Read tokens ask for declared onboardings and tables only, see no values of the data in
/// hints, and meet the server's floor on discovery's minimum support; admin tokens may name
/// any table.
#[test]
fn a_read_token_sees_only_what_the_project_declares() {
    // An onboarding event that no one has: its "no one" error is where hints used to list
    // the event types the data holds.
    let scratch = example_copy("    ghost: no_such_event\n");
    let server = Served::start_in(
        scratch,
        &[],
        &[
            ("LODESTAR_READ_TOKENS", "reader"),
            ("LODESTAR_ADMIN_TOKENS", "boss"),
        ],
    );
    let read = [("Authorization", "Bearer reader")];
    let admin = [("Authorization", "Bearer boss")];
    let ok = |headers: &[(&str, &str)], target: &str| -> Value {
        let response = server.request(target, headers);
        assert_eq!(response.status, 200, "GET {target}\n{response}");
        response.json()
    };

    // Declared: by name, or written as the project declares it, the same table.
    let by_name = ok(
        &read,
        "/api/v1/retention?cohort=signup&grain=week&periods=3",
    );
    let as_written = ok(
        &read,
        "/api/v1/retention?cohort=app.users.signed_up_at&activity=app.events.event_time&entity=user_id&grain=week&periods=3",
    );
    assert_eq!(by_name["cells"], as_written["cells"]);
    assert!(!by_name["cells"].as_array().unwrap().is_empty());
    let discovered = ok(&read, "/api/v1/discover?onboarded=signup&window=7d&max_k=2");
    assert_eq!(
        discovered["candidates"][0]["activity"], "save_listing",
        "the planted value moment ranks first"
    );

    // Not declared: 403 for a read token, answered for an admin.
    let undeclared = "/api/v1/retention?cohort=app.bookings.booked_at&activity=app.events.event_time&entity=user_id&periods=2";
    refused(
        &server,
        &read,
        &[
            (
                undeclared,
                403,
                "forbidden",
                "parameter `cohort`: naming a table's column needs an admin token",
            ),
            (
                "/api/v1/discover?onboarded=app.bookings.booked_at",
                403,
                "forbidden",
                "parameter `onboarded`: naming a table's column needs an admin token",
            ),
            (
                "/api/v1/discover?onboarded=signup&event_column=platform",
                403,
                "forbidden",
                "parameter `event_column`: read tokens use what the project's `discovery:` declares",
            ),
            (
                "/api/v1/retention?cohort=signup&entity=country",
                400,
                "bad_request",
                "parameter `entity`: onboarding `signup` comes with the project's activity table and entity",
            ),
            (
                "/api/v1/discover?onboarded=nobody",
                400,
                "bad_request",
                "`nobody` is not an onboarding event the project declares (hint: the project declares: signup, first_search, ghost)",
            ),
            (
                "/api/v1/discover?onboarded=signup&min_support=3",
                400,
                "bad_request",
                "parameter `min_support`: 3 users asked, at least 10 on this server (--min-support-floor)",
            ),
        ],
    );
    ok(&admin, undeclared);
    // An admin's answer is cached for admins: a read token asking the same still gets 403.
    let response = server.request(undeclared, &read);
    assert_eq!(response.status, 403, "{response}");
    let admin_only = "/api/v1/discover?onboarded=signup&event_column=platform&window=7d";
    ok(&admin, admin_only);
    let response = server.request(admin_only, &read);
    assert_eq!(response.status, 403, "{response}");

    // No values of the data in a read token's hints; an admin's lists the event types.
    let response = server.request("/api/v1/discover?onboarded=ghost", &read);
    assert_eq!(response.status, 400, "{response}");
    let text = response.text();
    assert!(
        text.contains("no one in `app.events` was onboarded by a `no_such_event` event"),
        "{text}"
    );
    for value in ["save_listing", "search", "view_listing", "app_open"] {
        assert!(
            !text.contains(value),
            "`{value}` shown to a read token: {text}"
        );
    }
    let response = server.request("/api/v1/discover?onboarded=ghost", &admin);
    assert_eq!(response.status, 400, "{response}");
    assert!(response.text().contains("save_listing"), "{response}");
}

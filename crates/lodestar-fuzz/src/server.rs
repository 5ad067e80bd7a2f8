//! `server_params`: the HTTP API's routing and query parameters (`lodestar_server::router`,
//! its `params` parsing, the bounds, the least-privilege checks of read tokens) on arbitrary
//! request targets, answered in process over a small project written once per process.
//!
//! No request may panic (the router would answer 500), run into the query timeout or any
//! other server error; an `/api/` error is the JSON error body; a read token's answer never
//! holds a value of a column the project does not declare; and the same request asked twice
//! (the second from the answer cache) gets the same answer.

use std::sync::OnceLock;

use lodestar_core::{Engine, config};
use lodestar_server::{AppState, Role, Settings, Tokens, router};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

const ADMIN_TOKEN: &str = "fuzz-admin-token";
const READ_TOKEN: &str = "fuzz-read-token";
/// In every value of `app.users.email`, which the project declares nowhere: a read token's
/// answer must never contain it.
const UNDECLARED: &str = "canary";

/// `data` is a request target (`api/v1/metrics/nights/series?grain=week`, without the leading
/// `/`), sent with the admin token, or with the read token when it starts with `!`.
pub fn server_params(data: &[u8]) {
    let (role, target) = match data.split_first() {
        Some((b'!', rest)) => (Role::Read, rest),
        _ => (Role::Admin, data),
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    // What hyper would refuse before the router sees it.
    let Ok(uri) = format!("/{target}").parse::<axum::http::Uri>() else {
        return;
    };
    // `/metrics` waits for the North Star values of the server's background loop, which a
    // router alone does not run, and its counters change from one request to the next.
    if uri.path() == "/metrics" {
        return;
    }
    let fixture = fixture();
    let first = fixture.ask(role, &uri);
    let (status, body) = &first;
    assert!(
        !status.is_server_error(),
        "{uri}: answered {status}: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() && uri.path().starts_with("/api/") {
        let error: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{uri}: {status} without a JSON body ({e})"));
        assert!(
            error["error"]["code"].is_string() && error["error"]["message"].is_string(),
            "{uri}: {status} without an error code and message: {error}"
        );
    }
    if role == Role::Read {
        assert!(
            !String::from_utf8_lossy(body).contains(UNDECLARED),
            "{uri}: a read token was shown a value of an undeclared column: {}",
            String::from_utf8_lossy(body)
        );
    }
    let again = fixture.ask(role, &uri);
    assert!(
        again == first,
        "{uri}: asked twice, answered differently: {} then {}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&again.1)
    );
}

/// The server over the project, built on the first input.
struct Fixture {
    runtime: Runtime,
    app: axum::Router,
    /// Holds the project's files for the life of the process.
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("the data folder");
        for (name, text) in tables() {
            std::fs::write(data.join(name), text).expect("a table file");
        }
        let project = dir.path().join("lodestar.yaml");
        std::fs::write(&project, PROJECT).expect("the project file");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let project = config::load(&project).expect("the fuzz project loads");
        let engine = runtime
            .block_on(Engine::open(project))
            .expect("the fuzz project's sources open");
        let mut tokens = Tokens::default();
        tokens.add(Role::Admin, ADMIN_TOKEN);
        tokens.add(Role::Read, READ_TOKEN);
        let settings = Settings {
            tokens,
            ..Settings::default()
        };
        let app = router(AppState::new(engine, settings));
        Fixture {
            runtime,
            app,
            _dir: dir,
        }
    }

    /// The status and body of a GET of `uri` with `role`'s token.
    fn ask(&self, role: Role, uri: &axum::http::Uri) -> (axum::http::StatusCode, Vec<u8>) {
        let token = match role {
            Role::Admin => ADMIN_TOKEN,
            Role::Read => READ_TOKEN,
        };
        let request = axum::http::Request::get(uri.clone())
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .expect("a request");
        self.runtime.block_on(async {
            let response = self
                .app
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("the body is read");
            (status, body.to_vec())
        })
    }
}

/// A marketplace in miniature, with every kind of metric, a tree with a formula, a target, a
/// guardrail, a dimension and declared discovery.
const PROJECT: &str = "\
timezone: UTC
sources:
  app: { connector: files, path: data }
metrics:
  nights:
    north_star: true
    table: app.bookings
    time: booked_at
    measure: sum(nights)
    filter: status = 'confirmed'
    dimensions: [country]
    inputs: [bookings, nights_per_booking]
    formula: bookings * nights_per_booking
    target: { value: 40, period: month, by: 2026-12-31 }
    guardrails: [cancel_rate]
  bookings:
    table: app.bookings
    time: booked_at
    measure: count(*)
    filter: status = 'confirmed'
    dimensions: [country]
    inputs: [active_users]
  nights_per_booking:
    ratio: { numerator: nights, denominator: bookings }
  cancelled:
    table: app.bookings
    time: booked_at
    measure: count(*)
    filter: status = 'cancelled'
    dimensions: [country]
  all_bookings:
    table: app.bookings
    time: booked_at
    measure: count(*)
    dimensions: [country]
  cancel_rate:
    ratio: { numerator: cancelled, denominator: all_bookings }
  active_users:
    table: app.events
    time: event_time
    measure: count(distinct user_id)
  active_users_7d:
    table: app.events
    time: event_time
    measure: count(distinct user_id)
    cumulative: { window: 7d }
  running_nights:
    cumulative: { metric: nights }
  nights_per_user:
    derived: nights / active_users
discovery:
  activity: app.events.event_time
  entity: user_id
  event_column: event_type
  onboarding:
    signup: app.users.signed_up_at
    first_search: search
";

/// The tables, as CSV: 24 users who sign up over three months, their events and bookings.
fn tables() -> [(&'static str, String); 3] {
    let mut users = String::from("user_id,signed_up_at,country,email\n");
    let mut events = String::from("user_id,event_time,event_type\n");
    let mut bookings = String::from("user_id,booked_at,nights,status,country\n");
    let countries = ["FR", "DE", "US"];
    for user in 0..24u32 {
        let country = countries[user as usize % countries.len()];
        let month = 1 + user % 3;
        let day = 1 + user % 27;
        users.push_str(&format!(
            "u{user},2026-{month:02}-{day:02}T09:00:00,{country},{UNDECLARED}{user}@example.com\n"
        ));
        for week in 0..(user % 6) {
            let (month, day) = (month + (day + 7 * week) / 28, 1 + (day + 7 * week) % 28);
            let kind = ["search", "view", "message"][(user + week) as usize % 3];
            events.push_str(&format!(
                "u{user},2026-{month:02}-{day:02}T12:00:00,{kind}\n"
            ));
            if week % 2 == 1 {
                let status = if user % 5 == 0 {
                    "cancelled"
                } else {
                    "confirmed"
                };
                let nights = 1 + (user + week) % 7;
                bookings.push_str(&format!(
                    "u{user},2026-{month:02}-{day:02}T13:00:00,{nights},{status},{country}\n"
                ));
            }
        }
    }
    [
        ("users.csv", users),
        ("events.csv", events),
        ("bookings.csv", bookings),
    ]
}

//! `lodestar serve` as a client sees it: the real binary on a free loopback port, spoken to
//! over HTTP/1.1. Expected numbers are the hand counts of `tests/fixtures/shop/README.md` and
//! `tests/it/retention.rs`, and the same questions asked of `lodestar compute`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use lodestar_core::datafusion::arrow::array::{AsArray, RecordBatch};
use lodestar_core::datafusion::arrow::datatypes::Float64Type;
use lodestar_core::datafusion::arrow::ipc::reader::StreamReader;
use serde_json::{Value, json};

use crate::support::{Run, Scratch, example_project, lodestar_project, test_dir};

/// A running `lodestar serve`, stopped when dropped.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// The thread copying stderr into `stderr`; it ends when the server exits.
    drain: Option<std::thread::JoinHandle<()>>,
    /// The copy of the fixture served, removed when dropped; none for the example project.
    _project: Option<Scratch>,
}

impl Served {
    /// Starts `lodestar --project <copy of fixture> serve --listen 127.0.0.1:0`, after letting
    /// `edit` change the copy's project file.
    fn start(fixture: &str, edit: impl FnOnce(&Path)) -> Served {
        Served::start_with(fixture, edit, &[], &[])
    }

    /// As `start`, with more `serve` arguments and environment variables.
    pub(crate) fn start_with(
        fixture: &str,
        edit: impl FnOnce(&Path),
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Served {
        let project = Scratch::copy_of(&test_dir("fixtures").join(fixture));
        edit(&project.project());
        let project_file = project.project();
        Served::spawn(&project_file, Some(project), args, env)
    }

    /// Serves the example project (`examples/lodestar.yaml`) in place: it is only read.
    pub(crate) fn example() -> Served {
        Served::spawn(example_project(), None, &[], &[])
    }

    /// `lodestar --project <project>/lodestar.yaml serve --listen 127.0.0.1:0 ARGS`.
    pub(crate) fn start_in(project: Scratch, args: &[&str], env: &[(&str, &str)]) -> Served {
        let project_file = project.project();
        Served::spawn(&project_file, Some(project), args, env)
    }

    fn spawn(
        project_file: &Path,
        project: Option<Scratch>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Served {
        let mut serve = vec!["serve", "--listen", "127.0.0.1:0"];
        serve.extend_from_slice(args);
        let mut command = lodestar_project(project_file, serve);
        command.env_remove("LODESTAR_READ_TOKENS");
        command.env_remove("LODESTAR_ADMIN_TOKENS");
        command.env_remove("LODESTAR_TOKENS_FILE");
        command.envs(env.iter().copied());
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start `lodestar serve`");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut seen = String::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(url) = line.split("listening on http://").nth(1) {
                        break url.trim().parse::<SocketAddr>().expect("an address");
                    }
                }
                _ => {
                    let status = child.wait().expect("the server's exit status");
                    panic!("`lodestar serve` stopped before listening ({status}):\n{seen}");
                }
            }
        };
        // Keep draining stderr, so the server never blocks on a full pipe; shown on failure.
        let stderr = Arc::new(Mutex::new(seen));
        let sink = Arc::clone(&stderr);
        let drain = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        Served {
            child,
            addr,
            stderr,
            drain: Some(drain),
            _project: project,
        }
    }

    fn shop() -> Served {
        Served::start("shop", |_| {})
    }

    pub(crate) fn get(&self, target: &str) -> Response {
        self.request(target, &[])
    }

    pub(crate) fn request(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        http_request(self.addr, "GET", target, headers, "")
            .unwrap_or_else(|e| panic!("GET {target}: {e}\nserver log:\n{}", self.log()))
    }

    pub(crate) fn post(&self, target: &str, headers: &[(&str, &str)], body: &str) -> Response {
        http_request(self.addr, "POST", target, headers, body)
            .unwrap_or_else(|e| panic!("POST {target}: {e}\nserver log:\n{}", self.log()))
    }

    pub(crate) fn json(&self, target: &str) -> Value {
        let response = self.get(target);
        assert_eq!(response.status, 200, "GET {target}\n{response}");
        response.json()
    }

    /// The copy of the fixture being served.
    pub(crate) fn scratch(&self) -> &Scratch {
        self._project
            .as_ref()
            .expect("this server serves a copy of a fixture")
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The whole log of a server that has exited.
    pub(crate) fn final_log(&mut self) -> String {
        if let Some(drain) = self.drain.take() {
            drain.join().expect("the stderr thread");
        }
        self.log()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON: {e}\n{self}"))
    }

    /// The error message of a 4xx/5xx answer, with its hint.
    pub(crate) fn error_message(&self) -> String {
        let body = self.json();
        let error = &body["error"];
        format!(
            "{} (hint: {})",
            error["message"].as_str().unwrap_or_default(),
            error["hint"].as_str().unwrap_or_default()
        )
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "status {}", self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        write!(f, "\n{}", self.text())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the body ends at EOF).
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    let mut request = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    // The server's address, unless the test names another host.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| std::io::Error::other("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// `lodestar compute ... --format json`, the CLI's answer to the same question.
pub(crate) fn compute_json(project: &Path, args: &[&str]) -> Value {
    let mut all = vec!["compute"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let run = Run::of(&mut lodestar_project(project, &all)).success();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{run}"))
}

fn number(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

// ---------------------------------------------------------------- health

#[test]
fn health_and_readiness() {
    let server = Served::shop();
    assert_eq!(server.json("/healthz")["status"], "ok");
    let ready = server.json("/readyz");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["metrics"], 7, "the shop defines 7 metrics");
}

// ---------------------------------------------------------------- metrics

#[test]
fn metrics_list_definitions_and_the_tree() {
    let server = Served::shop();
    let list = server.json("/api/v1/metrics");
    assert_eq!(list["north_stars"], json!(["revenue"]));
    let names: Vec<&str> = list["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "revenue",
            "orders",
            "aov",
            "signups",
            "total_signups",
            "revenue_net",
            "large_orders"
        ]
    );
    let revenue = &list["metrics"][0];
    assert_eq!(revenue["kind"], "simple");
    assert_eq!(revenue["owner"], "sales@example.com");
    assert_eq!(revenue["formula"], "orders * aov");
    assert_eq!(revenue["dimensions"], json!(["country"]));
    assert_eq!(
        revenue["definition"],
        json!({"kind": "simple", "table": "app.orders", "time": "ordered_at",
               "measure": "sum(amount)", "filter": "status = 'paid'"})
    );
    let aov = &list["metrics"][2];
    assert_eq!(
        aov["definition"],
        json!({"kind": "ratio", "numerator": "revenue", "denominator": "orders"})
    );
    // revenue <- orders (<- signups), aov.
    assert_eq!(
        list["tree"],
        json!([{"metric": "revenue", "inputs": [
            {"metric": "orders", "inputs": [{"metric": "signups", "inputs": []}]},
            {"metric": "aov", "inputs": []}
        ]}])
    );
    let one = server.json("/api/v1/metrics/total_signups");
    assert_eq!(
        one["definition"],
        json!({"kind": "cumulative", "metric": "signups", "measure": null, "window_days": null})
    );
}

// ---------------------------------------------------------------- series

#[test]
fn series_match_the_hand_counts_and_the_cli() {
    let server = Served::shop();
    let series = server.json("/api/v1/metrics/revenue/series?grain=week");
    assert_eq!(series["grain"], "week");
    assert_eq!(series["from"], "2026-03-02");
    assert_eq!(series["to"], "2026-03-09");
    assert_eq!(
        series["rows"],
        json!([
            {"period": "2026-03-02", "revenue": 60.0},
            {"period": "2026-03-09", "revenue": 90.0}
        ])
    );
    // The same question asked of the CLI, for a metric of every kind and a breakdown.
    let project = server.scratch().project();
    for (metric, query, args) in [
        ("aov", "grain=week", vec!["aov", "--grain", "week"]),
        (
            "total_signups",
            "grain=day&from=2026-03-03&to=2026-03-12",
            vec![
                "total_signups",
                "--grain",
                "day",
                "--from",
                "2026-03-03",
                "--to",
                "2026-03-12",
            ],
        ),
        (
            "revenue_net",
            "grain=month",
            vec!["revenue_net", "--grain", "month"],
        ),
        (
            "large_orders",
            "grain=week",
            vec!["large_orders", "--grain", "week"],
        ),
        (
            "orders",
            "grain=day&by=country",
            vec!["orders", "--grain", "day", "--by", "country"],
        ),
    ] {
        let api = server.json(&format!("/api/v1/metrics/{metric}/series?{query}"));
        assert_eq!(
            api["rows"],
            compute_json(&project, &args),
            "{metric}?{query}"
        );
    }
}

#[test]
fn series_by_dimension_with_filters() {
    let server = Served::shop();
    let series = server.json("/api/v1/metrics/revenue/series?grain=week&by=country");
    assert_eq!(series["dimensions"], json!(["country"]));
    // Paid orders by country: week 1 DE 10 + 30, FR 20; week 2 DE 10 + 20 + 30, FR 10 + 20.
    assert_eq!(
        series["rows"],
        json!([
            {"period": "2026-03-02", "country": "DE", "revenue": 40.0},
            {"period": "2026-03-02", "country": "FR", "revenue": 20.0},
            {"period": "2026-03-09", "country": "DE", "revenue": 60.0},
            {"period": "2026-03-09", "country": "FR", "revenue": 30.0}
        ])
    );
    let fr = server.json("/api/v1/metrics/revenue/series?grain=week&filter=country:FR");
    assert_eq!(
        fr["filters"],
        json!([{"dimension": "country", "values": ["FR"]}])
    );
    let values: Vec<f64> = fr["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| number(&r["revenue"]))
        .collect();
    assert_eq!(values, [20.0, 30.0]);
    // Two values of one dimension are alternatives: every country here.
    let both =
        server.json("/api/v1/metrics/orders/series?grain=week&filter=country:FR&filter=country:DE");
    let values: Vec<i64> = both["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["orders"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [3, 5]);
}

#[test]
fn a_filter_value_is_a_value_not_sql() {
    let server = Served::shop();
    // `country = 'x' OR '1'='1'` would match every order (revenue 60 and 90) if spliced.
    for value in [
        "x' OR '1'='1",
        "FR' OR country <> 'FR",
        "FR'); SELECT 1; --",
        "\\' OR 1=1 --",
        "\\') OR 1=1 OR country IN ('",
    ] {
        let encoded: String = form_encode(value);
        let target = format!(
            "/api/v1/metrics/revenue/series?grain=week&from=2026-03-02&to=2026-03-15&filter=country:{encoded}"
        );
        let response = server.get(&target);
        assert_eq!(response.status, 200, "{target}\n{response}");
        let body = response.json();
        assert_eq!(body["filters"][0]["values"], json!([value]), "{response}");
        assert_eq!(
            body["rows"],
            json!([
                {"period": "2026-03-02", "revenue": 0.0},
                {"period": "2026-03-09", "revenue": 0.0}
            ]),
            "no order has the country {value:?}\n{response}"
        );
    }
    // A hostile dimension name is a name: not a dimension, refused.
    let target = format!(
        "/api/v1/metrics/revenue/series?filter={}",
        form_encode("country\" = \"country\" OR \"1:x")
    );
    let response = server.get(&target);
    assert_eq!(response.status, 400, "{response}");
    assert!(
        response
            .error_message()
            .contains("which is not a dimension of any metric"),
        "{}",
        response.error_message()
    );
}

fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn series_as_an_arrow_stream() {
    let server = Served::shop();
    let response = server.request(
        "/api/v1/metrics/revenue/series?grain=week",
        &[("Accept", "application/vnd.apache.arrow.stream")],
    );
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.apache.arrow.stream")
    );
    let reader = StreamReader::try_new(std::io::Cursor::new(response.body), None)
        .expect("an Arrow IPC stream");
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let batch = &batches[0];
    assert_eq!(batch.schema().field(0).name(), "period");
    let revenue = batch
        .column_by_name("revenue")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(revenue.values().to_vec(), [60.0, 90.0]);
}

// ---------------------------------------------------------------- bad requests

#[test]
fn bad_requests_get_4xx_naming_the_problem() {
    let server = Served::shop();
    for (target, status, expected) in [
        (
            "/api/v1/metrics/revnue/series",
            404,
            "unknown metric `revnue`",
        ),
        (
            "/api/v1/metrics/revnue/series",
            404,
            "did you mean `revenue`?",
        ),
        ("/api/v1/metrics/revnue", 404, "unknown metric `revnue`"),
        (
            "/api/v1/metrics/revenue/series?from=2026-02-30",
            400,
            "parameter `from`: `2026-02-30` is not a date",
        ),
        (
            "/api/v1/metrics/revenue/series?to=yesterday",
            400,
            "parameter `to`: `yesterday` is not a date",
        ),
        (
            "/api/v1/metrics/revenue/series?from=2026-03-10&to=2026-03-01",
            400,
            "parameter `from` (2026-03-10) is after parameter `to` (2026-03-01)",
        ),
        (
            "/api/v1/metrics/revenue/series?grain=fortnight",
            400,
            "parameter `grain`: unknown grain `fortnight`",
        ),
        (
            "/api/v1/metrics/revenue/series?grain=week&grain=day",
            400,
            "parameter `grain` is given 2 times",
        ),
        (
            "/api/v1/metrics/revenue/series?by=platform",
            400,
            "parameter `by` uses `platform`, which is not a dimension of metric `revenue`",
        ),
        (
            "/api/v1/metrics/revenue/series?filter=status:paid",
            400,
            "parameter `filter` uses `status`, which is not a dimension",
        ),
        (
            "/api/v1/metrics/revenue/series?filter=country",
            400,
            "parameter `filter`: `country` is not `dimension:value`",
        ),
        (
            "/api/v1/metrics/revenue/series?where=1%3D1",
            400,
            "unknown parameter `where`",
        ),
        ("/api/v1/tree?root=revnue", 404, "unknown metric `revnue`"),
        ("/api/v1/tree?period=2026-W60", 400, "parameter `period`"),
        (
            "/api/v1/tree?compare=last-tuesday",
            400,
            "parameter `compare`",
        ),
        ("/api/v1/targets?metric=nope", 404, "unknown metric `nope`"),
        (
            "/api/v1/retention?cohort=app.users&activity=app.orders.ordered_at&entity=user_id",
            400,
            "parameter `cohort`: `app.users` does not name a time column",
        ),
        (
            "/api/v1/retention?activity=app.orders.ordered_at&entity=user_id",
            400,
            "parameter `cohort` is required",
        ),
        ("/api/v1/nothing-here", 404, "no such endpoint"),
    ] {
        let response = server.get(target);
        assert_eq!(response.status, status, "GET {target}\n{response}");
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{response}"
        );
        let message = response.error_message();
        assert!(
            message.contains(expected),
            "GET {target}: expected the message to contain {expected:?}, got {message:?}"
        );
    }
}

// ---------------------------------------------------------------- tree, targets, retention

#[test]
fn the_tree_with_changes_and_contributions() {
    let server = Served::shop();
    let tree = server.json("/api/v1/tree?period=2026-03-09");
    assert_eq!(tree["grain"], "week");
    assert_eq!(tree["period"], "2026-03-09");
    assert_eq!(tree["previous_period"], "2026-03-02");
    let root = &tree["roots"][0];
    assert_eq!(root["metric"], "revenue");
    // Hand counts: revenue 60 -> 90, orders 3 -> 5, aov 20 -> 18.
    assert_eq!(number(&root["value"]), 90.0);
    assert_eq!(number(&root["previous"]), 60.0);
    assert_eq!(number(&root["change"]), 30.0);
    assert_eq!(root["link"], "decomposed");
    let inputs = root["inputs"].as_array().unwrap();
    let orders = inputs.iter().find(|n| n["metric"] == "orders").unwrap();
    let aov = inputs.iter().find(|n| n["metric"] == "aov").unwrap();
    assert_eq!(number(&orders["value"]), 5.0);
    assert_eq!(number(&aov["previous"]), 20.0);
    assert_eq!(number(&aov["value"]), 18.0);
    // The formula orders * aov is exact: the inputs' contributions add up to the change.
    let sum = number(&orders["contribution"]) + number(&aov["contribution"]);
    assert!((sum - 30.0).abs() < 1e-9, "contributions add up to {sum}");
    assert!(number(&orders["contribution"]) > 0.0 && number(&aov["contribution"]) < 0.0);
}

#[test]
fn targets_and_their_status() {
    let server = Served::start("shop", |project| {
        let text = fs_err::read_to_string(project).unwrap();
        let text = text.replacen(
            "    formula: orders * aov\n",
            "    formula: orders * aov\n    target: { value: 150, period: week, by: 2026-03-30 }\n",
            1,
        );
        fs_err::write(project, text).unwrap();
    });
    let targets = server.json("/api/v1/targets");
    let list = targets["targets"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{targets}");
    let revenue = &list[0];
    assert_eq!(revenue["metric"], "revenue");
    assert_eq!(
        revenue["target"],
        json!({"value": 150.0, "period": "week", "by": "2026-03-30", "start": null})
    );
    // The last complete week is the second one: revenue 90.
    assert_eq!(revenue["period"], "2026-03-09");
    assert_eq!(number(&revenue["actual"]), 90.0);
    // A line through 60 and 90 rises 30 a week: 90 + 3 × 30 = 180 in the week of 03-30.
    assert!(
        (number(&revenue["projected"]) - 180.0).abs() < 1e-9,
        "{revenue}"
    );
    assert_eq!(revenue["status"], "on_track");
    assert_eq!(
        server.json("/api/v1/targets?metric=orders")["targets"],
        json!([])
    );
}

#[test]
fn retention_matches_the_hand_count() {
    // A read token (here: anyone, no tokens being set) asks for what the project declares.
    let server = Served::start("retention", |project| {
        let mut text = fs_err::read_to_string(project).unwrap();
        text.push_str("discovery:\n  activity: app.events.event_time\n  onboarding:\n    signup: app.users.signed_up_at\n");
        fs_err::write(project, text).unwrap();
    });
    let retention = server.json(
        "/api/v1/retention?cohort=app.users.signed_up_at&activity=app.events.event_time&entity=user_id&grain=day",
    );
    let rates: Vec<String> = retention["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["cohort"].as_str().unwrap(),
                c["period"].as_str().unwrap(),
                c["rate"]
            )
        })
        .collect();
    // tests/it/retention.rs: rolling days, active on period N.
    assert_eq!(
        rates,
        [
            "2026-01-01 0 0.5",
            "2026-01-01 1 0.5",
            "2026-01-01 2 0.5",
            "2026-01-01 3 null",
            "2026-01-02 0 1.0",
            "2026-01-02 1 0.0",
            "2026-01-02 2 0.0",
            "2026-01-02 3 null",
        ]
    );
}

// ---------------------------------------------------------------- auth, roles, CORS

#[test]
fn tokens_roles_and_admin_sql() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    let hash = sha256_hex("admin-secret");
    fs_err::write(tokens.path(), format!("# admins\nadmin {hash} ops\n")).unwrap();
    let tokens_path = tokens.path().to_str().unwrap().to_string();
    let server = Served::start_with(
        "shop",
        |_| {},
        &[
            "--tokens-file",
            &tokens_path,
            "--enable-sql",
            "--cors-origin",
            "http://dash.example",
        ],
        &[("LODESTAR_READ_TOKENS", "read-secret, other-reader")],
    );
    // Probes stay open.
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);
    // No token, a wrong one, a malformed header: the same bare 401.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Basic cmVhZC1zZWNyZXQ=")],
        vec![("Authorization", "Bearer read-secretx")],
    ] {
        let response = server.request("/api/v1/metrics", &headers);
        assert_eq!(response.status, 401, "{headers:?}\n{response}");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        assert_eq!(
            response.json(),
            json!({"error": {"code": "unauthorized", "message": "unauthorized"}})
        );
    }
    let read = [("Authorization", "Bearer read-secret")];
    let admin = [("Authorization", "Bearer admin-secret")];
    assert_eq!(server.request("/api/v1/metrics", &read).status, 200);
    assert_eq!(
        server
            .request(
                "/api/v1/metrics",
                &[("Authorization", "Bearer other-reader")]
            )
            .status,
        200
    );
    assert_eq!(
        server
            .request("/api/v1/metrics/orders/series", &admin)
            .status,
        200
    );
    // Ad-hoc SQL: admins only. The shop has 10 orders.
    let query = r#"{"sql": "SELECT count(*) AS n FROM app.orders"}"#;
    let denied = server.post("/api/v1/sql", &read, query);
    assert_eq!(denied.status, 403, "{denied}");
    assert!(
        denied.error_message().contains("needs an admin token"),
        "{denied}"
    );
    assert_eq!(server.post("/api/v1/sql", &[], query).status, 401);
    let answer = server.post("/api/v1/sql", &admin, query);
    assert_eq!(answer.status, 200, "{answer}");
    assert_eq!(answer.json()["rows"], json!([{"n": 10}]));
    // Still read-only for admins.
    let write = server.post(
        "/api/v1/sql",
        &admin,
        r#"{"sql": "CREATE TABLE t AS SELECT 1"}"#,
    );
    assert_eq!(write.status, 400, "{write}");
    assert!(write.error_message().contains("only reads data"), "{write}");
    // CORS for the configured origin.
    let cors = server.request(
        "/api/v1/metrics",
        &[
            ("Authorization", "Bearer read-secret"),
            ("Origin", "http://dash.example"),
        ],
    );
    assert_eq!(
        cors.header("access-control-allow-origin"),
        Some("http://dash.example"),
        "{cors}"
    );
    // Tokens never reach the log.
    let log = server.log();
    for secret in ["read-secret", "admin-secret", "other-reader"] {
        assert!(!log.contains(secret), "the log shows a token:\n{log}");
    }
}

#[test]
fn sql_is_off_unless_enabled() {
    let server = Served::start_with("shop", |_| {}, &[], &[("LODESTAR_ADMIN_TOKENS", "boss")]);
    let answer = server.post(
        "/api/v1/sql",
        &[("Authorization", "Bearer boss")],
        r#"{"sql": "SELECT 1"}"#,
    );
    assert_eq!(answer.status, 403, "{answer}");
    assert!(
        answer.error_message().contains("ad-hoc SQL is disabled"),
        "{answer}"
    );
}

/// SHA-256 in hex, from the system's `sha256sum`: an implementation other than the server's.
pub(crate) fn sha256_hex(text: &str) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils) is needed by this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let hex = String::from_utf8(output.stdout).unwrap();
    hex.split_whitespace().next().unwrap().to_string()
}

// ---------------------------------------------------------------- request ids, logs, shutdown

#[test]
fn request_ids_logs_and_a_clean_stop_on_sigterm() {
    let mut server = Served::shop();
    let given = server.request("/api/v1/metrics", &[("X-Request-Id", "trace-42")]);
    assert_eq!(given.header("x-request-id"), Some("trace-42"));
    let made = server.get("/api/v1/metrics/nope");
    let id = made
        .header("x-request-id")
        .expect("a request id")
        .to_string();
    assert!(!id.is_empty());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
    let exit = server.child.wait().expect("the server's exit status");
    assert_eq!(exit.code(), Some(0), "{}", server.log());
    // The log line of each answer carries its id and status.
    let log = server.final_log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.contains("trace-42") && log.contains("status=200"),
        "{log}"
    );
    assert!(log.contains(&id) && log.contains("status=404"), "{log}");
}

// ---------------------------------------------------------------- cache

#[test]
fn answers_are_cached_with_etags_until_the_data_changes() {
    let server = Served::start_with("shop", |_| {}, &["--refresh-interval", "1"], &[]);
    let target = "/api/v1/metrics/revenue/series?grain=week";
    let first = server.get(target);
    assert_eq!(first.status, 200, "{first}");
    let etag = first.header("etag").expect("an ETag").to_string();
    assert_eq!(first.header("cache-control"), Some("private, max-age=1"));
    // The same question written differently (a trailing `&`): the cached answer.
    let again = server.get("/api/v1/metrics/revenue/series?grain=week&");
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(again.body, first.body);
    let not_modified = server.request(target, &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304, "{not_modified}");
    assert!(not_modified.body.is_empty());
    // A new paid order of 5 in the second week: revenue 90 -> 95 once the check sees it.
    let orders = server.scratch().path().join("data/orders.csv");
    let mut text = fs_err::read_to_string(&orders).unwrap();
    text.push_str("11,u8,2026-03-13T10:00:00,paid,5.0,DE\n");
    fs_err::write(&orders, text).unwrap();
    let mut last = Value::Null;
    for _ in 0..600 {
        let response = server.get(target);
        assert_eq!(response.status, 200, "{response}");
        last = response.json()["rows"][1]["revenue"].clone();
        if last == json!(95.0) {
            assert_ne!(response.header("etag"), Some(etag.as_str()));
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "the answer never showed the new order: revenue {last}\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------- Prometheus

#[test]
fn prometheus_metrics_count_requests_cache_hits_and_show_the_north_star() {
    let server = Served::shop();
    let target = "/api/v1/metrics/revenue/series?grain=week";
    assert_eq!(server.get(target).status, 200);
    assert_eq!(server.get(target).status, 200);
    assert_eq!(server.get("/api/v1/metrics/nope/series").status, 404);
    let response = server.get("/metrics");
    assert_eq!(response.status, 200, "{response}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{response}"
    );
    let text = response.text();
    let route = "route=\"/api/v1/metrics/{name}/series\"";
    for line in [
        format!("lodestar_http_requests_total{{{route},method=\"GET\",status=\"200\"}} 2"),
        format!("lodestar_http_requests_total{{{route},method=\"GET\",status=\"404\"}} 1"),
        format!("lodestar_http_request_duration_seconds_count{{{route}}} 3"),
        "lodestar_cache_hits_total 1".to_string(),
        // The last complete week's revenue, by hand: 90.
        "lodestar_north_star_value{metric=\"revenue\",grain=\"week\"} 90".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line `{line}` in:\n{text}"
        );
    }
}

// ---------------------------------------------------------------- reload

#[test]
fn sighup_reloads_the_project_and_a_bad_file_keeps_the_old_one() {
    // A long refresh interval: only SIGHUP reloads here.
    let server = Served::start_with("shop", |_| {}, &["--refresh-interval", "3600"], &[]);
    let project = server.scratch().project();
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success());
    };
    let metric_count = || {
        server.json("/api/v1/metrics")["metrics"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(metric_count(), 7);
    let mut text = fs_err::read_to_string(&project).unwrap();
    text.push_str(
        "  refunds: { table: app.orders, time: ordered_at, measure: count(*), filter: \"status = 'refunded'\" }\n",
    );
    fs_err::write(&project, &text).unwrap();
    hangup();
    wait_until(&server, "project reloaded");
    assert_eq!(metric_count(), 8);
    // One refunded order, in the first week (by hand).
    let refunds = server.json("/api/v1/metrics/refunds/series?grain=week");
    assert_eq!(refunds["rows"][0]["refunds"], 1, "{refunds}");

    // A broken file is refused, logged, and the previous project keeps serving.
    fs_err::write(
        &project,
        text.replace("measure: count(*), filter", "measure: ["),
    )
    .unwrap();
    hangup();
    wait_until(&server, "project reload refused");
    assert_eq!(metric_count(), 8);
    assert_eq!(
        server.json("/api/v1/metrics/refunds/series?grain=week")["rows"][0]["refunds"],
        1
    );
    assert!(server.log().contains("lodestar.yaml"), "{}", server.log());
}

/// Waits (bounded) for the running server to log `needle`.
pub(crate) fn wait_until(server: &Served, needle: &str) {
    for _ in 0..1200 {
        if server.log().contains(needle) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the server never logged {needle:?}:\n{}", server.log());
}

#[test]
fn logs_can_be_json_lines() {
    let server = Served::start_with("shop", |_| {}, &[], &[("LODESTAR_LOG_FORMAT", "json")]);
    let answer = server.request("/api/v1/metrics", &[("X-Request-Id", "json-7")]);
    assert_eq!(answer.status, 200);
    wait_until(&server, "json-7");
    let log = server.log();
    let line = log
        .lines()
        .filter(|l| l.contains("json-7"))
        .find(|l| l.contains("answered"))
        .unwrap_or_else(|| panic!("no log line for the request:\n{log}"));
    let record: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(record["fields"]["status"], 200, "{record}");
    assert_eq!(record["span"]["id"], "json-7", "{record}");
    assert_eq!(record["span"]["path"], "/api/v1/metrics", "{record}");
}

// ---------------------------------------------------------------- discover

/// `GET /api/v1/discover` ranks the candidates as `lodestar discover --format json` does on
/// the same project, with the CLI's options as parameters.
#[test]
fn discover_ranks_as_the_cli_does() {
    let server = Served::example();
    let api = server.json(
        "/api/v1/discover?onboarded=app.users.signed_up_at&within=1d&retained=14d&window=7d&max_k=3&min_support=50",
    );
    let run = Run::of(&mut lodestar_project(
        example_project(),
        [
            "discover",
            "--onboarded",
            "app.users.signed_up_at",
            "--within",
            "1d",
            "--retained",
            "14d",
            "--window",
            "7d",
            "--max-k",
            "3",
            "--min-support",
            "50",
            "--format",
            "json",
        ],
    ))
    .success();
    let cli: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    let cli = cli.as_array().expect("a JSON array of candidates");
    let candidates = api["candidates"].as_array().expect("candidates");
    assert!(
        candidates.len() >= 3,
        "the example data has value moments to rank: {api}"
    );
    assert_eq!(candidates.len(), cli.len(), "as many candidates as the CLI");
    for (rank, (a, c)) in candidates.iter().zip(cli).enumerate() {
        for key in ["activity", "at_least", "doers", "users", "doers_retained"] {
            assert_eq!(a[key], c[key], "candidate {}: {key}", rank + 1);
        }
        assert!(
            (number(&a["phi"]) - number(&c["phi"])).abs() < 1e-12,
            "candidate {}: phi {} against the CLI's {}",
            rank + 1,
            a["phi"],
            c["phi"]
        );
    }
    assert_eq!(api["window"], "7d");
    assert_eq!(api["max_k"], 3);
    assert_eq!(api["training"]["min_support"], 50);

    // The same table as an Arrow stream.
    let response = server.request(
        "/api/v1/discover?onboarded=app.users.signed_up_at&window=7d&max_k=3&min_support=50",
        &[("Accept", "application/vnd.apache.arrow.stream")],
    );
    assert_eq!(response.status, 200, "{response}");
    let batches: Vec<RecordBatch> = StreamReader::try_new(response.body.as_slice(), None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, cli.len());
}

#[test]
fn discover_refuses_bad_parameters_naming_them() {
    let server = Served::example();
    for (query, expected) in [
        ("", "parameter `onboarded` is required"),
        (
            "onboarded=app.users.signed_up_at&within=2x",
            "parameter `within`: cannot read `2x` as a length of time",
        ),
        (
            "onboarded=app.users.signed_up_at&min_support=lots",
            "parameter `min_support`",
        ),
        (
            "onboarded=app.users.signed_up_at&max_k=0",
            "parameter `max_k`: thresholds go from 1 to 50, not 0",
        ),
        (
            "onboarded=app.users.signed_up_at&within=20d",
            "parameter `retained` must be at least parameter `within`",
        ),
        (
            "onboarded=app.users.signed_up_at&where=1=1",
            "unknown parameter `where`",
        ),
    ] {
        let response = server.get(&format!("/api/v1/discover?{query}"));
        assert_eq!(response.status, 400, "{query}: {response}");
        let message = response.error_message();
        assert!(
            message.contains(expected),
            "{query}: {message:?} does not say {expected:?}"
        );
    }
}

// ---------------------------------------------------------------- dashboard

/// The dashboard's page and assets hold no data: served without a token, with a
/// Content-Security-Policy that allows this origin only. (tests/it/dashboard.rs runs it.)
#[test]
fn the_dashboard_is_served_without_a_token_and_locked_to_its_origin() {
    let server = Served::start_with("shop", |_| {}, &[], &[("LODESTAR_READ_TOKENS", "r3ad")]);
    assert_eq!(server.get("/api/v1/metrics").status, 401);
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/dashboard.js", "text/javascript"),
        ("/assets/dashboard.css", "text/css"),
    ] {
        let response = server.get(path);
        assert_eq!(response.status, 200, "{path}: {response}");
        assert!(
            response
                .header("content-type")
                .unwrap_or_default()
                .starts_with(kind),
            "{path}: {response}"
        );
        let csp = response
            .header("content-security-policy")
            .unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
    }
    let page = server.get("/").text();
    assert!(page.contains("src=\"/assets/dashboard.js\""));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    assert_eq!(server.get("/assets/nothing.js").status, 404);
}

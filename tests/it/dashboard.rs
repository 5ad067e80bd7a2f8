//! The web dashboard of `lodestar serve`, in a real browser: headless Chromium driven over
//! WebDriver (chromedriver), on the example project. What the page shows is checked against
//! the API's answers and the CLI's.
//!
//! Chromium is found through `LODESTAR_CHROMIUM`, else `chromium` or `chromium-browser` on
//! PATH; chromedriver through `LODESTAR_CHROMEDRIVER`, else `chromedriver` on PATH (Debian:
//! `apt-get install -y chromium chromium-driver`). Without them the test says so and passes,
//! unless `LODESTAR_REQUIRE_BROWSER` is set (as CI does), when it fails.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::server::Served;
use crate::support::{Run, example_project, lodestar_project};

/// The example project's retention, as the page is asked for it in its address.
const RETENTION: &str = "cohort=app.users.signed_up_at&activity=app.events.event_time&entity=user_id&grain=week&periods=8";

/// How long the page may take to show something before the test gives up (a bound for a
/// slow machine, not a timing being tested).
const PATIENCE: Duration = Duration::from_secs(120);

fn on_path(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, or why the test cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = on_path("LODESTAR_CHROMIUM", &["chromium", "chromium-browser"]);
    let driver = on_path("LODESTAR_CHROMEDRIVER", &["chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Ok((chromium, driver)),
        (chromium, _) => Err(format!(
            "the dashboard test needs {} to drive a browser: install them (Debian/Ubuntu: \
             `apt-get install -y chromium chromium-driver`) or point LODESTAR_CHROMIUM and \
             LODESTAR_CHROMEDRIVER at them",
            if chromium.is_some() {
                "chromedriver"
            } else {
                "Chromium and chromedriver"
            }
        )),
    }
}

/// A running chromedriver, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    fn start(binary: &PathBuf) -> Driver {
        // A free port, given back to the system for chromedriver to take.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let driver = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // It answers once it listens. (Not through `http_request`: chromedriver keeps the
        // connection open despite `Connection: close`.)
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(driver.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not become ready on {}",
                driver.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session in headless Chromium with a fresh profile.
async fn session(driver: &Driver, chromium: &PathBuf, profile: &TempDir) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,2000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://{}", driver.addr))
        .await
        .expect("cannot open a WebDriver session in Chromium")
}

/// Waits for the element matching `css` (the page fetches, then draws).
async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("the page never showed `{css}`: {e}"))
}

async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

async fn attr(element: &fantoccini::elements::Element, name: &str) -> String {
    element.attr(name).await.unwrap().unwrap_or_default()
}

/// The errors the page's script recorded (uncaught errors, failed API calls).
async fn page_errors(client: &Client) -> Vec<Value> {
    let errors = client
        .execute(
            "return window.__errors || ['no __errors: the script did not run'];",
            vec![],
        )
        .await
        .unwrap();
    errors.as_array().cloned().unwrap_or_default()
}

fn number(text: &str, what: &str) -> f64 {
    text.parse()
        .unwrap_or_else(|_| panic!("{what}: `{text}` is not a number"))
}

#[test]
fn the_dashboard_in_chromium_shows_what_the_api_and_the_cli_compute() {
    let (chromium, driver_binary) = match browser() {
        Ok(found) => found,
        Err(reason) if std::env::var_os("LODESTAR_REQUIRE_BROWSER").is_none() => {
            eprintln!("skipped: {reason} (set LODESTAR_REQUIRE_BROWSER to make this a failure)");
            return;
        }
        Err(reason) => panic!("{reason}"),
    };
    let server = Served::example();
    let driver = Driver::start(&driver_binary);
    let profile = tempfile::Builder::new()
        .prefix("lodestar-chromium-")
        .tempdir()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = session(&driver, &chromium, &profile).await;
        let mut checked = check_dashboard(&client, &server).await;
        if checked.is_ok() {
            checked = check_token(&client).await;
        }
        let _ = client.close().await;
        if let Err(message) = checked {
            panic!("{message}\nserver log:\n{}", server.log());
        }
    });
}

async fn check_dashboard(client: &Client, server: &Served) -> Result<(), String> {
    client
        .goto(&format!("http://{}/?{RETENTION}", server.addr))
        .await
        .map_err(|e| e.to_string())?;
    let body = wait_for(client, "body[data-state=ready], body[data-state=error]").await;
    let errors = page_errors(client).await;
    if attr(&body, "data-state").await != "ready" || !errors.is_empty() {
        return Err(format!("the page did not load cleanly: {errors:?}"));
    }

    // The North Star: the value shown is the API's and the CLI's.
    let tree = server.json("/api/v1/tree");
    let root = &tree["roots"][0];
    let north_star = root["metric"].as_str().unwrap();
    let api_value = root["value"].as_f64().unwrap();
    let shown = wait_for(client, "#ns-value").await;
    assert_eq!(
        number(&attr(&shown, "data-value").await, "#ns-value"),
        api_value
    );
    let text = shown.text().await.unwrap().replace(',', "");
    assert!(
        (number(&text, "the North Star's text") - api_value).abs() < 0.005,
        "the page shows {text} for {north_star}, the API {api_value}"
    );
    let run = Run::of(&mut lodestar_project(
        example_project(),
        ["tree", "--format", "csv"],
    ))
    .success();
    let cli_value = run
        .stdout
        .lines()
        .find_map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (cells[0] == north_star && cells[1].is_empty()).then(|| cells[3].to_string())
        })
        .unwrap_or_else(|| panic!("`lodestar tree` has no row for {north_star}\n{run}"));
    assert_eq!(number(&cli_value, "the CLI's value"), api_value);
    let ns_title = wait_for(client, "#ns-name").await;
    assert_eq!(ns_title.text().await.unwrap(), north_star);
    let status = attr(&wait_for(client, "#ns-target").await, "data-status").await;
    let targets = server.json(&format!("/api/v1/targets?metric={north_star}"));
    assert_eq!(status, targets["targets"][0]["status"].as_str().unwrap());

    // Its chart has a point per period of the API's series.
    let grain = tree["grain"].as_str().unwrap();
    let series = server.json(&format!(
        "/api/v1/metrics/{north_star}/series?grain={grain}"
    ));
    assert_eq!(
        count(client, "#ns-chart circle.point").await,
        series["rows"].as_array().unwrap().len()
    );

    // Drill-down: a click on an input of the North Star shows that metric's chart.
    let input = root["inputs"][0]["metric"].as_str().unwrap();
    let button = wait_for(
        client,
        &format!("#tree button.metric[data-metric='{input}']"),
    )
    .await;
    let numbers = client
        .find(Locator::Css(&format!(
            "#tree li[data-metric='{input}'] > .numbers"
        )))
        .await
        .unwrap();
    assert_eq!(
        number(&attr(&numbers, "data-change").await, "the input's change"),
        root["inputs"][0]["change"].as_f64().unwrap()
    );
    button.click().await.map_err(|e| e.to_string())?;
    wait_for(
        client,
        &format!("#drill[data-state=ready][data-metric='{input}']"),
    )
    .await;
    let title = client.find(Locator::Id("drill-title")).await.unwrap();
    assert_eq!(title.text().await.unwrap(), input);
    let series = server.json(&format!("/api/v1/metrics/{input}/series?grain={grain}"));
    assert_eq!(
        count(client, "#drill-chart circle.point").await,
        series["rows"].as_array().unwrap().len(),
        "{input}'s chart has a point per period"
    );
    assert_eq!(count(client, "#drill-chart path.line").await, 1);

    // A dimension: one line per value of it.
    let info = server.json(&format!("/api/v1/metrics/{input}"));
    let dimension = info["dimensions"][0].as_str().expect("a dimension");
    let select = client.find(Locator::Id("drill-dimension")).await.unwrap();
    select
        .select_by_value(dimension)
        .await
        .map_err(|e| e.to_string())?;
    wait_for(
        client,
        &format!("#drill[data-state=ready][data-dimension='{dimension}']"),
    )
    .await;
    let by = server.json(&format!(
        "/api/v1/metrics/{input}/series?grain={grain}&by={dimension}"
    ));
    let values: BTreeSet<String> = by["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[dimension].as_str().unwrap_or("(null)").to_string())
        .collect();
    assert!(values.len() > 1, "{input} has several {dimension} values");
    let mut lines = BTreeSet::new();
    for line in client
        .find_all(Locator::Css("#drill-chart path.line"))
        .await
        .unwrap()
    {
        lines.insert(attr(&line, "data-series").await);
    }
    assert_eq!(lines, values, "one line per {dimension}");

    // The retention heat map: a cell per cell of the API's table, with its rate.
    wait_for(client, "#retention[data-state=ready]").await;
    let retention = server.json(&format!("/api/v1/retention?{RETENTION}"));
    let cells = retention["cells"].as_array().unwrap();
    assert!(!cells.is_empty());
    assert_eq!(count(client, "#retention g.cell").await, cells.len());
    let first = &cells[1];
    let cell = client
        .find(Locator::Css(&format!(
            "#retention g.cell[data-cohort='{}'][data-period='{}']",
            first["cohort"].as_str().unwrap(),
            first["period"].as_str().unwrap()
        )))
        .await
        .unwrap();
    assert_eq!(
        number(&attr(&cell, "data-rate").await, "a cell's rate"),
        first["rate"].as_f64().unwrap()
    );

    let errors = page_errors(client).await;
    if !errors.is_empty() {
        return Err(format!("the page recorded errors: {errors:?}"));
    }
    Ok(())
}

/// On a server with tokens, the page asks for one, and once it is pasted shows the data.
async fn check_token(client: &Client) -> Result<(), String> {
    let token = "dashboard-read-token";
    let server = Served::start_with("shop", |_| {}, &[], &[("LODESTAR_READ_TOKENS", token)]);
    client
        .goto(&format!("http://{}/", server.addr))
        .await
        .map_err(|e| e.to_string())?;
    wait_for(client, "body[data-state=needs-token]").await;
    let form = client.find(Locator::Id("token-form")).await.unwrap();
    assert!(form.is_displayed().await.unwrap(), "the token form shows");
    let input = client.find(Locator::Id("token")).await.unwrap();
    input.send_keys(token).await.map_err(|e| e.to_string())?;
    client
        .find(Locator::Css("#token-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let body = wait_for(client, "body[data-state=ready], body[data-state=error]").await;
    let errors = page_errors(client).await;
    if attr(&body, "data-state").await != "ready" || !errors.is_empty() {
        return Err(format!("with the token, the page did not load: {errors:?}"));
    }
    let tree = server
        .request(
            "/api/v1/tree",
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .json();
    let shown = client.find(Locator::Id("ns-value")).await.unwrap();
    assert_eq!(
        number(&attr(&shown, "data-value").await, "#ns-value"),
        tree["roots"][0]["value"].as_f64().unwrap()
    );
    let kept = client
        .execute("return sessionStorage.getItem('lodestar.token');", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(token), "the token is kept for this tab");
    Ok(())
}

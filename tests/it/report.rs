//! `lodestar report`: the HTML file opened in headless Chromium (a screenshot, and the DOM it
//! built), its numbers checked against the CSV of `lodestar compute`, `tree`, `targets`,
//! `retention` and `discover` over the same project; and its errors.
//!
//! Chromium is found through `LODESTAR_CHROMIUM`, else `chromium` or `chromium-browser` on
//! PATH; without it the test fails and says how to install it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::support::{
    Run, Scratch, Table, cell_matches, example_project, lodestar_project, test_dir,
};

const RETENTION: [&str; 6] = [
    "--cohort",
    "app.users.signed_up_at",
    "--activity",
    "app.events.event_time",
    "--entity",
    "user_id",
];

/// A directory for this test's files, kept after the run (under cargo's target/tmp) so the
/// screenshot can be looked at; emptied first.
fn output_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(&dir).unwrap();
    dir
}

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("LODESTAR_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the report test needs Chromium to render the report, and found none: install it \
         (Debian/Ubuntu: `apt-get install -y chromium chromium-driver`) or point \
         LODESTAR_CHROMIUM at a Chromium or Chrome binary"
    );
}

/// Chromium, headless, with a fresh profile and nothing fetched in the background.
fn headless(profile: &TempDir) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,2000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    cmd
}

/// A fresh, empty Chromium profile directory, removed when dropped.
fn profile() -> TempDir {
    tempfile::Builder::new()
        .prefix("lodestar-chromium-")
        .tempdir()
        .expect("cannot create a temporary directory")
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 33 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "not a PNG image"
    );
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The attributes of every element named `tag` in `html` that has attribute `having`.
pub(crate) fn elements(html: &str, tag: &str, having: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        rest = &rest[at + open.len()..];
        let end = rest.find('>').expect("a tag ends");
        let attributes = parse_attributes(&rest[..end]);
        if attributes.contains_key(having) {
            out.push(attributes);
        }
    }
    out
}

/// `name="value"` pairs, as Chromium serializes them (double quotes, `&quot;` and `&amp;`).
fn parse_attributes(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_string();
        let after = &rest[eq + 2..];
        let close = after.find('"').expect("a quoted value ends");
        let value = after[..close]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        out.insert(name, value);
        rest = after[close + 1..].trim_start();
    }
    out
}

fn csv(project: &Path, args: &[&str]) -> Table {
    let mut all = args.to_vec();
    all.extend(["--format", "csv"]);
    let run = Run::of(&mut lodestar_project(project, &all)).success();
    Table::parse(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
}

fn assert_cell(expected: &str, actual: &str, what: &str) {
    assert!(
        cell_matches(expected, actual),
        "{what}: the report shows {actual:?}, the CLI computes {expected:?}"
    );
}

#[test]
fn report_renders_in_chromium_and_its_numbers_match_the_cli() {
    let project = example_project();
    let dir = output_dir("report");
    let report = dir.join("report.html");
    let mut args = vec!["report", "--output", report.to_str().unwrap()];
    args.extend(RETENTION);
    let run = Run::of(&mut lodestar_project(project, &args)).success();
    assert!(run.stderr.contains("wrote"), "{run}");

    // Self-contained: no script, no stylesheet or image to fetch, no address but SVG's namespace.
    let html = fs_err::read_to_string(&report).unwrap();
    for needle in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!html.contains(needle), "the report holds `{needle}`");
    }
    let without_namespace = html.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !without_namespace.contains("http://") && !without_namespace.contains("https://"),
        "the report refers to a network address"
    );

    // Rendered: a real screenshot, and the DOM Chromium built from the file.
    let screenshot = dir.join("report.png");
    let shot = Run::of(
        headless(&profile())
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg(file_url(&report)),
    )
    .success();
    let png = fs_err::read(&screenshot).unwrap_or_else(|e| panic!("{e}\n{shot}"));
    let (width, height) = png_size(&png);
    assert_eq!((width, height), (1280, 2000), "the screenshot's size");
    assert!(
        png.len() > 50_000,
        "a screenshot of {} bytes is blank",
        png.len()
    );
    println!("screenshot of the report: {}", screenshot.display());
    let dom = Run::of(
        headless(&profile())
            .arg("--dump-dom")
            .arg(file_url(&report)),
    )
    .success()
    .stdout;
    for heading in [
        "The metric tree",
        "Retention",
        "Value moments",
        "Against its target",
    ] {
        assert!(dom.contains(heading), "the page has no `{heading}` section");
    }
    assert!(dom.matches("<svg").count() >= 3, "the charts are SVG");

    // The North Star's series: every period of `lodestar compute`, with its value.
    let compute = csv(project, &["compute", "nights_booked", "--grain", "week"]);
    let series = elements(&dom, "tr", "data-period");
    assert!(series.len() > 20, "the example covers six months of weeks");
    assert_eq!(
        series.len(),
        compute.rows.len(),
        "the report's series has as many periods as `lodestar compute`"
    );
    for ((period, value), shown) in compute
        .column("period")
        .iter()
        .zip(compute.column("nights_booked"))
        .zip(&series)
    {
        assert_eq!(shown["data-metric"], "nights_booked");
        assert_eq!(shown["data-period"], *period);
        assert_cell(
            value,
            &shown["data-value"],
            &format!("nights_booked in {period}"),
        );
    }

    // The tree: each metric's value, previous value and contribution, in the same order.
    let tree = csv(project, &["tree"]);
    let nodes = elements(&dom, "tr", "data-depth");
    let metrics: Vec<&str> = nodes.iter().map(|n| n["data-metric"].as_str()).collect();
    assert_eq!(metrics, tree.column("metric"), "the tree's metrics");
    for (i, node) in nodes.iter().enumerate() {
        for (column, attribute) in [
            ("value", "data-value"),
            ("previous", "data-previous"),
            ("contribution", "data-contribution"),
        ] {
            assert_cell(
                tree.column(column)[i],
                &node[attribute],
                &format!("{} of {} in the tree", column, metrics[i]),
            );
        }
    }

    // The target's status.
    let targets = csv(project, &["targets", "nights_booked"]);
    let target = elements(&dom, "p", "data-status");
    assert_eq!(target.len(), 1, "one target paragraph");
    assert_eq!(target[0]["data-status"], targets.column("status")[0]);
    assert_cell(
        targets.column("target")[0],
        &target[0]["data-target"],
        "the target",
    );

    // The heat map: a shaded cell for every rate of `lodestar retention`, and no other.
    let mut retention_args = vec!["retention", "--grain", "week", "--periods", "12"];
    retention_args.extend(RETENTION);
    let retention = csv(project, &retention_args);
    let expected: BTreeMap<(String, String), String> = (0..retention.rows.len())
        .filter(|&i| !retention.column("rate")[i].is_empty())
        .map(|i| {
            (
                (
                    retention.column("cohort")[i].to_string(),
                    retention.column("period")[i].to_string(),
                ),
                retention.column("rate")[i].to_string(),
            )
        })
        .collect();
    let cells = elements(&dom, "g", "data-cohort");
    assert!(!cells.is_empty(), "the heat map has cells");
    assert_eq!(cells.len(), expected.len(), "the heat map's cells");
    for cell in &cells {
        let key = (cell["data-cohort"].clone(), cell["data-period"].clone());
        let rate = expected
            .get(&key)
            .unwrap_or_else(|| panic!("the heat map has a cell {key:?} the CLI has no rate for"));
        assert_cell(rate, &cell["data-rate"], &format!("retention of {key:?}"));
    }

    // The discovery ranking: the first ten of `lodestar discover`, onboarding at the cohort.
    let discover = csv(
        project,
        &[
            "discover",
            "--onboarded",
            "app.users.signed_up_at",
            "--activity",
            "app.events.event_time",
        ],
    );
    let ranked = elements(&dom, "tr", "data-activity");
    assert!(!ranked.is_empty(), "the ranking has candidates");
    assert_eq!(
        ranked.len(),
        discover.rows.len().min(10),
        "ranked candidates"
    );
    for (i, row) in ranked.iter().enumerate() {
        assert_eq!(row["data-activity"], discover.column("activity")[i]);
        assert_eq!(row["data-at-least"], discover.column("at_least")[i]);
        assert_cell(discover.column("phi")[i], &row["data-phi"], "phi");
    }
}

#[test]
fn report_without_retention_or_onboarding_says_how_to_include_them() {
    let dir = output_dir("report-notes");
    let report = dir.join("shop.html");
    let project = test_dir("fixtures/shop/lodestar.yaml");
    Run::of(&mut lodestar_project(
        &project,
        ["report", "-o", report.to_str().unwrap()],
    ))
    .success();
    let html = fs_err::read_to_string(&report).unwrap();
    assert!(
        html.contains("<h2>revenue</h2>"),
        "the north star's section"
    );
    let notes = elements(&html, "p", "class")
        .into_iter()
        .filter(|p| p["class"] == "note")
        .count();
    assert_eq!(
        notes, 2,
        "retention and discovery are left out with a note each"
    );
    assert!(html.contains("--cohort") && html.contains("--onboarded"));
    // The tree and the series, with the shop's hand counts (fixtures/shop/README.md).
    let nodes = elements(&html, "tr", "data-depth");
    let revenue = &nodes[0];
    assert_eq!(revenue["data-metric"], "revenue");
    assert_cell("90", &revenue["data-value"], "revenue in the week of 03-09");
    assert_cell(
        "60",
        &revenue["data-previous"],
        "revenue in the week of 03-02",
    );
    assert_cell("30", &revenue["data-contribution"], "revenue's change");
    // Its weekly series: 60 then 90.
    let series: Vec<(String, String)> = elements(&html, "tr", "data-period")
        .into_iter()
        .map(|r| (r["data-period"].clone(), r["data-value"].clone()))
        .collect();
    assert_eq!(series.len(), 2, "{series:?}");
    assert_eq!(series[0].0, "2026-03-02");
    assert_cell("60", &series[0].1, "revenue in the week of 03-02");
    assert_cell("90", &series[1].1, "revenue in the week of 03-09");
}

#[test]
fn report_of_an_unknown_metric_is_an_error_and_writes_nothing() {
    let dir = output_dir("report-unknown");
    let report = dir.join("report.html");
    let project = test_dir("fixtures/shop/lodestar.yaml");
    let run = Run::of(&mut lodestar_project(
        &project,
        [
            "report",
            "no_such_metric",
            "--output",
            report.to_str().unwrap(),
        ],
    ))
    .expect_code(1);
    assert!(run.stderr.contains("no_such_metric"), "{run}");
    assert_eq!(
        fs_err::read_dir(&dir).unwrap().count(),
        0,
        "nothing written\n{run}"
    );
}

#[test]
fn report_into_a_missing_directory_or_onto_a_directory_is_an_error() {
    let dir = output_dir("report-missing-dir");
    let report = dir.join("no/such/dir/report.html");
    let project = test_dir("fixtures/shop/lodestar.yaml");
    let run = Run::of(&mut lodestar_project(
        &project,
        ["report", "--output", report.to_str().unwrap()],
    ))
    .expect_code(1);
    assert!(
        run.stderr.contains("does not exist") && run.stderr.contains("report.html"),
        "{run}"
    );
    assert_eq!(
        fs_err::read_dir(&dir).unwrap().count(),
        0,
        "nothing written\n{run}"
    );
    // A directory given as the file.
    let run = Run::of(&mut lodestar_project(
        &project,
        ["report", "--output", dir.to_str().unwrap()],
    ))
    .expect_code(1);
    assert!(run.stderr.contains("is a directory"), "{run}");
    assert_eq!(
        fs_err::read_dir(&dir).unwrap().count(),
        0,
        "nothing written\n{run}"
    );
}

/// Without --cohort, the heat map is the project's retention metric's: on the retention
/// fixture, the hand counts of tests/it/retention.rs (rolling days, active on day N).
#[test]
fn report_takes_retention_from_the_projects_retention_metric() {
    let fixture = Scratch::copy_of(&test_dir("fixtures/retention"));
    fs_err::write(
        fixture.project(),
        "\
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
",
    )
    .unwrap();
    let dir = output_dir("report-retention-metric");
    let report = dir.join("report.html");
    Run::of(&mut lodestar_project(
        &fixture.project(),
        ["report", "--grain", "day", "-o", report.to_str().unwrap()],
    ))
    .success();
    let html = fs_err::read_to_string(&report).unwrap();
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
}

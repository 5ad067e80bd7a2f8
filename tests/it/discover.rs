//! Discovery of value moments: a generated data set with a planted value moment, run through
//! the engine in this process and through the `lodestar discover` binary, and checked against
//! an independent count over the same rows.
//!
//! The generator plants one effect: users who `invite` at least twice in their first 24 hours
//! are retained (active again between day 14 and day 21) 70% of the time, against 25% for
//! everyone else. Every 2×2 table Lodestar reports is recounted here in plain Rust from the
//! generated rows, and phi is recomputed as the Pearson correlation of the per-user 0/1
//! vectors, not from the 2×2 formula the engine uses.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate};
use lodestar_core::discovery::{
    Candidate, DateRange, Discovery, DiscoveryRequest, MinSupport, Onboarding, Span, TwoByTwo,
    Verdict,
};
use lodestar_core::model::TableRef;
use lodestar_core::{Engine, config};
use tempfile::TempDir;

use crate::support::{Run, Table, example_project, lodestar_project};

/// 2026-01-01T00:00:00 UTC in seconds.
const START: i64 = 1_767_225_600;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// Signups happen over this many days; nothing is observed from `END` on.
const SIGNUP_DAYS: i64 = 60;
const END: i64 = START + 75 * DAY;
const USERS: u32 = 3_000;

/// splitmix64: a tiny seeded generator, so the data set is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[derive(Debug, Clone)]
struct Event {
    time: i64,
    user: Option<u32>,
    kind: &'static str,
}

#[derive(Debug)]
struct Data {
    /// (user, signed up at).
    users: Vec<(u32, i64)>,
    events: Vec<Event>,
}

fn generate() -> Data {
    let mut rng = Rng(0x0d15_c0fe);
    let mut users = Vec::new();
    let mut events = Vec::new();
    for id in 1..=USERS {
        let t0 = START + rng.below((SIGNUP_DAYS * DAY) as u64) as i64;
        users.push((id, t0));
        // Before signup: browsing that must not count.
        push(&mut events, t0 - HOUR, id, "browse");
        push(&mut events, t0, id, "signup");
        push(&mut events, t0, id, "open");
        let first_day = |rng: &mut Rng| t0 + rng.below(DAY as u64) as i64;
        let invites = match rng.below(100) {
            0..50 => 0,
            50..70 => 1,
            70..85 => 2,
            85..95 => 3,
            _ => 4 + rng.below(3),
        };
        for _ in 0..invites {
            let t = first_day(&mut rng);
            push(&mut events, t, id, "invite");
        }
        // Noise: as common as invites, unrelated to retention.
        for _ in 0..rng.below(6) {
            let t = first_day(&mut rng);
            push(&mut events, t, id, "like");
        }
        for _ in 0..rng.below(4) {
            let t = first_day(&mut rng);
            push(&mut events, t, id, "search");
        }
        // On the boundary: exactly 24 hours after signup is no longer the first day.
        if rng.chance(0.3) {
            push(&mut events, t0 + DAY, id, "search");
        }
        // A second signup event within the first day: the onboarding event's repeats count.
        if rng.chance(0.1) {
            let t = first_day(&mut rng);
            push(&mut events, t.max(t0 + 1), id, "signup");
        }
        let retained = rng.chance(if invites >= 2 { 0.7 } else { 0.25 });
        if retained {
            // Exactly at day 14 sometimes: the window includes its start.
            let t = if rng.chance(0.2) {
                t0 + 14 * DAY
            } else {
                t0 + 14 * DAY + rng.below((7 * DAY) as u64) as i64
            };
            push(&mut events, t, id, "open");
        } else if rng.chance(0.15) {
            // Exactly at day 21: outside a 7-day window, inside an unbounded one.
            push(&mut events, t0 + 21 * DAY, id, "open");
        }
        for _ in 0..rng.below(4) {
            let day = 1 + rng.below(13) as i64;
            let t = t0 + day * DAY + rng.below(DAY as u64) as i64;
            push(&mut events, t, id, "open");
        }
    }
    // Rows without a user belong to nobody's activity.
    for i in 0..20 {
        events.push(Event {
            time: START + i * DAY,
            user: None,
            kind: "invite",
        });
    }
    events.sort_by_key(|e| (e.time, e.user, e.kind));
    Data { users, events }
}

/// Records an event unless it falls after the end of the data.
fn push(events: &mut Vec<Event>, time: i64, user: u32, kind: &'static str) {
    if time < END {
        events.push(Event {
            time,
            user: Some(user),
            kind,
        });
    }
}

fn iso(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .expect("in range")
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The generated data, written once as a project: `app.users` and `app.events`.
fn project() -> &'static (TempDir, Data) {
    static PROJECT: OnceLock<(TempDir, Data)> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let data = generate();
        let dir = tempfile::Builder::new()
            .prefix("lodestar-discover-")
            .tempdir()
            .unwrap();
        let data_dir = dir.path().join("data");
        fs_err::create_dir_all(&data_dir).unwrap();
        let mut users = String::from("user_id,signed_up_at\n");
        for (id, t0) in &data.users {
            users.push_str(&format!("{id},{}\n", iso(*t0)));
        }
        fs_err::write(data_dir.join("users.csv"), users).unwrap();
        let mut events = String::from("event_time,user_id,event_type\n");
        for e in &data.events {
            let user = e.user.map(|u| u.to_string()).unwrap_or_default();
            events.push_str(&format!("{},{user},{}\n", iso(e.time), e.kind));
        }
        fs_err::write(data_dir.join("events.csv"), events).unwrap();
        fs_err::write(
            dir.path().join("lodestar.yaml"),
            "sources:\n  app: { connector: files, path: data }\nmetrics:\n  events: { table: app.events, time: event_time, measure: count(*) }\n",
        )
        .unwrap();
        (dir, data)
    })
}

async fn engine(path: &Path) -> Engine {
    Engine::open(config::load(path).unwrap()).await.unwrap()
}

fn cohort_column() -> Onboarding {
    Onboarding::Column {
        table: TableRef {
            source: "app".into(),
            table: "users".into(),
        },
        time: Some("signed_up_at".into()),
    }
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn day_of(t: i64) -> NaiveDate {
    DateTime::from_timestamp(t, 0).unwrap().date_naive()
}

// ------------------------------------------------------------ the independent computation

/// One user's early counts per activity and whether they were retained.
struct Judged {
    counts: HashMap<&'static str, u32>,
    retained: bool,
}

/// Recounts, from the generated rows, what the request asks; onboarding is the users table.
fn recount(
    data: &Data,
    within: i64,
    retained_at: i64,
    window: Option<i64>,
    cohorts: (Option<NaiveDate>, Option<NaiveDate>),
) -> (Vec<Judged>, u64) {
    let end = data.events.iter().map(|e| e.time).max().unwrap();
    let horizon = retained_at + window.unwrap_or(0);
    let mut by_user: HashMap<u32, Vec<&Event>> = HashMap::new();
    for e in &data.events {
        if let Some(u) = e.user {
            by_user.entry(u).or_default().push(e);
        }
    }
    let mut judged = Vec::new();
    let mut too_young = 0;
    for (id, t0) in &data.users {
        let day = day_of(*t0);
        let in_range =
            cohorts.0.is_none_or(|from| day >= from) && cohorts.1.is_none_or(|to| day <= to);
        if !in_range {
            continue;
        }
        if t0 + horizon > end {
            too_young += 1;
            continue;
        }
        let mut counts = HashMap::new();
        let mut retained = false;
        for e in by_user.get(id).into_iter().flatten() {
            if e.time >= *t0 && e.time < t0 + within {
                *counts.entry(e.kind).or_insert(0) += 1;
            }
            let late =
                e.time >= t0 + retained_at && window.is_none_or(|w| e.time < t0 + retained_at + w);
            retained |= late;
        }
        judged.push(Judged { counts, retained });
    }
    (judged, too_young)
}

/// The 2×2 table of "did `kind` at least `k` times", counted user by user.
fn two_by_two(judged: &[Judged], kind: &str, k: u32) -> TwoByTwo {
    let mut t = TwoByTwo::default();
    for j in judged {
        let did = j.counts.get(kind).copied().unwrap_or(0) >= k;
        match (did, j.retained) {
            (true, true) => t.doers_retained += 1,
            (true, false) => t.doers_churned += 1,
            (false, true) => t.others_retained += 1,
            (false, false) => t.others_churned += 1,
        }
    }
    t
}

/// Pearson's correlation of the two per-user 0/1 vectors.
fn pearson(judged: &[Judged], kind: &str, k: u32) -> f64 {
    let pairs: Vec<(f64, f64)> = judged
        .iter()
        .map(|j| {
            let did = j.counts.get(kind).copied().unwrap_or(0) >= k;
            (f64::from(u8::from(did)), f64::from(u8::from(j.retained)))
        })
        .collect();
    let n = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = pairs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = pairs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let vy: f64 = pairs.iter().map(|(_, y)| (y - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

fn close(what: &str, actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no value, expected {expected}"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual} != {expected}"
    );
}

/// Checks every number of a candidate against the recount.
fn check_candidate(c: &Candidate, judged: &[Judged]) {
    let what = c.label();
    let t = two_by_two(judged, &c.activity, c.at_least);
    assert_eq!(c.table, t, "{what}: the 2×2 table");
    let (a, b, cc, d) = (
        t.doers_retained as f64,
        t.doers_churned as f64,
        t.others_retained as f64,
        t.others_churned as f64,
    );
    let n = a + b + cc + d;
    close(&format!("{what} support"), c.table.support(), (a + b) / n);
    close(
        &format!("{what} retention_did"),
        c.table.retention_did(),
        a / (a + b),
    );
    close(
        &format!("{what} retention_not"),
        c.table.retention_not(),
        cc / (cc + d),
    );
    close(
        &format!("{what} lift"),
        c.table.lift(),
        (a / (a + b)) / (cc / (cc + d)),
    );
    close(
        &format!("{what} precision"),
        c.table.precision(),
        a / (a + b),
    );
    close(&format!("{what} recall"), c.table.recall(), a / (a + cc));
    let phi = pearson(judged, &c.activity, c.at_least);
    close(&format!("{what} phi"), c.table.phi(), phi);
    // Fisher's z: atanh(r) = ln((1 + r) / (1 − r)) / 2, standard error 1/√(n − 3).
    let z = 0.5 * ((1.0 + phi) / (1.0 - phi)).ln();
    let half = 1.959_964 / (n - 3.0).sqrt();
    let (low, high) = c.phi_interval().unwrap();
    assert!((low - (z - half).tanh()).abs() < 1e-5, "{what}: low {low}");
    assert!(
        (high - (z + half).tanh()).abs() < 1e-5,
        "{what}: high {high}"
    );
}

/// Every (activity, k) with at least one doer, as the recount sees it.
fn expected_labels(judged: &[Judged], max_k: u32) -> Vec<(String, u32)> {
    let mut kinds: BTreeMap<&str, ()> = BTreeMap::new();
    for j in judged {
        for (kind, n) in &j.counts {
            if *n > 0 {
                kinds.insert(kind, ());
            }
        }
    }
    let mut out = Vec::new();
    for kind in kinds.keys() {
        for k in 1..=max_k {
            if two_by_two(judged, kind, k).doers() > 0 {
                out.push(((*kind).to_string(), k));
            }
        }
    }
    out
}

fn labels<'a>(candidates: impl Iterator<Item = &'a Candidate>) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = candidates
        .map(|c| (c.activity.clone(), c.at_least))
        .collect();
    out.sort();
    out
}

// ------------------------------------------------------------------------------ the tests

#[tokio::test(flavor = "multi_thread")]
async fn the_planted_value_moment_ranks_first_and_every_number_matches_a_recount() {
    let (dir, data) = project();
    let engine = engine(&dir.path().join("lodestar.yaml")).await;
    let mut request = DiscoveryRequest::new(cohort_column());
    request.window = Some(Span::days(7));
    let d = engine.discover(&request).await.unwrap();

    let (judged, too_young) = recount(data, DAY, 14 * DAY, Some(7 * DAY), (None, None));
    assert_eq!(d.training.users, judged.len() as u64);
    assert_eq!(d.training.too_young, too_young);
    assert_eq!(
        d.training.retained,
        judged.iter().filter(|j| j.retained).count() as u64
    );
    assert!(
        too_young > 0 && judged.len() > 2_000,
        "{too_young} {}",
        judged.len()
    );

    let top = &d.candidates[0];
    assert_eq!(
        (top.activity.as_str(), top.at_least),
        ("invite", 2),
        "{d:#?}"
    );
    let lift = top.table.lift().unwrap();
    assert!(
        (2.0..3.5).contains(&lift),
        "the planted lift is 0.7/0.25: {lift}"
    );

    // Every candidate, ranked or not, recounted; none is missing and none is made up.
    assert_eq!(labels(d.all_candidates()), expected_labels(&judged, 5));
    for c in d.all_candidates() {
        if c.table.phi().is_some() {
            check_candidate(c, &judged);
        } else {
            assert_eq!(c.table, two_by_two(&judged, &c.activity, c.at_least));
        }
    }
    // Ranked by phi, and all ranked ones have the default support (30 users) on both sides.
    let phis: Vec<f64> = d
        .candidates
        .iter()
        .map(|c| c.table.phi().unwrap())
        .collect();
    assert!(phis.windows(2).all(|w| w[0] >= w[1]), "{phis:?}");
    assert!(
        d.candidates
            .iter()
            .all(|c| c.table.doers() >= 30 && c.table.others() >= 30)
    );
    // Everyone opens the app and signs up on their first day: nothing to compare against.
    assert!(
        d.candidates
            .iter()
            .all(|c| c.activity != "open" || c.at_least > 1)
    );
    // Browsing before signup is not early activity.
    assert!(d.all_candidates().all(|c| c.activity != "browse"));

    // The table and the summary say the same, and the summary says what this is not.
    let batch = d.to_record_batch().unwrap();
    assert_eq!(batch.num_rows(), d.candidates.len());
    let summary = d.summary(3);
    assert!(summary.contains("invite at least 2 times"), "{summary}");
    assert!(summary.contains("correlation, not causation"), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unbounded_retention_and_an_onboarding_event_agree_with_the_recount() {
    let (dir, data) = project();
    let engine = engine(&dir.path().join("lodestar.yaml")).await;

    // Retained: any activity at day 14 or later, so the events at exactly day 21 count.
    let mut request = DiscoveryRequest::new(cohort_column());
    request.min_support = Some(MinSupport::Users(1));
    let d = engine.discover(&request).await.unwrap();
    let (judged, too_young) = recount(data, DAY, 14 * DAY, None, (None, None));
    assert_eq!(
        (d.training.users, d.training.too_young),
        (judged.len() as u64, too_young)
    );
    assert_eq!(labels(d.all_candidates()), expected_labels(&judged, 5));
    for c in &d.candidates {
        check_candidate(c, &judged);
    }

    // Onboarded by the first `signup` event: the same users at the same times, so the same
    // tables, except that `signup` itself is no activity and only its repeats count.
    let mut by_event = DiscoveryRequest::new(Onboarding::Event("signup".into()));
    by_event.min_support = Some(MinSupport::Users(1));
    let e = engine.discover(&by_event).await.unwrap();
    assert_eq!(
        (e.training.users, e.training.retained),
        (d.training.users, d.training.retained)
    );
    for c in e.all_candidates() {
        if c.activity == "signup" {
            // Repeats of the onboarding event after it, within the first day.
            let repeats = |j: &Judged| {
                j.counts
                    .get("signup")
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(1)
            };
            let doers = judged.iter().filter(|j| repeats(j) >= c.at_least).count();
            assert_eq!(c.table.doers(), doers as u64, "{}", c.label());
        } else {
            let same = d
                .all_candidates()
                .find(|x| x.activity == c.activity && x.at_least == c.at_least)
                .unwrap();
            assert_eq!(c.table, same.table, "{}", c.label());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_cohort_validates_the_planted_moment() {
    let (dir, data) = project();
    let engine = engine(&dir.path().join("lodestar.yaml")).await;
    let mut request = DiscoveryRequest::new(cohort_column());
    request.window = Some(Span::days(7));
    request.validate_on = Some(DateRange {
        from: Some(date("2026-02-01")),
        to: None,
    });
    let d = engine.discover(&request).await.unwrap();

    // Training: the cohorts before February; validation: February on, the judged ones.
    let (train, _) = recount(
        data,
        DAY,
        14 * DAY,
        Some(7 * DAY),
        (None, Some(date("2026-01-31"))),
    );
    let (valid, valid_young) = recount(
        data,
        DAY,
        14 * DAY,
        Some(7 * DAY),
        (Some(date("2026-02-01")), None),
    );
    assert_eq!(d.training.users, train.len() as u64);
    let v = d.validation.as_ref().unwrap();
    assert_eq!((v.users, v.too_young), (valid.len() as u64, valid_young));

    let top = &d.candidates[0];
    assert_eq!((top.activity.as_str(), top.at_least), ("invite", 2));
    let validation = top.validation.unwrap();
    assert_eq!(validation.verdict, Verdict::Holds, "{d:#?}");
    for c in &d.candidates {
        check_candidate(c, &train);
        let checked = c.validation.unwrap();
        assert_eq!(
            checked.table,
            two_by_two(&valid, &c.activity, c.at_least),
            "{}",
            c.label()
        );
    }
    // Noise candidates are not confirmed.
    for c in d.candidates.iter().filter(|c| c.activity == "like") {
        assert_ne!(
            c.validation.unwrap().verdict,
            Verdict::Holds,
            "{}",
            c.label()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_that_cannot_be_answered_say_why() {
    let (dir, _) = project();
    let engine = engine(&dir.path().join("lodestar.yaml")).await;
    let message = |r: lodestar_core::Result<Discovery>| r.unwrap_err().to_string();

    let mut request = DiscoveryRequest::new(cohort_column());
    request.entity = Some("usr_id".into());
    let m = message(engine.discover(&request).await);
    assert!(
        m.contains("`usr_id` is not a column") && m.contains("did you mean `user_id`"),
        "{m}"
    );

    let request = DiscoveryRequest::new(Onboarding::Event("sign_up".into()));
    let m = message(engine.discover(&request).await);
    assert!(
        m.contains("no `sign_up` event") && m.contains("did you mean `signup`"),
        "{m}"
    );

    let mut request = DiscoveryRequest::new(cohort_column());
    request.retained = Span::hours(12);
    let m = message(engine.discover(&request).await);
    // The core names the fields; the CLI writes them as options, the server as parameters.
    assert!(m.contains("`retained` must be at least `within`"), "{m}");

    let mut request = DiscoveryRequest::new(cohort_column());
    request.cohorts = "2026-01-01..2026-02-15".parse().unwrap();
    request.validate_on = Some("2026-02-01..".parse().unwrap());
    let m = message(engine.discover(&request).await);
    assert!(m.contains("overlap"), "{m}");

    let mut request = DiscoveryRequest::new(cohort_column());
    request.filter = Some("platform = 'ios'".into());
    let m = message(engine.discover(&request).await);
    assert!(m.contains("`platform`, which is not a column"), "{m}");
}

// ------------------------------------------------------------------------ the binary

fn discover(args: &[&str]) -> Run {
    let (dir, _) = project();
    let mut all = vec!["discover"];
    all.extend_from_slice(args);
    Run::of(&mut lodestar_project(
        &dir.path().join("lodestar.yaml"),
        &all,
    ))
}

#[test]
fn the_cli_ranking_table_matches_the_recount() {
    let (_, data) = project();
    let out = discover(&[
        "--onboarded",
        "app.users.signed_up_at",
        "--within",
        "1d",
        "--retained",
        "14d",
        "--window",
        "7d",
        "--format",
        "csv",
    ])
    .success();
    assert!(
        out.stderr.contains("correlations, not causes"),
        "{}",
        out.stderr
    );
    let table = Table::parse(&out.stdout).unwrap();
    let (judged, _) = recount(data, DAY, 14 * DAY, Some(7 * DAY), (None, None));
    let activity = table.column("activity");
    let at_least = table.column("at_least");
    assert_eq!(
        (activity[0], at_least[0]),
        ("invite", "2"),
        "{}",
        out.stdout
    );
    assert_eq!(table.column("rank")[..3], ["1", "2", "3"]);
    for (i, row) in table.rows.iter().enumerate() {
        let k: u32 = at_least[i].parse().unwrap();
        let t = two_by_two(&judged, activity[i], k);
        let cell = |name: &str| table.column(name)[i].to_string();
        let what = format!("{} ≥ {k}: {row:?}", activity[i]);
        assert_eq!(cell("users"), judged.len().to_string(), "{what}");
        assert_eq!(cell("doers"), t.doers().to_string(), "{what}");
        assert_eq!(
            [
                cell("doers_retained"),
                cell("doers_churned"),
                cell("others_retained"),
                cell("others_churned")
            ],
            [
                t.doers_retained,
                t.doers_churned,
                t.others_retained,
                t.others_churned
            ]
            .map(|n| n.to_string()),
            "{what}"
        );
        let phi: f64 = cell("phi").parse().unwrap();
        let expected = pearson(&judged, activity[i], k);
        assert!((phi - expected).abs() < 1e-9, "{what}: phi {expected}");
        assert_eq!(cell("validation"), "", "{what}");
    }
}

#[test]
fn the_cli_report_ranks_explains_and_validates() {
    let out = discover(&[
        "--onboarded",
        "app.users.signed_up_at",
        "--window",
        "7d",
        "--validate-on",
        "2026-02-01..",
    ])
    .success();
    let text = &out.stdout;
    // The ranking: the planted moment first, with its verdict on the later cohorts.
    let first = text
        .lines()
        .find(|l| l.contains(" 1 ┆"))
        .unwrap_or_else(|| panic!("no first row\n{text}"));
    assert!(
        first.contains("invite") && first.contains("holds"),
        "{first}\n{text}"
    );
    assert!(text.contains("phi (95% CI)"), "{text}");
    assert!(
        text.contains("Top candidates")
            && text.contains("1. invite at least 2 times")
            && text.contains("It holds on the validation cohorts."),
        "{text}"
    );
    assert!(
        text.contains("This is correlation, not causation"),
        "{text}"
    );
    assert!(text.contains("Validation cohorts:"), "{text}");
}

#[test]
fn the_cli_names_what_is_wrong() {
    let out = discover(&["--onboarded", "sign_up"]).expect_code(1);
    assert!(
        out.stderr.contains("error: no `sign_up` event")
            && out.stderr.contains("hint: did you mean `signup`"),
        "{out}"
    );
    let out = discover(&["--onboarded", "signup", "--within", "0d"]).expect_code(1);
    assert!(
        out.stderr.contains("--within") && out.stderr.contains("`0d` is zero"),
        "{out}"
    );
    let out = discover(&["--onboarded", "signup", "--validate-on", "2026-02-01"]).expect_code(1);
    assert!(out.stderr.contains("write FROM..TO"), "{out}");
    let out = discover(&["--onboarded", "signup", "--activity", "app.evnts"]).expect_code(1);
    assert!(out.stderr.contains("app.evnts"), "{out}");
}

// ------------------------------------------------------------------------ the example

/// The sample data plants `save_listing` at least twice in the first 24 hours (xtask/src/sample.rs).
#[tokio::test(flavor = "multi_thread")]
async fn the_example_finds_saving_two_listings() {
    let engine = engine(example_project()).await;
    let onboarded = Onboarding::parse("app.users.signed_up_at", ["app"]);
    let mut request = DiscoveryRequest::new(onboarded);
    request.window = Some(Span::days(7));
    let d = engine.discover(&request).await.unwrap();
    let top = &d.candidates[0];
    assert_eq!(
        (top.activity.as_str(), top.at_least),
        ("save_listing", 2),
        "{}",
        d.summary(5)
    );
    // Planted: 65% against 25%.
    let (did, not) = (
        top.table.retention_did().unwrap(),
        top.table.retention_not().unwrap(),
    );
    assert!(
        (0.60..0.70).contains(&did) && (0.20..0.30).contains(&not),
        "{did} {not}"
    );
    assert_eq!(d.setup.activity.to_string(), "app.events");
    assert_eq!(d.setup.event_column, "event_type");
}

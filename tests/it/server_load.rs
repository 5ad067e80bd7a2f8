//! A load test of `lodestar serve` on loopback, bounded in count and time: a few keep-alive
//! clients ask for a cached series over and over, then for cold series (each question new, so
//! each one is computed). It prints throughput and p50/p99 latency for both and asserts only
//! correctness:
//! every answer is a 200 with the right numbers (computed here from the fixture's CSV), and
//! none fails. Run it alone to read the numbers:
//! `cargo test -p lodestar-e2e --test it -- server_load --nocapture`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use lodestar_testkit::load::{self, Answer, Check, Phase, Plan, Shape};
use serde_json::{Value, json};

use crate::server::Served;

/// Clients sending requests at once (each waits for its answer before the next).
const CLIENTS: usize = 4;
/// Requests for the cached series.
const CACHED_REQUESTS: usize = 1000;
/// Each phase stops sending new requests after this long, however many are left.
const PHASE_TIME_LIMIT: Duration = Duration::from_secs(20);

/// Paid orders by day and country, read from the CSV: (revenue, count).
type Paid = BTreeMap<(NaiveDate, String), (f64, u64)>;

fn paid_orders(csv: &str) -> Paid {
    let mut paid = Paid::new();
    for line in csv.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields[3] != "paid" {
            continue;
        }
        let day = NaiveDate::parse_from_str(&fields[2][..10], "%Y-%m-%d").unwrap();
        let entry = paid.entry((day, fields[5].to_string())).or_default();
        entry.0 += fields[4].parse::<f64>().unwrap();
        entry.1 += 1;
    }
    paid
}

fn value(metric: &str, (revenue, count): (f64, u64)) -> Value {
    match metric {
        "revenue" => json!(revenue),
        _ => json!(count),
    }
}

/// What a correct answer holds.
#[derive(Clone)]
enum Expected {
    /// Exactly these rows.
    Rows(Value),
    /// By country: each row's value is the hand count of its day and country (0 if none),
    /// and every day and country with paid orders has its row. (Which countries get rows of
    /// 0 is the engine's time spine's business, not checked here.)
    ByCountry {
        metric: &'static str,
        paid: Arc<Paid>,
        from: NaiveDate,
        to: NaiveDate,
    },
}

impl Expected {
    /// The rows of `metric` by day from `from` to `to`: every day of the range, 0 where
    /// nothing was paid.
    fn rows(paid: &Paid, metric: &str, from: NaiveDate, to: NaiveDate) -> Expected {
        let rows = from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|day| {
                let found = paid
                    .iter()
                    .filter(|((d, _), _)| *d == day)
                    .fold((0.0, 0), |(r, n), (_, (r2, n2))| (r + r2, n + n2));
                json!({"period": day.format("%Y-%m-%d").to_string(), metric: value(metric, found)})
            })
            .collect();
        Expected::Rows(Value::Array(rows))
    }

    fn check(&self, body: &Value) -> Result<(), String> {
        match self {
            Expected::Rows(rows) if body["rows"] == *rows => Ok(()),
            Expected::Rows(rows) => Err(format!("expected rows {rows}")),
            Expected::ByCountry {
                metric,
                paid,
                from,
                to,
            } => {
                let rows = body["rows"].as_array().ok_or("no rows")?;
                let mut seen = 0;
                for row in rows {
                    let day = row["period"]
                        .as_str()
                        .and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
                        .ok_or_else(|| format!("no period in {row}"))?;
                    if day < *from || day > *to {
                        return Err(format!("{row} is outside {from}..{to}"));
                    }
                    let country = row["country"].as_str().unwrap_or_default().to_string();
                    let found = paid.get(&(day, country)).copied();
                    if row[*metric] != value(metric, found.unwrap_or_default()) {
                        return Err(format!("{row}: expected {:?}", found.unwrap_or_default()));
                    }
                    seen += usize::from(found.is_some());
                }
                let wanted = paid.keys().filter(|(d, _)| d >= from && d <= to).count();
                if seen == wanted {
                    Ok(())
                } else {
                    Err(format!("{seen} rows with paid orders, expected {wanted}"))
                }
            }
        }
    }
}

/// Sends every request (target, expected answer, expected `X-Cache`) from `CLIENTS`
/// keep-alive clients (`lodestar_testkit::load`, which the server benchmark uses too).
fn run_phase(addr: SocketAddr, requests: Vec<(String, Expected, &'static str)>) -> Phase {
    let shape = Shape {
        clients: CLIENTS,
        requests: requests.len(),
        time_limit: PHASE_TIME_LIMIT,
    };
    let requests = Arc::new(requests);
    let plan: Plan = Arc::new(move |i: usize| {
        let (target, expected, cache) = requests[i].clone();
        let check: Check = Arc::new(move |answer: &Answer| -> Result<(), String> {
            if answer.status != 200 {
                return Err("expected 200".into());
            }
            if answer.header("x-cache") != Some(cache) {
                return Err(format!("expected X-Cache {cache}"));
            }
            let body: Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
            expected.check(&body)
        });
        (target, check)
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(load::run_phase(addr, shape, plan))
}

#[test]
fn load_on_loopback_cached_and_cold_series_without_errors() {
    let server = Served::start_with("shop", |_| {}, &["--max-concurrent", "16"], &[]);
    let csv = fs_err::read_to_string(server.scratch().path().join("data/orders.csv")).unwrap();
    let paid = Arc::new(paid_orders(&csv));
    let first = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
    let last = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();

    // The cached series: computed once here, then always a hit.
    let target = "/api/v1/metrics/revenue/series?grain=day".to_string();
    let expected = Expected::rows(&paid, "revenue", first, last);
    let warm = server.get(&target);
    assert_eq!(warm.status, 200, "{warm}");
    assert_eq!(expected.check(&warm.json()), Ok(()), "{warm}");
    let cached = run_phase(
        server.addr,
        vec![(target, expected, "hit"); CACHED_REQUESTS],
    );

    // Cold series: every question different (metric, range, breakdown), so none is cached.
    let mut cold_requests = Vec::new();
    for metric in ["revenue", "orders"] {
        for by in [false, true] {
            for from in first.iter_days().take_while(|d| *d <= last) {
                for to in from.iter_days().take_while(|d| *d <= last) {
                    let target = format!(
                        "/api/v1/metrics/{metric}/series?grain=day&from={from}&to={to}{}",
                        if by { "&by=country" } else { "" }
                    );
                    let expected = if by {
                        Expected::ByCountry {
                            metric,
                            paid: Arc::clone(&paid),
                            from,
                            to,
                        }
                    } else {
                        Expected::rows(&paid, metric, from, to)
                    };
                    cold_requests.push((target, expected, "miss"));
                }
            }
        }
    }
    let cold = run_phase(server.addr, cold_requests);

    let report = format!(
        "{}\n{}",
        cached.report("cached series"),
        cold.report("cold series")
    );
    println!("{report}");
    for phase in [&cached, &cold] {
        assert!(
            phase.errors.is_empty(),
            "{report}\nfirst errors:\n{}\nserver log:\n{}",
            phase
                .errors
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            server.log()
        );
        assert!(phase.done() > 0, "{report}");
    }
}

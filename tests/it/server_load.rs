//! A load test of `lodestar serve` on loopback, bounded in count and time: a few clients ask
//! for a cached series over and over, then for cold series (each question new, so each one is
//! computed). It prints throughput and p50/p99 latency for both and asserts only correctness:
//! every answer is a 200 with the right numbers (computed here from the fixture's CSV), and
//! none fails. Run it alone to read the numbers:
//! `cargo test -p lodestar-e2e --test it -- server_load --nocapture`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{Value, json};

use crate::server::{Served, http_request};

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

/// What one phase did.
struct Phase {
    latencies: Vec<Duration>,
    errors: Vec<String>,
    elapsed: Duration,
    planned: usize,
}

impl Phase {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn report(&self, name: &str) -> String {
        let done = self.latencies.len();
        format!(
            "{name}: {done} of {} requests in {:.2} s by {CLIENTS} clients: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            self.planned,
            self.elapsed.as_secs_f64(),
            done as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.errors.len()
        )
    }
}

/// Sends every request (target, expected answer, expected `X-Cache`) from `CLIENTS` threads.
fn run_phase(addr: SocketAddr, requests: Vec<(String, Expected, &'static str)>) -> Phase {
    let planned = requests.len();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(planned)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (requests, next) = (Arc::clone(&requests), Arc::clone(&next));
            let (latencies, errors) = (Arc::clone(&latencies), Arc::clone(&errors));
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests.len() || started.elapsed() > PHASE_TIME_LIMIT {
                        return;
                    }
                    let (target, expected, cache) = &requests[i];
                    let sent = Instant::now();
                    let answer = http_request(addr, "GET", target, &[], "");
                    let took = sent.elapsed();
                    let problem = match answer {
                        Err(e) => Some(format!("GET {target}: {e}")),
                        Ok(r) if r.status != 200 => Some(format!("GET {target}: {r}")),
                        Ok(r) if r.header("x-cache") != Some(*cache) => {
                            Some(format!("GET {target}: expected X-Cache {cache}: {r}"))
                        }
                        Ok(r) => match serde_json::from_slice::<Value>(&r.body)
                            .map_err(|e| e.to_string())
                            .and_then(|body| expected.check(&body))
                        {
                            Ok(()) => None,
                            Err(problem) => Some(format!("GET {target}: {problem}, got {r}")),
                        },
                    };
                    latencies.lock().unwrap().push(took);
                    if let Some(problem) = problem {
                        errors.lock().unwrap().push(problem);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread");
    }
    let elapsed = started.elapsed();
    Phase {
        latencies: std::mem::take(&mut *latencies.lock().unwrap()),
        errors: std::mem::take(&mut *errors.lock().unwrap()),
        elapsed,
        planned,
    }
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
        assert!(!phase.latencies.is_empty(), "{report}");
    }
}

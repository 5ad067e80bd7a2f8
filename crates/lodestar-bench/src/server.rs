//! `lodestar-bench server`: `lodestar serve` under load on loopback. The release binary serves
//! the example project with 16 query slots; many more keep-alive clients (64 by default, from
//! `lodestar_testkit::load`, which the short load test `tests/it/server_load.rs` uses too)
//! ask for one cached series, then a mix of cold series (every question different, so every
//! answer is computed), then the same mix for a long soak. Every answer is checked: the
//! numbers against the CLI's `compute --format json` on the same project, before anything is
//! timed. It prints requests/s, p50/p99/max latency, errors and the server's memory (peak
//! `VmHWM`, and `VmRSS` sampled through the soak), and writes them to
//! `TARGET/bench/server.json`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::NaiveDate;
use lodestar_testkit::load::{self, Answer, Check, Phase, Plan, Shape};
use serde_json::{Value, json};

use crate::lake::{machine, target_dir};

pub const USAGE: &str = "\
       lodestar-bench server [--lodestar PATH] [--project PATH] [--clients N] [--slots N]
                             [--cached-requests N] [--cold-requests N] [--phase-seconds S]
                             [--soak-seconds S] [--sample-seconds S]
";

/// The cached series: the North Star by week over the whole data.
const CACHED_METRIC: &str = "nights_booked";
/// The cold mix: two simple metrics by day over ranges of one to 28 days.
const COLD_METRICS: [&str; 2] = ["bookings", "nights_booked"];
const LONGEST_RANGE_DAYS: u64 = 28;
/// One request in this many of the soak is from the cold mix; the rest the cached series.
const SOAK_COLD_EVERY: usize = 10;

#[derive(Debug)]
struct Options {
    lodestar: PathBuf,
    project: PathBuf,
    clients: usize,
    slots: usize,
    cached_requests: usize,
    cold_requests: usize,
    phase_time: Duration,
    soak_time: Duration,
    sample_every: Duration,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let exe = std::env::current_exe()?;
    let mut options = Options {
        lodestar: exe.with_file_name(format!("lodestar{}", std::env::consts::EXE_SUFFIX)),
        project: PathBuf::from("examples/lodestar.yaml"),
        clients: 64,
        slots: 16,
        cached_requests: 200_000,
        cold_requests: 20_000,
        phase_time: Duration::from_secs(60),
        soak_time: Duration::from_secs(600),
        sample_every: Duration::from_secs(5),
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let count = || value.parse::<usize>().with_context(|| flag.clone());
        let seconds = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .map(Duration::from_secs_f64)
                .with_context(|| format!("{flag}: `{value}` is not a number of seconds"))
        };
        match flag.as_str() {
            "--lodestar" => options.lodestar = PathBuf::from(value),
            "--project" => options.project = PathBuf::from(value),
            "--clients" => options.clients = count()?.max(1),
            "--slots" => options.slots = count()?.max(1),
            "--cached-requests" => options.cached_requests = count()?,
            "--cold-requests" => options.cold_requests = count()?,
            "--phase-seconds" => options.phase_time = seconds()?,
            "--soak-seconds" => options.soak_time = seconds()?,
            "--sample-seconds" => options.sample_every = seconds()?,
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    ensure!(
        options.lodestar.is_file(),
        "no `lodestar` binary at {}\nhint: build it with `cargo build --release -p lodestar-cli`, or pass --lodestar PATH",
        options.lodestar.display()
    );
    options.project = std::path::absolute(&options.project)?;
    ensure!(
        options.project.is_file(),
        "no project file at {}\nhint: `cargo xtask sample` writes the example's data; pass --project PATH",
        options.project.display()
    );
    Ok(options)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "server benchmark ({build} bench, server {}): {} clients, {} query slots, project {}",
        options.lodestar.display(),
        options.clients,
        options.slots,
        options.project.display()
    );

    // What the answers must hold, from the CLI, before the server starts.
    let weekly = expected_rows(&options, &[CACHED_METRIC], "week")?;
    let daily = expected_rows(&options, &COLD_METRICS, "day")?;
    let days: Vec<NaiveDate> = daily.keys().copied().collect();
    ensure!(days.len() > 1, "the CLI gave {} days of data", days.len());
    let daily = Arc::new(daily);

    let mut server = Server::start(&options)?;
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // Checked before timing: the cached series against the CLI's, then served from memory.
    let cached_target = format!("/api/v1/metrics/{CACHED_METRIC}/series?grain=week");
    let warm = runtime.block_on(one(addr, &cached_target));
    let warm = match warm {
        Ok(answer) => answer,
        Err(e) => bail!("{e}\nserver log:\n{}", server.log()),
    };
    ensure!(
        warm.status == 200,
        "GET {cached_target}: status {}: {}",
        warm.status,
        String::from_utf8_lossy(&warm.body)
    );
    let body: Value = serde_json::from_slice(&warm.body)?;
    compare_weekly(&body, &weekly, CACHED_METRIC)
        .with_context(|| format!("GET {cached_target}: the numbers differ from the CLI's"))?;
    let cached_body = warm.body;
    let cached_check: Check = Arc::new(move |answer: &Answer| -> Result<(), String> {
        status_ok(answer)?;
        if answer.header("x-cache") != Some("hit") {
            return Err(format!(
                "X-Cache {:?}, expected hit",
                answer.header("x-cache")
            ));
        }
        if answer.body != cached_body {
            return Err("a body different from the checked one".into());
        }
        Ok(())
    });
    let second = runtime.block_on(one(addr, &cached_target))?;
    cached_check(&second).map_err(|e| anyhow::anyhow!("GET {cached_target}: {e}"))?;

    let cold_targets = Arc::new(cold_targets(&days));
    let mut phases = Vec::new();

    // Phase 1: the cached series.
    let plan: Plan = {
        let (target, check) = (cached_target.clone(), Arc::clone(&cached_check));
        Arc::new(move |_: usize| (target.clone(), Arc::clone(&check)))
    };
    let shape = Shape {
        clients: options.clients,
        requests: options.cached_requests,
        time_limit: options.phase_time,
    };
    let phase = runtime.block_on(load::run_phase(addr, shape, plan));
    phases.push(finish("cached series", phase, &server));

    // Phase 2: cold series, each computed (X-Cache miss), numbers checked.
    let plan: Plan = {
        let (targets, daily) = (Arc::clone(&cold_targets), Arc::clone(&daily));
        Arc::new(move |i: usize| cold_request(&targets, &daily, i, Some("miss")))
    };
    let shape = Shape {
        clients: options.clients,
        requests: options.cold_requests.min(cold_targets.len()),
        time_limit: options.phase_time,
    };
    let phase = runtime.block_on(load::run_phase(addr, shape, plan));
    phases.push(finish("cold series", phase, &server));

    // Phase 3: the soak, one cold question in SOAK_COLD_EVERY (from the other end of the
    // list, so not what phase 2 left in the answer cache), the rest the cached series; the
    // server's memory sampled as it goes.
    let plan: Plan = {
        let (targets, daily) = (Arc::clone(&cold_targets), Arc::clone(&daily));
        let (cached_target, cached_check) = (cached_target, Arc::clone(&cached_check));
        Arc::new(move |i: usize| {
            if i.is_multiple_of(SOAK_COLD_EVERY) {
                let back = targets.len() - 1 - (i / SOAK_COLD_EVERY) % targets.len();
                cold_request(&targets, &daily, back, None)
            } else {
                (cached_target.clone(), Arc::clone(&cached_check))
            }
        })
    };
    let shape = Shape {
        clients: options.clients,
        requests: usize::MAX,
        time_limit: options.soak_time,
    };
    let sampler = Sampler::start(server.pid(), options.sample_every);
    let phase = runtime.block_on(load::run_phase(addr, shape, plan));
    let samples = sampler.stop();
    phases.push(finish("soak", phase, &server));

    let flatness = flatness(&samples, options.soak_time);
    println!("{}", flatness.0);
    let stopped = server.stop();
    let report = json!({
        "build": build,
        "machine": machine(),
        "lodestar": options.lodestar,
        "project": options.project,
        "clients": options.clients,
        "slots": options.slots,
        "phases": phases.iter().map(|(json, _)| json.clone()).collect::<Vec<_>>(),
        "soak_rss_kib": samples.iter().map(|(t, rss)| json!([t.as_secs_f64(), rss])).collect::<Vec<_>>(),
        "soak_rss_first_window_kib": flatness.1,
        "soak_rss_last_window_kib": flatness.2,
        "server_exit": stopped,
    });
    let out = target_dir()?.join("bench").join("server.json");
    fs_err::create_dir_all(out.parent().expect("a parent"))?;
    fs_err::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", out.display());

    let wrong: usize = phases
        .iter()
        .map(|(_, phase)| phase.errors.len() - phase.overloaded)
        .sum();
    if wrong > 0 {
        let first: Vec<&String> = phases
            .iter()
            .flat_map(|(_, phase)| {
                phase
                    .errors
                    .iter()
                    .filter(|e| !e.contains("503 overloaded"))
            })
            .take(5)
            .collect();
        bail!(
            "{wrong} wrong answers or failed requests; the first:\n{}",
            first
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

/// Prints a phase with the server's peak memory so far and keeps it for the JSON report.
fn finish(name: &str, phase: Phase, server: &Server) -> (Value, Phase) {
    let memory = load::memory_kib(server.pid());
    let peak = memory.map(|(_, hwm)| hwm);
    println!(
        "{}; server peak RSS {}",
        phase.report(name),
        peak.map_or("unknown".into(), |kib| format!(
            "{:.1} MiB",
            kib as f64 / 1024.0
        ))
    );
    for e in phase.errors.iter().take(3) {
        println!("  for example: {e}");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let json = json!({
        "name": name,
        "planned": phase.shape.requests.min(u32::MAX as usize),
        "done": phase.done(),
        "seconds": phase.elapsed.as_secs_f64(),
        "requests_per_second": phase.requests_per_second(),
        "p50_ms": ms(phase.percentile(0.5)),
        "p99_ms": ms(phase.percentile(0.99)),
        "max_ms": ms(phase.percentile(1.0)),
        "errors": phase.errors.len(),
        "overloaded_503": phase.overloaded,
        "server_peak_rss_kib": peak,
    });
    (json, phase)
}

fn status_ok(answer: &Answer) -> Result<(), String> {
    match answer.status {
        200 => Ok(()),
        503 => Err("503 overloaded (every query slot taken)".into()),
        other => Err(format!("status {other}")),
    }
}

/// Every (metric, from, to) of the cold mix: ranges of 1 to `LONGEST_RANGE_DAYS` days within
/// the data, interleaved so that neighbours differ in metric and start.
fn cold_targets(days: &[NaiveDate]) -> Vec<(&'static str, NaiveDate, NaiveDate)> {
    let mut targets = Vec::new();
    for length in 1..=LONGEST_RANGE_DAYS as usize {
        for (start, from) in days.iter().enumerate() {
            let Some(to) = days.get(start + length - 1) else {
                break;
            };
            for metric in COLD_METRICS {
                targets.push((metric, *from, *to));
            }
        }
    }
    // A stride coprime with the length visits every target once, in a scattered order.
    let n = targets.len();
    let stride = (n / 2..n).find(|s| gcd(*s, n) == 1).unwrap_or(1);
    (0..n).map(|i| targets[(i * stride) % n]).collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Daily values of the cold metrics, by day: `[bookings, nights_booked]`.
type Daily = BTreeMap<NaiveDate, Vec<f64>>;

fn cold_request(
    targets: &[(&'static str, NaiveDate, NaiveDate)],
    daily: &Arc<Daily>,
    i: usize,
    cache: Option<&'static str>,
) -> (String, Check) {
    let (metric, from, to) = targets[i % targets.len()];
    let target = format!("/api/v1/metrics/{metric}/series?grain=day&from={from}&to={to}");
    let column = COLD_METRICS
        .iter()
        .position(|m| *m == metric)
        .expect("a cold metric");
    let daily = Arc::clone(daily);
    let check: Check = Arc::new(move |answer: &Answer| -> Result<(), String> {
        status_ok(answer)?;
        if let Some(cache) = cache
            && answer.header("x-cache") != Some(cache)
        {
            return Err(format!(
                "X-Cache {:?}, expected {cache}",
                answer.header("x-cache")
            ));
        }
        let body: Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
        let rows = body["rows"].as_array().ok_or("no rows")?;
        let expected: Vec<(&NaiveDate, f64)> = daily
            .range(from..=to)
            .map(|(day, values)| (day, values[column]))
            .collect();
        if rows.len() != expected.len() {
            return Err(format!("{} rows, expected {}", rows.len(), expected.len()));
        }
        for (row, (day, value)) in rows.iter().zip(expected) {
            let period = row["period"].as_str().unwrap_or_default();
            if period != day.to_string() || !close(row[metric].as_f64(), value) {
                return Err(format!("row {row}, expected {day}: {value}"));
            }
        }
        Ok(())
    });
    (target, check)
}

fn close(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|a| (a - expected).abs() <= 1e-9 * expected.abs().max(1.0))
}

/// `lodestar compute METRICS --grain GRAIN --format json`, by period.
fn expected_rows(
    options: &Options,
    metrics: &[&str],
    grain: &str,
) -> anyhow::Result<BTreeMap<NaiveDate, Vec<f64>>> {
    let output = Command::new(&options.lodestar)
        .arg("--project")
        .arg(&options.project)
        .arg("compute")
        .args(metrics)
        .args(["--grain", grain, "--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .context("running `lodestar compute`")?;
    ensure!(
        output.status.success(),
        "`lodestar compute` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    rows.iter()
        .map(|row| {
            let day = row["period"]
                .as_str()
                .and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
                .with_context(|| format!("no period in {row}"))?;
            let values = metrics
                .iter()
                .map(|m| row[*m].as_f64().with_context(|| format!("no {m} in {row}")))
                .collect::<anyhow::Result<Vec<f64>>>()?;
            Ok((day, values))
        })
        .collect()
}

fn compare_weekly(
    body: &Value,
    expected: &BTreeMap<NaiveDate, Vec<f64>>,
    metric: &str,
) -> anyhow::Result<()> {
    let rows = body["rows"].as_array().context("no rows")?;
    ensure!(
        rows.len() == expected.len(),
        "{} rows, the CLI {}",
        rows.len(),
        expected.len()
    );
    for (row, (day, values)) in rows.iter().zip(expected) {
        ensure!(
            row["period"].as_str() == Some(day.to_string().as_str())
                && close(row[metric].as_f64(), values[0]),
            "row {row}, the CLI {day}: {}",
            values[0]
        );
    }
    Ok(())
}

/// One request on a fresh connection.
async fn one(addr: SocketAddr, target: &str) -> anyhow::Result<Answer> {
    let slot = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&slot);
    let check: Check = Arc::new(move |answer: &Answer| -> Result<(), String> {
        *keep.lock().unwrap() = Some(Answer {
            status: answer.status,
            headers: answer.headers.clone(),
            body: answer.body.clone(),
        });
        Ok(())
    });
    let target = target.to_string();
    let plan: Plan = Arc::new(move |_: usize| (target.clone(), Arc::clone(&check)));
    let shape = Shape {
        clients: 1,
        requests: 1,
        time_limit: Duration::from_secs(3600),
    };
    let phase = load::run_phase(addr, shape, plan).await;
    if let Some(e) = phase.errors.first() {
        bail!("{e}");
    }
    let answer = slot.lock().unwrap().take();
    answer.context("no answer")
}

/// `VmRSS` of the server every `every`, on a thread of its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Duration, u64)>>,
}

impl Sampler {
    fn start(pid: u32, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut next = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                if started.elapsed() >= next {
                    if let Some((rss, _)) = load::memory_kib(pid) {
                        samples.push((started.elapsed(), rss));
                    }
                    next += every;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some((rss, _)) = load::memory_kib(pid) {
                samples.push((started.elapsed(), rss));
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Vec<(Duration, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler thread")
    }
}

/// The soak's first and last minute (a quarter of the soak if shorter): mean `VmRSS` of
/// each, and the line that says so.
fn flatness(samples: &[(Duration, u64)], soak: Duration) -> (String, Option<f64>, Option<f64>) {
    let window = Duration::from_secs(60).min(soak / 4);
    let end = samples.last().map_or(Duration::ZERO, |(t, _)| *t);
    let mean = |keep: &dyn Fn(Duration) -> bool| {
        let picked: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| keep(*t))
            .map(|(_, rss)| *rss)
            .collect();
        (!picked.is_empty()).then(|| picked.iter().sum::<u64>() as f64 / picked.len() as f64)
    };
    let first = mean(&|t| t <= window);
    let last = mean(&|t| t + window >= end);
    let mib = |kib: Option<f64>| kib.map_or("unknown".into(), |k| format!("{:.1} MiB", k / 1024.0));
    let trace: Vec<String> = samples
        .iter()
        .map(|(t, rss)| format!("{:.0}s {:.0}", t.as_secs_f64(), *rss as f64 / 1024.0))
        .collect();
    let line = format!(
        "soak RSS: first {:.0} s {}, last {:.0} s {} ({} samples, MiB: {})",
        window.as_secs_f64(),
        mib(first),
        window.as_secs_f64(),
        mib(last),
        samples.len(),
        trace.join(", ")
    );
    (line, first, last)
}

/// The `lodestar serve` child; stopped (SIGTERM, then killed) when done.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The last lines of its log, for errors.
    tail: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(options: &Options) -> anyhow::Result<Server> {
        let mut child = Command::new(&options.lodestar)
            .arg("--project")
            .arg(&options.project)
            .args(["serve", "--listen", "127.0.0.1:0", "--max-concurrent"])
            .arg(options.slots.to_string())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("LODESTAR_READ_TOKENS")
            .env_remove("LODESTAR_ADMIN_TOKENS")
            .env_remove("LODESTAR_TOKENS_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", options.lodestar.display()))?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut seen = Vec::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let addr = line
                        .split("listening on http://")
                        .nth(1)
                        .and_then(|a| a.trim().parse::<SocketAddr>().ok());
                    seen.push(line);
                    if let Some(addr) = addr {
                        break addr;
                    }
                }
                _ => {
                    let status = child.wait()?;
                    bail!(
                        "`lodestar serve` stopped before listening ({status}):\n{}",
                        seen.join("\n")
                    );
                }
            }
        };
        // Drain the log (a request a line) so the server never waits on a full pipe.
        let tail = Arc::new(Mutex::new(seen));
        let sink = Arc::clone(&tail);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                if sink.len() >= 40 {
                    sink.remove(0);
                }
                sink.push(line);
            }
        });
        Ok(Server { child, addr, tail })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.tail.lock().unwrap().join("\n")
    }

    /// SIGTERM, then up to 30 s for a clean stop; the exit status as text.
    fn stop(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.to_string();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "killed after 30 s".into()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

//! Load on an HTTP server over loopback, shared by the short load test
//! (`tests/it/server_load.rs`) and the server benchmark (`lodestar-bench server`): clients
//! that each keep one HTTP/1.1 connection alive and send their next request when the answer
//! came, every answer checked, and the latencies summed up as percentiles.
//!
//! A phase is bounded both in requests and in time, so a slow build or machine makes it
//! shorter, never endless.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// An answer as a check sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Checks one answer: `Err` says what is wrong with it.
pub type Check = Arc<dyn Fn(&Answer) -> Result<(), String> + Send + Sync>;

/// The `i`-th request of a phase (a request target such as `/api/v1/...?grain=day`) and the
/// check of its answer.
pub type Plan = Arc<dyn Fn(usize) -> (String, Check) + Send + Sync>;

/// How a phase runs.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Clients at once; each waits for its answer before sending the next request.
    pub clients: usize,
    /// Requests in all (numbered `0..requests`), at most.
    pub requests: usize,
    /// No request is sent after this long.
    pub time_limit: Duration,
}

/// What one phase did.
#[derive(Debug)]
pub struct Phase {
    pub shape: Shape,
    /// The latency of every answered request, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// What was wrong, per failed request: a transport error, an unexpected status or body.
    pub errors: Vec<String>,
    /// How many of the errors were `503` answers (every query slot taken).
    pub overloaded: usize,
    pub elapsed: Duration,
}

impl Phase {
    /// Requests answered (right or wrong).
    pub fn done(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn requests_per_second(&self) -> f64 {
        self.done() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `p` (0.5, 0.99, 1.0), by the nearest-rank method.
    pub fn percentile(&self, p: f64) -> Duration {
        let sorted = &self.latencies_us;
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Duration::from_micros(u64::from(sorted[rank - 1]))
    }

    /// One line: requests, time, throughput, p50/p99/max, errors.
    pub fn report(&self, name: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{name}: {} of {} requests in {:.2} s by {} clients: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors{}",
            self.done(),
            if self.shape.requests == usize::MAX {
                "unbounded".to_string()
            } else {
                self.shape.requests.to_string()
            },
            self.elapsed.as_secs_f64(),
            self.shape.clients,
            self.requests_per_second(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0)),
            self.errors.len(),
            if self.overloaded > 0 {
                format!(" ({} of them 503 overloaded)", self.overloaded)
            } else {
                String::new()
            }
        )
    }
}

/// Runs a phase against `addr` on the current Tokio runtime: `shape.clients` tasks, each on
/// its own keep-alive connection (reopened after a transport error), take the next request
/// number until `shape.requests` or `shape.time_limit` is reached.
pub async fn run_phase(addr: SocketAddr, shape: Shape, plan: Plan) -> Phase {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..shape.clients)
        .map(|_| {
            let (next, plan) = (Arc::clone(&next), Arc::clone(&plan));
            tokio::spawn(async move { client(addr, shape, started, &next, &plan).await })
        })
        .collect();
    let mut latencies_us = Vec::with_capacity(shape.requests.min(1 << 20));
    let mut errors = Vec::new();
    let mut overloaded = 0;
    for client in clients {
        let done = client.await.expect("a load client panicked");
        latencies_us.extend(done.latencies_us);
        errors.extend(done.errors);
        overloaded += done.overloaded;
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Phase {
        shape,
        latencies_us,
        errors,
        overloaded,
        elapsed,
    }
}

#[derive(Default)]
struct ClientDone {
    latencies_us: Vec<u32>,
    errors: Vec<String>,
    overloaded: usize,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes the connection.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn client(
    addr: SocketAddr,
    shape: Shape,
    started: Instant,
    next: &AtomicUsize,
    plan: &Plan,
) -> ClientDone {
    let mut done = ClientDone::default();
    let mut sender: Option<Sender> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= shape.requests || started.elapsed() > shape.time_limit {
            return done;
        }
        let (target, check) = plan(i);
        let sent = Instant::now();
        let answer = send(addr, &mut sender, &target).await;
        let took = sent.elapsed();
        done.latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        let problem = match answer {
            Err(e) => {
                sender = None;
                Some(e)
            }
            Ok(answer) => {
                if answer.status == 503 {
                    done.overloaded += 1;
                }
                check(&answer).err().map(|e| {
                    format!(
                        "{e} (status {}, body {})",
                        answer.status,
                        String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                    )
                })
            }
        };
        if let Some(problem) = problem {
            done.errors.push(format!("GET {target}: {problem}"));
        }
    }
}

async fn send(
    addr: SocketAddr,
    sender: &mut Option<Sender>,
    target: &str,
) -> Result<Answer, String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(addr).await?);
    }
    let sender = sender.as_mut().expect("connected above");
    sender.ready().await.map_err(|e| e.to_string())?;
    let request = Request::get(target)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The resident memory of process `pid` from `/proc/PID/status`: now (`VmRSS`) and at its
/// peak (`VmHWM`), in KiB. `None` where there is no `/proc` or the process is gone.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

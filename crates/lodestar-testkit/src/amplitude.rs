//! A real HTTP server speaking Amplitude's Export API for the tests: `GET /api/2/export?start=
//! YYYYMMDDTHH&end=YYYYMMDDTHH` with basic auth, answered with a zip archive of the hourly
//! `*.json.gz` files uploaded in those hours (404 when there are none), on a loopback port.
//!
//! It records every request, can answer the next requests with given statuses (429, 5xx, ...)
//! and a `Retry-After` header,
//! and can refuse ranges longer than a number of hours with 400, as Amplitude refuses exports
//! over 4 GB. It runs on a Tokio runtime of its own threads, so a test can run the `lodestar`
//! binary (a blocking child process) while it serves.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::NaiveDateTime;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The API key the server accepts.
pub const API_KEY: &str = "amp-test-api-key";
/// Its secret key.
pub const SECRET_KEY: &str = "amp-test-secret-0123456789abcdef";

/// One request answered: its `start` and `end` parameters and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub start: String,
    pub end: String,
    pub status: u16,
}

#[derive(Debug, Default)]
struct Shared {
    /// Entry path (`<project>/<project>_<date>_<H>#<n>.json.gz`) to its upload hour and bytes.
    files: Mutex<BTreeMap<String, (NaiveDateTime, Vec<u8>)>>,
    log: Mutex<Vec<Served>>,
    statuses: Mutex<VecDeque<u16>>,
    /// The `Retry-After` header sent with the statuses of `answer_next`.
    retry_after: Mutex<Option<String>>,
    max_hours: Mutex<Option<i64>>,
}

/// The server; stops when dropped.
#[derive(Debug)]
pub struct ExportServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExportServer {
    pub fn start() -> ExportServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("amplitude-test-server")
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let listener = runtime
            .block_on(TcpListener::bind(("127.0.0.1", 0)))
            .expect("a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            runtime.block_on(serve(listener, serving, stopped));
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        ExportServer {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds an hourly file (`entry` as in the archive) uploaded in the hour of `hour`.
    pub fn add(&self, entry: &str, hour: NaiveDateTime, gz: Vec<u8>) {
        self.shared
            .files
            .lock()
            .unwrap()
            .insert(entry.to_string(), (hour, gz));
    }

    pub fn log(&self) -> Vec<Served> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Answers the next requests (of any range, with good credentials) with these statuses.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.shared.statuses.lock().unwrap().extend(statuses);
    }

    /// Sends `Retry-After: value` with the statuses given to [`ExportServer::answer_next`].
    pub fn retry_after(&self, value: &str) {
        *self.shared.retry_after.lock().unwrap() = Some(value.to_string());
    }

    /// Answers 400 to ranges of more than `hours` hours.
    pub fn refuse_ranges_over(&self, hours: i64) {
        *self.shared.max_hours.lock().unwrap() = Some(hours);
    }
}

impl Drop for ExportServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let handler = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(answer(&request, &shared)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), handler)
                .await;
        });
    }
}

fn parse_hour(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(&format!("{text}:00"), "%Y%m%dT%H:%M").ok()
}

fn answer(request: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let start = query.get("start").cloned().unwrap_or_default();
    let end = query.get("end").cloned().unwrap_or_default();
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:{SECRET_KEY}"))
    );
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected_auth.as_bytes());
    let mut retry_after = None;
    let (status, body) = if request.uri().path() != "/api/2/export" {
        (404, Vec::new())
    } else if !authorized {
        (401, b"Invalid API key or secret key".to_vec())
    } else if let Some(status) = shared.statuses.lock().unwrap().pop_front() {
        retry_after.clone_from(&shared.retry_after.lock().unwrap());
        (
            status,
            format!("status {status} as the test asked").into_bytes(),
        )
    } else {
        match (parse_hour(&start), parse_hour(&end)) {
            (Some(from), Some(to)) if from <= to => {
                let hours = (to - from).num_hours() + 1;
                let too_many = shared
                    .max_hours
                    .lock()
                    .unwrap()
                    .is_some_and(|max| hours > max);
                if too_many {
                    (400, b"Raw data files were too large".to_vec())
                } else {
                    let files = shared.files.lock().unwrap();
                    let chosen: Vec<(&String, &Vec<u8>)> = files
                        .iter()
                        .filter(|(_, (hour, _))| from <= *hour && *hour <= to)
                        .map(|(name, (_, gz))| (name, gz))
                        .collect();
                    if chosen.is_empty() {
                        (404, b"No data for the range".to_vec())
                    } else {
                        (200, zip_of(&chosen))
                    }
                }
            }
            _ => (400, b"Invalid start or end".to_vec()),
        }
    };
    shared
        .log
        .lock()
        .unwrap()
        .push(Served { start, end, status });
    let mut response =
        Response::builder().status(StatusCode::from_u16(status).expect("a valid status"));
    if let Some(value) = retry_after {
        response = response.header("retry-after", value);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// A zip archive of the entries, deflated, as the Export API sends.
pub fn zip_of(entries: &[(&String, &Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

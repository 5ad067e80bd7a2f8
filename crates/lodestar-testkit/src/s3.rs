//! A real S3-protocol server for the tests: `s3s-fs` over a temporary directory, on a
//! loopback port, with access-key authentication, behind a layer that records every request
//! (method, key, status, body bytes sent) and can answer the next object reads with an error
//! or a stall, to exercise retries and timeouts.
//!
//! It runs on a Tokio runtime of its own, on its own threads, so a test can run the
//! `lodestar` binary (a blocking child process) while it serves.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "LODESTARTESTKEY";
/// Its secret key.
pub const SECRET_KEY: &str = "lodestar-test-secret-key-0123456789";

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Served {
    pub method: String,
    /// The path of the URL, percent-decoded (path-style: `/bucket/key`).
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Body bytes sent, counted as the body streams out.
    bytes: Arc<AtomicU64>,
}

impl Served {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Whether this is a read of an object (a GET of a key), not a listing.
    pub fn is_object_read(&self) -> bool {
        self.method == "GET" && self.key().is_some() && !self.query.contains("list-type")
    }

    /// The object key of a path-style URL, if the path names one.
    pub fn key(&self) -> Option<&str> {
        let rest = self.path.strip_prefix('/')?;
        let (_bucket, key) = rest.split_once('/')?;
        (!key.is_empty()).then_some(key)
    }
}

/// An answer the server gives instead of serving the next object read.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 503 with S3's `SlowDown` error, as S3 throttles.
    SlowDown,
    /// 500 with S3's `InternalError`, as S3 answers when it fails on its side.
    InternalError,
    /// Waits this long before serving.
    Stall(Duration),
}

#[derive(Debug, Default)]
struct Shared {
    log: Mutex<Vec<Served>>,
    faults: Mutex<VecDeque<Fault>>,
}

/// The running server; stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    root: TempDir,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server over a new, empty directory; buckets are its sub-directories.
    pub fn start() -> S3Server {
        let root = tempfile::Builder::new()
            .prefix("lodestar-s3-")
            .tempdir()
            .expect("a temporary directory");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs over the directory");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
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
            runtime.block_on(serve(listener, service, serving, stopped));
            // Connections still open (kept alive by a client) end with the runtime.
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        S3Server {
            root,
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where object `key` of `bucket` lives on disk; writing there is putting the object.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Writes object `key` of `bucket`, creating the bucket if needed.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.object_path(bucket, key);
        fs_err::create_dir_all(path.parent().unwrap_or(Path::new("."))).unwrap();
        fs_err::write(path, bytes).unwrap();
    }

    /// The size of object `key` of `bucket`.
    pub fn size(&self, bucket: &str, key: &str) -> u64 {
        fs_err::metadata(self.object_path(bucket, key))
            .unwrap()
            .len()
    }

    /// Every request answered so far, in order.
    pub fn log(&self) -> Vec<Served> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the requests answered so far.
    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Answers the next object reads with these faults, one each.
    pub fn inject(&self, faults: &[Fault]) {
        self.shared.faults.lock().unwrap().extend(faults);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    service: S3Service,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let service = service.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let handler = service_fn(move |request| {
                let service = service.clone();
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(answer(request, &service, &shared).await) }
            });
            // A client closing its connection is not an error of the server.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), handler)
                .await;
        });
    }
}

/// Serves one request through s3s (or a fault), recording it.
async fn answer(
    request: Request<Incoming>,
    service: &S3Service,
    shared: &Shared,
) -> Response<Counted> {
    let method = request.method().to_string();
    let path = percent_decoded(request.uri().path());
    let query = request.uri().query().unwrap_or_default().to_string();
    let bytes = Arc::new(AtomicU64::new(0));
    let mut served = Served {
        method,
        path,
        query,
        status: 0,
        bytes: Arc::clone(&bytes),
    };
    let fault = if served.is_object_read() {
        shared.faults.lock().unwrap().pop_front()
    } else {
        None
    };
    let response = match fault {
        Some(Fault::SlowDown) => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/xml")
            .body(s3s::Body::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".to_string(),
            ))
            .expect("a valid response"),
        Some(Fault::InternalError) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header("content-type", "application/xml")
            .body(s3s::Body::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>".to_string(),
            ))
            .expect("a valid response"),
        stall => {
            if let Some(Fault::Stall(pause)) = stall {
                tokio::time::sleep(pause).await;
            }
            match service.call(request.map(s3s::Body::from)).await {
                Ok(response) => response,
                Err(e) => Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(s3s::Body::from(format!("{e:?}")))
                    .expect("a valid response"),
            }
        }
    };
    served.status = response.status().as_u16();
    shared.log.lock().unwrap().push(served);
    response.map(|body| Counted {
        inner: Box::pin(body),
        bytes,
    })
}

/// `%3D` as `=` and so on: object keys are percent-encoded in URLs.
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response body that counts the bytes it sends.
struct Counted {
    inner: Pin<Box<s3s::Body>>,
    bytes: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = <s3s::Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

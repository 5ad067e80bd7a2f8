//! Connections: the accept loop on hyper's HTTP/1 server, with a cap on open connections, a
//! time limit on reading a request's headers, and a stop with a deadline.
//!
//! `axum::serve` has no header-read timeout, no connection cap and waits forever for the
//! requests in flight when stopping; this is the same loop (axum's "serve-with-hyper" and
//! "graceful-shutdown" examples) with those three added.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; the next ones wait in the listen backlog.
    pub max_connections: usize,
    /// Time to receive a request's headers, counted from when the server waits for them: it
    /// also closes a keep-alive connection idle for that long.
    pub header_timeout: Duration,
    /// After the stop signal, how long the requests in flight may take before they are
    /// cancelled.
    pub shutdown_timeout: Duration,
}

/// Requests whose handler has not finished, across connections.
#[derive(Debug, Default, Clone)]
struct InFlight(Arc<AtomicUsize>);

/// One request in flight, until dropped (answered or cancelled).
struct Counted(InFlight);

impl InFlight {
    fn enter(&self) -> Counted {
        self.0.fetch_add(1, Ordering::SeqCst);
        Counted(self.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then closes the listening socket,
/// lets the requests in flight finish for up to `limits.shutdown_timeout`, cancels the ones
/// still running and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let in_flight = InFlight::default();
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A connection beyond the cap is not accepted: it waits in the kernel's backlog until
        // one closes, and the connections being served are not slowed down.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Finished connection tasks are reaped as we go.
        while connections.try_join_next().is_some() {}
        let app = app.clone();
        let in_flight = in_flight.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let counted = in_flight.enter();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(counted);
                Ok::<_, Infallible>(match response {
                    Ok(response) => response,
                    Err(never) => match never {},
                })
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                // The client went away, sent garbage, or was too slow with its headers.
                tracing::debug!("connection closed: {e}");
            }
            drop(slot);
        });
    }
    // New connections are refused from here on.
    drop(listener);
    let open = graceful.count();
    tokio::select! {
        () = graceful.shutdown() => {
            tracing::info!("stopped: every request in flight was answered");
        }
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            let requests = in_flight.count();
            let connections_left = connections.len();
            connections.abort_all();
            while connections.join_next().await.is_some() {}
            tracing::warn!(
                cancelled_requests = requests,
                closed_connections = connections_left,
                open_at_stop = open,
                "stopped after the shutdown timeout of {} s: {requests} request{} in flight cancelled",
                limits.shutdown_timeout.as_secs_f64(),
                if requests == 1 { "" } else { "s" },
            );
        }
    }
}

//! The HTTP/1.1 server under every route: hyper, driven here rather than
//! by `axum::serve`, because that one sets no limits a public listener
//! needs.
//!
//! - **Connections**: at most `max_http_connections` at once, counted
//!   across every listener that shares the same [`ConnectionSlots`] (the
//!   gateway's and the HTTP triggers'). One more is answered `503` with
//!   `Retry-After` and closed, without reading it (at most 64 such answers
//!   in flight; past them it is just closed).
//! - **Request heads**: a connection must send a whole request head within
//!   `http_header_timeout` of opening, or of its previous response — so a
//!   client dripping one header line every few seconds is cut off, and an
//!   idle keep-alive connection ends after the same time.
//! - Upgrades (worker WebSockets) leave this server once switched; their
//!   own limit is `max_worker_connections`.
//!
//! Shutdown: no new connections; open ones finish their current request
//! (hyper's graceful close) and the server returns when the last one has.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Limits;
use crate::log_throttle::LogThrottle;
use crate::poll_again::PollAgain;

/// How long a refused connection may take to receive its 503.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// Refusals being written at once; beyond them a connection over the
/// limit is closed without its 503, so a flood cannot pile up tasks.
const REFUSALS_IN_FLIGHT: usize = 64;

/// The open-connection budget (`max_http_connections`) that listeners
/// share.
#[derive(Clone)]
pub struct ConnectionSlots(Arc<Semaphore>);

impl ConnectionSlots {
    pub fn new(limits: &Limits) -> Self {
        Self(Arc::new(Semaphore::new(limits.max_http_connections)))
    }
}

/// Serves `router` on `listener` until `shutdown`, within `limits`, its
/// connections counted in `slots`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    slots: ConnectionSlots,
    shutdown: CancellationToken,
) {
    let capacity = limits.max_http_connections;
    let ConnectionSlots(slots) = slots;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.http_header_timeout);
    let refusals = LogThrottle::new(Duration::from_secs(10));
    let refusing = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most often: wait for some to close
                // rather than spinning on the error.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Frames and calls are small request/response messages: send each
        // at once rather than waiting to coalesce (Nagle).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if refusals.should_log() {
                tracing::warn!(
                    limit = capacity,
                    "HTTP connection refused: the gateway holds max_http_connections; raise it or find who holds them"
                );
            }
            if let Ok(writing) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream, capacity).await;
                    drop(writing);
                });
            }
            continue;
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // Reading a request body wakes the connection's own task; see
            // `poll_again` for why that is absorbed here.
            let mut connection = PollAgain::new(connection);
            tokio::select! {
                _ = &mut connection => {}
                () = shutdown.cancelled() => {
                    connection.inner().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    // Every slot back: every connection has ended (those of the other
    // listeners sharing the slots too; they stop on the same signal).
    let _ = slots.acquire_many_owned(capacity_u32(capacity)).await;
}

fn capacity_u32(capacity: usize) -> u32 {
    u32::try_from(capacity).unwrap_or(u32::MAX)
}

/// A short, complete answer for a connection over the limit.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":{{\"code\":\"overloaded\",\"message\":\"capgate already holds its {limit} HTTP connections (max_http_connections); retry in a moment\"}}}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

//! One task per worker socket: a reader that hands frames to the
//! [`Session`], and a writer that drains the connection's outbox, batching
//! whatever is queued into one flush.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use capgate_protocol::{ErrorBody, Frame, WorkerRegistered, codes};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::registry::Outgoing;
use super::session::Session;
use crate::server::GatewayState;

/// WebSocket close code for a message over the size limit (RFC 6455).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code for a server going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code for a binary frame on a text-only socket.
pub const CLOSE_UNSUPPORTED: u16 = 1003;

/// Serves one worker socket until it closes or the gateway shuts down.
pub async fn serve(socket: WebSocket, state: Arc<GatewayState>) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut queued) = mpsc::unbounded_channel::<Outgoing>();
    let worker = state.workers.connect(outbox);
    tracing::info!(worker_id = %worker.worker_id, "worker connected");
    worker.send(&Frame::WorkerRegistered(WorkerRegistered {
        worker_id: worker.worker_id.clone(),
        reattach_token: worker.reattach_token().to_owned(),
    }));

    let writer = tokio::spawn(async move {
        while let Some(first) = queued.recv().await {
            let mut next = Some(first);
            while let Some(outgoing) = next.take() {
                let message = match outgoing {
                    Outgoing::Text(text) => Message::Text(Utf8Bytes::from(text)),
                    Outgoing::Close(code, reason) => {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code,
                                reason: Utf8Bytes::from(reason),
                            })))
                            .await;
                        return;
                    }
                };
                if sink.feed(message).await.is_err() {
                    return;
                }
                next = queued.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    let session = Session {
        state: state.clone(),
        worker: worker.clone(),
    };
    let shutdown = state.shutdown.clone();
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = shutdown.cancelled() => {
                worker.close(CLOSE_GOING_AWAY, "capgate is shutting down; reconnect to another instance or after restart");
                break;
            }
        };
        match message {
            Some(Ok(Message::Text(text))) => session.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                worker.send(&Frame::Error(ErrorBody::new(
                    codes::INVALID_FRAME,
                    "binary frames are not part of the worker protocol: send each frame as JSON text",
                )));
            }
            // Pings are answered by the WebSocket layer itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(error)) => {
                let text = error.to_string();
                if text.contains("too long")
                    || text.contains("too big")
                    || text.contains("Space limit")
                {
                    let reason = format!(
                        "frame larger than the {} byte limit; send smaller payloads or raise max_frame_bytes",
                        state.config.max_frame_bytes
                    );
                    tracing::warn!(worker_id = %worker.worker_id, %text, "oversized frame; closing the connection");
                    worker.send(&Frame::Error(ErrorBody::new(
                        codes::INVALID_FRAME,
                        reason.clone(),
                    )));
                    // Close reasons are limited to 123 bytes.
                    worker.close(CLOSE_TOO_BIG, truncate(&reason, 123));
                } else {
                    tracing::info!(worker_id = %worker.worker_id, %text, "worker socket error");
                }
                break;
            }
        }
    }
    state.workers.disconnect(&worker, &state.catalog);
    tracing::info!(worker_id = %worker.worker_id, "worker disconnected");
    // Ends the writer once what is queued is delivered (a close already
    // queued goes first and wins).
    worker.close(1000, "");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
}

/// Accepts the SDKs' telemetry socket (`/otel`) and discards its frames:
/// refusing it would make the iii SDKs retry forever.
pub async fn drain_telemetry(mut socket: WebSocket, state: Arc<GatewayState>) {
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = state.shutdown.cancelled() => return,
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

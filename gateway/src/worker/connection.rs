//! One task per worker socket: it hands frames to the [`Session`], polls the
//! calls the worker made, and drains the connection's outbox.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use capgate_protocol::{ErrorBody, Frame, WorkerRegistered, codes};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};

use super::WorkerContext;
use super::session::Session;
use crate::config::Limits;
use crate::identity::WorkerIdentity;
use crate::workers::outbox::{self, OutboxReader, Outgoing};
use crate::workers::registry::{Ending, Teardown, WorkerHandle};

/// Bytes a socket reads at a time; also its buffer while idle. Most
/// worker connections are idle most of the time, and tungstenite's 128 KiB
/// default made an idle connection cost ~140 KiB; a larger frame grows the
/// buffer for as long as it is read.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Bytes gathered before a write reaches the socket (a flush always
/// writes everything).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Frames read in a row before the connection's other work gets a turn.
const READS_BEFORE_OTHERS: usize = 64;

/// A worker (or telemetry) socket's limits and buffers.
pub fn configure(upgrade: WebSocketUpgrade, limits: &Limits) -> WebSocketUpgrade {
    upgrade
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
}

/// WebSocket close code for a message over the size limit (RFC 6455).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code for a server going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Serves one worker socket until it closes, falls silent, or the gateway
/// shuts down.
///
/// One task owns the socket: it reads frames, polls the calls this worker
/// made, and writes whatever other tasks queued for it — in that order, so
/// that what a burst of frames produced is written in one flush. Reads and
/// writes take turns in this one task, so the socket is not split into
/// halves, whose shared lock every read and write would take. A worker
/// that stops reading stalls only its own connection. Liveness: a WebSocket
/// ping goes out every `ping_interval`; a connection from which nothing
/// (not even a pong) has arrived for two intervals, or whose writes block
/// that long, is declared dead and closed, and the calls waiting on it fail
/// at once. A connection lost that way (or dropped without a close frame)
/// has its registrations held for `reattach_grace`, so the worker can
/// reattach without its functions ever going offline; one the worker
/// closes is withdrawn at once.
pub async fn serve(mut socket: WebSocket, state: Arc<WorkerContext>, identity: WorkerIdentity) {
    let (outbox, mut queued) = outbox::channel(state.config.limits.max_outbox_bytes);
    let overflow = queued.overflow();
    let worker = state.workers.connect(outbox, identity);
    tracing::info!(worker_id = %worker.worker_id, subject = %worker.caller().subject(), "worker connected");
    worker.send(&Frame::WorkerRegistered(WorkerRegistered {
        worker_id: worker.worker_id.clone(),
        reattach_token: worker.reattach_token().to_owned(),
    }));
    let session = Session::new(state.clone(), worker.clone());
    let shutdown = state.shutdown.clone();
    let mut in_flight = FuturesUnordered::new();
    let interval = state.config.workers.ping_interval;
    let silence = interval * 2;
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ticks since anything arrived, rather than the time of the last
    // frame: reading the clock for every frame costs more than counting.
    // Three ticks since the last frame are at least two intervals of
    // silence, whenever within an interval that frame came.
    let mut quiet_ticks = 0u32;
    let mut ending = Ending::Lost;
    // Made once, not per turn of the loop: each `cancelled()` is a waiter
    // registered with, and removed from, its token — twice per frame.
    let overflowed = overflow.cancelled();
    let shutting_down = shutdown.cancelled();
    tokio::pin!(overflowed, shutting_down);
    let mut reads_in_a_row = 0usize;
    loop {
        // In order: what has arrived, then the calls that completed, then
        // the writes — so that the frames a burst of reads produced leave
        // in one write (one `send`, one wake-up of the peer), not one each
        // (with the branches in random order, 0.32 sends a call against a
        // frame router's 0.05). Past `READS_BEFORE_OTHERS` frames in a row
        // every other branch gets a turn, so a worker that never stops
        // sending cannot starve its answers, pings or the shutdown (tokio's
        // cooperative budget may end a long turn too; this does not rely on
        // it).
        let may_read = reads_in_a_row < READS_BEFORE_OTHERS;
        tokio::select! {
            biased;
            message = socket.next(), if may_read => { reads_in_a_row += 1; quiet_ticks = 0; match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(call) = session.on_text(text.as_str()).await {
                        in_flight.push(call);
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    worker.send(&Frame::Error(ErrorBody::new(
                        codes::INVALID_FRAME,
                        "binary frames are not part of the worker protocol: send each frame as JSON text",
                    )));
                }
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    ending = Ending::Closed;
                    break;
                }
                None => break,
                Some(Err(error)) => {
                    on_read_error(&worker, &state, &error.to_string());
                    // Deliver the explanation and the close queued just now.
                    while let Some(outgoing) = queued.try_recv() {
                        if write_queued(&mut socket, outgoing, &mut queued).await.is_break() {
                            break;
                        }
                    }
                    break;
                }
            }},
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {
                // And every other call that completed meanwhile: each turn
                // of the loop tries the socket first, and a read attempt
                // costs even when nothing has arrived (tungstenite zeroes
                // its read chunk before each), so a burst of answers would
                // pay one per call.
                finish_completed(&mut in_flight).await;
            }
            Some(outgoing) = queued.recv() => {
                reads_in_a_row = 0;
                let written = tokio::select! {
                    written = tokio::time::timeout(silence, write_queued(&mut socket, outgoing, &mut queued)) => written,
                    () = &mut overflowed => break,
                };
                if !matches!(written, Ok(ControlFlow::Continue(()))) {
                    if written.is_err() {
                        tracing::warn!(worker_id = %worker.worker_id, ?silence, "worker stopped reading; declared dead");
                    }
                    break;
                }
            }
            _ = pings.tick() => {
                quiet_ticks += 1;
                if quiet_ticks >= 3 {
                    tracing::warn!(worker_id = %worker.worker_id, ?silence, "worker silent; declared dead");
                    break;
                }
                let ping = socket.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(silence, ping).await, Ok(Ok(()))) {
                    break;
                }
            }
            // Last: checking a token takes its lock, and a connection
            // that is busy reaches these after every burst anyway.
            () = &mut overflowed => break,
            () = &mut shutting_down => {
                let reason = "capgate is shutting down; reconnect to another instance or after restart";
                let _ = socket.send(close_message(CLOSE_GOING_AWAY, reason.into())).await;
                ending = Ending::Closed;
                break;
            }
            () = std::future::ready(()), if !may_read => reads_in_a_row = 0,
        }
    }
    if overflow.is_cancelled() {
        tracing::warn!(worker_id = %worker.worker_id, limit = queued.limit(), queued = queued.queued_bytes(),
            "worker reads slower than frames are sent to it: more than max_outbox_bytes queued; connection cut");
    }
    let grace = state.config.workers.reattach_grace;
    let teardown = state
        .workers
        .disconnect(&worker, &state.catalog, ending, grace)
        .await;
    tracing::info!(worker_id = %worker.worker_id, ?ending, ?teardown, "worker disconnected");
    if teardown == Teardown::Held {
        // Its triggers are held with its functions: a reattach moves both
        // to the new connection (a route keeps answering, its calls waiting
        // for the provider); without one, both go when the hold ends.
        let (state, provider, worker_id) =
            (state.clone(), worker.provider, worker.worker_id.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = state.shutdown.cancelled() => {}
            }
            state.workers.expire(provider, &state.catalog).await;
            state.triggers.forget_owner(&worker_id);
        });
    } else {
        state.triggers.forget_owner(&worker.worker_id);
    }
    // Calls this worker made can no longer be answered; dropping them
    // forgets their pending entries at their providers.
    drop(in_flight);
}

/// Polls the calls in flight until none has completed, in this task's
/// context, so that the next completion wakes the task as before.
fn finish_completed<F: Future<Output = ()> + Unpin>(
    in_flight: &mut FuturesUnordered<F>,
) -> impl Future<Output = ()> {
    std::future::poll_fn(move |cx| {
        while let Poll::Ready(Some(())) = in_flight.poll_next_unpin(cx) {}
        Poll::Ready(())
    })
}

/// Writes `first` and everything else already queued, then flushes once.
/// Breaks after a close frame or a write error.
async fn write_queued(
    socket: &mut WebSocket,
    first: Outgoing,
    queued: &mut OutboxReader,
) -> ControlFlow<()> {
    let mut next = Some(first);
    while let Some(outgoing) = next.take() {
        let message = match outgoing {
            Outgoing::Text(text) => Message::Text(Utf8Bytes::from(text)),
            Outgoing::Close(code, reason) => {
                let _ = socket.send(close_message(code, reason)).await;
                return ControlFlow::Break(());
            }
        };
        if socket.feed(message).await.is_err() {
            return ControlFlow::Break(());
        }
        next = queued.try_recv();
    }
    if socket.flush().await.is_err() {
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

fn close_message(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

/// Explains an oversized frame (close 1009) or logs another socket error.
fn on_read_error(worker: &WorkerHandle, state: &WorkerContext, text: &str) {
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        let reason = format!(
            "frame larger than the {} byte limit; send smaller payloads or raise max_frame_bytes",
            state.config.limits.max_frame_bytes
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
}

/// Accepts the SDKs' telemetry socket (`/otel`): its spans and metrics are
/// relayed to the collector when export is on, dropped otherwise (refusing
/// the socket would make the iii SDKs retry forever).
pub async fn drain_telemetry(mut socket: WebSocket, state: Arc<WorkerContext>) {
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Binary(frame))) => state.path.telemetry().relay(&frame),
                Some(Ok(Message::Text(frame))) => state.path.telemetry().relay(frame.as_bytes()),
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

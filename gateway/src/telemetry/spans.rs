//! Finished spans on their way to the collector: a bounded queue the call
//! path never waits on, and one task that sends them in batches.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Counters;

/// Hands each finished span to the export task, or counts it dropped when
/// the queue is full: a slow or absent collector costs the call path one
/// failed `try_send`.
pub struct Queue {
    spans: mpsc::Sender<SpanData>,
    counters: Arc<Counters>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.spans.max_capacity())
            .finish()
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.counters.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    // The export task flushes what is queued when the gateway stops
    // (`Telemetry::shutdown`); the SDK's synchronous hooks have nothing to add.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// How the export task batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_queued: usize,
    pub max_batch: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

/// The queue and the task that empties it into `exporter`. The task ends
/// (after a last export of what is queued) when `stop` is cancelled.
pub fn start<E: SpanExporter + 'static>(
    exporter: E,
    batching: Batching,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> (Queue, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(batching.max_queued);
    let task = tokio::spawn(export_batches(
        exporter,
        receiver,
        batching,
        counters.clone(),
        stop,
    ));
    (
        Queue {
            spans: sender,
            counters,
        },
        task,
    )
}

async fn export_batches<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    batching: Batching,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(batching.max_batch);
    loop {
        tokio::select! {
            received = spans.recv_many(&mut batch, batching.max_batch) => if received == 0 { return },
            () = stop.cancelled() => break,
        }
        // Wait for more, up to a full batch or the interval.
        let until = tokio::time::Instant::now() + batching.interval;
        while batch.len() < batching.max_batch {
            let room = batching.max_batch - batch.len();
            tokio::select! {
                received = spans.recv_many(&mut batch, room) => if received == 0 { break },
                () = tokio::time::sleep_until(until) => break,
                () = stop.cancelled() => break,
            }
        }
        send(
            &exporter,
            std::mem::take(&mut batch),
            batching.timeout,
            &counters,
        )
        .await;
    }
    // Stopping: what is queued now goes out, in batches; at most a queue's worth.
    for _ in 0..=batching.max_queued / batching.max_batch {
        while batch.len() < batching.max_batch {
            match spans.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        send(
            &exporter,
            std::mem::take(&mut batch),
            batching.timeout,
            &counters,
        )
        .await;
    }
}

async fn send<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    timeout: Duration,
    counters: &Counters,
) {
    let count = batch.len() as u64;
    let outcome = tokio::time::timeout(timeout, exporter.export(batch)).await;
    match outcome {
        Ok(Ok(())) => {
            counters.spans_exported.fetch_add(count, Ordering::Relaxed);
        }
        failed => {
            counters.spans_dropped.fetch_add(count, Ordering::Relaxed);
            let failures = counters.export_failures.fetch_add(1, Ordering::Relaxed) + 1;
            // Every failure is counted; the log says so at 1, 2, 4, 8, …
            if failures.is_power_of_two() {
                let reason = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {} ms", timeout.as_millis()),
                };
                tracing::warn!(
                    failures,
                    spans = count,
                    %reason,
                    "spans were not exported; check [telemetry] otlp_endpoint and the collector"
                );
            }
        }
    }
}

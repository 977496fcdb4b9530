//! Finished spans on their way to the collector: a bounded queue the call
//! path never waits on, and one task that sends them in batches.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Counters;

/// Hands each finished span to the export task, or counts it dropped when
/// the queue is full: a slow or absent collector costs the call path one
/// failed `try_send`.
pub struct Queue {
    spans: mpsc::Sender<SpanData>,
    counters: Arc<Counters>,
    /// Told when a full batch is waiting. The export task otherwise sleeps
    /// until its interval: waking it for every span cost more CPU than
    /// the span itself.
    batch_ready: Arc<Notify>,
    max_batch: usize,
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
        if self.spans.max_capacity() - self.spans.capacity() >= self.max_batch {
            self.batch_ready.notify_one();
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
    let batch_ready = Arc::new(Notify::new());
    let task = tokio::spawn(export_batches(
        exporter,
        receiver,
        batching,
        (counters.clone(), batch_ready.clone()),
        stop,
    ));
    (
        Queue {
            spans: sender,
            counters,
            batch_ready,
            max_batch: batching.max_batch,
        },
        task,
    )
}

/// Every `interval`, or as soon as a full batch waits, sends what is
/// queued in batches; when `stop` is cancelled, sends what is left (at
/// most a queue's worth) and ends.
async fn export_batches<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    batching: Batching,
    (counters, batch_ready): (Arc<Counters>, Arc<Notify>),
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(batching.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = every.tick() => false,
            () = batch_ready.notified() => false,
            () = stop.cancelled() => true,
        };
        // A queue's worth at most per round, so a stop is never starved.
        for _ in 0..=batching.max_queued / batching.max_batch {
            let mut batch = Vec::with_capacity(batching.max_batch);
            while batch.len() < batching.max_batch {
                match spans.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let full = batch.len() == batching.max_batch;
            send(&exporter, batch, batching.timeout, &counters).await;
            if !full {
                break;
            }
        }
        if stopping {
            return;
        }
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

//! Worker telemetry passed on: iii SDKs send their own spans, metrics and
//! logs to the engine's `/otel` socket as OTLP JSON behind a four-byte
//! prefix (`OTLP` spans, `MTRC` metrics, `LOGS` logs). With export on,
//! capgate forwards each to the collector as OTLP/HTTP JSON, so a worker's
//! spans join the trace the gateway started and its logs carry that
//! trace's ids. Without export, frames are read and dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Counters;

/// Frames waiting to be sent; past it they are dropped and counted.
pub const MAX_QUEUED_FRAMES: usize = 256;

/// Which OTLP signal a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Metrics,
    Logs,
}

/// The sending side, shared by every `/otel` connection.
#[derive(Clone)]
pub struct Relay {
    frames: mpsc::Sender<(Signal, Vec<u8>)>,
    counters: Arc<Counters>,
}

/// Where frames go.
pub struct Endpoints {
    pub traces: String,
    pub metrics: String,
    pub logs: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Relay {
    /// The relay and its sending task (which ends when `stop` is cancelled).
    pub fn start(
        endpoints: Endpoints,
        counters: Arc<Counters>,
        stop: CancellationToken,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(endpoints.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let (sender, receiver) = mpsc::channel(MAX_QUEUED_FRAMES);
        let task = tokio::spawn(send_frames(
            client,
            endpoints,
            receiver,
            counters.clone(),
            stop,
        ));
        Ok((
            Self {
                frames: sender,
                counters,
            },
            task,
        ))
    }

    /// Takes one binary or text frame from a worker's `/otel` socket.
    pub fn offer(&self, frame: &[u8]) {
        let (signal, body) = match frame.split_at_checked(4) {
            Some((b"OTLP", body)) => (Signal::Traces, body),
            Some((b"MTRC", body)) => (Signal::Metrics, body),
            Some((b"LOGS", body)) => (Signal::Logs, body),
            _ => return,
        };
        if self.frames.try_send((signal, body.to_vec())).is_err() {
            self.counters.relay_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn send_frames(
    client: reqwest::Client,
    endpoints: Endpoints,
    mut frames: mpsc::Receiver<(Signal, Vec<u8>)>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    loop {
        let (signal, body) = tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        let url = match signal {
            Signal::Traces => &endpoints.traces,
            Signal::Metrics => &endpoints.metrics,
            Signal::Logs => &endpoints.logs,
        };
        let mut request = client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in &endpoints.headers {
            request = request.header(name, value);
        }
        let sent = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = sent {
            let dropped = counters.relay_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    error = %error.without_url(),
                    "worker telemetry was not relayed to the collector"
                );
            }
        }
    }
}

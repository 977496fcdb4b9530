//! What an operator follows a call by: a span per call exported over
//! OTLP/HTTP, metrics at `/metrics` (and over OTLP), and the trace and
//! span ids on every log line of a call.
//!
//! The call path pays for it only in what it must: with export off, a
//! check of the arriving context and the metric counters; with export on,
//! a span, handed to a bounded queue it never waits on ([`spans`]).
//! Workers' own spans, sent to `/otel` by iii SDKs, are relayed to the
//! same collector ([`relay`]).

pub mod call;
mod call_stats;
pub mod config;
pub mod context;
pub mod metrics;
mod relay;
mod spans;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capgate_catalog::Invocation;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use call::{CallSpan, source_of};
pub use metrics::Metrics;

/// What telemetry itself dropped or failed at, for its own metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub spans_exported: AtomicU64,
    pub spans_dropped: AtomicU64,
    pub export_failures: AtomicU64,
    pub traceparent_dropped: AtomicU64,
    pub baggage_dropped: AtomicU64,
    pub relay_dropped: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "the OTLP exporter could not be built: {0}; check [telemetry] and OTEL_EXPORTER_OTLP_*"
    )]
    Exporter(String),
    #[error("metrics could not be set up: {0}")]
    Metrics(String),
}

/// The gateway's telemetry: a tracer when export is on, metrics always.
pub struct Telemetry {
    tracer: Option<SdkTracer>,
    provider: Option<SdkTracerProvider>,
    pub metrics: Metrics,
    counters: Arc<Counters>,
    relay: Option<relay::Relay>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Telemetry {
    /// Sets up what `settings` asks for. Export tasks run on the current
    /// Tokio runtime.
    pub fn start(settings: &config::Telemetry) -> Result<Self, TelemetryError> {
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
            ])
            .build();
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let Some(export) = &settings.export else {
            return Ok(Self {
                tracer: None,
                provider: None,
                metrics: Metrics::new(resource, None, &counters, &stop)?,
                counters,
                relay: None,
                stop,
                tasks: Mutex::default(),
            });
        };
        let headers: HashMap<String, String> = export
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let built = |error: opentelemetry_otlp::ExporterBuildError| {
            TelemetryError::Exporter(error.to_string())
        };
        let mut span_exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(export.traces_endpoint.clone())
            .with_timeout(export.export_timeout)
            .with_headers(headers.clone())
            .build()
            .map_err(built)?;
        span_exporter.set_resource(&resource);
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(export.metrics_endpoint.clone())
            .with_timeout(export.export_timeout)
            .with_headers(headers.clone())
            .build()
            .map_err(built)?;
        let (queue, spans_task) = spans::start(
            span_exporter,
            spans::Batching {
                max_queued: export.max_queued_spans,
                max_batch: export.max_export_batch,
                interval: export.export_interval,
                timeout: export.export_timeout,
            },
            counters.clone(),
            stop.clone(),
        );
        let (relay, relay_task) = relay::Relay::start(
            relay::Endpoints {
                traces: export.traces_endpoint.clone(),
                metrics: export.metrics_endpoint.clone(),
                logs: export.logs_endpoint.clone(),
                headers: headers.into_iter().collect(),
                timeout: export.export_timeout,
            },
            counters.clone(),
            stop.clone(),
        )
        .map_err(|error| TelemetryError::Exporter(error.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                export.sample_ratio,
            ))))
            .with_resource(resource.clone())
            .build();
        tracing::info!(
            traces = %export.traces_endpoint,
            metrics = %export.metrics_endpoint,
            sample_ratio = export.sample_ratio,
            "exporting telemetry over OTLP/HTTP"
        );
        Ok(Self {
            tracer: Some(provider.tracer("capgate")),
            provider: Some(provider),
            metrics: Metrics::new(
                resource,
                Some((metric_exporter, export.metrics_interval)),
                &counters,
                &stop,
            )?,
            counters,
            relay: Some(relay),
            stop,
            tasks: Mutex::new(vec![spans_task, relay_task]),
        })
    }

    /// Starts a call: its arriving context checked (what is malformed or
    /// oversized removed and counted), its span started when tracing is on.
    pub fn begin(&self, invocation: &mut Invocation, source: &'static str) -> CallSpan {
        let dropped = context::sanitize(&mut invocation.trace);
        if dropped.traceparent {
            self.counters
                .traceparent_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        if dropped.baggage {
            self.counters
                .baggage_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                function = %invocation.function_id,
                limit = context::MAX_BAGGAGE_BYTES,
                "baggage over its limit or not printable was dropped"
            );
        }
        match &self.tracer {
            Some(tracer) => CallSpan::start(tracer, invocation, source),
            None => CallSpan::untraced(&invocation.trace, &invocation.function_id),
        }
    }

    /// A frame from a worker's `/otel` socket: relayed when exporting.
    pub fn relay(&self, frame: &[u8]) {
        if let Some(relay) = &self.relay {
            relay.offer(frame);
        }
    }

    /// Sends what is queued (within a few seconds) and stops exporting.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = self
            .tasks
            .lock()
            .map(|mut tasks| std::mem::take(&mut *tasks))
            .unwrap_or_default();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("telemetry export did not finish within 5 s of shutdown");
            }
        }
        if let Some(provider) = &self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::debug!(%error, "tracer provider shutdown");
        }
        self.metrics.shutdown().await;
    }
}

//! What `/metrics` serves in Prometheus text, and OTLP pushes when export
//! is on: one set of OpenTelemetry instruments, two readers.
//!
//! Labels are bounded by construction: `function` is a catalog id (calls
//! of an unknown function are counted under `_unknown`), `outcome` one of
//! the protocol's fixed codes, `source` one of a fixed list. The SDK also
//! caps every instrument at 2,000 label sets (more are counted under
//! `otel_metric_overflow`).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use capgate_catalog::Catalog;
use capgate_catalog::audit::AuditLog;
use capgate_catalog::store::QueueCounts;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use tokio_util::sync::CancellationToken;

use super::call_stats::CallStats;
use super::{Counters, TelemetryError};

/// Latency buckets in seconds: 50 µs to a minute, dense where a gateway's
/// calls live.
const LATENCY_BUCKETS: [f64; 19] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The label a call of an unknown function is counted under: a caller
/// must not be able to make series by inventing names.
pub const UNKNOWN_FUNCTION: &str = "_unknown";

/// The instruments the call path records into, and the registry
/// `/metrics` renders.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    meter: Meter,
    /// `capgate.calls`, counted here and reported when collected, and
    /// `capgate.call.duration`, recorded through histograms bound to each
    /// label set.
    calls: Arc<CallStats>,
    denials: Counter<u64>,
    /// Queue counts as last read (reading them is asynchronous; the
    /// instruments' callbacks are not).
    queues: Arc<Mutex<Vec<QueueCounts>>>,
    /// The OTLP push task, when export is on: it pushes a last time when
    /// the gateway stops.
    pushing: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A reading a gauge takes; `None` once what it reads is gone.
pub type Reading = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// Each REST service's circuit: its namespace and state (`closed`,
/// `open`, `half_open`); `None` once the services are gone.
pub type Circuits = Box<dyn Fn() -> Option<Vec<(String, &'static str)>> + Send + Sync>;

/// What the gauges read, held weakly: the gateway owns them, not its
/// metrics (and telemetry knows nothing of the path or the workers).
pub struct Observed {
    /// Worker connections.
    pub workers: Reading,
    /// Calls dispatched to workers and not yet answered.
    pub in_flight: Reading,
    pub catalog: Weak<Catalog>,
    pub audit: Weak<AuditLog>,
    pub circuits: Circuits,
}

impl Metrics {
    /// The instruments, read by `/metrics` and, with `push`, exported
    /// over OTLP every `interval`.
    pub fn new(
        resource: Resource,
        push: Option<(opentelemetry_otlp::MetricExporter, Duration)>,
        counters: &Arc<Counters>,
        stop: &CancellationToken,
    ) -> Result<Self, TelemetryError> {
        let registry = prometheus::Registry::new();
        let pull = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(|error| TelemetryError::Metrics(error.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(pull);
        let mut pushing = None;
        if let Some((exporter, interval)) = push {
            let reader = Arc::new(PushReader(
                ManualReader::builder()
                    .with_temporality(exporter.temporality())
                    .build(),
            ));
            builder = builder.with_reader(SharedReader(reader.clone()));
            pushing = Some(tokio::spawn(push_every(
                reader,
                exporter,
                interval,
                stop.clone(),
            )));
        }
        let provider = builder.build();
        let meter = provider.meter("capgate");
        let calls = Arc::new(CallStats::new(
            meter
                .f64_histogram("capgate.call.duration")
                .with_unit("s")
                .with_description("Time from a call's arrival at the gateway to its answer")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
        ));
        let counted = Arc::downgrade(&calls);
        meter
            .u64_observable_counter("capgate.calls")
            .with_description("Calls by function, version, source and outcome")
            .with_callback(move |observer| {
                if let Some(counted) = counted.upgrade() {
                    counted.observe(|count, labels| observer.observe(count, labels));
                }
            })
            .build();
        let metrics = Self {
            calls,
            denials: meter
                .u64_counter("capgate.policy.denials")
                .with_description(
                    "Calls a policy refused, by source; admin API requests refused as source admin",
                )
                .build(),
            registry,
            provider,
            meter,
            queues: Arc::default(),
            pushing: std::sync::Mutex::new(pushing),
        };
        metrics.observe_telemetry(counters);
        Ok(metrics)
    }

    /// One finished call.
    pub fn record_call(
        &self,
        function: Arc<str>,
        version: Option<&Arc<str>>,
        source: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        self.calls.add(function, version, source, outcome, seconds);
    }

    /// One call (or, `source` = `admin`, one admin request) a policy refused.
    pub fn record_denial(&self, source: &'static str) {
        self.denials.add(1, &[KeyValue::new("source", source)]);
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> Result<String, TelemetryError> {
        use prometheus::Encoder as _;
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .map_err(|error| TelemetryError::Metrics(error.to_string()))?;
        String::from_utf8(text).map_err(|error| TelemetryError::Metrics(error.to_string()))
    }

    /// Replaces the queue counts the queue gauges report.
    pub fn set_queue_counts(&self, counts: Vec<QueueCounts>) {
        if let Ok(mut held) = self.queues.lock() {
            *held = counts;
        }
    }

    /// Waits for the last OTLP push (the stop signal already given), then
    /// stops the instruments.
    pub async fn shutdown(&self) {
        let pushing = self.pushing.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = pushing
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            tracing::warn!("the last metrics push did not finish within 5 s of shutdown");
        }
        if let Err(error) = self.provider.shutdown() {
            tracing::debug!(%error, "metrics provider shutdown");
        }
    }

    fn observe_telemetry(&self, counters: &Arc<Counters>) {
        use std::sync::atomic::Ordering::Relaxed;
        let counter =
            |name: &'static str, description: &'static str, read: fn(&Counters) -> u64| {
                let counters = Arc::downgrade(counters);
                self.meter
                    .u64_observable_counter(name)
                    .with_description(description)
                    .with_callback(move |observer| {
                        if let Some(counters) = counters.upgrade() {
                            observer.observe(read(&counters), &[]);
                        }
                    })
                    .build();
            };
        counter(
            "capgate.telemetry.spans.exported",
            "Spans the collector accepted",
            |c| c.spans_exported.load(Relaxed),
        );
        counter(
            "capgate.telemetry.spans.dropped",
            "Spans dropped: export queue full, or the collector failed or was slow",
            |c| c.spans_dropped.load(Relaxed),
        );
        counter(
            "capgate.telemetry.export.failures",
            "Export requests that failed or timed out",
            |c| c.export_failures.load(Relaxed),
        );
        counter(
            "capgate.telemetry.relay.dropped",
            "Worker telemetry frames not relayed to the collector",
            |c| c.relay_dropped.load(Relaxed),
        );
        let context = Arc::downgrade(counters);
        self.meter
            .u64_observable_counter("capgate.trace.context.dropped")
            .with_description("Malformed traceparent or oversized baggage removed from calls")
            .with_callback(move |observer| {
                if let Some(counters) = context.upgrade() {
                    observer.observe(
                        counters.traceparent_dropped.load(Relaxed),
                        &[KeyValue::new("part", "traceparent")],
                    );
                    observer.observe(
                        counters.baggage_dropped.load(Relaxed),
                        &[KeyValue::new("part", "baggage")],
                    );
                }
            })
            .build();
    }

    /// The gateway's gauges: calls in flight, workers, catalog, audit
    /// writer, queues.
    pub fn observe(&self, observed: Observed) {
        let Observed {
            workers,
            catalog,
            audit,
            in_flight,
            circuits,
        } = observed;
        for (name, description, reading) in [
            (
                "capgate.calls.in_flight",
                "Calls dispatched to workers and not yet answered",
                in_flight,
            ),
            ("capgate.workers.connected", "Worker connections", workers),
        ] {
            self.meter
                .u64_observable_gauge(name)
                .with_description(description)
                .with_callback(move |observer| {
                    if let Some(value) = reading() {
                        observer.observe(value, &[]);
                    }
                })
                .build();
        }
        self.meter
            .u64_observable_gauge("capgate.catalog.versions")
            .with_description("Function versions in the catalog, live (provided now) or offline")
            .with_callback(move |observer| {
                if let Some(catalog) = catalog.upgrade() {
                    let listed = catalog.list();
                    let live = listed.iter().filter(|l| !l.providers.is_empty()).count();
                    observer.observe(live as u64, &[KeyValue::new("status", "live")]);
                    observer.observe(
                        (listed.len() - live) as u64,
                        &[KeyValue::new("status", "offline")],
                    );
                }
            })
            .build();
        let audit_queue = audit.clone();
        self.meter
            .u64_observable_gauge("capgate.audit.queued")
            .with_description("Audit entries waiting for the writer")
            .with_callback(move |observer| {
                if let Some(audit) = audit_queue.upgrade() {
                    observer.observe(audit.queued() as u64, &[]);
                }
            })
            .build();
        self.meter
            .u64_observable_counter("capgate.audit.dropped")
            .with_description("Audit entries dropped because the writer was behind")
            .with_callback(move |observer| {
                if let Some(audit) = audit.upgrade() {
                    observer.observe(audit.dropped(), &[]);
                }
            })
            .build();
        // One series per state, 1 for the one the circuit is in (as
        // circuit breakers are commonly reported), so an alert is
        // `capgate_rest_circuit_state{state="open"} == 1`. At most one
        // service per namespace, `[rest] max_services` of them.
        self.meter
            .u64_observable_gauge("capgate.rest.circuit.state")
            .with_description(
                "Each REST service's circuit breaker: 1 for the state it is in, 0 for the others",
            )
            .with_callback(move |observer| {
                for (service, now) in circuits().unwrap_or_default() {
                    for state in capgate_adapters::rest::breaker::STATES {
                        observer.observe(
                            u64::from(state == now),
                            &[
                                KeyValue::new("service", service.clone()),
                                KeyValue::new("state", state),
                            ],
                        );
                    }
                }
            })
            .build();
        self.observe_queues();
    }

    fn observe_queues(&self) {
        let gauge =
            |name: &'static str, description: &'static str, read: fn(&QueueCounts, i64) -> i64| {
                let queues = Arc::downgrade(&self.queues);
                self.meter
                    .i64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |observer| {
                        let Some(queues) = queues.upgrade() else {
                            return;
                        };
                        let Ok(counts) = queues.lock() else {
                            return;
                        };
                        let now = capgate_adapters::queue::now_ms();
                        for count in counts.iter() {
                            observer.observe(
                                read(count, now),
                                &[
                                    KeyValue::new("queue", count.queue.clone()),
                                    KeyValue::new("group", count.consumer.clone()),
                                ],
                            );
                        }
                    })
                    .build();
            };
        gauge(
            "capgate.queue.depth",
            "Live messages per queue and consumer group",
            |c, _| c.depth,
        );
        gauge(
            "capgate.queue.in_flight",
            "Messages leased to a consumer now",
            |c, _| c.in_flight,
        );
        gauge(
            "capgate.queue.dead_letters",
            "Dead-lettered messages per queue and consumer group",
            |c, _| c.dead,
        );
        gauge(
            "capgate.queue.oldest_age_ms",
            "Age of the oldest live message, in milliseconds",
            |c, now| c.oldest_ms.map_or(0, |oldest| (now - oldest).max(0)),
        );
    }
}

/// A reader the provider owns and the push task also holds: the SDK's own
/// periodic readers block a thread on shutdown (a deadlock on a
/// single-threaded runtime); this one is collected by a Tokio task.
#[derive(Debug)]
struct PushReader(ManualReader);

#[derive(Debug)]
struct SharedReader(Arc<PushReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.0.temporality(kind)
    }
}

/// Collects and pushes every `interval`, and once more when `stop` is
/// cancelled. A failed push is logged (1st, 2nd, 4th, … time) and the
/// next one tries again with fresh values.
async fn push_every(
    reader: Arc<PushReader>,
    exporter: opentelemetry_otlp::MetricExporter,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut failures: u64 = 0;
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let last = tokio::select! {
            _ = every.tick() => false,
            () = stop.cancelled() => true,
        };
        let mut metrics = ResourceMetrics::default();
        let pushed = match reader.0.collect(&mut metrics) {
            Ok(()) => tokio::time::timeout(
                interval.max(Duration::from_secs(1)),
                exporter.export(&metrics),
            )
            .await
            .unwrap_or(Err(opentelemetry_sdk::error::OTelSdkError::Timeout(
                interval,
            ))),
            Err(error) => Err(error),
        };
        if let Err(error) = pushed {
            failures += 1;
            if failures.is_power_of_two() {
                tracing::warn!(failures, %error, "metrics were not pushed; check [telemetry] otlp_endpoint and the collector");
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one sample named `name` with every label of `labels`.
    fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        let mut found = text.lines().filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
                && labels.iter().all(|label| line.contains(label))
        });
        let value = found.next()?.rsplit(' ').next()?.parse().ok();
        assert!(
            found.next().is_none(),
            "more than one {name} sample with {labels:?}"
        );
        value
    }

    #[test]
    fn durations_are_kept_per_function_source_and_outcome_whatever_the_version() {
        let metrics = Metrics::new(
            Resource::builder_empty().build(),
            None,
            &Arc::default(),
            &CancellationToken::new(),
        )
        .expect("metrics");
        let (one, two): (Arc<str>, Arc<str>) = (Arc::from("1.0.0"), Arc::from("2.0.0"));
        let function: Arc<str> = Arc::from("a::b");
        for _ in 0..3 {
            metrics.record_call(function.clone(), Some(&one), "worker", "ok", 0.000_2);
        }
        metrics.record_call(function.clone(), Some(&two), "worker", "ok", 0.3);
        metrics.record_call(function.clone(), Some(&two), "mcp", "timeout", 2.0);
        let text = metrics.render().expect("render");
        let worker_ok = [
            r#"function="a::b""#,
            r#"source="worker""#,
            r#"outcome="ok""#,
        ];
        let count = "capgate_call_duration_seconds_count";
        assert_eq!(sample(&text, count, &worker_ok), Some(4.0), "{text}");
        let sum = sample(&text, "capgate_call_duration_seconds_sum", &worker_ok);
        assert!(
            sum.is_some_and(|sum| (sum - 0.3006).abs() < 1e-9),
            "{sum:?}"
        );
        let under_a_millisecond = [worker_ok.as_slice(), &[r#"le="0.001""#]].concat();
        assert_eq!(
            sample(
                &text,
                "capgate_call_duration_seconds_bucket",
                &under_a_millisecond
            ),
            Some(3.0)
        );
        let mcp = [r#"source="mcp""#, r#"outcome="timeout""#];
        assert_eq!(sample(&text, count, &mcp), Some(1.0));
        let calls = "capgate_calls_total";
        assert_eq!(sample(&text, calls, &[r#"version="1.0.0""#]), Some(3.0));
        assert_eq!(
            sample(&text, calls, &[r#"version="2.0.0""#, r#"source="worker""#]),
            Some(1.0)
        );
    }
}

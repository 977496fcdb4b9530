//! `[telemetry]` in capgate.toml, and the standard `OTEL_*` variables that
//! fill in what the file leaves unset.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The `[telemetry]` section as written; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `false` turns export off even where `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// is set; `true` turns it on (to `http://localhost:4318` when no
    /// endpoint is named). Unset: on when an endpoint is configured.
    pub enabled: Option<bool>,
    /// The OTLP/HTTP receiver's base URL (`http://collector:4318`);
    /// `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended.
    pub otlp_endpoint: Option<String>,
    /// Headers sent with every export (an API key for a hosted backend).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `service.name` of capgate's spans and metrics (default `capgate`).
    pub service_name: Option<String>,
    /// Share of new traces kept, 0.0–1.0; a call that arrives with a
    /// parent follows the parent's decision.
    pub sample_ratio: Option<f64>,
    /// Finished spans waiting for export; past it new spans are dropped
    /// and counted, never waited for.
    pub max_queued_spans: Option<usize>,
    /// Spans sent in one export request.
    pub max_export_batch: Option<usize>,
    /// The longest a finished span waits before it is sent, in ms.
    pub export_interval_ms: Option<u64>,
    /// An export request that takes longer is abandoned (its spans counted
    /// as dropped), in ms.
    pub export_timeout_ms: Option<u64>,
    /// How often metrics are pushed over OTLP, in ms.
    pub metrics_interval_ms: Option<u64>,
}

/// Where and how to export, resolved from the file and the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub traces_endpoint: String,
    pub metrics_endpoint: String,
    /// Where workers' relayed logs go (capgate's own logs are its console's).
    pub logs_endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub sample_ratio: f64,
    pub max_queued_spans: usize,
    pub max_export_batch: usize,
    pub export_interval: Duration,
    pub export_timeout: Duration,
    pub metrics_interval: Duration,
}

/// What the gateway does about telemetry.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub service_name: String,
    /// `None`: nothing is exported (metrics are still served at `/metrics`).
    pub export: Option<Export>,
}

const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
const MAX_QUEUED_SPANS: usize = 1_000_000;

impl TelemetryConfig {
    /// Checks the section's values, naming the key at fault.
    pub fn check(&self) -> Result<(), String> {
        if let Some(ratio) = self.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(format!(
                "sample_ratio {ratio} is not between 0.0 and 1.0 (1.0 keeps every trace)"
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            check_endpoint(endpoint).map_err(|reason| format!("otlp_endpoint: {reason}"))?;
        }
        if let Some(spans) = self.max_queued_spans
            && !(1..=MAX_QUEUED_SPANS).contains(&spans)
        {
            return Err(format!(
                "max_queued_spans {spans} is not between 1 and {MAX_QUEUED_SPANS}"
            ));
        }
        if let Some(batch) = self.max_export_batch
            && !(1..=self.max_queued_spans.unwrap_or(4_096).max(1)).contains(&batch)
        {
            return Err(format!(
                "max_export_batch {batch} must be at least 1 and at most max_queued_spans"
            ));
        }
        for (key, value) in [
            ("export_interval_ms", self.export_interval_ms),
            ("export_timeout_ms", self.export_timeout_ms),
            ("metrics_interval_ms", self.metrics_interval_ms),
        ] {
            if let Some(ms) = value
                && !(10..=3_600_000).contains(&ms)
            {
                return Err(format!(
                    "{key} {ms} is not between 10 and 3600000 milliseconds"
                ));
            }
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(format!(
                    "headers: '{name}' is not a valid HTTP header name with a printable value"
                ));
            }
        }
        Ok(())
    }

    /// The file's settings, completed from `env` (the process environment
    /// in the gateway; a map in tests): `OTEL_SDK_DISABLED`,
    /// `OTEL_TRACES_EXPORTER=none`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`, `OTEL_SERVICE_NAME`,
    /// `OTEL_TRACES_SAMPLER(_ARG)`. The file wins where both say something.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Telemetry, String> {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let service_name = self
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "capgate".into());
        let disabled_by_env = env("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let base = self
            .otlp_endpoint
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let traces = match &self.otlp_endpoint {
            Some(base) => Some(signal(base, "traces")),
            None => env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        };
        let configured = base.is_some() || traces.is_some();
        let on = match self.enabled {
            Some(enabled) => enabled,
            None => configured && !disabled_by_env,
        };
        if !on {
            return Ok(Telemetry {
                service_name,
                export: None,
            });
        }
        let base = base.unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let traces_endpoint = traces.unwrap_or_else(|| signal(&base, "traces"));
        // The file's base URL wins; else a signal's own variable, used
        // whole; else the base with the signal's path.
        let endpoint_of = |name: &str, variable: &str| match &self.otlp_endpoint {
            Some(base) => signal(base, name),
            None => env(variable).unwrap_or_else(|| signal(&base, name)),
        };
        let metrics_endpoint = endpoint_of("metrics", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        let logs_endpoint = endpoint_of("logs", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT");
        for (variable, endpoint) in [
            ("the traces endpoint", &traces_endpoint),
            ("the metrics endpoint", &metrics_endpoint),
            ("the logs endpoint", &logs_endpoint),
        ] {
            check_endpoint(endpoint).map_err(|reason| format!("{variable}: {reason}"))?;
        }
        let sample_ratio = match self.sample_ratio {
            Some(ratio) => ratio,
            None => env_ratio(&env)?,
        };
        let max_queued_spans = self.max_queued_spans.unwrap_or(4_096);
        Ok(Telemetry {
            service_name,
            export: Some(Export {
                traces_endpoint,
                metrics_endpoint,
                logs_endpoint,
                headers: self.headers.clone(),
                sample_ratio,
                max_queued_spans,
                max_export_batch: self.max_export_batch.unwrap_or(512).min(max_queued_spans),
                export_interval: Duration::from_millis(self.export_interval_ms.unwrap_or(1_000)),
                export_timeout: Duration::from_millis(self.export_timeout_ms.unwrap_or(10_000)),
                metrics_interval: Duration::from_millis(self.metrics_interval_ms.unwrap_or(60_000)),
            }),
        })
    }
}

/// `BASE/v1/SIGNAL`, as the OTLP/HTTP specification builds signal URLs.
fn signal(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Ok(())
        }
        _ => Err(format!(
            "'{endpoint}' is not an http:// or https:// URL (such as http://localhost:4318)"
        )),
    }
}

/// The ratio `OTEL_TRACES_SAMPLER` asks for (1.0 when it names none).
fn env_ratio(env: &impl Fn(&str) -> Option<String>) -> Result<f64, String> {
    let sampler = env("OTEL_TRACES_SAMPLER").unwrap_or_default();
    let ratio = || {
        env("OTEL_TRACES_SAMPLER_ARG")
            .map(|arg| {
                arg.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or(format!(
                        "OTEL_TRACES_SAMPLER_ARG '{arg}' is not a ratio between 0.0 and 1.0"
                    ))
            })
            .unwrap_or(Ok(1.0))
    };
    match sampler.as_str() {
        "" | "always_on" | "parentbased_always_on" => Ok(1.0),
        "always_off" | "parentbased_always_off" => Ok(0.0),
        "traceidratio" | "parentbased_traceidratio" => ratio(),
        other => Err(format!(
            "OTEL_TRACES_SAMPLER '{other}' is not supported; capgate samples parent-based by ratio: use parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn off_by_default_on_when_an_endpoint_is_named() {
        let config = TelemetryConfig::default();
        let off = config.resolve(env(&[])).unwrap();
        assert_eq!(off.export, None);
        assert_eq!(off.service_name, "capgate");
        let on = config
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_SERVICE_NAME", "edge-gw"),
            ]))
            .unwrap();
        let export = on.export.unwrap();
        assert_eq!(export.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(export.metrics_endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(export.logs_endpoint, "http://collector:4318/v1/logs");
        assert_eq!(on.service_name, "edge-gw");
        assert_eq!(export.sample_ratio, 1.0);
    }

    #[test]
    fn the_file_wins_and_can_turn_export_off() {
        let file = TelemetryConfig {
            otlp_endpoint: Some("http://file:4318".into()),
            sample_ratio: Some(0.25),
            ..TelemetryConfig::default()
        };
        let export = file
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ]))
            .unwrap()
            .export
            .unwrap();
        assert_eq!(export.traces_endpoint, "http://file:4318/v1/traces");
        assert_eq!(export.logs_endpoint, "http://file:4318/v1/logs");
        assert_eq!(export.sample_ratio, 0.25);
        let off = TelemetryConfig {
            enabled: Some(false),
            ..file
        };
        assert_eq!(
            off.resolve(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")]))
                .unwrap()
                .export,
            None
        );
        let disabled = TelemetryConfig::default()
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ]))
            .unwrap();
        assert_eq!(disabled.export, None);
    }

    #[test]
    fn signal_endpoints_and_the_sampler_come_from_the_environment() {
        let export = TelemetryConfig::default()
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:2/logs"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ]))
            .unwrap()
            .export
            .unwrap();
        assert_eq!(export.traces_endpoint, "http://t:1/custom");
        assert_eq!(export.metrics_endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(export.logs_endpoint, "http://l:2/logs");
        assert_eq!(export.sample_ratio, 0.1);
        let refused = TelemetryConfig::default().resolve(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
        ]));
        assert!(refused.unwrap_err().contains("parentbased_traceidratio"));
        let bad_arg = TelemetryConfig::default().resolve(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]));
        assert!(bad_arg.unwrap_err().contains("between 0.0 and 1.0"));
        let bad_url = TelemetryConfig::default()
            .resolve(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]));
        assert!(bad_url.unwrap_err().contains("not an http://"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (config, expected) in [
            (
                TelemetryConfig {
                    sample_ratio: Some(1.5),
                    ..TelemetryConfig::default()
                },
                "sample_ratio 1.5",
            ),
            (
                TelemetryConfig {
                    otlp_endpoint: Some("ftp://x".into()),
                    ..TelemetryConfig::default()
                },
                "otlp_endpoint",
            ),
            (
                TelemetryConfig {
                    max_queued_spans: Some(0),
                    ..TelemetryConfig::default()
                },
                "max_queued_spans 0",
            ),
            (
                TelemetryConfig {
                    export_interval_ms: Some(1),
                    ..TelemetryConfig::default()
                },
                "export_interval_ms 1",
            ),
            (
                TelemetryConfig {
                    headers: [("bad header".to_owned(), "v".to_owned())].into(),
                    ..TelemetryConfig::default()
                },
                "headers: 'bad header'",
            ),
        ] {
            let error = config.check().unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}

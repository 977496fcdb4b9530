//! REST services in the gateway: `[rest]` and `[[rest_services]]` in
//! capgate.toml, and their start — the stored services restored, the
//! configured ones imported. The import, the upstream calls and their
//! guard live in `capgate_adapters::rest`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use capgate_adapters::rest::credentials::{Credential, CredentialConfig};
use capgate_adapters::rest::tls::{TlsConfig, UpstreamTls};
use capgate_adapters::rest::upstream::UpstreamSettings;
use capgate_adapters::rest::{Origin, RestSettings, ServiceRecord, Services};
use ipnet::IpNet;
use serde::Deserialize;

/// `[rest]`: limits of REST services and what capgate sends upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestConfig {
    /// Most services held (imported or configured).
    pub max_services: usize,
    /// Largest upstream answer read, in bytes.
    pub max_response_bytes: usize,
    /// Failures in a row that open an upstream's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit refuses calls before one trial.
    pub breaker_cooldown_ms: u64,
    /// Idle pooled connections kept per upstream host.
    pub max_idle_per_host: usize,
    /// Calls to one service in flight at once; one more is refused.
    pub max_in_flight_per_service: usize,
    /// Host names pinned to addresses (checked by the same rules).
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Named credentials; their secrets come from environment variables.
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// Named TLS settings: a private CA's roots, a client certificate.
    pub tls: BTreeMap<String, TlsConfig>,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            max_services: 64,
            max_response_bytes: 4 * 1024 * 1024,
            breaker_threshold: 5,
            breaker_cooldown_ms: 30_000,
            max_idle_per_host: 64,
            max_in_flight_per_service: 256,
            hosts: BTreeMap::new(),
            credentials: BTreeMap::new(),
            tls: BTreeMap::new(),
        }
    }
}

impl RestConfig {
    /// Checks the ranges; names the key that is out of range.
    pub fn check(&self) -> Result<(), String> {
        let within = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(format!(
                    "rest.{key} = {value} is out of range ({min}–{max})"
                ))
            } else {
                Ok(())
            }
        };
        within("max_services", self.max_services as u64, 1, 4096)?;
        within(
            "max_response_bytes",
            self.max_response_bytes as u64,
            1024,
            256 * 1024 * 1024,
        )?;
        within(
            "breaker_threshold",
            u64::from(self.breaker_threshold),
            1,
            10_000,
        )?;
        within(
            "breaker_cooldown_ms",
            self.breaker_cooldown_ms,
            100,
            3_600_000,
        )?;
        within(
            "max_idle_per_host",
            self.max_idle_per_host as u64,
            0,
            10_000,
        )?;
        within(
            "max_in_flight_per_service",
            self.max_in_flight_per_service as u64,
            1,
            100_000,
        )?;
        Ok(())
    }

    /// The settings services run with: credentials read from `env`
    /// (a missing secret refuses the start, naming the variable).
    pub fn settings(
        &self,
        allow_loopback: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<RestSettings, String> {
        let credentials = self
            .credentials
            .iter()
            .map(|(name, config)| {
                Credential::from_config(name, config, &env)
                    .map(|credential| (name.clone(), Arc::new(credential)))
                    .map_err(|error| error.to_string())
            })
            .collect::<Result<_, _>>()?;
        let tls = self
            .tls
            .iter()
            .map(|(name, config)| {
                UpstreamTls::from_config(name, config, |path| std::fs::read(path), &env)
                    .map(|tls| (name.clone(), Arc::new(tls)))
                    .map_err(|error| error.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(RestSettings {
            upstream: UpstreamSettings {
                hosts: Arc::new(
                    self.hosts
                        .iter()
                        .map(|(host, addrs)| (host.to_ascii_lowercase(), addrs.clone()))
                        .collect(),
                ),
                max_response_bytes: self.max_response_bytes,
                breaker_threshold: self.breaker_threshold,
                breaker_cooldown: Duration::from_millis(self.breaker_cooldown_ms),
                max_idle_per_host: self.max_idle_per_host,
                max_in_flight: self.max_in_flight_per_service,
                ..UpstreamSettings::default()
            },
            credentials,
            tls,
            max_services: self.max_services,
            allow_loopback,
        })
    }
}

/// `[[rest_services]]`: a service imported at every start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestServiceEntry {
    pub namespace: String,
    /// A file (relative to the configuration file) or an http(s) URL.
    pub openapi: String,
    pub base_url: String,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub auth: Option<String>,
    /// TLS settings named in `[rest.tls]` (a private CA, a client certificate).
    pub tls: Option<String>,
    pub owner: Option<String>,
    #[serde(default)]
    pub allow: Vec<IpNet>,
}

impl RestServiceEntry {
    /// A relative document path is read from beside the configuration file.
    pub fn resolved(mut self, base: &Path) -> Self {
        if !is_url(&self.openapi) {
            self.openapi = base.join(&self.openapi).display().to_string();
        }
        self
    }
}

pub fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// Why the configured services could not start.
#[derive(Debug, thiserror::Error)]
#[error("REST service '{namespace}' ([[rest_services]]) cannot be imported: {reason}")]
pub struct ConfiguredServiceError {
    pub namespace: String,
    pub reason: String,
}

/// Restores the stored services, imports the configured ones, and retires
/// those an earlier configuration imported and this one no longer names.
pub async fn start(
    services: &Services,
    configured: &[RestServiceEntry],
) -> Result<(), ConfiguredServiceError> {
    match services.restore().await {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "REST services restored"),
        Err(error) => tracing::error!(%error, "stored REST services could not be read"),
    }
    for entry in configured {
        let failed = |reason: String| ConfiguredServiceError {
            namespace: entry.namespace.clone(),
            reason,
        };
        let document = if is_url(&entry.openapi) {
            services
                .fetch_document(&entry.openapi, &entry.allow, entry.tls.as_deref())
                .await
                .map_err(|e| failed(e.to_string()))?
        } else {
            read_document(Path::new(&entry.openapi)).map_err(failed)?
        };
        let record = ServiceRecord {
            namespace: entry.namespace.clone(),
            base_url: entry.base_url.clone(),
            document,
            source: Some(entry.openapi.clone()),
            include: entry.include.clone(),
            exclude: entry.exclude.clone(),
            auth: entry.auth.clone(),
            tls: entry.tls.clone(),
            owner: entry.owner.clone(),
            allow: entry.allow.clone(),
            origin: Origin::Config,
            versions: services.stored_versions(&entry.namespace).await,
            imported_ms: 0,
        };
        let report = services
            .import(record)
            .await
            .map_err(|e| failed(e.to_string()))?;
        tracing::info!(namespace = %report.namespace, operations = report.operations.len(), "configured REST service imported");
    }
    let named: Vec<&str> = configured.iter().map(|e| e.namespace.as_str()).collect();
    if let Err(error) = services.retire_unconfigured(&named).await {
        tracing::error!(%error, "REST services removed from the configuration could not be retired; their versions stay offline, not deprecated");
    }
    Ok(())
}

/// A document file, at most the import's size limit.
pub fn read_document(path: &Path) -> Result<String, String> {
    let limit = capgate_adapters::rest::document::MAX_DOCUMENT_BYTES as u64;
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > limit {
        return Err(format!(
            "{} is {size} bytes, over the OpenAPI document limit of {limit}",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

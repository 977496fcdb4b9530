//! Configuration: defaults, then `capgate.toml`, then `CAPGATE_*` environment
//! variables, then command-line flags — each later source overrides the
//! earlier ones. Every error names the source and the key.
//!
//! [`Config`] is built from sections, each plain data checked where it is
//! set: [`ServerConfig`], [`Limits`], [`WorkerSettings`], identity
//! ([`IdentityConfig`], in `identity/`), [`AuditConfig`], [`CatalogConfig`]
//! and [`PoliciesConfig`]. A file and the overrides are the same
//! [`Settings`], applied by one function, so no key is checked twice.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capgate_catalog::definition::CapabilityDefinition;
use capgate_catalog::redefinition::Redefinition;
use capgate_catalog::{Draft, FunctionId};
use semver::VersionReq;
use serde::Deserialize;

use crate::identity::config as identity_config;
pub use crate::identity::config::{
    ANONYMOUS_AGENT, AgentConfig, IdentityConfig, IssuerConfig, IssuerEntry, KeySource,
    WorkerConfig, WorkerEntry,
};

/// Default maximum size of one worker frame: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:49134";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".capgate";
/// Default port of the HTTP trigger listener (as the iii engine's REST API).
pub const DEFAULT_HTTP_PORT: u16 = 3111;
/// How often worker connections are pinged.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a lost worker connection's registrations wait for it to reattach.
pub const DEFAULT_REATTACH_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight calls and connections.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The resolved configuration the gateway runs with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub workers: WorkerSettings,
    pub identity: IdentityConfig,
    pub audit: AuditConfig,
    pub catalog: CatalogConfig,
    pub policies: PoliciesConfig,
    /// Triggers started at every start (`[[triggers]]`).
    pub triggers: Vec<ConfiguredTrigger>,
    /// `[queues]`: the queue backend, its limits and the function queues.
    pub queues: capgate_adapters::queue::QueuesConfig,
    /// `[telemetry]`: OTLP export (the `OTEL_*` variables fill in the rest
    /// when the gateway starts).
    pub telemetry: crate::telemetry::config::TelemetryConfig,
    /// `[rest]`: limits and credentials of REST services.
    pub rest: crate::rest::RestConfig,
    /// `[[rest_services]]`: REST services imported at every start.
    pub rest_services: Vec<crate::rest::RestServiceEntry>,
}

/// A `[[triggers]]` entry, checked: owned by the agent it names, whose
/// identity its calls are made, authorized and audited as.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredTrigger {
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    /// An agent's name (`anonymous` by default).
    pub owner: String,
    pub config: serde_json::Value,
}

/// `[[triggers]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerEntry {
    pub id: String,
    #[serde(alias = "type")]
    pub trigger_type: String,
    pub function_id: String,
    pub owner: Option<String>,
    #[serde(default)]
    pub config: serde_json::Value,
}

/// Where the gateway listens and keeps its data.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The HTTP trigger listener (`http` triggers' routes); `None`: off.
    pub http_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// The URL clients reach this gateway at (`https://capgate.example.com`),
    /// when it is not the listen address: OAuth metadata, audiences, `Host`.
    pub public_url: Option<String>,
    /// How long shutdown waits for calls in flight and connections.
    pub shutdown_grace: Duration,
    /// Web origins (`https://app.example.com`) whose pages may use `/mcp`;
    /// a request with any other `Origin` is refused (DNS rebinding, CSRF).
    pub allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 49134)),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            public_url: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            allowed_origins: Vec::new(),
        }
    }
}

/// What one request or call may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest worker frame, MCP body and HTTP call body.
    pub max_frame_bytes: usize,
    /// A call's deadline when neither it nor its function sets one.
    pub call_timeout: Duration,
    /// Calls in flight to one worker before more are refused as overloaded.
    pub max_in_flight_per_worker: usize,
    /// Calls in flight through the gateway before more are refused.
    pub max_in_flight: usize,
    /// Live MCP sessions (legacy protocol); an `initialize` beyond them is
    /// refused until one ends (`DELETE`) or idles out.
    pub max_mcp_sessions: usize,
    /// How long an MCP session lives without a request.
    pub mcp_session_idle: Duration,
    /// How long a quiet MCP session (nothing open) stays in rmcp's memory
    /// before it hibernates; its next request restores it.
    pub mcp_session_resident: Duration,
    /// Open HTTP connections (agents, admin, upgrades in progress); one
    /// more is answered 503 and closed.
    pub max_http_connections: usize,
    /// How long a connection may take to send a request's head, counted
    /// from its opening or its previous response — so also how long an
    /// idle keep-alive connection stays.
    pub http_header_timeout: Duration,
    /// How long a request's body may take to arrive once its head has.
    pub http_body_timeout: Duration,
    /// Worker WebSocket connections (and the iii SDKs' telemetry sockets).
    pub max_worker_connections: usize,
    /// Bytes queued for one worker connection and not yet written; a
    /// worker that reads slower than that is cut off.
    pub max_outbox_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_in_flight_per_worker: 4096,
            max_in_flight: 65_536,
            max_mcp_sessions: 1024,
            mcp_session_idle: Duration::from_secs(300),
            mcp_session_resident: Duration::from_secs(10),
            max_http_connections: 4096,
            http_header_timeout: Duration::from_secs(30),
            http_body_timeout: Duration::from_secs(60),
            max_worker_connections: 2048,
            max_outbox_bytes: 32 * 1024 * 1024,
        }
    }
}

/// How worker connections are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// How often worker connections are pinged; two silent intervals and a
    /// connection is declared dead.
    pub ping_interval: Duration,
    /// How long the registrations of a connection that was lost (not closed)
    /// are held for the worker to reattach; zero withdraws them at once.
    pub reattach_grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            ping_interval: DEFAULT_PING_INTERVAL,
            reattach_grace: DEFAULT_REATTACH_GRACE,
        }
    }
}

/// How the catalog treats versions.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogConfig {
    /// Whether existing 0.x and pre-release versions may be redefined.
    pub redefine_versions: Redefinition,
    /// Capability versions declared ahead of any worker (`[[capabilities]]`).
    pub declared: Vec<CapabilityDefinition>,
    /// Most versions the catalog holds (each is kept for good).
    pub max_versions: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            redefine_versions: Redefinition::default(),
            declared: Vec::new(),
            max_versions: 100_000,
        }
    }
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq)]
pub struct PoliciesConfig {
    /// Policy files, in order; none means the embedded default.
    pub files: Vec<PathBuf>,
    /// Whether the files are watched and reloaded when they change.
    pub watch: bool,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            watch: true,
        }
    }
}

/// `[audit]`: what the audit log records beyond registrations, denials and
/// policy changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record allowed calls too (denied ones always are).
    pub allowed_calls: bool,
    /// Record call inputs in call entries (never by default: payloads may hold secrets).
    pub payloads: bool,
    /// Entries kept; older ones are dropped.
    pub retain: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            allowed_calls: true,
            payloads: false,
            retain: 1_000_000,
        }
    }
}

/// `[policies]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesEntry {
    #[serde(default)]
    pub files: Vec<PathBuf>,
    pub watch: Option<bool>,
}

/// Settings as written: a `capgate.toml`, or the overrides from the
/// environment and the command line (which set only a few keys). Unknown
/// keys are errors: a typo must not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: Option<String>,
    /// `HOST:PORT` of the HTTP trigger listener, or `off`.
    pub http_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_frame_bytes: Option<usize>,
    pub call_timeout_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub ping_interval_ms: Option<u64>,
    pub reattach_grace_ms: Option<u64>,
    pub max_in_flight_per_worker: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub max_mcp_sessions: Option<usize>,
    pub mcp_session_idle_ms: Option<u64>,
    pub mcp_session_resident_ms: Option<u64>,
    pub max_http_connections: Option<usize>,
    pub http_header_timeout_ms: Option<u64>,
    pub http_body_timeout_ms: Option<u64>,
    pub max_worker_connections: Option<usize>,
    pub max_outbox_bytes: Option<usize>,
    pub redefine_versions: Option<String>,
    pub max_catalog_versions: Option<usize>,
    #[serde(default)]
    pub capabilities: Vec<Draft>,
    #[serde(default)]
    pub triggers: Vec<TriggerEntry>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentEntry>,
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerEntry>,
    #[serde(default)]
    pub issuers: Vec<IssuerEntry>,
    pub public_url: Option<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub policies: Option<PoliciesEntry>,
    pub audit: Option<AuditConfig>,
    pub queues: Option<capgate_adapters::queue::QueuesConfig>,
    pub telemetry: Option<crate::telemetry::config::TelemetryConfig>,
    pub rest: Option<crate::rest::RestConfig>,
    #[serde(default)]
    pub rest_services: Vec<crate::rest::RestServiceEntry>,
}

/// `[agents.NAME]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// Hex SHA-256 of the API key (`capgate agents key NAME` makes both).
    pub api_key_sha256: Option<String>,
    pub tenant: Option<String>,
    /// Function id → version requirement, such as `"billing::refund" = "^1"`.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error(
        "{source_name}: listen address '{value}' is invalid ({reason}); use HOST:PORT, such as 127.0.0.1:49134"
    )]
    Listen {
        source_name: String,
        value: String,
        reason: String,
    },
    #[error(
        "{source_name}: http_listen '{value}' is invalid ({reason}); use HOST:PORT, such as 127.0.0.1:3111, or off"
    )]
    HttpListen {
        source_name: String,
        value: String,
        reason: String,
    },
    #[error("{source_name}: {error}")]
    Range {
        source_name: String,
        error: RangeError,
    },
    #[error("{source_name}: redefine_versions: {reason}")]
    Redefinition { source_name: String, reason: String },
    #[error("{source_name}: triggers[{index}] ({id}) is invalid: {reason}")]
    Trigger {
        source_name: String,
        index: usize,
        id: String,
        reason: String,
    },
    #[error("{source_name}: capabilities[{index}] ({id}) is invalid: {reason}")]
    Capability {
        source_name: String,
        index: usize,
        id: String,
        reason: String,
    },
    #[error("{source_name}: agents.{name}: {reason}")]
    Agent {
        source_name: String,
        name: String,
        reason: String,
    },
    #[error("{source_name}: [{section}] {reason}")]
    Section {
        source_name: String,
        section: &'static str,
        reason: String,
    },
    #[error("{source_name}: {key}: {reason}")]
    Identity {
        source_name: String,
        key: String,
        reason: String,
    },
}

/// A number outside the range its setting allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} must be {rule}, got {value}")]
pub struct RangeError {
    pub key: &'static str,
    pub rule: &'static str,
    pub value: String,
}

/// A numeric setting's range, and how to say it.
struct Bound<T> {
    key: &'static str,
    min: T,
    max: T,
    rule: &'static str,
}

impl<T: PartialOrd + Display + Copy> Bound<T> {
    fn check(&self, value: T) -> Result<T, RangeError> {
        if value < self.min || value > self.max {
            return Err(RangeError {
                key: self.key,
                rule: self.rule,
                value: value.to_string(),
            });
        }
        Ok(value)
    }
}

const MAX_FRAME_BYTES: Bound<usize> = Bound {
    key: "max_frame_bytes",
    min: 1024,
    max: 256 * 1024 * 1024,
    rule: "between 1024 and 268435456",
};
const CALL_TIMEOUT_MS: Bound<u64> = Bound {
    key: "call_timeout_ms",
    min: 1,
    max: u64::MAX,
    rule: "at least 1",
};
const PING_INTERVAL_MS: Bound<u64> = Bound {
    key: "ping_interval_ms",
    min: 10,
    max: u64::MAX,
    rule: "at least 10",
};
const REATTACH_GRACE_MS: Bound<u64> = Bound {
    key: "reattach_grace_ms",
    min: 0,
    max: 600_000,
    rule: "at most 600000 (10 minutes); 0 turns holding off",
};
const MAX_IN_FLIGHT_PER_WORKER: Bound<usize> = Bound {
    key: "max_in_flight_per_worker",
    min: 1,
    max: usize::MAX,
    rule: "at least 1",
};
const MAX_IN_FLIGHT: Bound<usize> = Bound {
    key: "max_in_flight",
    min: 1,
    max: usize::MAX,
    rule: "at least 1",
};

const MAX_MCP_SESSIONS: Bound<usize> = Bound {
    key: "max_mcp_sessions",
    min: 1,
    max: 1_000_000,
    rule: "between 1 and 1000000",
};
const MCP_SESSION_IDLE_MS: Bound<u64> = Bound {
    key: "mcp_session_idle_ms",
    min: 1_000,
    max: 86_400_000,
    rule: "between 1000 (1 s) and 86400000 (a day)",
};
const MCP_SESSION_RESIDENT_MS: Bound<u64> = Bound {
    key: "mcp_session_resident_ms",
    min: 0,
    max: 3_600_000,
    rule: "between 0 and 3600000 (an hour)",
};

const MAX_HTTP_CONNECTIONS: Bound<usize> = Bound {
    key: "max_http_connections",
    min: 1,
    max: 1_000_000,
    rule: "between 1 and 1000000",
};
const HTTP_HEADER_TIMEOUT_MS: Bound<u64> = Bound {
    key: "http_header_timeout_ms",
    min: 100,
    max: 3_600_000,
    rule: "between 100 and 3600000 (an hour)",
};
const HTTP_BODY_TIMEOUT_MS: Bound<u64> = Bound {
    key: "http_body_timeout_ms",
    min: 100,
    max: 3_600_000,
    rule: "between 100 and 3600000 (an hour)",
};
const MAX_CATALOG_VERSIONS: Bound<usize> = Bound {
    key: "max_catalog_versions",
    min: 1,
    max: 100_000_000,
    rule: "between 1 and 100000000",
};
const MAX_WORKER_CONNECTIONS: Bound<usize> = Bound {
    key: "max_worker_connections",
    min: 1,
    max: 1_000_000,
    rule: "between 1 and 1000000",
};

impl Limits {
    /// These limits with what `settings` sets, each checked against its range.
    pub fn with(mut self, settings: &Settings) -> Result<Self, RangeError> {
        if let Some(bytes) = settings.max_frame_bytes {
            self.max_frame_bytes = MAX_FRAME_BYTES.check(bytes)?;
        }
        if let Some(ms) = settings.call_timeout_ms {
            self.call_timeout = Duration::from_millis(CALL_TIMEOUT_MS.check(ms)?);
        }
        if let Some(calls) = settings.max_in_flight_per_worker {
            self.max_in_flight_per_worker = MAX_IN_FLIGHT_PER_WORKER.check(calls)?;
        }
        if let Some(calls) = settings.max_in_flight {
            self.max_in_flight = MAX_IN_FLIGHT.check(calls)?;
        }
        if let Some(sessions) = settings.max_mcp_sessions {
            self.max_mcp_sessions = MAX_MCP_SESSIONS.check(sessions)?;
        }
        if let Some(ms) = settings.mcp_session_idle_ms {
            self.mcp_session_idle = Duration::from_millis(MCP_SESSION_IDLE_MS.check(ms)?);
        }
        if let Some(ms) = settings.mcp_session_resident_ms {
            self.mcp_session_resident = Duration::from_millis(MCP_SESSION_RESIDENT_MS.check(ms)?);
        }
        if let Some(connections) = settings.max_http_connections {
            self.max_http_connections = MAX_HTTP_CONNECTIONS.check(connections)?;
        }
        if let Some(ms) = settings.http_header_timeout_ms {
            self.http_header_timeout = Duration::from_millis(HTTP_HEADER_TIMEOUT_MS.check(ms)?);
        }
        if let Some(ms) = settings.http_body_timeout_ms {
            self.http_body_timeout = Duration::from_millis(HTTP_BODY_TIMEOUT_MS.check(ms)?);
        }
        if let Some(connections) = settings.max_worker_connections {
            self.max_worker_connections = MAX_WORKER_CONNECTIONS.check(connections)?;
        }
        match settings.max_outbox_bytes {
            // One frame must always fit.
            Some(bytes) if bytes < self.max_frame_bytes => {
                return Err(RangeError {
                    key: "max_outbox_bytes",
                    rule: "at least max_frame_bytes (one frame must fit)",
                    value: bytes.to_string(),
                });
            }
            Some(bytes) => self.max_outbox_bytes = bytes,
            None => {
                self.max_outbox_bytes = self.max_outbox_bytes.max(2 * self.max_frame_bytes);
            }
        }
        Ok(self)
    }
}

impl WorkerSettings {
    /// These settings with what `settings` sets, each checked against its range.
    pub fn with(mut self, settings: &Settings) -> Result<Self, RangeError> {
        if let Some(ms) = settings.ping_interval_ms {
            self.ping_interval = Duration::from_millis(PING_INTERVAL_MS.check(ms)?);
        }
        if let Some(ms) = settings.reattach_grace_ms {
            self.reattach_grace = Duration::from_millis(REATTACH_GRACE_MS.check(ms)?);
        }
        Ok(self)
    }
}

impl Config {
    /// Builds the configuration from an optional file, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: Settings) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let parsed: Settings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                reason: e.to_string().trim_end().replace('\n', " "),
            })?;
            // Relative paths (policy files, JWKS files) are read from beside the config file.
            let base = path.parent().unwrap_or(Path::new("."));
            config.apply(&path.display().to_string(), parsed, base)?;
        }
        config.apply("command line or environment", overrides, Path::new("."))?;
        Ok(config)
    }

    /// Applies every key `settings` sets, checked, naming `source` in errors.
    fn apply(&mut self, source: &str, settings: Settings, base: &Path) -> Result<(), ConfigError> {
        let range = |error| ConfigError::Range {
            source_name: source.to_owned(),
            error,
        };
        self.limits = self.limits.with(&settings).map_err(range)?;
        self.workers = self.workers.with(&settings).map_err(range)?;
        if let Some(listen) = &settings.listen {
            self.server.listen = parse_listen(listen).map_err(|reason| ConfigError::Listen {
                source_name: source.to_owned(),
                value: listen.clone(),
                reason,
            })?;
        }
        if let Some(listen) = &settings.http_listen {
            self.server.http_listen = match listen.as_str() {
                "off" => None,
                text => Some(
                    parse_listen(text).map_err(|reason| ConfigError::HttpListen {
                        source_name: source.to_owned(),
                        value: listen.clone(),
                        reason,
                    })?,
                ),
            };
        }
        if let Some(dir) = settings.data_dir {
            self.server.data_dir = dir;
        }
        if let Some(ms) = settings.shutdown_grace_ms {
            self.server.shutdown_grace = Duration::from_millis(ms);
        }
        if let Some(rule) = &settings.redefine_versions {
            self.catalog.redefine_versions =
                rule.parse().map_err(|reason| ConfigError::Redefinition {
                    source_name: source.to_owned(),
                    reason,
                })?;
        }
        if let Some(versions) = settings.max_catalog_versions {
            self.catalog.max_versions = MAX_CATALOG_VERSIONS.check(versions).map_err(range)?;
        }
        if !settings.capabilities.is_empty() {
            self.catalog.declared = declarations(source, settings.capabilities)?;
        }
        if !settings.triggers.is_empty() {
            self.triggers = configured_triggers(source, settings.triggers)?;
        }
        let identity = |key: String| {
            let source = source.to_owned();
            move |reason: String| ConfigError::Identity {
                source_name: source,
                key,
                reason,
            }
        };
        if !settings.allowed_origins.is_empty() {
            self.server.allowed_origins = settings
                .allowed_origins
                .iter()
                .map(|origin| public_url(origin).map_err(identity("allowed_origins".into())))
                .collect::<Result<_, _>>()?;
        }
        if let Some(url) = settings.public_url {
            self.server.public_url = Some(public_url(&url).map_err(identity("public_url".into()))?);
        }
        if !settings.agents.is_empty() {
            self.identity.agents = settings
                .agents
                .into_iter()
                .map(|(name, entry)| agent(source, name, entry))
                .collect::<Result<_, _>>()?;
        }
        if !settings.workers.is_empty() {
            self.identity.workers = settings
                .workers
                .into_iter()
                .map(|(name, entry)| {
                    identity_config::worker(name.clone(), entry)
                        .map_err(identity(format!("workers.{name}")))
                })
                .collect::<Result<_, _>>()?;
        }
        if !settings.issuers.is_empty() {
            let audience = self
                .server
                .public_url
                .as_ref()
                .map(|url| format!("{url}/mcp"));
            self.identity.issuers = settings
                .issuers
                .into_iter()
                .enumerate()
                .map(|(index, mut entry)| {
                    entry.jwks_file = entry.jwks_file.map(|file| base.join(file));
                    identity_config::issuer(entry, audience.as_deref())
                        .map_err(identity(format!("issuers[{index}]")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(policies) = settings.policies {
            self.policies.files = policies.files.iter().map(|f| base.join(f)).collect();
            self.policies.watch = policies.watch.unwrap_or(true);
        }
        if let Some(audit) = settings.audit {
            self.audit = audit;
        }
        if let Some(queues) = settings.queues {
            queues.check().map_err(|reason| ConfigError::Section {
                source_name: source.to_owned(),
                section: "queues",
                reason,
            })?;
            self.queues = queues;
        }
        if let Some(telemetry) = settings.telemetry {
            telemetry.check().map_err(|reason| ConfigError::Section {
                source_name: source.to_owned(),
                section: "telemetry",
                reason,
            })?;
            self.telemetry = telemetry;
        }
        if let Some(rest) = settings.rest {
            rest.check().map_err(|reason| ConfigError::Section {
                source_name: source.to_owned(),
                section: "rest",
                reason,
            })?;
            self.rest = rest;
        }
        if !settings.rest_services.is_empty() {
            self.rest_services = settings
                .rest_services
                .into_iter()
                .map(|entry| entry.resolved(base))
                .collect();
        }
        Ok(())
    }
}

/// Checks every `[[triggers]]` entry's names; its config is checked by its
/// kind when it starts (a refusal stops the start, naming the entry).
fn configured_triggers(
    source: &str,
    entries: Vec<TriggerEntry>,
) -> Result<Vec<ConfiguredTrigger>, ConfigError> {
    let mut triggers: Vec<ConfiguredTrigger> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let error = |reason: String| ConfigError::Trigger {
            source_name: source.to_owned(),
            index,
            id: entry.id.clone(),
            reason,
        };
        if entry.id.trim().is_empty() || entry.id.len() > 256 {
            return Err(error("id is 1 to 256 characters".into()));
        }
        capgate_catalog::FunctionId::parse(&entry.function_id)
            .map_err(|e| error(format!("function_id: {e}")))?;
        let owner = entry.owner.clone().unwrap_or_else(|| "anonymous".into());
        crate::identity::config::check_name(&owner, "the owner").map_err(error)?;
        if triggers
            .iter()
            .any(|t| t.id == entry.id && t.owner == owner)
        {
            return Err(error(format!(
                "{owner} has two triggers with id '{}'; give each its own",
                entry.id
            )));
        }
        triggers.push(ConfiguredTrigger {
            id: entry.id,
            trigger_type: entry.trigger_type,
            function_id: entry.function_id,
            owner,
            config: entry.config,
        });
    }
    Ok(triggers)
}

/// Checks every `[[capabilities]]` entry as a registration would be, and
/// refuses two different definitions of one `id@version`.
fn declarations(
    source: &str,
    drafts: Vec<Draft>,
) -> Result<Vec<CapabilityDefinition>, ConfigError> {
    let mut declared: Vec<CapabilityDefinition> = Vec::with_capacity(drafts.len());
    for (index, draft) in drafts.into_iter().enumerate() {
        let error = |id: &str, reason: String| ConfigError::Capability {
            source_name: source.to_owned(),
            index,
            id: id.to_owned(),
            reason,
        };
        let id = draft.id.clone();
        let capability = draft.build().map_err(|e| error(&id, e.to_string()))?;
        let definition = capability.into_definition();
        if let Some(earlier) = declared
            .iter()
            .find(|d| d.id == definition.id && d.version == definition.version)
        {
            if *earlier != definition {
                return Err(error(
                    &id,
                    format!(
                        "{}@{} is declared twice with different definitions; keep one",
                        definition.id, definition.version
                    ),
                ));
            }
            continue;
        }
        declared.push(definition);
    }
    Ok(declared)
}

/// Checks one `[agents.NAME]` entry.
fn agent(source: &str, name: String, entry: AgentEntry) -> Result<AgentConfig, ConfigError> {
    let error = |reason: String| ConfigError::Agent {
        source_name: source.to_owned(),
        name: name.clone(),
        reason,
    };
    identity_config::check_name(&name, "an agent").map_err(error)?;
    let api_key_sha256 = match entry.api_key_sha256 {
        None => None,
        Some(_) if name == ANONYMOUS_AGENT => {
            return Err(error(format!(
                "'{ANONYMOUS_AGENT}' is the agent of requests without a key and cannot have one"
            )));
        }
        Some(text) => Some(identity_config::key_hash(&text).map_err(error)?),
    };
    let pins = entry
        .pins
        .into_iter()
        .map(|(id, requirement)| {
            let function = FunctionId::parse(&id)
                .map_err(|e| error(format!("pins: '{id}' is not a function id: {e}")))?;
            let requirement = VersionReq::parse(&requirement).map_err(|e| {
                error(format!(
                    "pins.\"{id}\": '{requirement}' is not a version requirement ({e}); write one such as \"^1\" or \"=1.2.0\""
                ))
            })?;
            Ok((function, requirement))
        })
        .collect::<Result<_, _>>()?;
    let tenant = entry
        .tenant
        .map(|t| identity_config::check_tenant(&t))
        .transpose()
        .map_err(error)?;
    Ok(AgentConfig {
        name,
        api_key_sha256,
        tenant,
        pins,
    })
}

/// `public_url`: an http(s) URL without a path, kept without a trailing `/`.
fn public_url(text: &str) -> Result<String, String> {
    let trimmed = text.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| format!("'{text}' must start with https:// or http://"))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "'{text}' must be a scheme and host only, such as https://capgate.example.com"
        ));
    }
    Ok(trimmed.to_owned())
}

/// The host (with port) of `public_url`, which `Host` headers may name.
pub fn public_host(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, host)| host)
}

/// Accepts `HOST:PORT` where HOST is an IP address or `localhost`.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    if let Some(port) = value.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("'{port}' is not a port number"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value.parse::<SocketAddr>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_are_loopback_and_embedded() {
        let config = Config::load(None, Settings::default()).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:49134");
        assert_eq!(config.server.data_dir, PathBuf::from(".capgate"));
        assert_eq!(config.limits.max_frame_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn overrides_beat_the_file() {
        let file = write(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"/tmp/x\"\ncall_timeout_ms = 500\nredefine_versions = \"never\"\n",
        );
        let overrides = Settings {
            listen: Some("localhost:2".into()),
            ..Default::default()
        };
        let config = Config::load(Some(file.path()), overrides).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:2");
        assert_eq!(config.server.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.limits.call_timeout, Duration::from_millis(500));
        assert_eq!(config.catalog.redefine_versions, Redefinition::Never);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let typo = write("lisen = \"127.0.0.1:1\"\n");
        let error = Config::load(Some(typo.path()), Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown field") && error.contains("lisen"),
            "{error}"
        );

        let broken = write("listen = \n");
        let error = Config::load(Some(broken.path()), Settings::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("is invalid"), "{error}");

        let bad_addr = write("listen = \"nowhere\"\n");
        let error = Config::load(Some(bad_addr.path()), Settings::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("HOST:PORT"), "{error}");

        let error = Config::load(
            Some(Path::new("/nonexistent/capgate.toml")),
            Settings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("cannot read config file"), "{error}");

        let sometimes = Settings {
            redefine_versions: Some("sometimes".into()),
            ..Default::default()
        };
        let error = Config::load(None, sometimes).unwrap_err().to_string();
        assert!(
            error.contains("redefine_versions") && error.contains("\"never\""),
            "{error}"
        );

        let tiny = Settings {
            max_frame_bytes: Some(10),
            ..Default::default()
        };
        let error = Config::load(None, tiny).unwrap_err().to_string();
        assert!(error.contains("max_frame_bytes"), "{error}");

        let forever = write("reattach_grace_ms = 86400000\n");
        let error = Config::load(Some(forever.path()), Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("reattach_grace_ms") && error.contains("at most 600000"),
            "{error}"
        );
        let off = write("reattach_grace_ms = 0\nping_interval_ms = 500\n");
        let config = Config::load(Some(off.path()), Settings::default()).unwrap();
        assert_eq!(config.workers.reattach_grace, Duration::ZERO);
        assert_eq!(config.workers.ping_interval, Duration::from_millis(500));
        assert_eq!(
            Config::default().workers.reattach_grace,
            DEFAULT_REATTACH_GRACE
        );
    }

    #[test]
    fn allowed_origins_are_checked_origins() {
        let good = write("allowed_origins = [\"https://console.example.com/\"]\n");
        let config = Config::load(Some(good.path()), Settings::default()).unwrap();
        assert_eq!(
            config.server.allowed_origins,
            ["https://console.example.com"]
        );
        let bad = write("allowed_origins = [\"console.example.com\"]\n");
        let error = Config::load(Some(bad.path()), Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("allowed_origins") && error.contains("https://"),
            "{error}"
        );
    }

    #[test]
    fn declarations_and_agents_are_checked_at_load() {
        let good = write(
            r#"
[[capabilities]]
id = "billing::refund"
version = "1.0.0"
input_schema = { type = "object" }

[agents.legacy-bot]
api_key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
pins = { "billing::refund" = "^1" }

[agents.anonymous]
pins = { "billing::refund" = "=1.0.0" }
"#,
        );
        let config = Config::load(Some(good.path()), Settings::default()).unwrap();
        assert_eq!(config.catalog.declared[0].id.as_str(), "billing::refund");
        let routes = write(
            "[[triggers]]\nid = \"refunds\"\ntype = \"http\"\nfunction_id = \"billing::refund\"\nowner = \"ops\"\nconfig = { api_path = \"/refunds\", http_method = \"POST\" }\n",
        );
        let with_routes = Config::load(Some(routes.path()), Settings::default()).unwrap();
        assert_eq!(
            with_routes.triggers,
            [ConfiguredTrigger {
                id: "refunds".into(),
                trigger_type: "http".into(),
                function_id: "billing::refund".into(),
                owner: "ops".into(),
                config: serde_json::json!({"api_path": "/refunds", "http_method": "POST"}),
            }]
        );
        let bot = config
            .identity
            .agents
            .iter()
            .find(|a| a.name == "legacy-bot")
            .unwrap();
        assert!(bot.api_key_sha256.is_some());
        assert_eq!(bot.pins[0].1.to_string(), "^1");

        for (text, needle) in [
            (
                "[[capabilities]]\nid = \"a::b\"\nversion = \"one\"\n",
                "capabilities[0] (a::b)",
            ),
            (
                "[[capabilities]]\nid = \"a::b\"\ninput_schema = { type = 7 }\n",
                "input schema",
            ),
            ("[[capabilities]]\nid = \"a::b\"\ncolour = 1\n", "colour"),
            (
                "[[capabilities]]\nid = \"a::b\"\ndescription = \"x\"\n[[capabilities]]\nid = \"a::b\"\ndescription = \"y\"\n",
                "declared twice",
            ),
            ("[agents.\"bad name\"]\n", "agent's name"),
            ("[agents.bot]\napi_key_sha256 = \"abc\"\n", "64 hex digits"),
            (
                "[agents.anonymous]\napi_key_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
                "cannot have one",
            ),
            (
                "[agents.bot]\npins = { \"a::b\" = \"one\" }\n",
                "not a version requirement",
            ),
            (
                "[agents.bot]\npins = { \"A B\" = \"^1\" }\n",
                "not a function id",
            ),
            ("[agents.bot]\nkey = \"plain\"\n", "unknown field"),
            (
                "[[triggers]]\nid = \"r\"\ntype = \"http\"\nfunction_id = \"Not An Id\"\n",
                "triggers[0] (r) is invalid: function_id",
            ),
            (
                "[[triggers]]\nid = \"r\"\ntype = \"http\"\nfunction_id = \"a::b\"\nowner = \"two words\"\n",
                "owner's name",
            ),
            (
                "[[triggers]]\nid = \"\"\ntype = \"http\"\nfunction_id = \"a::b\"\n",
                "id is 1 to 256",
            ),
            (
                "[[triggers]]\nid = \"r\"\ntype = \"http\"\nfunction_id = \"a::b\"\n[[triggers]]\nid = \"r\"\ntype = \"http\"\nfunction_id = \"a::c\"\n",
                "two triggers with id 'r'",
            ),
            (
                "[[triggers]]\nid = \"r\"\ntype = \"http\"\nfunction_id = \"a::b\"\nschedule = \"daily\"\n",
                "unknown field `schedule`",
            ),
        ] {
            let file = write(text);
            let error = Config::load(Some(file.path()), Settings::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn identities_policies_and_audit_are_read_and_checked() {
        let good = write(
            r#"
public_url = "https://capgate.example.com/"

[workers.billing]
api_key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
tenant = "acme"

[[issuers]]
issuer = "https://auth.example.com"
jwks_url = "https://auth.example.com/jwks.json"
identifies = ["agents", "workers"]

[policies]
files = ["team.csv"]
watch = false

[audit]
payloads = true
"#,
        );
        let config = Config::load(Some(good.path()), Settings::default()).unwrap();
        assert_eq!(
            config.server.public_url.as_deref(),
            Some("https://capgate.example.com")
        );
        assert_eq!(config.identity.workers[0].tenant.as_deref(), Some("acme"));
        assert_eq!(
            config.identity.issuers[0].audience,
            vec!["https://capgate.example.com/mcp".to_owned()]
        );
        assert!(config.identity.issuers[0].workers);
        assert_eq!(
            config.policies.files,
            vec![good.path().parent().unwrap().join("team.csv")]
        );
        assert!(!config.policies.watch);
        assert!(config.audit.payloads && config.audit.allowed_calls);

        for (text, needle) in [
            (
                "public_url = \"capgate.example.com\"\n",
                "public_url: 'capgate.example.com' must start with https://",
            ),
            ("public_url = \"https://a/b\"\n", "scheme and host only"),
            (
                "[workers.billing]\ntenant = \"acme\"\n",
                "workers.billing: api_key_sha256 is required",
            ),
            (
                "[[issuers]]\nissuer = \"i\"\njwks_url = \"https://a\"\n",
                "issuers[0]: audience is required",
            ),
            ("[policies]\nfile = [\"x\"]\n", "unknown field"),
            ("[audit]\npayload = true\n", "unknown field"),
            ("[agents.bot]\ntenant = \"a b\"\n", "a tenant's name"),
            (
                "[queues]\nbackend = \"kafka\"\n",
                "[queues] backend 'kafka' is not a queue backend",
            ),
            ("[queues]\nbackend = \"nats\"\n", "needs url"),
            ("[queues]\nmax_depht = 5\n", "unknown field"),
            ("[queues]\nmax_depth = 0\n", "max_depth must be at least 1"),
            (
                "[[queues.function_queues]]\nname = \"a b\"\n",
                "function_queues: \"a b\" is not a topic name",
            ),
            (
                "[[queues.function_queues]]\nname = \"mail\"\nconcurrency = 0\n",
                "function_queues 'mail': concurrency 0 is not between 1 and 256",
            ),
            (
                "[[queues.function_queues]]\nname = \"m\"\n[[queues.function_queues]]\nname = \"m\"\n",
                "configured twice",
            ),
        ] {
            let file = write(text);
            let error = Config::load(Some(file.path()), Settings::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn queues_are_read_with_their_function_queues() {
        let file = write(
            "[queues]\nmax_depth = 10\n[[queues.function_queues]]\nname = \"mail\"\nmessage_group_field = \"to\"\nmax_retries = 5\n",
        );
        let config = Config::load(Some(file.path()), Settings::default()).unwrap();
        assert_eq!(config.queues.backend, "embedded");
        assert_eq!(config.queues.max_depth, 10);
        let mail = config.queues.function_queue("mail").unwrap();
        assert_eq!((mail.max_retries, mail.concurrency), (5, 10));
        assert_eq!(mail.message_group_field.as_deref(), Some("to"));
        assert_eq!(Config::default().queues.max_depth, 1_000_000);
    }
}

//! Configuration: defaults, then `capgate.toml`, then `CAPGATE_*` environment
//! variables, then command-line flags — each later source overrides the
//! earlier ones. Every error names the source and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use capgate_catalog::definition::CapabilityDefinition;
use capgate_catalog::redefinition::Redefinition;
use capgate_catalog::{Draft, FunctionId};
use semver::VersionReq;
use serde::Deserialize;

use crate::identity::config as identity_config;
pub use crate::identity::config::{
    ANONYMOUS_AGENT, AgentConfig, IssuerConfig, IssuerEntry, KeySource, WorkerConfig, WorkerEntry,
};

/// Default maximum size of one worker frame: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:49134";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".capgate";
/// How often worker connections are pinged.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a lost worker connection's registrations wait for it to reattach.
pub const DEFAULT_REATTACH_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight calls and connections.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The resolved configuration the gateway runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_frame_bytes: usize,
    pub call_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How often worker connections are pinged; two silent intervals and a
    /// connection is declared dead.
    pub ping_interval: Duration,
    /// How long the registrations of a connection that was lost (not closed)
    /// are held for the worker to reattach; zero withdraws them at once.
    pub reattach_grace: Duration,
    /// Delays injected into connection teardown and reattach, so tests can
    /// force each order of the race between them. Not configurable from files.
    #[doc(hidden)]
    /// Calls in flight to one worker before more are refused as overloaded.
    pub max_in_flight_per_worker: usize,
    /// Calls in flight through the gateway before more are refused.
    pub max_in_flight: usize,
    /// Whether existing 0.x and pre-release versions may be redefined.
    pub redefine_versions: Redefinition,
    /// Capability versions declared ahead of any worker (`[[capabilities]]`).
    pub declared: Vec<CapabilityDefinition>,
    /// Named agents: their API key (hashed) and version pins (`[agents.NAME]`).
    pub agents: Vec<AgentConfig>,
    /// Named workers and their token hashes (`[workers.NAME]`).
    pub workers: Vec<WorkerConfig>,
    /// JWT issuers (`[[issuers]]`).
    pub issuers: Vec<IssuerConfig>,
    /// The URL clients reach this gateway at (`https://capgate.example.com`),
    /// when it is not the listen address: OAuth metadata, audiences, `Host`.
    pub public_url: Option<String>,
    /// Policy files in force, in order; none means the embedded default.
    pub policy_files: Vec<PathBuf>,
    /// Whether policy files are watched and reloaded when they change.
    pub watch_policies: bool,
    pub audit: AuditConfig,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 49134))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            ping_interval: DEFAULT_PING_INTERVAL,
            reattach_grace: DEFAULT_REATTACH_GRACE,
            max_in_flight_per_worker: 4096,
            max_in_flight: 65_536,
            redefine_versions: Redefinition::default(),
            declared: Vec::new(),
            agents: Vec::new(),
            workers: Vec::new(),
            issuers: Vec::new(),
            public_url: None,
            policy_files: Vec::new(),
            watch_policies: true,
            audit: AuditConfig::default(),
        }
    }
}

/// What a `capgate.toml` may contain. Unknown keys are errors: a typo must
/// not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_frame_bytes: Option<usize>,
    pub call_timeout_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub ping_interval_ms: Option<u64>,
    pub reattach_grace_ms: Option<u64>,
    pub max_in_flight_per_worker: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub redefine_versions: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<Draft>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentEntry>,
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerEntry>,
    #[serde(default)]
    pub issuers: Vec<IssuerEntry>,
    pub public_url: Option<String>,
    pub policies: Option<PoliciesEntry>,
    pub audit: Option<AuditConfig>,
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

/// Overrides from the environment or the command line (same keys).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_frame_bytes: Option<usize>,
    pub call_timeout_ms: Option<u64>,
    pub redefine_versions: Option<String>,
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
    #[error("{source_name}: {key} must be {rule}, got {value}")]
    Range {
        source_name: String,
        key: &'static str,
        rule: &'static str,
        value: String,
    },
    #[error("{source_name}: redefine_versions: {reason}")]
    Redefinition { source_name: String, reason: String },
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
    #[error("{source_name}: {key}: {reason}")]
    Identity {
        source_name: String,
        key: String,
        reason: String,
    },
}

impl Config {
    /// Builds the configuration from an optional file and overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let parsed: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                reason: e.to_string().trim_end().replace('\n', " "),
            })?;
            let source = path.display().to_string();
            config.apply(
                &source,
                &Overrides {
                    listen: parsed.listen,
                    data_dir: parsed.data_dir,
                    max_frame_bytes: parsed.max_frame_bytes,
                    call_timeout_ms: parsed.call_timeout_ms,
                    redefine_versions: parsed.redefine_versions,
                },
            )?;
            if let Some(ms) = parsed.ping_interval_ms {
                if ms < 10 {
                    return Err(ConfigError::Range {
                        source_name: source.clone(),
                        key: "ping_interval_ms",
                        rule: "at least 10",
                        value: ms.to_string(),
                    });
                }
                config.ping_interval = Duration::from_millis(ms);
            }
            for (key, value, slot) in [
                (
                    "max_in_flight_per_worker",
                    parsed.max_in_flight_per_worker,
                    &mut config.max_in_flight_per_worker,
                ),
                (
                    "max_in_flight",
                    parsed.max_in_flight,
                    &mut config.max_in_flight,
                ),
            ] {
                if let Some(value) = value {
                    if value == 0 {
                        return Err(ConfigError::Range {
                            source_name: source.clone(),
                            key,
                            rule: "at least 1",
                            value: value.to_string(),
                        });
                    }
                    *slot = value;
                }
            }
            if let Some(ms) = parsed.reattach_grace_ms {
                if ms > 600_000 {
                    return Err(ConfigError::Range {
                        source_name: source.clone(),
                        key: "reattach_grace_ms",
                        rule: "at most 600000 (10 minutes); 0 turns holding off",
                        value: ms.to_string(),
                    });
                }
                config.reattach_grace = Duration::from_millis(ms);
            }
            if let Some(ms) = parsed.shutdown_grace_ms {
                config.shutdown_grace = Duration::from_millis(ms);
            }
            config.declared = declarations(&source, parsed.capabilities)?;
            config.agents = parsed
                .agents
                .into_iter()
                .map(|(name, entry)| agent(&source, name, entry))
                .collect::<Result<_, _>>()?;
            let identity = |key: String| {
                let source = source.clone();
                move |reason: String| ConfigError::Identity {
                    source_name: source,
                    key,
                    reason,
                }
            };
            if let Some(url) = parsed.public_url {
                config.public_url = Some(public_url(&url).map_err(identity("public_url".into()))?);
            }
            config.workers = parsed
                .workers
                .into_iter()
                .map(|(name, entry)| {
                    identity_config::worker(name.clone(), entry)
                        .map_err(identity(format!("workers.{name}")))
                })
                .collect::<Result<_, _>>()?;
            let audience = config.public_url.as_ref().map(|url| format!("{url}/mcp"));
            // Relative paths (policy files, JWKS files) are read from beside the config file.
            let base = path.parent().unwrap_or(Path::new("."));
            config.issuers = parsed
                .issuers
                .into_iter()
                .enumerate()
                .map(|(index, mut entry)| {
                    entry.jwks_file = entry.jwks_file.map(|file| base.join(file));
                    identity_config::issuer(entry, audience.as_deref())
                        .map_err(identity(format!("issuers[{index}]")))
                })
                .collect::<Result<_, _>>()?;
            if let Some(policies) = parsed.policies {
                config.policy_files = policies.files.iter().map(|f| base.join(f)).collect();
                config.watch_policies = policies.watch.unwrap_or(true);
            }
            if let Some(audit) = parsed.audit {
                config.audit = audit;
            }
        }
        config.apply("command line or environment", overrides)?;
        Ok(config)
    }

    fn apply(&mut self, source: &str, overrides: &Overrides) -> Result<(), ConfigError> {
        if let Some(listen) = &overrides.listen {
            self.listen = parse_listen(listen).map_err(|reason| ConfigError::Listen {
                source_name: source.to_owned(),
                value: listen.clone(),
                reason,
            })?;
        }
        if let Some(dir) = &overrides.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(bytes) = overrides.max_frame_bytes {
            if !(1024..=256 * 1024 * 1024).contains(&bytes) {
                return Err(ConfigError::Range {
                    source_name: source.to_owned(),
                    key: "max_frame_bytes",
                    rule: "between 1024 and 268435456",
                    value: bytes.to_string(),
                });
            }
            self.max_frame_bytes = bytes;
        }
        if let Some(ms) = overrides.call_timeout_ms {
            if ms == 0 {
                return Err(ConfigError::Range {
                    source_name: source.to_owned(),
                    key: "call_timeout_ms",
                    rule: "at least 1",
                    value: ms.to_string(),
                });
            }
            self.call_timeout = Duration::from_millis(ms);
        }
        if let Some(rule) = &overrides.redefine_versions {
            self.redefine_versions = rule.parse().map_err(|reason| ConfigError::Redefinition {
                source_name: source.to_owned(),
                reason,
            })?;
        }
        Ok(())
    }
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
        let config = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:49134");
        assert_eq!(config.data_dir, PathBuf::from(".capgate"));
        assert_eq!(config.max_frame_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn overrides_beat_the_file() {
        let file = write(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"/tmp/x\"\ncall_timeout_ms = 500\nredefine_versions = \"never\"\n",
        );
        let overrides = Overrides {
            listen: Some("localhost:2".into()),
            ..Default::default()
        };
        let config = Config::load(Some(file.path()), &overrides).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:2");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.call_timeout, Duration::from_millis(500));
        assert_eq!(config.redefine_versions, Redefinition::Never);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let typo = write("lisen = \"127.0.0.1:1\"\n");
        let error = Config::load(Some(typo.path()), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown field") && error.contains("lisen"),
            "{error}"
        );

        let broken = write("listen = \n");
        let error = Config::load(Some(broken.path()), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("is invalid"), "{error}");

        let bad_addr = write("listen = \"nowhere\"\n");
        let error = Config::load(Some(bad_addr.path()), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("HOST:PORT"), "{error}");

        let error = Config::load(
            Some(Path::new("/nonexistent/capgate.toml")),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("cannot read config file"), "{error}");

        let sometimes = Overrides {
            redefine_versions: Some("sometimes".into()),
            ..Default::default()
        };
        let error = Config::load(None, &sometimes).unwrap_err().to_string();
        assert!(
            error.contains("redefine_versions") && error.contains("\"never\""),
            "{error}"
        );

        let tiny = Overrides {
            max_frame_bytes: Some(10),
            ..Default::default()
        };
        let error = Config::load(None, &tiny).unwrap_err().to_string();
        assert!(error.contains("max_frame_bytes"), "{error}");

        let forever = write("reattach_grace_ms = 86400000\n");
        let error = Config::load(Some(forever.path()), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("reattach_grace_ms") && error.contains("at most 600000"),
            "{error}"
        );
        let off = write("reattach_grace_ms = 0\nping_interval_ms = 500\n");
        let config = Config::load(Some(off.path()), &Overrides::default()).unwrap();
        assert_eq!(config.reattach_grace, Duration::ZERO);
        assert_eq!(config.ping_interval, Duration::from_millis(500));
        assert_eq!(Config::default().reattach_grace, DEFAULT_REATTACH_GRACE);
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
        let config = Config::load(Some(good.path()), &Overrides::default()).unwrap();
        assert_eq!(config.declared[0].id.as_str(), "billing::refund");
        let bot = config
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
        ] {
            let file = write(text);
            let error = Config::load(Some(file.path()), &Overrides::default())
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
        let config = Config::load(Some(good.path()), &Overrides::default()).unwrap();
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://capgate.example.com")
        );
        assert_eq!(config.workers[0].tenant.as_deref(), Some("acme"));
        assert_eq!(
            config.issuers[0].audience,
            vec!["https://capgate.example.com/mcp".to_owned()]
        );
        assert!(config.issuers[0].workers);
        assert_eq!(
            config.policy_files,
            vec![good.path().parent().unwrap().join("team.csv")]
        );
        assert!(!config.watch_policies);
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
        ] {
            let file = write(text);
            let error = Config::load(Some(file.path()), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}

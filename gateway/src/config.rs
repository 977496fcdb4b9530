//! Configuration: defaults, then `capgate.toml`, then `CAPGATE_*` environment
//! variables, then command-line flags — each later source overrides the
//! earlier ones. Every error names the source and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capgate_catalog::redefinition::Redefinition;
use serde::Deserialize;

/// Default maximum size of one worker frame: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:49134";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".capgate";
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
    /// Whether existing 0.x and pre-release versions may be redefined.
    pub redefine_versions: Redefinition,
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
            redefine_versions: Redefinition::default(),
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
    pub redefine_versions: Option<String>,
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
            if let Some(ms) = parsed.shutdown_grace_ms {
                config.shutdown_grace = Duration::from_millis(ms);
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
    }
}

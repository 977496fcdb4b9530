//! TLS to a REST service beyond the system's defaults: roots of a private
//! CA (internal services rarely have publicly trusted certificates), and a
//! client certificate for services that authenticate their callers by
//! mutual TLS. Named in capgate's configuration (`[rest.tls.NAME]`) and
//! referred to by services, like credentials: the private key comes from a
//! file or the environment, never from an import request.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[rest.tls.NAME]` in capgate.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificates to trust as roots (a private CA's bundle).
    pub ca_file: Option<PathBuf>,
    /// Whether the system's roots are trusted too (`false`: only
    /// `ca_file`'s, so a service can present nothing but the private CA's).
    #[serde(default = "trusted")]
    pub system_roots: bool,
    /// The client certificate chain capgate presents (PEM), for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM): a file…
    pub client_key_file: Option<PathBuf>,
    /// …or an environment variable holding the PEM text.
    pub client_key_env: Option<String>,
}

fn trusted() -> bool {
    true
}

/// A TLS setting that cannot be used; says which and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rest.tls.{name}: {reason}")]
pub struct TlsError {
    pub name: String,
    pub reason: String,
}

/// TLS settings read and checked, ready for a service's client.
#[derive(Clone)]
pub struct UpstreamTls {
    pub roots: Vec<reqwest::Certificate>,
    pub system_roots: bool,
    pub identity: Option<reqwest::Identity>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("roots", &self.roots.len())
            .field("system_roots", &self.system_roots)
            .field("identity", &self.identity.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl UpstreamTls {
    /// Reads the files of `config` (through `read`) and its key's variable
    /// (through `env`); every problem names the setting and the file.
    pub fn from_config(
        name: &str,
        config: &TlsConfig,
        read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TlsError> {
        let refused = |reason: String| TlsError {
            name: name.to_owned(),
            reason,
        };
        let file = |key: &str, path: &Path| {
            read(path).map_err(|error| {
                refused(format!(
                    "{key} {}: {error}; check the path and that capgate may read it",
                    path.display()
                ))
            })
        };
        let roots = match &config.ca_file {
            Some(path) => {
                let pem = file("ca_file", path)?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                    refused(format!(
                        "ca_file {} is not a PEM certificate bundle: {error}",
                        path.display()
                    ))
                })?;
                if roots.is_empty() {
                    return Err(refused(format!(
                        "ca_file {} holds no certificate (PEM `BEGIN CERTIFICATE` blocks)",
                        path.display()
                    )));
                }
                roots
            }
            None if !config.system_roots => {
                return Err(refused(
                    "system_roots = false trusts nothing without a ca_file: name the CA's bundle, or drop system_roots".into(),
                ));
            }
            None => Vec::new(),
        };
        let key = match (&config.client_key_file, &config.client_key_env) {
            (Some(_), Some(_)) => {
                return Err(refused(
                    "client_key_file and client_key_env both set: keep one".into(),
                ));
            }
            (Some(path), None) => Some(file("client_key_file", path)?),
            (None, Some(variable)) => Some(
                env(variable)
                    .filter(|value| !value.trim().is_empty())
                    .ok_or_else(|| {
                        refused(format!(
                            "environment variable {variable} (client_key_env) is not set (or empty); set it to the client key's PEM text"
                        ))
                    })?
                    .into_bytes(),
            ),
            (None, None) => None,
        };
        let identity = match (&config.client_cert_file, key) {
            (Some(path), Some(key)) => {
                let mut pem = file("client_cert_file", path)?;
                pem.push(b'\n');
                pem.extend_from_slice(&key);
                // reqwest's own error for a bad PEM names neither file nor
                // any of the key's bytes.
                Some(reqwest::Identity::from_pem(&pem).map_err(|error| {
                    refused(format!(
                        "the client certificate ({}) and its key could not be read as PEM: {error}; the key must be PKCS#8, PKCS#1 or SEC1 PEM",
                        path.display()
                    ))
                })?)
            }
            (Some(_), None) => {
                return Err(refused(
                    "client_cert_file without its key: set client_key_file or client_key_env"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(refused(
                    "a client key without client_cert_file: set the certificate it belongs to"
                        .into(),
                ));
            }
            (None, None) => None,
        };
        if roots.is_empty() && identity.is_none() {
            return Err(refused(
                "sets nothing: give a ca_file, a client certificate, or both".into(),
            ));
        }
        let tls = Self {
            roots,
            system_roots: config.system_roots,
            identity,
        };
        // A key is only parsed when a client is built: built once here, so
        // a key that is not one stops the start rather than every import.
        let _ = rustls::crypto::ring::default_provider().install_default();
        tls.apply(reqwest::Client::builder())
            .build()
            .map_err(|error| {
                refused(format!(
                    "the certificates and key could not be used for TLS: {}; the key must be the certificate's, as PKCS#8, PKCS#1 or SEC1 PEM",
                    crate::rest::upstream::describe(&error)
                ))
            })?;
        Ok(tls)
    }

    /// `builder` with these roots and this identity.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let builder = if self.system_roots {
            builder.tls_certs_merge(self.roots.iter().cloned())
        } else {
            builder.tls_certs_only(self.roots.iter().cloned())
        };
        match &self.identity {
            Some(identity) => builder.identity(identity.clone()),
            None => builder,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A CA's certificate, and a client certificate it signed with its key
    /// (all PEM).
    fn pki() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["capgate".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca.pem(), client.pem(), key.serialize_pem())
    }

    fn config() -> TlsConfig {
        TlsConfig {
            ca_file: None,
            system_roots: true,
            client_cert_file: None,
            client_key_file: None,
            client_key_env: None,
        }
    }

    /// `from_config` over files held in memory and one variable.
    fn read(
        config: &TlsConfig,
        files: &HashMap<&str, String>,
        variable: Option<&str>,
    ) -> Result<UpstreamTls, TlsError> {
        UpstreamTls::from_config(
            "corp",
            config,
            |path| {
                files
                    .get(path.to_str().unwrap_or_default())
                    .map(|text| text.clone().into_bytes())
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            },
            |name| {
                (name == "CLIENT_KEY")
                    .then(|| variable.map(str::to_owned))
                    .flatten()
            },
        )
    }

    #[test]
    fn a_ca_and_a_client_certificate_are_read_from_files_or_the_environment() {
        let (ca, cert, key) = pki();
        let files = HashMap::from([
            ("ca.pem", ca),
            ("client.pem", cert),
            ("client.key", key.clone()),
        ]);
        let tls = read(
            &TlsConfig {
                ca_file: Some("ca.pem".into()),
                system_roots: false,
                client_cert_file: Some("client.pem".into()),
                client_key_file: Some("client.key".into()),
                ..config()
            },
            &files,
            None,
        )
        .unwrap();
        assert_eq!(tls.roots.len(), 1);
        assert!(!tls.system_roots);
        assert!(tls.identity.is_some());
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"), "{tls:?}");
        // The key from the environment instead; the roots alone.
        let from_env = read(
            &TlsConfig {
                client_cert_file: Some("client.pem".into()),
                client_key_env: Some("CLIENT_KEY".into()),
                ..config()
            },
            &files,
            Some(&key),
        )
        .unwrap();
        assert!(from_env.identity.is_some() && from_env.roots.is_empty());
        let roots = read(
            &TlsConfig {
                ca_file: Some("ca.pem".into()),
                ..config()
            },
            &files,
            None,
        )
        .unwrap();
        assert!(roots.identity.is_none() && roots.system_roots);
        // Each builds a service's client.
        for tls in [tls, from_env, roots] {
            let settings = crate::rest::upstream::UpstreamSettings::default();
            assert!(
                crate::rest::upstream::guarded_client(&settings, Some(&tls)).is_ok(),
                "{tls:?}"
            );
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_saying_what_to_do() {
        let (ca, cert, key) = pki();
        let files = HashMap::from([
            ("ca.pem", ca),
            ("client.pem", cert),
            ("client.key", key.clone()),
            ("empty.pem", "no certificates here\n".to_owned()),
            (
                "bad.key",
                "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".to_owned(),
            ),
        ]);
        let cases: Vec<(TlsConfig, Option<&str>, &str)> = vec![
            (
                TlsConfig {
                    ca_file: Some("missing.pem".into()),
                    ..config()
                },
                None,
                "ca_file missing.pem",
            ),
            (
                TlsConfig {
                    ca_file: Some("empty.pem".into()),
                    ..config()
                },
                None,
                "holds no certificate",
            ),
            (
                TlsConfig {
                    system_roots: false,
                    ..config()
                },
                None,
                "trusts nothing without a ca_file",
            ),
            (config(), None, "sets nothing"),
            (
                TlsConfig {
                    client_cert_file: Some("client.pem".into()),
                    ..config()
                },
                None,
                "without its key",
            ),
            (
                TlsConfig {
                    client_key_file: Some("client.key".into()),
                    ..config()
                },
                None,
                "without client_cert_file",
            ),
            (
                TlsConfig {
                    client_cert_file: Some("client.pem".into()),
                    client_key_file: Some("client.key".into()),
                    client_key_env: Some("CLIENT_KEY".into()),
                    ..config()
                },
                Some(key.as_str()),
                "both set",
            ),
            (
                TlsConfig {
                    client_cert_file: Some("client.pem".into()),
                    client_key_env: Some("CLIENT_KEY".into()),
                    ..config()
                },
                None,
                "environment variable CLIENT_KEY (client_key_env) is not set",
            ),
            (
                TlsConfig {
                    client_cert_file: Some("client.pem".into()),
                    client_key_file: Some("bad.key".into()),
                    ..config()
                },
                None,
                "could not be used for TLS",
            ),
        ];
        for (config, variable, expected) in cases {
            let error = read(&config, &files, variable).unwrap_err().to_string();
            assert!(error.starts_with("rest.tls.corp: "), "{error}");
            assert!(error.contains(expected), "{config:?}: {error}");
            assert!(
                !error.contains("bm90IGEga2V5") && !error.contains("PRIVATE"),
                "{error}"
            );
        }
    }
}

//! Upstream credentials: what capgate sends to a REST service, from the
//! gateway's configuration and environment — never from the calling
//! agent's token. Secrets are held in [`Secret`], which never prints.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::Mutex;

/// A secret value: `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `[rest.credentials.NAME]` in capgate.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// `Authorization: Bearer TOKEN`.
    Bearer { secret_env: String },
    /// A key in a header or a query parameter.
    ApiKey {
        secret_env: String,
        /// `header` or `query`.
        #[serde(rename = "in")]
        location: KeyLocation,
        /// The header's or parameter's name.
        name: String,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        username: String,
        secret_env: String,
    },
    /// OAuth 2.0 client credentials (RFC 6749 §4.4): capgate fetches the
    /// token and refreshes it before it expires.
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        secret_env: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        audience: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyLocation {
    Header,
    Query,
}

/// A credential whose configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "credential '{name}': environment variable {variable} is not set (or empty); set it to the secret, or remove the credential"
    )]
    MissingSecret { name: String, variable: String },
    #[error("credential '{name}': {reason}")]
    Invalid { name: String, reason: String },
}

/// A credential ready to apply.
#[derive(Debug)]
pub enum Credential {
    Header { name: String, value: Secret },
    Query { name: String, value: Secret },
    OAuth2(Box<OAuth2>),
}

#[derive(Debug)]
pub struct OAuth2 {
    pub token_url: url::Url,
    pub client_id: String,
    pub secret: Secret,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    cached: Mutex<Option<(Secret, Instant)>>,
}

/// A token is refreshed this long before it expires.
const REFRESH_AHEAD: Duration = Duration::from_secs(30);
/// Used when the token endpoint gives no `expires_in`.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(300);

impl Credential {
    /// Reads the secret of `config` from the environment (through `env`).
    pub fn from_config(
        name: &str,
        config: &CredentialConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CredentialError> {
        let secret = |variable: &str| {
            env(variable)
                .filter(|value| !value.is_empty())
                .map(Secret::new)
                .ok_or_else(|| CredentialError::MissingSecret {
                    name: name.to_owned(),
                    variable: variable.to_owned(),
                })
        };
        let invalid = |reason: String| CredentialError::Invalid {
            name: name.to_owned(),
            reason,
        };
        Ok(match config {
            CredentialConfig::Bearer { secret_env } => Self::Header {
                name: "authorization".into(),
                value: Secret::new(format!("Bearer {}", secret(secret_env)?.expose())),
            },
            CredentialConfig::ApiKey {
                secret_env,
                location,
                name: key,
            } => {
                if key.is_empty() || http::HeaderName::from_bytes(key.as_bytes()).is_err() {
                    return Err(invalid(format!("'{key}' is not a usable key name")));
                }
                match location {
                    KeyLocation::Header => Self::Header {
                        name: key.to_ascii_lowercase(),
                        value: secret(secret_env)?,
                    },
                    KeyLocation::Query => Self::Query {
                        name: key.clone(),
                        value: secret(secret_env)?,
                    },
                }
            }
            CredentialConfig::Basic {
                username,
                secret_env,
            } => {
                let pair = format!("{username}:{}", secret(secret_env)?.expose());
                Self::Header {
                    name: "authorization".into(),
                    value: Secret::new(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )),
                }
            }
            CredentialConfig::Oauth2ClientCredentials {
                token_url,
                client_id,
                secret_env,
                scopes,
                audience,
            } => {
                let token_url = url::Url::parse(token_url)
                    .map_err(|error| invalid(format!("token_url '{token_url}': {error}")))?;
                Self::OAuth2(Box::new(OAuth2 {
                    token_url,
                    client_id: client_id.clone(),
                    secret: secret(secret_env)?,
                    scopes: scopes.clone(),
                    audience: audience.clone(),
                    cached: Mutex::new(None),
                }))
            }
        })
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the OAuth2 token endpoint {endpoint} refused or failed: {reason}")]
pub struct TokenError {
    pub endpoint: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl OAuth2 {
    /// A valid access token: the cached one, or a new one from the endpoint.
    pub async fn token(&self, client: &reqwest::Client) -> Result<Secret, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let failed = |reason: String| TokenError {
            endpoint: self.token_url.to_string(),
            reason,
        };
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience.clone()));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = client
            .post(self.token_url.clone())
            .basic_auth(&self.client_id, Some(self.secret.expose()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| failed(super::upstream::describe(&error)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| failed(super::upstream::describe(&error)))?;
        if !status.is_success() {
            // The endpoint's answer is not echoed: it may quote the secret.
            return Err(failed(format!("it answered {status}")));
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| failed("its answer has no access_token".into()))?;
        let life = answer
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFE);
        let token = Secret::new(answer.access_token);
        *cached = Some((
            token.clone(),
            Instant::now() + life.saturating_sub(REFRESH_AHEAD),
        ));
        Ok(token)
    }

    /// Forgets the cached token (the upstream answered 401 with it).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_and_never_print() {
        let config: CredentialConfig = toml_like(
            r#"{"type": "api_key", "secret_env": "KEY", "in": "header", "name": "X-Api-Key"}"#,
        );
        let credential = Credential::from_config("petstore", &config, |v| {
            (v == "KEY").then(|| "s3cret".into())
        })
        .unwrap();
        let printed = format!("{credential:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        let Credential::Header { name, value } = credential else {
            panic!("a header credential")
        };
        assert_eq!((name.as_str(), value.expose()), ("x-api-key", "s3cret"));
        let error = Credential::from_config("petstore", &config, |_| None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("environment variable KEY is not set"),
            "{error}"
        );
        let basic: CredentialConfig =
            toml_like(r#"{"type": "basic", "username": "ops", "secret_env": "PW"}"#);
        let Credential::Header { value, .. } =
            Credential::from_config("b", &basic, |_| Some("pw".into())).unwrap()
        else {
            panic!("a header credential")
        };
        assert_eq!(value.expose(), "Basic b3BzOnB3");
    }

    fn toml_like(json: &str) -> CredentialConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused() {
        assert!(serde_json::from_str::<CredentialConfig>(r#"{"type": "kerberos"}"#).is_err());
        assert!(
            serde_json::from_str::<CredentialConfig>(
                r#"{"type": "bearer", "secret_env": "T", "token": "inline"}"#
            )
            .is_err(),
            "a secret written into the configuration itself is refused"
        );
    }
}

//! Who is asking: agents at `/mcp` and the admin API, workers on the
//! WebSocket.
//!
//! A bearer token is either an API key from configuration (only its
//! SHA-256 is held) or a JWT from a configured issuer ([`jwt`]). Where a
//! kind of client has no identity configured, and only on a loopback
//! gateway, its requests act anonymously (`agent:anonymous`,
//! `worker:anonymous`); the server refuses to listen elsewhere until both
//! kinds have identities.

pub mod agents;
pub mod config;
pub mod jwt;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use agents::{Agent, Agents};
use config::{IssuerConfig, WorkerConfig};
use jwt::{Issuers, Kind, TokenError};

/// The identity a worker connection proved; `name: None` is anonymous.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub name: Option<String>,
    pub tenant: Option<String>,
}

/// Why a request has no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this gateway requires a bearer token: send 'Authorization: Bearer TOKEN' (an API key from the configuration or a JWT from a configured issuer)"
    )]
    Missing,
    #[error("the Authorization header must be 'Bearer TOKEN'")]
    Malformed,
    #[error(
        "the API key is not one this gateway knows; check the key, or its api_key_sha256 in the configuration"
    )]
    UnknownKey,
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the token lacks the scope(s) this gateway requires: {}", .0.join(" "))]
    InsufficientScope(Vec<String>),
}

impl AuthError {
    /// The RFC 6750 error code for `WWW-Authenticate`, if any.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            Self::Malformed => Some("invalid_request"),
            Self::UnknownKey | Self::Token(_) => Some("invalid_token"),
            Self::InsufficientScope(_) => Some("insufficient_scope"),
        }
    }
}

/// Every identity the configuration knows.
pub struct Identities {
    pub agents: Arc<Agents>,
    workers: HashMap<[u8; 32], WorkerIdentity>,
    pub issuers: Issuers,
}

impl Identities {
    pub fn new(
        workers: &[WorkerConfig],
        issuers: &[IssuerConfig],
        agents: Arc<Agents>,
    ) -> Result<Self, String> {
        Ok(Self {
            agents,
            workers: workers
                .iter()
                .map(
                    |WorkerConfig {
                         name,
                         api_key_sha256,
                         tenant,
                     }| {
                        (
                            *api_key_sha256,
                            WorkerIdentity {
                                name: Some(name.clone()),
                                tenant: tenant.clone(),
                            },
                        )
                    },
                )
                .collect(),
            issuers: Issuers::new(issuers)?,
        })
    }

    /// Whether agents must authenticate.
    pub fn agents_identified(&self) -> bool {
        self.agents.has_keys() || self.issuers.identify(Kind::Agent)
    }

    /// Whether workers must authenticate.
    pub fn workers_identified(&self) -> bool {
        !self.workers.is_empty() || self.issuers.identify(Kind::Worker)
    }

    /// The agent a request's headers identify.
    pub fn agent(&self, headers: &HeaderMap) -> Result<Arc<Agent>, AuthError> {
        let Some(token) = bearer(headers)? else {
            return if self.agents_identified() {
                Err(AuthError::Missing)
            } else {
                Ok(self.agents.anonymous())
            };
        };
        if looks_like_jwt(token) && !self.issuers.is_empty() {
            let verified = self.issuers.verify(token, Kind::Agent)?;
            let missing: Vec<String> = verified
                .required_scopes
                .iter()
                .filter(|scope| !verified.scopes.contains(scope))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(AuthError::InsufficientScope(missing));
            }
            return Ok(self.agents.from_token(&verified.name, verified.tenant));
        }
        self.agents.by_key(token).ok_or(AuthError::UnknownKey)
    }

    /// The worker a connection request identifies: a bearer header, or a
    /// `token` query parameter for clients that cannot set headers.
    pub fn worker(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<WorkerIdentity, AuthError> {
        let token = match (bearer(headers)?, query_token) {
            (Some(token), _) => Some(token),
            (None, Some(token)) if !token.is_empty() => Some(token),
            (None, _) => None,
        };
        let Some(token) = token else {
            return if self.workers_identified() {
                Err(AuthError::Missing)
            } else {
                Ok(WorkerIdentity::default())
            };
        };
        if looks_like_jwt(token) && !self.issuers.is_empty() {
            let verified = self.issuers.verify(token, Kind::Worker)?;
            return Ok(WorkerIdentity {
                name: Some(verified.name),
                tenant: verified.tenant,
            });
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.workers
            .get(&digest)
            .cloned()
            .ok_or(AuthError::UnknownKey)
    }
}

/// The bearer token of `Authorization`, if the header is present.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| {
            let (scheme, token) = text.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .map(Some)
        .ok_or(AuthError::Malformed)
}

/// JWTs are three base64url parts; API keys have no dots.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::agents::new_key;
    use super::config::AgentConfig;
    use super::*;
    use http::HeaderValue;

    fn identities(agent_key: bool, worker_key: Option<&str>) -> (Identities, String) {
        let (key, digest) = new_key();
        let hash = config::key_hash(&digest).unwrap();
        let (mut agents, mut workers) = (Vec::new(), Vec::new());
        if agent_key {
            agents.push(AgentConfig {
                name: "bot".into(),
                api_key_sha256: Some(hash),
                tenant: None,
                pins: Vec::new(),
            });
        }
        if let Some(worker) = worker_key {
            workers.push(WorkerConfig {
                name: "billing".into(),
                api_key_sha256: Sha256::digest(worker.as_bytes()).into(),
                tenant: Some("acme".into()),
            });
        }
        let agents = Arc::new(Agents::new(&agents));
        (Identities::new(&workers, &[], agents).unwrap(), key)
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    #[test]
    fn api_keys_name_agents_and_nothing_else_gets_in() {
        let (ids, key) = identities(true, None);
        assert_eq!(
            ids.agent(&headers(&format!("Bearer {key}"))).unwrap().name,
            "bot"
        );
        assert_eq!(
            ids.agent(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            ids.agent(&headers("Bearer nope")).unwrap_err(),
            AuthError::UnknownKey
        );
        assert_eq!(ids.agent(&headers(&key)).unwrap_err(), AuthError::Malformed);
        assert_eq!(
            ids.agent(&headers("Basic abc")).unwrap_err(),
            AuthError::Malformed
        );
        // No worker identity configured: workers are anonymous.
        assert_eq!(
            ids.worker(&HeaderMap::new(), None).unwrap(),
            WorkerIdentity::default()
        );
    }

    #[test]
    fn without_identities_everyone_is_anonymous() {
        let (ids, _) = identities(false, None);
        assert_eq!(ids.agent(&HeaderMap::new()).unwrap().name, "anonymous");
        assert!(!ids.agents_identified() && !ids.workers_identified());
    }

    #[test]
    fn workers_authenticate_by_header_or_query() {
        let (ids, _) = identities(false, Some("worker-secret"));
        let by_header = ids.worker(&headers("Bearer worker-secret"), None).unwrap();
        assert_eq!(by_header.name.as_deref(), Some("billing"));
        assert_eq!(by_header.tenant.as_deref(), Some("acme"));
        assert_eq!(
            ids.worker(&HeaderMap::new(), Some("worker-secret"))
                .unwrap(),
            by_header
        );
        assert_eq!(
            ids.worker(&HeaderMap::new(), None).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            ids.worker(&HeaderMap::new(), Some("guess")).unwrap_err(),
            AuthError::UnknownKey
        );
    }
}

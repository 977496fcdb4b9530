//! Agents: who an MCP request comes from, and which versions they are
//! pinned to.
//!
//! An agent is named in configuration (`[agents.NAME]`) with the SHA-256 of
//! its API key and its version pins. A request presents the key as
//! `Authorization: Bearer KEY`; only the key's hash is ever held. Requests
//! without a key act as the agent `anonymous`, which is allowed only while
//! no agent has a key (issue #5 adds JWT identities and policies).

use std::collections::HashMap;
use std::sync::Arc;

use capgate_catalog::Caller;
use capgate_catalog::directory::Pins;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use semver::VersionReq;
use sha2::{Digest, Sha256};

use crate::config::{ANONYMOUS_AGENT, AgentConfig};

/// One known agent.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub pins: Pins,
}

impl Agent {
    /// The caller this agent's invocations carry.
    pub fn caller(&self) -> Caller {
        Caller::Agent {
            name: self.name.clone(),
        }
    }
}

/// Why a request has no agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this gateway requires an API key: send it as 'Authorization: Bearer KEY' (keys are configured under [agents.NAME])"
    )]
    Missing,
    #[error("the Authorization header must be 'Bearer KEY'")]
    Malformed,
    #[error(
        "the API key is not one this gateway knows; check the key, or its api_key_sha256 in the configuration"
    )]
    UnknownKey,
}

/// Every configured agent, by key hash and by name.
#[derive(Debug)]
pub struct Agents {
    by_key: HashMap<[u8; 32], Arc<Agent>>,
    by_name: HashMap<String, Arc<Agent>>,
    anonymous: Arc<Agent>,
}

impl Agents {
    pub fn new(configured: &[AgentConfig]) -> Self {
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        for entry in configured {
            let agent = Arc::new(Agent {
                name: entry.name.clone(),
                pins: entry.pins.iter().cloned().collect(),
            });
            if let Some(digest) = entry.api_key_sha256 {
                by_key.insert(digest, agent.clone());
            }
            by_name.insert(entry.name.clone(), agent);
        }
        let anonymous = by_name
            .entry(ANONYMOUS_AGENT.to_owned())
            .or_insert_with(|| {
                Arc::new(Agent {
                    name: ANONYMOUS_AGENT.to_owned(),
                    pins: Pins::new(),
                })
            })
            .clone();
        Self {
            by_key,
            by_name,
            anonymous,
        }
    }

    /// True when requests must present a key.
    pub fn keys_required(&self) -> bool {
        !self.by_key.is_empty()
    }

    /// The agent a request's headers identify.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Agent>, AuthError> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return if self.keys_required() {
                Err(AuthError::Missing)
            } else {
                Ok(self.anonymous.clone())
            };
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|text| {
                let (scheme, key) = text.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            })
            .filter(|key| !key.is_empty())
            .ok_or(AuthError::Malformed)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_key
            .get(&digest)
            .cloned()
            .ok_or(AuthError::UnknownKey)
    }

    /// The version requirement `caller` is pinned to for `function`.
    pub fn pin(&self, caller: &Caller, function: &str) -> Option<&VersionReq> {
        match caller {
            Caller::Agent { name } => self.by_name.get(name)?.pins.get(function),
            Caller::Worker { .. } | Caller::Gateway => None,
        }
    }
}

/// A new random API key and the hex SHA-256 to configure for it.
pub fn new_key() -> (String, String) {
    let key = format!(
        "cgk_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    (key, digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capgate_catalog::FunctionId;
    use http::HeaderValue;

    fn agents() -> (Agents, String) {
        let (key, digest) = new_key();
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&digest, &mut hash).unwrap();
        let configured = vec![AgentConfig {
            name: "legacy-bot".into(),
            api_key_sha256: Some(hash),
            pins: vec![(
                FunctionId::parse("billing::refund").unwrap(),
                VersionReq::parse("^1").unwrap(),
            )],
        }];
        (Agents::new(&configured), key)
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    #[test]
    fn a_key_names_its_agent_and_nothing_else_gets_in() {
        let (agents, key) = agents();
        let agent = agents
            .authenticate(&headers(&format!("Bearer {key}")))
            .unwrap();
        assert_eq!(agent.name, "legacy-bot");
        assert_eq!(
            agents.authenticate(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            agents.authenticate(&headers("Bearer nope")).unwrap_err(),
            AuthError::UnknownKey
        );
        assert_eq!(
            agents.authenticate(&headers(&key)).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            agents.authenticate(&headers("Basic abc")).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn without_keys_requests_are_anonymous() {
        let agents = Agents::new(&[]);
        assert_eq!(
            agents.authenticate(&HeaderMap::new()).unwrap().name,
            ANONYMOUS_AGENT
        );
    }

    #[test]
    fn pins_apply_to_their_agent_only() {
        let (agents, _) = agents();
        let bot = Caller::Agent {
            name: "legacy-bot".into(),
        };
        assert_eq!(
            agents.pin(&bot, "billing::refund").map(ToString::to_string),
            Some("^1".into())
        );
        assert!(agents.pin(&bot, "billing::charge").is_none());
        let other = Caller::Agent {
            name: ANONYMOUS_AGENT.into(),
        };
        assert!(agents.pin(&other, "billing::refund").is_none());
    }
}

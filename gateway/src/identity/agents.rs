//! Agents: who an MCP request comes from, their tenant and the versions
//! they are pinned to.
//!
//! An agent is named in configuration (`[agents.NAME]`) with the SHA-256 of
//! its API key, its tenant and its version pins, or by a JWT from a
//! configured issuer (then its pins and tenant come from the entry of the
//! same name, if there is one). Requests without credentials act as the
//! agent `anonymous`, which [`crate::identity`] allows only on a loopback
//! gateway with no agent identity configured.

use std::collections::HashMap;
use std::sync::Arc;

use capgate_catalog::Caller;
use capgate_catalog::directory::Pins;
use semver::VersionReq;
use sha2::{Digest, Sha256};

use super::config::{ANONYMOUS_AGENT, AgentConfig};

/// One known agent.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    /// The policy domain; `None` is the tenant `default`.
    pub tenant: Option<String>,
    pub pins: Pins,
}

impl Agent {
    /// The caller this agent's invocations carry.
    pub fn caller(&self) -> Caller {
        Caller::Agent {
            name: self.name.clone(),
            tenant: self.tenant.clone(),
        }
    }

    /// The policy subject, `agent:NAME`.
    pub fn subject(&self) -> String {
        format!("agent:{}", self.name)
    }

    pub fn tenant(&self) -> &str {
        self.tenant
            .as_deref()
            .unwrap_or(capgate_catalog::invocation::DEFAULT_TENANT)
    }
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
                tenant: entry.tenant.clone(),
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
                    tenant: None,
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

    /// True when some agent has an API key.
    pub fn has_keys(&self) -> bool {
        !self.by_key.is_empty()
    }

    pub fn anonymous(&self) -> Arc<Agent> {
        self.anonymous.clone()
    }

    /// The agent whose API key is `key`.
    pub fn by_key(&self, key: &str) -> Option<Arc<Agent>> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_key.get(&digest).cloned()
    }

    /// The agent a verified token names: its configured entry (pins, and
    /// tenant unless the token names one) or a new one without pins.
    pub fn from_token(&self, name: &str, tenant: Option<String>) -> Arc<Agent> {
        match (self.by_name.get(name), tenant) {
            (Some(known), None) => known.clone(),
            (Some(known), Some(tenant)) => Arc::new(Agent {
                name: known.name.clone(),
                tenant: Some(tenant),
                pins: known.pins.clone(),
            }),
            (None, tenant) => Arc::new(Agent {
                name: name.to_owned(),
                tenant,
                pins: Pins::new(),
            }),
        }
    }

    /// The version requirement `caller` is pinned to for `function`.
    pub fn pin(&self, caller: &Caller, function: &str) -> Option<&VersionReq> {
        match caller {
            Caller::Agent { name, .. } => self.by_name.get(name)?.pins.get(function),
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

    fn agents() -> (Agents, String) {
        let (key, digest) = new_key();
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&digest, &mut hash).unwrap();
        let configured = vec![AgentConfig {
            name: "legacy-bot".into(),
            api_key_sha256: Some(hash),
            tenant: Some("acme".into()),
            pins: vec![(
                FunctionId::parse("billing::refund").unwrap(),
                VersionReq::parse("^1").unwrap(),
            )],
        }];
        (Agents::new(&configured), key)
    }

    #[test]
    fn a_key_names_its_agent() {
        let (agents, key) = agents();
        let agent = agents.by_key(&key).unwrap();
        assert_eq!(agent.name, "legacy-bot");
        assert_eq!(agent.tenant(), "acme");
        assert!(agents.by_key("nope").is_none());
        assert_eq!(agents.anonymous().name, ANONYMOUS_AGENT);
    }

    #[test]
    fn tokens_take_pins_from_the_entry_of_their_name() {
        let (agents, _) = agents();
        let known = agents.from_token("legacy-bot", Some("globex".into()));
        assert_eq!(known.tenant(), "globex");
        assert_eq!(known.pins.len(), 1);
        let stranger = agents.from_token("stranger", None);
        assert!(stranger.pins.is_empty());
        assert_eq!(stranger.tenant(), "default");
    }

    #[test]
    fn pins_apply_to_their_agent_only() {
        let (agents, _) = agents();
        let bot = Caller::Agent {
            name: "legacy-bot".into(),
            tenant: None,
        };
        assert_eq!(
            agents.pin(&bot, "billing::refund").map(ToString::to_string),
            Some("^1".into())
        );
        assert!(agents.pin(&bot, "billing::charge").is_none());
        let other = Caller::Agent {
            name: ANONYMOUS_AGENT.into(),
            tenant: None,
        };
        assert!(agents.pin(&other, "billing::refund").is_none());
    }
}

//! # capgate-policies
//!
//! Decides who may do what. A [`Request`] — may this subject perform this
//! action on this object in this tenant? — gets a [`Decision`] that names
//! the rule that decided it, for the audit log and `capgate policy check`.
//!
//! The model is casbin's (`policies/model.conf`): subjects (agents,
//! workers, roles), domains (tenants), objects (function ids with `*` per
//! segment), actions, and deny overriding allow. Policy files are casbin
//! CSV ([`file`]); a [`Policy`] indexes their lines by subject and caches
//! decisions, because casbin's script engine costs about 2 µs per line per
//! request; [`reference::CasbinReference`] runs casbin itself on the model
//! so the two can be compared. [`LivePolicy`] holds the policy in force and
//! swaps it whole on reload: a policy with an error never replaces one
//! that works.
//!
//! Must not know: the catalog's types, the worker protocol, MCP or HTTP.
//! Subjects and objects are plain strings (`agent:claude`, `billing::refund`).
#![forbid(unsafe_code)]

pub mod file;
pub mod pattern;
pub mod policy;
pub mod reference;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

pub use file::PolicySource;
pub use policy::{DEFAULT_POLICY, Explanation, Policy, View};

/// What a subject wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// See a function in a tool list or directory.
    List,
    /// Call a function.
    Call,
    /// Provide a function.
    Register,
    /// Attach a trigger to a function.
    Trigger,
    /// Use the admin API.
    Admin,
    /// Read a state scope (`state::SCOPE`).
    Read,
    /// Write a state scope (`state::SCOPE`).
    Write,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Self::List,
        Self::Call,
        Self::Register,
        Self::Trigger,
        Self::Admin,
        Self::Read,
        Self::Write,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Call => "call",
            Self::Register => "register",
            Self::Trigger => "trigger",
            Self::Admin => "admin",
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| {
                format!("unknown action '{text}'; use list, call, register, trigger, admin, read, write or *")
            })
    }
}

/// How deprecated versions are treated for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeprecatedMode {
    /// Listed and callable until their sunset (the default).
    #[default]
    Allow,
    /// Not listed, still callable by name until their sunset.
    Hide,
    /// Neither listed nor callable.
    Refuse,
}

impl FromStr for DeprecatedMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "allow" => Ok(Self::Allow),
            "hide" => Ok(Self::Hide),
            "refuse" => Ok(Self::Refuse),
            other => Err(format!(
                "deprecation mode '{other}' must be allow, hide or refuse"
            )),
        }
    }
}

/// One question: may `subject` perform `action` on `object` in `domain`?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `agent:NAME`, `worker:NAME`.
    pub subject: &'a str,
    /// The caller's tenant.
    pub domain: &'a str,
    pub action: Action,
    /// A function id, or an admin object (`functions`, `audit`, …).
    pub object: &'a str,
}

/// The answer, with the rule that gave it (`file:line: the line`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Arc<str>,
}

/// A policy that cannot be used; the policy in force stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}:{line}: {reason}")]
    Line {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("cannot read policy file {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("casbin refused the model or policy: {0}")]
    Casbin(String),
}

/// Reads policy files from disk, in order.
pub fn read_files(paths: &[std::path::PathBuf]) -> Result<Vec<PolicySource>, PolicyError> {
    paths
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            std::fs::read_to_string(path)
                .map(|text| PolicySource::new(name.clone(), text))
                .map_err(|error| PolicyError::Read {
                    file: name,
                    reason: error.to_string(),
                })
        })
        .collect()
}

/// The policy in force, replaced whole on reload.
#[derive(Debug)]
pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
    generation: AtomicU64,
}

impl LivePolicy {
    pub fn new(policy: Policy) -> Self {
        Self {
            current: RwLock::new(Arc::new(policy)),
            generation: AtomicU64::new(1),
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Moves on every replacement: caches built from a policy compare it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `policy` in force and returns the new generation.
    pub fn replace(&self, policy: Policy) -> u64 {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn decide(&self, request: &Request<'_>) -> Decision {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .decide(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_unknown_ones_say_what_is_allowed() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
        }
        assert!("cal".parse::<Action>().unwrap_err().contains("list, call"));
    }

    #[test]
    fn a_replacement_moves_the_generation_and_the_decision() {
        let live = LivePolicy::new(Policy::open());
        let request = Request {
            subject: "agent:a",
            domain: "default",
            action: Action::Call,
            object: "x::y",
        };
        assert!(live.decide(&request).allowed);
        let before = live.generation();
        let after =
            live.replace(Policy::from_sources(&[PolicySource::new("none.csv", "")]).unwrap());
        assert_eq!(after, before + 1);
        assert!(!live.decide(&request).allowed);
    }

    #[test]
    fn unreadable_files_are_named() {
        let error = read_files(&["/nonexistent/p.csv".into()]).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/p.csv"), "{error}");
    }
}

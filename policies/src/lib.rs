//! # capgate-policies
//!
//! Decides who may do what: [`Authorizer::decide`] answers one question —
//! may this subject perform this action on this function? — with a
//! [`Decision`] that names the rule that decided it, for the audit log.
//!
//! Today the only authorizer is [`LoopbackOpen`], the embedded default: a
//! gateway bound to loopback with no identity configured lets its local
//! clients do everything. The casbin model and policy files arrive with
//! issue #5, behind the same trait.
//!
//! Must not know: the catalog's types, the worker protocol, MCP or HTTP.
//! Subjects and objects are plain strings (`agent:claude`, `billing::refund`).
#![forbid(unsafe_code)]

use std::fmt;

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
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::List => "list",
            Self::Call => "call",
            Self::Register => "register",
            Self::Trigger => "trigger",
            Self::Admin => "admin",
        })
    }
}

/// The answer, with the rule that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: &'static str,
}

/// Decides requests. Implementations must be cheap on the warm path: the
/// gateway asks once per call.
pub trait Authorizer: Send + Sync + 'static {
    fn decide(&self, subject: &str, action: Action, object: &str) -> Decision;
}

/// The embedded default for a loopback-only gateway without identities:
/// everything is allowed. The gateway refuses to bind beyond loopback with it
/// (issue #5 adds the identities and policies that make that possible).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackOpen;

impl Authorizer for LoopbackOpen {
    fn decide(&self, _subject: &str, _action: Action, _object: &str) -> Decision {
        Decision {
            allowed: true,
            rule: "loopback-open: no identity configured, loopback clients may do everything",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_open_allows_and_says_why() {
        let decision = LoopbackOpen.decide("agent:anonymous", Action::Call, "hello::greet");
        assert!(decision.allowed);
        assert!(decision.rule.starts_with("loopback-open"));
    }
}

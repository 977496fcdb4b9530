//! casbin itself, on `model.conf`, as the reference the compiled policy
//! must agree with: `capgate policy check` asks both, and the differential
//! tests compare them over many requests.

use casbin::function_map::{OperatorFunction, dynamic_to_str};
use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};

use crate::pattern::ObjectPattern;
use crate::{Policy, PolicyError, Request};

/// The casbin model capgate's policies follow.
pub const MODEL: &str = include_str!("../model.conf");

/// A casbin enforcer loaded with `policy`'s lines.
pub struct CasbinReference {
    enforcer: Enforcer,
}

impl CasbinReference {
    pub async fn new(policy: &Policy) -> Result<Self, PolicyError> {
        let casbin = |error: casbin::Error| PolicyError::Casbin(error.to_string());
        let model = DefaultModel::from_str(MODEL).await.map_err(casbin)?;
        let mut enforcer = Enforcer::new(model, MemoryAdapter::default())
            .await
            .map_err(casbin)?;
        enforcer.add_function(
            "objMatch",
            OperatorFunction::Arg2(|object, pattern| {
                ObjectPattern::parse(&dynamic_to_str(&pattern))
                    .is_ok_and(|p| p.matches(&dynamic_to_str(&object)))
                    .into()
            }),
        );
        let rules = policy.rule_rows();
        if !rules.is_empty() {
            enforcer.add_policies(rules).await.map_err(casbin)?;
        }
        let memberships = policy.membership_rows();
        if !memberships.is_empty() {
            enforcer
                .add_grouping_policies(memberships)
                .await
                .map_err(casbin)?;
        }
        Ok(Self { enforcer })
    }

    /// casbin's answer to `request`.
    pub fn allows(&self, request: &Request<'_>) -> Result<bool, PolicyError> {
        self.enforcer
            .enforce((
                request.subject,
                request.domain,
                request.object,
                request.action.as_str(),
            ))
            .map_err(|error| PolicyError::Casbin(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::{Action, PolicySource};

    const SUBJECTS: &[&str] = &["agent:a", "agent:b", "worker:w", "role:r", "role:s"];
    const DOMAINS: &[&str] = &["*", "acme", "globex"];
    const OBJECTS: &[&str] = &[
        "*",
        "billing::*",
        "billing::refund",
        "*::refund",
        "acme::*::refund",
        "audit",
        "ops::*",
    ];
    const ACTIONS: &[&str] = &["list", "call", "register", "trigger", "admin", "*"];
    const ASKED: &[&str] = &[
        "billing::refund",
        "billing::charge",
        "billing::refunds::v2",
        "acme::billing::refund",
        "ops::restart",
        "audit",
        "hello",
    ];

    fn pick<'a>(rng: &mut impl Rng, from: &[&'a str]) -> &'a str {
        from[rng.random_range(0..from.len())]
    }

    /// Random policies and requests: the compiled index and casbin must
    /// give the same answer every time.
    #[tokio::test]
    async fn the_compiled_policy_agrees_with_casbin() {
        let mut rng = rand::rng();
        let mut compared = 0;
        for _ in 0..40 {
            let mut text = String::new();
            for _ in 0..rng.random_range(1..12) {
                let subject = if rng.random_bool(0.15) {
                    "*"
                } else {
                    pick(&mut rng, SUBJECTS)
                };
                let effect = if rng.random_bool(0.3) {
                    "deny"
                } else {
                    "allow"
                };
                text.push_str(&format!(
                    "p, {subject}, {}, {}, {}, {effect}\n",
                    pick(&mut rng, DOMAINS),
                    pick(&mut rng, OBJECTS),
                    pick(&mut rng, ACTIONS)
                ));
            }
            for _ in 0..rng.random_range(0..4) {
                let member = pick(&mut rng, &SUBJECTS[..3]);
                let role = pick(&mut rng, &SUBJECTS[3..]);
                text.push_str(&format!("g, {member}, {role}\n"));
            }
            let policy =
                Policy::from_sources(&[PolicySource::new("random.csv", text.clone())]).unwrap();
            let casbin = CasbinReference::new(&policy).await.unwrap();
            for _ in 0..60 {
                let action: Action = pick(&mut rng, &ACTIONS[..5]).parse().unwrap();
                let request = Request {
                    subject: pick(&mut rng, &SUBJECTS[..3]),
                    domain: pick(&mut rng, &DOMAINS[1..]),
                    action,
                    object: pick(&mut rng, ASKED),
                };
                let expected = casbin.allows(&request).unwrap();
                assert_eq!(
                    policy.decide(&request).allowed,
                    expected,
                    "{request:?} under\n{text}"
                );
                let view = policy.view(request.subject, request.domain, request.action);
                assert_eq!(
                    view.allows(request.object),
                    expected,
                    "view: {request:?} under\n{text}"
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 2400);
    }
}

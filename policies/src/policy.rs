//! A loaded policy: the rules indexed by subject, role memberships
//! resolved, and a cache of decisions that lives exactly as long as the
//! policy (a reload builds a new policy, so nothing stale survives it).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use foldhash::quality::RandomState;

use crate::file::{self, PolicySource, Rule};
use crate::{Decision, DeprecatedMode, PolicyError, Request};

/// The embedded default policy: everyone who may connect may do everything.
pub const DEFAULT_POLICY: &str = include_str!("../default.csv");

/// The longest cache key a thread keeps its buffer for between requests.
const KEY_KEPT_BYTES: usize = 1024;

/// Decisions kept before the cache is emptied and refilled: bounds its
/// memory (about 200 bytes an entry) whatever callers ask.
const CACHE_LIMIT: usize = 200_000;

/// A checked, indexed policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Rules by exact subject; `*` rules under "*".
    by_subject: HashMap<String, Vec<usize>>,
    /// Member → the roles it belongs to directly.
    roles: HashMap<String, Vec<String>>,
    deprecation: HashMap<String, (DeprecatedMode, Arc<str>)>,
    memberships: Vec<(String, String)>,
    sources: Vec<String>,
    /// Looked up on every call: hashed with foldhash (seeded per process)
    /// rather than SipHash, about 240 instructions a call less (callgrind).
    cache: DashMap<Box<[u8]>, Decision, RandomState>,
}

/// Every rule that matched a request, and the decision they make.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    /// The subject and every role it holds, in the order searched.
    pub subjects: Vec<String>,
    /// Origins of the matching rules, denies first.
    pub matched: Vec<Arc<str>>,
}

impl Policy {
    /// Parses and indexes the given files; any error refuses them all.
    pub fn from_sources(sources: &[PolicySource]) -> Result<Self, PolicyError> {
        let lines = file::parse(sources)?;
        let mut by_subject: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, rule) in lines.rules.iter().enumerate() {
            by_subject
                .entry(rule.subject.clone())
                .or_default()
                .push(index);
        }
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        for (member, role) in &lines.memberships {
            roles.entry(member.clone()).or_default().push(role.clone());
        }
        let mut deprecation = HashMap::new();
        for (subject, mode, origin) in lines.deprecation {
            // The first line for a subject wins, as rules read top-down.
            deprecation.entry(subject).or_insert((mode, origin));
        }
        Ok(Self {
            rules: lines.rules,
            by_subject,
            roles,
            deprecation,
            memberships: lines.memberships,
            sources: sources.iter().map(|s| s.name.clone()).collect(),
            cache: DashMap::default(),
        })
    }

    /// The embedded default (see [`DEFAULT_POLICY`]).
    pub fn open() -> Self {
        Self::from_sources(&[PolicySource::new("(embedded default)", DEFAULT_POLICY)])
            .unwrap_or_else(|_| unreachable_default())
    }

    /// Whether this is the embedded allow-everything default.
    pub fn is_open_default(&self) -> bool {
        self.sources == ["(embedded default)"]
    }

    /// The files this policy was read from.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// How many rules, memberships and deprecation lines it has.
    pub fn line_count(&self) -> usize {
        self.rules.len() + self.memberships.len() + self.deprecation.len()
    }

    /// The decision for `request`, from the cache when it was asked before.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        thread_local! {
            // The key is built here for every call; kept, it costs no
            // allocation once it has grown to the longest request.
            static KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        KEY.with_borrow_mut(|key| {
            request.write_cache_key(key);
            let decision = match self.cache.get(key.as_slice()) {
                Some(decision) => decision.clone(),
                None => {
                    let decision = self.explain(request).decision;
                    if self.cache.len() >= CACHE_LIMIT {
                        self.cache.clear();
                    }
                    self.cache.insert(key.as_slice().into(), decision.clone());
                    decision
                }
            };
            // An unusually long name is not kept for the thread's life.
            if key.capacity() > KEY_KEPT_BYTES {
                *key = Vec::new();
            }
            decision
        })
    }

    /// Evaluates `request` without the cache and says which rules matched.
    pub fn explain(&self, request: &Request<'_>) -> Explanation {
        let subjects = self.subjects_of(request.subject);
        let mut allows = Vec::new();
        let mut denies = Vec::new();
        let candidates = subjects
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("*"))
            .filter_map(|subject| self.by_subject.get(subject))
            .flatten();
        for &index in candidates {
            let rule = &self.rules[index];
            let matches = (rule.domain == "*" || rule.domain == request.domain)
                && rule.action.is_none_or(|action| action == request.action)
                && rule.object.matches(request.object);
            if matches {
                if rule.allow { &mut allows } else { &mut denies }.push(rule.origin.clone());
            }
        }
        let decision = match (denies.first(), allows.first()) {
            (Some(deny), _) => Decision {
                allowed: false,
                rule: deny.clone(),
            },
            (None, Some(allow)) => Decision {
                allowed: true,
                rule: allow.clone(),
            },
            (None, None) => Decision {
                allowed: false,
                rule: format!(
                    "default deny: no rule lets {} {} {} in tenant {}",
                    request.subject, request.action, request.object, request.domain
                )
                .into(),
            },
        };
        denies.extend(allows);
        Explanation {
            decision,
            subjects,
            matched: denies,
        }
    }

    /// The rules that can apply to `subject` doing `action` in `domain`,
    /// gathered once: for deciding many objects in a row (building one
    /// agent's tool list) without the cache or any allocation per object.
    pub fn view(&self, subject: &str, domain: &str, action: crate::Action) -> View<'_> {
        let subjects = self.subjects_of(subject);
        let rules = subjects
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("*"))
            .filter_map(|s| self.by_subject.get(s))
            .flatten()
            .map(|&index| &self.rules[index])
            .filter(|rule| {
                (rule.domain == "*" || rule.domain == domain)
                    && rule.action.is_none_or(|a| a == action)
            })
            .collect();
        View { rules }
    }

    /// `subject` and every role it holds, directly or through other roles.
    pub fn subjects_of(&self, subject: &str) -> Vec<String> {
        let mut found = vec![subject.to_owned()];
        let mut seen: HashSet<String> = found.iter().cloned().collect();
        let mut index = 0;
        while let Some(current) = found.get(index).cloned() {
            for role in self.roles.get(&current).into_iter().flatten() {
                if seen.insert(role.clone()) {
                    found.push(role.clone());
                }
            }
            index += 1;
        }
        found
    }

    /// Whether any line sets how deprecated versions are treated: without
    /// one every subject gets the default, and the caller need not even
    /// name its subject.
    pub fn has_deprecation_lines(&self) -> bool {
        !self.deprecation.is_empty()
    }

    /// How deprecated versions are treated for `subject`: its own line,
    /// else its roles' (nearest first), else `*`'s, else allowed until sunset.
    pub fn deprecation_for(&self, subject: &str) -> DeprecatedMode {
        // Asked on every call: with no deprecation lines (the default
        // policy has none) there are no roles worth walking.
        if !self.has_deprecation_lines() {
            return DeprecatedMode::default();
        }
        self.subjects_of(subject)
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("*"))
            .find_map(|s| self.deprecation.get(s))
            .map_or(DeprecatedMode::default(), |(mode, _)| *mode)
    }

    /// The rules as casbin rows (`p`), for the reference enforcer.
    pub fn rule_rows(&self) -> Vec<Vec<String>> {
        self.rules.iter().map(Rule::row).collect()
    }

    /// The memberships as casbin rows (`g`).
    pub fn membership_rows(&self) -> Vec<Vec<String>> {
        self.memberships
            .iter()
            .map(|(member, role)| vec![member.clone(), role.clone()])
            .collect()
    }
}

/// One subject's applicable rules; see [`Policy::view`].
pub struct View<'a> {
    rules: Vec<&'a Rule>,
}

impl View<'_> {
    /// The same answer as [`Policy::decide`] for this subject, domain and action.
    pub fn allows(&self, object: &str) -> bool {
        let mut allowed = false;
        for rule in &self.rules {
            if rule.object.matches(object) {
                if !rule.allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }
}

/// The embedded default is checked by a test; should it ever fail to
/// parse, deny everything rather than panic.
fn unreachable_default() -> Policy {
    Policy {
        rules: Vec::new(),
        by_subject: HashMap::new(),
        roles: HashMap::new(),
        deprecation: HashMap::new(),
        memberships: Vec::new(),
        sources: vec!["(embedded default, unreadable)".into()],
        cache: DashMap::default(),
    }
}

impl Request<'_> {
    /// Writes the request's cache key into `key`. Each part is prefixed
    /// with its length, so no two requests share a key whatever characters
    /// their names hold.
    fn write_cache_key(&self, key: &mut Vec<u8>) {
        key.clear();
        key.extend_from_slice(self.action.as_str().as_bytes());
        for part in [self.domain, self.subject, self.object] {
            key.extend_from_slice(&part.len().to_le_bytes());
            key.extend_from_slice(part.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Action;

    fn policy(text: &str) -> Policy {
        Policy::from_sources(&[PolicySource::new("p.csv", text)]).unwrap()
    }

    fn request<'a>(subject: &'a str, action: Action, object: &'a str) -> Request<'a> {
        Request {
            subject,
            domain: "default",
            action,
            object,
        }
    }

    #[test]
    fn the_embedded_default_allows_everything() {
        let open = Policy::open();
        assert!(open.is_open_default());
        let decision = open.decide(&request("agent:x", Action::Admin, "audit"));
        assert!(decision.allowed);
        assert!(
            decision.rule.contains("(embedded default)"),
            "{}",
            decision.rule
        );
    }

    #[test]
    fn roles_grant_and_deny_overrides() {
        let p = policy(
            "p, role:reader, *, billing::*, list, allow\n\
             p, role:reader, *, billing::*, call, allow\n\
             p, agent:claude, *, billing::refund, call, deny\n\
             g, agent:claude, role:reader\n",
        );
        assert!(
            p.decide(&request("agent:claude", Action::Call, "billing::charge"))
                .allowed
        );
        let denied = p.decide(&request("agent:claude", Action::Call, "billing::refund"));
        assert!(!denied.allowed);
        assert_eq!(
            &*denied.rule,
            "p.csv:3: p, agent:claude, *, billing::refund, call, deny"
        );
        // Listing the refund is still allowed: the deny names call only.
        assert!(
            p.decide(&request("agent:claude", Action::List, "billing::refund"))
                .allowed
        );
        let other = p.decide(&request("agent:other", Action::Call, "billing::charge"));
        assert!(!other.allowed);
        assert!(other.rule.starts_with("default deny"), "{}", other.rule);
    }

    #[test]
    fn roles_nest_and_cycles_end() {
        let p = policy(
            "g, agent:a, role:x\ng, role:x, role:y\ng, role:y, role:x\n\
             p, role:y, *, ops::*, *, allow\n",
        );
        assert_eq!(
            p.subjects_of("agent:a"),
            vec!["agent:a", "role:x", "role:y"]
        );
        assert!(
            p.decide(&request("agent:a", Action::Register, "ops::restart"))
                .allowed
        );
    }

    #[test]
    fn domains_are_tenants() {
        let p = policy("p, agent:a, acme, *, call, allow\n");
        let mut asked = request("agent:a", Action::Call, "billing::refund");
        asked.domain = "acme";
        assert!(p.decide(&asked).allowed);
        asked.domain = "globex";
        assert!(!p.decide(&asked).allowed);
    }

    #[test]
    fn explanations_list_every_matching_rule() {
        let p = policy("p, *, *, *, list, allow\np, agent:a, *, billing::*, *, deny\n");
        let explained = p.explain(&request("agent:a", Action::List, "billing::x"));
        assert!(!explained.decision.allowed);
        assert_eq!(explained.matched.len(), 2);
        assert!(explained.matched[0].contains("deny"));
    }

    #[test]
    fn deprecation_mode_comes_from_the_nearest_line() {
        let p = policy(
            "g, agent:a, role:strict\ndeprecated, role:strict, refuse\n\
             deprecated, agent:b, hide\ndeprecated, *, allow\n",
        );
        assert_eq!(p.deprecation_for("agent:a"), DeprecatedMode::Refuse);
        assert_eq!(p.deprecation_for("agent:b"), DeprecatedMode::Hide);
        assert_eq!(p.deprecation_for("agent:c"), DeprecatedMode::Allow);
        assert_eq!(policy("").deprecation_for("agent:c"), DeprecatedMode::Allow);
    }

    /// Requests that differ in one part each, asked twice in turn: every
    /// answer from the cache equals a fresh evaluation, and each request is
    /// cached once (so the second round really came from the cache).
    #[test]
    fn cached_decisions_always_equal_a_fresh_evaluation() {
        let p = policy(
            "p, agent:a, *, billing::*, call, allow\n\
             p, agent:a, *, billing::refund, call, deny\n\
             p, role:ops, acme, billing::*, *, allow\n\
             g, agent:c, role:ops\n",
        );
        let subjects = ["agent:a", "agent:b", "agent:c"];
        let domains = ["default", "acme"];
        let objects = ["billing::refund", "billing::charge", "hr::pay"];
        let actions = [Action::Call, Action::List, Action::Register];
        let mut asked = 0;
        for round in 0..2 {
            for subject in subjects {
                for domain in domains {
                    for object in objects {
                        for action in actions {
                            let mut request = request(subject, action, object);
                            request.domain = domain;
                            let fresh = p.explain(&request).decision;
                            assert_eq!(
                                p.decide(&request),
                                fresh,
                                "round {round}: {subject} {domain} {object} {action:?}"
                            );
                            asked += usize::from(round == 0);
                        }
                    }
                }
            }
        }
        assert_eq!(p.cache.len(), asked, "each request cached exactly once");
        // The answers differ across the grid, so a cache that mixed up
        // requests could not have passed.
        assert!(
            p.decide(&request("agent:a", Action::Call, "billing::charge"))
                .allowed
        );
        assert!(
            !p.decide(&request("agent:a", Action::Call, "billing::refund"))
                .allowed
        );
    }

    /// Parts that run into each other (a separator inside a name) never
    /// share a cache entry with other parts.
    #[test]
    fn requests_whose_parts_run_together_keep_their_own_decisions() {
        let p = policy("p, agent:a, *, *, call, allow\n");
        let allowed = request("agent:a", Action::Call, "x\u{1f}y");
        let other = request("agent:a\u{1f}x", Action::Call, "y");
        assert!(p.decide(&allowed).allowed);
        assert!(!p.decide(&other).allowed);
        assert_eq!(p.decide(&other), p.explain(&other).decision);
    }

    /// The key buffer a thread keeps is let go after a long name; the
    /// decisions before and after it are still each request's own.
    #[test]
    fn a_long_name_between_short_ones_keeps_every_decision_its_own() {
        let p = policy("p, agent:a, *, billing::*, call, allow\n");
        let long = format!("billing::{}", "x".repeat(4 * KEY_KEPT_BYTES));
        let asked = [
            ("billing::charge", true),
            (long.as_str(), true),
            ("billing::charge", true),
            ("crm::read", false),
            (long.as_str(), true),
        ];
        for (object, allowed) in asked {
            let decision = p.decide(&request("agent:a", Action::Call, object));
            assert_eq!(
                decision.allowed,
                allowed,
                "{}",
                &object[..20.min(object.len())]
            );
        }
        assert_eq!(p.cache.len(), 3, "each distinct request cached once");
    }
}

//! Policy files: casbin's CSV lines, checked line by line.
//!
//! ```text
//! p, SUBJECT, DOMAIN, OBJECT, ACTION, allow|deny   # a rule
//! g, MEMBER, role:NAME                              # role membership
//! deprecated, SUBJECT, allow|hide|refuse            # capgate's deprecation policy
//! ```
//!
//! `#` starts a comment. Every error names the file, the line and what to
//! write instead; a file with any error is refused whole.

use std::sync::Arc;

use crate::pattern::ObjectPattern;
use crate::{Action, DeprecatedMode, PolicyError};

/// A policy file's name (for messages) and text.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

impl PolicySource {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// One `p` line.
#[derive(Debug, Clone)]
pub struct Rule {
    pub subject: String,
    pub domain: String,
    pub object: ObjectPattern,
    /// `None` is `*`: every action.
    pub action: Option<Action>,
    pub allow: bool,
    /// `file:line: the line`, as decisions and the audit log name it.
    pub origin: Arc<str>,
}

impl Rule {
    /// The casbin row of this rule.
    pub fn row(&self) -> Vec<String> {
        vec![
            self.subject.clone(),
            self.domain.clone(),
            self.object.to_string(),
            self.action
                .map_or_else(|| "*".to_owned(), |a| a.to_string()),
            if self.allow { "allow" } else { "deny" }.to_owned(),
        ]
    }
}

/// Everything the lines of all files say.
#[derive(Debug, Default)]
pub struct Lines {
    pub rules: Vec<Rule>,
    /// (member, role) pairs from `g` lines.
    pub memberships: Vec<(String, String)>,
    /// (subject, mode, origin) from `deprecated` lines.
    pub deprecation: Vec<(String, DeprecatedMode, Arc<str>)>,
}

/// Reads every source; the first error stops it.
pub fn parse(sources: &[PolicySource]) -> Result<Lines, PolicyError> {
    let mut lines = Lines::default();
    for source in sources {
        for (index, raw) in source.text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let at = |reason: String| PolicyError::Line {
                file: source.name.clone(),
                line: index + 1,
                reason,
            };
            let origin: Arc<str> = format!("{}:{}: {line}", source.name, index + 1).into();
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            match fields.as_slice() {
                ["p", subject, domain, object, action, effect] => {
                    lines.rules.push(Rule {
                        subject: subject_of(subject).map_err(at)?,
                        domain: domain_of(domain).map_err(at)?,
                        object: ObjectPattern::parse(object).map_err(at)?,
                        action: action_of(action).map_err(at)?,
                        allow: effect_of(effect).map_err(at)?,
                        origin,
                    });
                }
                ["p", ..] => {
                    return Err(at(format!(
                        "a rule has 6 fields, this one has {}: write p, SUBJECT, DOMAIN, OBJECT, ACTION, allow|deny",
                        fields.len()
                    )));
                }
                ["g", member, role] => {
                    let member = subject_of(member).map_err(at)?;
                    if member == "*" {
                        return Err(at("a role member must be a named subject, not *".into()));
                    }
                    if !role.starts_with("role:") {
                        return Err(at(format!(
                            "'{role}' is not a role; roles are written role:NAME (g, MEMBER, role:NAME)"
                        )));
                    }
                    let role = subject_of(role).map_err(at)?;
                    lines.memberships.push((member, role));
                }
                ["g", ..] => {
                    return Err(at(format!(
                        "a role line has 3 fields, this one has {}: write g, MEMBER, role:NAME",
                        fields.len()
                    )));
                }
                ["deprecated", subject, mode] => {
                    let subject = subject_of(subject).map_err(at)?;
                    let mode = mode.parse::<DeprecatedMode>().map_err(at)?;
                    lines.deprecation.push((subject, mode, origin));
                }
                ["deprecated", ..] => {
                    return Err(at(
                        "a deprecation line has 3 fields: write deprecated, SUBJECT, allow|hide|refuse"
                            .into(),
                    ));
                }
                [kind, ..] => {
                    return Err(at(format!(
                        "unknown line type '{kind}': lines start with p (a rule), g (a role membership) or deprecated"
                    )));
                }
                [] => {}
            }
        }
    }
    Ok(lines)
}

fn subject_of(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(text.to_owned());
    }
    let valid = ["agent:", "worker:", "role:"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .is_some_and(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != '"')
        });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "subject '{text}' must be agent:NAME, worker:NAME, role:NAME or *"
        ))
    }
}

fn domain_of(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() && c != '"') {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "domain '{text}' must be a tenant name or * for every tenant"
        ))
    }
}

fn action_of(text: &str) -> Result<Option<Action>, String> {
    match text {
        "*" => Ok(None),
        other => other.parse().map(Some),
    }
}

fn effect_of(text: &str) -> Result<bool, String> {
    match text {
        "allow" => Ok(true),
        "deny" => Ok(false),
        other => Err(format!("effect '{other}' must be allow or deny")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse(&[PolicySource::new("team.csv", text)])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_rules_roles_and_deprecation_lines() {
        let lines = parse(&[PolicySource::new(
            "team.csv",
            "# comment\n\np, role:reader, *, billing::*, list, allow # trailing\ng, agent:claude, role:reader\ndeprecated, role:reader, hide\n",
        )])
        .unwrap();
        assert_eq!(lines.rules.len(), 1);
        let rule = &lines.rules[0];
        assert_eq!(rule.subject, "role:reader");
        assert_eq!(rule.action, Some(Action::List));
        assert!(rule.allow);
        assert_eq!(
            &*rule.origin,
            "team.csv:3: p, role:reader, *, billing::*, list, allow"
        );
        assert_eq!(
            lines.memberships,
            vec![("agent:claude".to_owned(), "role:reader".to_owned())]
        );
        assert_eq!(lines.deprecation[0].1, DeprecatedMode::Hide);
    }

    #[test]
    fn every_error_names_file_line_and_fix() {
        for (text, expected) in [
            (
                "p, agent:a, *, billing::*, cal, allow",
                "team.csv:1: unknown action 'cal'",
            ),
            (
                "p, agent:a, *, billing::*, call",
                "a rule has 6 fields, this one has 5",
            ),
            (
                "p, agent:a, *, billing::*, call, permit",
                "effect 'permit' must be allow or deny",
            ),
            (
                "p, claude, *, billing::*, call, allow",
                "subject 'claude' must be agent:NAME",
            ),
            ("p, agent:a, *, Billing, call, allow", "segment 'Billing'"),
            (
                "\n\ng, agent:a, reader",
                "team.csv:3: 'reader' is not a role",
            ),
            ("g, *, role:x", "a role member must be a named subject"),
            ("deprecated, agent:a, maybe", "mode 'maybe'"),
            ("x, y", "unknown line type 'x'"),
            ("p, agent:a, , billing, call, allow", "domain '' must be"),
        ] {
            let error = error_of(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}

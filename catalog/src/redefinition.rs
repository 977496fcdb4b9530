//! Whether a published version's definition may change.
//!
//! A version is pinned by its definition hash: an agent that trusted
//! `billing::refund@1.2.0` must never see its description or schema change
//! under the same name (tool poisoning, "rug pull"). Only versions that
//! promise no stability — 0.x and pre-releases — may be redefined, and only
//! where the operator allows it.

use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde_json::Value;

use crate::definition::CapabilityDefinition;

/// The operator's rule for redefining an existing `id@version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redefinition {
    /// No version may change once defined.
    Never,
    /// 0.x and pre-release versions may change (recorded and announced);
    /// 1.0.0 and later never. The embedded default, for development.
    #[default]
    Unstable,
}

impl Redefinition {
    pub fn allows(self, version: &Version) -> bool {
        match self {
            Self::Never => false,
            Self::Unstable => version.major == 0 || !version.pre.is_empty(),
        }
    }
}

impl FromStr for Redefinition {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "never" => Ok(Self::Never),
            "unstable" => Ok(Self::Unstable),
            other => Err(format!(
                "'{other}' is not a redefinition rule: use \"never\" or \"unstable\" (0.x and pre-release versions only)"
            )),
        }
    }
}

impl fmt::Display for Redefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Never => "never",
            Self::Unstable => "unstable",
        })
    }
}

/// The agent-visible fields in which two definitions of one version differ.
pub fn differing_fields(
    old: &CapabilityDefinition,
    new: &CapabilityDefinition,
) -> Vec<&'static str> {
    let json = |d: &CapabilityDefinition| serde_json::to_value(d).unwrap_or(Value::Null);
    let (old, new) = (json(old), json(new));
    [
        "title",
        "description",
        "input_schema",
        "output_schema",
        "annotations",
        "owner",
        "permissions",
        "tags",
        "timeout_ms",
    ]
    .into_iter()
    .filter(|field| old.get(field) != new.get(field))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Draft;
    use serde_json::json;

    #[test]
    fn only_unstable_versions_may_change_and_only_when_allowed() {
        let v = |text: &str| Version::parse(text).unwrap();
        assert!(Redefinition::Unstable.allows(&v("0.3.1")));
        assert!(Redefinition::Unstable.allows(&v("2.0.0-beta.1")));
        assert!(!Redefinition::Unstable.allows(&v("1.0.0")));
        assert!(!Redefinition::Never.allows(&v("0.0.0")));
        assert_eq!("never".parse::<Redefinition>(), Ok(Redefinition::Never));
        assert!(
            "sometimes"
                .parse::<Redefinition>()
                .unwrap_err()
                .contains("\"never\"")
        );
    }

    #[test]
    fn names_the_fields_that_differ() {
        let define = |description: &str, schema: Value| {
            Draft {
                id: "a::b".into(),
                description: Some(description.into()),
                input_schema: Some(schema),
                ..Default::default()
            }
            .build()
            .unwrap()
            .into_definition()
        };
        let old = define("x", json!({"type": "object"}));
        let new = define("y", json!({"type": "object", "required": ["a"]}));
        assert_eq!(
            differing_fields(&old, &new),
            vec!["description", "input_schema"]
        );
        assert!(differing_fields(&old, &old).is_empty());
    }
}

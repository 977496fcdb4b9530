//! Object patterns: function ids with `*` for one segment.
//!
//! `billing::*` matches `billing::refund` and, because a trailing `*`
//! stands for one or more segments, `billing::refunds::v2`; `*::refund`
//! matches `billing::refund` only; `*` alone matches every object.
//! Matching is done segment by segment on the `::`-separated id: no regex,
//! no glob compiled per call.

use std::fmt;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
}

/// A checked object pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPattern {
    text: String,
    segments: Vec<Segment>,
}

impl ObjectPattern {
    /// Parses a pattern; the error says which segment is wrong and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the object is empty; name a function id, a pattern such as billing::* or * for everything".into());
        }
        let segments = text
            .split("::")
            .map(|segment| match segment {
                "*" => Ok(Segment::Any),
                literal if valid_segment(literal) => Ok(Segment::Literal(literal.to_owned())),
                other => Err(format!(
                    "segment '{other}' of object '{text}' is neither * nor a name of lower-case letters, digits and '_' starting with a letter"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `object` (a function id or admin object) matches.
    pub fn matches(&self, object: &str) -> bool {
        if let [Segment::Any] = self.segments.as_slice() {
            return true;
        }
        let mut parts = object.split("::");
        let last = self.segments.len() - 1;
        for (index, segment) in self.segments.iter().enumerate() {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Literal(literal) if literal != part => return false,
                Segment::Any if index == last => return !part.is_empty(),
                _ => {}
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for ObjectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The segment grammar of function ids (`[a-z][a-z0-9_]*`).
pub(crate) fn valid_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, object: &str) -> bool {
        ObjectPattern::parse(pattern).unwrap().matches(object)
    }

    #[test]
    fn star_is_one_segment_and_trailing_star_the_rest() {
        assert!(matches("*", "billing::refund"));
        assert!(matches("*", "audit"));
        assert!(matches("billing::*", "billing::refund"));
        assert!(matches("billing::*", "billing::refunds::v2"));
        assert!(!matches("billing::*", "billing"));
        assert!(!matches("billing::*", "billingx::refund"));
        assert!(matches("*::refund", "billing::refund"));
        assert!(!matches("*::refund", "acme::billing::refund"));
        assert!(matches("acme::*::refund", "acme::billing::refund"));
        assert!(!matches("acme::*::refund", "acme::billing::charge"));
        assert!(matches("billing::refund", "billing::refund"));
        assert!(!matches("billing::refund", "billing::refund::x"));
        assert!(!matches("billing::refund", "billing"));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (text, expected) in [
            ("", "empty"),
            ("Billing::*", "segment 'Billing'"),
            ("billing::re*", "segment 're*'"),
            ("billing::", "segment ''"),
            ("a.b", "segment 'a.b'"),
        ] {
            let error = ObjectPattern::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}

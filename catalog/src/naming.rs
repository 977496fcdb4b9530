//! Function ids and MCP tool names.
//!
//! An id is segments joined by `::`; each segment is `[a-z][a-z0-9_]*` and
//! never contains `__`, so the tool name (segments joined by `__`) maps back
//! to exactly one id. Tool names are at most 64 characters, the limit of the
//! model APIs agents use.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest MCP tool name (Anthropic's and OpenAI's tool-name limit).
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// Namespaces only the gateway provides functions in: `engine::` and
/// `iii::` (the iii built-ins), `capgate::` (capgate's own), `state::` (the
/// state store) and `publish` (iii's pub/sub built-in).
pub const RESERVED_NAMESPACES: &[&str] = &["engine", "iii", "capgate", "state", "publish"];

/// The reserved namespace `id` falls in, if any.
pub fn reserved_namespace(id: &str) -> Option<&'static str> {
    let first = id.split("::").next()?;
    RESERVED_NAMESPACES.iter().copied().find(|ns| *ns == first)
}

/// A validated function id such as `billing::refund`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FunctionId(Arc<str>);

/// Why a string is not a function id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("function id is empty: use segments joined by '::', such as 'billing::refund'")]
    Empty,
    #[error(
        "function id '{id}': segment '{segment}' is invalid: each segment must match [a-z][a-z0-9_]* (lower-case letter first, then lower-case letters, digits or '_')"
    )]
    BadSegment { id: String, segment: String },
    #[error(
        "function id '{id}': segment '{segment}' contains '__', which is reserved as the separator of MCP tool names"
    )]
    DoubleUnderscore { id: String, segment: String },
    #[error(
        "function id '{id}' gives the tool name '{tool}' of {len} characters; tool names are limited to {MAX_TOOL_NAME_LEN}: shorten the id"
    )]
    TooLong {
        id: String,
        tool: String,
        len: usize,
    },
}

impl FunctionId {
    /// Checks `id` against the naming grammar.
    pub fn parse(id: &str) -> Result<Self, NamingError> {
        // Every MCP call names its function: one pass over the bytes for
        // the ids that are fine, the checks below (and their errors) for
        // the rest.
        if is_plain_id(id) {
            return Ok(Self(Arc::from(id)));
        }
        Self::parse_checked(id)
    }

    fn parse_checked(id: &str) -> Result<Self, NamingError> {
        if id.is_empty() {
            return Err(NamingError::Empty);
        }
        for segment in id.split("::") {
            if !is_valid_segment(segment) {
                return Err(NamingError::BadSegment {
                    id: id.to_owned(),
                    segment: segment.to_owned(),
                });
            }
            if segment.contains("__") {
                return Err(NamingError::DoubleUnderscore {
                    id: id.to_owned(),
                    segment: segment.to_owned(),
                });
            }
        }
        // `::` and `__` have the same length, so the tool name is as long as the id.
        let tool_len = id.len();
        if tool_len > MAX_TOOL_NAME_LEN {
            return Err(NamingError::TooLong {
                id: id.to_owned(),
                tool: id.replace("::", "__"),
                len: tool_len,
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as shared text: a label or a key that outlives the call
    /// takes a count on it instead of a copy.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }

    /// The MCP tool name: segments joined by `__`.
    pub fn tool_name(&self) -> String {
        self.0.replace("::", "__")
    }

    /// The id a tool name stands for, if the name is one capgate could have made.
    pub fn from_tool_name(tool: &str) -> Result<Self, NamingError> {
        // As `tool.replace("__", "::")`, without a searcher set up per call.
        let mut id = String::with_capacity(tool.len());
        let mut rest = tool;
        while let Some(at) = rest.find('_') {
            id.push_str(&rest[..at]);
            if rest[at..].starts_with("__") {
                id.push_str("::");
                rest = &rest[at + 2..];
            } else {
                id.push('_');
                rest = &rest[at + 1..];
            }
        }
        id.push_str(rest);
        Self::parse(&id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment (`billing` of `billing::refund`).
    pub fn namespace(&self) -> &str {
        self.0.split("::").next().unwrap_or_default()
    }
}

/// Whether `id` is segments of `[a-z][a-z0-9_]*` without `__`, joined by
/// `::`, within the tool name length: exactly the ids `parse` accepts.
fn is_plain_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TOOL_NAME_LEN {
        return false;
    }
    let (mut at_start, mut previous, mut at) = (true, 0u8, 0);
    while let Some(&byte) = bytes.get(at) {
        if at_start {
            if !byte.is_ascii_lowercase() {
                return false;
            }
            at_start = false;
        } else if byte == b':' {
            if bytes.get(at + 1) != Some(&b':') {
                return false;
            }
            (at_start, previous, at) = (true, 0, at + 2);
            continue;
        } else if !(byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
            || (byte == b'_' && previous == b'_')
        {
            return false;
        }
        previous = byte;
        at += 1;
    }
    !at_start
}

fn is_valid_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

// Hash and Eq of `Arc<str>` are those of `str`, so lookups by `&str` agree.
impl std::borrow::Borrow<str> for FunctionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl<'de> Deserialize<'de> for FunctionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to six characters over the characters that
    /// matter (a letter, a digit, `_`, `:`, a capital): the one-pass check
    /// accepts exactly what the full checks accept, and a tool name reads
    /// back as `replace("__", "::")` would read it.
    #[test]
    fn the_one_pass_check_agrees_with_the_full_checks() {
        let alphabet = ['a', '1', '_', ':', 'B'];
        let mut ids = vec![String::new()];
        let mut checked = 0;
        for _ in 0..6 {
            let mut longer = Vec::new();
            for id in &ids {
                for c in alphabet {
                    let id = format!("{id}{c}");
                    let full = FunctionId::parse_checked(&id);
                    assert_eq!(is_plain_id(&id), full.is_ok(), "{id:?}");
                    assert_eq!(FunctionId::parse(&id), full, "{id:?}");
                    assert_eq!(
                        FunctionId::from_tool_name(&id),
                        FunctionId::parse_checked(&id.replace("__", "::")),
                        "{id:?}"
                    );
                    checked += 1;
                    longer.push(id);
                }
            }
            ids = longer;
        }
        assert!(checked > 19_000);
        let long = format!("a::{}", "b".repeat(MAX_TOOL_NAME_LEN - 3));
        assert!(is_plain_id(&long));
        assert!(!is_plain_id(&format!("{long}c")));
        assert!(FunctionId::parse(&format!("{long}c")).is_err());
    }

    #[test]
    fn tool_names_round_trip() {
        for id in [
            "hello::greet",
            "acme::billing::refund",
            "test_simple_text",
            "a1::b_2",
        ] {
            let parsed = FunctionId::parse(id).unwrap();
            let tool = parsed.tool_name();
            assert!(!tool.contains("::"));
            assert_eq!(FunctionId::from_tool_name(&tool).unwrap(), parsed);
        }
        assert_eq!(
            FunctionId::parse("acme::billing::refund")
                .unwrap()
                .tool_name(),
            "acme__billing__refund"
        );
    }

    #[test]
    fn refuses_what_breaks_the_grammar() {
        for bad in [
            "",
            "Hello::greet",
            "hello::",
            "::greet",
            "hello:greet",
            "hello::gr-eet",
            "1a::b",
            "a__b::c",
            "hello::gréet",
            "hello greet",
            "a:::b",
        ] {
            assert!(FunctionId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let error = FunctionId::parse("a__b::c").unwrap_err();
        assert!(
            matches!(error, NamingError::DoubleUnderscore { .. }),
            "{error}"
        );
    }

    #[test]
    fn limits_tool_names_to_64_characters() {
        let ok = format!("a::{}", "b".repeat(61));
        assert_eq!(FunctionId::parse(&ok).unwrap().tool_name().len(), 64);
        let long = format!("a::{}", "b".repeat(62));
        let error = FunctionId::parse(&long).unwrap_err();
        assert!(error.to_string().contains("65 characters"), "{error}");
    }

    #[test]
    fn tool_names_that_capgate_cannot_have_made_are_refused() {
        assert!(FunctionId::from_tool_name("a___b").is_err());
        assert!(FunctionId::from_tool_name("A__b").is_err());
    }
}

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
        Self::parse(&tool.replace("__", "::"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment (`billing` of `billing::refund`).
    pub fn namespace(&self) -> &str {
        self.0.split("::").next().unwrap_or_default()
    }
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

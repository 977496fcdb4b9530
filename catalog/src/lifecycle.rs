//! Deprecation and sunset: how a version leaves.
//!
//! Deprecation is lifecycle, not definition: the operator sets it on a
//! published version without changing its definition hash (otherwise the
//! version's own workers could no longer register it). A deprecated version
//! stays callable until its sunset date; from that date on it is skipped by
//! resolution and calls to it are refused with its replacement named.

use chrono::NaiveDate;
use semver::VersionReq;
use serde::{Deserialize, Serialize};

use crate::naming::FunctionId;

/// A version on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Dates are `YYYY-MM-DD`, in UTC.
pub const DATE_FORMAT: &str = "%Y-%m-%d";

/// Today's date in UTC.
pub fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Why a deprecation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeprecateError {
    #[error(
        "no version {version} of {id} in the catalog; `capgate functions show {id}` lists its versions"
    )]
    UnknownVersion { id: String, version: String },
    #[error("{field} '{value}' is not a date: use YYYY-MM-DD, such as 2027-01-31")]
    BadDate { field: &'static str, value: String },
    #[error("sunset {sunset} is not in the future (today is {today}): pick a later date")]
    SunsetNotInFuture { sunset: NaiveDate, today: NaiveDate },
    #[error(
        "replacement '{text}' is invalid: {reason}; write ID or ID@REQUIREMENT, such as billing::refund@^2"
    )]
    BadReplacement { text: String, reason: String },
    #[error("replacement {replacement} matches no version in the catalog: register it first")]
    ReplacementMissing { replacement: String },
    #[error("a version cannot be its own replacement ({replacement})")]
    SelfReplacement { replacement: String },
}

/// A replacement such as `billing::refund@^2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub id: FunctionId,
    pub requirement: VersionReq,
}

impl Replacement {
    pub fn parse(text: &str) -> Result<Self, DeprecateError> {
        let bad = |reason: String| DeprecateError::BadReplacement {
            text: text.to_owned(),
            reason,
        };
        let (id, requirement) = match text.split_once('@') {
            Some((id, requirement)) => (
                id,
                VersionReq::parse(requirement).map_err(|e| bad(e.to_string()))?,
            ),
            None => (text, VersionReq::STAR),
        };
        let id = FunctionId::parse(id).map_err(|e| bad(e.to_string()))?;
        Ok(Self { id, requirement })
    }
}

/// Parses a `YYYY-MM-DD` field.
pub fn parse_date(field: &'static str, value: &str) -> Result<NaiveDate, DeprecateError> {
    NaiveDate::parse_from_str(value, DATE_FORMAT).map_err(|_| DeprecateError::BadDate {
        field,
        value: value.to_owned(),
    })
}

/// Whether a deprecation's sunset has come (on or before `today`). A sunset
/// that does not parse (written by hand into the store) never comes.
pub fn is_sunset(deprecation: &Deprecation, today: NaiveDate) -> bool {
    deprecation
        .sunset
        .as_deref()
        .and_then(|s| NaiveDate::parse_from_str(s, DATE_FORMAT).ok())
        .is_some_and(|sunset| sunset <= today)
}

/// The notice agents see on a deprecated version: in the tool description
/// and as a warning on every result.
pub fn notice(deprecation: &Deprecation) -> String {
    let mut text = String::from("DEPRECATED");
    if let Some(since) = &deprecation.since {
        text.push_str(&format!(" since {since}"));
    }
    if let Some(sunset) = &deprecation.sunset {
        text.push_str(&format!("; calls are refused from {sunset}"));
    }
    if let Some(replacement) = &deprecation.replacement {
        text.push_str(&format!("; use {replacement} instead"));
    }
    if let Some(reason) = &deprecation.reason {
        text.push_str(&format!(" ({reason})"));
    }
    text.push('.');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_and_dates() {
        let r = Replacement::parse("billing::refund@^2").unwrap();
        assert_eq!(
            (r.id.as_str(), r.requirement.to_string()),
            ("billing::refund", "^2".into())
        );
        assert_eq!(
            Replacement::parse("billing::refund").unwrap().requirement,
            VersionReq::STAR
        );
        assert!(Replacement::parse("Billing@^2").is_err());
        assert!(
            Replacement::parse("billing::refund@two")
                .unwrap_err()
                .to_string()
                .contains("ID@REQUIREMENT")
        );
        assert!(parse_date("sunset", "2027-02-30").is_err());
        assert!(parse_date("sunset", "2027-02-28").is_ok());
    }

    #[test]
    fn sunset_comes_on_its_date() {
        let deprecation = Deprecation {
            sunset: Some("2027-01-31".into()),
            ..Default::default()
        };
        let day = |s: &str| NaiveDate::parse_from_str(s, DATE_FORMAT).unwrap();
        assert!(!is_sunset(&deprecation, day("2027-01-30")));
        assert!(is_sunset(&deprecation, day("2027-01-31")));
        assert!(!is_sunset(&Deprecation::default(), day("2999-01-01")));
        let text = notice(&Deprecation {
            since: Some("2026-11-24".into()),
            sunset: Some("2027-01-31".into()),
            replacement: Some("billing::refund@^2".into()),
            reason: Some("v2 supports partial refunds".into()),
        });
        assert_eq!(
            text,
            "DEPRECATED since 2026-11-24; calls are refused from 2027-01-31; use billing::refund@^2 instead (v2 supports partial refunds)."
        );
    }
}

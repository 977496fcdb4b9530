//! What is handed to the writer: an entry as recorded, before it is
//! escaped and written.
//!
//! Every allowed call makes one, on the call path, so it is kept cheap:
//! a call's outcome is a few fields ([`CallDetail`]) rather than a JSON
//! map built and dropped per call, the strings most entries share are
//! borrowed statics, and escaping happens on the writer — once per
//! distinct string of a pack, not once per entry.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{AuditEntry, kept_printable, printable};
use crate::invocation::TriggerSource;

/// A new entry before the log numbers it.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: &'static str,
    /// Borrowed for the subjects without a name of their own (anonymous
    /// workers, the gateway): no copy per call for them.
    pub subject: Cow<'static, str>,
    pub tenant: Cow<'static, str>,
    pub action: Cow<'static, str>,
    /// Shared with the catalog for a call that resolved: a count, not a
    /// copy of the function id per call.
    pub object: Arc<str>,
    pub allowed: bool,
    pub rule: Arc<str>,
    pub detail: Detail,
}

/// Outcome and context of an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// A call's outcome.
    Call(CallDetail),
    /// Anything else, as JSON.
    Json(Value),
}

/// A call's outcome, read back as
/// `{"outcome", "micros", "version"?, "trigger"?: {"type", "id"}, "input"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallDetail {
    /// `ok`, or the error code.
    pub outcome: Cow<'static, str>,
    pub micros: u64,
    /// The version that ran, when the call resolved to one.
    pub version: Option<semver::Version>,
    /// The trigger that started the call, if one did.
    pub trigger: Option<TriggerSource>,
    /// The input, when the gateway is configured to record payloads.
    pub input: Option<Value>,
}

impl Detail {
    /// The detail as it reads back.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Json(value) => value.clone(),
            Self::Call(call) => call.to_value(),
        }
    }
}

impl CallDetail {
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("outcome".into(), Value::from(&*self.outcome));
        map.insert("micros".into(), Value::from(self.micros));
        if let Some(version) = &self.version {
            map.insert("version".into(), Value::from(version.to_string()));
        }
        if let Some(trigger) = &self.trigger {
            map.insert(
                "trigger".into(),
                serde_json::json!({"type": &*trigger.trigger_type, "id": &*trigger.trigger_id}),
            );
        }
        if let Some(input) = &self.input {
            map.insert("input".into(), input.clone());
        }
        Value::Object(map)
    }
}

impl From<Value> for Detail {
    fn from(value: Value) -> Self {
        Self::Json(value)
    }
}

impl From<CallDetail> for Detail {
    fn from(call: CallDetail) -> Self {
        Self::Call(call)
    }
}

/// A record with its place and time, waiting for the writer.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub seq: i64,
    pub at_ms: i64,
    pub record: Record,
}

impl Pending {
    /// Whether this entry goes in a pack: allowed calls, the one kind
    /// written at the call rate.
    pub fn is_packed(&self) -> bool {
        self.record.allowed && self.record.kind == "call"
    }

    /// The entry as stored and read back: escaped, its detail as JSON.
    pub fn to_entry(&self) -> AuditEntry {
        let record = &self.record;
        AuditEntry {
            seq: self.seq,
            at_ms: self.at_ms,
            kind: record.kind.to_owned(),
            // Refused input (a malformed function id, say) is recorded as
            // given, but never in a form that acts on a terminal.
            subject: kept_printable(record.subject.to_string()),
            tenant: kept_printable(record.tenant.to_string()),
            action: kept_printable(record.action.to_string()),
            object: kept_printable(record.object.to_string()),
            allowed: record.allowed,
            rule: printable(&record.rule, true).into_owned(),
            detail: record.detail.to_value(),
        }
    }
}

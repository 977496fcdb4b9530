//! Committed state changes, delivered to subscribers in commit order
//! through a [`crate::triggers::fanout::Fanout`] (a bounded queue per
//! subscription; a slow one loses changes, counted).

use serde_json::{Value, json};

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Created,
    Updated,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "state:created",
            Self::Updated => "state:updated",
            Self::Deleted => "state:deleted",
        }
    }
}

/// One committed change.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEvent {
    pub event_type: EventType,
    pub scope: String,
    pub key: String,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
}

impl StateEvent {
    /// iii's input to a `state` trigger's function.
    pub fn to_input(&self) -> Value {
        json!({
            "type": "state",
            "event_type": self.event_type.as_str(),
            "scope": self.scope,
            "key": self.key,
            "old_value": self.old_value,
            "new_value": self.new_value,
        })
    }
}

/// Which changes a subscription wants: a scope, and a key exactly or by a
/// prefix ending in `*`; `None` is any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateFilter {
    pub scope: Option<String>,
    pub key: Option<String>,
}

impl StateFilter {
    pub fn matches(&self, event: &StateEvent) -> bool {
        let scope = self.scope.as_deref().is_none_or(|s| s == event.scope);
        let key = match self.key.as_deref() {
            None => true,
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => event.key.starts_with(prefix),
                None => pattern == event.key,
            },
        };
        scope && key
    }
}

/// Every subscription to committed changes.
pub type StateEvents = crate::triggers::fanout::Fanout<StateEvent>;

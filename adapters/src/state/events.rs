//! Committed state changes, delivered to subscribers in commit order.
//!
//! Each subscription has a bounded queue of its own; a change that finds
//! it full is dropped for that subscription and counted, so a slow
//! subscriber never holds up a writer or another subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Changes one subscription may have waiting.
pub const SUBSCRIPTION_QUEUE: usize = 1_024;

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

struct Subscriber {
    filter: StateFilter,
    queue: mpsc::Sender<Arc<StateEvent>>,
    dropped: Arc<AtomicU64>,
}

/// Every subscription.
#[derive(Default)]
pub struct StateEvents {
    next: AtomicU64,
    subscribers: Mutex<HashMap<u64, Subscriber>>,
}

/// A subscription: its changes, and how many it lost; ends when dropped.
pub struct Subscription {
    pub changes: mpsc::Receiver<Arc<StateEvent>>,
    pub dropped: Arc<AtomicU64>,
    id: u64,
    events: Arc<StateEvents>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.events.lock().remove(&self.id);
    }
}

impl StateEvents {
    /// Subscribes to the changes `filter` wants; those lost to a full
    /// queue are counted in `dropped`.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: StateFilter,
        dropped: Arc<AtomicU64>,
    ) -> Subscription {
        let (queue, changes) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Subscriber {
                filter,
                queue,
                dropped: dropped.clone(),
            },
        );
        Subscription {
            changes,
            dropped,
            id,
            events: self.clone(),
        }
    }

    /// Hands a committed change to every subscription that wants it.
    pub fn publish(&self, event: StateEvent) {
        let subscribers = self.lock();
        if subscribers.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for subscriber in subscribers.values() {
            if subscriber.filter.matches(&event)
                && subscriber.queue.try_send(event.clone()).is_err()
            {
                subscriber.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Subscriber>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

//! State: a persisted key-value store in the capgate store, by scope and
//! key, with iii's operations — and the `state` trigger, which calls a
//! function on every committed change.
//!
//! Every write goes through one writer task that commits in batches (one
//! transaction for all writes waiting) and answers each only after its
//! batch is committed; an update reads and writes its value inside that
//! transaction, so concurrent updates lose nothing. Changes are published
//! to subscribers after the commit, in commit order, each subscriber with a
//! bounded queue of its own: a slow one loses events (counted), never
//! slows a writer. Who may read or write which scope is the gateway's to
//! decide (policy objects `state::SCOPE`); this module does not know
//! callers.

pub mod events;
pub mod ops;
pub mod trigger;

use std::sync::Arc;

use capgate_catalog::store::{StateBatch, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use events::{EventType, StateEvent, StateEvents};
use ops::UpdateOp;

/// Limits of the state store; each refusal names its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Largest value, as JSON text.
    pub max_value_bytes: usize,
    /// Most values in the store.
    pub max_keys: u64,
    /// Most entries `list` and `list_groups` answer with.
    pub max_list: usize,
    /// Writes waiting for the writer.
    pub max_queued_writes: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 1024 * 1024,
            max_keys: 1_000_000,
            max_list: 10_000,
            max_queued_writes: 4_096,
        }
    }
}

/// Longest scope name and key.
pub const MAX_SCOPE_CHARS: usize = 128;
pub const MAX_KEY_BYTES: usize = 512;

/// Writes gathered into one transaction.
const MAX_BATCH: usize = 256;

/// Why a state operation failed. Each says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the value is {size} bytes as JSON, over the {limit} byte limit of a state value; store less (or split it over keys)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the state store holds its limit of {limit} values; delete some before adding new keys"
    )]
    Full { limit: u64 },
    #[error(
        "scope '{scope}' has more than {limit} keys, more than one answer may hold; read keys one by one with state::get"
    )]
    TooManyToList { scope: String, limit: usize },
    #[error("{limit} state writes are already waiting to be written; retry shortly")]
    Busy { limit: usize },
    #[error("state could not be stored: {0}; nothing of this write was kept, retry it")]
    Store(String),
}

impl From<StoreError> for StateError {
    fn from(error: StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

/// A scope name: 1–128 of letters, digits, `_`, `-` and `.` (so that it
/// is one segment of a policy object `state::SCOPE`).
pub fn check_scope(scope: &str) -> Result<(), StateError> {
    let fine = !scope.is_empty()
        && scope.chars().count() <= MAX_SCOPE_CHARS
        && scope
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if fine {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "scope {scope:?} is not a scope name; use 1 to {MAX_SCOPE_CHARS} letters, digits, '_', '-' or '.'"
        )))
    }
}

/// A key: 1–512 bytes of text without control characters.
pub fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(StateError::Invalid(format!(
            "key {:?} is not a state key; use 1 to {MAX_KEY_BYTES} bytes of text without control characters",
            key.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// A change asked of the writer.
#[derive(Debug)]
pub enum Change {
    Set(Value),
    Delete,
    Update(Vec<UpdateOp>),
}

/// What a write changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
}

impl Written {
    /// iii's answer to `state::set` and `state::update`.
    pub fn to_json(&self) -> Value {
        json!({ "old_value": self.old_value, "new_value": self.new_value })
    }
}

struct WriteRequest {
    scope: String,
    key: String,
    change: Change,
    reply: oneshot::Sender<Result<Written, StateError>>,
}

/// The state store.
pub struct StateStore {
    store: Store,
    writes: mpsc::Sender<WriteRequest>,
    events: Arc<StateEvents>,
    limits: StateLimits,
}

impl StateStore {
    /// Opens the state kept in `store` and starts its writer.
    pub async fn open(store: Store, limits: StateLimits) -> Result<Arc<Self>, StateError> {
        let count = u64::try_from(store.state_count().await?).unwrap_or(0);
        let (writes, queue) = mpsc::channel(limits.max_queued_writes.max(1));
        let events = Arc::new(StateEvents::default());
        tokio::spawn(
            Writer {
                store: store.clone(),
                events: events.clone(),
                limits,
                count,
            }
            .run(queue),
        );
        Ok(Arc::new(Self {
            store,
            writes,
            events,
            limits,
        }))
    }

    /// Subscriptions to committed changes.
    pub fn events(&self) -> &Arc<StateEvents> {
        &self.events
    }

    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    pub async fn get(&self, scope: &str, key: &str) -> Result<Option<Value>, StateError> {
        check_scope(scope)?;
        check_key(key)?;
        self.store
            .state_get(scope, key)
            .await?
            .map(|text| parse_stored(&text))
            .transpose()
    }

    /// The scope's values by key, as `[{key, value}]`.
    pub async fn list(&self, scope: &str) -> Result<Vec<Value>, StateError> {
        check_scope(scope)?;
        let limit = self.limits.max_list;
        let entries = self.store.state_list(scope, limit + 1).await?;
        if entries.len() > limit {
            return Err(StateError::TooManyToList {
                scope: scope.to_owned(),
                limit,
            });
        }
        entries
            .into_iter()
            .map(|entry| Ok(json!({"key": entry.key, "value": parse_stored(&entry.value)?})))
            .collect()
    }

    /// The scopes holding values, with how many each holds.
    pub async fn scopes(&self) -> Result<Vec<(String, i64)>, StateError> {
        Ok(self.store.state_scopes(self.limits.max_list).await?)
    }

    /// Writes one change; answered once it is committed.
    pub async fn write(
        &self,
        scope: &str,
        key: &str,
        change: Change,
    ) -> Result<Written, StateError> {
        check_scope(scope)?;
        check_key(key)?;
        if let Change::Set(value) = &change {
            check_size(value, self.limits.max_value_bytes)?;
        }
        let (reply, answer) = oneshot::channel();
        self.writes
            .try_send(WriteRequest {
                scope: scope.to_owned(),
                key: key.to_owned(),
                change,
                reply,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => StateError::Busy {
                    limit: self.limits.max_queued_writes,
                },
                mpsc::error::TrySendError::Closed(_) => {
                    StateError::Store("the state writer has stopped".into())
                }
            })?;
        answer
            .await
            .unwrap_or_else(|_| Err(StateError::Store("the state writer has stopped".into())))
    }
}

fn parse_stored(text: &str) -> Result<Value, StateError> {
    serde_json::from_str(text)
        .map_err(|error| StateError::Store(format!("a stored value is not JSON ({error})")))
}

fn check_size(value: &Value, limit: usize) -> Result<usize, StateError> {
    let size = serde_json::to_string(value)
        .map(|t| t.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(StateError::TooLarge { size, limit });
    }
    Ok(size)
}

/// The one task that writes state.
struct Writer {
    store: Store,
    events: Arc<StateEvents>,
    limits: StateLimits,
    /// Values in the store, as this gateway counts them.
    count: u64,
}

/// A write applied inside a batch, waiting for the commit.
struct Applied {
    reply: oneshot::Sender<Result<Written, StateError>>,
    outcome: Result<(Written, Option<StateEvent>), StateError>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut waiting = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut waiting, MAX_BATCH).await > 0 {
            let requests = std::mem::take(&mut waiting);
            self.write_batch(requests).await;
        }
    }

    async fn write_batch(&mut self, requests: Vec<WriteRequest>) {
        let counted = self.count;
        let applied = match self.store.state_batch().await {
            Ok(mut batch) => {
                let mut applied = Vec::with_capacity(requests.len());
                let mut failed = None;
                for request in requests {
                    let outcome = match &failed {
                        Some(error) => Err(StateError::clone(error)),
                        None => self.apply(&mut batch, &request).await,
                    };
                    if let Err(StateError::Store(_)) = &outcome {
                        failed = outcome.as_ref().err().cloned();
                    }
                    applied.push(Applied {
                        reply: request.reply,
                        outcome,
                    });
                }
                let committed = match failed {
                    Some(error) => Err(error),
                    None => batch.commit().await.map_err(StateError::from),
                };
                match committed {
                    Ok(()) => applied,
                    Err(error) => {
                        self.count = counted;
                        tracing::error!(%error, "state writes failed; none of the batch was kept");
                        fail_all(applied, &error);
                        return;
                    }
                }
            }
            Err(error) => {
                let error = StateError::from(error);
                tracing::error!(%error, "state writes failed; none of the batch was kept");
                for request in requests {
                    let _ = request.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        for Applied { reply, outcome } in applied {
            let outcome = outcome.map(|(written, event)| {
                if let Some(event) = event {
                    self.events.publish(event);
                }
                written
            });
            let _ = reply.send(outcome);
        }
    }

    async fn apply(
        &mut self,
        batch: &mut StateBatch,
        request: &WriteRequest,
    ) -> Result<(Written, Option<StateEvent>), StateError> {
        let (scope, key) = (request.scope.as_str(), request.key.as_str());
        let old = batch
            .get(scope, key)
            .await?
            .map(|text| parse_stored(&text))
            .transpose()?;
        let new = match &request.change {
            Change::Set(value) => Some(value.clone()),
            Change::Delete => None,
            Change::Update(ops) => {
                let updated = ops::apply(old.clone().unwrap_or(Value::Null), ops)
                    .map_err(StateError::Invalid)?;
                check_size(&updated, self.limits.max_value_bytes)?;
                Some(updated)
            }
        };
        match &new {
            Some(value) => {
                if old.is_none() {
                    if self.count >= self.limits.max_keys {
                        return Err(StateError::Full {
                            limit: self.limits.max_keys,
                        });
                    }
                    self.count += 1;
                }
                let text = serde_json::to_string(value)
                    .map_err(|error| StateError::Invalid(error.to_string()))?;
                batch.put(scope, key, &text).await?;
            }
            None if old.is_some() => {
                batch.delete(scope, key).await?;
                self.count = self.count.saturating_sub(1);
            }
            None => {}
        }
        let event_type = match (&old, &new) {
            (None, Some(_)) => Some(EventType::Created),
            (Some(_), Some(_)) => Some(EventType::Updated),
            (Some(_), None) => Some(EventType::Deleted),
            (None, None) => None,
        };
        let written = Written {
            old_value: old,
            new_value: new,
        };
        let event = event_type.map(|event_type| StateEvent {
            event_type,
            scope: scope.to_owned(),
            key: key.to_owned(),
            old_value: written.old_value.clone(),
            new_value: written.new_value.clone(),
        });
        Ok((written, event))
    }
}

fn fail_all(applied: Vec<Applied>, error: &StateError) {
    for Applied { reply, .. } in applied {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests;

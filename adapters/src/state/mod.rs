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

use std::collections::HashMap;

use capgate_catalog::store::{StateKey, Store, StoreError};
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
    /// Writes waiting for the writer (and, apart, reads for the reader).
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
    #[error("{limit} state operations are already waiting for the store; retry shortly")]
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
    if crate::names::is_segment(scope, MAX_SCOPE_CHARS) {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "scope {scope:?} is not a scope name; use 1 to {MAX_SCOPE_CHARS} letters, digits, '_', '-' or '.'"
        )))
    }
}

/// A key: 1–512 bytes of text without control characters.
pub fn check_key(key: &str) -> Result<(), StateError> {
    if !crate::names::is_plain_text(key, MAX_KEY_BYTES) {
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
    reads: mpsc::Sender<ReadRequest>,
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
        let (reads, read_queue) = mpsc::channel(limits.max_queued_writes.max(1));
        tokio::spawn(read_values(store.clone(), read_queue));
        Ok(Arc::new(Self {
            store,
            writes,
            reads,
            events,
            limits,
        }))
    }

    /// Subscriptions to committed changes.
    pub fn events(&self) -> &Arc<StateEvents> {
        &self.events
    }

    pub async fn get(&self, scope: &str, key: &str) -> Result<Option<Value>, StateError> {
        check_scope(scope)?;
        check_key(key)?;
        let place = (scope.to_owned(), key.to_owned());
        ask(
            &self.reads,
            "reader",
            self.limits.max_queued_writes,
            |reply| ReadRequest { place, reply },
        )
        .await
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
        let (scope, key) = (scope.to_owned(), key.to_owned());
        ask(
            &self.writes,
            "writer",
            self.limits.max_queued_writes,
            |reply| WriteRequest {
                scope,
                key,
                change,
                reply,
            },
        )
        .await
    }
}

/// Asks the state store's reader or writer.
async fn ask<R, T>(
    queue: &mpsc::Sender<R>,
    task: &str,
    limit: usize,
    request: impl FnOnce(oneshot::Sender<Result<T, StateError>>) -> R,
) -> Result<T, StateError> {
    crate::batched::ask(queue, request, StateError::Busy { limit }, || {
        StateError::Store(format!("the state {task} has stopped"))
    })
    .await
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

/// What one write did, or why it was refused (the rest of its batch is
/// kept).
type Outcome = Result<(Written, Option<StateEvent>), StateError>;

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut waiting = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut waiting, MAX_BATCH).await > 0 {
            let requests = std::mem::take(&mut waiting);
            self.write_batch(requests).await;
        }
    }

    /// One transaction for the whole batch, whatever its size: the values
    /// it touches are read in one statement, the writes applied in order
    /// in memory (so two writes of one key in a batch see each other), and
    /// each key's final value written in one more.
    async fn write_batch(&mut self, requests: Vec<WriteRequest>) {
        let counted = self.count;
        let (writes, replies): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .map(|r| (((r.scope, r.key), r.change), r.reply))
            .unzip();
        match self.commit_batch(writes).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let outcome = outcome.map(|(written, event)| {
                        if let Some(event) = event {
                            self.events.publish(event);
                        }
                        written
                    });
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                self.count = counted;
                tracing::error!(%error, "state writes failed; none of the batch was kept");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Applies the writes in order and commits them: the outcome of each,
    /// or why none was kept.
    async fn commit_batch(
        &mut self,
        writes: Vec<(StateKey, Change)>,
    ) -> Result<Vec<Outcome>, StateError> {
        let mut batch = self.store.batch().await?;
        let mut keys: Vec<StateKey> = writes.iter().map(|(place, _)| place.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut values: HashMap<StateKey, Option<Value>> = batch
            .get_many(&keys)
            .await?
            .into_iter()
            .map(|(key, text)| Ok((key, Some(parse_stored(&text)?))))
            .collect::<Result<_, StateError>>()?;
        let mut touched: HashMap<StateKey, Option<Value>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        for (place, change) in writes {
            let old = values.get(&place).cloned().flatten();
            let outcome = self.apply(&place, old, change);
            if let Ok((written, _)) = &outcome {
                values.insert(place.clone(), written.new_value.clone());
                touched.insert(place, written.new_value.clone());
            }
            outcomes.push(outcome);
        }
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for (place, value) in touched {
            match value {
                Some(value) => puts.push((place, encode(&value)?)),
                None => deletes.push(place),
            }
        }
        batch.put_many(&puts).await?;
        batch.delete_many(&deletes).await?;
        batch.commit().await?;
        Ok(outcomes)
    }

    /// One write against the value it finds.
    fn apply(
        &mut self,
        (scope, key): &StateKey,
        old: Option<Value>,
        change: Change,
    ) -> Result<(Written, Option<StateEvent>), StateError> {
        let new = match change {
            Change::Set(value) => Some(value),
            Change::Delete => None,
            Change::Update(ops) => {
                let updated = ops::apply(old.clone().unwrap_or(Value::Null), &ops)
                    .map_err(StateError::Invalid)?;
                check_size(&updated, self.limits.max_value_bytes)?;
                Some(updated)
            }
        };
        match (&old, &new) {
            (None, Some(_)) => {
                if self.count >= self.limits.max_keys {
                    return Err(StateError::Full {
                        limit: self.limits.max_keys,
                    });
                }
                self.count += 1;
            }
            (Some(_), None) => self.count = self.count.saturating_sub(1),
            _ => {}
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
            scope: scope.clone(),
            key: key.clone(),
            old_value: written.old_value.clone(),
            new_value: written.new_value.clone(),
        });
        Ok((written, event))
    }
}

fn encode(value: &Value) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|error| StateError::Invalid(error.to_string()))
}

/// A read waiting for the reader.
struct ReadRequest {
    place: StateKey,
    reply: oneshot::Sender<Result<Option<Value>, StateError>>,
}

/// Reads gathered into one statement.
const MAX_READS: usize = 128;

/// The task that reads values: the reads waiting when it looks are one
/// query, so a burst of `get`s costs one trip to the database, not one each.
async fn read_values(store: Store, mut queue: mpsc::Receiver<ReadRequest>) {
    let mut waiting = Vec::with_capacity(MAX_READS);
    while queue.recv_many(&mut waiting, MAX_READS).await > 0 {
        let reads = std::mem::take(&mut waiting);
        let mut keys: Vec<StateKey> = reads.iter().map(|r| r.place.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        match store.state_get_many(&keys).await {
            Ok(found) => {
                for read in reads {
                    let value = found
                        .get(&read.place)
                        .map(|text| parse_stored(text))
                        .transpose();
                    let _ = read.reply.send(value);
                }
            }
            Err(error) => {
                let error = StateError::from(error);
                for read in reads {
                    let _ = read.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Calls sent to a worker and not yet answered.
//!
//! A call is recorded here *before* its frame is sent, so a reply can never
//! arrive ahead of its record (the iii engine loses about 1 call in 1,000 to
//! that race). The map belongs to one worker connection: a reply is only
//! accepted from the worker the call was sent to, and when the connection
//! closes every call still waiting is failed at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use capgate_protocol::ErrorBody;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

/// What a worker answered.
pub type Reply = Result<Value, ErrorBody>;

/// The connection is closed; nothing more can be sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Pending calls of one worker connection. `None` once closed, so a call
/// can never be recorded after the connection's calls were failed.
#[derive(Default)]
pub struct PendingCalls {
    calls: Mutex<Option<HashMap<Uuid, oneshot::Sender<Reply>>>>,
}

impl PendingCalls {
    pub fn new() -> Self {
        Self {
            calls: Mutex::new(Some(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<Uuid, oneshot::Sender<Reply>>>> {
        // Each critical section is one map operation; a poisoned lock holds a
        // consistent map.
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a call; its reply arrives on the returned receiver.
    pub fn insert(&self, id: Uuid) -> Result<oneshot::Receiver<Reply>, Closed> {
        let (sender, receiver) = oneshot::channel();
        match self.lock().as_mut() {
            Some(calls) => {
                calls.insert(id, sender);
                Ok(receiver)
            }
            None => Err(Closed),
        }
    }

    /// Delivers a reply; false if no such call is waiting (answered twice,
    /// timed out, or never sent to this worker).
    pub fn complete(&self, id: &Uuid, reply: Reply) -> bool {
        let sender = self.lock().as_mut().and_then(|calls| calls.remove(id));
        match sender {
            // The caller may have given up in the meantime; that is not an error.
            Some(sender) => {
                let _ = sender.send(reply);
                true
            }
            None => false,
        }
    }

    /// Forgets a call whose caller stopped waiting.
    pub fn remove(&self, id: &Uuid) {
        if let Some(calls) = self.lock().as_mut() {
            calls.remove(id);
        }
    }

    /// Closes the map and fails every waiting call with `error`.
    pub fn close(&self, error: &ErrorBody) -> usize {
        let calls = self.lock().take().unwrap_or_default();
        let failed = calls.len();
        for (_, sender) in calls {
            let _ = sender.send(Err(error.clone()));
        }
        failed
    }

    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, HashMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes a pending call when the awaiting future is dropped (timeout,
/// cancelled MCP request), so abandoned calls do not accumulate.
pub struct PendingGuard<'a> {
    pending: &'a PendingCalls,
    id: Uuid,
}

impl<'a> PendingGuard<'a> {
    pub fn new(pending: &'a PendingCalls, id: Uuid) -> Self {
        Self { pending, id }
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.remove(&self.id);
    }
}

/// Unique call ids: a random prefix per gateway process and a counter, in
/// UUID form because the iii SDKs expect UUIDs.
pub struct CallIds {
    prefix: u64,
    counter: AtomicU64,
}

impl CallIds {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            prefix: Uuid::new_v4().as_u64_pair().0,
            counter: AtomicU64::new(1),
        })
    }

    pub fn next(&self) -> Uuid {
        Uuid::from_u64_pair(self.prefix, self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_reply_reaches_its_caller_once() {
        let pending = PendingCalls::new();
        let ids = CallIds::new();
        let id = ids.next();
        let receiver = pending.insert(id).unwrap();
        assert!(pending.complete(&id, Ok(json!(1))));
        assert!(
            !pending.complete(&id, Ok(json!(2))),
            "a second answer must be refused"
        );
        assert_eq!(receiver.await.unwrap(), Ok(json!(1)));
    }

    #[tokio::test]
    async fn closing_fails_waiting_calls_and_refuses_new_ones() {
        let pending = PendingCalls::new();
        let ids = CallIds::new();
        let receiver = pending.insert(ids.next()).unwrap();
        let stopped = ErrorBody::new("invocation_stopped", "gone");
        assert_eq!(pending.close(&stopped), 1);
        assert_eq!(receiver.await.unwrap(), Err(stopped));
        assert_eq!(pending.insert(ids.next()).unwrap_err(), Closed);
    }

    #[test]
    fn a_dropped_guard_forgets_the_call() {
        let pending = PendingCalls::new();
        let id = CallIds::new().next();
        let _receiver = pending.insert(id).unwrap();
        drop(PendingGuard::new(&pending, id));
        assert!(pending.is_empty());
    }

    #[test]
    fn ids_are_unique_uuids() {
        let ids = CallIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(Uuid::parse_str(&a.to_string()).unwrap(), a);
    }
}

//! Calls sent to a worker and not yet answered.
//!
//! A call is recorded here *before* its frame is sent, so a reply can never
//! arrive ahead of its record (the iii engine loses about 1 call in 1,000 to
//! that race). The map belongs to one worker connection: a reply is only
//! accepted from the worker the call was sent to, and when the connection
//! closes every call still waiting is failed at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use capgate_protocol::Payload;
use capgate_protocol::{ErrorBody, Frame};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::workers::registry::WorkerHandle;

/// What a worker answered.
pub type Reply = Result<Payload, ErrorBody>;

/// The connection is closed; nothing more can be sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The calls by id. The ids are random (v4) and the gateway's own — a
/// worker can look one up but never choose one — so a fast hasher is safe
/// here; with SipHash every call paid for two slow hashes.
type Calls = HashMap<Uuid, oneshot::Sender<Reply>, foldhash::fast::RandomState>;

/// Pending calls of one worker connection. `None` once closed, so a call
/// can never be recorded after the connection's calls were failed.
#[derive(Default)]
pub struct PendingCalls {
    calls: Mutex<Option<Calls>>,
}

impl PendingCalls {
    pub fn new() -> Self {
        Self {
            calls: Mutex::new(Some(Calls::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Calls>> {
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

    /// Forgets a call whose caller stopped waiting; true if it was still
    /// waiting for its answer.
    pub fn remove(&self, id: &Uuid) -> bool {
        self.lock()
            .as_mut()
            .is_some_and(|calls| calls.remove(id).is_some())
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
    worker: &'a WorkerHandle,
    id: Uuid,
    /// Told to the worker if the call is abandoned unanswered.
    pub reason: Cow<'static, str>,
    /// The reply arrived, so the call is no longer in the map.
    answered: bool,
}

impl<'a> PendingGuard<'a> {
    pub fn new(worker: &'a WorkerHandle, id: Uuid) -> Self {
        Self {
            worker,
            id,
            reason: Cow::Borrowed("the caller stopped waiting (cancelled or disconnected)"),
            answered: false,
        }
    }

    /// The reply was received: the call left the map when it was
    /// delivered, and there is nothing to forget or cancel.
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

/// Forgets the call; if it was still unanswered (its caller cancelled,
/// disconnected or timed out), tells a capgate-aware worker to stop it.
/// iii peers do not know the frame and are not sent it.
impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if self.worker.pending.remove(&self.id) && self.worker.is_capgate_aware() {
            self.worker.send(&Frame::CancelInvocation {
                invocation_id: self.id.to_string(),
                reason: std::mem::take(&mut self.reason).into_owned(),
            });
        }
    }
}

/// Call ids: random version-4 UUIDs, as the protocol documents and the
/// iii SDKs expect. Not a counter: no id tells another, so a worker cannot
/// learn how many calls others make, nor aim an answer at one.
pub struct CallIds;

impl CallIds {
    pub fn new() -> Arc<Self> {
        Arc::new(Self)
    }

    pub fn next(&self) -> Uuid {
        // `fast-rng`: a thread-local generator, not a system call per id.
        Uuid::new_v4()
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
        assert!(pending.complete(&id, Ok(json!(1).into())));
        assert!(
            !pending.complete(&id, Ok(json!(2).into())),
            "a second answer must be refused"
        );
        assert_eq!(receiver.await.unwrap(), Ok(json!(1).into()));
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
    fn a_dropped_guard_forgets_the_call_and_tells_capgate_workers() {
        use crate::workers::Workers;
        use crate::workers::registry::{Outgoing, WorkerInfo};
        let workers = Workers::default();
        let (outbox, mut sent) = crate::workers::outbox::channel(usize::MAX);
        let worker = workers.connect(outbox, Default::default());
        let ids = CallIds::new();
        // An iii peer: forgotten, not told.
        let id = ids.next();
        let _receiver = worker.pending.insert(id).unwrap();
        drop(PendingGuard::new(&worker, id));
        assert!(worker.pending.is_empty());
        assert!(sent.try_recv().is_none());
        // A capgate peer: told, with the reason.
        worker.set_info(WorkerInfo {
            features: vec![capgate_protocol::CAPGATE_FEATURE.into()],
            ..Default::default()
        });
        let id = ids.next();
        let _receiver = worker.pending.insert(id).unwrap();
        let mut guard = PendingGuard::new(&worker, id);
        guard.reason = "deadline of 5 ms passed".into();
        drop(guard);
        let Some(Outgoing::Text(frame)) = sent.try_recv() else {
            panic!("no cancel frame");
        };
        assert!(
            frame.contains("cancelinvocation") && frame.contains(&id.to_string()),
            "{frame}"
        );
        assert!(frame.contains("deadline of 5 ms"), "{frame}");
        // An answered call is not cancelled.
        let id = ids.next();
        let _receiver = worker.pending.insert(id).unwrap();
        assert!(worker.pending.complete(&id, Ok(Payload::null())));
        drop(PendingGuard::new(&worker, id));
        assert!(sent.try_recv().is_none());
    }

    #[test]
    fn ids_are_random_version_4_uuids() {
        let ids = CallIds::new();
        let drawn: Vec<Uuid> = (0..1000).map(|_| ids.next()).collect();
        let mut unique = drawn.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), drawn.len());
        for id in &drawn {
            assert_eq!(id.get_version_num(), 4, "{id}");
            assert_eq!(Uuid::parse_str(&id.to_string()).unwrap(), *id);
        }
        // Consecutive ids share no counter: their halves differ entirely.
        let (a, b) = (drawn[0].as_u64_pair(), drawn[1].as_u64_pair());
        assert!(a.0 != b.0 && b.1.wrapping_sub(a.1) != 1, "{a:?} {b:?}");
    }
}

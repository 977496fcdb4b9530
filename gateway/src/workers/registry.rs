//! Every live worker connection, by provider id and by worker id, and the
//! lost connections whose registrations wait for their worker to reattach.
//!
//! Teardown, reattach and expiry each run under one lock, so whichever
//! order the old connection's end and the new connection's `reattach`
//! arrive in, the outcome is the same: the new connection owns the
//! registrations. A connection leaves the live set only after it is held,
//! so a call always finds its provider live or held — never neither — and
//! waits for a held one instead of failing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use capgate_catalog::{Caller, Catalog, FunctionId, ProviderId};
use capgate_protocol::{CAPGATE_FEATURE, ErrorBody, Frame, codes};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::pending::{Closed, PendingCalls, PendingGuard, Reply};
use crate::identity::WorkerIdentity;

use super::outbox::Outbox;
pub use super::outbox::Outgoing;

/// What a worker said about itself in `engine::workers::register`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerInfo {
    pub name: Option<String>,
    pub runtime: Option<String>,
    pub version: Option<String>,
    pub pid: Option<u64>,
    pub features: Vec<String>,
}

/// One live worker connection.
pub struct WorkerHandle {
    pub provider: ProviderId,
    pub worker_id: String,
    /// Who the connection proved to be (anonymous without identity).
    pub identity: WorkerIdentity,
    reattach_token: String,
    outbox: Outbox,
    pub pending: PendingCalls,
    info: RwLock<WorkerInfo>,
    provided: Mutex<HashSet<FunctionId>>,
    /// Functions taken over from the previous connection by a reattach and
    /// not yet registered again by the replay.
    adopted: Mutex<HashSet<FunctionId>>,
}

impl WorkerHandle {
    /// Records a call before its frame is sent, so a fast reply always finds
    /// it. The guard forgets the call, and tells a capgate worker to stop
    /// it, if the caller stops waiting before the answer.
    pub fn start_call(
        &self,
        id: Uuid,
    ) -> Result<(oneshot::Receiver<Reply>, PendingGuard<'_>), Closed> {
        let reply = self.pending.insert(id)?;
        Ok((reply, PendingGuard::new(self, id)))
    }

    /// Queues a frame for the socket; false once the connection is gone.
    pub fn send(&self, frame: &Frame) -> bool {
        self.outbox.push(frame.to_json())
    }

    pub fn close(&self, code: u16, reason: impl Into<String>) {
        self.outbox.close(code, reason.into());
    }

    pub fn info(&self) -> WorkerInfo {
        self.info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_info(&self, info: WorkerInfo) {
        *self.info.write().unwrap_or_else(PoisonError::into_inner) = info;
    }

    /// The caller this worker's own calls carry.
    pub fn caller(&self) -> Caller {
        Caller::Worker {
            worker_id: self.worker_id.clone(),
            name: self.identity.name.clone(),
            tenant: self.identity.tenant.clone(),
        }
    }

    pub fn name(&self) -> Option<String> {
        self.info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .name
            .clone()
    }

    /// Whether the worker announced `capgate.v1` and may receive capgate's
    /// own frames and codes (iii peers may treat unknown codes as fatal).
    pub fn is_capgate_aware(&self) -> bool {
        self.info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .features
            .iter()
            .any(|f| f == CAPGATE_FEATURE)
    }

    pub fn reattach_token(&self) -> &str {
        &self.reattach_token
    }

    pub fn provides(&self, id: FunctionId) {
        self.provided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
    }

    pub fn stops_providing(&self, id: &FunctionId) -> bool {
        self.replayed(id);
        self.provided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// The replay after a reattach registered `id` again (or withdrew it).
    pub fn replayed(&self, id: &FunctionId) {
        self.adopted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    fn take_provided(&self) -> Vec<FunctionId> {
        let mut ids: Vec<FunctionId> = self
            .provided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        ids.sort();
        ids
    }

    fn valid_token(&self, token: &str) -> bool {
        // Constant time over equal lengths: the token is a secret.
        let (ours, theirs) = (self.reattach_token.as_bytes(), token.as_bytes());
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// What discovery shows of a worker (`engine::workers::list`, admin API).
    pub fn describe(&self) -> serde_json::Value {
        let info = self.info();
        let functions = self.provided();
        serde_json::json!({
            "id": self.worker_id,
            "name": info.name,
            "identity": self.caller().subject(),
            "tenant": self.caller().tenant(),
            "runtime": info.runtime,
            "version": info.version,
            "pid": info.pid,
            "features": info.features,
            "status": "connected",
            "function_count": functions.len(),
            "functions": functions,
            "active_invocations": self.pending.len(),
        })
    }

    pub fn provided(&self) -> Vec<FunctionId> {
        let mut ids: Vec<FunctionId> = self
            .provided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}

/// A registration refused from an iii peer, kept so that calls to the
/// function explain why it is missing.
struct Refusal {
    worker_id: String,
    reason: String,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The worker closed it, or the gateway is shutting down: its
    /// registrations are withdrawn at once.
    Closed,
    /// It dropped, fell silent or stalled: its registrations are held for
    /// the worker to reattach.
    Lost,
}

/// What teardown did with a connection's registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Held for a reattach until [`Workers::expire`].
    Held,
    Withdrawn,
    /// A reattach had already taken them over.
    Superseded,
}

/// Why a `reattach` was not honoured (the connection carries on as new).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReattachRefused {
    #[error(
        "no connection {0} is live or held (it expired, or the gateway restarted); registrations are replayed as new"
    )]
    Unknown(String),
    #[error("the reattach token does not match connection {0}")]
    BadToken(String),
    #[error("connection {0} belongs to another identity")]
    OtherIdentity(String),
}

/// Connections by provider id. The ids are the gateway's own counter, never
/// chosen by a worker, so a fast hasher is safe; with SipHash the lookup
/// of every call's provider cost a slow hash of eight bytes.
type ByProvider = HashMap<ProviderId, Arc<WorkerHandle>, foldhash::fast::RandomState>;

/// The registry of workers.
pub struct Workers {
    by_provider: RwLock<ByProvider>,
    by_worker_id: RwLock<HashMap<String, ProviderId>>,
    /// Connections out of the live set whose registrations are held.
    held: RwLock<ByProvider>,
    /// Serializes teardown, reattach and expiry.
    lifecycle: tokio::sync::Mutex<()>,
    /// Bumped whenever held registrations are released (moved or withdrawn).
    releases: watch::Sender<u64>,
    #[cfg(feature = "test-util")]
    delays: super::faults::FaultDelays,
    next_provider: AtomicU64,
    refusals: Mutex<HashMap<String, Refusal>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    /// The same registry with pauses inside its critical sections.
    #[cfg(feature = "test-util")]
    pub fn with_faults(delays: super::faults::FaultDelays) -> Self {
        Self {
            delays,
            ..Self::new()
        }
    }

    /// Test hook: a pause after a lost connection left the live set.
    async fn pause_in_teardown(&self) {
        #[cfg(feature = "test-util")]
        pause(self.delays.teardown).await;
    }

    /// Test hook: a pause after a reattach took the old connection out.
    async fn pause_in_reattach(&self) {
        #[cfg(feature = "test-util")]
        pause(self.delays.reattach).await;
    }

    pub fn new() -> Self {
        Self {
            by_provider: RwLock::default(),
            by_worker_id: RwLock::default(),
            held: RwLock::default(),
            lifecycle: tokio::sync::Mutex::new(()),
            releases: watch::Sender::new(0),
            #[cfg(feature = "test-util")]
            delays: Default::default(),
            next_provider: AtomicU64::new(0),
            refusals: Mutex::default(),
        }
    }

    /// Registers a new connection and gives it its identity.
    pub fn connect(&self, outbox: Outbox, identity: WorkerIdentity) -> Arc<WorkerHandle> {
        let provider = ProviderId(self.next_provider.fetch_add(1, Ordering::Relaxed) + 1);
        let handle = Arc::new(WorkerHandle {
            provider,
            worker_id: Uuid::new_v4().to_string(),
            identity,
            reattach_token: Uuid::new_v4().simple().to_string(),
            outbox,
            pending: PendingCalls::new(),
            info: RwLock::new(WorkerInfo::default()),
            provided: Mutex::new(HashSet::new()),
            adopted: Mutex::new(HashSet::new()),
        });
        self.by_provider
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(provider, handle.clone());
        self.by_worker_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(handle.worker_id.clone(), provider);
        handle
    }

    /// Takes a connection out of the live set. Its in-flight calls fail at
    /// once with `invocation_stopped`; its registrations are held for a
    /// reattach if it was lost, else withdrawn.
    pub async fn disconnect(
        &self,
        handle: &WorkerHandle,
        catalog: &Catalog,
        ending: Ending,
        grace: std::time::Duration,
    ) -> Teardown {
        let _serial = self.lifecycle.lock().await;
        if self.get(handle.provider).is_none() {
            // A reattach took this connection's registrations already.
            return Teardown::Superseded;
        }
        let hold = ending == Ending::Lost
            && !grace.is_zero()
            && !handle
                .provided
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
        self.leave_live_set(
            handle,
            hold,
            &format!("worker {} disconnected before answering", handle.worker_id),
        );
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, refusal| refusal.worker_id != handle.worker_id);
        self.pause_in_teardown().await;
        if hold {
            return Teardown::Held;
        }
        self.withdraw(handle, catalog);
        Teardown::Withdrawn
    }

    /// Withdraws a held connection's registrations once its grace is over;
    /// false if it reattached (or was never held).
    pub async fn expire(&self, provider: ProviderId, catalog: &Catalog) -> bool {
        let _serial = self.lifecycle.lock().await;
        let held = self
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&provider)
            .cloned();
        match held {
            Some(handle) => {
                tracing::info!(worker_id = %handle.worker_id, "worker did not reattach; its functions are withdrawn");
                self.withdraw(&handle, catalog);
                true
            }
            None => false,
        }
    }

    /// Gives `new` the registrations of the connection it reattaches to —
    /// held, or still live (a half-open socket the gateway has not noticed
    /// dying yet, which is closed now). Returns the functions taken over.
    pub async fn reattach(
        &self,
        new: &WorkerHandle,
        previous_worker_id: &str,
        token: &str,
        catalog: &Catalog,
    ) -> Result<Vec<FunctionId>, ReattachRefused> {
        let _serial = self.lifecycle.lock().await;
        let unknown = || ReattachRefused::Unknown(previous_worker_id.to_owned());
        let live = self
            .by_worker_id(previous_worker_id)
            .filter(|old| old.provider != new.provider);
        let old = match live.clone() {
            Some(old) => old,
            None => self
                .held
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .find(|held| held.worker_id == previous_worker_id)
                .cloned()
                .ok_or_else(unknown)?,
        };
        if !old.valid_token(token) {
            return Err(ReattachRefused::BadToken(previous_worker_id.to_owned()));
        }
        if old.identity != new.identity {
            return Err(ReattachRefused::OtherIdentity(
                previous_worker_id.to_owned(),
            ));
        }
        if live.is_some() {
            self.leave_live_set(
                &old,
                true,
                &format!(
                    "worker {} reconnected as {} before answering; the call's outcome is unknown",
                    old.worker_id, new.worker_id
                ),
            );
            old.close(
                1000,
                format!("replaced by reattached connection {}", new.worker_id),
            );
        }
        self.pause_in_reattach().await;
        let ids = old.take_provided();
        let moved = catalog.transfer(&ids, old.provider, new.provider);
        {
            let mut adopted = new.adopted.lock().unwrap_or_else(PoisonError::into_inner);
            for id in &moved {
                new.provides(id.clone());
                adopted.insert(id.clone());
            }
        }
        self.release(old.provider);
        Ok(moved)
    }

    /// Withdraws what a reattached connection took over and its replay did
    /// not register again (the worker no longer has it). Returns those ids.
    pub async fn settle(&self, handle: &WorkerHandle, catalog: &Catalog) -> Vec<FunctionId> {
        let _serial = self.lifecycle.lock().await;
        let stale: Vec<FunctionId> = handle
            .adopted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        if self.get(handle.provider).is_none() {
            // Gone again: its own teardown dealt with everything it provided.
            return Vec::new();
        }
        for id in &stale {
            if handle.stops_providing(id) {
                catalog.unregister(id, handle.provider);
            }
        }
        stale
    }

    /// Out of the live set — into the held set first when `hold`, so no
    /// call finds it in neither — failing its calls in flight with `why`.
    fn leave_live_set(&self, handle: &WorkerHandle, hold: bool, why: &str) {
        if hold && let Some(live) = self.get(handle.provider) {
            self.held
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(handle.provider, live);
        }
        self.by_provider
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle.provider);
        self.by_worker_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle.worker_id);
        let failed = handle
            .pending
            .close(&ErrorBody::new(codes::INVOCATION_STOPPED, why));
        if failed > 0 {
            tracing::warn!(worker_id = %handle.worker_id, failed, "worker connection ended with calls in flight");
        }
    }

    /// Takes `handle`'s functions offline and releases any hold on them.
    fn withdraw(&self, handle: &WorkerHandle, catalog: &Catalog) {
        for id in handle.take_provided() {
            catalog.unregister(&id, handle.provider);
        }
        self.release(handle.provider);
    }

    fn release(&self, provider: ProviderId) {
        let was_held = self
            .held
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&provider)
            .is_some();
        if was_held {
            self.releases.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Whether `provider` is a lost connection whose worker may still reattach.
    pub fn is_held(&self, provider: ProviderId) -> bool {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&provider)
    }

    /// Changes whenever held registrations are released; subscribe before
    /// checking [`Workers::is_held`] so a release in between is not missed.
    pub fn releases(&self) -> watch::Receiver<u64> {
        self.releases.subscribe()
    }

    /// The connection behind `provider`, live or held: a function's owner
    /// while its worker reconnects.
    pub fn owner(&self, provider: ProviderId) -> Option<Arc<WorkerHandle>> {
        self.get(provider).or_else(|| {
            self.held
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&provider)
                .cloned()
        })
    }

    /// How many connections are held for a reattach.
    pub fn held_count(&self) -> usize {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn get(&self, provider: ProviderId) -> Option<Arc<WorkerHandle>> {
        self.by_provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&provider)
            .cloned()
    }

    pub fn by_worker_id(&self, worker_id: &str) -> Option<Arc<WorkerHandle>> {
        let provider = *self
            .by_worker_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(worker_id)?;
        self.get(provider)
    }

    /// All live workers, in connection order.
    pub fn list(&self) -> Vec<Arc<WorkerHandle>> {
        let mut workers: Vec<Arc<WorkerHandle>> = self
            .by_provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        workers.sort_by_key(|w| w.provider);
        workers
    }

    /// [`WorkerHandle::describe`] of every live worker, in connection order.
    pub fn describe_all(&self) -> Vec<serde_json::Value> {
        self.list().iter().map(|worker| worker.describe()).collect()
    }

    pub fn len(&self) -> usize {
        self.by_provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers why a registration from an iii peer was refused.
    pub fn refuse(&self, function_id: &str, worker_id: &str, reason: String) {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                function_id.to_owned(),
                Refusal {
                    worker_id: worker_id.to_owned(),
                    reason,
                },
            );
    }

    pub fn forget_refusal(&self, function_id: &str) {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(function_id);
    }

    /// Why `function_id` was refused at registration, if it was.
    pub fn refusal(&self, function_id: &str) -> Option<String> {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(function_id)
            .map(|r| r.reason.clone())
    }
}

#[cfg(feature = "test-util")]
async fn pause(delay: std::time::Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use capgate_catalog::definition::Draft;
    use serde_json::json;

    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn connect(workers: &Workers, name: Option<&str>) -> Arc<WorkerHandle> {
        // The receiver is dropped: these handles never write to a socket.
        let (outbox, _) = crate::workers::outbox::channel(usize::MAX);
        let identity = WorkerIdentity {
            name: name.map(str::to_owned),
            tenant: None,
        };
        workers.connect(outbox, identity)
    }

    fn register(catalog: &Catalog, worker: &WorkerHandle, id: &str) {
        let capability = Draft {
            id: id.into(),
            version: Some(json!("1.0.0")),
            ..Default::default()
        }
        .build()
        .unwrap();
        let id = capability.id().clone();
        catalog.register(capability, worker.provider).unwrap();
        worker.provides(id);
    }

    fn provider_of(catalog: &Catalog, id: &str) -> Option<ProviderId> {
        catalog
            .resolve(id, None)
            .ok()
            .map(|resolved| resolved.provider)
    }

    #[tokio::test]
    async fn a_lost_connection_is_held_and_its_reattach_takes_everything_over() {
        let (workers, catalog) = (Workers::default(), Catalog::in_memory());
        let old = connect(&workers, Some("billing"));
        register(&catalog, &old, "billing::refund");
        register(&catalog, &old, "billing::charge");
        let revision = catalog.revision();
        let teardown = workers
            .disconnect(&old, &catalog, Ending::Lost, GRACE)
            .await;
        assert_eq!(teardown, Teardown::Held);
        assert!(workers.get(old.provider).is_none() && workers.is_held(old.provider));
        assert_eq!(provider_of(&catalog, "billing::refund"), Some(old.provider));

        let new = connect(&workers, Some("billing"));
        let releases = workers.releases();
        let moved = workers
            .reattach(&new, &old.worker_id, old.reattach_token(), &catalog)
            .await
            .unwrap();
        assert_eq!(moved.len(), 2);
        assert!(releases.has_changed().unwrap(), "waiting calls are woken");
        assert!(!workers.is_held(old.provider));
        assert_eq!(provider_of(&catalog, "billing::refund"), Some(new.provider));
        assert_eq!(catalog.revision(), revision, "agents see no change");
        assert_eq!(new.provided().len(), 2);
        // Expiry after a reattach is a no-op.
        assert!(!workers.expire(old.provider, &catalog).await);
        assert_eq!(provider_of(&catalog, "billing::charge"), Some(new.provider));

        // The replay registers one of the two again; the other is settled away.
        new.replayed(&FunctionId::parse("billing::refund").unwrap());
        let stale = workers.settle(&new, &catalog).await;
        assert_eq!(stale, vec![FunctionId::parse("billing::charge").unwrap()]);
        assert!(provider_of(&catalog, "billing::charge").is_none());
        assert_eq!(provider_of(&catalog, "billing::refund"), Some(new.provider));
    }

    #[tokio::test]
    async fn a_reattach_needs_the_token_and_the_same_identity() {
        let (workers, catalog) = (Workers::default(), Catalog::in_memory());
        let old = connect(&workers, Some("billing"));
        register(&catalog, &old, "billing::refund");
        workers
            .disconnect(&old, &catalog, Ending::Lost, GRACE)
            .await;
        let thief = connect(&workers, Some("ops"));
        let refused = workers
            .reattach(&thief, &old.worker_id, old.reattach_token(), &catalog)
            .await;
        assert_eq!(
            refused,
            Err(ReattachRefused::OtherIdentity(old.worker_id.clone()))
        );
        let guesser = connect(&workers, Some("billing"));
        let mut wrong = old.reattach_token().to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        let refused = workers
            .reattach(&guesser, &old.worker_id, &wrong, &catalog)
            .await;
        assert_eq!(
            refused,
            Err(ReattachRefused::BadToken(old.worker_id.clone()))
        );
        let refused = workers
            .reattach(&guesser, "no-such-worker", old.reattach_token(), &catalog)
            .await;
        assert!(matches!(refused, Err(ReattachRefused::Unknown(_))));
        // Nothing moved: still held for the rightful worker.
        assert!(workers.is_held(old.provider));
        assert_eq!(provider_of(&catalog, "billing::refund"), Some(old.provider));
        // While held, the function's owner is still the lost connection.
        let owner = workers.owner(old.provider).unwrap();
        assert_eq!(owner.worker_id, old.worker_id);
    }

    #[tokio::test]
    async fn an_expired_hold_withdraws_and_a_closed_connection_is_never_held() {
        let (workers, catalog) = (Workers::default(), Catalog::in_memory());
        let lost = connect(&workers, None);
        register(&catalog, &lost, "a::lost");
        let closed = connect(&workers, None);
        register(&catalog, &closed, "a::closed");
        let teardown = workers
            .disconnect(&closed, &catalog, Ending::Closed, GRACE)
            .await;
        assert_eq!(teardown, Teardown::Withdrawn);
        assert!(provider_of(&catalog, "a::closed").is_none());
        // Zero grace turns holding off.
        let unheld = connect(&workers, None);
        register(&catalog, &unheld, "a::unheld");
        let teardown = workers
            .disconnect(&unheld, &catalog, Ending::Lost, Duration::ZERO)
            .await;
        assert_eq!(teardown, Teardown::Withdrawn);

        workers
            .disconnect(&lost, &catalog, Ending::Lost, GRACE)
            .await;
        assert!(workers.expire(lost.provider, &catalog).await);
        assert!(provider_of(&catalog, "a::lost").is_none());
        assert_eq!(workers.held_count(), 0);
        let late = connect(&workers, None);
        let refused = workers
            .reattach(&late, &lost.worker_id, lost.reattach_token(), &catalog)
            .await;
        assert!(matches!(refused, Err(ReattachRefused::Unknown(_))));
    }

    #[tokio::test]
    async fn a_reattach_to_a_live_connection_replaces_it() {
        let (workers, catalog) = (Workers::default(), Catalog::in_memory());
        let (outbox, mut old_socket) = crate::workers::outbox::channel(usize::MAX);
        let old = workers.connect(outbox, WorkerIdentity::default());
        register(&catalog, &old, "a::f");
        let in_flight = old.pending.insert(uuid::Uuid::new_v4()).unwrap();
        let new = connect(&workers, None);
        let moved = workers
            .reattach(&new, &old.worker_id, old.reattach_token(), &catalog)
            .await
            .unwrap();
        assert_eq!(moved, vec![FunctionId::parse("a::f").unwrap()]);
        assert!(workers.get(old.provider).is_none() && !workers.is_held(old.provider));
        let failed = in_flight.await.unwrap().unwrap_err();
        assert!(
            failed.message.contains("reconnected as"),
            "{}",
            failed.message
        );
        assert!(matches!(
            old_socket.try_recv(),
            Some(Outgoing::Close(1000, _))
        ));
        // The old connection's own teardown, arriving late, leaves the new one be.
        let teardown = workers
            .disconnect(&old, &catalog, Ending::Lost, GRACE)
            .await;
        assert_eq!(teardown, Teardown::Superseded);
        assert_eq!(provider_of(&catalog, "a::f"), Some(new.provider));
    }
}

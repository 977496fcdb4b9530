//! Every live worker connection, by provider id and by worker id.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use capgate_catalog::{Caller, Catalog, FunctionId, ProviderId};
use capgate_protocol::{CAPGATE_FEATURE, ErrorBody, Frame, codes};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::identity::WorkerIdentity;
use crate::invocation::pending::PendingCalls;

/// What the writer task of a connection sends.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    /// Close the socket with a code and reason, then stop.
    Close(u16, String),
}

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
    outbox: mpsc::UnboundedSender<Outgoing>,
    pub pending: PendingCalls,
    info: RwLock<WorkerInfo>,
    provided: Mutex<HashSet<FunctionId>>,
}

impl WorkerHandle {
    /// Queues a frame for the socket; false once the connection is gone.
    pub fn send(&self, frame: &Frame) -> bool {
        self.outbox.send(Outgoing::Text(frame.to_json())).is_ok()
    }

    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let _ = self.outbox.send(Outgoing::Close(code, reason.into()));
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
        self.provided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
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

/// The registry of live workers.
#[derive(Default)]
pub struct Workers {
    by_provider: RwLock<HashMap<ProviderId, Arc<WorkerHandle>>>,
    by_worker_id: RwLock<HashMap<String, ProviderId>>,
    next_provider: AtomicU64,
    refusals: Mutex<HashMap<String, Refusal>>,
}

impl Workers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new connection and gives it its identity.
    pub fn connect(
        &self,
        outbox: mpsc::UnboundedSender<Outgoing>,
        identity: WorkerIdentity,
    ) -> Arc<WorkerHandle> {
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

    /// Removes a connection: its functions go offline and its in-flight calls
    /// fail at once with `invocation_stopped`.
    pub fn disconnect(&self, handle: &WorkerHandle, catalog: &Catalog) {
        self.by_provider
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle.provider);
        self.by_worker_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle.worker_id);
        for id in handle.provided() {
            catalog.unregister(&id, handle.provider);
        }
        let stopped = ErrorBody::new(
            codes::INVOCATION_STOPPED,
            format!("worker {} disconnected before answering", handle.worker_id),
        );
        let failed = handle.pending.close(&stopped);
        if failed > 0 {
            tracing::warn!(worker_id = %handle.worker_id, failed, "worker disconnected with calls in flight");
        }
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, refusal| refusal.worker_id != handle.worker_id);
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

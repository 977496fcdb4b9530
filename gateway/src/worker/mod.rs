//! Workers: their sockets, their frames, and the registry of live workers.

pub mod connection;
pub mod registration;
pub mod session;

use std::sync::Arc;

use capgate_adapters::triggers::{TriggerServices, Triggers};
use capgate_catalog::Catalog;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::config::Config;
use crate::invocation::InvocationPath;
use crate::log_throttle::LogThrottle;
use crate::workers::Workers;

/// What a worker connection reads and changes.
pub struct WorkerContext {
    /// Frame size, ping interval, reattach grace.
    pub config: Arc<Config>,
    pub catalog: Arc<Catalog>,
    pub workers: Arc<Workers>,
    pub access: Arc<Access>,
    /// The worker's own calls run here.
    pub path: Arc<InvocationPath>,
    /// Triggers the worker registers end with its connection.
    pub triggers: Arc<Triggers>,
    pub trigger_services: TriggerServices,
    /// Where `invokefunction` with `action: enqueue` puts its call.
    pub queues: Arc<capgate_adapters::queue::Queues>,
    /// REST services own their namespaces: workers may not register there.
    pub rest: Arc<capgate_adapters::rest::Services>,
    pub shutdown: CancellationToken,
    /// One permit per open worker socket (`max_worker_connections`).
    pub slots: Arc<Semaphore>,
    /// Keeps a storm of refused connections to one log line per interval.
    pub refusals: LogThrottle,
}

impl WorkerContext {
    /// A connection slot, or None (logged, throttled) at the limit.
    pub fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() && self.refusals.should_log() {
            tracing::warn!(
                limit = self.config.limits.max_worker_connections,
                "worker connection refused: max_worker_connections reached"
            );
        }
        slot
    }
}

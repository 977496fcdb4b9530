//! The `engine::functions-available` trigger: a worker's change subscription.
//!
//! A worker registers a trigger of this type naming one of its functions;
//! whenever the set of live functions changes, that function is called with
//! `{"event": "functions_changed", "functions": [...], "revision": N}` —
//! the iii engine's shape, plus the catalog revision and each function's
//! version and definition hash. A burst of changes becomes one call, and a
//! subscriber never has two deliveries in flight: changes that land during
//! a delivery are folded into the next. Deliveries take the invocation path
//! like any other call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use capgate_catalog::changes::Change;
use capgate_catalog::{Caller, FunctionId, Invocation};
use capgate_policies::Action;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::server::GatewayState;
use crate::tool_changes::next_tool_change;

/// The trigger type workers register.
pub const TRIGGER_TYPE: &str = "engine::functions-available";

/// Each subscription is a task; a worker cannot start them without bound.
pub const MAX_PER_WORKER: usize = 16;

/// How long a burst of changes is gathered into one delivery.
const COALESCE: Duration = Duration::from_millis(25);

/// One registered subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The trigger id the worker chose.
    pub id: String,
    pub function_id: String,
    pub worker_id: String,
    pub worker_name: Option<String>,
    pub config: Value,
    /// The subscribing worker: deliveries are its calls, and list only
    /// what it may see.
    pub owner: Caller,
}

/// Every live subscription, each with the task that delivers to it.
#[derive(Default)]
pub struct FunctionsAvailable {
    subscriptions: Mutex<HashMap<(String, String), (Subscription, CancellationToken)>>,
}

impl FunctionsAvailable {
    /// Adds (or replaces) a worker's subscription and starts delivering.
    pub fn subscribe(
        &self,
        state: &Arc<GatewayState>,
        subscription: Subscription,
    ) -> Result<(), String> {
        FunctionId::parse(&subscription.function_id).map_err(|error| {
            format!(
                "the subscriber '{}' is not a function id: {error}",
                subscription.function_id
            )
        })?;
        let key = (subscription.worker_id.clone(), subscription.id.clone());
        let mut subscriptions = self.lock();
        let held = subscriptions
            .keys()
            .filter(|(owner, id)| *owner == key.0 && *id != key.1)
            .count();
        if held >= MAX_PER_WORKER {
            return Err(format!(
                "a worker may hold at most {MAX_PER_WORKER} {TRIGGER_TYPE} triggers; unregister one first"
            ));
        }
        let stop = state.shutdown.child_token();
        // Subscribed before this frame's handling ends, so no change that
        // follows the trigger's registration can be missed.
        let changes = state.catalog.subscribe();
        tokio::spawn(deliver(
            state.clone(),
            subscription.clone(),
            changes,
            stop.clone(),
        ));
        if let Some((_, previous)) = subscriptions.insert(key, (subscription, stop)) {
            previous.cancel();
        }
        Ok(())
    }

    /// Ends one subscription; false if the worker had none by that id.
    pub fn unsubscribe(&self, worker_id: &str, id: &str) -> bool {
        match self.lock().remove(&(worker_id.to_owned(), id.to_owned())) {
            Some((_, stop)) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends every subscription of a worker that left.
    pub fn forget_worker(&self, worker_id: &str) {
        self.lock().retain(|(owner, _), (_, stop)| {
            let keep = owner != worker_id;
            if !keep {
                stop.cancel();
            }
            keep
        });
    }

    /// The subscriptions as `engine::registered-triggers::list` shows them.
    pub fn describe(&self) -> Vec<Value> {
        let mut rows: Vec<Value> = self
            .lock()
            .values()
            .map(|(s, _)| {
                json!({
                    "id": s.id,
                    "trigger_type": TRIGGER_TYPE,
                    "function_id": s.function_id,
                    "config": s.config,
                    "config_summary": s.config.to_string(),
                    "worker_name": s.worker_name,
                })
            })
            .collect();
        rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        rows
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Subscription, CancellationToken)>>
    {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Calls the subscriber after every burst of changes until stopped.
async fn deliver(
    state: Arc<GatewayState>,
    subscription: Subscription,
    mut changes: broadcast::Receiver<Arc<Change>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            change = next_tool_change(&mut changes, COALESCE) => if change.is_none() { return },
        }
        let invocation = Invocation::new(
            subscription.function_id.clone(),
            functions_changed(&state, &subscription.owner),
            subscription.owner.clone(),
        );
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = state.path.run(invocation) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(trigger = %subscription.id, function = %subscription.function_id,
                worker_id = %subscription.worker_id, %error, "functions-available delivery failed");
        }
    }
}

/// The payload of one delivery: every live function, as an unpinned
/// caller resolves it.
fn functions_changed(state: &GatewayState, owner: &Caller) -> Value {
    let revision = state.catalog.revision();
    let functions: Vec<Value> = state
        .catalog
        .live_rows()
        .into_iter()
        .filter(|row| {
            state
                .access
                .decide(owner, Action::List, row.capability.id().as_str())
                .allowed
        })
        .map(|row| {
            let definition = &row.capability.definition();
            let worker_name = row
                .providers
                .first()
                .and_then(|provider| state.workers.get(*provider))
                .and_then(|worker| worker.name());
            json!({
                "function_id": definition.id,
                "description": definition.description,
                "namespace": "default",
                "worker_name": worker_name,
                "version": definition.version.to_string(),
                "definition_hash": row.capability.hash().to_string(),
            })
        })
        .collect();
    json!({"event": "functions_changed", "functions": functions, "revision": revision})
}

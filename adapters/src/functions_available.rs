//! The `engine::functions-available` trigger: a worker's change subscription.
//!
//! A worker registers a trigger of this type naming one of its functions;
//! whenever the set of live functions changes, that function is called with
//! `{"event": "functions_changed", "functions": [...], "revision": N}` —
//! the iii engine's shape, plus the catalog revision and each function's
//! version and definition hash. A burst of changes becomes one call, and a
//! subscriber never has two deliveries in flight: changes that land during
//! a delivery are folded into the next. Deliveries take the invocation path
//! like any other call, as the trigger's owner, and list only what the
//! owner may list.

use std::sync::Arc;
use std::time::Duration;

use capgate_catalog::changes::{Change, next_tool_change};
use capgate_catalog::{Caller, Invocation};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::triggers::{TriggerContext, TriggerError, TriggerKind, TriggerServices, TriggerSpec};

/// The trigger type workers register.
pub const TRIGGER_TYPE: &str = "engine::functions-available";

/// Each subscription is a task; an owner cannot start them without bound.
pub const MAX_PER_OWNER: usize = 16;

/// How long a burst of changes is gathered into one delivery.
const COALESCE: Duration = Duration::from_millis(25);

/// The kind, for the [`crate::triggers::Triggers`] registry.
pub struct FunctionsAvailable;

impl TriggerKind for FunctionsAvailable {
    fn trigger_type(&self) -> &'static str {
        TRIGGER_TYPE
    }

    fn description(&self) -> &'static str {
        "Calls the function whenever the set of live functions changes"
    }

    fn limit_per_owner(&self) -> usize {
        MAX_PER_OWNER
    }

    fn start(
        &self,
        spec: &TriggerSpec,
        context: TriggerContext,
    ) -> Result<JoinHandle<()>, TriggerError> {
        // Subscribed before the registration is answered, so no change that
        // follows it can be missed.
        let changes = context.services.catalog.subscribe();
        Ok(tokio::spawn(deliver(spec.clone(), context, changes)))
    }
}

/// Calls the subscriber after every burst of changes until stopped.
async fn deliver(
    spec: TriggerSpec,
    context: TriggerContext,
    mut changes: broadcast::Receiver<Arc<Change>>,
) {
    let TriggerContext {
        services,
        owner,
        stop,
        source,
        stats,
    } = context;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            change = next_tool_change(&mut changes, COALESCE) => if change.is_none() { return },
        }
        let invocation = Invocation {
            source: Some(source.clone()),
            ..Invocation::new(
                spec.function_id.clone(),
                functions_changed(&services, &owner),
                owner.clone(),
            )
        };
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = services.invoker.invoke(invocation) => outcome,
        };
        stats.fired(outcome.is_err());
        if let Err(error) = outcome {
            tracing::warn!(trigger = %spec.id, function = %spec.function_id,
                owner = %spec.owner_key, %error, "functions-available delivery failed");
        }
    }
}

/// The payload of one delivery: every live function the owner may list, as
/// an unpinned caller resolves it.
fn functions_changed(services: &TriggerServices, owner: &Caller) -> Value {
    let revision = services.catalog.revision();
    let functions: Vec<Value> = services
        .catalog
        .live_rows()
        .into_iter()
        .filter(|row| services.host.may_list(owner, row.capability.id().as_str()))
        .map(|row| {
            let definition = row.capability.definition();
            let worker_name = row
                .providers
                .first()
                .and_then(|provider| services.host.provider_name(*provider));
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

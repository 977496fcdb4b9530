//! The `state` trigger: calls a function with each committed change of
//! the state it watches — `config {scope?, key?}`, the key exact or a
//! prefix ending in `*` — in commit order, one call at a time, with iii's
//! input. Only changes of scopes its owner may read are delivered.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use capgate_catalog::TraceContext;
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::events::StateFilter;
use super::{StateStore, check_scope};
use crate::triggers::fire::{Fired, Firing};
use crate::triggers::{
    TriggerContext, TriggerError, TriggerKind, TriggerSpec, check_condition, parse_config,
};

/// The trigger type workers register.
pub const TRIGGER_TYPE: &str = "state";

/// Subscriptions one owner may hold.
pub const MAX_PER_OWNER: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateConfig {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    condition_function_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Value>,
}

/// The kind, for the [`crate::triggers::Triggers`] registry.
pub struct StateTrigger {
    state: Arc<StateStore>,
}

impl StateTrigger {
    pub fn new(state: Arc<StateStore>) -> Self {
        Self { state }
    }
}

fn invalid(reason: impl Into<String>) -> TriggerError {
    TriggerError::InvalidConfig {
        trigger_type: TRIGGER_TYPE,
        reason: reason.into(),
    }
}

impl TriggerKind for StateTrigger {
    fn trigger_type(&self) -> &'static str {
        TRIGGER_TYPE
    }

    fn description(&self) -> &'static str {
        "Calls the function with each committed change of state in a scope (and key, or key prefix ending in *)"
    }

    fn limit_per_owner(&self) -> usize {
        MAX_PER_OWNER
    }

    fn start(
        &self,
        spec: &TriggerSpec,
        context: TriggerContext,
    ) -> Result<JoinHandle<()>, TriggerError> {
        let config: StateConfig = parse_config(
            TRIGGER_TYPE,
            &spec.config,
            "scope, key (exact, or a prefix ending in *) and condition_function_id",
        )?;
        if let Some(scope) = &config.scope {
            check_scope(scope).map_err(|error| invalid(error.to_string()))?;
        }
        if let Some(key) = &config.key {
            let exact = key.strip_suffix('*').unwrap_or(key);
            if exact.contains('*') {
                return Err(invalid(format!(
                    "key '{key}' has a '*' before its end; a key is matched exactly, or by a prefix ending in *"
                )));
            }
        }
        check_condition(TRIGGER_TYPE, config.condition_function_id.as_deref())?;
        // Subscribed now, before the registration is answered: a write that
        // follows it is delivered.
        let filter = StateFilter {
            scope: config.scope,
            key: config.key,
        };
        let mut subscription = self.state.events().subscribe(
            move |event| filter.matches(event),
            context.stats.dropped.clone(),
        );
        let function_id = spec.function_id.clone();
        let id = spec.id.clone();
        let condition = config.condition_function_id;
        Ok(tokio::spawn(async move {
            let mut reported = 0;
            loop {
                let event = tokio::select! {
                    () = context.stop.cancelled() => return,
                    event = subscription.events.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                let dropped = subscription.dropped.load(Ordering::Relaxed);
                if dropped > reported {
                    tracing::warn!(trigger = %id, function = %function_id, lost = dropped - reported,
                        "state trigger fell behind: changes were dropped (its queue holds {})",
                        crate::triggers::fanout::SUBSCRIPTION_QUEUE);
                    reported = dropped;
                }
                if !context
                    .services
                    .host
                    .may_read_state(&context.owner, &event.scope)
                {
                    continue;
                }
                let firing = Firing {
                    function_id: &function_id,
                    condition: condition.as_deref(),
                    caller: &context.owner,
                    source: &context.source,
                    trace: TraceContext::default(),
                    timeout: None,
                };
                match firing
                    .run(
                        context.services.invoker.as_ref(),
                        event.to_input(),
                        &context.stats,
                    )
                    .await
                {
                    Fired::Called(Ok(_)) | Fired::ConditionNotMet => {}
                    Fired::Called(Err(error)) => {
                        tracing::warn!(trigger = %id, function = %function_id, scope = %event.scope, %error, "state trigger call failed");
                    }
                    Fired::ConditionFailed(error) => {
                        context.stats.fired(true);
                        tracing::warn!(trigger = %id, %error, "state trigger condition failed; the function was not called");
                    }
                }
            }
        }))
    }
}

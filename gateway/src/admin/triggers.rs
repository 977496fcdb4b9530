//! `/api/v1/triggers`: every running trigger — type, function, owner,
//! config, calls made, failures, last call (`GET`); an operator's own
//! trigger, kept in the store across restarts (`POST`); stopping one
//! (`DELETE /api/v1/triggers/{owner_key}/{id}`).
//!
//! A trigger an operator registers is owned by that operator's identity:
//! registering needs `trigger` on the function, and its calls are made —
//! and authorized, and audited — as that identity.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use capgate_adapters::triggers::TriggerSpec;
use capgate_catalog::Caller;
use capgate_catalog::invocation::DEFAULT_TENANT;
use capgate_catalog::store::{StoreError, StoredTrigger};
use capgate_policies::Action;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::config::ConfiguredTrigger;
use crate::identity::agents::Agent;

pub async fn list(State(state): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({ "triggers": state.triggers.describe() }))
}

/// `POST /api/v1/triggers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    id: String,
    trigger_type: String,
    function_id: String,
    #[serde(default)]
    config: Value,
}

/// The owner key of an identity's triggers: its subject, so the same
/// operator registering the same id replaces its trigger.
fn spec_for(owner: Caller, request: &TriggerRequest) -> TriggerSpec {
    let subject = owner.subject().into_owned();
    TriggerSpec {
        id: request.id.clone(),
        trigger_type: request.trigger_type.clone(),
        function_id: request.function_id.clone(),
        config: request.config.clone(),
        owner,
        owner_key: subject.clone(),
        owner_name: Some(subject),
    }
}

/// Registers a trigger owned by the operator and keeps it in the store;
/// answered once it is on disk.
pub async fn register(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    body: Result<Json<TriggerRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|rejection| {
        ApiError::body_refused(
            rejection.status(),
            format!(
                "{}; send {{\"id\", \"trigger_type\", \"function_id\", \"config\"}}",
                rejection.body_text()
            ),
            state.config.limits.max_frame_bytes,
        )
    })?;
    let caller = operator.caller();
    let decision = state
        .access
        .decide(&caller, Action::Trigger, &request.function_id);
    state.access.record(
        "trigger",
        &caller,
        "trigger",
        &request.function_id,
        &decision,
        json!({"trigger_type": request.trigger_type, "trigger_id": request.id}),
    );
    if !decision.allowed {
        super::settle(&state).await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} may not attach triggers to {} (policy: {}); ask for a 'trigger' rule on it",
                caller.subject(),
                request.function_id,
                decision.rule
            ),
        ));
    }
    let spec = spec_for(caller.clone(), &request);
    let owner_key = spec.owner_key.clone();
    state
        .triggers
        .register(spec, &state.trigger_services)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let stored = StoredTrigger {
        owner: owner_key.clone(),
        tenant: Some(caller.tenant().to_owned()).filter(|t| t != DEFAULT_TENANT),
        id: request.id.clone(),
        trigger_type: request.trigger_type.clone(),
        function_id: request.function_id.clone(),
        config: request.config.to_string(),
    };
    if let Err(error) = state.store.save_trigger(&stored).await {
        // Not on disk: not registered either, so the answer tells the truth.
        state.triggers.unregister(&owner_key, &request.id);
        return Err(ApiError::not_persisted(&error));
    }
    super::settle(&state).await?;
    tracing::info!(owner = %owner_key, trigger = %request.id, trigger_type = %request.trigger_type,
        function = %request.function_id, "trigger registered by an operator");
    Ok((
        StatusCode::CREATED,
        Json(json!({"owner_key": owner_key, "id": request.id})),
    ))
}

/// Stops a trigger (and forgets it, if the store kept it). A worker's
/// trigger comes back if the worker registers it again, as its SDK does
/// after a reconnect.
pub async fn remove(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    Path((owner_key, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if !state.triggers.unregister(&owner_key, &id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no trigger '{id}' of owner '{owner_key}' is running; GET /api/v1/triggers lists them (owner_key and id)"
            ),
        ));
    }
    state
        .store
        .delete_trigger(&owner_key, &id)
        .await
        .map_err(|error| ApiError::not_persisted(&error))?;
    tracing::info!(%owner_key, trigger = %id, "trigger removed by an operator");
    state.access.record(
        "trigger",
        &operator.caller(),
        "remove",
        &format!("{owner_key}/{id}"),
        &state
            .access
            .decide(&operator.caller(), Action::Admin, "triggers"),
        json!({"owner_key": owner_key, "id": id}),
    );
    super::settle(&state).await?;
    Ok(Json(json!({"removed": {"owner_key": owner_key, "id": id}})))
}

/// Starts the configuration's `[[triggers]]`, each owned by the agent it
/// names; the first that cannot start is returned with why.
pub fn start_configured(
    state: &AdminState,
    configured: &[ConfiguredTrigger],
) -> Result<(), (String, String)> {
    for trigger in configured {
        let tenant = state
            .config
            .identity
            .agents
            .iter()
            .find(|agent| agent.name == trigger.owner)
            .and_then(|agent| agent.tenant.clone());
        let owner = Caller::Agent {
            name: trigger.owner.clone(),
            tenant,
        };
        let request = TriggerRequest {
            id: trigger.id.clone(),
            trigger_type: trigger.trigger_type.clone(),
            function_id: trigger.function_id.clone(),
            config: trigger.config.clone(),
        };
        state
            .triggers
            .register(spec_for(owner, &request), &state.trigger_services)
            .map_err(|error| (trigger.id.clone(), error.to_string()))?;
    }
    Ok(())
}

/// Starts the triggers operators registered before this start. One that
/// cannot start any more (its route now another identity's, say) is logged
/// and stays stored, so it is not lost.
pub async fn restore(state: &AdminState) -> Result<(), StoreError> {
    for stored in state.store.triggers().await? {
        let Some(name) = stored.owner.strip_prefix("agent:") else {
            tracing::warn!(owner = %stored.owner, trigger = %stored.id,
                "a stored trigger has an owner that is not an agent; not started");
            continue;
        };
        let config = match serde_json::from_str(&stored.config) {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(owner = %stored.owner, trigger = %stored.id, %error,
                    "a stored trigger's config is not JSON; not started (remove it with DELETE /api/v1/triggers/{{owner_key}}/{{id}} and register it again)");
                continue;
            }
        };
        let owner = Caller::Agent {
            name: name.to_owned(),
            tenant: stored.tenant.clone(),
        };
        let request = TriggerRequest {
            id: stored.id.clone(),
            trigger_type: stored.trigger_type.clone(),
            function_id: stored.function_id.clone(),
            config,
        };
        if let Err(error) = state
            .triggers
            .register(spec_for(owner, &request), &state.trigger_services)
        {
            tracing::warn!(owner = %stored.owner, trigger = %stored.id, %error,
                "a stored trigger could not start; remove it with DELETE /api/v1/triggers/{{owner_key}}/{{id}} or fix what it conflicts with");
        }
    }
    Ok(())
}

//! `/api/v1/state`: operators read and write state (admin on `state`).
//! Writes are answered once committed, and audited as the operator's.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use capgate_adapters::state::{Change, StateError};
use capgate_policies::Action;
use http::StatusCode;
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::builtins::state::scope_object;
use crate::identity::agents::Agent;

/// Every scope holding values, with how many.
pub async fn scopes(State(state): State<Arc<AdminState>>) -> Result<Json<Value>, ApiError> {
    let scopes = state.state.scopes().await.map_err(refused)?;
    let scopes: Vec<Value> = scopes
        .into_iter()
        .map(|(scope, count)| json!({"scope": scope, "count": count}))
        .collect();
    Ok(Json(json!({ "scopes": scopes })))
}

/// A scope's values by key.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Path(scope): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entries = state.state.list(&scope).await.map_err(refused)?;
    Ok(Json(json!({ "scope": scope, "entries": entries })))
}

pub async fn get(
    State(state): State<Arc<AdminState>>,
    Path((scope, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    match state.state.get(&scope, &key).await.map_err(refused)? {
        Some(value) => Ok(Json(json!({"scope": scope, "key": key, "value": value}))),
        None => Err(absent(&scope, &key)),
    }
}

/// Sets a value: the body is the value, as JSON.
pub async fn put(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    Path((scope, key)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(value) = body.map_err(|rejection| {
        ApiError::body_refused(
            rejection.status(),
            format!("{}; send the value as a JSON body", rejection.body_text()),
            state.config.limits.max_frame_bytes,
        )
    })?;
    let written = write(&state, &operator, &scope, &key, Change::Set(value)).await?;
    Ok(Json(written.to_json()))
}

pub async fn delete(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    Path((scope, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let written = write(&state, &operator, &scope, &key, Change::Delete).await?;
    match written.old_value {
        Some(old) => Ok(Json(json!({ "old_value": old }))),
        None => Err(absent(&scope, &key)),
    }
}

async fn write(
    state: &AdminState,
    operator: &Agent,
    scope: &str,
    key: &str,
    change: Change,
) -> Result<capgate_adapters::state::Written, ApiError> {
    let written = state
        .state
        .write(scope, key, change)
        .await
        .map_err(refused)?;
    let caller = operator.caller();
    let decision = state.access.decide(&caller, Action::Admin, "state");
    state.access.record(
        "state",
        &caller,
        "write",
        &scope_object(scope),
        &decision,
        json!({"key": key, "deleted": written.new_value.is_none()}),
    );
    super::settle(state).await?;
    Ok(written)
}

fn absent(scope: &str, key: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("scope '{scope}' holds no key '{key}'"),
    )
}

fn refused(error: StateError) -> ApiError {
    let (status, code) = match &error {
        StateError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        StateError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        StateError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "state_full"),
        StateError::TooManyToList { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "state_list_too_large")
        }
        StateError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        StateError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
    };
    ApiError::new(status, code, error.to_string())
}

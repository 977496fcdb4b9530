//! `GET /api/v1/triggers`: every running trigger — type, function, owner,
//! config, calls made, failures, last call — and
//! `DELETE /api/v1/triggers/{owner_key}/{id}`: an operator stops one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::identity::agents::Agent;
use capgate_policies::Action;

pub async fn list(State(state): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({ "triggers": state.triggers.describe() }))
}

/// Stops a trigger. A worker's trigger comes back if the worker registers
/// it again (its SDK does after a reconnect).
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

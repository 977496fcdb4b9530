//! `GET /api/v1/policies`, `POST /api/v1/policies/reload` and
//! `GET /api/v1/policies/check`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use capgate_catalog::invocation::DEFAULT_TENANT;
use capgate_policies::{Action, Request};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::ApiError;
use crate::identity::agents::Agent;

/// What is in force.
pub async fn show(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let policy = state.access.policy.current();
    Json(json!({
        "generation": state.access.policy.generation(),
        "files": policy.sources(),
        "lines": policy.line_count(),
        "embedded_default": policy.is_open_default(),
        "watching": state.config.policies.watch && !state.access.files().is_empty(),
    }))
}

/// Re-reads the policy files; a policy with an error is refused (422) and
/// the one in force stays.
pub async fn reload(
    State(state): State<Arc<AdminState>>,
    Extension(operator): Extension<Arc<Agent>>,
) -> Result<Json<Value>, ApiError> {
    let reloaded = state.access.reload(&operator.subject()).await;
    // Either outcome was audited; answer once the entry is kept.
    super::settle(&state).await?;
    let generation = reloaded.map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_invalid",
            format!("{error}; the previous policy stays in force"),
        )
    })?;
    Ok(Json(json!({
        "generation": generation,
        "lines": state.access.policy.current().line_count(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    subject: String,
    action: String,
    object: String,
    tenant: Option<String>,
}

/// A decision and every rule that matched, without the cache.
pub async fn check(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<CheckQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; ask with ?subject=agent:NAME&action=call&object=ID[&tenant=T]",
            rejection.body_text()
        ))
    })?;
    let action: Action = query.action.parse().map_err(ApiError::bad_request)?;
    let policy = state.access.policy.current();
    let explanation = policy.explain(&Request {
        subject: &query.subject,
        domain: query.tenant.as_deref().unwrap_or(DEFAULT_TENANT),
        action,
        object: &query.object,
    });
    Ok(Json(json!({
        "allowed": explanation.decision.allowed,
        "rule": &*explanation.decision.rule,
        "subjects": explanation.subjects,
        "matched": explanation.matched.iter().map(|m| &**m).collect::<Vec<_>>(),
        "deprecated_versions": format!("{:?}", policy.deprecation_for(&query.subject)).to_lowercase(),
    })))
}

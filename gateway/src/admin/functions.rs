//! `GET /api/v1/functions`, `GET /api/v1/functions/{id}`, declarations
//! (`POST /api/v1/functions`) and deprecations.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use capgate_catalog::directory::Listing;
use capgate_catalog::directory::{RegisterError, Registered};
use capgate_catalog::lifecycle::DeprecateError;
use capgate_catalog::lifecycle::Deprecation;
use capgate_catalog::naming::reserved_namespace;
use capgate_catalog::{Draft, FunctionId};
use capgate_policies::{Action, Decision};
use http::StatusCode;
use semver::Version;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::ApiError;
use crate::identity::agents::Agent;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Filters of a listing; every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Case-insensitive text in the id, title, description or tags.
    q: Option<String>,
    prefix: Option<String>,
    /// Owner team.
    owner: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    include_deprecated: bool,
    #[serde(default)]
    include_offline: bool,
    limit: Option<usize>,
    /// `id@version` of the last row of the previous page.
    cursor: Option<String>,
}

impl Filters {
    fn keeps(&self, row: &Listing) -> bool {
        let definition = &row.capability.definition();
        let id = definition.id.as_str();
        let needle = self.q.as_deref().map(str::to_lowercase);
        (self.include_offline || !row.providers.is_empty())
            && (self.include_deprecated || definition.deprecation.is_none())
            && self.prefix.as_deref().is_none_or(|p| id.starts_with(p))
            && self.owner.as_deref().is_none_or(|team| {
                definition.owner.as_ref().and_then(|o| o.team.as_deref()) == Some(team)
            })
            && self
                .tag
                .as_deref()
                .is_none_or(|tag| definition.tags.iter().any(|t| t == tag))
            && needle.as_deref().is_none_or(|needle| {
                id.contains(needle)
                    || [&definition.title, &definition.description]
                        .into_iter()
                        .flatten()
                        .any(|text| text.to_lowercase().contains(needle))
                    || definition
                        .tags
                        .iter()
                        .any(|t| t.to_lowercase().contains(needle))
            })
    }
}

fn key(row: &Listing) -> String {
    format!("{}@{}", row.capability.id(), row.capability.version())
}

fn summary(row: &Listing) -> Value {
    let definition = &row.capability.definition();
    json!({
        "id": definition.id,
        "version": definition.version.to_string(),
        "tool_name": row.capability.tool_name(),
        "title": definition.title,
        "description": definition.description,
        "owner": definition.owner,
        "tags": definition.tags,
        "permissions": definition.permissions,
        "deprecation": definition.deprecation,
        "definition_hash": row.capability.hash().to_string(),
        "live": !row.providers.is_empty(),
        "providers": row.providers.len(),
    })
}

/// `GET /api/v1/functions`: one row per version, by id then version.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    filters: Result<Query<Filters>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(filters) =
        filters.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = filters.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    let rows = state.catalog.list();
    let start = match &filters.cursor {
        None => 0,
        Some(cursor) => rows
            .iter()
            .position(|row| key(row) == *cursor)
            .map(|index| index + 1)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "cursor '{cursor}' names no version in the catalog; start again without a cursor"
                ))
            })?,
    };
    let mut page = Vec::with_capacity(limit);
    let mut next_cursor = None;
    for row in rows[start..].iter().filter(|row| filters.keeps(row)) {
        if page.len() == limit {
            next_cursor = page.last().map(|(key, _): &(String, Value)| key.clone());
            break;
        }
        page.push((key(row), summary(row)));
    }
    Ok(Json(json!({
        "functions": page.into_iter().map(|(_, row)| row).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
        "revision": state.catalog.revision(),
    })))
}

/// `GET /api/v1/functions/{id}`: every version, newest first, with its
/// full definition and providers.
pub async fn show(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = FunctionId::parse(&id).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let mut versions: Vec<Value> = state
        .catalog
        .list()
        .into_iter()
        .filter(|row| row.capability.id() == &id)
        .map(|row| {
            let providers: Vec<String> = row
                .providers
                .iter()
                .filter_map(|provider| match state.workers.get(*provider) {
                    Some(worker) => Some(worker.worker_id.clone()),
                    // A REST service: named by its namespace.
                    None => state
                        .rest
                        .namespace_of(*provider)
                        .map(|ns| format!("rest:{ns}")),
                })
                .collect();
            json!({
                "version": row.capability.version().to_string(),
                "definition_hash": row.capability.hash().to_string(),
                "live": !row.providers.is_empty(),
                "providers": providers,
                "definition": row.capability.definition(),
            })
        })
        .collect();
    if versions.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no function '{id}' in the catalog"),
        ));
    }
    versions.reverse();
    Ok(Json(json!({
        "id": id,
        "tool_name": id.tool_name(),
        "versions": versions,
        "triggers": [],
    })))
}

/// The body of a deprecation request; every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprecationRequest {
    since: Option<String>,
    /// `YYYY-MM-DD`, in the future; from that date on calls are refused.
    sunset: Option<String>,
    /// `ID@REQUIREMENT` of what to use instead.
    replacement: Option<String>,
    reason: Option<String>,
}

/// `POST /api/v1/functions/{id}/versions/{version}/deprecation`.
pub async fn deprecate(
    State(state): State<Arc<AdminState>>,
    Extension(operator): Extension<Arc<Agent>>,
    Path((id, version)): Path<(String, String)>,
    body: Result<Json<DeprecationRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(|rejection| json_refused(&state, rejection))?;
    let id = FunctionId::parse(&id).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let version = Version::parse(&version).map_err(|error| {
        ApiError::bad_request(format!("'{version}' is not a semver version: {error}"))
    })?;
    let deprecation = Deprecation {
        since: request.since,
        sunset: request.sunset,
        replacement: request.replacement,
        reason: request.reason,
    };
    let capability = state
        .catalog
        .deprecate(&id, &version, deprecation)
        .map_err(|error| match error {
            DeprecateError::UnknownVersion { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
            }
            other => ApiError::bad_request(other.to_string()),
        })?;
    tracing::info!(%id, %version, "version deprecated");
    state.access.record(
        "deprecation",
        &operator.caller(),
        "deprecate",
        &format!("{id}@{version}"),
        &admin_decision(&state, &operator),
        json!({"deprecation": capability.definition().deprecation}),
    );
    super::settle(&state).await?;
    Ok(Json(json!({
        "id": id,
        "version": version.to_string(),
        "definition_hash": capability.hash().to_string(),
        "deprecation": capability.definition().deprecation,
    })))
}

/// `POST /api/v1/functions`: declares a version no worker provides yet. It
/// is listed offline, pins its definition against every later registration,
/// and goes online when a worker registers the same definition. 201 when
/// new (or redefined), 200 when the catalog already held exactly this.
pub async fn declare(
    State(state): State<Arc<AdminState>>,
    Extension(operator): Extension<Arc<Agent>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|rejection| json_refused(&state, rejection))?;
    // serde would read an array as the fields in order; only an object is a definition.
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object with the definition's fields (id, version, description, input_schema, ...)",
        ));
    }
    let draft: Draft = serde_json::from_value(body)
        .map_err(|error| ApiError::bad_request(format!("invalid definition: {error}")))?;
    let capability = draft.build().map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_definition",
            error.to_string(),
        )
    })?;
    if let Some(namespace) = reserved_namespace(capability.id().as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "naming_denied",
            format!(
                "{} is in the reserved namespace '{namespace}::', which only the gateway provides",
                capability.id()
            ),
        ));
    }
    if let Some(refusal) = state.rest.refusal_for(capability.id().as_str(), "declare") {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", refusal));
    }
    let (id, version, hash) = (
        capability.id().clone(),
        capability.version().clone(),
        capability.hash(),
    );
    let status = match state.catalog.define(capability) {
        Ok(Registered::Unchanged) => StatusCode::OK,
        Ok(Registered::Added(kind)) => {
            tracing::info!(%id, %version, ?kind, "version declared through the admin API");
            state.access.record(
                "declaration",
                &operator.caller(),
                "declare",
                &format!("{id}@{version}"),
                &admin_decision(&state, &operator),
                json!({"definition_hash": hash.to_hex()}),
            );
            StatusCode::CREATED
        }
        Err(error @ (RegisterError::LiveConflict(_) | RegisterError::Immutable(_))) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                error.to_string(),
            ));
        }
        Err(error @ RegisterError::Full { .. }) => {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "catalog_full",
                error.to_string(),
            ));
        }
    };
    super::settle(&state).await?;
    let live = state
        .catalog
        .provider_count(&id, &version)
        .is_some_and(|n| n > 0);
    Ok((
        status,
        Json(json!({
            "id": id,
            "version": version.to_string(),
            "definition_hash": hash.to_string(),
            "live": live,
        })),
    ))
}

/// The decision that let `operator` into the functions admin API, for the
/// audit entry of what it changed.
fn admin_decision(state: &AdminState, operator: &Agent) -> Decision {
    state
        .access
        .decide(&operator.caller(), Action::Admin, "functions")
}

fn json_refused(state: &AdminState, rejection: JsonRejection) -> ApiError {
    ApiError::body_refused(
        rejection.status(),
        rejection.body_text(),
        state.config.limits.max_frame_bytes,
    )
}

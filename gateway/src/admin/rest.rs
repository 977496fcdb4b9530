//! `/api/v1/rest-services`: REST services imported from OpenAPI
//! documents — import (and re-import), list, show, remove. Admin object
//! `rest_services`; every change is audited and answered once it and its
//! audit entry are on disk.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use capgate_adapters::rest::{Origin, ServiceError, ServiceRecord};
use capgate_policies::Action;
use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::identity::agents::Agent;

/// Largest import request: a document at its limit, JSON-escaped.
pub const MAX_IMPORT_BODY: usize = 2 * capgate_adapters::rest::document::MAX_DOCUMENT_BYTES;

/// `POST /api/v1/rest-services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    namespace: String,
    base_url: String,
    /// The document itself: its text (JSON or YAML), or a JSON object.
    #[serde(default)]
    openapi: Option<Value>,
    /// Or where the gateway fetches it (the same address rules as calls).
    #[serde(default)]
    openapi_url: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    tls: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    allow: Vec<IpNet>,
    /// Where the document came from, for operators (`capgate rest import` sets it).
    #[serde(default)]
    source: Option<String>,
}

fn refused(error: ServiceError) -> ApiError {
    match error {
        ServiceError::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
        }
        ServiceError::Configured(_) | ServiceError::Taken { .. } => {
            ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
        }
        ServiceError::Full(_) | ServiceError::CatalogFull { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "limit_reached",
            error.to_string(),
        ),
        ServiceError::Store(store) => ApiError::not_persisted(&store),
        ServiceError::Crashed(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        ),
        ServiceError::Fetch { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "fetch_failed", error.to_string())
        }
        other => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "import_refused",
            other.to_string(),
        ),
    }
}

fn decision(state: &AdminState, operator: &Agent) -> capgate_policies::Decision {
    state
        .access
        .decide(&operator.caller(), Action::Admin, "rest_services")
}

/// `POST /api/v1/rest-services`: imports a service, or imports it again
/// (changed operations become new versions). 201 when new, 200 when re-imported.
pub async fn import(
    State(state): State<Arc<AdminState>>,
    Extension(operator): Extension<Arc<Agent>>,
    body: Result<Json<ImportRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the import request is larger than {MAX_IMPORT_BODY} bytes; the OpenAPI document may be at most {} bytes", capgate_adapters::rest::document::MAX_DOCUMENT_BYTES),
            )
        } else {
            ApiError::bad_request(format!(
                "{}; send {{\"namespace\", \"base_url\", \"openapi\" or \"openapi_url\", …}}",
                rejection.body_text()
            ))
        }
    })?;
    let document = match (request.openapi, &request.openapi_url) {
        (Some(Value::String(text)), None) => text,
        (Some(object @ Value::Object(_)), None) => object.to_string(),
        (None, Some(url)) => state
            .rest
            .fetch_document(url, &request.allow, request.tls.as_deref())
            .await
            .map_err(refused)?,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "send either 'openapi' (the document) or 'openapi_url', not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "the OpenAPI document is missing: send 'openapi' (its text) or 'openapi_url'",
            ));
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "'openapi' must be the document's text or a JSON object",
            ));
        }
    };
    let existed = state.rest.holds(&request.namespace);
    let record = ServiceRecord {
        namespace: request.namespace.clone(),
        base_url: request.base_url,
        document,
        source: request.source.or(request.openapi_url),
        include: request.include,
        exclude: request.exclude,
        auth: request.auth,
        tls: request.tls,
        owner: request.owner,
        allow: request.allow,
        origin: Origin::Api,
        versions: Default::default(),
        imported_ms: 0,
    };
    let report = state.rest.import(record).await.map_err(refused)?;
    state.access.record(
        "rest_service",
        &operator.caller(),
        "import",
        &request.namespace,
        &decision(&state, &operator),
        json!({"operations": report.operations.len(), "deprecated": report.deprecated}),
    );
    super::settle(&state).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!(report))))
}

/// `GET /api/v1/rest-services`.
pub async fn list(State(state): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({"services": state.rest.list()}))
}

/// `GET /api/v1/rest-services/{namespace}`.
pub async fn show(
    State(state): State<Arc<AdminState>>,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (service, operations) = state
        .rest
        .show(&namespace)
        .ok_or_else(|| refused(ServiceError::Unknown(namespace.clone())))?;
    Ok(Json(json!({"service": service, "operations": operations})))
}

/// `DELETE /api/v1/rest-services/{namespace}`: its versions are
/// deprecated and go offline (never deleted: they pin their definitions).
pub async fn remove(
    State(state): State<Arc<AdminState>>,
    Extension(operator): Extension<Arc<Agent>>,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let deprecated = state
        .rest
        .remove(&namespace, Origin::Api)
        .await
        .map_err(refused)?;
    state.access.record(
        "rest_service",
        &operator.caller(),
        "remove",
        &namespace,
        &decision(&state, &operator),
        json!({"deprecated": deprecated}),
    );
    super::settle(&state).await?;
    Ok(Json(
        json!({"namespace": namespace, "deprecated": deprecated}),
    ))
}

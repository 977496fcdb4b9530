//! `GET /api/v1/audit`: the audit log, filtered, as JSON or JSON lines.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use capgate_catalog::audit::{AuditQuery, MAX_QUERY};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::AdminState;
use super::ApiError;

/// Query parameters; every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Entries after this sequence number (for following the log).
    after: Option<i64>,
    kind: Option<String>,
    subject: Option<String>,
    action: Option<String>,
    /// A function id or admin object; a trailing `*` matches a prefix.
    object: Option<String>,
    allowed: Option<bool>,
    limit: Option<usize>,
    /// `json` (default) or `jsonl` for export.
    format: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AdminState>>,
    filters: Result<Query<Filters>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filters) =
        filters.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    if let Some(limit) = filters.limit
        && !(1..=MAX_QUERY).contains(&limit)
    {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_QUERY}, got {limit}"
        )));
    }
    let jsonl = match filters.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format '{other}' is unknown; use json or jsonl"
            )));
        }
    };
    let query = AuditQuery {
        after: filters.after,
        kind: filters.kind,
        subject: filters.subject,
        action: filters.action,
        object: filters.object,
        allowed: filters.allowed,
        limit: filters.limit,
    };
    // Entries recorded just before this request should be visible to it.
    let _ = state.access.audit.flush().await;
    let entries = state.access.audit.query(&query).await.map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            error.to_string(),
        )
    })?;
    if jsonl {
        let mut body = String::new();
        for entry in &entries {
            body.push_str(&serde_json::to_string(entry).unwrap_or_default());
            body.push('\n');
        }
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            )],
            body,
        )
            .into_response());
    }
    let last = entries.last().map(|e| e.seq);
    Ok(Json(json!({
        "entries": entries,
        "last_seq": last,
        "dropped": state.access.audit.dropped(),
    }))
    .into_response())
}

//! `/api/v1/queues`: operators see every queue's depth, age, messages in
//! flight and dead letters, and inspect, redrive, discard and purge them
//! (admin on `queues`). Changes are audited as the operator's and answered
//! once durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use capgate_adapters::queue::QueueError;
use capgate_policies::Action;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::builtins::queue::topic_object;
use crate::identity::agents::Agent;

/// Dead letters one page holds at most.
const MAX_PAGE: usize = 1_000;

/// Every queue: per consumer group, its depth, in flight, delayed, dead
/// letters and the age of its oldest message; the function queues as
/// configured.
pub async fn list(State(state): State<Arc<AdminState>>) -> Result<Json<Value>, ApiError> {
    let counts = state.queues.counts().await.map_err(refused)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut queues: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for count in counts {
        queues.entry(count.queue.clone()).or_default().push(json!({
            "consumer": (!count.consumer.is_empty()).then_some(&count.consumer),
            "depth": count.depth,
            "ready": count.depth - count.in_flight - count.delayed,
            "in_flight": count.in_flight,
            "delayed": count.delayed,
            "dead_letters": count.dead,
            "oldest_age_ms": count.oldest_ms.map(|at| (now - at).max(0)),
        }));
    }
    let config = state.queues.config();
    let queues: Vec<Value> = queues
        .into_iter()
        .map(|(queue, consumers)| {
            let sum = |field: &str| {
                consumers
                    .iter()
                    .filter_map(|c| c[field].as_i64())
                    .sum::<i64>()
            };
            let oldest = consumers
                .iter()
                .filter_map(|c| c["oldest_age_ms"].as_i64())
                .max();
            json!({
                "queue": queue,
                "kind": if config.function_queue(&queue).is_some() { "function" } else { "topic" },
                "depth": sum("depth"),
                "in_flight": sum("in_flight"),
                "dead_letters": sum("dead_letters"),
                "oldest_age_ms": oldest,
                "consumers": consumers,
            })
        })
        .collect();
    Ok(Json(json!({
        "backend": state.queues.backend().name(),
        "max_depth": config.max_depth,
        "queues": queues,
        "function_queues": config.function_queues.iter().map(|q| json!({
            "name": q.name,
            "max_retries": q.max_retries,
            "concurrency": q.concurrency,
            "message_group_field": q.message_group_field,
            "fifo": q.fifo,
            "visibility_timeout_ms": q.visibility_timeout_ms,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// A page of a queue's dead letters, oldest first.
pub async fn dead_letters(
    State(state): State<Arc<AdminState>>,
    Path(queue): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = page.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let messages = state
        .queues
        .dead_letters(&queue, page.offset, page.limit.min(MAX_PAGE))
        .await
        .map_err(refused)?;
    Ok(Json(json!({ "queue": queue, "messages": messages })))
}

/// Every dead letter of the queue delivered again.
pub async fn redrive_all(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    Path(queue): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let redriven = state.queues.redrive(&queue, None).await.map_err(refused)?;
    audited(
        &state,
        &operator,
        "redrive",
        &queue,
        json!({"redriven": redriven}),
    )
    .await?;
    Ok(Json(json!({ "queue": queue, "redriven": redriven })))
}

/// One dead letter delivered again.
pub async fn redrive_one(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let redriven = state
        .queues
        .redrive(&queue, Some(&id))
        .await
        .map_err(refused)?;
    if redriven == 0 {
        return Err(no_letter(&queue, &id));
    }
    audited(
        &state,
        &operator,
        "redrive",
        &queue,
        json!({"message_id": id}),
    )
    .await?;
    Ok(Json(
        json!({ "queue": queue, "message_id": id, "redriven": redriven }),
    ))
}

/// One dead letter deleted.
pub async fn discard(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if !state.queues.discard(&queue, &id).await.map_err(refused)? {
        return Err(no_letter(&queue, &id));
    }
    audited(
        &state,
        &operator,
        "discard",
        &queue,
        json!({"message_id": id}),
    )
    .await?;
    Ok(Json(
        json!({ "queue": queue, "message_id": id, "discarded": true }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    confirm: Option<String>,
}

/// Every message of the queue deleted, live and dead: only with
/// `?confirm=QUEUE` naming it again.
pub async fn purge(
    State(state): State<Arc<AdminState>>,
    axum::Extension(operator): axum::Extension<Arc<Agent>>,
    Path(queue): Path<String>,
    confirm: Result<Query<Confirm>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(confirm) =
        confirm.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    if confirm.confirm.as_deref() != Some(queue.as_str()) {
        return Err(ApiError::bad_request(format!(
            "purging deletes every message of '{queue}', live and dead; confirm with ?confirm={queue}"
        )));
    }
    let purged = state.queues.purge(&queue).await.map_err(refused)?;
    audited(
        &state,
        &operator,
        "purge",
        &queue,
        json!({"purged": purged}),
    )
    .await?;
    Ok(Json(json!({ "queue": queue, "purged": purged })))
}

/// Records an operator's change of a queue and waits for the entry.
async fn audited(
    state: &AdminState,
    operator: &Agent,
    what: &str,
    queue: &str,
    detail: Value,
) -> Result<(), ApiError> {
    let caller = operator.caller();
    let decision = state.access.decide(&caller, Action::Admin, "queues");
    let mut detail = detail;
    if let Value::Object(fields) = &mut detail {
        fields.insert("operation".into(), what.into());
    }
    state.access.record(
        "queue",
        &caller,
        "admin",
        &topic_object(queue),
        &decision,
        detail,
    );
    super::settle(state).await
}

fn no_letter(queue: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "queue '{queue}' holds no dead letter '{id}'; list them with GET /api/v1/queues/{queue}/dlq"
        ),
    )
}

fn refused(error: QueueError) -> ApiError {
    let (status, code) = match &error {
        QueueError::Invalid(_) | QueueError::FunctionQueue { .. } => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        QueueError::UnknownQueue { .. } => (StatusCode::NOT_FOUND, "not_found"),
        QueueError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        QueueError::Full { .. } | QueueError::AllFull { .. } => {
            (StatusCode::INSUFFICIENT_STORAGE, "queue_full")
        }
        QueueError::Stalled { .. } => (StatusCode::INSUFFICIENT_STORAGE, "queue_stalled"),
        QueueError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        QueueError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
    };
    ApiError::new(status, code, error.to_string())
}

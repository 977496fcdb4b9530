//! `GET /metrics`: every instrument in the Prometheus text format, for a
//! scraper with the `admin` action on `metrics` (anyone on a loopback
//! gateway without agent identities, as the rest of the admin API).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use super::{AdminState, ApiError};

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn scrape(State(state): State<Arc<AdminState>>) -> Response {
    refresh_queues(&state).await;
    match state.path.telemetry().metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(error) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_failed",
            format!("the metrics could not be encoded: {error}"),
        )
        .into_response(),
    }
}

/// Reads the queues' counts into the queue gauges; a failed read keeps
/// the last counts (and says so in the log).
pub async fn refresh_queues(state: &AdminState) {
    match state.queues.counts().await {
        Ok(counts) => state.path.telemetry().metrics.set_queue_counts(counts),
        Err(error) => tracing::warn!(%error, "queue counts for the metrics could not be read"),
    }
}

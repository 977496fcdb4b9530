//! The admin API at `/api/v1`: thin handlers over the catalog and the
//! worker registry.
//!
//! - [`functions`]: `GET /functions` (search, filters, pagination),
//!   `GET /functions/{id}` (every version, its providers),
//!   `POST /functions` (declare a version no worker provides yet) and
//!   `POST /functions/{id}/versions/{version}/deprecation`.
//! - [`events`]: `GET /events`, the change feed as Server-Sent Events that
//!   resume without gaps from `Last-Event-ID`.
//! - `GET /workers`.
//!
//! Only local programs reach it: requests carrying an `Origin` or naming a
//! non-loopback `Host` are refused. Identities and the `admin` permission
//! arrive with issue #5.

pub mod events;
pub mod functions;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::json;

use crate::loopback::admit_local_client;
use crate::server::GatewayState;

/// The `/api/v1` routes.
pub fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route(
            "/api/v1/functions",
            get(functions::list).post(functions::declare),
        )
        .route("/api/v1/functions/{id}", get(functions::show))
        .route(
            "/api/v1/functions/{id}/versions/{version}/deprecation",
            post(functions::deprecate),
        )
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/events", get(events::stream))
        .layer(middleware::from_fn(local_only))
        .with_state(state)
}

async fn local_only(request: Request, next: Next) -> Response {
    match admit_local_client(request.headers()) {
        Ok(()) => next.run(request).await,
        Err((status, message)) => {
            ApiError::new(status, "forbidden", message.trim_end()).into_response()
        }
    }
}

async fn workers(State(state): State<Arc<GatewayState>>) -> Json<serde_json::Value> {
    Json(json!({ "workers": state.workers.describe_all() }))
}

/// An error answer: `{"error": {"code", "message"}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

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
//! - [`triggers`]: `GET /triggers` (every running trigger with its calls
//!   and failures), `DELETE /triggers/{owner_key}/{id}`.
//! - [`audit`]: `GET /audit`, the audit log (filters, JSON lines export).
//! - [`policies`]: `GET /policies`, `POST /policies/reload`,
//!   `GET /policies/check` (a decision and the rules behind it).
//! - [`call`]: `POST /call/{id}`, a function called over plain HTTP.
//! - [`metrics`]: `GET /metrics` (outside `/api/v1`), Prometheus text.
//! - [`rest`]: `/rest-services`, REST services imported from OpenAPI
//!   documents (import, list, show, remove).
//!
//! Every request is authenticated as an agent (API key or JWT; anonymous
//! only on a loopback gateway without agent identities). Admin requests
//! need the `admin` action on their object — the first path segment:
//! `functions`, `workers`, `triggers`, `events`, `audit`, `policies`,
//! `metrics`, `rest_services` (`-` in a path segment reads as `_`); a call needs
//! `call` on its function, decided by the invocation path like any other
//! call. Requests from web pages (`Origin`) and for foreign `Host`s are
//! refused.

pub mod audit;
pub mod call;
pub mod events;
pub mod functions;
pub mod metrics;
pub mod policies;
pub mod queues;
pub mod rest;
pub mod state;
pub mod triggers;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use capgate_policies::Action;
use http::StatusCode;
use serde_json::json;

use capgate_catalog::Catalog;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::config::Config;
use crate::identity::Identities;
use crate::invocation::InvocationPath;
use crate::loopback::admit_local_client;
use crate::workers::Workers;

/// What the admin API reads and changes.
pub struct AdminState {
    pub config: Arc<Config>,
    pub catalog: Arc<Catalog>,
    pub workers: Arc<Workers>,
    /// Running triggers, listed, registered and removed by operators.
    pub triggers: Arc<capgate_adapters::triggers::Triggers>,
    pub trigger_services: capgate_adapters::triggers::TriggerServices,
    /// Where operators' triggers are kept.
    pub store: capgate_catalog::store::Store,
    /// State, read and written by operators under `/api/v1/state`.
    pub state: Arc<capgate_adapters::state::StateStore>,
    pub queues: Arc<capgate_adapters::queue::Queues>,
    /// REST services, imported, listed and removed by operators.
    pub rest: Arc<capgate_adapters::rest::Services>,
    pub access: Arc<Access>,
    pub identities: Arc<Identities>,
    /// `POST /call/{id}` runs its calls here.
    pub path: Arc<InvocationPath>,
    /// Identifies this process in change-feed event ids (start time, ms).
    pub epoch: u64,
    pub shutdown: CancellationToken,
}

/// The `/api/v1` routes.
pub fn router(state: Arc<AdminState>) -> Router {
    let admin = Router::new()
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
        .route(
            "/api/v1/triggers",
            get(triggers::list).post(triggers::register),
        )
        .route(
            "/api/v1/triggers/{owner_key}/{id}",
            axum::routing::delete(triggers::remove),
        )
        .route("/api/v1/state", get(state::scopes))
        .route("/api/v1/state/{scope}", get(state::list))
        .route(
            "/api/v1/state/{scope}/{key}",
            get(state::get).put(state::put).delete(state::delete),
        )
        .route(
            "/api/v1/rest-services",
            get(rest::list)
                .post(rest::import)
                .layer(DefaultBodyLimit::max(rest::MAX_IMPORT_BODY)),
        )
        .route(
            "/api/v1/rest-services/{namespace}",
            get(rest::show).delete(rest::remove),
        )
        .route("/api/v1/queues", get(queues::list))
        .route(
            "/api/v1/queues/{queue}",
            axum::routing::delete(queues::purge),
        )
        .route("/api/v1/queues/{queue}/dlq", get(queues::dead_letters))
        .route("/api/v1/queues/{queue}/redrive", post(queues::redrive_all))
        .route(
            "/api/v1/queues/{queue}/dlq/{id}",
            axum::routing::delete(queues::discard),
        )
        .route(
            "/api/v1/queues/{queue}/dlq/{id}/redrive",
            post(queues::redrive_one),
        )
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/policies", get(policies::show))
        .route("/api/v1/policies/reload", post(policies::reload))
        .route("/api/v1/policies/check", get(policies::check))
        .route("/metrics", get(metrics::scrape))
        .layer(middleware::from_fn_with_state(state.clone(), admin_only));
    let calls = Router::new()
        .route("/api/v1/call/{id}", post(call::call))
        .layer(DefaultBodyLimit::max(state.config.limits.max_frame_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), agents_only));
    admin.merge(calls).with_state(state)
}

/// The agent a request comes from, or the refusal to send.
fn admit_agent(
    state: &AdminState,
    request: &Request,
) -> Result<Arc<crate::identity::agents::Agent>, ApiError> {
    if let Err((status, message)) = admit_local_client(request.headers(), &state.config) {
        return Err(ApiError::new(status, "forbidden", message.trim_end()));
    }
    state.identities.agent(request.headers()).map_err(|error| {
        let status = match error {
            crate::identity::AuthError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, "unauthorized", error.to_string())
    })
}

/// Any authenticated agent; what it may call is the invocation path's decision.
async fn agents_only(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match admit_agent(&state, &request) {
        Ok(agent) => {
            request.extensions_mut().insert(agent);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Who may use the admin API: see the module documentation.
async fn admin_only(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let agent = match admit_agent(&state, &request) {
        Ok(agent) => agent,
        Err(refusal) => return refusal.into_response(),
    };
    let object = request
        .uri()
        .path()
        .trim_start_matches("/api/v1/")
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        // Policy objects are names of `[a-z0-9_]`: `rest-services` is `rest_services`.
        .replace('-', "_");
    let caller = agent.caller();
    let decision = state.access.decide(&caller, Action::Admin, &object);
    if !decision.allowed {
        state.path.telemetry().metrics.record_denial("admin");
        state.access.record(
            "admin",
            &caller,
            "admin",
            &object,
            &decision,
            json!({"method": request.method().as_str(), "path": request.uri().path()}),
        );
        if let Err(refusal) = settle(&state).await {
            return refusal.into_response();
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} may not use the admin API's {object} ({}); ask for an 'admin' rule on {object}",
                caller.subject(),
                decision.rule
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(agent);
    next.run(request).await
}

/// The agent [`admin_only`] let in.
pub fn operator(extensions: &http::Extensions) -> capgate_catalog::Caller {
    extensions
        .get::<Arc<crate::identity::agents::Agent>>()
        .map_or(capgate_catalog::Caller::Gateway, |agent| agent.caller())
}

async fn workers(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
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

    /// A body axum could not take: too large (413, naming the limit), or
    /// not what the route reads (400).
    pub fn body_refused(status: StatusCode, text: String, limit: usize) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "payload_too_large",
                format!(
                    "the body is larger than the {limit}-byte limit (max_frame_bytes); send less, or raise the limit in the gateway's configuration"
                ),
            )
        } else {
            Self::bad_request(text)
        }
    }

    /// A change applied in memory whose write to the store failed: it is
    /// not acknowledged, since a restart would lose it.
    pub fn not_persisted(error: &capgate_catalog::store::StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!(
                "the change could not be written to the catalog database ({error}); it is not kept across a restart — check the data directory's disk and retry"
            ),
        )
    }
}

/// Waits until what this request changed and audited is on disk.
pub(crate) async fn settle(state: &AdminState) -> Result<(), ApiError> {
    crate::durability::settle(&state.catalog, &state.access.audit)
        .await
        .map_err(|error| ApiError::not_persisted(&error))
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

//! `POST /api/v1/call/{id}`: a function called over plain HTTP, by an agent,
//! through the one invocation path (resolve, authorize `call`, validate,
//! dispatch, await, validate, audit) — for operators and services that
//! speak neither MCP nor the worker protocol.
//!
//! The body is the function's input (JSON); `?version=REQ` narrows the
//! version and `?timeout_ms=N` sets the deadline. The answer is the
//! function's output as the body, or `{"error": {"code", "message"}}` with
//! the status [`status_of`] gives — 503 with `Retry-After` when the gateway
//! is overloaded or draining, so HTTP clients back off on their own.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use capgate_adapters::http::response::{error_response, status_of};
use capgate_catalog::{Invocation, InvocationError, TraceContext};
use capgate_protocol::Payload;
use http::{HeaderMap, HeaderValue, header};
use semver::VersionReq;
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, ApiError};
use crate::identity::agents::Agent;
use crate::invocation::errors::code_of;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    version: Option<String>,
    timeout_ms: Option<u64>,
}

pub async fn call(
    State(state): State<Arc<AdminState>>,
    Extension(agent): Extension<Arc<Agent>>,
    Path(function_id): Path<String>,
    query: Result<Query<CallQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return ApiError::body_refused(
                rejection.status(),
                rejection.body_text(),
                state.config.limits.max_frame_bytes,
            )
            .into_response();
        }
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return refused(format!(
                "{}; the query takes version (a semver requirement such as ^1.2) and timeout_ms",
                rejection.body_text()
            ));
        }
    };
    let version = match query.version.as_deref().map(VersionReq::parse).transpose() {
        Ok(version) => version,
        Err(error) => {
            return refused(format!(
                "version requirement '{}' is invalid: {error}; use one such as ^1.2 or =2.0.0",
                query.version.unwrap_or_default()
            ));
        }
    };
    let input = if body.is_empty() {
        Payload::from(json!({}))
    } else {
        // Kept as text: a function without an input schema gets it as sent.
        match serde_json::from_slice::<Box<serde_json::value::RawValue>>(&body) {
            Ok(input) => Payload::Text(input),
            Err(error) => {
                return refused(format!(
                    "the body is not JSON ({error}); send the function's input as a JSON document"
                ));
            }
        }
    };
    let invocation = Invocation {
        function_id,
        version,
        input,
        caller: agent.caller(),
        trace: TraceContext::read(|name| headers.get(name).and_then(|value| value.to_str().ok())),
        timeout: query.timeout_ms.map(Duration::from_millis),
        idempotency_key: None,
        source: None,
        entry: capgate_catalog::Entry::Api,
    };
    let noted = state.path.run_noting(invocation).await;
    match noted.outcome {
        Ok(output) => {
            let mut response = Json(output).into_response();
            if let Some(value) = noted
                .warning
                .and_then(|notice| HeaderValue::from_str(&format!("299 capgate \"{notice}\"")).ok())
            {
                response.headers_mut().insert(header::WARNING, value);
            }
            response
        }
        Err(error) => failed(&error),
    }
}

fn failed(error: &InvocationError) -> Response {
    let (status, retry_after) = status_of(error);
    error_response(status, code_of(error), &error.to_string(), retry_after)
}

fn refused(message: String) -> Response {
    ApiError::bad_request(message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn only_overload_and_drain_invite_a_retry() {
        let function = "a::b".to_owned();
        let cases = [
            (
                InvocationError::not_found("a::b"),
                StatusCode::NOT_FOUND,
                None,
            ),
            (
                InvocationError::Overloaded {
                    function: function.clone(),
                    scope: "the gateway",
                    limit: 1,
                },
                StatusCode::SERVICE_UNAVAILABLE,
                Some(1),
            ),
            (
                InvocationError::ShuttingDown,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(5),
            ),
            (
                InvocationError::Timeout {
                    function: function.clone(),
                    after: Duration::from_millis(5),
                },
                StatusCode::GATEWAY_TIMEOUT,
                None,
            ),
            (
                InvocationError::Stopped { function },
                StatusCode::BAD_GATEWAY,
                None,
            ),
        ];
        for (error, status, retry) in cases {
            assert_eq!(status_of(&error), (status, retry), "{error}");
            let response = failed(&error);
            assert_eq!(response.status(), status);
            assert_eq!(
                response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap().to_owned()),
                retry.map(|s| s.to_string())
            );
        }
    }
}

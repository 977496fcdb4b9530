//! `tools/call`, shared by the rmcp handler and the stateless fast path so
//! both answer exactly alike.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use capgate_catalog::{Caller, FunctionId, Invocation, InvocationError, TraceContext};
use http::{HeaderValue, StatusCode, header};
use rmcp::model::{CallToolResult, JsonObject};
use serde_json::{Value, json};

use super::tools::result_for;
use crate::agents::{Agent, AuthError};
use crate::server::GatewayState;

/// The tool name is not one capgate could have made, or names a function
/// the catalog has never heard of: a protocol error, like any unknown tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTool;

/// Runs a tool call on the invocation path. Nothing reaches a worker when
/// the answer is [`UnknownTool`].
pub async fn call_tool(
    state: &GatewayState,
    caller: Caller,
    name: &str,
    arguments: Option<JsonObject>,
    meta: Option<&JsonObject>,
) -> Result<CallToolResult, UnknownTool> {
    let function_id = FunctionId::from_tool_name(name).map_err(|_| UnknownTool)?;
    let mut invocation = Invocation::new(
        function_id.as_str(),
        Value::Object(arguments.unwrap_or_default()),
        caller,
    );
    if let Some(meta) = meta {
        invocation.trace = trace_from(meta);
    }
    let noted = state.path.run_noting(invocation).await;
    // A known function that cannot run now is a tool error the agent can read.
    if let Err(InvocationError::NotFound { detail, .. }) = &noted.outcome
        && detail.is_empty()
    {
        return Err(UnknownTool);
    }
    Ok(result_for(noted))
}

/// W3C trace context from a request's `_meta`.
fn trace_from(meta: &JsonObject) -> TraceContext {
    let text = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_owned);
    TraceContext {
        traceparent: text("traceparent"),
        tracestate: text("tracestate"),
        baggage: text("baggage"),
    }
}

/// Authenticates every `/mcp` request before rmcp or the fast path sees
/// it, and hands the agent on in the request's extensions.
pub async fn authenticate(
    State(state): State<Arc<GatewayState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.agents.authenticate(request.headers()) {
        Ok(agent) => {
            request.extensions_mut().insert(agent);
            next.run(request).await
        }
        Err(error) => unauthorized(&error),
    }
}

/// 401 with the `WWW-Authenticate` challenge of RFC 6750.
fn unauthorized(error: &AuthError) -> Response {
    let challenge = match error {
        AuthError::Missing => r#"Bearer realm="capgate""#,
        AuthError::Malformed => r#"Bearer realm="capgate", error="invalid_request""#,
        AuthError::UnknownKey => r#"Bearer realm="capgate", error="invalid_token""#,
    };
    let body = json!({
        "jsonrpc": "2.0", "id": null,
        "error": {"code": -32001, "message": error.to_string()}
    });
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The agent [`authenticate`] attached to a request. `None` only if a
/// request reached MCP without passing it, which must then be refused.
pub fn agent_of(extensions: &http::Extensions) -> Option<Arc<Agent>> {
    extensions.get::<Arc<Agent>>().cloned()
}

//! `tools/call`, shared by the rmcp handler and the stateless fast path so
//! both answer exactly alike.

use capgate_catalog::{FunctionId, Invocation, InvocationError, NotFoundReason, TraceContext};
use http::StatusCode;
use rmcp::ErrorData;
use rmcp::model::JsonObject;
use serde_json::Value;

use super::McpState;
use super::tools::{ToolResult, tool_result};
use crate::identity::agents::Agent;

/// A call answered with a protocol error instead of a tool result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The tool name is not one capgate could have made, or names a
    /// function the catalog has never heard of (or the agent may not see).
    UnknownTool,
    /// The tool needs client capabilities (`mcp.requires`) the client did
    /// not declare; these are the missing ones.
    MissingCapabilities(JsonObject),
}

impl Refused {
    /// The JSON-RPC error every transport answers it with.
    pub fn error(&self, name: &str) -> ErrorData {
        match self {
            Self::UnknownTool => ErrorData::invalid_params(format!("Unknown tool: {name}"), None),
            Self::MissingCapabilities(missing) => {
                let names: Vec<&str> = missing.keys().map(String::as_str).collect();
                let mut error = ErrorData::new(
                    rmcp::model::ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
                    format!(
                        "Missing required client capability: tool {name} needs the client to declare {}",
                        names.join(", ")
                    ),
                    None,
                );
                error.data = Some(serde_json::json!({ "requiredCapabilities": missing }));
                error
            }
        }
    }

    /// The HTTP status of the answer on the stateless transport, as rmcp
    /// gives it for the same error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownTool => StatusCode::OK,
            Self::MissingCapabilities(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Runs a tool call on the invocation path. Nothing reaches a worker when
/// the call is [`Refused`]. `client` is what the client declared it can do
/// (per request in 2026-07-28, at `initialize` in a session).
pub async fn call_tool(
    state: &McpState,
    agent: &Agent,
    name: &str,
    arguments: Option<JsonObject>,
    meta: Option<&JsonObject>,
    client: Option<&JsonObject>,
    headers: Option<&http::HeaderMap>,
) -> Result<ToolResult, Refused> {
    let function_id = FunctionId::from_tool_name(name).map_err(|_| Refused::UnknownTool)?;
    if let Some(required) = state
        .tools
        .for_agent(agent)
        .requirements(function_id.as_str())
    {
        let missing: JsonObject = required
            .iter()
            .filter(|(capability, _)| !client.is_some_and(|c| c.contains_key(*capability)))
            .map(|(capability, needs)| (capability.clone(), needs.clone()))
            .collect();
        if !missing.is_empty() {
            return Err(Refused::MissingCapabilities(missing));
        }
    }
    let mut invocation = Invocation::new(
        function_id.as_str(),
        Value::Object(arguments.unwrap_or_default()),
        agent.caller(),
    );
    invocation.trace = trace_from(meta, headers);
    let noted = state.path.run_noting(invocation).await;
    // A known function that cannot run now is a tool error the agent can read.
    if let Err(InvocationError::NotFound {
        reason: NotFoundReason::Unknown,
        ..
    }) = &noted.outcome
    {
        return Err(Refused::UnknownTool);
    }
    Ok(tool_result(noted))
}

/// W3C trace context from a request's `_meta` (2026-07-28), else from
/// its HTTP headers, key by key.
fn trace_from(meta: Option<&JsonObject>, headers: Option<&http::HeaderMap>) -> TraceContext {
    // Header names made once: a `&str` is parsed (checked and lowercased)
    // by the header map at every lookup, three per call.
    static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
    static BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");
    TraceContext::read(|key| {
        meta.and_then(|meta| meta.get(key))
            .and_then(Value::as_str)
            .or_else(|| {
                let headers = headers?;
                let value = match [&TRACEPARENT, &TRACESTATE, &BAGGAGE]
                    .into_iter()
                    .find(|name| name.as_str() == key)
                {
                    Some(name) => headers.get(name),
                    None => headers.get(key),
                };
                value.and_then(|value| value.to_str().ok())
            })
    })
}

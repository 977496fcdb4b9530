//! `tools/call`, shared by the rmcp handler and the stateless fast path so
//! both answer exactly alike.

use capgate_catalog::{
    Caller, FunctionId, Invocation, InvocationError, NotFoundReason, TraceContext,
};
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, JsonObject};
use serde_json::Value;

use super::McpState;
use super::tools::result_for;

/// The tool name is not one capgate could have made, or names a function
/// the catalog has never heard of: a protocol error, like any unknown tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTool;

impl UnknownTool {
    /// The JSON-RPC error every transport answers it with.
    pub fn error(name: &str) -> ErrorData {
        ErrorData::invalid_params(format!("Unknown tool: {name}"), None)
    }
}

/// Runs a tool call on the invocation path. Nothing reaches a worker when
/// the answer is [`UnknownTool`].
pub async fn call_tool(
    state: &McpState,
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
    if let Err(InvocationError::NotFound {
        reason: NotFoundReason::Unknown,
        ..
    }) = &noted.outcome
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

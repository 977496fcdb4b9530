//! The bridge's hot requests — `tools/list` and `tools/call` — posted to
//! the gateway as they are, one stateless request each.

use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::JsonObject;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::Value;

/// The hot requests, sent to the gateway as one stateless 2026-07-28 POST
/// each, without a second MCP session layer in this process: the bridge
/// adds only what it must to what the client sent (docs/benchmarks.md).
pub struct Direct {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub next_id: AtomicU64,
}

impl Direct {
    /// Posts `method` with `params` and the client's own capabilities;
    /// gives the JSON-RPC result, or the gateway's JSON-RPC error.
    pub async fn request(
        &self,
        method: &str,
        name: Option<&str>,
        mut params: JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, ErrorData> {
        let capabilities = context
            .client_capabilities()
            .and_then(|declared| serde_json::to_value(declared).ok())
            .unwrap_or_else(|| Value::Object(JsonObject::new()));
        params.insert(
            "_meta".into(),
            serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": STATELESS,
                "io.modelcontextprotocol/clientCapabilities": capabilities,
                "io.modelcontextprotocol/clientInfo": {"name": "capgate-mcp-stdio", "version": env!("CARGO_PKG_VERSION")},
            }),
        );
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut post = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", STATELESS)
            .header("mcp-method", method);
        if let Some(name) = name {
            post = post.header("mcp-name", name);
        }
        if let Some(token) = &self.token {
            post = post.bearer_auth(token);
        }
        let unreachable = |error: reqwest::Error| {
            ErrorData::internal_error(
                format!("the gateway did not answer: {error}; check that capgate serve is running"),
                None,
            )
        };
        let response = post
            .body(body.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let answer = answer_of(&text, id).ok_or_else(|| {
            ErrorData::internal_error(
                format!(
                    "the gateway answered {method} with HTTP {status} and no JSON-RPC answer: {}",
                    text.chars().take(200).collect::<String>()
                ),
                None,
            )
        })?;
        if let Some(error) = answer.get("error") {
            return Err(serde_json::from_value(error.clone()).unwrap_or_else(|_| {
                ErrorData::internal_error(
                    format!("the gateway answered {method} with {error}"),
                    None,
                )
            }));
        }
        answer.get("result").cloned().ok_or_else(|| {
            ErrorData::internal_error(
                format!("the gateway's answer to {method} has no result"),
                None,
            )
        })
    }
}

/// The JSON-RPC answer with `id` in a JSON body or an SSE stream.
fn answer_of(text: &str, id: u64) -> Option<Value> {
    let matches = |value: &Value| value.get("id").and_then(Value::as_u64) == Some(id);
    // A JSON body is the answer (an error before parsing may carry id null).
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Some(value);
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(matches)
}

pub fn bad_answer(method: &str, error: &serde_json::Error) -> ErrorData {
    ErrorData::internal_error(
        format!("the gateway's answer to {method} is not valid MCP: {error}"),
        None,
    )
}

const STATELESS: &str = "2026-07-28";

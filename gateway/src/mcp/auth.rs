//! `/mcp` as an OAuth 2.1 resource server: every request is authenticated
//! before rmcp or the fast path sees it; failures answer 401 (or 403 for a
//! missing scope) with a `WWW-Authenticate` challenge that points at the
//! protected resource metadata (RFC 9728) served at
//! `/.well-known/oauth-protected-resource`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::McpState;
use crate::identity::AuthError;
use crate::identity::agents::Agent;

/// Authenticates a `/mcp` request and hands the agent on in its extensions.
pub async fn authenticate(
    State(state): State<Arc<McpState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.identities.agent(request.headers()) {
        Ok(agent) => {
            request.extensions_mut().insert(agent);
            next.run(request).await
        }
        Err(error) => {
            let base = base_url(&state, request.headers());
            tracing::debug!(%error, "MCP request refused");
            refused(&error, &base)
        }
    }
}

/// The agent [`authenticate`] attached to a request. `None` only if a
/// request reached MCP without passing it, which must then be refused.
pub fn agent_of(extensions: &http::Extensions) -> Option<Arc<Agent>> {
    extensions.get::<Arc<Agent>>().cloned()
}

/// This gateway's URL as clients see it: `public_url`, else the request's `Host`.
fn base_url(state: &McpState, headers: &HeaderMap) -> String {
    match &state.config.server.public_url {
        Some(url) => url.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| crate::loopback::is_own_host(h, &state.config))
                .map_or_else(|| state.config.server.listen.to_string(), str::to_owned);
            format!("http://{host}")
        }
    }
}

/// 401 (403 for a missing scope) with the RFC 6750 / RFC 9728 challenge.
fn refused(error: &AuthError, base: &str) -> Response {
    let mut challenge = format!(
        r#"Bearer realm="capgate", resource_metadata="{base}/.well-known/oauth-protected-resource""#
    );
    if let Some(code) = error.code() {
        challenge.push_str(&format!(r#", error="{code}""#));
    }
    let status = match error {
        AuthError::InsufficientScope(scopes) => {
            challenge.push_str(&format!(r#", scope="{}""#, scopes.join(" ")));
            StatusCode::FORBIDDEN
        }
        _ => StatusCode::UNAUTHORIZED,
    };
    let description = error.to_string().replace(['"', '\\'], "'");
    challenge.push_str(&format!(r#", error_description="{description}""#));
    let body = json!({
        "jsonrpc": "2.0", "id": null,
        "error": {"code": -32001, "message": error.to_string()}
    });
    let challenge = HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static(r#"Bearer realm="capgate""#));
    (
        status,
        [
            (header::WWW_AUTHENTICATE, challenge),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

/// RFC 9728 protected resource metadata for `/mcp`.
pub async fn resource_metadata(
    State(state): State<Arc<McpState>>,
    headers: HeaderMap,
) -> Json<Value> {
    let base = base_url(&state, &headers);
    let issuers = state.identities.issuers.names();
    let mut metadata = json!({
        "resource": format!("{base}/mcp"),
        "resource_name": "capgate",
        "bearer_methods_supported": ["header"],
        "authorization_servers": issuers,
    });
    let scopes = state.identities.issuers.scopes();
    if !scopes.is_empty() {
        metadata["scopes_supported"] = json!(scopes);
    }
    Json(metadata)
}

//! The Streamable HTTP service mounted at `/mcp`.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::McpState;
use super::handler::McpServer;

/// rmcp's Streamable HTTP service with capgate's handler.
pub type McpService = StreamableHttpService<McpServer, LocalSessionManager>;

/// Serves legacy sessions (initialize, `Mcp-Session-Id`, GET stream) and
/// stateless 2026-07-28 requests side by side; rmcp routes each request by
/// the protocol version it carries. `Host` is checked against loopback names,
/// the listen address and `public_url` (DNS rebinding).
pub fn mcp_service(state: Arc<McpState>) -> StreamableHttpService<McpServer, LocalSessionManager> {
    // Loopback names always; the listen address and public_url's host when set.
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !state.config.server.listen.ip().is_unspecified() {
        hosts.push(state.config.server.listen.ip().to_string());
    }
    if let Some(url) = &state.config.server.public_url {
        hosts.push(crate::config::public_host(url).to_owned());
    }
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_legacy_session_mode(true)
        .with_json_response(true)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_max_request_body_bytes(state.config.limits.max_frame_bytes)
        .with_cancellation_token(state.shutdown.child_token());
    // Sessions that leave memory when quiet come back from here (sessions.rs).
    let mut config = config;
    config.session_store = Some(state.sessions.clone());
    let sessions = state.sessions.rmcp.clone();
    StreamableHttpService::new(move || Ok(McpServer::new(state.clone())), sessions, config)
}

//! The MCP server handler: one per legacy session, one per stateless request.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::McpState;
use super::auth::agent_of;
use super::calls::call_tool;
use super::list_watch::AgentListWatch;
use super::tools::BadCursor;
use crate::identity::agents::Agent;

/// How often a session's list watch checks that its session is still there.
const SESSION_CHECK: Duration = Duration::from_secs(5);

/// How long a burst of catalog changes is gathered into one `list_changed`.
const NOTIFY_COALESCE: Duration = Duration::from_millis(10);

/// Protocol versions served, newest first.
pub const PROTOCOL_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2026_07_28,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_03_26,
];

/// capgate's MCP server.
#[derive(Clone)]
pub struct McpServer {
    state: Arc<McpState>,
}

impl McpServer {
    pub fn new(state: Arc<McpState>) -> Self {
        Self { state }
    }
}

/// A cursor this server did not hand out (or one from before the list shrank).
pub fn bad_cursor(cursor: Option<&str>) -> ErrorData {
    ErrorData::invalid_params(
        format!(
            "tools/list cursor '{}' names no page; list again without a cursor",
            cursor.unwrap_or_default()
        ),
        None,
    )
}

/// The agent of the HTTP request behind an MCP request.
fn request_agent(context: &RequestContext<RoleServer>) -> Result<Arc<Agent>, ErrorData> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| agent_of(&parts.extensions))
        .ok_or_else(|| ErrorData::invalid_request("request not authenticated", None))
}

impl ServerHandler for McpServer {
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(PROTOCOL_VERSIONS)
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("capgate", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "capgate exposes the live capabilities of this system as tools. Tool names are function ids with '::' written as '__'.",
        )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let agent = request_agent(&context)?;
        let list = self.state.tools.for_agent(&agent);
        let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
        let (tools, next) = list.page(cursor).map_err(|BadCursor| bad_cursor(cursor))?;
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let agent = request_agent(&context)?;
        let client = context
            .client_capabilities()
            .and_then(|declared| serde_json::to_value(declared).ok());
        let call = call_tool(
            &self.state,
            &agent,
            &request.name,
            request.arguments,
            Some(&context.meta.0),
            client.as_ref().and_then(serde_json::Value::as_object),
            context
                .extensions
                .get::<http::request::Parts>()
                .map(|parts| &parts.headers),
        );
        // Closing the HTTP response stream (or notifications/cancelled)
        // cancels the request; dropping the call forgets its pending entry.
        let outcome = tokio::select! {
            outcome = call => outcome,
            () = context.ct.cancelled() => return Err(ErrorData::internal_error("request cancelled", None)),
        };
        outcome
            .map(|result| result.into_result().into())
            .map_err(|refused| refused.error(&request.name))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Legacy sessions get list_changed on their standalone stream for as
        // long as the session lives, when what their agent sees changes.
        let Some(agent) = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| agent_of(&parts.extensions))
        else {
            return;
        };
        let state = self.state.clone();
        let peer = context.peer;
        // Taken now, so a change right after initialization is not missed.
        let mut watch = AgentListWatch::new(&state, agent);
        tokio::spawn(async move {
            // A session that ends or hibernates closes its transport; the
            // watch must not outlive it waiting for the next change.
            let mut alive = tokio::time::interval(SESSION_CHECK);
            loop {
                tokio::select! {
                    change = watch.changed(&state, NOTIFY_COALESCE) => if change.is_none() { return },
                    () = state.shutdown.cancelled() => return,
                    _ = alive.tick() => {
                        if peer.is_transport_closed() { return }
                        continue;
                    }
                }
                if peer.is_transport_closed() || peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        if context.accepted().tools_list_changed != Some(true) {
            context.cancelled().await;
            return Ok(());
        }
        let agent = request_agent(context.request_context())?;
        let mut watch = AgentListWatch::new(&self.state, agent);
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = self.state.shutdown.cancelled() => return Ok(()),
                change = watch.changed(&self.state, NOTIFY_COALESCE) => {
                    if change.is_none() || context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

//! MCP over Streamable HTTP at `/mcp`, on rmcp.
//!
//! - [`tools`]: capabilities as MCP tools, and results as tool results.
//! - [`handler`]: the rmcp `ServerHandler`: `tools/list`, `tools/call`
//!   (into the invocation path), and `list_changed` for legacy sessions and
//!   `subscriptions/listen` subscribers.
//! - [`service`]: the HTTP service serving both the legacy session protocol
//!   (2025-06-18, 2025-11-25) and the stateless 2026-07-28 protocol.
//! - [`fast_path`]: answers plain stateless `tools/call`s without building
//!   an rmcp session per request; everything else goes to rmcp.
//! - [`calls`]: `tools/call` itself, shared by both.
//! - [`auth`]: authentication of every request (OAuth 2.1 resource server).
//! - [`list_watch`]: which catalog changes and policy reloads change one
//!   agent's list.
//! - [`sessions`]: the legacy sessions, resident in rmcp or hibernated.

pub mod auth;
pub mod calls;
pub mod fast_path;
pub mod handler;
pub mod list_watch;
pub mod service;
pub mod sessions;
pub mod tools;

use std::sync::Arc;

use capgate_catalog::Catalog;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::config::Config;
use crate::identity::Identities;
use crate::invocation::InvocationPath;
use crate::log_throttle::LogThrottle;
use sessions::Sessions;
use tools::ToolCache;

/// What the MCP endpoint reads.
pub struct McpState {
    pub config: Arc<Config>,
    /// Each agent's tool list; it also knows the catalog and the policy.
    pub tools: ToolCache,
    pub identities: Arc<Identities>,
    /// Its change feed and policy reloads tell when lists change.
    pub catalog: Arc<Catalog>,
    pub access: Arc<Access>,
    /// `tools/call` runs its calls here.
    pub path: Arc<InvocationPath>,
    /// Cancelled when the gateway shuts down: sessions and streams end.
    pub shutdown: CancellationToken,
    /// The legacy protocol's open sessions, resident in rmcp or hibernated;
    /// counted against `max_mcp_sessions` and looked up by `DELETE`.
    pub sessions: Arc<Sessions>,
    /// The "at the session limit" warning, at most every 10 s.
    pub refusal_log: LogThrottle,
}

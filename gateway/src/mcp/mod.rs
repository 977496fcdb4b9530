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

pub mod auth;
pub mod calls;
pub mod fast_path;
pub mod handler;
pub mod service;
pub mod tools;

//! # capgate-gateway
//!
//! The `capgate` binary and the servers it runs. Dependencies run one
//! way: entry points → the invocation path → providers → catalog/policies.
//!
//! Entry points, each with only the state it needs:
//! - [`server`]: the composition root — builds each entry point's state,
//!   binds one address, routes `/` and `/ws` (workers), `/mcp` (agents),
//!   `/api/v1` and `/healthz`; shuts down gracefully. [`loopback`] keeps web
//!   pages and rebound hosts out; [`http_server`] holds the connection and
//!   header-time limits.
//! - [`mcp`] ([`mcp::McpState`]): the MCP server (rmcp): `tools/list` from
//!   the catalog, `tools/call` into the invocation path, `list_changed`;
//!   [`mcp::auth`] makes `/mcp` an OAuth resource server.
//! - [`worker`] ([`worker::WorkerContext`]): one task per worker socket
//!   ([`worker::connection`]) turns frames into registrations, triggers and
//!   [`capgate_catalog::Invocation`]s ([`worker::session`]).
//! - [`admin`] ([`admin::AdminState`]): the admin API at `/api/v1`.
//! - [`cli`]: the commands.
//!
//! The path and what it dispatches to:
//! - [`invocation`]: **the one path** every call takes — resolve, authorize,
//!   validate input, dispatch, await, validate output, audit.
//! - [`workers`]: the live worker connections calls are sent to and the
//!   calls each has not answered ([`workers::pending`]).
//! - [`builtins`]: the `engine::*` functions the gateway answers itself.
//!
//! Below them: [`access`] (policy decisions and the audit log;
//! [`policy_watch`] reloads policy files), [`identity`] (API keys, JWT
//! issuers, agents and their pins), [`config`], [`trigger_host`] (what
//! trigger adapters may ask the gateway), [`tls`], [`durability`] (nothing
//! is acknowledged before it is on disk).
//! [`telemetry`]: the span of each call (OTLP export), the metrics at
//! `/metrics`, the trace ids on a call's log lines.
//! `test_util` (feature `test-util`, never in release builds): the cuttable
//! TCP proxy and the fault delays the race tests and `capgate-bench` use.
//!
//! Must not know: how adapters turn events into calls (they hold an
//! [`capgate_catalog::Invoker`], which [`invocation::InvocationPath`]
//! implements), or how policies are evaluated (it asks
//! [`capgate_policies::LivePolicy`]).
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod builtins;
pub mod cli;
pub mod config;
pub mod durability;

pub mod http_server;
pub mod identity;
pub mod invocation;
pub mod log_throttle;
pub mod loopback;
pub mod mcp;
pub mod policy_watch;
pub mod poll_again;
pub mod rest;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod test_support;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod tls;
pub mod trigger_host;
pub mod worker;
pub mod workers;

pub use config::Config;
pub use server::{Gateway, StartError};

//! # capgate-gateway
//!
//! The `capgate` binary and the servers it runs. A call's journey, in the
//! order the modules take part:
//!
//! - [`server`]: binds one address and routes `/` and `/ws` (workers), `/mcp`
//!   (agents) and `/healthz`; shuts down gracefully. [`loopback`] keeps web
//!   pages and rebound hosts out; [`identity`] says who each agent and
//!   worker is (API keys, JWTs), [`mcp::auth`] makes `/mcp` an OAuth
//!   resource server.
//! - [`worker`]: one task per worker socket ([`worker::connection`]) turns
//!   frames into registrations and [`capgate_catalog::Invocation`]s
//!   ([`worker::session`]); [`worker::registry`] knows every live worker.
//! - [`mcp`]: the MCP server (rmcp): `tools/list` from the catalog,
//!   `tools/call` into the invocation path, `list_changed` from the change feed.
//! - [`invocation`]: **the one path** every call takes — resolve, authorize,
//!   validate input, dispatch, await, validate output, audit — and the
//!   [`invocation::pending`] calls it awaits.
//! - [`builtins`]: the `engine::*` functions the gateway answers itself.
//! - [`access`]: policy decisions for every path and the audit log;
//!   [`policy_watch`] reloads policy files when they change.
//! - [`admin`]: the admin API at `/api/v1` (discovery, change feed, audit,
//!   policy reload).
//! - [`config`], [`cli`], [`bench`]: configuration, commands, load generator.
//!
//! Must not know: how adapters turn events into calls (they hold an
//! [`capgate_catalog::Invoker`], which [`invocation::InvocationPath`]
//! implements), or how policies are evaluated (it asks
//! [`capgate_policies::LivePolicy`]).
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod bench;
mod bench_catalog;
mod bench_policy;
pub mod bench_proxy;
mod bench_soak;
pub mod builtins;
pub mod cli;
pub mod config;

pub mod identity;
pub mod invocation;
pub mod loopback;
pub mod mcp;
pub mod policy_watch;
pub mod server;
pub mod tls;
pub mod trigger_host;
pub mod worker;
pub mod workers;

pub use config::Config;
pub use server::{Gateway, StartError};

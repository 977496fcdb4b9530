//! # capgate-adapters
//!
//! Bridges between the outside world and the one invocation path:
//! triggers (HTTP routes, cron schedules, queue messages, state changes) turn
//! events into [`capgate_catalog::Invocation`]s, and upstreams (REST services
//! described by OpenAPI) serve invocations without a worker.
//!
//! Every adapter holds an [`capgate_catalog::Invoker`] and reaches providers
//! only through it, so each call gets the same resolution, policy, schema,
//! audit and trace as an agent's. The trigger adapters arrive with the
//! triggers issue; this crate holds what they share.
//!
//! Must not know: the gateway (it never imports it), the worker protocol or
//! MCP.
#![forbid(unsafe_code)]

pub use capgate_catalog::{Invocation, InvocationError, Invoker};

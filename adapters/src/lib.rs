//! # capgate-adapters
//!
//! Bridges between the outside world and the one invocation path:
//! triggers (HTTP routes, cron schedules, queue messages, state changes) turn
//! events into [`capgate_catalog::Invocation`]s, and upstreams (REST services
//! described by OpenAPI) serve invocations without a worker.
//!
//! - [`triggers`]: the trigger interface — a kind ([`triggers::TriggerKind`])
//!   turns a registration's config into a running task, given a
//!   [`triggers::TriggerContext`] (the invoker, the owner, a shutdown signal,
//!   the catalog's change feed) — and the [`triggers::Triggers`] registry
//!   that worker `registertrigger` frames, configuration and the admin API
//!   all register through.
//! - [`functions_available`]: the `engine::functions-available` kind, a
//!   worker's subscription to changes of the live function set.
//! - [`cron`]: the `cron` kind — schedules in a time zone, with missed
//!   windows caught up as configured and one fire per window per store.
//! - [`state`]: the state store (values by scope and key, iii's update
//!   operations, committed changes to subscribers) and the `state` kind.
//! - [`queue`]: durable queues (embedded in the store) — the
//!   `durable:subscriber` kind, function queues, dead letters — and the
//!   non-durable `subscribe` kind.
//! - [`http`]: the `http` kind — routes on the HTTP trigger listener — and
//!   the listener's router, which the gateway serves.
//! - [`rest`]: REST services from their OpenAPI documents — imported as
//!   capabilities and called over HTTP, SSRF-guarded, with upstream
//!   credentials from the gateway's configuration.
//!
//! Every adapter holds an [`capgate_catalog::Invoker`] (as `dyn`) and
//! reaches providers only through it, so each call gets the same
//! resolution, policy, schema, audit and trace as an agent's.
//!
//! Must not know: the gateway (it never imports it), the worker protocol or
//! MCP.
#![forbid(unsafe_code)]

mod batched;
pub mod cron;
pub mod functions_available;
pub mod http;
pub mod names;
pub mod queue;
pub mod rest;
pub mod state;
pub mod triggers;

pub use capgate_catalog::{Invocation, InvocationError, Invoker};

use std::sync::Arc;

/// What the built-in trigger kinds are built on.
pub struct Foundations {
    /// The routes the HTTP trigger listener serves.
    pub routes: Arc<http::HttpRoutes>,
    /// Where cron jobs record the windows they fired.
    pub store: capgate_catalog::store::Store,
    /// What cron reads and waits on.
    pub clock: Arc<dyn cron::clock::Clock>,
    /// Names this gateway in the store's records.
    pub instance: String,
    /// The state store, whose changes `state` triggers watch.
    pub state: Arc<state::StateStore>,
    /// The durable queues `durable:subscriber` triggers consume.
    pub queues: Arc<queue::Queues>,
    /// The non-durable topics `subscribe` triggers watch.
    pub topics: Arc<queue::pubsub::Topics>,
}

/// A registry with every trigger kind built into capgate.
pub fn builtin_triggers(foundations: Foundations) -> triggers::Triggers {
    let Foundations {
        routes,
        store,
        clock,
        instance,
        state,
        queues,
        topics,
    } = foundations;
    triggers::Triggers::new(vec![
        Arc::new(functions_available::FunctionsAvailable),
        Arc::new(http::HttpTrigger::new(routes)),
        Arc::new(cron::CronTrigger::new(store, clock, instance)),
        Arc::new(state::trigger::StateTrigger::new(state)),
        Arc::new(queue::subscriber::DurableSubscriber::new(queues)),
        Arc::new(queue::pubsub::Subscribe::new(topics)),
    ])
}

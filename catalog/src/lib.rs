//! # capgate-catalog
//!
//! The live directory of what the system can do right now.
//!
//! - [`naming`]: function ids (`acme::billing::refund`) and their reversible
//!   MCP tool names (`acme__billing__refund`).
//! - [`definition`]: a capability version as an agent sees it, built from a
//!   [`definition::Draft`] that is checked field by field, and its
//!   [`definition::DefinitionHash`].
//! - [`schema`]: JSON Schemas compiled once per registration.
//! - [`redefinition`]: the rule that pins a published version to its hash.
//! - [`lifecycle`]: deprecation and sunset.
//! - [`directory`]: the [`Catalog`]: every known version, its providers, and
//!   resolution of an id + version requirement to one version and provider.
//! - [`changes`]: the change feed, with a monotonically increasing revision.
//! - [`store`]: persistence of definitions in SQL that runs on the embedded
//!   SQLite and on PostgreSQL.
//! - [`audit`]: the append-only audit log in the same store, written in
//!   batches off the call path.
//! - [`invocation`]: the one [`Invocation`] shape every call takes, its
//!   errors, and the [`Invoker`] trait that adapters call and the gateway
//!   implements.
//!
//! Must not know: the worker protocol, MCP, HTTP, policies, or how a provider
//! is reached. A provider is an opaque [`directory::ProviderId`].
#![forbid(unsafe_code)]

pub mod audit;
pub mod changes;
pub mod definition;
pub mod directory;
pub mod invocation;
pub mod lifecycle;
pub mod naming;
pub mod redefinition;
pub mod schema;
pub mod store;

pub use capgate_payload::Payload;
pub use definition::{Capability, DefinitionHash, Draft};
pub use directory::{Catalog, ProviderId, Resolved};
pub use invocation::{
    Caller, Entry, Invocation, InvocationError, Invoker, NotFoundReason, TraceContext,
    TriggerSource,
};
pub use naming::FunctionId;

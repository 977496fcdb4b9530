//! REST services as capabilities: each operation of an OpenAPI 3.0 or 3.1
//! document becomes a function, and a call to one becomes an HTTP request
//! to the service — on the one invocation path (policy, schema, audit,
//! deadline, trace context) like every other call.
//!
//! - [`document`]: the document read and checked (`oas3`, `openapiv3`),
//!   3.0 lifted to 3.1.
//! - `refs`: local `$ref`s resolved, cycles and external references refused.
//! - [`import`]: operations → capabilities and request [`plan::Plan`]s.
//! - [`plan`]: parameters serialized by the OpenAPI style rules, bodies.
//! - [`multipart`]: `multipart/form-data` bodies, and files carried in a
//!   tool's input as base64.
//! - [`guard`]: which addresses an upstream may be reached at (SSRF), checked
//!   on the resolved address at connect time.
//! - [`credentials`]: what capgate sends upstream — from its configuration
//!   and environment, never from the calling agent.
//! - [`tls`]: a private CA's roots and a client certificate (mutual TLS)
//!   for a service, from the configuration.
//! - [`breaker`]: a circuit breaker per upstream.
//! - [`upstream`]: the HTTP client of one service and one call's request,
//!   retries (idempotent methods only) and limits.
//! - [`services`]: the services held — import, re-import with versions,
//!   storage, restore, removal — and dispatch to them.

pub mod breaker;
pub mod credentials;
pub mod document;
pub mod guard;
pub mod import;
pub mod multipart;
pub mod plan;
mod refs;
pub mod services;
pub mod tls;
pub mod upstream;

pub use refs::RefError;
pub use services::{
    ImportReport, Origin, RestSettings, ServiceError, ServiceRecord, ServiceView, Services,
};

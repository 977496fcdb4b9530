//! # capgate-protocol
//!
//! The worker protocol's frames, as Rust types: JSON text frames over a
//! WebSocket, tagged by a lowercase `"type"`, wire-compatible with the iii
//! engine's SDKs, plus capgate's optional additions (see `docs/protocol.md`).
//!
//! Owns: the shape of every frame ([`Frame`]), the error body ([`ErrorBody`])
//! and the error codes peers understand ([`codes`]), and the names of the
//! built-in functions ([`builtins`]).
//!
//! Must not know: anything about how frames are routed, stored or authorized.
//! Both the gateway and the SDKs depend on this crate and on nothing else of
//! each other.
#![forbid(unsafe_code)]

pub mod builtins;
pub mod codes;
mod frame;

pub use capgate_payload::{Payload, PayloadError};
pub use frame::{
    ErrorBody, Frame, InvocationAction, InvocationResult, InvokeFunction, RegisterFunction,
    RegisterTrigger, RegistrationRejected, WorkerRegistered,
};

/// The feature a capgate-aware peer announces in its `engine::workers::register`
/// data; only such peers receive capgate-specific frames and codes.
pub const CAPGATE_FEATURE: &str = "capgate.v1";

/// Default port of the gateway (worker WebSocket, MCP, admin API).
pub const DEFAULT_PORT: u16 = 49134;

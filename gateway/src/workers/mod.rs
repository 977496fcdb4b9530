//! The workers calls are dispatched to: every live connection
//! ([`registry`]) and the calls each one has not answered yet ([`pending`]).
//! The invocation path sends through a [`WorkerHandle`]; the worker socket
//! (the `worker` module) feeds replies back into it.

#[cfg(feature = "test-util")]
pub mod faults;
pub mod outbox;
pub mod pending;
pub mod registry;

pub use registry::{WorkerHandle, Workers};

//! Workers: their sockets, their frames, and the registry of live workers.

pub mod connection;
pub mod registration;
pub mod registry;
pub mod session;

pub use registry::{WorkerHandle, Workers};

//! What tests and the benchmarks need from the gateway and a product
//! build must not carry (feature `test-util`): a TCP proxy that can cut a
//! connection without a close, and pauses inside the worker registry.

mod proxy;

pub use crate::workers::faults::FaultDelays;
pub use proxy::CuttableProxy;

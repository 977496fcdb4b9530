//! Pauses injected inside the registry's critical sections, so the race
//! tests can widen the windows they check are closed. Compiled only with
//! the `test-util` feature: never in a release build of the gateway.

use std::time::Duration;

/// Pauses inside the worker registry's critical sections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultDelays {
    /// After a lost connection has left the live set, before its
    /// registrations are held or withdrawn.
    pub teardown: Duration,
    /// After a reattach has taken the previous connection out of the live
    /// set, before its registrations move to the new connection.
    pub reattach: Duration,
}

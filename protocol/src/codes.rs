//! Error codes carried in [`crate::ErrorBody::code`].
//!
//! The first group is what the iii SDKs already meet and understand; the
//! second group is capgate's own, sent only where the iii codes would lose
//! meaning.

/// The function does not exist, has no live provider, or was refused at registration.
pub const FUNCTION_NOT_FOUND: &str = "function_not_found";
/// The handler failed (threw); message and stack are the handler's.
pub const INVOCATION_FAILED: &str = "invocation_failed";
/// The provider disconnected while the call was in flight.
pub const INVOCATION_STOPPED: &str = "invocation_stopped";
/// The call's input was not acceptable (schema violation, malformed frame).
pub const INVALID_ARGUMENTS: &str = "INVALID_ARGUMENTS";
/// The call did not complete before its deadline.
pub const TIMEOUT: &str = "TIMEOUT";
/// A trigger could not be registered.
pub const TRIGGER_REGISTRATION_FAILED: &str = "trigger_registration_failed";
/// An `invokefunction` with `action: enqueue` could not be queued (no such
/// queue, a full one, an input without its group field).
pub const ENQUEUE_ERROR: &str = "enqueue_error";
/// Another live worker owns the function id.
pub const FUNCTION_NAMESPACE_CONFLICT: &str = "FUNCTION_NAMESPACE_CONFLICT";

/// The function's output did not match its declared output schema.
pub const INVALID_OUTPUT: &str = "invalid_output";
/// A registration was refused (bad id, bad schema, bad version); capgate peers only.
pub const INVALID_DEFINITION: &str = "invalid_definition";
/// A frame could not be parsed or was too large.
pub const INVALID_FRAME: &str = "invalid_frame";
/// Too many calls in flight at the worker or the gateway; retry shortly.
pub const OVERLOADED: &str = "overloaded";
/// The gateway is shutting down and takes no new calls.
pub const SHUTTING_DOWN: &str = "shutting_down";
/// A registration refused for its name: a reserved namespace, or one the
/// policy does not grant the worker (capgate peers only).
pub const NAMING_DENIED: &str = "naming_denied";
/// A change was applied but could not be written to the store; it is not
/// acknowledged and would not survive a restart.
pub const STORE_UNAVAILABLE: &str = "store_unavailable";
/// The catalog holds its limit of versions (`max_catalog_versions`); a new
/// version is refused.
pub const CATALOG_FULL: &str = "catalog_full";

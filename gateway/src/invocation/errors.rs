//! [`InvocationError`]s in the error shape every worker SDK understands.

use capgate_catalog::InvocationError;
use capgate_protocol::{ErrorBody, codes};

/// The protocol code of an error, for logs and the audit log.
pub fn code_of(error: &InvocationError) -> &str {
    match error {
        InvocationError::Failed { code, .. } => code,
        other => simple_code(other),
    }
}

/// The code of an error whose code is fixed (every one but a worker's own).
pub fn simple_code(error: &InvocationError) -> &'static str {
    match error {
        InvocationError::NotFound { .. } => codes::FUNCTION_NOT_FOUND,
        InvocationError::InvalidInput { .. } => codes::INVALID_ARGUMENTS,
        InvocationError::InvalidOutput { .. } => codes::INVALID_OUTPUT,
        InvocationError::Failed { .. } => codes::INVOCATION_FAILED,
        InvocationError::Stopped { .. } => codes::INVOCATION_STOPPED,
        InvocationError::Timeout { .. } => codes::TIMEOUT,
        InvocationError::ShuttingDown => codes::SHUTTING_DOWN,
        InvocationError::Overloaded { .. } => codes::OVERLOADED,
    }
}

/// The `{code, message, stacktrace?}` a worker receives for a failed call.
pub fn to_error_body(error: &InvocationError) -> ErrorBody {
    match error {
        InvocationError::Failed {
            code,
            message,
            stacktrace,
        } => ErrorBody {
            code: code.clone(),
            message: message.clone(),
            stacktrace: stacktrace.clone(),
        },
        other => ErrorBody::new(simple_code(other), other.to_string()),
    }
}

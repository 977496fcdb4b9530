//! [`InvocationError`]s in the error shape every worker SDK understands.

use capgate_catalog::InvocationError;
use capgate_protocol::{ErrorBody, codes};

/// The `{code, message, stacktrace?}` a worker receives for a failed call.
pub fn to_error_body(error: &InvocationError) -> ErrorBody {
    let code = match error {
        InvocationError::NotFound { .. } => codes::FUNCTION_NOT_FOUND,
        InvocationError::InvalidInput { .. } => codes::INVALID_ARGUMENTS,
        InvocationError::InvalidOutput { .. } => codes::INVALID_OUTPUT,
        InvocationError::Failed {
            code,
            message,
            stacktrace,
        } => {
            return ErrorBody {
                code: code.clone(),
                message: message.clone(),
                stacktrace: stacktrace.clone(),
            };
        }
        InvocationError::Stopped { .. } => codes::INVOCATION_STOPPED,
        InvocationError::Timeout { .. } => codes::TIMEOUT,
        InvocationError::ShuttingDown => codes::SHUTTING_DOWN,
    };
    ErrorBody::new(code, error.to_string())
}

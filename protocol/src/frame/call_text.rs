//! The two frames of every call, `invokefunction` and `invocationresult`,
//! written by hand.
//!
//! serde's derived path goes through the tagged enum's machinery and runs
//! every key and every string through its escaper a byte at a time: about
//! 1,700 instructions a call in the gateway, which writes both frames of
//! every call it routes (callgrind). Here the keys are literal text and a
//! string is copied as it is when nothing in it needs escaping. The text
//! is exactly what serde writes — the same fields in the same order, the
//! same escapes (a test compares the two over every combination of
//! fields); a frame with a field only serde writes (`action`, `metadata`)
//! is left to serde.

use capgate_payload::{Payload, push_json_string};

use super::{ErrorBody, InvocationResult, InvokeFunction};

/// Writes `call` as serde would, or `None` when it has a field left to serde.
pub(crate) fn invoke_function(
    call: &InvokeFunction,
    text: &mut String,
) -> Option<Result<(), serde_json::Error>> {
    if call.action.is_some() || call.metadata.is_some() {
        return None;
    }
    Some(write_invoke_function(call, text))
}

fn write_invoke_function(
    call: &InvokeFunction,
    text: &mut String,
) -> Result<(), serde_json::Error> {
    text.push_str(r#"{"type":"invokefunction""#);
    optional_string(text, "invocation_id", call.invocation_id.as_deref())?;
    string(text, "function_id", &call.function_id)?;
    key(text, "data");
    payload(text, &call.data);
    optional_string(text, "traceparent", call.traceparent.as_deref())?;
    optional_string(text, "baggage", call.baggage.as_deref())?;
    optional_string(text, "version", call.version.as_deref())?;
    if let Some(timeout_ms) = call.timeout_ms {
        key(text, "timeout_ms");
        text.push_str(itoa::Buffer::new().format(timeout_ms));
    }
    text.push('}');
    Ok(())
}

/// Writes `result` as serde would.
pub(crate) fn invocation_result(
    result: &InvocationResult,
    text: &mut String,
) -> Result<(), serde_json::Error> {
    text.push_str(r#"{"type":"invocationresult""#);
    string(text, "invocation_id", &result.invocation_id)?;
    string(text, "function_id", &result.function_id)?;
    if let Some(data) = &result.result {
        key(text, "result");
        payload(text, data);
    }
    if let Some(error) = &result.error {
        key(text, "error");
        error_body(text, error)?;
    }
    optional_string(text, "traceparent", result.traceparent.as_deref())?;
    optional_string(text, "baggage", result.baggage.as_deref())?;
    optional_string(text, "warning", result.warning.as_deref())?;
    text.push('}');
    Ok(())
}

fn error_body(text: &mut String, error: &ErrorBody) -> Result<(), serde_json::Error> {
    text.push_str(r#"{"code":"#);
    push_json_string(text, &error.code)?;
    string(text, "message", &error.message)?;
    optional_string(text, "stacktrace", error.stacktrace.as_deref())?;
    text.push('}');
    Ok(())
}

/// `,"name":` — every key here follows another.
fn key(text: &mut String, name: &str) {
    text.push_str(",\"");
    text.push_str(name);
    text.push_str("\":");
}

fn string(text: &mut String, name: &str, value: &str) -> Result<(), serde_json::Error> {
    key(text, name);
    push_json_string(text, value)
}

fn optional_string(
    text: &mut String,
    name: &str,
    value: Option<&str>,
) -> Result<(), serde_json::Error> {
    match value {
        Some(value) => string(text, name, value),
        None => Ok(()),
    }
}

fn payload(text: &mut String, payload: &Payload) {
    text.push_str(&payload.to_json());
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use serde_json::value::RawValue;

    use crate::Payload;
    use crate::frame::{ErrorBody, Frame, InvocationAction, InvocationResult, InvokeFunction};

    /// Strings that need no escape, and ones that need every kind.
    const STRINGS: [&str; 4] = [
        "c-41",
        "quote \" backslash \\ newline \n tab \t nul \u{0} unit sep \u{1f}",
        "é, 😀, \u{7f} and \u{2028}",
        "",
    ];

    fn payloads() -> Vec<Payload> {
        vec![
            Payload::Text(RawValue::from_string(r#"{"n": 1, "s": "a\"b"}"#.to_owned()).unwrap()),
            Payload::Value(json!({"n": 1, "list": [1, "two", null], "s": "a\"b\n"})),
            Payload::null(),
            // Text with a member appended: built, not parsed again.
            Payload::Text(RawValue::from_string(r#"{"n": 1}"#.to_owned()).unwrap())
                .with_string_field("_caller_worker_id", "w-1")
                .unwrap(),
        ]
    }

    fn same_as_serde(frame: &Frame) {
        let expected = serde_json::to_string(frame).unwrap();
        assert_eq!(frame.to_json(), expected, "{frame:?}");
        // And it reads back as the same frame.
        let text = frame.to_json();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::from_str::<serde_json::Value>(&expected).unwrap()
        );
    }

    #[test]
    fn a_call_is_written_exactly_as_serde_writes_it() {
        let some = |s: &str, on: bool| on.then(|| s.to_owned());
        for text in STRINGS {
            for data in payloads() {
                for fields in 0..32u32 {
                    let on = |bit: u32| fields & (1 << bit) != 0;
                    let call = InvokeFunction {
                        invocation_id: some(text, on(0)),
                        traceparent: some(text, on(1)),
                        baggage: some(text, on(2)),
                        version: some(text, on(3)),
                        timeout_ms: on(4).then_some(u64::MAX),
                        ..InvokeFunction::new(text, data.clone())
                    };
                    same_as_serde(&Frame::InvokeFunction(call));
                }
            }
        }
    }

    #[test]
    fn a_call_with_a_field_only_serde_writes_is_left_to_serde() {
        let mut call = InvokeFunction::new("a::f", json!({"x": 1}));
        call.action = Some(InvocationAction::Void);
        same_as_serde(&Frame::InvokeFunction(call.clone()));
        call.action = None;
        call.metadata = Some(json!({"m": "\u{1}"}));
        same_as_serde(&Frame::InvokeFunction(call));
    }

    #[test]
    fn an_answer_is_written_exactly_as_serde_writes_it() {
        let some = |s: &str, on: bool| on.then(|| s.to_owned());
        for text in STRINGS {
            for data in payloads() {
                for fields in 0..64u32 {
                    let on = |bit: u32| fields & (1 << bit) != 0;
                    let error = ErrorBody {
                        code: text.to_owned(),
                        message: text.to_owned(),
                        stacktrace: some(text, on(5)),
                    };
                    let result = InvocationResult {
                        invocation_id: text.to_owned(),
                        function_id: text.to_owned(),
                        result: on(0).then(|| data.clone()),
                        error: on(1).then_some(error),
                        traceparent: some(text, on(2)),
                        baggage: some(text, on(3)),
                        warning: some(text, on(4)),
                    };
                    same_as_serde(&Frame::InvocationResult(result));
                }
            }
        }
    }
}

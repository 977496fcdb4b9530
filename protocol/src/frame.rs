//! Every frame of the main worker socket.
//!
//! Unknown fields are ignored on purpose: iii peers add some (Node's
//! `message_type`), and capgate's additions must be ignorable in turn.
//! Optional fields are skipped when absent so that what capgate sends looks
//! exactly like what the iii engine sends.

use capgate_payload::Payload;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

mod call_read;
mod call_text;

/// One frame of the worker protocol, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame {
    /// Gateway → worker, first frame of every connection.
    WorkerRegistered(WorkerRegistered),
    /// Worker → gateway: provide a function.
    RegisterFunction(Box<RegisterFunction>),
    /// Worker → gateway: stop providing a function.
    UnregisterFunction { id: String },
    /// Worker → gateway: attach a trigger to a function.
    RegisterTrigger(RegisterTrigger),
    /// Worker → gateway: remove a trigger.
    UnregisterTrigger {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger_type: Option<String>,
    },
    /// Worker → gateway: the worker provides a trigger type.
    RegisterTriggerType {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Worker → gateway: the worker no longer provides a trigger type.
    UnregisterTriggerType { id: String },
    /// Either way: the outcome of a trigger registration (sent only on error).
    TriggerRegistrationResult {
        id: String,
        #[serde(default)]
        trigger_type: String,
        #[serde(default)]
        function_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    /// Either way: call a function.
    InvokeFunction(InvokeFunction),
    /// Either way: the outcome of a call.
    InvocationResult(InvocationResult),
    /// Worker → gateway: first frame of a reconnect.
    Reattach {
        previous_worker_id: String,
        reattach_token: String,
    },
    /// Gateway → worker: a registration was refused.
    RegistrationRejected(RegistrationRejected),
    /// Application-level keepalive; answered with [`Frame::Pong`].
    Ping,
    /// Answer to [`Frame::Ping`].
    Pong,
    /// Gateway → worker (capgate extension): the caller gave up on a call.
    CancelInvocation {
        invocation_id: String,
        #[serde(default)]
        reason: String,
    },
    /// Gateway → worker (capgate extension): a frame could not be accepted.
    Error(ErrorBody),
}

/// `workerregistered`: the identity the gateway gives a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistered {
    pub worker_id: String,
    pub reattach_token: String,
}

/// `registerfunction`: the iii fields plus capgate's optional ones.
///
/// capgate's fields may also arrive inside `metadata`, because an iii SDK can
/// only send that; the catalog reads both places.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegisterFunction {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_format: Option<Value>,
    /// JSON Schema of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// An HTTP-invoked function (iii); not supported by capgate yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<Value>,
    // --- capgate additions ---
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Value>,
    /// How MCP clients see the function: `{"result": "content"}` for a
    /// function that returns MCP content, `{"requires": {"sampling": {}}}`
    /// for one that needs a client capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Value>,
}

/// `registertrigger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterTrigger {
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// What the caller expects back from an `invokefunction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InvocationAction {
    /// Fire-and-forget.
    Void,
    /// Put the call on a queue.
    Enqueue { queue: String },
}

/// `invokefunction`: a call, in either direction.
///
/// `D` is how `data` is held: a [`Payload`] everywhere; [`Frame::parse`]
/// reads it as text first (`Option<Box<RawValue>>`), which serde cannot do
/// through the tagged [`Frame`] enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvokeFunction<D = Payload> {
    /// Absent for fire-and-forget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    pub function_id: String,
    #[serde(default)]
    pub data: D,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<InvocationAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// capgate addition. From a caller: a version requirement such as
    /// `^1.2`. From the gateway to a capgate-aware provider: the exact
    /// version it resolved (`1.4.0`), so one worker can serve several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// capgate addition: how long the caller waits, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl InvokeFunction {
    /// A call of `function_id` with `data`; every optional field absent
    /// (fire-and-forget until an `invocation_id` is set).
    pub fn new(function_id: impl Into<String>, data: impl Into<Payload>) -> Self {
        Self {
            invocation_id: None,
            function_id: function_id.into(),
            data: data.into(),
            traceparent: None,
            baggage: None,
            action: None,
            metadata: None,
            version: None,
            timeout_ms: None,
        }
    }
}

impl InvokeFunction<Option<Box<RawValue>>> {
    /// The frame as read by [`Frame::parse`], its `data` kept as text.
    fn into_text_payload(self) -> InvokeFunction {
        InvokeFunction {
            invocation_id: self.invocation_id,
            function_id: self.function_id,
            data: self.data.map_or_else(Payload::null, Payload::Text),
            traceparent: self.traceparent,
            baggage: self.baggage,
            action: self.action,
            metadata: self.metadata,
            version: self.version,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// `invocationresult`: exactly one of `result` and `error` is meaningful.
///
/// Python sends `result: null` where Node omits it; both read as `None`.
///
/// `D` is how `result` is held, as for [`InvokeFunction`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationResult<D = Payload> {
    pub invocation_id: String,
    #[serde(default)]
    pub function_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<D>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
    /// capgate addition: something the caller should know, such as a
    /// deprecation notice. iii peers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl InvocationResult {
    /// The answer to call `invocation_id` of `function_id`; other fields absent.
    pub fn new(
        invocation_id: impl Into<String>,
        function_id: impl Into<String>,
        outcome: Result<Payload, ErrorBody>,
    ) -> Self {
        let (result, error) = match outcome {
            Ok(value) => (Some(value), None),
            Err(error) => (None, Some(error)),
        };
        Self {
            invocation_id: invocation_id.into(),
            function_id: function_id.into(),
            result,
            error,
            traceparent: None,
            baggage: None,
            warning: None,
        }
    }
}

impl InvocationResult<Box<RawValue>> {
    /// The frame as read by [`Frame::parse`], its `result` kept as text.
    fn into_text_payload(self) -> InvocationResult {
        InvocationResult {
            invocation_id: self.invocation_id,
            function_id: self.function_id,
            result: self.result.map(Payload::Text),
            error: self.error,
            traceparent: self.traceparent,
            baggage: self.baggage,
            warning: self.warning,
        }
    }
}

/// `registrationrejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRejected {
    pub code: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_worker_id: Option<String>,
    /// capgate addition: what was wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The error shape every peer understands: `{code, message, stacktrace?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            stacktrace: None,
        }
    }
}

impl Frame {
    /// Parses one frame of text. The two frames of every call
    /// (`invokefunction`, `invocationresult`) are read straight into their
    /// structs, their payload kept as text ([`Payload::Text`]): serde's
    /// internally tagged enum would first copy the whole frame, payload
    /// included, into an intermediate tree and read that again — a tenth of
    /// the gateway's CPU per call in a profile — and the payload would be
    /// built into values only to be written out again. Anything
    /// the direct read refuses goes through the enum, whose error messages
    /// are the ones documented.
    ///
    /// The tag is looked for first where writers put it: as the frame's
    /// first key (every SDK) or its last (writers that sort keys: serde's
    /// `json!`, Go's maps, `sort_keys` in Python). Reading it with serde
    /// would walk the whole frame once more (a serde struct reads to the
    /// end). Where it is neither, or where the rest of the frame could hold
    /// another `type` key (the text `"type"` or a `\u` escape anywhere in
    /// it), the frame is read twice as before, so a repeated `type` is
    /// refused whichever way the frame was read.
    ///
    /// Before all that, a call frame in its plain form (its own fields,
    /// each once, no escapes) is read by hand in one pass
    /// ([`call_read`]); serde reads everything else.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        match call_read::read(text) {
            Some(frame) => Ok(frame),
            None => Self::parse_with_serde(text),
        }
    }

    /// [`Frame::parse`] without the hand-read call frames.
    fn parse_with_serde(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let direct = match leading_tag(text).or_else(|| trailing_tag(text)) {
            Some((kind, rest)) if !may_name_type(rest) => Self::parse_direct(kind, text),
            _ => serde_json::from_str::<Tag>(text)
                .ok()
                .and_then(|tag| Self::parse_direct(&tag.kind, text)),
        };
        match direct {
            Some(frame) => Ok(frame),
            None => serde_json::from_str(text),
        }
    }

    /// A call or a result read straight into its struct; `None` for any
    /// other kind, or where the direct read refuses the frame.
    fn parse_direct(kind: &str, text: &str) -> Option<Self> {
        match kind {
            "invokefunction" => serde_json::from_str::<InvokeFunction<Option<Box<RawValue>>>>(text)
                .ok()
                .map(|call| Self::InvokeFunction(call.into_text_payload())),
            "invocationresult" => serde_json::from_str::<InvocationResult<Box<RawValue>>>(text)
                .ok()
                .map(|result| Self::InvocationResult(result.into_text_payload())),
            _ => None,
        }
    }

    /// The frame's `"type"` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WorkerRegistered(_) => "workerregistered",
            Self::RegisterFunction(_) => "registerfunction",
            Self::UnregisterFunction { .. } => "unregisterfunction",
            Self::RegisterTrigger(_) => "registertrigger",
            Self::UnregisterTrigger { .. } => "unregistertrigger",
            Self::RegisterTriggerType { .. } => "registertriggertype",
            Self::UnregisterTriggerType { .. } => "unregistertriggertype",
            Self::TriggerRegistrationResult { .. } => "triggerregistrationresult",
            Self::InvokeFunction(_) => "invokefunction",
            Self::InvocationResult(_) => "invocationresult",
            Self::Reattach { .. } => "reattach",
            Self::RegistrationRejected(_) => "registrationrejected",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::CancelInvocation { .. } => "cancelinvocation",
            Self::Error(_) => "error",
        }
    }

    /// Serializes the frame; the types here cannot fail to serialize.
    ///
    /// The text is written into room reserved for it up front: grown as it
    /// is written, a call's frame was reallocated several times, most of
    /// it while its payload was copied in.
    pub fn to_json(&self) -> String {
        let mut text = String::with_capacity(self.size_hint());
        let written = match self {
            Self::InvokeFunction(call) => call_text::invoke_function(call, &mut text),
            Self::InvocationResult(result) => Some(call_text::invocation_result(result, &mut text)),
            _ => None,
        };
        if let Some(Ok(())) = written {
            return text;
        }
        let mut text = text.into_bytes();
        text.clear();
        let written = serde_json::to_writer(&mut text, self)
            .map_err(|error| error.to_string())
            .and_then(|()| String::from_utf8(text).map_err(|error| error.to_string()));
        written.unwrap_or_else(|error| {
            // Unreachable for these types (string keys, no custom serializers);
            // degrade to a protocol error frame rather than panicking.
            format!(r#"{{"type":"error","code":"internal","message":"{error}"}}"#)
        })
    }

    /// Bytes to reserve for the frame's text: its payload as it came, and
    /// room for the envelope's short fields.
    fn size_hint(&self) -> usize {
        const ENVELOPE_BYTES: usize = 256;
        ENVELOPE_BYTES
            + match self {
                Self::InvokeFunction(call) => call.data.text_len(),
                Self::InvocationResult(result) => {
                    result.result.as_ref().map_or(0, Payload::text_len)
                }
                _ => 0,
            }
    }
}

/// The value of `"type"` when it is the object's first key and a plain
/// string (no escapes), and the text after it: `{"type":"ping"}` gives
/// `ping`. `None` otherwise, and then the caller reads the tag the long way.
fn leading_tag(text: &str) -> Option<(&str, &str)> {
    let rest = json_space(json_space(text).strip_prefix('{')?);
    let rest = json_space(rest.strip_prefix("\"type\"")?);
    let rest = json_space(rest.strip_prefix(':')?);
    let rest = rest.strip_prefix('"')?;
    let end = rest.find(['"', '\\'])?;
    let (kind, after) = rest.split_at(end);
    let after = json_space(after.strip_prefix('"')?);
    (after.starts_with(',') || after.starts_with('}')).then_some((kind, after))
}

/// The value of `"type"` when it is the object's last key (not its only
/// one) and a plain string, and the text before it: `{"a":1,"type":"ping"}`
/// gives `ping` and `{"a":1`. Read from the end: every quote it relies on is
/// preceded by `,`, `:` or the tag's letters, never by `\\`, so none of them
/// is an escaped quote inside a string, and in valid JSON the final member
/// of the outer object is then this one. `None` otherwise.
fn trailing_tag(text: &str) -> Option<(&str, &str)> {
    let body = json_space_end(json_space_end(text).strip_suffix('}')?);
    let body = body.strip_suffix('"')?;
    let start = body.rfind(['"', '\\'])?;
    let (before, kind) = body.split_at(start);
    let kind = kind.strip_prefix('"')?;
    let before = json_space_end(json_space_end(before).strip_suffix(':')?);
    let before = json_space_end(before.strip_suffix("\"type\"")?);
    let rest = before.strip_suffix(',')?;
    Some((kind, rest))
}

/// Whether `rest` could hold a `type` key: spelled plainly, or with an
/// escape (`"\u0074ype"` is the same key to a JSON parser).
fn may_name_type(rest: &str) -> bool {
    rest.contains("\"type\"") || rest.contains("\\u")
}

/// `text` without the JSON whitespace it starts with.
fn json_space(text: &str) -> &str {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
}

/// `text` without the JSON whitespace it ends with.
fn json_space_end(text: &str) -> &str {
    text.trim_end_matches([' ', '\t', '\n', '\r'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_tag_is_read_off_the_front_only_when_it_is_the_first_key() {
        assert_eq!(leading_tag(r#"{"type":"ping"}"#), Some(("ping", "}")));
        assert_eq!(
            leading_tag(" {\n \"type\" : \"invocationresult\" ,\"invocation_id\":\"i\"}")
                .map(|(kind, _)| kind),
            Some("invocationresult")
        );
        for elsewhere in [
            r#"{"invocation_id":"i","type":"invocationresult"}"#,
            r#"{"type":"invoke\u0066unction","function_id":"f"}"#,
            r#"{"type":"ping""#,
            r#"{"type":1}"#,
            r#"["type","ping"]"#,
            "",
        ] {
            assert_eq!(leading_tag(elsewhere), None, "{elsewhere}");
        }
    }

    #[test]
    fn the_tag_is_read_off_the_back_only_when_it_is_the_last_key() {
        assert_eq!(
            trailing_tag(r#"{"a":1,"type":"ping"}"#),
            Some(("ping", r#"{"a":1"#))
        );
        assert_eq!(
            trailing_tag("{\"a\":{\"b\":\"}\"} ,\n \"type\" : \"invocationresult\" }\n")
                .map(|(kind, _)| kind),
            Some("invocationresult")
        );
        for elsewhere in [
            // Not last, the only key (read off the front), not a plain string.
            r#"{"type":"invocationresult","invocation_id":"i"}"#,
            r#"{"type":"ping"}"#,
            r#"{"a":1,"type":"invoke\u0066unction"}"#,
            r#"{"a":1,"type":1}"#,
            // Inside a string, escaped: the text of a tag, not a tag.
            r#"{"a":"x\",\"type\":\"ping"}"#,
            r#"{"a":"x,\"type\":\"ping\"}"}"#,
            r#"{"a\"type":"ping"}"#,
            r#"["a","type","ping"]"#,
            "",
        ] {
            assert_eq!(trailing_tag(elsewhere), None, "{elsewhere}");
        }
    }

    #[test]
    fn calls_and_results_keep_their_payload_as_text_wherever_the_tag_is() {
        for text in [
            r#"{"type":"invokefunction","invocation_id":"i","function_id":"f","data":{"a":1}}"#,
            r#"{"function_id":"f","invocation_id":"i","data":{"a":1},"type":"invokefunction"}"#,
        ] {
            let Ok(Frame::InvokeFunction(call)) = Frame::parse(text) else {
                panic!("not a call: {text}")
            };
            assert!(call.data.is_text(), "{text}");
        }
        for text in [
            r#"{"type":"invocationresult","invocation_id":"i","result":[1,2]}"#,
            r#"{"invocation_id":"i","result":[1,2],"type":"invocationresult"}"#,
        ] {
            let Ok(Frame::InvocationResult(result)) = Frame::parse(text) else {
                panic!("not a result: {text}")
            };
            assert!(
                result.result.as_ref().is_some_and(Payload::is_text),
                "{text}"
            );
        }
        // A tag at the front that the direct read refuses still gets the
        // enum's own error.
        let error = Frame::parse(r#"{"type":"invokefunction","data":{}}"#)
            .expect_err("function_id is required");
        assert!(error.to_string().contains("function_id"), "{error}");
    }

    #[test]
    fn reads_frames_recorded_from_the_node_sdk() {
        let frame: Frame = serde_json::from_value(json!({
            "type": "invokefunction", "message_type": "invokefunction",
            "function_id": "engine::workers::register",
            "data": {"name": "w"}, "action": {"type": "void"}
        }))
        .unwrap();
        let Frame::InvokeFunction(call) = frame else {
            panic!("wrong variant")
        };
        assert_eq!(call.invocation_id, None);
        assert_eq!(call.action, Some(InvocationAction::Void));
    }

    #[test]
    fn python_null_result_reads_as_none() {
        let frame: Frame = serde_json::from_value(json!({
            "type": "invocationresult", "invocation_id": "i", "function_id": "f",
            "result": null, "error": {"code": "invocation_failed", "message": "boom"}
        }))
        .unwrap();
        let Frame::InvocationResult(result) = frame else {
            panic!("wrong variant")
        };
        assert_eq!(result.result, None);
        assert_eq!(result.error.unwrap().code, "invocation_failed");
    }

    /// Read off the front or the long way, a repeated `type` is refused as
    /// serde refuses it, however the second one is spelled; a payload
    /// holding a `type` of its own is still a call.
    #[test]
    fn a_frame_that_repeats_its_type_is_refused_however_it_is_read() {
        for text in [
            r#"{"type":"invokefunction","function_id":"f","type":"ping"}"#,
            r#"{"type":"invokefunction","function_id":"f","\u0074ype":"ping"}"#,
            r#"{"type":"ping","type":"invokefunction","function_id":"f"}"#,
            r#"{"function_id":"f","type":"invokefunction","type":"ping"}"#,
            r#"{"function_id":"f","type":"ping","type":"invokefunction"}"#,
            r#"{"function_id":"f","\u0074ype":"ping","type":"invokefunction"}"#,
        ] {
            let error = Frame::parse(text).expect_err(text);
            assert!(
                error.to_string().contains("duplicate field"),
                "{text}: {error}"
            );
        }
        let text = r#"{"type":"invokefunction","function_id":"f","data":{"type":"order","note":"\u00e9"}}"#;
        let Ok(Frame::InvokeFunction(call)) = Frame::parse(text) else {
            panic!("not read as a call")
        };
        assert_eq!(call.function_id, "f");
        assert_eq!(call.data.to_json(), r#"{"type":"order","note":"\u00e9"}"#);
        let text = r#"{"data":{"type":"order"},"function_id":"f","type":"invokefunction"}"#;
        let Ok(Frame::InvokeFunction(call)) = Frame::parse(text) else {
            panic!("not read as a call")
        };
        assert_eq!(call.data.to_json(), r#"{"type":"order"}"#);
    }

    #[test]
    fn frames_are_written_as_serde_writes_them_whatever_room_was_reserved() {
        let payload = format!(r#"{{"lines":[{}]}}"#, vec!["\"é\\n\""; 500].join(","));
        for text in [
            format!(r#"{{"type":"invokefunction","invocation_id":"i","function_id":"f","data":{payload}}}"#),
            format!(r#"{{"type":"invocationresult","invocation_id":"i","function_id":"f","result":{payload}}}"#),
            r#"{"type":"invocationresult","invocation_id":"i","function_id":"f","error":{"code":"c","message":"m"}}"#.to_owned(),
            r#"{"type":"ping"}"#.to_owned(),
        ] {
            let frame = Frame::parse(&text).unwrap();
            assert_eq!(frame.to_json(), serde_json::to_string(&frame).unwrap());
            assert_eq!(Frame::parse(&frame.to_json()).unwrap(), frame);
        }
    }

    #[test]
    fn writes_tags_as_the_iii_engine_does() {
        let text = Frame::WorkerRegistered(WorkerRegistered {
            worker_id: "w".into(),
            reattach_token: "t".into(),
        })
        .to_json();
        assert_eq!(
            text,
            r#"{"type":"workerregistered","worker_id":"w","reattach_token":"t"}"#
        );
        assert_eq!(Frame::Pong.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(Frame::Pong.kind(), "pong");
        let text = Frame::RegisterFunction(Box::new(RegisterFunction {
            id: "a::b".into(),
            ..Default::default()
        }))
        .to_json();
        assert_eq!(text, r#"{"type":"registerfunction","id":"a::b"}"#);
    }

    #[test]
    fn a_call_frame_the_direct_read_refuses_gets_the_enums_error() {
        for text in [
            r#"{"type":"invokefunction","invocation_id":"c-1","data":{}}"#,
            r#"{"type":"invocationresult","result":1}"#,
            r#"{"type":"invokefunction","function_id":7}"#,
        ] {
            let direct = Frame::parse(text).unwrap_err().to_string();
            let enumerated = serde_json::from_str::<Frame>(text).unwrap_err().to_string();
            assert_eq!(direct, enumerated, "{text}");
        }
        let call = Frame::parse(
            r#"{"type":"invokefunction","invocation_id":"c-1","function_id":"a::b","data":{"n":[1,2.5,"x"]},"timeout_ms":5}"#,
        )
        .unwrap();
        let Frame::InvokeFunction(call) = call else {
            panic!("{call:?}");
        };
        assert_eq!(call.data, serde_json::json!({"n": [1, 2.5, "x"]}));
        assert!(call.data.is_text(), "{:?}", call.data);
        assert_eq!(call.timeout_ms, Some(5));
    }

    #[test]
    fn unknown_type_is_an_error_not_a_panic() {
        let error = serde_json::from_str::<Frame>(r#"{"type":"nonsense"}"#).unwrap_err();
        assert!(error.to_string().contains("nonsense"), "{error}");
    }

    #[test]
    fn every_recorded_transcript_frame_parses() {
        // Recorded sessions of the published iii SDKs, kept in the
        // repository (tests/transcripts/README.md says how they were made).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| {
            panic!(
                "the transcripts at {} cannot be read: {error}",
                dir.display()
            )
        });
        let mut parsed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Channel sockets carry frames of their own: follow each
            // connection's handshake path and read only the main socket's.
            let mut main_connections = std::collections::HashSet::new();
            for line in text.lines() {
                let record: Value = serde_json::from_str(line).unwrap();
                if record["event"] == "handshake" && record["path"] == "/" {
                    main_connections.insert(record["conn"].as_u64());
                }
                let Some(frame) = record.get("frame") else {
                    continue;
                };
                if !main_connections.contains(&record["conn"].as_u64()) {
                    continue;
                }
                let parsed_frame =
                    serde_json::from_value::<Frame>(frame.clone()).unwrap_or_else(|e| {
                        panic!("{}: {e}: {frame}", path.display());
                    });
                // The direct read of call frames reads exactly what the enum reads.
                let text = frame.to_string();
                assert_eq!(
                    Frame::parse(&text).unwrap(),
                    parsed_frame,
                    "{}: {text}",
                    path.display()
                );
                parsed += 1;
            }
        }
        assert!(
            parsed > 100,
            "only {parsed} frames parsed from {}",
            dir.display()
        );
    }
}

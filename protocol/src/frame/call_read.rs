//! The two frames of every call, `invokefunction` and `invocationresult`,
//! read by hand when they are in their plain form.
//!
//! Read through serde, a call frame goes through the derived struct
//! visitor: every key parsed and matched, every optional field through its
//! own `Option` visitor — about 2,800 instructions a frame in the gateway,
//! which reads two frames for every call it routes (callgrind). The plain
//! form — the fields of the frame and nothing else, each once, strings
//! without escapes, `timeout_ms` a plain integer — is read here in one pass
//! over the envelope; the payload (`data`, `result`) is checked as
//! serde_json checks a `RawValue` and kept as text
//! ([`Payload::read_from`]). Anything else —
//! an escape, a repeated or unknown key, an `error` body, trailing text —
//! gives `None`, and the frame is read by serde as it always was. What is
//! read here is exactly what serde reads (a test compares the two over the
//! recorded SDK sessions and over frames written to find the differences).

use capgate_payload::Payload;
use serde_json::value::RawValue;

use super::{Frame, InvocationResult, InvokeFunction};

/// A call frame in its plain form, or `None` to leave it to serde.
pub(super) fn read(text: &str) -> Option<Frame> {
    let mut reader = Reader { text, at: 0 };
    let mut found = Found::default();
    reader.expect(b'{')?;
    loop {
        reader.space();
        let key = reader.plain_string()?;
        reader.expect(b':')?;
        reader.space();
        match key {
            "type" => once(&mut found.kind, reader.plain_string()?)?,
            "invocation_id" => once(&mut found.invocation_id, reader.string_or_null()?)?,
            "function_id" => once(&mut found.function_id, reader.string_or_null()?)?,
            "data" => once(&mut found.data, reader.payload_or_null()?)?,
            "result" => once(&mut found.result, reader.payload_or_null()?)?,
            "traceparent" => once(&mut found.traceparent, reader.string_or_null()?)?,
            "baggage" => once(&mut found.baggage, reader.string_or_null()?)?,
            "version" => once(&mut found.version, reader.string_or_null()?)?,
            "warning" => once(&mut found.warning, reader.string_or_null()?)?,
            "timeout_ms" => once(&mut found.timeout_ms, reader.integer_or_null()?)?,
            _ => return None,
        }
        reader.space();
        match reader.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    reader.space();
    if reader.at != text.len() {
        return None;
    }
    found.into_frame()
}

/// What a key held: absent (`None`), `null` (`Some(None)`) or a value.
type Slot<T> = Option<Option<T>>;

/// Every key the plain form of either frame may have.
#[derive(Default)]
struct Found<'a> {
    kind: Option<&'a str>,
    invocation_id: Slot<&'a str>,
    function_id: Slot<&'a str>,
    data: Slot<Payload>,
    result: Slot<Payload>,
    traceparent: Slot<&'a str>,
    baggage: Slot<&'a str>,
    version: Slot<&'a str>,
    warning: Slot<&'a str>,
    timeout_ms: Slot<u64>,
}

/// Fills a slot once: a repeated key is an error to serde's derived
/// reader, so it is left to serde to say so.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

fn owned(slot: Slot<&str>) -> Option<String> {
    slot.flatten().map(str::to_owned)
}

impl Found<'_> {
    fn into_frame(self) -> Option<Frame> {
        match self.kind? {
            // A key of the other frame would be an unknown field, which
            // serde skips; left to it rather than judged here.
            "invokefunction" if self.result.is_none() && self.warning.is_none() => {
                Some(Frame::InvokeFunction(InvokeFunction {
                    invocation_id: owned(self.invocation_id),
                    // Required, and `null` is not a string.
                    function_id: self.function_id??.to_owned(),
                    data: self.data.flatten().unwrap_or_else(Payload::null),
                    traceparent: owned(self.traceparent),
                    baggage: owned(self.baggage),
                    action: None,
                    metadata: None,
                    version: owned(self.version),
                    timeout_ms: self.timeout_ms.flatten(),
                }))
            }
            "invocationresult"
                if self.data.is_none() && self.version.is_none() && self.timeout_ms.is_none() =>
            {
                Some(Frame::InvocationResult(InvocationResult {
                    invocation_id: self.invocation_id??.to_owned(),
                    // Defaults to empty when absent; `null` is not a string.
                    function_id: match self.function_id {
                        None => String::new(),
                        Some(id) => id?.to_owned(),
                    },
                    result: self.result.flatten(),
                    error: None,
                    traceparent: owned(self.traceparent),
                    baggage: owned(self.baggage),
                    warning: owned(self.warning),
                }))
            }
            _ => None,
        }
    }
}

/// A position in the frame's text.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Skips JSON whitespace.
    fn space(&mut self) {
        self.at = capgate_payload::skip_json_space(self.bytes(), self.at);
    }

    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes().get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.space();
        (self.next()? == byte).then_some(())
    }

    /// A string with nothing escaped (and so no control character, which
    /// JSON forbids unescaped): the text between its quotes.
    fn plain_string(&mut self) -> Option<&'a str> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.at;
        let length = capgate_payload::plain_len(self.bytes().get(start..)?);
        if self.bytes().get(start + length) != Some(&b'"') {
            return None;
        }
        self.at = start + length + 1;
        // Both ends are ASCII quotes, so both are character boundaries.
        self.text.get(start..start + length)
    }

    fn null(&mut self) -> Option<()> {
        let rest = self.text.get(self.at..)?;
        rest.starts_with("null").then(|| self.at += 4)
    }

    fn string_or_null(&mut self) -> Option<Option<&'a str>> {
        match self.bytes().get(self.at)? {
            b'n' => self.null().map(|()| None),
            _ => self.plain_string().map(Some),
        }
    }

    /// Any JSON value, accepted exactly where the derived reader accepts a
    /// `RawValue` (`null` is none, as it is for an `Option` there): read
    /// by [`Payload::read_from`] in one pass, or — nested deeper than that
    /// follows — by serde_json itself.
    fn payload_or_null(&mut self) -> Option<Option<Payload>> {
        let rest = self.text.get(self.at..)?;
        let (payload, len) = match Payload::read_from(rest) {
            Some(read) => read,
            None => {
                let mut values =
                    serde_json::Deserializer::from_str(rest).into_iter::<Box<RawValue>>();
                let raw = values.next()?.ok()?;
                (Payload::Text(raw), values.byte_offset())
            }
        };
        let null = rest.get(..len)? == "null";
        self.at += len;
        Some((!null).then_some(payload))
    }

    /// A non-negative integer as serde reads a `u64`: no sign, no fraction
    /// or exponent, no leading zero, no overflow — or `null`.
    fn integer_or_null(&mut self) -> Option<Option<u64>> {
        if self.bytes().get(self.at)? == &b'n' {
            return self.null().map(|()| None);
        }
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(&digit @ b'0'..=b'9') = self.bytes().get(self.at) {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        let leading_zero = digits > 1 && self.bytes()[start] == b'0';
        let continues = matches!(self.bytes().get(self.at), Some(b'.' | b'e' | b'E'));
        (digits > 0 && !leading_zero && !continues).then_some(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame as serde reads it, for comparison: `Debug` tells text
    /// payloads from values, which equality does not.
    fn by_serde(text: &str) -> Result<String, String> {
        Frame::parse_with_serde(text)
            .map(|frame| format!("{frame:?}"))
            .map_err(|error| error.to_string())
    }

    /// Payloads are text either way; serde's reader keeps them as a
    /// `RawValue`, this one as checked text (`Built`).
    fn same_as_serde(text: &str) -> bool {
        match read(text) {
            Some(frame) => {
                let here = format!("{frame:?}").replace("Built(", "Text(");
                assert_eq!(Ok(here), by_serde(text), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn plain_call_frames_are_read_here_exactly_as_serde_reads_them() {
        for text in [
            r#"{"type":"invokefunction","invocation_id":"c-1","function_id":"bench::echo","data":{"n":1}}"#,
            r#"{"type":"invocationresult","invocation_id":"c-1","function_id":"bench::echo","result":{"n":1}}"#,
            " {\n\t\"invocation_id\" : \"c-1\" , \"function_id\":\"a::b\",\"data\": [1, \"x\\\"y\", {\"k\": null}] ,\"type\":\"invokefunction\" } ",
            r#"{"type":"invokefunction","function_id":"a::b"}"#,
            r#"{"type":"invokefunction","function_id":"a::b","data":null,"invocation_id":null}"#,
            r#"{"type":"invokefunction","function_id":"a::b","data":"text","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","baggage":"k=v","version":"^1.2","timeout_ms":0}"#,
            r#"{"type":"invokefunction","function_id":"é::ü😀","data":1.50,"timeout_ms":18446744073709551615}"#,
            r#"{"type":"invokefunction","function_id":"a::b","data":-0.0e+1,"timeout_ms":null}"#,
            r#"{"type":"invocationresult","invocation_id":"c-2"}"#,
            r#"{"type":"invocationresult","invocation_id":"c-2","result":null,"function_id":"a::b"}"#,
            r#"{"type":"invocationresult","invocation_id":"c-2","result":true,"warning":"deprecated","traceparent":null,"baggage":"b"}"#,
        ] {
            assert!(same_as_serde(text), "not read here: {text}");
        }
    }

    #[test]
    fn anything_but_the_plain_form_is_left_to_serde() {
        for text in [
            // Escapes, in a key or a string.
            r#"{"type":"invokefunction","function_id":"a::\u0062"}"#,
            r#"{"\u0074ype":"invokefunction","function_id":"a::b"}"#,
            r#"{"type":"invokefunction","function_id":"a::b","invocation_id":"c\"1"}"#,
            "{\"type\":\"invokefunction\",\"function_id\":\"a::b\tc\"}",
            // A key twice, the type among them.
            r#"{"type":"invokefunction","function_id":"a::b","function_id":"a::c"}"#,
            r#"{"type":"invokefunction","function_id":"a::b","type":"ping"}"#,
            // Keys of no call frame, or of the other one.
            r#"{"type":"invokefunction","function_id":"a::b","action":{"type":"void"}}"#,
            r#"{"type":"invokefunction","function_id":"a::b","metadata":{}}"#,
            r#"{"type":"invokefunction","function_id":"a::b","result":1}"#,
            r#"{"type":"invocationresult","invocation_id":"c","error":{"code":"x","message":"y"}}"#,
            r#"{"type":"invocationresult","invocation_id":"c","data":1}"#,
            r#"{"type":"invocationresult","invocation_id":"c","timeout_ms":1}"#,
            // Required fields missing or null; a null where a string is due.
            r#"{"type":"invokefunction","data":1}"#,
            r#"{"type":"invokefunction","function_id":null}"#,
            r#"{"type":"invocationresult","function_id":"a::b"}"#,
            r#"{"type":"invocationresult","invocation_id":"c","function_id":null}"#,
            // Numbers serde does not read as a u64.
            r#"{"type":"invokefunction","function_id":"a::b","timeout_ms":-1}"#,
            r#"{"type":"invokefunction","function_id":"a::b","timeout_ms":1.5}"#,
            r#"{"type":"invokefunction","function_id":"a::b","timeout_ms":1e3}"#,
            r#"{"type":"invokefunction","function_id":"a::b","timeout_ms":01}"#,
            r#"{"type":"invokefunction","function_id":"a::b","timeout_ms":18446744073709551616}"#,
            r#"{"type":"invokefunction","function_id":"a::b","timeout_ms":"5"}"#,
            // Not a value, not one object, or another frame.
            r#"{"type":"invokefunction","function_id":"a::b","data":{"n":}}"#,
            r#"{"type":"invokefunction","function_id":"a::b","data":nul}"#,
            r#"{"type":"invokefunction","function_id":"a::b"} {}"#,
            r#"{"type":"invokefunction","function_id":"a::b",}"#,
            r#"{"type":"invokefunction","function_id":"a::b""#,
            r#"{"type":"ping"}"#,
            r#"{"type":1,"function_id":"a::b"}"#,
            "{}",
            "[]",
            "",
        ] {
            assert!(read(text).is_none(), "read here: {text}");
            // Whatever serde makes of it is what parsing makes of it.
            assert_eq!(
                Frame::parse(text)
                    .map(|f| format!("{f:?}"))
                    .map_err(|e| e.to_string()),
                by_serde(text),
                "{text}"
            );
        }
    }

    #[test]
    fn a_deeply_nested_payload_is_read_as_serde_reads_it() {
        // serde_json reads a raw value without its recursion limit (that
        // limit applies where the payload is parsed into values).
        let deep = format!(
            r#"{{"type":"invokefunction","function_id":"a::b","data":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(same_as_serde(&deep));
        let unclosed = format!(
            r#"{{"type":"invokefunction","function_id":"a::b","data":{}}}"#,
            "[".repeat(200)
        );
        assert!(read(&unclosed).is_none());
        assert!(Frame::parse(&unclosed).is_err());
    }

    #[test]
    fn recorded_call_frames_read_here_as_serde_reads_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
        let mut read_here = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                let Some(frame) = record.get("frame") else {
                    continue;
                };
                // Compact, and pretty-printed (whitespace between tokens).
                let compact = frame.to_string();
                let spaced = serde_json::to_string_pretty(frame).unwrap();
                for text in [compact, spaced] {
                    if same_as_serde(&text) {
                        read_here += 1;
                    }
                }
            }
        }
        assert!(read_here > 50, "only {read_here} recorded frames read here");
    }
}

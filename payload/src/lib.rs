//! # capgate-payload
//!
//! A call's data as it travels: the JSON text it arrived as, parsed only
//! when something needs to look inside.
//!
//! A worker's call to a function without schemas passes through the
//! gateway untouched: its `data` goes to the provider and the provider's
//! `result` back to the caller as the text they were, without being built
//! into a tree of values and written out again (which, for a payload of a
//! megabyte, is most of what the gateway would spend on the call). Where
//! something does look inside — a JSON Schema, a built-in function, an MCP
//! client's structured result — [`Payload::to_value`] parses it.
//!
//! Owns: [`Payload`] and [`PayloadError`]. Must not know: frames, calls,
//! schemas or where a payload goes. The worker protocol and the catalog
//! both carry it; it depends on neither.
#![forbid(unsafe_code)]

mod scan;

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON value, either still the text it arrived as or already a value.
#[derive(Clone)]
pub enum Payload {
    /// Valid JSON text, not parsed.
    Text(Box<RawValue>),
    /// Valid JSON text checked here ([`Payload::read_from`]) or built here
    /// from text that was valid (an object with a member appended,
    /// [`Payload::with_string_field`]): not parsed again to make a
    /// [`RawValue`] of it — for every call a worker makes, and the whole
    /// payload each time.
    Built(Box<str>),
    /// A value built in memory (or parsed from text).
    Value(Value),
}

/// Text the JSON parser accepted that is still not a value capgate can
/// hold, such as a number beyond the range of a 64-bit float (`1e400`).
#[derive(Debug, thiserror::Error)]
#[error(
    "the payload is JSON but not a value capgate can read ({0}); send numbers within the range of a 64-bit float"
)]
pub struct PayloadError(#[source] serde_json::Error);

impl Payload {
    /// `null`.
    pub fn null() -> Self {
        Self::Value(Value::Null)
    }

    /// The JSON value `text` opens with (no whitespace before it), kept as
    /// text, and its length in bytes; what follows it is not looked at.
    /// `None` when it is not a value serde_json reads as raw JSON text —
    /// or when it nests more than 128 levels deep, which is left to
    /// serde_json's own reader (a `Box<RawValue>`, [`Payload::Text`]).
    pub fn read_from(text: &str) -> Option<(Self, usize)> {
        let len = scan::value_len(text)?;
        let value = text.get(..len)?;
        Some((Self::Built(value.into()), len))
    }

    /// Whether it is still the text it came as (or was built as), not a
    /// tree of values.
    pub fn is_text(&self) -> bool {
        self.text().is_some()
    }

    /// Its JSON text, when it is still text.
    fn text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text.get()),
            Self::Built(text) => Some(text),
            Self::Value(_) => None,
        }
    }

    /// The payload as a value, parsed when it is still text.
    pub fn to_value(&self) -> Result<Cow<'_, Value>, PayloadError> {
        let text = match self {
            Self::Value(value) => return Ok(Cow::Borrowed(value)),
            Self::Text(text) => text.get(),
            Self::Built(text) => text,
        };
        serde_json::from_str(text)
            .map(Cow::Owned)
            .map_err(PayloadError)
    }

    /// The payload as a value, parsed when it is still text.
    pub fn into_value(self) -> Result<Value, PayloadError> {
        match self {
            Self::Value(value) => Ok(value),
            Self::Text(text) => serde_json::from_str(text.get()).map_err(PayloadError),
            Self::Built(text) => serde_json::from_str(&text).map_err(PayloadError),
        }
    }

    /// Whether the payload is a JSON object (text is not parsed for this).
    pub fn is_object(&self) -> bool {
        match self {
            Self::Value(value) => value.is_object(),
            _ => self.text().is_some_and(is_object_text),
        }
    }

    /// The payload with `key` set to the string `value` when it is an
    /// object; any other payload unchanged. Text is parsed only when it may
    /// already hold the key (the key between quotes anywhere, or an escape
    /// that could spell it): otherwise the member is appended to the text
    /// as it is.
    /// Either way the key appears once, so no parser — first or last of
    /// repeated keys wins — can read a value the sender put there.
    pub fn with_string_field(self, key: &str, value: &str) -> Result<Self, PayloadError> {
        let payload = match self {
            Self::Value(Value::Object(mut map)) => {
                map.insert(key.to_owned(), Value::String(value.to_owned()));
                return Ok(Self::Value(Value::Object(map)));
            }
            other if !other.is_object() => return Ok(other),
            other => other,
        };
        let Some(text) = payload.text() else {
            return Ok(payload);
        };
        let plain_key = plain_len(key.as_bytes()) == key.len();
        // JSON whitespace is ASCII, and valid JSON has no other ASCII
        // whitespace outside its strings.
        let body = text
            .trim_ascii()
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'));
        match body {
            Some(body) if plain_key && !may_hold_key(text, key) => {
                // Built in one allocation of exactly its length (the text
                // is boxed at that length, so room to spare would be one
                // more allocation and a copy): this runs for every call a
                // worker makes.
                let mut joined = String::with_capacity(body.len() + key.len() + value.len() + 8);
                joined.push('{');
                if !body.trim_ascii().is_empty() {
                    joined.push_str(body);
                    joined.push(',');
                }
                joined.push('"');
                joined.push_str(key);
                joined.push_str("\":");
                push_json_string(&mut joined, value).map_err(PayloadError)?;
                joined.push('}');
                Ok(Self::Built(joined.into_boxed_str()))
            }
            _ => match serde_json::from_str(text).map_err(PayloadError)? {
                Value::Object(mut map) => {
                    map.insert(key.to_owned(), Value::String(value.to_owned()));
                    Ok(Self::Value(Value::Object(map)))
                }
                other => Ok(Self::Value(other)),
            },
        }
    }

    /// The length of its text when it is still text (0 for a value, whose
    /// length is not known without writing it): room to reserve for
    /// writing it out.
    pub fn text_len(&self) -> usize {
        self.text().map_or(0, str::len)
    }

    /// The payload as JSON text.
    pub fn to_json(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text.get()),
            Self::Built(text) => Cow::Borrowed(text),
            Self::Value(value) => Cow::Owned(value.to_string()),
        }
    }
}

/// Whether JSON `text` may hold the plain `key` as a member name: it
/// holds the key between quotes, or an escape that could spell one of its
/// characters (`\u`, or `\/` for a slash; the other escapes spell
/// characters a plain key does not have). One pass from quote to quote (a
/// short payload made `str::contains`, run twice, the largest part of
/// appending the caller's id to every call).
fn may_hold_key(text: &str, key: &str) -> bool {
    let (bytes, key) = (text.as_bytes(), key.as_bytes());
    let mut at = 0;
    while let Some(rest) = bytes.get(at..) {
        at += plain_len(rest);
        match bytes.get(at) {
            None => return false,
            Some(b'\\') => match bytes.get(at + 1) {
                Some(b'u' | b'/') => return true,
                // The escaped character is stepped over with it.
                _ => at += 1,
            },
            Some(b'"') => {
                let after = bytes.get(at + 1..).unwrap_or_default();
                if after.starts_with(key) && after.get(key.len()) == Some(&b'"') {
                    return true;
                }
            }
            // Whitespace between tokens.
            Some(_) => {}
        }
        at += 1;
    }
    false
}

/// Appends `value` as a JSON string: as it is between quotes when nothing
/// in it needs escaping (a worker id never does), else as serde writes it.
pub fn push_json_string(text: &mut String, value: &str) -> Result<(), serde_json::Error> {
    if plain_len(value.as_bytes()) < value.len() {
        text.push_str(&serde_json::to_string(value)?);
    } else {
        text.push('"');
        text.push_str(value);
        text.push('"');
    }
    Ok(())
}

/// How many bytes `bytes` starts with that JSON writes as they are in a
/// string: up to the first quote, backslash or U+0000 to U+001F (no byte
/// of any other character is one of these), or all of them.
///
/// Eight bytes at a time — every id of every frame a call sends or reads
/// passes here — with the word tests of "Bit Twiddling Hacks" (a byte
/// below `n`; a byte equal to `c` is a byte of `word ^ c` below 1). A test
/// can flag bytes above a byte that matched, never below one, so the
/// lowest flagged byte is the first match.
pub fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut start = 0;
    for chunk in &mut chunks {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        let word = u64::from_le_bytes(eight);
        let flagged = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if flagged != 0 {
            // Little-endian: the lowest bit is the first byte.
            return start + (flagged.trailing_zeros() / 8) as usize;
        }
        start += 8;
    }
    start
        + chunks
            .remainder()
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(chunks.remainder().len())
}

/// Where the JSON whitespace (serde_json's four bytes: space, tab, line
/// feed, carriage return) that starts at `at` ends. Shared by the payload
/// scan and the call-frame reader, which step over it between every token.
#[inline]
pub fn skip_json_space(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Valid JSON text is an object exactly when it opens with `{`.
fn is_object_text(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

impl Default for Payload {
    fn default() -> Self {
        Self::null()
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::Value(value)
    }
}

impl From<Box<RawValue>> for Payload {
    fn from(text: Box<RawValue>) -> Self {
        Self::Text(text)
    }
}

/// Payloads are equal when their values are: text and value compare by
/// content, not by spelling.
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        match (self.to_value(), other.to_value()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.to_json() == other.to_json(),
        }
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value().is_ok_and(|value| *value == *other)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => write!(f, "Text({})", text.get()),
            Self::Built(text) => write!(f, "Built({text})"),
            Self::Value(value) => write!(f, "Value({value})"),
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => text.serialize(serializer),
            // Only serde's own path writes raw text, through a `RawValue`:
            // made (and so checked) here, off the hot path — a call's
            // frames are written without serde.
            Self::Built(text) => RawValue::from_string(text.to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
            Self::Value(value) => value.serialize(serializer),
        }
    }
}

/// Read as a value: this works from any serde source, including the
/// buffered content of an internally tagged enum, which text cannot be read
/// from. A reader that wants the text reads `Box<RawValue>` straight from
/// the JSON and wraps it ([`Payload::Text`]).
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_len_stops_at_the_first_byte_json_escapes_wherever_it_is() {
        let escaped = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        for len in 1..=19 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let plain = if escaped(byte) { at } else { len };
                    assert_eq!(plain_len(&bytes), plain, "{byte:#x} at {at} of {len}");
                    // A second match after the first does not move it.
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                        let plain = if escaped(byte) { at } else { at + 1 };
                        assert_eq!(
                            plain_len(&bytes),
                            plain,
                            "{byte:#x} at {at} of {len}, then a quote"
                        );
                    }
                }
            }
        }
        // Bytes just above each boundary, and non-ASCII text, need none.
        assert_eq!(plain_len(b"     !!!!####[[[[]]]]"), 21);
        let text = "é😀\u{2028}\u{7f}ÿÿÿÿÿÿÿÿ";
        assert_eq!(plain_len(text.as_bytes()), text.len());
        assert_eq!(plain_len(b""), 0);
    }

    fn text(json: &str) -> Payload {
        Payload::Text(RawValue::from_string(json.to_owned()).unwrap())
    }

    #[test]
    fn text_is_written_out_exactly_as_it_came() {
        let spelled = r#"{ "b" :1,"a":[1.50, "\u00e9"] }"#;
        let payload = text(spelled);
        assert_eq!(serde_json::to_string(&payload).unwrap(), spelled);
        #[derive(Serialize)]
        struct Frame<'a> {
            data: &'a Payload,
        }
        assert_eq!(
            serde_json::to_string(&Frame { data: &payload }).unwrap(),
            format!(r#"{{"data":{spelled}}}"#)
        );
        assert_eq!(payload, json!({"a": [1.5, "é"], "b": 1}));
        assert_eq!(payload, Payload::from(json!({"b": 1, "a": [1.5, "é"]})));
    }

    #[test]
    fn a_field_added_to_text_appears_once_whatever_the_sender_wrote() {
        let add = |payload: Payload| {
            payload
                .with_string_field("_caller_worker_id", "w-1\"x")
                .unwrap()
        };
        // Nothing to replace: appended to the text, which is not parsed.
        let appended = add(text(r#" {"n":1} "#));
        assert!(matches!(appended, Payload::Built(_)));
        assert_eq!(
            appended.to_json(),
            r#"{"n":1,"_caller_worker_id":"w-1\"x"}"#
        );
        // Written the same through serde, and again appended to as text.
        assert_eq!(
            serde_json::to_string(&appended).unwrap(),
            appended.to_json()
        );
        let twice = appended.with_string_field("b", "2").unwrap();
        assert!(matches!(twice, Payload::Built(_)));
        assert_eq!(
            twice,
            json!({"n": 1, "_caller_worker_id": "w-1\"x", "b": "2"})
        );
        assert!(twice.is_object());
        assert_eq!(
            add(text(" { } ")).to_json(),
            r#"{"_caller_worker_id":"w-1\"x"}"#
        );
        // A value with nothing to escape is written as it is, one with a
        // control character escaped.
        for (value, written) in [
            ("3f2c-e9", r#"{"n":1,"id":"3f2c-e9"}"#),
            ("a\nb\\", r#"{"n":1,"id":"a\nb\\"}"#),
        ] {
            let added = text(r#"{"n":1}"#).with_string_field("id", value).unwrap();
            assert_eq!(added.to_json(), written);
            assert_eq!(added, json!({"n": 1, "id": value}));
        }
        // A forged key, plainly or through an escape, is replaced, not repeated.
        for forged in [
            r#"{"n":1,"_caller_worker_id":"forged"}"#,
            r#"{"n":1,"\u005fcaller_worker_id":"forged"}"#,
            "{\"n\":1,\n \"_caller_worker_id\" :\t\"forged\"}",
            r#"{"n":1,"_caller_worker_id":"for\nged"}"#,
        ] {
            let replaced = add(text(forged)).to_json().into_owned();
            assert_eq!(
                replaced.matches("caller_worker_id").count(),
                1,
                "{replaced}"
            );
            assert!(!replaced.contains("for"), "{replaced}");
            assert_eq!(
                add(text(forged)),
                json!({"n": 1, "_caller_worker_id": "w-1\"x"})
            );
        }
        // A longer key is another key: appended beside it.
        assert_eq!(
            add(text(r#"{"_caller_worker_id_2":"kept"}"#)).to_json(),
            r#"{"_caller_worker_id_2":"kept","_caller_worker_id":"w-1\"x"}"#
        );
        for unchanged in ["[1,2]", "\"{}\"", "7", "null"] {
            assert_eq!(add(text(unchanged)).to_json(), unchanged);
        }
        assert_eq!(
            add(Payload::from(json!({"_caller_worker_id": "old"}))),
            json!({"_caller_worker_id": "w-1\"x"})
        );
        assert!(text(" {}").is_object() && !text("[{}]").is_object());
        // Text that may hold the key but cannot be read is refused, not passed on.
        let unreadable: Box<RawValue> =
            serde_json::from_str(r#"{"_caller_worker_id":"forged","n":1e400}"#).unwrap();
        assert!(
            Payload::Text(unreadable)
                .with_string_field("_caller_worker_id", "w")
                .is_err()
        );
    }

    #[test]
    fn a_key_is_looked_for_between_quotes_and_behind_escapes_that_could_spell_it() {
        let key = "_caller_worker_id";
        for (text, may) in [
            (r#"{"n":1}"#, false),
            ("{}", false),
            (r#"{"_caller_worker_id":1}"#, true),
            (r#"{"n":1,"_caller_worker_id":1}"#, true),
            // As a value, or nested: it may be; parsing tells.
            (r#"{"k":"_caller_worker_id"}"#, true),
            (r#"{"a":{"_caller_worker_id":1}}"#, true),
            // Part of another key or string: not it.
            (r#"{"_caller_worker_id_2":1}"#, false),
            (r#"{"x_caller_worker_id":1}"#, false),
            (r#"{"_caller_worker_i":1}"#, false),
            // An escape that could spell it; others cannot.
            (r#"{"\u005fcaller_worker_id":1}"#, true),
            (r#"{"s":"\u0041"}"#, true),
            (r#"{"s":"a\/b"}"#, true),
            (r#"{"s":"\n\t\"\\"}"#, false),
            // An escaped quote starts nothing; the key after it is found.
            (r#"{"s":"\"_caller_worker_id\""}"#, false),
            (r#"{"s":"\\","_caller_worker_id":1}"#, true),
            // Whitespace between tokens is stepped over.
            ("{\n\t\"n\" : 1 ,\r\n\"_caller_worker_id\":1}", true),
            ("{\n\t\"n\" : 1 }", false),
            // The key at the very end of the text, or cut short.
            (r#""_caller_worker_id""#, true),
            (r#""_caller_worker_id"#, false),
        ] {
            assert_eq!(may_hold_key(text, key), may, "{text}");
        }
    }

    #[test]
    fn json_that_is_no_value_is_refused_with_what_to_do() {
        // The parser takes the text (it is JSON); a value cannot hold it.
        let payload: Box<RawValue> = serde_json::from_str(r#"{"n":1e400}"#).unwrap();
        let error = Payload::Text(payload).into_value().unwrap_err().to_string();
        assert!(error.contains("out of range"), "{error}");
        assert!(error.contains("64-bit float"), "{error}");
    }

    #[test]
    fn reads_as_a_value_from_any_source() {
        #[derive(Deserialize)]
        #[serde(tag = "type")]
        enum Tagged {
            Call { data: Payload },
        }
        let Tagged::Call { data } =
            serde_json::from_str(r#"{"type":"Call","data":{"x":[true]}}"#).unwrap();
        assert!(matches!(data, Payload::Value(_)));
        assert_eq!(data, json!({"x": [true]}));
    }
}

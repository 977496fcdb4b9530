//! Finding where a JSON value ends, checked as serde_json checks a raw
//! value, in one pass over its bytes.
//!
//! Every call a worker makes brings two payloads through the gateway (its
//! `data`, then the provider's `result`), each kept as the text it came
//! as. serde_json's raw-value reader made each one cost about 700
//! instructions for a ten-byte object in the gateway (callgrind): its
//! stream reader's set-up, a value visitor, and a second copy through its
//! raw buffer. This scan accepts exactly the text serde_json accepts as a
//! raw value (a test compares the two over generated and hostile text),
//! except that it gives up — and the caller asks serde_json — past
//! [`MAX_DEPTH`] levels of nesting, which serde_json reads without limit.

use crate::skip_json_space as space;

/// Nesting this scan follows; deeper text is left to serde_json.
pub const MAX_DEPTH: u32 = 128;

/// The length of the JSON value `text` opens with (no whitespace before
/// it), when serde_json would read it as a raw value; what follows it is
/// not looked at. `None` when it is not one, or nests deeper than
/// [`MAX_DEPTH`].
pub fn value_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = 0;
    // Bit `n`: whether the container at depth `n` is an object.
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    loop {
        // A value starts at `at`.
        match *bytes.get(at)? {
            open @ (b'{' | b'[') => {
                at = space(bytes, at + 1);
                let close = if open == b'{' { b'}' } else { b']' };
                if bytes.get(at) == Some(&close) {
                    at += 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let bit = 1u128 << depth;
                    objects = if open == b'{' {
                        objects | bit
                    } else {
                        objects & !bit
                    };
                    depth += 1;
                    if open == b'{' {
                        at = key(bytes, at)?;
                    }
                    continue;
                }
            }
            b'"' => at = string_end(bytes, at + 1)?,
            b'n' => at = literal(bytes, at, b"null")?,
            b't' => at = literal(bytes, at, b"true")?,
            b'f' => at = literal(bytes, at, b"false")?,
            b'-' | b'0'..=b'9' => at = number_end(bytes, at)?,
            _ => return None,
        }
        // A value ended at `at`: close what it ends, or go on to the next
        // member or element.
        loop {
            if depth == 0 {
                return Some(at);
            }
            at = space(bytes, at);
            let in_object = objects >> (depth - 1) & 1 == 1;
            match *bytes.get(at)? {
                b',' => {
                    at = space(bytes, at + 1);
                    if in_object {
                        at = key(bytes, at)?;
                    }
                    break;
                }
                b'}' if in_object => at += 1,
                b']' if !in_object => at += 1,
                _ => return None,
            }
            depth -= 1;
        }
    }
}

/// A member's key and its colon: where its value starts.
fn key(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let at = space(bytes, string_end(bytes, at + 1)?);
    if bytes.get(at) != Some(&b':') {
        return None;
    }
    Some(space(bytes, at + 1))
}

/// The end of a string whose opening quote is before `at`: what serde_json
/// accepts (any character but a control character, quote or backslash,
/// and the escapes `\" \\ \/ \b \f \n \r \t \uXXXX`, a `\u` not checked
/// for pairing).
fn string_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at += crate::plain_len(bytes.get(at..)?);
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => match *bytes.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                b'u' => {
                    let hex = bytes.get(at + 2..at + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    at += 6;
                }
                _ => return None,
            },
            // A control character.
            _ => return None,
        }
    }
}

fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    (bytes.get(at..at + word.len())? == word).then_some(at + word.len())
}

/// The end of a number as serde_json's grammar has it: `-`, then `0` or a
/// digit 1–9 and digits, then `.` and digits, then `e` or `E`, a sign and
/// digits — each part after the first optional, none empty.
fn number_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    let digits = |at: usize| {
        let run = bytes.get(at..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        });
        (run > 0).then_some(at + run)
    };
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    at = match bytes.get(at)? {
        b'0' => {
            if bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            at + 1
        }
        b'1'..=b'9' => digits(at)?,
        _ => return None,
    };
    if bytes.get(at) == Some(&b'.') {
        at = digits(at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        at = digits(at)?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    /// What serde_json's stream reader makes of the same text: the raw
    /// value's length, or nothing.
    fn by_serde(text: &str) -> Option<usize> {
        let mut values = serde_json::Deserializer::from_str(text).into_iter::<Box<RawValue>>();
        match values.next() {
            Some(Ok(raw)) => {
                assert_eq!(raw.get().len(), values.byte_offset(), "{text:?}");
                Some(values.byte_offset())
            }
            _ => None,
        }
    }

    /// Agrees with serde_json on `text`, both alone and followed by each
    /// thing a frame may have after its payload (serde_json's stream
    /// reader refuses some of those after a number or a literal; so does a
    /// frame, whatever this scan said).
    fn agrees(text: &str) {
        // This scan is given the text from the value on; serde_json skips
        // whitespace before it.
        let text = text.trim_start_matches([' ', '\n', '\t', '\r']);
        for after in ["", ",", "}", " }", "x", "\"", "1"] {
            let whole = format!("{text}{after}");
            let here = value_len(&whole);
            match by_serde(&whole) {
                Some(len) => assert_eq!(here, Some(len), "{whole:?}"),
                None => {
                    if let Some(len) = here {
                        // serde_json refused only what follows the value.
                        let next = whole.as_bytes().get(len);
                        assert!(
                            matches!(next, Some(byte) if !matches!(byte, b',' | b'}' | b' ')),
                            "{whole:?}: read {len} bytes here, serde refuses it"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn values_end_where_serde_says_they_do() {
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "7",
            "-12",
            "1.5",
            "0.25e-3",
            "-1E+9",
            "1e400",
            "123456789012345678901234567890",
            r#""""#,
            r#""plain text""#,
            r#""é😀\u2028""#,
            r#""q\"b\\s\/b\bf\fn\nr\rt\t""#,
            r#""\u0041\uD83D\uDE00\udc00\uFFFF""#,
            "{}",
            "[]",
            "{ }",
            "[ ]",
            r#"{"n":1}"#,
            r#"{"n":1,"_caller_worker_id":"7b1e"}"#,
            " { \"a\" : [ 1 , { \"b\" : null } , \"c\" ] , \"d\" : { } } ",
            "[[[[[]]]],[{}],{\"a\":[]}]",
            r#"{"a":{"b":{"c":[1,2,{"d":"e"}]}}}"#,
            "[1,\n\t2\r]",
        ] {
            agrees(text);
        }
    }

    #[test]
    fn what_serde_refuses_is_refused_here() {
        for text in [
            "",
            "n",
            "nul",
            "nulL",
            "tru",
            "fals",
            "-",
            "--1",
            "+1",
            "01",
            "-01",
            "1.",
            "1.e3",
            ".5",
            "1e",
            "1e+",
            "1E-",
            "NaN",
            "Infinity",
            r#"""#,
            r#""abc"#,
            r#""\"#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u12G4""#,
            "\"a\u{1}b\"",
            "\"a\nb\"",
            "\"tab\there\"",
            "{",
            "[",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\":1]",
            "[1}",
            "[,1]",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "}",
            "]",
            "\u{feff}{}",
        ] {
            agrees(text);
            assert_eq!(value_len(text), None, "{text:?}");
        }
    }

    #[test]
    fn every_prefix_and_every_one_byte_change_agrees_with_serde() {
        let samples = [
            r#"{"order":"o-1","items":[{"sku":"a","qty":2,"price":12.5,"tags":["x","y"]}],"ok":true,"note":null}"#,
            r#"[-0.5e+10,"\u00e9\n",{"k":[[],{}]},false]"#,
        ];
        let replacements = b" \t\n\r{}[],:\"\\-+.0123456789eEnulltrfsa\x01";
        for sample in samples {
            for end in 0..=sample.len() {
                if let Some(prefix) = sample.get(..end) {
                    agrees(prefix);
                }
            }
            for at in 0..sample.len() {
                for &byte in replacements {
                    let mut bytes = sample.as_bytes().to_vec();
                    bytes[at] = byte;
                    if let Ok(text) = String::from_utf8(bytes) {
                        agrees(&text);
                    }
                }
            }
        }
    }

    #[test]
    fn nesting_is_followed_to_its_limit_and_left_to_serde_past_it() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = nested(MAX_DEPTH as usize);
        assert_eq!(value_len(&deepest), Some(deepest.len()));
        let objects = format!(
            "{}1{}",
            "{\"a\":".repeat(MAX_DEPTH as usize),
            "}".repeat(MAX_DEPTH as usize)
        );
        assert_eq!(value_len(&objects), Some(objects.len()));
        // One more level than that (the innermost `[]` opens none).
        let deeper = nested(MAX_DEPTH as usize + 2);
        assert_eq!(value_len(&deeper), None);
        assert_eq!(by_serde(&deeper), Some(deeper.len()));
        // Objects and arrays alternating at every depth close in order.
        let mixed = format!("{}0{}", "[{\"k\":".repeat(60), "}]".repeat(60));
        agrees(&mixed);
        assert_eq!(value_len(&mixed), Some(mixed.len()));
        agrees(&format!("{}0{}", "[{\"k\":".repeat(60), "]}".repeat(60)));
    }
}

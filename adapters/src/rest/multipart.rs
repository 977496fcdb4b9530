//! `multipart/form-data` bodies (RFC 7578) and the files in them.
//!
//! A tool's input is JSON, so a file travels in it as base64 text; the
//! import marks which fields are files ([`is_file_schema`]) and rewrites
//! their schemas to say so ([`base64_schema`]), and a call decodes them
//! back into bytes. The body is written here, in full, rather than through
//! reqwest's `multipart::Form`: that is a one-shot stream, and a request
//! to an idempotent operation may be sent again on a retry.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::plan::PlanError;

/// A field of a multipart body that is sent as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    /// The field's name, as the upstream names it (and the part's filename).
    pub name: String,
    /// The part's `Content-Type` (the operation's `encoding`, the schema's
    /// `contentMediaType`, else `application/octet-stream`).
    pub content_type: String,
}

/// Whether a schema describes raw bytes: `format: binary` (OpenAPI 3.0),
/// `contentEncoding: binary`, or a `contentMediaType` with no
/// `contentEncoding` (OpenAPI 3.1's way to describe a file).
pub fn is_file_schema(schema: &Value) -> bool {
    let text = |key: &str| schema.get(key).and_then(Value::as_str);
    text("format") == Some("binary")
        || text("contentEncoding") == Some("binary")
        || (schema.get("contentMediaType").is_some() && schema.get("contentEncoding").is_none())
}

/// What a file field's schema becomes in a tool's input: base64 text, the
/// original's description kept.
pub fn base64_schema(original: &Value, what: &str) -> Value {
    let mut schema = json!({"type": "string", "contentEncoding": "base64"});
    let note = format!("{what}, base64-encoded");
    let description = match original.get("description").and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => format!("{} ({note})", text.trim()),
        _ => note,
    };
    schema["description"] = Value::String(description);
    if let Some(media) = original.get("contentMediaType") {
        schema["contentMediaType"] = media.clone();
    }
    schema
}

/// Base64 text (standard alphabet, padded or not, wrapped in lines as
/// MIME wraps it or not) as bytes.
pub fn decode(field: &str, text: &str) -> Result<Vec<u8>, PlanError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let text: std::borrow::Cow<str> = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        text.split_ascii_whitespace().collect::<String>().into()
    } else {
        text.into()
    };
    engine.decode(text.as_bytes()).map_err(|error| {
        PlanError::new(format!(
            "{field} is a file and must be base64 text (standard alphabet): {error}"
        ))
    })
}

/// The body of `fields` as `multipart/form-data`: its content type (with
/// the boundary) and bytes. Files are decoded from base64; an array gives
/// one part per item under the same name; an object or an array of them is
/// sent as JSON text; `null` is left out.
pub fn encode(
    files: &[FilePart],
    fields: &Map<String, Value>,
) -> Result<(String, Vec<u8>), PlanError> {
    let mut parts: Vec<Part> = Vec::new();
    for (name, value) in fields {
        let file = files.iter().find(|file| file.name == *name);
        let items: &[Value] = match value {
            Value::Array(items) if file.is_some() || items.iter().all(is_primitive) => items,
            other => std::slice::from_ref(other),
        };
        for item in items {
            let part = match (file, item) {
                (_, Value::Null) => continue,
                (Some(file), Value::String(text)) => Part {
                    name,
                    file: Some(file),
                    content_type: Some(&file.content_type),
                    bytes: decode(&format!("body.{name}"), text)?,
                },
                (Some(_), _) => {
                    return Err(PlanError::new(format!(
                        "body.{name} is a file and must be base64 text"
                    )));
                }
                (None, Value::String(text)) => Part::text(name, text.as_bytes().to_vec()),
                (None, Value::Object(_) | Value::Array(_)) => Part {
                    name,
                    file: None,
                    content_type: Some("application/json"),
                    bytes: item.to_string().into_bytes(),
                },
                (None, primitive) => Part::text(name, primitive.to_string().into_bytes()),
            };
            parts.push(part);
        }
    }
    let boundary = boundary_for(&parts);
    let mut body =
        Vec::with_capacity(parts.iter().map(|p| p.bytes.len() + 128).sum::<usize>() + 64);
    for part in &parts {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(quoted(part.name).as_bytes());
        body.push(b'"');
        if part.file.is_some() {
            body.extend_from_slice(b"; filename=\"");
            body.extend_from_slice(quoted(part.name).as_bytes());
            body.push(b'"');
        }
        if let Some(content_type) = part.content_type {
            body.extend_from_slice(b"\r\nContent-Type: ");
            body.extend_from_slice(content_type.as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(&part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    Ok((format!("multipart/form-data; boundary={boundary}"), body))
}

struct Part<'a> {
    name: &'a str,
    file: Option<&'a FilePart>,
    content_type: Option<&'a str>,
    bytes: Vec<u8>,
}

impl<'a> Part<'a> {
    /// A plain field: no `Content-Type`, so `text/plain` (RFC 7578 §4.4).
    fn text(name: &'a str, bytes: Vec<u8>) -> Self {
        Self {
            name,
            file: None,
            content_type: None,
            bytes,
        }
    }
}

fn is_primitive(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

/// A random boundary that occurs in no part (a file may hold any bytes).
fn boundary_for(parts: &[Part]) -> String {
    loop {
        let boundary = format!("capgate-{}", uuid::Uuid::new_v4().simple());
        let needle = boundary.as_bytes();
        let found = parts.iter().any(|part| {
            part.bytes
                .windows(needle.len())
                .any(|window| window == needle)
        });
        if !found {
            return boundary;
        }
    }
}

/// A name inside a quoted header parameter, escaped as the HTML standard's
/// form encoding does: `"` as `%22`, CR as `%0D`, LF as `%0A`.
fn quoted(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content_type: &str) -> FilePart {
        FilePart {
            name: name.into(),
            content_type: content_type.into(),
        }
    }

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    /// A part as read back: name, filename, content type, bytes.
    type ReadPart = (String, Option<String>, Option<String>, Vec<u8>);

    /// The parts of `body` read back by a real parser (multer, as axum's
    /// `Multipart` reads them).
    fn parse(content_type: &str, body: Vec<u8>) -> Vec<ReadPart> {
        let boundary = multer::parse_boundary(content_type).unwrap();
        let stream =
            futures_util::stream::once(
                async move { Ok::<_, std::io::Error>(bytes::Bytes::from(body)) },
            );
        let mut multipart = multer::Multipart::new(stream, boundary);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut parts = Vec::new();
            while let Some(field) = multipart.next_field().await.unwrap() {
                let name = field.name().map(str::to_owned).unwrap_or_default();
                let filename = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(ToString::to_string);
                let bytes = field.bytes().await.unwrap().to_vec();
                parts.push((name, filename, content_type, bytes));
            }
            parts
        })
    }

    #[test]
    fn fields_and_files_are_read_back_by_a_real_parser_as_sent() {
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff];
        let encoded = base64::engine::general_purpose::STANDARD.encode(png);
        let (content_type, body) = encode(
            &[
                file("file", "image/png"),
                file("extra", "application/octet-stream"),
            ],
            &fields(json!({
                "name": "Rex & co \"the dog\"",
                "file": encoded,
                "count": 3,
                "ok": true,
                "tags": ["a", "b"],
                "meta": {"k": [1, 2]},
                "gone": null,
                "extra": ["AAE", "/w=="],
            })),
        )
        .unwrap();
        assert!(content_type.starts_with("multipart/form-data; boundary=capgate-"));
        let parts = parse(&content_type, body);
        let by_name =
            |name: &str| -> Vec<_> { parts.iter().filter(|p| p.0 == name).cloned().collect() };
        assert_eq!(
            by_name("file"),
            [(
                "file".into(),
                Some("file".into()),
                Some("image/png".into()),
                png.to_vec()
            )]
        );
        assert_eq!(by_name("name")[0].3, b"Rex & co \"the dog\"");
        assert_eq!(by_name("name")[0].1, None, "a plain field is not a file");
        assert_eq!(by_name("name")[0].2, None, "a plain field is text/plain");
        assert_eq!(by_name("count")[0].3, b"3");
        assert_eq!(by_name("ok")[0].3, b"true");
        assert_eq!(
            by_name("tags")
                .iter()
                .map(|p| p.3.clone())
                .collect::<Vec<_>>(),
            [b"a".to_vec(), b"b".to_vec()],
            "an array of primitives is one part per item"
        );
        assert_eq!(by_name("meta")[0].3, br#"{"k":[1,2]}"#);
        assert_eq!(by_name("meta")[0].2.as_deref(), Some("application/json"));
        assert!(by_name("gone").is_empty(), "null is left out");
        assert_eq!(
            by_name("extra")
                .iter()
                .map(|p| p.3.clone())
                .collect::<Vec<_>>(),
            [vec![0u8, 1], vec![0xff]],
            "an array of files, padded or not"
        );
        // Wrapped in lines, as MIME writes base64.
        let wrapped = encode(
            &[file("f", "text/plain")],
            &fields(json!({"f": "aGVs\r\nbG8g\nd29y bGQ=\n"})),
        )
        .unwrap();
        assert_eq!(parse(&wrapped.0, wrapped.1)[0].3, b"hello world");
    }

    #[test]
    fn names_that_would_break_the_header_are_escaped() {
        let name = "a\"b\r\nContent-Type: evil";
        let (content_type, body) = encode(&[], &fields(json!({ name: "x" }))).unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(
            text.contains("name=\"a%22b%0D%0AContent-Type: evil\""),
            "{text}"
        );
        let parts = parse(&content_type, body);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, "a%22b%0D%0AContent-Type: evil");
    }

    #[test]
    fn the_boundary_never_occurs_in_a_part() {
        // Whatever bytes a file holds, the boundary chosen is not in them:
        // a file holding text that looks like boundaries still reads back whole.
        let tricky = b"--capgate-0123\r\n--capgate-\r\n".repeat(50);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&tricky);
        let (content_type, body) =
            encode(&[file("f", "text/plain")], &fields(json!({"f": encoded}))).unwrap();
        let parts = parse(&content_type, body);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].3, tricky);
    }

    #[test]
    fn a_file_that_is_not_base64_is_refused_by_name() {
        let error = encode(
            &[file("file", "image/png")],
            &fields(json!({"file": "not base64!"})),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("body.file is a file and must be base64"),
            "{error}"
        );
        let error = encode(&[file("file", "image/png")], &fields(json!({"file": 7}))).unwrap_err();
        assert!(error.to_string().contains("body.file"), "{error}");
    }

    #[test]
    fn file_schemas_are_told_apart_from_text() {
        assert!(is_file_schema(
            &json!({"type": "string", "format": "binary"})
        ));
        assert!(is_file_schema(
            &json!({"type": "string", "contentEncoding": "binary"})
        ));
        assert!(is_file_schema(
            &json!({"type": "string", "contentMediaType": "image/png"})
        ));
        assert!(!is_file_schema(
            &json!({"type": "string", "contentMediaType": "image/png", "contentEncoding": "base64"})
        ));
        assert!(!is_file_schema(
            &json!({"type": "string", "format": "byte"})
        ));
        assert!(!is_file_schema(&json!({"type": "string"})));
        let schema = base64_schema(
            &json!({"description": "The picture", "contentMediaType": "image/png"}),
            "the file's bytes",
        );
        assert_eq!(
            schema,
            json!({"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                   "description": "The picture (the file's bytes, base64-encoded)"})
        );
    }
}

//! An OpenAPI document from text: JSON or YAML, 3.0 or 3.1, checked by
//! the typed models of `openapiv3` (3.0) and `oas3` (3.1) before anything
//! is read from it. A 3.0 document is lifted to 3.1 (its schemas to JSON
//! Schema 2020-12) so the rest of the import handles one revision.

use serde_json::Value;

/// Largest OpenAPI document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting of a document's JSON (YAML anchors can nest without bound).
const MAX_DEPTH: usize = 128;
/// Deepest `[`/`{` nesting of YAML text let through to the YAML parser,
/// whose time grows with the square of it (50,000 levels: 7 s). Counted
/// without regard to quoting, so it is kept well above [`MAX_DEPTH`].
const MAX_FLOW_NESTING: usize = 1_000;

/// A parsed document: the typed model for its structure and the raw JSON
/// for what the model does not keep whole (schemas, `$ref` targets).
pub struct Document {
    pub spec: oas3::Spec,
    pub raw: Value,
    /// The revision it was written in (`3.0.3`, `3.1.0`).
    pub revision: String,
}

/// Why a document cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error(
        "the OpenAPI document is {size} bytes, over the limit of {MAX_DOCUMENT_BYTES}; import a smaller document (--include selects operations of a large API)"
    )]
    TooLarge { size: usize },
    #[error(
        "the OpenAPI document is neither JSON nor YAML: {reason}; check the file is an OpenAPI 3.0 or 3.1 document"
    )]
    Syntax { reason: String },
    #[error(
        "the OpenAPI document nests deeper than {MAX_DEPTH} levels; it is refused (recursive YAML anchors?)"
    )]
    TooDeep,
    #[error(
        "the document has no 'openapi' field naming its revision; capgate imports OpenAPI 3.0 and 3.1 (a Swagger 2.0 document must be converted first)"
    )]
    NoRevision,
    #[error(
        "OpenAPI revision '{revision}' is not supported; capgate imports OpenAPI 3.0.x and 3.1.x (convert Swagger 2.0 documents with swagger2openapi)"
    )]
    Unsupported { revision: String },
    #[error("the document is not a valid OpenAPI {revision} document: {reason}")]
    Invalid { revision: String, reason: String },
    #[error("the document has no paths: there is no operation to import")]
    NoPaths,
}

/// Reads a document from its text (JSON when it starts with `{`, else YAML).
pub fn parse(text: &str) -> Result<Document, DocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge { size: text.len() });
    }
    let raw: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|error| DocumentError::Syntax {
            reason: format!("JSON: {error}"),
        })?
    } else {
        if flow_nesting(text) > MAX_FLOW_NESTING {
            return Err(DocumentError::TooDeep);
        }
        serde_norway::from_str(text).map_err(|error| DocumentError::Syntax {
            reason: format!("YAML: {error}"),
        })?
    };
    if depth(&raw) > MAX_DEPTH {
        return Err(DocumentError::TooDeep);
    }
    let revision = match raw.get("openapi") {
        Some(Value::String(revision)) => revision.clone(),
        Some(_) | None => {
            return Err(if raw.get("swagger").is_some() {
                DocumentError::Unsupported {
                    revision: format!(
                        "swagger {}",
                        raw.get("swagger").map(display).unwrap_or_default()
                    ),
                }
            } else {
                DocumentError::NoRevision
            });
        }
    };
    let invalid = |error: serde_json::Error| DocumentError::Invalid {
        revision: revision.clone(),
        reason: error.to_string(),
    };
    let raw = if revision.starts_with("3.0.") || revision == "3.0" {
        // Checked against the 3.0 model as written, then lifted.
        serde_json::from_value::<openapiv3::OpenAPI>(raw.clone()).map_err(invalid)?;
        lift_to_3_1(raw)
    } else if revision.starts_with("3.1.") || revision == "3.1" {
        raw
    } else {
        return Err(DocumentError::Unsupported { revision });
    };
    let spec: oas3::Spec = serde_json::from_value(raw.clone()).map_err(invalid)?;
    if spec.paths.as_ref().is_none_or(|paths| paths.is_empty()) {
        return Err(DocumentError::NoPaths);
    }
    Ok(Document {
        spec,
        raw,
        revision,
    })
}

/// The deepest nesting of brackets and braces in `text`.
fn flow_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for byte in text.bytes() {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// How deep a value nests (iteratively: a hostile document must not
/// overflow the stack here).
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        if level > MAX_DEPTH {
            break;
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

/// 3.0 → 3.1: the revision field, and every Schema Object to JSON Schema
/// 2020-12 (`nullable` into `type`, boolean `exclusiveMinimum/Maximum`
/// into numbers, `example` into `examples`).
fn lift_to_3_1(mut raw: Value) -> Value {
    if let Some(fields) = raw.as_object_mut() {
        fields.insert("openapi".into(), Value::String("3.1.0".into()));
    }
    lift_schemas(&mut raw);
    raw
}

/// Every object that looks like a Schema Object is lifted. Keys such as
/// `nullable` and boolean `exclusiveMinimum` exist only in 3.0 schemas,
/// so walking the whole tree changes nothing else.
fn lift_schemas(value: &mut Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(fields) => {
                lift_schema(fields);
                stack.extend(fields.values_mut());
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}

fn lift_schema(fields: &mut serde_json::Map<String, Value>) {
    if fields.get("nullable") == Some(&Value::Bool(true)) {
        fields.remove("nullable");
        match fields.get_mut("type") {
            Some(Value::String(single)) => {
                let single = std::mem::take(single);
                fields.insert("type".into(), serde_json::json!([single, "null"]));
            }
            Some(Value::Array(types)) if !types.contains(&Value::from("null")) => {
                types.push(Value::from("null"));
            }
            _ => {}
        }
        if let Some(Value::Array(values)) = fields.get_mut("enum")
            && !values.contains(&Value::Null)
        {
            values.push(Value::Null);
        }
    } else if fields.get("nullable") == Some(&Value::Bool(false)) {
        fields.remove("nullable");
    }
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(Value::Bool(exclusive)) = fields.get(flag).cloned() {
            fields.remove(flag);
            if exclusive && let Some(limit) = fields.remove(bound) {
                fields.insert(flag.into(), limit);
            }
        }
    }
    // `example` (3.0) beside a schema's keywords becomes `examples`; an
    // `example` of a Parameter or Media Type Object is left alone (they
    // have no `type`).
    if fields.contains_key("type")
        && let Some(example) = fields.remove("example")
    {
        fields
            .entry("examples")
            .or_insert_with(|| Value::Array(vec![example]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_3_0_schema_is_lifted_to_json_schema_2020_12() {
        let mut raw = json!({"openapi": "3.0.3", "components": {"schemas": {"Pet": {
            "type": "string", "nullable": true, "enum": ["a"],
            "properties": {"n": {"type": "integer", "minimum": 1, "exclusiveMinimum": true, "example": 3}}
        }}}});
        raw = lift_to_3_1(raw);
        let pet = &raw["components"]["schemas"]["Pet"];
        assert_eq!(raw["openapi"], "3.1.0");
        assert_eq!(pet["type"], json!(["string", "null"]));
        assert_eq!(pet["enum"], json!(["a", null]));
        assert_eq!(
            pet["properties"]["n"],
            json!({"type": "integer", "exclusiveMinimum": 1, "examples": [3]})
        );
    }

    #[test]
    fn documents_that_are_not_openapi_3_are_refused_saying_why() {
        let cases = [
            ("openapi: [unclosed", "neither JSON nor YAML"),
            ("{\"openapi\": ", "neither JSON nor YAML"),
            (
                "swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}",
                "swagger 2.0",
            ),
            ("info: {title: t, version: '1'}", "no 'openapi' field"),
            (
                "openapi: 4.0.0\ninfo: {title: t, version: '1'}\npaths: {}",
                "'4.0.0' is not supported",
            ),
            (
                "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}",
                "no paths",
            ),
            ("openapi: 3.1.0\ninfo: {title: t, version: '1'}", "no paths"),
            (
                "openapi: 3.0.3\npaths: {}",
                "not a valid OpenAPI 3.0.3 document",
            ),
            (
                "openapi: 3.1.0\ninfo: {title: 5}\npaths: {}",
                "not a valid OpenAPI 3.1.0 document",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn oversized_and_deeply_nested_documents_are_refused() {
        let big = format!(
            "openapi: 3.1.0\ninfo: {{title: t, version: '1', description: '{}'}}\npaths: {{}}",
            "x".repeat(MAX_DOCUMENT_BYTES)
        );
        assert!(matches!(parse(&big), Err(DocumentError::TooLarge { .. })));
        let deep = format!(
            "{{\"openapi\": \"3.1.0\", \"x\": {}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        // serde_json's own recursion limit (128) or ours: refused either way.
        assert!(parse(&deep).is_err());
        // YAML's parser takes time with the square of flow nesting: refused
        // before it is parsed (100,000 levels would take minutes).
        let deep_yaml = format!(
            "openapi: 3.1.0\nx: {}1{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let started = std::time::Instant::now();
        assert!(matches!(parse(&deep_yaml), Err(DocumentError::TooDeep)));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "a hang guard"
        );
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused_without_expanding_it() {
        // "Billion laughs": nine levels of nine aliases each.
        let mut text = String::from("openapi: 3.1.0\na0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 9].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        text.push_str("paths: {}\n");
        let started = std::time::Instant::now();
        let error = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("neither JSON nor YAML"), "{error}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "a hang guard"
        );
    }
}

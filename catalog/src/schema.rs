//! JSON Schemas, compiled once per registration.
//!
//! Draft 2020-12 is the default dialect; a schema that names another draft in
//! `$schema` (the iii SDKs send draft-07) is compiled as that draft. Network
//! and file `$ref`s are never resolved: the crate is built without those
//! resolvers.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Most violations reported for one instance; the rest are counted.
const MAX_REPORTED_ERRORS: usize = 5;

/// A schema and its compiled validator.
#[derive(Clone)]
pub struct CompiledSchema {
    source: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

/// A schema that could not be compiled, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON Schema at '{location}': {message}")]
pub struct SchemaError {
    /// JSON Pointer into the schema, `/` for the root.
    pub location: String,
    pub message: String,
}

/// An instance that does not match a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violations {
    /// `"<instance path>: <message>"`, at most [`MAX_REPORTED_ERRORS`].
    pub errors: Vec<String>,
    /// Violations beyond those reported.
    pub more: usize,
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("; "))?;
        if self.more > 0 {
            write!(f, "; and {} more", self.more)?;
        }
        Ok(())
    }
}

impl CompiledSchema {
    pub fn compile(schema: Value) -> Result<Self, SchemaError> {
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(SchemaError {
                location: "/".into(),
                message: format!(
                    "a schema must be an object or a boolean, found {}",
                    json_type(&schema)
                ),
            });
        }
        let validator = jsonschema::validator_for(&schema).map_err(|error| {
            // The path inside the offered schema, not inside the meta-schema.
            let location = error.instance_path().to_string();
            SchemaError {
                location: if location.is_empty() {
                    "/".into()
                } else {
                    location
                },
                message: error.to_string(),
            }
        })?;
        Ok(Self {
            source: Arc::new(schema),
            validator: Arc::new(validator),
        })
    }

    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Checks `instance`; the fast path allocates nothing.
    pub fn validate(&self, instance: &Value) -> Result<(), Violations> {
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let mut errors = Vec::new();
        let mut more = 0;
        for error in self.validator.iter_errors(instance) {
            if errors.len() < MAX_REPORTED_ERRORS {
                let path = error.instance_path().to_string();
                let path = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                errors.push(format!("{path}: {error}"));
            } else {
                more += 1;
            }
        }
        Err(Violations { errors, more })
    }
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CompiledSchema").field(&self.source).finish()
    }
}

/// The JSON type name of a value, for error messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_and_reports_paths() {
        let schema = CompiledSchema::compile(json!({
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"]
        }))
        .unwrap();
        assert!(schema.validate(&json!({"name": "x"})).is_ok());
        let violations = schema.validate(&json!({"name": 3})).unwrap_err();
        assert_eq!(violations.errors.len(), 1);
        assert!(violations.errors[0].starts_with("/name:"), "{violations}");
        let violations = schema.validate(&json!({})).unwrap_err();
        assert!(violations.to_string().contains("name"), "{violations}");
    }

    #[test]
    fn refuses_invalid_schemas_with_a_location() {
        let error = CompiledSchema::compile(json!({"type": "objekt"})).unwrap_err();
        assert!(error.to_string().contains("invalid JSON Schema"), "{error}");
        let error = CompiledSchema::compile(json!(42)).unwrap_err();
        assert!(error.message.contains("a number"), "{error}");
        let error =
            CompiledSchema::compile(json!({"properties": {"a": {"minLength": "x"}}})).unwrap_err();
        assert_eq!(error.location, "/properties/a/minLength", "{error:?}");
    }

    #[test]
    fn never_fetches_network_refs() {
        let result = CompiledSchema::compile(json!({"$ref": "http://127.0.0.1:9/schema.json"}));
        assert!(result.is_err(), "a network $ref must not resolve");
    }

    #[test]
    fn honours_draft_07_as_the_iii_sdks_send_it() {
        let schema = CompiledSchema::compile(json!({
            "$schema": "http://json-schema.org/draft-07/schema#", "title": "AnyValue"
        }))
        .unwrap();
        assert!(schema.validate(&json!({"anything": 1})).is_ok());
    }

    #[test]
    fn caps_the_number_of_reported_errors() {
        let schema = CompiledSchema::compile(json!({
            "type": "object", "additionalProperties": {"type": "string"}
        }))
        .unwrap();
        let instance: serde_json::Map<String, Value> =
            (0..9).map(|i| (format!("k{i}"), json!(i))).collect();
        let violations = schema.validate(&Value::Object(instance)).unwrap_err();
        assert_eq!(violations.errors.len() + violations.more, 9);
        assert_eq!(violations.errors.len(), MAX_REPORTED_ERRORS);
    }
}

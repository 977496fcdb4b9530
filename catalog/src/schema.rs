//! JSON Schemas: checked at registration, compiled for validation on first
//! use.
//!
//! A compiled validator costs about 9 KiB for a small object schema, so a
//! catalog of 10,000 versions would hold ~90 MiB of validators if every one
//! were kept from registration on. Registration compiles a schema to refuse
//! a bad one with its location, then drops the result; the first call that
//! needs it compiles it again and keeps it.
//!
//! Draft 2020-12 is the default dialect; a schema that names another draft in
//! `$schema` (the iii SDKs send draft-07) is compiled as that draft. Network
//! and file `$ref`s are never resolved: the crate is built without those
//! resolvers.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Most violations reported for one instance; the rest are counted.
const MAX_REPORTED_ERRORS: usize = 5;

/// A JSON Schema as registered, held as compact JSON text. A parsed tree
/// of a small object schema costs about 3 KiB (every map is a B-tree node);
/// its text, a tenth of that. Parsed when a tool list or a validator is
/// built.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaText(Box<RawValue>);

impl SchemaText {
    pub fn new(schema: &Value) -> Self {
        // Serializing a `Value` cannot fail (its keys are strings).
        Self(
            serde_json::value::to_raw_value(schema)
                .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default()),
        )
    }

    /// The schema as a tree.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for SchemaText {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl fmt::Debug for SchemaText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// Proof that a schema compiles and, once first needed, its compiled
/// validator (shared by clones). The schema itself stays in the definition
/// and is passed in, so it is held once.
#[derive(Clone, Default)]
pub struct CompiledSchema {
    validator: Arc<OnceLock<Option<jsonschema::Validator>>>,
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
    /// Checks that `schema` compiles; the validator itself is built on the
    /// first [`CompiledSchema::validate`].
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(SchemaError {
                location: "/".into(),
                message: format!(
                    "a schema must be an object or a boolean, found {}",
                    json_type(schema)
                ),
            });
        }
        jsonschema::validator_for(schema).map_err(|error| {
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
        Ok(Self::default())
    }

    fn validator(&self, schema: &SchemaText) -> Option<&jsonschema::Validator> {
        self.validator
            .get_or_init(|| jsonschema::validator_for(&schema.value()).ok())
            .as_ref()
    }

    /// Checks `instance` against `schema`, the schema this was compiled
    /// from; the fast path allocates nothing.
    pub fn validate(&self, schema: &SchemaText, instance: &Value) -> Result<(), Violations> {
        let Some(validator) = self.validator(schema) else {
            // It compiled at registration; refuse rather than let input through.
            return Err(Violations {
                errors: vec!["/: the schema could not be compiled for validation".into()],
                more: 0,
            });
        };
        if validator.is_valid(instance) {
            return Ok(());
        }
        let mut errors = Vec::new();
        let mut more = 0;
        for error in validator.iter_errors(instance) {
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
        f.debug_struct("CompiledSchema")
            .field("compiled", &self.validator.get().is_some())
            .finish()
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

    /// A schema kept beside its compiled form, as a definition keeps it.
    #[derive(Debug)]
    struct Kept(SchemaText, CompiledSchema);

    impl Kept {
        fn check(&self, instance: &Value) -> Result<(), Violations> {
            self.1.validate(&self.0, instance)
        }
    }

    fn compiled(schema: Value) -> Result<Kept, SchemaError> {
        CompiledSchema::compile(&schema).map(|c| Kept(SchemaText::new(&schema), c))
    }
    use serde_json::json;

    #[test]
    fn validates_and_reports_paths() {
        let schema = compiled(json!({
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"]
        }))
        .unwrap();
        assert!(schema.check(&json!({"name": "x"})).is_ok());
        let violations = schema.check(&json!({"name": 3})).unwrap_err();
        assert_eq!(violations.errors.len(), 1);
        assert!(violations.errors[0].starts_with("/name:"), "{violations}");
        let violations = schema.check(&json!({})).unwrap_err();
        assert!(violations.to_string().contains("name"), "{violations}");
    }

    #[test]
    fn refuses_invalid_schemas_with_a_location() {
        let error = compiled(json!({"type": "objekt"})).unwrap_err();
        assert!(error.to_string().contains("invalid JSON Schema"), "{error}");
        let error = compiled(json!(42)).unwrap_err();
        assert!(error.message.contains("a number"), "{error}");
        let error = compiled(json!({"properties": {"a": {"minLength": "x"}}})).unwrap_err();
        assert_eq!(error.location, "/properties/a/minLength", "{error:?}");
    }

    #[test]
    fn never_fetches_network_refs() {
        let result = compiled(json!({"$ref": "http://127.0.0.1:9/schema.json"}));
        assert!(result.is_err(), "a network $ref must not resolve");
    }

    #[test]
    fn honours_draft_07_as_the_iii_sdks_send_it() {
        let schema = compiled(json!({
            "$schema": "http://json-schema.org/draft-07/schema#", "title": "AnyValue"
        }))
        .unwrap();
        assert!(schema.check(&json!({"anything": 1})).is_ok());
    }

    #[test]
    fn caps_the_number_of_reported_errors() {
        let schema = compiled(json!({
            "type": "object", "additionalProperties": {"type": "string"}
        }))
        .unwrap();
        let instance: serde_json::Map<String, Value> =
            (0..9).map(|i| (format!("k{i}"), json!(i))).collect();
        let violations = schema.check(&Value::Object(instance)).unwrap_err();
        assert_eq!(violations.errors.len() + violations.more, 9);
        assert_eq!(violations.errors.len(), MAX_REPORTED_ERRORS);
    }
}

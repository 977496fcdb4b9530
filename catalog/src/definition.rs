//! A capability version as an agent sees it.
//!
//! A [`Draft`] carries what a registration sent (a worker frame, later the
//! admin API or configuration) as loose JSON; [`Draft::build`] checks every
//! field and yields a [`Capability`]: the typed [`CapabilityDefinition`], its
//! compiled schemas and its [`DefinitionHash`]. Nothing is half-built: any
//! error refuses the whole registration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use capgate_payload::Payload;
use semver::Version;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::lifecycle::Deprecation;
use crate::naming::{FunctionId, NamingError};
use crate::schema::{CompiledSchema, SchemaError, SchemaText, Violations, json_type};

/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 256;
/// Largest input or output schema, serialized, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Version given to functions whose registration names none (iii peers).
pub const DEFAULT_VERSION: Version = Version::new(0, 0, 0);

/// Behaviour hints shown to agents (MCP tool annotations).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Annotations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Who answers for a capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

/// How a function's calls and results appear to MCP clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpOptions {
    /// What the function's result is.
    #[serde(default, skip_serializing_if = "ResultMode::is_json")]
    pub result: ResultMode,
    /// Client capabilities a call relies on, as MCP names them
    /// (`{"sampling": {}}`): a client that did not declare each of them gets
    /// MCP's "missing required client capability" error and nothing runs.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub requires: Map<String, Value>,
}

impl McpOptions {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// What a function's result is, to an MCP client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultMode {
    /// Any JSON value: shown as `structuredContent` (objects) and as text.
    #[default]
    Json,
    /// An MCP tool result (`{"content": [...], "structuredContent"?, "isError"?}`),
    /// passed to the client as it is: images, audio, embedded resources.
    Content,
}

impl ResultMode {
    fn is_json(&self) -> bool {
        *self == Self::Json
    }
}

/// Everything known about one `id@version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityDefinition {
    pub id: FunctionId,
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<SchemaText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<SchemaText>,
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Deprecation>,
    #[serde(default, skip_serializing_if = "McpOptions::is_default")]
    pub mcp: McpOptions,
    /// Free-form metadata; not shown to agents, not part of the hash.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// SHA-256 over the canonical JSON of everything an agent sees of a
/// version's definition. Deprecation is lifecycle, not definition, and is
/// left out (see the `lifecycle` module).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DefinitionHash([u8; 32]);

impl DefinitionHash {
    pub fn of(definition: &CapabilityDefinition) -> Self {
        // Metadata is operational, not part of what the agent trusts.
        let visible = serde_json::json!({
            "id": definition.id,
            "version": definition.version.to_string(),
            "title": definition.title,
            "description": definition.description,
            "input_schema": definition.input_schema.as_ref().map(SchemaText::value),
            "output_schema": definition.output_schema.as_ref().map(SchemaText::value),
            "annotations": definition.annotations,
            "owner": definition.owner,
            "permissions": definition.permissions,
            "tags": definition.tags,
            "timeout_ms": definition.timeout_ms,
        });
        let mut visible = visible;
        // Only when set, so hashes from before the field existed still hold.
        if !definition.mcp.is_default()
            && let (Value::Object(map), Ok(mcp)) =
                (&mut visible, serde_json::to_value(&definition.mcp))
        {
            map.insert("mcp".into(), mcp);
        }
        let mut canonical = String::new();
        write_canonical(&visible, &mut canonical);
        Self(Sha256::digest(canonical.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for DefinitionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for DefinitionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// JSON with object keys sorted, whatever map order serde_json was built with,
/// so the hash does not depend on a feature flag somewhere in the tree.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A checked definition with its compiled schemas and hash. The fields are
/// private so that the hash can never fall out of step with the definition.
#[derive(Debug, Clone)]
pub struct Capability {
    definition: CapabilityDefinition,
    hash: DefinitionHash,
    input: Option<CompiledSchema>,
    output: Option<CompiledSchema>,
    tool_name: String,
    /// The version as text, made once: every call's metrics label it.
    version_text: Arc<str>,
}

impl Capability {
    /// Compiles the schemas of a definition (from a draft or from the store).
    pub fn from_definition(definition: CapabilityDefinition) -> Result<Self, DefinitionError> {
        let input = compile("input schema", definition.input_schema.as_ref())?;
        let output = compile("output schema", definition.output_schema.as_ref())?;
        Ok(Self {
            hash: DefinitionHash::of(&definition),
            tool_name: definition.id.tool_name(),
            version_text: definition.version.to_string().into(),
            definition,
            input,
            output,
        })
    }

    pub fn id(&self) -> &FunctionId {
        &self.definition.id
    }

    pub fn definition(&self) -> &CapabilityDefinition {
        &self.definition
    }

    pub fn into_definition(self) -> CapabilityDefinition {
        self.definition
    }

    /// The hash of everything an agent sees of this version.
    pub fn hash(&self) -> DefinitionHash {
        self.hash
    }

    /// The MCP tool name (`acme__billing__refund`).
    pub fn tool_name(&self) -> &str {
        &self.tool_name
    }

    /// The same version with a new deprecation (or none); the hash does not
    /// cover deprecation and stays as it is.
    pub fn with_deprecation(mut self, deprecation: Option<Deprecation>) -> Self {
        self.definition.deprecation = deprecation;
        self
    }

    pub fn version(&self) -> &Version {
        &self.definition.version
    }

    /// [`Self::version`] as text.
    pub fn version_text(&self) -> &Arc<str> {
        &self.version_text
    }

    /// Checks a call's input against the input schema, if there is one.
    /// The payload is parsed only then.
    pub fn validate_input(&self, instance: &Payload) -> Result<(), Violations> {
        checked(
            self.input.as_ref(),
            self.definition.input_schema.as_ref(),
            instance,
        )
        .map(drop)
    }

    /// A call's input as it goes to the provider: without an input schema,
    /// the payload as sent (text stays text, unparsed); with one, the value
    /// the schema accepted — parsed once, so what the provider reads is
    /// exactly what was checked, however its parser treats repeated keys.
    pub fn checked_input(&self, input: Payload) -> Result<Payload, Violations> {
        checked_payload(
            self.input.as_ref(),
            self.definition.input_schema.as_ref(),
            input,
        )
    }

    /// A result as it goes to the caller, checked against the output
    /// schema as [`Capability::checked_input`] checks input.
    pub fn checked_output(&self, output: Payload) -> Result<Payload, Violations> {
        checked_payload(
            self.output.as_ref(),
            self.definition.output_schema.as_ref(),
            output,
        )
    }

    /// The version's own deadline, if it set one.
    pub fn timeout(&self) -> Option<Duration> {
        self.definition.timeout_ms.map(Duration::from_millis)
    }
}

/// `instance` checked against `schema` when there is one: its value, or
/// `None` when there is no schema (and nothing was parsed).
fn checked<'p>(
    compiled: Option<&CompiledSchema>,
    schema: Option<&SchemaText>,
    instance: &'p Payload,
) -> Result<Option<std::borrow::Cow<'p, Value>>, Violations> {
    let (Some(compiled), Some(schema)) = (compiled, schema) else {
        return Ok(None);
    };
    // A payload that cannot be read is one violation.
    let value = instance.to_value().map_err(|error| Violations {
        errors: vec![format!("/: {error}")],
        more: 0,
    })?;
    compiled.validate(schema, &value)?;
    Ok(Some(value))
}

fn checked_payload(
    compiled: Option<&CompiledSchema>,
    schema: Option<&SchemaText>,
    payload: Payload,
) -> Result<Payload, Violations> {
    // Text the check parsed leaves as that value; a value stays as it was.
    let parsed = match checked(compiled, schema, &payload)? {
        Some(std::borrow::Cow::Owned(value)) => Some(value),
        _ => None,
    };
    Ok(parsed.map_or(payload, Payload::Value))
}

fn compile(
    what: &'static str,
    schema: Option<&SchemaText>,
) -> Result<Option<CompiledSchema>, DefinitionError> {
    let Some(schema) = schema else {
        return Ok(None);
    };
    let size = schema.as_str().len();
    if size > MAX_SCHEMA_BYTES {
        return Err(DefinitionError::TooLarge {
            field: what,
            size,
            limit: MAX_SCHEMA_BYTES,
        });
    }
    CompiledSchema::compile(&schema.value())
        .map(Some)
        .map_err(|source| DefinitionError::Schema { what, source })
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error(transparent)]
    Naming(#[from] NamingError),
    #[error("'{version}' is not a semver version ({reason}): use MAJOR.MINOR.PATCH, such as 1.2.0")]
    Version { version: String, reason: String },
    #[error("{what}: {source}")]
    Schema {
        what: &'static str,
        #[source]
        source: SchemaError,
    },
    #[error("{field} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("field '{field}' is invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

/// A registration as it arrived, before any check. It is also the shape of
/// a declaration in the admin API and in configuration, where unknown
/// fields are refused rather than ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Draft {
    pub id: String,
    pub version: Option<Value>,
    pub title: Option<Value>,
    pub description: Option<String>,
    pub input_schema: Option<Value>,
    pub output_schema: Option<Value>,
    pub annotations: Option<Value>,
    pub owner: Option<Value>,
    pub permissions: Option<Value>,
    pub tags: Option<Value>,
    pub timeout_ms: Option<Value>,
    pub deprecation: Option<Value>,
    pub mcp: Option<Value>,
    pub metadata: Map<String, Value>,
}

impl Draft {
    /// Fills capgate's fields that are absent at the top level from `metadata`,
    /// where an iii SDK (which can send only `metadata`) puts them.
    ///
    /// `metadata` is free-form for iii users (a recorded iii session sends
    /// `{"team": "wire", "version": 1}`), so a key there counts as capgate's
    /// field only when it has that field's shape; otherwise it stays plain
    /// metadata and the registration goes on. Top-level fields stay strict.
    pub fn with_fields_from_metadata(mut self) -> Self {
        let metadata = &self.metadata;
        let take = |name: &str, slot: &mut Option<Value>, fits: fn(&Value) -> bool| {
            if slot.is_none()
                && let Some(value) = metadata.get(name)
            {
                if fits(value) {
                    *slot = Some(value.clone());
                } else {
                    tracing::debug!(field = name, %value, "metadata key is not capgate's field; kept as metadata");
                }
            }
        };
        take("version", &mut self.version, |v| {
            v.as_str().is_some_and(|t| Version::parse(t).is_ok())
        });
        take("title", &mut self.title, Value::is_string);
        take("annotations", &mut self.annotations, fits::<Annotations>);
        take("owner", &mut self.owner, fits::<Owner>);
        take("permissions", &mut self.permissions, fits::<Vec<String>>);
        take("tags", &mut self.tags, fits::<Vec<String>>);
        take("timeout_ms", &mut self.timeout_ms, |v| {
            v.as_u64().is_some_and(|ms| ms > 0)
        });
        take("deprecation", &mut self.deprecation, fits::<Deprecation>);
        take("mcp", &mut self.mcp, fits::<McpOptions>);
        self
    }

    /// Checks every field; the first problem refuses the whole registration.
    pub fn build(self) -> Result<Capability, DefinitionError> {
        let id = FunctionId::parse(&self.id)?;
        let version = match self.version {
            None | Some(Value::Null) => DEFAULT_VERSION,
            Some(Value::String(text)) => {
                Version::parse(&text).map_err(|error| DefinitionError::Version {
                    version: text.clone(),
                    reason: error.to_string(),
                })?
            }
            Some(other) => {
                return Err(DefinitionError::Version {
                    version: other.to_string(),
                    reason: format!("expected a string, found {}", json_type(&other)),
                });
            }
        };
        let title: Option<String> = typed("title", self.title)?;
        if let Some(title) = &title {
            limit("title", title.len(), MAX_TITLE_BYTES)?;
        }
        if let Some(description) = &self.description {
            limit("description", description.len(), MAX_DESCRIPTION_BYTES)?;
        }
        let definition = CapabilityDefinition {
            id,
            version,
            title,
            description: self.description,
            input_schema: self.input_schema.as_ref().map(SchemaText::new),
            output_schema: self.output_schema.as_ref().map(SchemaText::new),
            annotations: typed("annotations", self.annotations)?.unwrap_or_default(),
            owner: typed("owner", self.owner)?,
            permissions: typed("permissions", self.permissions)?.unwrap_or_default(),
            tags: typed("tags", self.tags)?.unwrap_or_default(),
            timeout_ms: typed("timeout_ms", self.timeout_ms)?,
            deprecation: typed("deprecation", self.deprecation)?,
            mcp: typed("mcp", self.mcp)?.unwrap_or_default(),
            metadata: self.metadata,
        };
        if let Some((name, _)) = definition
            .mcp
            .requires
            .iter()
            .find(|(_, needs)| !needs.is_object())
        {
            return Err(DefinitionError::Field {
                field: "mcp",
                reason: format!(
                    "requires.{name} must be an object, the capability as MCP declares it (such as {{}})"
                ),
            });
        }
        if definition.timeout_ms == Some(0) {
            return Err(DefinitionError::Field {
                field: "timeout_ms",
                reason: "must be at least 1 millisecond".into(),
            });
        }
        Capability::from_definition(definition)
    }
}

/// Whether `value` deserializes as a `T`.
fn fits<T: DeserializeOwned>(value: &Value) -> bool {
    T::deserialize(value).is_ok()
}

fn limit(field: &'static str, size: usize, limit: usize) -> Result<(), DefinitionError> {
    if size > limit {
        return Err(DefinitionError::TooLarge { field, size, limit });
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(
    field: &'static str,
    value: Option<Value>,
) -> Result<Option<T>, DefinitionError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            serde_json::from_value(value)
                .map(Some)
                .map_err(|error| DefinitionError::Field {
                    field,
                    reason: error.to_string(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draft(id: &str) -> Draft {
        Draft {
            id: id.into(),
            description: Some("Greets".into()),
            input_schema: Some(json!({"type": "object"})),
            ..Default::default()
        }
    }

    #[test]
    fn iii_peers_get_the_default_version() {
        let capability = draft("hello::greet").build().unwrap();
        assert_eq!(capability.definition.version, DEFAULT_VERSION);
        assert_eq!(capability.tool_name, "hello__greet");
    }

    #[test]
    fn mcp_options_are_checked_hashed_when_set_and_read_from_metadata() {
        let plain = draft("hello::greet").build().unwrap();
        let mut content = draft("hello::greet");
        content.mcp = Some(json!({"result": "content", "requires": {"sampling": {}}}));
        let content = content.build().unwrap();
        assert_eq!(content.definition.mcp.result, ResultMode::Content);
        assert!(content.definition.mcp.requires.contains_key("sampling"));
        // What an agent is shown changed, so the hash did; a definition
        // without the field keeps the hash it had before the field existed.
        assert_ne!(plain.hash(), content.hash());
        let mut explicit_default = draft("hello::greet");
        explicit_default.mcp = Some(json!({"result": "json"}));
        assert_eq!(explicit_default.build().unwrap().hash(), plain.hash());
        // iii SDKs can send it only inside metadata.
        let mut iii = draft("hello::greet");
        iii.metadata
            .insert("mcp".into(), json!({"result": "content"}));
        let iii = iii.with_fields_from_metadata().build().unwrap();
        assert_eq!(iii.definition.mcp.result, ResultMode::Content);
        for (bad, says) in [
            (json!({"result": "pictures"}), "unknown variant"),
            (
                json!({"requires": {"sampling": true}}),
                "requires.sampling must be an object",
            ),
            (json!({"stream": true}), "unknown field"),
        ] {
            let mut refused = draft("hello::greet");
            refused.mcp = Some(bad.clone());
            let error = refused.build().unwrap_err().to_string();
            assert!(
                error.contains("mcp") && error.contains(says),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn metadata_carries_capgate_fields_for_iii_sdks() {
        let mut draft = draft("hello::greet");
        draft.metadata.insert("version".into(), json!("1.2.3"));
        draft
            .metadata
            .insert("owner".into(), json!({"team": "core"}));
        let capability = draft.with_fields_from_metadata().build().unwrap();
        assert_eq!(capability.definition.version, Version::new(1, 2, 3));
        assert_eq!(
            capability.definition.owner.unwrap().team.as_deref(),
            Some("core")
        );
    }

    #[test]
    fn metadata_that_is_not_shaped_like_capgates_fields_stays_metadata() {
        // As recorded from the iii Node SDK: a numeric version of the user's own.
        let mut draft = draft("calc::add");
        draft.metadata.insert("team".into(), json!("wire"));
        draft.metadata.insert("version".into(), json!(1));
        draft.metadata.insert("owner".into(), json!("someone"));
        draft.metadata.insert("timeout_ms".into(), json!(0));
        let capability = draft.with_fields_from_metadata().build().unwrap();
        assert_eq!(capability.definition.version, DEFAULT_VERSION);
        assert_eq!(capability.definition.owner, None);
        assert_eq!(capability.definition.timeout_ms, None);
        assert_eq!(capability.definition.metadata["version"], json!(1));
        // A top-level field of the wrong shape is still refused.
        let mut strict = self::draft("calc::add");
        strict.version = Some(json!(1));
        assert!(strict.build().is_err());
    }

    #[test]
    fn the_hash_covers_what_agents_see_and_nothing_else() {
        let base = draft("a::b").build().unwrap();
        let mut changed = draft("a::b");
        changed.description = Some("Greets warmly".into());
        assert_ne!(base.hash, changed.build().unwrap().hash);
        let mut metadata_only = draft("a::b");
        metadata_only.metadata.insert("pod".into(), json!("x-1"));
        assert_eq!(base.hash, metadata_only.build().unwrap().hash);
        assert_eq!(base.hash, draft("a::b").build().unwrap().hash);
    }

    #[test]
    fn refusals_name_the_field_and_the_fix() {
        let mut bad = draft("a::b");
        bad.version = Some(json!("1.2"));
        let error = bad.build().unwrap_err().to_string();
        assert!(error.contains("semver") && error.contains("1.2"), "{error}");

        let mut bad = draft("a::b");
        bad.input_schema = Some(json!({"type": 5}));
        let error = bad.build().unwrap_err().to_string();
        assert!(
            error.starts_with("input schema: invalid JSON Schema"),
            "{error}"
        );

        let mut bad = draft("a::b");
        bad.description = Some("x".repeat(MAX_DESCRIPTION_BYTES + 1));
        assert!(matches!(
            bad.build(),
            Err(DefinitionError::TooLarge {
                field: "description",
                ..
            })
        ));

        let mut bad = draft("a::b");
        bad.annotations = Some(json!({"readOnlyHint": "yes"}));
        let error = bad.build().unwrap_err().to_string();
        assert!(error.contains("annotations"), "{error}");

        let mut bad = draft("a::b");
        let big: Map<String, Value> = (0..20_000)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        bad.input_schema = Some(json!({"type": "object", "properties": big}));
        assert!(matches!(
            bad.build(),
            Err(DefinitionError::TooLarge {
                field: "input schema",
                ..
            })
        ));
    }

    #[test]
    fn stored_definitions_rebuild_to_the_same_hash() {
        let capability = draft("a::b").build().unwrap();
        let text = serde_json::to_string(&capability.definition).unwrap();
        let reloaded: CapabilityDefinition = serde_json::from_str(&text).unwrap();
        assert_eq!(
            Capability::from_definition(reloaded).unwrap().hash,
            capability.hash
        );
    }
}

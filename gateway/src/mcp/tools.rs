//! Capabilities as MCP tools; call outcomes as MCP tool results.
//!
//! The tool list is built once per catalog revision and shared by every
//! session of every unpinned agent (an agent with version pins gets its own,
//! built from the shared one), so `tools/list` is a clone of an `Arc` on the
//! warm path.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use axum::body::Bytes;

use capgate_catalog::lifecycle::notice;
use capgate_catalog::{Capability, Catalog, InvocationError};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, MetaObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::agents::Agent;
use crate::invocation::Noted;

/// Prefix of capgate's keys in a tool's `_meta`.
pub const META_PREFIX: &str = "io.capgate/";

/// The agent-visible tool for a capability.
pub fn tool_for(capability: &Capability) -> Tool {
    let definition = &capability.definition;
    let mut description = definition
        .description
        .clone()
        .unwrap_or_else(|| format!("capgate function {}", definition.id));
    // A deprecated tool says so first, where the model reads.
    if let Some(deprecation) = &definition.deprecation {
        description = format!("{} {description}", notice(deprecation));
    }
    let mut tool = Tool::new_with_raw(
        capability.tool_name.clone(),
        Some(description.into()),
        Arc::new(input_schema(definition.input_schema.as_ref())),
    );
    tool.title = definition.title.clone();
    tool.output_schema = definition
        .output_schema
        .as_ref()
        .filter(|schema| schema.get("type").and_then(Value::as_str) == Some("object"))
        .and_then(|schema| schema.as_object().cloned())
        .map(Arc::new);
    let hints = &definition.annotations;
    if !hints.is_empty() {
        let mut annotations = ToolAnnotations::new();
        annotations.read_only_hint = hints.read_only_hint;
        annotations.destructive_hint = hints.destructive_hint;
        annotations.idempotent_hint = hints.idempotent_hint;
        annotations.open_world_hint = hints.open_world_hint;
        tool.annotations = Some(annotations);
    }
    let mut meta = JsonObject::new();
    meta.insert(format!("{META_PREFIX}id"), json!(definition.id));
    meta.insert(
        format!("{META_PREFIX}version"),
        json!(definition.version.to_string()),
    );
    meta.insert(
        format!("{META_PREFIX}definitionHash"),
        json!(capability.hash.to_string()),
    );
    if let Some(owner) = &definition.owner {
        meta.insert(format!("{META_PREFIX}owner"), json!(owner));
    }
    if let Some(deprecation) = &definition.deprecation {
        meta.insert(format!("{META_PREFIX}deprecation"), json!(deprecation));
    }
    tool.meta = Some(MetaObject(meta));
    tool
}

/// MCP requires an object-rooted input schema. A schema that names no type
/// (the iii SDKs' "AnyValue") is shown as an object schema; calls are still
/// validated against the schema as registered.
fn input_schema(schema: Option<&Value>) -> JsonObject {
    match schema {
        Some(Value::Object(map)) => {
            let mut map = map.clone();
            map.entry("type").or_insert_with(|| json!("object"));
            map
        }
        _ => {
            let mut map = JsonObject::new();
            map.insert("type".into(), json!("object"));
            map
        }
    }
}

/// The tool result for a call: structured content plus its text rendering
/// on success; `isError` with a message that says what happened otherwise;
/// and a deprecation warning, when there is one, as a second text block and
/// in `_meta`.
pub fn result_for(noted: Noted) -> CallToolResult {
    let mut result = outcome_result(noted.outcome);
    if let Some(warning) = noted.warning {
        result
            .content
            .push(ContentBlock::text(format!("warning: {warning}")));
        let mut meta = JsonObject::new();
        meta.insert(format!("{META_PREFIX}warning"), json!(warning));
        result.meta = Some(MetaObject(meta));
    }
    result
}

fn outcome_result(outcome: Result<Value, InvocationError>) -> CallToolResult {
    match outcome {
        Ok(value) => {
            let text = serde_json::to_string(&value).unwrap_or_default();
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            if value.is_object() {
                result.structured_content = Some(value);
            }
            result
        }
        Err(error) => CallToolResult::error(vec![ContentBlock::text(error.to_string())]),
    }
}

/// The tools one agent sees, with the capabilities they stand for (both
/// sorted by id) and, once asked for, the list serialized.
pub struct ToolList {
    pub tools: Vec<Tool>,
    capabilities: Vec<Arc<Capability>>,
    json: OnceLock<Bytes>,
}

impl ToolList {
    fn new(capabilities: Vec<Arc<Capability>>, tools: Vec<Tool>) -> Self {
        Self {
            tools,
            capabilities,
            json: OnceLock::new(),
        }
    }

    /// The tools as a JSON array, serialized once per list.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            serde_json::to_vec(&self.tools)
                .map(Bytes::from)
                .unwrap_or_else(|_| Bytes::from_static(b"[]"))
        })
    }
}

/// Tool lists of the live catalog, rebuilt when the catalog's revision
/// moves: one shared by every unpinned agent, one per pinned agent.
pub struct ToolCache {
    catalog: Arc<Catalog>,
    shared: RwLock<(u64, Arc<ToolList>)>,
    pinned: RwLock<HashMap<String, (u64, Arc<ToolList>)>>,
}

impl ToolCache {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self {
            catalog,
            shared: RwLock::new((u64::MAX, Arc::new(ToolList::new(Vec::new(), Vec::new())))),
            pinned: RwLock::new(HashMap::new()),
        }
    }

    /// The tools `agent` sees: for each id, the version it resolves to.
    pub fn for_agent(&self, agent: &Agent) -> Arc<ToolList> {
        if agent.pins.is_empty() {
            return self.shared();
        }
        let revision = self.catalog.revision();
        if let Some((built, list)) = self
            .pinned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&agent.name)
            && *built == revision
        {
            return list.clone();
        }
        let shared = self.shared();
        let capabilities = self.catalog.live_pinned(&agent.pins);
        // Only pinned ids can differ from the shared list; reuse the rest.
        let mut reusable = shared.capabilities.iter().zip(&shared.tools).peekable();
        let tools = capabilities
            .iter()
            .map(|capability| {
                while reusable
                    .peek()
                    .is_some_and(|(c, _)| c.id() < capability.id())
                {
                    reusable.next();
                }
                match reusable.peek() {
                    Some((c, tool))
                        if c.hash == capability.hash && c.version() == capability.version() =>
                    {
                        (*tool).clone()
                    }
                    _ => tool_for(capability),
                }
            })
            .collect();
        let list = Arc::new(ToolList::new(capabilities, tools));
        self.pinned
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(agent.name.clone(), (revision, list.clone()));
        list
    }

    fn shared(&self) -> Arc<ToolList> {
        let revision = self.catalog.revision();
        {
            let built = self.shared.read().unwrap_or_else(PoisonError::into_inner);
            if built.0 == revision {
                return built.1.clone();
            }
        }
        let capabilities = self.catalog.live();
        let tools = capabilities.iter().map(|c| tool_for(c)).collect();
        let list = Arc::new(ToolList::new(capabilities, tools));
        let mut built = self.shared.write().unwrap_or_else(PoisonError::into_inner);
        // Changes that land while building bump the revision again, so the
        // next caller rebuilds; never store a list under a newer revision.
        *built = (revision, list.clone());
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capgate_catalog::Draft;

    #[test]
    fn tools_carry_schemas_hints_and_capgate_meta() {
        let capability = Draft {
            id: "hello::greet".into(),
            version: Some(json!("1.0.0")),
            description: Some("Greets".into()),
            input_schema: Some(json!({"properties": {"name": {"type": "string"}}})),
            output_schema: Some(
                json!({"type": "object", "properties": {"message": {"type": "string"}}}),
            ),
            annotations: Some(json!({"readOnlyHint": true})),
            ..Default::default()
        }
        .build()
        .unwrap();
        let tool = tool_for(&capability);
        assert_eq!(tool.name, "hello__greet");
        assert_eq!(tool.input_schema.get("type"), Some(&json!("object")));
        assert!(tool.output_schema.is_some());
        assert_eq!(tool.annotations.unwrap().read_only_hint, Some(true));
        let meta = tool.meta.unwrap();
        assert_eq!(meta.0.get("io.capgate/version"), Some(&json!("1.0.0")));
        assert!(
            meta.0["io.capgate/definitionHash"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }

    #[test]
    fn non_object_output_schemas_are_not_advertised() {
        let capability = Draft {
            id: "a::b".into(),
            output_schema: Some(json!({"type": "string"})),
            ..Default::default()
        }
        .build()
        .unwrap();
        assert!(tool_for(&capability).output_schema.is_none());
    }

    #[test]
    fn results_and_errors() {
        let noted = |outcome, warning: Option<&str>| Noted {
            outcome,
            warning: warning.map(str::to_owned),
        };
        let ok = result_for(noted(Ok(json!({"message": "hello world"})), None));
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(
            ok.structured_content,
            Some(json!({"message": "hello world"}))
        );
        let warned = result_for(noted(Ok(json!({})), Some("DEPRECATED.")));
        assert_eq!(warned.content.len(), 2);
        assert_eq!(warned.meta.unwrap().0["io.capgate/warning"], "DEPRECATED.");
        let error = result_for(noted(Err(InvocationError::not_found("x::y")), None));
        assert_eq!(error.is_error, Some(true));
        assert!(error.structured_content.is_none());
    }
}

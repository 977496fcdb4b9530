//! Capabilities as MCP tools; call outcomes as MCP tool results.
//!
//! Each agent's tool list holds what the policy lets it call, at the
//! version it resolves to (pins, deprecation policy). It is built once per
//! catalog revision and policy generation and kept per agent; agents that
//! see the same tools share one list (and its pre-serialized pages), so
//! `tools/list` is a clone of an `Arc` on the warm path.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock, Weak};

use axum::body::Bytes;

use capgate_catalog::definition::ResultMode;
use capgate_catalog::lifecycle::notice;
use capgate_catalog::schema::SchemaText;
use capgate_catalog::{Capability, Catalog, InvocationError};
use rmcp::model::{
    CallToolResult, ContentBlock, JsonObject, MetaObject, ResultType, Tool, ToolAnnotations,
};
use serde_json::{Value, json};

use capgate_policies::{Action, DeprecatedMode};

use crate::access::Access;
use crate::identity::agents::Agent;
use crate::invocation::Noted;

/// Prefix of capgate's keys in a tool's `_meta`.
pub const META_PREFIX: &str = "io.capgate/";

/// The agent-visible tool for a capability.
pub fn tool_for(capability: &Capability) -> Tool {
    let definition = &capability.definition();
    let mut description = definition
        .description
        .clone()
        .unwrap_or_else(|| format!("capgate function {}", definition.id));
    // A deprecated tool says so first, where the model reads.
    if let Some(deprecation) = &definition.deprecation {
        description = format!("{} {description}", notice(deprecation));
    }
    let mut tool = Tool::new_with_raw(
        capability.tool_name().to_owned(),
        Some(description.into()),
        Arc::new(input_schema(
            definition.input_schema.as_ref().map(SchemaText::value),
        )),
    );
    tool.title = definition.title.clone();
    tool.output_schema = match definition.output_schema.as_ref().map(SchemaText::value) {
        Some(Value::Object(schema))
            if schema.get("type").and_then(Value::as_str) == Some("object") =>
        {
            Some(Arc::new(schema))
        }
        _ => None,
    };
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
        json!(capability.hash().to_string()),
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
fn input_schema(schema: Option<Value>) -> JsonObject {
    match schema {
        Some(Value::Object(mut map)) => {
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

/// A call's tool result, with its most common case kept apart.
pub enum ToolResult {
    /// The call returned its output as JSON (no MCP content of its own, no
    /// warning): the fast path writes its answer straight to bytes
    /// ([`write_output_answer`]) instead of building and serializing rmcp's
    /// result around it.
    Output(Value),
    Built(CallToolResult),
}

impl ToolResult {
    /// As rmcp's result: structured content plus its text rendering for
    /// an output.
    pub fn into_result(self) -> CallToolResult {
        match self {
            Self::Output(value) => outcome_result(Ok(value)),
            Self::Built(result) => result,
        }
    }
}

/// The tool result for a call: structured content plus its text rendering
/// on success — or, for a function that returns MCP content, its own tool
/// result; `isError` with a message that says what happened otherwise; and
/// a deprecation warning, when there is one, as another text block and in
/// `_meta`.
pub fn tool_result(noted: Noted) -> ToolResult {
    let mode = noted
        .capability
        .as_ref()
        .map_or(ResultMode::Json, |capability| {
            capability.definition().mcp.result
        });
    // MCP results are built of values: the payload is parsed here.
    let outcome = noted.outcome.and_then(|payload| {
        payload
            .into_value()
            .map_err(|error| InvocationError::InvalidOutput {
                function: noted
                    .capability
                    .as_ref()
                    .map_or_else(String::new, |c| c.id().to_string()),
                violations: error.to_string(),
            })
    });
    let mut result = match (mode, outcome, &noted.warning) {
        (ResultMode::Content, Ok(value), _) => content_result(value, noted.capability.as_deref()),
        (ResultMode::Json, Ok(value), None) => return ToolResult::Output(value),
        (_, outcome, _) => outcome_result(outcome),
    };
    if let Some(warning) = noted.warning {
        result
            .content
            .push(ContentBlock::text(format!("warning: {warning}")));
        result
            .meta
            .get_or_insert_with(MetaObject::default)
            .0
            .insert(format!("{META_PREFIX}warning"), json!(warning));
    }
    ToolResult::Built(result)
}

/// The result of a function that declares `mcp.result = "content"`: its
/// output is an MCP tool result and goes to the client as it is. One that
/// does not parse as such is the function's error, said plainly.
fn content_result(value: Value, capability: Option<&Capability>) -> CallToolResult {
    match serde_json::from_value::<CallToolResult>(value) {
        Ok(mut result) if !result.content.is_empty() || result.structured_content.is_some() => {
            // A call through capgate completes or fails; a worker cannot ask
            // the client for input mid-call (`input_required`).
            result.result_type = Some(ResultType::COMPLETE);
            result.is_error.get_or_insert(false);
            result
        }
        Ok(_) => content_error(capability, "it has no content"),
        Err(error) => content_error(capability, &error.to_string()),
    }
}

fn content_error(capability: Option<&Capability>, why: &str) -> CallToolResult {
    let id = capability.map_or("the function", |c| c.id().as_str());
    CallToolResult::error(vec![ContentBlock::text(format!(
        "{id} declares MCP content results (mcp.result = \"content\") but returned something that is not an MCP tool result: {why}"
    ))])
}

/// The JSON-RPC answer carrying [`outcome_result`] of `Ok(output)`, byte
/// for byte as serde writes it from rmcp's result: the output is written
/// as JSON once, then copied in twice — escaped as the text block, and as
/// it is for `structuredContent`. Building and serializing rmcp's result
/// cost ~9,500 instructions a call; this ~2,800 (callgrind, MCP → REST).
pub fn write_output_answer(id: &Value, output: &Value) -> Result<Vec<u8>, serde_json::Error> {
    let text = serde_json::to_string(output)?;
    let structured = output.is_object();
    let mut body = Vec::with_capacity(160 + text.len() * if structured { 3 } else { 2 });
    body.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    serde_json::to_writer(&mut body, id)?;
    body.extend_from_slice(
        b",\"result\":{\"resultType\":\"complete\",\"content\":[{\"type\":\"text\",\"text\":",
    );
    serde_json::to_writer(&mut body, text.as_str())?;
    body.extend_from_slice(b"}]");
    if structured {
        body.extend_from_slice(b",\"structuredContent\":");
        body.extend_from_slice(text.as_bytes());
    }
    body.extend_from_slice(b",\"isError\":false}}");
    Ok(body)
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

/// Tools per `tools/list` page. MCP clients follow `nextCursor`; a page
/// this size is about half a megabyte of JSON.
pub const TOOLS_PAGE: usize = 1000;

/// A `tools/list` cursor that names no page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCursor;

/// The tools one agent sees (sorted by id), and each page of them already
/// serialized, so a warm `tools/list` copies bytes.
pub struct ToolList {
    capabilities: Vec<Arc<Capability>>,
    pages: Vec<Bytes>,
    fingerprint: u64,
    /// The few tools that need client capabilities, so a call checks them
    /// without a search through the whole list.
    requiring: Vec<Arc<Capability>>,
}

impl ToolList {
    /// Identifies what this list shows: equal lists have equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn build(capabilities: Vec<Arc<Capability>>, json: &ToolJson) -> Self {
        let pages: Vec<Bytes> = capabilities
            .chunks(TOOLS_PAGE)
            .map(|chunk| {
                let tools: Vec<Bytes> = chunk.iter().map(|c| json.of(c)).collect();
                let mut page =
                    Vec::with_capacity(tools.iter().map(|t| t.len() + 1).sum::<usize>() + 2);
                page.push(b'[');
                for (index, tool) in tools.iter().enumerate() {
                    if index > 0 {
                        page.push(b',');
                    }
                    page.extend_from_slice(tool);
                }
                page.push(b']');
                Bytes::from(page)
            })
            .collect();
        let requiring = capabilities
            .iter()
            .filter(|c| !c.definition().mcp.requires.is_empty())
            .cloned()
            .collect();
        Self {
            fingerprint: fingerprint(&pages),
            capabilities,
            pages,
            requiring,
        }
    }

    /// The client capabilities a call of `id` needs, as its listed version
    /// declares them (`mcp.requires`).
    pub fn requirements(&self, id: &str) -> Option<&JsonObject> {
        self.requiring
            .iter()
            .find(|c| c.id().as_str() == id)
            .map(|c| &c.definition().mcp.requires)
    }

    /// The page a cursor names (the first without one) and the next cursor.
    fn locate(&self, cursor: Option<&str>) -> Result<(usize, Option<String>), BadCursor> {
        let index = match cursor {
            None => 0,
            Some(text) => text
                .strip_prefix("page-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0 && *n < self.pages.len())
                .ok_or(BadCursor)?,
        };
        let next = (index + 1 < self.pages.len()).then(|| format!("page-{}", index + 1));
        Ok((index, next))
    }

    /// One page as a JSON array, for the fast path.
    pub fn page_json(&self, cursor: Option<&str>) -> Result<(Bytes, Option<String>), BadCursor> {
        let (index, next) = self.locate(cursor)?;
        let json = self
            .pages
            .get(index)
            .cloned()
            .unwrap_or_else(|| Bytes::from_static(b"[]"));
        Ok((json, next))
    }

    /// One page as tools, for rmcp; the same tools as [`ToolList::page_json`].
    pub fn page(&self, cursor: Option<&str>) -> Result<(Vec<Tool>, Option<String>), BadCursor> {
        let (index, next) = self.locate(cursor)?;
        let tools = self
            .capabilities
            .chunks(TOOLS_PAGE)
            .nth(index)
            .unwrap_or_default()
            .iter()
            .map(|c| tool_for(c))
            .collect();
        Ok((tools, next))
    }
}

/// A hash of exactly what the agent is shown (the serialized pages), so a
/// change of any visible field — a deprecation notice too — changes it.
fn fingerprint(pages: &[Bytes]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for page in pages {
        page.hash(&mut hasher);
    }
    hasher.finish()
}

/// Each capability version's tool, serialized once and reused by every
/// list that shows it: rebuilding an agent's list after a policy reload
/// only decides and concatenates. Keyed by the capability's allocation;
/// a changed capability (a deprecation) is a new allocation.
#[derive(Default)]
pub struct ToolJson {
    by_capability: RwLock<HashMap<usize, (Weak<Capability>, Bytes)>>,
}

impl ToolJson {
    fn of(&self, capability: &Arc<Capability>) -> Bytes {
        let key = Arc::as_ptr(capability) as usize;
        if let Some((held, json)) = self
            .by_capability
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            && held
                .upgrade()
                .is_some_and(|held| Arc::ptr_eq(&held, capability))
        {
            return json.clone();
        }
        let json = serde_json::to_vec(&tool_for(capability))
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::from_static(b"{}"));
        let mut entries = self
            .by_capability
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Forget versions no longer held anywhere, now and then.
        if entries.len() >= 1024 && entries.len().is_power_of_two() {
            entries.retain(|_, (weak, _)| weak.strong_count() > 0);
        }
        entries.insert(key, (Arc::downgrade(capability), json.clone()));
        json
    }
}

/// Agents kept before the per-agent cache is emptied (bounds memory).
const MAX_CACHED_AGENTS: usize = 10_000;

/// A list and the catalog revision and policy generation it reflects.
struct Built {
    revision: u64,
    generation: u64,
    list: Arc<ToolList>,
}

/// Tool lists per agent, rebuilt when the catalog or the policy moves.
pub struct ToolCache {
    catalog: Arc<Catalog>,
    access: Arc<Access>,
    /// By tenant, then agent name: looked up with the agent's own strings,
    /// no key built per call.
    by_agent: RwLock<HashMap<String, HashMap<String, Built>>>,
    json: ToolJson,
    /// Lists by fingerprint, so agents that see the same tools share one.
    shared: SharedLists,
}

/// Tool lists by fingerprint. The fingerprint only finds a candidate: a
/// list is shared only when its pages are byte for byte the same, so a
/// hash collision can never show one agent another agent's tools.
#[derive(Default)]
struct SharedLists(RwLock<HashMap<u64, Weak<ToolList>>>);

impl SharedLists {
    /// The list already held with the same tools, or `list` itself.
    fn share(&self, list: ToolList) -> Arc<ToolList> {
        let fingerprint = list.fingerprint;
        if let Some(held) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fingerprint)
            .and_then(Weak::upgrade)
            .filter(|held| held.pages == list.pages)
        {
            return held;
        }
        let list = Arc::new(list);
        let mut shared = self.0.write().unwrap_or_else(PoisonError::into_inner);
        shared.retain(|_, weak| weak.strong_count() > 0);
        shared.insert(fingerprint, Arc::downgrade(&list));
        list
    }
}

impl ToolCache {
    pub fn new(catalog: Arc<Catalog>, access: Arc<Access>) -> Self {
        Self {
            catalog,
            access,
            by_agent: RwLock::new(HashMap::new()),
            json: ToolJson::default(),
            shared: SharedLists::default(),
        }
    }

    /// The tools `agent` sees: what it may call, each at the version it
    /// resolves to. The revision and generation are read before building:
    /// changes that land meanwhile move them again, so the next caller
    /// rebuilds — a list is never stored under a newer state than it reflects.
    pub fn for_agent(&self, agent: &Agent) -> Arc<ToolList> {
        let revision = self.catalog.revision();
        let generation = self.access.policy.generation();
        if let Some(built) = self
            .by_agent
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent.tenant())
            .and_then(|agents| agents.get(&agent.name))
            && built.revision == revision
            && built.generation == generation
        {
            return built.list.clone();
        }
        let list = self
            .shared
            .share(ToolList::build(self.visible(agent), &self.json));
        let mut by_agent = self
            .by_agent
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if by_agent.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED_AGENTS {
            by_agent.clear();
        }
        by_agent
            .entry(agent.tenant().to_owned())
            .or_default()
            .insert(
                agent.name.clone(),
                Built {
                    revision,
                    generation,
                    list: list.clone(),
                },
            );
        list
    }

    fn visible(&self, agent: &Agent) -> Vec<Arc<Capability>> {
        let subject = agent.subject();
        let policy = self.access.policy.current();
        let skip_deprecated = policy.deprecation_for(&subject) != DeprecatedMode::Allow;
        let mut visible = self.catalog.live_for(&agent.pins, skip_deprecated);
        let may_call = policy.view(&subject, agent.tenant(), Action::Call);
        visible.retain(|capability| may_call.allows(capability.id().as_str()));
        visible
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_for(noted: Noted) -> CallToolResult {
        tool_result(noted).into_result()
    }
    use capgate_catalog::Draft;

    fn list(page: &'static str, fingerprint: u64) -> ToolList {
        ToolList {
            capabilities: Vec::new(),
            pages: vec![Bytes::from_static(page.as_bytes())],
            fingerprint,
            requiring: Vec::new(),
        }
    }

    #[test]
    fn equal_lists_are_shared_and_a_fingerprint_collision_is_not() {
        let shared = SharedLists::default();
        let first = shared.share(list(r#"[{"name":"billing__refund"}]"#, 7));
        let same = shared.share(list(r#"[{"name":"billing__refund"}]"#, 7));
        assert!(Arc::ptr_eq(&first, &same), "equal lists share one Arc");
        // Another agent's different tools with a colliding fingerprint.
        let other = shared.share(list(r#"[{"name":"hr__salaries"}]"#, 7));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.pages[0].as_ref(), br#"[{"name":"hr__salaries"}]"#);
        assert_eq!(first.pages[0].as_ref(), br#"[{"name":"billing__refund"}]"#);
    }

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
            capability: None,
        };
        let ok = result_for(noted(Ok(json!({"message": "hello world"}).into()), None));
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(
            ok.structured_content,
            Some(json!({"message": "hello world"}))
        );
        let warned = result_for(noted(Ok(json!({}).into()), Some("DEPRECATED.")));
        assert_eq!(warned.content.len(), 2);
        assert_eq!(warned.meta.unwrap().0["io.capgate/warning"], "DEPRECATED.");
        let error = result_for(noted(Err(InvocationError::not_found("x::y")), None));
        assert_eq!(error.is_error, Some(true));
        assert!(error.structured_content.is_none());
    }

    #[test]
    fn content_results_pass_through_and_anything_else_is_the_functions_error() {
        let mut draft = Draft {
            id: "media::pixel".into(),
            ..Default::default()
        };
        draft.mcp = Some(json!({"result": "content"}));
        let capability = Arc::new(draft.build().unwrap());
        let noted = |outcome| Noted {
            outcome: Ok(outcome),
            warning: None,
            capability: Some(capability.clone()),
        };
        let image = json!({"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"});
        let result = result_for(noted(json!({"content": [image.clone()]}).into()));
        assert_eq!(result.is_error, Some(false));
        assert_eq!(
            serde_json::to_value(&result.content).unwrap(),
            json!([image])
        );
        assert_eq!(result.result_type, Some(ResultType::COMPLETE));
        // A worker cannot start an input_required exchange through capgate.
        let asked = result_for(noted(
            json!({
                "resultType": "input_required", "content": [{"type": "text", "text": "?"}]
            })
            .into(),
        ));
        assert_eq!(asked.result_type, Some(ResultType::COMPLETE));
        for bad in [json!({"message": "hi"}), json!({"content": "hi"}), json!(7)] {
            let result = result_for(noted(bad.clone().into()));
            assert_eq!(result.is_error, Some(true), "{bad}");
            let text = serde_json::to_string(&result.content).unwrap();
            assert!(
                text.contains("media::pixel declares MCP content results"),
                "{bad}: {text}"
            );
        }
    }
}

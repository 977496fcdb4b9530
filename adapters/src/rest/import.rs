//! From an OpenAPI document to capabilities: one per operation, each with
//! the [`Plan`] that turns a call's input into the HTTP request.
//!
//! Nothing is registered here: an import either yields every operation it
//! selects, checked, or an error — a document is never half imported.

use std::collections::BTreeMap;
use std::sync::Arc;

use capgate_catalog::definition::{MAX_DESCRIPTION_BYTES, MAX_TITLE_BYTES};
use capgate_catalog::naming::MAX_TOOL_NAME_LEN;
use capgate_catalog::{Capability, FunctionId};
use reqwest::Method;
use semver::Version;
use serde_json::{Map, Value, json};

use super::document::{self, Document, DocumentError};
use super::multipart::{self, FilePart};
use super::plan::{Answer, Body, BodyMedia, Location, Param, Plan, Style};
use super::refs::{self, Defs, RefError};

/// Most operations one service may import.
pub const MAX_OPERATIONS: usize = 2_000;

/// What an import is asked to take from a document.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    /// Functions are `NAMESPACE::operation`.
    pub namespace: &'a str,
    /// Only these operations (operationId, function name or `METHOD /path`;
    /// a trailing `*` matches a prefix); all when empty.
    pub include: &'a [String],
    pub exclude: &'a [String],
    /// The owning team; the namespace when absent.
    pub owner: Option<&'a str>,
}

/// An imported document.
pub struct Imported {
    pub title: String,
    /// `info.version` as the document gives it.
    pub api_version: String,
    /// The version its capabilities take (see [`api_version`]).
    pub version: Version,
    pub revision: String,
    /// In function-id order.
    pub operations: Vec<Operation>,
    /// Operations left out, with why (unsupported request bodies).
    pub skipped: Vec<String>,
}

/// One operation, ready to register: its capability at the document's
/// version and its request plan.
pub struct Operation {
    pub function: FunctionId,
    /// `METHOD /path` as the document writes it.
    pub route: String,
    pub capability: Capability,
    pub plan: Arc<Plan>,
}

/// Why an import is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("{route}: {source}")]
    Ref { route: String, source: RefError },
    #[error("namespace '{namespace}' is not usable: {reason}")]
    Namespace { namespace: String, reason: String },
    #[error(
        "operations {first} and {second} both become function {function}; give one of them another operationId, or leave one out with --exclude"
    )]
    Collision {
        function: String,
        first: String,
        second: String,
    },
    #[error("{route}: {reason}")]
    Operation { route: String, reason: String },
    #[error(
        "--include {pattern} matches no operation of the document (operations are named by operationId, function name or 'METHOD /path')"
    )]
    IncludeUnmatched { pattern: String },
    #[error("the selection leaves no operation to import{hint}")]
    Empty { hint: String },
    #[error(
        "the document has more than {MAX_OPERATIONS} operations, the limit per service; select some with --include"
    )]
    TooMany,
}

/// Imports the operations `selection` picks from the document `text`.
pub fn import(text: &str, selection: &Selection<'_>) -> Result<Imported, ImportError> {
    check_namespace(selection.namespace)?;
    let document = document::parse(text)?;
    let (version, _) = api_version(&document.spec.info.version);
    let mut defs = Defs::new(&document.raw);
    let mut operations: BTreeMap<FunctionId, Operation> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut matched = vec![false; selection.include.len()];
    let paths = document.raw.get("paths").and_then(Value::as_object);
    let mut count = 0usize;
    for (path, item) in paths.into_iter().flatten() {
        let item = refs::follow(&document.raw, item).map_err(|source| ImportError::Ref {
            route: path.clone(),
            source,
        })?;
        for method in METHODS {
            let Some(operation) = item.get(method.as_str().to_ascii_lowercase()) else {
                continue;
            };
            count += 1;
            if count > MAX_OPERATIONS {
                return Err(ImportError::TooMany);
            }
            let route = format!("{method} {path}");
            let operation_id = operation.get("operationId").and_then(Value::as_str);
            let function = function_name(selection.namespace, operation_id, &method, path);
            let names = [
                operation_id.unwrap_or_default(),
                function.as_str(),
                route.as_str(),
            ];
            let picked = selection.include.is_empty()
                || selection
                    .include
                    .iter()
                    .zip(matched.iter_mut())
                    .any(|(pattern, hit)| {
                        let matches = names.iter().any(|name| matches(pattern, name));
                        *hit |= matches;
                        matches
                    });
            let dropped = selection
                .exclude
                .iter()
                .any(|pattern| names.iter().any(|name| matches(pattern, name)));
            if !picked || dropped {
                continue;
            }
            let function =
                FunctionId::parse(&function).map_err(|error| ImportError::Operation {
                    route: route.clone(),
                    reason: error.to_string(),
                })?;
            let built = build(
                &document,
                &mut defs,
                Context {
                    selection,
                    version: &version,
                    route: &route,
                    path,
                    method: method.clone(),
                    item,
                    operation,
                    function: function.clone(),
                },
            )?;
            let Some(built) = built else {
                skipped.push(format!(
                    "{route}: its request body is only of multipart kinds other than form-data (multipart/mixed, multipart/related, …), which are not imported"
                ));
                continue;
            };
            if let Some(earlier) = operations.get(&function) {
                return Err(ImportError::Collision {
                    function: function.to_string(),
                    first: earlier.route.clone(),
                    second: route,
                });
            }
            operations.insert(function, built);
        }
    }
    if let Some((pattern, _)) = selection
        .include
        .iter()
        .zip(&matched)
        .find(|(_, hit)| !**hit)
    {
        return Err(ImportError::IncludeUnmatched {
            pattern: pattern.clone(),
        });
    }
    if operations.is_empty() {
        let hint = if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} skipped: {})", skipped.len(), skipped.join("; "))
        };
        return Err(ImportError::Empty { hint });
    }
    Ok(Imported {
        title: document.spec.info.title.clone(),
        api_version: document.spec.info.version.clone(),
        version,
        revision: document.revision.clone(),
        operations: operations.into_values().collect(),
        skipped,
    })
}

const METHODS: [Method; 8] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
    Method::HEAD,
    Method::PATCH,
    Method::TRACE,
];

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn check_namespace(namespace: &str) -> Result<(), ImportError> {
    let refuse = |reason: String| ImportError::Namespace {
        namespace: namespace.to_owned(),
        reason,
    };
    if let Some(reserved) = capgate_catalog::naming::reserved_namespace(namespace) {
        return Err(refuse(format!(
            "'{reserved}' is reserved for the gateway's own functions"
        )));
    }
    FunctionId::parse(&format!("{namespace}::x"))
        .map(drop)
        .map_err(|error| refuse(error.to_string()))
}

/// The capability version for an API's `info.version`:
///
/// - a semver version is taken as it is (`2.1.0`, `1.0.0-beta.1`);
/// - one to three numbers, with an optional leading `v`, are padded
///   (`10` → `10.0.0`, `v2.1` → `2.1.0`);
/// - a date (`2023-10-16`) becomes `2023.10.16`;
/// - anything else becomes `1.0.0` (the second value says so).
pub fn api_version(text: &str) -> (Version, bool) {
    let trimmed = text.trim();
    if let Ok(version) = Version::parse(trimmed) {
        return (version, true);
    }
    let bare = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
    for separator in ['.', '-'] {
        let parts: Vec<&str> = bare.split(separator).collect();
        let numbers: Option<Vec<u64>> = parts.iter().map(|p| p.parse::<u64>().ok()).collect();
        if let Some(numbers) = numbers
            && (1..=3).contains(&numbers.len())
            && (separator == '.' || numbers.len() == 3)
        {
            let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
            return (Version::new(at(0), at(1), at(2)), true);
        }
    }
    (Version::new(1, 0, 0), false)
}

/// `NAMESPACE::snake_case(operationId)`, or of `method path` without one;
/// cut to fit the 64-character tool name, with a hash of the whole name so
/// that two long names stay apart.
pub fn function_name(
    namespace: &str,
    operation_id: Option<&str>,
    method: &Method,
    path: &str,
) -> String {
    let source = match operation_id {
        Some(id) if !id.trim().is_empty() => id.to_owned(),
        _ => format!("{} {path}", method.as_str().to_ascii_lowercase()),
    };
    let mut name = snake_case(&source);
    let room = MAX_TOOL_NAME_LEN.saturating_sub(namespace.replace("::", "__").len() + 2);
    if name.len() > room {
        let hash = fnv1a(&source);
        let keep = room.saturating_sub(9);
        name.truncate(keep);
        let name_trimmed = name.trim_end_matches('_').to_owned();
        name = format!("{name_trimmed}_{hash:08x}");
    }
    format!("{namespace}::{name}")
}

fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// `getPetById` → `get_pet_by_id`, `HTTPServer-list` → `http_server_list`.
pub fn snake_case(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && i > 0 {
                let before = chars[i - 1];
                let after = chars.get(i + 1).copied();
                let boundary = before.is_ascii_lowercase()
                    || before.is_ascii_digit()
                    || (before.is_ascii_uppercase()
                        && after.is_some_and(|a| a.is_ascii_lowercase()));
                if boundary {
                    out.push('_');
                }
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('_');
        }
    }
    let mut collapsed = String::with_capacity(out.len());
    for c in out.chars() {
        if c == '_' && (collapsed.is_empty() || collapsed.ends_with('_')) {
            continue;
        }
        collapsed.push(c);
    }
    let collapsed = collapsed.trim_end_matches('_').to_owned();
    match collapsed.chars().next() {
        None => "op".into(),
        Some(first) if first.is_ascii_digit() => format!("op_{collapsed}"),
        Some(_) => collapsed,
    }
}

struct Context<'s, 'd> {
    selection: &'s Selection<'s>,
    version: &'s Version,
    route: &'s str,
    path: &'d str,
    method: Method,
    item: &'d Value,
    operation: &'d Value,
    function: FunctionId,
}

/// Header parameters OpenAPI says are ignored: the request's own.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

fn build(
    document: &Document,
    defs: &mut Defs<'_>,
    cx: Context<'_, '_>,
) -> Result<Option<Operation>, ImportError> {
    let raw = &document.raw;
    let route = cx.route;
    let refused = |reason: String| ImportError::Operation {
        route: route.to_owned(),
        reason,
    };
    let ref_error = |source: RefError| ImportError::Ref {
        route: route.to_owned(),
        source,
    };
    // Path-level parameters first; an operation's own replace them by (name, in).
    let mut declared: Vec<&Value> = Vec::new();
    for list in [cx.item.get("parameters"), cx.operation.get("parameters")] {
        for parameter in list.and_then(Value::as_array).into_iter().flatten() {
            let parameter = refs::follow(raw, parameter).map_err(ref_error)?;
            let key = |p: &Value| (p.get("name").cloned(), p.get("in").cloned());
            declared.retain(|earlier| key(earlier) != key(parameter));
            declared.push(parameter);
        }
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut params = Vec::new();
    for parameter in declared {
        let typed: oas3::spec::Parameter = serde_json::from_value(parameter.clone())
            .map_err(|error| refused(format!("a parameter is not valid: {error}")))?;
        let location = match typed.location {
            oas3::spec::ParameterIn::Path => Location::Path,
            oas3::spec::ParameterIn::Query => Location::Query,
            oas3::spec::ParameterIn::Header => Location::Header,
            oas3::spec::ParameterIn::Cookie => Location::Cookie,
        };
        if location == Location::Header
            && IGNORED_HEADERS.contains(&typed.name.to_ascii_lowercase().as_str())
        {
            continue;
        }
        let (schema, json_content) = match (parameter.get("schema"), parameter.get("content")) {
            (Some(schema), _) => (schema.clone(), false),
            (None, Some(Value::Object(content))) => (
                content
                    .values()
                    .next()
                    .and_then(|media| media.get("schema"))
                    .cloned()
                    .unwrap_or(json!({})),
                true,
            ),
            _ => (json!({}), false),
        };
        let mut schema = defs.rewrite(&schema).map_err(ref_error)?;
        if let (Some(description), Value::Object(fields)) = (&typed.description, &mut schema)
            && !fields.contains_key("description")
        {
            fields.insert("description".into(), Value::String(description.clone()));
        }
        let style = typed.style.map(Style::from).unwrap_or(match location {
            Location::Path | Location::Header => Style::Simple,
            Location::Query | Location::Cookie => Style::Form,
        });
        let explode = typed.explode.unwrap_or(style == Style::Form);
        let property = if properties.contains_key(&typed.name) || typed.name == "body" {
            format!("{}_{}", location.as_str(), typed.name)
        } else {
            typed.name.clone()
        };
        let must = typed.required.unwrap_or(false) || location == Location::Path;
        if must {
            required.push(Value::String(property.clone()));
        }
        properties.insert(property.clone(), schema);
        params.push(Param {
            name: typed.name,
            property,
            location,
            style,
            explode,
            allow_reserved: typed.allow_reserved.unwrap_or(false),
            json: json_content,
        });
    }
    for segment in template_names(cx.path) {
        if !params
            .iter()
            .any(|p| p.location == Location::Path && p.name == segment)
        {
            return Err(refused(format!(
                "path parameter '{{{segment}}}' is not declared in the operation's parameters"
            )));
        }
    }
    let mut body = None;
    if let Some(request) = cx.operation.get("requestBody") {
        let request = refs::follow(raw, request).map_err(ref_error)?;
        let content = request
            .get("content")
            .and_then(Value::as_object)
            .filter(|content| !content.is_empty());
        let Some(content) = content else {
            return Err(refused("its requestBody has no content".into()));
        };
        let Some((media, schema)) = body_media(raw, content).map_err(ref_error)? else {
            return Ok(None);
        };
        let mut schema = defs.rewrite(&schema).map_err(ref_error)?;
        if let (Some(Value::String(description)), Value::Object(fields)) =
            (request.get("description"), &mut schema)
            && !fields.contains_key("description")
        {
            fields.insert("description".into(), Value::String(description.clone()));
        }
        let must = request.get("required") == Some(&Value::Bool(true));
        if must {
            required.push(Value::String("body".into()));
        }
        properties.insert("body".into(), schema);
        body = Some(Body { media });
    }
    let answer = answer_kind(raw, cx.operation).map_err(ref_error)?;
    let output = success_schema(raw, cx.operation)
        .map_err(ref_error)?
        .map(|schema| defs.rewrite(&schema))
        .transpose()
        .map_err(ref_error)?;
    let mut input =
        json!({"type": "object", "properties": properties, "additionalProperties": false});
    if !required.is_empty() {
        input["required"] = Value::Array(required);
    }
    let input_defs = defs.for_roots(&[&input]).map_err(ref_error)?;
    if !input_defs.is_empty() {
        input["$defs"] = Value::Object(input_defs);
    }
    let output = match output {
        Some(mut schema) => {
            let output_defs = defs.for_roots(&[&schema]).map_err(ref_error)?;
            if !output_defs.is_empty()
                && let Value::Object(fields) = &mut schema
            {
                fields.insert("$defs".into(), Value::Object(output_defs));
            }
            Some(schema)
        }
        None => None,
    };
    let text = |key: &str| {
        cx.operation
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let summary = text("summary");
    let description = match (summary, text("description")) {
        (Some(summary), Some(description)) if summary != description => {
            Some(format!("{summary}\n\n{description}"))
        }
        (Some(one), _) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    }
    .map(|d| cut(d, MAX_DESCRIPTION_BYTES));
    let annotations = annotations(&cx.method);
    let tags: Vec<Value> = cx
        .operation
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .take(16)
        .map(|t| Value::String(t.to_owned()))
        .chain(std::iter::once(Value::from("rest")))
        .collect();
    let owner = cx.selection.owner.unwrap_or(cx.selection.namespace);
    let mut metadata = Map::new();
    metadata.insert(
        "rest".into(),
        json!({"method": cx.method.as_str(), "path": cx.path, "operation_id": text("operationId")}),
    );
    let deprecation = (cx.operation.get("deprecated") == Some(&Value::Bool(true)))
        .then(|| json!({"reason": "deprecated in the service's OpenAPI document"}));
    let draft = capgate_catalog::Draft {
        id: cx.function.to_string(),
        version: Some(Value::String(cx.version.to_string())),
        title: summary.map(|s| Value::String(cut(s.to_owned(), MAX_TITLE_BYTES))),
        description,
        input_schema: Some(input),
        output_schema: output,
        annotations: Some(annotations),
        owner: Some(json!({"team": owner})),
        tags: Some(Value::Array(tags)),
        deprecation,
        metadata,
        mcp: (answer == Answer::Content).then(|| json!({"result": "content"})),
        ..Default::default()
    };
    let capability = draft.build().map_err(|error| refused(error.to_string()))?;
    Ok(Some(Operation {
        function: cx.function,
        route: route.to_owned(),
        capability,
        plan: Arc::new(Plan {
            method: cx.method,
            path: cx.path.to_owned(),
            params,
            body,
            answer,
        }),
    }))
}

/// `{name}`s of a path template.
fn template_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// How a body is sent, and the input schema of its `body` property: JSON
/// first, then form fields, then `multipart/form-data`, then any other
/// content type but multipart ones (as bytes, taken as base64, when its
/// schema says the body is bytes). `None` when only multipart kinds other
/// than form-data are offered.
fn body_media(
    raw: &Value,
    content: &Map<String, Value>,
) -> Result<Option<(BodyMedia, Value)>, RefError> {
    let schema_of = |media: &Value| media.get("schema").cloned().unwrap_or(json!({}));
    if let Some((media, value)) = content.iter().find(|(media, _)| is_json(media)) {
        return Ok(Some((BodyMedia::Json(media.clone()), schema_of(value))));
    }
    if let Some((_, value)) = content
        .iter()
        .find(|(media, _)| media.starts_with("application/x-www-form-urlencoded"))
    {
        return Ok(Some((BodyMedia::Form, schema_of(value))));
    }
    if let Some((_, value)) = content
        .iter()
        .find(|(media, _)| essence(media) == "multipart/form-data")
    {
        let mut schema = schema_of(value);
        let encoding = value.get("encoding").and_then(Value::as_object);
        let mut files = Vec::new();
        let mut budget = MAX_FILE_SCHEMAS;
        mark_files(raw, &mut schema, encoding, &mut files, (0, &mut budget))?;
        return Ok(Some((BodyMedia::Multipart(files), schema)));
    }
    let Some((media, value)) = content
        .iter()
        .find(|(media, _)| !media.starts_with("multipart/"))
    else {
        return Ok(None);
    };
    let declared = match value.get("schema") {
        Some(schema) => refs::follow(raw, schema)?.clone(),
        None => json!({}),
    };
    let says_nothing = declared.as_object().is_none_or(Map::is_empty);
    let kind = essence(media);
    let bytes_by_kind = kind == "application/octet-stream"
        || ["image/", "audio/", "video/"]
            .iter()
            .any(|prefix| kind.starts_with(prefix));
    let binary = multipart::is_file_schema(&declared) || (says_nothing && bytes_by_kind);
    let what = format!("the request body, sent as {media}");
    let schema = if binary {
        multipart::base64_schema(&declared, &format!("{what} (its bytes)"))
    } else {
        json!({"type": "string", "description": what})
    };
    Ok(Some((
        BodyMedia::Raw {
            content_type: media.clone(),
            binary,
        },
        schema,
    )))
}

/// How deep `allOf`s and `$ref`s are followed looking for file fields, and
/// how many schemas at most (a hostile document's `allOf`s could otherwise
/// multiply the walk at every level).
const MAX_FILE_DEPTH: usize = 8;
const MAX_FILE_SCHEMAS: usize = 256;

/// Rewrites the file fields of a multipart body's schema as base64 text
/// (`multipart::base64_schema`) and lists them in `files`. They are looked
/// for among the properties of the body's object schema and of its `allOf`
/// branches, through `$ref`s — a referenced schema holding a file is taken
/// inline, so a definition other schemas share is left as it is. A field's
/// part type is the operation's `encoding` for it, else the schema's
/// `contentMediaType`, else `application/octet-stream`.
fn mark_files(
    raw: &Value,
    schema: &mut Value,
    encoding: Option<&Map<String, Value>>,
    files: &mut Vec<FilePart>,
    (depth, budget): (usize, &mut usize),
) -> Result<(), RefError> {
    if depth > MAX_FILE_DEPTH || *budget == 0 {
        return Ok(());
    }
    *budget -= 1;
    if schema.get("$ref").is_some() {
        let mut target = refs::follow(raw, schema)?.clone();
        let before = files.len();
        mark_files(raw, &mut target, encoding, files, (depth + 1, budget))?;
        if files.len() > before {
            *schema = target;
        }
        return Ok(());
    }
    if let Some(branches) = schema.get_mut("allOf").and_then(Value::as_array_mut) {
        for branch in branches {
            mark_files(raw, branch, encoding, files, (depth + 1, &mut *budget))?;
        }
    }
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (name, property) in properties.iter_mut() {
        let declared = refs::follow(raw, property)?.clone();
        let items = match declared.get("items") {
            Some(items) if declared.get("type") == Some(&json!("array")) => {
                Some(refs::follow(raw, items)?.clone())
            }
            _ => None,
        };
        let (file, in_array) = match &items {
            Some(items) if multipart::is_file_schema(items) => (items, true),
            _ if multipart::is_file_schema(&declared) => (&declared, false),
            _ => continue,
        };
        let content_type = encoding
            .and_then(|encoding| encoding.get(name))
            .and_then(|field| field.get("contentType"))
            .or_else(|| file.get("contentMediaType"))
            .and_then(Value::as_str)
            // An encoding may list several ("image/png, image/jpeg"): the
            // first is sent. One that could not be a header value is not.
            .and_then(|types| types.split(',').next())
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .unwrap_or("application/octet-stream")
            .to_owned();
        let rewritten = multipart::base64_schema(file, "the file's bytes");
        *property = if in_array {
            let mut array = declared.clone();
            array["items"] = rewritten;
            array
        } else {
            rewritten
        };
        if !files.iter().any(|f| f.name == *name) {
            files.push(FilePart {
                name: name.clone(),
                content_type,
            });
        }
    }
    Ok(())
}

/// A media type without its parameters, lower case.
fn essence(media: &str) -> String {
    media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json(media: &str) -> bool {
    let essence = essence(media);
    essence == "application/json" || essence.ends_with("+json") || essence == "*/*"
}

/// The success response: the lowest 2xx (`2XX`, then `default` when there
/// is no 2xx).
fn success_response<'a>(
    raw: &'a Value,
    operation: &'a Value,
) -> Result<Option<&'a Value>, RefError> {
    let Some(responses) = operation.get("responses").and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut codes: Vec<&String> = responses
        .keys()
        .filter(|code| code.starts_with('2'))
        .collect();
    codes.sort();
    let chosen = codes
        .first()
        .map(|code| &responses[*code])
        .or_else(|| responses.get("default"));
    chosen
        .map(|response| refs::follow(raw, response))
        .transpose()
}

/// The JSON schema of the success response, when it has JSON content.
fn success_schema(raw: &Value, operation: &Value) -> Result<Option<Value>, RefError> {
    Ok(success_response(raw, operation)?
        .and_then(|response| response.get("content"))
        .and_then(Value::as_object)
        .and_then(|content| content.iter().find(|(media, _)| is_json(media)))
        .and_then(|(_, media)| media.get("schema"))
        .cloned())
}

/// Files when the success response offers no JSON and no text — only
/// media such as `image/png`, `application/pdf` or
/// `application/octet-stream` — else JSON.
fn answer_kind(raw: &Value, operation: &Value) -> Result<Answer, RefError> {
    let Some(content) = success_response(raw, operation)?
        .and_then(|response| response.get("content"))
        .and_then(Value::as_object)
        .filter(|content| !content.is_empty())
    else {
        return Ok(Answer::Json);
    };
    let files = content.keys().all(|media| {
        let kind = essence(media);
        !is_json(&kind) && !kind.starts_with("text/") && !kind.contains("xml")
    });
    Ok(if files { Answer::Content } else { Answer::Json })
}

/// GET and HEAD read; PUT and DELETE may be repeated; DELETE destroys.
fn annotations(method: &Method) -> Value {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let idempotent = read || matches!(*method, Method::PUT | Method::DELETE);
    json!({
        "readOnlyHint": read,
        "idempotentHint": idempotent,
        "destructiveHint": *method == Method::DELETE,
        "openWorldHint": true,
    })
}

/// `text` cut to at most `limit` bytes at a character boundary.
fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests;

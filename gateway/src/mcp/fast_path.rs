//! A fast path for the hottest MCP requests: a stateless (2026-07-28)
//! `tools/call` or `tools/list` with consistent headers, answered as JSON.
//!
//! rmcp serves every stateless request by building a whole server session
//! for it (a transport, a service loop and several spawned tasks), which cost
//! more than the rest of the call put together. This path answers exactly
//! those well-formed shapes itself — calls through the same [`call_tool`] as
//! the rmcp handler, lists from the same pre-serialized pages — and hands
//! everything else to rmcp untouched: other methods, bad cursors,
//! sessions, SSE, `Mcp-Param-*` headers, any header/body disagreement,
//! non-loopback `Host`, an `Origin` — so those errors come from rmcp, in
//! rmcp's words. An unknown (or forbidden) tool is answered here with the
//! same error the rmcp handler gives, because its call has already run the
//! path (and been audited) once.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use rmcp::model::JsonObject;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use tower::ServiceExt;

use super::McpState;
use super::auth::agent_of;
use super::calls::call_tool;
use super::service::McpService;
use super::sessions::ActiveBody;
use super::tools::{ToolResult, write_output_answer};
use crate::config::Config;
use crate::identity::agents::Agent;
use crate::loopback::{admit_mcp_origin, is_own_host};

pub(crate) const STATELESS_VERSION: &str = "2026-07-28";
pub(crate) const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
pub(crate) const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
pub(crate) const CLIENT_INFO_META: &str = "io.modelcontextprotocol/clientInfo";

/// `/mcp`: the fast path when it applies, rmcp otherwise. A JSON body
/// that is not one JSON-RPC 2.0 message is answered here, on every path,
/// with the JSON-RPC error the specification names.
pub async fn mcp_endpoint(
    State((state, rmcp)): State<(Arc<McpState>, Arc<McpService>)>,
    request: Request,
) -> Response {
    // A session's request or stream keeps it resident until its response
    // is done (sessions.rs); DELETE ends it instead.
    let activity = (request.method() != Method::DELETE)
        .then(|| request.headers().get(&MCP_SESSION_ID)?.to_str().ok())
        .flatten()
        .and_then(|id| state.sessions.begin(id));
    let response = answer(state, rmcp, request).await;
    match activity {
        Some(activity) => response.map(|body| ActiveBody::wrap(body, activity)),
        None => response,
    }
}

async fn answer(state: Arc<McpState>, rmcp: Arc<McpService>, request: Request) -> Response {
    if let Err(refusal) = admit_mcp_origin(request.headers(), &state.config) {
        return BadMessage {
            status: StatusCode::FORBIDDEN,
            ..BadMessage::invalid(-32600, refusal)
        }
        .into_response();
    }
    if let Some(id) = request.headers().get(&MCP_SESSION_ID)
        && let Ok(id) = id.to_str()
        && let Some(agent) = agent_of(request.extensions())
        && !state.sessions.usable_by(id, &session_owner(&agent))
    {
        // Answered as for a session that is not open: another agent's
        // session is not this agent's to use, end, or learn of.
        return no_such_session(id);
    }
    if request.method() == Method::DELETE {
        return end_session(&state, rmcp, request).await;
    }
    if request.method() != Method::POST || !is_json(request.headers()) {
        return forward(rmcp, request).await;
    }
    let (parts, body) = request.into_parts();
    let limit = state.config.limits.max_frame_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        // A body read in part cannot be handed on; answer as rmcp does.
        Err(error) => return body_refused(limit, &error.to_string()),
    };
    let checked = match check_message(&bytes) {
        Ok(checked) => checked,
        Err(bad) => return bad.into_response(),
    };
    let opens_session = checked.initialize && !parts.headers.contains_key(&MCP_SESSION_ID);
    // Held until rmcp has answered the initialize (and stored the session),
    // so concurrent initializes cannot overshoot the limit.
    let limit = state.config.limits.max_mcp_sessions;
    let _opening = match opens_session.then(|| state.sessions.reserve(limit)) {
        None => None,
        Some(Ok(slot)) => Some(slot),
        Some(Err(open)) => {
            if state.refusal_log.should_log() {
                tracing::warn!(
                    open,
                    limit,
                    "MCP sessions refused: at the session limit (logged at most every 10 s)"
                );
            }
            let mut response = BadMessage {
                status: StatusCode::SERVICE_UNAVAILABLE,
                ..BadMessage::invalid(
                    -32000,
                    format!(
                        "{open} MCP sessions are open, this gateway's limit (max_mcp_sessions); end unused ones with DELETE, or retry once idle ones expire"
                    ),
                )
            }
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
    };
    let fast = stateless_method(&parts.method, &parts.headers, &state.config)
        .zip(agent_of(&parts.extensions));
    let Some((method, agent)) = fast else {
        let opener = opens_session.then(|| agent_of(&parts.extensions)).flatten();
        let response = forward(rmcp, Request::from_parts(parts, Body::from(bytes.clone()))).await;
        if let (Some(id), Some(opener)) = (response.headers().get(SESSION_ID), opener)
            && let Ok(id) = id.to_str()
        {
            state.sessions.bind(id, session_owner(&opener));
        }
        return response;
    };
    if method == FastMethod::List {
        let answer = parse_list(&bytes).and_then(|list| {
            let tools = state.tools.for_agent(&agent);
            let (page, next) = tools.page_json(list.params.cursor).ok()?;
            Some(list_answer(&list.id, &page, next.as_deref()))
        });
        return match answer {
            Some(answer) => json_response(answer),
            None => forward(rmcp, Request::from_parts(parts, Body::from(bytes.clone()))).await,
        };
    }
    let Some(call) = parse_call(&checked, &parts.headers) else {
        return forward(rmcp, Request::from_parts(parts, Body::from(bytes.clone()))).await;
    };
    // Dropping this future (client gone) drops the call and its pending entry.
    let client = call
        .params
        .meta
        .get(CLIENT_CAPABILITIES_META)
        .and_then(Value::as_object);
    match call_tool(
        &state,
        &agent,
        call.params.name,
        call.params.arguments,
        Some(&call.params.meta),
        client,
        Some(&parts.headers),
    )
    .await
    {
        Ok(result) => {
            let body = match &result {
                ToolResult::Output(output) => write_output_answer(&call.id, output),
                ToolResult::Built(result) => serde_json::to_vec(&Answer {
                    jsonrpc: "2.0",
                    id: &call.id,
                    result,
                }),
            };
            match body {
                Ok(body) => json_response(body.into()),
                Err(error) => {
                    tracing::error!(%error, "a tool result could not be written as JSON");
                    BadMessage {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        code: -32603,
                        message: format!("the tool's result could not be written as JSON: {error}"),
                        id: call.id,
                    }
                    .into_response()
                }
            }
        }
        // Answered here, not handed to rmcp: the path may have run (and
        // audited) once, and must not run again for the same request.
        Err(refused) => {
            let body = serde_json::json!({
                "jsonrpc": "2.0", "id": call.id,
                "error": refused.error(call.params.name),
            });
            let mut response = json_response(body.to_string().into());
            *response.status_mut() = refused.status();
            response
        }
    }
}

/// A JSON-RPC result, written straight from its parts. Built as a
/// `json!` tree (the result serialized into values first) and written with
/// `Display` (serde_json through `fmt::Write`, a call per piece), it cost
/// about 13,000 instructions a call — 7 % of an MCP call to a REST
/// upstream (callgrind).
#[derive(serde::Serialize)]
struct Answer<'a, T> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a T,
}

fn json_response(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `{"jsonrpc":"2.0","id":ID,"result":{"resultType":"complete","ttlMs":0,
/// "cacheScope":"private","tools":PAGE,"nextCursor":NEXT}}`, with the page's
/// bytes copied in, not re-serialized. The 2026-07-28 fields are rmcp's own
/// for this list: each agent's list is its own (`private`) and changes live
/// (`ttlMs` 0, `list_changed` says when).
fn list_answer(id: &Value, page: &Bytes, next: Option<&str>) -> Bytes {
    let id = id.to_string();
    let next = next.map(|n| Value::String(n.to_owned()).to_string());
    let mut body = Vec::with_capacity(page.len() + id.len() + 80);
    body.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    body.extend_from_slice(id.as_bytes());
    body.extend_from_slice(
        b",\"result\":{\"resultType\":\"complete\",\"ttlMs\":0,\"cacheScope\":\"private\",\"tools\":",
    );
    body.extend_from_slice(page);
    if let Some(next) = next {
        body.extend_from_slice(b",\"nextCursor\":");
        body.extend_from_slice(next.as_bytes());
    }
    body.extend_from_slice(b"}}");
    Bytes::from(body)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The legacy protocol's session header.
const SESSION_ID: &str = "mcp-session-id";

// Looked up on every MCP request: as names made once, rather than `&str`s
// the header map parses (checks and lowercases) at each lookup.
static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
static MCP_SESSION_ID: HeaderName = HeaderName::from_static(SESSION_ID);

/// `DELETE /mcp`: ends a legacy session. 204 when it ended, 404 when no
/// such session is open (it ended, expired, or never was) — what the
/// official clients expect; rmcp answers 202 to both.
async fn end_session(state: &McpState, rmcp: Arc<McpService>, request: Request) -> Response {
    let id = request
        .headers()
        .get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &id {
        if !state.sessions.contains(id) {
            return no_such_session(id);
        }
        // A hibernated session is not in rmcp's memory: end it here.
        if state.sessions.end_hibernated(id) {
            return StatusCode::NO_CONTENT.into_response();
        }
    }
    let mut response = forward(rmcp, request).await;
    if response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.body_mut() = Body::empty();
    }
    response
}

/// 404 for session `id`: not open (it ended, expired, or never was), or
/// another agent's.
fn no_such_session(id: &str) -> Response {
    BadMessage {
        status: StatusCode::NOT_FOUND,
        ..BadMessage::invalid(
            -32600,
            format!("no MCP session {id} is open (it ended or expired); start one with initialize"),
        )
    }
    .into_response()
}

/// Who a legacy session belongs to: the agent's tenant and name (names
/// hold no `/`).
fn session_owner(agent: &Agent) -> Arc<str> {
    Arc::from(format!(
        "{}/{}",
        agent
            .tenant
            .as_deref()
            .unwrap_or(capgate_catalog::invocation::DEFAULT_TENANT),
        agent.name
    ))
}

/// What every POSTed message must be: one JSON object with
/// `"jsonrpc": "2.0"`. Only walked, not kept: the fast path or rmcp parses
/// it afterwards.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<CallShape<'a>>,
}

/// `params`, read in the same pass as the envelope (a second walk over
/// them cost ~1,650 instructions a call): for an object, the parts whose
/// type rmcp would otherwise refuse as an unknown method, from which the
/// fast path reads a `tools/call`.
#[derive(Default)]
struct CallShape<'a> {
    /// Whether params is an object (else nothing else is read of it).
    object: bool,
    name: Option<&'a RawValue>,
    arguments: Option<&'a RawValue>,
    meta: Option<&'a RawValue>,
    /// The first of those keys given more than once.
    twice: Option<&'static str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for CallShape<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = CallShape<'de>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("JSON-RPC params")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut shape = CallShape {
            object: true,
            ..CallShape::default()
        };
        while let Some(key) = map.next_key::<ShapeKey>()? {
            let (slot, name) = match key {
                ShapeKey::Name => (&mut shape.name, "name"),
                ShapeKey::Arguments => (&mut shape.arguments, "arguments"),
                ShapeKey::Meta => (&mut shape.meta, "_meta"),
                ShapeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                shape.twice.get_or_insert(name);
            }
            *slot = Some(map.next_value()?);
        }
        Ok(shape)
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(CallShape::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(CallShape::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(CallShape::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(CallShape::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(CallShape::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(CallShape::default())
    }
}

/// A key of params, matched as serde's derived readers match (after
/// unescaping).
enum ShapeKey {
    Name,
    Arguments,
    Meta,
    Other,
}

impl<'de> Deserialize<'de> for ShapeKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = ShapeKey;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<ShapeKey, E> {
                Ok(match key {
                    "name" => ShapeKey::Name,
                    "arguments" => ShapeKey::Arguments,
                    "_meta" => ShapeKey::Meta,
                    _ => ShapeKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A message `check_message` let through: whether it opens a session, and
/// what was read of it, so that nothing reads the whole body again.
struct Checked<'a> {
    initialize: bool,
    envelope: Envelope<'a>,
    /// Its params' parts, for a `tools/call`.
    call: Option<CallShape<'a>>,
}

/// A message answered here with a JSON-RPC error.
struct BadMessage {
    status: StatusCode,
    code: i64,
    message: String,
    /// The request's id when it could be read (`null` otherwise).
    id: Value,
}

impl BadMessage {
    fn invalid(code: i64, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            id: Value::Null,
        }
    }

    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": self.id,
            "error": {"code": self.code, "message": self.message}
        });
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_string(),
        )
            .into_response()
    }
}

/// `-32700` for a body that is not JSON, `-32600` for JSON that is not one
/// JSON-RPC 2.0 message (batches included: MCP dropped them in 2025-06-18),
/// `-32602` for a `tools/call` whose name or arguments have the wrong type
/// (or a key given twice among its params). Gives what it read: whether
/// the message is an `initialize`, its envelope, a `tools/call`'s params.
fn check_message(bytes: &[u8]) -> Result<Checked<'_>, BadMessage> {
    // One pass for a good message: reading the envelope checks the whole
    // text as JSON (fields it does not keep are still parsed). Only when it
    // fails is the text walked again, to tell a parse error from JSON that
    // is not one message.
    let envelope = serde_json::from_slice::<Envelope<'_>>(bytes);
    let batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if (envelope.is_err() || batch)
        && let Err(error) = serde_json::from_slice::<IgnoredAny>(bytes)
    {
        return Err(BadMessage::invalid(
            -32700,
            format!("Parse error: the body is not JSON ({error}); send one JSON-RPC 2.0 message"),
        ));
    }
    if batch {
        return Err(BadMessage::invalid(
            -32600,
            "Invalid Request: JSON-RPC batches are not accepted (MCP removed them in 2025-06-18); send one message per POST",
        ));
    }
    let mut envelope = match envelope {
        Ok(envelope) if envelope.jsonrpc.as_deref() == Some("2.0") => envelope,
        _ => {
            return Err(BadMessage::invalid(
                -32600,
                "Invalid Request: expected a JSON-RPC 2.0 object with \"jsonrpc\": \"2.0\"",
            ));
        }
    };
    let method = envelope.method.as_deref();
    let mut call = None;
    if method == Some("tools/call") {
        let kind = |raw: Option<&RawValue>| {
            raw.map(|raw| match raw.get().trim_start().as_bytes().first() {
                Some(b'{') => "an object",
                Some(b'"') => "a string",
                Some(b'[') => "an array",
                Some(b'n') => "null",
                Some(b't' | b'f') => "a boolean",
                _ => "a number",
            })
        };
        let problem = match envelope.params.take() {
            Some(shape) if shape.object => match shape.twice {
                // In serde's words, as when params were read by its derive.
                Some(twice) => Some(format!(
                    "params must be an object with each key once (duplicate field `{twice}`)"
                )),
                None => match (kind(shape.name), kind(shape.arguments)) {
                    (Some("a string"), None | Some("an object" | "null")) => {
                        call = Some(shape);
                        None
                    }
                    (Some("a string"), Some(other)) => {
                        Some(format!("\"arguments\" must be an object, got {other}"))
                    }
                    (None, _) => Some("\"name\" is missing".to_owned()),
                    (Some(other), _) => Some(format!("\"name\" must be a string, got {other}")),
                },
            },
            _ => Some("params must be an object with a \"name\"".to_owned()),
        };
        if let Some(problem) = problem {
            let id = envelope
                .id
                .and_then(|id| serde_json::from_str(id.get()).ok())
                .unwrap_or(Value::Null);
            return Err(BadMessage {
                status: StatusCode::OK,
                code: -32602,
                message: format!("Invalid params: tools/call {problem}"),
                id,
            });
        }
    }
    Ok(Checked {
        initialize: method == Some("initialize"),
        envelope,
        call,
    })
}

fn body_refused(limit: usize, reason: &str) -> Response {
    let too_large = reason.contains("length limit");
    let (status, message) = if too_large {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes; send less, or raise max_frame_bytes"),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {reason}"),
        )
    };
    BadMessage {
        status,
        ..BadMessage::invalid(-32600, message)
    }
    .into_response()
}

/// Hands the request to rmcp. The service is shared and cloned only here:
/// a clone and its drop cost ~3,000 instructions, which the fast path's
/// requests no longer pay (axum clones a handler's state per request).
async fn forward(rmcp: Arc<McpService>, request: Request) -> Response {
    match McpService::clone(&rmcp).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// The methods the fast path answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastMethod {
    Call,
    List,
}

/// The method of a stateless `tools/call` or `tools/list` whose headers ask
/// for nothing unusual.
/// `Host` must name this gateway (as rmcp itself would check).
fn stateless_method(method: &Method, headers: &HeaderMap, config: &Config) -> Option<FastMethod> {
    if method != Method::POST {
        return None;
    }
    // One pass over the headers rather than a lookup (a hash and a probe)
    // per name asked about. A header given twice is read at its first
    // value, as `HeaderMap::get` reads it.
    let mut mcp_method = None;
    let mut named = false;
    let mut version = None;
    let mut content_type = None;
    let mut accept = None;
    let mut host = None;
    for (name, value) in headers {
        if *name == MCP_METHOD {
            mcp_method.get_or_insert(value);
        } else if *name == MCP_NAME {
            named = true;
        } else if *name == MCP_PROTOCOL_VERSION {
            version.get_or_insert(value);
        } else if *name == header::CONTENT_TYPE {
            content_type.get_or_insert(value);
        } else if *name == header::ACCEPT {
            accept.get_or_insert(value);
        } else if *name == header::HOST {
            host.get_or_insert(value);
        } else if *name == MCP_SESSION_ID
            || *name == header::ORIGIN
            || name.as_str().starts_with("mcp-param-")
        {
            return None;
        }
    }
    let fast = match (mcp_method.map(HeaderValue::as_bytes), named) {
        (Some(b"tools/call"), true) => FastMethod::Call,
        (Some(b"tools/list"), false) => FastMethod::List,
        _ => return None,
    };
    fn text(value: Option<&HeaderValue>) -> Option<&str> {
        value.and_then(|v| v.to_str().ok())
    }
    (version.map(HeaderValue::as_bytes) == Some(STATELESS_VERSION.as_bytes())
        && text(content_type).is_some_and(|v| v.starts_with("application/json"))
        && text(accept).is_some_and(|v| v.contains("application/json"))
        && text(host).is_some_and(|host| is_own_host(host, config)))
    .then_some(fast)
}

#[derive(Deserialize)]
struct List<'a> {
    jsonrpc: &'a str,
    id: Value,
    method: &'a str,
    #[serde(borrow)]
    params: ListParams<'a>,
}

#[derive(Deserialize)]
struct ListParams<'a> {
    #[serde(default, borrow)]
    cursor: Option<&'a str>,
    #[serde(rename = "_meta")]
    meta: JsonObject,
}

/// The request, when it is exactly a single well-formed `tools/list`.
fn parse_list(bytes: &Bytes) -> Option<List<'_>> {
    let list: List<'_> = serde_json::from_slice(bytes).ok()?;
    (list.jsonrpc == "2.0"
        && valid_id(&list.id)
        && list.method == "tools/list"
        && stateless_meta(&list.params.meta))
    .then_some(list)
}

fn valid_id(id: &Value) -> bool {
    matches!(id, Value::String(_)) || id.as_i64().is_some() || id.as_u64().is_some()
}

fn stateless_meta(meta: &JsonObject) -> bool {
    meta.get(PROTOCOL_VERSION_META).and_then(Value::as_str) == Some(STATELESS_VERSION)
        && meta
            .get(CLIENT_CAPABILITIES_META)
            .is_some_and(Value::is_object)
}

/// A plain stateless `tools/call`, read from what `check_message` read.
struct Call<'a> {
    id: Value,
    params: Params<'a>,
}

struct Params<'a> {
    name: &'a str,
    arguments: Option<JsonObject>,
    meta: JsonObject,
}

/// The request, when it is exactly a single well-formed `tools/call` that
/// agrees with its headers. Reads only the parts `check_message` found —
/// the id, the name, the arguments and `_meta` — not the body again.
fn parse_call<'a>(checked: &Checked<'a>, headers: &HeaderMap) -> Option<Call<'a>> {
    let shape = checked.call.as_ref()?;
    let id: Value = serde_json::from_str(checked.envelope.id?.get()).ok()?;
    let name: &'a str = serde_json::from_str(shape.name?.get()).ok()?;
    let arguments = match shape.arguments {
        None => None,
        Some(raw) => serde_json::from_str::<Option<JsonObject>>(raw.get()).ok()?,
    };
    let meta: JsonObject = serde_json::from_str(shape.meta?.get()).ok()?;
    let name_header = headers.get(&MCP_NAME)?.to_str().ok()?;
    (valid_id(&id) && name == name_header && stateless_meta(&meta)).then_some(Call {
        id,
        params: Params {
            name,
            arguments,
            meta,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "hello__greet"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("host", "127.0.0.1:49134"),
        ]
    }

    #[test]
    fn only_plain_stateless_tool_calls_take_the_fast_path() {
        let posted = |pairs: &[(&'static str, &'static str)]| {
            stateless_method(&Method::POST, &headers(pairs), &Config::default())
        };
        assert_eq!(posted(&good()), Some(FastMethod::Call));
        assert_eq!(
            stateless_method(&Method::GET, &headers(&good()), &Config::default()),
            None
        );
        let list: Vec<_> = good()
            .into_iter()
            .filter(|(k, _)| *k != "mcp-name" && *k != "mcp-method")
            .chain([("mcp-method", "tools/list")])
            .collect();
        assert_eq!(posted(&list), Some(FastMethod::List));
        for (drop, add) in [
            (
                "mcp-protocol-version",
                ("mcp-protocol-version", "2025-11-25"),
            ),
            ("mcp-method", ("mcp-method", "prompts/list")),
            ("host", ("host", "evil.example:49134")),
            ("accept", ("accept", "text/event-stream")),
            ("mcp-name", ("mcp-session-id", "abc")),
        ] {
            let mut pairs: Vec<_> = good().into_iter().filter(|(k, _)| *k != drop).collect();
            pairs.push(add);
            assert_eq!(posted(&pairs), None, "{add:?}");
        }
        let mut with_param = good();
        with_param.push(("mcp-param-name", "x"));
        assert_eq!(posted(&with_param), None);
        let mut with_origin = good();
        with_origin.push(("origin", "http://localhost"));
        assert_eq!(posted(&with_origin), None);
        for missing in [
            "mcp-protocol-version",
            "mcp-method",
            "content-type",
            "accept",
            "host",
        ] {
            let pairs: Vec<_> = good().into_iter().filter(|(k, _)| *k != missing).collect();
            assert_eq!(posted(&pairs), None, "without {missing}");
        }
        let mut named_list = list.clone();
        named_list.push(("mcp-name", "hello__greet"));
        assert_eq!(posted(&named_list), None);
        // A header given twice counts at its first value, as `get` reads it.
        let mut twice = good();
        twice.push(("mcp-method", "prompts/list"));
        twice.push(("content-type", "text/plain"));
        assert_eq!(posted(&twice), Some(FastMethod::Call));
        let mut first_wrong: Vec<_> = good()
            .into_iter()
            .filter(|(k, _)| *k != "mcp-method")
            .chain([("mcp-method", "prompts/list"), ("mcp-method", "tools/call")])
            .collect();
        assert_eq!(posted(&first_wrong), None);
        first_wrong.retain(|(k, v)| *k != "mcp-method" || *v == "tools/call");
        assert_eq!(posted(&first_wrong), Some(FastMethod::Call));
    }

    #[test]
    fn the_body_must_agree_with_the_headers() {
        let headers = headers(&good());
        let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
        let body = |name: &str, meta: &str| {
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{{}},{meta}}}}}"#
            ))
        };
        let call = |body: &[u8]| {
            check_message(body)
                .ok()
                .and_then(|checked| parse_call(&checked, &headers).map(|call| call.id))
        };
        assert_eq!(
            call(&body("hello__greet", meta)),
            Some(serde_json::json!(7))
        );
        assert_eq!(call(&body("other__tool", meta)), None);
        let old = meta.replace("2026-07-28", "2025-11-25");
        assert_eq!(call(&body("hello__greet", &old)), None);
        let no_capabilities = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
        assert_eq!(call(&body("hello__greet", no_capabilities)), None);
        assert_eq!(call(b"[1,2]"), None);
        assert_eq!(call(b"{\"jsonrpc\":\"2.0\""), None);
        // Without an id, or with an escaped name (not borrowed as it is):
        // left to rmcp, as before.
        let no_id = String::from_utf8_lossy(&body("hello__greet", meta)).replace("\"id\":7,", "");
        assert_eq!(call(no_id.as_bytes()), None);
        let escaped = body("hello\\u005f_greet", meta);
        assert_eq!(call(&escaped), None);
    }

    /// The hand-written answer is what serde writes from rmcp's result for
    /// the same output, byte for byte, over outputs of every JSON kind and
    /// text needing every escape; ids of both kinds.
    #[test]
    fn an_output_answer_is_written_as_serde_writes_rmcps_result() {
        let outputs = [
            serde_json::json!({"id": 7, "name": "item", "tags": ["bench"]}),
            serde_json::json!({}),
            serde_json::json!({"text": "quote \" backslash \\ slash / tab \t newline \n nul \u{0} bell \u{7} del \u{7f} é ✓ 😀 \u{2028}"}),
            serde_json::json!({"nested": {"deep": [1, -2, 3.5, 1e300, null, true, false, {"k": []}]}, "big": u64::MAX, "small": i64::MIN}),
            serde_json::json!([1, "two", {"three": 3}]),
            serde_json::json!([]),
            serde_json::json!("a \"string\" output"),
            serde_json::json!(""),
            serde_json::json!(42),
            serde_json::json!(-0.5),
            serde_json::json!(true),
            serde_json::json!(null),
        ];
        let ids = [
            serde_json::json!(7),
            serde_json::json!(-1),
            serde_json::json!("id \"with\" escapes \u{1}"),
        ];
        for output in &outputs {
            for id in &ids {
                let expected = serde_json::to_vec(&Answer {
                    jsonrpc: "2.0",
                    id,
                    result: &ToolResult::Output(output.clone()).into_result(),
                })
                .unwrap();
                let written = write_output_answer(id, output).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&written),
                    String::from_utf8_lossy(&expected),
                    "output {output}, id {id}"
                );
            }
        }
    }

    /// Params are read with the envelope: what is wrong with a
    /// `tools/call`'s params is said as before; other methods' params are
    /// not judged; keys match after unescaping, as serde's derive matched.
    #[test]
    fn tools_call_params_are_judged_in_the_envelopes_pass() {
        let problem = |params: &str, method: &str| {
            let body =
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#);
            match check_message(body.as_bytes()) {
                Ok(checked) => Ok(checked.call.is_some()),
                Err(bad) => Err((bad.code, bad.message)),
            }
        };
        let not_object = "Invalid params: tools/call params must be an object with a \"name\"";
        for params in [
            "[1,{\"name\":\"x\"}]",
            "\"name\"",
            "7",
            "-1.5",
            "true",
            "null",
        ] {
            assert_eq!(
                problem(params, "tools/call"),
                Err((-32602, not_object.to_owned())),
                "{params}"
            );
            assert!(problem(params, "ping").is_ok(), "{params}");
        }
        for (params, key) in [
            (r#"{"name":"a","name":"b"}"#, "name"),
            (r#"{"name":"a","arguments":{},"arguments":{}}"#, "arguments"),
            (r#"{"_meta":{},"name":"a","_meta":{}}"#, "_meta"),
            (r#"{"name":"a","na\u006de":"b"}"#, "name"),
        ] {
            assert_eq!(
                problem(params, "tools/call"),
                Err((
                    -32602,
                    format!(
                        "Invalid params: tools/call params must be an object with each key once (duplicate field `{key}`)"
                    )
                )),
                "{params}"
            );
            assert!(problem(params, "initialize").is_ok(), "{params}");
        }
        assert_eq!(
            problem(r#"{"name":7}"#, "tools/call"),
            Err((
                -32602,
                "Invalid params: tools/call \"name\" must be a string, got a number".to_owned()
            ))
        );
        assert_eq!(
            problem(r#"{"name":"a","arguments":[1]}"#, "tools/call"),
            Err((
                -32602,
                "Invalid params: tools/call \"arguments\" must be an object, got an array"
                    .to_owned()
            ))
        );
        assert_eq!(
            problem(
                r#"{"other":1,"other":2,"arguments":null,"name":"a"}"#,
                "tools/call"
            ),
            Ok(true)
        );
        assert_eq!(problem(r#"{"\u006eame":"a"}"#, "tools/call"), Ok(true));
        // Params still have to be JSON, whatever the method.
        assert_eq!(
            problem(r#"{"name":"a","x":[1,}"#, "ping").map_err(|(code, _)| code),
            Err(-32700)
        );
    }
}

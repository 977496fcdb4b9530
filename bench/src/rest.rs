//! REST services: MCP `tools/call` → gateway → a REST upstream on
//! loopback, beside the same upstream called directly with the same HTTP
//! client (reqwest), in alternating rounds of one run (medians: the
//! machines are shared and noisy); and the time to import a generated
//! OpenAPI document of `--functions` operations (1,000 by default)
//! through the admin API.
//!
//! A third configuration measures the floor: the same direct client through
//! a do-nothing HTTP forwarder (this binary's hidden `rest-forwarder`: axum
//! and reqwest, the gateway's own stack) — what one more HTTP exchange
//! costs before any gateway work.
//!
//! The upstream runs in its own process (this binary's hidden
//! `rest-upstream`), as a REST service is deployed: in the bench's own
//! runtime the direct calls' client and server tasks could share a thread
//! and skip the process wakeups every real call pays.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::harness::{
    ChildGateway, Figures, Load, McpCaller, measure, medians, print_rounds, spawn_server,
    spawn_server_with,
};

/// `capgate-bench rest-upstream ADDR`: the upstream. Serves until killed.
pub async fn serve_upstream(addr: String) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/{resource}/items/{id}",
        axum::routing::get(
            |axum::extract::Path((resource, id)): axum::extract::Path<(String, u64)>| async move {
                axum::Json(
                    json!({"id": id, "resource": resource, "name": "item", "tags": ["bench"]}),
                )
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// `capgate-bench rest-forwarder ADDR UPSTREAM`: a do-nothing HTTP hop on
/// the gateway's own stack (axum's server, a reqwest client with a
/// connection pool): every request is sent on to `UPSTREAM` with its
/// method, path and query, and the upstream's status and body sent back.
/// What one more HTTP exchange costs at all, before any gateway work — the
/// floor under the REST overhead figure. Serves until killed.
pub async fn serve_forwarder(addr: String, upstream: String) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let client = client.clone();
        let url = format!(
            "{upstream}{}",
            request
                .uri()
                .path_and_query()
                .map_or("/", |path| path.as_str())
        );
        async move {
            match client.request(request.method().clone(), url).send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(body) => (status, body).into_response(),
                        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
                    }
                }
                Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The upstream process, answering once it is up.
async fn start_upstream(http: &reqwest::Client) -> anyhow::Result<(Child, String)> {
    let (child, addr) = spawn_server("rest-upstream", "the REST upstream process")?;
    answering(http, child, addr, "the REST upstream").await
}

/// The forwarder process in front of `upstream`, answering once it is up.
async fn start_forwarder(
    http: &reqwest::Client,
    upstream: &str,
) -> anyhow::Result<(Child, String)> {
    let (child, addr) = spawn_server_with(
        "rest-forwarder",
        &[upstream],
        "the do-nothing HTTP forwarder",
    )?;
    answering(http, child, addr, "the do-nothing HTTP forwarder").await
}

/// `child`, once `GET /r0/items/1` at `addr` answers; its base URL.
async fn answering(
    http: &reqwest::Client,
    child: Child,
    addr: String,
    what: &str,
) -> anyhow::Result<(Child, String)> {
    let url = format!("http://{addr}");
    for _ in 0..200 {
        if http.get(format!("{url}/r0/items/1")).send().await.is_ok() {
            return Ok((child, url));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("{what} did not answer at {url} within 5 s")
}

/// `GET URL`, its body parsed as the gateway parses it (the comparison is
/// of the hop); an error unless it is item 7.
async fn get_item7(client: reqwest::Client, url: String) -> Result<(), String> {
    let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if !status.is_success() || value["id"] != 7 {
        return Err(format!("HTTP {status}"));
    }
    Ok(())
}

/// An OpenAPI 3.1 document of `operations` GET operations, each with a
/// path and a query parameter and a response schema by `$ref`.
pub fn generated_document(operations: usize) -> String {
    let mut paths = serde_json::Map::new();
    for n in 0..operations {
        paths.insert(
            format!("/r{n}/items/{{id}}"),
            json!({"get": {
                "operationId": format!("getItem{n}"),
                "summary": format!("Read item of resource {n}"),
                "description": "Returns one item by its id; the verbose flag adds detail.",
                "tags": ["items"],
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "verbose", "in": "query", "schema": {"type": "boolean"}}
                ],
                "responses": {"200": {"description": "the item", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Item"}}}}}
            }}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Generated", "version": "1.0.0"},
        "paths": paths,
        "components": {"schemas": {"Item": {"type": "object", "required": ["id", "name"], "properties": {
            "id": {"type": "integer"}, "resource": {"type": "string"},
            "name": {"type": "string"}, "tags": {"type": "array", "items": {"$ref": "#/components/schemas/Tag"}}
        }}, "Tag": {"type": "string"}}}
    })
    .to_string()
}

async fn import(
    http: &reqwest::Client,
    gateway: &ChildGateway,
    namespace: &str,
    base_url: &str,
    document: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = http
        .post(format!("http://{}/api/v1/rest-services", gateway.addr()))
        .json(&json!({"namespace": namespace, "base_url": base_url, "openapi": document}))
        .send()
        .await?;
    let took = started.elapsed();
    let status = response.status();
    let answer: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "import refused ({status}): {answer}");
    Ok(took)
}

pub async fn run(
    load: &Load,
    rounds: usize,
    operations: usize,
    threads: Option<usize>,
    json_output: bool,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let (mut upstream_process, upstream) = start_upstream(&http).await?;
    let (mut forwarder_process, forwarder) = start_forwarder(&http, &upstream).await?;
    let gateway = ChildGateway::start(threads).await?;
    let document = generated_document(operations);
    let mut import_ms = Vec::new();
    for round in 0..rounds {
        let took = import(
            &http,
            &gateway,
            &format!("gen{round}"),
            &upstream,
            &document,
        )
        .await?;
        import_ms.push(took.as_secs_f64() * 1e3);
    }
    let small = generated_document(1);
    import(&http, &gateway, "bench", &upstream, &small).await?;

    let get_item = |base: &str| {
        let client = http.clone();
        let url = format!("{base}/r0/items/7?verbose=true");
        move || get_item7(client.clone(), url.clone())
    };
    let direct = get_item(&upstream);
    let forwarded = get_item(&forwarder);
    let caller = McpCaller::new(&gateway.mcp_url())?;
    let through = move || {
        let caller = caller.clone();
        async move {
            caller
                .call(
                    "bench__get_item0",
                    json!({"id": 7, "verbose": true}),
                    "\"resource\":\"r0\"",
                )
                .await
        }
    };
    let mut figures: [Vec<Figures>; 3] = Default::default();
    // The gateway's own CPU time per call: what the hop costs beyond waiting.
    let mut cpu_us = Vec::new();
    for _ in 0..rounds {
        figures[0].push(measure("direct", load, direct.clone()).await?);
        figures[2].push(measure("forwarded", load, forwarded.clone()).await?);
        let before = gateway.cpu_seconds()?;
        let measured = measure("mcp-rest", load, through.clone()).await?;
        let calls = 1_000.0
            + measured.sequential_calls as f64
            + measured.calls_per_sec * load.seconds as f64;
        cpu_us.push((gateway.cpu_seconds()? - before) / calls * 1e6);
        figures[1].push(measured);
    }
    let mut sorted_cpu = cpu_us.clone();
    sorted_cpu.sort_by(f64::total_cmp);
    let cpu_median = sorted_cpu[sorted_cpu.len() / 2];
    let (throughput, p50) = medians(&figures);
    let mut sorted_imports = import_ms.clone();
    sorted_imports.sort_by(f64::total_cmp);
    let import_median = sorted_imports[sorted_imports.len() / 2];
    if json_output {
        println!(
            "{}",
            json!({
                "direct": figures[0], "mcp_rest": figures[1], "forwarded": figures[2],
                "overhead_p50_us": p50[1] - p50[0],
                "forwarder_overhead_p50_us": p50[2] - p50[0],
                "gateway_cpu_us_per_call": cpu_us,
                "import_ms": import_ms, "import_operations": operations,
            })
        );
    } else {
        print_rounds("path", ["direct", "mcp-rest", "forwarded"], &figures);
        println!(
            "median calls/s: direct {:.0}, MCP → REST {:.0}, through the do-nothing forwarder {:.0}",
            throughput[0], throughput[1], throughput[2]
        );
        println!(
            "median sequential p50 through the do-nothing forwarder: {:.1} µs — {:+.1} µs over direct",
            p50[2],
            p50[2] - p50[0]
        );
        println!(
            "median sequential p50: direct {:.1} µs, MCP → REST {:.1} µs — overhead {:+.1} µs",
            p50[0],
            p50[1],
            p50[1] - p50[0]
        );
        println!(
            "median gateway CPU per call through it: {cpu_median:.1} µs (rounds: {:?})",
            cpu_us
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
        println!(
            "import of {operations} operations: median {import_median:.0} ms (rounds: {:?})",
            import_ms.iter().map(|v| v.round()).collect::<Vec<_>>()
        );
    }
    gateway.stop().await;
    for process in [&mut upstream_process, &mut forwarder_process] {
        let _ = process.start_kill();
        let _ = process.wait().await;
    }
    Ok(())
}

//! An HTTP trigger → worker → response, measured against MCP `tools/call`
//! of the same function through the same gateway in the same run.
//!
//! The provider process serves `hello::greet`; this process's own worker
//! attaches a `POST /greet` route to it (and stays connected: a worker's
//! triggers end with it). Both callers keep their HTTP connections alive.

use std::sync::Arc;

use anyhow::Context as _;
use capgate_sdk::Worker;
use serde_json::json;

use crate::harness::{ChildGateway, Load, McpCaller, ProviderProcess, measure};

/// `POST /greet` over keep-alive connections.
#[derive(Clone)]
struct RouteCaller {
    http: reqwest::Client,
    url: Arc<str>,
}

impl RouteCaller {
    async fn call(&self) -> Result<(), String> {
        let response = self
            .http
            .post(&*self.url)
            .header("content-type", "application/json")
            .body(r#"{"name":"bench"}"#)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() || !text.contains("hello bench") {
            return Err(format!("HTTP {status}: {text}"));
        }
        Ok(())
    }
}

pub async fn run(load: &Load, threads: Option<usize>, json: bool) -> anyhow::Result<()> {
    let gateway = ChildGateway::start_with_http(threads).await?;
    let mut provider = ProviderProcess::start_live(&gateway.worker_url()).await?;
    let router = Worker::builder(gateway.worker_url())
        .name("bench-routes")
        .connect()
        .await?;
    router.register_trigger(
        "greet-route",
        "http",
        "hello::greet",
        json!({"api_path": "/greet", "http_method": "POST"}),
    );
    // Frames of one connection are handled in order: the route is served
    // once a later call is answered.
    router.call("engine::workers::list", json!({})).await?;
    let route = RouteCaller {
        http: reqwest::Client::builder().no_proxy().build()?,
        url: format!(
            "{}/greet",
            gateway.http_url().context("the HTTP listener is on")?
        )
        .into(),
    };
    let trigger = measure("http-trigger", load, move || {
        let route = route.clone();
        async move { route.call().await }
    })
    .await?;
    let mcp = {
        let client = McpCaller::new(&gateway.mcp_url())?;
        measure("mcp", load, move || {
            let client = client.clone();
            async move { client.call_greet().await }
        })
        .await?
    };
    let p50_ratio = trigger.p50_us / mcp.p50_us;
    if json {
        println!(
            "{}",
            json!({"http_trigger": trigger, "mcp": mcp, "sequential_p50_ratio": p50_ratio})
        );
    } else {
        println!(
            "{:<14} {:>10} {:>10} {:>12} {:>12} {:>8}",
            "path", "p50 µs", "p99 µs", "concurrency", "calls/s", "errors"
        );
        for r in [&trigger, &mcp] {
            println!(
                "{:<14} {:>10.1} {:>10.1} {:>12} {:>12.0} {:>8}",
                r.scenario, r.p50_us, r.p99_us, r.concurrency, r.calls_per_sec, r.errors
            );
        }
        println!("http trigger p50 ÷ MCP tools/call p50: {p50_ratio:.2}");
    }
    router.shutdown();
    provider.stop().await;
    gateway.stop().await;
    Ok(())
}

//! What tracing costs: MCP `tools/call` through a gateway with tracing off
//! and through one exporting every span over OTLP/HTTP to a receiver in
//! this process, measured in alternating rounds in one run (the machines
//! are shared and noisy: medians and ratios).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use serde_json::json;

use crate::harness::{
    ChildGateway, Figures, Load, McpCaller, ProviderProcess, measure, medians, print_rounds,
};

/// An OTLP/HTTP receiver that accepts and counts, decoding nothing: the
/// measurement is of the gateway, not of a collector.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

async fn start_receiver() -> anyhow::Result<(Receiver, String)> {
    let receiver = Receiver::default();
    let counted = receiver.clone();
    let app = axum::Router::new().route(
        "/v1/{signal}",
        axum::routing::post(move |body: Bytes| {
            let counted = counted.clone();
            async move {
                counted.requests.fetch_add(1, Ordering::Relaxed);
                counted
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((receiver, url))
}

/// `rounds` alternating rounds of each configuration; medians reported.
pub async fn run(
    load: &Load,
    rounds: usize,
    threads: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let (receiver, url) = start_receiver().await?;
    let dir = tempfile::tempdir()?;
    let on_config = dir.path().join("tracing-on.toml");
    // Every span kept (ratio 1.0), a queue deep enough for a second of calls.
    std::fs::write(
        &on_config,
        format!(
            "[telemetry]\notlp_endpoint = \"{url}\"\nsample_ratio = 1.0\nmax_queued_spans = 65536\nmax_export_batch = 2048\nexport_interval_ms = 200\n"
        ),
    )?;
    let off = ChildGateway::start(threads).await?;
    let on = ChildGateway::start_configured(threads, Some(&on_config)).await?;
    let mut providers = vec![
        ProviderProcess::start_live(&off.worker_url()).await?,
        ProviderProcess::start_live(&on.worker_url()).await?,
    ];
    let callers = [
        McpCaller::new(&off.mcp_url())?,
        McpCaller::new(&on.mcp_url())?,
    ];
    let gateways = [&off, &on];
    let mut figures: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    // Gateway CPU per call: steadier than throughput on a shared machine.
    let mut cpu_us: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (index, name) in [(0, "off"), (1, "on")] {
            let client = callers[index].clone();
            let before = gateways[index].cpu_seconds()?;
            let measured = measure(name, load, move || {
                let client = client.clone();
                async move { client.call_greet().await }
            })
            .await?;
            let used = gateways[index].cpu_seconds()? - before;
            let calls = 1_000.0
                + measured.sequential_calls as f64
                + measured.calls_per_sec * load.seconds as f64;
            cpu_us[index].push(used / calls * 1e6);
            figures[index].push(measured);
        }
    }
    let exported = scrape(&on, "capgate_telemetry_spans_exported_total").await?;
    let dropped = scrape(&on, "capgate_telemetry_spans_dropped_total").await?;
    let (throughput, p50) = medians(&figures);
    let mut cpu = cpu_us.clone();
    for runs in &mut cpu {
        runs.sort_by(f64::total_cmp);
    }
    let cpu = [cpu[0][cpu[0].len() / 2], cpu[1][cpu[1].len() / 2]];
    let ratio = throughput[1] / throughput[0];
    let added = p50[1] - p50[0];
    if json {
        println!(
            "{}",
            json!({
                "off": figures[0], "on": figures[1],
                "throughput_ratio": ratio, "p50_added_us": added,
                "gateway_cpu_us_per_call": {"off": cpu_us[0], "on": cpu_us[1]},
                "spans_exported": exported, "spans_dropped": dropped,
                "receiver_requests": receiver.requests.load(Ordering::Relaxed),
                "receiver_bytes": receiver.bytes.load(Ordering::Relaxed),
            })
        );
    } else {
        print_rounds("tracing", ["off", "on"], &figures);
        println!(
            "median calls/s: off {:.0}, on {:.0} — on ÷ off {ratio:.3}",
            throughput[0], throughput[1]
        );
        println!(
            "median sequential p50: off {:.1} µs, on {:.1} µs — added {added:+.1} µs",
            p50[0], p50[1]
        );
        println!(
            "median gateway CPU per call: off {:.1} µs, on {:.1} µs — added {:+.1} µs (rounds: off {:?}, on {:?})",
            cpu[0],
            cpu[1],
            cpu[1] - cpu[0],
            cpu_us[0]
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            cpu_us[1]
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
        );
        println!(
            "spans exported {exported:.0}, dropped {dropped:.0}; receiver: {} requests, {:.1} MiB",
            receiver.requests.load(Ordering::Relaxed),
            receiver.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
        );
    }
    for provider in &mut providers {
        provider.stop().await;
    }
    off.stop().await;
    on.stop().await;
    Ok(())
}

/// One unlabelled sample from the gateway's `/metrics`.
async fn scrape(gateway: &ChildGateway, metric: &str) -> anyhow::Result<f64> {
    let url = gateway.mcp_url().replace("/mcp", "/metrics");
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(url)
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(metric)
                .and_then(|rest| rest.trim().rsplit(' ').next())
                .and_then(|value| value.parse().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("{metric} is not in /metrics"))
}

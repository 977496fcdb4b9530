//! `capgate-bench`: latency and throughput of the two call paths, measured
//! against a `capgate serve` child process on this machine.
//!
//! - worker: worker → gateway → worker calls through the Rust SDK;
//! - mcp: MCP `tools/call` over Streamable HTTP (stateless 2026-07-28, JSON
//!   responses, keep-alive connections);
//! - builtin: one round trip from a worker to a gateway built-in, the floor
//!   under the other two.
//!
//! The gateway, the provider worker and the callers run as three processes,
//! as they would be deployed.
//!
//! For each: sequential p50/p99 over `--calls` calls, then throughput with
//! `--concurrency` callers for `--seconds`. The gateway's resident memory is
//! read from `/proc` when idle and after the load.

use capgate_sdk::Worker;
use serde_json::{Value, json};

use crate::harness::{ChildGateway, Load, McpCaller, ProviderProcess, measure};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which path to measure.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Sequential calls per scenario (after 1,000 warm-up calls).
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Concurrent callers for the throughput run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the throughput run, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// Runtime worker threads of the gateway under test (default: one per core).
    #[arg(long)]
    gateway_threads: Option<usize>,
    /// Functions one worker registers in the catalog scenario.
    #[arg(long, default_value_t = 10_000)]
    functions: usize,
    /// Policy lines in the policy scenario.
    #[arg(long, default_value_t = 1_000)]
    policy_lines: usize,
    /// Configuration file for the gateway under test (call-path scenarios),
    /// to measure a configuration such as `[audit] allowed_calls = false`.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Sequential calls in the soak scenario.
    #[arg(long, default_value_t = 1_000_000)]
    soak_calls: usize,
    /// Calls a second in the soak scenario's fixed-rate run.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of the soak scenario's fixed-rate run, in minutes (none: skipped).
    #[arg(long)]
    minutes: Option<u64>,
    /// Messages the queue scenario publishes (publish-only and end to end).
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// NATS server for the queue scenario: the gateway's queues on JetStream
    /// there, and the same loop directly on JetStream as the ceiling.
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// Alternating rounds per configuration in the tracing, REST and
    /// raw-path scenarios (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Idle legacy MCP sessions opened in the mcp-clients scenario.
    #[arg(long, default_value_t = 1_000)]
    sessions: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    All,
    Worker,
    Mcp,
    /// One round trip to the gateway (a built-in function): the floor under
    /// the other two.
    Builtin,
    /// A large catalog (`--functions`, 10,000 by default): registration
    /// time, `tools/list` latency, resolve + validate per call, memory.
    /// Not part of `all`.
    Catalog,
    /// Policies at scale (`--policy-lines`, 1,000 by default, over
    /// `--functions`): one agent's filtered `tools/list`, warm and after a
    /// reload; per-call decisions warm, uncached, and casbin's. Not part of `all`.
    Policy,
    /// Lost calls and memory over time: `--soak-calls` sequential calls
    /// (1,000,000 by default), then, with `--minutes`, `--rate` calls a
    /// second with RSS sampled every 10 s. Not part of `all`.
    Soak,
    /// A worker with `--functions` (use 1,000) functions reconnects after
    /// the gateway is killed and restarted: time from its new connection to
    /// all its functions being callable. Not part of `all`.
    Reconnect,
    /// A worker with `--functions` functions loses its connection (a TCP
    /// proxy cuts it) ten times while another worker calls it: time to
    /// callable after each reattach, and what the caller saw. Not part of `all`.
    Reattach,
    /// What MCP clients pay: the gateway against an rmcp server answering
    /// the same tool in-process (throughput at `--concurrency`, sequential
    /// p50), the `capgate mcp-stdio` bridge against HTTP direct, and the
    /// memory of an idle legacy session (`--sessions`). Not part of `all`.
    McpClients,
    /// The hot path with nothing in the way: a lean raw-protocol caller and
    /// provider through a do-nothing frame router, capgate (audit on) and
    /// capgate with `[audit] allowed_calls = false`; the resident cost of
    /// an idle worker connection (`--sessions` of them). Not part of `all`.
    RawPath,
    /// An HTTP trigger → worker → response, against MCP `tools/call` of the
    /// same function in the same run: throughput at `--concurrency`,
    /// sequential p50. Not part of `all`.
    HttpTrigger,
    /// `state::set` + `state::get` through the path from one SDK worker:
    /// operations/s at `--concurrency`, sequential p50 of a pair. Not part
    /// of `all`.
    State,
    /// Durable queues: sequential publish p50/p99, publish-only and end-to-end
    /// messages/s (`--messages` by `--concurrency` publishers, one
    /// subscriber at concurrency 64); with `--nats-url` on JetStream, beside
    /// the same loop straight on JetStream. Not part of `all`.
    Queue,
    /// MCP `tools/call` with tracing off and with every span exported
    /// over OTLP/HTTP to a receiver in this process, alternating rounds:
    /// throughput at `--concurrency` and sequential p50, medians of `--rounds` (3).
    /// Not part of `all`.
    Tracing,
    /// MCP `tools/call` → gateway → a REST upstream on loopback, beside
    /// the upstream called directly with the same HTTP client, in
    /// alternating `--rounds`; and the import time of a generated document
    /// of `--functions` operations. Not part of `all`.
    Rest,
    /// `--functions` cron jobs (at most 40) firing every second for
    /// `--seconds`: how late each fire reaches the worker (p50, p99, max).
    /// Not part of `all`.
    Cron,
}

impl BenchArgs {
    fn load(&self) -> Load {
        Load {
            calls: self.calls,
            concurrency: self.concurrency,
            seconds: self.seconds,
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Every scenario that registers functions needs at least one.
    if args.functions == 0 {
        anyhow::bail!("--functions must be at least 1");
    }
    if args.scenario == Scenario::Catalog {
        return crate::catalog::run(args.functions, args.gateway_threads, args.json).await;
    }
    if args.scenario == Scenario::Reconnect {
        return crate::soak::reconnect(args.functions, args.gateway_threads, args.json).await;
    }
    if args.scenario == Scenario::McpClients {
        return crate::mcp_clients::run(
            &args.load(),
            args.gateway_threads,
            args.sessions,
            args.json,
        )
        .await;
    }
    if args.scenario == Scenario::HttpTrigger {
        return crate::http_trigger::run(&args.load(), args.gateway_threads, args.json).await;
    }
    if args.scenario == Scenario::State {
        return crate::state_cron::state(
            &args.load(),
            args.gateway_threads,
            args.config.as_deref(),
            args.json,
        )
        .await;
    }
    if args.scenario == Scenario::Queue {
        return crate::queues::run(
            args.calls,
            args.messages,
            args.concurrency,
            args.gateway_threads,
            args.nats_url.as_deref(),
            args.json,
        )
        .await;
    }
    if args.scenario == Scenario::Tracing {
        return crate::telemetry::run(
            &args.load(),
            args.rounds.max(1),
            args.gateway_threads,
            args.json,
        )
        .await;
    }
    if args.scenario == Scenario::Rest {
        return crate::rest::run(
            &args.load(),
            args.rounds.max(1),
            args.functions.max(1),
            args.gateway_threads,
            args.json,
        )
        .await;
    }
    if args.scenario == Scenario::Cron {
        return crate::state_cron::cron(
            args.functions,
            args.seconds,
            args.gateway_threads,
            args.json,
        )
        .await;
    }
    if args.scenario == Scenario::RawPath {
        return crate::raw_path::run(
            &args.load(),
            args.rounds.max(1),
            args.gateway_threads,
            args.sessions,
            args.json,
        )
        .await;
    }
    if args.scenario == Scenario::Reattach {
        return crate::soak::reattach(args.functions, args.gateway_threads, args.json).await;
    }
    if args.scenario == Scenario::Soak {
        return crate::soak::run(crate::soak::SoakArgs {
            calls: args.soak_calls,
            rate: args.rate,
            minutes: args.minutes,
            threads: args.gateway_threads,
            config: args.config.clone(),
            json: args.json,
        })
        .await;
    }
    if args.scenario == Scenario::Policy {
        return crate::policy::run(
            args.functions,
            args.policy_lines,
            args.gateway_threads,
            args.json,
        )
        .await;
    }
    let gateway =
        ChildGateway::start_configured(args.gateway_threads, args.config.as_deref()).await?;
    let idle_rss = gateway.rss_kib()?;
    let mut provider = ProviderProcess::start_live(&gateway.worker_url()).await?;
    let mut results = Vec::new();
    if matches!(args.scenario, Scenario::All | Scenario::Worker) {
        let call = sdk_calls(
            &gateway.worker_url(),
            "bench-caller",
            "hello::greet",
            json!({"name": "bench"}),
        )
        .await?;
        results.push(measure("worker", &args.load(), call).await?);
    }
    if matches!(args.scenario, Scenario::All | Scenario::Builtin) {
        let input = json!({"function_id": "hello::greet"});
        let call = sdk_calls(
            &gateway.worker_url(),
            "bench-builtin",
            "engine::functions::info",
            input,
        )
        .await?;
        results.push(measure("builtin", &args.load(), call).await?);
    }
    if matches!(args.scenario, Scenario::All | Scenario::Mcp) {
        let client = McpCaller::new(&gateway.mcp_url())?;
        let call = move || {
            let client = client.clone();
            async move { client.call_greet().await }
        };
        results.push(measure("mcp", &args.load(), call).await?);
    }
    let loaded_rss = gateway.rss_kib()?;
    if args.json {
        println!(
            "{}",
            json!({"results": results, "gateway_rss_idle_kib": idle_rss, "gateway_rss_after_load_kib": loaded_rss})
        );
    } else {
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>12} {:>14} {:>8}",
            "path", "calls", "p50 µs", "p99 µs", "concurrency", "calls/s", "errors"
        );
        for r in &results {
            println!(
                "{:<8} {:>10} {:>10.1} {:>10.1} {:>12} {:>14.0} {:>8}",
                r.scenario,
                r.sequential_calls,
                r.p50_us,
                r.p99_us,
                r.concurrency,
                r.calls_per_sec,
                r.errors
            );
        }
        println!(
            "gateway RSS: idle {:.1} MiB, after load {:.1} MiB",
            idle_rss as f64 / 1024.0,
            loaded_rss as f64 / 1024.0
        );
    }
    provider.stop().await;
    gateway.stop().await;
    Ok(())
}

/// A worker named `name` that calls `function_id` with `input`, as a call
/// factory for [`measure`].
async fn sdk_calls(
    url: &str,
    name: &str,
    function_id: &'static str,
    input: Value,
) -> anyhow::Result<impl Fn() -> BoxedCall + Clone + Send + Sync + 'static> {
    let caller = Worker::builder(url).name(name).connect().await?;
    Ok(move || {
        let (caller, input) = (caller.clone(), input.clone());
        Box::pin(async move {
            caller
                .call(function_id, input)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }) as BoxedCall
    })
}

type BoxedCall = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

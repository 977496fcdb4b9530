//! `capgate-bench`: measures a `capgate serve` child process on this
//! machine — the call paths ([`call_path`]: worker, MCP, and the built-in
//! floor under both), the catalog at scale ([`catalog`]), policies at scale
//! ([`policy`]), lost calls and memory over time, reconnects and
//! reattaches ([`soak`]), what MCP clients pay ([`mcp_clients`]: an rmcp
//! ceiling, the stdio bridge, idle sessions), the hot path against a
//! do-nothing router ([`raw_path`]), HTTP triggers against MCP
//! ([`http_trigger`]), state operations and cron fire lateness
//! ([`state_cron`]), what tracing costs ([`telemetry`]), REST services
//! against their upstream called directly ([`rest`]), all standing on [`harness`] (the child
//! processes and the percentile arithmetic). The gateway, the provider worker (this binary's
//! hidden `provider` command) and the callers run as separate processes,
//! as they would be deployed. Kept out of the gateway crate: the product
//! carries no benchmark code and none of its dependencies.

mod call_path;
mod catalog;
mod harness;
mod http_trigger;
mod mcp_clients;
mod policy;
mod queues;
mod raw_path;
mod rest;
mod soak;
mod state_cron;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The same allocator as the `capgate` binary, so the provider worker in
/// this process is measured as deployed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "capgate-bench",
    version,
    about = "Measure capgate's latency, throughput and memory against a gateway this command starts",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    internal: Option<Internal>,
    #[command(flatten)]
    args: call_path::BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The worker the call-path scenarios measure against, in its own process.
    #[command(hide = true)]
    Provider {
        /// Worker URL of the gateway.
        url: String,
    },
    /// An rmcp server answering `hello__greet` in-process: the ceiling the
    /// mcp-clients scenario compares the gateway with.
    #[command(hide = true)]
    RmcpCeiling {
        /// Address to listen on.
        addr: String,
    },
    /// The raw-path scenario's do-nothing frame router.
    #[command(hide = true)]
    Router {
        /// Address to listen on.
        addr: String,
        /// Make the changes the worker protocol requires of a gateway
        /// (a fresh id to the provider, `_caller_worker_id`), nothing else.
        #[arg(long)]
        rewrite: bool,
    },
    /// The REST scenario's upstream.
    #[command(hide = true)]
    RestUpstream {
        /// Address to listen on.
        addr: String,
    },
    /// The REST scenario's do-nothing HTTP forwarder.
    #[command(hide = true)]
    RestForwarder {
        /// Address to listen on.
        addr: String,
        /// The upstream's base URL.
        upstream: String,
    },
    /// The raw-path scenario's lean echo provider.
    #[command(hide = true)]
    RawProvider {
        /// Worker URL of the gateway or router.
        url: String,
    },
    /// The raw-path caller alone: a fixed number of calls, for counting a
    /// target's instructions per call (docs/benchmarks.md).
    #[command(hide = true)]
    RawLoad {
        /// Worker URL of the gateway or router.
        url: String,
        /// Calls to make.
        #[arg(long, default_value_t = 20_000)]
        calls: u64,
        /// Calls kept outstanding.
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    capgate_gateway::cli::init_logging("info,rmcp=warn", capgate_gateway::cli::LogFormat::Text);
    capgate_gateway::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("capgate-bench: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.internal {
            Some(Internal::Provider { url }) => harness::serve_provider(url).await,
            Some(Internal::RmcpCeiling { addr }) => mcp_clients::serve_ceiling(addr).await,
            Some(Internal::Router { addr, rewrite }) => {
                let forwarding = if rewrite {
                    raw_path::Forwarding::Rewritten
                } else {
                    raw_path::Forwarding::Unchanged
                };
                raw_path::serve_router(addr, forwarding).await
            }
            Some(Internal::RawProvider { url }) => raw_path::serve_provider(url).await,
            Some(Internal::RawLoad {
                url,
                calls,
                concurrency,
            }) => raw_path::load(url, calls, concurrency).await,
            Some(Internal::RestUpstream { addr }) => rest::serve_upstream(addr).await,
            Some(Internal::RestForwarder { addr, upstream }) => {
                rest::serve_forwarder(addr, upstream).await
            }
            None => call_path::run(cli.args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("capgate-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

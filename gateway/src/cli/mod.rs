//! The command line: `capgate serve`, commands that
//! talk to a running gateway (`functions`, `workers`, `audit`, `policy
//! reload`, the `mcp-stdio` bridge), and offline ones (`policy check`,
//! `agents key`, `workers key`, `store check|backup`).

mod access;
mod discovery;
mod mcp_stdio;
mod queues;
mod remote;
mod rest;
mod state;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use self::discovery::{FunctionsCommand, TriggersCommand, WorkersCommand};
use self::remote::Remote;
use crate::config::{Config, Settings};
use crate::server::{Gateway, ShutdownSignal};

#[derive(Debug, Parser)]
#[command(
    name = "capgate",
    version,
    about = "Gateway and live capability catalog for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr: `text`, or `json` (one object per line,
    /// with the call's trace_id and span_id) for a log pipeline.
    #[arg(long, global = true, env = "CAPGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (workers at ws://HOST:PORT/, MCP at http://HOST:PORT/mcp).
    Serve(ServeArgs),
    /// Discover functions in a running gateway.
    Functions(RemoteCommand<FunctionsCommand>),
    /// Discover workers connected to a running gateway.
    Workers(RemoteCommand<WorkersCommand>),
    /// The triggers running in a gateway: list them, stop one.
    Triggers(RemoteCommand<TriggersCommand>),
    /// State in a running gateway: get, set, delete and list values.
    State(RemoteCommand<state::StateCommand>),
    /// Queues in a running gateway: list them, inspect, redrive and discard
    /// dead letters, purge.
    Queues(RemoteCommand<queues::QueuesCommand>),
    /// REST services in a running gateway: import an OpenAPI document as
    /// functions, list, show, remove.
    Rest(RemoteCommand<rest::RestCommand>),
    /// Agent identities for the configuration.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Policies: explain a decision, reload a running gateway's files.
    #[command(subcommand)]
    Policy(access::PolicyCommand),
    /// The audit log of a running gateway.
    #[command(subcommand)]
    Audit(access::AuditCommand),
    /// Serve MCP on stdin/stdout, bridged to a running gateway: for clients
    /// that start their MCP servers as processes (Claude Desktop, editors).
    McpStdio(mcp_stdio::McpStdioArgs),
    /// The embedded catalog database: check its integrity, back it up
    /// (also while the gateway serves).
    #[command(subcommand)]
    Store(store::StoreCommand),
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Make a new API key for an agent and print it with the
    /// `[agents.NAME]` entry that accepts it (only the key's hash goes in
    /// the configuration).
    Key {
        /// The agent's name, such as legacy-bot.
        name: String,
    },
}

/// A command for a running gateway, with where to find it.
#[derive(Debug, clap::Args)]
struct RemoteCommand<C: clap::Subcommand> {
    #[command(subcommand)]
    command: C,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CAPGATE_LISTEN", value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address of the HTTP trigger listener (`http` triggers' routes), or
    /// `off`; default 127.0.0.1:3111.
    #[arg(long, env = "CAPGATE_HTTP_LISTEN", value_name = "HOST:PORT")]
    http_listen: Option<String>,
    /// Directory for the embedded catalog database.
    #[arg(long, env = "CAPGATE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML).
    #[arg(long, env = "CAPGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Largest worker frame accepted, in bytes.
    #[arg(long, env = "CAPGATE_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Default deadline of a call, in milliseconds.
    #[arg(long, env = "CAPGATE_CALL_TIMEOUT_MS")]
    call_timeout_ms: Option<u64>,
    /// Whether existing 0.x and pre-release versions may be redefined:
    /// "unstable" (default) or "never".
    #[arg(long, env = "CAPGATE_REDEFINE_VERSIONS", value_name = "RULE")]
    redefine_versions: Option<String>,
}

/// Runs the command line and maps any error to one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bridge reports what matters itself; rmcp's transport errors
    // would repeat it in its own terms on the client's stderr.
    init_logging(
        match cli.command {
            Command::McpStdio(_) => "warn,rmcp=off",
            _ => "info,rmcp=warn",
        },
        cli.log_format,
    );
    crate::tls::install_crypto_provider();
    // The bridge relays one message at a time between two streams: on one
    // thread its tasks hand work to each other without waking another
    // thread (docs/benchmarks.md, "MCP clients").
    let mut builder = match cli.command {
        Command::McpStdio(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("capgate: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Functions(RemoteCommand { command, remote }) => {
                discovery::functions(command, &remote).await
            }

            Command::Agents(AgentsCommand::Key { name }) => {
                print_key("agents", "agent", &name);
                Ok(())
            }
            Command::Workers(RemoteCommand {
                command: WorkersCommand::Key { name },
                ..
            }) => {
                print_key("workers", "worker", &name);
                Ok(())
            }
            Command::Workers(RemoteCommand { command, remote }) => {
                discovery::workers(command, &remote).await
            }
            Command::Triggers(RemoteCommand { command, remote }) => {
                discovery::triggers(command, &remote).await
            }
            Command::State(RemoteCommand { command, remote }) => state::run(command, &remote).await,
            Command::Queues(RemoteCommand { command, remote }) => {
                queues::run(command, &remote).await
            }
            Command::Rest(RemoteCommand { command, remote }) => rest::run(command, &remote).await,
            Command::Policy(command) => access::policy(command).await,
            Command::Audit(command) => access::audit(command).await,
            Command::McpStdio(args) => mcp_stdio::run(args).await,
            Command::Store(command) => store::run(command).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("capgate: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A new key and the configuration entry that accepts it.
fn print_key(table: &str, kind: &str, name: &str) {
    let (key, digest) = crate::identity::agents::new_key();
    println!("# API key for {kind} '{name}' (shown once; give it to the {kind}):");
    println!("# {key}");
    println!("[{table}.{name}]");
    println!("api_key_sha256 = \"{digest}\"");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Settings {
        listen: args.listen,
        http_listen: args.http_listen,
        data_dir: args.data_dir,
        max_frame_bytes: args.max_frame_bytes,
        call_timeout_ms: args.call_timeout_ms,
        redefine_versions: args.redefine_versions,
        ..Settings::default()
    };
    let config = Config::load(args.config.as_deref(), overrides)?;
    let signal = ShutdownSignal::install().context("listening for SIGINT and SIGTERM")?;
    let gateway = Gateway::start(config).await?;
    signal.received().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Logs to stderr, filtered by `CAPGATE_LOG`, else by `default`. Lines
/// logged during a call carry its `call` span: function, trace_id, span_id.
pub fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

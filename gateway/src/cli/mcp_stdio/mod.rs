//! `capgate mcp-stdio`: an MCP server on stdin/stdout for clients that
//! launch their servers as processes (Claude Desktop, editors), bridged to
//! a running gateway over Streamable HTTP.
//!
//! The bridge holds no catalog and makes no decision: every request goes
//! to the gateway as the agent whose token it was given, on the stateless
//! 2026-07-28 protocol (no session to keep alive or to count against the
//! gateway's limit). It passes on `list_changed` (the gateway's
//! `subscriptions/listen` stream, re-sent to the stdio client) and
//! cancellation (a `notifications/cancelled` from the client drops the
//! upstream request, which cancels the call at its worker). It exits when
//! stdin closes.
//!
//! `tools/call` and `tools/list`, the requests that carry the load, are
//! relayed a line at a time (`relay`); rmcp's server, behind the relay,
//! speaks the rest of the protocol.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProtocolVersion, ServerCapabilities,
    ServerConfig, ServerNotification, SubscriptionFilter,
};
use rmcp::service::{
    NotificationContext, RunningService, ServerInitializeError, SubscriptionContext,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{
    ClientLifecycleMode, ClientServiceExt, ErrorData, RoleClient, RoleServer, ServerHandler,
    ServiceExt,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::sync::watch;

use self::relay::{Output, Relay};
use crate::mcp::handler::PROTOCOL_VERSIONS;

mod relay;

/// The in-process pipe between the relay and rmcp's server, each way.
const RMCP_PIPE_BYTES: usize = 64 * 1024;

/// How long the bridge waits for the gateway to answer its first request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct McpStdioArgs {
    /// The gateway's MCP endpoint.
    #[arg(
        long,
        env = "CAPGATE_MCP_URL",
        default_value = "http://127.0.0.1:49134/mcp"
    )]
    url: String,
    /// The agent's API key or JWT (sent as `Authorization: Bearer`); none
    /// for a loopback gateway that lets anonymous local agents in.
    #[arg(long, env = "CAPGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs the bridge until stdin closes. Everything it says goes to stderr:
/// stdout belongs to the protocol.
pub async fn run(args: McpStdioArgs) -> anyhow::Result<()> {
    let upstream = connect(&args)
        .await
        .map_err(|message| anyhow::anyhow!(message))?;
    let (changes, _) = watch::channel(0u64);
    let changes = Arc::new(changes);
    let forward = tokio::spawn(forward_list_changes(
        upstream.peer().clone(),
        changes.clone(),
    ));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
    let (stdin, stdout) = stdio();
    let output = Arc::new(Output::new(stdout));
    let relay = Arc::new(Relay::new(
        http,
        args.url.clone(),
        args.token.clone(),
        output.clone(),
    ));
    // rmcp's server speaks everything the relay does not answer, over an
    // in-process pipe: the relay writes it the client's other lines, and
    // its own lines are copied to stdout whole.
    let (ours, theirs) = tokio::io::duplex(RMCP_PIPE_BYTES);
    let (from_rmcp, to_rmcp) = tokio::io::split(ours);
    let copier = tokio::spawn(copy_lines(from_rmcp, output));
    let reader = tokio::spawn(relay.run(BufReader::new(stdin), to_rmcp));
    let bridge = Bridge {
        upstream: upstream.peer().clone(),
        changes,
    };
    let served = match bridge.serve(theirs).await {
        Ok(server) => server
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        // stdin closed before the client said anything: a clean end.
        Err(ServerInitializeError::ConnectionClosed(_)) => Ok(()),
        Err(error) => Err(error.to_string()),
    };
    let read = if reader.is_finished() {
        reader.await.unwrap_or(Ok(()))
    } else {
        reader.abort();
        Ok(())
    };
    copier.abort();
    forward.abort();
    let _ = upstream.cancel().await;
    served.map_err(|error| {
        anyhow::anyhow!("the stdio client's session ended with an error: {error}")
    })?;
    read.map_err(|error| anyhow::anyhow!("reading stdin failed: {error}"))
}

/// rmcp's lines, each written to stdout whole (between the relay's).
async fn copy_lines(from_rmcp: impl AsyncRead + Unpin, output: Arc<Output>) {
    let mut lines = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                output.write_line(&line).await;
            }
        }
    }
}

type Upstream = RunningService<RoleClient, ClientConfig>;

type Stdin = Box<dyn AsyncRead + Unpin + Send>;
type Stdout = Box<dyn AsyncWrite + Unpin + Send>;

/// stdin and stdout. When both are pipes (how MCP clients start their
/// servers) they are read and written as non-blocking pipes on the
/// runtime's event loop; tokio's general stdio hands every read and write
/// to a blocking thread, which costs tens of microseconds a message.
fn stdio() -> (Stdin, Stdout) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok());
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| pipe::Sender::from_owned_fd(fd).ok());
    match (stdin, stdout) {
        (Some(stdin), Some(stdout)) => (Box::new(stdin), Box::new(stdout)),
        _ => (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout())),
    }
}

/// Reaches the gateway once before serving, so a wrong URL or a refused
/// token is said at once, on stderr, instead of as a failed first call.
async fn connect(args: &McpStdioArgs) -> Result<Upstream, String> {
    let mut config =
        StreamableHttpClientTransportConfig::with_uri(args.url.clone()).max_concurrent_requests(64);
    if let Some(token) = &args.token {
        config = config.auth_header(token.clone());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("capgate-mcp-stdio", env!("CARGO_PKG_VERSION")),
    );
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.serve_with_lifecycle(transport, lifecycle),
    )
    .await
    .map_err(|_| {
        format!(
            "the gateway at {} did not answer within {} s; is `capgate serve` running there?",
            args.url,
            CONNECT_TIMEOUT.as_secs()
        )
    })?;
    connected.map_err(|error| explain_connect_error(&args.url, &causes(&error)))
}

/// An error without the transport's type names: what a person can act on.
/// rmcp writes "Send message error Transport [TYPE] error: CAUSE, when ...".
fn causes(error: &dyn std::error::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once("] error: ") {
        Some((_, cause)) => cause.to_owned(),
        None => text,
    }
}

/// What to tell the user when the first request fails, from rmcp's
/// transport errors ("Auth required" is its 401, "Insufficient scope" its
/// 403; ports and URLs in the text are not looked at).
fn explain_connect_error(url: &str, error: &str) -> String {
    if error.contains("Auth required") || error.contains("Auth error") {
        format!(
            "the gateway at {url} refused the token ({error}); pass the agent's API key or JWT with --token or CAPGATE_TOKEN"
        )
    } else if error.contains("Insufficient scope") {
        format!(
            "the gateway at {url} accepted the token but not its scopes ({error}); use a token with the scopes the gateway requires"
        )
    } else {
        format!(
            "cannot reach the gateway at {url} ({error}); start it with `capgate serve`, or pass its MCP address with --url"
        )
    }
}

/// Counts the gateway's `tools/list_changed` notifications; each stdio
/// listener re-sends them.
async fn forward_list_changes(upstream: rmcp::Peer<RoleClient>, changes: Arc<watch::Sender<u64>>) {
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let mut subscription = match upstream.listen(filter).await {
        Ok(subscription) => subscription,
        Err(error) => {
            eprintln!(
                "capgate mcp-stdio: the gateway's change stream did not open ({error}); tool list changes will not be passed on"
            );
            return;
        }
    };
    loop {
        match subscription.next().await {
            Ok(Some(ServerNotification::ToolListChangedNotification(_))) => {
                changes.send_modify(|count| *count += 1);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                eprintln!(
                    "capgate mcp-stdio: the gateway's change stream ended; tool list changes will not be passed on until restart"
                );
                return;
            }
        }
    }
}

/// The stdio side of everything the relay does not answer itself:
/// `initialize`, `ping`, subscriptions and `list_changed`.
#[derive(Clone)]
struct Bridge {
    /// For the server's instructions and the change stream.
    upstream: rmcp::Peer<RoleClient>,
    changes: Arc<watch::Sender<u64>>,
}

impl ServerHandler for Bridge {
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(PROTOCOL_VERSIONS)
    }

    fn get_info(&self) -> ServerConfig {
        let instructions = self
            .upstream
            .peer_info()
            .and_then(|info| info.instructions.clone())
            .unwrap_or_default();
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "capgate-mcp-stdio",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(instructions)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut changes = self.changes.subscribe();
        let peer = context.peer;
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if peer.is_transport_closed() || peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        if context.accepted().tools_list_changed != Some(true) {
            context.cancelled().await;
            return Ok(());
        }
        let mut changes = self.changes.subscribe();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() || context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_say_what_to_do() {
        let refused = explain_connect_error("http://x/mcp", "Auth required, when send initialize");
        assert!(refused.contains("refused the token") && refused.contains("--token"));
        let down =
            explain_connect_error("http://x/mcp", "error sending request: connection refused");
        assert!(down.contains("cannot reach") && down.contains("capgate serve"));
    }
}

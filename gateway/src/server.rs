//! The gateway process: one listener, one router, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use capgate_catalog::definition::CapabilityDefinition;
use capgate_catalog::store::{Store, StoreError, open_catalog};
use capgate_catalog::{Capability, Catalog};
use capgate_policies::{Authorizer, LoopbackOpen};
use http::{HeaderMap, StatusCode};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::config::Config;
use crate::functions_available::FunctionsAvailable;
use crate::invocation::InvocationPath;
use crate::loopback::admit_local_client;
use crate::mcp::calls::authenticate;
use crate::mcp::fast_path::mcp_endpoint;
use crate::mcp::service::mcp_service;
use crate::mcp::tools::ToolCache;
use crate::worker::{Workers, connection};

/// What every request handler and connection shares.
pub struct GatewayState {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub workers: Arc<Workers>,
    pub authorizer: Arc<dyn Authorizer>,
    pub agents: Arc<Agents>,
    pub path: Arc<InvocationPath>,
    /// Workers' `engine::functions-available` subscriptions.
    pub functions_available: Arc<FunctionsAvailable>,
    pub tools: ToolCache,
    /// Cancelled when the gateway starts shutting down.
    pub shutdown: CancellationToken,
    /// Identifies this process in change-feed event ids (start time, ms).
    pub epoch: u64,
}

/// Why the gateway did not start. Each message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0} without authentication: anyone who can reach it could call every function. \
         Listen on a loopback address (--listen 127.0.0.1:49134) until identities are configured"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the configuration declares {id}@{version}, which the catalog cannot accept: {reason}")]
    Declaration {
        id: String,
        version: String,
        reason: String,
    },
}

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<GatewayState>,
    server: JoinHandle<()>,
}

impl Gateway {
    /// Opens the store, binds the listener and starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        if !config.listen.ip().is_loopback() {
            return Err(StartError::NotLoopback(config.listen));
        }
        // Bind first: a port in use is the most common start failure, and
        // should not wait behind opening the store.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|error| StartError::Bind {
                addr: config.listen,
                reason: match error.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        "the address is already in use (is another capgate running?); choose another with --listen or CAPGATE_LISTEN".into()
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied; ports below 1024 need privileges, choose another with --listen".into()
                    }
                    _ => error.to_string(),
                },
            })?;
        let addr = listener.local_addr().map_err(|error| StartError::Bind {
            addr: config.listen,
            reason: error.to_string(),
        })?;
        let store = Store::open_sqlite(&config.data_dir).await?;
        let catalog = Arc::new(
            open_catalog(store)
                .await?
                .with_redefinition(config.redefine_versions),
        );
        declare(&catalog, &config.declared)?;
        let state = build_state(config, catalog);
        let router = router(state.clone());
        let shutdown = state.shutdown.clone();
        // Frames are small request/response messages: send each at once
        // rather than waiting to coalesce (Nagle).
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let server = tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::error!(%error, "server stopped with an error");
            }
        });
        tracing::info!(%addr, "capgate listening: workers at ws://{addr}/, MCP at http://{addr}/mcp");
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://HOST:PORT/` — where workers connect.
    pub fn worker_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// `http://HOST:PORT/mcp` — where agents connect.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// Stops taking calls, closes connections, waits for the server (up to
    /// the configured grace) and writes what the catalog has not yet stored.
    pub async fn shutdown(self) {
        self.state.path.stop_accepting();
        self.state.shutdown.cancel();
        let grace = self.state.config.shutdown_grace;
        if tokio::time::timeout(grace, self.server).await.is_err() {
            tracing::warn!(
                ?grace,
                "connections still open after the shutdown grace; stopping anyway"
            );
        }
        if let Err(error) = self.state.catalog.flush().await {
            tracing::error!(%error, "catalog not fully written at shutdown");
        }
    }
}

/// Puts the configuration's declared versions in the catalog (offline
/// until a worker provides them). A declaration that contradicts a stored
/// version stops the start: the operator must choose which is right.
fn declare(catalog: &Catalog, declared: &[CapabilityDefinition]) -> Result<(), StartError> {
    for definition in declared {
        let error = |reason: String| StartError::Declaration {
            id: definition.id.to_string(),
            version: definition.version.to_string(),
            reason,
        };
        let capability =
            Capability::from_definition(definition.clone()).map_err(|e| error(e.to_string()))?;
        catalog
            .define(capability)
            .map_err(|e| error(e.to_string()))?;
    }
    Ok(())
}

fn build_state(config: Config, catalog: Arc<Catalog>) -> Arc<GatewayState> {
    let workers = Arc::new(Workers::new());
    let authorizer: Arc<dyn Authorizer> = Arc::new(LoopbackOpen);
    let agents = Arc::new(Agents::new(&config.agents));
    let functions_available = Arc::new(FunctionsAvailable::default());
    let path = Arc::new(InvocationPath::new(
        catalog.clone(),
        workers.clone(),
        authorizer.clone(),
        agents.clone(),
        functions_available.clone(),
        config.call_timeout,
    ));
    Arc::new(GatewayState {
        tools: ToolCache::new(catalog.clone()),
        agents,
        functions_available,
        config,
        catalog,
        workers,
        authorizer,
        path,
        shutdown: CancellationToken::new(),
        epoch: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    })
}

fn router(state: Arc<GatewayState>) -> Router {
    let mcp = Router::new()
        .route("/mcp", any(mcp_endpoint))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state((state.clone(), mcp_service(state.clone())));
    Router::new()
        .route("/", get(worker_socket))
        .route("/ws", get(worker_socket))
        .route("/otel", get(telemetry_socket))
        .route("/healthz", get(health))
        .with_state(state.clone())
        .merge(mcp)
        .merge(crate::admin::router(state))
}

async fn worker_socket(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(refusal) = admit_local_client(&headers) {
        return refusal.into_response();
    }
    let Ok(upgrade) = upgrade else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "This is capgate's worker endpoint: connect with a WebSocket (ws://HOST:PORT/). Agents use MCP at /mcp.\n",
        )
            .into_response();
    };
    let limit = state.config.max_frame_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection::serve(socket, state))
}

async fn telemetry_socket(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(refusal) = admit_local_client(&headers) {
        return refusal.into_response();
    }
    let limit = state.config.max_frame_bytes;
    upgrade
        .max_message_size(limit)
        .on_upgrade(move |socket| connection::drain_telemetry(socket, state))
}

async fn health(State(state): State<Arc<GatewayState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "workers": state.workers.len(),
        "functions": state.catalog.live().len(),
        "revision": state.catalog.revision(),
    }))
}

/// SIGINT and SIGTERM, listened for from creation on: install it before
/// starting anything, so a signal during start-up stops the gateway cleanly
/// instead of killing it.
pub struct ShutdownSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// Resolves at the first SIGINT or SIGTERM.
    pub async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

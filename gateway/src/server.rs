//! The gateway process: one listener, one router, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use capgate_catalog::audit::AuditLog;
use capgate_catalog::definition::CapabilityDefinition;
use capgate_catalog::store::{Store, StoreError};
use capgate_catalog::{Capability, Catalog};
use capgate_policies::PolicyError;
use http::{HeaderMap, StatusCode, Uri};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use capgate_adapters::http::HttpRoutes;
use capgate_adapters::triggers::{TriggerServices, Triggers};

use crate::access::Access;
use crate::admin::AdminState;
use crate::config::Config;
use crate::identity::agents::Agents;
use crate::identity::{Identities, WorkerIdentity};
use crate::invocation::InvocationPath;
use crate::loopback::admit_local_client;
use crate::mcp::McpState;
use crate::mcp::auth::authenticate;
use crate::mcp::fast_path::mcp_endpoint;
use crate::mcp::service::mcp_service;
use crate::mcp::tools::ToolCache;
use crate::poll_again::PollAgain;
use crate::trigger_host::GatewayTriggerHost;
use crate::worker::{WorkerContext, connection};
use crate::workers::Workers;

/// The gateway's parts, as the composition root holds them. Each entry
/// point gets only its own state ([`WorkerContext`], [`McpState`],
/// [`AdminState`]); this struct is for the server itself and for tests.
pub struct GatewayState {
    pub config: Arc<Config>,
    pub catalog: Arc<Catalog>,
    pub workers: Arc<Workers>,
    /// Policies in force and the audit log.
    pub access: Arc<Access>,
    pub identities: Arc<Identities>,
    pub path: Arc<InvocationPath>,
    /// Running triggers (workers' `engine::functions-available` subscriptions).
    pub triggers: Arc<Triggers>,
    /// The routes of `http` triggers, served by the HTTP trigger listener.
    pub http_routes: Arc<HttpRoutes>,
    trigger_services: TriggerServices,
    /// Cancelled when the gateway starts shutting down.
    pub shutdown: CancellationToken,
    worker: Arc<WorkerContext>,
    mcp: Arc<McpState>,
    admin: Arc<AdminState>,
}

impl GatewayState {
    /// The open legacy MCP sessions (for monitoring and tests).
    pub fn mcp_sessions(&self) -> &Arc<crate::mcp::sessions::Sessions> {
        &self.mcp.sessions
    }
}

/// Why the gateway did not start. Each message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {addr} without authentication for {who}: anyone who can reach it could {what}. \
         Configure identities in capgate.toml ({how}; see docs/policies.md), or listen on a loopback address (--listen 127.0.0.1:49134)"
    )]
    NotLoopback {
        addr: SocketAddr,
        who: &'static str,
        what: &'static str,
        how: &'static str,
    },
    #[error("identity configuration cannot be used: {0}")]
    Identity(String),
    #[error("the policy cannot be used: {0}")]
    Policy(#[from] PolicyError),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the state store cannot be opened: {0}")]
    State(String),
    #[error("the queues cannot be opened: {0}")]
    Queues(String),
    #[error("telemetry cannot start: {0}")]
    Telemetry(String),
    #[error("REST services cannot start: {0}")]
    Rest(String),
    #[error(
        "the configuration's trigger '{id}' cannot start: {reason}; fix its [[triggers]] entry"
    )]
    Trigger { id: String, reason: String },
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
    http_addr: Option<SocketAddr>,
    state: Arc<GatewayState>,
    server: JoinHandle<()>,
}

/// Binds `addr`; a failure says which option chooses another.
async fn bind(
    addr: SocketAddr,
    option: &str,
) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let failed = |reason: String| StartError::Bind { addr, reason };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| {
            failed(match error.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "the address is already in use (is another capgate running?); choose another with {option}"
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "permission denied; ports below 1024 need privileges, choose another with {option}"
                ),
                _ => error.to_string(),
            })
        })?;
    let bound = listener
        .local_addr()
        .map_err(|error| failed(error.to_string()))?;
    Ok((listener, bound))
}

impl Gateway {
    /// Opens the store, binds the listener and starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with(config, Workers::new()).await
    }

    /// [`Gateway::start`] with pauses inside the worker registry's critical
    /// sections (race tests).
    #[cfg(feature = "test-util")]
    pub async fn start_with_faults(
        config: Config,
        delays: crate::test_util::FaultDelays,
    ) -> Result<Self, StartError> {
        Self::start_with(config, Workers::with_faults(delays)).await
    }

    async fn start_with(config: Config, workers: Workers) -> Result<Self, StartError> {
        let agents = Arc::new(Agents::new(&config.identity.agents));
        let identities = Arc::new(
            Identities::new(
                &config.identity.workers,
                &config.identity.issuers,
                agents.clone(),
            )
            .map_err(StartError::Identity)?,
        );
        check_exposure(&config, &identities)?;
        let policy = Access::load(&config.policies.files)?;
        // Bind first: a port in use is the most common start failure, and
        // should not wait behind opening the store.
        let (listener, addr) = bind(config.server.listen, "--listen or CAPGATE_LISTEN").await?;
        let http_listener = match config.server.http_listen {
            Some(http_addr) => Some(
                bind(
                    http_addr,
                    "--http-listen or CAPGATE_HTTP_LISTEN (or turn it off with --http-listen off)",
                )
                .await?,
            ),
            None => None,
        };
        let store = Store::open_sqlite(&config.server.data_dir).await?;
        let audit = AuditLog::open(store.clone(), config.audit.retain).await?;
        let catalog = Arc::new(
            Catalog::open(store.clone())
                .await?
                .with_redefinition(config.catalog.redefine_versions)
                .with_version_limit(config.catalog.max_versions),
        );
        if policy.is_open_default()
            && (identities.agents_identified() || identities.workers_identified())
        {
            tracing::warn!(
                "identities are configured but no policy files: the embedded default lets every authenticated client do everything; set [policies] files (docs/policies.md)"
            );
        }
        let access = Arc::new(Access::new(
            policy,
            config.policies.files.clone(),
            audit,
            config.audit.clone(),
        ));
        let state_store = capgate_adapters::state::StateStore::open(
            store.clone(),
            capgate_adapters::state::StateLimits::default(),
        )
        .await
        .map_err(|error| StartError::State(error.to_string()))?;
        let queues = capgate_adapters::queue::Queues::open(store.clone(), config.queues.clone())
            .await
            .map_err(|error| StartError::Queues(error.to_string()))?;
        // Loopback upstreams are allowed only when nothing remote can reach
        // them through this gateway.
        let loopback_only = addr.ip().is_loopback()
            && http_listener
                .as_ref()
                .is_none_or(|(_, http_addr)| http_addr.ip().is_loopback());
        let rest_settings = config
            .rest
            .settings(loopback_only, |name| std::env::var(name).ok())
            .map_err(StartError::Rest)?;
        let rest = Arc::new(capgate_adapters::rest::Services::new(
            catalog.clone(),
            store.clone(),
            rest_settings,
        ));
        let telemetry = config
            .telemetry
            .resolve(|name| std::env::var(name).ok())
            .and_then(|settings| {
                crate::telemetry::Telemetry::start(&settings).map_err(|error| error.to_string())
            })
            .map_err(StartError::Telemetry)?;
        let state = build_state(
            config,
            workers,
            catalog,
            access,
            identities,
            agents,
            Kept {
                store,
                state: state_store,
                queues: queues.clone(),
                telemetry: Arc::new(telemetry),
                rest: rest.clone(),
            },
        );
        crate::rest::start(&rest, &state.config.rest_services)
            .await
            .map_err(|error| StartError::Rest(error.to_string()))?;
        // A REST service's namespace holds its document's operations only,
        // whichever way a version would come in: workers and the admin API
        // are refused at the door, the configuration's declarations here —
        // once the services are restored and imported, and before any
        // declaration reaches the catalog, so a refused start leaves none
        // behind.
        if let Some((definition, reason)) =
            state.config.catalog.declared.iter().find_map(|definition| {
                rest.refusal_for(definition.id.as_str(), "declare")
                    .map(|reason| (definition, reason))
            })
        {
            return Err(StartError::Declaration {
                id: definition.id.to_string(),
                version: definition.version.to_string(),
                reason,
            });
        }
        declare(&state.catalog, &state.config.catalog.declared)?;
        observe(&state);
        capgate_adapters::queue::function_queues::start(
            &queues,
            &state.trigger_services,
            &state.shutdown,
        );
        crate::admin::triggers::start_configured(&state.admin, &state.config.triggers)
            .map_err(|(id, reason)| StartError::Trigger { id, reason })?;
        crate::admin::triggers::restore(&state.admin).await?;
        if state.config.policies.watch {
            crate::policy_watch::spawn(state.access.clone(), state.shutdown.clone());
        }
        tokio::spawn(
            state
                .mcp
                .sessions
                .clone()
                .sweep_until(state.shutdown.clone()),
        );
        if !state.identities.issuers.is_empty() {
            state.identities.issuers.refresh(true).await;
            let keeper = state.clone();
            tokio::spawn(async move {
                keeper
                    .identities
                    .issuers
                    .keep_fresh(keeper.shutdown.clone())
                    .await;
            });
        }
        let router = router(state.clone());
        let shutdown = state.shutdown.clone();
        let limits = state.config.limits;
        // One budget for both listeners: `max_http_connections` is what the
        // gateway holds, not what each of its ports may.
        let slots = crate::http_server::ConnectionSlots::new(&limits);
        let gateway_slots = slots.clone();
        let server = tokio::spawn(async move {
            crate::http_server::serve(listener, router, &limits, gateway_slots, shutdown).await;
        });
        tracing::info!(%addr, "capgate listening: workers at ws://{addr}/, MCP at http://{addr}/mcp");
        let http_addr = http_listener.map(|(listener, http_addr)| {
            let router = capgate_adapters::http::server::router(
                state.http_routes.clone(),
                state.trigger_services.clone(),
                limits.max_frame_bytes,
            )
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                limits.http_body_timeout,
            ));
            let shutdown = state.shutdown.clone();
            tokio::spawn(async move {
                crate::http_server::serve(listener, router, &limits, slots, shutdown).await;
            });
            tracing::info!(addr = %http_addr, "HTTP triggers served at http://{http_addr}/");
            http_addr
        });
        Ok(Self {
            addr,
            http_addr,
            state,
            server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the HTTP trigger listener serves routes (`None`: turned off).
    pub fn http_trigger_addr(&self) -> Option<SocketAddr> {
        self.http_addr
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

    /// Drains, then stops: new calls are refused at once (`shutting_down`)
    /// while calls in flight finish, up to the configured grace; then
    /// workers are told (close 1001, "going away") and MCP sessions end,
    /// the server stops, and what the catalog and audit log have not yet
    /// stored is written.
    pub async fn shutdown(self) {
        self.state.path.stop_accepting();
        let grace = self.state.config.server.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        let in_flight = self.state.path.in_flight();
        if in_flight > 0 {
            tracing::info!(in_flight, ?grace, "draining: waiting for calls in flight");
        }
        while self.state.path.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let abandoned = self.state.path.in_flight();
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "calls still in flight at the end of the grace; they fail now"
            );
        }
        self.state.shutdown.cancel();
        if tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
            self.server,
        )
        .await
        .is_err()
        {
            tracing::warn!(
                ?grace,
                "connections still open after the shutdown grace; stopping anyway"
            );
        }
        if let Err(error) = self.state.catalog.flush().await {
            tracing::error!(%error, "catalog not fully written at shutdown");
        }
        if let Err(error) = self.state.access.audit.flush().await {
            tracing::error!(%error, "audit log not fully written at shutdown");
        }
        self.state.path.telemetry().shutdown().await;
    }
}

/// Points the gateway's gauges at what they read, and keeps the queue
/// counts they report fresh (read every few seconds; `/metrics` reads
/// them again before it answers).
fn observe(state: &Arc<GatewayState>) {
    let telemetry = state.path.telemetry();
    telemetry
        .metrics
        .observe(crate::telemetry::metrics::Observed {
            workers: {
                let workers = Arc::downgrade(&state.workers);
                Box::new(move || workers.upgrade().map(|w| w.len() as u64))
            },
            in_flight: {
                let path = Arc::downgrade(&state.path);
                Box::new(move || path.upgrade().map(|p| p.in_flight() as u64))
            },
            catalog: Arc::downgrade(&state.catalog),
            audit: Arc::downgrade(&state.access.audit),
            circuits: {
                let rest = Arc::downgrade(&state.admin.rest);
                Box::new(move || {
                    rest.upgrade().map(|rest| {
                        rest.list()
                            .into_iter()
                            .map(|service| (service.namespace, service.breaker.state))
                            .collect()
                    })
                })
            },
        });
    let admin = Arc::downgrade(&state.admin);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let Some(admin) = admin.upgrade() else {
                return;
            };
            crate::admin::metrics::refresh_queues(&admin).await;
        }
    });
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

/// Beyond loopback, both agents and workers must have identities — on the
/// main listener and the HTTP trigger listener alike (a route calls its
/// function as the trigger's owner).
fn check_exposure(config: &Config, identities: &Identities) -> Result<(), StartError> {
    let exposed = std::iter::once(config.server.listen)
        .chain(config.server.http_listen)
        .find(|addr| !addr.ip().is_loopback());
    let Some(addr) = exposed else {
        return Ok(());
    };
    if !identities.agents_identified() {
        return Err(StartError::NotLoopback {
            addr,
            who: "agents",
            what: "call every function",
            how: "[agents.NAME] api_key_sha256, or [[issuers]] for JWTs",
        });
    }
    if !identities.workers_identified() {
        return Err(StartError::NotLoopback {
            addr,
            who: "workers",
            what: "register any function",
            how: "[workers.NAME] api_key_sha256, or [[issuers]] with identifies = [\"workers\"]",
        });
    }
    Ok(())
}

/// What the gateway keeps on disk: the catalog store, and state in it.
struct Kept {
    store: Store,
    state: Arc<capgate_adapters::state::StateStore>,
    queues: Arc<capgate_adapters::queue::Queues>,
    telemetry: Arc<crate::telemetry::Telemetry>,
    rest: Arc<capgate_adapters::rest::Services>,
}

fn build_state(
    config: Config,
    workers: Workers,
    catalog: Arc<Catalog>,
    access: Arc<Access>,
    identities: Arc<Identities>,
    agents: Arc<Agents>,
    kept: Kept,
) -> Arc<GatewayState> {
    let Kept {
        store,
        state: state_store,
        queues,
        telemetry,
        rest,
    } = kept;
    let topics = Arc::new(capgate_adapters::queue::pubsub::Topics::default());
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let workers = Arc::new(workers);
    let http_routes = Arc::new(HttpRoutes::default());
    let triggers = Arc::new(capgate_adapters::builtin_triggers(
        capgate_adapters::Foundations {
            routes: http_routes.clone(),
            store: store.clone(),
            clock: Arc::new(capgate_adapters::cron::clock::SystemClock),
            instance: uuid::Uuid::new_v4().to_string(),
            state: state_store.clone(),
            queues: queues.clone(),
            topics: topics.clone(),
        },
    ));
    let path = Arc::new(InvocationPath::new(
        crate::builtins::BuiltinContext {
            catalog: catalog.clone(),
            workers: workers.clone(),
            access: access.clone(),
            triggers: triggers.clone(),
            state: state_store.clone(),
            queues: queues.clone(),
            topics,
            rest: rest.clone(),
        },
        agents,
        config.limits.call_timeout,
        crate::invocation::Limits {
            per_worker: config.limits.max_in_flight_per_worker,
            gateway: config.limits.max_in_flight,
        },
        telemetry,
    ));
    let trigger_services = TriggerServices {
        invoker: path.clone(),
        catalog: catalog.clone(),
        host: Arc::new(GatewayTriggerHost {
            access: access.clone(),
            workers: workers.clone(),
            identities: identities.clone(),
        }),
        shutdown: shutdown.clone(),
    };
    let worker = Arc::new(WorkerContext {
        config: config.clone(),
        catalog: catalog.clone(),
        workers: workers.clone(),
        access: access.clone(),
        path: path.clone(),
        triggers: triggers.clone(),
        trigger_services: trigger_services.clone(),
        queues: queues.clone(),
        rest: rest.clone(),
        shutdown: shutdown.clone(),
        slots: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_worker_connections,
        )),
        refusals: crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10)),
    });
    let mcp = Arc::new(McpState {
        config: config.clone(),
        tools: ToolCache::new(catalog.clone(), access.clone()),
        identities: identities.clone(),
        catalog: catalog.clone(),
        access: access.clone(),
        path: path.clone(),
        shutdown: shutdown.clone(),
        sessions: crate::mcp::sessions::Sessions::new(
            config.limits.mcp_session_idle,
            config.limits.mcp_session_resident,
        ),
        refusal_log: crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10)),
    });
    let admin = Arc::new(AdminState {
        config: config.clone(),
        catalog: catalog.clone(),
        workers: workers.clone(),
        triggers: triggers.clone(),
        trigger_services: trigger_services.clone(),
        store,
        state: state_store.clone(),
        queues: queues.clone(),
        rest,
        access: access.clone(),
        identities: identities.clone(),
        path: path.clone(),
        epoch: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        shutdown: shutdown.clone(),
    });
    Arc::new(GatewayState {
        config,
        catalog,
        workers,
        access,
        identities,
        path,
        triggers,
        http_routes,
        trigger_services,
        shutdown,
        worker,
        mcp,
        admin,
    })
}

fn router(state: Arc<GatewayState>) -> Router {
    let mcp = Router::new()
        .route("/mcp", any(mcp_endpoint))
        .route_layer(middleware::from_fn_with_state(
            state.mcp.clone(),
            authenticate,
        ))
        .with_state((state.mcp.clone(), Arc::new(mcp_service(state.mcp.clone()))));
    let metadata = Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(crate::mcp::auth::resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(crate::mcp::auth::resource_metadata),
        )
        .with_state(state.mcp.clone());
    Router::new()
        .route("/", get(worker_socket))
        .route("/ws", get(worker_socket))
        .route("/otel", get(telemetry_socket))
        .route("/healthz", get(health))
        .with_state(state.clone())
        .merge(metadata)
        .merge(mcp)
        .merge(crate::admin::router(state.admin.clone()))
        // A body dripped in must not hold its connection forever; the head
        // is timed by the server itself (http_server).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config.limits.http_body_timeout,
        ))
}

async fn worker_socket(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(refusal) = admit_local_client(&headers, &state.config) {
        return refusal.into_response();
    }
    let identity = match authenticate_worker(&state, &headers, &uri) {
        Ok(identity) => identity,
        Err(refusal) => return *refusal,
    };
    let Ok(upgrade) = upgrade else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "This is capgate's worker endpoint: connect with a WebSocket (ws://HOST:PORT/). Agents use MCP at /mcp.\n",
        )
            .into_response();
    };
    let Some(slot) = state.worker.take_slot() else {
        return worker_limit_reached(&state);
    };
    connection::configure(upgrade, &state.config.limits).on_upgrade(move |socket| async move {
        // A call's answer is queued on its caller's own connection from
        // inside that connection's task: absorbed, as for HTTP (`poll_again`).
        PollAgain::new(connection::serve(socket, state.worker.clone(), identity)).await;
        drop(slot);
    })
}

/// 503 for a worker connection beyond `max_worker_connections`.
fn worker_limit_reached(state: &GatewayState) -> Response {
    let limit = state.config.limits.max_worker_connections;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::RETRY_AFTER, "5")],
        format!(
            "capgate already serves {limit} worker connections (max_worker_connections); retry later, or raise the limit\n"
        ),
    )
        .into_response()
}

/// The `token` query parameter, percent-decoded.
fn token_param(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

/// The identity of a worker socket's upgrade request, or the 401 to answer.
fn authenticate_worker(
    state: &GatewayState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<WorkerIdentity, Box<Response>> {
    let token = uri.query().and_then(token_param);
    state
        .identities
        .worker(headers, token.as_deref())
        .map_err(|error| {
            tracing::warn!(%error, "worker connection refused");
            Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    [(http::header::WWW_AUTHENTICATE, "Bearer realm=\"capgate-workers\"")],
                    format!("{error}. Workers send their token as 'Authorization: Bearer TOKEN' or as ?token=TOKEN in the URL.\n"),
                )
                    .into_response(),
            )
        })
}

/// The iii SDKs' telemetry socket: authenticated as a worker, then drained.
async fn telemetry_socket(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(refusal) = admit_local_client(&headers, &state.config) {
        return refusal.into_response();
    }
    if let Err(refusal) = authenticate_worker(&state, &headers, &uri) {
        return *refusal;
    }
    let Some(slot) = state.worker.take_slot() else {
        return worker_limit_reached(&state);
    };
    connection::configure(upgrade, &state.config.limits).on_upgrade(move |socket| async move {
        connection::drain_telemetry(socket, state.worker.clone()).await;
        drop(slot);
    })
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

//! The `http` trigger: a route on the HTTP trigger listener that calls a
//! function.
//!
//! A worker (or configuration, or the admin API) registers
//! `{api_path, http_method}` as in iii; the listener ([`server`]) turns each
//! request into an invocation on the one path — as the trigger's owner, or
//! as the calling agent with `auth = "agent"` — and the function's result
//! into the response. The request's shape, the response rules and what
//! differs from iii are in docs/triggers.md.

pub mod request;
pub mod response;
pub mod routes;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use capgate_catalog::{Caller, TriggerSource};
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::triggers::{
    TriggerContext, TriggerError, TriggerKind, TriggerSpec, TriggerStats, check_condition,
    parse_config,
};
use routes::{Pattern, Route, Routes};

/// The trigger type workers register.
pub const TRIGGER_TYPE: &str = "http";

/// Routes one owner may hold.
pub const MAX_PER_OWNER: usize = 256;

/// What a route calls, and how.
#[derive(Debug)]
pub struct HttpTarget {
    pub function_id: String,
    /// The trigger's owner: calls are made as it unless `auth = "agent"`.
    pub owner: Caller,
    pub condition_function_id: Option<String>,
    pub input: InputMode,
    pub auth: AuthMode,
    pub cors: Option<Cors>,
    /// Recorded with every call the route makes.
    pub source: TriggerSource,
    pub stats: Arc<TriggerStats>,
    /// Tells a replaced registration's route from its successor's.
    generation: u64,
}

/// The routes the listener serves.
pub type HttpRoutes = Routes<HttpTarget>;

/// What the function receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// iii's request object (`method`, `path`, `path_params`,
    /// `query_params`, `headers`, `body`, `trigger`), with a JSON object
    /// body's fields also at the top level.
    #[default]
    Request,
    /// The JSON body merged with the query and path parameters: the input
    /// the function's schema describes.
    Body,
}

/// Whom the call is made as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The trigger's owner; the request needs no credentials.
    #[default]
    Owner,
    /// The agent whose bearer key or JWT the request carries (as for
    /// `/mcp`); without one the request is refused with 401.
    Agent,
}

/// Cross-origin access to a route from web pages: off unless configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins (`https://app.example.com`), or `["*"]` for any.
    pub origins: Vec<String>,
    /// Request headers a page may send besides the CORS-safelisted ones.
    #[serde(default)]
    pub headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(default)]
    pub max_age_s: Option<u64>,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for a request from `origin`, if
    /// it is allowed.
    pub fn allow(&self, origin: &str) -> Option<String> {
        if self.origins.iter().any(|allowed| allowed == "*") {
            Some("*".into())
        } else {
            self.origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
                .then(|| origin.to_owned())
        }
    }
}

/// `config` of an `http` trigger. iii's descriptive fields are accepted
/// and shown in listings; anything else is refused, so a misspelt key
/// cannot fall back to a default unnoticed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    api_path: String,
    #[serde(default)]
    http_method: Option<String>,
    #[serde(default)]
    condition_function_id: Option<String>,
    #[serde(default)]
    input: InputMode,
    #[serde(default)]
    auth: AuthMode,
    #[serde(default)]
    cors: Option<Cors>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Value>,
}

/// The kind, for the [`crate::triggers::Triggers`] registry; shares its
/// routes with the listener.
pub struct HttpTrigger {
    routes: Arc<HttpRoutes>,
    generations: AtomicU64,
}

impl HttpTrigger {
    pub fn new(routes: Arc<HttpRoutes>) -> Self {
        Self {
            routes,
            generations: AtomicU64::new(0),
        }
    }
}

fn invalid(reason: impl Into<String>) -> TriggerError {
    TriggerError::InvalidConfig {
        trigger_type: TRIGGER_TYPE,
        reason: reason.into(),
    }
}

impl TriggerKind for HttpTrigger {
    fn trigger_type(&self) -> &'static str {
        TRIGGER_TYPE
    }

    fn description(&self) -> &'static str {
        "Calls the function for each HTTP request to a route on the HTTP trigger listener"
    }

    fn limit_per_owner(&self) -> usize {
        MAX_PER_OWNER
    }

    fn start(
        &self,
        spec: &TriggerSpec,
        context: TriggerContext,
    ) -> Result<JoinHandle<()>, TriggerError> {
        let config: HttpConfig = parse_config(
            TRIGGER_TYPE,
            &spec.config,
            "api_path, http_method, condition_function_id, input (\"request\" or \"body\"), auth (\"owner\" or \"agent\") and cors",
        )?;
        let pattern = Pattern::parse(&config.api_path).map_err(invalid)?;
        let method_name = config
            .http_method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method = http::Method::from_bytes(method_name.as_bytes())
            .map_err(|_| invalid(format!("http_method '{method_name}' is not an HTTP method; use GET, POST, PUT, PATCH or DELETE")))?;
        check_condition(TRIGGER_TYPE, config.condition_function_id.as_deref())?;
        if let Some(cors) = &config.cors
            && cors.origins.is_empty()
        {
            return Err(invalid(
                "cors.origins is empty; list the web origins allowed (or [\"*\"])",
            ));
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let holder = (spec.owner_key.clone(), spec.id.clone());
        self.routes
            .insert(Route {
                method,
                pattern,
                holder: holder.clone(),
                label: spec.owner.to_string(),
                identity: spec.owner.subject().into_owned(),
                target: HttpTarget {
                    function_id: spec.function_id.clone(),
                    owner: context.owner.clone(),
                    condition_function_id: config.condition_function_id,
                    input: config.input,
                    auth: config.auth,
                    cors: config.cors,
                    source: context.source.clone(),
                    stats: context.stats.clone(),
                    generation,
                },
            })
            .map_err(|error| TriggerError::Refused(error.to_string()))?;
        let routes = self.routes.clone();
        Ok(tokio::spawn(async move {
            context.stop.cancelled().await;
            routes.remove_if(&holder, |target| target.generation == generation);
        }))
    }
}

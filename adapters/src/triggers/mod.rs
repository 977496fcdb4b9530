//! The trigger interface and the registry of running triggers.
//!
//! A trigger kind is a module with a config and a [`TriggerKind::start`]
//! that takes a [`TriggerContext`] and yields a running task turning events
//! into invocations on the one path. Kinds are looked up by trigger type in
//! [`Triggers`]; whoever registers a trigger (a worker's `registertrigger`,
//! configuration, the admin API) goes through [`Triggers::register`], after
//! the policy has allowed `trigger` on the function.

pub mod fanout;
pub mod fire;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use capgate_catalog::{
    Caller, Catalog, FunctionId, InvocationError, Invoker, ProviderId, TriggerSource,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the gateway lends a trigger beyond the invoker: answers that need
/// the policy or the live connections, which adapters do not know.
pub trait TriggerHost: Send + Sync + 'static {
    /// Whether `caller` may see `function_id` in listings.
    fn may_list(&self, caller: &Caller, function_id: &str) -> bool;
    /// The name a provider's worker gave itself, if it is connected.
    fn provider_name(&self, provider: ProviderId) -> Option<String>;
    /// The agent a request's credentials identify (as for `/mcp`), or why
    /// they identify none.
    fn agent(&self, headers: &http::HeaderMap) -> Result<Caller, String>;
    /// The error code peers know a failed call by.
    fn error_code(&self, error: &InvocationError) -> String;
    /// Whether `caller` may read the state scope `scope` (a `state`
    /// trigger delivers only the changes its owner may read).
    fn may_read_state(&self, caller: &Caller, scope: &str) -> bool;
    /// Whether `caller` may take the messages of `topic` (policy object
    /// `queue::TOPIC`, action `read`).
    fn may_consume(&self, caller: &Caller, topic: &str) -> bool;
}

/// What every trigger needs from the gateway, shared by all of them.
#[derive(Clone)]
pub struct TriggerServices {
    /// The one invocation path.
    pub invoker: Arc<dyn Invoker>,
    /// The catalog, for its change feed and listings.
    pub catalog: Arc<Catalog>,
    pub host: Arc<dyn TriggerHost>,
    /// Cancelled when the gateway shuts down; every trigger stops then.
    pub shutdown: CancellationToken,
}

/// What one running trigger is given.
pub struct TriggerContext {
    pub services: TriggerServices,
    /// Who registered the trigger: its calls are made as this caller.
    pub owner: Caller,
    /// Cancelled when the trigger is unregistered, its owner leaves or the
    /// gateway shuts down.
    pub stop: CancellationToken,
    /// Set as the source of every call it makes (audited with the call).
    pub source: TriggerSource,
    /// Where it counts its calls, for listings.
    pub stats: Arc<TriggerStats>,
}

/// A trigger's calls so far, as listings show them.
#[derive(Debug, Default)]
pub struct TriggerStats {
    fires: AtomicU64,
    failures: AtomicU64,
    /// Unix milliseconds of the last call; 0 before the first.
    last_fire_ms: AtomicI64,
    /// Events the trigger lost because it fell behind (its queue was full).
    pub dropped: Arc<AtomicU64>,
}

impl TriggerStats {
    /// Counts one call the trigger made, and whether it failed.
    pub fn fired(&self, failed: bool) {
        self.fires.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.last_fire_ms.store(now, Ordering::Relaxed);
    }

    fn describe(&self) -> Value {
        let last = self.last_fire_ms.load(Ordering::Relaxed);
        json!({
            "fires": self.fires.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "last_fire_ms": (last > 0).then_some(last),
            "dropped": self.dropped.load(Ordering::Relaxed),
        })
    }
}

/// A trigger as registered.
#[derive(Debug, Clone)]
pub struct TriggerSpec {
    /// The id its owner chose, unique per owner.
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    pub config: Value,
    /// Its calls are made as this caller.
    pub owner: Caller,
    /// Groups an owner's triggers: a worker connection's id, or the
    /// identity that registered it through configuration or the admin API.
    pub owner_key: String,
    /// Shown in listings (a worker's name).
    pub owner_name: Option<String>,
}

/// Why a trigger was not started. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error(
        "trigger type '{trigger_type}' is not supported by this capgate (supported: {supported}); the function itself is registered and callable"
    )]
    UnknownType {
        trigger_type: String,
        supported: String,
    },
    #[error("the trigger's function '{function_id}' is not a function id: {reason}")]
    BadFunction { function_id: String, reason: String },
    #[error("an owner may hold at most {limit} {trigger_type} triggers; unregister one first")]
    TooMany {
        trigger_type: &'static str,
        limit: usize,
    },
    #[error("the {trigger_type} trigger's config is invalid: {reason}")]
    InvalidConfig {
        trigger_type: &'static str,
        reason: String,
    },
    /// The kind refused it for a reason of its own, said in full.
    #[error("{0}")]
    Refused(String),
}

/// Reads a kind's config; one that does not parse is refused saying what
/// was wrong and which keys the kind takes (`takes`).
pub fn parse_config<T: serde::de::DeserializeOwned>(
    trigger_type: &'static str,
    config: &Value,
    takes: &str,
) -> Result<T, TriggerError> {
    T::deserialize(config).map_err(|error| TriggerError::InvalidConfig {
        trigger_type,
        reason: format!("{error}; it takes {takes}"),
    })
}

/// Checks iii's `condition_function_id`, which every kind takes.
pub fn check_condition(
    trigger_type: &'static str,
    condition: Option<&str>,
) -> Result<(), TriggerError> {
    match condition {
        Some(condition) => {
            FunctionId::parse(condition)
                .map(drop)
                .map_err(|error| TriggerError::InvalidConfig {
                    trigger_type,
                    reason: format!(
                        "condition_function_id '{condition}' is not a function id: {error}"
                    ),
                })
        }
        None => Ok(()),
    }
}

/// A kind of trigger: turns a config into a running task.
pub trait TriggerKind: Send + Sync + 'static {
    /// The type workers and configuration name it by.
    fn trigger_type(&self) -> &'static str;
    /// One line for `engine::triggers::list`.
    fn description(&self) -> &'static str;
    /// How many triggers of this kind one owner may hold (each is a task).
    fn limit_per_owner(&self) -> usize;
    /// Checks the config and starts the trigger's task. The task ends when
    /// `context.stop` is cancelled.
    fn start(
        &self,
        spec: &TriggerSpec,
        context: TriggerContext,
    ) -> Result<JoinHandle<()>, TriggerError>;
}

/// A trigger that is running.
struct Running {
    spec: TriggerSpec,
    stop: CancellationToken,
    stats: Arc<TriggerStats>,
}

/// The trigger kinds this gateway knows, and every running trigger.
pub struct Triggers {
    kinds: HashMap<&'static str, Arc<dyn TriggerKind>>,
    running: Mutex<HashMap<(String, String), Running>>,
}

impl Triggers {
    pub fn new(kinds: Vec<Arc<dyn TriggerKind>>) -> Self {
        Self {
            kinds: kinds
                .into_iter()
                .map(|kind| (kind.trigger_type(), kind))
                .collect(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a trigger, replacing the owner's trigger of the same id.
    pub fn register(
        &self,
        spec: TriggerSpec,
        services: &TriggerServices,
    ) -> Result<(), TriggerError> {
        let Some(kind) = self.kinds.get(spec.trigger_type.as_str()) else {
            let mut supported: Vec<&str> = self.kinds.keys().copied().collect();
            supported.sort_unstable();
            return Err(TriggerError::UnknownType {
                trigger_type: spec.trigger_type.clone(),
                supported: supported.join(", "),
            });
        };
        FunctionId::parse(&spec.function_id).map_err(|error| TriggerError::BadFunction {
            function_id: spec.function_id.clone(),
            reason: error.to_string(),
        })?;
        let key = (spec.owner_key.clone(), spec.id.clone());
        let mut running = self.lock();
        let held = running
            .iter()
            .filter(|((owner, id), r)| {
                *owner == key.0 && *id != key.1 && r.spec.trigger_type == spec.trigger_type
            })
            .count();
        let limit = kind.limit_per_owner();
        if held >= limit {
            return Err(TriggerError::TooMany {
                trigger_type: kind.trigger_type(),
                limit,
            });
        }
        let stop = services.shutdown.child_token();
        let stats = Arc::new(TriggerStats::default());
        let context = TriggerContext {
            services: services.clone(),
            owner: spec.owner.clone(),
            stop: stop.clone(),
            source: TriggerSource {
                trigger_type: kind.trigger_type().into(),
                trigger_id: spec.id.as_str().into(),
            },
            stats: stats.clone(),
        };
        // Started while the registry is locked: a change that follows the
        // registration cannot be missed, and a concurrent replacement of the
        // same id cannot leave two tasks running.
        kind.start(&spec, context)?;
        if let Some(previous) = running.insert(key, Running { spec, stop, stats }) {
            previous.stop.cancel();
        }
        Ok(())
    }

    /// Stops one trigger; false if the owner had none by that id.
    pub fn unregister(&self, owner_key: &str, id: &str) -> bool {
        match self.lock().remove(&(owner_key.to_owned(), id.to_owned())) {
            Some(running) => {
                running.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Moves an owner's triggers to another key, running on: a worker that
    /// reattached on a new connection keeps them, as it keeps its
    /// functions, and its replay then replaces each in place.
    pub fn transfer_owner(&self, from: &str, to: &str) {
        let mut running = self.lock();
        let moving: Vec<(String, String)> = running
            .keys()
            .filter(|(owner, _)| owner == from)
            .cloned()
            .collect();
        for key in moving {
            if let Some(mut trigger) = running.remove(&key) {
                trigger.spec.owner_key = to.to_owned();
                let moved = (to.to_owned(), key.1);
                if let Some(displaced) = running.insert(moved, trigger) {
                    displaced.stop.cancel();
                }
            }
        }
    }

    /// Stops every trigger of an owner that left.
    pub fn forget_owner(&self, owner_key: &str) {
        self.lock().retain(|(owner, _), running| {
            let keep = owner != owner_key;
            if !keep {
                running.stop.cancel();
            }
            keep
        });
    }

    /// The supported trigger types, as `engine::triggers::list` shows them.
    pub fn describe_types(&self) -> Vec<Value> {
        let mut kinds: Vec<&Arc<dyn TriggerKind>> = self.kinds.values().collect();
        kinds.sort_by_key(|kind| kind.trigger_type());
        kinds
            .into_iter()
            .map(|kind| {
                json!({
                    "id": kind.trigger_type(),
                    "description": kind.description(),
                    "namespace": "default",
                    "worker_name": "capgate",
                })
            })
            .collect()
    }

    /// The running triggers, as `engine::registered-triggers::list` and
    /// `GET /api/v1/triggers` show them: with their owner and how many
    /// calls they made, how many failed, and when the last was.
    pub fn describe(&self) -> Vec<Value> {
        let mut rows: Vec<Value> = self
            .lock()
            .values()
            .map(|Running { spec, stats, .. }| {
                let mut row = json!({
                    "id": spec.id,
                    "trigger_type": spec.trigger_type,
                    "function_id": spec.function_id,
                    "config": spec.config,
                    "config_summary": spec.config.to_string(),
                    "worker_name": spec.owner_name,
                    "owner": spec.owner.subject(),
                    "owner_key": spec.owner_key,
                });
                if let (Value::Object(row), Value::Object(counts)) = (&mut row, stats.describe()) {
                    row.extend(counts);
                }
                row
            })
            .collect();
        rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        rows
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

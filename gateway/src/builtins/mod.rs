//! The `engine::*` functions the gateway answers itself. They are a dispatch
//! target of the invocation path like any worker, after resolution and
//! authorization; their answers follow the iii engine's shapes, with
//! capgate's fields (version, definition hash, providers) beside them.

use capgate_catalog::{Caller, Invocation, InvocationError};
use capgate_policies::Action;
use capgate_protocol::{builtins as names, codes};
use serde_json::{Value, json};

use std::sync::Arc;

use capgate_adapters::triggers::Triggers;
use capgate_catalog::Catalog;

pub mod queue;
pub mod state;

use capgate_adapters::queue::{Queues, pubsub::Topics};
use capgate_adapters::state::StateStore;

use crate::access::Access;
use crate::workers::Workers;
use crate::workers::registry::WorkerInfo;

/// What built-ins read: narrower than the invocation path that calls them.
pub struct BuiltinContext {
    pub catalog: Arc<Catalog>,
    pub workers: Arc<Workers>,
    pub access: Arc<Access>,
    pub triggers: Arc<Triggers>,
    pub state: Arc<StateStore>,
    pub queues: Arc<Queues>,
    pub topics: Arc<Topics>,
    /// REST services: a call resolved to one is sent upstream.
    pub rest: Arc<capgate_adapters::rest::Services>,
}

/// A function the gateway provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    WorkersRegister,
    WorkersList,
    FunctionsList,
    FunctionsInfo,
    TriggersList,
    RegisteredTriggersList,
    ChannelsCreate,
    State(state::StateCall),
    Queue(queue::QueueCall),
}

impl Builtin {
    pub fn named(function_id: &str) -> Option<Self> {
        Some(match function_id {
            names::WORKERS_REGISTER => Self::WorkersRegister,
            names::WORKERS_LIST => Self::WorkersList,
            names::FUNCTIONS_LIST => Self::FunctionsList,
            names::FUNCTIONS_INFO => Self::FunctionsInfo,
            names::TRIGGERS_LIST => Self::TriggersList,
            names::REGISTERED_TRIGGERS_LIST => Self::RegisteredTriggersList,
            names::CHANNELS_CREATE => Self::ChannelsCreate,
            other => match state::StateCall::named(other) {
                Some(call) => Self::State(call),
                None => Self::Queue(queue::QueueCall::named(other)?),
            },
        })
    }

    /// Whether a worker's call to it is answered before the worker's next
    /// frame is read. State and queue calls are not: they wait for a
    /// writer's commit, and run beside the worker's other calls as calls to
    /// workers do (a caller that needs to read its own write awaits the
    /// write's answer first, as it would with iii).
    pub fn runs_in_line(self) -> bool {
        !matches!(self, Self::State(_) | Self::Queue(_))
    }

    /// Part of the worker protocol itself (a worker describing itself on
    /// connect): answered for every worker, whatever the policy says.
    pub fn is_plumbing(self) -> bool {
        self == Self::WorkersRegister
    }
}

pub(crate) async fn call(
    path: &BuiltinContext,
    builtin: Builtin,
    invocation: &Invocation,
) -> Result<Value, InvocationError> {
    // Built-ins read their input: parsed here, once.
    let input = invocation
        .input
        .to_value()
        .map_err(|error| invalid(&invocation.function_id, error.to_string()))?;
    match builtin {
        Builtin::WorkersRegister => register_worker(path, invocation, &input),
        Builtin::WorkersList => Ok(list_workers(path)),
        Builtin::FunctionsList => Ok(list_functions(path, invocation, &input)),
        Builtin::FunctionsInfo => function_info(path, invocation, &input),
        Builtin::TriggersList => Ok(json!({ "triggers": path.triggers.describe_types() })),
        Builtin::RegisteredTriggersList => {
            Ok(json!({ "registered_triggers": path.triggers.describe() }))
        }
        Builtin::State(call) => state::call(path, call, invocation, &input).await,
        Builtin::Queue(call) => queue::call(path, call, invocation, &input).await,
        Builtin::ChannelsCreate => Err(InvocationError::Failed {
            code: codes::INVOCATION_FAILED.into(),
            message: "engine::channels::create: streaming channels are not supported by capgate yet; send the body in the invocation's data instead".into(),
            stacktrace: None,
        }),
    }
}

fn invalid(function: &str, message: impl Into<String>) -> InvocationError {
    InvocationError::InvalidInput {
        function: function.to_owned(),
        violations: message.into(),
    }
}

fn failed(code: &str, message: String) -> InvocationError {
    InvocationError::Failed {
        code: code.into(),
        message,
        stacktrace: None,
    }
}

fn text<'a>(function: &str, input: &'a Value, field: &str) -> Result<&'a str, InvocationError> {
    input
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(function, format!("'{field}' is missing or not a string")))
}

/// Whether `caller` may `action` the `object` a built-in works on; a
/// refusal is audited as `kind` with `detail`, and answered once its audit
/// entry is kept, as every refusal is (docs/reliability.md), naming the
/// rule to ask for.
async fn require(
    path: &BuiltinContext,
    caller: &Caller,
    action: Action,
    object: &str,
    (kind, detail): (&'static str, Value),
) -> Result<(), InvocationError> {
    let decision = path.access.decide(caller, action, object);
    if decision.allowed {
        return Ok(());
    }
    path.access
        .record(kind, caller, action.as_str(), object, &decision, detail);
    if let Err(error) = crate::durability::settle(&path.catalog, &path.access.audit).await {
        return Err(failed("store_unavailable", error.to_string()));
    }
    Err(InvocationError::Failed {
        code: "forbidden".into(),
        message: format!(
            "{} may not {action} {object} (policy: {}); ask for a '{action}' rule on {object}",
            caller.subject(),
            decision.rule,
        ),
        stacktrace: None,
    })
}

fn register_worker(
    path: &BuiltinContext,
    invocation: &Invocation,
    data: &Value,
) -> Result<Value, InvocationError> {
    let Caller::Worker { worker_id, .. } = &invocation.caller else {
        return Err(invalid(
            names::WORKERS_REGISTER,
            "only a connected worker can describe itself",
        ));
    };
    let Some(worker) = path.workers.by_worker_id(worker_id) else {
        return Err(InvocationError::Stopped {
            function: names::WORKERS_REGISTER.into(),
        });
    };
    let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
    worker.set_info(WorkerInfo {
        name: text("name"),
        runtime: text("runtime"),
        version: text("version"),
        pid: data.get("pid").and_then(Value::as_u64),
        features: data
            .get("features")
            .and_then(Value::as_array)
            .map(|features| {
                features
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    });
    Ok(Value::Null)
}

fn list_workers(path: &BuiltinContext) -> Value {
    json!({ "workers": path.workers.describe_all() })
}

/// What the caller may list, as the iii engine lists it.
fn list_functions(path: &BuiltinContext, invocation: &Invocation, input: &Value) -> Value {
    let search = input
        .get("search")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let prefix = input.get("prefix").and_then(Value::as_str);
    let functions: Vec<Value> = path
        .catalog
        .live()
        .into_iter()
        .filter(|c| prefix.is_none_or(|p| c.id().as_str().starts_with(p)))
        .filter(|c| may_list(path, invocation, c.id().as_str()))
        .filter(|c| {
            search.as_deref().is_none_or(|needle| {
                c.id().as_str().contains(needle)
                    || c.definition()
                        .description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(needle))
            })
        })
        .map(|c| {
            json!({
                "function_id": c.id(),
                "description": c.definition().description,
                "version": c.version().to_string(),
                "definition_hash": c.hash().to_string(),
            })
        })
        .collect();
    json!({ "functions": functions })
}

/// Whether `caller` may `action` the `object` (no audit entry: a read
/// the policy denies answers like nothing there).
fn allowed(path: &BuiltinContext, caller: &Caller, action: Action, object: &str) -> bool {
    path.access.decide(caller, action, object).allowed
}

fn may_list(path: &BuiltinContext, invocation: &Invocation, id: &str) -> bool {
    path.access
        .decide(&invocation.caller, Action::List, id)
        .allowed
}

/// A function's schemas; one the caller may not list reads as unknown.
fn function_info(
    path: &BuiltinContext,
    invocation: &Invocation,
    input: &Value,
) -> Result<Value, InvocationError> {
    let describe = |id: &str| -> Result<Value, InvocationError> {
        if !may_list(path, invocation, id) {
            return Err(InvocationError::not_found(id));
        }
        let resolved = path.catalog.resolve(id, None)?;
        let c = &resolved.capability;
        Ok(json!({
            "function_id": c.id(),
            "description": c.definition().description,
            "request_schema": c.definition().input_schema,
            "response_schema": c.definition().output_schema,
            "metadata": c.definition().metadata,
            "version": c.version().to_string(),
            "definition_hash": c.hash().to_string(),
        }))
    };
    if let Some(id) = input.get("function_id").and_then(Value::as_str) {
        return describe(id);
    }
    if let Some(ids) = input.get("function_ids").and_then(Value::as_array) {
        let infos: Result<Vec<Value>, _> =
            ids.iter().filter_map(Value::as_str).map(describe).collect();
        return Ok(json!({ "functions": infos? }));
    }
    Err(invalid(
        names::FUNCTIONS_INFO,
        "expected {\"function_id\": ID} or {\"function_ids\": [ID, ...]}",
    ))
}

//! The `state::*` built-ins: iii's names and inputs on the one path, with
//! each scope's policy — `read` or `write` on `state::SCOPE`. A read the
//! policy denies answers like an absent value (or scope); a write it denies
//! is refused, naming the rule to ask for.

use capgate_adapters::state::{Change, StateError, Written};
use capgate_catalog::{Caller, Invocation, InvocationError};
use capgate_policies::Action;
use capgate_protocol::builtins as names;
use serde_json::{Value, json};

use super::{BuiltinContext, failed, invalid, text};

/// Which state built-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCall {
    Set,
    Get,
    Delete,
    Update,
    List,
    ListGroups,
}

impl StateCall {
    pub fn named(function_id: &str) -> Option<Self> {
        Some(match function_id {
            names::STATE_SET => Self::Set,
            names::STATE_GET => Self::Get,
            names::STATE_DELETE => Self::Delete,
            names::STATE_UPDATE => Self::Update,
            names::STATE_LIST => Self::List,
            names::STATE_LIST_GROUPS => Self::ListGroups,
            _ => return None,
        })
    }
}

/// The policy object of a scope.
pub fn scope_object(scope: &str) -> String {
    format!("state::{scope}")
}

/// Whether `caller` may `action` the scope.
pub fn may(path: &BuiltinContext, caller: &Caller, action: Action, scope: &str) -> bool {
    super::allowed(path, caller, action, &scope_object(scope))
}

pub(super) async fn call(
    path: &BuiltinContext,
    call: StateCall,
    invocation: &Invocation,
    input: &Value,
) -> Result<Value, InvocationError> {
    let function = invocation.function_id.as_str();
    let caller = &invocation.caller;
    let refused = |error: StateError| state_error(function, error);
    if call == StateCall::ListGroups {
        let scopes = path.state.scopes().await.map_err(refused)?;
        let groups: Vec<Value> = scopes
            .into_iter()
            .filter(|(scope, _)| may(path, caller, Action::Read, scope))
            .map(|(scope, count)| json!({"scope": scope, "count": count}))
            .collect();
        return Ok(Value::Array(groups));
    }
    let scope = text(function, input, "scope")?;
    if call == StateCall::List {
        if !may(path, caller, Action::Read, scope) {
            return Ok(Value::Array(Vec::new()));
        }
        return path
            .state
            .list(scope)
            .await
            .map(Value::Array)
            .map_err(refused);
    }
    let key = text(function, input, "key")?;
    if call == StateCall::Get {
        if !may(path, caller, Action::Read, scope) {
            return Ok(Value::Null);
        }
        return path
            .state
            .get(scope, key)
            .await
            .map(Option::unwrap_or_default)
            .map_err(refused);
    }
    super::require(
        path,
        caller,
        Action::Write,
        &scope_object(scope),
        ("state", json!({"function": function, "key": key})),
    )
    .await?;
    let change = match call {
        StateCall::Set => Change::Set(
            input
                .get("value")
                .or_else(|| input.get("data"))
                .cloned()
                .ok_or_else(|| {
                    invalid(function, "it takes {scope, key, value}; value is missing")
                })?,
        ),
        StateCall::Delete => Change::Delete,
        StateCall::Update => {
            let ops = input
                .get("ops")
                .ok_or_else(|| invalid(function, "it takes {scope, key, ops}; ops is missing"))?;
            Change::Update(serde_json::from_value(ops.clone()).map_err(|error| {
                invalid(
                    function,
                    format!("ops is not a list of update operations: {error}; each is {{type: set|merge|increment|decrement|append|remove, path, value|by}}"),
                )
            })?)
        }
        StateCall::Get | StateCall::List | StateCall::ListGroups => {
            return Err(invalid(function, "not a state write"));
        }
    };
    let written = path
        .state
        .write(scope, key, change)
        .await
        .map_err(refused)?;
    Ok(match call {
        StateCall::Delete => json!({"old_value": written.old_value}),
        _ => Written::to_json(&written),
    })
}

fn state_error(function: &str, error: StateError) -> InvocationError {
    match error {
        StateError::Invalid(_) | StateError::TooLarge { .. } => {
            invalid(function, error.to_string())
        }
        StateError::Busy { limit } => InvocationError::Overloaded {
            function: function.to_owned(),
            scope: "the state writer",
            limit,
        },
        StateError::Full { .. } => failed("state_full", error.to_string()),
        StateError::TooManyToList { .. } => failed("state_list_too_large", error.to_string()),
        StateError::Store(_) => failed("store_unavailable", error.to_string()),
    }
}

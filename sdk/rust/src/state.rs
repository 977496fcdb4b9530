//! State through the gateway's `state::*` functions: the same path, policy
//! and audit as any call. `worker.state()` reads and writes; values are
//! JSON.

use serde_json::{Value, json};

use crate::worker::{CallError, Worker};

/// A worker's handle on the gateway's state.
pub struct State<'a> {
    worker: &'a Worker,
}

/// What a write changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
}

impl Worker {
    /// State in the gateway: `state().set("orders", "o-1", json!({...}))`.
    pub fn state(&self) -> State<'_> {
        State { worker: self }
    }
}

impl State<'_> {
    /// The value at `scope`/`key`; `None` if there is none (or the
    /// policy lets this worker read nothing there).
    pub async fn get(&self, scope: &str, key: &str) -> Result<Option<Value>, CallError> {
        let value = self
            .worker
            .call("state::get", json!({"scope": scope, "key": key}))
            .await?;
        Ok((!value.is_null()).then_some(value))
    }

    /// Sets a value; answered once it is stored.
    pub async fn set(&self, scope: &str, key: &str, value: Value) -> Result<Change, CallError> {
        let answer = self
            .worker
            .call(
                "state::set",
                json!({"scope": scope, "key": key, "value": value}),
            )
            .await?;
        Ok(change(&answer))
    }

    /// Applies iii's update operations atomically
    /// (`[{"type": "increment", "path": "n", "by": 1}]`).
    pub async fn update(&self, scope: &str, key: &str, ops: Value) -> Result<Change, CallError> {
        let answer = self
            .worker
            .call(
                "state::update",
                json!({"scope": scope, "key": key, "ops": ops}),
            )
            .await?;
        Ok(change(&answer))
    }

    /// Deletes a value; the value it had, if any.
    pub async fn delete(&self, scope: &str, key: &str) -> Result<Option<Value>, CallError> {
        let answer = self
            .worker
            .call("state::delete", json!({"scope": scope, "key": key}))
            .await?;
        Ok(present(&answer["old_value"]))
    }

    /// The scope's `(key, value)` pairs, by key.
    pub async fn list(&self, scope: &str) -> Result<Vec<(String, Value)>, CallError> {
        let answer = self
            .worker
            .call("state::list", json!({"scope": scope}))
            .await?;
        Ok(answer
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| Some((entry["key"].as_str()?.to_owned(), entry["value"].clone())))
            .collect())
    }
}

fn present(value: &Value) -> Option<Value> {
    (!value.is_null()).then(|| value.clone())
}

fn change(answer: &Value) -> Change {
    Change {
        old_value: present(&answer["old_value"]),
        new_value: present(&answer["new_value"]),
    }
}

//! Test fixtures for trigger kinds: a registry's services around a real
//! catalog store, with an invoker that records what it is asked to call.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use capgate_catalog::store::Store;
use capgate_catalog::{Caller, Catalog, Invocation, InvocationError, Invoker, ProviderId};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{TriggerHost, TriggerServices, TriggerSpec};

/// How a [`Recorder`] answers a call to a function id.
type Answer = Box<dyn Fn(&str) -> Result<Value, InvocationError> + Send + Sync>;

/// Records every invocation; answers each with `answer(function_id)`.
pub struct Recorder {
    calls: Mutex<Vec<Invocation>>,
    arrived: Notify,
    answer: Answer,
}

impl Recorder {
    pub fn answering(
        answer: impl Fn(&str) -> Result<Value, InvocationError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            answer: Box::new(answer),
        })
    }

    /// The inputs of the calls to `function_id` so far.
    pub fn inputs(&self, function_id: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|call| call.function_id == function_id)
            .map(|call| {
                call.input
                    .to_value()
                    .map(|v| v.into_owned())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }

    /// Waits until `count` calls to `function_id` were made (a generous
    /// bound only catches a hang) and returns their inputs.
    pub async fn wait_for(&self, function_id: &str, count: usize) -> Vec<Value> {
        let waiting = async {
            loop {
                let notified = self.arrived.notified();
                let inputs = self.inputs(function_id);
                if inputs.len() >= count {
                    return inputs;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await {
            Ok(inputs) => inputs,
            Err(_) => panic!(
                "{function_id} was called {} times, not {count}",
                self.inputs(function_id).len()
            ),
        }
    }
}

impl Invoker for Recorder {
    fn invoke(
        &self,
        invocation: Invocation,
    ) -> Pin<Box<dyn Future<Output = Result<Value, InvocationError>> + Send + '_>> {
        let answer = (self.answer)(&invocation.function_id);
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(invocation);
        self.arrived.notify_waiters();
        Box::pin(async move { answer })
    }
}

struct NoHost;

impl TriggerHost for NoHost {
    fn may_list(&self, _: &Caller, _: &str) -> bool {
        true
    }
    fn provider_name(&self, _: ProviderId) -> Option<String> {
        None
    }
    fn agent(&self, _: &http::HeaderMap) -> Result<Caller, String> {
        Err("no agents in this test".into())
    }
    fn error_code(&self, error: &InvocationError) -> String {
        error.to_string()
    }
    fn may_read_state(&self, _: &Caller, scope: &str) -> bool {
        scope != "secret"
    }

    fn may_consume(&self, _: &Caller, topic: &str) -> bool {
        topic != "secret"
    }
}

/// Services around `store`'s catalog, calling through `invoker`.
pub async fn services(store: &Store, invoker: Arc<Recorder>) -> TriggerServices {
    TriggerServices {
        invoker,
        catalog: Arc::new(Catalog::open(store.clone()).await.expect("open catalog")),
        host: Arc::new(NoHost),
        shutdown: CancellationToken::new(),
    }
}

/// A trigger owned by the agent `ops`.
pub fn spec(trigger_type: &str, id: &str, function_id: &str, config: Value) -> TriggerSpec {
    TriggerSpec {
        id: id.into(),
        trigger_type: trigger_type.into(),
        function_id: function_id.into(),
        config,
        owner: Caller::Agent {
            name: "ops".into(),
            tenant: None,
        },
        owner_key: "agent:ops".into(),
        owner_name: None,
    }
}

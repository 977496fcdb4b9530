//! Functions a worker provides, and what their handlers receive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use capgate_protocol::{ErrorBody, RegisterFunction, codes};
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use tokio_util::sync::CancellationToken;

use crate::worker::Worker;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Handler =
    Arc<dyn Fn(Value, Context) -> BoxFuture<Result<Value, HandlerError>> + Send + Sync>;

/// What a handler learns about the call besides its input.
#[derive(Clone)]
pub struct Context {
    pub invocation_id: String,
    pub function_id: String,
    /// The worker that made the call, when a worker made it.
    pub caller_worker_id: Option<String>,
    pub traceparent: Option<String>,
    /// The worker running the handler, to call other functions.
    pub worker: Worker,
    /// Cancelled when the gateway says the caller gave up (it cancelled,
    /// disconnected or passed its deadline): stop work nobody will read.
    pub(crate) cancellation: CancellationToken,
}

impl Context {
    /// Resolves when the call is cancelled; `select!` on it beside the work.
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }
}

/// A handler's failure, reported to the caller as `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    pub code: String,
    pub message: String,
}

impl HandlerError {
    /// An `invocation_failed` error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: codes::INVOCATION_FAILED.into(),
            message: message.into(),
        }
    }

    pub fn with_code(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    pub(crate) fn into_body(self) -> ErrorBody {
        ErrorBody::new(self.code, self.message)
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// A function to register: its definition and its handler.
#[derive(Clone)]
pub struct Function {
    pub(crate) frame: RegisterFunction,
    pub(crate) handler: Option<Handler>,
}

impl Function {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            frame: RegisterFunction {
                id: id.into(),
                ..Default::default()
            },
            handler: None,
        }
    }

    /// A function whose input and output schemas come from Rust types.
    pub fn typed<I, O, F, Fut>(id: impl Into<String>, handler: F) -> Self
    where
        I: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + 'static,
        F: Fn(I, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Self::new(id)
            .input_schema(schema_of::<I>())
            .output_schema(schema_of::<O>())
            .handler(move |input, ctx| {
                let handler = handler.clone();
                async move {
                    let input: I = serde_json::from_value(input).map_err(|e| {
                        HandlerError::with_code(codes::INVALID_ARGUMENTS, e.to_string())
                    })?;
                    let output = handler(input, ctx).await?;
                    serde_json::to_value(output).map_err(|e| HandlerError::new(e.to_string()))
                }
            })
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.frame.description = Some(text.into());
        self
    }

    pub fn title(mut self, text: impl Into<String>) -> Self {
        self.frame.title = Some(text.into());
        self
    }

    /// A semver version such as `1.2.0`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.frame.version = Some(version.into());
        self
    }

    pub fn input_schema(mut self, schema: Value) -> Self {
        self.frame.request_format = Some(schema);
        self
    }

    pub fn output_schema(mut self, schema: Value) -> Self {
        self.frame.response_format = Some(schema);
        self
    }

    /// The function's own deadline for calls to it.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.frame.timeout_ms = Some(Value::from(ms));
        self
    }

    /// The team that owns the function.
    pub fn owner(mut self, team: impl Into<String>) -> Self {
        self.frame.owner = Some(serde_json::json!({ "team": team.into() }));
        self
    }

    pub fn tags(mut self, tags: Vec<String>) -> Self {
        self.frame.tags = Some(Value::from(tags));
        self
    }

    /// MCP annotations such as `{"readOnlyHint": true}`.
    pub fn annotations(mut self, annotations: Value) -> Self {
        self.frame.annotations = Some(annotations);
        self
    }

    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Value, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
    {
        self.handler = Some(Arc::new(move |input, ctx| Box::pin(handler(input, ctx))));
        self
    }

    /// `id@version` (or the id alone when no version is set): what the
    /// worker keeps its handlers under.
    pub(crate) fn key(&self) -> String {
        handler_key(self.id(), self.frame.version.as_deref())
    }

    pub fn id(&self) -> &str {
        &self.frame.id
    }
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Bool(true))
}

/// The key of a handler for `id` at an exact `version`.
pub(crate) fn handler_key(id: &str, version: Option<&str>) -> String {
    match version {
        Some(version) => format!("{id}@{version}"),
        None => id.to_owned(),
    }
}

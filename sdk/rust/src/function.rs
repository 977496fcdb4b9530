//! Functions a worker provides: their definitions, their handlers, and
//! registering them on a worker.

use std::future::Future;
use std::sync::{Arc, PoisonError};

use capgate_protocol::{Frame, RegisterFunction, codes};
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::worker::{Context, Handler, HandlerError, Outgoing, Worker};

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

    /// How MCP clients see the function: `{"result": "content"}` when the
    /// handler returns an MCP tool result (`{"content": [...]}`, for images,
    /// audio or embedded resources), `{"requires": {"sampling": {}}}` when a
    /// call needs a client capability.
    pub fn mcp(mut self, options: Value) -> Self {
        self.frame.mcp = Some(options);
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
/// Registration lives beside [`Function`]: the worker itself only keeps
/// each registered definition and its handler.
impl Worker {
    /// Registers (or replaces) a function version; it is registered again
    /// after every reconnect. Several versions of one id may be registered
    /// side by side: the gateway names the version it resolved in each call.
    /// A function without a handler is refused here.
    pub fn register(&self, function: Function) {
        let Some(handler) = function.handler.clone() else {
            tracing::error!(function_id = %function.id(), "function registered without a handler; ignored");
            return;
        };
        let frame = Frame::RegisterFunction(Box::new(function.frame.clone())).to_json();
        self.shared
            .functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(function.key(), (function.frame.clone(), handler));
        let _ = self.shared.outbox.send(Outgoing::Frame(frame));
    }

    /// Stops providing every version of `id`.
    pub fn unregister(&self, id: &str) {
        self.shared
            .functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (frame, _)| frame.id != id);
        let _ = self.shared.outbox.send(Outgoing::Frame(
            Frame::UnregisterFunction { id: id.to_owned() }.to_json(),
        ));
    }
}

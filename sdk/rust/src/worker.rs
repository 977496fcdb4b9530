//! The [`Worker`]: registrations, calls, and the connection task behind them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use capgate_protocol::{
    ErrorBody, Frame, InvocationAction, InvokeFunction, RegistrationRejected, builtins,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::connection;
use crate::function::{Function, Handler};

/// Default deadline of [`Worker::call`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The gateway or the called function answered with an error.
    #[error("{code}: {message}")]
    Remote {
        code: String,
        message: String,
        stacktrace: Option<String>,
    },
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error(
        "the connection to the gateway was lost while the call was in flight; it may or may not have run"
    )]
    ConnectionLost,
    #[error("the worker was shut down")]
    Closed,
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
}

impl CallError {
    /// The error code, for remote errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Remote { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<ErrorBody> for CallError {
    fn from(body: ErrorBody) -> Self {
        Self::Remote {
            code: body.code,
            message: body.message,
            stacktrace: body.stacktrace,
        }
    }
}

/// Options of one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// A version requirement such as `^1.2`.
    pub version: Option<String>,
    /// Overrides [`DEFAULT_CALL_TIMEOUT`].
    pub timeout: Option<Duration>,
}

/// Something for the connection task to send.
pub(crate) enum Outgoing {
    /// A frame for whatever connection is current.
    Frame(String),
    /// A call: if the connection drops after it was sent, the call fails.
    Call { id: String, frame: String },
}

pub(crate) struct Shared {
    pub(crate) url: String,
    pub(crate) name: String,
    /// Sent as `Authorization: Bearer TOKEN` on every connection.
    pub(crate) token: Option<String>,
    pub(crate) backoff: Backoff,
    pub(crate) functions: Mutex<HashMap<String, (Function, Handler)>>,
    /// Calls awaiting their answer, by invocation id.
    pub(crate) pending: Mutex<HashMap<String, PendingCall>>,
    pub(crate) outbox: mpsc::UnboundedSender<Outgoing>,
    /// The worker id of the current connection, `None` while disconnected.
    pub(crate) connected: watch::Sender<Option<String>>,
    pub(crate) rejections: Mutex<Vec<RegistrationRejected>>,
    /// Cancellation of each call this worker is running, by invocation id.
    pub(crate) running: Mutex<HashMap<String, CancellationToken>>,
    pub(crate) shutdown: CancellationToken,
}

/// A call awaiting its answer.
pub(crate) struct PendingCall {
    pub(crate) reply: oneshot::Sender<Result<Value, CallError>>,
    /// Written to the current connection: it fails if that connection
    /// drops; a call not yet written waits for the next one.
    pub(crate) sent: bool,
}

impl Shared {
    pub(crate) fn take_pending(
        &self,
        id: &str,
    ) -> Option<oneshot::Sender<Result<Value, CallError>>> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .map(|call| call.reply)
    }

    pub(crate) fn mark_sent(&self, id: &str, sent: bool) {
        if let Some(call) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id)
        {
            call.sent = sent;
        }
    }

    /// Takes the calls written to a connection that dropped.
    pub(crate) fn take_sent(&self) -> Vec<oneshot::Sender<Result<Value, CallError>>> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let sent: Vec<String> = pending
            .iter()
            .filter(|(_, call)| call.sent)
            .map(|(id, _)| id.clone())
            .collect();
        sent.iter()
            .filter_map(|id| pending.remove(id))
            .map(|call| call.reply)
            .collect()
    }
}

/// A connected (or reconnecting) worker. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    pub(crate) shared: Arc<Shared>,
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    url: String,
    name: String,
    token: Option<String>,
    backoff: Backoff,
}

impl WorkerBuilder {
    /// The name the worker announces (default: the program's name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The worker's token (`[workers.NAME]` key or a JWT), sent as
    /// `Authorization: Bearer TOKEN` on every (re)connection.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Starts the connection task without waiting for the first connection.
    pub fn spawn(self) -> Worker {
        let (outbox, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            url: self.url,
            name: self.name,
            token: self.token,
            backoff: self.backoff,
            functions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            outbox,
            connected: watch::channel(None).0,
            rejections: Mutex::new(Vec::new()),
            running: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(connection::run(
            Worker {
                shared: shared.clone(),
            },
            queued,
        ));
        Worker { shared }
    }

    /// Starts the worker and waits for its first connection.
    pub async fn connect(self) -> Result<Worker, CallError> {
        let url = self.url.clone();
        let worker = self.spawn();
        let mut connected = worker.shared.connected.subscribe();
        match tokio::time::timeout(Duration::from_secs(10), connected.wait_for(Option::is_some))
            .await
        {
            Ok(Ok(_)) => Ok(worker),
            _ => {
                worker.shutdown();
                Err(CallError::Connect {
                    url,
                    reason: "no connection within 10 s (is the gateway running?)".into(),
                })
            }
        }
    }
}

impl Worker {
    pub fn builder(url: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            url: url.into(),
            name: std::env::args()
                .next()
                .and_then(|arg0| {
                    std::path::Path::new(&arg0)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "capgate-rust-worker".into()),
            token: None,
            backoff: Backoff::default(),
        }
    }

    /// Connects to `url` with default settings and waits until connected.
    pub async fn connect(url: impl Into<String>) -> Result<Self, CallError> {
        Self::builder(url).connect().await
    }

    /// The gateway's id for the current connection.
    pub fn worker_id(&self) -> Option<String> {
        self.shared.connected.borrow().clone()
    }

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
            .insert(function.key(), (function, handler));
        let _ = self.shared.outbox.send(Outgoing::Frame(frame));
    }

    /// Stops providing every version of `id`.
    pub fn unregister(&self, id: &str) {
        self.shared
            .functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (function, _)| function.id() != id);
        let _ = self.shared.outbox.send(Outgoing::Frame(
            Frame::UnregisterFunction { id: id.to_owned() }.to_json(),
        ));
    }

    /// Registrations the gateway refused so far (taken, so each is seen once).
    pub fn take_rejections(&self) -> Vec<RegistrationRejected> {
        std::mem::take(
            &mut *self
                .shared
                .rejections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Calls a function through the gateway and waits for its result.
    pub async fn call(&self, function_id: &str, input: Value) -> Result<Value, CallError> {
        self.call_with(function_id, input, CallOptions::default())
            .await
    }

    pub async fn call_with(
        &self,
        function_id: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(CallError::Closed);
        }
        let timeout = options.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        let id = uuid::Uuid::new_v4().to_string();
        let frame = Frame::InvokeFunction(InvokeFunction {
            invocation_id: Some(id.clone()),
            version: options.version,
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            ..InvokeFunction::new(function_id, input)
        })
        .to_json();
        let (sender, reply) = oneshot::channel();
        // Recorded before sending, so the reply always finds its call.
        self.shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.clone(),
                PendingCall {
                    reply: sender,
                    sent: false,
                },
            );
        if self
            .shared
            .outbox
            .send(Outgoing::Call {
                id: id.clone(),
                frame,
            })
            .is_err()
        {
            self.shared.take_pending(&id);
            return Err(CallError::Closed);
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CallError::Closed),
            Err(_) => {
                self.shared.take_pending(&id);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// Calls a function without waiting for, or receiving, its result.
    pub fn call_void(&self, function_id: &str, input: Value) {
        let frame = Frame::InvokeFunction(InvokeFunction {
            action: Some(InvocationAction::Void),
            ..InvokeFunction::new(function_id, input)
        });
        let _ = self.shared.outbox.send(Outgoing::Frame(frame.to_json()));
    }

    /// Calls this worker made that await their answer (queued while
    /// disconnected, or sent).
    pub fn calls_in_flight(&self) -> usize {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Closes the connection and stops reconnecting; pending calls fail.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// The description sent in `engine::workers::register`.
    pub(crate) fn announcement(&self) -> String {
        let description = json!({
            "name": self.shared.name,
            "runtime": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "os": std::env::consts::OS,
            "features": [capgate_protocol::CAPGATE_FEATURE],
        });
        Frame::InvokeFunction(InvokeFunction {
            action: Some(InvocationAction::Void),
            ..InvokeFunction::new(builtins::WORKERS_REGISTER, description)
        })
        .to_json()
    }
}

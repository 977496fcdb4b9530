//! The [`Worker`]: registrations, calls, and the connection task behind them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use capgate_protocol::{
    ErrorBody, Frame, InvocationAction, InvokeFunction, RegisterFunction, RegisterTrigger,
    RegistrationRejected, builtins, codes,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

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
    /// The W3C trace context the call came with: the gateway's span of
    /// this call, the parent of whatever the handler calls.
    pub traceparent: Option<String>,
    /// W3C baggage set upstream (by the agent, say), passed on unchanged.
    pub baggage: Option<String>,
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

    /// The trace this call belongs to (32 hex digits), when it has one.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent
            .as_deref()
            .and_then(|parent| parent.get(3..35))
    }

    /// Calls a function as part of this call: the same trace (this call's
    /// span its parent) and the same baggage. Prefer it to
    /// `ctx.worker.call`, which starts a new trace.
    pub async fn call(&self, function_id: &str, input: Value) -> Result<Value, CallError> {
        self.call_with(function_id, input, CallOptions::default())
            .await
    }

    /// [`Context::call`] with options; a trace context set in `options`
    /// wins over this call's.
    pub async fn call_with(
        &self,
        function_id: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        let options = CallOptions {
            traceparent: options.traceparent.or_else(|| self.traceparent.clone()),
            baggage: options.baggage.or_else(|| self.baggage.clone()),
            ..options
        };
        self.worker.call_with(function_id, input, options).await
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

/// Default interval of the worker's pings to the gateway.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);

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
    /// W3C trace context to continue ([`Context::call`] sets it).
    pub traceparent: Option<String>,
    /// W3C baggage to pass on ([`Context::call`] sets it).
    pub baggage: Option<String>,
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
    pub(crate) ping_interval: Duration,
    /// Each registered version's definition and handler, by handler key.
    pub(crate) functions: Mutex<HashMap<String, (RegisterFunction, Handler)>>,
    /// Each registered trigger, by id; registered again after a reconnect.
    pub(crate) triggers: Mutex<HashMap<String, RegisterTrigger>>,
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

    /// Marks a call as written to (or taken back from) the connection;
    /// false if its caller no longer waits for it (it timed out while the
    /// worker was disconnected), so it must not be sent at all.
    pub(crate) fn mark_sent(&self, id: &str, sent: bool) -> bool {
        match self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id)
        {
            Some(call) => {
                call.sent = sent;
                true
            }
            None => false,
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
///
/// The connection lives as long as a handle [`WorkerBuilder::spawn`] or
/// [`Worker::connect`] returned, or a clone of one, does: when the last is
/// dropped the connection closes as [`Worker::shutdown`] closes it, and the
/// gateway withdraws the worker's functions at once. The
/// [`Context::worker`] a handler receives does not keep it open; a handle
/// moved into a registered handler does (the worker holds its handlers),
/// so a handler calls through its context's worker rather than a captured
/// one.
#[derive(Clone)]
pub struct Worker {
    pub(crate) shared: Arc<Shared>,
    /// Held for its `Drop`; `None` in the handles the SDK keeps itself
    /// (its connection task, handler contexts), which must not keep the
    /// connection open.
    _keeper: Option<Arc<Keeper>>,
}

/// Shuts the connection down when the application's last handle is dropped.
struct Keeper(CancellationToken);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) token: Option<String>,
    pub(crate) backoff: Backoff,
    pub(crate) ping_interval: Duration,
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

    /// How often the gateway is pinged (default 10 s). A connection on
    /// which nothing arrives for two intervals is taken as lost and
    /// reconnected, so a half-open connection cannot hang the worker.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(10));
        self
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
    /// The application's handle: the connection closes when its last
    /// clone is dropped.
    pub(crate) fn kept(shared: Arc<Shared>) -> Self {
        let keeper = Keeper(shared.shutdown.clone());
        Self {
            shared,
            _keeper: Some(Arc::new(keeper)),
        }
    }

    /// A handle the SDK holds itself, which does not keep the connection.
    pub(crate) fn unkept(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _keeper: None,
        }
    }

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
            ping_interval: DEFAULT_PING_INTERVAL,
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
            traceparent: options.traceparent,
            baggage: options.baggage,
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

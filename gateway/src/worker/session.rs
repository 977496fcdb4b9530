//! What a worker's frames do.
//!
//! Frames of one connection are handled in arrival order, so a registration
//! is in the catalog before the next frame (often a call to it) is read:
//! capgate has no registration grace window and no race behind it. A call
//! the worker makes comes back as an [`InFlightCall`] that the connection
//! task polls beside the socket, so a slow function never holds up the
//! socket — and no task is spawned per call (a spawn wakes a parked runtime
//! thread and moves the call across cores, which doubled latency).
//!
//! Registrations are not acknowledged one by one (as in iii); the frames
//! that answer this worker — `pong`, call results, refusals — are sent only
//! once everything its earlier frames changed is on disk
//! ([`crate::durability`]). A thousand registrations followed by a ping
//! wait for one commit, not a thousand.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capgate_adapters::triggers::TriggerSpec;
use capgate_catalog::directory::RegisterError;
use capgate_catalog::naming::reserved_namespace;
use capgate_catalog::{Caller, FunctionId, Invocation, InvocationError, Payload, TraceContext};
use capgate_policies::{Action, Decision};
use capgate_protocol::{
    ErrorBody, Frame, InvocationAction, InvocationResult, InvokeFunction, RegisterFunction,
    RegisterTrigger, RegistrationRejected, codes,
};
use semver::VersionReq;
use serde_json::{Value, json};
use uuid::Uuid;

use super::WorkerContext;
use super::registration::draft_from_frame;
use crate::access::Access;
use crate::builtins::Builtin;
use crate::invocation::Noted;
use crate::invocation::errors::to_error_body;
use crate::workers::WorkerHandle;

/// Whether `caller` may register `function_id`: the id grammar, the
/// reserved namespaces, then the policy. A refusal says which and what to do.
pub(crate) fn registration_decision(
    access: &Access,
    caller: &Caller,
    function_id: &str,
) -> Result<Decision, (&'static str, String)> {
    FunctionId::parse(function_id)
        .map_err(|error| (codes::INVALID_DEFINITION, error.to_string()))?;
    if let Some(namespace) = reserved_namespace(function_id) {
        return Err((
            codes::NAMING_DENIED,
            format!(
                "{function_id} is in the reserved namespace '{namespace}::', which only the gateway provides; register it under your own namespace"
            ),
        ));
    }
    let decision = access.decide(caller, Action::Register, function_id);
    if !decision.allowed {
        return Err((
            codes::NAMING_DENIED,
            format!(
                "{} may not register {function_id}: no policy rule grants it that namespace ({}); ask for a 'register' rule on it",
                caller.subject(),
                decision.rule
            ),
        ));
    }
    Ok(decision)
}

/// The namespace a refused id was asked in: what precedes its first `::`,
/// or the whole id when it has none (also for ids the grammar refuses).
fn namespace_of(function_id: &str) -> &str {
    function_id
        .split_once("::")
        .map_or(function_id, |(namespace, _)| namespace)
}

/// A call this worker made, running until it answers the worker.
pub type InFlightCall = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One worker connection's frame handler.
pub struct Session {
    pub(crate) state: Arc<WorkerContext>,
    pub(crate) worker: Arc<WorkerHandle>,
    /// Something this worker's frames changed may not be on disk yet.
    unsettled: AtomicBool,
}

impl Session {
    pub fn new(state: Arc<WorkerContext>, worker: Arc<WorkerHandle>) -> Self {
        Self {
            state,
            worker,
            unsettled: AtomicBool::new(false),
        }
    }

    /// Handles one text frame; a call to a worker-provided function comes
    /// back to be polled by the connection task.
    pub async fn on_text(&self, text: &str) -> Option<InFlightCall> {
        match Frame::parse(text) {
            Ok(Frame::InvokeFunction(call)) => {
                self.settle().await;
                self.invoke(call).await
            }
            Ok(Frame::Ping) => {
                if self.settle().await {
                    self.worker.send(&Frame::Pong);
                }
                None
            }
            Ok(Frame::Reattach {
                previous_worker_id,
                reattach_token,
            }) => {
                self.reattach(&previous_worker_id, &reattach_token).await;
                None
            }
            Ok(frame) => {
                self.on_other_frame(frame).await;
                None
            }
            Err(error) => {
                self.on_malformed(text, &error);
                None
            }
        }
    }

    fn on_malformed(&self, text: &str, error: &serde_json::Error) {
        tracing::warn!(worker_id = %self.worker.worker_id, %error, "malformed frame");
        // A call with a readable id still gets an answer, so its caller
        // never waits for a timeout.
        let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let invocation_id = value
            .as_ref()
            .filter(|v| v.get("type").and_then(|t| t.as_str()) == Some("invokefunction"))
            .and_then(|v| v.get("invocation_id"))
            .and_then(|id| id.as_str());
        let message = format!(
            "frame rejected: {error}. Each frame must be a JSON object with a \"type\" such as \
             \"registerfunction\" or \"invokefunction\" (see docs/protocol.md)"
        );
        if let Some(invocation_id) = invocation_id {
            let function_id = value
                .as_ref()
                .and_then(|v| v.get("function_id"))
                .and_then(|f| f.as_str())
                .unwrap_or_default();
            self.worker
                .send(&Frame::InvocationResult(InvocationResult::new(
                    invocation_id,
                    function_id,
                    Err(ErrorBody::new(codes::INVALID_ARGUMENTS, message)),
                )));
        } else {
            self.worker
                .send(&Frame::Error(ErrorBody::new(codes::INVALID_FRAME, message)));
        }
    }

    /// Waits until what this worker changed is on disk, before an answer
    /// that implies it. False (and the worker told why) when the store
    /// failed.
    async fn settle(&self) -> bool {
        if !self.unsettled.swap(false, Ordering::AcqRel) {
            return true;
        }
        match crate::durability::settle(&self.state.catalog, &self.state.access.audit).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(worker_id = %self.worker.worker_id, %error,
                    "a registration could not be written to the store");
                self.worker.send(&Frame::Error(ErrorBody::new(
                    codes::STORE_UNAVAILABLE,
                    format!(
                        "a change this worker made could not be written to the catalog database ({error}); it will not survive a restart of the gateway — register again once the store is back"
                    ),
                )));
                false
            }
        }
    }

    /// Every frame but `invokefunction` and `ping`, which `on_text` handles.
    async fn on_other_frame(&self, frame: Frame) {
        // Registrations are boxed: their futures (store writes) are large,
        // and unboxed they would be part of the future of every frame this
        // connection reads — results and calls included.
        match frame {
            Frame::RegisterFunction(frame) => Box::pin(self.register_function(*frame)).await,
            Frame::UnregisterFunction { id } => self.unregister_function(&id),
            Frame::InvocationResult(result) => self.complete(result),
            Frame::Pong => {}
            Frame::RegisterTrigger(trigger) => Box::pin(self.register_trigger(trigger)).await,
            Frame::UnregisterTrigger { id, .. } => {
                self.state.triggers.unregister(&self.worker.worker_id, &id);
            }
            Frame::RegisterTriggerType { id, .. } | Frame::UnregisterTriggerType { id } => {
                tracing::info!(worker_id = %self.worker.worker_id, trigger_type = %id,
                    "worker-provided trigger types are not supported yet; ignored");
            }
            Frame::TriggerRegistrationResult { .. } => {}
            // Handled by `on_text`; never arrive here.
            Frame::InvokeFunction(_) | Frame::Reattach { .. } | Frame::Ping => {}
            other @ (Frame::WorkerRegistered(_)
            | Frame::RegistrationRejected(_)
            | Frame::CancelInvocation { .. }
            | Frame::Error(_)) => {
                self.worker.send(&Frame::Error(ErrorBody::new(
                    codes::INVALID_FRAME,
                    format!(
                        "'{}' frames are sent by the gateway, not to it",
                        other.kind()
                    ),
                )));
            }
        }
    }

    /// Takes over the previous connection's registrations, so its functions
    /// stay callable across the reconnect. Handled before the next frame is
    /// read: the replay that follows finds them already here. What the
    /// replay does not register again within the grace is withdrawn.
    async fn reattach(&self, previous_worker_id: &str, token: &str) {
        let workers = &self.state.workers;
        match workers
            .reattach(&self.worker, previous_worker_id, token, &self.state.catalog)
            .await
        {
            Ok(moved) => {
                self.state
                    .triggers
                    .transfer_owner(previous_worker_id, &self.worker.worker_id);
                tracing::info!(worker_id = %self.worker.worker_id, %previous_worker_id,
                    functions = moved.len(), "worker reattached; its registrations carried over");
                if moved.is_empty() {
                    return;
                }
                let (state, worker) = (self.state.clone(), self.worker.clone());
                let settle_after = state
                    .config
                    .workers
                    .reattach_grace
                    .max(Duration::from_secs(1));
                tokio::spawn(async move {
                    tokio::time::sleep(settle_after).await;
                    let stale = state.workers.settle(&worker, &state.catalog).await;
                    if !stale.is_empty() {
                        tracing::info!(worker_id = %worker.worker_id, ?stale,
                            "functions not registered again after the reattach were withdrawn");
                    }
                });
            }
            Err(refused) => {
                tracing::info!(worker_id = %self.worker.worker_id, %previous_worker_id, %refused,
                    "reattach not honoured; the connection starts afresh");
            }
        }
    }

    /// Naming first (grammar, reserved namespaces, the policy's grant),
    /// then the definition; every outcome goes to the audit log.
    async fn register_function(&self, frame: RegisterFunction) {
        self.unsettled.store(true, Ordering::Release);
        let function_id = frame.id.clone();
        let caller = self.worker.caller();
        let access = &self.state.access;
        let decision = match registration_decision(access, &caller, &function_id) {
            Ok(decision) => decision,
            Err((code, message)) => {
                return self
                    .refuse_registration(&function_id, code, message, None)
                    .await;
            }
        };
        if let Some(message) = self.state.rest.refusal_for(&function_id, "register") {
            return self
                .refuse_registration(
                    &function_id,
                    codes::FUNCTION_NAMESPACE_CONFLICT,
                    message,
                    None,
                )
                .await;
        }
        if let Some(owner) = self.other_owner(&function_id) {
            let message = format!(
                "{function_id} is provided by {} (worker {}): a function has one owner, and only workers with the same identity may provide it beside it",
                owner.caller().subject(),
                owner.worker_id
            );
            return self
                .refuse_registration(
                    &function_id,
                    codes::FUNCTION_NAMESPACE_CONFLICT,
                    message,
                    Some(owner.worker_id.clone()),
                )
                .await;
        }
        let outcome = draft_from_frame(frame)
            .build()
            .map_err(|error| (codes::INVALID_DEFINITION, error.to_string()))
            .and_then(|capability| {
                let version = capability.version().to_string();
                let hash = capability.hash().to_hex();
                let id = capability.id().clone();
                self.state
                    .catalog
                    .register(capability, self.worker.provider)
                    .map(|_| (id, version, hash))
                    .map_err(|error| {
                        let code = match error {
                            RegisterError::Full { .. } => codes::CATALOG_FULL,
                            _ => codes::INVALID_DEFINITION,
                        };
                        (code, error.to_string())
                    })
            });
        match outcome {
            Ok((id, version, hash)) => {
                access.record(
                    "registration",
                    &caller,
                    "register",
                    &format!("{id}@{version}"),
                    &decision,
                    json!({"definition_hash": hash, "worker_id": self.worker.worker_id}),
                );
                self.worker.replayed(&id);
                self.worker.provides(id);
                self.state.workers.forget_refusal(&function_id);
            }
            Err((code, error)) => {
                self.refuse_registration(&function_id, code, error, None)
                    .await
            }
        }
    }

    /// A live worker of another identity that provides `function_id`: its
    /// owner. Workers of one identity (replicas, a reconnecting worker) may
    /// provide a function side by side; others may not take it over.
    fn other_owner(&self, function_id: &str) -> Option<Arc<WorkerHandle>> {
        self.state
            .catalog
            .providers_of(function_id)
            .into_iter()
            .filter_map(|provider| self.state.workers.owner(provider))
            .find(|other| {
                other.worker_id != self.worker.worker_id
                    && other.identity.name != self.worker.identity.name
            })
    }

    /// Audits a refused registration (the reason as its rule) and, once the
    /// entry is kept, tells the worker.
    async fn refuse_registration(
        &self,
        function_id: &str,
        code: &str,
        message: String,
        owner: Option<String>,
    ) {
        let refusal = Decision {
            allowed: false,
            rule: message.clone().into(),
        };
        self.state.access.record(
            "registration",
            &self.worker.caller(),
            "register",
            function_id,
            &refusal,
            Value::Null,
        );
        if self.settle().await {
            self.reject(function_id, code, message, owner);
        }
    }

    /// Tells the worker a registration was refused, in a form it survives:
    /// capgate peers get `registrationrejected`; iii peers (the Python SDK
    /// stops on rejection codes it does not know) get a log line and a clear
    /// error on every call to the function.
    fn reject(&self, function_id: &str, code: &str, message: String, owner: Option<String>) {
        tracing::warn!(worker_id = %self.worker.worker_id, function_id, %message, "registration refused");
        if self.worker.is_capgate_aware() {
            self.worker
                .send(&Frame::RegistrationRejected(RegistrationRejected {
                    code: code.to_owned(),
                    namespace: namespace_of(function_id).to_owned(),
                    function_id: Some(function_id.to_owned()),
                    owner_worker_id: owner,
                    message: Some(message),
                }));
        } else {
            self.state
                .workers
                .refuse(function_id, &self.worker.worker_id, message);
        }
    }

    fn unregister_function(&self, id: &str) {
        let Ok(id) = FunctionId::parse(id) else {
            return;
        };
        if self.worker.stops_providing(&id) {
            self.state.catalog.unregister(&id, self.worker.provider);
        }
    }

    /// Starts a trigger of a kind the registry knows, if the policy lets
    /// the worker attach triggers to the function. Success is not
    /// acknowledged (as in iii), a refusal is. The trigger ends with the
    /// connection.
    async fn register_trigger(&self, trigger: RegisterTrigger) {
        self.unsettled.store(true, Ordering::Release);
        let caller = self.worker.caller();
        let decision = self
            .state
            .access
            .decide(&caller, Action::Trigger, &trigger.function_id);
        self.state.access.record(
            "trigger",
            &caller,
            "trigger",
            &trigger.function_id,
            &decision,
            json!({"trigger_type": trigger.trigger_type, "trigger_id": trigger.id}),
        );
        if !decision.allowed {
            let message = format!(
                "{} may not attach triggers to {} (policy: {})",
                caller.subject(),
                trigger.function_id,
                decision.rule
            );
            return self.refuse_trigger(trigger, message).await;
        }
        let spec = TriggerSpec {
            id: trigger.id.clone(),
            trigger_type: trigger.trigger_type.clone(),
            function_id: trigger.function_id.clone(),
            config: trigger.config.clone(),
            owner: caller,
            owner_key: self.worker.worker_id.clone(),
            owner_name: self.worker.name(),
        };
        if let Err(error) = self
            .state
            .triggers
            .register(spec, &self.state.trigger_services)
        {
            let message = format!(
                "{error} (trigger {} for {})",
                trigger.id, trigger.function_id
            );
            self.refuse_trigger(trigger, message).await;
        }
    }

    async fn refuse_trigger(&self, trigger: RegisterTrigger, message: String) {
        tracing::warn!(worker_id = %self.worker.worker_id, %message, "trigger refused");
        if !self.settle().await {
            return;
        }
        self.worker.send(&Frame::TriggerRegistrationResult {
            id: trigger.id,
            trigger_type: trigger.trigger_type,
            function_id: trigger.function_id,
            error: Some(ErrorBody::new(codes::TRIGGER_REGISTRATION_FAILED, message)),
        });
    }

    fn complete(&self, result: InvocationResult) {
        let Ok(id) = Uuid::parse_str(&result.invocation_id) else {
            tracing::warn!(worker_id = %self.worker.worker_id, invocation_id = %result.invocation_id,
                "result for an invocation id the gateway never issued");
            return;
        };
        let reply = match result.error {
            Some(error) => Err(error),
            None => Ok(result.result.unwrap_or_default()),
        };
        if !self.worker.pending.complete(&id, reply) {
            tracing::warn!(worker_id = %self.worker.worker_id, invocation_id = %id,
                "result for a call this worker is not answering (answered twice, timed out, or unknown); dropped");
        }
    }

    async fn invoke(&self, mut call: InvokeFunction) -> Option<InFlightCall> {
        if let Some(InvocationAction::Enqueue { queue }) = call.action.take() {
            return self.enqueue(call, queue);
        }
        let invocation = match self.invocation_from(&mut call) {
            Ok(invocation) => invocation,
            Err(error) => {
                let noted = Noted {
                    outcome: Err(error),
                    warning: None,
                    capability: None,
                };
                self.answer(call, noted);
                return None;
            }
        };
        // Built-ins are quick and order-sensitive (a worker's description must
        // be known before its next frame): run them in line — except state,
        // which waits for the disk and would hold up every frame behind it.
        if Builtin::named(&call.function_id).is_some_and(Builtin::runs_in_line) {
            // Boxed: a call's future is kilobytes, and unboxed here it would
            // be part of the future of every frame this connection reads.
            let noted = Box::pin(self.state.path.run_noting(invocation)).await;
            self.answer(call, noted);
            return None;
        }
        let session = Session::new(self.state.clone(), self.worker.clone());
        Some(Box::pin(async move {
            let noted = session.state.path.run_noting(invocation).await;
            session.answer(call, noted);
        }))
    }

    /// Puts the call on a function queue (iii's `TriggerAction.Enqueue`):
    /// answered with `{messageReceiptId}` once it is durable; the call runs
    /// later as this worker, the whole path then. Authorization is the
    /// path's own, now: a caller the policy would not let call the function
    /// is refused, audited and answered as the call itself would be.
    fn enqueue(&self, mut call: InvokeFunction, queue: String) -> Option<InFlightCall> {
        let invocation = match self.invocation_from(&mut call) {
            Ok(invocation) => invocation,
            Err(error) => {
                let noted = Noted {
                    outcome: Err(error),
                    warning: None,
                    capability: None,
                };
                self.answer(call, noted);
                return None;
            }
        };
        let session = Session::new(self.state.clone(), self.worker.clone());
        Some(Box::pin(async move {
            let outcome = match session.state.path.admit(&invocation).await {
                Ok(()) => session.put_on_queue(&queue, &invocation).await,
                Err(refused) => Err(refused),
            };
            session.answer(
                call,
                Noted {
                    outcome,
                    warning: None,
                    capability: None,
                },
            );
        }))
    }

    /// `{messageReceiptId}` once the call is durably queued, or
    /// `enqueue_error` saying why not.
    async fn put_on_queue(
        &self,
        queue: &str,
        invocation: &Invocation,
    ) -> Result<Payload, InvocationError> {
        let queued = match invocation.input.to_value() {
            Ok(data) => {
                self.state
                    .queues
                    .enqueue(
                        queue,
                        &invocation.function_id,
                        &data,
                        &invocation.caller,
                        &invocation.trace,
                    )
                    .await
            }
            Err(error) => Err(capgate_adapters::queue::QueueError::Invalid(
                error.to_string(),
            )),
        };
        queued
            .map(|published| json!({ "messageReceiptId": published.receipt }).into())
            .map_err(|error| InvocationError::Failed {
                code: codes::ENQUEUE_ERROR.into(),
                message: error.to_string(),
                stacktrace: None,
            })
    }

    /// The call's invocation; its data moves into it (the frame keeps what
    /// the answer needs).
    fn invocation_from(&self, call: &mut InvokeFunction) -> Result<Invocation, InvocationError> {
        // A deadline of 0 ms would expire before dispatch; registration
        // refuses it too.
        if call.timeout_ms == Some(0) {
            return Err(InvocationError::InvalidInput {
                function: call.function_id.clone(),
                violations: "timeout_ms must be at least 1 millisecond; omit it to use the function's own deadline".into(),
            });
        }
        let version =
            match &call.version {
                Some(text) => Some(VersionReq::parse(text).map_err(|error| {
                    InvocationError::InvalidInput {
                        function: call.function_id.clone(),
                        violations: format!("version requirement '{text}' is invalid: {error}"),
                    }
                })?),
                None => None,
            };
        Ok(Invocation {
            function_id: call.function_id.clone(),
            version,
            input: std::mem::take(&mut call.data),
            caller: self.worker.caller(),
            trace: TraceContext {
                traceparent: call.traceparent.clone(),
                tracestate: None,
                baggage: call.baggage.clone(),
            },
            timeout: call.timeout_ms.map(Duration::from_millis),
            idempotency_key: None,
            source: None,
            entry: capgate_catalog::Entry::Worker,
        })
    }

    /// Sends the outcome back, unless the call was fire-and-forget. The
    /// call's ids move into the answer rather than being copied.
    fn answer(&self, call: InvokeFunction, noted: Noted) {
        let Some(invocation_id) = call.invocation_id else {
            if let Err(error) = noted.outcome {
                tracing::debug!(function = %call.function_id, %error, "fire-and-forget call failed");
            }
            return;
        };
        let outcome = noted.outcome.map_err(|error| to_error_body(&error));
        self.worker.send(&Frame::InvocationResult(InvocationResult {
            warning: noted.warning,
            ..InvocationResult::new(invocation_id, call.function_id, outcome)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::future_size;

    /// Reading a frame builds this future for every frame a worker sends,
    /// results and calls included, and moves it whole: the rare, large
    /// branches (a built-in run in line, a registration's store writes)
    /// are boxed so that it stays small. Unboxed it was 3,712 bytes.
    #[test]
    fn reading_a_frame_does_not_carry_the_rare_branches() {
        let size = future_size(Session::on_text);
        assert!(
            size <= 1_024,
            "reading a frame takes a {size}-byte future: box the large branch that grew it"
        );
    }
}

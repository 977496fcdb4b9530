//! The one path every call takes, whatever started it:
//!
//! ```text
//! resolve → authorize → validate input → dispatch → await → validate output → audit
//! ```
//!
//! [`InvocationPath::run`] is that path, step by step, and it is the only
//! code that sends a call to a provider. MCP `tools/call`, a worker's
//! `invokefunction` and every adapter reach it through the
//! [`capgate_catalog::Invoker`] trait.

pub mod errors;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use capgate_catalog::audit::CallDetail;
use capgate_catalog::lifecycle::notice;
use capgate_catalog::{
    Caller, Capability, Catalog, Invocation, InvocationError, Invoker, NotFoundReason, ProviderId,
    Resolved,
};
use capgate_policies::{Action, Decision, DeprecatedMode};
use capgate_protocol::{Frame, InvokeFunction, Payload, PayloadError, codes};
use semver::VersionReq;
use serde_json::Value;

use tracing::Instrument as _;

use crate::access::Access;
use crate::builtins::{self, Builtin, BuiltinContext};
use crate::identity::agents::Agents;
use crate::telemetry::{self, Telemetry};
use crate::workers::Workers;
use crate::workers::pending::CallIds;
use crate::workers::registry::WorkerHandle;

/// What [`InvocationPath::run_audited`] hands back to the metrics: the
/// function id moved out of the call rather than copied before it, and the
/// call's duration as the audit entry has it.
struct Ran {
    noted: Noted,
    /// Whether a policy refused the call.
    denied: bool,
    function: String,
    took: Duration,
}

/// A call's outcome and what its caller should be warned of.
pub struct Noted {
    /// The result as the provider sent it (text, unless something had to
    /// look inside).
    pub outcome: Result<Payload, InvocationError>,
    /// The deprecation notice of the version that ran, if it is deprecated.
    pub warning: Option<String>,
    /// The version the call resolved to (none for built-ins and calls
    /// refused before resolving): how its result is shown depends on it.
    pub capability: Option<Arc<Capability>>,
}

/// In-flight limits: over one, a call is refused at once with
/// [`InvocationError::Overloaded`] rather than queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_worker: usize,
    pub gateway: usize,
}

/// Counts a call in flight gateway-wide for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the authorize step decided, for the audit entry.
#[derive(Default)]
struct Audited {
    decision: Option<Decision>,
    capability: Option<Arc<Capability>>,
}

/// Where a resolved call goes.
enum Target {
    Worker(Resolved),
    Builtin(Builtin),
}

/// The invocation path and what it needs: the catalog to resolve, the
/// authorizer to decide, the workers to dispatch to.
pub struct InvocationPath {
    catalog: Arc<Catalog>,
    workers: Arc<Workers>,
    access: Arc<Access>,
    agents: Arc<Agents>,
    /// What the gateway's own functions read.
    builtins: BuiltinContext,
    call_timeout: Duration,
    limits: Limits,
    /// Calls dispatched to workers and not yet answered, gateway-wide.
    in_flight: AtomicUsize,
    accepting: AtomicBool,
    ids: Arc<CallIds>,
    /// Spans, metrics and the log span of each call.
    telemetry: Arc<Telemetry>,
}

impl InvocationPath {
    /// The path over what the built-ins read (the catalog, workers and
    /// access among them).
    pub fn new(
        builtins: BuiltinContext,
        agents: Arc<Agents>,
        call_timeout: Duration,
        limits: Limits,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            catalog: builtins.catalog.clone(),
            workers: builtins.workers.clone(),
            access: builtins.access.clone(),
            builtins,
            agents,
            call_timeout,
            limits,
            in_flight: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            ids: CallIds::new(),
            telemetry,
        }
    }

    /// Stops taking new calls (drain); calls in flight continue.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// False once draining has begun.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// The spans and metrics of this path's calls.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Calls dispatched to workers and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Runs one invocation along the path, its result as a value.
    pub async fn run(&self, invocation: Invocation) -> Result<Value, InvocationError> {
        let function = invocation.function_id.clone();
        self.run_noting(invocation)
            .await
            .outcome?
            .into_value()
            .map_err(|error| InvocationError::InvalidOutput {
                function,
                violations: error.to_string(),
            })
    }

    /// Step 2 alone, for a call put on a queue now and run later (along the
    /// whole path then): a denial is refused now — audited and answered as
    /// the path answers one, like an unknown function, once its entry is
    /// kept. An allowed call is audited when it runs.
    pub async fn admit(&self, invocation: &Invocation) -> Result<(), InvocationError> {
        let decision =
            self.access
                .decide(&invocation.caller, Action::Call, &invocation.function_id);
        if decision.allowed {
            return Ok(());
        }
        self.telemetry
            .metrics
            .record_denial(crate::telemetry::source_of(invocation));
        let outcome = Err(InvocationError::not_found(&invocation.function_id));
        let audited = Audited {
            decision: Some(decision),
            ..Audited::default()
        };
        if self.audit(invocation, audited, &outcome, Duration::ZERO, None) {
            self.keep_refusal().await;
        }
        outcome.map(drop)
    }

    /// Waits for a refusal's audit entry to be on disk before it is
    /// answered. Unknown and forbidden both land here, so they still read
    /// (and take) alike.
    async fn keep_refusal(&self) {
        if let Err(error) = self.access.audit.flush().await {
            tracing::error!(%error, "the audit entry of a refused call was not written");
        }
    }

    /// Runs one invocation and also says what the caller should be warned
    /// of (a deprecated version), for callers whose reply can carry it.
    /// Every call but protocol plumbing gets a span (when tracing is on),
    /// its trace ids on its log lines and its count in the metrics.
    pub async fn run_noting(&self, mut invocation: Invocation) -> Noted {
        let started = Instant::now();
        // The steps' future is boxed, here and below, rather than held in
        // this one: every caller of this future moves it whole at least
        // once (into its own box, into a task), and held here it made this
        // future about 3 KB, copied two or three times per call
        // (`memmove` was the largest single item of a call's profile).
        if Builtin::named(&invocation.function_id).is_some_and(Builtin::is_plumbing) {
            return Box::pin(self.run_audited(invocation, started)).await.noted;
        }
        let source = telemetry::source_of(&invocation);
        let span = self.telemetry.begin(&mut invocation, source);
        let Ran {
            noted,
            denied,
            function,
            took,
        } = Box::pin(self.run_audited(invocation, started))
            .instrument(span.log.clone())
            .await;
        let version = noted.capability.as_ref().map(|c| c.version_text());
        let (label, code) = match &noted.outcome {
            Ok(_) => ("ok", Cow::Borrowed("ok")),
            Err(error) => (
                errors::simple_code(error),
                Cow::Borrowed(errors::code_of(error)),
            ),
        };
        // The version's own id when there is one: a count on shared text
        // rather than a copy of the name per call.
        let counted_as = match (&noted.outcome, &noted.capability) {
            (
                Err(InvocationError::NotFound {
                    reason: NotFoundReason::Unknown,
                    ..
                }),
                _,
            ) => Arc::from(telemetry::metrics::UNKNOWN_FUNCTION),
            (_, Some(capability)) => Arc::clone(capability.id().shared()),
            (_, None) => Arc::from(function.as_str()),
        };
        self.telemetry
            .metrics
            .record_call(counted_as, version, source, label, took.as_secs_f64());
        if denied {
            self.telemetry.metrics.record_denial(source);
        }
        span.finish(version, &noted.outcome, code);
        noted
    }

    /// The path's steps and the call's audit entry.
    async fn run_audited(&self, mut invocation: Invocation, started: Instant) -> Ran {
        let mut warning = None;
        let mut audited = Audited::default();
        let record_input = self
            .access
            .audit_config
            .payloads
            .then(|| invocation.input.clone());
        let outcome = self
            .run_steps(&mut invocation, &mut warning, &mut audited)
            .await;
        // One reading of the clock for the audit entry and the metrics.
        let took = started.elapsed();
        let capability = audited.capability.clone();
        let denied = audited.decision.as_ref().is_some_and(|d| !d.allowed);
        if self.audit(&invocation, audited, &outcome, took, record_input) {
            self.keep_refusal().await;
        }
        match &outcome {
            Ok(_) => tracing::debug!(
                function = %invocation.function_id, caller = %invocation.caller,
                micros = took.as_micros() as u64, "call completed"
            ),
            Err(error) => tracing::debug!(
                function = %invocation.function_id, caller = %invocation.caller,
                micros = took.as_micros() as u64, %error, "call failed"
            ),
        }
        Ran {
            noted: Noted {
                outcome,
                warning,
                capability,
            },
            denied,
            function: invocation.function_id,
            took,
        }
    }

    /// The steps; the input is moved into the dispatched frame, not copied.
    async fn run_steps(
        &self,
        invocation: &mut Invocation,
        warning: &mut Option<String>,
        audited: &mut Audited,
    ) -> Result<Payload, InvocationError> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(InvocationError::ShuttingDown);
        }
        // 2 before 1: a denial must read exactly like an unknown function,
        // so nothing about the function's versions may leak through errors.
        // A worker describing itself is protocol plumbing, not a call.
        if !Builtin::named(&invocation.function_id).is_some_and(Builtin::is_plumbing) {
            let decision =
                self.access
                    .decide(&invocation.caller, Action::Call, &invocation.function_id);
            let allowed = decision.allowed;
            audited.decision = Some(decision);
            if !allowed {
                return Err(InvocationError::not_found(&invocation.function_id));
            }
        }
        // 1. Resolve: id + requirement → one version and provider, or a built-in.
        let target = self.resolve(invocation)?;
        let resolved = match target {
            // Boxed, like the REST dispatch below: their futures (store
            // queries, HTTP clients) are many times a worker call's, and
            // every call's future is as large as its largest branch.
            Target::Builtin(builtin) => {
                return Box::pin(builtins::call(&self.builtins, builtin, invocation))
                    .await
                    .map(Payload::from);
            }
            Target::Worker(resolved) => resolved,
        };
        audited.capability = Some(resolved.capability.clone());
        let capability = &resolved.capability;
        *warning = capability.definition().deprecation.as_ref().map(notice);
        // 3. Validate input against the version's compiled schema; the
        // caller's worker id joins it as the iii engine adds it.
        let invalid = |violations: String| InvocationError::InvalidInput {
            function: invocation.function_id.clone(),
            violations,
        };
        let input = capability
            .checked_input(std::mem::take(&mut invocation.input))
            .map_err(|violations| invalid(violations.to_string()))?;
        invocation.input = with_caller_id(input, &invocation.caller)
            .map_err(|error| invalid(error.to_string()))?;
        // 4 + 5. Dispatch and await, within the deadline.
        let deadline = invocation
            .timeout
            .or_else(|| capability.timeout())
            .unwrap_or(self.call_timeout);
        let output = self.dispatch(&resolved, invocation, deadline).await?;
        // 6. Validate output.
        capability
            .checked_output(output)
            .map_err(|violations| InvocationError::InvalidOutput {
                function: invocation.function_id.clone(),
                violations: violations.to_string(),
            })
    }

    fn resolve(&self, invocation: &Invocation) -> Result<Target, InvocationError> {
        if let Some(builtin) = Builtin::named(&invocation.function_id) {
            return Ok(Target::Builtin(builtin));
        }
        // The caller's pin from configuration narrows what the call asked for.
        let pin = self.agents.pin(&invocation.caller, &invocation.function_id);
        let requirement = match (invocation.version.as_ref(), pin) {
            (Some(asked), Some(pin)) => Some(Cow::Owned(VersionReq {
                comparators: asked
                    .comparators
                    .iter()
                    .chain(&pin.comparators)
                    .cloned()
                    .collect(),
            })),
            (asked, pin) => asked.or(pin).map(Cow::Borrowed),
        };
        let skip_deprecated = self.access.deprecation(&invocation.caller) == DeprecatedMode::Refuse;
        self.catalog
            .resolve_for(
                &invocation.function_id,
                requirement.as_deref(),
                skip_deprecated,
            )
            .map(Target::Worker)
            .map_err(
                |error| match (self.workers.refusal(&invocation.function_id), pin, error) {
                    (Some(reason), _, _) => InvocationError::NotFound {
                        function: invocation.function_id.clone(),
                        reason: NotFoundReason::RegistrationRefused { reason },
                    },
                    (None, Some(pin), InvocationError::NotFound { function, reason })
                        if reason != NotFoundReason::Unknown =>
                    {
                        InvocationError::NotFound {
                            function,
                            reason: NotFoundReason::Pinned {
                                reason: Box::new(reason),
                                caller: invocation.caller.to_string(),
                                pin: pin.clone(),
                            },
                        }
                    }
                    (None, _, error) => error,
                },
            )
    }

    /// Appends the call's decision and outcome to the audit log: always for
    /// refusals (denied, or an unknown function — the two must not be told
    /// apart), for other calls unless configured off. True when it recorded
    /// a refusal, whose entry must be on disk before the answer.
    fn audit(
        &self,
        invocation: &Invocation,
        audited: Audited,
        outcome: &Result<Payload, InvocationError>,
        took: Duration,
        input: Option<Payload>,
    ) -> bool {
        let Some(decision) = audited.decision else {
            return false;
        };
        if matches!(invocation.caller, capgate_catalog::Caller::Gateway) {
            return false;
        }
        let refusal = matches!(outcome, Err(InvocationError::NotFound { .. }));
        if !refusal && !self.access.audit_config.allowed_calls {
            return false;
        }
        let input = input.map(|input| match input.to_value() {
            Ok(value) => value.into_owned(),
            Err(_) => Value::String(input.to_json().into_owned()),
        });
        let outcome = match outcome {
            Ok(_) => Cow::Borrowed("ok"),
            Err(InvocationError::Failed { code, .. }) => Cow::Owned(code.clone()),
            Err(error) => Cow::Borrowed(errors::simple_code(error)),
        };
        // The version's own id when the call resolved: a count on shared
        // text rather than a copy of the name per call.
        let function = match &audited.capability {
            Some(capability) if **capability.id().shared() == *invocation.function_id => {
                Arc::clone(capability.id().shared())
            }
            _ => Arc::from(invocation.function_id.as_str()),
        };
        self.access.record_call(
            &invocation.caller,
            function,
            &decision,
            CallDetail {
                outcome,
                micros: took.as_micros() as u64,
                version: audited.capability.map(|c| c.version().clone()),
                trigger: invocation.source.clone(),
                input,
            },
        );
        refusal
    }

    /// Sends the call to the least loaded provider and waits for its
    /// answer. Another provider is tried only when the call provably never
    /// started (its connection closed before the frame went out), or when
    /// the function is marked idempotent and its provider disconnected
    /// mid-call. When the version's providers are all lost connections
    /// held for a reattach, the call waits for one to come back (or for
    /// the hold to end) — always within the one deadline.
    async fn dispatch(
        &self,
        resolved: &Resolved,
        invocation: &mut Invocation,
        deadline: Duration,
    ) -> Result<Payload, InvocationError> {
        let until = tokio::time::Instant::now() + deadline;
        let idempotent = resolved.capability.definition().annotations.idempotent_hint == Some(true);
        let _counted = InFlight(&self.in_flight);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.limits.gateway {
            return Err(self.overloaded(invocation, "the gateway", self.limits.gateway));
        }
        if capgate_adapters::rest::Services::is_rest(resolved.provider) {
            return Box::pin(self.dispatch_rest(resolved, invocation, (until, deadline))).await;
        }
        let mut input = std::mem::take(&mut invocation.input);
        let mut resolved = Cow::Borrowed(resolved);
        let mut tried = Vec::new();
        let mut failure = None;
        loop {
            for worker in self.by_load(&resolved) {
                match self
                    .attempt(&worker, &resolved, invocation, input, (until, deadline))
                    .await
                {
                    Ok(value) => return Ok(value),
                    Err(Attempt::NeverStarted(error, back)) => {
                        (failure, input) = (Some(error), back)
                    }
                    Err(Attempt::Stopped(error, back)) if idempotent => {
                        (failure, input) = (Some(error), back)
                    }
                    Err(failed) => return Err(failed.into_error()),
                }
            }
            tried.extend(self.providers(&resolved));
            match self.next_round(&resolved, &tried, until).await {
                Ok(fresh) => resolved = Cow::Owned(fresh),
                Err(Exhausted::Deadline) => {
                    return Err(InvocationError::Timeout {
                        function: invocation.function_id.clone(),
                        after: deadline,
                    });
                }
                Err(Exhausted::Registry) => return Err(InvocationError::ShuttingDown),
                Err(Exhausted::Tried) => {
                    return Err(failure.unwrap_or_else(|| InvocationError::Stopped {
                        function: invocation.function_id.clone(),
                    }));
                }
                Err(Exhausted::Offline) => {
                    return Err(failure.unwrap_or_else(|| InvocationError::NotFound {
                        function: invocation.function_id.clone(),
                        reason: NotFoundReason::NotReattached {
                            version: resolved.capability.version().clone(),
                        },
                    }));
                }
            }
        }
    }

    /// Sends the call to the REST service that provides it.
    async fn dispatch_rest(
        &self,
        resolved: &Resolved,
        invocation: &mut Invocation,
        (until, deadline): (tokio::time::Instant, Duration),
    ) -> Result<Payload, InvocationError> {
        let input = std::mem::take(&mut invocation.input)
            .into_value()
            .map_err(|error| InvocationError::InvalidInput {
                function: invocation.function_id.clone(),
                violations: error.to_string(),
            })?;
        self.builtins
            .rest
            .call(
                resolved.provider,
                &resolved.capability,
                &input,
                &invocation.trace,
                until,
                deadline,
            )
            .await
            .map(Payload::from)
    }

    /// No live provider of `resolved` took the call: waits while one is
    /// held for a reattach, then looks again — a reattach moves the version
    /// to a new connection. Gives the providers to try next, or why there
    /// are none.
    async fn next_round(
        &self,
        resolved: &Resolved,
        tried: &[ProviderId],
        until: tokio::time::Instant,
    ) -> Result<Resolved, Exhausted> {
        // Subscribed before checking, so a release in between is not missed.
        let mut releases = self.workers.releases();
        if self.providers(resolved).any(|p| self.workers.is_held(p)) {
            match tokio::time::timeout_at(until, releases.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Exhausted::Registry),
                Err(_) => return Err(Exhausted::Deadline),
            }
        }
        let fresh = self
            .catalog
            .providers_now(resolved)
            .ok_or(Exhausted::Offline)?;
        let progress = self
            .providers(&fresh)
            .any(|p| !tried.contains(&p) || self.workers.is_held(p));
        if progress {
            Ok(fresh)
        } else {
            Err(Exhausted::Tried)
        }
    }

    fn providers<'r>(&self, resolved: &'r Resolved) -> impl Iterator<Item = ProviderId> + 'r {
        std::iter::once(resolved.provider).chain(resolved.others.iter().copied())
    }

    /// The providers of `resolved`, least loaded first (round-robin order
    /// among equals).
    fn by_load(&self, resolved: &Resolved) -> Candidates {
        // Most functions have one provider: nothing to weigh or sort, and
        // no list to allocate per call (an empty `Vec` allocates nothing).
        if resolved.others.is_empty() {
            return self
                .workers
                .get(resolved.provider)
                .into_iter()
                .chain(Vec::new());
        }
        let mut candidates: Vec<(usize, Arc<WorkerHandle>)> = self
            .providers(resolved)
            .filter_map(|provider| self.workers.get(provider))
            .map(|worker| (worker.pending.len(), worker))
            .collect();
        candidates.sort_by_key(|(load, _)| *load);
        let sorted: Vec<_> = candidates.into_iter().map(|(_, worker)| worker).collect();
        None.into_iter().chain(sorted)
    }

    fn overloaded(
        &self,
        invocation: &Invocation,
        scope: &'static str,
        limit: usize,
    ) -> InvocationError {
        InvocationError::Overloaded {
            function: invocation.function_id.clone(),
            scope,
            limit,
        }
    }

    /// One attempt at one provider, until the call's deadline (the instant,
    /// and the length it was given, for the error).
    async fn attempt(
        &self,
        worker: &WorkerHandle,
        resolved: &Resolved,
        invocation: &Invocation,
        input: Payload,
        (until, deadline): (tokio::time::Instant, Duration),
    ) -> Result<Payload, Attempt> {
        let stopped = || InvocationError::Stopped {
            function: invocation.function_id.clone(),
        };
        if worker.pending.len() >= self.limits.per_worker {
            return Err(Attempt::Other(self.overloaded(
                invocation,
                "the worker providing it",
                self.limits.per_worker,
            )));
        }
        let call_id = self.ids.next();
        // Recorded before the frame is sent: a fast reply always finds it.
        let Ok((reply, mut abandon_on_drop)) = worker.start_call(call_id) else {
            return Err(Attempt::NeverStarted(stopped(), input));
        };
        let frame = Frame::InvokeFunction(InvokeFunction {
            // Encoded on the stack and copied once, at its length: through
            // `Display` the id's text grew its string as it was written.
            invocation_id: Some(
                call_id
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    .to_owned(),
            ),
            traceparent: invocation.trace.traceparent.clone(),
            baggage: invocation.trace.baggage.clone(),
            // iii peers route by id alone and are never sent fields they do not know.
            version: worker
                .is_capgate_aware()
                .then(|| resolved.capability.version().to_string()),
            ..InvokeFunction::new(invocation.function_id.clone(), input)
        });
        if !worker.send(&frame) {
            return Err(Attempt::NeverStarted(stopped(), input_of(frame)));
        }
        let reply = tokio::time::timeout_at(until, reply).await;
        if let Ok(Ok(_)) = reply {
            abandon_on_drop.answered();
        }
        match reply {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) if error.code == codes::INVOCATION_STOPPED => {
                Err(Attempt::Stopped(stopped(), input_of(frame)))
            }
            Ok(Ok(Err(error))) => Err(Attempt::Other(InvocationError::Failed {
                code: error.code,
                message: error.message,
                stacktrace: error.stacktrace,
            })),
            Ok(Err(_)) => Err(Attempt::Stopped(stopped(), input_of(frame))),
            Err(_) => {
                abandon_on_drop.reason =
                    format!("deadline of {} ms passed", deadline.as_millis()).into();
                Err(Attempt::Other(InvocationError::Timeout {
                    function: invocation.function_id.clone(),
                    after: deadline,
                }))
            }
        }
    }
}

/// A call's providers in the order to try them: the one provider, or
/// several sorted by load.
type Candidates = std::iter::Chain<
    std::option::IntoIter<Arc<WorkerHandle>>,
    std::vec::IntoIter<Arc<WorkerHandle>>,
>;

/// Why a call has no provider left to try.
enum Exhausted {
    /// Its deadline passed while its provider was held for a reattach.
    Deadline,
    /// The worker registry is gone (the gateway is stopping).
    Registry,
    /// Every provider was tried.
    Tried,
    /// Its version has no provider any more (a hold ended without a reattach).
    Offline,
}

/// How one attempt at one provider failed: whether the call may be tried
/// elsewhere, with its input back for that.
enum Attempt {
    /// The frame never left: safe to send to another provider.
    NeverStarted(InvocationError, Payload),
    /// The provider disconnected mid-call: the call may have run.
    Stopped(InvocationError, Payload),
    Other(InvocationError),
}

impl Attempt {
    fn into_error(self) -> InvocationError {
        match self {
            Self::NeverStarted(error, _) | Self::Stopped(error, _) | Self::Other(error) => error,
        }
    }
}

/// The input a call frame carried, for another attempt.
fn input_of(frame: Frame) -> Payload {
    match frame {
        Frame::InvokeFunction(call) => call.data,
        _ => Payload::null(),
    }
}

impl Invoker for InvocationPath {
    fn invoke(
        &self,
        invocation: Invocation,
    ) -> Pin<Box<dyn Future<Output = Result<Value, InvocationError>> + Send + '_>> {
        Box::pin(self.run(invocation))
    }
}

/// The iii engine tells a function which worker called it by adding
/// `_caller_worker_id` to object payloads; iii handlers may rely on it.
fn with_caller_id(input: Payload, caller: &Caller) -> Result<Payload, PayloadError> {
    match caller {
        Caller::Worker { worker_id, .. } => input.with_string_field("_caller_worker_id", worker_id),
        _ => Ok(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::future_size;

    /// Every call's future is allocated and moved as a whole, and is as
    /// large as its largest branch: built-ins and REST calls (store
    /// queries, an HTTP client) are boxed so that a worker call does not
    /// carry their size (unboxed they made it 4,304 bytes), and the steps
    /// themselves are boxed so that the callers' futures, which hold this
    /// one, are not copied at their size on every call (2,976 bytes with
    /// them inline).
    #[test]
    fn a_calls_future_does_not_carry_the_rare_branches() {
        let size = future_size(InvocationPath::run_noting);
        assert!(
            size <= 1_280,
            "a call's future is {size} bytes: box the large branch that grew it"
        );
    }
}

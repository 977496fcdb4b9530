//! The connection task: connect, announce, replay registrations, then read
//! and write until the socket drops; back off and do it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::Instrument as _;

use capgate_protocol::{ErrorBody, Frame, InvocationResult, InvokeFunction, Payload, codes};

use crate::function::handler_key;
use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_util::sync::CancellationToken;

use crate::worker::{CallError, Context, Outgoing, Shared, Worker, WorkerBuilder};

/// The upgrade request: the URL, and the worker's token when it has one.
fn request(shared: &Shared) -> Result<Request, tokio_tungstenite::tungstenite::Error> {
    let mut request = shared.url.as_str().into_client_request()?;
    if let Some(token) = &shared.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            tokio_tungstenite::tungstenite::Error::Url(
                tokio_tungstenite::tungstenite::error::UrlError::UnableToConnect(
                    "the worker token contains characters a header cannot carry".into(),
                ),
            )
        })?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    Ok(request)
}

pub(crate) async fn run(worker: Worker, mut queued: mpsc::UnboundedReceiver<Outgoing>) {
    let shared = worker.shared.clone();
    let mut attempt: u32 = 0;
    let mut previous: Option<(String, String)> = None;
    // A frame taken from the queue while the connection dropped, kept for the next.
    let mut carried: Option<Outgoing> = None;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        // TCP_NODELAY: frames are small request/response messages.
        let connecting = match request(&shared) {
            Ok(request) => tokio_tungstenite::connect_async_with_config(request, None, true).await,
            Err(error) => Err(error),
        };
        match connecting {
            Ok((socket, _)) => {
                attempt = 0;
                let (mut sink, mut stream) = socket.split();
                let mut opening = Vec::new();
                if let Some((worker_id, token)) = &previous {
                    opening.push(
                        Frame::Reattach {
                            previous_worker_id: worker_id.clone(),
                            reattach_token: token.clone(),
                        }
                        .to_json(),
                    );
                }
                // Announce first, so refusals come back in full (capgate peers).
                opening.push(worker.announcement());
                for (frame, _) in shared
                    .functions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                {
                    opening.push(Frame::RegisterFunction(Box::new(frame.clone())).to_json());
                }
                // After the functions, as iii SDKs send them.
                for trigger in shared
                    .triggers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                {
                    opening.push(Frame::RegisterTrigger(trigger.clone()).to_json());
                }
                let mut healthy = true;
                for text in opening {
                    healthy &= sink.feed(Message::text(text)).await.is_ok();
                }
                healthy &= sink.flush().await.is_ok();
                let mut pings = tokio::time::interval(shared.ping_interval);
                pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_heard = tokio::time::Instant::now();
                while healthy {
                    tokio::select! {
                        message = stream.next() => {
                            last_heard = tokio::time::Instant::now();
                            match message {
                                Some(Ok(Message::Text(text))) => on_frame(&worker, text.as_str(), &mut previous),
                                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                                Some(Ok(_)) => {}
                            }
                        },
                        _ = pings.tick() => {
                            // Two silent intervals: the gateway or the path to it
                            // is gone without a close (half-open); reconnect.
                            if last_heard.elapsed() >= shared.ping_interval * 2 {
                                tracing::warn!(url = %shared.url, silent_ms = last_heard.elapsed().as_millis() as u64,
                                    "the gateway fell silent; reconnecting");
                                break;
                            }
                            healthy &= sink.send(Message::Ping(Vec::new().into())).await.is_ok();
                        },
                        outgoing = next_outgoing(&mut carried, &mut queued) => {
                            let Some(first) = outgoing else { break };
                            let mut next = Some(first);
                            while let Some(outgoing) = next.take() {
                                let text = match &outgoing {
                                    Outgoing::Frame(text) => text.clone(),
                                    // Its caller gave up while the worker was
                                    // disconnected: the callee must not run it.
                                    Outgoing::Call { id, .. } if !shared.mark_sent(id, true) => {
                                        tracing::debug!(invocation_id = %id, "dropping a call that expired before it could be sent");
                                        next = queued.try_recv().ok();
                                        continue;
                                    }
                                    Outgoing::Call { frame, .. } => frame.clone(),
                                };
                                if sink.feed(Message::text(text)).await.is_err() {
                                    if let Outgoing::Call { id, .. } = &outgoing {
                                        shared.mark_sent(id, false);
                                    }
                                    carried = Some(outgoing);
                                    healthy = false;
                                    break;
                                }
                                next = queued.try_recv().ok();
                            }
                            healthy &= sink.flush().await.is_ok();
                        },
                        () = shared.shutdown.cancelled() => {
                            let _ = sink.send(Message::Close(None)).await;
                            break;
                        }
                    }
                }
                shared.connected.send_replace(None);
                // Calls already on the wire died with the connection; the
                // rest stay queued for the next one.
                for reply in shared.take_sent() {
                    let _ = reply.send(Err(CallError::ConnectionLost));
                }
            }
            Err(error) => {
                tracing::debug!(url = %shared.url, %error, attempt, "cannot connect to the gateway");
            }
        }
        if shared.shutdown.is_cancelled() {
            break;
        }
        let delay = shared.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => break,
        }
    }
    let pending: Vec<_> = shared
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for (_, call) in pending {
        let _ = call.reply.send(Err(CallError::Closed));
    }
}

async fn next_outgoing(
    carried: &mut Option<Outgoing>,
    queued: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> Option<Outgoing> {
    if let Some(outgoing) = carried.take() {
        return Some(outgoing);
    }
    queued.recv().await
}

fn on_frame(worker: &Worker, text: &str, previous: &mut Option<(String, String)>) {
    let shared = &worker.shared;
    let frame = match Frame::parse(text) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::debug!(%error, "ignoring a frame this SDK does not know");
            return;
        }
    };
    match frame {
        Frame::WorkerRegistered(registered) => {
            *previous = Some((registered.worker_id.clone(), registered.reattach_token));
            shared.connected.send_replace(Some(registered.worker_id));
        }
        Frame::InvocationResult(result) => {
            if let Some(sender) = shared.take_pending(&result.invocation_id) {
                let outcome = match result.error {
                    Some(error) => Err(CallError::from(error)),
                    None => result
                        .result
                        .unwrap_or_default()
                        .into_value()
                        .map_err(|error| {
                            CallError::from(ErrorBody::new(
                                codes::INVALID_OUTPUT,
                                error.to_string(),
                            ))
                        }),
                };
                let _ = sender.send(outcome);
            }
        }
        Frame::InvokeFunction(call) => run_handler(worker, call),
        Frame::CancelInvocation {
            invocation_id,
            reason,
        } => {
            let running = shared
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(token) = running.get(&invocation_id) {
                tracing::debug!(%invocation_id, %reason, "call cancelled by the gateway");
                token.cancel();
            }
        }
        Frame::RegistrationRejected(rejection) => {
            tracing::error!(?rejection, "the gateway refused a registration");
            shared
                .rejections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(rejection);
        }
        Frame::Error(error) => {
            tracing::warn!(code = %error.code, message = %error.message, "gateway reported an error")
        }
        Frame::TriggerRegistrationResult {
            error: Some(error),
            id,
            ..
        } => {
            tracing::warn!(trigger = %id, message = %error.message, "trigger refused");
        }
        _ => {}
    }
}

fn run_handler(worker: &Worker, mut call: InvokeFunction) {
    // Handlers take values: the data is parsed here, once.
    let mut input = std::mem::take(&mut call.data).into_value();
    // The gateway adds `_caller_worker_id` to object payloads (as the iii
    // engine does); it belongs in the context, not in the handler's input.
    let caller_worker_id = match &mut input {
        Ok(Value::Object(map)) => match map.remove("_caller_worker_id") {
            Some(Value::String(id)) => Some(id),
            _ => None,
        },
        _ => None,
    };
    let handler = {
        let functions = worker
            .shared
            .functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // capgate names the exact version it resolved; a gateway that does
        // not (iii) gets whichever version of the id is registered.
        functions
            .get(&handler_key(&call.function_id, call.version.as_deref()))
            .or_else(|| {
                functions
                    .values()
                    .find(|(frame, _)| frame.id == call.function_id)
            })
            .map(|(_, handler)| handler.clone())
    };
    let worker = worker.clone();
    let span = handler_span(&call);
    tokio::spawn(
        async move {
            let Some(invocation_id) = call.invocation_id.clone() else {
                // Fire-and-forget deliveries still carry an id from the gateway;
                // a frame without one has nobody to answer.
                if let (Some(handler), Ok(input)) = (handler, input) {
                    let ctx = context(&worker, &call, String::new(), caller_worker_id);
                    let _ = handler(input, ctx).await;
                }
                return;
            };
            let outcome = match (handler, input) {
                (Some(_), Err(error)) => {
                    Err(ErrorBody::new(codes::INVALID_ARGUMENTS, error.to_string()))
                }
                (Some(handler), Ok(input)) => {
                    let ctx = context(&worker, &call, invocation_id.clone(), caller_worker_id);
                    let _running = Running::new(&worker, &invocation_id, &ctx.cancellation);
                    // A panicking handler must still answer its caller.
                    match AssertUnwindSafe(handler(input, ctx)).catch_unwind().await {
                        Ok(outcome) => outcome.map(Payload::from).map_err(|e| e.into_body()),
                        Err(panic) => Err(ErrorBody::new(
                            codes::INVOCATION_FAILED,
                            format!("handler panicked: {}", panic_message(panic.as_ref())),
                        )),
                    }
                }
                (None, _) => Err(ErrorBody::new(
                    codes::FUNCTION_NOT_FOUND,
                    format!(
                        "Function {} is not registered on this worker",
                        call.function_id
                    ),
                )),
            };
            let frame = Frame::InvocationResult(InvocationResult {
                traceparent: call.traceparent,
                baggage: call.baggage,
                ..InvocationResult::new(invocation_id, call.function_id, outcome)
            });
            let _ = worker.shared.outbox.send(Outgoing::Frame(frame.to_json()));
        }
        .instrument(span),
    );
}

/// The span a handler runs in: its log lines carry the function and the
/// trace (and parent span) it was called in, so they can be found from
/// the gateway's trace.
fn handler_span(call: &InvokeFunction) -> tracing::Span {
    // `get`, not indexing: a peer may send anything as a traceparent.
    let parent = call.traceparent.as_deref();
    tracing::info_span!(
        "handle",
        function = %call.function_id,
        trace_id = parent.and_then(|p| p.get(3..35)),
        parent_id = parent.and_then(|p| p.get(36..52)),
    )
}

fn context(
    worker: &Worker,
    call: &InvokeFunction,
    invocation_id: String,
    caller_worker_id: Option<String>,
) -> Context {
    Context {
        invocation_id,
        function_id: call.function_id.clone(),
        caller_worker_id,
        traceparent: call.traceparent.clone(),
        baggage: call.baggage.clone(),
        worker: worker.clone(),
        cancellation: CancellationToken::new(),
    }
}

/// A call in the worker's table of running calls while its handler runs,
/// so a `cancelinvocation` frame can reach it.
struct Running {
    worker: Worker,
    invocation_id: String,
}

impl Running {
    fn new(worker: &Worker, invocation_id: &str, token: &CancellationToken) -> Self {
        worker
            .shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(invocation_id.to_owned(), token.clone());
        Self {
            worker: worker.clone(),
            invocation_id: invocation_id.to_owned(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.worker
            .shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.invocation_id);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
/// Starting a worker is starting its connection task.
impl WorkerBuilder {
    /// Starts the connection task without waiting for the first connection.
    pub fn spawn(self) -> Worker {
        let (outbox, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            url: self.url,
            name: self.name,
            token: self.token,
            backoff: self.backoff,
            ping_interval: self.ping_interval,
            functions: Mutex::new(HashMap::new()),
            triggers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            outbox,
            connected: watch::channel(None).0,
            rejections: Mutex::new(Vec::new()),
            running: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        });
        let worker = Worker::kept(shared);
        tokio::spawn(run(worker.unkept(), queued));
        worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enables every span, so that the span's fields are evaluated (with
    /// no subscriber they are not, and the test could not fail).
    struct Everything;

    impl tracing::Subscriber for Everything {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_hostile_traceparent_does_not_break_the_handler_span() {
        tracing::subscriber::with_default(Everything, || {
            for parent in ["", "00-short", &"é".repeat(40), &"-".repeat(60)] {
                let call = InvokeFunction {
                    traceparent: Some(parent.to_owned()),
                    ..InvokeFunction::new("a::b", serde_json::json!({}))
                };
                assert!(!handler_span(&call).is_disabled());
            }
        });
    }
}

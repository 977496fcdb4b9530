//! Function queues: calls a worker enqueued (`invokefunction` with
//! `action: {type: "enqueue", queue}`) run later, each as the caller that
//! enqueued it, on the one invocation path — with the queue's retries,
//! concurrency and ordering from `[[queues.function_queues]]`.

use std::sync::Arc;

use capgate_catalog::{Invocation, TriggerSource};
use tokio_util::sync::CancellationToken;

use super::config::Ordering;
use super::consumer::{self, ConsumerSpec, Handled};
use super::subscriber::{handled, input_of};
use super::{GroupSettings, Queues};
use crate::triggers::TriggerServices;

/// The source of every call a function queue makes: `queue` and its name.
pub const SOURCE_TYPE: &str = "queue";

/// Starts a consumer for every configured function queue; they stop with
/// `stop`.
pub fn start(queues: &Arc<Queues>, services: &TriggerServices, stop: &CancellationToken) {
    for settings in &queues.config().function_queues {
        let spec = ConsumerSpec {
            queue: settings.name.clone(),
            consumer: String::new(),
            policy: settings.policy(),
        };
        let source = TriggerSource {
            trigger_type: SOURCE_TYPE.into(),
            trigger_id: settings.name.as_str().into(),
        };
        let services = services.clone();
        let lease = spec.policy.visibility;
        let group = GroupSettings {
            delay: spec.policy.delay,
            fifo: spec.policy.ordering != Ordering::Concurrent,
            concurrency: spec.policy.concurrency,
        };
        let queues = queues.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(error) = queues.backend().join(&spec.queue, "", group).await {
                tracing::error!(queue = %spec.queue, %error, "could not start the function queue's consumer");
                return;
            }
            consumer::run(queues, spec, stop, move |delivery| {
                let (services, source) = (services.clone(), source.clone());
                async move {
                    let Some(function_id) = delivery.meta.function_id.clone() else {
                        return Handled::Failed {
                            error: "the queued call names no function".into(),
                            retry: false,
                        };
                    };
                    // Never made as anyone but the caller that enqueued it.
                    let Some(caller) = delivery.meta.caller.clone() else {
                        return Handled::Failed {
                            error: "the queued call names no caller".into(),
                            retry: false,
                        };
                    };
                    let invocation = Invocation {
                        trace: delivery.meta.trace(),
                        source: Some(source),
                        timeout: Some(lease),
                        ..Invocation::new(function_id, input_of(delivery.data), caller)
                    };
                    let outcome = services.invoker.invoke(invocation).await;
                    let code = outcome
                        .as_ref()
                        .err()
                        .map(|e| services.host.error_code(e))
                        .unwrap_or_default();
                    handled(outcome, &code)
                }
            })
            .await;
        });
    }
}

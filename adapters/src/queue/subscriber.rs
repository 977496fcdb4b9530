//! The `durable:subscriber` trigger: a topic's messages to a function, as
//! the trigger's owner — iii's `config {topic, condition_function_id?,
//! queue_config?}`. The function's answer acknowledges a message; an error
//! retries it with backoff, and after `maxRetries` retries it goes to the
//! topic's dead letters (at once when its input fails the function's
//! schema: no retry can fix that).

use std::sync::Arc;

use capgate_catalog::{InvocationError, Payload};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;

use super::config::{Ordering, SubscriberQueueConfig};
use super::consumer::{self, ConsumerSpec, Handled};
use super::{GroupSettings, Queues, check_topic};
use crate::triggers::fire::{Fired, Firing};
use crate::triggers::{
    TriggerContext, TriggerError, TriggerKind, TriggerSpec, check_condition, parse_config,
};

/// The trigger type workers register.
pub const TRIGGER_TYPE: &str = "durable:subscriber";

/// Subscriptions one owner may hold.
pub const MAX_PER_OWNER: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriberConfig {
    topic: String,
    #[serde(default)]
    condition_function_id: Option<String>,
    #[serde(default)]
    queue_config: Option<SubscriberQueueConfig>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Value>,
}

/// The kind, for the [`crate::triggers::Triggers`] registry.
pub struct DurableSubscriber {
    queues: Arc<Queues>,
}

impl DurableSubscriber {
    pub fn new(queues: Arc<Queues>) -> Self {
        Self { queues }
    }
}

fn invalid(reason: impl Into<String>) -> TriggerError {
    TriggerError::InvalidConfig {
        trigger_type: TRIGGER_TYPE,
        reason: reason.into(),
    }
}

/// A message's data as the call's input, without parsing it.
pub(crate) fn input_of(data: String) -> Payload {
    match RawValue::from_string(data) {
        Ok(raw) => Payload::from(raw),
        Err(_) => Payload::null(),
    }
}

/// How a delivery's call ended, for the consumer.
pub(crate) fn handled(outcome: Result<Value, InvocationError>, code: &str) -> Handled {
    match outcome {
        Ok(_) => Handled::Done,
        Err(error) => Handled::Failed {
            // Input the function's schema refuses is refused on every retry.
            retry: !matches!(error, InvocationError::InvalidInput { .. }),
            error: format!("{code}: {error}"),
        },
    }
}

impl TriggerKind for DurableSubscriber {
    fn trigger_type(&self) -> &'static str {
        TRIGGER_TYPE
    }

    fn description(&self) -> &'static str {
        "Calls the function with each message published to a topic, durably: retried with backoff, then dead-lettered"
    }

    fn limit_per_owner(&self) -> usize {
        MAX_PER_OWNER
    }

    fn start(
        &self,
        spec: &TriggerSpec,
        context: TriggerContext,
    ) -> Result<JoinHandle<()>, TriggerError> {
        let config: SubscriberConfig = parse_config(
            TRIGGER_TYPE,
            &spec.config,
            "topic, condition_function_id and queue_config {type, maxRetries, concurrency, visibilityTimeout, delaySeconds, backoffType, backoffDelayMs}",
        )?;
        check_topic(&config.topic).map_err(|error| invalid(error.to_string()))?;
        if self.queues.config().function_queue(&config.topic).is_some() {
            return Err(invalid(format!(
                "'{}' is a function queue, whose calls name their function; subscribe to a topic instead",
                config.topic
            )));
        }
        check_condition(TRIGGER_TYPE, config.condition_function_id.as_deref())?;
        let policy = config
            .queue_config
            .unwrap_or_default()
            .policy()
            .map_err(invalid)?;
        super::may_consume(&context, &config.topic)?;
        let queues = self.queues.clone();
        let function_id = spec.function_id.clone();
        let condition = config.condition_function_id;
        let topic = config.topic;
        Ok(tokio::spawn(async move {
            let group = GroupSettings {
                delay: policy.delay,
                fifo: policy.ordering == Ordering::Fifo,
                concurrency: policy.concurrency,
            };
            if let Err(error) = queues.backend().join(&topic, &function_id, group).await {
                tracing::error!(%topic, function = %function_id, %error, "could not subscribe to the topic");
                return;
            }
            let spec = ConsumerSpec {
                queue: topic,
                consumer: function_id.clone(),
                policy: policy.clone(),
            };
            let stop = context.stop.clone();
            let context = Arc::new(context);
            let (function_id, condition) = (Arc::new(function_id), Arc::new(condition));
            consumer::run(queues, spec, stop, move |delivery| {
                let (context, function_id, condition) =
                    (context.clone(), function_id.clone(), condition.clone());
                let lease = policy.visibility;
                async move {
                    let firing = Firing {
                        function_id: &function_id,
                        condition: condition.as_deref(),
                        caller: &context.owner,
                        source: &context.source,
                        trace: delivery.meta.trace(),
                        timeout: Some(lease),
                    };
                    let fired = firing
                        .run(
                            context.services.invoker.as_ref(),
                            input_of(delivery.data),
                            &context.stats,
                        )
                        .await;
                    match fired {
                        Fired::Called(outcome) => {
                            let code = outcome
                                .as_ref()
                                .err()
                                .map(|e| context.services.host.error_code(e))
                                .unwrap_or_default();
                            handled(outcome, &code)
                        }
                        Fired::ConditionNotMet => Handled::Done,
                        Fired::ConditionFailed(error) => {
                            context.stats.fired(true);
                            Handled::Failed {
                                error: format!("the condition failed: {error}"),
                                retry: true,
                            }
                        }
                    }
                }
            })
            .await;
        }))
    }
}

//! Non-durable pub/sub, as iii's `subscribe` trigger and `publish`
//! built-in: a message goes to the topic's subscriptions of this gateway
//! that exist when it is published, each calls its function with the data
//! once, in publish order; nothing is kept, nothing retried. A
//! subscription that falls behind its queue loses messages, counted in its
//! trigger's `dropped`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use capgate_catalog::TraceContext;
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::check_topic;
use crate::triggers::fanout::Fanout;
use crate::triggers::fire::{Fired, Firing};
use crate::triggers::{
    TriggerContext, TriggerError, TriggerKind, TriggerSpec, check_condition, parse_config,
};

/// The trigger type workers register.
pub const TRIGGER_TYPE: &str = "subscribe";

/// Subscriptions one owner may hold.
pub const MAX_PER_OWNER: usize = 256;

/// A message published to a topic.
#[derive(Debug)]
pub struct Published {
    pub topic: String,
    pub data: Value,
    pub trace: TraceContext,
}

/// The topics' subscriptions.
pub type Topics = Fanout<Published>;

/// Publishes to every current subscription of the topic; how many took it.
pub fn publish(
    topics: &Topics,
    topic: &str,
    data: Value,
    trace: TraceContext,
) -> Result<usize, super::QueueError> {
    check_topic(topic)?;
    Ok(topics.publish(Published {
        topic: topic.to_owned(),
        data,
        trace,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeConfig {
    topic: String,
    #[serde(default)]
    condition_function_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Value>,
}

/// The kind, for the [`crate::triggers::Triggers`] registry.
pub struct Subscribe {
    topics: Arc<Topics>,
}

impl Subscribe {
    pub fn new(topics: Arc<Topics>) -> Self {
        Self { topics }
    }
}

impl TriggerKind for Subscribe {
    fn trigger_type(&self) -> &'static str {
        TRIGGER_TYPE
    }

    fn description(&self) -> &'static str {
        "Calls the function with each message published to a topic while it is subscribed (not durable: no retries)"
    }

    fn limit_per_owner(&self) -> usize {
        MAX_PER_OWNER
    }

    fn start(
        &self,
        spec: &TriggerSpec,
        context: TriggerContext,
    ) -> Result<JoinHandle<()>, TriggerError> {
        let config: SubscribeConfig = parse_config(
            TRIGGER_TYPE,
            &spec.config,
            "topic and condition_function_id",
        )?;
        check_topic(&config.topic).map_err(|error| TriggerError::InvalidConfig {
            trigger_type: TRIGGER_TYPE,
            reason: error.to_string(),
        })?;
        check_condition(TRIGGER_TYPE, config.condition_function_id.as_deref())?;
        super::may_consume(&context, &config.topic)?;
        let topic = config.topic;
        let mut subscription = self.topics.subscribe(
            move |message: &Published| message.topic == topic,
            context.stats.dropped.clone(),
        );
        let function_id = spec.function_id.clone();
        let id = spec.id.clone();
        let condition = config.condition_function_id;
        Ok(tokio::spawn(async move {
            let mut reported = 0;
            loop {
                let message = tokio::select! {
                    () = context.stop.cancelled() => return,
                    message = subscription.events.recv() => match message {
                        Some(message) => message,
                        None => return,
                    },
                };
                let dropped = subscription.dropped.load(Ordering::Relaxed);
                if dropped > reported {
                    tracing::warn!(trigger = %id, function = %function_id, lost = dropped - reported,
                        "subscription fell behind: messages were dropped");
                    reported = dropped;
                }
                let firing = Firing {
                    function_id: &function_id,
                    condition: condition.as_deref(),
                    caller: &context.owner,
                    source: &context.source,
                    trace: message.trace.clone(),
                    timeout: None,
                };
                let fired = firing
                    .run(
                        context.services.invoker.as_ref(),
                        message.data.clone(),
                        &context.stats,
                    )
                    .await;
                match fired {
                    Fired::Called(Ok(_)) | Fired::ConditionNotMet => {}
                    Fired::Called(Err(error)) => {
                        tracing::warn!(trigger = %id, function = %function_id, %error, "subscribe trigger call failed (not retried)");
                    }
                    Fired::ConditionFailed(error) => {
                        context.stats.fired(true);
                        tracing::warn!(trigger = %id, %error, "subscribe trigger condition failed; the function was not called");
                    }
                }
            }
        }))
    }
}

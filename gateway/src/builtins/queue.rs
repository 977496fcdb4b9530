//! The queue built-ins: iii's durable publish and dead-letter functions,
//! and non-durable `publish`, with each topic's policy — `write` on
//! `queue::TOPIC` to publish, redrive or discard, `read` to list its dead
//! letters.

use std::time::Duration;

use capgate_adapters::queue::{PublishOptions, QueueError, pubsub};
use capgate_catalog::{Invocation, InvocationError};
use capgate_policies::Action;
use capgate_protocol::builtins as names;
use serde_json::{Value, json};

use super::{BuiltinContext, failed, invalid, require, text};

/// Dead letters one `dlq_messages` call answers with at most.
const MAX_PAGE: usize = 1_000;

/// Which queue built-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueCall {
    DurablePublish,
    Publish,
    DlqTopics,
    DlqMessages,
    Redrive,
    RedriveMessage,
    DiscardMessage,
}

impl QueueCall {
    pub fn named(function_id: &str) -> Option<Self> {
        Some(match function_id {
            names::DURABLE_PUBLISH | names::QUEUE_PUBLISH => Self::DurablePublish,
            names::PUBLISH => Self::Publish,
            names::DLQ_TOPICS => Self::DlqTopics,
            names::DLQ_MESSAGES => Self::DlqMessages,
            names::QUEUE_REDRIVE => Self::Redrive,
            names::QUEUE_REDRIVE_MESSAGE => Self::RedriveMessage,
            names::QUEUE_DISCARD_MESSAGE => Self::DiscardMessage,
            _ => return None,
        })
    }
}

/// The policy object of a topic (or function queue).
pub fn topic_object(topic: &str) -> String {
    format!("queue::{topic}")
}

pub(super) async fn call(
    path: &BuiltinContext,
    call: QueueCall,
    invocation: &Invocation,
    input: &Value,
) -> Result<Value, InvocationError> {
    let function = invocation.function_id.as_str();
    let caller = &invocation.caller;
    let refused = |error: QueueError| queue_error(function, error);
    if call == QueueCall::DlqTopics {
        let topics: Vec<Value> = path
            .queues
            .dead_counts()
            .await
            .map_err(refused)?
            .into_iter()
            .filter(|(topic, _)| super::allowed(path, caller, Action::Read, &topic_object(topic)))
            .map(|(topic, count)| json!({"topic": topic, "message_count": count}))
            .collect();
        return Ok(json!({ "topics": topics }));
    }
    // iii names the topic `queue` in redrive; both are taken everywhere.
    let topic = input
        .get("topic")
        .or_else(|| input.get("queue"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(function, "'topic' (or 'queue') is missing or not a string"))?;
    let object = topic_object(topic);
    let audited = |action: &str| {
        (
            "queue",
            json!({"function": function, "topic": topic, "action": action}),
        )
    };
    match call {
        QueueCall::DurablePublish => {
            require(path, caller, Action::Write, &object, audited("publish")).await?;
            let data = input.get("data").cloned().unwrap_or(Value::Null);
            let options = PublishOptions {
                delay: Duration::from_secs(
                    input
                        .get("delay_seconds")
                        .or_else(|| input.get("delaySeconds"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                ),
                idempotency_key: optional_text(function, input, "idempotency_key")?,
                group: optional_text(function, input, "message_group")?,
                trace: invocation.trace.clone(),
            };
            let published = path
                .queues
                .publish(topic, &data, options)
                .await
                .map_err(refused)?;
            Ok(json!({
                "messageReceiptId": published.receipt,
                "duplicate": published.duplicate,
            }))
        }
        QueueCall::Publish => {
            require(path, caller, Action::Write, &object, audited("publish")).await?;
            let data = input.get("data").cloned().unwrap_or(Value::Null);
            let delivered = pubsub::publish(&path.topics, topic, data, invocation.trace.clone())
                .map_err(refused)?;
            Ok(json!({ "delivered": delivered }))
        }
        QueueCall::DlqMessages => {
            if !super::allowed(path, caller, Action::Read, &object) {
                return Ok(json!({ "messages": [] }));
            }
            let number = |field: &str, default: u64| {
                input
                    .get(field)
                    .and_then(Value::as_u64)
                    .map_or(default, |n| n)
            };
            let offset = usize::try_from(number("offset", 0)).unwrap_or(usize::MAX);
            let limit = usize::try_from(number("limit", 100))
                .unwrap_or(MAX_PAGE)
                .min(MAX_PAGE);
            let messages = path
                .queues
                .dead_letters(topic, offset, limit)
                .await
                .map_err(refused)?;
            Ok(json!({ "messages": messages }))
        }
        QueueCall::Redrive => {
            require(path, caller, Action::Write, &object, audited("redrive")).await?;
            let redriven = path.queues.redrive(topic, None).await.map_err(refused)?;
            Ok(json!({ "queue": topic, "redriven": redriven }))
        }
        QueueCall::RedriveMessage | QueueCall::DiscardMessage => {
            let id = text(function, input, "message_id")?;
            if call == QueueCall::RedriveMessage {
                require(path, caller, Action::Write, &object, audited("redrive")).await?;
                let redriven = path
                    .queues
                    .redrive(topic, Some(id))
                    .await
                    .map_err(refused)?;
                Ok(json!({ "queue": topic, "redriven": redriven }))
            } else {
                require(path, caller, Action::Write, &object, audited("discard")).await?;
                let discarded = path.queues.discard(topic, id).await.map_err(refused)?;
                Ok(json!({ "queue": topic, "discarded": discarded }))
            }
        }
        QueueCall::DlqTopics => Err(invalid(function, "not a topic call")),
    }
}

fn optional_text(
    function: &str,
    input: &Value,
    field: &str,
) -> Result<Option<String>, InvocationError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(invalid(function, format!("'{field}' must be a string"))),
    }
}

/// A queue refusal as the error code peers see.
pub fn queue_error(function: &str, error: QueueError) -> InvocationError {
    match error {
        QueueError::Invalid(_)
        | QueueError::TooLarge { .. }
        | QueueError::FunctionQueue { .. }
        | QueueError::UnknownQueue { .. } => invalid(function, error.to_string()),
        QueueError::Busy { limit } => InvocationError::Overloaded {
            function: function.to_owned(),
            scope: "the queue writer",
            limit,
        },
        QueueError::Full { .. } | QueueError::AllFull { .. } => {
            failed("queue_full", error.to_string())
        }
        QueueError::Stalled { .. } => failed("queue_stalled", error.to_string()),
        QueueError::Store(_) => failed("store_unavailable", error.to_string()),
    }
}

//! Durable queues: messages published to a topic (or calls put on a named
//! function queue) kept until a consumer acknowledges them, retried with
//! backoff, and moved to the dead letters after their retries.
//!
//! - [`Queues`] is what the rest of capgate uses: publish, enqueue, the
//!   dead letters, counts. It holds a [`Backend`]: the [`embedded`] queue
//!   in capgate's store (the default).
//! - [`consumer`] runs one consumer: claims messages, hands each to a
//!   handler with its lease, settles it (ack, retry after a backoff, or the
//!   dead letters) by the [`config::DeliveryPolicy`].
//! - [`subscriber`] is the `durable:subscriber` trigger kind (a topic's
//!   messages to a function, as its owner); [`function_queues`] runs the
//!   calls workers enqueued; [`pubsub`] is the non-durable `subscribe`
//!   kind and its `publish`.
//!
//! A topic's message is delivered to every subscribed function (each
//! function is a consumer group; several subscriptions of one function
//! share its messages). Delivery is at least once: a message is deleted
//! only when its handler answered, so a gateway that dies mid-delivery
//! delivers it again once its lease lapses.
//!
//! Must not know: who may publish or read (the gateway's policy decides
//! before calling in), the worker protocol or MCP.

pub mod config;
pub mod consumer;
pub mod embedded;
pub mod function_queues;
pub mod nats;
pub mod pubsub;
pub mod subscriber;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use capgate_catalog::store::{QueueCounts, Store};
use capgate_catalog::{Caller, TraceContext};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

pub use config::{DeliveryPolicy, QueuesConfig};

/// Refuses a subscription whose owner may not read `topic`, naming the
/// rule to ask for (both topic trigger kinds check it).
pub(crate) fn may_consume(
    context: &crate::triggers::TriggerContext,
    topic: &str,
) -> Result<(), crate::triggers::TriggerError> {
    if context.services.host.may_consume(&context.owner, topic) {
        return Ok(());
    }
    Err(crate::triggers::TriggerError::Refused(format!(
        "{} may not read topic '{topic}'; ask for a 'read' rule on queue::{topic}",
        context.owner.subject()
    )))
}

/// Longest topic or queue name.
pub const MAX_TOPIC_CHARS: usize = 128;
/// Queues with consumers' wakers kept before the unused are forgotten.
const MAX_WAKERS: usize = 1_024;
/// Longest idempotency key and message group.
pub const MAX_KEY_BYTES: usize = 256;

/// Why a queue operation failed. Each says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the message is {size} bytes as JSON, over the {limit} byte limit of a queued message; send less (or a reference to it)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "queue '{queue}' holds its limit of {limit} messages; nothing was queued. Let its consumers catch up, or raise [queues] max_depth"
    )]
    Full { queue: String, limit: u64 },
    #[error(
        "the queues hold their limit of {limit} messages in all; nothing was queued. Let their consumers catch up, purge what is not needed (capgate queues purge), or raise [queues] max_messages"
    )]
    AllFull { limit: u64 },
    #[error(
        "queue '{queue}' holds a message {age_s} s old, over its {limit_s} s limit: its consumers are not keeping up, and nothing was queued. Fix or add its consumers, redrive or purge it (capgate queues), or raise [queues] max_age_ms"
    )]
    Stalled {
        queue: String,
        age_s: u64,
        limit_s: u64,
    },
    #[error(
        "queue '{queue}' is not configured; add a [[queues.function_queues]] entry with name = \"{queue}\" to capgate.toml"
    )]
    UnknownQueue { queue: String },
    #[error(
        "'{queue}' is a function queue: put calls on it with an invokefunction whose action is {{\"type\": \"enqueue\", \"queue\": \"{queue}\"}}, not by publishing or subscribing"
    )]
    FunctionQueue { queue: String },
    #[error("{limit} queue operations are already waiting for the store; retry shortly")]
    Busy { limit: usize },
    #[error("the queue could not use its store: {0}; retry")]
    Store(String),
}

impl From<capgate_catalog::store::StoreError> for QueueError {
    fn from(error: capgate_catalog::store::StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

/// A topic or queue name: 1–128 of letters, digits, `_`, `-` and `.` (one
/// segment of the policy object `queue::NAME`).
pub fn check_topic(topic: &str) -> Result<(), QueueError> {
    if crate::names::is_segment(topic, MAX_TOPIC_CHARS) {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!(
            "{topic:?} is not a topic name; use 1 to {MAX_TOPIC_CHARS} letters, digits, '_', '-' or '.'"
        )))
    }
}

fn check_text(what: &str, text: &str) -> Result<(), QueueError> {
    if !crate::names::is_plain_text(text, MAX_KEY_BYTES) {
        return Err(QueueError::Invalid(format!(
            "{what} must be 1 to {MAX_KEY_BYTES} bytes of text without control characters"
        )));
    }
    Ok(())
}

/// What a message carries besides its data: the call a function queue
/// makes, and the trace context the delivery continues.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
}

impl MessageMeta {
    fn with_trace(mut self, trace: &TraceContext) -> Self {
        self.traceparent.clone_from(&trace.traceparent);
        self.tracestate.clone_from(&trace.tracestate);
        self.baggage.clone_from(&trace.baggage);
        self
    }

    pub fn trace(&self) -> TraceContext {
        TraceContext {
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
            baggage: self.baggage.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How a consumer group takes a topic's messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSettings {
    /// Each message waits this long after it is published.
    pub delay: Duration,
    /// One message at a time, in publish order (per message group when the
    /// publisher names one).
    pub fifo: bool,
    /// Messages one consumer of the group works on at once (a server-side
    /// backend bounds what it hands out by it; 0: unknown).
    pub concurrency: usize,
}

/// A message on its way to a backend.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub queue: String,
    /// JSON text.
    pub data: String,
    pub meta: MessageMeta,
    /// FIFO: messages of one group are delivered one at a time, in order.
    pub group: Option<String>,
    pub delay: Duration,
    pub idempotency_key: Option<String>,
}

/// The publisher's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's id (iii's `messageReceiptId`).
    pub receipt: String,
    /// An earlier message with the same idempotency key was kept instead.
    pub duplicate: bool,
}

/// A message leased to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub(crate) seq: i64,
    pub receipt: String,
    pub queue: String,
    pub consumer: String,
    pub group: Option<String>,
    /// JSON text.
    pub data: String,
    pub meta: MessageMeta,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub enqueued_ms: i64,
    /// The JetStream message, which its settlement acknowledges.
    pub(crate) nats: Option<Arc<async_nats::jetstream::Message>>,
}

impl Delivery {
    /// What settling the delivery needs: all but its data and meta.
    pub(crate) fn ticket(&self) -> Self {
        Self {
            seq: self.seq,
            receipt: self.receipt.clone(),
            queue: self.queue.clone(),
            consumer: self.consumer.clone(),
            group: None,
            data: String::new(),
            meta: MessageMeta::default(),
            attempt: self.attempt,
            enqueued_ms: self.enqueued_ms,
            nats: self.nats.clone(),
        }
    }
}

/// What becomes of a delivered message.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    Ack,
    Retry { after: Duration, error: String },
    Bury { error: String },
}

/// A dead letter, as listings show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterView {
    pub message_id: String,
    pub queue: String,
    pub consumer: String,
    pub data: Value,
    pub attempts: i64,
    pub error: Option<String>,
    pub enqueued_ms: i64,
    pub failed_ms: Option<i64>,
}

/// One queue implementation. The embedded one keeps messages in capgate's
/// store; every operation's answer comes after what it changed is durable.
pub trait Backend: Send + Sync + 'static {
    /// `embedded`, `nats`.
    fn name(&self) -> &'static str;
    /// Whether an empty claim already waited for messages (a pull from a
    /// server), so a consumer claims again at once instead of sleeping.
    fn waits_for_messages(&self) -> bool {
        false
    }
    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<Published, QueueError>>;
    /// Makes `consumer` a consumer group of `queue`: every message
    /// published from now on is delivered to it, as `group` says.
    fn join(
        &self,
        queue: &str,
        consumer: &str,
        group: GroupSettings,
    ) -> BoxFuture<'_, Result<(), QueueError>>;
    fn claim(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, QueueError>>;
    fn settle(&self, delivery: &Delivery, settle: Settle) -> BoxFuture<'_, Result<(), QueueError>>;
    /// When the consumer's next message becomes visible (Unix ms), if any.
    fn next_due(
        &self,
        queue: &str,
        consumer: &str,
    ) -> BoxFuture<'_, Result<Option<i64>, QueueError>>;
    fn counts(&self) -> BoxFuture<'_, Result<Vec<QueueCounts>, QueueError>>;
    fn dead_counts(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, QueueError>>;
    fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetterView>, QueueError>>;
    /// Dead letters (one by id, or all of the queue) delivered again; how many.
    fn redrive(
        &self,
        queue: &str,
        message_id: Option<&str>,
    ) -> BoxFuture<'_, Result<u64, QueueError>>;
    fn discard(&self, queue: &str, message_id: &str) -> BoxFuture<'_, Result<bool, QueueError>>;
    /// Every message of the queue deleted; how many live ones.
    fn purge(&self, queue: &str) -> BoxFuture<'_, Result<u64, QueueError>>;
}

/// Options of a publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub delay: Duration,
    pub idempotency_key: Option<String>,
    /// FIFO group of the message, for the topic's `fifo` subscribers
    /// (without one, a `fifo` subscriber takes the whole topic in order).
    pub group: Option<String>,
    pub trace: TraceContext,
}

/// The queues of this gateway.
pub struct Queues {
    backend: Arc<dyn Backend>,
    config: QueuesConfig,
    /// Wakes a queue's idle consumers when something was published to it.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Queues {
    /// Opens the configured backend.
    pub async fn open(store: Store, config: QueuesConfig) -> Result<Arc<Self>, QueueError> {
        config.check().map_err(QueueError::Invalid)?;
        let backend: Arc<dyn Backend> = match config.backend.as_str() {
            "embedded" => Arc::new(embedded::Embedded::open(store, &config).await?),
            _ => Arc::new(nats::Nats::open(&config).await?),
        };
        Ok(Arc::new(Self {
            backend,
            config,
            wakers: Mutex::new(HashMap::new()),
        }))
    }

    pub fn config(&self) -> &QueuesConfig {
        &self.config
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The notifier of `queue`'s consumers.
    pub fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        // Queues whose consumers all ended are forgotten, so that topics
        // subscribed to once do not stay here for good.
        if wakers.len() >= MAX_WAKERS {
            wakers.retain(|_, waker| Arc::strong_count(waker) > 1);
        }
        wakers.entry(queue.to_owned()).or_default().clone()
    }

    fn wake(&self, queue: &str) {
        let waker = self
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .cloned();
        if let Some(waker) = waker {
            waker.notify_waiters();
        }
    }

    fn encode(&self, data: &Value) -> Result<String, QueueError> {
        let text = serde_json::to_string(data).map_err(|e| QueueError::Invalid(e.to_string()))?;
        if text.len() > self.config.max_message_bytes {
            return Err(QueueError::TooLarge {
                size: text.len(),
                limit: self.config.max_message_bytes,
            });
        }
        Ok(text)
    }

    /// Publishes `data` to a topic; answered once it is durable.
    pub async fn publish(
        &self,
        topic: &str,
        data: &Value,
        options: PublishOptions,
    ) -> Result<Published, QueueError> {
        check_topic(topic)?;
        if self.config.function_queue(topic).is_some() {
            return Err(QueueError::FunctionQueue {
                queue: topic.to_owned(),
            });
        }
        if let Some(key) = &options.idempotency_key {
            check_text("idempotency_key", key)?;
        }
        if let Some(group) = &options.group {
            check_text("message group", group)?;
        }
        if options.delay > config::MAX_DELAY {
            return Err(QueueError::Invalid(format!(
                "a delay of {} s is over the {} s limit",
                options.delay.as_secs(),
                config::MAX_DELAY.as_secs()
            )));
        }
        let message = Outgoing {
            queue: topic.to_owned(),
            data: self.encode(data)?,
            meta: MessageMeta::default().with_trace(&options.trace),
            group: options.group,
            delay: options.delay,
            idempotency_key: options.idempotency_key,
        };
        let published = self.backend.publish(message).await?;
        self.wake(topic);
        Ok(published)
    }

    /// Puts a call on a function queue; answered once it is durable. The
    /// call is made later as `caller`, on the one invocation path.
    pub async fn enqueue(
        &self,
        queue: &str,
        function_id: &str,
        data: &Value,
        caller: &Caller,
        trace: &TraceContext,
    ) -> Result<Published, QueueError> {
        let Some(settings) = self.config.function_queue(queue) else {
            return Err(QueueError::UnknownQueue {
                queue: queue.to_owned(),
            });
        };
        let group = match &settings.message_group_field {
            Some(field) => Some(group_of(data, field)?),
            None => settings.fifo.then(String::new),
        };
        let message = Outgoing {
            queue: queue.to_owned(),
            data: self.encode(data)?,
            meta: MessageMeta {
                function_id: Some(function_id.to_owned()),
                caller: Some(caller.clone()),
                ..MessageMeta::default()
            }
            .with_trace(trace),
            group,
            delay: Duration::from_secs(settings.delay_seconds),
            idempotency_key: None,
        };
        let published = self.backend.publish(message).await?;
        self.wake(queue);
        Ok(published)
    }

    /// Counts of every queue's consumers.
    pub async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        self.backend.counts().await
    }

    pub async fn dead_counts(&self) -> Result<Vec<(String, i64)>, QueueError> {
        self.backend.dead_counts().await
    }

    pub async fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetterView>, QueueError> {
        check_topic(queue)?;
        self.backend.dead_letters(queue, offset, limit).await
    }

    pub async fn redrive(&self, queue: &str, message_id: Option<&str>) -> Result<u64, QueueError> {
        check_topic(queue)?;
        let moved = self.backend.redrive(queue, message_id).await?;
        if moved > 0 {
            self.wake(queue);
        }
        Ok(moved)
    }

    pub async fn discard(&self, queue: &str, message_id: &str) -> Result<bool, QueueError> {
        check_topic(queue)?;
        self.backend.discard(queue, message_id).await
    }

    pub async fn purge(&self, queue: &str) -> Result<u64, QueueError> {
        check_topic(queue)?;
        self.backend.purge(queue).await
    }
}

/// Now, in Unix milliseconds (the time queues and REST service records store).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in milliseconds, as queues store it.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A message's id: random, or for a message published with an
/// idempotency key derived from its queue and key, so that a duplicate is
/// answered with the first one's id by every backend, whether or not the
/// first is still held.
pub(crate) fn receipt_for(queue: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("capgate-queue\0{queue}\0{key}").as_bytes(),
        ),
        None => uuid::Uuid::new_v4(),
    }
    .to_string()
}

/// The FIFO group of a call: the text (or number) at `field` of its input.
fn group_of(data: &Value, field: &str) -> Result<String, QueueError> {
    let group = match data.get(field) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::Bool(flag)) => flag.to_string(),
        _ => {
            return Err(QueueError::Invalid(format!(
                "the queue orders calls by the input field '{field}', which this call's input lacks (or is not text, a number or a boolean)"
            )));
        }
    };
    check_text("message group", &group)?;
    Ok(group)
}

#[cfg(test)]
mod tests;

//! The NATS JetStream backend (`[queues] backend = "nats"`): JetStream's
//! own storage, acknowledgements, redelivery after `ack_wait`, negative
//! acknowledgements with a delay (backoff) and `Nats-Msg-Id` deduplication
//! — capgate adds only what JetStream lacks: dead letters and delays.
//!
//! Naming (`P` is `nats_subject_prefix`, `S` is `nats_stream`; a queue or
//! consumer name is written with `.` as `~`, which names never hold):
//! - stream `S` (work-queue retention) holds subjects `P.q.QUEUE.GROUP`:
//!   one copy of each message per consumer group, so each group acks its
//!   own; `P.q.QUEUE._` holds what was published before any group existed
//!   (the first group takes it);
//! - a durable pull consumer `QUEUE__GROUP` per group (`_` for a function
//!   queue), `ack_wait` = the visibility timeout, `max_ack_pending` = 1
//!   for FIFO;
//! - stream `S_DLQ` holds dead letters at `P.dlq.QUEUE`, with the group,
//!   the error and the attempts as headers; a dead letter's id is its
//!   sequence in `S_DLQ`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, Stream};
use async_nats::jetstream::{self, Context};
use capgate_catalog::store::QueueCounts;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;

use super::{
    Backend, DeadLetterView, Delivery, GroupSettings, Outgoing, Published, QueueError,
    QueuesConfig, Settle, now_ms,
};

const BACKLOG: &str = "_";
/// How long a claim waits for a message when none is there.
const CLAIM_WAIT: Duration = Duration::from_millis(500);
/// Messages a consumer may hold unacknowledged when its concurrency is not
/// known (it was not joined by this gateway).
const DEFAULT_ACK_PENDING: usize = 256;
/// How long the consumer groups a publish fans out to are trusted.
const GROUPS_FRESH: Duration = Duration::from_secs(2);
/// Queues whose consumer groups are cached at most.
const MAX_CACHED_QUEUES: usize = 10_000;
/// Dead letters a listing reads through at most.
const MAX_DEAD_SCAN: u64 = 100_000;

const H_META: &str = "Capgate-Meta";
const H_GROUP: &str = "Capgate-Group";
const H_FIFO: &str = "Capgate-Msg-Group";
const H_NOT_BEFORE: &str = "Capgate-Not-Before";
const H_ENQUEUED: &str = "Capgate-Enqueued";
const H_RECEIPT: &str = "Capgate-Receipt";
const H_ERROR: &str = "Capgate-Error";
const H_ATTEMPTS: &str = "Capgate-Attempts";
const H_QUEUE: &str = "Capgate-Queue";

fn unavailable(doing: &str) -> impl Fn(String) -> QueueError + '_ {
    move |reason| QueueError::Store(format!("NATS JetStream, {doing}: {reason}"))
}

fn token(name: &str) -> String {
    if name.is_empty() {
        BACKLOG.to_owned()
    } else {
        name.replace('.', "~")
    }
}

fn untoken(token: &str) -> String {
    if token == BACKLOG {
        String::new()
    } else {
        token.replace('~', ".")
    }
}

/// The durable consumer of a group: `QUEUE__GROUP`. Function ids hold
/// `::`, which JetStream names allow.
fn durable(queue: &str, consumer: &str) -> String {
    format!("{}__{}", token(queue), token(consumer))
}

/// Whether a dead letter is the one named `id`: its message id (the
/// publisher's receipt), or its sequence in the dead-letter stream.
fn is_letter(message: &jetstream::message::StreamMessage, seq: u64, id: &str) -> bool {
    message
        .headers
        .get(H_RECEIPT)
        .is_some_and(|receipt| receipt.as_str() == id)
        || seq.to_string() == id
}

/// A copy of `headers` without the named ones.
fn without(headers: Option<&HeaderMap>, names: &[&str]) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        if names.iter().any(|n| n.eq_ignore_ascii_case(name.as_ref())) {
            continue;
        }
        for value in values {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A consumer, with the lease and the messages in hand it was made for.
type MadeConsumer = (PullConsumer, (Duration, usize));

/// The backend.
pub struct Nats {
    context: Context,
    stream: Stream,
    dead: Stream,
    prefix: String,
    max_depth: u64,
    max_messages: u64,
    /// Consumer groups per queue, as last read from the stream.
    groups: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// Groups' settings this gateway joined with.
    settings: Mutex<HashMap<(String, String), GroupSettings>>,
    /// Consumers in use, with the lease and the messages in hand they were
    /// made for.
    consumers: tokio::sync::Mutex<HashMap<String, MadeConsumer>>,
    /// Each consumer's continuous pull: the server pushes messages ahead,
    /// up to the consumer's `max_ack_pending`, so a claim rarely waits for
    /// a round trip.
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<pull::Stream>>>>,
}

impl Nats {
    pub async fn open(config: &QueuesConfig) -> Result<Self, QueueError> {
        let url = config.url.as_deref().unwrap_or("nats://127.0.0.1:4222");
        let client = async_nats::ConnectOptions::new()
            .name("capgate")
            .connect(url)
            .await
            .map_err(|e| {
                QueueError::Store(format!(
                    "cannot connect to NATS at {url}: {e}; start nats-server with JetStream (-js) or set [queues] url"
                ))
            })?;
        let context = jetstream::new(client);
        let prefix = config.nats_subject_prefix.clone();
        let stream = context
            .get_or_create_stream(stream::Config {
                name: config.nats_stream.clone(),
                subjects: vec![format!("{prefix}.q.>")],
                retention: RetentionPolicy::WorkQueue,
                max_messages_per_subject: i64::try_from(config.max_depth).unwrap_or(i64::MAX),
                max_messages: i64::try_from(config.max_messages).unwrap_or(i64::MAX),
                discard: DiscardPolicy::New,
                discard_new_per_subject: true,
                duplicate_window: Duration::from_millis(config.idempotency_window_ms),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("creating the queue stream")(e.to_string()))?;
        let dead = context
            .get_or_create_stream(stream::Config {
                name: format!("{}_DLQ", config.nats_stream),
                subjects: vec![format!("{prefix}.dlq.>")],
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("creating the dead-letter stream")(e.to_string()))?;
        Ok(Self {
            context,
            stream,
            dead,
            prefix,
            max_depth: config.max_depth,
            max_messages: config.max_messages,
            groups: Mutex::new(HashMap::new()),
            settings: Mutex::new(HashMap::new()),
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            pulls: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn subject(&self, queue: &str, group: &str) -> String {
        format!("{}.q.{}.{}", self.prefix, token(queue), token(group))
    }

    fn dead_subject(&self, queue: &str) -> String {
        format!("{}.dlq.{}", self.prefix, token(queue))
    }

    /// The queue's consumer groups: read from the stream's consumers when
    /// not fresh.
    async fn groups_of(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        if let Some((read, groups)) = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(queue)
            && read.elapsed() < GROUPS_FRESH
        {
            return Ok(groups.clone());
        }
        let prefix = format!("{}__", token(queue));
        let mut names = self.stream.consumer_names();
        let mut groups = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| unavailable("listing consumers")(e.to_string()))?;
            if let Some(group) = name.strip_prefix(&prefix)
                && group != BACKLOG
            {
                groups.push(untoken(group));
            }
        }
        groups.sort();
        let mut cache = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A cache, not a registry: bounded by forgetting it whole.
        if cache.len() >= MAX_CACHED_QUEUES {
            cache.clear();
        }
        cache.insert(queue.to_owned(), (Instant::now(), groups.clone()));
        Ok(groups)
    }

    /// The group's durable consumer, created — or updated, when this
    /// gateway's lease or ordering for it changed — as needed.
    async fn consumer(
        &self,
        queue: &str,
        consumer: &str,
        lease: Duration,
    ) -> Result<PullConsumer, QueueError> {
        let name = durable(queue, consumer);
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(queue.to_owned(), consumer.to_owned()))
            .copied()
            .unwrap_or_default();
        // In hand at once: in flight and pushed ahead, together.
        let pending = match (settings.fifo, settings.concurrency) {
            (true, _) => 1,
            (false, 0) => DEFAULT_ACK_PENDING,
            (false, n) => n,
        };
        let wanted = (lease, pending);
        let mut consumers = self.consumers.lock().await;
        if let Some((found, made_for)) = consumers.get(&name)
            && *made_for == wanted
        {
            return Ok(found.clone());
        }
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: self.subject(queue, consumer),
            ack_policy: AckPolicy::Explicit,
            ack_wait: lease,
            deliver_policy: DeliverPolicy::All,
            max_ack_pending: i64::try_from(pending).unwrap_or(i64::MAX),
            ..Default::default()
        };
        // Creating a durable consumer that exists updates its config.
        let created = self
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| unavailable("creating a consumer")(e.to_string()))?;
        consumers.insert(name.clone(), (created.clone(), wanted));
        // A pull opened on the old config is opened again.
        self.pulls.lock().await.remove(&name);
        Ok(created)
    }

    async fn publish_to(
        &self,
        queue: &str,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<jetstream::publish::PublishAck, QueueError> {
        let ack = self
            .context
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| unavailable("publishing")(e.to_string()))?;
        ack.await.map_err(|e| {
            let text = e.to_string();
            if text.contains("maximum messages per subject") {
                QueueError::Full {
                    queue: queue.to_owned(),
                    limit: self.max_depth,
                }
            } else if text.contains("maximum messages") {
                QueueError::AllFull {
                    limit: self.max_messages,
                }
            } else {
                unavailable("publishing")(text)
            }
        })
    }

    /// Moves what waited for a group to the queue's first group.
    async fn hand_over_backlog(&self, queue: &str, group: &str) -> Result<(), QueueError> {
        let backlog = self.consumer(queue, "", Duration::from_secs(30)).await?;
        loop {
            let mut batch = backlog
                .fetch()
                .max_messages(256)
                .messages()
                .await
                .map_err(|e| unavailable("reading the backlog")(e.to_string()))?;
            let mut moved = 0;
            while let Some(message) = batch.next().await {
                let message =
                    message.map_err(|e| unavailable("reading the backlog")(e.to_string()))?;
                let headers = message.headers.clone().unwrap_or_default();
                self.publish_to(
                    queue,
                    self.subject(queue, group),
                    headers,
                    message.payload.to_vec(),
                )
                .await?;
                message
                    .ack()
                    .await
                    .map_err(|e| unavailable("moving the backlog")(e.to_string()))?;
                moved += 1;
            }
            if moved == 0 {
                break;
            }
        }
        let _ = self.stream.delete_consumer(&durable(queue, "")).await;
        self.consumers.lock().await.remove(&durable(queue, ""));
        Ok(())
    }

    fn delivery(&self, message: jetstream::Message) -> Option<(Delivery, jetstream::Message)> {
        let headers = message.headers.as_ref();
        let text = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let info = message.info().ok()?;
        let delivered = u32::try_from(info.delivered).unwrap_or(u32::MAX);
        let mut parts = message.subject.as_str().rsplitn(3, '.');
        let group = untoken(parts.next()?);
        let queue = untoken(parts.next()?);
        let enqueued_ms = text(H_ENQUEUED).and_then(|t| t.parse().ok()).unwrap_or(0);
        let not_before: i64 = text(H_NOT_BEFORE).and_then(|t| t.parse().ok()).unwrap_or(0);
        // A delayed message was delivered once early (and put back).
        let early = u32::from(not_before > enqueued_ms);
        let delivery = Delivery {
            seq: i64::try_from(info.stream_sequence).unwrap_or(i64::MAX),
            receipt: text(H_RECEIPT).unwrap_or_default(),
            queue,
            consumer: group,
            group: text(H_FIFO),
            data: String::from_utf8_lossy(&message.payload).into_owned(),
            meta: text(H_META)
                .and_then(|m: String| serde_json::from_str(&m).ok())
                .unwrap_or_default(),
            attempt: delivered.saturating_sub(early).max(1),
            enqueued_ms,
            nats: None,
        };
        Some((delivery, message))
    }
}

impl Backend for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn waits_for_messages(&self) -> bool {
        true
    }

    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<Published, QueueError>> {
        Box::pin(async move {
            let mut groups = self.groups_of(&message.queue).await?;
            if groups.is_empty() {
                // Held for the first group (or a function queue's own
                // consumer), and counted meanwhile.
                self.consumer(&message.queue, "", Duration::from_secs(30))
                    .await?;
                groups.push(String::new());
            }
            let receipt = super::receipt_for(&message.queue, message.idempotency_key.as_deref());
            let now = now_ms();
            let mut duplicate = false;
            for group in groups {
                let settings = self
                    .settings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&(message.queue.clone(), group.clone()))
                    .copied()
                    .unwrap_or_default();
                let mut headers = HeaderMap::new();
                headers.insert(H_RECEIPT, receipt.as_str());
                headers.insert(H_ENQUEUED, now.to_string().as_str());
                if let Some(key) = &message.idempotency_key {
                    headers.insert("Nats-Msg-Id", format!("{key}/{group}").as_str());
                }
                if !message.meta.is_empty()
                    && let Ok(meta) = serde_json::to_string(&message.meta)
                {
                    headers.insert(H_META, meta.as_str());
                }
                if let Some(group) = &message.group {
                    headers.insert(H_FIFO, group.as_str());
                }
                let delay = message.delay.max(settings.delay);
                if !delay.is_zero() {
                    let due = now.saturating_add(super::millis(delay));
                    headers.insert(H_NOT_BEFORE, due.to_string().as_str());
                }
                let ack = self
                    .publish_to(
                        &message.queue,
                        self.subject(&message.queue, &group),
                        headers,
                        message.data.clone().into_bytes(),
                    )
                    .await?;
                duplicate |= ack.duplicate;
            }
            Ok(Published { receipt, duplicate })
        })
    }

    fn join(
        &self,
        queue: &str,
        consumer: &str,
        group: GroupSettings,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        let (queue, consumer) = (queue.to_owned(), consumer.to_owned());
        Box::pin(async move {
            self.settings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((queue.clone(), consumer.clone()), group);
            // A function queue's own consumer is its backlog's.
            let first = !consumer.is_empty() && self.groups_of(&queue).await?.is_empty();
            self.consumer(&queue, &consumer, Duration::from_secs(30))
                .await?;
            self.groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&queue);
            if first {
                self.hand_over_backlog(&queue, &consumer).await?;
            }
            Ok(())
        })
    }

    fn claim(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, QueueError>> {
        let (queue, consumer) = (queue.to_owned(), consumer.to_owned());
        Box::pin(async move {
            let pull = self.consumer(&queue, &consumer, lease).await?;
            let name = durable(&queue, &consumer);
            let stream = {
                let mut pulls = self.pulls.lock().await;
                match pulls.get(&name) {
                    Some(stream) => stream.clone(),
                    None => {
                        let opened = pull
                            .stream()
                            .max_messages_per_batch(DEFAULT_ACK_PENDING)
                            .messages()
                            .await
                            .map_err(|e| unavailable("pulling messages")(e.to_string()))?;
                        let opened = Arc::new(tokio::sync::Mutex::new(opened));
                        pulls.insert(name.clone(), opened.clone());
                        opened
                    }
                }
            };
            let mut messages = Vec::new();
            {
                let mut stream = stream.lock().await;
                // The first waits a while (the server wakes an idle consumer);
                // the rest are only those already here.
                let mut next = tokio::time::timeout(CLAIM_WAIT, stream.next()).await;
                loop {
                    match next {
                        Ok(Some(Ok(message))) => messages.push(message),
                        // A status in place of messages (the ack-pending
                        // limit reached, a heartbeat missed): not a failure.
                        Ok(Some(Err(error))) => {
                            tracing::debug!(%queue, %consumer, %error, "pull status");
                            break;
                        }
                        Ok(None) => {
                            // The pull ended: opened again on the next claim.
                            self.pulls.lock().await.remove(&name);
                            break;
                        }
                        Err(_) => break,
                    }
                    if messages.len() >= max {
                        break;
                    }
                    next = match stream.next().now_or_never() {
                        Some(item) => Ok(item),
                        None => break,
                    };
                }
            }
            let now = now_ms();
            let mut claimed = Vec::with_capacity(messages.len());
            for message in messages {
                let due: i64 = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(H_NOT_BEFORE))
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0);
                if due > now {
                    let wait = Duration::from_millis(u64::try_from(due - now).unwrap_or(0));
                    let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
                    continue;
                }
                if let Some((mut delivery, message)) = self.delivery(message) {
                    delivery.nats = Some(Arc::new(message));
                    claimed.push(delivery);
                }
            }
            Ok(claimed)
        })
    }

    fn settle(&self, delivery: &Delivery, settle: Settle) -> BoxFuture<'_, Result<(), QueueError>> {
        let delivery = delivery.ticket();
        Box::pin(async move {
            let Some(message) = delivery.nats.clone() else {
                return Err(QueueError::Store(
                    "a delivery without its NATS message".into(),
                ));
            };
            let fail = |e: async_nats::Error| unavailable("acknowledging")(e.to_string());
            match settle {
                // Not awaited by the server: a lost acknowledgement is a
                // redelivery (at least once), never a loss.
                Settle::Ack => message.ack().await.map_err(fail),
                Settle::Retry { after, .. } => message
                    .ack_with(AckKind::Nak(Some(after)))
                    .await
                    .map_err(fail),
                Settle::Bury { error } => {
                    let mut headers = without(message.headers.as_ref(), &["Nats-Msg-Id"]);
                    headers.insert(H_GROUP, delivery.consumer.as_str());
                    headers.insert(H_QUEUE, delivery.queue.as_str());
                    let error: String = error
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(1024)
                        .collect();
                    headers.insert(H_ERROR, error.as_str());
                    headers.insert(H_ATTEMPTS, delivery.attempt.to_string().as_str());
                    let ack = self
                        .context
                        .publish_with_headers(
                            self.dead_subject(&delivery.queue),
                            headers,
                            message.payload.clone(),
                        )
                        .await
                        .map_err(|e| unavailable("dead-lettering")(e.to_string()))?;
                    ack.await
                        .map_err(|e| unavailable("dead-lettering")(e.to_string()))?;
                    message.ack_with(AckKind::Term).await.map_err(fail)
                }
            }
        })
    }

    fn next_due(
        &self,
        _queue: &str,
        _consumer: &str,
    ) -> BoxFuture<'_, Result<Option<i64>, QueueError>> {
        Box::pin(async { Ok(None) })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Vec<QueueCounts>, QueueError>> {
        Box::pin(async move {
            let mut counts: Vec<QueueCounts> = Vec::new();
            let mut consumers = self.stream.consumers();
            while let Some(info) = consumers.next().await {
                let info = info.map_err(|e| unavailable("reading consumers")(e.to_string()))?;
                let Some((queue, group)) = info.name.split_once("__") else {
                    continue;
                };
                let in_flight = i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX);
                counts.push(QueueCounts {
                    queue: untoken(queue),
                    consumer: untoken(group),
                    depth: i64::try_from(info.num_pending)
                        .unwrap_or(i64::MAX)
                        .saturating_add(in_flight),
                    in_flight,
                    ..QueueCounts::default()
                });
            }
            for (queue, dead) in self.dead_counts().await? {
                match counts.iter_mut().find(|c| c.queue == queue) {
                    Some(count) => count.dead += dead,
                    None => counts.push(QueueCounts {
                        queue,
                        dead,
                        ..QueueCounts::default()
                    }),
                }
            }
            counts.sort_by(|a, b| (&a.queue, &a.consumer).cmp(&(&b.queue, &b.consumer)));
            Ok(counts)
        })
    }

    fn dead_counts(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, QueueError>> {
        Box::pin(async move {
            let mut by_queue: HashMap<String, i64> = HashMap::new();
            for (_, queue, _) in self.dead_scan(None).await? {
                *by_queue.entry(queue).or_default() += 1;
            }
            let mut counts: Vec<(String, i64)> = by_queue.into_iter().collect();
            counts.sort();
            Ok(counts)
        })
    }

    fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetterView>, QueueError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let letters = self.dead_scan(Some(&queue)).await?;
            Ok(letters
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|(seq, queue, message)| {
                    let text =
                        |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
                    let data = String::from_utf8_lossy(&message.payload).into_owned();
                    DeadLetterView {
                        message_id: text(H_RECEIPT).unwrap_or_else(|| seq.to_string()),
                        queue,
                        consumer: text(H_GROUP).unwrap_or_default(),
                        data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                        attempts: text(H_ATTEMPTS).and_then(|t| t.parse().ok()).unwrap_or(0),
                        error: text(H_ERROR),
                        enqueued_ms: text(H_ENQUEUED).and_then(|t| t.parse().ok()).unwrap_or(0),
                        failed_ms: Some(message.time.unix_timestamp() * 1000),
                    }
                })
                .collect())
        })
    }

    fn redrive(
        &self,
        queue: &str,
        message_id: Option<&str>,
    ) -> BoxFuture<'_, Result<u64, QueueError>> {
        let (queue, id) = (queue.to_owned(), message_id.map(str::to_owned));
        Box::pin(async move {
            let mut moved = 0;
            for (seq, _, message) in self.dead_scan(Some(&queue)).await? {
                if id.as_ref().is_some_and(|id| !is_letter(&message, seq, id)) {
                    continue;
                }
                let group = message
                    .headers
                    .get(H_GROUP)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                let headers = without(
                    Some(&message.headers),
                    &[H_GROUP, H_QUEUE, H_ERROR, H_ATTEMPTS, H_NOT_BEFORE],
                );
                self.publish_to(
                    &queue,
                    self.subject(&queue, &group),
                    headers,
                    message.payload.to_vec(),
                )
                .await?;
                self.dead
                    .delete_message(seq)
                    .await
                    .map_err(|e| unavailable("removing a redriven dead letter")(e.to_string()))?;
                moved += 1;
            }
            Ok(moved)
        })
    }

    fn discard(&self, queue: &str, message_id: &str) -> BoxFuture<'_, Result<bool, QueueError>> {
        let (queue, id) = (queue.to_owned(), message_id.to_owned());
        Box::pin(async move {
            let mut discarded = false;
            for (seq, _, message) in self.dead_scan(Some(&queue)).await? {
                if is_letter(&message, seq, &id) {
                    discarded |= self
                        .dead
                        .delete_message(seq)
                        .await
                        .map_err(|e| unavailable("discarding a dead letter")(e.to_string()))?;
                }
            }
            Ok(discarded)
        })
    }

    fn purge(&self, queue: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let fail = |e: String| unavailable("purging")(e);
            let purged = self
                .stream
                .purge()
                .filter(format!("{}.q.{}.>", self.prefix, token(&queue)))
                .await
                .map_err(|e| fail(e.to_string()))?;
            self.dead
                .purge()
                .filter(self.dead_subject(&queue))
                .await
                .map_err(|e| fail(e.to_string()))?;
            for group in self
                .groups_of(&queue)
                .await?
                .into_iter()
                .chain([String::new()])
            {
                let name = durable(&queue, &group);
                let _ = self.stream.delete_consumer(&name).await;
                self.consumers.lock().await.remove(&name);
            }
            self.groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&queue);
            Ok(purged.purged)
        })
    }
}

impl Nats {
    /// Dead letters in order, `(sequence, queue, message)`, of one queue
    /// or all.
    async fn dead_scan(
        &self,
        queue: Option<&str>,
    ) -> Result<Vec<(u64, String, jetstream::message::StreamMessage)>, QueueError> {
        let mut dead = self.dead.clone();
        let info = dead
            .info()
            .await
            .map_err(|e| unavailable("reading the dead letters")(e.to_string()))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut letters = Vec::new();
        if info.state.messages == 0 {
            return Ok(letters);
        }
        let wanted = queue.map(|q| self.dead_subject(q));
        for seq in first..=last.min(first.saturating_add(MAX_DEAD_SCAN)) {
            let Ok(message) = self.dead.get_raw_message(seq).await else {
                continue;
            };
            if wanted
                .as_ref()
                .is_some_and(|s| message.subject.as_str() != s)
            {
                continue;
            }
            let queue = message
                .headers
                .get(H_QUEUE)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            letters.push((seq, queue, message));
        }
        Ok(letters)
    }

    /// Deletes both streams (tests, `capgate queues` tooling).
    pub async fn delete_streams(&self) -> Result<(), QueueError> {
        for name in [
            self.stream.cached_info().config.name.clone(),
            self.dead.cached_info().config.name.clone(),
        ] {
            self.context
                .delete_stream(&name)
                .await
                .map_err(|e| unavailable("deleting a stream")(e.to_string()))?;
        }
        Ok(())
    }
}

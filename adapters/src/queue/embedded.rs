//! The embedded durable queue: messages in capgate's store (SQLite by
//! default), written by one task.
//!
//! Everything that changes messages — publishes, claims, acknowledgements,
//! retries, dead letters — is a command to the writer, which runs every
//! command waiting into one transaction and answers each after the commit:
//! a burst of publishes costs one `fsync`, and nothing is answered before
//! it is on disk. The writer keeps each queue's depth (to refuse beyond
//! `max_depth`) and its consumer groups in memory, loaded at open.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use capgate_catalog::store::{
    Batch, DeadLetter, Delivered, NewMessage, QueueCounts, QueueStep, Store,
};
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{
    Backend, DeadLetterView, Delivery, GroupSettings, Outgoing, Published, QueueError,
    QueuesConfig, Settle, millis, now_ms,
};

/// Commands waiting for the writer; more are refused at once.
const MAX_WAITING: usize = 16_384;
/// Commands run in one transaction.
const MAX_BATCH: usize = 1_024;
/// How long a queue's oldest message, as read, is trusted.
const OLDEST_FRESH: Duration = Duration::from_secs(1);
/// How often expired idempotency keys are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The embedded backend.
pub struct Embedded {
    store: Store,
    commands: mpsc::Sender<Command>,
}

type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

enum Command {
    Publish(Outgoing, Reply<Published>),
    Join(String, String, GroupSettings, Reply<()>),
    Claim {
        queue: String,
        consumer: String,
        max: usize,
        lease: Duration,
        reply: Reply<Vec<Delivery>>,
    },
    Step(QueueStep, Reply<()>),
    Redrive(String, Option<String>, Reply<u64>),
    Discard(String, String, Reply<bool>),
    Purge(String, Reply<u64>),
}

impl Embedded {
    pub async fn open(store: Store, config: &QueuesConfig) -> Result<Self, QueueError> {
        let mut groups: HashMap<String, Vec<(String, GroupSettings)>> = HashMap::new();
        for (queue, consumer) in store.queue_consumer_groups().await? {
            groups
                .entry(queue)
                .or_default()
                .push((consumer, GroupSettings::default()));
        }
        let depth = store
            .queue_depths()
            .await?
            .into_iter()
            .map(|(queue, n)| (queue, u64::try_from(n).unwrap_or(0)))
            .collect();
        let depth: HashMap<String, u64> = depth;
        let writer = Writer {
            store: store.clone(),
            seq: store.queue_last_seq().await?,
            total: depth.values().sum(),
            max_total: config.max_messages,
            depth,
            groups,
            max_depth: config.max_depth,
            window: Duration::from_millis(config.idempotency_window_ms),
            pruned: Instant::now(),
            warned: HashSet::new(),
            max_age_ms: i64::try_from(config.max_age_ms).unwrap_or(i64::MAX),
            oldest: HashMap::new(),
        };
        let (commands, queue) = mpsc::channel(MAX_WAITING);
        tokio::spawn(writer.run(queue));
        Ok(Self { store, commands })
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, QueueError> {
        crate::batched::ask(
            &self.commands,
            command,
            QueueError::Busy { limit: MAX_WAITING },
            || QueueError::Store("the queue writer has stopped".into()),
        )
        .await
    }
}

impl Backend for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<Published, QueueError>> {
        Box::pin(self.ask(|reply| Command::Publish(message, reply)))
    }

    fn join(
        &self,
        queue: &str,
        consumer: &str,
        group: GroupSettings,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        let (queue, consumer) = (queue.to_owned(), consumer.to_owned());
        Box::pin(self.ask(move |reply| Command::Join(queue, consumer, group, reply)))
    }

    fn claim(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, QueueError>> {
        let (queue, consumer) = (queue.to_owned(), consumer.to_owned());
        Box::pin(self.ask(move |reply| Command::Claim {
            queue,
            consumer,
            max,
            lease,
            reply,
        }))
    }

    fn settle(&self, delivery: &Delivery, settle: Settle) -> BoxFuture<'_, Result<(), QueueError>> {
        let (seq, attempts) = (delivery.seq, i64::from(delivery.attempt));
        let step = match settle {
            Settle::Ack => QueueStep::Ack { seq },
            Settle::Retry { after, error } => QueueStep::Retry {
                seq,
                attempts,
                visible_ms: now_ms().saturating_add(millis(after)),
                error,
            },
            Settle::Bury { error } => QueueStep::Bury {
                seq,
                attempts,
                error,
            },
        };
        Box::pin(self.ask(move |reply| Command::Step(step, reply)))
    }

    fn next_due(
        &self,
        queue: &str,
        consumer: &str,
    ) -> BoxFuture<'_, Result<Option<i64>, QueueError>> {
        let (queue, consumer) = (queue.to_owned(), consumer.to_owned());
        Box::pin(async move { Ok(self.store.queue_next_visible(&queue, &consumer).await?) })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Vec<QueueCounts>, QueueError>> {
        Box::pin(async move { Ok(self.store.queue_counts().await?) })
    }

    fn dead_counts(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, QueueError>> {
        Box::pin(async move { Ok(self.store.queue_dead_counts().await?) })
    }

    fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetterView>, QueueError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let letters = self.store.queue_dead_letters(&queue, offset, limit).await?;
            Ok(letters.into_iter().map(view).collect())
        })
    }

    fn redrive(
        &self,
        queue: &str,
        message_id: Option<&str>,
    ) -> BoxFuture<'_, Result<u64, QueueError>> {
        let (queue, id) = (queue.to_owned(), message_id.map(str::to_owned));
        Box::pin(self.ask(move |reply| Command::Redrive(queue, id, reply)))
    }

    fn discard(&self, queue: &str, message_id: &str) -> BoxFuture<'_, Result<bool, QueueError>> {
        let (queue, id) = (queue.to_owned(), message_id.to_owned());
        Box::pin(self.ask(move |reply| Command::Discard(queue, id, reply)))
    }

    fn purge(&self, queue: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let queue = queue.to_owned();
        Box::pin(self.ask(move |reply| Command::Purge(queue, reply)))
    }
}

fn view(letter: DeadLetter) -> DeadLetterView {
    let message = letter.message;
    DeadLetterView {
        data: serde_json::from_str(&message.data).unwrap_or(Value::String(message.data)),
        message_id: message.receipt,
        queue: message.queue,
        consumer: message.consumer,
        attempts: message.attempts,
        error: letter.error,
        enqueued_ms: message.enqueued_ms,
        failed_ms: letter.dead_ms,
    }
}

fn delivery(row: Delivered) -> Delivery {
    Delivery {
        seq: row.seq,
        receipt: row.receipt,
        queue: row.queue,
        consumer: row.consumer,
        group: row.msg_group,
        meta: row
            .meta
            .as_deref()
            .and_then(|meta| serde_json::from_str(meta).ok())
            .unwrap_or_default(),
        data: row.data,
        attempt: u32::try_from(row.attempts).unwrap_or(u32::MAX),
        enqueued_ms: row.enqueued_ms,
        nats: None,
    }
}

/// The one task that changes messages.
struct Writer {
    store: Store,
    /// The last sequence number given.
    seq: i64,
    /// Live messages per queue (each consumer group's copy counts); a
    /// queue left empty leaves the map.
    depth: HashMap<String, u64>,
    /// Live messages in all queues.
    total: u64,
    max_total: u64,
    groups: HashMap<String, Vec<(String, GroupSettings)>>,
    max_depth: u64,
    window: Duration,
    pruned: Instant,
    /// Queues past 80 % of their depth, warned about once.
    warned: HashSet<String>,
    max_age_ms: i64,
    /// Each queue's oldest live message (Unix ms), as last read and when.
    oldest: HashMap<String, (Instant, Option<i64>)>,
}

/// An answer held until its batch is committed.
enum Answer {
    Published(Reply<Published>, Result<Published, QueueError>),
    Unit(Reply<()>, Result<(), QueueError>),
    Claimed(Reply<Vec<Delivery>>, Vec<Delivery>),
    Count(Reply<u64>, u64),
    Flag(Reply<bool>, bool),
}

impl Answer {
    fn send(self) {
        // A caller that stopped waiting has nothing to be told.
        match self {
            Self::Published(reply, outcome) => drop(reply.send(outcome)),
            Self::Unit(reply, outcome) => drop(reply.send(outcome)),
            Self::Claimed(reply, claimed) => drop(reply.send(Ok(claimed))),
            Self::Count(reply, n) => drop(reply.send(Ok(n))),
            Self::Flag(reply, flag) => drop(reply.send(Ok(flag))),
        }
    }

    fn fail(self, error: QueueError) {
        match self {
            Self::Published(reply, _) => drop(reply.send(Err(error))),
            Self::Unit(reply, _) => drop(reply.send(Err(error))),
            Self::Claimed(reply, _) => drop(reply.send(Err(error))),
            Self::Count(reply, _) => drop(reply.send(Err(error))),
            Self::Flag(reply, _) => drop(reply.send(Err(error))),
        }
    }
}

/// What the writer had in memory before a batch, restored if it fails.
struct Snapshot {
    seq: i64,
    total: u64,
    depth: HashMap<String, u64>,
    groups: HashMap<String, Vec<(String, GroupSettings)>>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut waiting = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut waiting, MAX_BATCH).await > 0 {
            let commands = std::mem::take(&mut waiting);
            let snapshot = Snapshot {
                seq: self.seq,
                total: self.total,
                depth: self.depth.clone(),
                groups: self.groups.clone(),
            };
            let mut answers = Vec::with_capacity(commands.len());
            match self.run_batch(commands, &mut answers).await {
                Ok(()) => answers.into_iter().for_each(Answer::send),
                Err((error, unanswered)) => {
                    tracing::error!(%error, "queue writes failed; none of the batch was kept");
                    self.seq = snapshot.seq;
                    self.total = snapshot.total;
                    self.depth = snapshot.depth;
                    self.groups = snapshot.groups;
                    for answer in answers {
                        answer.fail(error.clone());
                    }
                    for command in unanswered {
                        fail_command(command, error.clone());
                    }
                }
            }
        }
    }

    /// Runs the commands in one transaction. On a store error, the error
    /// and the commands not yet run (those run are in `answers`).
    async fn run_batch(
        &mut self,
        commands: Vec<Command>,
        answers: &mut Vec<Answer>,
    ) -> Result<(), (QueueError, Vec<Command>)> {
        let mut batch = match self.store.batch().await {
            Ok(batch) => batch,
            Err(error) => return Err((error.into(), commands)),
        };
        let now = now_ms();
        if self.pruned.elapsed() >= PRUNE_EVERY {
            self.pruned = Instant::now();
            if let Err(error) = batch.queue_forget_keys(now).await {
                return Err((error.into(), commands));
            }
        }
        let mut inserts = Vec::new();
        let mut steps = Vec::new();
        // Keys published in this batch: a duplicate within it is caught too.
        let mut keys: HashMap<(String, String), String> = HashMap::new();
        let mut commands = commands.into_iter();
        while let Some(command) = commands.next() {
            let answer = match self
                .run_one(
                    &mut batch,
                    command,
                    now,
                    &mut inserts,
                    &mut steps,
                    &mut keys,
                )
                .await
            {
                Ok(answer) => answer,
                Err(error) => return Err((error.into(), commands.collect())),
            };
            answers.push(answer);
        }
        // Answers apply before new messages go in: an answer is always about
        // a message stored in an earlier batch.
        match batch.queue_steps(&steps).await {
            Ok(removed) => removed.iter().for_each(|queue| self.removed(queue, 1)),
            Err(error) => return Err((error.into(), Vec::new())),
        }
        if let Err(error) = batch.queue_insert(&inserts).await {
            return Err((error.into(), Vec::new()));
        }
        batch
            .commit()
            .await
            .map_err(|error| (error.into(), Vec::new()))
    }

    async fn run_one(
        &mut self,
        batch: &mut Batch,
        command: Command,
        now: i64,
        inserts: &mut Vec<NewMessage>,
        steps: &mut Vec<QueueStep>,
        keys: &mut HashMap<(String, String), String>,
    ) -> Result<Answer, capgate_catalog::store::StoreError> {
        Ok(match command {
            Command::Publish(message, reply) => {
                let outcome = self.publish(batch, message, now, inserts, keys).await?;
                Answer::Published(reply, outcome)
            }
            Command::Join(queue, consumer, settings, reply) => {
                let groups = self.groups.entry(queue.clone()).or_default();
                match groups.iter_mut().find(|(name, _)| *name == consumer) {
                    Some((_, known)) => *known = settings,
                    None => {
                        let first = groups.is_empty();
                        groups.push((consumer.clone(), settings));
                        batch.queue_add_consumer(&queue, &consumer, first).await?;
                        // Waiting messages handed over are in inserts not yet
                        // written: give them to the group too.
                        if first {
                            for insert in inserts.iter_mut() {
                                if insert.queue == queue && insert.consumer.is_empty() {
                                    insert.consumer.clone_from(&consumer);
                                }
                            }
                        }
                    }
                }
                Answer::Unit(reply, Ok(()))
            }
            Command::Claim {
                queue,
                consumer,
                max,
                lease,
                reply,
            } => {
                let claimed = batch
                    .queue_claim(
                        &queue,
                        &consumer,
                        max,
                        now,
                        now.saturating_add(millis(lease)),
                    )
                    .await?;
                Answer::Claimed(reply, claimed.into_iter().map(delivery).collect())
            }
            Command::Step(step, reply) => {
                steps.push(step);
                Answer::Unit(reply, Ok(()))
            }
            Command::Redrive(queue, id, reply) => {
                let moved = batch.queue_redrive(&queue, id.as_deref(), now).await?;
                self.oldest.remove(&queue);
                *self.depth.entry(queue).or_default() += moved;
                self.total += moved;
                Answer::Count(reply, moved)
            }
            Command::Discard(queue, id, reply) => {
                Answer::Flag(reply, batch.queue_discard(&queue, &id).await?)
            }
            Command::Purge(queue, reply) => {
                inserts.retain(|insert| insert.queue != queue);
                let purged = batch.queue_purge(&queue).await?;
                let held = self.depth.remove(&queue).unwrap_or(0);
                self.total = self.total.saturating_sub(held);
                self.oldest.remove(&queue);
                self.groups.remove(&queue);
                Answer::Count(reply, purged)
            }
        })
    }

    /// One publish: a duplicate answers with the first message's id; a
    /// full queue is refused; otherwise one row per consumer group.
    async fn publish(
        &mut self,
        batch: &mut Batch,
        message: Outgoing,
        now: i64,
        inserts: &mut Vec<NewMessage>,
        keys: &mut HashMap<(String, String), String>,
    ) -> Result<Result<Published, QueueError>, capgate_catalog::store::StoreError> {
        if let Some(key) = &message.idempotency_key {
            let place = (message.queue.clone(), key.clone());
            let earlier = match keys.get(&place) {
                Some(receipt) => Some(receipt.clone()),
                None => batch.queue_seen(&message.queue, key, now).await?,
            };
            if let Some(receipt) = earlier {
                return Ok(Ok(Published {
                    receipt,
                    duplicate: true,
                }));
            }
        }
        let groups: Vec<(String, GroupSettings)> = self
            .groups
            .get(&message.queue)
            .filter(|groups| !groups.is_empty())
            .cloned()
            .unwrap_or_default();
        let rows = groups.len().max(1) as u64;
        if let Some(stalled) = self.stalled(batch, &message.queue, now).await? {
            return Ok(Err(stalled));
        }
        if self.total + rows > self.max_total {
            return Ok(Err(QueueError::AllFull {
                limit: self.max_total,
            }));
        }
        let depth = self.depth.get(&message.queue).copied().unwrap_or(0);
        if depth + rows > self.max_depth {
            return Ok(Err(QueueError::Full {
                queue: message.queue,
                limit: self.max_depth,
            }));
        }
        let receipt = super::receipt_for(&message.queue, message.idempotency_key.as_deref());
        let meta = (!message.meta.is_empty())
            .then(|| serde_json::to_string(&message.meta).ok())
            .flatten();
        let visible = |delay: Duration| now.saturating_add(millis(delay));
        let mut row = |consumer: String, group: Option<String>, delay: Duration| {
            self.seq += 1;
            NewMessage {
                seq: self.seq,
                receipt: receipt.clone(),
                queue: message.queue.clone(),
                consumer,
                msg_group: group,
                data: message.data.clone(),
                meta: meta.clone(),
                visible_ms: visible(delay),
                enqueued_ms: now,
            }
        };
        if groups.is_empty() {
            inserts.push(row(String::new(), message.group.clone(), message.delay));
        } else {
            for (consumer, settings) in groups {
                let group = settings
                    .fifo
                    .then(|| message.group.clone().unwrap_or_default());
                inserts.push(row(consumer, group, message.delay.max(settings.delay)));
            }
        }
        if let Some(key) = &message.idempotency_key {
            let expires = now.saturating_add(millis(self.window));
            batch
                .queue_remember(&message.queue, key, &receipt, expires)
                .await?;
            keys.insert((message.queue.clone(), key.clone()), receipt.clone());
        }
        self.added(&message.queue, rows);
        Ok(Ok(Published {
            receipt,
            duplicate: false,
        }))
    }

    /// The refusal of a queue whose oldest live message is past the age
    /// limit. The oldest is read at most once a second per queue (an
    /// index makes it one lookup).
    async fn stalled(
        &mut self,
        batch: &mut Batch,
        queue: &str,
        now: i64,
    ) -> Result<Option<QueueError>, capgate_catalog::store::StoreError> {
        let past =
            |oldest: Option<i64>| oldest.is_some_and(|at| now.saturating_sub(at) > self.max_age_ms);
        // A recent reading that finds the queue within its limit is
        // trusted; a refusal is only ever made on a fresh one (the oldest
        // may have been acknowledged since).
        if let Some((read, oldest)) = self.oldest.get(queue)
            && read.elapsed() < OLDEST_FRESH
            && !past(*oldest)
        {
            return Ok(None);
        }
        let oldest = batch.queue_oldest(queue).await?;
        self.oldest
            .insert(queue.to_owned(), (Instant::now(), oldest));
        let Some(oldest) = oldest.filter(|_| past(oldest)) else {
            return Ok(None);
        };
        let age = now.saturating_sub(oldest);
        let (age_s, limit_s) = (
            u64::try_from(age / 1000).unwrap_or(0),
            u64::try_from(self.max_age_ms / 1000).unwrap_or(0),
        );
        tracing::warn!(
            queue,
            age_s,
            limit_s,
            "queue refuses new messages: its oldest is past max_age_ms"
        );
        Ok(Some(QueueError::Stalled {
            queue: queue.to_owned(),
            age_s,
            limit_s,
        }))
    }

    fn added(&mut self, queue: &str, rows: u64) {
        self.total += rows;
        let depth = self.depth.entry(queue.to_owned()).or_default();
        *depth += rows;
        if *depth * 5 >= self.max_depth * 4 && self.warned.insert(queue.to_owned()) {
            tracing::warn!(
                queue,
                depth = *depth,
                limit = self.max_depth,
                "queue is over 80% of its depth limit; publishing to it will be refused at the limit"
            );
        }
    }

    fn removed(&mut self, queue: &str, rows: u64) {
        self.total = self.total.saturating_sub(rows);
        let Some(depth) = self.depth.get_mut(queue) else {
            return;
        };
        *depth = depth.saturating_sub(rows);
        if *depth * 10 < self.max_depth * 7 {
            self.warned.remove(queue);
        }
        if *depth == 0 {
            self.depth.remove(queue);
            self.oldest.remove(queue);
        }
    }
}

fn fail_command(command: Command, error: QueueError) {
    match command {
        Command::Publish(_, reply) => drop(reply.send(Err(error))),
        Command::Join(_, _, _, reply) | Command::Step(_, reply) => drop(reply.send(Err(error))),
        Command::Claim { reply, .. } => drop(reply.send(Err(error))),
        Command::Redrive(_, _, reply) | Command::Purge(_, reply) => {
            drop(reply.send(Err(error)));
        }
        Command::Discard(_, _, reply) => drop(reply.send(Err(error))),
    }
}

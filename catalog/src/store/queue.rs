//! The embedded durable queue's messages.
//!
//! A message is one row per consumer: a topic's message is copied to each
//! consumer group (a subscribed function) when it is published, and waits
//! under the empty consumer `''` while a topic has none yet (the first
//! group takes them). A row is visible to its consumer from `visible_ms`;
//! claiming it leases it (`leased = 1`) until the visibility timeout, so a
//! consumer that dies mid-message loses its lease and the message is seen
//! again. A message of a group (`msg_group`, FIFO) is claimable only when
//! no earlier live message of its group is left. Dead letters stay as rows
//! with `dead = 1` until redriven or discarded.
//!
//! Every change runs inside a [`Batch`] of the queue's one writer; reads
//! for listings use the pool.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Batch, Store, StoreError, fixed_sizes, now_ms, query_error};

/// Columns of a row as claims and listings read it.
const COLUMNS: &str = "seq, receipt, queue, consumer, msg_group, data, meta, attempts, enqueued_ms, last_error, dead_ms";

/// Sequence numbers one acknowledging `DELETE` names (padded to this size
/// by repeating the last, so that it is one prepared statement).
const ACKS_PER_STATEMENT: usize = 32;

/// A message to store, already given its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub seq: i64,
    /// The id the publisher is answered with.
    pub receipt: String,
    pub queue: String,
    pub consumer: String,
    /// Messages of one group are delivered one at a time, in order.
    pub msg_group: Option<String>,
    /// The payload, as JSON text.
    pub data: String,
    /// What else the delivery needs (function, caller, trace), JSON text.
    pub meta: Option<String>,
    pub visible_ms: i64,
    pub enqueued_ms: i64,
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub seq: i64,
    pub receipt: String,
    pub queue: String,
    pub consumer: String,
    pub msg_group: Option<String>,
    pub data: String,
    pub meta: Option<String>,
    /// This delivery's number: 1 the first time.
    pub attempts: i64,
    pub enqueued_ms: i64,
}

/// A message that used up its retries (or could never succeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message: Delivered,
    pub error: Option<String>,
    pub dead_ms: Option<i64>,
}

/// What happens to a delivered message after its consumer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueStep {
    /// Done: the message is deleted.
    Ack { seq: i64 },
    /// Seen again at `visible_ms`, if the delivery `attempts` still holds it.
    Retry {
        seq: i64,
        attempts: i64,
        visible_ms: i64,
        error: String,
    },
    /// To the dead letters, if the delivery `attempts` still holds it.
    Bury {
        seq: i64,
        attempts: i64,
        error: String,
    },
}

/// One consumer's messages, as listings show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub queue: String,
    pub consumer: String,
    /// Live messages (not dead), whatever their state.
    pub depth: i64,
    /// Leased to a consumer now.
    pub in_flight: i64,
    /// Waiting for a delay or a retry's backoff.
    pub delayed: i64,
    pub dead: i64,
    /// When the oldest live message was published.
    pub oldest_ms: Option<i64>,
}

fn read_delivered(row: &AnyRow) -> Result<Delivered, sqlx::Error> {
    Ok(Delivered {
        seq: row.try_get(0)?,
        receipt: row.try_get(1)?,
        queue: row.try_get(2)?,
        consumer: row.try_get(3)?,
        msg_group: row.try_get(4)?,
        data: row.try_get(5)?,
        meta: row.try_get(6)?,
        attempts: row.try_get(7)?,
        enqueued_ms: row.try_get(8)?,
    })
}

fn read_all<T>(
    rows: &[AnyRow],
    doing: &'static str,
    read: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(read)
        .collect::<Result<_, _>>()
        .map_err(query_error(doing))
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Live messages per queue, for the writer's depth limit.
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT queue, COUNT(*) FROM queue_messages WHERE dead = 0 GROUP BY queue")
                .fetch_all(self.pool())
                .await
                .map_err(query_error("counting queued messages"))?;
        read_all(&rows, "counting queued messages", |row| {
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    /// Every consumer group, as `(queue, consumer)`.
    pub async fn queue_consumer_groups(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT queue, consumer FROM queue_consumers")
            .fetch_all(self.pool())
            .await
            .map_err(query_error("reading queue consumer groups"))?;
        read_all(&rows, "reading queue consumer groups", |row| {
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    /// The highest sequence number used so far.
    pub async fn queue_last_seq(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM queue_messages")
            .fetch_one(self.pool())
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_error("reading the queue's last sequence"))
    }

    /// When `consumer`'s next live message of `queue` becomes visible.
    pub async fn queue_next_visible(
        &self,
        queue: &str,
        consumer: &str,
    ) -> Result<Option<i64>, StoreError> {
        sqlx::query(
            "SELECT MIN(visible_ms) FROM queue_messages WHERE queue = $1 AND consumer = $2 AND dead = 0",
        )
        .bind(queue)
        .bind(consumer)
        .fetch_one(self.pool())
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("reading a queue's next message"))
    }

    /// Every consumer's counts, by queue and consumer.
    pub async fn queue_counts(&self) -> Result<Vec<QueueCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT queue, consumer,
                SUM(CASE WHEN dead = 0 THEN 1 ELSE 0 END),
                SUM(CASE WHEN dead = 0 AND leased = 1 AND visible_ms > $1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN dead = 0 AND leased = 0 AND visible_ms > $1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN dead = 1 THEN 1 ELSE 0 END),
                MIN(CASE WHEN dead = 0 THEN enqueued_ms END)
             FROM queue_messages GROUP BY queue, consumer ORDER BY queue, consumer",
        )
        .bind(now_ms())
        .fetch_all(self.pool())
        .await
        .map_err(query_error("counting queued messages"))?;
        read_all(&rows, "counting queued messages", |row| {
            Ok(QueueCounts {
                queue: row.try_get(0)?,
                consumer: row.try_get(1)?,
                depth: row.try_get(2)?,
                in_flight: row.try_get(3)?,
                delayed: row.try_get(4)?,
                dead: row.try_get(5)?,
                oldest_ms: row.try_get(6)?,
            })
        })
    }

    /// Queues holding dead letters, with how many each holds.
    pub async fn queue_dead_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT queue, COUNT(*) FROM queue_messages WHERE dead = 1 GROUP BY queue ORDER BY queue",
        )
        .fetch_all(self.pool())
        .await
        .map_err(query_error("counting dead letters"))?;
        read_all(&rows, "counting dead letters", |row| {
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    /// A page of `queue`'s dead letters, oldest first.
    pub async fn queue_dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM queue_messages WHERE queue = $1 AND dead = 1 ORDER BY seq LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(&sql)
            .bind(queue)
            .bind(count(limit))
            .bind(count(offset))
            .fetch_all(self.pool())
            .await
            .map_err(query_error("reading dead letters"))?;
        read_all(&rows, "reading dead letters", |row| {
            Ok(DeadLetter {
                message: read_delivered(row)?,
                error: row.try_get(9)?,
                dead_ms: row.try_get(10)?,
            })
        })
    }
}

impl Batch {
    /// Records a consumer group; the first group of a queue takes the
    /// messages that waited for one. True if the group is new.
    pub async fn queue_add_consumer(
        &mut self,
        queue: &str,
        consumer: &str,
        first: bool,
    ) -> Result<bool, StoreError> {
        let added = sqlx::query(
            "INSERT INTO queue_consumers (queue, consumer, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT (queue, consumer) DO NOTHING",
        )
        .bind(queue)
        .bind(consumer)
        .bind(now_ms())
        .execute(&mut *self.connection)
        .await
        .map_err(query_error("adding a queue consumer group"))?
        .rows_affected()
            == 1;
        if added && first {
            sqlx::query(
                "UPDATE queue_messages SET consumer = $1 WHERE queue = $2 AND consumer = ''",
            )
            .bind(consumer)
            .bind(queue)
            .execute(&mut *self.connection)
            .await
            .map_err(query_error("handing waiting messages to a consumer group"))?;
        }
        Ok(added)
    }

    /// Stores messages.
    pub async fn queue_insert(&mut self, messages: &[NewMessage]) -> Result<(), StoreError> {
        for chunk in fixed_sizes(messages) {
            let rows = (0..chunk.len())
                .map(|i| {
                    let n = 9 * i;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, 0, ${}, ${}, 0, 0)",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6,
                        n + 7,
                        n + 8,
                        n + 9
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO queue_messages (seq, receipt, queue, consumer, msg_group, data, meta,
                    attempts, visible_ms, enqueued_ms, dead, leased) VALUES {rows}"
            );
            let mut query = sqlx::query(&sql);
            for m in chunk {
                query = query
                    .bind(m.seq)
                    .bind(m.receipt.as_str())
                    .bind(m.queue.as_str())
                    .bind(m.consumer.as_str())
                    .bind(m.msg_group.as_deref())
                    .bind(m.data.as_str())
                    .bind(m.meta.as_deref())
                    .bind(m.visible_ms)
                    .bind(m.enqueued_ms);
            }
            query
                .execute(&mut *self.connection)
                .await
                .map_err(query_error("storing queued messages"))?;
        }
        Ok(())
    }

    /// The receipt of a message published under `key` to `queue` whose
    /// window has not passed.
    pub async fn queue_seen(
        &mut self,
        queue: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT receipt FROM queue_dedup WHERE queue = $1 AND key = $2 AND expires_ms > $3",
        )
        .bind(queue)
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&mut *self.connection)
        .await
        .map_err(query_error("checking an idempotency key"))?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(query_error("checking an idempotency key"))
    }

    /// Remembers that `key` published `receipt` until `expires_ms`.
    pub async fn queue_remember(
        &mut self,
        queue: &str,
        key: &str,
        receipt: &str,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO queue_dedup (queue, key, receipt, expires_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (queue, key) DO UPDATE SET receipt = excluded.receipt,
               expires_ms = excluded.expires_ms",
        )
        .bind(queue)
        .bind(key)
        .bind(receipt)
        .bind(expires_ms)
        .execute(&mut *self.connection)
        .await
        .map_err(query_error("recording an idempotency key"))?;
        Ok(())
    }

    /// Forgets idempotency keys whose window has passed.
    pub async fn queue_forget_keys(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM queue_dedup WHERE expires_ms <= $1")
                .bind(now_ms)
                .execute(&mut *self.connection)
                .await
                .map_err(query_error("forgetting idempotency keys"))?
                .rows_affected(),
        )
    }

    /// Leases up to `max` of `consumer`'s visible messages of `queue`
    /// until `lease_until_ms`, in order; a message of a group only when it
    /// is the first live one of its group.
    pub async fn queue_claim(
        &mut self,
        queue: &str,
        consumer: &str,
        max: usize,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<Delivered>, StoreError> {
        let sql = format!(
            "UPDATE queue_messages SET visible_ms = $1, attempts = attempts + 1, leased = 1
             WHERE seq IN (
                SELECT m.seq FROM queue_messages m
                WHERE m.queue = $2 AND m.consumer = $3 AND m.dead = 0 AND m.visible_ms <= $4
                  AND (m.msg_group IS NULL OR NOT EXISTS (
                    SELECT 1 FROM queue_messages o
                    WHERE o.queue = m.queue AND o.consumer = m.consumer
                      AND o.msg_group = m.msg_group AND o.dead = 0 AND o.seq < m.seq))
                ORDER BY m.seq LIMIT $5)
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until_ms)
            .bind(queue)
            .bind(consumer)
            .bind(now_ms)
            .bind(count(max))
            .fetch_all(&mut *self.connection)
            .await
            .map_err(query_error("claiming queued messages"))?;
        let mut claimed = read_all(&rows, "claiming queued messages", read_delivered)?;
        claimed.sort_by_key(|m| m.seq);
        Ok(claimed)
    }

    /// Applies consumers' answers; the live messages this removed, by queue.
    pub async fn queue_steps(&mut self, steps: &[QueueStep]) -> Result<Vec<String>, StoreError> {
        let mut removed = Vec::new();
        let acks: Vec<i64> = steps
            .iter()
            .filter_map(|step| match step {
                QueueStep::Ack { seq } => Some(*seq),
                _ => None,
            })
            .collect();
        let sql = format!(
            "DELETE FROM queue_messages WHERE dead = 0 AND seq IN ({}) RETURNING queue",
            (1..=ACKS_PER_STATEMENT)
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for chunk in acks.chunks(ACKS_PER_STATEMENT) {
            let mut query = sqlx::query(&sql);
            for n in 0..ACKS_PER_STATEMENT {
                // Padded with the chunk's last: naming a row twice deletes it once.
                query = query.bind(chunk.get(n).or(chunk.last()).copied().unwrap_or(0));
            }
            let rows = query
                .fetch_all(&mut *self.connection)
                .await
                .map_err(query_error("acknowledging messages"))?;
            removed.extend(read_all(&rows, "acknowledging messages", |row| {
                row.try_get::<String, _>(0)
            })?);
        }
        for step in steps {
            match step {
                QueueStep::Ack { .. } => {}
                QueueStep::Retry {
                    seq,
                    attempts,
                    visible_ms,
                    error,
                } => {
                    sqlx::query(
                        "UPDATE queue_messages SET visible_ms = $1, leased = 0, last_error = $2
                         WHERE seq = $3 AND attempts = $4 AND dead = 0",
                    )
                    .bind(visible_ms)
                    .bind(error.as_str())
                    .bind(seq)
                    .bind(attempts)
                    .execute(&mut *self.connection)
                    .await
                    .map_err(query_error("scheduling a retry"))?;
                }
                QueueStep::Bury {
                    seq,
                    attempts,
                    error,
                } => {
                    let row = sqlx::query(
                        "UPDATE queue_messages SET dead = 1, leased = 0, dead_ms = $1, last_error = $2
                         WHERE seq = $3 AND attempts = $4 AND dead = 0 RETURNING queue",
                    )
                    .bind(now_ms())
                    .bind(error.as_str())
                    .bind(seq)
                    .bind(attempts)
                    .fetch_optional(&mut *self.connection)
                    .await
                    .map_err(query_error("moving a message to the dead letters"))?;
                    if let Some(row) = row {
                        removed.push(
                            row.try_get(0)
                                .map_err(query_error("moving a message to the dead letters"))?,
                        );
                    }
                }
            }
        }
        Ok(removed)
    }

    /// When `queue`'s oldest live message was published, if it holds any.
    pub async fn queue_oldest(&mut self, queue: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query("SELECT MIN(enqueued_ms) FROM queue_messages WHERE queue = $1 AND dead = 0")
            .bind(queue)
            .fetch_one(&mut *self.connection)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_error("reading a queue's oldest message"))
    }

    /// Puts `queue`'s dead letters (one, by receipt, or all) back to be
    /// delivered now with fresh attempts; how many.
    pub async fn queue_redrive(
        &mut self,
        queue: &str,
        receipt: Option<&str>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let query = match receipt {
            Some(receipt) => sqlx::query(
                "UPDATE queue_messages SET dead = 0, attempts = 0, visible_ms = $1, dead_ms = NULL,
                   enqueued_ms = $1
                 WHERE queue = $2 AND dead = 1 AND receipt = $3",
            )
            .bind(now_ms)
            .bind(queue)
            .bind(receipt),
            None => sqlx::query(
                "UPDATE queue_messages SET dead = 0, attempts = 0, visible_ms = $1, dead_ms = NULL,
                   enqueued_ms = $1
                 WHERE queue = $2 AND dead = 1",
            )
            .bind(now_ms)
            .bind(queue),
        };
        Ok(query
            .execute(&mut *self.connection)
            .await
            .map_err(query_error("redriving dead letters"))?
            .rows_affected())
    }

    /// Deletes one dead letter of `queue`; whether it was there.
    pub async fn queue_discard(&mut self, queue: &str, receipt: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query(
                "DELETE FROM queue_messages WHERE queue = $1 AND dead = 1 AND receipt = $2",
            )
            .bind(queue)
            .bind(receipt)
            .execute(&mut *self.connection)
            .await
            .map_err(query_error("discarding a dead letter"))?
            .rows_affected()
                > 0,
        )
    }

    /// Deletes every message of `queue`, live and dead, and its consumer
    /// groups; how many live messages went.
    pub async fn queue_purge(&mut self, queue: &str) -> Result<u64, StoreError> {
        let live = sqlx::query("DELETE FROM queue_messages WHERE queue = $1 AND dead = 0")
            .bind(queue)
            .execute(&mut *self.connection)
            .await
            .map_err(query_error("purging a queue"))?
            .rows_affected();
        for sql in [
            "DELETE FROM queue_messages WHERE queue = $1",
            "DELETE FROM queue_consumers WHERE queue = $1",
            "DELETE FROM queue_dedup WHERE queue = $1",
        ] {
            sqlx::query(sql)
                .bind(queue)
                .execute(&mut *self.connection)
                .await
                .map_err(query_error("purging a queue"))?;
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests;

//! One consumer: claims its messages, up to its concurrency at a time,
//! hands each to a handler, and settles it by the delivery policy.
//!
//! A handler's success acknowledges the message; a failure retries it
//! after the policy's backoff until its retries are used, then buries it
//! in the dead letters with the last error; a failure that cannot succeed
//! on retry (the input fails the function's schema) buries it at once. A
//! delivery's call gets the lease as its deadline, so a call cannot still
//! be running when its message is seen again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::config::DeliveryPolicy;
use super::{Delivery, Queues, Settle};

/// How long an idle consumer waits before looking again when nothing
/// woke it: picks up what another gateway published, and leases that
/// lapsed.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long a consumer waits after its store failed.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How a handler ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Done: acknowledge.
    Done,
    /// Failed; retried unless `retry` is false or the retries are used.
    Failed { error: String, retry: bool },
}

/// What a consumer consumes.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub queue: String,
    /// The consumer group (a function id; empty for a function queue).
    pub consumer: String,
    pub policy: DeliveryPolicy,
}

/// The settlement of `attempt` by `policy`.
pub fn settle(policy: &DeliveryPolicy, attempt: u32, handled: Handled) -> Settle {
    match handled {
        Handled::Done => Settle::Ack,
        Handled::Failed { error, retry } if retry && attempt <= policy.max_retries => {
            Settle::Retry {
                after: policy.backoff_after(attempt),
                error,
            }
        }
        Handled::Failed { error, .. } => Settle::Bury { error },
    }
}

/// Runs until `stop`: every message claimed is handled by `handle` and
/// settled; those in hand when it stops are finished and settled.
pub async fn run<H, F>(queues: Arc<Queues>, spec: ConsumerSpec, stop: CancellationToken, handle: H)
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Handled> + Send + 'static,
{
    let handle = Arc::new(handle);
    // A server that orders a queue delivers one message at a time anyway
    // (JetStream's max_ack_pending 1): asking for more only spins.
    let ordered_by_server = queues.backend().waits_for_messages()
        && spec.policy.ordering != super::config::Ordering::Concurrent;
    let concurrency = if ordered_by_server {
        1
    } else {
        spec.policy.concurrency
    };
    let slots = Arc::new(Semaphore::new(concurrency));
    let waker = queues.waker(&spec.queue);
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        // Registered before the claim: a publish after it wakes this loop.
        let woken = waker.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let free = 1 + slots.available_permits();
        let claimed = match queues
            .backend()
            .claim(&spec.queue, &spec.consumer, free, spec.policy.visibility)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(queue = %spec.queue, consumer = %spec.consumer, %error, "could not claim queued messages; retrying");
                drop(first);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(ERROR_PAUSE) => {}
                }
                continue;
            }
        };
        if claimed.is_empty() {
            drop(first);
            if queues.backend().waits_for_messages() {
                if stop.is_cancelled() {
                    return;
                }
                continue;
            }
            let wait = idle_wait(&queues, &spec).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut woken => {}
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let mut first = Some(first);
        for delivery in claimed {
            let slot = match first.take() {
                Some(slot) => slot,
                // Free: this loop is the only one taking slots.
                None => match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let (queues, handle, policy) = (queues.clone(), handle.clone(), spec.policy.clone());
            let waker = waker.clone();
            tokio::spawn(async move {
                let attempt = delivery.attempt;
                // The handler takes the message; what settles it is kept.
                let ticket = delivery.ticket();
                let handled = handle(delivery).await;
                let delivery = ticket;
                let settlement = settle(&policy, attempt, handled);
                if let Settle::Bury { error } = &settlement {
                    tracing::warn!(queue = %delivery.queue, consumer = %delivery.consumer,
                        message_id = %delivery.receipt, attempt, %error,
                        "message moved to the dead letters");
                }
                if let Err(error) = queues.backend().settle(&delivery, settlement).await {
                    // Unsettled: the lease lapses and the message is
                    // delivered again (at least once).
                    tracing::warn!(queue = %delivery.queue, message_id = %delivery.receipt, %error,
                        "could not settle a delivered message; it will be delivered again");
                }
                drop(slot);
                // A message of its group (FIFO) may be claimable now.
                waker.notify_waiters();
            });
        }
    }
}

/// How long an idle consumer sleeps: until its next message is due (a
/// delay or a backoff), at most [`IDLE_POLL`].
async fn idle_wait(queues: &Queues, spec: &ConsumerSpec) -> Duration {
    match queues.backend().next_due(&spec.queue, &spec.consumer).await {
        Ok(Some(due)) => {
            match u64::try_from(due.saturating_sub(super::now_ms())) {
                // Visible yet not claimable: held behind an earlier message
                // of its group, whose settlement wakes this consumer.
                Ok(0) | Err(_) => IDLE_POLL,
                Ok(ms) => Duration::from_millis(ms.max(5)).min(IDLE_POLL),
            }
        }
        _ => IDLE_POLL,
    }
}

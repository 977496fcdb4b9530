//! Events handed to every subscription that wants them, in the order they
//! were published.
//!
//! Each subscription has a bounded queue of its own; an event that finds
//! it full is dropped for that subscription and counted, so a slow
//! subscriber never holds up a publisher or another subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

/// Events one subscription may have waiting.
pub const SUBSCRIPTION_QUEUE: usize = 1_024;

type Filter<E> = Box<dyn Fn(&E) -> bool + Send + Sync>;

struct Subscriber<E> {
    wants: Filter<E>,
    queue: mpsc::Sender<Arc<E>>,
    dropped: Arc<AtomicU64>,
}

/// Every subscription to events of type `E`.
pub struct Fanout<E> {
    next: AtomicU64,
    subscribers: Mutex<HashMap<u64, Subscriber<E>>>,
}

impl<E> Default for Fanout<E> {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            subscribers: Mutex::new(HashMap::new()),
        }
    }
}

/// A subscription: its events, and how many it lost; ends when dropped.
pub struct Subscription<E> {
    pub events: mpsc::Receiver<Arc<E>>,
    pub dropped: Arc<AtomicU64>,
    id: u64,
    fanout: Arc<Fanout<E>>,
}

impl<E> Drop for Subscription<E> {
    fn drop(&mut self) {
        self.fanout.lock().remove(&self.id);
    }
}

impl<E> Fanout<E> {
    /// Subscribes to the events `wants` accepts; those lost to a full
    /// queue are counted in `dropped`.
    pub fn subscribe(
        self: &Arc<Self>,
        wants: impl Fn(&E) -> bool + Send + Sync + 'static,
        dropped: Arc<AtomicU64>,
    ) -> Subscription<E> {
        let (queue, events) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Subscriber {
                wants: Box::new(wants),
                queue,
                dropped: dropped.clone(),
            },
        );
        Subscription {
            events,
            dropped,
            id,
            fanout: self.clone(),
        }
    }

    /// Hands an event to every subscription that wants it; how many took it.
    pub fn publish(&self, event: E) -> usize {
        let subscribers = self.lock();
        if subscribers.is_empty() {
            return 0;
        }
        let event = Arc::new(event);
        let mut taken = 0;
        for subscriber in subscribers.values() {
            if (subscriber.wants)(&event) {
                if subscriber.queue.try_send(event.clone()).is_ok() {
                    taken += 1;
                } else {
                    subscriber.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Subscriber<E>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

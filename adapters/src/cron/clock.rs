//! The time cron reads and waits on. The gateway uses the system clock;
//! tests and simulations use a [`ManualClock`] they move themselves, so
//! schedules across days, restarts and daylight-saving changes are checked
//! without waiting for them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Wall-clock time, and waiting for it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `now() >= at`.
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The longest single sleep: a wall clock that is stepped (NTP, a
/// suspended VM) is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let Ok(left) = (at - Utc::now()).to_std() else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(MAX_SLEEP)).await;
            }
        })
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: watch::Sender::new(start),
        }
    }

    /// Moves the clock to `at` (forward or back); sleepers due by then wake.
    pub fn set(&self, at: DateTime<Utc>) {
        self.now.send_replace(at);
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.now.send_modify(|now| *now += by);
    }

    /// How many waits are pending: a job's task is idle, waiting for its
    /// next window, once it waits here.
    pub fn sleepers(&self) -> usize {
        self.now.receiver_count()
    }

    /// Waits (up to ten seconds, then panics naming what it waited for)
    /// until exactly `count` waits are pending.
    pub async fn until_sleepers(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.sleepers() != count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} tasks wait on the clock, not {count}",
                self.sleepers()
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this
            // borrow of it: the wait ends only by the time arriving.
            let _ = now.wait_for(|now| *now >= at).await;
        })
    }
}

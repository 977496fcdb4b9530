//! A future polled again at once when it wakes itself during its own poll.
//!
//! hyper's HTTP/1 server wakes its connection's task from inside the task's
//! own poll whenever a handler reads a request body: the body asks the
//! connection for its bytes (`want`), which wakes the connection — the task
//! being polled. Tokio then treats the task as one that yielded: it goes to
//! the back of the run queue and an idle worker thread is woken to steal it
//! (a futex wake), so the rest of the request runs on another thread. On a
//! two-core host that was two futex calls and a cross-core move per MCP
//! request, and tens of microseconds of latency (docs/benchmarks.md).
//!
//! [`PollAgain`] gives the connection a waker of its own: a wake that comes
//! while the connection is being polled is remembered instead of passed to
//! the task, and the connection is polled again in the same turn — a few
//! times at most, after which the wake is passed on and the task yields as
//! before, so a connection that keeps waking itself cannot hold its thread.
//! A wake at any other time goes to the task at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls in a row for a future that keeps waking itself, before its task
/// yields as any other would.
const POLLS_IN_A_ROW: usize = 4;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN_WHILE_POLLING: u8 = 2;

/// Where the wrapped future's wakes go.
struct Signal {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                WOKEN_WHILE_POLLING => return,
                POLLING => match self.state.compare_exchange(
                    POLLING,
                    WOKEN_WHILE_POLLING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                },
                _ => {
                    self.task.wake();
                    return;
                }
            }
        }
    }
}

/// `inner`, polled again while it wakes itself during its poll.
pub struct PollAgain<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    waker: Waker,
}

impl<F: Future> PollAgain<F> {
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(signal.clone()),
            signal,
        }
    }

    /// The wrapped future.
    pub fn inner(&mut self) -> Pin<&mut F> {
        self.inner.as_mut()
    }
}

impl<F: Future> Future for PollAgain<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.signal.task.register(cx.waker());
        let mut own = Context::from_waker(&this.waker);
        for _ in 0..POLLS_IN_A_ROW {
            this.signal.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut own);
            let state = this.signal.state.swap(IDLE, Ordering::AcqRel);
            if polled.is_ready() {
                return polled;
            }
            if state != WOKEN_WHILE_POLLING {
                return Poll::Pending;
            }
        }
        // Still waking itself: let the task yield, as it would unwrapped.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the polls of a future that wakes itself in each of its first
    /// `self_wakes` polls, then finishes.
    struct WakesItself {
        self_wakes: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for WakesItself {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let polls = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if polls > self.self_wakes {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// A waker that counts its wakes.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// One poll by a task of a future that wakes itself `self_wakes` times:
    /// whether it finished, how often it was polled, how often its task
    /// was woken.
    fn poll_by_a_task(self_wakes: usize) -> (bool, usize, usize) {
        let polls = Arc::new(AtomicUsize::new(0));
        let task = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut future = PollAgain::new(WakesItself {
            self_wakes,
            polls: polls.clone(),
        });
        let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
        (
            polled.is_ready(),
            polls.load(Ordering::SeqCst),
            task.0.load(Ordering::SeqCst),
        )
    }

    #[test]
    fn a_wake_during_its_own_poll_polls_again_instead_of_waking_the_task() {
        assert_eq!(poll_by_a_task(2), (true, 3, 0));
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_after_a_few_polls() {
        // The task was woken, so it is polled again later, as unwrapped.
        assert_eq!(poll_by_a_task(100), (false, POLLS_IN_A_ROW, 1));
    }

    #[tokio::test]
    async fn a_wake_from_elsewhere_reaches_the_task() {
        let (send, receive) = tokio::sync::oneshot::channel::<u32>();
        let handle = tokio::spawn(PollAgain::new(receive));
        tokio::task::yield_now().await;
        send.send(7).expect("the receiver waits");
        let received = tokio::time::timeout(std::time::Duration::from_secs(10), handle)
            .await
            .expect("woken, not hung")
            .expect("the task ran");
        assert_eq!(received, Ok(7));
    }
}

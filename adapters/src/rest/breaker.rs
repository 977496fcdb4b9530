//! A circuit breaker per upstream: after `threshold` failures in a row
//! (connection errors, timeouts, 5xx answers) calls are refused at once
//! for `cooldown`; then one trial call is let through, and its outcome
//! closes the circuit or opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cooldown ended and one trial call is out.
    HalfOpen,
}

pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

/// The states a circuit can be in, as views and metrics name them.
pub const STATES: [&str; 3] = ["closed", "open", "half_open"];

/// The breaker as `GET /api/v1/rest-services` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// While open: when the next trial call is let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// Leave to send one call; its outcome is recorded through it. A permit
/// dropped without an outcome (the caller gave up mid-call) records
/// nothing — except that an abandoned trial lets the next call be the
/// trial, so the circuit never stays half-open for good.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    trial: bool,
    settled: bool,
}

impl Permit<'_> {
    pub fn record(mut self, healthy: bool) {
        self.settled = true;
        self.breaker.record(healthy);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.trial {
            let mut state = self.breaker.lock();
            if matches!(*state, State::HalfOpen) {
                *state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

/// Refused: the circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_in: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May a call go out now?
    pub fn admit(&self) -> Result<Permit<'_>, Open> {
        let mut state = self.lock();
        let permit = |trial| Permit {
            breaker: self,
            trial,
            settled: false,
        };
        match *state {
            State::Closed { .. } => Ok(permit(false)),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen;
                    Ok(permit(true))
                } else {
                    Err(Open {
                        retry_in: until - now,
                    })
                }
            }
            // One trial at a time: the others wait for its outcome.
            State::HalfOpen => Err(Open {
                retry_in: Duration::ZERO,
            }),
        }
    }

    /// The outcome of an admitted call.
    fn record(&self, healthy: bool) {
        let mut state = self.lock();
        *state = match (*state, healthy) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, false) => {
                tracing::warn!(
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "REST upstream circuit opened"
                );
                State::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
    }

    pub fn view(&self) -> BreakerView {
        let [closed, open, half_open] = STATES;
        match *self.lock() {
            State::Closed { failures } => BreakerView {
                state: closed,
                consecutive_failures: failures,
                retry_in_ms: None,
            },
            State::Open { until } => BreakerView {
                state: open,
                consecutive_failures: self.threshold,
                retry_in_ms: Some(
                    until.saturating_duration_since(Instant::now()).as_millis() as u64
                ),
            },
            State::HalfOpen => BreakerView {
                state: half_open,
                consecutive_failures: self.threshold,
                retry_in_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_trial() {
        let breaker = Breaker::new(3, Duration::from_millis(40));
        for _ in 0..2 {
            breaker.admit().unwrap().record(false);
        }
        assert_eq!(breaker.view().state, "closed");
        breaker.admit().unwrap().record(false);
        assert_eq!(breaker.view().state, "open");
        assert!(breaker.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        let trial = breaker.admit().unwrap();
        assert_eq!(breaker.view().state, "half_open");
        assert!(breaker.admit().is_err(), "one trial at a time");
        trial.record(false);
        assert_eq!(breaker.view().state, "open");
        std::thread::sleep(Duration::from_millis(60));
        breaker.admit().unwrap().record(true);
        assert_eq!(breaker.view().state, "closed");
        assert_eq!(breaker.view().consecutive_failures, 0);
        // A call dropped without an outcome records nothing.
        drop(breaker.admit().unwrap());
        assert_eq!(breaker.view().consecutive_failures, 0);
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_call_try() {
        let breaker = Breaker::new(1, Duration::from_millis(20));
        breaker.admit().unwrap().record(false);
        std::thread::sleep(Duration::from_millis(40));
        let trial = breaker.admit().unwrap();
        drop(trial);
        assert_ne!(breaker.view().state, "half_open", "not stuck half-open");
        breaker
            .admit()
            .expect("the next call is the trial")
            .record(true);
        assert_eq!(breaker.view().state, "closed");
    }
}

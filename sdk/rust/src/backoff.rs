//! Reconnect delays: exponential, capped, with jitter so that many workers
//! cut off at once do not reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `initial × 2ⁿ`, capped at `max`, each delay scaled
/// by a random factor in `[1 - jitter, 1 + jitter]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
}

/// Why backoff parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("initial delay must be greater than zero")]
    ZeroInitial,
    #[error("maximum delay ({max:?}) must be at least the initial delay ({initial:?})")]
    MaxBelowInitial { initial: Duration, max: Duration },
    #[error("jitter must be within 0.0..=1.0, got {0}")]
    Jitter(String),
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            jitter: 0.3,
        }
    }
}

impl Backoff {
    pub fn try_new(initial: Duration, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial { initial, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::Jitter(jitter.to_string()));
        }
        Ok(Self {
            initial,
            max,
            jitter,
        })
    }

    /// The delay before reconnect attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max);
        let factor = 1.0 + rand::rng().random_range(-self.jitter..=self.jitter);
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_within_jitter() {
        let backoff =
            Backoff::try_new(Duration::from_millis(100), Duration::from_secs(2), 0.25).unwrap();
        for attempt in 0..40 {
            let base = (100u64 << attempt.min(20)).min(2000) as f64;
            let delay = backoff.delay(attempt).as_secs_f64() * 1000.0;
            assert!(
                delay >= base * 0.75 - 1e-6 && delay <= base * 1.25 + 1e-6,
                "attempt {attempt}: {delay} ms"
            );
        }
    }

    #[test]
    fn refuses_nonsense() {
        assert!(Backoff::try_new(Duration::ZERO, Duration::from_secs(1), 0.1).is_err());
        assert!(Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1), 0.1).is_err());
        assert!(Backoff::try_new(Duration::from_secs(1), Duration::from_secs(1), 1.5).is_err());
    }
}

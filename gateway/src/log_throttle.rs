//! A warning that may repeat thousands of times a second (a refusal storm)
//! is logged once per interval, so the log stays readable and the refusals
//! stay cheap.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Says whether to log now: the first time, then at most once per interval.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
        }
    }

    pub fn should_log(&self) -> bool {
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < self.interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_and_then_once_per_interval() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert!(throttle.should_log());
        assert!(!throttle.should_log());
        let every_time = LogThrottle::new(Duration::ZERO);
        assert!(every_time.should_log() && every_time.should_log());
    }
}

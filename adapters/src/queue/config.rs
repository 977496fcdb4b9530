//! How queues deliver: the `[queues]` section of capgate.toml, a function
//! queue's settings, and iii's `queue_config` of a `durable:subscriber` —
//! all read into one [`DeliveryPolicy`].

use std::time::Duration;

use serde::Deserialize;

/// Most retries a message may be given.
pub const MAX_RETRIES: u32 = 100;
/// Most messages one consumer works on at once.
pub const MAX_CONCURRENCY: usize = 256;
/// Longest visibility timeout (a delivery's deadline).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// Shortest visibility timeout.
pub const MIN_VISIBILITY: Duration = Duration::from_millis(100);
/// Longest backoff between attempts, and longest delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[queues]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// `embedded` (the store) or `nats` (JetStream at `url`).
    pub backend: String,
    /// The NATS server, for `backend = "nats"`.
    pub url: Option<String>,
    /// The JetStream stream holding the queues (and `NAME_DLQ` their dead
    /// letters), for `backend = "nats"`.
    pub nats_stream: String,
    /// The subjects' first token (`PREFIX.q.QUEUE.GROUP`).
    pub nats_subject_prefix: String,
    /// Most live messages one queue (all its consumer groups) holds;
    /// publishing beyond it is refused.
    pub max_depth: u64,
    /// Most live messages in all queues together (each group's copy
    /// counts); publishing beyond it is refused.
    pub max_messages: u64,
    /// Largest message, as JSON text.
    pub max_message_bytes: usize,
    /// How long an `idempotency_key` drops duplicates.
    pub idempotency_window_ms: u64,
    /// A queue whose oldest live message is older than this refuses new
    /// messages: its consumers are not keeping up (embedded backend).
    pub max_age_ms: u64,
    /// Named queues an `invokefunction` with `action: enqueue` puts calls on.
    pub function_queues: Vec<FunctionQueueConfig>,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            url: None,
            nats_stream: "CAPGATE_QUEUES".into(),
            nats_subject_prefix: "capgate".into(),
            max_depth: 1_000_000,
            max_messages: 10_000_000,
            max_message_bytes: 1024 * 1024,
            idempotency_window_ms: 5 * 60 * 1000,
            max_age_ms: 7 * 24 * 3600 * 1000,
            function_queues: Vec::new(),
        }
    }
}

/// `[[queues.function_queues]]`: a named queue of calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionQueueConfig {
    pub name: String,
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Calls whose input has the same value at this field run one at a
    /// time, in order.
    #[serde(default)]
    pub message_group_field: Option<String>,
    /// Every call of the queue one at a time, in order.
    #[serde(default)]
    pub fifo: bool,
    #[serde(default = "defaults::visibility_ms")]
    pub visibility_timeout_ms: u64,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default = "defaults::backoff_ms")]
    pub backoff_delay_ms: u64,
    #[serde(default)]
    pub delay_seconds: u64,
}

mod defaults {
    pub fn max_retries() -> u32 {
        3
    }
    pub fn concurrency() -> usize {
        10
    }
    pub fn visibility_ms() -> u64 {
        30_000
    }
    pub fn backoff_ms() -> u64 {
        1_000
    }
}

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `delay × 2^(attempt − 1)`, with jitter.
    #[default]
    Exponential,
    /// `delay × attempt`, with jitter.
    Linear,
    /// `delay` every time, with jitter.
    Fixed,
}

/// Ordering of a consumer's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ordering {
    /// Any order, `concurrency` at a time.
    Concurrent,
    /// One at a time, in publish order (the whole queue).
    Fifo,
    /// One at a time per value of this input field, in publish order.
    ByField(String),
}

/// How one consumer gets its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    /// Retries after the first attempt; then the dead letters.
    pub max_retries: u32,
    pub concurrency: usize,
    /// A delivery's lease: the message is delivered again after it if not
    /// answered (the call's deadline is held within it).
    pub visibility: Duration,
    pub backoff: Backoff,
    pub backoff_delay: Duration,
    /// Every message waits this long after it is published.
    pub delay: Duration,
    pub ordering: Ordering,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_retries: defaults::max_retries(),
            concurrency: defaults::concurrency(),
            visibility: Duration::from_millis(defaults::visibility_ms()),
            backoff: Backoff::Exponential,
            backoff_delay: Duration::from_millis(defaults::backoff_ms()),
            delay: Duration::ZERO,
            ordering: Ordering::Concurrent,
        }
    }
}

impl DeliveryPolicy {
    /// Refuses values out of range, naming the setting and its range.
    pub fn check(&self) -> Result<(), String> {
        if self.max_retries > MAX_RETRIES {
            return Err(format!(
                "maxRetries {} is over {MAX_RETRIES}",
                self.max_retries
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(format!(
                "concurrency {} is not between 1 and {MAX_CONCURRENCY}",
                self.concurrency
            ));
        }
        if !(MIN_VISIBILITY..=MAX_VISIBILITY).contains(&self.visibility) {
            return Err(format!(
                "visibilityTimeout {} ms is not between {} ms and {} ms",
                self.visibility.as_millis(),
                MIN_VISIBILITY.as_millis(),
                MAX_VISIBILITY.as_millis()
            ));
        }
        if self.backoff_delay > MAX_BACKOFF {
            return Err(format!(
                "backoffDelayMs {} is over {} ms",
                self.backoff_delay.as_millis(),
                MAX_BACKOFF.as_millis()
            ));
        }
        if self.delay > MAX_DELAY {
            return Err(format!(
                "delaySeconds {} is over {}",
                self.delay.as_secs(),
                MAX_DELAY.as_secs()
            ));
        }
        Ok(())
    }

    /// How long to wait before delivery `attempt` + 1, after `attempt`
    /// failed: the backoff, then jitter between half and all of it (so
    /// that retries of a burst spread out), at most [`MAX_BACKOFF`].
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let base = self.backoff_delay;
        let step = attempt.max(1);
        let full = match self.backoff {
            Backoff::Fixed => base,
            Backoff::Linear => base.saturating_mul(step),
            Backoff::Exponential => base.saturating_mul(2u32.saturating_pow(step - 1)),
        }
        .min(MAX_BACKOFF);
        let half = full / 2;
        half + full.mul_f64(rand::random::<f64>() / 2.0)
    }
}

impl FunctionQueueConfig {
    pub fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            max_retries: self.max_retries,
            concurrency: self.concurrency,
            visibility: Duration::from_millis(self.visibility_timeout_ms),
            backoff: self.backoff,
            backoff_delay: Duration::from_millis(self.backoff_delay_ms),
            delay: Duration::from_secs(self.delay_seconds),
            ordering: match (&self.message_group_field, self.fifo) {
                (Some(field), _) => Ordering::ByField(field.clone()),
                (None, true) => Ordering::Fifo,
                (None, false) => Ordering::Concurrent,
            },
        }
    }
}

impl QueuesConfig {
    /// Checks every setting; the first wrong one, said in full.
    pub fn check(&self) -> Result<(), String> {
        match self.backend.as_str() {
            "embedded" => {}
            "nats" => {
                if self.url.is_none() {
                    return Err(
                        "backend = \"nats\" needs url (such as \"nats://127.0.0.1:4222\")".into(),
                    );
                }
            }
            other => {
                return Err(format!(
                    "backend '{other}' is not a queue backend; use \"embedded\" or \"nats\""
                ));
            }
        }
        let name_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        };
        if !name_ok(&self.nats_stream) || !name_ok(&self.nats_subject_prefix) {
            return Err(
                "nats_stream and nats_subject_prefix must be 1 to 64 letters, digits, '_' or '-'"
                    .into(),
            );
        }
        if self.max_depth == 0 {
            return Err("max_depth must be at least 1".into());
        }
        if self.max_messages < self.max_depth {
            return Err(format!(
                "max_messages ({}) must be at least max_depth ({})",
                self.max_messages, self.max_depth
            ));
        }
        if self.max_age_ms < 100 {
            return Err("max_age_ms must be at least 100".into());
        }
        if self.max_message_bytes < 2 {
            return Err("max_message_bytes must be at least 2".into());
        }
        let mut names = std::collections::HashSet::new();
        for queue in &self.function_queues {
            super::check_topic(&queue.name).map_err(|e| format!("function_queues: {e}"))?;
            if !names.insert(queue.name.as_str()) {
                return Err(format!(
                    "function_queues: '{}' is configured twice; give each queue one entry",
                    queue.name
                ));
            }
            queue
                .policy()
                .check()
                .map_err(|e| format!("function_queues '{}': {e}", queue.name))?;
            if let Some(field) = &queue.message_group_field
                && field.is_empty()
            {
                return Err(format!(
                    "function_queues '{}': message_group_field is empty; name an input field or leave it out",
                    queue.name
                ));
            }
        }
        Ok(())
    }

    /// The function queue named `name`, if configured.
    pub fn function_queue(&self, name: &str) -> Option<&FunctionQueueConfig> {
        self.function_queues.iter().find(|q| q.name == name)
    }
}

/// iii's `queue_config` of a `durable:subscriber` (camelCase as iii
/// sends it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriberQueueConfig {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub max_retries: Option<u32>,
    pub concurrency: Option<usize>,
    /// Milliseconds.
    pub visibility_timeout: Option<u64>,
    pub delay_seconds: Option<u64>,
    pub backoff_type: Option<Backoff>,
    pub backoff_delay_ms: Option<u64>,
}

impl SubscriberQueueConfig {
    pub fn policy(&self) -> Result<DeliveryPolicy, String> {
        let defaults = DeliveryPolicy::default();
        let ordering = match self.kind.as_deref() {
            None | Some("standard" | "concurrent") => Ordering::Concurrent,
            Some("fifo") => Ordering::Fifo,
            Some(other) => {
                return Err(format!(
                    "queue_config.type '{other}' is not a queue type; use \"fifo\" or \"concurrent\""
                ));
            }
        };
        let policy = DeliveryPolicy {
            max_retries: self.max_retries.unwrap_or(defaults.max_retries),
            concurrency: self.concurrency.unwrap_or(defaults.concurrency),
            visibility: self
                .visibility_timeout
                .map_or(defaults.visibility, Duration::from_millis),
            backoff: self.backoff_type.unwrap_or_default(),
            backoff_delay: self
                .backoff_delay_ms
                .map_or(defaults.backoff_delay, Duration::from_millis),
            delay: Duration::from_secs(self.delay_seconds.unwrap_or(0)),
            ordering,
        };
        policy.check()?;
        Ok(policy)
    }
}

//! Calls counted in the gateway and reported to OpenTelemetry when it
//! collects (an observable counter), instead of through the SDK's counter
//! on every call: the SDK hashes the label set with SipHash and takes its
//! map's lock per measurement, which was the largest single item of a
//! call's profile once the rest had been trimmed (docs/benchmarks.md).
//! Here a call is one lookup in a map hashed with foldhash and an atomic
//! increment; the label set is built only at collection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use opentelemetry::{KeyValue, StringValue};

/// Label sets kept; calls of any further one are counted under
/// `otel.metric.overflow`, as the SDK does past the same limit.
pub const MAX_LABEL_SETS: usize = 2_000;

/// `function`, `version` (`None`: none resolved), `source`, `outcome`.
type Labels = (Arc<str>, Option<Arc<str>>, &'static str, &'static str);

/// Cumulative calls by label set.
#[derive(Default)]
pub struct CallCounts {
    counts: RwLock<HashMap<Labels, AtomicU64, foldhash::fast::RandomState>>,
    overflow: AtomicU64,
}

impl CallCounts {
    /// Counts one call.
    pub fn add(
        &self,
        function: Arc<str>,
        version: Option<&Arc<str>>,
        source: &'static str,
        outcome: &'static str,
    ) {
        let labels = (function, version.cloned(), source, outcome);
        {
            let counts = self.counts.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get(&labels) {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut counts = self.counts.write().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_LABEL_SETS && !counts.contains_key(&labels) {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counts
            .entry(labels)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Every label set with its count so far, as the counter reports them.
    pub fn observe(&self, mut report: impl FnMut(u64, &[KeyValue])) {
        let counts = self.counts.read().unwrap_or_else(PoisonError::into_inner);
        for ((function, version, source, outcome), count) in counts.iter() {
            let version = match version {
                Some(version) => StringValue::from(Arc::clone(version)),
                None => StringValue::from(""),
            };
            report(
                count.load(Ordering::Relaxed),
                &[
                    KeyValue::new("function", StringValue::from(Arc::clone(function))),
                    KeyValue::new("version", version),
                    KeyValue::new("source", *source),
                    KeyValue::new("outcome", *outcome),
                ],
            );
        }
        let overflow = self.overflow.load(Ordering::Relaxed);
        if overflow > 0 {
            report(overflow, &[KeyValue::new("otel.metric.overflow", true)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(counts: &CallCounts) -> Vec<(u64, Vec<String>)> {
        let mut seen = Vec::new();
        counts.observe(|count, labels| {
            let labels = labels
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            seen.push((count, labels));
        });
        seen.sort();
        seen
    }

    #[test]
    fn calls_are_counted_by_label_set_and_reported_with_every_label() {
        let counts = CallCounts::default();
        let version: Arc<str> = Arc::from("1.2.0");
        for _ in 0..3 {
            counts.add(Arc::from("a::b"), Some(&version), "worker", "ok");
        }
        counts.add(Arc::from("a::b"), Some(&version), "mcp", "ok");
        counts.add(Arc::from("_unknown"), None, "worker", "function_not_found");
        assert_eq!(
            reported(&counts),
            vec![
                (
                    1,
                    vec![
                        "function=_unknown".into(),
                        "version=".into(),
                        "source=worker".into(),
                        "outcome=function_not_found".into()
                    ]
                ),
                (
                    1,
                    vec![
                        "function=a::b".into(),
                        "version=1.2.0".into(),
                        "source=mcp".into(),
                        "outcome=ok".into()
                    ]
                ),
                (
                    3,
                    vec![
                        "function=a::b".into(),
                        "version=1.2.0".into(),
                        "source=worker".into(),
                        "outcome=ok".into()
                    ]
                ),
            ]
        );
    }

    #[test]
    fn label_sets_past_the_limit_are_counted_as_overflow_not_kept() {
        let counts = CallCounts::default();
        for n in 0..MAX_LABEL_SETS + 5 {
            counts.add(Arc::from(format!("f::n{n}")), None, "worker", "ok");
        }
        // A set already kept still counts as itself at the limit.
        counts.add(Arc::from("f::n0"), None, "worker", "ok");
        let seen = reported(&counts);
        assert_eq!(seen.len(), MAX_LABEL_SETS + 1);
        assert!(seen.contains(&(5, vec!["otel.metric.overflow=true".into()])));
        assert_eq!(
            seen.iter()
                .find(|(_, labels)| labels[0] == "function=f::n0")
                .map(|(count, _)| *count),
            Some(2)
        );
    }
}

//! Each call's count and duration, by label set, recorded without the
//! OpenTelemetry SDK hashing the label set per call.
//!
//! Through the SDK's instruments a measurement hashes its attributes with
//! SipHash and looks them up under its map's lock: for the call counter
//! and the duration histogram together about 2,000 instructions a call,
//! the largest single item of a call's profile once the rest had been
//! trimmed (docs/benchmarks.md). Here a call is one lookup in a map hashed
//! with foldhash (the labels are shared text and static strings), an
//! atomic increment, and a record into a histogram bound to its label set
//! when the set was first seen. The count is reported when the SDK
//! collects (an observable counter); the label set is built only then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use opentelemetry::metrics::{BoundHistogram, Histogram};
use opentelemetry::{KeyValue, StringValue};

/// Label sets kept; calls of any further one are counted under
/// `otel.metric.overflow`, as the SDK does past the same limit (their
/// durations go through the SDK's own path, which caps them alike).
pub const MAX_LABEL_SETS: usize = 2_000;

/// `function`, `version` (`None`: none resolved), `source`, `outcome`.
type Labels = (Arc<str>, Option<Arc<str>>, &'static str, &'static str);

/// One label set's count, and the duration histogram bound to its
/// `function`, `source` and `outcome` (the histogram has no `version`).
struct Entry {
    count: AtomicU64,
    duration: BoundHistogram<f64>,
}

/// Cumulative calls by label set, and their durations.
pub struct CallStats {
    entries: RwLock<HashMap<Labels, Entry, foldhash::fast::RandomState>>,
    overflow: AtomicU64,
    duration: Histogram<f64>,
}

impl CallStats {
    /// Stats whose durations go to `duration`.
    pub fn new(duration: Histogram<f64>) -> Self {
        Self {
            entries: RwLock::default(),
            overflow: AtomicU64::new(0),
            duration,
        }
    }

    /// Counts one call that took `seconds`.
    pub fn add(
        &self,
        function: Arc<str>,
        version: Option<&Arc<str>>,
        source: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        let labels = (function, version.cloned(), source, outcome);
        {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = entries.get(&labels) {
                entry.count.fetch_add(1, Ordering::Relaxed);
                entry.duration.record(seconds);
                return;
            }
        }
        let attributes = duration_attributes(&labels);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_LABEL_SETS && !entries.contains_key(&labels) {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            drop(entries);
            self.duration.record(seconds, &attributes);
            return;
        }
        let entry = entries.entry(labels).or_insert_with(|| Entry {
            count: AtomicU64::new(0),
            duration: self.duration.bind(&attributes),
        });
        entry.count.fetch_add(1, Ordering::Relaxed);
        entry.duration.record(seconds);
    }

    /// Every label set with its count so far, as the counter reports them.
    pub fn observe(&self, mut report: impl FnMut(u64, &[KeyValue])) {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        for ((function, version, source, outcome), entry) in entries.iter() {
            let version = match version {
                Some(version) => StringValue::from(Arc::clone(version)),
                None => StringValue::from(""),
            };
            report(
                entry.count.load(Ordering::Relaxed),
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

/// The duration histogram's attributes for a label set. Shared, not owned:
/// a copy of an owned string would be an allocation per label set.
fn duration_attributes((function, _, source, outcome): &Labels) -> [KeyValue; 3] {
    [
        KeyValue::new("function", StringValue::from(Arc::clone(function))),
        KeyValue::new("source", *source),
        KeyValue::new("outcome", *outcome),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stats whose durations go nowhere: these tests read the counts
    /// (metrics.rs reads the durations through a real provider).
    fn stats() -> CallStats {
        CallStats::new(
            opentelemetry::global::meter("test")
                .f64_histogram("d")
                .build(),
        )
    }

    fn reported(counts: &CallStats) -> Vec<(u64, Vec<String>)> {
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
        let counts = stats();
        let version: Arc<str> = Arc::from("1.2.0");
        for _ in 0..3 {
            counts.add(Arc::from("a::b"), Some(&version), "worker", "ok", 0.001);
        }
        counts.add(Arc::from("a::b"), Some(&version), "mcp", "ok", 0.001);
        counts.add(
            Arc::from("_unknown"),
            None,
            "worker",
            "function_not_found",
            0.001,
        );
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
        let counts = stats();
        for n in 0..MAX_LABEL_SETS + 5 {
            counts.add(Arc::from(format!("f::n{n}")), None, "worker", "ok", 0.001);
        }
        // A set already kept still counts as itself at the limit.
        counts.add(Arc::from("f::n0"), None, "worker", "ok", 0.001);
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

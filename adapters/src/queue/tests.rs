//! One suite, run against both backends: the embedded queue on a real
//! SQLite store and NATS JetStream at `CAPGATE_TEST_NATS_URL` (each test on
//! a stream of its own) — delivery, retries and dead letters, ordering,
//! delay, leases, idempotency, limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use capgate_catalog::store::Store;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{Backoff, DeliveryPolicy, FunctionQueueConfig, Ordering};
use super::consumer::{self, ConsumerSpec, Handled};
use super::*;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    Nats,
}

/// A backend for one test: its data directory, and for NATS its config
/// (a stream of its own, so that tests and runs never share messages).
struct Setup {
    dir: tempfile::TempDir,
    config: QueuesConfig,
}

/// The NATS server the suite runs against; `scripts/test` starts one and
/// sets the variable.
fn nats_url() -> String {
    std::env::var("CAPGATE_TEST_NATS_URL").expect(
        "CAPGATE_TEST_NATS_URL is not set: the queue suite runs against NATS JetStream too; run scripts/test (the README's test command), which starts nats-server and sets it",
    )
}

async fn setup(kind: Kind, mut config: QueuesConfig) -> (Setup, Arc<Queues>) {
    if kind == Kind::Nats {
        config.backend = "nats".into();
        config.url = Some(nats_url());
        let id = uuid::Uuid::new_v4().simple().to_string();
        config.nats_stream = format!("CAPGATE_TEST_{}", &id[..12]);
        config.nats_subject_prefix = format!("capgate-test-{}", &id[..12]);
        forget_old_test_streams(&config).await;
    }
    let setup = Setup {
        dir: tempfile::tempdir().unwrap(),
        config,
    };
    let queues = reopen(&setup).await;
    (setup, queues)
}

/// Another gateway on the same store (or stream).
async fn reopen(setup: &Setup) -> Arc<Queues> {
    let store = Store::open_sqlite(setup.dir.path()).await.unwrap();
    Queues::open(store, setup.config.clone())
        .await
        .unwrap_or_else(|error| panic!("the queues open: {error}"))
}

/// Test streams of earlier runs (an hour old) are deleted, so that the
/// shared server does not fill up.
async fn forget_old_test_streams(config: &QueuesConfig) {
    let url = config.url.clone().unwrap_or_default();
    let client = async_nats::connect(&url).await.unwrap_or_else(|error| {
        panic!("NATS at {url} (CAPGATE_TEST_NATS_URL) is not reachable: {error}")
    });
    let context = async_nats::jetstream::new(client);
    let mut streams = context.streams();
    let mut old = Vec::new();
    while let Some(Ok(info)) = futures_util::StreamExt::next(&mut streams).await {
        let age = time::OffsetDateTime::now_utc() - info.created;
        if info.config.name.starts_with("CAPGATE_TEST_") && age > time::Duration::hours(1) {
            old.push(info.config.name.clone());
        }
    }
    for name in old {
        let _ = context.delete_stream(&name).await;
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Embedded).await;
            })*
        }
        mod nats {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Nats).await;
            })*
        }
    };
}

on_both_backends!(
    a_published_message_is_delivered_to_each_group_and_acknowledged,
    a_failing_message_is_retried_then_dead_lettered_then_redriven,
    a_message_no_retry_can_fix_is_dead_lettered_at_once_and_can_be_discarded,
    an_idempotency_key_drops_duplicates_within_its_window,
    calls_of_one_group_run_one_at_a_time_in_order,
    a_delayed_message_is_not_delivered_before_its_time,
    a_message_whose_consumer_vanished_is_delivered_again_after_its_lease,
    bad_and_oversized_messages_and_full_queues_are_refused_with_what_to_do,
);

fn quick(max_retries: u32) -> DeliveryPolicy {
    DeliveryPolicy {
        max_retries,
        backoff: Backoff::Fixed,
        backoff_delay: Duration::from_millis(10),
        ..DeliveryPolicy::default()
    }
}

/// Runs a consumer whose handler reports each delivery and answers with
/// `answer(delivery)`.
fn consume(
    queues: &Arc<Queues>,
    queue: &str,
    consumer: &str,
    policy: DeliveryPolicy,
    answer: impl Fn(&Delivery) -> Handled + Send + Sync + 'static,
) -> (mpsc::UnboundedReceiver<Delivery>, CancellationToken) {
    let (seen, deliveries) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let answer = Arc::new(answer);
    tokio::spawn(consumer::run(
        queues.clone(),
        ConsumerSpec {
            queue: queue.into(),
            consumer: consumer.into(),
            policy,
        },
        stop.clone(),
        move |delivery| {
            let (seen, answer) = (seen.clone(), answer.clone());
            async move {
                let handled = answer(&delivery);
                let _ = seen.send(delivery);
                handled
            }
        },
    ));
    (deliveries, stop)
}

async fn next(deliveries: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(WAIT, deliveries.recv())
        .await
        .expect("a delivery in time")
        .expect("the consumer runs")
}

async fn publish(queues: &Queues, topic: &str, data: Value) -> Published {
    queues
        .publish(topic, &data, PublishOptions::default())
        .await
        .unwrap()
}

/// Waits until the queue's counts satisfy `done`.
async fn counts_until(queues: &Queues, done: impl Fn(&[QueueCounts]) -> bool) -> Vec<QueueCounts> {
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = queues.counts().await.unwrap();
        if done(&counts) {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "counts never settled: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_published_message_is_delivered_to_each_group_and_acknowledged(kind: Kind) {
    let (_setup, queues) = setup(kind, QueuesConfig::default()).await;
    // Published before anyone subscribed: the first group takes it.
    let early = publish(&queues, "orders", json!({"n": 0})).await;
    for group in ["a::first", "b::second"] {
        queues
            .backend()
            .join("orders", group, GroupSettings::default())
            .await
            .unwrap();
    }
    let late = publish(&queues, "orders", json!({"n": 1})).await;
    let (mut first, _stop_first) =
        consume(&queues, "orders", "a::first", quick(0), |_| Handled::Done);
    let (mut second, _stop_second) =
        consume(&queues, "orders", "b::second", quick(0), |_| Handled::Done);
    let a = [next(&mut first).await, next(&mut first).await];
    assert_eq!(
        a.iter().map(|d| d.receipt.clone()).collect::<Vec<_>>(),
        [early.receipt.clone(), late.receipt.clone()]
    );
    assert_eq!(a[0].data, r#"{"n":0}"#);
    assert_eq!(a[0].attempt, 1);
    let b = next(&mut second).await;
    assert_eq!(b.receipt, late.receipt);
    counts_until(&queues, |c| c.iter().all(|c| c.depth == 0)).await;
}

async fn a_failing_message_is_retried_then_dead_lettered_then_redriven(kind: Kind) {
    let (_setup, queues) = setup(kind, QueuesConfig::default()).await;
    let healed = Arc::new(AtomicUsize::new(0));
    let heal = healed.clone();
    let (mut deliveries, _stop) = consume(&queues, "jobs", "", quick(2), move |_| {
        if heal.load(AtomicOrdering::SeqCst) == 0 {
            Handled::Failed {
                error: "boom".into(),
                retry: true,
            }
        } else {
            Handled::Done
        }
    });
    let published = publish(&queues, "jobs", json!("poison")).await;
    // The first attempt and maxRetries (2) retries, then the dead letters.
    for attempt in 1..=3 {
        assert_eq!(next(&mut deliveries).await.attempt, attempt);
    }
    counts_until(&queues, |c| {
        c.first().is_some_and(|c| c.dead == 1 && c.depth == 0)
    })
    .await;
    let letters = queues.dead_letters("jobs", 0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message_id, published.receipt);
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(letters[0].error.as_deref(), Some("boom"));
    assert_eq!(letters[0].data, json!("poison"));
    assert_eq!(queues.dead_counts().await.unwrap(), [("jobs".into(), 1)]);
    // A dead letter is not delivered: the next delivery is the redriven
    // message's first attempt.
    healed.store(1, AtomicOrdering::SeqCst);
    assert_eq!(
        queues
            .redrive("jobs", Some(&published.receipt))
            .await
            .unwrap(),
        1
    );
    let again = next(&mut deliveries).await;
    assert_eq!((again.receipt, again.attempt), (published.receipt, 1));
    counts_until(&queues, |c| c.iter().all(|c| c.depth == 0 && c.dead == 0)).await;
    assert_eq!(queues.redrive("jobs", None).await.unwrap(), 0);
}

async fn a_message_no_retry_can_fix_is_dead_lettered_at_once_and_can_be_discarded(kind: Kind) {
    let (_setup, queues) = setup(kind, QueuesConfig::default()).await;
    let (mut deliveries, _stop) = consume(&queues, "jobs", "", quick(5), |_| Handled::Failed {
        error: "INVALID_ARGUMENTS: n must be a number".into(),
        retry: false,
    });
    let published = publish(&queues, "jobs", json!({"n": "x"})).await;
    assert_eq!(next(&mut deliveries).await.attempt, 1);
    counts_until(&queues, |c| c.first().is_some_and(|c| c.dead == 1)).await;
    assert!(queues.discard("jobs", &published.receipt).await.unwrap());
    assert!(!queues.discard("jobs", &published.receipt).await.unwrap());
    assert!(queues.dead_counts().await.unwrap().is_empty());
}

async fn an_idempotency_key_drops_duplicates_within_its_window(kind: Kind) {
    let (_setup, queues) = setup(
        kind,
        QueuesConfig {
            idempotency_window_ms: 60_000,
            ..QueuesConfig::default()
        },
    )
    .await;
    let keyed = |key: &str| PublishOptions {
        idempotency_key: Some(key.into()),
        ..PublishOptions::default()
    };
    let first = queues.publish("pay", &json!(1), keyed("k1")).await.unwrap();
    let again = queues.publish("pay", &json!(2), keyed("k1")).await.unwrap();
    let other = queues.publish("pay", &json!(3), keyed("k2")).await.unwrap();
    assert!(!first.duplicate && again.duplicate && !other.duplicate);
    assert_eq!(again.receipt, first.receipt);
    // Concurrent duplicates in one batch of the writer: one is kept.
    let racing: Vec<_> = (0..20)
        .map(|n| {
            let queues = queues.clone();
            tokio::spawn(async move { queues.publish("pay", &json!(n), keyed("k3")).await })
        })
        .collect();
    let mut kept = 0;
    for publish in racing {
        kept += usize::from(!publish.await.unwrap().unwrap().duplicate);
    }
    assert_eq!(kept, 1);
    let counts = queues.counts().await.unwrap();
    assert_eq!(counts[0].depth, 3);
}

async fn calls_of_one_group_run_one_at_a_time_in_order(kind: Kind) {
    let config = QueuesConfig {
        function_queues: vec![FunctionQueueConfig {
            name: "mail".into(),
            max_retries: 0,
            concurrency: 16,
            message_group_field: Some("customer".into()),
            fifo: false,
            visibility_timeout_ms: 30_000,
            backoff: Backoff::Fixed,
            backoff_delay_ms: 10,
            delay_seconds: 0,
        }],
        ..QueuesConfig::default()
    };
    let (_setup, queues) = setup(kind, config).await;
    // As the gateway starts a function queue's consumer: ordered.
    queues
        .backend()
        .join(
            "mail",
            "",
            GroupSettings {
                fifo: true,
                ..GroupSettings::default()
            },
        )
        .await
        .unwrap();
    let caller = capgate_catalog::Caller::Gateway;
    for n in 0..60 {
        let data = json!({"customer": format!("c{}", n % 4), "n": n});
        queues
            .enqueue("mail", "mail::send", &data, &caller, &Default::default())
            .await
            .unwrap();
    }
    let busy: Arc<std::sync::Mutex<HashMap<String, bool>>> = Arc::default();
    let overlap = Arc::new(AtomicUsize::new(0));
    let (seen, mut deliveries) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let policy = queues.config().function_queues[0].policy();
    assert_eq!(policy.ordering, Ordering::ByField("customer".into()));
    let (busy_in, overlap_in) = (busy.clone(), overlap.clone());
    tokio::spawn(consumer::run(
        queues.clone(),
        ConsumerSpec {
            queue: "mail".into(),
            consumer: String::new(),
            policy,
        },
        stop.clone(),
        move |delivery: Delivery| {
            let (busy, overlap, seen) = (busy_in.clone(), overlap_in.clone(), seen.clone());
            async move {
                let group = delivery.group.clone().unwrap_or_default();
                if busy.lock().unwrap().insert(group.clone(), true) == Some(true) {
                    overlap.fetch_add(1, AtomicOrdering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 5)).await;
                busy.lock().unwrap().insert(group, false);
                let _ = seen.send(delivery);
                Handled::Done
            }
        },
    ));
    let mut order: HashMap<String, Vec<i64>> = HashMap::new();
    for _ in 0..60 {
        let delivery = next(&mut deliveries).await;
        let data: Value = serde_json::from_str(&delivery.data).unwrap();
        assert_eq!(delivery.meta.function_id.as_deref(), Some("mail::send"));
        order
            .entry(data["customer"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["n"].as_i64().unwrap());
    }
    stop.cancel();
    assert_eq!(
        overlap.load(AtomicOrdering::SeqCst),
        0,
        "two calls of one group overlapped"
    );
    assert_eq!(order.len(), 4);
    for (group, ns) in order {
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, sorted, "group {group} out of order");
        assert_eq!(ns.len(), 15);
    }
}

async fn a_delayed_message_is_not_delivered_before_its_time(kind: Kind) {
    let (_setup, queues) = setup(kind, QueuesConfig::default()).await;
    let (mut deliveries, _stop) = consume(&queues, "later", "", quick(0), |_| Handled::Done);
    let published_at = now_ms();
    queues
        .publish(
            "later",
            &json!("x"),
            PublishOptions {
                delay: Duration::from_millis(400),
                ..PublishOptions::default()
            },
        )
        .await
        .unwrap();
    publish(&queues, "later", json!("now")).await;
    let first = next(&mut deliveries).await;
    assert_eq!(first.data, r#""now""#);
    let delayed = next(&mut deliveries).await;
    assert_eq!(delayed.data, r#""x""#);
    assert!(now_ms() - published_at >= 400, "delivered before its delay");
}

async fn a_message_whose_consumer_vanished_is_delivered_again_after_its_lease(kind: Kind) {
    let (setup, queues) = setup(kind, QueuesConfig::default()).await;
    let published = publish(&queues, "jobs", json!(7)).await;
    // A consumer took it and died without answering.
    let taken = queues
        .backend()
        .claim("jobs", "", 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    drop(queues);
    // A new gateway on the same store.
    let queues = reopen(&setup).await;
    let policy = DeliveryPolicy {
        visibility: Duration::from_millis(300),
        ..quick(3)
    };
    let (mut deliveries, _stop) = consume(&queues, "jobs", "", policy, |_| Handled::Done);
    let again = next(&mut deliveries).await;
    assert_eq!((again.receipt, again.attempt), (published.receipt, 2));
    counts_until(&queues, |c| c.iter().all(|c| c.depth == 0)).await;
}

async fn bad_and_oversized_messages_and_full_queues_are_refused_with_what_to_do(kind: Kind) {
    let (_setup, queues) = setup(
        kind,
        QueuesConfig {
            max_depth: 2,
            max_messages: 3,
            max_message_bytes: 64,
            function_queues: vec![FunctionQueueConfig {
                name: "mail".into(),
                max_retries: 3,
                concurrency: 1,
                message_group_field: Some("customer".into()),
                fifo: false,
                visibility_timeout_ms: 30_000,
                backoff: Backoff::Exponential,
                backoff_delay_ms: 1_000,
                delay_seconds: 0,
            }],
            ..QueuesConfig::default()
        },
    )
    .await;
    let refusal = |r: Result<Published, QueueError>| r.unwrap_err().to_string();
    let plain = PublishOptions::default;
    for (topic, needle) in [
        ("", "is not a topic name"),
        ("a b", "is not a topic name"),
        ("queue::x", "is not a topic name"),
        ("mail", "is a function queue"),
    ] {
        let error = refusal(queues.publish(topic, &json!(1), plain()).await);
        assert!(error.contains(needle), "{topic}: {error}");
    }
    let error = refusal(queues.publish("t", &json!("x".repeat(100)), plain()).await);
    assert!(error.contains("over the 64 byte limit"), "{error}");
    let error = refusal(
        queues
            .publish(
                "t",
                &json!(1),
                PublishOptions {
                    idempotency_key: Some("bad\nkey".into()),
                    ..plain()
                },
            )
            .await,
    );
    assert!(error.contains("idempotency_key must be"), "{error}");
    publish(&queues, "t", json!(1)).await;
    publish(&queues, "t", json!(2)).await;
    let error = refusal(queues.publish("t", &json!(3), plain()).await);
    assert!(
        error.contains("holds its limit of 2 messages") && error.contains("max_depth"),
        "{error}"
    );
    // Another queue takes one more; then all queues together are full.
    publish(&queues, "u", json!(1)).await;
    let error = refusal(queues.publish("u", &json!(2), plain()).await);
    assert!(
        error.contains("limit of 3 messages in all") && error.contains("max_messages"),
        "{error}"
    );
    let caller = capgate_catalog::Caller::Gateway;
    let error = refusal(
        queues
            .enqueue("nope", "a::b", &json!({}), &caller, &Default::default())
            .await,
    );
    assert!(error.contains("[[queues.function_queues]]"), "{error}");
    let error = refusal(
        queues
            .enqueue(
                "mail",
                "a::b",
                &json!({"other": 1}),
                &caller,
                &Default::default(),
            )
            .await,
    );
    assert!(error.contains("input field 'customer'"), "{error}");
    // Nothing refused was kept.
    let counts = queues.counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.depth).sum::<i64>(), 3);
}

#[test]
fn configuration_out_of_range_is_refused_naming_the_setting() {
    let subscriber = |config: Value| {
        serde_json::from_value::<config::SubscriberQueueConfig>(config)
            .map_err(|e| e.to_string())
            .and_then(|c| c.policy())
    };
    let policy = subscriber(json!({"type": "fifo", "maxRetries": 5, "concurrency": 2,
        "visibilityTimeout": 5000, "delaySeconds": 1, "backoffType": "linear", "backoffDelayMs": 50}))
    .unwrap();
    assert_eq!(policy.ordering, Ordering::Fifo);
    assert_eq!(policy.max_retries, 5);
    assert_eq!(policy.visibility, Duration::from_millis(5000));
    for (config, needle) in [
        (json!({"maxRetries": 101}), "maxRetries 101 is over 100"),
        (
            json!({"concurrency": 0}),
            "concurrency 0 is not between 1 and 256",
        ),
        (json!({"visibilityTimeout": 5}), "visibilityTimeout 5 ms"),
        (json!({"type": "lifo"}), "is not a queue type"),
        (json!({"maxRetry": 1}), "unknown field"),
    ] {
        let error = subscriber(config.clone()).unwrap_err();
        assert!(error.contains(needle), "{config}: {error}");
    }
    let bad = QueuesConfig {
        backend: "kafka".into(),
        ..QueuesConfig::default()
    };
    assert!(bad.check().unwrap_err().contains("not a queue backend"));
}

#[test]
fn backoff_grows_as_configured_with_jitter_within_bounds() {
    let policy = DeliveryPolicy {
        backoff_delay: Duration::from_millis(100),
        ..DeliveryPolicy::default()
    };
    for attempt in 1..=5u32 {
        let full = Duration::from_millis(100 * 2u64.pow(attempt - 1));
        let wait = policy.backoff_after(attempt);
        assert!(
            wait >= full / 2 && wait <= full,
            "attempt {attempt}: {wait:?}"
        );
    }
    let capped = policy.backoff_after(40);
    assert!(capped <= config::MAX_BACKOFF);
}

/// The embedded queue's age limit (NATS leaves ages to the stream).
#[tokio::test]
async fn a_queue_whose_oldest_message_is_past_its_age_refuses_new_ones() {
    let (_setup, queues) = setup(
        Kind::Embedded,
        QueuesConfig {
            max_age_ms: 100,
            ..QueuesConfig::default()
        },
    )
    .await;
    publish(&queues, "stuck", json!(0)).await;
    // Nobody consumes: once the first message is past the limit, the queue
    // refuses (published meanwhile are accepted).
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        match queues
            .publish("stuck", &json!(1), PublishOptions::default())
            .await
        {
            Err(error) => break error,
            Ok(_) => {
                assert!(Instant::now() < deadline, "never refused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(matches!(refused, QueueError::Stalled { .. }), "{refused}");
    assert!(refused.to_string().contains("max_age_ms"), "{refused}");
    // Other queues are not held back by it.
    publish(&queues, "other", json!(1)).await;
    // Consumed, it takes new messages again.
    let (_deliveries, _stop) = consume(&queues, "stuck", "", quick(0), |_| Handled::Done);
    counts_until(&queues, |c| {
        c.iter()
            .filter(|c| c.queue == "stuck")
            .all(|c| c.depth == 0)
    })
    .await;
    publish(&queues, "stuck", json!(2)).await;
}

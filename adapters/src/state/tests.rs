//! The state store on a real SQLite store: writes kept across a restart,
//! concurrent updates losing nothing, limits, and the `state` trigger's
//! order and values.

use std::sync::Arc;

use capgate_catalog::store::Store;
use serde_json::{Value, json};

use super::trigger::StateTrigger;
use super::{Change, StateError, StateLimits, StateStore};
use crate::triggers::Triggers;
use crate::triggers::testing::{Recorder, services, spec};

async fn open(dir: &std::path::Path, limits: StateLimits) -> Arc<StateStore> {
    StateStore::open(Store::open_sqlite(dir).await.unwrap(), limits)
        .await
        .unwrap()
}

fn ops(value: Value) -> Change {
    Change::Update(serde_json::from_value(value).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), StateLimits::default()).await;
    let set = state
        .write("orders", "o-1", Change::Set(json!({"total": 5})))
        .await
        .unwrap();
    assert_eq!(
        set.to_json(),
        json!({"old_value": null, "new_value": {"total": 5}})
    );
    let again = state
        .write("orders", "o-1", Change::Set(json!({"total": 6})))
        .await
        .unwrap();
    assert_eq!(again.old_value, Some(json!({"total": 5})));
    state
        .write(
            "orders",
            "o-2",
            ops(json!([{"type": "set", "path": "total", "value": 1}])),
        )
        .await
        .unwrap();
    state
        .write("carts", "c-1", Change::Set(json!([])))
        .await
        .unwrap();
    let gone = state.write("carts", "c-1", Change::Delete).await.unwrap();
    assert_eq!((gone.old_value, gone.new_value), (Some(json!([])), None));
    drop(state);

    let state = open(dir.path(), StateLimits::default()).await;
    assert_eq!(
        state.get("orders", "o-1").await.unwrap(),
        Some(json!({"total": 6}))
    );
    assert_eq!(state.get("carts", "c-1").await.unwrap(), None);
    assert_eq!(
        state.list("orders").await.unwrap(),
        [
            json!({"key": "o-1", "value": {"total": 6}}),
            json!({"key": "o-2", "value": {"total": 1}})
        ]
    );
    assert_eq!(state.scopes().await.unwrap(), [("orders".to_owned(), 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), StateLimits::default()).await;
    // Two store handles on one file, as two gateways would be.
    let other = open(dir.path(), StateLimits::default()).await;
    let mut tasks = Vec::new();
    for task in 0..40 {
        let state = if task % 2 == 0 {
            state.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                state
                    .write(
                        "counters",
                        "hits",
                        ops(json!([
                            {"type": "increment", "path": "n", "by": 1},
                            {"type": "append", "path": "by", "value": task}
                        ])),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let value = state.get("counters", "hits").await.unwrap().unwrap();
    assert_eq!(value["n"], 1_000);
    assert_eq!(value["by"].as_array().unwrap().len(), 1_000);
}

#[tokio::test]
async fn bad_and_oversized_writes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StateLimits {
        max_value_bytes: 64,
        max_keys: 2,
        max_list: 2,
        ..StateLimits::default()
    };
    let state = open(dir.path(), limits).await;
    let refused = |result: Result<_, StateError>| result.unwrap_err().to_string();
    let big = Change::Set(json!("x".repeat(100)));
    assert!(refused(state.write("s", "k", big).await).contains("over the 64 byte limit"));
    for scope in ["", "a b", "state::x", &"s".repeat(200)] {
        let error = refused(state.write(scope, "k", Change::Set(json!(1))).await);
        assert!(error.contains("is not a scope name"), "{scope}: {error}");
    }
    for key in ["", "a\nb", &"k".repeat(600)] {
        let error = refused(state.write("s", key, Change::Set(json!(1))).await);
        assert!(error.contains("is not a state key"), "{error}");
    }
    state
        .write("s", "a", Change::Set(json!({"n": "text"})))
        .await
        .unwrap();
    let bad_op = ops(json!([{"type": "increment", "path": "n", "by": 1}]));
    assert!(refused(state.write("s", "a", bad_op).await).contains("cannot add to 'n'"));
    let growing = ops(json!([{"type": "set", "path": "pad", "value": "y".repeat(80)}]));
    assert!(refused(state.write("s", "a", growing).await).contains("byte limit"));
    assert_eq!(
        state.get("s", "a").await.unwrap(),
        Some(json!({"n": "text"}))
    );
    state.write("s", "b", Change::Set(json!(2))).await.unwrap();
    let full = refused(state.write("s", "c", Change::Set(json!(3))).await);
    assert!(full.contains("limit of 2 values"), "{full}");
    // Replacing an existing key is not a new one.
    state.write("s", "b", Change::Set(json!(4))).await.unwrap();
    state.write("t", "x", Change::Delete).await.unwrap();
    assert_eq!(state.list("s").await.unwrap().len(), 2);
    state.write("s", "a", Change::Delete).await.unwrap();
    state.write("s", "c", Change::Set(json!(5))).await.unwrap();
    state.write("s", "d", Change::Delete).await.unwrap();
    assert_eq!(state.list("s").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_list_larger_than_an_answer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StateLimits {
        max_list: 2,
        ..StateLimits::default()
    };
    let state = open(dir.path(), limits).await;
    for key in ["a", "b", "c"] {
        state.write("s", key, Change::Set(json!(1))).await.unwrap();
    }
    let error = state.list("s").await.unwrap_err().to_string();
    assert!(error.contains("more than 2 keys"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_trigger_sees_each_change_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    let state = StateStore::open(store.clone(), StateLimits::default())
        .await
        .unwrap();
    let calls = Recorder::answering(|_| Ok(Value::Null));
    let services = services(&store, calls.clone()).await;
    let triggers = Triggers::new(vec![Arc::new(StateTrigger::new(state.clone()))]);
    let watch = |id: &str, function: &str, config: Value| {
        triggers
            .register(spec("state", id, function, config), &services)
            .unwrap();
    };
    watch("orders", "on::orders", json!({"scope": "orders"}));
    watch("one", "on::one", json!({"scope": "orders", "key": "o-1"}));
    watch("prefix", "on::prefix", json!({"key": "o-*"}));
    watch("all", "on::all", json!({}));
    state
        .write("orders", "o-1", Change::Set(json!(1)))
        .await
        .unwrap();
    for n in 2..=20 {
        state
            .write("orders", "o-1", ops(json!([{"type": "set", "value": n}])))
            .await
            .unwrap();
    }
    state.write("orders", "o-1", Change::Delete).await.unwrap();
    state
        .write("orders", "x-9", Change::Set(json!("x")))
        .await
        .unwrap();
    state
        .write("other", "o-5", Change::Set(json!("y")))
        .await
        .unwrap();
    state
        .write("secret", "o-6", Change::Set(json!("z")))
        .await
        .unwrap();

    let seen = calls.wait_for("on::one", 21).await;
    assert_eq!(
        seen[0],
        json!({"type": "state", "event_type": "state:created", "scope": "orders",
               "key": "o-1", "old_value": null, "new_value": 1})
    );
    for (n, event) in seen[1..20].iter().enumerate() {
        assert_eq!(event["event_type"], "state:updated");
        assert_eq!(event["old_value"], json!(n + 1));
        assert_eq!(event["new_value"], json!(n + 2));
    }
    assert_eq!(
        seen[20],
        json!({"type": "state", "event_type": "state:deleted", "scope": "orders",
               "key": "o-1", "old_value": 20, "new_value": null})
    );
    let keys = |function: &str, count: usize| {
        let calls = calls.clone();
        let function = function.to_owned();
        async move {
            calls
                .wait_for(&function, count)
                .await
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["scope"].as_str().unwrap(),
                        e["key"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(keys("on::orders", 22).await.last().unwrap(), "orders/x-9");
    // The owner may not read "secret": that change is not delivered.
    let all = keys("on::all", 23).await;
    assert_eq!(all[21..], ["orders/x-9", "other/o-5"]);
    let prefixed = keys("on::prefix", 22).await;
    assert_eq!(prefixed.last().unwrap(), "other/o-5");
    state
        .write("orders", "x-10", Change::Set(json!(0)))
        .await
        .unwrap();
    keys("on::all", 24).await;
    assert_eq!(
        calls.inputs("on::all").len(),
        24,
        "the secret change stayed hidden"
    );
    assert_eq!(calls.inputs("on::prefix").len(), 22);
}

#[tokio::test]
async fn a_slow_subscriber_loses_changes_without_holding_up_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    let state = StateStore::open(store, StateLimits::default())
        .await
        .unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut slow = state.events().subscribe(|_| true, dropped.clone());
    let total = crate::triggers::fanout::SUBSCRIPTION_QUEUE + 50;
    for n in 0..total {
        state
            .write("s", &format!("k{n}"), Change::Set(json!(n)))
            .await
            .unwrap();
    }
    assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 50);
    let first = slow.events.recv().await.unwrap();
    assert_eq!(first.key, "k0");
}

#[tokio::test]
async fn bad_trigger_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    let state = StateStore::open(store.clone(), StateLimits::default())
        .await
        .unwrap();
    let services = services(&store, Recorder::answering(|_| Ok(Value::Null))).await;
    let triggers = Triggers::new(vec![Arc::new(StateTrigger::new(state))]);
    for (config, says) in [
        (json!({"scope": "a b"}), "is not a scope name"),
        (json!({"key": "a*b"}), "has a '*' before its end"),
        (json!({"table": "x"}), "unknown field `table`"),
        (
            json!({"condition_function_id": "not an id!"}),
            "is not a function id",
        ),
    ] {
        let error = triggers
            .register(spec("state", "t", "on::x", config.clone()), &services)
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{config}: {error}");
    }
}

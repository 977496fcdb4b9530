//! State end to end: iii's `state::*` functions from workers (the Rust SDK
//! and a raw iii-shaped frame), the admin API and the CLI's endpoints, the
//! `state` trigger, kept across a restart, with each scope's policy.

use std::time::Duration;

use capgate_sdk::{Function, HandlerError, Worker};
use capgate_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_workers_state_is_kept_across_a_restart() {
    let gateway = TestGateway::start().await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    let state = worker.state();
    let first = state
        .set("orders", "o-1", json!({"total": 5}))
        .await
        .unwrap();
    assert_eq!(
        (first.old_value, first.new_value),
        (None, Some(json!({"total": 5})))
    );
    // iii's own frame shape, as the Node and Python SDKs send it.
    let answer = worker
        .call(
            "state::set",
            json!({"scope": "orders", "key": "o-2", "data": [1]}),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({"old_value": null, "new_value": [1]}));
    let updated = state
        .update(
            "orders",
            "o-1",
            json!([{"type": "increment", "path": "total", "by": 2},
                   {"type": "set", "path": ["ship", "to"], "value": "Berlin"}]),
        )
        .await
        .unwrap();
    assert_eq!(
        updated.new_value,
        Some(json!({"total": 7, "ship": {"to": "Berlin"}}))
    );
    assert_eq!(
        state.delete("orders", "o-2").await.unwrap(),
        Some(json!([1]))
    );
    state.set("carts", "c-1", json!("x")).await.unwrap();
    drop(worker);

    let gateway = gateway.restart().await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    let state = worker.state();
    assert_eq!(
        state.get("orders", "o-1").await.unwrap(),
        Some(json!({"total": 7, "ship": {"to": "Berlin"}}))
    );
    assert_eq!(state.get("orders", "o-2").await.unwrap(), None);
    assert_eq!(
        state.list("orders").await.unwrap(),
        [(
            "o-1".to_owned(),
            json!({"total": 7, "ship": {"to": "Berlin"}})
        )]
    );
    let groups = worker.call("state::list_groups", json!({})).await.unwrap();
    assert_eq!(
        groups,
        json!([{"scope": "carts", "count": 1}, {"scope": "orders", "count": 1}])
    );
    // Bad input: the error names what was wrong; nothing is written.
    for (function, input, needle) in [
        (
            "state::set",
            json!({"scope": "orders", "key": "k"}),
            "value is missing",
        ),
        (
            "state::get",
            json!({"scope": "a b", "key": "k"}),
            "is not a scope name",
        ),
        (
            "state::set",
            json!({"key": "k", "value": 1}),
            "'scope' is missing",
        ),
        (
            "state::update",
            json!({"scope": "orders", "key": "o-1", "ops": [{"type": "explode"}]}),
            "ops is not a list of update operations",
        ),
        (
            "state::update",
            json!({"scope": "orders", "key": "o-1", "ops": [{"type": "append", "path": "total", "value": 1}]}),
            "cannot append to 'total', which is a number",
        ),
        (
            "state::set",
            json!({"scope": "orders", "key": "big", "value": "x".repeat(1024 * 1024)}),
            "over the 1048576 byte limit",
        ),
    ] {
        let error = worker.call(function, input).await.unwrap_err().to_string();
        assert!(error.contains(needle), "{function}: {error}");
    }
    assert_eq!(
        state.get("orders", "o-1").await.unwrap().unwrap()["total"],
        7
    );
}

#[tokio::test]
async fn concurrent_updates_from_many_callers_lose_nothing() {
    let gateway = TestGateway::start().await;
    let worker = std::sync::Arc::new(Worker::connect(gateway.worker_url()).await.unwrap());
    let mut calls = Vec::new();
    for _ in 0..64 {
        let worker = worker.clone();
        calls.push(tokio::spawn(async move {
            for _ in 0..5 {
                worker
                    .state()
                    .update(
                        "stats",
                        "hits",
                        json!([{"type": "increment", "path": "n", "by": 1}]),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(
        worker.state().get("stats", "hits").await.unwrap(),
        Some(json!({"n": 320}))
    );
}

#[tokio::test]
async fn a_state_trigger_calls_its_function_with_each_change_in_order() {
    let gateway = TestGateway::start().await;
    let (seen, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Worker::connect(gateway.worker_url()).await.unwrap();
    watcher.register(
        Function::new("audit::on_order").handler(move |input, _ctx| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(input);
                Ok::<_, HandlerError>(Value::Null)
            }
        }),
    );
    watcher.register_trigger(
        "orders-watch",
        "state",
        "audit::on_order",
        json!({"scope": "orders", "key": "o-*"}),
    );
    gateway.wait_live("audit::on_order").await;
    // The registration is in force once the worker's ping is answered.
    let writer = Worker::connect(gateway.worker_url()).await.unwrap();
    wait_for_trigger(&gateway, "orders-watch").await;
    let state = writer.state();
    state.set("orders", "o-1", json!(1)).await.unwrap();
    state.set("orders", "skip-me", json!(0)).await.unwrap();
    state.set("carts", "o-1", json!(0)).await.unwrap();
    state
        .update("orders", "o-1", json!([{"type": "set", "value": 2}]))
        .await
        .unwrap();
    state.delete("orders", "o-1").await.unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(
            tokio::time::timeout(Duration::from_secs(10), arrived.recv())
                .await
                .expect("a change was delivered")
                .unwrap(),
        );
    }
    assert_eq!(
        events,
        [
            json!({"type": "state", "event_type": "state:created", "scope": "orders", "key": "o-1",
                   "old_value": null, "new_value": 1}),
            json!({"type": "state", "event_type": "state:updated", "scope": "orders", "key": "o-1",
                   "old_value": 1, "new_value": 2}),
            json!({"type": "state", "event_type": "state:deleted", "scope": "orders", "key": "o-1",
                   "old_value": 2, "new_value": null}),
        ]
    );
}

async fn wait_for_trigger(gateway: &TestGateway, id: &str) {
    let url = format!("http://{}/api/v1/triggers", gateway.gateway.local_addr());
    for _ in 0..500 {
        let listed: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if listed["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("trigger {id} was never registered");
}

#[tokio::test]
async fn each_scope_is_read_and_written_as_the_policy_says() {
    let (writer_config, writer_key) = worker_identity("writer");
    let (reader_config, reader_key) = worker_identity("reader");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.csv");
    std::fs::write(
        &policy,
        "p, *, *, state::*, call, allow\n\
         p, worker:writer, *, state::orders, read, allow\n\
         p, worker:writer, *, state::orders, write, allow\n\
         p, worker:reader, *, state::orders, read, allow\n\
         p, *, *, *, register, allow\n\
         p, agent:anonymous, *, state, admin, allow\n",
    )
    .unwrap();
    let gateway = TestGateway::start_with(move |config| {
        config.identity.workers = vec![writer_config, reader_config];
        config.policies.files = vec![policy];
    })
    .await;
    let connect = |key: String| {
        let url = gateway.worker_url();
        async move { Worker::builder(url).token(key).connect().await.unwrap() }
    };
    let writer = connect(writer_key).await;
    let reader = connect(reader_key).await;
    writer.state().set("orders", "o-1", json!(1)).await.unwrap();
    assert_eq!(
        reader.state().get("orders", "o-1").await.unwrap(),
        Some(json!(1))
    );
    // A write the policy denies is refused, naming the rule to ask for.
    let refused = reader
        .state()
        .set("orders", "o-1", json!(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("worker:reader may not write state::orders")
            && refused.contains("'write' rule on state::orders"),
        "{refused}"
    );
    // Its audit entry was kept before the refusal was answered (no flush).
    let refusals = gateway
        .gateway
        .state()
        .access
        .audit
        .query(&capgate_catalog::audit::AuditQuery {
            object: Some("state::orders".into()),
            kind: Some("state".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].subject, "worker:reader");
    assert!(!refusals[0].allowed);
    // A read it denies answers like nothing is there.
    writer.state().set("orders", "o-2", json!(3)).await.unwrap();
    // The writer may not read "payroll": it looks empty to it, even where
    // the operator put a value.
    let admin = format!(
        "http://{}/api/v1/state/payroll/x",
        gateway.gateway.local_addr()
    );
    let put = reqwest::Client::new()
        .put(admin)
        .json(&json!(9))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(writer.state().get("payroll", "x").await.unwrap(), None);
    assert!(writer.state().list("payroll").await.unwrap().is_empty());
    let groups = reader.call("state::list_groups", json!({})).await.unwrap();
    assert_eq!(groups, json!([{"scope": "orders", "count": 2}]));
    assert_eq!(
        reader.state().get("orders", "o-1").await.unwrap(),
        Some(json!(1))
    );
}

#[tokio::test]
async fn operators_read_and_write_state_through_the_admin_api() {
    let gateway = TestGateway::start().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v1/state", gateway.gateway.local_addr());
    let put = http
        .put(format!("{base}/flags/dark%20mode"))
        .json(&json!({"on": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        put.json::<Value>().await.unwrap(),
        json!({"old_value": null, "new_value": {"on": true}})
    );
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let got = get(format!("{base}/flags/dark%20mode")).await;
    assert_eq!(
        got,
        json!({"scope": "flags", "key": "dark mode", "value": {"on": true}})
    );
    let listed = get(base.clone()).await;
    assert_eq!(listed, json!({"scopes": [{"scope": "flags", "count": 1}]}));
    let scope = get(format!("{base}/flags")).await;
    assert_eq!(
        scope["entries"],
        json!([{"key": "dark mode", "value": {"on": true}}])
    );
    // A worker sees what the operator wrote.
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    assert_eq!(
        worker.state().get("flags", "dark mode").await.unwrap(),
        Some(json!({"on": true}))
    );
    // Bad input, clear answers; an absent key is 404.
    let answer = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        (
            status,
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let (status, message) = answer(http.put(format!("{base}/bad%20scope/k")).json(&json!(1))).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("\"bad scope\" is not a scope name"),
        "{message}"
    );
    let (status, message) = answer(
        http.put(format!("{base}/flags/k"))
            .header("content-type", "application/json")
            .body("{nope"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.contains("send the value as a JSON body"),
        "{message}"
    );
    let oversized = json!("x".repeat(1024 * 1024));
    let (status, message) = answer(http.put(format!("{base}/flags/big")).json(&oversized)).await;
    assert_eq!(status, 413, "{message}");
    let deleted = format!("{base}/flags/dark%20mode");
    assert_eq!(answer(http.delete(&deleted)).await.0, 200);
    let (status, message) = answer(http.delete(&deleted)).await;
    assert_eq!(status, 404);
    assert!(
        message.contains("scope 'flags' holds no key 'dark mode'"),
        "{message}"
    );
    assert_eq!(answer(http.get(&deleted)).await.0, 404);
}

/// iii's state built-ins and a `state` trigger from an unmodified iii Node
/// worker: the answers it reads, and the changes its trigger receives in
/// commit order.
#[tokio::test]
async fn an_iii_node_worker_uses_state_and_watches_it() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let mut node = NodeWorker::spawn(&dir, &gateway.worker_url(), "state.mjs", &[]);
    let mut answers = serde_json::Map::new();
    let mut changes = Vec::new();
    while answers.len() < 4 || changes.len() < 3 {
        let line: Value = serde_json::from_str(&node.line().await).unwrap();
        match line.as_object().and_then(|o| o.iter().next()) {
            Some((kind, value)) if kind == "change" => changes.push(value.clone()),
            Some((kind, value)) => {
                answers.insert(kind.clone(), value.clone());
            }
            None => panic!("unexpected line {line}"),
        }
    }
    assert_eq!(
        answers["set"],
        json!({"old_value": null, "new_value": {"total": 5}})
    );
    assert_eq!(
        answers["update"],
        json!({"old_value": {"total": 5}, "new_value": {"total": 7}})
    );
    assert_eq!(answers["get"], json!({"total": 7}));
    assert_eq!(answers["delete"], json!({"old_value": {"total": 7}}));
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["event_type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["state:created", "state:updated", "state:deleted"]);
    assert_eq!(changes[1]["old_value"], json!({"total": 5}));
    assert_eq!(changes[1]["new_value"], json!({"total": 7}));
    assert_eq!(changes[2]["scope"], "orders");
    assert_eq!(changes[2]["key"], "o-1");
    node.kill().await;
}

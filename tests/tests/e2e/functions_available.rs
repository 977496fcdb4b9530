//! The `engine::functions-available` trigger: a worker subscribes to
//! changes of the live function set through the worker protocol.

use capgate_sdk::{Function, Worker};
use capgate_tests::*;
use serde_json::{Value, json};

fn noop(id: &str) -> Function {
    Function::new(id)
        .description(format!("does {id}"))
        .handler(|_, _| async { Ok(json!({})) })
}

/// Answers one delivery to the subscriber and returns its data.
async fn next_delivery(peer: &mut RawPeer) -> Value {
    next_delivery_to(peer, "watch::on_functions").await
}

/// The next delivery to `function` on `peer`, answered.
async fn next_delivery_to(peer: &mut RawPeer, function: &str) -> Value {
    loop {
        let frame = peer.recv().await;
        if frame["type"] != "invokefunction" {
            continue;
        }
        assert_eq!(frame["function_id"], function, "{frame}");
        peer.send(json!({
            "type": "invocationresult",
            "invocation_id": frame["invocation_id"],
            "function_id": frame["function_id"],
            "result": null
        }))
        .await;
        return frame["data"].clone();
    }
}

fn function_ids(data: &Value) -> Vec<String> {
    data["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function_id"].as_str().unwrap().to_owned())
        .collect()
}

fn subscribe(id: &str, function_id: &str) -> Value {
    json!({
        "type": "registertrigger", "id": id, "trigger_type": "engine::functions-available",
        "function_id": function_id, "config": {}
    })
}

#[tokio::test]
async fn a_subscribed_worker_hears_of_every_change_until_it_unsubscribes() {
    let gateway = TestGateway::start().await;
    let mut watcher = RawPeer::connect(&gateway.worker_url()).await;
    watcher
        .send(json!({"type": "registerfunction", "id": "watch::on_functions"}))
        .await;
    watcher.send(subscribe("t1", "watch::on_functions")).await;
    // Frames are handled in order: once this answer arrives, so has the trigger.
    watcher
        .send(json!({"type": "invokefunction", "invocation_id": "ready", "function_id": "engine::workers::list", "data": {}}))
        .await;
    assert_eq!(watcher.recv().await["invocation_id"], "ready");

    let other = Worker::builder(gateway.worker_url())
        .name("calculator")
        .connect()
        .await
        .unwrap();
    other.register(noop("calc::add"));
    let data = next_delivery(&mut watcher).await;
    assert_eq!(data["event"], "functions_changed");
    let add = data["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function_id"] == "calc::add")
        .cloned()
        .unwrap_or_else(|| panic!("calc::add missing from {data}"));
    assert_eq!(add["description"], "does calc::add");
    assert_eq!(add["version"], "0.0.0");
    assert!(
        add["definition_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(data["revision"].as_u64().unwrap() > 0);

    // The subscription is listed like iii lists it.
    let listed = other
        .call("engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(
        listed["registered_triggers"][0]["trigger_type"],
        "engine::functions-available"
    );
    assert_eq!(
        listed["registered_triggers"][0]["function_id"],
        "watch::on_functions"
    );

    // A burst of registrations arrives folded into few deliveries, the last
    // of which holds everything.
    for n in 0..40 {
        other.register(noop(&format!("calc::op{n}")));
    }
    let mut deliveries = 0;
    loop {
        let data = next_delivery(&mut watcher).await;
        deliveries += 1;
        if function_ids(&data).len() == 42 {
            break;
        }
    }
    assert!(deliveries < 40, "{deliveries} deliveries for one burst");

    // A function going away is a change too.
    other.unregister("calc::op0");
    let data = next_delivery(&mut watcher).await;
    assert!(!function_ids(&data).contains(&"calc::op0".to_owned()));

    // Unsubscribed: no more deliveries (a later call from the watcher is
    // the next frame it sees).
    watcher
        .send(json!({"type": "unregistertrigger", "id": "t1", "trigger_type": "engine::functions-available"}))
        .await;
    watcher
        .send(json!({"type": "invokefunction", "invocation_id": "probe", "function_id": "engine::workers::list", "data": {}}))
        .await;
    assert_eq!(watcher.recv().await["invocation_id"], "probe");
    let listed = other
        .call("engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(listed["registered_triggers"], json!([]), "t1 is gone");
    // A witness still subscribed hears of the next change; once it has, the
    // watcher would have too, had its subscription survived.
    let mut witness = RawPeer::connect(&gateway.worker_url()).await;
    witness
        .send(json!({"type": "registerfunction", "id": "witness::on_functions"}))
        .await;
    witness.send(subscribe("t2", "witness::on_functions")).await;
    witness
        .send(json!({"type": "invokefunction", "invocation_id": "ready", "function_id": "engine::workers::list", "data": {}}))
        .await;
    assert_eq!(witness.recv().await["invocation_id"], "ready");
    other.register(noop("calc::later"));
    loop {
        let data = next_delivery_to(&mut witness, "witness::on_functions").await;
        if function_ids(&data).contains(&"calc::later".to_owned()) {
            break;
        }
    }
    watcher
        .send(json!({"type": "invokefunction", "invocation_id": "probe-2", "function_id": "engine::workers::list", "data": {}}))
        .await;
    let next = watcher.recv().await;
    assert_eq!(next["invocation_id"], "probe-2", "{next}");
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_a_trigger_result() {
    let gateway = TestGateway::start().await;
    let mut peer = RawPeer::connect(&gateway.worker_url()).await;
    peer.send(subscribe("bad", "Not A Function")).await;
    let answer = peer.recv().await;
    assert_eq!(answer["type"], "triggerregistrationresult", "{answer}");
    assert_eq!(answer["id"], "bad");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a function id"),
        "{answer}"
    );

    for n in 0..16 {
        peer.send(subscribe(&format!("t{n}"), "watch::on_functions"))
            .await;
    }
    peer.send(subscribe("one-too-many", "watch::on_functions"))
        .await;
    let answer = peer.recv().await;
    assert_eq!(answer["id"], "one-too-many", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 16"),
        "{answer}"
    );
    // Re-registering an existing id replaces it rather than counting twice.
    peer.send(subscribe("t3", "watch::on_functions")).await;
    peer.send(json!({"type": "invokefunction", "invocation_id": "probe", "function_id": "engine::registered-triggers::list", "data": {}}))
        .await;
    let listed = peer.recv().await;
    assert_eq!(listed["invocation_id"], "probe", "{listed}");
    assert_eq!(
        listed["result"]["registered_triggers"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
}

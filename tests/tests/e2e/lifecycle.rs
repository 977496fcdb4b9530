//! Restarts, reconnects and built-ins.

use std::sync::Arc;

use capgate_sdk::{CallError, Function, Worker};
use capgate_tests::*;
use serde_json::json;

/// What the restarted catalog holds comes from the store alone: the worker
/// is gone before the restart, so nothing can register it again.
#[tokio::test]
async fn the_catalog_is_intact_across_a_restart() {
    let gateway = TestGateway::start().await;
    let (worker, _) = greeter(&gateway.worker_url()).await;
    let before = gateway.gateway.state().catalog.list();
    assert_eq!(before.len(), 1);
    worker.shutdown();
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("the worker left", || catalog.live().is_empty()).await;

    let gateway = gateway.restart().await;
    let after = gateway.gateway.state().catalog.list();
    let key = |rows: &[capgate_catalog::directory::Listing]| -> Vec<(String, String, String)> {
        rows.iter()
            .map(|row| {
                let c = &row.capability;
                (
                    c.id().to_string(),
                    c.version().to_string(),
                    c.hash().to_hex(),
                )
            })
            .collect()
    };
    assert_eq!(
        key(&after),
        key(&before),
        "the same versions, the same hashes"
    );
    assert!(
        after.iter().all(|row| row.providers.is_empty()),
        "known but offline: no worker provides it"
    );
    assert_eq!(
        after[0].capability.definition().description,
        before[0].capability.definition().description
    );
}

/// The application's handles keep a worker connected, not the SDK's own:
/// dropping the last one closes the connection and the gateway withdraws
/// its functions, even while a handler's context is still held somewhere.
#[tokio::test]
async fn dropping_the_last_worker_handle_closes_its_connection() {
    let gateway = TestGateway::start().await;
    let catalog = gateway.gateway.state().catalog.clone();
    let (worker, _) = greeter(&gateway.worker_url()).await;
    let kept_context = Arc::new(std::sync::Mutex::new(None::<Worker>));
    let slot = kept_context.clone();
    worker.register(Function::new("keeper::hold").handler(move |_, ctx| {
        let slot = slot.clone();
        async move {
            *slot.lock().unwrap() = Some(ctx.worker.clone());
            Ok(json!({}))
        }
    }));
    worker.call("keeper::hold", json!({})).await.unwrap();
    assert!(kept_context.lock().unwrap().is_some());

    let clone = worker.clone();
    drop(worker);
    // A clone is a handle too: the connection still answers through it.
    clone
        .call("hello::greet", json!({"name": "still here"}))
        .await
        .expect("a clone keeps the connection");
    assert_eq!(catalog.live().len(), 2);

    drop(clone);
    eventually("the worker's functions were withdrawn", || {
        catalog.live().is_empty()
    })
    .await;
    let context_worker = kept_context.lock().unwrap().take().unwrap();
    let error = context_worker
        .call("hello::greet", json!({"name": "late"}))
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Closed), "{error:?}");
}

#[tokio::test]
async fn workers_come_back_by_themselves_after_a_restart() {
    let gateway = TestGateway::start().await;
    let (worker, calls) = greeter(&gateway.worker_url()).await;
    let gateway = gateway.restart().await;

    // The SDK reconnects with backoff and replays its registration.
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("the worker re-registered", || {
        catalog.resolve("hello::greet", None).is_ok()
    })
    .await;
    let client = stateless_client(&gateway.mcp_url()).await;
    let result = call_tool(&client, "hello__greet", json!({"name": "again"}))
        .await
        .unwrap();
    assert_eq!(
        result.structured_content,
        Some(json!({"message": "hello again"}))
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        worker
            .call("hello::greet", json!({"name": "w"}))
            .await
            .unwrap()["message"],
        "hello w"
    );
}

#[tokio::test]
async fn built_in_discovery_describes_workers_and_functions() {
    let gateway = TestGateway::start().await;
    let (worker, _) = greeter(&gateway.worker_url()).await;
    let workers = worker
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let me = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == json!(worker.worker_id()))
        .expect("this worker is listed")
        .clone();
    assert_eq!(me["name"], "greeter");
    assert_eq!(me["runtime"], "rust");
    assert_eq!(me["functions"], json!(["hello::greet"]));
    assert!(
        me["features"]
            .as_array()
            .unwrap()
            .contains(&json!("capgate.v1"))
    );

    let functions = worker
        .call("engine::functions::list", json!({"prefix": "hello::"}))
        .await
        .unwrap();
    assert_eq!(functions["functions"][0]["function_id"], "hello::greet");
    let info = worker
        .call(
            "engine::functions::info",
            json!({"function_id": "hello::greet"}),
        )
        .await
        .unwrap();
    assert_eq!(info["request_schema"]["required"], json!(["name"]));
    let error = worker
        .call("engine::functions::info", json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("INVALID_ARGUMENTS"));
    let triggers = worker
        .call("engine::triggers::list", json!({}))
        .await
        .unwrap();
    let types: Vec<&str> = triggers["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "cron",
            "durable:subscriber",
            "engine::functions-available",
            "http",
            "state",
            "subscribe"
        ],
        "{triggers}"
    );
    let registered = worker
        .call("engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(registered, json!({"registered_triggers": []}));
    let error = worker
        .call("engine::channels::create", json!({}))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not supported"), "{error}");
}

#[tokio::test]
async fn health_reports_workers_and_functions() {
    let gateway = TestGateway::start().await;
    let (_worker, _) = greeter(&gateway.worker_url()).await;
    let url = format!("http://{}/healthz", gateway.gateway.local_addr());
    let health: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["workers"], 1);
    assert_eq!(health["functions"], 1);
    let plain = reqwest::get(format!("http://{}/", gateway.gateway.local_addr()))
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
    assert!(plain.text().await.unwrap().contains("worker endpoint"));
}

#[tokio::test]
async fn shutdown_closes_worker_sockets_with_going_away() {
    let gateway = TestGateway::start().await;
    let mut peer = RawPeer::connect(&gateway.worker_url()).await;
    let shutdown = tokio::spawn(gateway.gateway.shutdown());
    let mut code = None;
    while let Some(Ok(message)) = peer.next_message().await {
        if let tokio_tungstenite::tungstenite::Message::Close(frame) = message {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1001));
    tokio::time::timeout(HANG, shutdown)
        .await
        .expect("shutdown completes")
        .unwrap();
}

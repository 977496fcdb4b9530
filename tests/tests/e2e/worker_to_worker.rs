//! Workers calling workers through the gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use capgate_sdk::{CallOptions, Function, Worker};
use capgate_tests::*;
use serde_json::json;

#[tokio::test]
async fn one_worker_calls_another_through_the_gateway() {
    let gateway = TestGateway::start().await;
    let (provider, calls) = greeter(&gateway.worker_url()).await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let reply = caller
        .call("hello::greet", json!({"name": "caller"}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"message": "hello caller"}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The provider saw which worker called (the iii engine's _caller_worker_id).
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_in = seen.clone();
    provider.register(Function::new("who::called").handler(move |_, ctx| {
        let seen = seen_in.clone();
        async move {
            *seen.lock().unwrap() = ctx.caller_worker_id.clone();
            Ok(json!(null))
        }
    }));
    provider.call("who::called", json!({})).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), provider.worker_id());
    caller.call("who::called", json!({})).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), caller.worker_id());
}

#[tokio::test]
async fn handlers_can_call_other_functions_while_answering() {
    let gateway = TestGateway::start().await;
    let (_provider, _) = greeter(&gateway.worker_url()).await;
    let composer = Worker::connect(gateway.worker_url()).await.unwrap();
    composer.register(
        Function::new("compose::shout").handler(|input, ctx| async move {
            let greeting = ctx
                .worker
                .call("hello::greet", input)
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"message": greeting["message"].as_str().unwrap_or_default().to_uppercase()}))
        }),
    );
    let reply = composer
        .call("compose::shout", json!({"name": "nested"}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"message": "HELLO NESTED"}));
}

#[tokio::test]
async fn fire_and_forget_calls_reach_the_provider() {
    let gateway = TestGateway::start().await;
    let (_provider, calls) = greeter(&gateway.worker_url()).await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    for _ in 0..3 {
        caller.call_void("hello::greet", json!({"name": "void"}));
    }
    eventually("three fire-and-forget calls ran", || {
        calls.load(Ordering::SeqCst) == 3
    })
    .await;
}

#[tokio::test]
async fn errors_reach_the_calling_worker_with_their_codes() {
    let gateway = TestGateway::start().await;
    let (_provider, calls) = greeter(&gateway.worker_url()).await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();

    let error = caller.call("nope::missing", json!({})).await.unwrap_err();
    assert_eq!(error.code(), Some("function_not_found"), "{error}");
    assert!(
        error
            .to_string()
            .contains("Function nope::missing not found"),
        "{error}"
    );

    let error = caller
        .call("hello::greet", json!({"name": 1}))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("INVALID_ARGUMENTS"), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let options = CallOptions {
        version: Some("^2".into()),
        ..Default::default()
    };
    let error = caller
        .call_with("hello::greet", json!({"name": "x"}), options)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("no version matches ^2"),
        "{error}"
    );

    let options = CallOptions {
        version: Some("not a requirement".into()),
        ..Default::default()
    };
    let error = caller
        .call_with("hello::greet", json!({"name": "x"}), options)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("INVALID_ARGUMENTS"), "{error}");
}

#[tokio::test]
async fn calls_are_spread_across_providers_of_one_version() {
    let gateway = TestGateway::start().await;
    let (_a, calls_a) = greeter(&gateway.worker_url()).await;
    let calls_b = Arc::new(AtomicUsize::new(0));
    let b = Worker::connect(gateway.worker_url()).await.unwrap();
    b.register(greet_function(calls_b.clone()));
    b.call("hello::greet", json!({"name": "ready"}))
        .await
        .unwrap();
    calls_a.store(0, Ordering::SeqCst);
    calls_b.store(0, Ordering::SeqCst);
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    for _ in 0..10 {
        caller
            .call("hello::greet", json!({"name": "x"}))
            .await
            .unwrap();
    }
    assert_eq!(
        calls_a.load(Ordering::SeqCst) + calls_b.load(Ordering::SeqCst),
        10
    );
    assert!(calls_a.load(Ordering::SeqCst) >= 4 && calls_b.load(Ordering::SeqCst) >= 4);
}

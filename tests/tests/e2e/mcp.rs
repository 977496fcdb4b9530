//! Agents over MCP: listing, calling, errors, and list_changed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use capgate_sdk::Function;
use capgate_tests::*;
use rmcp::model::SubscriptionFilter;
use serde_json::json;

async fn lists_and_calls_greet(client: &McpClient) {
    let tools = client.list_all_tools().await.expect("tools/list");
    let greet = tools
        .iter()
        .find(|t| t.name == "hello__greet")
        .expect("hello__greet is listed");
    assert_eq!(greet.description.as_deref(), Some("Greets someone by name"));
    assert_eq!(greet.input_schema.get("required"), Some(&json!(["name"])));
    assert!(greet.output_schema.is_some());
    let meta = greet.meta.as_ref().expect("capgate _meta");
    assert_eq!(meta.0["io.capgate/id"], "hello::greet");

    let result = call_tool(client, "hello__greet", json!({"name": "world"}))
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(false));
    assert_eq!(
        result.structured_content,
        Some(json!({"message": "hello world"}))
    );
    assert_eq!(text_of(&result), r#"{"message":"hello world"}"#);
}

/// A worker registers hello::greet; a client made by `connect` lists and calls it.
async fn greet_over(connect: impl AsyncFnOnce(&str) -> McpClient) {
    let gateway = TestGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let client = connect(&gateway.mcp_url()).await;
    lists_and_calls_greet(&client).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn legacy_session_client_lists_and_calls_a_worker_function() {
    greet_over(async |url| legacy_client(url).await).await;
}

#[tokio::test]
async fn stateless_client_lists_and_calls_a_worker_function() {
    greet_over(async |url| stateless_client(url).await).await;
}

#[tokio::test]
async fn input_that_violates_the_schema_is_an_error_and_never_reaches_the_worker() {
    let gateway = TestGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let client = stateless_client(&gateway.mcp_url()).await;
    for bad in [
        json!({"name": 5}),
        json!({}),
        json!({"name": "x", "extra": true}),
    ] {
        let result = call_tool(&client, "hello__greet", bad.clone())
            .await
            .expect("a tool result");
        assert_tool_error(&result, "invalid input for hello::greet");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the worker must not be called"
    );
}

#[tokio::test]
async fn unknown_tools_are_protocol_errors() {
    let gateway = TestGateway::start().await;
    let client = stateless_client(&gateway.mcp_url()).await;
    for name in ["nope__missing", "Not-A-Tool", "a___b"] {
        let error = call_tool(&client, name, json!({}))
            .await
            .expect_err("unknown tool");
        assert!(error.to_string().contains("Unknown tool"), "{error}");
    }
}

#[tokio::test]
async fn function_errors_and_bad_output_come_back_as_tool_errors() {
    let gateway = TestGateway::start().await;
    let worker = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    worker.register(
        Function::new("fail::always").handler(|_, _| async { Err("the ledger is locked".into()) }),
    );
    worker.register(
        Function::new("fail::shape")
            .output_schema(json!({"type": "object", "required": ["total"]}))
            .handler(|_, _| async { Ok(json!({"subtotal": 1})) }),
    );
    worker
        .call("fail::shape", json!({}))
        .await
        .expect_err("ready: output check fails");
    let client = legacy_client(&gateway.mcp_url()).await;

    let result = call_tool(&client, "fail__always", json!({})).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(text_of(&result), "the ledger is locked");

    let result = call_tool(&client, "fail__shape", json!({})).await.unwrap();
    assert_tool_error(&result, "does not match its output schema");
}

#[tokio::test]
async fn a_call_past_its_deadline_is_a_timeout_error() {
    let gateway = TestGateway::start().await;
    let worker = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    worker.register(
        Function::new("slow::never")
            .timeout_ms(200)
            .handler(|_, _| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(json!({}))
            }),
    );
    gateway.wait_live("slow::never").await;
    let client = stateless_client(&gateway.mcp_url()).await;
    let result = tokio::time::timeout(HANG, call_tool(&client, "slow__never", json!({})))
        .await
        .expect("no hang")
        .unwrap();
    assert_tool_error(&result, "did not answer within 200 ms");
}

#[tokio::test]
async fn a_worker_killed_mid_call_fails_the_mcp_call_at_once_not_at_its_deadline() {
    let gateway = TestGateway::start().await;
    let mut doomed = RawPeer::connect(&gateway.worker_url()).await;
    doomed
        .send(json!({"type": "registerfunction", "id": "doomed::work"}))
        .await;
    gateway.wait_live("doomed::work").await;
    let client = stateless_client(&gateway.mcp_url()).await;
    let call = tokio::spawn(async move { call_tool(&client, "doomed__work", json!({})).await });
    let invocation = doomed.recv().await;
    assert_eq!(invocation["type"], "invokefunction");
    let killed_at = std::time::Instant::now();
    doomed.kill();
    // The call's deadline is the default 30 s; hearing within 5 s (a margin
    // a loaded CI machine meets) shows the disconnect failed it at once.
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the caller hears long before the 30 s deadline")
        .unwrap()
        .unwrap();
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    assert_tool_error(&result, "disconnected before answering");
}

#[tokio::test]
async fn legacy_sessions_hear_list_changed_after_a_registration() {
    let gateway = TestGateway::start().await;
    let client = legacy_client(&gateway.mcp_url()).await;
    let changed = client.service().tools_changed.clone();
    assert!(client.list_all_tools().await.unwrap().is_empty());
    let (_worker, _) = greeter(&gateway.worker_url()).await;
    tokio::time::timeout(HANG, changed.notified())
        .await
        .expect("list_changed arrives");
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(
        tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>(),
        vec!["hello__greet"]
    );
}

#[tokio::test]
async fn stateless_subscribers_hear_list_changed_on_registration_unregistration_and_disconnect() {
    let gateway = TestGateway::start().await;
    let client = stateless_client(&gateway.mcp_url()).await;
    let mut subscription = client
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .expect("subscriptions/listen is accepted");
    let (worker, _) = greeter(&gateway.worker_url()).await;
    let notification = tokio::time::timeout(HANG, subscription.next())
        .await
        .expect("no hang")
        .unwrap();
    assert!(
        matches!(
            notification,
            Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
        ),
        "{notification:?}"
    );
    // An explicit unregistration takes the tool away...
    worker.unregister("hello::greet");
    let notification = tokio::time::timeout(HANG, subscription.next())
        .await
        .expect("no hang")
        .unwrap();
    assert!(matches!(
        notification,
        Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
    ));
    assert!(client.list_all_tools().await.unwrap().is_empty());
    // ...a registration brings it back, and a disconnect takes it away again.
    worker.register(greet_function(Default::default()));
    let notification = tokio::time::timeout(HANG, subscription.next())
        .await
        .expect("no hang")
        .unwrap();
    assert!(matches!(
        notification,
        Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
    ));
    assert_eq!(client.list_all_tools().await.unwrap().len(), 1);
    worker.shutdown();
    let notification = tokio::time::timeout(HANG, subscription.next())
        .await
        .expect("no hang")
        .unwrap();
    assert!(matches!(
        notification,
        Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
    ));
    assert!(
        client.list_all_tools().await.unwrap().is_empty(),
        "the disconnected worker's tool is gone"
    );
}

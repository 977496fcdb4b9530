//! `POST /api/v1/call/{id}`: functions called over plain HTTP by agents,
//! through the one invocation path, with HTTP statuses a client can act on.

use std::sync::Arc;

use capgate_gateway::config::AgentConfig;
use capgate_gateway::identity::config::key_hash;
use capgate_sdk::{Function, Worker};
use capgate_tests::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

fn call(gateway: &TestGateway, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(format!(
        "http://{}/api/v1/call/{path}",
        gateway.gateway.local_addr()
    ))
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let response = tokio::time::timeout(HANG, request.send())
        .await
        .expect("no hang")
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, body)
}

#[tokio::test]
async fn a_function_is_called_over_http_with_statuses_that_say_what_to_do() {
    let gateway = TestGateway::start().await;
    let (_greeter, calls) = greeter(&gateway.worker_url()).await;
    let (status, _, body) =
        answer(call(&gateway, "hello::greet").json(&json!({"name": "http"}))).await;
    assert_eq!((status, body), (200, json!({"message": "hello http"})));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    let (status, _, body) =
        answer(call(&gateway, "hello::greet?version=%3D0.0.0").json(&json!({"name": "pinned"})))
            .await;
    assert_eq!(
        (status, body["message"].clone()),
        (200, json!("hello pinned"))
    );

    let cases: [(reqwest::RequestBuilder, u16, &str, &str); 6] = [
        (
            call(&gateway, "nobody::home").json(&json!({})),
            404,
            "function_not_found",
            "nobody::home",
        ),
        (
            call(&gateway, "hello::greet").json(&json!({"name": 7})),
            400,
            "INVALID_ARGUMENTS",
            "/name: 7 is not of type",
        ),
        (
            call(&gateway, "hello::greet").body("{not json"),
            400,
            "invalid_request",
            "not JSON",
        ),
        (
            call(&gateway, "hello::greet?version=one").json(&json!({"name": "x"})),
            400,
            "invalid_request",
            "version requirement 'one' is invalid",
        ),
        (
            call(&gateway, "hello::greet?colour=blue").json(&json!({"name": "x"})),
            400,
            "invalid_request",
            "colour",
        ),
        (
            call(&gateway, "hello::greet?version=^9").json(&json!({"name": "x"})),
            404,
            "function_not_found",
            "no version matches ^9",
        ),
    ];
    for (request, want_status, want_code, needle) in cases {
        let (status, retry_after, body) = answer(request).await;
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], want_code, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{message}");
        assert_eq!(retry_after, None);
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "no bad request reached the worker"
    );

    // Larger than the frame limit: refused before it is read whole.
    // Its answer has the documented error shape, here and on the admin
    // routes that read JSON.
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    let admin = format!("http://{}/api/v1", gateway.gateway.local_addr());
    for request in [
        call(&gateway, "hello::greet"),
        reqwest::Client::new().post(format!("{admin}/functions")),
        reqwest::Client::new().post(format!(
            "{admin}/functions/hello::greet/versions/1.0.0/deprecation"
        )),
    ] {
        let (status, _, body) = answer(
            request
                .header("content-type", "application/json")
                .body(huge.clone()),
        )
        .await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("-byte limit (max_frame_bytes)"),
            "{message}"
        );
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Over the in-flight limit, HTTP callers get 503 with `Retry-After`; a
/// call past its deadline is 504; a function's own error is 502 with its code.
#[tokio::test]
async fn overload_is_503_with_retry_after_and_a_deadline_is_504() {
    let gateway = TestGateway::start_with(|config| config.limits.max_in_flight = 1).await;
    let release = Arc::new(Notify::new());
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    let held = release.clone();
    worker.register(Function::new("slow::hold").handler(move |_, _| {
        let held = held.clone();
        async move {
            held.notified().await;
            Ok(json!({"done": true}))
        }
    }));
    worker.register(Function::new("sad::fail").handler(|_, _| async {
        Err(capgate_sdk::HandlerError::with_code(
            "card_declined",
            "the card was declined",
        ))
    }));
    gateway.wait_live("slow::hold").await;
    gateway.wait_live("sad::fail").await;
    let first = tokio::spawn(answer(call(&gateway, "slow::hold").json(&json!({}))));
    let path = gateway.gateway.state().path.clone();
    eventually_eq("one call in flight", || path.in_flight(), 1).await;
    let (status, retry_after, body) = answer(call(&gateway, "slow::hold").json(&json!({}))).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("retry"),
        "{body}"
    );
    release.notify_one();
    let (status, _, body) = first.await.unwrap();
    assert_eq!((status, body), (200, json!({"done": true})));

    let (status, _, body) =
        answer(call(&gateway, "slow::hold?timeout_ms=100").json(&json!({}))).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "TIMEOUT");
    release.notify_one();

    let (status, _, body) = answer(call(&gateway, "sad::fail").json(&json!({}))).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "card_declined");
    assert_eq!(body["error"]["message"], "the card was declined");
}

/// With agent identities configured, a call needs a token and a `call`
/// grant on the function; a forbidden function reads exactly like a
/// missing one.
#[tokio::test]
async fn http_calls_are_authenticated_and_authorized_like_mcp_calls() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.csv");
    std::fs::write(
        &policy,
        "p, agent:app, *, hello::*, call, allow\np, worker:anonymous, *, *, *, allow\n",
    )
    .unwrap();
    let (key, digest) = capgate_gateway::identity::agents::new_key();
    let app = AgentConfig {
        name: "app".into(),
        api_key_sha256: Some(key_hash(&digest).unwrap()),
        tenant: None,
        pins: Vec::new(),
    };
    let files = vec![policy];
    let gateway = TestGateway::start_with(move |config| {
        config.identity.agents = vec![app];
        config.policies.files = files;
    })
    .await;
    let (_greeter, _) = greeter(&gateway.worker_url()).await;
    let other = Worker::connect(gateway.worker_url()).await.unwrap();
    other.register(Function::new("ops::restart").handler(|_, _| async { Ok(json!({})) }));
    gateway.wait_live("ops::restart").await;

    let (status, _, body) =
        answer(call(&gateway, "hello::greet").json(&json!({"name": "x"}))).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = answer(
        call(&gateway, "hello::greet")
            .bearer_auth("wrong")
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = answer(
        call(&gateway, "hello::greet")
            .bearer_auth(&key)
            .json(&json!({"name": "app"})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"message": "hello app"})));

    let (forbidden_status, _, forbidden) = answer(
        call(&gateway, "ops::restart")
            .bearer_auth(&key)
            .json(&json!({})),
    )
    .await;
    let (missing_status, _, missing) = answer(
        call(&gateway, "ops::nothing")
            .bearer_auth(&key)
            .json(&json!({})),
    )
    .await;
    assert_eq!((forbidden_status, missing_status), (404, 404));
    assert_eq!(
        forbidden["error"]["message"]
            .as_str()
            .unwrap()
            .replace("ops::restart", "ID"),
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .replace("ops::nothing", "ID"),
    );
    // Web pages may not call through an agent's browser.
    let (status, _, _) = answer(
        call(&gateway, "hello::greet")
            .bearer_auth(&key)
            .header("origin", "https://evil.example")
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 403);
}

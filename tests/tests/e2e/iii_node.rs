//! Unmodified iii-sdk (Node) workers against capgate.

use std::time::Duration;

use capgate_sdk::Worker;
use capgate_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn the_canonical_iii_example_runs_and_its_function_is_an_mcp_tool() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let mut node = NodeWorker::spawn(&dir, &gateway.worker_url(), "hello.mjs", &[]);
    // The self-call right after registering succeeds: no registration grace race.
    let result: Value = serde_json::from_str(&node.line().await).unwrap();
    assert_eq!(result, json!({"message": "hello world"}));

    // Its HTTP trigger, called with curl exactly as the issue writes it
    // (`-d` sends a form content type).
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-X", "POST"])
        .arg(format!("{}/greet", gateway.http_url()))
        .args(["-d", r#"{"name":"world"}"#])
        .output()
        .await
        .expect("curl runs (it is on every machine these tests run on)");
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(answer, json!({"message": "hello world"}));

    let client = stateless_client(&gateway.mcp_url()).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "hello__greet"), "{tools:?}");
    let answer = call_tool(&client, "hello__greet", json!({"name": "mcp"}))
        .await
        .unwrap();
    assert_eq!(text_of(&answer), r#"{"message":"hello mcp"}"#);

    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let workers = caller
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let node_worker = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["runtime"] == "node")
        .expect("the node worker described itself");
    assert_eq!(node_worker["functions"], json!(["hello::greet"]));
    node.kill().await;
}

#[tokio::test]
async fn iii_callers_get_prompt_useful_rejections() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let mut node = NodeWorker::spawn(&dir, &gateway.worker_url(), "errors.mjs", &[]);
    let outcome: Value = serde_json::from_str(&node.line().await).unwrap();
    assert_eq!(outcome["thrown"]["code"], "invocation_failed", "{outcome}");
    assert!(
        outcome["thrown"]["message"]
            .as_str()
            .unwrap()
            .contains("kaboom"),
        "{outcome}"
    );
    assert_eq!(
        outcome["unknown"]["code"], "function_not_found",
        "{outcome}"
    );
    assert!(
        outcome["unknown"]["message"]
            .as_str()
            .unwrap()
            .contains("nope::missing"),
        "{outcome}"
    );
    // Rejected by the gateway's answer, not by the SDK's 30 s timeout.
    for case in ["thrown", "unknown"] {
        assert!(outcome[case]["ms"].as_u64().unwrap() < 5_000, "{outcome}");
    }
}

#[tokio::test]
async fn two_iii_workers_call_each_other_through_capgate() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let _alpha = NodeWorker::ready(&dir, &gateway.worker_url(), "alpha", "beta").await;
    let _beta = NodeWorker::ready(&dir, &gateway.worker_url(), "beta", "alpha").await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let answer = caller.call("alpha::ask", json!({"q": 1})).await.unwrap();
    assert_eq!(answer["from"], "beta", "{answer}");
    assert_eq!(answer["input"]["q"], 1, "{answer}");
    let answer = caller.call("beta::ask", json!({"q": 2})).await.unwrap();
    assert_eq!(answer["from"], "alpha", "{answer}");
}

#[tokio::test]
async fn a_killed_iii_worker_goes_offline_and_comes_back_when_restarted() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let worker = NodeWorker::ready(&dir, &gateway.worker_url(), "gamma", "gamma").await;
    worker.kill().await;
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("gamma goes offline", || {
        catalog.resolve("gamma::echo", None).is_err()
    })
    .await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let error = caller.call("gamma::echo", json!({})).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no worker providing it is connected"),
        "{error}"
    );

    let _restarted = NodeWorker::ready(&dir, &gateway.worker_url(), "gamma", "gamma").await;
    let answer = caller
        .call("gamma::echo", json!({"again": true}))
        .await
        .unwrap();
    assert_eq!(answer["input"]["again"], true);
}

#[tokio::test]
async fn iii_workers_reattach_and_replay_after_a_gateway_restart() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let worker = NodeWorker::ready(&dir, &gateway.worker_url(), "delta", "delta").await;
    let gateway = gateway.restart().await;
    // The Node SDK backs off 1 s, 2 s, ... then sends reattach and replays.
    let catalog = gateway.gateway.state().catalog.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while catalog.resolve("delta::echo", None).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the iii worker did not re-register"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let answer = caller
        .call("delta::ask", json!({"after": "restart"}))
        .await
        .unwrap();
    assert_eq!(answer["input"]["after"], "restart");
    worker.kill().await;
}

/// The unmodified iii Node SDK cut off by the network: it reconnects after
/// its backoff and sends `reattach`; its functions never went offline (no
/// catalog change) and a call made while it was away is answered.
#[tokio::test]
async fn an_iii_worker_cut_off_by_the_network_reattaches() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let state = gateway.gateway.state().clone();
    let proxy = CuttableProxy::start(gateway.gateway.local_addr())
        .await
        .unwrap();
    let worker_url = proxy.url_for(&gateway.worker_url());
    let worker = NodeWorker::ready(&dir, &worker_url, "epsilon", "epsilon").await;
    let before = state
        .catalog
        .resolve("epsilon::echo", None)
        .unwrap()
        .provider;
    let revision = state.catalog.revision();
    proxy.cut();
    eventually("the lost connection is held", || {
        state.workers.held_count() == 1
    })
    .await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let answer = caller
        .call("epsilon::echo", json!({"while": "away"}))
        .await
        .unwrap();
    assert_eq!(answer["input"]["while"], "away");
    let after = state
        .catalog
        .resolve("epsilon::echo", None)
        .unwrap()
        .provider;
    assert_ne!(after, before, "answered by the new connection");
    assert_eq!(state.catalog.revision(), revision, "no catalog change");
    assert_eq!(state.workers.held_count(), 0);
    worker.kill().await;
}

#[tokio::test]
async fn capgate_fields_travel_in_iii_metadata() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let mut node = NodeWorker::spawn(&dir, &gateway.worker_url(), "metadata.mjs", &[]);
    assert_eq!(node.line().await, "ready");
    let client = stateless_client(&gateway.mcp_url()).await;
    let tools = client.list_all_tools().await.unwrap();
    let meta = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.meta.clone())
            .unwrap()
            .0
    };
    let refund = meta("billing__refund");
    assert_eq!(refund["io.capgate/version"], "1.2.0");
    assert_eq!(refund["io.capgate/owner"], json!({"team": "payments"}));
    // A version of the user's own (a number) leaves the default in place.
    assert_eq!(meta("calc__add")["io.capgate/version"], "0.0.0");
    node.kill().await;
}

/// An iii SDK takes only a URL: a worker token travels as `?token=`, and
/// names the worker for the policy.
#[tokio::test]
async fn an_iii_worker_authenticates_with_a_token_in_its_url() {
    let dir = iii_node_dir();
    let (key, digest) = capgate_gateway::identity::agents::new_key();
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("p.csv");
    std::fs::write(&policy, "p, worker:hello-node, *, *, *, allow\n").unwrap();
    let gateway = TestGateway::start_with(|config| {
        config.identity.workers = vec![capgate_gateway::config::WorkerConfig {
            name: "hello-node".into(),
            api_key_sha256: capgate_gateway::identity::config::key_hash(&digest).unwrap(),
            tenant: None,
        }];
        config.policies.files = vec![policy];
    })
    .await;
    let url = format!("{}?token={key}", gateway.worker_url());
    let mut node = NodeWorker::spawn(&dir, &url, "hello.mjs", &[]);
    let result: Value = serde_json::from_str(&node.line().await).unwrap();
    assert_eq!(result, json!({"message": "hello world"}));
    let provider = gateway
        .gateway
        .state()
        .catalog
        .resolve("hello::greet", None)
        .unwrap()
        .provider;
    let worker = gateway.gateway.state().workers.get(provider).unwrap();
    assert_eq!(worker.identity.name.as_deref(), Some("hello-node"));
    node.kill().await;
}

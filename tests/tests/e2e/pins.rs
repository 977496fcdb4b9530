//! Per-agent version pins from configuration, and the API keys that name
//! the agent of an MCP request.

use capgate_gateway::config::AgentConfig;
use capgate_sdk::{Function, Worker};
use capgate_tests::*;
use serde_json::{Value, json};

fn agent(name: &str, pins: &[(&str, &str)]) -> (AgentConfig, String) {
    agent_identity(name, pins)
}

fn refund(version: &'static str) -> Function {
    Function::new("billing::refund")
        .version(version)
        .description(format!("Refunds a payment (v{version})"))
        .handler(move |_, _| async move { Ok(json!({"served_by": version})) })
}

fn version_of(tool: &rmcp::model::Tool) -> Value {
    tool.meta.as_ref().unwrap().0["io.capgate/version"].clone()
}

#[tokio::test]
async fn each_agent_sees_and_calls_the_version_it_is_pinned_to() {
    let (legacy, legacy_key) = agent("legacy-bot", &[("billing::refund", "^1")]);
    let (modern, modern_key) = agent("modern-bot", &[]);
    let gateway =
        TestGateway::start_with(|config| config.identity.agents = vec![legacy, modern]).await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(refund("1.4.0"));
    worker.register(refund("2.0.0"));
    worker
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();

    for (key, expected) in [(&legacy_key, "1.4.0"), (&modern_key, "2.0.0")] {
        // Both MCP protocols: legacy sessions go through rmcp, stateless
        // calls through the fast path.
        for client in [
            legacy_client_as(&gateway.mcp_url(), Some(key)).await,
            stateless_client_as(&gateway.mcp_url(), Some(key)).await,
        ] {
            let tools = client.list_all_tools().await.unwrap();
            let refund = tools.iter().find(|t| t.name == "billing__refund").unwrap();
            assert_eq!(version_of(refund), json!(expected));
            let result = call_tool(&client, "billing__refund", json!({}))
                .await
                .unwrap();
            assert_eq!(
                result.structured_content,
                Some(json!({"served_by": expected}))
            );
            client.cancel().await.ok();
        }
    }

    // Without any ^1 version, the pinned agent loses the tool and its call
    // says why; the other agent is unaffected.
    worker.unregister("billing::refund");
    let only_v2 = Worker::connect(gateway.worker_url()).await.unwrap();
    only_v2.register(refund("2.0.0"));
    gateway.wait_live("billing::refund").await;
    let client = stateless_client_as(&gateway.mcp_url(), Some(&legacy_key)).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(!tools.iter().any(|t| t.name == "billing__refund"));
    let result = call_tool(&client, "billing__refund", json!({}))
        .await
        .unwrap();
    assert_tool_error(&result, "agent:legacy-bot is pinned to ^1");
    let client = stateless_client_as(&gateway.mcp_url(), Some(&modern_key)).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "billing__refund"));
}

#[tokio::test]
async fn with_keys_configured_every_mcp_request_must_present_one() {
    let (legacy, key) = agent("legacy-bot", &[]);
    let gateway = TestGateway::start_with(|config| config.identity.agents = vec![legacy]).await;
    let initialize = initialize_body("2025-06-18");
    let post = |authorization: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(gateway.mcp_url())
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    for (authorization, challenge, needle) in [
        (None, "Bearer realm=\"capgate\"", "requires a bearer token"),
        (
            Some("Bearer not-a-key".to_owned()),
            "error=\"invalid_token\"",
            "not one this gateway knows",
        ),
        (
            Some(format!("Basic {key}")),
            "error=\"invalid_request\"",
            "Bearer TOKEN",
        ),
    ] {
        let response = post(authorization.clone()).await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        let header = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(header.contains(challenge), "{header}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    let response = post(Some(format!("Bearer {key}"))).await.unwrap();
    assert_eq!(response.status(), 200);
}

//! Every response shape capgate emits, validated against the official MCP
//! JSON Schemas of the revision it answers in (vendored in
//! `tests/fixtures/mcp-schema`): the whole JSON-RPC message, and the result
//! as the type its method names. Fast path and rmcp path alike.

use std::path::Path;

use capgate_tests::*;
use serde_json::{Value, json};

/// Checks `instance` against the definition `name` of `revision`'s schema.
fn check(revision: &str, name: &str, instance: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/mcp-schema")
        .join(revision)
        .join("schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the schema {} cannot be read: {e}", path.display()));
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    let defs = if schema.get("$defs").is_some() {
        "$defs"
    } else {
        "definitions"
    };
    assert!(
        schema[defs].get(name).is_some(),
        "{revision} defines no {name}"
    );
    schema["$ref"] = json!(format!("#/{defs}/{name}"));
    let validator = jsonschema::validator_for(&schema).expect("the official schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{revision} {name}: {errors:?}\n{instance}"
    );
}

/// Checks a JSON-RPC answer whole, then its result as `result_type`.
fn check_answer(revision: &str, answer: &Value, result_type: Option<&str>) {
    check(revision, "JSONRPCMessage", answer);
    if let Some(result_type) = result_type {
        check(revision, result_type, &answer["result"]);
    }
}

async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (reqwest::header::HeaderMap, Value) {
    let (_, response_headers, answer) = post_mcp(url, headers, body).await;
    (response_headers, answer)
}

fn call(id: u64, name: &str, arguments: Value, meta: Option<Value>) -> Value {
    let mut params = json!({"name": name, "arguments": arguments});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

async fn legacy_responses_validate(revision: &str) {
    let gateway = TestGateway::start().await;
    let (_worker, _) = greeter(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    let (headers, initialized) = post(&url, &[], &initialize_body(revision)).await;
    check_answer(revision, &initialized, Some("InitializeResult"));
    let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let session_headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", revision),
    ];
    reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", revision)
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await
        .unwrap();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let (_, listed) = post(&url, &session_headers, &list).await;
    check_answer(revision, &listed, Some("ListToolsResult"));
    let (_, called) = post(
        &url,
        &session_headers,
        &call(3, "hello__greet", json!({"name": "x"}), None),
    )
    .await;
    check_answer(revision, &called, Some("CallToolResult"));
    let (_, bad) = post(
        &url,
        &session_headers,
        &call(4, "hello__greet", json!({"name": 5}), None),
    )
    .await;
    check_answer(revision, &bad, Some("CallToolResult"));
    assert_eq!(bad["result"]["isError"], true);
    let (_, unknown) = post(
        &url,
        &session_headers,
        &call(5, "nope__missing", json!({}), None),
    )
    .await;
    check_answer(revision, &unknown, None);
    assert!(unknown.get("error").is_some(), "{unknown}");
}

#[tokio::test]
async fn responses_to_a_2025_06_18_session_validate() {
    legacy_responses_validate("2025-06-18").await;
}

#[tokio::test]
async fn responses_to_a_2025_11_25_session_validate() {
    legacy_responses_validate("2025-11-25").await;
}

#[tokio::test]
async fn responses_on_2026_07_28_validate_on_both_paths() {
    const REVISION: &str = "2026-07-28";
    let gateway = TestGateway::start().await;
    let (_worker, _) = greeter(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": REVISION,
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let discover =
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}});
    let (_, discovered) = post(
        &url,
        &[
            ("mcp-protocol-version", REVISION),
            ("mcp-method", "server/discover"),
        ],
        &discover,
    )
    .await;
    check_answer(REVISION, &discovered, Some("DiscoverResult"));
    // Each request on the fast path's headers, then with one that sends it to rmcp.
    for extra in [None, Some(("mcp-param-x", "1"))] {
        let with = |mut headers: Vec<(&'static str, &'static str)>| {
            headers.extend(extra);
            headers
        };
        let list =
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta}});
        let (_, listed) = post(
            &url,
            &with(vec![
                ("mcp-protocol-version", REVISION),
                ("mcp-method", "tools/list"),
            ]),
            &list,
        )
        .await;
        check_answer(REVISION, &listed, Some("ListToolsResult"));
        for (id, name, arguments) in [
            (3, "hello__greet", json!({"name": "x"})),
            (4, "hello__greet", json!({"name": 5})),
        ] {
            let headers = with(vec![
                ("mcp-protocol-version", REVISION),
                ("mcp-method", "tools/call"),
                ("mcp-name", "hello__greet"),
            ]);
            let (_, called) = post(
                &url,
                &headers,
                &call(id, name, arguments, Some(meta.clone())),
            )
            .await;
            check_answer(REVISION, &called, Some("CallToolResult"));
        }
        let headers = with(vec![
            ("mcp-protocol-version", REVISION),
            ("mcp-method", "tools/call"),
            ("mcp-name", "nope__missing"),
        ]);
        let (_, unknown) = post(
            &url,
            &headers,
            &call(5, "nope__missing", json!({}), Some(meta.clone())),
        )
        .await;
        check_answer(REVISION, &unknown, None);
        assert!(unknown.get("error").is_some(), "{unknown}");
    }
}

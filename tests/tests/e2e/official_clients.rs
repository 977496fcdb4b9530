//! The MCP clients people run, against capgate, in both eras — the legacy
//! session (`initialize`, a session id, `DELETE` at the end) and 2026-07-28
//! (stateless, `server/discover`, `subscriptions/listen`): the official
//! Python SDK (`mcp` 2.3.0; `Client(url)` picks 2026-07-28) and
//! `@modelcontextprotocol/inspector` 2.12.0 `--cli`.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use capgate_tests::*;
use serde_json::json;

async fn python_client_lists_calls_and_hears_changes(mode: &str, protocol: &str) {
    let gateway = TestGateway::start().await;
    let (worker, _) = greeter(&gateway.worker_url()).await;
    let mut client = PythonClient::spawn("mcp_client.py", &[&gateway.mcp_url(), mode]);
    assert_eq!(
        client.next().await,
        json!({"event": "connected", "protocol": protocol})
    );
    assert_eq!(
        client.next().await,
        json!({"event": "tools", "names": ["hello__greet"]})
    );
    assert_eq!(
        client.next().await,
        json!({"event": "call", "is_error": false, "structured": {"message": "hello python"}})
    );
    let bad = client.next().await;
    assert_eq!(bad["is_error"], true, "{bad}");
    assert!(
        bad["text"]
            .as_str()
            .unwrap()
            .contains("is not of type \"string\""),
        "{bad}"
    );
    assert_eq!(
        client.next().await,
        json!({"event": "unknown", "code": -32602, "message": "Unknown tool: nope__missing"})
    );
    assert_eq!(client.next().await["event"], "waiting_for_change");
    worker.register(echo("hello::again", Arc::new(AtomicUsize::new(0))));
    assert_eq!(
        client.next().await,
        json!({"event": "changed", "names": ["hello__again", "hello__greet"]})
    );
    assert_eq!(client.next().await, json!({"event": "closed"}));
    let (ok, stderr) = client.finish().await;
    assert!(ok, "{stderr}");
    // The session ended as the client expects (it reports any other DELETE answer).
    assert!(!stderr.contains("termination failed"), "{stderr}");
}

#[tokio::test]
async fn the_python_sdk_in_a_legacy_session() {
    python_client_lists_calls_and_hears_changes("legacy", "2025-11-25").await;
}

#[tokio::test]
async fn the_python_sdk_on_2026_07_28() {
    python_client_lists_calls_and_hears_changes("auto", "2026-07-28").await;
}

/// `@modelcontextprotocol/inspector --cli` in one era: lists, calls, gets
/// an error result for bad input and "not found" for an unknown tool.
async fn inspector_lists_and_calls(era: &str) {
    let gateway = TestGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    let base = [url.as_str(), "--protocol-era", era];
    let run = |more: &'static [&'static str]| {
        let args: Vec<&str> = base.iter().copied().chain(more.iter().copied()).collect();
        async move { inspector_cli(&args).await }
    };
    let (ok, out, err) = run(&["--method", "tools/list"]).await;
    assert!(ok, "{era}: {out}{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["tools"][0]["name"], "hello__greet", "{out}");
    let (ok, out, err) = run(&[
        "--method",
        "tools/call",
        "--tool-name",
        "hello__greet",
        "--tool-arg",
        "name=inspector",
    ])
    .await;
    assert!(ok, "{era}: {out}{err}");
    let called: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(called["structuredContent"]["message"], "hello inspector");
    assert_eq!(called["isError"], false);
    let (_, out, err) = run(&[
        "--method",
        "tools/call",
        "--tool-name",
        "hello__greet",
        "--tool-arg",
        "nickname=x",
    ])
    .await;
    let bad: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(bad["isError"], true, "{era}: {out}{err}");
    // The inspector reports it on stderr, with its own code.
    let (_, out, err) = run(&["--method", "tools/call", "--tool-name", "nope__missing"]).await;
    assert!(
        format!("{out}{err}").contains("\"tool_not_found\""),
        "{era}: {out}{err}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_inspector_cli_in_a_legacy_session() {
    inspector_lists_and_calls("legacy").await;
}

#[tokio::test]
async fn the_inspector_cli_on_2026_07_28() {
    inspector_lists_and_calls("modern").await;
}

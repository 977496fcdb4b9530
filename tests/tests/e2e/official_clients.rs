//! The MCP clients people run, against capgate: the official Python SDK
//! (`mcp` 2.3.0) in both eras — the legacy session (`initialize`, a session
//! id, `DELETE` at the end) and what `Client(url)` picks, 2026-07-28
//! (stateless, `server/discover`, `subscriptions/listen`).

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

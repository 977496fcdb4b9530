//! The MCP clients people run, against the real `capgate serve` binary,
//! in both eras — the legacy session (`initialize`, a session id, `DELETE`
//! at the end) and 2026-07-28 (stateless, `server/discover`,
//! `subscriptions/listen`) — over HTTP and over stdio through `capgate
//! mcp-stdio`: the official Python SDK (`mcp` 2.3.0; `Client(url)` picks
//! 2026-07-28) and `@modelcontextprotocol/inspector` 2.12.0 `--cli`.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use capgate_tests::real::{RealGateway, built_binary};
use capgate_tests::*;
use serde_json::json;

/// How a client reaches the gateway.
#[derive(Clone, Copy, Debug)]
enum Route {
    Http,
    /// A `capgate mcp-stdio` process the client starts.
    Stdio,
}

async fn python_client_lists_calls_and_hears_changes(route: Route, mode: &str, protocol: &str) {
    let gateway = RealGateway::start().await;
    let (worker, _) = greeter(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    let capgate = built_binary("capgate").display().to_string();
    let args: Vec<&str> = match route {
        Route::Http => vec![&url, mode],
        Route::Stdio => vec!["stdio", mode, &capgate, "mcp-stdio", "--url", &url],
    };
    let mut client = PythonClient::spawn("mcp_client.py", &args);
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
    python_client_lists_calls_and_hears_changes(Route::Http, "legacy", "2025-11-25").await;
}

#[tokio::test]
async fn the_python_sdk_on_2026_07_28() {
    python_client_lists_calls_and_hears_changes(Route::Http, "auto", "2026-07-28").await;
}

#[tokio::test]
async fn the_python_sdk_over_stdio_through_the_bridge() {
    python_client_lists_calls_and_hears_changes(Route::Stdio, "legacy", "2025-11-25").await;
}

#[tokio::test]
async fn the_python_sdk_on_2026_07_28_over_stdio_through_the_bridge() {
    python_client_lists_calls_and_hears_changes(Route::Stdio, "auto", "2026-07-28").await;
}

/// `@modelcontextprotocol/inspector --cli` in one era: lists, calls, gets
/// an error result for bad input and "not found" for an unknown tool.
async fn inspector_lists_and_calls(route: Route, era: &str) {
    let gateway = RealGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    let bridge_env = format!("CAPGATE_MCP_URL={url}");
    let capgate = built_binary("capgate").display().to_string();
    let base: Vec<&str> = match route {
        Route::Http => vec![&url, "--protocol-era", era],
        Route::Stdio => vec![
            "-e",
            &bridge_env,
            "--protocol-era",
            era,
            &capgate,
            "mcp-stdio",
        ],
    };
    let era = format!("{era} {route:?}");
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
    inspector_lists_and_calls(Route::Http, "legacy").await;
}

#[tokio::test]
async fn the_inspector_cli_on_2026_07_28() {
    inspector_lists_and_calls(Route::Http, "modern").await;
}

#[tokio::test]
async fn the_inspector_cli_over_stdio_through_the_bridge() {
    inspector_lists_and_calls(Route::Stdio, "legacy").await;
}

#[tokio::test]
async fn the_inspector_cli_on_2026_07_28_over_stdio_through_the_bridge() {
    inspector_lists_and_calls(Route::Stdio, "modern").await;
}

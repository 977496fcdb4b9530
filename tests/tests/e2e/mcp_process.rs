//! MCP against the real `capgate serve` binary, where processes and
//! connections come and go: the `capgate mcp-stdio` bridge (cancellation,
//! stdin closing, an unreachable gateway, a refused token), a client that
//! disconnects mid-call, and 10,000 abandoned `initialize`s.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use capgate_sdk::{Function, Worker};
use capgate_tests::real::{RealGateway, built_binary};
use capgate_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Notify;

/// `slow::cancellable` that also says when its call has started.
fn watched(started: Arc<Notify>, cancelled: Arc<AtomicBool>) -> Function {
    Function::new("slow::cancellable").handler(move |_, ctx| {
        let started = started.clone();
        let cancelled = cancelled.clone();
        async move {
            started.notify_one();
            tokio::select! {
                () = ctx.cancelled() => cancelled.store(true, Ordering::SeqCst),
                () = tokio::time::sleep(HANG) => {}
            }
            Ok(json!(null))
        }
    })
}

/// A provider of [`watched`], registered once a round trip proves it.
async fn provider(gateway: &RealGateway) -> (Worker, Arc<Notify>, Arc<AtomicBool>) {
    let started = Arc::new(Notify::new());
    let cancelled = Arc::new(AtomicBool::new(false));
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(watched(started.clone(), cancelled.clone()));
    worker
        .call("engine::functions::list", json!({}))
        .await
        .expect("the gateway answers the provider");
    (worker, started, cancelled)
}

/// `capgate mcp-stdio`, spoken to a JSON line at a time.
struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Bridge {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(built_binary("capgate"))
            .arg("mcp-stdio")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("capgate mcp-stdio starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    async fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next message with `id` (notifications in between are skipped).
    async fn answer(&mut self, id: u64) -> Value {
        self.answer_to(json!(id)).await
    }

    async fn answer_to(&mut self, id: Value) -> Value {
        loop {
            let line = tokio::time::timeout(HANG, self.stdout.next_line())
                .await
                .expect("the bridge answers")
                .expect("stdout is readable")
                .expect("the bridge is still running");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == id {
                return message;
            }
        }
    }

    async fn initialize(&mut self) {
        self.send(initialize_body("2025-11-25")).await;
        let answer = self.answer(1).await;
        assert_eq!(
            answer["result"]["protocolVersion"], "2025-11-25",
            "{answer}"
        );
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
    }

    /// Closes stdin and waits for the process: its exit success and stderr.
    async fn finish(mut self) -> (bool, String) {
        use tokio::io::AsyncReadExt;
        drop(self.stdin.take());
        let status = tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("the bridge exits once stdin closes")
            .expect("exit status");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        (status.success(), stderr)
    }
}

#[tokio::test]
async fn a_cancelled_request_through_the_bridge_cancels_the_call_at_the_worker() {
    let gateway = RealGateway::start().await;
    let (_provider, started, cancelled) = provider(&gateway).await;
    let mut bridge = Bridge::start(&["--url", &gateway.mcp_url()]);
    bridge.initialize().await;
    let started_now = started.notified();
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                     "params": {"name": "slow__cancellable", "arguments": {}}}))
        .await;
    tokio::time::timeout(HANG, started_now)
        .await
        .expect("the call reached the worker");
    bridge
        .send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 2, "reason": "the user pressed stop"}}),
        )
        .await;
    eventually("the worker's handler saw the cancellation", || {
        cancelled.load(Ordering::SeqCst)
    })
    .await;
    // The bridge serves on.
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
        .await;
    let listed = bridge.answer(3).await;
    assert_eq!(
        listed["result"]["tools"][0]["name"], "slow__cancellable",
        "{listed}"
    );
    let (clean, stderr) = bridge.finish().await;
    assert!(
        clean,
        "the bridge exits cleanly when stdin closes: {stderr}"
    );
}

#[tokio::test]
async fn the_bridge_exits_cleanly_when_stdin_closes_before_a_word() {
    let gateway = RealGateway::start().await;
    let bridge = Bridge::start(&["--url", &gateway.mcp_url()]);
    let (clean, stderr) = bridge.finish().await;
    assert!(clean, "{stderr}");
}

#[tokio::test]
async fn the_bridge_says_on_stderr_when_the_gateway_is_unreachable() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{closed_port}/mcp");
    let (clean, stderr) = Bridge::start(&["--url", &url]).finish().await;
    assert!(!clean, "an unreachable gateway is a failed start");
    assert!(
        stderr.contains(&format!("cannot reach the gateway at {url}"))
            && stderr.contains("capgate serve"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_that_closes_stdin_after_asking_still_gets_its_answer() {
    let gateway = RealGateway::start().await;
    let mut bridge = Bridge::start(&["--url", &gateway.mcp_url()]);
    bridge.initialize().await;
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    // As `printf '…' | capgate mcp-stdio` does: input ends, output is read on.
    drop(bridge.stdin.take());
    let listed = bridge.answer(2).await;
    assert!(listed["result"]["tools"].is_array(), "{listed}");
    let (clean, stderr) = bridge.finish().await;
    assert!(clean, "{stderr}");
}

#[tokio::test]
async fn the_bridge_refuses_an_overlong_line_and_serves_on() {
    let gateway = RealGateway::start().await;
    let mut bridge = Bridge::start(&["--url", &gateway.mcp_url()]);
    bridge.initialize().await;
    // One byte past the 16 MiB a line may have (rmcp's own limit).
    let mut overlong = vec![b'x'; 16 * 1024 * 1024 + 1];
    overlong.push(b'\n');
    let stdin = bridge.stdin.as_mut().expect("stdin is open");
    stdin.write_all(&overlong).await.unwrap();
    stdin.flush().await.unwrap();
    let refused = bridge.answer_to(Value::Null).await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("16777216 bytes")),
        "{refused}"
    );
    // The bridge serves on; a 2025-11-25 client gets its revision's shape
    // (no 2026-07-28 `resultType`), and the gateway's errors as they are.
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    let listed = bridge.answer(2).await;
    assert!(listed["result"]["tools"].is_array(), "{listed}");
    assert!(listed["result"].get("resultType").is_none(), "{listed}");
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "no__such_tool", "arguments": {}}}))
        .await;
    let unknown = bridge.answer(3).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let (clean, stderr) = bridge.finish().await;
    assert!(clean, "{stderr}");
}

#[tokio::test]
async fn the_bridge_says_on_stderr_when_the_gateway_refuses_its_token() {
    let (key, digest) = capgate_gateway::identity::agents::new_key();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[agents.desktop]\napi_key_sha256 = \"{digest}\"\n"),
    )
    .unwrap();
    let config_path = config.path().display().to_string();
    let gateway = RealGateway::start_with(&["--config", &config_path]).await;
    let url = gateway.mcp_url();
    for refused in [
        vec!["--url", &url, "--token", "cgk_wrong"],
        vec!["--url", &url],
    ] {
        let (clean, stderr) = Bridge::start(&refused).finish().await;
        assert!(!clean, "{refused:?}");
        assert!(
            stderr.contains("refused the token") && stderr.contains("--token"),
            "{refused:?}: {stderr}"
        );
    }
    let mut bridge = Bridge::start(&["--url", &url, "--token", &key]);
    bridge.initialize().await;
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    assert!(bridge.answer(2).await["result"]["tools"].is_array());
    let (clean, stderr) = bridge.finish().await;
    assert!(clean, "{stderr}");
}

/// An HTTP client that goes away mid-call: the worker's handler is told.
async fn disconnect_mid_call(session: Option<&str>) {
    let gateway = RealGateway::start().await;
    let (_provider, started, cancelled) = provider(&gateway).await;
    let url = gateway.mcp_url();
    let session_id = match session {
        Some(version) => Some(open_session(&url, version, json!({})).await),
        None => None,
    };
    let (headers, meta) = match (session, &session_id) {
        (Some(version), Some(id)) => (
            vec![
                ("mcp-protocol-version", version),
                ("mcp-session-id", id.as_str()),
            ],
            json!({}),
        ),
        _ => (
            vec![
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "slow__cancellable"),
            ],
            json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }),
        ),
    };
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "slow__cancellable", "arguments": {}, "_meta": meta}});
    let started_now = started.notified();
    let request = mcp_post(&url, &headers).body(body.to_string()).send();
    let call = tokio::spawn(async move {
        // Reads the whole answer, so the connection stays open until dropped.
        let _ = request.await?.bytes().await;
        Ok::<_, reqwest::Error>(())
    });
    tokio::time::timeout(HANG, started_now)
        .await
        .expect("the call reached the worker");
    call.abort();
    if session.is_some() {
        // In a session a dropped stream is not a cancellation (the client
        // may resume it with Last-Event-ID); notifications/cancelled is.
        // There is no event for "not cancelled": a wrong cancellation would
        // arrive within milliseconds, so a short wait can only miss a late
        // one (never fail a correct gateway); the explicit cancel below is
        // then waited for as an event.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !cancelled.load(Ordering::SeqCst),
            "a session's dropped stream cancelled the call"
        );
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 7, "reason": "gone"}});
        let sent = mcp_post(&url, &headers)
            .body(cancel.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status().as_u16(), 202);
    }
    eventually("the worker's handler saw the cancellation", || {
        cancelled.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_call_cancels_it_at_the_worker_on_2026_07_28() {
    disconnect_mid_call(None).await;
}

/// MCP 2025-06-18 and 2025-11-25: "disconnection SHOULD NOT be interpreted
/// as the client cancelling its request".
#[tokio::test]
async fn in_a_session_only_an_explicit_cancel_cancels_a_call_whose_client_went_away() {
    disconnect_mid_call(Some("2025-11-25")).await;
}

/// 10,000 legacy `initialize`s that never `DELETE`: the gateway keeps at
/// most `max_mcp_sessions` of them, refuses the rest with 503 and
/// `Retry-After`, and its memory stays within what that many sessions cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_abandoned_initializes_keep_memory_bounded() {
    const LIMIT: usize = 256;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), format!("max_mcp_sessions = {LIMIT}\n")).unwrap();
    let config_path = config.path().display().to_string();
    let gateway = RealGateway::start_with(&["--config", &config_path]).await;
    let url = gateway.mcp_url();
    let before = gateway.rss_kib();
    let body = initialize_body("2025-11-25");
    // One HTTP client, its connections reused, as a flood would be.
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..8 {
        let url = url.clone();
        let body = body.to_string();
        let http = http.clone();
        tasks.spawn(async move {
            let (mut opened, mut refused) = (0usize, 0usize);
            for _ in (lane..10_000).step_by(8) {
                let response = mcp_post_on(&http, &url, &[])
                    .body(body.clone())
                    .send()
                    .await;
                let response = response.expect("the gateway answers every initialize");
                match response.status().as_u16() {
                    200 => opened += 1,
                    503 => {
                        assert_eq!(
                            response.headers()["retry-after"],
                            "5",
                            "a refusal says when to retry"
                        );
                        refused += 1;
                    }
                    other => panic!("initialize answered {other}"),
                }
                let _ = response.bytes().await;
            }
            (opened, refused)
        });
    }
    let (mut opened, mut refused) = (0, 0);
    while let Some(lane) = tasks.join_next().await {
        let (o, r) = lane.unwrap();
        opened += o;
        refused += r;
    }
    assert_eq!(opened, LIMIT, "sessions beyond the limit are refused");
    assert_eq!(refused, 10_000 - LIMIT);
    let grown_kib = gateway.rss_kib().saturating_sub(before);
    // What `LIMIT` sessions may cost (docs/benchmarks.md measures it), plus
    // allocator slack; 10,000 unbounded sessions would be ~650 MiB.
    let bound_kib = (LIMIT as u64) * 128 + 16 * 1024;
    assert!(
        grown_kib <= bound_kib,
        "10,000 initializes grew the gateway by {grown_kib} KiB (bound {bound_kib} KiB)"
    );
    // Stateless agents need no session and are not locked out.
    let (status, _, answer) = post_mcp(
        &url,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["result"]["tools"].is_array(), "{answer}");
}

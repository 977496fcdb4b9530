//! The real `capgate` process killed with SIGKILL and started again:
//! the catalog survives, workers reconnect by themselves, tools reappear
//! and MCP clients hear of it; hundreds of workers reconnecting at once
//! converge.

mod common;
use common::free_port;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use capgate_sdk::{Backoff, Function, Worker};
use rmcp::model::ProtocolVersion;
use rmcp::service::NotificationContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

// Every `capgate` here gets its own HTTP trigger port (CAPGATE_HTTP_LISTEN):
// tests run side by side, and 3111 may be taken.
const CAPGATE: &str = env!("CARGO_BIN_EXE_capgate");
/// Generous: only catches hangs.
const HANG: Duration = Duration::from_secs(30);

/// A `capgate serve` child on a fixed port and data directory.
struct Process {
    child: Child,
    port: u16,
}

impl Process {
    async fn start(port: u16, data_dir: &std::path::Path) -> Self {
        let child = Command::new(CAPGATE)
            .env("CAPGATE_HTTP_LISTEN", "127.0.0.1:0")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .env("CAPGATE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("capgate starts");
        let process = Self { child, port };
        process.wait_healthy().await;
        process
    }

    async fn health(&self) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/healthz", self.port))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + HANG;
        while self.health().await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "capgate never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Default)]
struct Changes(Arc<Notify>);

impl ClientHandler for Changes {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.0.notify_one();
    }
}

fn greet() -> Function {
    Function::new("hello::greet").handler(|input, _| async move {
        Ok(json!({"message": format!("hello {}", input["name"].as_str().unwrap_or("?"))}))
    })
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn after_kill_9_and_restart_workers_return_and_clients_hear_of_it() {
    capgate_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gateway = Process::start(port, dir.path()).await;
    // The first reconnect attempt comes 6.4 s or more after the kill: the
    // restarted gateway is up and the MCP client below subscribed by then,
    // even on a loaded CI machine, so it must hear the tool come back.
    let backoff = Backoff::try_new(Duration::from_secs(8), Duration::from_secs(10), 0.2).unwrap();
    let worker = Worker::builder(gateway.url())
        .backoff(backoff)
        .connect()
        .await
        .unwrap();
    worker.register(greet());
    worker
        .call("hello::greet", json!({"name": "before"}))
        .await
        .unwrap();
    gateway.kill_9();

    let gateway = Process::start(port, dir.path()).await;
    let mcp = format!("http://127.0.0.1:{port}/mcp");
    let changes = Changes::default();
    let client = changes
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(mcp.clone()))
        .await
        .expect("legacy MCP session");
    let before = client.list_all_tools().await.unwrap();
    assert!(
        !before.iter().any(|t| t.name == "hello__greet"),
        "the worker is not back yet: {before:?}"
    );
    tokio::time::timeout(HANG, changes.0.notified())
        .await
        .expect("list_changed when the worker's replay brings the tool back");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "hello__greet"), "{tools:?}");
    // The worker reconnected by itself and its calls work again.
    let answer = worker
        .call("hello::greet", json!({"name": "after"}))
        .await
        .unwrap();
    assert_eq!(answer["message"], "hello after");
    // A stateless client on the restarted gateway sees the same.
    let stateless = Changes::default()
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(mcp),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .unwrap();
    assert!(
        stateless
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "hello__greet")
    );
    worker.shutdown();
    drop(gateway);
}

/// Whether the gateway has `n` workers and `n` live functions.
async fn converged(gateway: &Process, n: usize) -> bool {
    gateway
        .health()
        .await
        .is_some_and(|h| h["workers"] == json!(n) && h["functions"] == json!(n))
}

#[tokio::test]
async fn five_hundred_workers_reconnecting_at_once_converge() {
    const WORKERS: usize = 500;
    capgate_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gateway = Process::start(port, dir.path()).await;
    let mut workers = Vec::with_capacity(WORKERS);
    for n in 0..WORKERS {
        let worker = Worker::builder(gateway.url()).spawn();
        worker.register(
            Function::new(format!("swarm::w{n:03}"))
                .handler(move |_, _| async move { Ok(json!(n)) }),
        );
        workers.push(worker);
    }
    eventually("500 workers connected", || converged(&gateway, WORKERS)).await;
    gateway.kill_9();
    let gateway = Process::start(port, dir.path()).await;
    eventually("500 workers reconnected and replayed", || {
        converged(&gateway, WORKERS)
    })
    .await;
    let answer = workers[0].call("swarm::w499", json!({})).await.unwrap();
    assert_eq!(answer, json!(499));
    for worker in &workers {
        worker.shutdown();
    }
}

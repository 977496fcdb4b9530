//! The example as a user runs it: against a gateway, it prints the greeting
//! and keeps serving, so another caller can use its function.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use capgate_gateway::{Config, Gateway};
use capgate_sdk::Worker;

#[tokio::test]
async fn hello_greets_itself_then_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config.server.data_dir = dir.path().to_owned();
    let gateway = Gateway::start(config).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello"))
        .arg(gateway.worker_url())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first_line)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(line.trim(), r#"{"message":"hello world"}"#);

    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let reply = caller
        .call("hello::greet", serde_json::json!({"name": "again"}))
        .await
        .unwrap();
    assert_eq!(reply["message"], "hello again");
    child.kill().unwrap();
    let _ = child.wait();
    gateway.shutdown().await;
}

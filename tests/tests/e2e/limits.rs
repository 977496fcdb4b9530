//! Nothing grows without bound: HTTP connections, slow request heads, idle
//! keep-alive, worker connections and the bytes queued for a worker that
//! stops reading each have a limit and a clear refusal at it.

use std::time::Duration;

use capgate_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or `HANG` passes, which
/// fails); returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(HANG, stream.read_to_end(&mut seen)).await;
    assert!(
        closed.is_ok(),
        "the connection was still open after {HANG:?}: {}",
        String::from_utf8_lossy(&seen)
    );
    String::from_utf8_lossy(&seen).into_owned()
}

async fn healthz(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(HANG, stream.read(&mut buffer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn connections_beyond_the_http_limit_get_503_and_a_freed_slot_is_reused() {
    let gateway = TestGateway::start_with(|config| config.limits.max_http_connections = 3).await;
    let addr = gateway.gateway.local_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Served: each slot is a working connection.
        assert!(healthz(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let answer = read_until_closed(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_http_connections"),
        "{body}"
    );
    // The HTTP trigger listener draws on the same budget: the gateway
    // holds max_http_connections in all, not that many per port.
    let triggers = gateway
        .gateway
        .http_trigger_addr()
        .expect("the test gateway serves HTTP triggers");
    let mut refused = TcpStream::connect(triggers).await.unwrap();
    let answer = read_until_closed(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // One leaves; its slot serves the next client.
    drop(held.pop());
    retry_until("a freed slot is reused", || async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        healthz(&mut stream).await.starts_with("HTTP/1.1 200")
    })
    .await;
}

/// Tries `attempt` every 20 ms until it succeeds; fails naming `what`
/// after `HANG`.
async fn retry_until<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let succeeded = async {
        while !attempt().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG, succeeded)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {HANG:?}"));
}

#[tokio::test]
async fn a_request_head_dripped_line_by_line_is_cut_off_and_idle_keep_alive_ends() {
    let gateway = TestGateway::start_with(|config| {
        config.limits.http_header_timeout = Duration::from_millis(400);
    })
    .await;
    let addr = gateway.gateway.local_addr();
    // Slowloris: a header line every 100 ms, never the blank line.
    let mut dripping = TcpStream::connect(addr).await.unwrap();
    dripping
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let drip = async {
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let line = format!("x-drip-{n}: {n}\r\n");
            if dripping.write_all(line.as_bytes()).await.is_err() {
                return n;
            }
            let mut probe = [0u8; 1];
            // The server closing shows up as EOF on our side.
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), dripping.read(&mut probe)).await
            {
                return n;
            }
        }
        unreachable!()
    };
    let lines = tokio::time::timeout(HANG, drip)
        .await
        .expect("the dripping connection is cut off");
    assert!(lines < 60, "cut only after {lines} lines");

    // A kept-alive connection that goes quiet after its request ends too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(healthz(&mut idle).await.starts_with("HTTP/1.1 200"));
    read_until_closed(&mut idle).await;
}

/// A request whose head arrived but whose body trickles in (or never
/// comes) is answered and its connection closed after the body timeout.
#[tokio::test]
async fn a_body_that_never_arrives_is_cut_off() {
    let gateway = TestGateway::start_with(|config| {
        config.limits.http_body_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = gateway.gateway.local_addr();
    for path in ["/mcp", "/api/v1/call/hello::greet", "/api/v1/functions"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\ncontent-length: 1000\r\n\r\n{{\"partial\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 4")
                || answer.starts_with("HTTP/1.1 5"),
            "{path}: {answer}"
        );
    }
}

#[tokio::test]
async fn worker_connections_beyond_the_limit_are_refused_with_503() {
    let gateway = TestGateway::start_with(|config| config.limits.max_worker_connections = 2).await;
    let first = RawPeer::connect(&gateway.worker_url()).await;
    let _second = RawPeer::connect(&gateway.worker_url()).await;
    let refused = tokio_tungstenite::connect_async(gateway.worker_url()).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("a third worker connection was accepted: {refused:?}");
    };
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("max_worker_connections"), "{body}");
    // One leaves; another takes its place.
    first.kill();
    retry_until("a freed worker slot is reused", || async {
        tokio_tungstenite::connect_async(gateway.worker_url())
            .await
            .is_ok()
    })
    .await;
}

/// A worker that stops reading is cut off by the bytes queued for it —
/// long before its pings could tell (ping interval: 10 minutes here) —
/// and the calls sent to it fail at once instead of filling memory.
#[tokio::test]
async fn a_worker_that_stops_reading_is_cut_off_by_bytes_queued() {
    let gateway = TestGateway::start_with(|config| {
        config.limits.max_frame_bytes = 128 * 1024;
        config.limits.max_outbox_bytes = 256 * 1024;
        config.workers.ping_interval = Duration::from_secs(600);
    })
    .await;
    let mut stuck = RawPeer::connect(&gateway.worker_url()).await;
    stuck
        .send(json!({"type": "registerfunction", "id": "slow::reader"}))
        .await;
    stuck.send(json!({"type": "ping"})).await;
    stuck
        .recv_until("pong", |frame| frame["type"] == "pong")
        .await;
    // From here on `stuck` reads nothing.
    let mut caller = RawPeer::connect(&gateway.worker_url()).await;
    let payload = "x".repeat(100 * 1024);
    // Far more than the socket buffers and the outbox limit together.
    let calls = 400;
    for n in 0..calls {
        caller
            .send(json!({
                "type": "invokefunction",
                "invocation_id": format!("big-{n}"),
                "function_id": "slow::reader",
                "data": {"blob": payload},
            }))
            .await;
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..calls {
        let answer = caller
            .recv_until("an answer", |frame| frame["type"] == "invocationresult")
            .await;
        let code = answer["error"]["code"].as_str().unwrap_or("ok").to_owned();
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get("ok"), None, "{codes:?}");
    assert!(
        codes.contains_key("invocation_stopped") || codes.contains_key("function_not_found"),
        "{codes:?}"
    );
    // The connection itself was cut.
    let closed = async {
        loop {
            match stuck.next_message().await {
                None
                | Some(Err(_))
                | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => {
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(HANG, closed)
        .await
        .expect("the stuck worker's connection is closed");
}

/// Every version is kept for good (it pins its definition), so the catalog
/// has a size: beyond `max_catalog_versions` a new version is refused —
/// to the worker and to the admin API — while known ones still register.
#[tokio::test]
async fn beyond_the_catalog_limit_new_versions_are_refused_clearly() {
    let gateway = TestGateway::start_with(|config| config.catalog.max_versions = 2).await;
    let worker = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for id in ["full::one", "full::two"] {
        let refused = register_and_collect_rejections(&worker, echo(id, calls.clone())).await;
        assert!(refused.is_empty(), "{id}: {refused:?}");
    }
    let refused =
        register_and_collect_rejections(&worker, echo("full::three", calls.clone())).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].code, "catalog_full");
    assert!(
        refused[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("max_catalog_versions"),
        "{refused:?}"
    );
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/functions",
            gateway.gateway.local_addr()
        ))
        .json(&json!({"id": "full::declared", "version": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 507);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "catalog_full", "{body}");
    // A second provider of a version already held is not a new version.
    let replica = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    let refused = register_and_collect_rejections(&replica, echo("full::one", calls.clone())).await;
    assert!(refused.is_empty(), "{refused:?}");
}

/// The binary users run keeps jemalloc's larger per-thread cache, set for
/// every build of this workspace in `.cargo/config.toml`: without it, each
/// call at 64 in flight sent its kilobyte-sized blocks back to the shared
/// arena and fetched them again (docs/benchmarks.md). jemalloc prints the
/// options it runs with when asked to print its statistics at exit.
#[test]
fn the_binary_runs_with_jemallocs_larger_thread_cache() {
    let output = std::process::Command::new(real::built_binary("capgate"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("capgate --version runs");
    assert!(output.status.success(), "{output:?}");
    let stats = String::from_utf8_lossy(&output.stderr);
    assert!(
        stats.contains("opt.tcache_nslots_small_min: 128"),
        "jemalloc's options, as the binary printed them:\n{stats}"
    );
}

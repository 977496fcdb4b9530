//! The hot path with nothing in the way: a lean raw-protocol caller (one
//! thread, one WebSocket, calls pipelined) and a lean raw provider (its
//! own process, one thread, echoes every call) measured through
//!
//! - `router`: a do-nothing frame router ([`serve_router`], this binary's
//!   hidden `router` command) — what forwarding frames costs at all;
//! - `capgate`: `capgate serve` with its defaults (every call audited);
//! - `capgate-noaudit`: the same with `[audit] allowed_calls = false`.
//!
//! Each target: sequential p50/p99 over `--calls`, then throughput with
//! `--concurrency` calls outstanding for `--seconds`, counting calls
//! sent and never answered (lost) and the target process's CPU time per
//! call in that phase, and sequential p50 again with a large
//! payload ([`LARGE_ITEMS`] objects, about 60 KB each way), where copying
//! the payload rather than parsing it shows. The scenario also opens `--sessions`
//! idle worker connections to the default gateway and reports what one
//! costs in resident memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::{ChildGateway, Load, capgate_binary, cpu_seconds_of, percentile};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The fields a router or a provider must read; the rest passes through.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    id: Option<&'a str>,
    #[serde(default, borrow)]
    function_id: Option<&'a str>,
    #[serde(default, borrow)]
    invocation_id: Option<&'a str>,
}

type Outbox = mpsc::UnboundedSender<String>;

#[derive(Default)]
struct Routes {
    providers: HashMap<String, Outbox>,
    callers: HashMap<String, Outbox>,
}

/// The do-nothing router: remembers who registered which function and who
/// is waiting for which invocation, and forwards frames unchanged.
pub async fn serve_router(addr: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    let routes = Arc::new(Mutex::new(Routes::default()));
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let routes = routes.clone();
        tokio::spawn(async move {
            let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = socket.split();
            let (outbox, mut queued) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(text) = queued.recv().await {
                    let _ = sink.feed(Message::text(text)).await;
                    while let Ok(text) = queued.try_recv() {
                        let _ = sink.feed(Message::text(text)).await;
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(head) = serde_json::from_str::<Head>(text.as_str()) else {
                    continue;
                };
                let mut routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
                let target = match head.kind {
                    "registerfunction" => {
                        if let Some(id) = head.id {
                            routes.providers.insert(id.to_owned(), outbox.clone());
                        }
                        None
                    }
                    "invokefunction" => {
                        if let Some(id) = head.invocation_id {
                            routes.callers.insert(id.to_owned(), outbox.clone());
                        }
                        head.function_id
                            .and_then(|f| routes.providers.get(f))
                            .cloned()
                    }
                    "invocationresult" => {
                        head.invocation_id.and_then(|id| routes.callers.remove(id))
                    }
                    "ping" => {
                        let _ = outbox.send(r#"{"type":"pong"}"#.to_owned());
                        None
                    }
                    _ => None,
                };
                drop(routes);
                if let Some(target) = target {
                    let _ = target.send(text.as_str().to_owned());
                }
            }
        });
    }
}

/// The lean provider: registers `bench::echo` and answers every call with
/// its input. Prints `ready` once the registration is acknowledged.
pub async fn serve_provider(url: String) -> anyhow::Result<()> {
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await?;
    socket
        .send(Message::text(
            json!({"type": "registerfunction", "id": "bench::echo"}).to_string(),
        ))
        .await?;
    socket.send(Message::text(r#"{"type":"ping"}"#)).await?;
    let (mut sink, mut stream) = socket.split();
    let mut ready = false;
    // Ends quietly when the connection does: the bench kills its target.
    while let Some(Ok(message)) = stream.next().await {
        answer_frame(message, &mut sink, &mut ready).await?;
        // Answer what arrived together in one write.
        while let Some(Some(Ok(message))) = stream.next().now_or_never() {
            answer_frame(message, &mut sink, &mut ready).await?;
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn answer_frame(
    message: Message,
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    ready: &mut bool,
) -> anyhow::Result<()> {
    let Message::Text(text) = message else {
        return Ok(());
    };
    let Ok(head) = serde_json::from_str::<Head>(text.as_str()) else {
        return Ok(());
    };
    match head.kind {
        "pong" if !*ready => {
            *ready = true;
            println!("ready");
        }
        "invokefunction" => {
            let Some(invocation_id) = head.invocation_id else {
                return Ok(());
            };
            let call: serde_json::Value = serde_json::from_str(text.as_str())?;
            let answer = json!({
                "type": "invocationresult",
                "invocation_id": invocation_id,
                "function_id": "bench::echo",
                "result": call["data"],
            });
            if sink.feed(Message::text(answer.to_string())).await.is_err() {
                return Ok(());
            }
        }
        _ => {}
    }
    Ok(())
}

/// Objects in the large payload's array.
const LARGE_ITEMS: usize = 1_000;
/// Sequential calls with the large payload.
const LARGE_CALLS: usize = 2_000;

/// The data of a call with the large payload: an order of many lines, as
/// a business event might carry.
fn large_payload() -> String {
    let items: Vec<serde_json::Value> = (0..LARGE_ITEMS)
        .map(|i| json!({"sku": format!("sku-{i:05}"), "qty": i % 7 + 1, "price": 12.5 + i as f64, "tags": ["a", "b"]}))
        .collect();
    json!({"order": "o-1", "items": items}).to_string()
}

/// One target's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RawFigures {
    pub target: &'static str,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Sequential p50 with the large payload.
    pub large_p50_us: f64,
    pub large_payload_bytes: usize,
    pub concurrency: usize,
    pub calls_per_sec: f64,
    /// The target process's CPU time (user + system) per call in the
    /// concurrency phase: what a call costs it, whatever the host's speed
    /// at that moment (a throughput ratio on a shared host swings with it).
    pub cpu_us_per_call: f64,
    pub lost: u64,
}

struct Caller {
    socket: Socket,
    next: u64,
}

impl Caller {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { socket, next: 0 })
    }

    fn frame(&mut self) -> Message {
        let n = self.next + 1;
        self.frame_with(&format!(r#"{{"n":{n}}}"#))
    }

    fn frame_with(&mut self, data: &str) -> Message {
        self.next += 1;
        Message::text(format!(
            r#"{{"type":"invokefunction","invocation_id":"c-{}","function_id":"bench::echo","data":{data}}}"#,
            self.next
        ))
    }

    /// Sequential p50 of calls carrying `data`.
    async fn sequential_p50(&mut self, data: &str, calls: usize) -> anyhow::Result<f64> {
        let mut latencies = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let frame = self.frame_with(data);
            self.socket.send(frame).await?;
            self.answer().await?;
            latencies.push(started.elapsed());
        }
        latencies.sort();
        Ok(percentile(&latencies, 0.50) * 1e6)
    }

    /// Waits for the next answer; an error answer fails the run.
    async fn answer(&mut self) -> anyhow::Result<()> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .context("no answer within 30 s")?
                .context("the connection closed")??;
            let Message::Text(text) = message else {
                continue;
            };
            if text.as_str().contains(r#""invocationresult""#) {
                if text.as_str().contains(r#""error""#) {
                    bail!("a call failed: {}", text.as_str());
                }
                return Ok(());
            }
        }
    }

    /// The figures of `target`, the process `pid`.
    async fn measure(
        &mut self,
        target: &'static str,
        pid: u32,
        load: &Load,
    ) -> anyhow::Result<RawFigures> {
        for _ in 0..1_000 {
            let frame = self.frame();
            self.socket.send(frame).await?;
            self.answer().await?;
        }
        let mut latencies = Vec::with_capacity(load.calls);
        for _ in 0..load.calls {
            let started = Instant::now();
            let frame = self.frame();
            self.socket.send(frame).await?;
            self.answer().await?;
            latencies.push(started.elapsed());
        }
        latencies.sort();
        // Throughput: keep `concurrency` calls outstanding.
        let mut outstanding = 0usize;
        let mut answered = 0u64;
        let mut sent = 0u64;
        for _ in 0..load.concurrency {
            let frame = self.frame();
            self.socket.feed(frame).await?;
            outstanding += 1;
            sent += 1;
        }
        self.socket.flush().await?;
        let cpu_before = cpu_seconds_of(pid)?;
        let started = Instant::now();
        let until = started + Duration::from_secs(load.seconds);
        while Instant::now() < until {
            self.answer().await?;
            answered += 1;
            outstanding -= 1;
            let frame = self.frame();
            self.socket.send(frame).await?;
            outstanding += 1;
            sent += 1;
        }
        let elapsed = started.elapsed();
        let cpu = cpu_seconds_of(pid)? - cpu_before;
        let counted = answered;
        while outstanding > 0 {
            if self.answer().await.is_err() {
                break;
            }
            answered += 1;
            outstanding -= 1;
        }
        let large = large_payload();
        self.sequential_p50(&large, LARGE_CALLS / 10).await?;
        let large_p50_us = self.sequential_p50(&large, LARGE_CALLS).await?;
        Ok(RawFigures {
            target,
            p50_us: percentile(&latencies, 0.50) * 1e6,
            p99_us: percentile(&latencies, 0.99) * 1e6,
            large_p50_us,
            large_payload_bytes: large.len(),
            concurrency: load.concurrency,
            calls_per_sec: counted as f64 / elapsed.as_secs_f64(),
            cpu_us_per_call: cpu / counted.max(1) as f64 * 1e6,
            lost: sent - answered,
        })
    }
}

/// A hidden command of this binary, in its own process; killed when dropped.
struct Helper {
    /// Held so the process lives as long as this value.
    child: Child,
}

impl Helper {
    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the helper process has exited")
    }

    async fn start(args: &[&str], threads: Option<&str>) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut command = Command::new(std::env::current_exe()?);
        if let Some(threads) = threads {
            command.env("TOKIO_WORKER_THREADS", threads);
        }
        let mut child = command
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        match line {
            Ok(Ok(Some(text))) if text == "ready" => Ok(Self { child }),
            other => bail!("{args:?} did not start: {other:?}"),
        }
    }
}

/// Runs the caller on its own one-thread runtime, as a lean client would.
fn measure_on_one_thread(
    url: String,
    target: &'static str,
    pid: u32,
    load: Load,
) -> anyhow::Result<RawFigures> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let mut caller = Caller::connect(&url).await?;
                caller.measure(target, pid, &load).await
            })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the caller thread panicked"))?
}

/// Idle worker connections: resident memory per connection.
async fn idle_connection_cost(gateway: &ChildGateway, connections: usize) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = gateway.rss_kib()?;
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (mut socket, _) = tokio_tungstenite::connect_async(gateway.worker_url()).await?;
        // Wait for `workerregistered`: the connection is fully set up.
        socket
            .next()
            .await
            .context("closed before workerregistered")??;
        held.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = gateway.rss_kib()?;
    drop(held);
    Ok((after.saturating_sub(before)) as f64 / connections as f64)
}

pub async fn run(
    load: &Load,
    threads: Option<usize>,
    connections: usize,
    json: bool,
) -> anyhow::Result<()> {
    capgate_binary()?;
    let mut results = Vec::new();
    {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let router = Helper::start(&["router", &addr], None).await?;
        let url = format!("ws://{addr}/");
        let _provider = Helper::start(&["raw-provider", &url], Some("1")).await?;
        results.push(measure_on_one_thread(url, "router", router.pid()?, *load)?);
    }
    let noaudit = tempfile::NamedTempFile::new()?;
    std::fs::write(noaudit.path(), "[audit]\nallowed_calls = false\n")?;
    let mut idle_kib = None;
    for (target, config) in [("capgate", None), ("capgate-noaudit", Some(noaudit.path()))] {
        let gateway = ChildGateway::start_configured(threads, config).await?;
        let _provider = Helper::start(&["raw-provider", &gateway.worker_url()], Some("1")).await?;
        let pid = gateway.pid()?;
        results.push(measure_on_one_thread(
            gateway.worker_url(),
            target,
            pid,
            *load,
        )?);
        if config.is_none() && connections > 0 {
            idle_kib = Some(idle_connection_cost(&gateway, connections).await?);
        }
        gateway.stop().await;
    }
    let router = results[0].clone();
    let ratio = |r: &RawFigures| {
        (
            r.calls_per_sec / router.calls_per_sec,
            r.p50_us / router.p50_us,
        )
    };
    if json {
        println!(
            "{}",
            json!({"results": results, "idle_worker_connection_kib": idle_kib})
        );
    } else {
        println!(
            "{:<16} {:>9} {:>9} {:>12} {:>10} {:>6} {:>16} {:>12} {:>14} {:>12}",
            "target",
            "p50 µs",
            "p99 µs",
            "concurrency",
            "calls/s",
            "lost",
            "calls/s ÷ router",
            "p50 ÷ router",
            "large p50 µs",
            "÷ router"
        );
        for r in &results {
            let (throughput, p50) = ratio(r);
            println!(
                "{:<16} {:>9.1} {:>9.1} {:>12} {:>10.0} {:>6} {:>16.2} {:>12.2} {:>14.1} {:>12.2}",
                r.target,
                r.p50_us,
                r.p99_us,
                r.concurrency,
                r.calls_per_sec,
                r.lost,
                throughput,
                p50,
                r.large_p50_us,
                r.large_p50_us / router.large_p50_us
            );
        }
        println!(
            "large payload: {} bytes of JSON each way",
            router.large_payload_bytes
        );
        println!(
            "CPU per call at concurrency {}: {}",
            load.concurrency,
            results
                .iter()
                .map(|r| format!("{} {:.2} µs", r.target, r.cpu_us_per_call))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if results.len() == 3 {
            println!(
                "audit on ÷ off: {:.3} of the calls/s; the gateway's CPU per call {:+.1} % with the audit",
                results[1].calls_per_sec / results[2].calls_per_sec,
                (results[1].cpu_us_per_call / results[2].cpu_us_per_call - 1.0) * 100.0
            );
        }
        if let Some(kib) = idle_kib {
            println!("idle worker connection: {kib:.1} KiB resident each ({connections} open)");
        }
    }
    Ok(())
}

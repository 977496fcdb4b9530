//! The hot path with nothing in the way: a lean raw-protocol caller (one
//! thread, one WebSocket, calls pipelined) and a lean raw provider (its
//! own process, one thread, echoes every call) measured through
//!
//! - `router`: a do-nothing frame router ([`serve_router`], this binary's
//!   hidden `router` command) — what forwarding frames costs at all;
//! - `router-rewriting`: the same router making only the changes the
//!   worker protocol requires of any gateway ([`Forwarding::Rewritten`]) —
//!   what the protocol costs before a gateway does any work of its own;
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
use capgate_protocol::{Frame, InvokeFunction};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

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
    /// By the invocation id the provider was sent (the caller's own, in
    /// the do-nothing mode): who waits for the answer.
    callers: HashMap<String, Outbox>,
    /// The rewriting mode's calls, by the id the router gave them, as
    /// capgate keeps its pending calls: who waits, under which id of its own.
    rewritten: HashMap<Uuid, (Outbox, String), foldhash::fast::RandomState>,
}

/// What a router does to the frames of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Forwards them unchanged: what moving frames costs at all.
    Unchanged,
    /// Makes the changes the worker protocol requires of any gateway, as
    /// leanly as it can and nothing else: the provider is sent an id of the
    /// gateway's own (a fresh v4 UUID, since callers' ids may collide) and
    /// the caller's worker id as `_caller_worker_id` in `data`, and the
    /// answer goes back under the caller's id. What the protocol costs
    /// before any of a gateway's own work (policy, schemas, deadlines,
    /// audit, metrics).
    Rewritten,
}

/// The do-nothing router: remembers who registered which function and who
/// is waiting for which invocation, and forwards frames — unchanged, or
/// with only the changes the protocol requires ([`Forwarding`]).
pub async fn serve_router(addr: String, forwarding: Forwarding) -> anyhow::Result<()> {
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
            let worker_id = Uuid::new_v4().to_string();
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
                // Each frame is read before the routes' lock is taken and
                // written after it is released: the lock covers the
                // table's lookups alone, as it would in a lean gateway.
                let forward = match forwarding {
                    Forwarding::Unchanged => forward_unchanged(text.as_str(), &outbox, &routes),
                    Forwarding::Rewritten => {
                        forward_rewritten(text.as_str(), &worker_id, &outbox, &routes)
                    }
                };
                if let Some((target, text)) = forward {
                    let _ = target.send(text);
                }
            }
        });
    }
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a frame goes, unchanged: only its `type` and ids are read.
fn forward_unchanged(
    text: &str,
    from: &Outbox,
    routes: &Mutex<Routes>,
) -> Option<(Outbox, String)> {
    let head = serde_json::from_str::<Head>(text).ok()?;
    let target = match head.kind {
        "registerfunction" => {
            lock(routes)
                .providers
                .insert(head.id?.to_owned(), from.clone());
            return None;
        }
        "invokefunction" => {
            let mut routes = lock(routes);
            if let Some(id) = head.invocation_id {
                routes.callers.insert(id.to_owned(), from.clone());
            }
            routes.providers.get(head.function_id?)?.clone()
        }
        "invocationresult" => lock(routes).callers.remove(head.invocation_id?)?,
        "ping" => return Some((from.clone(), r#"{"type":"pong"}"#.to_owned())),
        _ => return None,
    };
    Some((target, text.to_owned()))
}

/// Where a frame goes, and what it says there, with the protocol's changes:
/// each frame read once, by capgate's own reader.
fn forward_rewritten(
    text: &str,
    worker_id: &str,
    from: &Outbox,
    routes: &Mutex<Routes>,
) -> Option<(Outbox, String)> {
    match Frame::parse(text).ok()? {
        Frame::RegisterFunction(function) => {
            lock(routes).providers.insert(function.id, from.clone());
            None
        }
        Frame::InvokeFunction(call) => rewrite_call(call, worker_id, from, routes),
        Frame::InvocationResult(mut result) => {
            let id = Uuid::parse_str(&result.invocation_id).ok()?;
            let (target, caller_id) = lock(routes).rewritten.remove(&id)?;
            result.invocation_id = caller_id;
            Some((target, Frame::InvocationResult(result).to_json()))
        }
        Frame::Ping => Some((from.clone(), Frame::Pong.to_json())),
        _ => None,
    }
}

/// The call as the provider is sent it: a fresh id, the caller's worker id
/// in `data`; the caller remembered under the fresh id. Written with
/// capgate's own frame code, so that the two differ by the path alone.
fn rewrite_call(
    mut call: InvokeFunction,
    worker_id: &str,
    caller: &Outbox,
    routes: &Mutex<Routes>,
) -> Option<(Outbox, String)> {
    let id = Uuid::new_v4();
    let text = id
        .hyphenated()
        .encode_lower(&mut Uuid::encode_buffer())
        .to_owned();
    let caller_id = call.invocation_id.replace(text);
    let target = {
        let mut routes = lock(routes);
        let target = routes.providers.get(&call.function_id)?.clone();
        // A call without an id is fire-and-forget: nobody waits for its answer.
        if let Some(caller_id) = caller_id {
            routes.rewritten.insert(id, (caller.clone(), caller_id));
        }
        target
    };
    call.data = std::mem::take(&mut call.data)
        .with_string_field("_caller_worker_id", worker_id)
        .ok()?;
    Some((target, Frame::InvokeFunction(call).to_json()))
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

    /// Calls that let connections, caches and allocators settle.
    async fn warm_up(&mut self) -> anyhow::Result<()> {
        for _ in 0..1_000 {
            let frame = self.frame();
            self.socket.send(frame).await?;
            self.answer().await?;
        }
        Ok(())
    }

    /// One round on this target: sequential p50 and p99 over `load.calls`,
    /// then `load.concurrency` calls kept outstanding for `load.seconds`.
    async fn round(&mut self, pid: u32, load: &Load) -> anyhow::Result<Round> {
        let mut latencies = Vec::with_capacity(load.calls);
        for _ in 0..load.calls {
            let started = Instant::now();
            let frame = self.frame();
            self.socket.send(frame).await?;
            self.answer().await?;
            latencies.push(started.elapsed());
        }
        latencies.sort();
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
        // Drained before the next target's turn, so that its round does
        // not share the host with this one's tail.
        while outstanding > 0 {
            if self.answer().await.is_err() {
                break;
            }
            answered += 1;
            outstanding -= 1;
        }
        Ok(Round {
            p50_us: percentile(&latencies, 0.50) * 1e6,
            p99_us: percentile(&latencies, 0.99) * 1e6,
            calls_per_sec: counted as f64 / elapsed.as_secs_f64(),
            cpu_us_per_call: cpu / counted.max(1) as f64 * 1e6,
            lost: sent - answered,
        })
    }

    /// Sequential p50 with the large payload, after a tenth as many
    /// warm-up calls.
    async fn large_p50(&mut self, large: &str) -> anyhow::Result<f64> {
        self.sequential_p50(large, LARGE_CALLS / 10).await?;
        self.sequential_p50(large, LARGE_CALLS).await
    }
}

/// One target's figures in one round.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Round {
    pub p50_us: f64,
    pub p99_us: f64,
    pub calls_per_sec: f64,
    pub cpu_us_per_call: f64,
    pub lost: u64,
}

/// Makes `calls` calls with `concurrency` of them outstanding and prints
/// how long they took. A fixed amount of work rather than a fixed time:
/// with the target under `valgrind --tool=callgrind`, its instructions per
/// call are a figure the shared host's noise does not move.
pub async fn load(url: String, calls: u64, concurrency: u64) -> anyhow::Result<()> {
    let mut caller = Caller::connect(&url).await?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < calls.min(concurrency) {
        let frame = caller.frame();
        caller.socket.feed(frame).await?;
        sent += 1;
    }
    caller.socket.flush().await?;
    for _ in 0..calls {
        caller.answer().await?;
        if sent < calls {
            let frame = caller.frame();
            caller.socket.send(frame).await?;
            sent += 1;
        }
    }
    println!("{calls} calls in {:.3} s", started.elapsed().as_secs_f64());
    Ok(())
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

/// A target measured by the caller: a router or gateway process with its
/// provider connected.
struct Target {
    name: &'static str,
    url: String,
    pid: u32,
}

/// Every target's rounds, and its sequential p50 with the large payload.
struct Measured {
    rounds: Vec<Vec<Round>>,
    large_p50_us: Vec<f64>,
}

/// Measures every target on one thread with its own one-thread runtime, as
/// a lean client would: a connection to each, all open for the whole run.
/// In each round every target takes its turn, the order rotating from round
/// to round, so that the host's drift over seconds — larger than the
/// differences measured on a shared machine — falls on every target alike
/// and each round's ratios compare targets measured moments apart.
fn measure_on_one_thread(
    targets: Vec<Target>,
    load: Load,
    rounds: usize,
) -> anyhow::Result<Measured> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let mut callers = Vec::with_capacity(targets.len());
                for target in &targets {
                    let mut caller = Caller::connect(&target.url).await?;
                    caller.warm_up().await?;
                    callers.push(caller);
                }
                let mut measured = Measured {
                    rounds: vec![Vec::with_capacity(rounds); targets.len()],
                    large_p50_us: Vec::with_capacity(targets.len()),
                };
                for round in 0..rounds {
                    for turn in 0..targets.len() {
                        let index = (round + turn) % targets.len();
                        let figures = callers[index]
                            .round(targets[index].pid, &load)
                            .await
                            .with_context(|| {
                                format!("round {} on {}", round + 1, targets[index].name)
                            })?;
                        measured.rounds[index].push(figures);
                        keep_alive(&mut callers).await?;
                    }
                }
                let large = large_payload();
                for index in 0..callers.len() {
                    let p50 = callers[index].large_p50(&large).await?;
                    measured.large_p50_us.push(p50);
                    keep_alive(&mut callers).await?;
                }
                Ok(measured)
            })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the caller thread panicked"))?
}

/// One call on every connection: a connection waiting for its turn is not
/// read, so the gateway's WebSocket pings go unanswered, and one silent
/// for two ping intervals is declared dead. A call reads what arrived
/// meanwhile, the pings among it answered.
async fn keep_alive(callers: &mut [Caller]) -> anyhow::Result<()> {
    for caller in callers {
        let frame = caller.frame();
        caller.socket.send(frame).await?;
        caller.answer().await?;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The median over rounds of `figure(a) ÷ figure(b)`, each round's two
/// figures measured moments apart; and every round's ratio.
fn ratio_in_rounds(a: &[Round], b: &[Round], figure: fn(&Round) -> f64) -> (f64, Vec<f64>) {
    let each: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| figure(a) / figure(b))
        .collect();
    (median(each.clone()), each)
}

/// How far the host's speed moved during a run: the interquartile range
/// of the do-nothing router's calls/s over the rounds, as a share of their
/// median. The router does the same work in every round, so what moves it
/// is the machine, and the same drift lands on the other targets' rounds.
fn host_drift(router: &[Round]) -> f64 {
    let mut speeds: Vec<f64> = router.iter().map(|r| r.calls_per_sec).collect();
    speeds.sort_by(f64::total_cmp);
    let quartile = |q: usize| speeds.get(speeds.len() * q / 4).copied().unwrap_or(0.0);
    let middle = quartile(2);
    if middle > 0.0 {
        (quartile(3) - quartile(1)) / middle
    } else {
        0.0
    }
}

/// Past this drift a run's medians are the host's, not the targets': the
/// ratios the issue sets are read to a few per cent, and a machine whose
/// speed moves by a fifth between rounds moves them by more than that.
const NOISY_DRIFT: f64 = 0.2;

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
    rounds: usize,
    threads: Option<usize>,
    connections: usize,
    json: bool,
) -> anyhow::Result<()> {
    capgate_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let router = Helper::start(&["router", &addr], None).await?;
    let router_url = format!("ws://{addr}/");
    let _router_provider = Helper::start(&["raw-provider", &router_url], Some("1")).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let rewriting_addr = format!("127.0.0.1:{port}");
    let rewriting = Helper::start(&["router", &rewriting_addr, "--rewrite"], None).await?;
    let rewriting_url = format!("ws://{rewriting_addr}/");
    let _rewriting_provider = Helper::start(&["raw-provider", &rewriting_url], Some("1")).await?;
    let noaudit_config = tempfile::NamedTempFile::new()?;
    std::fs::write(noaudit_config.path(), "[audit]\nallowed_calls = false\n")?;
    let capgate = ChildGateway::start_configured(threads, None).await?;
    let _capgate_provider =
        Helper::start(&["raw-provider", &capgate.worker_url()], Some("1")).await?;
    let noaudit = ChildGateway::start_configured(threads, Some(noaudit_config.path())).await?;
    let _noaudit_provider =
        Helper::start(&["raw-provider", &noaudit.worker_url()], Some("1")).await?;
    let targets = vec![
        Target {
            name: "router",
            url: router_url,
            pid: router.pid()?,
        },
        Target {
            name: "router-rewriting",
            url: rewriting_url,
            pid: rewriting.pid()?,
        },
        Target {
            name: "capgate",
            url: capgate.worker_url(),
            pid: capgate.pid()?,
        },
        Target {
            name: "capgate-noaudit",
            url: noaudit.worker_url(),
            pid: noaudit.pid()?,
        },
    ];
    let names: Vec<&'static str> = targets.iter().map(|t| t.name).collect();
    let measured = measure_on_one_thread(targets, *load, rounds)?;
    noaudit.stop().await;
    let idle_kib = if connections > 0 {
        Some(idle_connection_cost(&capgate, connections).await?)
    } else {
        None
    };
    capgate.stop().await;
    let large_payload_bytes = large_payload().len();
    let results: Vec<RawFigures> = names
        .iter()
        .zip(&measured.rounds)
        .zip(&measured.large_p50_us)
        .map(|((&target, runs), &large_p50_us)| {
            let of = |figure: fn(&Round) -> f64| median(runs.iter().map(figure).collect());
            RawFigures {
                target,
                p50_us: of(|r| r.p50_us),
                p99_us: of(|r| r.p99_us),
                large_p50_us,
                large_payload_bytes,
                concurrency: load.concurrency,
                calls_per_sec: of(|r| r.calls_per_sec),
                cpu_us_per_call: of(|r| r.cpu_us_per_call),
                lost: runs.iter().map(|r| r.lost).sum(),
            }
        })
        .collect();
    let [
        router_rounds,
        rewriting_rounds,
        capgate_rounds,
        noaudit_rounds,
    ] = &measured.rounds[..]
    else {
        bail!("four targets measured");
    };
    let throughput = |a: &[Round], b: &[Round]| ratio_in_rounds(a, b, |r| r.calls_per_sec);
    let latency = |a: &[Round], b: &[Round]| ratio_in_rounds(a, b, |r| r.p50_us);
    let cpu = |a: &[Round], b: &[Round]| ratio_in_rounds(a, b, |r| r.cpu_us_per_call);
    let ratios = [
        (
            "capgate calls/s ÷ router",
            throughput(capgate_rounds, router_rounds),
        ),
        (
            "capgate-noaudit calls/s ÷ router",
            throughput(noaudit_rounds, router_rounds),
        ),
        (
            "router-rewriting calls/s ÷ router",
            throughput(rewriting_rounds, router_rounds),
        ),
        (
            "capgate calls/s ÷ router-rewriting",
            throughput(capgate_rounds, rewriting_rounds),
        ),
        (
            "capgate sequential p50 ÷ router",
            latency(capgate_rounds, router_rounds),
        ),
        (
            "capgate-noaudit sequential p50 ÷ router",
            latency(noaudit_rounds, router_rounds),
        ),
        (
            "audit on ÷ off, calls/s",
            throughput(capgate_rounds, noaudit_rounds),
        ),
        (
            "audit on ÷ off, the gateway's CPU per call",
            cpu(capgate_rounds, noaudit_rounds),
        ),
    ];
    let drift = host_drift(router_rounds);
    if json {
        let ratios: serde_json::Map<String, serde_json::Value> = ratios
            .iter()
            .map(|(name, (median, each))| {
                (
                    (*name).to_owned(),
                    json!({"median": median, "rounds": each}),
                )
            })
            .collect();
        let rounds: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .zip(&measured.rounds)
            .map(|(name, runs)| ((*name).to_owned(), json!(runs)))
            .collect();
        println!(
            "{}",
            json!({"results": results, "ratios": ratios, "rounds": rounds, "host_drift": drift, "noisy": drift > NOISY_DRIFT, "idle_worker_connection_kib": idle_kib})
        );
        return Ok(());
    }
    println!(
        "{:<16} {:>6} {:>9} {:>9} {:>10} {:>11} {:>6}",
        "target", "round", "p50 µs", "p99 µs", "calls/s", "CPU µs/call", "lost"
    );
    for (name, runs) in names.iter().zip(&measured.rounds) {
        for (round, r) in runs.iter().enumerate() {
            println!(
                "{:<16} {:>6} {:>9.1} {:>9.1} {:>10.0} {:>11.2} {:>6}",
                name,
                round + 1,
                r.p50_us,
                r.p99_us,
                r.calls_per_sec,
                r.cpu_us_per_call,
                r.lost
            );
        }
    }
    println!();
    println!(
        "medians of {rounds} rounds, concurrency {}; large payload: {large_payload_bytes} bytes of JSON each way",
        load.concurrency
    );
    println!(
        "{:<16} {:>9} {:>9} {:>10} {:>11} {:>6} {:>14}",
        "target", "p50 µs", "p99 µs", "calls/s", "CPU µs/call", "lost", "large p50 µs"
    );
    for r in &results {
        println!(
            "{:<16} {:>9.1} {:>9.1} {:>10.0} {:>11.2} {:>6} {:>14.1}",
            r.target,
            r.p50_us,
            r.p99_us,
            r.calls_per_sec,
            r.cpu_us_per_call,
            r.lost,
            r.large_p50_us
        );
    }
    println!();
    println!("ratios, each round's figures measured moments apart (median; every round):");
    for (name, (median, each)) in &ratios {
        let each: Vec<String> = each.iter().map(|v| format!("{v:.3}")).collect();
        println!("  {name:<44} {median:.3}  ({})", each.join(" "));
    }
    println!(
        "host drift: the router's calls/s moved {:.0} % (interquartile range ÷ median) over the rounds",
        drift * 100.0
    );
    if drift > NOISY_DRIFT {
        println!(
            "  more than {:.0} %: the host's speed moved more than the targets differ; read these medians as noise and run again in a quieter hour",
            NOISY_DRIFT * 100.0
        );
    }
    if let Some(kib) = idle_kib {
        println!("idle worker connection: {kib:.1} KiB resident each ({connections} open)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capgate_protocol::InvocationResult;

    fn call(text: &str) -> InvokeFunction {
        match Frame::parse(text) {
            Ok(Frame::InvokeFunction(call)) => call,
            other => panic!("not a call: {other:?}"),
        }
    }

    fn routes_with_provider() -> (Mutex<Routes>, Outbox, mpsc::UnboundedReceiver<String>) {
        let (provider, provider_inbox) = mpsc::unbounded_channel();
        let mut routes = Routes::default();
        routes
            .providers
            .insert("bench::echo".to_owned(), provider.clone());
        (Mutex::new(routes), provider, provider_inbox)
    }

    /// A run's drift is the router's spread of speed, whatever the
    /// rounds' order; only a swinging host passes the noise line.
    #[test]
    fn the_host_drift_is_the_routers_spread_over_its_median() {
        let rounds = |speeds: &[f64]| -> Vec<Round> {
            speeds
                .iter()
                .map(|&calls_per_sec| Round {
                    p50_us: 100.0,
                    p99_us: 200.0,
                    calls_per_sec,
                    cpu_us_per_call: 5.0,
                    lost: 0,
                })
                .collect()
        };
        // Quartiles 100 and 101 over a median of 100, in any order.
        let steady = host_drift(&rounds(&[
            100.0, 102.0, 99.0, 100.0, 101.0, 98.0, 100.0, 101.0, 100.0,
        ]));
        assert!((steady - 0.01).abs() < 1e-9, "{steady}");
        assert!(steady < NOISY_DRIFT);
        // Quartiles 70 and 105 over a median of 90.
        let noisy = host_drift(&rounds(&[
            61.0, 115.0, 90.0, 70.0, 110.0, 100.0, 65.0, 105.0, 80.0,
        ]));
        assert!((noisy - 35.0 / 90.0).abs() < 1e-9, "{noisy}");
        assert!(noisy > NOISY_DRIFT);
        assert_eq!(host_drift(&[]), 0.0, "no rounds, no drift");
    }

    /// The rewriting router makes the protocol's changes and only those: the
    /// provider sees a fresh v4 id and the caller's worker id, the caller
    /// gets the answer under its own id, with the result as the provider
    /// wrote it.
    #[test]
    fn the_rewriting_router_makes_the_protocols_changes_both_ways() {
        let (routes, _provider, _inbox) = routes_with_provider();
        let (caller, _caller_inbox) = mpsc::unbounded_channel();
        let call = r#"{"type":"invokefunction","invocation_id":"c-7","function_id":"bench::echo","data":{"n":7}}"#;
        let (_, sent) = forward_rewritten(call, "w-1", &caller, &routes).expect("routed");
        let Ok(Frame::InvokeFunction(sent)) = Frame::parse(&sent) else {
            panic!("not a call: {sent}");
        };
        let id = sent.invocation_id.expect("an id");
        assert_eq!(
            Uuid::parse_str(&id).map(|id| id.get_version_num()),
            Ok(4),
            "{id}"
        );
        assert_eq!(
            sent.data.into_value().unwrap(),
            json!({"n": 7, "_caller_worker_id": "w-1"})
        );
        let answer = Frame::InvocationResult(InvocationResult::new(
            id,
            "bench::echo",
            Ok(json!({"n": 7}).into()),
        ))
        .to_json();
        let (_, back) =
            forward_rewritten(&answer, "w-2", &caller, &routes).expect("the caller is remembered");
        assert!(
            lock(&routes).rewritten.is_empty(),
            "an answer is routed once"
        );
        let Ok(Frame::InvocationResult(back)) = Frame::parse(&back) else {
            panic!("not a result: {back}");
        };
        assert_eq!(back.invocation_id, "c-7");
        assert_eq!(
            back.result.map(|r| r.into_value().unwrap()),
            Some(json!({"n": 7}))
        );
    }

    /// A call to nothing registered is not forwarded; one without an id is,
    /// and nobody is remembered as waiting for it.
    #[test]
    fn the_rewriting_router_forwards_only_what_it_can_route() {
        let (routes, _provider, _inbox) = routes_with_provider();
        let (caller, _caller_inbox) = mpsc::unbounded_channel();
        let unknown = r#"{"type":"invokefunction","invocation_id":"c-1","function_id":"bench::other","data":{}}"#;
        assert!(rewrite_call(call(unknown), "w-1", &caller, &routes).is_none());
        let fire_and_forget = r#"{"type":"invokefunction","function_id":"bench::echo","data":{}}"#;
        assert!(rewrite_call(call(fire_and_forget), "w-1", &caller, &routes).is_some());
        assert!(lock(&routes).rewritten.is_empty());
    }

    /// The do-nothing router forwards both frames of a call byte for byte,
    /// each to the one waiting for it, and answers a ping itself.
    #[test]
    fn the_do_nothing_router_forwards_frames_unchanged() {
        let (routes, _provider, _inbox) = routes_with_provider();
        let (caller, _caller_inbox) = mpsc::unbounded_channel();
        let call = r#"{"type":"invokefunction","invocation_id":"c-1","function_id":"bench::echo","data":{"n":1}}"#;
        let (target, sent) = forward_unchanged(call, &caller, &routes).expect("routed");
        assert_eq!(sent, call);
        assert!(target.same_channel(&lock(&routes).providers["bench::echo"]));
        let answer = r#"{"type":"invocationresult","invocation_id":"c-1","result":{"n":1}}"#;
        let (target, back) = forward_unchanged(answer, &caller, &routes).expect("routed back");
        assert_eq!(back, answer);
        assert!(target.same_channel(&caller));
        assert!(
            forward_unchanged(answer, &caller, &routes).is_none(),
            "answered once"
        );
        let (target, pong) =
            forward_unchanged(r#"{"type":"ping"}"#, &caller, &routes).expect("pong");
        assert_eq!(
            (pong.as_str(), target.same_channel(&caller)),
            (r#"{"type":"pong"}"#, true)
        );
    }
}

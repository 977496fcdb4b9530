//! `capgate-bench --scenario soak`: no lost calls, flat memory.
//!
//! Against a `capgate serve` child and the benchmark's provider worker
//! (separate processes, `hello::greet`), two runs:
//!
//! - `--calls N` sequential calls (default 1,000,000), each greeting its
//!   own sequence number; a call is lost if it fails or its answer is not
//!   the greeting of that number;
//! - `--rate R` calls a second for `--minutes M` (when `--minutes` is
//!   given), started on a fixed schedule whatever the answers do, with the
//!   gateway's resident memory sampled every 10 s.
//!
//! This is a command, not a test: it runs for minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use capgate_sdk::Worker;
use serde_json::json;

use crate::catalog::register_all;
use crate::harness::{ChildGateway, ProviderProcess, percentile, wait_until_callable};
use capgate_gateway::test_util::CuttableProxy;

/// What the soak was asked to do.
pub struct SoakArgs {
    pub calls: usize,
    pub rate: u64,
    pub minutes: Option<u64>,
    pub threads: Option<usize>,
    /// Configuration of the gateway under test.
    pub config: Option<std::path::PathBuf>,
    pub json: bool,
}

const SAMPLE_EVERY: Duration = Duration::from_secs(10);

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let gateway = ChildGateway::start_configured(args.threads, args.config.as_deref()).await?;
    let mut provider = ProviderProcess::start(&gateway.worker_url()).await?;
    let caller = Worker::builder(gateway.worker_url())
        .name("bench-soak")
        .connect()
        .await?;
    wait_until_callable(&caller).await?;

    let started = Instant::now();
    let mut lost = Vec::new();
    for n in 0..args.calls {
        match caller
            .call("hello::greet", json!({"name": n.to_string()}))
            .await
        {
            Ok(answer) if answer["message"] == format!("hello {n}") => {}
            Ok(answer) => lost.push(format!("call {n}: wrong answer {answer}")),
            Err(error) => lost.push(format!("call {n}: {error}")),
        }
    }
    let sequential_secs = started.elapsed().as_secs_f64();
    let rss_after_sequential = gateway.rss_kib()?;

    let steady = match args.minutes {
        Some(minutes) => Some(fixed_rate(&gateway, &caller, args.rate, minutes).await?),
        None => None,
    };

    let figures = json!({
        "sequential_calls": args.calls,
        "lost": lost.len(),
        "first_lost": lost.iter().take(10).collect::<Vec<_>>(),
        "sequential_seconds": sequential_secs,
        "rss_after_sequential_kib": rss_after_sequential,
        "steady": steady.as_ref().map(|s| json!({
            "rate_per_sec": args.rate,
            "minutes": args.minutes,
            "started": s.started,
            "answered": s.answered,
            "failed": s.failed,
            "rss_kib": s.rss_kib,
            "first_failures": s.reasons,
            "rss_spread_after_first_minute": s.spread_after_warmup(),
        })),
    });
    if args.json {
        println!("{figures}");
    } else {
        println!(
            "{} sequential calls in {:.1} s: {} lost",
            args.calls,
            sequential_secs,
            lost.len()
        );
        for line in lost.iter().take(10) {
            println!("  {line}");
        }
        if let Some(steady) = &steady {
            println!(
                "{} calls/s for {} min: {} started, {} answered, {} failed",
                args.rate,
                args.minutes.unwrap_or(0),
                steady.started,
                steady.answered,
                steady.failed
            );
            for reason in &steady.reasons {
                println!("  {reason}");
            }
            let samples: Vec<String> = steady
                .rss_kib
                .iter()
                .map(|kib| format!("{:.1}", *kib as f64 / 1024.0))
                .collect();
            println!("  gateway RSS every 10 s (MiB): {}", samples.join(" "));
            if let Some(spread) = steady.spread_after_warmup() {
                println!(
                    "  spread after the first minute: ±{:.1}% around the mean",
                    spread * 100.0
                );
            }
        }
    }
    caller.shutdown();
    provider.stop().await;
    gateway.stop().await;
    if !lost.is_empty() {
        bail!("{} calls lost", lost.len());
    }
    Ok(())
}

struct Steady {
    started: u64,
    answered: u64,
    failed: u64,
    rss_kib: Vec<u64>,
    /// The first few failures, as the caller saw them.
    reasons: Vec<String>,
}

impl Steady {
    /// Largest distance from the mean, as a fraction of it, over the
    /// samples after the first minute (allocators and caches warm up).
    fn spread_after_warmup(&self) -> Option<f64> {
        let skip = (60 / SAMPLE_EVERY.as_secs()) as usize;
        let samples = self.rss_kib.get(skip..).filter(|s| !s.is_empty())?;
        let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
        samples
            .iter()
            .map(|s| (*s as f64 - mean).abs() / mean)
            .reduce(f64::max)
    }
}

/// Starts calls on a fixed schedule for `minutes`; samples RSS.
async fn fixed_rate(
    gateway: &ChildGateway,
    caller: &Worker,
    rate: u64,
    minutes: u64,
) -> anyhow::Result<Steady> {
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let reasons: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut started = 0u64;
    let mut rss = vec![gateway.rss_kib()?];
    // Calls go out in small batches every millisecond tick that is due.
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let begin = Instant::now();
    let end = Duration::from_secs(minutes * 60);
    let mut next_sample = SAMPLE_EVERY;
    while begin.elapsed() < end {
        ticker.tick().await;
        let due = (begin.elapsed().as_secs_f64() * rate as f64) as u64;
        while started < due {
            started += 1;
            let (caller, answered, failed) = (caller.clone(), answered.clone(), failed.clone());
            let reasons = reasons.clone();
            let n = started;
            tokio::spawn(async move {
                match caller
                    .call("hello::greet", json!({"name": n.to_string()}))
                    .await
                {
                    Ok(answer) if answer["message"] == format!("hello {n}") => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut reasons = reasons
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if reasons.len() < 10 {
                            reasons.push(match outcome {
                                Ok(answer) => format!("call {n}: wrong answer {answer}"),
                                Err(error) => format!("call {n}: {error}"),
                            });
                        }
                    }
                }
            });
        }
        if begin.elapsed() >= next_sample {
            rss.push(gateway.rss_kib()?);
            next_sample += SAMPLE_EVERY;
        }
    }
    // Let the last calls answer.
    let settle = Instant::now();
    while answered.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < started
        && settle.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reasons = reasons
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Steady {
        started,
        answered: answered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        rss_kib: rss,
        reasons,
    })
}

const RECONNECTS: usize = 10;

/// `--scenario reconnect`: a worker with `functions` functions; the gateway
/// is killed and restarted ten times; each time, the time from the
/// worker's new connection (its new worker id) to the answer of a call
/// sent right after — which, frames being handled in order, comes after
/// the replay of every registration.
pub async fn reconnect(
    functions: usize,
    threads: Option<usize>,
    json_output: bool,
) -> anyhow::Result<()> {
    let mut gateway = ChildGateway::start(threads).await?;
    let (worker, ids) =
        worker_with_functions(&gateway.worker_url(), "bench-reconnect", functions).await?;
    let last = ids.last().cloned().unwrap_or_default();
    let mut latencies = Vec::with_capacity(RECONNECTS);
    for _ in 0..RECONNECTS {
        let before = worker.worker_id();
        gateway.restart().await?;
        let connected = new_connection(&worker, before).await;
        let answer = worker
            .call("engine::functions::info", json!({"function_id": last}))
            .await?;
        let took = connected.elapsed();
        anyhow::ensure!(answer["version"] == "1.0.0", "unexpected answer: {answer}");
        worker.call(&ids[0], json!({"name": "again"})).await?;
        latencies.push(took);
    }
    latencies.sort();
    let p50 = percentile(&latencies, 0.5) * 1e3;
    let max = latencies.last().map_or(0.0, Duration::as_secs_f64) * 1e3;
    if json_output {
        println!(
            "{}",
            json!({"functions": functions, "reconnects": RECONNECTS, "callable_after_p50_ms": p50, "callable_after_max_ms": max})
        );
    } else {
        println!(
            "a worker with {functions} functions, gateway killed and restarted {RECONNECTS} times"
        );
        println!("  all callable after the new connection: {p50:.1} ms p50, {max:.1} ms max");
    }
    worker.shutdown();
    gateway.stop().await;
    Ok(())
}

/// `--scenario reattach`: a worker with `functions` functions reaches the
/// gateway through a TCP proxy whose connections are cut ten times, while
/// another worker calls one of its functions without pause. Each time, the
/// time from the worker's new connection to the answer of a call to its
/// last function sent right after it (frames are handled in order, so the
/// reattach came first). From the caller's side: calls that failed because
/// they were on the wire when the socket died (`invocation_stopped`; an
/// idempotent function would have had them sent again), any other failure
/// (a window in which the functions were not callable — there should be
/// none), and the slowest call.
pub async fn reattach(
    functions: usize,
    threads: Option<usize>,
    json_output: bool,
) -> anyhow::Result<()> {
    let gateway = ChildGateway::start(threads).await?;
    let proxy = CuttableProxy::start(gateway.socket_addr()?).await?;
    let url = proxy.url_for(&gateway.worker_url());
    let (worker, ids) = worker_with_functions(&url, "bench-reattach", functions).await?;
    let caller = Worker::connect(gateway.worker_url()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let calling = tokio::spawn(call_until(caller, ids[0].clone(), stop.clone()));
    let last = ids.last().cloned().unwrap_or_default();
    let mut latencies = Vec::with_capacity(RECONNECTS);
    for _ in 0..RECONNECTS {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = worker.worker_id();
        proxy.cut();
        let connected = new_connection(&worker, before).await;
        worker.call(&last, json!({"name": "back"})).await?;
        latencies.push(connected.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let caller = calling.await?;
    latencies.sort();
    let p50 = percentile(&latencies, 0.5) * 1e3;
    let max = latencies.last().map_or(0.0, Duration::as_secs_f64) * 1e3;
    let slowest = caller.slowest.as_secs_f64() * 1e3;
    if json_output {
        println!(
            "{}",
            json!({"functions": functions, "cuts": RECONNECTS, "callable_after_p50_ms": p50,
                "callable_after_max_ms": max, "caller_calls": caller.answered,
                "caller_in_flight_at_cut": caller.stopped, "caller_other_failures": caller.failed,
                "caller_slowest_ms": slowest})
        );
    } else {
        println!(
            "a worker with {functions} functions behind a proxy, its connection cut {RECONNECTS} times"
        );
        println!(
            "  its functions callable after its new connection: {p50:.2} ms p50, {max:.2} ms max"
        );
        println!(
            "  caller: {} calls answered, {} failed on the wire at a cut, {} other failures; slowest call {slowest:.1} ms",
            caller.answered, caller.stopped, caller.failed
        );
    }
    worker.shutdown();
    gateway.stop().await;
    anyhow::ensure!(
        caller.failed == 0,
        "{} calls failed outside a cut: {:?}",
        caller.failed,
        caller.first_failure
    );
    Ok(())
}

/// A worker that reconnects within milliseconds, with `functions`
/// functions registered (`bench::fn_NNNNN`).
async fn worker_with_functions(
    url: &str,
    name: &str,
    functions: usize,
) -> anyhow::Result<(Worker, Vec<String>)> {
    let worker = Worker::builder(url)
        .name(name)
        .backoff(capgate_sdk::Backoff::try_new(
            Duration::from_millis(5),
            Duration::from_millis(50),
            0.0,
        )?)
        .connect()
        .await?;
    let ids: Vec<String> = (0..functions)
        .map(|n| format!("bench::fn_{n:05}"))
        .collect();
    register_all(&worker, &ids).await?;
    Ok((worker, ids))
}

/// When `worker` has a connection other than `before`.
async fn new_connection(worker: &Worker, before: Option<String>) -> Instant {
    loop {
        if worker
            .worker_id()
            .is_some_and(|id| Some(&id) != before.as_ref())
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// What a caller calling without pause saw.
#[derive(Default)]
struct Calling {
    answered: u64,
    /// Failed with `invocation_stopped`: on the wire when a socket died.
    stopped: u64,
    failed: u64,
    first_failure: Option<String>,
    slowest: Duration,
}

async fn call_until(caller: Worker, function: String, stop: Arc<AtomicBool>) -> Calling {
    let mut seen = Calling::default();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match caller.call(&function, json!({"name": "caller"})).await {
            Ok(_) => seen.answered += 1,
            Err(error) if error.code() == Some(capgate_protocol::codes::INVOCATION_STOPPED) => {
                seen.stopped += 1
            }
            Err(error) => {
                seen.failed += 1;
                seen.first_failure.get_or_insert(error.to_string());
            }
        }
        seen.slowest = seen.slowest.max(started.elapsed());
    }
    seen
}

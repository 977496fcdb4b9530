//! The state store and cron through a real gateway: `state::set` +
//! `state::get` from one SDK worker at `--concurrency`, and how late cron
//! fires arrive at a worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use capgate_sdk::{Function, HandlerError, Worker};
use serde_json::{Value, json};

use crate::harness::{ChildGateway, Load, measure, percentile};

/// One set and one get of a key of the caller's own, through the path.
pub async fn state(
    load: &Load,
    threads: Option<usize>,
    config: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    let gateway = ChildGateway::start_configured(threads, config).await?;
    let worker = Arc::new(
        Worker::builder(gateway.worker_url())
            .name("bench-state")
            .connect()
            .await?,
    );
    // The floor in the same run: one cheap built-in round trip through the
    // same connection (the machine's speed drifts between runs).
    let floor = {
        let worker = worker.clone();
        measure("built-in floor", load, move || {
            let worker = worker.clone();
            async move {
                worker
                    .call("engine::workers::list", json!({}))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await?
    };
    let next = Arc::new(AtomicU64::new(0));
    let figures = measure("state set+get", load, move || {
        let (worker, next) = (worker.clone(), next.clone());
        async move {
            let n = next.fetch_add(1, Ordering::Relaxed) % 1_000;
            let key = format!("k{n}");
            let value = json!({"n": n, "note": "a small record"});
            let state = worker.state();
            state
                .set("bench", &key, value.clone())
                .await
                .map_err(|e| e.to_string())?;
            match state.get("bench", &key).await.map_err(|e| e.to_string())? {
                Some(read) if read["note"] == value["note"] => Ok(()),
                other => Err(format!("read back {other:?}")),
            }
        }
    })
    .await?;
    let ops = figures.calls_per_sec * 2.0;
    let ratio = ops / floor.calls_per_sec;
    if json {
        println!(
            "{}",
            json!({"state": figures, "floor": floor, "operations_per_sec": ops, "operations_per_floor_call": ratio})
        );
    } else {
        println!(
            "state set+get: sequential pair p50 {:.1} µs, p99 {:.1} µs; {:.0} pairs/s = {ops:.0} operations/s at concurrency {} ({} errors)",
            figures.p50_us,
            figures.p99_us,
            figures.calls_per_sec,
            figures.concurrency,
            figures.errors
        );
        println!(
            "built-in floor (engine::workers::list, same connection): p50 {:.1} µs, {:.0} calls/s; state operations ÷ floor calls: {ratio:.2}",
            floor.p50_us, floor.calls_per_sec
        );
    }
    gateway.stop().await;
    Ok(())
}

/// `--functions` jobs on `* * * * * *` for `--seconds`: how long after its
/// window each fire reaches the worker.
pub async fn cron(
    jobs: usize,
    seconds: u64,
    threads: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let gateway = ChildGateway::start(threads).await?;
    let (lateness, mut arrived) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let worker = Worker::builder(gateway.worker_url())
        .name("bench-cron")
        .connect()
        .await?;
    worker.register(
        Function::new("bench::tick").handler(move |input: Value, _ctx| {
            let lateness = lateness.clone();
            async move {
                let now = chrono::Utc::now();
                let scheduled = input["scheduled_time"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .ok_or_else(|| HandlerError::new("no scheduled_time"))?;
                let late = (now - scheduled.with_timezone(&chrono::Utc))
                    .to_std()
                    .unwrap_or_default();
                let _ = lateness.send(late);
                Ok::<_, HandlerError>(Value::Null)
            }
        }),
    );
    let distinct = EXPRESSIONS.len() * ZONES.len();
    if jobs > distinct {
        anyhow::bail!(
            "the cron scenario has {distinct} distinct jobs; use --functions {distinct} or fewer"
        );
    }
    for job in 0..jobs {
        worker.register_trigger(
            format!("tick-{job}"),
            "cron",
            "bench::tick",
            json!({
                "expression": EXPRESSIONS[job / ZONES.len()],
                "timezone": ZONES[job % ZONES.len()],
            }),
        );
    }
    worker.call("engine::workers::list", json!({})).await?;
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        match tokio::time::timeout(Duration::from_secs(2), arrived.recv()).await {
            Ok(Some(late)) => samples.push(late),
            Ok(None) => break,
            Err(_) => anyhow::bail!("no cron fire arrived for 2 s"),
        }
    }
    // The first second's fires may start mid-window: dropped.
    samples.drain(..samples.len().min(jobs));
    samples.sort();
    let ms = |p: f64| percentile(&samples, p) * 1e3;
    if json {
        println!(
            "{}",
            json!({"fires": samples.len(), "jobs": jobs, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0)})
        );
    } else {
        println!(
            "cron: {} fires of {jobs} jobs each second; lateness at the worker p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            samples.len(),
            ms(0.5),
            ms(0.99),
            ms(1.0)
        );
    }
    worker.shutdown();
    gateway.stop().await;
    Ok(())
}

/// Every second, spelt four ways: with the ten zones, forty distinct jobs
/// (a job is its owner, function, expression and zone; the same schedule
/// registered twice would fire once).
const EXPRESSIONS: &[&str] = &[
    "* * * * * *",
    "*/1 * * * * *",
    "0-59 * * * * *",
    "0-59/1 * * * * *",
];

/// Time zones of the jobs.
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Europe/London",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Africa/Cairo",
    "America/Sao_Paulo",
];

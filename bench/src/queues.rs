//! Durable queues through a real gateway: publish latency (sequential
//! `iii::durable::publish`, answered once durable), and end to end —
//! `--messages` published by `--concurrency` publishers while one
//! `durable:subscriber` (concurrency 64) works them off — as messages/s
//! from the first publish to the last acknowledgement. With `--nats-url`
//! the gateway's queues are on NATS JetStream, and the same loop written
//! directly against JetStream with async-nats runs in the same run as the
//! ceiling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use capgate_sdk::{Function, HandlerError, Worker};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{ChildGateway, percentile};

/// Subscriber concurrency the issue names.
const SUBSCRIBER_CONCURRENCY: usize = 64;

/// One run's figures.
#[derive(Debug, serde::Serialize)]
struct QueueFigures {
    backend: &'static str,
    publish_p50_us: f64,
    publish_p99_us: f64,
    messages: u64,
    publishers: usize,
    end_to_end_per_sec: f64,
    publish_only_per_sec: f64,
    ceiling_per_sec: Option<f64>,
    ceiling_publish_p50_us: Option<f64>,
}

pub async fn run(
    calls: usize,
    messages: u64,
    publishers: usize,
    threads: Option<usize>,
    nats_url: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let config = match nats_url {
        Some(url) => {
            let file = dir.path().join("capgate.toml");
            std::fs::write(
                &file,
                format!(
                    "[queues]\nbackend = \"nats\"\nurl = \"{url}\"\nnats_stream = \"CAPGATE_BENCH_{}\"\nnats_subject_prefix = \"capgate-bench-{}\"\n",
                    &id[..12],
                    &id[..12]
                ),
            )?;
            Some(file)
        }
        None => None,
    };
    let gateway = ChildGateway::start_configured(threads, config.as_deref()).await?;
    let consumed = Arc::new(AtomicU64::new(0));
    let subscriber = Worker::builder(gateway.worker_url())
        .name("bench-subscriber")
        .connect()
        .await?;
    let counter = consumed.clone();
    subscriber.register(
        Function::new("bench::consume").handler(move |_: Value, _ctx| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(Value::Null)
            }
        }),
    );
    subscriber.register_trigger(
        "bench-in",
        "durable:subscriber",
        "bench::consume",
        json!({"topic": "bench", "queue_config": {"concurrency": SUBSCRIBER_CONCURRENCY}}),
    );
    let publisher = Arc::new(
        Worker::builder(gateway.worker_url())
            .name("bench-publisher")
            .connect()
            .await?,
    );
    let publish = move |topic: &'static str, n: u64| {
        let publisher = publisher.clone();
        async move {
            publisher
                .call(
                    "iii::durable::publish",
                    json!({"topic": topic, "data": {"n": n, "note": "a small event"}}),
                )
                .await
                .map(drop)
                .map_err(|e| anyhow::anyhow!("publish failed: {e}"))
        }
    };
    // Latency: sequential publishes to a topic nobody consumes (then purged).
    for n in 0..1_000 {
        publish("bench-latency", n).await?;
    }
    let mut latencies = Vec::with_capacity(calls);
    for n in 0..calls as u64 {
        let started = Instant::now();
        publish("bench-latency", n).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let purge = reqwest::Client::new()
        .delete(format!(
            "http://{}/api/v1/queues/bench-latency?confirm=bench-latency",
            gateway.addr()
        ))
        .send()
        .await?;
    anyhow::ensure!(
        purge.status().is_success(),
        "purge failed: {}",
        purge.status()
    );

    // Publish only (no consumer on the topic): the publish path's throughput.
    let publish_only = publish_many(&publish, "bench-publish-only", messages, publishers).await?;

    // End to end: the subscriber consumes while the publishers publish.
    let started = Instant::now();
    publish_many(&publish, "bench", messages, publishers).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while consumed.load(Ordering::Relaxed) < messages {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {messages} consumed",
            consumed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let acked = wait_acknowledged(gateway.addr(), "bench").await?;
    let end_to_end = messages as f64 / (acked - started).as_secs_f64();

    drop(gateway);
    let ceiling = match nats_url {
        Some(url) => {
            let ceiling = jetstream_ceiling(url, calls, messages, publishers).await?;
            // The gateway's streams go with the run.
            let js = jetstream::new(async_nats::connect(url).await?);
            for name in [
                format!("CAPGATE_BENCH_{}", &id[..12]),
                format!("CAPGATE_BENCH_{}_DLQ", &id[..12]),
            ] {
                let _ = js.delete_stream(&name).await;
            }
            Some(ceiling)
        }
        None => None,
    };
    let figures = QueueFigures {
        backend: if nats_url.is_some() {
            "nats"
        } else {
            "embedded"
        },
        publish_p50_us: percentile(&latencies, 0.50) * 1e6,
        publish_p99_us: percentile(&latencies, 0.99) * 1e6,
        messages,
        publishers,
        end_to_end_per_sec: end_to_end,
        publish_only_per_sec: publish_only,
        ceiling_per_sec: ceiling.map(|c| c.0),
        ceiling_publish_p50_us: ceiling.map(|c| c.1),
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "queues ({}): publish p50 {:.0} µs, p99 {:.0} µs (sequential, durable); publish only {:.0} messages/s; end to end {:.0} messages/s ({} messages, {} publishers, subscriber concurrency {SUBSCRIBER_CONCURRENCY})",
            figures.backend,
            figures.publish_p50_us,
            figures.publish_p99_us,
            figures.publish_only_per_sec,
            figures.end_to_end_per_sec,
            messages,
            publishers
        );
        if let Some((per_sec, p50)) = ceiling {
            println!(
                "JetStream directly (async-nats, same loop): publish p50 {p50:.0} µs; end to end {per_sec:.0} messages/s; capgate ÷ ceiling {:.2}",
                figures.end_to_end_per_sec / per_sec
            );
        }
    }
    Ok(())
}

/// Publishes `messages` with `publishers` concurrent publishers; messages/s.
async fn publish_many<F, Fut>(
    publish: &F,
    topic: &'static str,
    messages: u64,
    publishers: usize,
) -> anyhow::Result<f64>
where
    F: Fn(&'static str, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut lanes = Vec::new();
    for _ in 0..publishers {
        let (publish, next) = (publish.clone(), next.clone());
        lanes.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= messages {
                    return Ok::<_, anyhow::Error>(());
                }
                publish(topic, n).await?;
            }
        }));
    }
    for lane in lanes {
        lane.await??;
    }
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}

/// When the topic's depth reached 0 (every message acknowledged).
async fn wait_acknowledged(addr: &str, topic: &str) -> anyhow::Result<Instant> {
    let url = format!("http://{addr}/api/v1/queues");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed: Value = client.get(&url).send().await?.json().await?;
        let depth = listed["queues"]
            .as_array()
            .and_then(|queues| queues.iter().find(|q| q["queue"] == topic))
            .map_or(0, |q| q["depth"].as_i64().unwrap_or(0));
        if depth == 0 {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "{depth} never acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The same loop straight on JetStream: publishers await each publish's
/// acknowledgement; one pull consumer with 64 messages in hand acks each.
/// (messages/s end to end, sequential publish p50 in µs).
async fn jetstream_ceiling(
    url: &str,
    calls: usize,
    messages: u64,
    publishers: usize,
) -> anyhow::Result<(f64, f64)> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("CAPGATE_BENCH_RAW_{}", &id[..12]);
    let subject = format!("bench-raw-{}.q", &id[..12]);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let payload = serde_json::to_vec(&json!({"n": 0, "note": "a small event"}))?;
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        js.publish(subject.clone(), payload.clone().into())
            .await?
            .await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    stream.purge().await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: SUBSCRIBER_CONCURRENCY as i64,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut messages_in = consumer.messages().await?;
        let mut acked = 0u64;
        let mut acking = futures_util::stream::FuturesUnordered::new();
        while acked < messages {
            tokio::select! {
                Some(message) = messages_in.next() => {
                    let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                    acking.push(async move { message.double_ack().await });
                }
                Some(done) = acking.next(), if !acking.is_empty() => {
                    done.map_err(|e| anyhow::anyhow!("{e}"))?;
                    acked += 1;
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    let next = Arc::new(AtomicU64::new(0));
    let mut lanes = Vec::new();
    for _ in 0..publishers {
        let (js, next, subject, payload) =
            (js.clone(), next.clone(), subject.clone(), payload.clone());
        lanes.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                js.publish(subject.clone(), payload.clone().into())
                    .await?
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for lane in lanes {
        lane.await??;
    }
    consuming.await??;
    let per_sec = messages as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream(&name).await;
    Ok((per_sec, percentile(&latencies, 0.50) * 1e6))
}

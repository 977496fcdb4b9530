//! One trace from the agent to the last worker, metrics a Prometheus
//! parser reads, log lines that carry the trace — against a real OTLP/HTTP
//! receiver this test starts, which decodes what it is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use capgate_gateway::telemetry::config::TelemetryConfig;
use capgate_sdk::{CallOptions, Function, Worker};
use capgate_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message as _;
use serde_json::{Value, json};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT_SPAN: &str = "00f067aa0ba902b7";
const BAGGAGE: &str = "tenant=acme,request=r-17";

/// A span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Seen {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    service: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver: protobuf (capgate's own export) and JSON (what
/// iii workers send, relayed) on `/v1/traces`; `/v1/metrics` counted;
/// `/v1/logs` (relayed JSON) kept as log records.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Seen>>>,
    /// Each log record's body text and trace id.
    logs: Arc<Mutex<Vec<(String, String)>>>,
    metric_exports: Arc<AtomicUsize>,
    /// Names of the metrics pushed, with the service that pushed them.
    metric_names: Arc<Mutex<Vec<(String, String)>>>,
    delay: Duration,
}

impl Receiver {
    async fn start(delay: Duration) -> (Self, String) {
        let receiver = Self {
            delay,
            ..Self::default()
        };
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .route("/v1/metrics", axum::routing::post(metrics))
            .route("/v1/logs", axum::routing::post(logs))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits for a log record whose body is `body`, in trace `trace_id`.
    async fn log(&self, body: &str, trace_id: &str) {
        let until = Instant::now() + HANG;
        loop {
            let logs = self.logs.lock().unwrap().clone();
            if logs
                .iter()
                .any(|(text, trace)| text == body && trace == trace_id)
            {
                return;
            }
            assert!(
                Instant::now() < until,
                "no log record {body:?} of trace {trace_id} reached the receiver; it has {logs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a span matching `wanted`.
    async fn span(&self, what: &str, wanted: impl Fn(&Seen) -> bool) -> Seen {
        let until = Instant::now() + HANG;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| wanted(s)) {
                return span;
            }
            assert!(
                Instant::now() < until,
                "no span {what} reached the receiver; it has {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn traces(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> &'static str {
    tokio::time::sleep(receiver.delay).await;
    let json = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let spans = if json {
        from_json(&serde_json::from_slice(&body).expect("an OTLP JSON export"))
    } else {
        from_protobuf(&ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export"))
    };
    receiver.spans.lock().unwrap().extend(spans);
    "{}"
}

/// OTLP JSON logs, as the iii SDKs send them: each record's body and
/// trace id.
async fn logs(State(receiver): State<Receiver>, Json(request): Json<Value>) -> &'static str {
    let records = request["resourceLogs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|resource| resource["scopeLogs"].as_array().into_iter().flatten())
        .flat_map(|scope| scope["logRecords"].as_array().into_iter().flatten())
        .map(|record| {
            (
                record["body"]["stringValue"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                record["traceId"].as_str().unwrap_or_default().to_owned(),
            )
        });
    receiver.logs.lock().unwrap().extend(records);
    "{}"
}

async fn metrics(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    receiver.metric_exports.fetch_add(1, Ordering::SeqCst);
    if headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"))
    {
        let request =
            ExportMetricsServiceRequest::decode(body).expect("an OTLP protobuf metrics export");
        let mut names = receiver.metric_names.lock().unwrap();
        for resource in &request.resource_metrics {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref())
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            for metric in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
                names.push((metric.name.clone(), service.clone()));
            }
        }
    }
    "{}"
}

fn from_protobuf(request: &ExportTraceServiceRequest) -> Vec<Seen> {
    let text = |value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match value
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(Any::StringValue(text)) => text.clone(),
        Some(Any::IntValue(number)) => number.to_string(),
        Some(Any::BoolValue(flag)) => flag.to_string(),
        other => format!("{other:?}"),
    };
    let mut seen = Vec::new();
    for resource in &request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            seen.push(Seen {
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent: hex::encode(&span.parent_span_id),
                name: span.name.clone(),
                service: service.clone(),
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(&kv.value)))
                    .collect(),
            });
        }
    }
    seen
}

/// OTLP JSON, read as the specification writes it (ids in hex).
fn from_json(request: &Value) -> Vec<Seen> {
    let mut seen = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|kv| kv["key"] == "service.name")
            .and_then(|kv| kv["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        let spans = resource["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|scope| scope["spans"].as_array().into_iter().flatten());
        for span in spans {
            let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
            seen.push(Seen {
                trace_id: text("traceId"),
                span_id: text("spanId"),
                parent: text("parentSpanId"),
                name: text("name"),
                service: service.clone(),
                attributes: HashMap::new(),
            });
        }
    }
    seen
}

fn exporting_to(url: &str) -> TelemetryConfig {
    TelemetryConfig {
        otlp_endpoint: Some(url.to_owned()),
        export_interval_ms: Some(50),
        metrics_interval_ms: Some(200),
        ..TelemetryConfig::default()
    }
}

/// The span id in a `traceparent`.
fn span_of(traceparent: &Value) -> String {
    let text = traceparent.as_str().expect("a traceparent");
    assert!(text.starts_with(&format!("00-{TRACE}-")), "{text}");
    text[36..52].to_owned()
}

fn stateless_call(name: &str, meta: Value) -> Value {
    let mut meta_all = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    for (key, value) in meta.as_object().unwrap() {
        meta_all[key] = value.clone();
    }
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": {}, "_meta": meta_all}
    })
}

async fn call_over_mcp(
    gateway: &TestGateway,
    name: &'static str,
    meta: Value,
    headers: &[(&str, &str)],
) -> Value {
    let mut all = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", name),
    ];
    all.extend_from_slice(headers);
    let (status, _, answer) = post_mcp(&gateway.mcp_url(), &all, &stateless_call(name, meta)).await;
    assert_eq!(status, 200, "{answer}");
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a text result: {answer}"));
    serde_json::from_str(text).unwrap()
}

/// The trace context a call arrived with: traceparent, baggage.
type Reported = tokio::sync::mpsc::UnboundedReceiver<(Option<String>, Option<String>)>;

/// Reports the trace context of every call of it.
fn context_reporter(id: &str) -> (Function, Reported) {
    let (seen, arrived) = tokio::sync::mpsc::unbounded_channel();
    let function = Function::new(id).handler(move |_, ctx| {
        let seen = seen.clone();
        async move {
            let _ = seen.send((ctx.traceparent.clone(), ctx.baggage.clone()));
            Ok(json!(null))
        }
    });
    (function, arrived)
}

/// Answers with the trace context its handler was called in.
fn context_echo(id: &str) -> Function {
    Function::new(id).handler(|_, ctx| async move {
        Ok(json!({"traceparent": ctx.traceparent, "baggage": ctx.baggage}))
    })
}

#[tokio::test]
async fn one_trace_follows_an_agents_call_across_two_workers() {
    let (receiver, url) = Receiver::start(Duration::ZERO).await;
    let gateway = TestGateway::start_with(|c| c.telemetry = exporting_to(&url)).await;
    let leaf = Worker::connect(gateway.worker_url()).await.unwrap();
    leaf.register(context_echo("trace::leaf"));
    let mut node = NodeWorker::spawn(&iii_node_dir(), &gateway.worker_url(), "trace.mjs", &[]);
    assert_eq!(node.line().await, "ready");
    let fan = Worker::connect(gateway.worker_url()).await.unwrap();
    fan.register(Function::new("trace::fan").handler(|_, ctx| async move {
        let leaf = ctx
            .call("trace::leaf", json!({}))
            .await
            .map_err(|e| e.to_string())?;
        let node = ctx
            .call("node::trace", json!({}))
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({
            "fan": {"traceparent": ctx.traceparent, "baggage": ctx.baggage},
            "leaf": leaf,
            "node": node,
        }))
    }));
    gateway.wait_live("trace::fan").await;
    gateway.wait_live("trace::leaf").await;

    let answer = call_over_mcp(
        &gateway,
        "trace__fan",
        json!({"traceparent": format!("00-{TRACE}-{AGENT_SPAN}-01"), "baggage": BAGGAGE}),
        &[],
    )
    .await;

    // What each worker's handler was given.
    let fan_span = span_of(&answer["fan"]["traceparent"]);
    assert_ne!(fan_span, AGENT_SPAN, "the gateway's span, not the agent's");
    assert_eq!(answer["fan"]["baggage"], BAGGAGE);
    let leaf_span = span_of(&answer["leaf"]["traceparent"]);
    assert_ne!(leaf_span, fan_span);
    assert_eq!(
        answer["leaf"]["baggage"], BAGGAGE,
        "baggage reaches the second worker unchanged"
    );
    assert_eq!(
        answer["node"]["traceId"], TRACE,
        "the unmodified iii Node SDK continues the trace"
    );
    assert_eq!(
        answer["node"]["baggage"],
        json!({"tenant": "acme", "request": "r-17"})
    );

    // What the receiver was sent: the gateway's spans, linked.
    let fan = receiver
        .span("trace::fan", |s| s.name == "trace::fan")
        .await;
    assert_eq!(
        (fan.trace_id.as_str(), fan.parent.as_str()),
        (TRACE, AGENT_SPAN)
    );
    assert_eq!(fan.span_id, fan_span);
    assert_eq!(fan.service, "capgate");
    for (key, value) in [
        ("capgate.source", "mcp"),
        ("faas.trigger", "http"),
        ("faas.invoked_name", "trace::fan"),
        ("capgate.outcome", "ok"),
        ("capgate.caller", "agent:anonymous"),
        ("capgate.function.version", "0.0.0"),
    ] {
        assert_eq!(
            fan.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}: {fan:#?}"
        );
    }
    let leaf = receiver
        .span("trace::leaf", |s| s.name == "trace::leaf")
        .await;
    assert_eq!(
        (leaf.trace_id.as_str(), leaf.parent.as_str()),
        (TRACE, fan_span.as_str())
    );
    assert_eq!(leaf.span_id, leaf_span);
    assert_eq!(leaf.attributes["capgate.source"], "worker");
    let to_node = receiver
        .span("node::trace by the gateway", |s| {
            s.name == "node::trace" && s.service == "capgate" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(to_node.parent, fan_span);
    // The Node SDK's own span, relayed from its /otel socket, is a child
    // of the gateway's.
    let in_node = receiver
        .span("of the Node SDK", |s| {
            s.trace_id == TRACE && s.parent == to_node.span_id
        })
        .await;
    assert_ne!(in_node.service, "capgate", "{in_node:#?}");
    // The log its handler wrote, relayed from the same socket, carries the
    // trace it ran in.
    receiver.log("node::trace ran", TRACE).await;
    node.kill().await;
}

#[tokio::test]
async fn trace_context_comes_from_http_headers_and_malformed_context_starts_a_new_trace() {
    let (receiver, url) = Receiver::start(Duration::ZERO).await;
    let gateway = TestGateway::start_with(|c| c.telemetry = exporting_to(&url)).await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(context_echo("trace::echo"));
    gateway.wait_live("trace::echo").await;

    let parent = format!("00-{TRACE}-{AGENT_SPAN}-01");
    let answer = call_over_mcp(
        &gateway,
        "trace__echo",
        json!({}),
        &[("traceparent", &parent), ("baggage", "from=header")],
    )
    .await;
    span_of(&answer["traceparent"]);
    assert_eq!(answer["baggage"], "from=header");

    // POST /api/v1/call takes headers too.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/call/trace::echo", gateway.http_base()))
        .header("traceparent", &parent)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    span_of(&answer["traceparent"]);

    // Hostile context: a malformed traceparent starts a new trace, an
    // oversized baggage is dropped whole; the call runs either way.
    let huge = format!("k={}", "v".repeat(9_000));
    let answer = call_over_mcp(
        &gateway,
        "trace__echo",
        json!({"traceparent": "00-zz-not-a-trace", "baggage": huge}),
        &[],
    )
    .await;
    let fresh = answer["traceparent"].as_str().unwrap();
    assert!(
        fresh.starts_with("00-") && !fresh.contains(TRACE),
        "{fresh}"
    );
    assert_eq!(answer["baggage"], Value::Null);
    let root = receiver
        .span("the new root", |s| fresh.contains(&s.span_id))
        .await;
    assert_eq!(root.parent, "", "a root span: {root:#?}");
    let scrape = scrape(&gateway.http_base()).await;
    assert_eq!(
        sample(
            &scrape,
            "capgate_trace_context_dropped_total",
            &[("part", "baggage")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "capgate_trace_context_dropped_total",
            &[("part", "traceparent")]
        ),
        1.0
    );
}

/// `GET BASE/metrics`, parsed as Prometheus text.
pub(crate) async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|error| panic!("not Prometheus text ({error}):\n{text}"))
}

/// The value of the one sample of `metric` whose labels include `labels`.
pub(crate) fn sample(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let matching: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "one sample of {metric} {labels:?}; all of it: {:#?}",
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .collect::<Vec<_>>()
    );
    match &matching[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        other => panic!("{metric}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_the_calls_made() {
    let gateway = TestGateway::start().await;
    let (_provider, calls) = greeter(&gateway.worker_url()).await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    gateway.wait_live("hello::greet").await;
    let client = stateless_client(&gateway.mcp_url()).await;
    for name in ["a", "b", "c"] {
        let answer = call_tool(&client, "hello__greet", json!({"name": name}))
            .await
            .unwrap();
        assert_ne!(answer.is_error, Some(true));
    }
    caller
        .call("hello::greet", json!({"name": "w"}))
        .await
        .unwrap();
    caller
        .call("hello::greet", json!({"name": 1}))
        .await
        .unwrap_err();
    caller.call("nobody::here", json!({})).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    let scrape = scrape(&gateway.http_base()).await;
    let calls_of = |source: &str, outcome: &str| {
        sample(
            &scrape,
            "capgate_calls_total",
            &[
                ("function", "hello::greet"),
                ("source", source),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(calls_of("mcp", "ok"), 3.0);
    // greeter() made one call of its own to know the function is callable.
    assert_eq!(calls_of("worker", "ok"), 2.0);
    assert_eq!(calls_of("worker", "INVALID_ARGUMENTS"), 1.0);
    assert_eq!(
        sample(
            &scrape,
            "capgate_calls_total",
            &[("function", "_unknown"), ("outcome", "function_not_found")]
        ),
        1.0,
        "an unknown function is counted without its name"
    );
    assert!(
        scrape
            .samples
            .iter()
            .all(|s| s.labels.get("function") != Some("nobody::here"))
    );
    assert_eq!(
        sample(
            &scrape,
            "capgate_call_duration_seconds",
            &[
                ("function", "hello::greet"),
                ("source", "mcp"),
                ("outcome", "ok")
            ]
        ),
        3.0
    );
    assert_eq!(sample(&scrape, "capgate_workers_connected", &[]), 2.0);
    assert_eq!(
        sample(&scrape, "capgate_catalog_versions", &[("status", "live")]),
        1.0
    );
    assert_eq!(sample(&scrape, "capgate_calls_in_flight", &[]), 0.0);
    assert_eq!(sample(&scrape, "capgate_audit_dropped_total", &[]), 0.0);
    assert_eq!(
        sample(&scrape, "capgate_telemetry_spans_dropped_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn metrics_follow_the_admin_policy_when_agents_have_identities() {
    let (ops, ops_key) = agent_identity("ops", &[]);
    let (bot, bot_key) = agent_identity("bot", &[]);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.csv");
    std::fs::write(&policy, "p, agent:ops, *, metrics, admin, allow\n").unwrap();
    let gateway = TestGateway::start_with(move |c| {
        c.identity.agents = vec![ops, bot];
        c.policies.files = vec![policy];
    })
    .await;
    let url = format!("{}/metrics", gateway.http_base());
    let anonymous = reqwest::get(&url).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let get = |key: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    let refused = get(bot_key).await;
    assert_eq!(refused.status(), 403, "bot has no admin on metrics");
    let allowed = get(ops_key).await;
    assert_eq!(allowed.status(), 200);
    let text = allowed.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        sample(
            &scrape,
            "capgate_policy_denials_total",
            &[("source", "admin")]
        ),
        1.0,
        "the refused scrape is counted"
    );
}

#[tokio::test]
async fn a_collector_that_is_down_or_slow_does_not_fail_or_hold_calls() {
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (_slow, slow) = Receiver::start(Duration::from_secs(30)).await;
    for url in [down, slow] {
        let gateway = TestGateway::start_with(|c| {
            c.telemetry = TelemetryConfig {
                max_queued_spans: Some(16),
                max_export_batch: Some(8),
                export_timeout_ms: Some(300),
                ..exporting_to(&url)
            }
        })
        .await;
        let (_provider, _) = greeter(&gateway.worker_url()).await;
        let caller = Worker::connect(gateway.worker_url()).await.unwrap();
        gateway.wait_live("hello::greet").await;
        // Generous: only a call that waited on the collector (300 ms per
        // export, 30 s for the slow one) would take this long.
        let started = Instant::now();
        for _ in 0..400 {
            let options = CallOptions {
                traceparent: Some(format!("00-{TRACE}-{AGENT_SPAN}-01")),
                ..CallOptions::default()
            };
            caller
                .call_with("hello::greet", json!({"name": "x"}), options)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert!(started.elapsed() < HANG, "{url}: {:?}", started.elapsed());
        let scrape_until = Instant::now() + HANG;
        loop {
            let scrape = scrape(&gateway.http_base()).await;
            let dropped = sample(&scrape, "capgate_telemetry_spans_dropped_total", &[]);
            let failures = sample(&scrape, "capgate_telemetry_export_failures_total", &[]);
            if dropped > 0.0 && failures > 0.0 {
                assert_eq!(
                    sample(&scrape, "capgate_telemetry_spans_exported_total", &[]),
                    0.0
                );
                break;
            }
            assert!(
                Instant::now() < scrape_until,
                "{url}: dropped {dropped}, failures {failures}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn metrics_are_pushed_over_otlp_when_export_is_on() {
    let (receiver, url) = Receiver::start(Duration::ZERO).await;
    let _gateway = TestGateway::start_with(|c| c.telemetry = exporting_to(&url)).await;
    eventually(
        "the gateway's gauges reached the receiver over OTLP",
        || {
            receiver
                .metric_names
                .lock()
                .unwrap()
                .iter()
                .any(|(name, service)| {
                    name == "capgate.workers.connected" && service.contains("capgate")
                })
        },
    )
    .await;
}

/// `--log-format json`, export configured by the standard variables: a
/// call's log lines carry its trace and span ids.
#[tokio::test]
async fn json_log_lines_of_a_call_carry_its_trace_ids() {
    use tokio::io::AsyncBufReadExt as _;
    let (_receiver, url) = Receiver::start(Duration::ZERO).await;
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(capgate_tests::real::built_binary("capgate"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--http-listen",
            "off",
            "--listen",
        ])
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data.path())
        .env("CAPGATE_LOG", "info,capgate_gateway::invocation=debug")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
        .env("OTEL_SERVICE_NAME", "edge")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let worker_url = format!("ws://{addr}/");
    let provider = loop {
        if let Ok(worker) = Worker::connect(worker_url.clone()).await {
            break worker;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    provider.register(context_echo("trace::echo"));
    let caller = Worker::connect(worker_url).await.unwrap();
    let options = || CallOptions {
        traceparent: Some(format!("00-{TRACE}-{AGENT_SPAN}-01")),
        ..CallOptions::default()
    };
    let mut answer = caller.call_with("trace::echo", json!({}), options()).await;
    for _ in 0..50 {
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = caller.call_with("trace::echo", json!({}), options()).await;
    }
    let answer = answer.unwrap();
    let span = span_of(&answer["traceparent"]);
    let found = tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if entry["fields"]["message"] == "call completed"
                && entry["span"]["function"] == "trace::echo"
            {
                return entry;
            }
        }
        panic!("the gateway's stderr ended");
    })
    .await
    .expect("a 'call completed' line for trace::echo");
    assert_eq!(found["span"]["trace_id"], TRACE, "{found}");
    assert_eq!(found["span"]["span_id"], span.as_str(), "{found}");
    assert_eq!(found["span"]["name"], "call");
    let _ = child.kill().await;
}

/// A queued message keeps the trace it was published in: its delivery is a
/// child of the publish call's span, and its baggage arrives with it.
#[tokio::test]
async fn a_queued_message_is_delivered_in_the_trace_it_was_published_in() {
    let (receiver, url) = Receiver::start(Duration::ZERO).await;
    let gateway = TestGateway::start_with(|c| c.telemetry = exporting_to(&url)).await;
    let (function, mut arrived) = context_reporter("orders::placed");
    let subscriber = Worker::connect(gateway.worker_url()).await.unwrap();
    subscriber.register(function);
    subscriber.register_trigger(
        "orders-in",
        "durable:subscriber",
        "orders::placed",
        json!({"topic": "orders"}),
    );
    gateway.wait_live("orders::placed").await;
    let publisher = Worker::connect(gateway.worker_url()).await.unwrap();
    // Frames are handled in order: once this is answered, so is the trigger.
    subscriber
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let options = CallOptions {
        traceparent: Some(format!("00-{TRACE}-{AGENT_SPAN}-01")),
        baggage: Some(BAGGAGE.into()),
        ..CallOptions::default()
    };
    publisher
        .call_with(
            "iii::durable::publish",
            json!({"topic": "orders", "data": {"id": 1}}),
            options,
        )
        .await
        .unwrap();
    let (traceparent, baggage) = tokio::time::timeout(HANG, arrived.recv())
        .await
        .expect("the message was delivered")
        .unwrap();
    let delivery_span = span_of(&json!(traceparent));
    assert_eq!(baggage.as_deref(), Some(BAGGAGE));
    let publish = receiver
        .span("iii::durable::publish", |s| {
            s.name == "iii::durable::publish"
        })
        .await;
    assert_eq!(
        (publish.trace_id.as_str(), publish.parent.as_str()),
        (TRACE, AGENT_SPAN)
    );
    let delivered = receiver
        .span("orders::placed", |s| s.name == "orders::placed")
        .await;
    assert_eq!(delivered.span_id, delivery_span);
    assert_eq!(delivered.trace_id, TRACE);
    assert_eq!(
        delivered.parent, publish.span_id,
        "the delivery is a child of the publish"
    );
    assert_eq!(delivered.attributes["capgate.source"], "queue");
    assert_eq!(delivered.attributes["faas.trigger"], "pubsub");
    assert_eq!(delivered.attributes["capgate.trigger.id"], "orders-in");
}

/// A state change starts a new trace: the watcher's call is a root span,
/// whatever trace the write was made in.
#[tokio::test]
async fn a_state_trigger_call_is_the_root_of_a_new_trace() {
    let (receiver, url) = Receiver::start(Duration::ZERO).await;
    let gateway = TestGateway::start_with(|c| c.telemetry = exporting_to(&url)).await;
    let (function, mut arrived) = context_reporter("audit::on_order");
    let watcher = Worker::connect(gateway.worker_url()).await.unwrap();
    watcher.register(function);
    watcher.register_trigger(
        "orders-watch",
        "state",
        "audit::on_order",
        json!({"scope": "orders"}),
    );
    watcher
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let options = CallOptions {
        traceparent: Some(format!("00-{TRACE}-{AGENT_SPAN}-01")),
        ..CallOptions::default()
    };
    watcher
        .call_with(
            "state::set",
            json!({"scope": "orders", "key": "o-1", "value": {"total": 3}}),
            options,
        )
        .await
        .unwrap();
    let traceparent = tokio::time::timeout(HANG, arrived.recv())
        .await
        .expect("the state trigger called its function")
        .unwrap()
        .0
        .expect("a trace context");
    assert!(!traceparent.contains(TRACE), "{traceparent}");
    let call = receiver
        .span("audit::on_order", |s| s.name == "audit::on_order")
        .await;
    assert_eq!(call.parent, "", "a root: {call:#?}");
    assert!(traceparent.contains(&call.span_id));
    assert_eq!(call.attributes["capgate.source"], "state");
    assert_eq!(call.attributes["faas.trigger"], "datasource");
    let write = receiver
        .span("state::set", |s| s.name == "state::set")
        .await;
    assert_eq!(
        (write.trace_id.as_str(), write.parent.as_str()),
        (TRACE, AGENT_SPAN)
    );
}

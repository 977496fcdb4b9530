//! Durable queues end to end: workers subscribing with
//! `durable:subscriber` and publishing with `iii::durable::publish` (the
//! Rust SDK, the unmodified iii Node SDK), function queues, dead letters
//! through the built-ins and the admin API, each topic's policy, and a
//! gateway killed with 10,000 messages queued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capgate_sdk::{Function, HandlerError, Worker};
use capgate_tests::real::RealGateway;
use capgate_tests::*;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Nats,
}

/// A gateway whose queues are on `backend`: the embedded queue, or NATS
/// JetStream at `CAPGATE_TEST_NATS_URL` on a stream of its own.
async fn gateway_on(
    backend: Backend,
    adjust: impl FnOnce(&mut capgate_gateway::config::Config) + Send + 'static,
) -> TestGateway {
    TestGateway::start_with(move |config| {
        if backend == Backend::Nats {
            let url = std::env::var("CAPGATE_TEST_NATS_URL").expect(
                "CAPGATE_TEST_NATS_URL is not set: the queue tests run against NATS JetStream too; run scripts/test (the README's test command), which starts nats-server and sets it",
            );
            let id = uuid::Uuid::new_v4().simple().to_string();
            config.queues.backend = "nats".into();
            config.queues.url = Some(url);
            config.queues.nats_stream = format!("CAPGATE_TEST_{}", &id[..12]);
            config.queues.nats_subject_prefix = format!("capgate-test-{}", &id[..12]);
        }
        adjust(config);
    })
    .await
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Embedded).await;
            })*
        }
        mod nats {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Nats).await;
            })*
        }
    };
}

on_both_backends!(
    a_published_message_reaches_its_subscriber_and_a_failing_one_is_dead_lettered_then_redriven,
    a_message_whose_worker_is_killed_mid_call_is_delivered_again,
    input_failing_the_schema_is_dead_lettered_without_retries_and_duplicates_are_dropped,
    an_enqueued_call_runs_later_as_its_caller_and_bad_requests_are_refused,
    an_iii_node_worker_subscribes_publishes_and_enqueues,
);

fn admin(gateway: &TestGateway, path: &str) -> String {
    format!("http://{}/api/v1{path}", gateway.gateway.local_addr())
}

async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

/// Waits until `GET /api/v1/queues` satisfies `done`.
async fn queues_until(gateway: &TestGateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let url = admin(gateway, "/queues");
    for _ in 0..1_000 {
        let listed = get_json(&url).await;
        if done(&listed) {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened: {}", get_json(&url).await);
}

/// The audit entries of calls to `function` once `wanted` holds for them
/// (a call is audited when it ends, after its handler ran).
async fn audited_until(
    gateway: &TestGateway,
    function: &str,
    wanted: impl Fn(&[capgate_catalog::audit::AuditEntry]) -> bool,
) -> Vec<capgate_catalog::audit::AuditEntry> {
    let audit = &gateway.gateway.state().access.audit;
    for _ in 0..500 {
        audit.flush().await.unwrap();
        let entries = audit
            .query(&capgate_catalog::audit::AuditQuery {
                object: Some(function.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        if wanted(&entries) {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the audit log never held the calls expected of {function}");
}

fn queue<'a>(listed: &'a Value, name: &str) -> Option<&'a Value> {
    listed["queues"]
        .as_array()?
        .iter()
        .find(|q| q["queue"] == name)
}

/// A function that reports each input it gets and fails while `failing`.
fn recorder(
    id: &str,
    failing: Arc<AtomicBool>,
) -> (Function, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (seen, arrived) = tokio::sync::mpsc::unbounded_channel();
    let function = Function::new(id).handler(move |input: Value, _ctx| {
        let (seen, failing) = (seen.clone(), failing.clone());
        async move {
            let _ = seen.send(input);
            if failing.load(Ordering::SeqCst) {
                return Err(HandlerError::new("the order service is down"));
            }
            Ok(Value::Null)
        }
    });
    (function, arrived)
}

async fn next(arrived: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(HANG, arrived.recv())
        .await
        .expect("a delivery in time")
        .expect("the worker runs")
}

async fn a_published_message_reaches_its_subscriber_and_a_failing_one_is_dead_lettered_then_redriven(
    backend: Backend,
) {
    let gateway = gateway_on(backend, |_| {}).await;
    let failing = Arc::new(AtomicBool::new(false));
    let (function, mut arrived) = recorder("orders::placed", failing.clone());
    let subscriber = Worker::connect(gateway.worker_url()).await.unwrap();
    subscriber.register(function);
    subscriber.register_trigger(
        "orders-in",
        "durable:subscriber",
        "orders::placed",
        json!({"topic": "orders", "queue_config": {"maxRetries": 2, "backoffDelayMs": 10}}),
    );
    let publisher = Worker::connect(gateway.worker_url()).await.unwrap();
    let published = publisher
        .call(
            "iii::durable::publish",
            json!({"topic": "orders", "data": {"id": 1}}),
        )
        .await
        .unwrap();
    let receipt = published["messageReceiptId"].as_str().unwrap().to_owned();
    assert_eq!(published["duplicate"], false);
    assert_eq!(next(&mut arrived).await, json!({"id": 1}));

    // Failing: the first attempt and two retries, then the dead letters.
    failing.store(true, Ordering::SeqCst);
    let poison = publisher
        .call(
            "capgate::queue::publish",
            json!({"topic": "orders", "data": {"id": 2}}),
        )
        .await
        .unwrap();
    let poison_id = poison["messageReceiptId"].as_str().unwrap().to_owned();
    assert_ne!(poison_id, receipt);
    for _ in 0..3 {
        assert_eq!(next(&mut arrived).await, json!({"id": 2}));
    }
    let listed = queues_until(&gateway, "a dead letter", |l| {
        queue(l, "orders").is_some_and(|q| q["dead_letters"] == 1 && q["depth"] == 0)
    })
    .await;
    let orders = queue(&listed, "orders").unwrap();
    assert_eq!(
        (orders["kind"].clone(), orders["depth"].clone()),
        (json!("topic"), json!(0))
    );
    assert_eq!(orders["consumers"][0]["consumer"], "orders::placed");
    let topics = publisher
        .call("engine::queue::dlq_topics", json!({}))
        .await
        .unwrap();
    assert_eq!(
        topics,
        json!({"topics": [{"topic": "orders", "message_count": 1}]})
    );
    let letters = publisher
        .call(
            "engine::queue::dlq_messages",
            json!({"topic": "orders", "offset": 0, "limit": 10}),
        )
        .await
        .unwrap();
    let letter = &letters["messages"][0];
    assert_eq!(letter["message_id"], poison_id.as_str());
    assert_eq!(letter["data"], json!({"id": 2}));
    assert_eq!(letter["attempts"], 3);
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("the order service is down"),
        "{letter}"
    );
    // The same through the admin API.
    let page = get_json(&admin(&gateway, "/queues/orders/dlq?limit=5")).await;
    assert_eq!(page["messages"][0]["message_id"], poison_id.as_str());

    // Healed, redriven: delivered once more, and the dead letters are empty.
    failing.store(false, Ordering::SeqCst);
    let redriven = publisher
        .call(
            "iii::queue::redrive_message",
            json!({"queue": "orders", "message_id": poison_id}),
        )
        .await
        .unwrap();
    assert_eq!(redriven["redriven"], 1);
    assert_eq!(next(&mut arrived).await, json!({"id": 2}));
    queues_until(&gateway, "the redriven message acknowledged", |l| {
        queue(l, "orders").is_none_or(|q| q["depth"] == 0 && q["dead_letters"] == 0)
    })
    .await;
    // Every delivery was a call on the one path, audited with its source.
    audited_until(&gateway, "orders::placed", |entries| {
        entries
            .iter()
            .filter(|e| e.detail.to_string().contains("durable:subscriber"))
            .count()
            >= 5
    })
    .await;
}

async fn a_message_whose_worker_is_killed_mid_call_is_delivered_again(backend: Backend) {
    let gateway = gateway_on(backend, |config| {
        config.workers.reattach_grace = Duration::from_millis(300);
    })
    .await;
    let config = json!({"topic": "jobs", "queue_config": {"backoffDelayMs": 10}});
    // A worker that takes the message and dies without answering: its
    // connection drops with no close frame, as a killed process's does.
    let mut doomed = RawPeer::connect(&gateway.worker_url()).await;
    doomed
        .send(json!({"type": "registerfunction", "id": "jobs::run"}))
        .await;
    doomed
        .send(
            json!({"type": "registertrigger", "id": "jobs-in", "trigger_type": "durable:subscriber",
            "function_id": "jobs::run", "config": config}),
        )
        .await;
    gateway.wait_live("jobs::run").await;
    // Published with a trace context, as an iii SDK sends one.
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut publisher = RawPeer::connect(&gateway.worker_url()).await;
    publisher
        .send(json!({"type": "invokefunction", "invocation_id": "p-1",
            "function_id": "iii::durable::publish", "data": {"topic": "jobs", "data": "j-1"},
            "traceparent": TRACEPARENT, "baggage": "tenant=acme"}))
        .await;
    let published = publisher.answer_to("p-1").await;
    assert!(
        published["result"]["messageReceiptId"].is_string(),
        "{published}"
    );
    let call = doomed
        .recv_until("the delivery", |frame| frame["type"] == "invokefunction")
        .await;
    assert_eq!(call["data"], json!("j-1"));
    // The trace context was kept with the message and continued on delivery.
    assert_eq!(call["traceparent"], TRACEPARENT, "{call}");
    assert_eq!(call["baggage"], "tenant=acme", "{call}");
    doomed.kill();
    let (function, mut arrived) = recorder("jobs::run", Arc::new(AtomicBool::new(false)));
    let healthy = Worker::connect(gateway.worker_url()).await.unwrap();
    healthy.register(function);
    healthy.register_trigger("jobs-in", "durable:subscriber", "jobs::run", config);
    assert_eq!(next(&mut arrived).await, json!("j-1"));
    queues_until(&gateway, "the message acknowledged", |l| {
        queue(l, "jobs").is_none_or(|q| q["depth"] == 0 && q["dead_letters"] == 0)
    })
    .await;
}

async fn input_failing_the_schema_is_dead_lettered_without_retries_and_duplicates_are_dropped(
    backend: Backend,
) {
    let gateway = gateway_on(backend, |_| {}).await;
    let (function, mut arrived) = recorder("pay::charge", Arc::new(AtomicBool::new(false)));
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(function.input_schema(json!({
        "type": "object", "required": ["cents"],
        "properties": {"cents": {"type": "integer"}}
    })));
    worker.register_trigger(
        "pay-in",
        "durable:subscriber",
        "pay::charge",
        json!({"topic": "payments", "queue_config": {"maxRetries": 5, "backoffDelayMs": 10}}),
    );
    gateway.wait_live("pay::charge").await;
    let publish = |data: Value, key: &str| {
        worker.call(
            "iii::durable::publish",
            json!({"topic": "payments", "data": data, "idempotency_key": key}),
        )
    };
    let first = publish(json!({"cents": 5}), "order-1").await.unwrap();
    let again = publish(json!({"cents": 5}), "order-1").await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["messageReceiptId"], first["messageReceiptId"]);
    assert_eq!(next(&mut arrived).await, json!({"cents": 5}));
    publish(json!({"cents": "five"}), "order-2").await.unwrap();
    let listed = queues_until(&gateway, "the bad message dead-lettered", |l| {
        queue(l, "payments").is_some_and(|q| q["dead_letters"] == 1 && q["depth"] == 0)
    })
    .await;
    assert_eq!(queue(&listed, "payments").unwrap()["depth"], 0);
    let letters = get_json(&admin(&gateway, "/queues/payments/dlq")).await;
    let letter = &letters["messages"][0];
    assert_eq!(
        letter["attempts"], 1,
        "no retries for input the schema refuses"
    );
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("INVALID_ARGUMENTS"),
        "{letter}"
    );
    // The handler never saw it, nor the duplicate: the next message it
    // gets is the one published after them.
    publish(json!({"cents": 7}), "order-3").await.unwrap();
    assert_eq!(next(&mut arrived).await, json!({"cents": 7}));
    // Discarded through the admin API; a second discard is a 404.
    let id = letter["message_id"].as_str().unwrap();
    let url = admin(&gateway, &format!("/queues/payments/dlq/{id}"));
    let client = reqwest::Client::new();
    assert_eq!(client.delete(&url).send().await.unwrap().status(), 200);
    let again = client.delete(&url).send().await.unwrap();
    assert_eq!(again.status(), 404);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

async fn an_enqueued_call_runs_later_as_its_caller_and_bad_requests_are_refused(backend: Backend) {
    let gateway = gateway_on(backend, |config| {
        config.queues.function_queues = vec![
            serde_json::from_value(json!({
                "name": "mail", "message_group_field": "to", "concurrency": 4
            }))
            .unwrap(),
        ];
    })
    .await;
    let (function, mut arrived) = recorder("mail::send", Arc::new(AtomicBool::new(false)));
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(function);
    gateway.wait_live("mail::send").await;
    // iii's frame, as the Node SDK's TriggerAction.Enqueue sends it.
    let mut raw = RawPeer::connect(&gateway.worker_url()).await;
    raw.send(json!({
        "type": "invokefunction", "invocation_id": "7f0d3c3e-95f4-4d7c-9d7e-2d3c1b0a9e11",
        "function_id": "mail::send", "data": {"to": "ops@example.com"},
        "action": {"type": "enqueue", "queue": "mail"}
    }))
    .await;
    let answer = raw.answer_to("7f0d3c3e-95f4-4d7c-9d7e-2d3c1b0a9e11").await;
    let receipt = answer["result"]["messageReceiptId"].as_str().unwrap();
    assert_eq!(receipt.len(), 36, "{answer}");
    assert_eq!(next(&mut arrived).await, json!({"to": "ops@example.com"}));
    // The call was made as the worker that enqueued it, with the queue as
    // its source.
    audited_until(&gateway, "mail::send", |entries| {
        entries
            .iter()
            .any(|e| e.subject == "worker:anonymous" && e.detail.to_string().contains("\"queue\""))
    })
    .await;
    for (invocation_id, data, queue, needle) in [
        (
            "a1",
            json!({"to": "x"}),
            "nowhere",
            "queue 'nowhere' is not configured",
        ),
        ("a2", json!({"cc": "x"}), "mail", "input field 'to'"),
    ] {
        raw.send(json!({
            "type": "invokefunction", "invocation_id": invocation_id,
            "function_id": "mail::send", "data": data,
            "action": {"type": "enqueue", "queue": queue}
        }))
        .await;
        let answer = raw.answer_to(invocation_id).await;
        assert_eq!(answer["error"]["code"], "enqueue_error", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn who_may_publish_and_subscribe_to_a_topic_is_policy() {
    let (publisher_config, publisher_key) = worker_identity("publisher");
    let (outsider_config, outsider_key) = worker_identity("outsider");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.csv");
    std::fs::write(
        &policy,
        "p, *, *, *, call, allow\n\
         p, *, *, *, register, allow\n\
         p, *, *, *, trigger, allow\n\
         p, worker:publisher, *, queue::orders, write, allow\n\
         p, worker:publisher, *, queue::orders, read, allow\n\
         p, agent:anonymous, *, *, admin, allow\n",
    )
    .unwrap();
    let gateway = TestGateway::start_with(move |config| {
        config.identity.workers = vec![publisher_config, outsider_config];
        config.policies.files = vec![policy];
    })
    .await;
    let connect = |key: String| {
        let url = gateway.worker_url();
        async move { Worker::builder(url).token(key).connect().await.unwrap() }
    };
    let publisher = connect(publisher_key).await;
    let outsider = connect(outsider_key).await;
    let refused = outsider
        .call(
            "iii::durable::publish",
            json!({"topic": "orders", "data": 1}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("worker:outsider may not write queue::orders")
            && refused.contains("'write' rule on queue::orders"),
        "{refused}"
    );
    publisher
        .call(
            "iii::durable::publish",
            json!({"topic": "orders", "data": 1}),
        )
        .await
        .unwrap();
    // Reading a topic's dead letters needs `read`: the outsider sees none.
    let letters = outsider
        .call("engine::queue::dlq_messages", json!({"topic": "orders"}))
        .await
        .unwrap();
    assert_eq!(letters, json!({"messages": []}));
    // Subscribing needs `read` on the topic too.
    outsider.register(
        Function::new("spy::read")
            .handler(|_: Value, _ctx| async { Ok::<_, HandlerError>(Value::Null) }),
    );
    outsider.register_trigger(
        "spy",
        "durable:subscriber",
        "spy::read",
        json!({"topic": "orders"}),
    );
    // Frames are handled in order: once this is answered, so is the trigger.
    outsider
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let triggers = get_json(&admin(&gateway, "/triggers")).await;
    assert!(
        triggers["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != "spy"),
        "{triggers}"
    );
    // Still queued for nobody: the message waits for a permitted subscriber.
    let listed = get_json(&admin(&gateway, "/queues")).await;
    assert_eq!(queue(&listed, "orders").unwrap()["depth"], 1);
}

/// `kill -9` with 10,000 messages queued and a subscriber working through
/// them: after the restart every message is delivered, and duplicates are
/// only the few that were in hand at the kill (at least once, counted).
#[tokio::test]
async fn ten_thousand_queued_messages_survive_a_kill_9() {
    const MESSAGES: u64 = 10_000;
    const CONCURRENCY: u64 = 16;
    let mut gateway = RealGateway::start().await;
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let subscriber = Worker::connect(gateway.worker_url()).await.unwrap();
    let record = seen.clone();
    subscriber.register(
        Function::new("load::take").handler(move |input: Value, _ctx| {
            let record = record.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let n = input["n"].as_u64().unwrap_or(u64::MAX);
                *record.lock().unwrap().entry(n).or_default() += 1;
                Ok::<_, HandlerError>(Value::Null)
            }
        }),
    );
    subscriber.register_trigger(
        "load-in",
        "durable:subscriber",
        "load::take",
        json!({"topic": "load", "queue_config": {"concurrency": CONCURRENCY, "visibilityTimeout": 2000}}),
    );
    let publisher = Arc::new(Worker::connect(gateway.worker_url()).await.unwrap());
    let mut publishing = Vec::new();
    for lane in 0..32 {
        let publisher = publisher.clone();
        publishing.push(tokio::spawn(async move {
            for n in (lane..MESSAGES).step_by(32) {
                publisher
                    .call(
                        "iii::durable::publish",
                        json!({"topic": "load", "data": {"n": n}}),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for lane in publishing {
        lane.await.unwrap();
    }
    let before = seen.lock().unwrap().len();
    // Every publish was answered, so every message is on disk.
    gateway.crash_and_restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if seen.lock().unwrap().len() as u64 == MESSAGES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {MESSAGES} delivered",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap();
    assert!((0..MESSAGES).all(|n| seen.contains_key(&n)));
    let deliveries: u64 = seen.values().map(|&c| u64::from(c)).sum();
    let duplicates = deliveries - MESSAGES;
    println!(
        "kill -9 after {before} of {MESSAGES} were delivered: all {MESSAGES} delivered, {duplicates} twice"
    );
    // Only messages in hand at the kill (at most the concurrency) are
    // delivered twice.
    assert!(duplicates <= CONCURRENCY, "{duplicates} duplicates");
}

/// The unmodified iii Node SDK: `durable:subscriber`, `iii::durable::publish`
/// and `TriggerAction.Enqueue`.
async fn an_iii_node_worker_subscribes_publishes_and_enqueues(backend: Backend) {
    let dir = iii_node_dir();
    let gateway = gateway_on(backend, |config| {
        config.queues.function_queues =
            vec![serde_json::from_value(json!({"name": "mail"})).unwrap()];
    })
    .await;
    let mut node = NodeWorker::spawn(&dir, &gateway.worker_url(), "queue.mjs", &[]);
    let mut lines: HashMap<String, Vec<Value>> = HashMap::new();
    let done = |lines: &HashMap<String, Vec<Value>>| {
        let count = |kind: &str| lines.get(kind).map_or(0, Vec::len);
        count("published") == 1
            && count("enqueued") == 1
            && count("refused") == 1
            && count("poisoned") == 1
            && count("mailed") == 1
            // {id: 1} once, the poison twice (maxRetries 1).
            && count("delivered") == 3
    };
    while !done(&lines) {
        let line: Value = serde_json::from_str(&node.line().await).unwrap();
        let (kind, value) = line.as_object().and_then(|o| o.iter().next()).unwrap();
        lines.entry(kind.clone()).or_default().push(value.clone());
    }
    assert_eq!(
        lines["published"][0]["messageReceiptId"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
    assert_eq!(
        lines["enqueued"][0]["messageReceiptId"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
    assert_eq!(lines["refused"][0]["code"], "enqueue_error");
    assert_eq!(lines["mailed"][0]["to"], "ops@example.com");
    // iii hands a worker caller's id to the callee beside the data.
    let mut ids: Vec<u64> = lines["delivered"]
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 2], "{:?}", lines["delivered"]);
    let listed = queues_until(&gateway, "the poison order dead-lettered", |l| {
        queue(l, "orders").is_some_and(|q| q["dead_letters"] == 1 && q["depth"] == 0)
    })
    .await;
    assert_eq!(queue(&listed, "orders").unwrap()["depth"], 0);
    let letters = get_json(&admin(&gateway, "/queues/orders/dlq")).await;
    assert!(
        letters["messages"][0]["error"]
            .as_str()
            .unwrap()
            .contains("poison order"),
        "{letters}"
    );
    node.kill().await;
}

/// Non-durable pub/sub: a `subscribe` trigger gets what `publish` sends
/// while it listens; nothing is queued.
#[tokio::test]
async fn a_subscribe_trigger_gets_what_is_published_while_it_listens() {
    let gateway = TestGateway::start().await;
    let (function, mut arrived) = recorder("news::read", Arc::new(AtomicBool::new(false)));
    let reader = Worker::connect(gateway.worker_url()).await.unwrap();
    reader.register(function);
    reader.register_trigger(
        "news-in",
        "subscribe",
        "news::read",
        json!({"topic": "news"}),
    );
    // Frames are handled in order: once this is answered, so is the trigger.
    reader
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let publisher = Worker::connect(gateway.worker_url()).await.unwrap();
    let answer = publisher
        .call(
            "publish",
            json!({"topic": "news", "data": {"headline": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({"delivered": 1}));
    assert_eq!(next(&mut arrived).await, json!({"headline": "x"}));
    let answer = publisher
        .call("publish", json!({"topic": "nobody", "data": 1}))
        .await
        .unwrap();
    assert_eq!(answer, json!({"delivered": 0}));
    let listed = get_json(&admin(&gateway, "/queues")).await;
    assert!(
        queue(&listed, "news").is_none() && queue(&listed, "nobody").is_none(),
        "{listed}"
    );
    let refused = publisher
        .call("publish", json!({"topic": "no spaces", "data": 1}))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is not a topic name"), "{refused}");
}

/// Malformed, oversized and hostile requests to the queue built-ins and
/// the admin API get a clear error and change nothing.
#[tokio::test]
async fn bad_queue_requests_are_refused_saying_what_was_wrong() {
    let gateway = TestGateway::start_with(|config| {
        config.queues.max_message_bytes = 1_024;
    })
    .await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    for (function, input, needle) in [
        (
            "iii::durable::publish",
            json!({"data": 1}),
            "'topic' (or 'queue') is missing",
        ),
        (
            "iii::durable::publish",
            json!({"topic": "a b", "data": 1}),
            "is not a topic name",
        ),
        (
            "iii::durable::publish",
            json!({"topic": "t", "data": "x".repeat(2_000)}),
            "over the 1024 byte limit",
        ),
        (
            "iii::durable::publish",
            json!({"topic": "t", "data": 1, "idempotency_key": 7}),
            "'idempotency_key' must be a string",
        ),
        (
            "iii::queue::redrive_message",
            json!({"queue": "t"}),
            "'message_id' is missing",
        ),
        (
            "engine::queue::dlq_messages",
            json!({"topic": "\u{1b}[31m"}),
            "is not a topic name",
        ),
    ] {
        let error = worker.call(function, input).await.unwrap_err().to_string();
        assert!(error.contains(needle), "{function}: {error}");
    }
    let client = reqwest::Client::new();
    for (method, path, status, needle) in [
        ("GET", "/queues/a%20b/dlq", 400, "is not a topic name"),
        ("GET", "/queues/t/dlq?limit=many", 400, "limit"),
        ("GET", "/queues/t/dlq?colour=red", 400, "unknown field"),
        ("DELETE", "/queues/t", 400, "confirm with ?confirm=t"),
        (
            "DELETE",
            "/queues/t?confirm=u",
            400,
            "confirm with ?confirm=t",
        ),
        (
            "POST",
            "/queues/t/dlq/nope/redrive",
            404,
            "no dead letter 'nope'",
        ),
        ("DELETE", "/queues/t/dlq/nope", 404, "no dead letter 'nope'"),
    ] {
        let url = admin(&gateway, path);
        let request = match method {
            "GET" => client.get(&url),
            "POST" => client.post(&url),
            _ => client.delete(&url),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{method} {path}: {body}");
    }
    // Nothing was queued by any of it.
    let listed = get_json(&admin(&gateway, "/queues")).await;
    assert_eq!(listed["queues"], json!([]), "{listed}");
}

/// Enqueueing is authorized by the path's own step: a denied caller is
/// refused at once like an unknown function, and the refusal is audited
/// before it is answered; nothing is queued.
#[tokio::test]
async fn a_denied_enqueue_is_refused_audited_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.csv");
    std::fs::write(
        &policy,
        "p, *, *, *, *, allow\n\
         p, worker:anonymous, *, mail::send, call, deny\n",
    )
    .unwrap();
    let gateway = TestGateway::start_with(move |config| {
        config.policies.files = vec![policy];
        config.queues.function_queues =
            vec![serde_json::from_value(json!({"name": "mail"})).unwrap()];
    })
    .await;
    let mut raw = RawPeer::connect(&gateway.worker_url()).await;
    raw.send(json!({
        "type": "invokefunction", "invocation_id": "e-1",
        "function_id": "mail::send", "data": {"to": "x"},
        "action": {"type": "enqueue", "queue": "mail"}
    }))
    .await;
    let answer = raw.answer_to("e-1").await;
    assert_eq!(answer["error"]["code"], "function_not_found", "{answer}");
    // Kept before the answer: no flush here.
    let refusals = gateway
        .gateway
        .state()
        .access
        .audit
        .query(&capgate_catalog::audit::AuditQuery {
            object: Some("mail::send".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        refusals
            .iter()
            .any(|e| !e.allowed && e.subject == "worker:anonymous"),
        "{refusals:?}"
    );
    let listed = get_json(&admin(&gateway, "/queues")).await;
    assert_eq!(listed["queues"], json!([]), "{listed}");
}

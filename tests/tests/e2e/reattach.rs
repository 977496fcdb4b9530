//! Reconnecting workers take their registrations back without a window in
//! which calls to them fail, whichever of the old connection's teardown and
//! the new connection's `reattach` the gateway handles first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capgate_sdk::{CallOptions, Function, Worker};
use capgate_tests::*;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Who answered each call, in order, or why it failed.
#[derive(Default)]
struct Tally {
    answers: Mutex<Vec<Result<String, String>>>,
    by: [AtomicUsize; 2],
}

impl Tally {
    fn count(&self, tag: &str) -> usize {
        self.by[usize::from(tag == "b")].load(Ordering::SeqCst)
    }

    /// How many calls failed, and the first few reasons.
    fn failures(&self) -> (usize, Vec<String>) {
        let answers = self.answers.lock().unwrap();
        let failed: Vec<String> = answers.iter().filter_map(|a| a.clone().err()).collect();
        (failed.len(), failed.into_iter().take(3).collect())
    }
}

/// Calls `function` back to back until `stop`, recording every outcome.
fn call_continuously(
    caller: Worker,
    function: &'static str,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Worker> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let outcome = match caller.call(function, json!({})).await {
                Ok(value) => {
                    let tag = value["by"].as_str().unwrap_or("?").to_owned();
                    tally.by[usize::from(tag == "b")].fetch_add(1, Ordering::SeqCst);
                    Ok(tag)
                }
                Err(error) => Err(error.to_string()),
            };
            tally.answers.lock().unwrap().push(outcome);
        }
        caller
    })
}

async fn wait_for(tally: &Tally, tag: &str, at_least: usize) {
    eventually(&format!("{at_least} calls answered by {tag}"), || {
        tally.count(tag) >= at_least || tally.failures().0 > 0
    })
    .await;
}

/// Which side of the race the test lets the gateway see first.
#[derive(Clone, Copy)]
enum First {
    /// The old socket drops, then the new connection reattaches.
    OldConnectionDies,
    /// The new connection reattaches while the old socket still looks alive.
    Reattach,
}

/// Worker A serves `flaky::work`; it is replaced by B, which reattaches
/// with A's token, while a caller calls without pause. No call may fail,
/// every call after B's first answer is B's, and the catalog publishes no
/// change (agents' tool lists never flicker).
async fn reattach_under_calls(delays: FaultDelays, first: First) {
    let gateway = TestGateway::start_with_faults(delays, |config| {
        config.workers.reattach_grace = Duration::from_secs(30);
    })
    .await;
    let url = gateway.worker_url();
    let state = gateway.gateway.state().clone();
    // Idempotent, so a call that was on the wire to A when its socket died
    // is sent again to B; calls made after that never reach A at all.
    let registration = json!({
        "type": "registerfunction", "id": "flaky::work",
        "annotations": {"idempotentHint": true},
    });
    let mut a = RawPeer::connect(&url).await;
    a.send(registration.clone()).await;
    gateway.wait_live("flaky::work").await;
    let (a_id, a_token) = (a.worker_id.clone(), a.reattach_token.clone());
    let stop_a = Arc::new(Notify::new());
    let a_serving = a.answer_calls("a", stop_a.clone());

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let caller = Worker::connect(url.clone()).await.unwrap();
    let calling = call_continuously(caller, "flaky::work", tally.clone(), stop.clone());
    wait_for(&tally, "a", 20).await;
    let revision = state.catalog.revision();

    stop_a.notify_one();
    let a = a_serving.await.unwrap();
    let a = match first {
        First::OldConnectionDies => {
            a.kill();
            None
        }
        First::Reattach => Some(a),
    };
    let mut b = RawPeer::reattach(&url, &a_id, &a_token).await;
    // The replay, as the SDKs send it after `reattach`.
    b.send(registration).await;
    let b_id = b.worker_id.clone();
    let b_serving = b.answer_calls("b", Arc::new(Notify::new()));
    if let Some(a) = a {
        a.kill();
    }
    wait_for(&tally, "b", 20).await;
    stop.store(true, Ordering::SeqCst);
    calling.await.unwrap();

    assert_eq!(tally.failures(), (0, Vec::new()), "no call failed");
    let answers = tally.answers.lock().unwrap().clone();
    let first_b = answers
        .iter()
        .position(|a| a.as_deref() == Ok("b"))
        .unwrap();
    assert!(
        answers[first_b..].iter().all(|a| a.as_deref() == Ok("b")),
        "once B answered, A never did"
    );
    assert_eq!(
        state.catalog.revision(),
        revision,
        "the reconnect published no catalog change"
    );
    eventually("nothing is held any more", || {
        state.workers.held_count() == 0
    })
    .await;
    assert!(state.workers.by_worker_id(&a_id).is_none());
    let provider = state.catalog.resolve("flaky::work", None).unwrap();
    assert!(provider.others.is_empty(), "one provider: B");
    assert_eq!(
        state.workers.get(provider.provider).unwrap().worker_id,
        b_id
    );
    b_serving.abort();
}

/// Each ordering runs twice over: on the single-threaded runtime, where the
/// injected delays alone decide the order, and five times on four runtime
/// threads, where the gateway's tasks, the peers and the caller really run
/// at once.
macro_rules! on_both_runtimes {
    ($(#[$doc:meta])* $name:ident, $threaded:ident, $delays:expr, $first:expr) => {
        $(#[$doc])*
        #[tokio::test]
        async fn $name() {
            reattach_under_calls($delays, $first).await;
        }

        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $threaded() {
            for _ in 0..5 {
                reattach_under_calls($delays, $first).await;
            }
        }
    };
}

on_both_runtimes!(
    a_worker_whose_socket_dropped_reattaches_without_a_failed_call,
    on_threads_a_worker_whose_socket_dropped_reattaches_without_a_failed_call,
    FaultDelays::default(),
    First::OldConnectionDies
);

on_both_runtimes!(
    /// The old connection's teardown is slow (it holds the registry while the
    /// reattach arrives): the reattach waits for it, then takes over.
    a_slow_teardown_does_not_open_a_window,
    on_threads_a_slow_teardown_does_not_open_a_window,
    FaultDelays {
        teardown: Duration::from_millis(300),
        ..FaultDelays::default()
    },
    First::OldConnectionDies
);

on_both_runtimes!(
    /// The reattach is slow (it holds the registry while the old socket dies):
    /// the old connection's teardown waits, then finds nothing left to do.
    a_slow_reattach_over_a_half_open_connection_does_not_open_a_window,
    on_threads_a_slow_reattach_over_a_half_open_connection_does_not_open_a_window,
    FaultDelays {
        reattach: Duration::from_millis(300),
        ..FaultDelays::default()
    },
    First::Reattach
);

on_both_runtimes!(
    /// Both sides slow, reattach first.
    slow_on_both_sides_the_reattach_still_wins,
    on_threads_slow_on_both_sides_the_reattach_still_wins,
    FaultDelays {
        teardown: Duration::from_millis(200),
        reattach: Duration::from_millis(200),
    },
    First::Reattach
);

/// A call made while its only worker is away waits for the reattach (it is
/// not idempotent and was never sent, so nothing is retried); a function
/// the reattached worker does not register again is withdrawn after the
/// grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_made_while_the_worker_is_away_waits_for_its_reattach() {
    let gateway = TestGateway::start_with(|config| {
        // Long enough that a loaded machine cannot end the hold before B comes.
        config.workers.reattach_grace = Duration::from_secs(3);
    })
    .await;
    let url = gateway.worker_url();
    let state = gateway.gateway.state().clone();
    let mut a = RawPeer::connect(&url).await;
    a.send(json!({"type": "registerfunction", "id": "away::work"}))
        .await;
    gateway.wait_live("away::work").await;
    let (a_id, a_token) = (a.worker_id.clone(), a.reattach_token.clone());
    a.kill();
    eventually_eq("A is held", || state.workers.held_count(), 1).await;

    let caller = Worker::connect(url.clone()).await.unwrap();
    let call = tokio::spawn(async move { caller.call("away::work", json!({})).await });
    // The call reached dispatch and waits there for the held provider.
    let path = state.path.clone();
    eventually_eq("the call waits in dispatch", || path.in_flight(), 1).await;
    assert!(!call.is_finished(), "the call waits rather than failing");
    // B reattaches and never registers away::work again.
    let b = RawPeer::reattach(&url, &a_id, &a_token).await;
    let b_serving = b.answer_calls("b", Arc::new(Notify::new()));
    let answer = tokio::time::timeout(HANG, call)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap();
    assert_eq!(answer, json!({"by": "b"}));
    let catalog = state.catalog.clone();
    eventually("the function B did not replay is withdrawn", || {
        catalog.resolve("away::work", None).is_err()
    })
    .await;
    b_serving.abort();
}

/// A worker that never comes back: calls made during the hold wait, then
/// fail clearly when it ends (or at their own deadline if that is sooner),
/// and agents hear `list_changed` once the tool goes.
#[tokio::test]
async fn a_worker_that_never_comes_back_loses_its_functions_after_the_grace() {
    let gateway = TestGateway::start_with(|config| {
        // Long enough that the short-deadline call below ends inside the hold.
        config.workers.reattach_grace = Duration::from_secs(2);
    })
    .await;
    let url = gateway.worker_url();
    let state = gateway.gateway.state().clone();
    let mut a = RawPeer::connect(&url).await;
    a.send(json!({"type": "registerfunction", "id": "gone::work"}))
        .await;
    gateway.wait_live("gone::work").await;
    let client = legacy_client(&gateway.mcp_url()).await;
    let changed = client.service().tools_changed.clone();
    assert_eq!(client.list_all_tools().await.unwrap().len(), 1);
    a.kill();
    eventually_eq("A is held", || state.workers.held_count(), 1).await;

    let caller = Worker::connect(url.clone()).await.unwrap();
    let short = CallOptions {
        timeout: Some(Duration::from_millis(100)),
        ..CallOptions::default()
    };
    let error = caller
        .call_with("gone::work", json!({}), short)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("within 100 ms"), "{error}");
    let error = tokio::time::timeout(HANG, caller.call("gone::work", json!({})))
        .await
        .expect("the call ends with the hold, not at its deadline")
        .unwrap_err()
        .to_string();
    assert!(error.contains("did not reconnect"), "{error}");
    tokio::time::timeout(HANG, changed.notified())
        .await
        .expect("list_changed once the tool is gone");
    assert!(client.list_all_tools().await.unwrap().is_empty());
    assert_eq!(state.workers.held_count(), 0);
}

/// A reattach with a token that is not the previous connection's is not
/// honoured: the new connection starts afresh and the held registrations
/// stay with the connection they belong to until its grace ends.
#[tokio::test]
async fn a_reattach_with_the_wrong_token_takes_nothing() {
    let gateway = TestGateway::start_with(|config| {
        config.workers.reattach_grace = Duration::from_secs(30);
    })
    .await;
    let url = gateway.worker_url();
    let state = gateway.gateway.state().clone();
    let mut a = RawPeer::connect(&url).await;
    a.send(json!({"type": "registerfunction", "id": "owned::work"}))
        .await;
    gateway.wait_live("owned::work").await;
    let a_id = a.worker_id.clone();
    let a_provider = state.catalog.resolve("owned::work", None).unwrap().provider;
    a.kill();
    eventually_eq("A is held", || state.workers.held_count(), 1).await;
    let mut intruder = RawPeer::reattach(&url, &a_id, "not-the-token").await;
    // Frames of a connection are handled in order: once this call is
    // answered, the reattach before it has been decided.
    intruder
        .send(json!({"type": "invokefunction", "invocation_id": "1",
            "function_id": "engine::functions::list", "data": {}}))
        .await;
    let answer = intruder.recv().await;
    assert_eq!(answer["type"], "invocationresult", "{answer}");
    assert!(state.workers.is_held(a_provider), "still held for A");
    assert_eq!(
        state.catalog.resolve("owned::work", None).unwrap().provider,
        a_provider
    );
}

/// The Rust SDK behind a network cut: both ends see the socket drop, the
/// SDK reconnects with backoff and reattaches, and a caller calling all the
/// while sees no failure and agents see no change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sdk_worker_cut_off_by_the_network_comes_back_without_a_failed_call() {
    let gateway = TestGateway::start().await;
    let state = gateway.gateway.state().clone();
    let proxy = CuttableProxy::start(gateway.gateway.local_addr())
        .await
        .unwrap();
    let worker = Worker::connect(proxy.url_for(&gateway.worker_url()))
        .await
        .unwrap();
    worker.register(
        Function::new("net::work")
            .annotations(json!({"idempotentHint": true}))
            .handler(|_: Value, _| async { Ok(json!({"by": "a"})) }),
    );
    gateway.wait_live("net::work").await;
    let first_id = worker.worker_id().unwrap();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let calling = call_continuously(caller, "net::work", tally.clone(), stop.clone());
    wait_for(&tally, "a", 50).await;
    let revision = state.catalog.revision();
    proxy.cut();
    eventually("the worker reconnected", || {
        worker.worker_id().is_some_and(|id| id != first_id)
    })
    .await;
    let before = tally.count("a");
    wait_for(&tally, "a", before + 50).await;
    stop.store(true, Ordering::SeqCst);
    let caller = calling.await.unwrap();
    // Thousands of answered calls leave nothing behind in the SDK.
    assert_eq!(caller.calls_in_flight(), 0);
    assert_eq!(tally.failures(), (0, Vec::new()), "no call failed");
    assert_eq!(state.catalog.revision(), revision, "no catalog change");
    assert!(state.workers.by_worker_id(&first_id).is_none());
    assert_eq!(state.workers.held_count(), 0);
}

/// Calls the Rust SDK makes while it cannot reach the gateway wait: sent
/// after the reconnect if that comes within their deadline, failing with a
/// clear timeout if it does not.
#[tokio::test]
async fn calls_an_sdk_worker_makes_while_cut_off_wait_for_the_reconnect() {
    let gateway = TestGateway::start().await;
    let (_greeter, greeted) = greeter(&gateway.worker_url()).await;
    let proxy = CuttableProxy::start(gateway.gateway.local_addr())
        .await
        .unwrap();
    let worker = Worker::connect(proxy.url_for(&gateway.worker_url()))
        .await
        .unwrap();
    proxy.refuse(true);
    proxy.cut();
    eventually("the worker knows it is disconnected", || {
        worker.worker_id().is_none()
    })
    .await;
    let short = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        ..CallOptions::default()
    };
    let error = worker
        .call_with("hello::greet", json!({"name": "nobody"}), short)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("300 ms"), "{error}");
    assert_eq!(worker.calls_in_flight(), 0, "a timed-out call is forgotten");

    let waiting = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.call("hello::greet", json!({"name": "later"})).await })
    };
    eventually("the call is queued in the SDK", || {
        worker.calls_in_flight() == 1
    })
    .await;
    assert!(!waiting.is_finished(), "queued, not failed");
    proxy.refuse(false);
    let answer = tokio::time::timeout(HANG, waiting)
        .await
        .expect("answered after the reconnect")
        .unwrap()
        .unwrap();
    assert_eq!(answer["message"], "hello later");
    // The call whose caller gave up was never sent after the reconnect: the
    // greeter ran only the one that was still awaited.
    assert_eq!(greeted.load(Ordering::SeqCst), 1, "an expired call ran");
    // Answered, timed out: nothing of either call is kept.
    assert_eq!(worker.calls_in_flight(), 0);
}

/// A connection that goes silent without closing (half-open: the path to
/// the gateway stalls) is noticed by the SDK's own pings within two
/// intervals and replaced, instead of hanging the worker until the
/// gateway's much later verdict.
#[tokio::test]
async fn an_sdk_worker_on_a_stalled_connection_notices_and_reconnects() {
    let gateway = TestGateway::start_with(|config| {
        // The gateway's own liveness check must not be what ends it.
        config.workers.ping_interval = Duration::from_secs(600);
    })
    .await;
    let proxy = CuttableProxy::start(gateway.gateway.local_addr())
        .await
        .unwrap();
    let worker = Worker::builder(proxy.url_for(&gateway.worker_url()))
        .ping_interval(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let first_id = worker.worker_id().unwrap();
    proxy.stall();
    eventually("the worker reconnected on a new connection", || {
        worker.worker_id().is_some_and(|id| id != first_id)
    })
    .await;
    // The new connection works.
    let (_greeter, _) = greeter(&gateway.worker_url()).await;
    let answer = worker
        .call("hello::greet", json!({"name": "again"}))
        .await
        .unwrap();
    assert_eq!(answer["message"], "hello again");
}

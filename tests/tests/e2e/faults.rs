//! Workers under faults: silent connections, overload, cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use capgate_sdk::{CallOptions, Function, Worker};
use capgate_tests::*;
use serde_json::json;
use tokio::sync::Notify;

/// A worker that stops reading its socket is declared dead within two
/// ping intervals, and the call waiting on it fails then — not at the
/// call's 60 s deadline.
#[tokio::test]
async fn a_silent_worker_is_declared_dead_and_its_calls_fail_at_once() {
    let gateway = TestGateway::start_with(|config| {
        // Short enough to see, long enough that a loaded CI machine does
        // not starve the healthy caller for two intervals.
        config.workers.ping_interval = Duration::from_millis(250);
        config.limits.call_timeout = Duration::from_secs(60);
    })
    .await;
    let mut silent = RawPeer::connect(&gateway.worker_url()).await;
    silent
        .send(json!({"type": "registerfunction", "id": "silent::wait"}))
        .await;
    gateway.wait_live("silent::wait").await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    // `silent` is never read again: no pongs, no answers.
    let error = tokio::time::timeout(HANG, caller.call("silent::wait", json!({})))
        .await
        .expect("the call fails before the hang bound, far before its deadline")
        .unwrap_err();
    assert!(
        error.to_string().contains("disconnected before answering"),
        "{error}"
    );
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("the silent worker's function is offline", || {
        catalog.resolve("silent::wait", None).is_err()
    })
    .await;
    drop(silent);
}

/// A worker that keeps answering pings stays connected however long it is
/// idle: five pings, each answered, and it still provides its function.
#[tokio::test]
async fn an_idle_worker_that_answers_pings_stays() {
    let gateway = TestGateway::start_with(|config| {
        config.workers.ping_interval = Duration::from_millis(200);
    })
    .await;
    let mut idle = RawPeer::connect(&gateway.worker_url()).await;
    idle.send(json!({"type": "registerfunction", "id": "idle::work"}))
        .await;
    gateway.wait_live("idle::work").await;
    idle.wait_for_pings(5).await;
    let state = gateway.gateway.state();
    assert!(state.workers.by_worker_id(&idle.worker_id).is_some());
    assert!(state.catalog.resolve("idle::work", None).is_ok());
    // And it still answers a call.
    let stop = Arc::new(Notify::new());
    let serving = idle.answer_calls("idle", stop.clone());
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let answer = caller.call("idle::work", json!({})).await.unwrap();
    assert_eq!(answer, json!({"by": "idle"}));
    serving.abort();
}

fn held(entered: Arc<AtomicUsize>, release: Arc<Notify>) -> Function {
    Function::new("slow::held").handler(move |input, _| {
        let (entered, release) = (entered.clone(), release.clone());
        async move {
            entered.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            Ok(input)
        }
    })
}

/// Over a worker's in-flight limit a call is refused at once with an
/// overload error that says to retry; nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_in_flight_limit_calls_are_refused_at_once() {
    let gateway = TestGateway::start_with(|config| {
        config.limits.max_in_flight_per_worker = 2;
    })
    .await;
    let entered = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let provider = Worker::connect(gateway.worker_url()).await.unwrap();
    provider.register(held(entered.clone(), release.clone()));
    gateway.wait_live("slow::held").await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let first = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call("slow::held", json!({"n": 1})).await }
    });
    let second = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call("slow::held", json!({"n": 2})).await }
    });
    eventually("two calls are running", || {
        entered.load(Ordering::SeqCst) == 2
    })
    .await;
    let refused = caller
        .call("slow::held", json!({"n": 3}))
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("overloaded") && text.contains("retry"),
        "{text}"
    );
    let client = stateless_client(&gateway.mcp_url()).await;
    let result = call_tool(&client, "slow__held", json!({"n": 4}))
        .await
        .unwrap();
    assert_tool_error(&result, "retry in a moment");
    assert_eq!(entered.load(Ordering::SeqCst), 2, "refused calls never ran");
    release.notify_waiters();
    assert_eq!(first.await.unwrap().unwrap(), json!({"n": 1}));
    assert_eq!(second.await.unwrap().unwrap(), json!({"n": 2}));
}

/// An abandoned call reaches the handler as a cancellation: at its
/// deadline, and when the calling worker disconnects mid-call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_calls_are_cancelled_at_the_worker() {
    let gateway = TestGateway::start().await;
    let observed = Arc::new(AtomicBool::new(false));
    let provider = Worker::connect(gateway.worker_url()).await.unwrap();
    provider.register(cancellable(observed.clone()));
    gateway.wait_live("slow::cancellable").await;

    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let options = CallOptions {
        timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let error = caller
        .call_with("slow::cancellable", json!({}), options)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("200 ms"), "{error}");
    eventually("the handler saw the deadline's cancellation", || {
        observed.load(Ordering::SeqCst)
    })
    .await;

    observed.store(false, Ordering::SeqCst);
    let leaving = Worker::connect(gateway.worker_url()).await.unwrap();
    let call = tokio::spawn({
        let leaving = leaving.clone();
        async move { leaving.call("slow::cancellable", json!({})).await }
    });
    eventually("the call is running", || {
        gateway
            .gateway
            .state()
            .workers
            .list()
            .iter()
            .any(|w| !w.pending.is_empty())
    })
    .await;
    leaving.shutdown();
    let _ = call.await;
    eventually("the handler saw the disconnect's cancellation", || {
        observed.load(Ordering::SeqCst)
    })
    .await;
}

/// `pool::work` on a provider that labels its answers; `{"hold": true}`
/// waits for `release`.
fn labelled(id: &str, label: &'static str, release: Arc<Notify>, idempotent: bool) -> Function {
    let mut function = Function::new(id);
    if idempotent {
        function = function.annotations(json!({"idempotentHint": true}));
    }
    function.handler(move |input, _| {
        let release = release.clone();
        async move {
            if input["hold"] == true {
                release.notified().await;
            }
            Ok(json!({"from": label}))
        }
    })
}

/// Waits until `id@0.0.0` has `n` live providers.
async fn wait_providers(gateway: &TestGateway, id: &str, n: usize) {
    let catalog = gateway.gateway.state().catalog.clone();
    let id = capgate_catalog::FunctionId::parse(id).unwrap();
    eventually(&format!("{n} providers of {id}"), || {
        catalog.provider_count(&id, &"0.0.0".parse().unwrap()) == Some(n)
    })
    .await;
}

/// Starts a call of `id` with `{"hold": true}` and waits until a worker
/// holds it: that provider is now the busier one.
async fn hold(
    gateway: &TestGateway,
    caller: &Worker,
    id: &'static str,
) -> tokio::task::JoinHandle<Result<serde_json::Value, capgate_sdk::CallError>> {
    let call = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call(id, json!({"hold": true})).await }
    });
    let workers = gateway.gateway.state().workers.clone();
    eventually("a call is held", || {
        workers.list().iter().any(|w| w.pending.len() == 1)
    })
    .await;
    call
}

#[tokio::test]
async fn calls_go_to_the_least_loaded_provider() {
    let gateway = TestGateway::start().await;
    let release = Arc::new(Notify::new());
    let a = Worker::connect(gateway.worker_url()).await.unwrap();
    a.register(labelled("pool::work", "a", release.clone(), false));
    let b = Worker::connect(gateway.worker_url()).await.unwrap();
    b.register(labelled("pool::work", "b", release.clone(), false));
    wait_providers(&gateway, "pool::work", 2).await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let held = hold(&gateway, &caller, "pool::work").await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(caller.call("pool::work", json!({})).await.unwrap()["from"].clone());
    }
    release.notify_waiters();
    let busy = held.await.unwrap().unwrap()["from"].clone();
    assert!(
        answers.iter().all(|from| *from != busy),
        "every call went to the idle provider, not {busy}: {answers:?}"
    );
}

/// Which function is retried when its provider dies mid-call: only one
/// marked idempotent; another fails with the disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_idempotent_calls_are_retried_after_their_provider_dies() {
    for (id, idempotent) in [("idem::work", true), ("plain::work", false)] {
        let gateway = TestGateway::start().await;
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        // `doomed` never answers; `spare` answers, but is busier.
        let doomed = Worker::connect(gateway.worker_url()).await.unwrap();
        let mut hanging = Function::new(id);
        if idempotent {
            hanging = hanging.annotations(json!({"idempotentHint": true}));
        }
        doomed.register(hanging.handler({
            let entered = entered.clone();
            move |_, _| {
                let entered = entered.clone();
                async move {
                    entered.notify_one();
                    tokio::time::sleep(HANG * 2).await;
                    Ok(json!({"from": "doomed"}))
                }
            }
        }));
        let spare = Worker::connect(gateway.worker_url()).await.unwrap();
        spare.register(labelled(id, "spare", release.clone(), idempotent));
        spare.register(labelled("slow::other", "spare", release.clone(), false));
        wait_providers(&gateway, id, 2).await;
        gateway.wait_live("slow::other").await;
        let caller = Worker::connect(gateway.worker_url()).await.unwrap();
        let busy = hold(&gateway, &caller, "slow::other").await;
        let call = tokio::spawn({
            let caller = caller.clone();
            let id = id.to_owned();
            async move { caller.call(&id, json!({})).await }
        });
        tokio::time::timeout(HANG, entered.notified())
            .await
            .expect("the doomed provider got the call");
        doomed.shutdown();
        let outcome = tokio::time::timeout(HANG, call)
            .await
            .expect("no hang")
            .unwrap();
        if idempotent {
            assert_eq!(outcome.unwrap(), json!({"from": "spare"}), "{id}");
        } else {
            let error = outcome.unwrap_err().to_string();
            assert!(
                error.contains("disconnected before answering"),
                "{id}: {error}"
            );
        }
        release.notify_waiters();
        busy.await.unwrap().unwrap();
    }
}

/// Shutdown drains: calls in flight finish, new ones are refused at once,
/// and only then do the workers' connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_calls_in_flight_and_refuses_new_ones() {
    let TestGateway {
        gateway,
        data_dir: _data_dir,
    } = TestGateway::start_with(|config| config.server.shutdown_grace = HANG).await;
    let release = Arc::new(Notify::new());
    let provider = Worker::connect(gateway.worker_url()).await.unwrap();
    provider.register(labelled("drain::work", "provider", release.clone(), false));
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let state = gateway.state().clone();
    let catalog = state.catalog.clone();
    eventually("drain::work is live", || {
        catalog.resolve("drain::work", None).is_ok()
    })
    .await;
    let held = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call("drain::work", json!({"hold": true})).await }
    });
    eventually_eq("the call is in flight", || state.path.in_flight(), 1).await;
    let stopping = tokio::spawn(gateway.shutdown());
    eventually("draining began", || !state.path.is_accepting()).await;
    let refused = caller.call("drain::work", json!({})).await.unwrap_err();
    assert!(refused.to_string().contains("shutting down"), "{refused}");
    assert!(
        !stopping.is_finished(),
        "the gateway waits for the call in flight"
    );
    release.notify_waiters();
    assert_eq!(held.await.unwrap().unwrap(), json!({"from": "provider"}));
    tokio::time::timeout(HANG, stopping)
        .await
        .expect("stops after the drain")
        .unwrap();
}

/// A function has one owner: another identity cannot register it while
/// the owner is live; the owner's replicas (same identity) can.
#[tokio::test]
async fn another_identity_cannot_take_over_a_live_function() {
    let keys: Vec<(String, String)> = (0..2)
        .map(|_| capgate_gateway::identity::agents::new_key())
        .collect();
    let entries = ["billing", "ops"]
        .iter()
        .zip(&keys)
        .map(
            |(name, (_, digest))| capgate_gateway::config::WorkerConfig {
                name: (*name).into(),
                api_key_sha256: capgate_gateway::identity::config::key_hash(digest).unwrap(),
                tenant: None,
            },
        )
        .collect();
    let gateway = TestGateway::start_with(|config| config.identity.workers = entries).await;
    let connect = |token: String| {
        let url = gateway.worker_url();
        async move { Worker::builder(url).token(token).connect().await.unwrap() }
    };
    let release = Arc::new(Notify::new());
    let owner = connect(keys[0].0.clone()).await;
    owner.register(labelled("shared::work", "owner", release.clone(), false));
    gateway.wait_live("shared::work").await;

    let intruder = connect(keys[1].0.clone()).await;
    let refused = register_and_collect_rejections(
        &intruder,
        labelled("shared::work", "intruder", release.clone(), false),
    )
    .await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].code, "FUNCTION_NAMESPACE_CONFLICT");
    assert_eq!(refused[0].owner_worker_id, owner.worker_id());
    let message = refused[0].message.clone().unwrap_or_default();
    assert!(message.contains("provided by worker:billing"), "{message}");

    let replica = connect(keys[0].0.clone()).await;
    let accepted = register_and_collect_rejections(
        &replica,
        labelled("shared::work", "replica", release.clone(), false),
    )
    .await;
    assert!(accepted.is_empty(), "{accepted:?}");
    let id = capgate_catalog::FunctionId::parse("shared::work").unwrap();
    assert_eq!(
        gateway
            .gateway
            .state()
            .catalog
            .provider_count(&id, &"0.0.0".parse().unwrap()),
        Some(2)
    );
    // Once the owner identity is gone entirely, another may take the name.
    owner.shutdown();
    replica.shutdown();
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("shared::work is offline", || {
        catalog.resolve("shared::work", None).is_err()
    })
    .await;
    let accepted = register_and_collect_rejections(
        &intruder,
        labelled("shared::work", "intruder", release, false),
    )
    .await;
    assert!(accepted.is_empty(), "{accepted:?}");
}

/// A worker that answers a call twice: the caller gets the first answer,
/// the second is dropped, and the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_answer_to_one_call_is_dropped() {
    let gateway = TestGateway::start().await;
    let mut twice = RawPeer::connect(&gateway.worker_url()).await;
    twice
        .send(json!({"type": "registerfunction", "id": "twice::work"}))
        .await;
    gateway.wait_live("twice::work").await;
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let call = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call("twice::work", json!({})).await }
    });
    let invocation = twice.recv().await;
    assert_eq!(invocation["type"], "invokefunction");
    let id = invocation["invocation_id"].clone();
    // A version-4 UUID in its canonical text (lowercase, hyphenated), as
    // the protocol documents and the iii SDKs expect.
    let text = id.as_str().expect("the invocation id is a string");
    let parsed = uuid::Uuid::parse_str(text).expect("the invocation id is a UUID");
    assert_eq!(parsed.get_version_num(), 4, "{text}");
    assert_eq!(parsed.hyphenated().to_string(), text);
    for answer in [1, 2] {
        twice
            .send(json!({"type": "invocationresult", "invocation_id": id, "function_id": "twice::work", "result": answer}))
            .await;
    }
    assert_eq!(call.await.unwrap().unwrap(), json!(1));
    twice.send(json!({"type": "ping"})).await;
    assert_eq!(twice.recv().await["type"], "pong");
    // The next call is answered normally.
    let next = tokio::spawn(async move { caller.call("twice::work", json!({})).await });
    let invocation = twice.recv().await;
    twice
        .send(json!({"type": "invocationresult", "invocation_id": invocation["invocation_id"], "function_id": "twice::work", "result": 3}))
        .await;
    assert_eq!(next.await.unwrap().unwrap(), json!(3));
}

/// An MCP client that gives up (its HTTP request is closed mid-call) has
/// its call cancelled at the worker.
#[tokio::test]
async fn a_closed_mcp_request_cancels_the_call_at_the_worker() {
    let gateway = TestGateway::start().await;
    let observed = Arc::new(AtomicBool::new(false));
    let provider = Worker::connect(gateway.worker_url()).await.unwrap();
    provider.register(cancellable(observed.clone()));
    gateway.wait_live("slow::cancellable").await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "slow__cancellable", "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let request = reqwest::Client::new()
        .post(gateway.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "slow__cancellable")
        .timeout(Duration::from_millis(300))
        .json(&body)
        .send();
    // The client gives up after 300 ms and closes its connection.
    assert!(request.await.unwrap_err().is_timeout());
    eventually("the worker's handler saw the cancellation", || {
        observed.load(Ordering::SeqCst)
    })
    .await;
}

/// A legacy session's `notifications/cancelled` cancels the call at the
/// worker while the session (and its HTTP connections) stays open.
#[tokio::test]
async fn a_cancelled_notification_cancels_the_call_at_the_worker() {
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
    use rmcp::service::PeerRequestOptions;

    let gateway = TestGateway::start().await;
    let observed = Arc::new(AtomicBool::new(false));
    let provider = Worker::connect(gateway.worker_url()).await.unwrap();
    provider.register(cancellable(observed.clone()));
    gateway.wait_live("slow::cancellable").await;
    let client = legacy_client(&gateway.mcp_url()).await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new(
        "slow__cancellable",
    )));
    let handle = client
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let path = gateway.gateway.state().path.clone();
    eventually_eq("the call reached the worker", || path.in_flight(), 1).await;
    handle
        .cancel(Some("the user pressed stop".into()))
        .await
        .unwrap();
    eventually("the worker's handler saw the cancellation", || {
        observed.load(Ordering::SeqCst)
    })
    .await;
    eventually_eq("nothing is in flight", || path.in_flight(), 0).await;
    // The session itself lives on.
    assert_eq!(client.list_all_tools().await.unwrap().len(), 1);
}

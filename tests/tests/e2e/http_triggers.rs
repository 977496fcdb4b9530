//! `http` triggers: routes on the HTTP trigger listener calling functions on
//! the one invocation path, answered in the function's own shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use capgate_sdk::{Function, HandlerError, Worker};
use capgate_tests::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Status, headers and body (JSON when it parses, else the text).
async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = tokio::time::timeout(HANG, request.send())
        .await
        .expect("no hang")
        .expect("the listener answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A worker, its functions registered and its triggers attached: frames of
/// one connection are handled in order, so a round trip after them proves
/// the routes are served.
async fn worker_with(
    gateway: &TestGateway,
    functions: Vec<Function>,
    triggers: &[(&str, &str, Value)],
) -> Worker {
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    for function in functions {
        worker.register(function);
    }
    for (id, function_id, config) in triggers {
        worker.register_trigger(*id, "http", *function_id, config.clone());
    }
    worker
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    worker
}

fn echo_request(id: &str) -> Function {
    Function::new(id).handler(|input, _ctx| async move { Ok(json!({"seen": input})) })
}

#[tokio::test]
async fn a_route_passes_the_request_and_answers_with_the_functions_response() {
    let gateway = TestGateway::start().await;
    let orders = Function::new("shop::order").handler(|input, _ctx| async move {
        Ok(json!({
            "status_code": 201,
            "headers": {"Location": format!("/orders/{}", input["path_params"]["id"].as_str().unwrap_or("?"))},
            "body": {"id": input["path_params"]["id"], "qty": input["qty"], "page": input["query_params"]["page"],
                     "tag": input["headers"]["x-tag"], "method": input["method"], "path": input["path"]},
        }))
    });
    let csv = Function::new("shop::export").handler(|_input, _ctx| async move {
        Ok(json!({"status_code": 200, "headers": ["Content-Type: text/csv"], "body": "sku,qty\na,1\n"}))
    });
    let _worker = worker_with(
        &gateway,
        vec![orders, csv, echo_request("shop::echo")],
        &[
            (
                "orders",
                "shop::order",
                json!({"api_path": "/orders/:id", "http_method": "post"}),
            ),
            ("export", "shop::export", json!({"api_path": "export.csv"})),
            ("echo", "shop::echo", json!({"api_path": "/echo"})),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let (status, headers, body) = send(
        http.post(format!("{}/orders/a%2Fb?page=2", gateway.http_url()))
            .header("x-tag", "blue")
            .json(&json!({"qty": 3})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["location"], "/orders/a/b");
    assert_eq!(
        body,
        json!({"id": "a/b", "qty": 3, "page": "2", "tag": "blue", "method": "POST", "path": "/orders/:id"})
    );
    let (status, headers, body) =
        send(http.get(format!("{}/export.csv", gateway.http_url()))).await;
    assert_eq!((status, body), (200, json!("sku,qty\na,1\n")));
    assert_eq!(headers["content-type"], "text/csv");
    // Any other result is the JSON body (trace context: held-route test).
    let (status, _, body) = send(http.get(format!("{}/echo", gateway.http_url()))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["seen"]["trigger"],
        json!({"type": "http", "path": "/echo", "method": "GET"})
    );
    assert_eq!(body["seen"]["body"], Value::Null);
    // HEAD is served by the GET route, without a body.
    let head = http
        .head(format!("{}/echo", gateway.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.bytes().await.unwrap().len(), 0);
}

#[tokio::test]
async fn typed_input_from_the_body_is_checked_against_the_schema() {
    let gateway = TestGateway::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let add = Function::new("cart::add")
        .input_schema(json!({
            "type": "object",
            "properties": {"cart": {"type": "string"}, "sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
            "required": ["cart", "sku", "qty"], "additionalProperties": false
        }))
        .handler(move |input, _ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(json!({"added": input})) }
        });
    let _worker = worker_with(
        &gateway,
        vec![add],
        &[(
            "add",
            "cart::add",
            json!({"api_path": "/carts/:cart/items", "http_method": "POST", "input": "body"}),
        )],
    )
    .await;
    let url = format!("{}/carts/c-1/items", gateway.http_url());
    let http = reqwest::Client::new();
    let (status, _, body) = send(http.post(&url).json(&json!({"sku": "a", "qty": 2}))).await;
    assert_eq!(
        (status, body),
        (200, json!({"added": {"cart": "c-1", "sku": "a", "qty": 2}}))
    );
    let (status, _, body) = send(
        http.post(&url)
            .json(&json!({"sku": "a", "qty": 0, "colour": "red"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_ARGUMENTS");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/qty") && message.contains("colour"),
        "{message}"
    );
    let (status, _, body) = send(http.post(&url).json(&json!(["not", "an", "object"]))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON object body"),
        "{body}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "bad requests never reach the worker"
    );
}

#[tokio::test]
async fn failures_answer_with_statuses_that_say_what_to_do() {
    let gateway = TestGateway::start_with(|config| {
        config.limits.max_frame_bytes = 64 * 1024;
        config.limits.max_in_flight_per_worker = 1;
    })
    .await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (began, held) = (started.clone(), release.clone());
    let busy = Function::new("ops::busy").handler(move |_input, _ctx| {
        let (began, held) = (began.clone(), held.clone());
        async move {
            began.notify_one();
            held.notified().await;
            Ok(json!("done"))
        }
    });
    let sluggish =
        Function::new("ops::sluggish")
            .timeout_ms(300)
            .handler(|_input, _ctx| async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(json!("late"))
            });
    let broken = Function::new("ops::broken").handler(|_input, _ctx| async move {
        Err::<Value, _>(HandlerError::with_code("OUT_OF_STOCK", "sku a is sold out"))
    });
    let _worker = worker_with(
        &gateway,
        vec![busy, sluggish, broken],
        &[
            ("busy", "ops::busy", json!({"api_path": "/busy"})),
            (
                "sluggish",
                "ops::sluggish",
                json!({"api_path": "/sluggish"}),
            ),
            (
                "broken",
                "ops::broken",
                json!({"api_path": "/broken", "http_method": "POST"}),
            ),
        ],
    )
    .await;
    let base = gateway.http_url();
    let http = reqwest::Client::new();
    let (status, _, body) = send(http.get(format!("{base}/nowhere"))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, headers, body) = send(http.get(format!("{base}/broken"))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (405, json!("method_not_allowed"))
    );
    assert_eq!(headers["allow"], "POST");
    let (status, _, body) = send(
        http.post(format!("{base}/broken"))
            .body("x".repeat(100 * 1024)),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );
    // The function's own error: 500 with its code and message, as iii answers.
    let (status, _, body) = send(http.post(format!("{base}/broken"))).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["error"],
        json!({"code": "OUT_OF_STOCK", "message": "sku a is sold out"})
    );
    // Past the function's deadline: 504.
    let (status, _, body) = send(http.get(format!("{base}/sluggish"))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (504, json!("TIMEOUT")),
        "{body}"
    );
    // One call in flight is this worker's limit: the next is 503 with Retry-After.
    let first = tokio::spawn(send(http.get(format!("{base}/busy"))));
    tokio::time::timeout(HANG, started.notified())
        .await
        .expect("the first call runs");
    let (status, headers, body) = send(http.get(format!("{base}/busy"))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("overloaded")),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");
    release.notify_one();
    assert_eq!(first.await.unwrap().2, json!("done"));
}

#[tokio::test]
async fn a_condition_function_lets_requests_through_or_answers_422() {
    let gateway = TestGateway::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let allowed = Function::new("gate::allowed")
        .handler(|input, _ctx| async move { Ok(json!(input["headers"]["x-plan"] == "pro")) });
    let report = Function::new("gate::report").handler(move |_input, _ctx| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(json!({"report": "ready"})) }
    });
    let _worker = worker_with(
        &gateway,
        vec![allowed, report],
        &[(
            "report",
            "gate::report",
            json!({"api_path": "/report", "condition_function_id": "gate::allowed"}),
        )],
    )
    .await;
    let url = format!("{}/report", gateway.http_url());
    let http = reqwest::Client::new();
    let (status, _, body) = send(http.get(&url).header("x-plan", "free")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "CONDITION_NOT_MET");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let (status, _, body) = send(http.get(&url).header("x-plan", "pro")).await;
    assert_eq!((status, body), (200, json!({"report": "ready"})));
}

#[tokio::test]
async fn routes_are_called_as_their_owner_or_as_the_agent_the_request_names() {
    let (alice, key) = agent_identity("alice", &[]);
    let (worker_config, worker_key) = worker_identity("shop");
    let gateway = TestGateway::start_with(move |config| {
        config.identity.agents.push(alice);
        config.identity.workers.push(worker_config);
    })
    .await;
    let worker = Worker::builder(gateway.worker_url())
        .token(worker_key)
        .connect()
        .await
        .unwrap();
    worker.register(echo_request("shop::whoami"));
    worker.register_trigger(
        "mine",
        "http",
        "shop::whoami",
        json!({"api_path": "/as-owner"}),
    );
    worker.register_trigger(
        "theirs",
        "http",
        "shop::whoami",
        json!({"api_path": "/as-agent", "auth": "agent"}),
    );
    worker
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let (status, _, _) = send(http.get(format!("{}/as-owner", gateway.http_url()))).await;
    assert_eq!(status, 200);
    let (status, headers, body) = send(http.get(format!("{}/as-agent", gateway.http_url()))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("unauthorized")),
        "{body}"
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, body) = send(
        http.get(format!("{}/as-agent", gateway.http_url()))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["seen"]["headers"].get("authorization").is_none(),
        "the key never reaches the worker: {body}"
    );
    // The audit log names who called: the owner, then the agent.
    assert_eq!(
        audited_subjects(&gateway, "shop::whoami").await,
        ["worker:shop", "agent:alice"]
    );
}

/// Who called `function`, by its audited calls, oldest first.
async fn audited_subjects(gateway: &TestGateway, function: &str) -> Vec<String> {
    let audit = gateway.gateway.state().access.audit.clone();
    audit.flush().await.unwrap();
    audit
        .query(&capgate_catalog::audit::AuditQuery {
            object: Some(function.into()),
            kind: Some("call".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.subject)
        .collect()
}

#[tokio::test]
async fn cross_origin_pages_are_refused_unless_the_route_allows_them() {
    let gateway = TestGateway::start().await;
    let _worker = worker_with(
        &gateway,
        vec![echo_request("web::echo")],
        &[
            ("open", "web::echo", json!({"api_path": "/open", "http_method": "POST",
                "cors": {"origins": ["https://app.example"], "headers": ["content-type"], "max_age_s": 600}})),
            ("closed", "web::echo", json!({"api_path": "/closed"})),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let base = gateway.http_url();
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/open"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST");
    let (status, headers, _) = send(preflight).await;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(headers["access-control-allow-methods"], "POST");
    assert_eq!(headers["access-control-max-age"], "600");
    let (status, headers, _) = send(
        http.post(format!("{base}/open"))
            .header("origin", "https://app.example"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let (status, _, body) = send(
        http.post(format!("{base}/open"))
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("origin_not_allowed"))
    );
    // Without CORS configured, capgate grants no page anything (iii answers `*`).
    let (status, headers, _) = send(
        http.get(format!("{base}/closed"))
            .header("origin", "https://app.example"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn bad_registrations_are_answered_in_triggerregistrationresult() {
    let (first_config, first_key) = worker_identity("first");
    let (second_config, second_key) = worker_identity("second");
    let gateway = TestGateway::start_with(move |config| {
        config.identity.workers = vec![first_config, second_config];
    })
    .await;
    let as_worker = |key: &str| format!("{}?token={key}", gateway.worker_url());
    let mut first = RawPeer::connect(&as_worker(&first_key)).await;
    first
        .send(
            json!({"type": "registertrigger", "id": "t1", "trigger_type": "http",
            "function_id": "a::b", "config": {"api_path": "/taken/:id", "http_method": "PUT"}}),
        )
        .await;
    first.send(json!({"type": "ping"})).await;
    assert_eq!(
        first.recv().await,
        json!({"type": "pong"}),
        "accepted without an answer, as in iii"
    );
    let mut peer = RawPeer::connect(&as_worker(&second_key)).await;
    let cases = [
        (json!({"api_path": "/a b"}), "http", "contains ' '"),
        (
            json!({"api_path": "/x", "http_method": "GE T"}),
            "http",
            "not an HTTP method",
        ),
        (
            json!({"api_path": "/x", "colour": "red"}),
            "http",
            "unknown field `colour`",
        ),
        (
            json!({"http_method": "GET"}),
            "http",
            "missing field `api_path`",
        ),
        (
            json!({"api_path": "/x", "input": "xml"}),
            "http",
            "unknown variant `xml`",
        ),
        (
            json!({"api_path": "/taken/:other", "http_method": "put"}),
            "http",
            "PUT /taken/:id is already served by trigger 't1' of worker:first",
        ),
        (
            json!({"api_path": "/x"}),
            "smoke-signal",
            "not supported by this capgate (supported: cron, durable:subscriber, engine::functions-available, http, state, subscribe)",
        ),
        (
            json!({"expression": "0 61 * * * *"}),
            "cron",
            "is not a cron expression",
        ),
        (
            json!({"expression": "0 0 * * *"}),
            "cron",
            "has 5 fields; use 6 with seconds first",
        ),
        (
            json!({"expression": "0 0 3 * * *", "timezone": "CET+1"}),
            "cron",
            "'CET+1' is not an IANA time zone",
        ),
    ];
    for (index, (config, trigger_type, needle)) in cases.into_iter().enumerate() {
        let id = format!("bad-{index}");
        peer.send(
            json!({"type": "registertrigger", "id": id, "trigger_type": trigger_type,
            "function_id": "a::b", "config": config}),
        )
        .await;
        let answer = peer
            .recv_until("a trigger refusal", |frame| {
                frame["type"] == "triggerregistrationresult"
            })
            .await;
        assert_eq!(answer["id"], id.as_str());
        assert_eq!(
            answer["error"]["code"], "trigger_registration_failed",
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{config}: {message}");
    }
}

#[tokio::test]
async fn a_route_ends_with_its_worker_and_another_may_take_it() {
    let gateway = TestGateway::start().await;
    let worker = worker_with(
        &gateway,
        vec![echo_request("a::echo")],
        &[("route", "a::echo", json!({"api_path": "/shared"}))],
    )
    .await;
    let url = format!("{}/shared", gateway.http_url());
    assert_eq!(send(reqwest::Client::new().get(&url)).await.0, 200);
    worker.shutdown();
    let http = reqwest::Client::new();
    let mut gone = false;
    for _ in 0..200 {
        if send(http.get(&url)).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "the route outlived its worker");
    let _next = worker_with(
        &gateway,
        vec![echo_request("b::echo")],
        &[("route", "b::echo", json!({"api_path": "/shared"}))],
    )
    .await;
    let (status, _, body) = send(http.get(&url)).await;
    assert_eq!(status, 200);
    assert_eq!(body["seen"]["path"], "/shared");
}

/// Operators see every trigger with the calls it made, each call's audit
/// entry names the trigger, and an operator can stop one.
#[tokio::test]
async fn operators_see_each_triggers_calls_and_can_stop_it() {
    let gateway = TestGateway::start().await;
    let broken = Function::new("ops::broken")
        .handler(|_input, _ctx| async move { Err::<Value, _>(HandlerError::new("no")) });
    let _worker = worker_with(
        &gateway,
        vec![echo_request("ops::echo"), broken],
        &[
            ("echo-route", "ops::echo", json!({"api_path": "/echo"})),
            (
                "broken-route",
                "ops::broken",
                json!({"api_path": "/broken"}),
            ),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    for path in ["/echo", "/echo", "/broken"] {
        send(http.get(format!("{}{path}", gateway.http_url()))).await;
    }
    let admin = format!("http://{}/api/v1/triggers", gateway.gateway.local_addr());
    let (status, _, listed) = send(http.get(&admin)).await;
    assert_eq!(status, 200, "{listed}");
    let row = |id: &str| {
        listed["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is not listed: {listed}"))
    };
    let echo = row("echo-route");
    assert_eq!(
        (&echo["trigger_type"], &echo["function_id"], &echo["owner"]),
        (
            &json!("http"),
            &json!("ops::echo"),
            &json!("worker:anonymous")
        )
    );
    assert_eq!((&echo["fires"], &echo["failures"]), (&json!(2), &json!(0)));
    assert!(
        echo["last_fire_ms"].as_i64().unwrap() > 1_700_000_000_000,
        "{echo}"
    );
    let broken = row("broken-route");
    assert_eq!(
        (&broken["fires"], &broken["failures"]),
        (&json!(1), &json!(1))
    );
    // Each call's audit entry names the trigger that made it.
    let audit = gateway.gateway.state().access.audit.clone();
    audit.flush().await.unwrap();
    let entries = audit
        .query(&capgate_catalog::audit::AuditQuery {
            object: Some("ops::echo".into()),
            kind: Some("call".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0].detail["trigger"],
        json!({"type": "http", "id": "echo-route"})
    );
    // An operator stops the route: it is gone, and a second removal says so.
    let owner_key = echo["owner_key"].as_str().unwrap();
    let (status, _, body) = send(http.delete(format!("{admin}/{owner_key}/echo-route"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        send(http.get(format!("{}/echo", gateway.http_url())))
            .await
            .0,
        404
    );
    let (status, _, body) = send(http.delete(format!("{admin}/{owner_key}/echo-route"))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}

/// An operator's trigger is owned by the operator, kept in the store and
/// started again after a restart; removing it forgets it.
#[tokio::test]
async fn an_operators_trigger_is_kept_across_a_restart_until_removed() {
    let gateway = TestGateway::start().await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(echo_request("ops::echo"));
    gateway.wait_live("ops::echo").await;
    let http = reqwest::Client::new();
    let admin =
        |gateway: &TestGateway| format!("http://{}/api/v1/triggers", gateway.gateway.local_addr());
    let register = json!({"id": "ops-route", "trigger_type": "http", "function_id": "ops::echo",
        "config": {"api_path": "/ops"}});
    let (status, _, body) = send(http.post(admin(&gateway)).json(&register)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"owner_key": "agent:anonymous", "id": "ops-route"})
    );
    assert_eq!(
        send(http.get(format!("{}/ops", gateway.http_url())))
            .await
            .0,
        200
    );
    // Refusals say what was wrong.
    for (bad, needle) in [
        (
            json!({"id": "x", "trigger_type": "smoke", "function_id": "ops::echo"}),
            "not supported",
        ),
        (
            json!({"id": "x", "trigger_type": "http", "function_id": "ops::echo", "config": {}}),
            "missing field `api_path`",
        ),
        (
            json!({"id": "x", "function_id": "ops::echo"}),
            "trigger_type",
        ),
    ] {
        let (status, _, body) = send(http.post(admin(&gateway)).json(&bad)).await;
        assert_eq!(status / 100, 4, "{bad}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{bad}: {message}");
    }

    let gateway = gateway.restart().await;
    gateway.wait_live("ops::echo").await;
    let (status, _, body) = send(http.get(format!("{}/ops", gateway.http_url()))).await;
    assert_eq!(status, 200, "the stored route was started again: {body}");
    assert_eq!(
        audited_subjects(&gateway, "ops::echo")
            .await
            .last()
            .map(String::as_str),
        Some("agent:anonymous")
    );

    let (status, _, _) =
        send(http.delete(format!("{}/agent%3Aanonymous/ops-route", admin(&gateway)))).await;
    assert_eq!(status, 200);
    let gateway = gateway.restart().await;
    assert_eq!(
        send(http.get(format!("{}/ops", gateway.http_url())))
            .await
            .0,
        404
    );
    worker.shutdown();
}

/// `[[triggers]]` start with the gateway, owned by the agent they name; one
/// that cannot start stops the start, naming it.
#[tokio::test]
async fn configured_triggers_start_with_the_gateway_as_their_owner() {
    use capgate_gateway::config::ConfiguredTrigger;
    let route = |id: &str, owner: &str, path: &str| ConfiguredTrigger {
        id: id.into(),
        trigger_type: "http".into(),
        function_id: "cfg::echo".into(),
        owner: owner.into(),
        config: json!({"api_path": path}),
    };
    let configured = vec![route("cfg-route", "ops", "/cfg")];
    let gateway = TestGateway::start_with(move |config| config.triggers = configured).await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(echo_request("cfg::echo"));
    gateway.wait_live("cfg::echo").await;
    let (status, _, body) =
        send(reqwest::Client::new().get(format!("{}/cfg", gateway.http_url()))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(audited_subjects(&gateway, "cfg::echo").await, ["agent:ops"]);
    worker.shutdown();

    // Two owners claiming one route: the start is refused, naming the entry.
    let mut config = capgate_gateway::Config::default();
    let dir = tempfile::tempdir().unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config.server.data_dir = dir.path().to_owned();
    config.triggers = vec![route("a", "ops", "/same"), route("b", "billing", "/same")];
    let error = capgate_gateway::Gateway::start(config)
        .await
        .err()
        .expect("the start is refused")
        .to_string();
    assert!(
        error.contains("trigger 'b' cannot start")
            && error.contains("already served by trigger 'a' of agent:ops"),
        "{error}"
    );
}

/// Registers `held::echo` and its `/held` route, as a worker's replay does.
async fn register_held_route(peer: &mut RawPeer) {
    peer.send(json!({"type": "registerfunction", "id": "held::echo"}))
        .await;
    peer.send(
        json!({"type": "registertrigger", "id": "held-route", "trigger_type": "http",
        "function_id": "held::echo", "config": {"api_path": "/held"}}),
    )
    .await;
}

/// A worker's routes are held with its functions while it reconnects: a
/// request during the gap waits for the reattached worker instead of
/// finding no route; without a reattach the route goes when the hold ends.
#[tokio::test]
async fn a_route_is_held_through_its_workers_reattach() {
    let gateway = TestGateway::start_with(|config| {
        config.workers.reattach_grace = Duration::from_secs(2);
    })
    .await;
    let mut first = RawPeer::connect(&gateway.worker_url()).await;
    register_held_route(&mut first).await;
    first.send(json!({"type": "ping"})).await;
    assert_eq!(first.recv().await, json!({"type": "pong"}));
    let (old_id, token) = (first.worker_id.clone(), first.reattach_token.clone());
    first.kill();
    let state = gateway.gateway.state().clone();
    eventually_eq("the worker is held", || state.workers.held_count(), 1).await;

    let url = format!("{}/held", gateway.http_url());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let waiting = tokio::spawn(send(
        reqwest::Client::new()
            .get(url.clone())
            .header("traceparent", traceparent),
    ));
    eventually_eq(
        "the request waits for the provider",
        || state.path.in_flight(),
        1,
    )
    .await;
    let mut second = RawPeer::reattach(&gateway.worker_url(), &old_id, &token).await;
    register_held_route(&mut second).await;
    let call = second
        .recv_until("the waiting request's call", |frame| {
            frame["type"] == "invokefunction"
        })
        .await;
    assert_eq!(call["data"]["trigger"]["type"], "http");
    assert_eq!(
        call["traceparent"], traceparent,
        "trace context travels with the call"
    );
    second
        .send(
            json!({"type": "invocationresult", "invocation_id": call["invocation_id"],
            "function_id": "held::echo", "result": {"answered_by": "the reattached worker"}}),
        )
        .await;
    let (status, _, body) = waiting.await.unwrap();
    assert_eq!(
        (status, body),
        (200, json!({"answered_by": "the reattached worker"}))
    );

    // Gone for good: the route goes when the hold ends.
    second.kill();
    eventually_eq("the worker is held again", || state.workers.held_count(), 1).await;
    eventually_eq("the hold ended", || state.workers.held_count(), 0).await;
    assert_eq!(send(reqwest::Client::new().get(url)).await.0, 404);
}

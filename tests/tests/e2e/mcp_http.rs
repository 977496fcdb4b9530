//! Raw HTTP against /mcp: the stateless fast path answers exactly as rmcp
//! does, and anything unusual still gets rmcp's own answer.

use std::sync::atomic::Ordering;

use capgate_tests::*;
use serde_json::{Value, json};

const META: &str = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

fn call_body(id: u64, name: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": serde_json::from_str::<Value>(META).unwrap()}
    })
}

/// The headers of a stateless `tools/call` of `name`.
fn stateless(name: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", name),
    ]
}

/// POSTs `body` and reads the JSON-RPC answer, whether sent as JSON or SSE.
async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let (status, _, answer) = post_mcp(url, headers, body).await;
    (status, answer)
}

/// `DELETE /mcp` for a legacy session.
async fn delete_session(url: &str, session: &str) -> reqwest::Response {
    reqwest::Client::new()
        .delete(url)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap()
}

/// A legacy `initialize` POST, without a session.
async fn legacy_initialize(url: &str) -> reqwest::Response {
    mcp_post(url, &[])
        .body(initialize_body("2025-06-18").to_string())
        .send()
        .await
        .unwrap()
}

/// The session id an `initialize` answer carries (the test fails without one).
fn session_id(response: &reqwest::Response) -> String {
    response.headers()["mcp-session-id"]
        .to_str()
        .expect("the session id is text")
        .to_owned()
}

/// The JSON-RPC error of `response`, which must have `status` and a message
/// containing `needle`.
async fn json_rpc_error(response: reqwest::Response, status: u16, needle: &str) -> Value {
    assert_eq!(response.status(), status);
    let answer: Value = response.json().await.unwrap();
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{answer}");
    answer
}

#[tokio::test]
async fn the_fast_path_and_rmcp_give_the_same_answers() {
    let gateway = TestGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    for arguments in [json!({"name": "fast"}), json!({"name": 5})] {
        let body = call_body(1, "hello__greet", arguments.clone());
        // A plain stateless call takes the fast path...
        let (status, fast) = post(&url, &stateless("hello__greet"), &body).await;
        assert_eq!(status, 200);
        if arguments["name"].is_string() {
            // ...and the same call with an Mcp-Param header goes through rmcp.
            let mut via_rmcp = stateless("hello__greet");
            via_rmcp.push(("mcp-param-name", "fast"));
            let (_, slow) = post(&url, &via_rmcp, &body).await;
            assert_eq!(fast, slow, "fast path and rmcp differ");
            assert_eq!(
                fast["result"]["structuredContent"],
                json!({"message": "hello fast"})
            );
        } else {
            assert_eq!(fast["result"]["isError"], true, "{fast}");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn headers_that_disagree_with_the_body_get_rmcps_header_mismatch() {
    let gateway = TestGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let body = call_body(2, "hello__greet", json!({"name": "x"}));
    let (status, answer) = post(&gateway.mcp_url(), &stateless("other__tool"), &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], -32020, "{answer}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unknown_tools_over_raw_http_are_rmcps_unknown_tool_error() {
    let gateway = TestGateway::start().await;
    let body = call_body(3, "nope__missing", json!({}));
    let (_, answer) = post(&gateway.mcp_url(), &stateless("nope__missing"), &body).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unknown tool"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_for_a_plain_call() {
    let gateway = TestGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let body = call_body(4, "hello__greet", json!({"name": "x"}));
    let mut headers = stateless("hello__greet");
    headers.push(("host", "attacker.example"));
    let response = mcp_post(&gateway.mcp_url(), &headers)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_and_oversized_mcp_bodies_get_json_rpc_errors() {
    let gateway = TestGateway::start_with(|config| config.limits.max_frame_bytes = 64 * 1024).await;
    let headers = stateless("hello__greet");
    let send = |body: String| mcp_post(&gateway.mcp_url(), &headers).body(body).send();
    // Not JSON, a batch, not JSON-RPC 2.0: a JSON-RPC error each, on the
    // stateless headers (the fast path) and without them (rmcp's path).
    for path_headers in [headers.clone(), Vec::new()] {
        for (body, code, needle) in [
            ("{not json", -32700, "Parse error"),
            // Broken inside a field no reader keeps, and a broken batch:
            // still not JSON, whatever reads the rest.
            (
                r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "extra": [1,}"#,
                -32700,
                "Parse error",
            ),
            (r#"[{"jsonrpc": "2.0", "id": 1},"#, -32700, "Parse error"),
            (
                r#"{"jsonrpc": 2, "id": 1, "method": "tools/list"}"#,
                -32600,
                "\"jsonrpc\": \"2.0\"",
            ),
            (
                r#"[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]"#,
                -32600,
                "batches",
            ),
            (
                r#"{"id": 1, "method": "tools/list"}"#,
                -32600,
                "\"jsonrpc\": \"2.0\"",
            ),
            (r#""just a string""#, -32600, "JSON-RPC 2.0 object"),
        ] {
            let response = mcp_post(&gateway.mcp_url(), &path_headers)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{body}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
            assert_eq!(answer["id"], Value::Null, "{answer}");
            assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(needle),
                "{body}: {answer}"
            );
        }
    }
    let huge = call_body(5, "hello__greet", json!({"name": "x".repeat(100 * 1024)})).to_string();
    let response = send(huge).await.unwrap();
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes"),
        "{answer}"
    );
    // The gateway still serves.
    let client = stateless_client(&gateway.mcp_url()).await;
    assert!(client.list_all_tools().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_2025_06_18_session_initializes_and_lists_tools() {
    let gateway = TestGateway::start().await;
    let (_worker, _) = greeter(&gateway.worker_url()).await;
    let initialize = initialize_body("2025-06-18");
    let response = mcp_post(&gateway.mcp_url(), &[])
        .body(initialize.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session = session_id(&response);
    let text = response.text().await.unwrap();
    assert!(text.contains(r#""protocolVersion":"2025-06-18""#), "{text}");
    assert!(text.contains(r#""listChanged":true"#), "{text}");

    let session_headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = mcp_post(&gateway.mcp_url(), &session_headers)
        .body(initialized.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, answer) = post(&gateway.mcp_url(), &session_headers, &list).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["result"]["tools"][0]["name"], "hello__greet",
        "{answer}"
    );
}

#[tokio::test]
async fn large_tool_lists_come_in_pages_alike_on_every_path() {
    let gateway = TestGateway::start().await;
    let worker = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    for n in 0..2_500 {
        worker.register(
            capgate_sdk::Function::new(format!("bulk::fn_{n:04}"))
                .description(format!("bulk function {n}"))
                .handler(|_, _| async { Ok(json!({})) }),
        );
    }
    worker
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();

    // Raw stateless requests take the fast path: three pages, in id order.
    let list = |cursor: Option<&str>| {
        let mut params = json!({"_meta": serde_json::from_str::<Value>(META).unwrap()});
        if let Some(cursor) = cursor {
            params["cursor"] = json!(cursor);
        }
        json!({"jsonrpc": "2.0", "id": "l", "method": "tools/list", "params": params})
    };
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut via_rmcp_headers = headers.to_vec();
    via_rmcp_headers.push(("mcp-param-x", "1"));
    loop {
        let (status, answer) = post(&gateway.mcp_url(), &headers, &list(cursor.as_deref())).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["id"], "l");
        // What 2026-07-28 requires of a list result, as rmcp answers it.
        assert_eq!(answer["result"]["resultType"], "complete");
        assert_eq!(answer["result"]["ttlMs"], 0);
        assert_eq!(answer["result"]["cacheScope"], "private");
        let (_, slow) = post(
            &gateway.mcp_url(),
            &via_rmcp_headers,
            &list(cursor.as_deref()),
        )
        .await;
        assert_eq!(answer, slow, "the fast path and rmcp give the same page");
        let tools = answer["result"]["tools"].as_array().unwrap();
        assert!(tools.len() <= 1000);
        names.extend(tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        pages += 1;
        match answer["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((pages, names.len()), (3, 2_500));
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // A cursor the gateway never handed out is rmcp's invalid-params error.
    let (_, answer) = post(&gateway.mcp_url(), &headers, &list(Some("page-99"))).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("names no page"),
        "{answer}"
    );

    // rmcp clients on both protocols follow the cursors to the same tools.
    let legacy = legacy_client(&gateway.mcp_url()).await;
    let stateless = stateless_client(&gateway.mcp_url()).await;
    let via_rmcp = legacy.list_all_tools().await.unwrap();
    let via_fast_path = stateless.list_all_tools().await.unwrap();
    assert_eq!(via_rmcp.len(), 2_500);
    assert_eq!(via_rmcp, via_fast_path);
    assert_eq!(
        via_rmcp
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>(),
        names
    );
}

/// The audit entries of calls to `object`, as the gateway itself reads them.
async fn call_audits(gateway: &TestGateway, object: &str) -> usize {
    let log = &gateway.gateway.state().access.audit;
    log.flush().await.unwrap();
    let query = capgate_catalog::audit::AuditQuery {
        kind: Some("call".into()),
        object: Some(object.into()),
        ..Default::default()
    };
    log.query(&query).await.unwrap().len()
}

#[tokio::test]
async fn an_unknown_stateless_tool_runs_the_path_once_and_answers_as_rmcp_does() {
    let gateway = TestGateway::start().await;
    let url = gateway.mcp_url();
    let body = call_body(3, "nope__missing", json!({}));
    // The fast path answers it.
    let (status, fast) = post(&url, &stateless("nope__missing"), &body).await;
    assert_eq!(
        call_audits(&gateway, "nope::missing").await,
        1,
        "one call, one audit entry"
    );
    // rmcp answers the same request (an Mcp-Param header sends it there).
    let mut via_rmcp = stateless("nope__missing");
    via_rmcp.push(("mcp-param-x", "1"));
    let (slow_status, slow) = post(&url, &via_rmcp, &body).await;
    assert_eq!(
        (status, &fast),
        (slow_status, &slow),
        "fast path and rmcp differ"
    );
    assert_eq!(fast["error"]["code"], -32602, "{fast}");
    assert_eq!(
        fast["error"]["message"], "Unknown tool: nope__missing",
        "{fast}"
    );
    assert_eq!(fast["id"], 3);
    assert_eq!(call_audits(&gateway, "nope::missing").await, 2);
}

/// `DELETE /mcp` with a session id ends that session: a request that names
/// it afterwards is answered 404, so the client knows to start a new one.
#[tokio::test]
async fn deleting_a_legacy_session_ends_it() {
    let gateway = TestGateway::start().await;
    let url = gateway.mcp_url();
    let http = reqwest::Client::new();
    let post = |session: Option<&str>, body: Value| {
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.body(body.to_string()).send()
    };
    let initialized = post(None, initialize_body("2025-06-18")).await.unwrap();
    assert_eq!(initialized.status(), 200);
    let session = session_id(&initialized);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let notified = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await
    .unwrap();
    assert!(notified.status().is_success(), "{}", notified.status());
    let listed = post(Some(&session), list.clone()).await.unwrap();
    assert_eq!(listed.status(), 200, "the session works before the DELETE");

    let deleted = delete_session(&url, &session).await;
    // 204: what the official clients accept (the Python SDK refuses 202).
    assert_eq!(deleted.status(), 204);
    let after = post(Some(&session), list).await.unwrap();
    assert_eq!(after.status(), 404, "the session is gone");
    // No such session any more.
    json_rpc_error(
        delete_session(&url, &session).await,
        404,
        "start one with initialize",
    )
    .await;
}

/// A legacy session is bound to the agent that opened it: another agent
/// holding its id can neither use it, nor end it, nor tell it from a
/// session that does not exist.
#[tokio::test]
async fn a_legacy_session_is_only_its_own_agents() {
    use capgate_gateway::config::AgentConfig;
    use capgate_gateway::identity::config::key_hash;
    let agent = |name: &str| {
        let (key, digest) = capgate_gateway::identity::agents::new_key();
        let config = AgentConfig {
            name: name.into(),
            api_key_sha256: Some(key_hash(&digest).unwrap()),
            tenant: None,
            pins: Vec::new(),
        };
        (key, config)
    };
    let ((alice, alice_config), (bob, bob_config)) = (agent("alice"), agent("bob"));
    let gateway = TestGateway::start_with(move |config| {
        config.identity.agents = vec![alice_config, bob_config];
    })
    .await;
    let url = gateway.mcp_url();
    let http = reqwest::Client::new();
    let request = |method: reqwest::Method, key: &str, session: Option<&str>| {
        let mut request = http
            .request(method, &url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    };
    let opened = request(reqwest::Method::POST, &alice, None)
        .body(initialize_body("2025-06-18").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let session = session_id(&opened);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let notified = request(reqwest::Method::POST, &alice, Some(&session))
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(notified.status().is_success(), "{}", notified.status());

    // Bob holds Alice's session id: 404 for every use, as for no session.
    let listed = request(reqwest::Method::POST, &bob, Some(&session))
        .body(list.to_string())
        .send()
        .await
        .unwrap();
    json_rpc_error(listed, 404, "start one with initialize").await;
    let streamed = request(reqwest::Method::GET, &bob, Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 404);
    let ended = request(reqwest::Method::DELETE, &bob, Some(&session))
        .send()
        .await
        .unwrap();
    json_rpc_error(ended, 404, "start one with initialize").await;

    // Alice's session is untouched and still hers.
    let listed = request(reqwest::Method::POST, &alice, Some(&session))
        .body(list.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        200,
        "the session still works for its agent"
    );
    let ended = request(reqwest::Method::DELETE, &alice, Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
}

/// Legacy sessions are capped: past `max_mcp_sessions` an `initialize` is
/// refused at once (503, Retry-After, a JSON-RPC error saying why), and a
/// session ended with DELETE makes room again.
#[tokio::test]
async fn sessions_beyond_the_limit_are_refused_until_one_ends() {
    let gateway = TestGateway::start_with(|config| config.limits.max_mcp_sessions = 2).await;
    let url = gateway.mcp_url();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let response = legacy_initialize(&url).await;
        assert_eq!(response.status(), 200);
        sessions.push(session_id(&response));
    }
    let refused = legacy_initialize(&url).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let answer: Value = refused.json().await.unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_mcp_sessions"),
        "{answer}"
    );
    // Stateless requests need no session and are served all the while.
    let client = stateless_client(&url).await;
    assert!(client.list_all_tools().await.unwrap().is_empty());
    let deleted = delete_session(&url, &sessions[0]).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(legacy_initialize(&url).await.status(), 200);
}

/// `/mcp` validates `Origin` as MCP requires: a web page on another site
/// is refused (403, a JSON-RPC error, no tool runs) on the fast path and on
/// rmcp's; an origin in `allowed_origins` is served.
#[tokio::test]
async fn a_foreign_origin_is_refused_and_an_allowed_one_is_served() {
    let gateway = TestGateway::start_with(|config| {
        config.server.allowed_origins = vec!["https://console.example.com".into()];
    })
    .await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let body = call_body(7, "hello__greet", json!({"name": "x"}));
    // The fast path's headers, then the same with one that sends it to rmcp.
    for mut headers in [stateless("hello__greet"), {
        let mut headers = stateless("hello__greet");
        headers.push(("mcp-param-name", "x"));
        headers
    }] {
        headers.push(("origin", "https://attacker.example"));
        let response = mcp_post(&gateway.mcp_url(), &headers)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        json_rpc_error(response, 403, "https://attacker.example").await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no tool ran");
    let mut headers = stateless("hello__greet");
    headers.push(("origin", "https://console.example.com"));
    let (status, answer) = post(&gateway.mcp_url(), &headers, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["structuredContent"]["message"], "hello x");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A session nobody uses ends after `mcp_session_idle_ms`, making room
/// under the cap without anyone calling DELETE.
#[tokio::test]
async fn an_idle_session_expires_and_frees_its_place() {
    let gateway = TestGateway::start_with(|config| {
        config.limits.max_mcp_sessions = 1;
        config.limits.mcp_session_idle = std::time::Duration::from_secs(1);
    })
    .await;
    let url = gateway.mcp_url();
    assert_eq!(legacy_initialize(&url).await.status(), 200);
    assert_eq!(
        legacy_initialize(&url).await.status(),
        503,
        "the one place is taken"
    );
    // Abandoned, the first session idles out; a new one then fits.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let status = legacy_initialize(&url).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle session never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A `tools/call` whose arguments or name have the wrong type is an
/// invalid-params error (-32602) naming the field, with the request's id,
/// on every path (rmcp alone answered "method not found").
#[tokio::test]
async fn a_call_with_arguments_of_the_wrong_type_is_invalid_params() {
    let gateway = TestGateway::start().await;
    let (_worker, calls) = greeter(&gateway.worker_url()).await;
    let meta: Value = serde_json::from_str(META).unwrap();
    let call = |params: Value| {
        json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": params}).to_string()
    };
    // A key given twice among them is named, not read either way.
    let twice = format!(
        r#"{{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{{"name":"hello__greet","arguments":{{}},"_meta":{META},"_meta":{META}}}}}"#
    );
    for headers in [stateless("hello__greet"), Vec::new()] {
        for (body, needle) in [
            (
                call(json!({"name": "hello__greet", "arguments": "str", "_meta": meta})),
                "\"arguments\" must be an object, got a string",
            ),
            (
                call(json!({"name": 7, "arguments": {}, "_meta": meta})),
                "\"name\" must be a string, got a number",
            ),
            (
                call(json!({"arguments": {}, "_meta": meta})),
                "\"name\" is missing",
            ),
            (twice.clone(), "each key once (duplicate field `_meta`)"),
            (
                call(json!("just text")),
                "params must be an object with a \"name\"",
            ),
        ] {
            let response = mcp_post(&gateway.mcp_url(), &headers)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{needle}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["id"], 41, "{answer}");
            assert_eq!(answer["error"]["code"], -32602, "{answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(needle),
                "{answer}"
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A tool that declares `mcp.requires` runs only for clients that declared
/// that capability — per request on 2026-07-28, at `initialize` in a
/// session — and answers `-32021` naming it otherwise, before any call.
#[tokio::test]
async fn a_tool_needing_a_client_capability_is_refused_to_clients_without_it() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let gateway = TestGateway::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    worker.register(echo("ask::model", calls.clone()).mcp(json!({"requires": {"sampling": {}}})));
    gateway.wait_live("ask::model").await;
    let url = gateway.mcp_url();
    let refused = |answer: &Value| {
        assert_eq!(answer["error"]["code"], -32021, "{answer}");
        assert_eq!(
            answer["error"]["data"]["requiredCapabilities"],
            json!({"sampling": {}}),
            "{answer}"
        );
    };
    // 2026-07-28, fast path: HTTP 400 as rmcp gives it.
    let (status, answer) = post(
        &url,
        &stateless("ask__model"),
        &call_body(1, "ask__model", json!({})),
    )
    .await;
    assert_eq!(status, 400);
    refused(&answer);
    let mut declared = call_body(2, "ask__model", json!({}));
    declared["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"sampling": {}});
    let (status, answer) = post(&url, &stateless("ask__model"), &declared).await;
    assert_eq!(
        (status, &answer["result"]["isError"]),
        (200, &json!(false)),
        "{answer}"
    );
    // A session: what the client declared at initialize counts.
    for (capabilities, runs) in [(json!({}), false), (json!({"sampling": {}}), true)] {
        let session = open_session(&url, "2025-11-25", capabilities).await;
        let session_headers = [
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": {"name": "ask__model", "arguments": {}}});
        let (_, answer) = post(&url, &session_headers, &call).await;
        if runs {
            assert_eq!(answer["result"]["isError"], false, "{answer}");
        } else {
            refused(&answer);
        }
    }
    // Refused calls never reached the worker.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A session with nothing open leaves rmcp's memory after
/// `mcp_session_resident_ms` and is restored, under its own id, by its next
/// request; one with a GET stream open stays resident and still hears
/// `list_changed`; `DELETE` ends a hibernated session like a resident one.
#[tokio::test]
async fn quiet_sessions_leave_memory_and_come_back_on_their_next_request() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let gateway = TestGateway::start_with(|config| {
        config.limits.mcp_session_resident = std::time::Duration::from_millis(100);
    })
    .await;
    let (worker, calls) = greeter(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    let sessions = gateway.gateway.state().mcp_sessions().clone();
    // A client listening on its GET stream, and a quiet one without.
    let listener = legacy_client(&url).await;
    assert_eq!(listener.list_all_tools().await.unwrap().len(), 1);
    let id = open_session(&url, "2025-11-25", json!({})).await;
    let session = [
        ("mcp-session-id", id.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    assert_eq!(sessions.len(), 2);
    // Waits (up to HANG) until exactly one session is resident.
    let one_resident = |what: &'static str| {
        let sessions = sessions.clone();
        async move {
            let deadline = tokio::time::Instant::now() + HANG;
            while sessions.resident().await != 1 {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    // The quiet one leaves memory; the listening one, whose stream is open, stays.
    one_resident("no session hibernated").await;
    assert_eq!(sessions.len(), 2, "a hibernated session is still open");
    // Its next request brings it back under the same id, as it was.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "hello__greet", "arguments": {"name": "again"}}});
    let (status, _, answer) = post_mcp(&url, &session, &call).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["message"],
        "hello again"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The listener still hears changes.
    let changed = listener.service().tools_changed.notified();
    worker.register(echo("hello::later", Arc::new(AtomicUsize::new(0))));
    tokio::time::timeout(HANG, changed)
        .await
        .expect("list_changed reaches the resident session");
    // Once quiet again, DELETE ends it without bringing it back first.
    one_resident("no session hibernated again").await;
    assert_eq!(delete_session(&url, &id).await.status().as_u16(), 204);
    assert_eq!(sessions.len(), 1);
    let after = mcp_post(&url, &session)
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(after.status().as_u16(), 404, "an ended session stays ended");
}

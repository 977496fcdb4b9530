//! The admin API: discovery, filters, pagination, the change feed.

use capgate_sdk::{Function, Worker};
use capgate_tests::*;
use serde_json::{Value, json};

fn function(id: &str, version: &str, team: &str, tags: &[&str], description: &str) -> Function {
    let mut f = Function::new(id)
        .version(version)
        .description(description)
        .handler(|_, _| async { Ok(json!({})) });
    f = f
        .owner(team)
        .tags(tags.iter().map(|t| t.to_string()).collect());
    f
}

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn ids(answer: &Value) -> Vec<String> {
    answer["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(version_key)
        .collect()
}

#[tokio::test]
async fn functions_can_be_searched_filtered_and_paged() {
    let gateway = TestGateway::start().await;
    let base = format!("http://{}/api/v1", gateway.gateway.local_addr());
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(function(
        "billing::refund",
        "1.0.0",
        "payments",
        &["money"],
        "Refunds a payment",
    ));
    worker.register(function(
        "billing::charge",
        "2.1.0",
        "payments",
        &["money"],
        "Charges a card",
    ));
    worker.register(function(
        "search::query",
        "0.3.0",
        "search",
        &["read"],
        "Searches documents",
    ));
    gateway.wait_live("search::query").await;

    let (_, all) = get(format!("{base}/functions")).await;
    assert_eq!(
        ids(&all),
        vec![
            "billing::charge@2.1.0",
            "billing::refund@1.0.0",
            "search::query@0.3.0"
        ]
    );
    assert_eq!(all["functions"][0]["live"], true);
    assert_eq!(all["functions"][0]["tool_name"], "billing__charge");

    let (_, found) = get(format!("{base}/functions?q=REFUND")).await;
    assert_eq!(ids(&found), vec!["billing::refund@1.0.0"]);
    let (_, found) = get(format!("{base}/functions?prefix=billing::&owner=payments")).await;
    assert_eq!(ids(&found).len(), 2);
    let (_, found) = get(format!("{base}/functions?tag=read")).await;
    assert_eq!(ids(&found), vec!["search::query@0.3.0"]);

    // Pages of one, chained by cursor, cover everything once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/functions?limit=1&cursor={c}"),
            None => format!("{base}/functions?limit=1"),
        };
        let (status, page) = get(url).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));

    // Offline versions only when asked for.
    worker.unregister("search::query");
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("search::query goes offline", || {
        catalog.resolve("search::query", None).is_err()
    })
    .await;
    let (_, live) = get(format!("{base}/functions")).await;
    assert_eq!(ids(&live).len(), 2);
    let (_, everything) = get(format!("{base}/functions?include_offline=true")).await;
    assert_eq!(ids(&everything).len(), 3);
    assert_eq!(everything["functions"][2]["live"], false);
}

#[tokio::test]
async fn bad_queries_get_clear_json_errors() {
    let gateway = TestGateway::start().await;
    let base = format!("http://{}/api/v1", gateway.gateway.local_addr());
    for (query, needle) in [
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=5000", "limit must be between 1 and 1000"),
        ("cursor=nope@1.0.0", "names no version"),
        ("include_offline=maybe", "include_offline"),
        ("colour=blue", "colour"),
    ] {
        let (status, answer) = get(format!("{base}/functions?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{query}: {answer}"
        );
    }
    let (status, answer) = get(format!("{base}/functions/nope::missing")).await;
    assert_eq!(status, 404);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope::missing")
    );
    let (status, _) = get(format!("{base}/functions/Not-An-Id")).await;
    assert_eq!(status, 400);
    let response = reqwest::Client::new()
        .get(format!("{base}/functions"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_function_shows_every_version_and_its_providers() {
    let gateway = TestGateway::start().await;
    let base = format!("http://{}/api/v1", gateway.gateway.local_addr());
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(function("billing::refund", "1.0.0", "payments", &[], "v1"));
    gateway.wait_live("billing::refund").await;
    let second = Worker::connect(gateway.worker_url()).await.unwrap();
    second.register(function("billing::refund", "2.0.0", "payments", &[], "v2"));
    second
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();

    let (status, shown) = get(format!("{base}/functions/billing::refund")).await;
    assert_eq!(status, 200, "{shown}");
    let versions: Vec<&str> = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, vec!["2.0.0", "1.0.0"]);
    assert_eq!(
        shown["versions"][0]["providers"],
        json!([second.worker_id()])
    );
    assert_eq!(shown["versions"][1]["definition"]["description"], "v1");
    assert!(
        shown["versions"][0]["definition_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    let (_, workers) = get(format!("{base}/workers")).await;
    assert_eq!(workers["workers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_change_feed_resumes_without_gaps() {
    let gateway = TestGateway::start().await;
    let url = format!("http://{}/api/v1/events", gateway.gateway.local_addr());
    let mut feed = SseReader::open(&url, None).await;
    let ready = feed.next().await;
    assert_eq!(ready.event, "ready");

    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(function("a::one", "1.0.0", "t", &[], "x"));
    let defined = feed.next().await;
    assert_eq!(defined.event, "defined", "{defined:?}");
    let data: Value = serde_json::from_str(&defined.data).unwrap();
    assert_eq!(
        (data["id"].as_str(), data["version"].as_str()),
        (Some("a::one"), Some("1.0.0"))
    );
    let online = feed.next().await;
    assert_eq!(online.event, "online");
    drop(feed);

    // While nobody listens: two more functions come and one goes.
    worker.register(function("a::two", "1.0.0", "t", &[], "x"));
    worker.register(function("a::three", "1.0.0", "t", &[], "x"));
    worker.unregister("a::one");
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("a::one goes offline", || {
        catalog.resolve("a::one", None).is_err()
    })
    .await;

    let mut resumed = SseReader::open(&url, Some(&online.id)).await;
    let revision = |id: &str| id.rsplit('-').next().unwrap().parse::<u64>().unwrap();
    let mut last = revision(&online.id);
    let mut kinds = Vec::new();
    for _ in 0..5 {
        let event = resumed.next().await;
        assert_eq!(revision(&event.id), last + 1, "no gap, in order: {event:?}");
        last = revision(&event.id);
        kinds.push(event.event);
    }
    assert_eq!(
        kinds,
        vec!["defined", "online", "defined", "online", "offline"]
    );

    // An id from another gateway process cannot be resumed: reset.
    let mut stale = SseReader::open(&url, Some("1-3")).await;
    assert_eq!(stale.next().await.event, "reset");
}

/// A second provider joining a live version, and leaving it, are events of
/// their own: the version stays online throughout.
#[tokio::test]
async fn the_feed_tells_when_providers_join_and_leave_a_live_version() {
    let gateway = TestGateway::start().await;
    let url = format!("http://{}/api/v1/events", gateway.gateway.local_addr());
    let first = Worker::connect(gateway.worker_url()).await.unwrap();
    first.register(function("a::one", "1.0.0", "t", &[], "x"));
    gateway.wait_live("a::one").await;
    let mut feed = SseReader::open(&url, None).await;
    assert_eq!(feed.next().await.event, "ready");

    let second = Worker::connect(gateway.worker_url()).await.unwrap();
    second.register(function("a::one", "1.0.0", "t", &[], "x"));
    let joined = feed.next().await;
    assert_eq!(joined.event, "provider_added", "{joined:?}");
    let data: Value = serde_json::from_str(&joined.data).unwrap();
    assert_eq!(
        (data["id"].as_str(), data["version"].as_str()),
        (Some("a::one"), Some("1.0.0"))
    );
    second.unregister("a::one");
    let left = feed.next().await;
    assert_eq!(left.event, "provider_removed", "{left:?}");
    // The last provider leaving takes the version offline.
    first.unregister("a::one");
    assert_eq!(feed.next().await.event, "offline");
}

#[tokio::test]
async fn a_deprecated_version_warns_agents_until_its_sunset() {
    let gateway = TestGateway::start().await;
    let base = format!("http://{}/api/v1", gateway.gateway.local_addr());
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(function(
        "billing::refund",
        "1.0.0",
        "payments",
        &[],
        "Refunds a payment",
    ));
    worker.register(function(
        "billing::refund",
        "2.0.0",
        "payments",
        &[],
        "Refunds part of a payment",
    ));
    worker
        .call("engine::workers::list", json!({}))
        .await
        .unwrap();
    let client = stateless_client(&gateway.mcp_url()).await;
    let mut subscription = client
        .listen(
            rmcp::model::SubscriptionFilter::builder()
                .tools_list_changed()
                .build(),
        )
        .await
        .unwrap();
    let deprecate = |body: Value| {
        reqwest::Client::new()
            .post(format!(
                "{base}/functions/billing::refund/versions/1.0.0/deprecation"
            ))
            .json(&body)
            .send()
    };

    // Bad requests change nothing.
    for (body, needle) in [
        (json!({"sunset": "2001-01-01"}), "not in the future"),
        (json!({"sunset": "next tuesday"}), "use YYYY-MM-DD"),
        (
            json!({"sunset": "2999-01-01", "replacement": "billing::refund@^3"}),
            "matches no version",
        ),
        (json!({"sunset": "2999-01-01", "colour": "red"}), "colour"),
    ] {
        let response = deprecate(body.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{body}: {answer}"
        );
    }
    let missing = reqwest::Client::new()
        .post(format!(
            "{base}/functions/billing::refund/versions/9.9.9/deprecation"
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let request = json!({"sunset": "2999-01-31", "replacement": "billing::refund@^2", "reason": "v2 refunds in part"});
    let response = deprecate(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The tool shows 2.0.0, which did not change: subscribers are not told
    // (they hear of it below, when the tool they see becomes 1.0.0).

    // The tool (still v2, the highest) is unchanged; an agent pinned to ^1 is warned.
    let caller = Worker::connect(gateway.worker_url()).await.unwrap();
    let options = capgate_sdk::CallOptions {
        version: Some("^1".into()),
        ..Default::default()
    };
    caller
        .call_with("billing::refund", json!({}), options)
        .await
        .unwrap();
    let mut peer = RawPeer::connect(&gateway.worker_url()).await;
    peer.send(json!({"type": "invokefunction", "invocation_id": "c-1", "function_id": "billing::refund", "version": "^1", "data": {}}))
        .await;
    let answer = peer.recv().await;
    let warning = answer["warning"].as_str().expect("a warning on the result");
    assert!(
        warning.starts_with("DEPRECATED since")
            && warning.contains("2999-01-31")
            && warning.contains("billing::refund@^2"),
        "{warning}"
    );

    // With only 1.0.0 provided, the MCP tool is the deprecated version.
    worker.unregister("billing::refund");
    worker.register(function(
        "billing::refund",
        "1.0.0",
        "payments",
        &[],
        "Refunds a payment",
    ));
    gateway.wait_live("billing::refund").await;
    let notification = tokio::time::timeout(HANG, subscription.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        notification,
        Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
    ));
    let tools = client.list_all_tools().await.unwrap();
    let tool = tools.iter().find(|t| t.name == "billing__refund").unwrap();
    assert!(
        tool.description
            .as_deref()
            .unwrap()
            .starts_with("DEPRECATED since"),
        "{tool:?}"
    );
    assert_eq!(
        tool.meta.as_ref().unwrap().0["io.capgate/deprecation"]["sunset"],
        "2999-01-31"
    );
    let result = call_tool(&client, "billing__refund", json!({}))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    assert!(
        result.meta.as_ref().unwrap().0["io.capgate/warning"]
            .as_str()
            .unwrap()
            .contains("DEPRECATED")
    );
}

/// A deprecation set over the admin API is stored with the definition (its
/// hash unchanged) and is there after a restart.
#[tokio::test]
async fn a_deprecation_survives_a_restart() {
    let gateway = TestGateway::start().await;
    let base = format!("http://{}/api/v1", gateway.gateway.local_addr());
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    worker.register(function(
        "billing::refund",
        "1.0.0",
        "payments",
        &[],
        "Refunds a payment",
    ));
    gateway.wait_live("billing::refund").await;
    let hash = gateway.gateway.state().catalog.list()[0]
        .capability
        .hash()
        .to_hex();
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/functions/billing::refund/versions/1.0.0/deprecation"
        ))
        .json(&json!({"sunset": "2999-01-31"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    worker.shutdown();
    let gateway = gateway.restart().await;
    let listing = gateway.gateway.state().catalog.list();
    assert_eq!(
        listing[0].capability.hash().to_hex(),
        hash,
        "the hash is unchanged"
    );
    let v1 = listing
        .iter()
        .find(|row| row.capability.version().to_string() == "1.0.0")
        .unwrap();
    assert_eq!(
        v1.capability
            .definition()
            .deprecation
            .as_ref()
            .unwrap()
            .sunset
            .as_deref(),
        Some("2999-01-31")
    );
}

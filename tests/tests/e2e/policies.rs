//! Policies on every path: what agents see and call, what workers may
//! register and call, deprecation rules, reloads, and the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use capgate_gateway::config::{AgentConfig, WorkerConfig};
use capgate_sdk::Worker;
use capgate_tests::{
    HANG, McpClient, RawPeer, TestGateway, agent_identity, call_tool, echo, eventually,
    eventually_eq, legacy_client_as, register_and_collect_rejections, stateless_client_as,
    worker_identity,
};
use serde_json::{Value, json};

const TEAM_POLICY: &str = "\
# Workers: billing owns billing::*, and may use the built-ins.
p, worker:billing, *, billing::*, register, allow
p, worker:ops, *, ops::*, register, allow
p, role:worker, *, engine::*, call, allow
g, worker:billing, role:worker
g, worker:ops, role:worker
# Agents: support may list and call billing, but never refunds.
p, role:support, *, billing::*, list, allow
p, role:support, *, billing::*, call, allow
p, agent:support-bot, *, billing::refund, call, deny
g, agent:support-bot, role:support
# The auditor may read the audit log, nothing else.
p, agent:auditor, *, audit, admin, allow
";

fn agent(name: &str) -> (AgentConfig, String) {
    agent_identity(name, &[])
}

fn worker_entry(name: &str) -> (WorkerConfig, String) {
    worker_identity(name)
}

/// A gateway whose one policy file holds `policy`, with these agents; the
/// folder holding the file lives as long as the gateway is used.
async fn gateway_with_policy(
    policy: &str,
    agents: Vec<AgentConfig>,
) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.csv");
    std::fs::write(&file, policy).unwrap();
    let gateway = TestGateway::start_with(move |config| {
        config.identity.agents = agents;
        config.policies.files = vec![file];
    })
    .await;
    (gateway, dir)
}

/// A gateway with the team policy, its agents and workers.
struct Team {
    gateway: TestGateway,
    policy: PathBuf,
    support: String,
    auditor: String,
    billing: String,
    ops: String,
    _dir: tempfile::TempDir,
}

async fn team() -> Team {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("team.csv");
    std::fs::write(&policy, TEAM_POLICY).unwrap();
    let (support_config, support) = agent("support-bot");
    let (auditor_config, auditor) = agent("auditor");
    let (billing_config, billing) = worker_entry("billing");
    let (ops_config, ops) = worker_entry("ops");
    let files = vec![policy.clone()];
    let gateway = TestGateway::start_with(move |config| {
        config.identity.agents = vec![support_config, auditor_config];
        config.identity.workers = vec![billing_config, ops_config];
        config.policies.files = files;
    })
    .await;
    Team {
        gateway,
        policy,
        support,
        auditor,
        billing,
        ops,
        _dir: dir,
    }
}

async fn worker(gateway: &TestGateway, name: &str, token: &str) -> Worker {
    Worker::builder(gateway.worker_url())
        .name(name)
        .token(token)
        .connect()
        .await
        .expect("worker connects with its token")
}

fn admin_get(gateway: &TestGateway, path: &str, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1{path}",
            gateway.gateway.local_addr()
        ))
        .bearer_auth(token)
}

async fn audit(gateway: &TestGateway, query: &str) -> Vec<Value> {
    // The gateway's own view: an in-process read needs no admin rights.
    let log = &gateway.gateway.state().access.audit;
    log.flush().await.unwrap();
    let filters: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let query = capgate_catalog::audit::AuditQuery {
        kind: filters
            .iter()
            .find(|(k, _)| *k == "kind")
            .map(|(_, v)| (*v).to_owned()),
        subject: filters
            .iter()
            .find(|(k, _)| *k == "subject")
            .map(|(_, v)| (*v).to_owned()),
        object: filters
            .iter()
            .find(|(k, _)| *k == "object")
            .map(|(_, v)| (*v).to_owned()),
        ..Default::default()
    };
    log.query(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

#[tokio::test]
async fn an_agent_sees_and_calls_only_what_it_may_and_a_denial_reads_as_unknown() {
    let team = team().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let billing = worker(&team.gateway, "billing", &team.billing).await;
    billing.register(echo("billing::charge", calls.clone()));
    billing.register(echo("billing::refund", calls.clone()));
    let ops = worker(&team.gateway, "ops", &team.ops).await;
    ops.register(echo("ops::restart", calls.clone()));
    team.gateway.wait_live("billing::refund").await;
    team.gateway.wait_live("ops::restart").await;

    let client = stateless_client_as(&team.gateway.mcp_url(), Some(&team.support)).await;
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    // Refunds are denied for calls, so they are not listed either.
    assert_eq!(names, vec!["billing__charge"]);

    let allowed = call_tool(&client, "billing__charge", json!({"cents": 5}))
        .await
        .unwrap();
    assert_eq!(allowed.structured_content, Some(json!({"cents": 5})));

    // Forbidden and nonexistent tools answer with the same error, bar the name.
    let forbidden = call_tool(&client, "billing__refund", json!({}))
        .await
        .unwrap_err();
    let unknown = call_tool(&client, "billing__nothing", json!({}))
        .await
        .unwrap_err();
    let elsewhere = call_tool(&client, "ops__restart", json!({}))
        .await
        .unwrap_err();
    let shape = |error: &rmcp::ServiceError, name: &str| error.to_string().replace(name, "NAME");
    assert_eq!(
        shape(&forbidden, "billing__refund"),
        shape(&unknown, "billing__nothing")
    );
    assert_eq!(
        shape(&elsewhere, "ops__restart"),
        shape(&unknown, "billing__nothing")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no denied call reached a worker"
    );

    // Every decision is in the audit log with its rule.
    let denied = audit(&team.gateway, "kind=call&object=billing::refund").await;
    let entry = denied.last().expect("the denied call is audited");
    assert_eq!(entry["allowed"], false);
    assert_eq!(entry["subject"], "agent:support-bot");
    assert!(
        entry["rule"]
            .as_str()
            .unwrap()
            .contains("billing::refund, call, deny"),
        "{entry}"
    );
    let allowed = audit(&team.gateway, "kind=call&object=billing::charge").await;
    assert_eq!(allowed.last().unwrap()["allowed"], true);
    assert_eq!(allowed.last().unwrap()["detail"]["outcome"], "ok");
    assert!(
        allowed.last().unwrap()["detail"].get("input").is_none(),
        "no payloads unless configured"
    );
}

#[tokio::test]
async fn workers_register_only_in_their_namespaces() {
    let team = team().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let billing = worker(&team.gateway, "billing", &team.billing).await;
    let refused =
        register_and_collect_rejections(&billing, echo("ops::restart", calls.clone())).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].code, "naming_denied");
    assert_eq!(refused[0].namespace, "ops");
    let message = refused[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("worker:billing may not register ops::restart"),
        "{message}"
    );
    for reserved in ["engine::shadow", "capgate::admin", "state::set"] {
        let refused =
            register_and_collect_rejections(&billing, echo(reserved, calls.clone())).await;
        let message = refused[0].message.clone().unwrap_or_default();
        assert!(
            message.contains("reserved namespace"),
            "{reserved}: {message}"
        );
    }
    let refused =
        register_and_collect_rejections(&billing, echo("Billing::Bad", calls.clone())).await;
    assert!(
        refused[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("[a-z][a-z0-9_]*"),
        "{refused:?}"
    );

    // ops may not take over billing's function, live or not.
    let ops = worker(&team.gateway, "ops", &team.ops).await;
    billing.register(echo("billing::refund", calls.clone()));
    team.gateway.wait_live("billing::refund").await;
    let refused =
        register_and_collect_rejections(&ops, echo("billing::refund", calls.clone())).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let row = team
        .gateway
        .gateway
        .state()
        .catalog
        .resolve("billing::refund", None)
        .unwrap();
    assert_eq!(
        team.gateway
            .gateway
            .state()
            .workers
            .get(row.provider)
            .unwrap()
            .identity
            .name
            .as_deref(),
        Some("billing")
    );
    let registrations = audit(&team.gateway, "kind=registration").await;
    assert!(registrations.iter().any(|e| e["allowed"] == false
        && e["subject"] == "worker:ops"
        && e["object"] == "billing::refund"));
    assert!(registrations.iter().any(|e| {
        e["allowed"] == true
            && e["object"]
                .as_str()
                .unwrap()
                .starts_with("billing::refund@")
            && e["detail"]["definition_hash"].is_string()
    }));

    // Worker-to-worker calls are checked against the calling worker: ops
    // may call only engine::*, not billing's functions.
    let error = ops.call("billing::refund", json!({})).await.unwrap_err();
    assert!(error.to_string().contains("not found"), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn workers_without_a_valid_token_are_refused() {
    let team = team().await;
    let url = team.gateway.worker_url();
    for token in [
        None,
        Some("not-a-worker-token"),
        Some(team.support.as_str()),
    ] {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                url.as_str(),
            )
            .unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let error = tokio_tungstenite::connect_async(request).await.unwrap_err();
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), 401, "{token:?}");
            }
            other => panic!("{token:?}: expected 401, got {other}"),
        }
    }
    // The token may also come as a query parameter, for clients without headers.
    let with_query = format!("{url}?token={}", team.billing);
    let (_socket, _) = tokio_tungstenite::connect_async(with_query.as_str())
        .await
        .expect("a token in the query is accepted");
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_action_on_its_object() {
    let team = team().await;
    let audit = admin_get(&team.gateway, "/audit?limit=5", &team.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 200);
    let functions = admin_get(&team.gateway, "/functions", &team.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(functions.status(), 403);
    let body: Value = functions.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agent:auditor may not use the admin API's functions"),
        "{body}"
    );
    let anonymous = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/audit",
            team.gateway.gateway.local_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let denials = self::audit(&team.gateway, "kind=admin").await;
    assert!(
        denials
            .iter()
            .any(|e| e["subject"] == "agent:auditor" && e["object"] == "functions")
    );

    // Filters and JSON lines export.
    let exported = admin_get(
        &team.gateway,
        "/audit?kind=admin&format=jsonl",
        &team.auditor,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(exported.headers()["content-type"], "application/x-ndjson");
    let text = exported.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["kind"] == "admin"),
        "{text}"
    );
    for (query, needle) in [
        ("/audit?limit=0", "limit must be between"),
        ("/audit?format=xml", "format 'xml'"),
        ("/audit?colour=red", "colour"),
    ] {
        let answer = admin_get(&team.gateway, query, &team.auditor)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{query}");
        let body: Value = answer.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
}

/// `POST /api/v1/policies/reload` as the agent holding `token`.
async fn reload_over_api(gateway: &TestGateway, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/policies/reload",
            gateway.gateway.local_addr()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn rewrite(path: &Path, text: &str) {
    // Write then rename, as editors and ConfigMaps do.
    let staging = path.with_extension("staging");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// A team gateway with billing's charge and refund live, and support-bot's
/// legacy MCP session (which may call charge, not refund).
async fn team_with_billing() -> (Team, Worker, McpClient) {
    let team = team().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let billing = worker(&team.gateway, "billing", &team.billing).await;
    billing.register(echo("billing::charge", calls.clone()));
    billing.register(echo("billing::refund", calls));
    team.gateway.wait_live("billing::refund").await;
    let client = legacy_client_as(&team.gateway.mcp_url(), Some(&team.support)).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 1);
    (team, billing, client)
}

fn without_the_refund_denial() -> String {
    TEAM_POLICY.replace("p, agent:support-bot, *, billing::refund, call, deny\n", "")
}

#[tokio::test]
async fn an_edited_policy_file_is_reloaded_and_refilters_lists_with_list_changed() {
    let (team, _billing, client) = team_with_billing().await;
    let changed = client.service().tools_changed.clone();
    // Lift the refund denial: the watcher reloads the file by itself.
    rewrite(&team.policy, &without_the_refund_denial());
    tokio::time::timeout(HANG, changed.notified())
        .await
        .expect("list_changed after the reload");
    assert_eq!(client.list_all_tools().await.unwrap().len(), 2);
    let changes = audit(&team.gateway, "kind=policy").await;
    assert!(changes.iter().any(|e| e["allowed"] == true), "{changes:?}");
}

#[tokio::test]
async fn a_broken_policy_file_is_refused_and_the_policy_in_force_stays() {
    let (team, _billing, client) = team_with_billing().await;
    let state = team.gateway.gateway.state().clone();
    let generation = state.access.policy.generation();
    rewrite(&team.policy, "p, role:support, *, billing::*, cal, allow\n");
    let error = state.access.reload("test").await.unwrap_err().to_string();
    assert!(
        error.contains("team.csv:1: unknown action 'cal'"),
        "{error}"
    );
    assert_eq!(state.access.policy.generation(), generation);
    // Still the team policy: charge listed and callable, refund denied.
    assert_eq!(client.list_all_tools().await.unwrap().len(), 1);
    let result = call_tool(&client, "billing__charge", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(result.structured_content, Some(json!({"n": 1})));
    let changes = audit(&team.gateway, "kind=policy").await;
    assert!(
        changes.iter().any(|e| e["allowed"] == false
            && e["rule"].as_str().unwrap().contains("unknown action 'cal'")),
        "{changes:?}"
    );
}

#[tokio::test]
async fn reloading_the_policy_over_the_api_needs_the_admin_action() {
    let team = team().await;
    let reload = reload_over_api(&team.gateway, &team.support).await;
    // support-bot has no admin rights: refused before anything is read.
    assert_eq!(reload.status(), 403);
}

/// 50 reloads alternate between two policies that differ on refunds,
/// while an agent calls without pause: no call is lost, and after every
/// reload the decision is the new policy's (a stale cache would show).
#[tokio::test]
async fn a_reload_during_a_stream_of_calls_loses_none() {
    let team = team().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let billing = worker(&team.gateway, "billing", &team.billing).await;
    billing.register(echo("billing::charge", calls.clone()));
    team.gateway.wait_live("billing::charge").await;
    let client = stateless_client_as(&team.gateway.mcp_url(), Some(&team.support)).await;
    let state = team.gateway.gateway.state().clone();
    let file = team.policy.clone();
    let lifted = without_the_refund_denial();
    let support = capgate_catalog::Caller::Agent {
        name: "support-bot".into(),
        tenant: None,
    };
    let reloader = tokio::spawn(async move {
        for round in 0..50 {
            let refunds_allowed = round % 2 == 0;
            let text = if refunds_allowed {
                lifted.as_str()
            } else {
                TEAM_POLICY
            };
            tokio::fs::write(&file, text).await.unwrap();
            state.access.reload("test").await.unwrap();
            let decided =
                state
                    .access
                    .decide(&support, capgate_policies::Action::Call, "billing::refund");
            assert_eq!(
                decided.allowed, refunds_allowed,
                "round {round}: {decided:?}"
            );
            tokio::task::yield_now().await;
        }
    });
    for n in 0..300 {
        let result = call_tool(&client, "billing__charge", json!({"n": n}))
            .await
            .unwrap();
        assert_eq!(result.structured_content, Some(json!({"n": n})));
    }
    reloader.await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 300);
}

#[tokio::test]
async fn deprecated_versions_are_allowed_hidden_or_refused_per_subject() {
    let (strict, strict_key) = agent("strict");
    let (tidy, tidy_key) = agent("tidy-bot");
    let (loose, loose_key) = agent("loose");
    let (gateway, _dir) = gateway_with_policy(
        "p, *, *, *, *, allow\ndeprecated, agent:strict, refuse\ndeprecated, role:tidy, hide\ng, agent:tidy-bot, role:tidy\n",
        vec![strict, tidy, loose],
    )
    .await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    worker.register(echo("billing::refund", calls.clone()).version("1.0.0"));
    worker.register(echo("billing::refund", calls.clone()).version("2.0.0"));
    worker.register(echo("billing::charge", calls.clone()).version("1.0.0"));
    gateway.wait_live("billing::charge").await;
    let catalog = gateway.gateway.state().catalog.clone();
    eventually("both refund versions", || {
        catalog.provider_count(
            &capgate_catalog::FunctionId::parse("billing::refund").unwrap(),
            &"1.0.0".parse().unwrap(),
        ) == Some(1)
    })
    .await;
    catalog
        .deprecate(
            &capgate_catalog::FunctionId::parse("billing::refund").unwrap(),
            &"2.0.0".parse().unwrap(),
            capgate_catalog::lifecycle::Deprecation {
                since: None,
                sunset: Some("2999-01-01".into()),
                replacement: Some("billing::charge@^1".into()),
                reason: None,
            },
        )
        .unwrap();
    let mcp = gateway.mcp_url();
    let version_of = |tools: &[rmcp::model::Tool]| {
        tools
            .iter()
            .find(|t| t.name == "billing__refund")
            .and_then(|t| t.meta.as_ref())
            .and_then(|m| m.0.get("io.capgate/version").cloned())
    };
    // allow (default): the deprecated 2.0.0 is listed and called.
    let loose = stateless_client_as(&mcp, Some(&loose_key)).await;
    assert_eq!(
        version_of(&loose.list_all_tools().await.unwrap()),
        Some(json!("2.0.0"))
    );
    // hide and refuse: the listed version is the newest one not deprecated.
    for key in [&tidy_key, &strict_key] {
        let client = stateless_client_as(&mcp, Some(key)).await;
        assert_eq!(
            version_of(&client.list_all_tools().await.unwrap()),
            Some(json!("1.0.0"))
        );
    }
    // refuse: a call asking for the deprecated version explicitly is refused.
    let strict_caller =
        capgate_gateway::identity::agents::Agents::new(&[]).from_token("strict", None);
    let mut invocation =
        capgate_catalog::Invocation::new("billing::refund", json!({}), strict_caller.caller());
    invocation.version = Some("^2".parse().unwrap());
    let error = gateway
        .gateway
        .state()
        .path
        .run(invocation)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("deprecated and the caller's policy refuses deprecated versions"),
        "{error}"
    );
    // hide: left out of the list, yet a call that asks for it still runs.
    let tidy_caller =
        capgate_gateway::identity::agents::Agents::new(&[]).from_token("tidy-bot", None);
    let mut invocation =
        capgate_catalog::Invocation::new("billing::refund", json!({"n": 1}), tidy_caller.caller());
    invocation.version = Some("^2".parse().unwrap());
    let before = calls.load(Ordering::SeqCst);
    let output = gateway.gateway.state().path.run(invocation).await.unwrap();
    assert_eq!(output, json!({"n": 1}));
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
}

/// A call over HTTP that runs a deprecated version says so in a
/// `Warning: 299` header, with the sunset and the replacement.
#[tokio::test]
async fn an_http_call_to_a_deprecated_version_carries_a_warning_header() {
    let gateway = TestGateway::start().await;
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    worker.register(echo("billing::refund", calls.clone()).version("1.0.0"));
    worker.register(echo("billing::refund", calls.clone()).version("2.0.0"));
    let catalog = gateway.gateway.state().catalog.clone();
    let id = capgate_catalog::FunctionId::parse("billing::refund").unwrap();
    eventually("both versions live", || {
        catalog.provider_count(&id, &"2.0.0".parse().unwrap()) == Some(1)
            && catalog.provider_count(&id, &"1.0.0".parse().unwrap()) == Some(1)
    })
    .await;
    catalog
        .deprecate(
            &id,
            &"1.0.0".parse().unwrap(),
            capgate_catalog::lifecycle::Deprecation {
                since: None,
                sunset: Some("2999-01-01".into()),
                replacement: Some("billing::refund@^2".into()),
                reason: None,
            },
        )
        .unwrap();
    let url = |version: &str| {
        format!(
            "http://{}/api/v1/call/billing::refund?version={version}",
            gateway.gateway.local_addr()
        )
    };
    let client = reqwest::Client::new();
    let old = client
        .post(url("%3D1.0.0"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 200);
    let warning = old
        .headers()
        .get("warning")
        .expect("a Warning header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        warning.starts_with("299 ")
            && warning.contains("2999-01-01")
            && warning.contains("billing::refund@^2"),
        "{warning}"
    );
    let current = client.post(url("%5E2")).body("{}").send().await.unwrap();
    assert_eq!(current.status(), 200);
    assert!(
        current.headers().get("warning").is_none(),
        "no warning for 2.0.0"
    );
}

/// A gateway whose policy file holds `policy`, with a `billing` and an
/// `ops` worker identity and an `admin` agent.
struct Shop {
    gateway: TestGateway,
    policy: PathBuf,
    billing: String,
    ops: String,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn shop(policy_text: &str) -> Shop {
    shop_with(policy_text, |_| {}).await
}

async fn shop_with(
    policy_text: &str,
    adjust: impl FnOnce(&mut capgate_gateway::Config) + Send + 'static,
) -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("shop.csv");
    std::fs::write(&policy, policy_text).unwrap();
    let (billing_config, billing) = worker_entry("billing");
    let (ops_config, ops) = worker_entry("ops");
    let (admin_config, admin) = agent("admin");
    let files = vec![policy.clone()];
    let gateway = TestGateway::start_with(move |config| {
        config.identity.workers = vec![billing_config, ops_config];
        config.identity.agents = vec![admin_config];
        config.policies.files = files;
        config.policies.watch = false;
        adjust(config);
    })
    .await;
    Shop {
        gateway,
        policy,
        billing,
        ops,
        admin,
        _dir: dir,
    }
}

const SHOP_POLICY: &str = "\
p, worker:billing, *, billing::*, register, allow
p, worker:ops, *, ops::*, register, allow
p, worker:ops, *, ops::*, trigger, allow
p, worker:ops, *, ops::*, list, allow
p, worker:ops, *, ops::*, call, allow
p, worker:ops, *, engine::*, call, allow
p, worker:billing, *, engine::*, call, allow
p, agent:admin, *, policies, admin, allow
";

#[tokio::test]
async fn a_broken_policy_is_refused_by_the_reload_api_with_422_and_its_line() {
    let shop = shop(SHOP_POLICY).await;
    rewrite(&shop.policy, "p, worker:ops, *, ops::*, cal, allow\n");
    let response = reload_over_api(&shop.gateway, &shop.admin).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("shop.csv:1") && message.contains("unknown action 'cal'"),
        "{body}"
    );
    // The policy in force stayed: the admin may still reload once it is fixed.
    rewrite(&shop.policy, SHOP_POLICY);
    let fixed = reload_over_api(&shop.gateway, &shop.admin).await;
    assert_eq!(fixed.status(), 200);
}

#[tokio::test]
async fn registering_a_trigger_needs_the_trigger_action() {
    let shop = shop(SHOP_POLICY).await;
    let url = shop.gateway.worker_url();
    let mut billing = RawPeer::connect(&format!("{url}?token={}", shop.billing)).await;
    billing
        .send(json!({"type": "registerfunction", "id": "billing::on_change"}))
        .await;
    billing
        .send(json!({"type": "registertrigger", "id": "t1", "trigger_type": "engine::functions-available", "function_id": "billing::on_change", "config": {}}))
        .await;
    let refusal = billing
        .recv_until("the trigger's refusal", |frame| {
            frame["type"] == "triggerregistrationresult"
        })
        .await;
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("worker:billing may not attach triggers to billing::on_change"),
        "{refusal}"
    );
    // ops holds `trigger` on ops::*: its trigger is taken (and listed).
    let mut ops = RawPeer::connect(&format!("{url}?token={}", shop.ops)).await;
    ops.send(json!({"type": "registerfunction", "id": "ops::on_change"}))
        .await;
    ops.send(json!({"type": "registertrigger", "id": "t1", "trigger_type": "engine::functions-available", "function_id": "ops::on_change", "config": {}}))
        .await;
    ops.send(json!({"type": "invokefunction", "invocation_id": "list", "function_id": "engine::registered-triggers::list", "data": {}}))
        .await;
    let listed = ops.answer_to("list").await;
    let triggers = listed["result"]["registered_triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1, "{listed}");
    assert_eq!(triggers[0]["function_id"], "ops::on_change");
}

/// `engine::functions::list` and `::info`, and the deliveries of a
/// functions-available trigger, show a worker only what it may `list`.
#[tokio::test]
async fn discovery_and_change_deliveries_show_only_what_the_caller_may_list() {
    let shop = shop(SHOP_POLICY).await;
    let url = shop.gateway.worker_url();
    let billing = Worker::builder(url.clone())
        .name("billing")
        .token(&shop.billing)
        .connect()
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    billing.register(echo("billing::charge", calls.clone()));
    shop.gateway.wait_live("billing::charge").await;
    let mut ops = RawPeer::connect(&format!("{url}?token={}", shop.ops)).await;
    ops.send(json!({"type": "registerfunction", "id": "ops::on_change"}))
        .await;
    ops.send(json!({"type": "registertrigger", "id": "t1", "trigger_type": "engine::functions-available", "function_id": "ops::on_change", "config": {}}))
        .await;
    let ask = |id: &'static str, function: &'static str, data: Value| json!({"type": "invokefunction", "invocation_id": id, "function_id": function, "data": data});
    ops.send(ask("list", "engine::functions::list", json!({})))
        .await;
    ops.send(ask(
        "info",
        "engine::functions::info",
        json!({"function_id": "billing::charge"}),
    ))
    .await;
    let list = ops.answer_to("list").await;
    let info = ops.answer_to("info").await;
    let listed: Vec<&str> = list["result"]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function_id"].as_str())
        .collect();
    assert!(listed.contains(&"ops::on_change"), "{listed:?}");
    assert!(!listed.contains(&"billing::charge"), "{listed:?}");
    assert_eq!(info["error"]["code"], "function_not_found", "{info}");
    // A change delivers the live set as ops may see it: its own function,
    // not billing's.
    billing.register(echo("billing::refund", calls));
    let delivery = loop {
        let frame = ops.recv().await;
        if frame["type"] == "invokefunction" && frame["function_id"] == "ops::on_change" {
            let ids: Vec<String> = frame["data"]["functions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["function_id"].as_str().unwrap().to_owned())
                .collect();
            if !ids.is_empty() {
                break ids;
            }
        }
    };
    assert_eq!(delivery, ["ops::on_change"]);
}

const AUDITED_POLICY: &str = "\
p, agent:admin, *, *, *, allow
p, worker:billing, *, billing::*, *, allow
p, worker:billing, *, engine::*, call, allow
p, worker:ops, *, engine::*, call, allow
";

/// Calls, a denial, a trigger, a declaration and a deprecation, as the
/// `[audit]` settings say to record them — and never a token or key.
async fn audited_actions(shop: &Shop) -> Vec<Value> {
    let url = shop.gateway.worker_url();
    let billing = Worker::builder(url.clone())
        .name("billing")
        .token(&shop.billing)
        .connect()
        .await
        .unwrap();
    billing.register(echo("billing::charge", Arc::new(AtomicUsize::new(0))));
    shop.gateway.wait_live("billing::charge").await;
    // An allowed call with a payload, and a denied one.
    billing
        .call("billing::charge", json!({"card": "4111-secret"}))
        .await
        .unwrap();
    let ops = Worker::builder(url.clone())
        .name("ops")
        .token(&shop.ops)
        .connect()
        .await
        .unwrap();
    let denied = ops
        .call("billing::charge", json!({"card": "4222-secret"}))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("function_not_found"));
    // A trigger, a declaration, a deprecation.
    let mut raw = RawPeer::connect(&format!("{url}?token={}", shop.billing)).await;
    raw.send(json!({"type": "registerfunction", "id": "billing::on_change"}))
        .await;
    raw.send(json!({"type": "registertrigger", "id": "t1", "trigger_type": "engine::functions-available", "function_id": "billing::on_change", "config": {}}))
        .await;
    let api = format!("http://{}/api/v1", shop.gateway.gateway.local_addr());
    let http = reqwest::Client::new();
    let declared = http
        .post(format!("{api}/functions"))
        .bearer_auth(&shop.admin)
        .json(&json!({"id": "billing::refund", "version": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert!(declared.status().is_success(), "{}", declared.status());
    let deprecated = http
        .post(format!(
            "{api}/functions/billing::refund/versions/1.0.0/deprecation"
        ))
        .bearer_auth(&shop.admin)
        .json(&json!({"sunset": "2999-01-01"}))
        .send()
        .await
        .unwrap();
    assert!(deprecated.status().is_success(), "{}", deprecated.status());
    let state = shop.gateway.gateway.state().clone();
    eventually("the trigger is registered", || {
        !state.triggers.describe().is_empty()
    })
    .await;
    audit(&shop.gateway, "").await
}

fn entries_of<'a>(entries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["kind"] == kind).collect()
}

#[tokio::test]
async fn the_audit_log_records_every_kind_and_by_default_no_payloads_or_secrets() {
    let shop = shop(AUDITED_POLICY).await;
    let entries = audited_actions(&shop).await;
    let calls = entries_of(&entries, "call");
    assert!(
        calls
            .iter()
            .any(|e| e["allowed"] == true && e["object"] == "billing::charge"),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|e| e["allowed"] == false && e["subject"] == "worker:ops"),
        "{calls:?}"
    );
    for kind in ["registration", "trigger", "declaration", "deprecation"] {
        assert!(
            !entries_of(&entries, kind).is_empty(),
            "no {kind} entry: {entries:?}"
        );
    }
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [&shop.admin, &shop.billing, &shop.ops] {
        assert!(!text.contains(secret.as_str()), "a token was recorded");
    }
    assert!(
        !text.contains("secret"),
        "payloads are not recorded by default"
    );
}

#[tokio::test]
async fn with_allowed_calls_off_and_payloads_on_the_log_keeps_denials_with_their_input() {
    let shop = shop_with(AUDITED_POLICY, |config| {
        config.audit.allowed_calls = false;
        config.audit.payloads = true;
    })
    .await;
    let entries = audited_actions(&shop).await;
    let calls = entries_of(&entries, "call");
    assert!(calls.iter().all(|e| e["allowed"] == false), "{calls:?}");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["detail"]["input"]["card"], "4222-secret");
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [&shop.admin, &shop.billing, &shop.ops] {
        assert!(!text.contains(secret.as_str()), "a token was recorded");
    }
}

/// `list_changed` goes only to the clients whose list changed: a function
/// only alpha may see notifies alpha, not beta; beta's one notification
/// is for the function it does see.
#[tokio::test]
async fn list_changed_goes_only_to_agents_whose_list_changed() {
    let (alpha, alpha_key) = agent("alpha");
    let (beta, beta_key) = agent("beta");
    let (gateway, _dir) = gateway_with_policy(
        "p, agent:alpha, *, alpha::*, *, allow\np, agent:beta, *, beta::*, *, allow\np, worker:anonymous, *, *, register, allow\n",
        vec![alpha, beta],
    )
    .await;
    let alpha = legacy_client_as(&gateway.mcp_url(), Some(&alpha_key)).await;
    let beta = legacy_client_as(&gateway.mcp_url(), Some(&beta_key)).await;
    let (alpha_count, beta_count) = (
        alpha.service().tools_changed_count.clone(),
        beta.service().tools_changed_count.clone(),
    );
    let worker = Worker::connect(gateway.worker_url()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    // Three functions only alpha sees, one at a time: alpha hears of each.
    for n in 0..3 {
        worker.register(echo(&format!("alpha::f{n}"), calls.clone()));
        let count = alpha_count.clone();
        eventually_eq("alpha hears of it", || count.load(Ordering::SeqCst), n + 1).await;
    }
    // One beta sees: beta hears of it.
    worker.register(echo("beta::one", calls.clone()));
    let count = beta_count.clone();
    eventually("beta hears of beta::one", || {
        count.load(Ordering::SeqCst) >= 1
    })
    .await;
    let names = |tools: Vec<rmcp::model::Tool>| {
        tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(beta.list_all_tools().await.unwrap()), ["beta__one"]);
    // A last change only alpha sees, as a fence: once alpha has heard of it,
    // every change before it has been weighed for beta too.
    worker.register(echo("alpha::fence", calls));
    let count = alpha_count.clone();
    eventually_eq(
        "alpha hears of the fence",
        || count.load(Ordering::SeqCst),
        4,
    )
    .await;
    assert_eq!(
        beta_count.load(Ordering::SeqCst),
        1,
        "beta heard of changes it cannot see"
    );
}

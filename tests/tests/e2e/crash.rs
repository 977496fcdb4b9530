//! Nothing acknowledged is lost: the real binary is killed with SIGKILL
//! the moment it acknowledges a change, and the change is there after the
//! restart — for every kind of acknowledgement, several times over.

use capgate_tests::real::RealGateway;
use capgate_tests::*;
use serde_json::{Value, json};

/// Kills right after each acknowledgement this many times per kind.
const ROUNDS: usize = 5;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

async fn get(gateway: &RealGateway, path: &str) -> Value {
    let response = http()
        .get(format!("http://{}/api/v1/{path}", gateway.addr()))
        .send()
        .await
        .expect("the admin API answers");
    assert!(response.status().is_success(), "GET {path}: {response:?}");
    response.json().await.expect("a JSON answer")
}

async fn post(gateway: &RealGateway, path: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(format!("http://{}/api/v1/{path}", gateway.addr()))
        .json(&body)
        .send()
        .await
        .expect("the admin API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// The stored definition hash of `id@version`, if the catalog has it.
async fn stored_hash(gateway: &RealGateway, id: &str, version: &str) -> Option<String> {
    let response = http()
        .get(format!("http://{}/api/v1/functions/{id}", gateway.addr()))
        .send()
        .await
        .expect("the admin API answers");
    if response.status() == 404 {
        return None;
    }
    let shown: Value = response.json().await.expect("a JSON answer");
    shown["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == version)
        .map(|v| v["definition_hash"].as_str().expect("a hash").to_owned())
}

async fn audit(gateway: &RealGateway, query: &str) -> Vec<Value> {
    get(gateway, &format!("audit?{query}")).await["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_and_deprecations_survive_a_kill_right_after_their_answer() {
    let mut gateway = RealGateway::start().await;
    for round in 0..ROUNDS {
        let id = format!("crash::declared_{round}");
        let (status, declared) = post(
            &gateway,
            "functions",
            json!({"id": id, "version": "1.0.0", "description": "declared, then killed"}),
        )
        .await;
        assert_eq!(status, 201, "{declared}");
        gateway.crash_and_restart().await;
        assert_eq!(
            stored_hash(&gateway, &id, "1.0.0").await.as_deref(),
            declared["definition_hash"].as_str(),
            "round {round}: the declaration answered 201 and was lost"
        );
        let entries = audit(&gateway, &format!("kind=declaration&object={id}@1.0.0")).await;
        assert_eq!(entries.len(), 1, "round {round}: {entries:?}");

        let (status, answer) = post(
            &gateway,
            &format!("functions/{id}/versions/1.0.0/deprecation"),
            json!({"reason": "killed right after"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        gateway.crash_and_restart().await;
        let shown = get(&gateway, &format!("functions/{id}")).await;
        assert_eq!(
            shown["versions"][0]["definition"]["deprecation"]["reason"], "killed right after",
            "round {round}: the deprecation answered 200 and was lost: {shown}"
        );
        let entries = audit(&gateway, &format!("kind=deprecation&object={id}@1.0.0")).await;
        assert_eq!(entries.len(), 1, "round {round}: {entries:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_answered_by_pong_survives_a_kill() {
    let mut gateway = RealGateway::start().await;
    for round in 0..ROUNDS {
        let mut peer = RawPeer::connect(&gateway.worker_url()).await;
        // Several registrations, then one ping: the pong covers them all.
        for n in 0..3 {
            peer.send(json!({
                "type": "registerfunction",
                "id": format!("crash::registered_{round}_{n}"),
                "metadata": {"version": "2.0.0"},
            }))
            .await;
        }
        peer.send(json!({"type": "ping"})).await;
        peer.recv_until("pong", |frame| frame["type"] == "pong")
            .await;
        gateway.crash_and_restart().await;
        for n in 0..3 {
            let id = format!("crash::registered_{round}_{n}");
            assert!(
                stored_hash(&gateway, &id, "2.0.0").await.is_some(),
                "round {round}: {id} was registered, ponged, and lost"
            );
            let entries = audit(&gateway, &format!("kind=registration&object={id}@2.0.0")).await;
            assert_eq!(entries.len(), 1, "round {round}: {entries:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_policy_reloads_are_audited_before_their_answer() {
    let mut gateway = RealGateway::start().await;
    for round in 0..ROUNDS {
        // A call to a function nobody provides: refused, and audited first.
        let id = format!("crash::nobody_{round}");
        let (status, answer) = post(&gateway, &format!("call/{id}"), json!({})).await;
        assert_eq!(status, 404, "{answer}");
        gateway.crash_and_restart().await;
        let entries = audit(&gateway, &format!("kind=call&object={id}")).await;
        assert_eq!(
            entries.len(),
            1,
            "round {round}: the refusal's entry: {entries:?}"
        );

        // A refused registration: the worker hears of it only once it is kept.
        let mut peer = RawPeer::connect(&gateway.worker_url()).await;
        peer.send(json!({
            "type": "registerfunction",
            "id": format!("engine::taken_{round}"),
        }))
        .await;
        peer.send(json!({"type": "ping"})).await;
        peer.recv_until("pong", |frame| frame["type"] == "pong")
            .await;
        gateway.crash_and_restart().await;
        let entries = audit(
            &gateway,
            &format!("kind=registration&object=engine::taken_{round}&allowed=false"),
        )
        .await;
        assert_eq!(entries.len(), 1, "round {round}: {entries:?}");

        let (status, answer) = post(&gateway, "policies/reload", json!({})).await;
        assert_eq!(status, 200, "{answer}");
        gateway.crash_and_restart().await;
        let entries = audit(&gateway, "kind=policy").await;
        assert_eq!(entries.len(), round + 1, "round {round}: {entries:?}");
    }
}

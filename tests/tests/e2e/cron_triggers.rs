//! Cron triggers end to end: an unmodified iii Node worker's schedule fires
//! on the one path, audited and listed as its trigger's calls. Missed
//! windows, time zones, daylight-saving changes and two gateways on one
//! store are tested against a controllable clock in
//! `adapters/src/cron/tests.rs`.

use capgate_tests::*;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

#[tokio::test]
async fn an_iii_node_workers_schedule_fires_each_second() {
    let dir = iii_node_dir();
    let gateway = TestGateway::start().await;
    let mut node = NodeWorker::spawn(&dir, &gateway.worker_url(), "cron.mjs", &[]);
    assert_eq!(node.line().await, "ready");
    let mut windows = Vec::new();
    for _ in 0..3 {
        let input: Value = serde_json::from_str(&node.line().await).unwrap();
        assert_eq!(input["trigger"], "cron", "{input}");
        let job = input["job_id"].as_str().expect("job_id");
        assert!(!job.is_empty());
        let time = |field: &str| {
            DateTime::parse_from_rfc3339(input[field].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{field} is not RFC 3339 ({e}): {input}"))
                .with_timezone(&Utc)
        };
        let (scheduled, actual) = (time("scheduled_time"), time("actual_time"));
        assert_eq!(scheduled.timestamp_subsec_nanos(), 0, "{input}");
        assert!(actual >= scheduled, "{input}");
        windows.push(scheduled);
    }
    // One call per window, one second apart.
    assert!(
        windows.windows(2).all(|w| (w[1] - w[0]).num_seconds() == 1),
        "{windows:?}"
    );

    let http = reqwest::Client::new();
    let admin = format!("http://{}/api/v1/triggers", gateway.gateway.local_addr());
    let listed: Value = http.get(&admin).send().await.unwrap().json().await.unwrap();
    let cron = listed["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trigger_type"] == "cron")
        .unwrap_or_else(|| panic!("no cron trigger listed: {listed}"))
        .clone();
    assert_eq!(cron["function_id"], "cron::tick");
    assert_eq!(cron["config"], json!({"expression": "* * * * * *"}));
    assert!(cron["fires"].as_u64().unwrap() >= 3, "{cron}");
    assert_eq!(cron["failures"], 0);
    let audit = gateway.gateway.state().access.audit.clone();
    audit.flush().await.unwrap();
    let entries = audit
        .query(&capgate_catalog::audit::AuditQuery {
            object: Some("cron::tick".into()),
            kind: Some("call".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(entries.len() >= 3, "{entries:?}");
    assert_eq!(entries[0].detail["trigger"]["type"], "cron");
    assert_eq!(entries[0].detail["trigger"]["id"], cron["id"]);
    node.kill().await;
}

/// A schedule from the admin API runs as the operator until removed.
#[tokio::test]
async fn an_operators_schedule_calls_a_workers_function() {
    let gateway = TestGateway::start().await;
    let (calls, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let worker = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    worker.register(
        capgate_sdk::Function::new("reports::nightly").handler(move |input, _ctx| {
            let calls = calls.clone();
            async move {
                let _ = calls.send(input);
                Ok::<_, capgate_sdk::HandlerError>(json!({"done": true}))
            }
        }),
    );
    gateway.wait_live("reports::nightly").await;
    let http = reqwest::Client::new();
    let admin = format!("http://{}/api/v1/triggers", gateway.gateway.local_addr());
    let answer = http
        .post(&admin)
        .json(&json!({"id": "nightly", "trigger_type": "cron", "function_id": "reports::nightly",
            "config": {"expression": "* * * * * *", "timezone": "Europe/Berlin", "on_missed": "run_once"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{:?}", answer.text().await);
    let input = tokio::time::timeout(std::time::Duration::from_secs(10), arrived.recv())
        .await
        .expect("the schedule fired within ten seconds")
        .unwrap();
    assert_eq!(input["job_id"], "nightly");
    let bad = http
        .post(&admin)
        .json(
            &json!({"id": "typo", "trigger_type": "cron", "function_id": "reports::nightly",
            "config": {"expression": "0 0 2 * * *", "timezone": "Europe/Berln"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'Europe/Berln' is not an IANA time zone"),
        "{body}"
    );
}

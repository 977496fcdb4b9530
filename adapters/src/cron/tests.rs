//! The cron kind against a real store and a clock the tests move: missed
//! windows under each `on_missed` across restarts, a time zone with a
//! daylight-saving change, and two gateways on one store.

use std::path::Path;
use std::sync::Arc;

use capgate_catalog::store::Store;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::CronTrigger;
use super::clock::ManualClock;
use crate::triggers::Triggers;
use crate::triggers::testing::{Recorder, services, spec};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// One gateway's run: its own store handle and registry on a shared
/// data directory and clock.
struct Run {
    triggers: Triggers,
    services: crate::triggers::TriggerServices,
}

impl Run {
    async fn start(
        dir: &Path,
        clock: &Arc<ManualClock>,
        calls: &Arc<Recorder>,
        name: &str,
    ) -> Self {
        let store = Store::open_sqlite(dir).await.unwrap();
        let services = services(&store, calls.clone()).await;
        let triggers = Triggers::new(vec![Arc::new(CronTrigger::new(store, clock.clone(), name))]);
        Self { triggers, services }
    }

    fn schedule(&self, config: Value) {
        self.triggers
            .register(spec("cron", "tick", "jobs::tick", config), &self.services)
            .unwrap();
    }

    fn stop(self) {
        self.services.shutdown.cancel();
    }
}

fn scheduled(inputs: &[Value]) -> Vec<&str> {
    inputs
        .iter()
        .map(|input| input["scheduled_time"].as_str().unwrap_or("?"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_windows_follow_on_missed_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-01T10:00:30Z")));
    let calls = Recorder::answering(|_| Ok(json!({"ok": true})));
    let every_minute =
        |on_missed: &str| json!({"expression": "0 * * * * *", "on_missed": on_missed});

    // First run: fires its window with iii's input.
    let run = Run::start(dir.path(), &clock, &calls, "gw-1").await;
    run.schedule(every_minute("skip"));
    clock.until_sleepers(1).await;
    clock.set(at("2026-05-01T10:01:00.002Z"));
    let inputs = calls.wait_for("jobs::tick", 1).await;
    assert_eq!(inputs[0]["trigger"], "cron");
    assert_eq!(inputs[0]["job_id"], "tick");
    assert_eq!(inputs[0]["scheduled_time"], "2026-05-01T10:01:00+00:00");
    assert_eq!(inputs[0]["actual_time"], "2026-05-01T10:01:00.002+00:00");
    clock.until_sleepers(1).await;
    run.stop();
    clock.until_sleepers(0).await;

    // Down through 10:02–10:05; `skip`: the next fire is 10:06.
    clock.set(at("2026-05-01T10:05:30Z"));
    let run = Run::start(dir.path(), &clock, &calls, "gw-2").await;
    run.schedule(every_minute("skip"));
    clock.until_sleepers(1).await;
    clock.set(at("2026-05-01T10:06:00Z"));
    let inputs = calls.wait_for("jobs::tick", 2).await;
    assert_eq!(scheduled(&inputs)[1], "2026-05-01T10:06:00+00:00");
    clock.until_sleepers(1).await;
    run.stop();
    clock.until_sleepers(0).await;

    // Down through 10:07–10:09; `run_once`: 10:09 at start, then 10:10.
    clock.set(at("2026-05-01T10:09:45Z"));
    let run = Run::start(dir.path(), &clock, &calls, "gw-3").await;
    run.schedule(every_minute("run_once"));
    let inputs = calls.wait_for("jobs::tick", 3).await;
    assert_eq!(scheduled(&inputs)[2], "2026-05-01T10:09:00+00:00");
    clock.until_sleepers(1).await;
    clock.set(at("2026-05-01T10:10:00Z"));
    let inputs = calls.wait_for("jobs::tick", 4).await;
    assert_eq!(scheduled(&inputs)[3], "2026-05-01T10:10:00+00:00");
    clock.until_sleepers(1).await;
    run.stop();
    clock.until_sleepers(0).await;

    // Down through 10:11–10:14; `run_all`: each, oldest first, then 10:15.
    clock.set(at("2026-05-01T10:14:10Z"));
    let run = Run::start(dir.path(), &clock, &calls, "gw-4").await;
    run.schedule(every_minute("run_all"));
    let inputs = calls.wait_for("jobs::tick", 8).await;
    let mut caught_up = scheduled(&inputs)[4..8].to_vec();
    // Fired in order, but each call is its own task: arrival may interleave.
    caught_up.sort_unstable();
    assert_eq!(
        caught_up,
        [
            "2026-05-01T10:11:00+00:00",
            "2026-05-01T10:12:00+00:00",
            "2026-05-01T10:13:00+00:00",
            "2026-05-01T10:14:00+00:00"
        ]
    );
    clock.until_sleepers(1).await;
    clock.set(at("2026-05-01T10:15:00Z"));
    let inputs = calls.wait_for("jobs::tick", 9).await;
    assert_eq!(scheduled(&inputs)[8], "2026-05-01T10:15:00+00:00");
    assert_eq!(inputs.len(), 9, "{:?}", scheduled(&inputs));
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_catches_up_at_most_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-01T10:00:30Z")));
    let calls = Recorder::answering(|_| Ok(Value::Null));
    let config = json!({"expression": "0 * * * * *", "on_missed": "run_all", "max_catch_up": 2});
    let run = Run::start(dir.path(), &clock, &calls, "gw-1").await;
    run.schedule(config.clone());
    clock.until_sleepers(1).await;
    clock.set(at("2026-05-01T10:01:00Z"));
    calls.wait_for("jobs::tick", 1).await;
    clock.until_sleepers(1).await;
    run.stop();
    clock.until_sleepers(0).await;
    clock.set(at("2026-05-01T11:00:30Z"));
    let run = Run::start(dir.path(), &clock, &calls, "gw-2").await;
    run.schedule(config);
    clock.until_sleepers(1).await;
    clock.set(at("2026-05-01T11:01:00Z"));
    let inputs = calls.wait_for("jobs::tick", 4).await;
    let mut fired = scheduled(&inputs)[1..].to_vec();
    fired.sort_unstable();
    assert_eq!(
        fired,
        [
            "2026-05-01T10:59:00+00:00",
            "2026-05-01T11:00:00+00:00",
            "2026-05-01T11:01:00+00:00"
        ]
    );
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_zone_and_a_spring_gap() {
    let dir = tempfile::tempdir().unwrap();
    // Berlin, Saturday evening before the change: 02:30 does not exist on
    // Sunday the 29th.
    let clock = Arc::new(ManualClock::new(at("2026-03-28T20:00:00Z")));
    let calls = Recorder::answering(|_| Ok(Value::Null));
    let run = Run::start(dir.path(), &clock, &calls, "gw-1").await;
    run.schedule(json!({"expression": "0 30 2 * * *", "timezone": "Europe/Berlin"}));
    clock.until_sleepers(1).await;
    // Through the whole of Sunday: nothing fires.
    clock.set(at("2026-03-29T22:00:00Z"));
    clock.until_sleepers(1).await;
    assert!(calls.inputs("jobs::tick").is_empty());
    // Monday 02:30 CEST is 00:30 UTC.
    clock.set(at("2026-03-30T00:30:00Z"));
    let inputs = calls.wait_for("jobs::tick", 1).await;
    assert_eq!(scheduled(&inputs), ["2026-03-30T00:30:00+00:00"]);
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_store_fire_each_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-01T10:00:30Z")));
    let calls = Recorder::answering(|_| Ok(Value::Null));
    let one = Run::start(dir.path(), &clock, &calls, "gw-1").await;
    let two = Run::start(dir.path(), &clock, &calls, "gw-2").await;
    let config = json!({"expression": "*/10 * * * * *"});
    one.schedule(config.clone());
    two.schedule(config);
    clock.until_sleepers(2).await;
    for step in 1..=6 {
        clock.advance(chrono::Duration::seconds(10));
        calls.wait_for("jobs::tick", step).await;
        clock.until_sleepers(2).await;
    }
    let inputs = calls.inputs("jobs::tick");
    let mut windows = scheduled(&inputs);
    windows.dedup();
    assert_eq!(windows.len(), 6, "{:?}", scheduled(&inputs));
    assert_eq!(inputs.len(), 6, "{:?}", scheduled(&inputs));
    one.stop();
    two.stop();
}

#[tokio::test]
async fn bad_configs_are_refused_naming_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-01T10:00:30Z")));
    let calls = Recorder::answering(|_| Ok(Value::Null));
    let run = Run::start(dir.path(), &clock, &calls, "gw-1").await;
    for (config, says) in [
        (json!({}), "missing field `expression`"),
        (json!({"expression": "* * * * *"}), "has 5 fields"),
        (json!({"expression": "* * * * * * * *"}), "has 8 fields"),
        (
            json!({"expression": "99 * * * * *"}),
            "is not a cron expression",
        ),
        (
            json!({"expression": "* * * * * *", "timezone": "Nowhere/City"}),
            "not an IANA time zone",
        ),
        (
            json!({"expression": "* * * * * *", "on_missed": "later"}),
            "unknown variant `later`",
        ),
        (
            json!({"expression": "* * * * * *", "max_catch_up": 0}),
            "max_catch_up is 0",
        ),
        (
            json!({"expression": "* * * * * *", "every": 5}),
            "unknown field `every`",
        ),
        (json!({"expression": 5}), "invalid type"),
    ] {
        let error = run
            .triggers
            .register(
                spec("cron", "tick", "jobs::tick", config.clone()),
                &run.services,
            )
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("the cron trigger's config is invalid"),
            "{config}: {error}"
        );
        assert!(error.contains(says), "{config}: {error}");
    }
    run.stop();
}

use super::*;

fn message(seq: i64, queue: &str, consumer: &str, group: Option<&str>) -> NewMessage {
    NewMessage {
        seq,
        receipt: format!("r{seq}"),
        queue: queue.into(),
        consumer: consumer.into(),
        msg_group: group.map(str::to_owned),
        data: seq.to_string(),
        meta: None,
        visible_ms: 0,
        enqueued_ms: 1,
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    (dir, store)
}

async fn claim(store: &Store, queue: &str, consumer: &str, max: usize, now: i64) -> Vec<i64> {
    let mut batch = store.batch().await.unwrap();
    let claimed = batch
        .queue_claim(queue, consumer, max, now, now + 1_000)
        .await
        .unwrap();
    batch.commit().await.unwrap();
    claimed.into_iter().map(|m| m.seq).collect()
}

async fn steps(store: &Store, steps: &[QueueStep]) -> Vec<String> {
    let mut batch = store.batch().await.unwrap();
    let removed = batch.queue_steps(steps).await.unwrap();
    batch.commit().await.unwrap();
    removed
}

#[tokio::test]
async fn claims_lease_in_order_and_a_lapsed_lease_is_claimed_again() {
    let (_dir, store) = store().await;
    let mut batch = store.batch().await.unwrap();
    batch
        .queue_insert(
            &(1..=5)
                .map(|n| message(n, "orders", "f", None))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    batch.commit().await.unwrap();
    assert_eq!(claim(&store, "orders", "f", 3, 10).await, [1, 2, 3]);
    assert_eq!(claim(&store, "orders", "f", 3, 10).await, [4, 5]);
    assert!(claim(&store, "orders", "f", 3, 10).await.is_empty());
    assert!(claim(&store, "orders", "other", 3, 10).await.is_empty());
    // The leases end at 1,010: then every message is seen again.
    assert_eq!(
        claim(&store, "orders", "f", 10, 1_010).await,
        [1, 2, 3, 4, 5]
    );
    assert_eq!(store.queue_depths().await.unwrap(), [("orders".into(), 5)]);
}

#[tokio::test]
async fn a_group_delivers_one_message_at_a_time_in_order() {
    let (_dir, store) = store().await;
    let mut batch = store.batch().await.unwrap();
    batch
        .queue_insert(&[
            message(1, "q", "", Some("a")),
            message(2, "q", "", Some("a")),
            message(3, "q", "", Some("b")),
            message(4, "q", "", None),
            message(5, "q", "", Some("b")),
        ])
        .await
        .unwrap();
    batch.commit().await.unwrap();
    assert_eq!(claim(&store, "q", "", 10, 10).await, [1, 3, 4]);
    assert!(claim(&store, "q", "", 10, 10).await.is_empty());
    // A retry keeps the group's place: its successor still waits.
    steps(
        &store,
        &[
            QueueStep::Retry {
                seq: 1,
                attempts: 1,
                visible_ms: 10,
                error: "e".into(),
            },
            QueueStep::Ack { seq: 3 },
        ],
    )
    .await;
    assert_eq!(claim(&store, "q", "", 10, 10).await, [1, 5]);
    steps(&store, &[QueueStep::Ack { seq: 1 }]).await;
    assert_eq!(claim(&store, "q", "", 10, 10).await, [2]);
}

#[tokio::test]
async fn a_stale_answer_does_not_touch_a_message_delivered_again() {
    let (_dir, store) = store().await;
    let mut batch = store.batch().await.unwrap();
    batch
        .queue_insert(&[message(1, "q", "f", None)])
        .await
        .unwrap();
    batch.commit().await.unwrap();
    assert_eq!(claim(&store, "q", "f", 1, 10).await, [1]);
    assert_eq!(claim(&store, "q", "f", 1, 2_000).await, [1]);
    // Answers of delivery 1 after delivery 2 began are ignored.
    steps(
        &store,
        &[
            QueueStep::Bury {
                seq: 1,
                attempts: 1,
                error: "late".into(),
            },
            QueueStep::Retry {
                seq: 1,
                attempts: 1,
                visible_ms: 0,
                error: "late".into(),
            },
        ],
    )
    .await;
    assert!(store.queue_dead_counts().await.unwrap().is_empty());
    assert!(claim(&store, "q", "f", 1, 2_500).await.is_empty());
    assert_eq!(
        steps(
            &store,
            &[QueueStep::Bury {
                seq: 1,
                attempts: 2,
                error: "poison".into()
            }]
        )
        .await,
        ["q"]
    );
    let dead = store.queue_dead_letters("q", 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error.as_deref(), Some("poison"));
    assert_eq!(dead[0].message.attempts, 2);
}

#[tokio::test]
async fn dead_letters_are_redriven_discarded_and_purged() {
    let (_dir, store) = store().await;
    let mut batch = store.batch().await.unwrap();
    batch
        .queue_insert(
            &(1..=3)
                .map(|n| message(n, "q", "f", None))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    batch.commit().await.unwrap();
    claim(&store, "q", "f", 3, 10).await;
    let bury = |seq| QueueStep::Bury {
        seq,
        attempts: 1,
        error: "x".into(),
    };
    steps(&store, &[bury(1), bury(2), bury(3)]).await;
    assert_eq!(store.queue_dead_counts().await.unwrap(), [("q".into(), 3)]);
    let mut batch = store.batch().await.unwrap();
    assert_eq!(batch.queue_redrive("q", Some("r2"), 20).await.unwrap(), 1);
    assert!(batch.queue_discard("q", "r3").await.unwrap());
    assert!(!batch.queue_discard("q", "r3").await.unwrap());
    batch.commit().await.unwrap();
    // Leased for a second from now: counted in flight.
    assert_eq!(claim(&store, "q", "f", 3, now_ms()).await, [2]);
    let counts = store.queue_counts().await.unwrap();
    assert_eq!(
        (counts[0].depth, counts[0].in_flight, counts[0].dead),
        (1, 1, 1)
    );
    let mut batch = store.batch().await.unwrap();
    assert_eq!(batch.queue_redrive("q", None, 20).await.unwrap(), 1);
    assert_eq!(batch.queue_purge("q").await.unwrap(), 2);
    batch.commit().await.unwrap();
    assert!(store.queue_counts().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_first_group_takes_the_waiting_messages_and_keys_expire() {
    let (_dir, store) = store().await;
    let mut batch = store.batch().await.unwrap();
    batch
        .queue_insert(&[message(1, "t", "", None)])
        .await
        .unwrap();
    assert!(batch.queue_add_consumer("t", "a::f", true).await.unwrap());
    assert!(!batch.queue_add_consumer("t", "a::f", true).await.unwrap());
    batch.queue_remember("t", "k", "r1", 100).await.unwrap();
    assert_eq!(
        batch.queue_seen("t", "k", 99).await.unwrap().as_deref(),
        Some("r1")
    );
    assert_eq!(batch.queue_seen("t", "k", 100).await.unwrap(), None);
    assert_eq!(batch.queue_forget_keys(100).await.unwrap(), 1);
    batch.commit().await.unwrap();
    assert_eq!(claim(&store, "t", "a::f", 5, 10).await, [1]);
    assert_eq!(
        store.queue_consumer_groups().await.unwrap(),
        [("t".into(), "a::f".into())]
    );
    assert_eq!(store.queue_last_seq().await.unwrap(), 1);
    assert_eq!(
        store.queue_next_visible("t", "a::f").await.unwrap(),
        Some(1_010)
    );
}

//! Where a follower starts and what it checkpoints: a cold start begins at
//! LATEST, a restart resumes after its checkpoint, a shard it has no
//! checkpoint for is read from its trim horizon, and a batch the consumer
//! failed is handed over again before the checkpoint moves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use edge_session_sync::{Invalidation, MemoryCheckpoints};
use edge_session_test_support::dynamo::{self, create_and_delete, table};
use edge_session_test_support::follower::{
    fast, follow, polled, shard_checkpoint, sids, stream_follower, wait_for_checkpoint, WAIT,
};
use tokio::sync::{mpsc, oneshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_resumes_after_its_checkpoint_missing_and_repeating_nothing() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let checkpoints = Arc::new(MemoryCheckpoints::new());

    let mut a = follow(&server.url(), tier.table(), checkpoints.clone(), fast()).await;
    a.ready().await;
    for byte in 1..=3 {
        create_and_delete(&tier, byte).await;
    }
    let first = a.take(3).await;
    assert_eq!(sids(&first), vec![1, 2, 3]);
    wait_for_checkpoint(&checkpoints, &first[2].sequence_number).await;
    a.stop().await;

    // Written while no follower runs.
    for byte in 4..=6 {
        create_and_delete(&tier, byte).await;
    }
    let mut b = follow(&server.url(), tier.table(), checkpoints.clone(), fast()).await;
    let resumed = b.take(3).await;
    assert_eq!(sids(&resumed), vec![4, 5, 6], "{resumed:?}");
    b.ready().await;
    assert_eq!(
        b.status.covered_since(),
        Some(UNIX_EPOCH),
        "resumed from checkpoints: everything the stream holds is covered"
    );
    create_and_delete(&tier, 7).await;
    let marker = b.take(1).await;
    assert_eq!(
        sids(&marker),
        vec![7],
        "nothing before the checkpoint again"
    );
    wait_for_checkpoint(&checkpoints, &marker[0].sequence_number).await;
    b.stop().await;
}

/// The next batch a test sink accepted.
async fn next_accepted(
    accepted: &mut mpsc::UnboundedReceiver<Vec<Invalidation>>,
) -> Vec<Invalidation> {
    tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("a batch is accepted within the deadline")
        .expect("the sink is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_consumer_failed_is_redelivered_and_not_checkpointed() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let follower = stream_follower(&server.url(), tier.table(), checkpoints.clone(), fast()).await;
    let status = follower.status();

    // Call 1 fails; call 2 checks that nothing moved, then accepts.
    let calls = Arc::new(AtomicUsize::new(0));
    // Each delivery: the batch, and the checkpoint when it was handed over.
    type Deliveries = Mutex<Vec<(Vec<Invalidation>, Option<String>)>>;
    let seen: Arc<Deliveries> = Arc::default();
    let (tx, mut accepted) = mpsc::unbounded_channel::<Vec<Invalidation>>();
    let sink = {
        let (calls, seen, checkpoints) = (calls.clone(), seen.clone(), checkpoints.clone());
        move |batch: Vec<Invalidation>| {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            seen.lock()
                .unwrap()
                .push((batch.clone(), shard_checkpoint(&checkpoints)));
            let tx = tx.clone();
            async move {
                if call == 1 {
                    return Err("consumer unavailable");
                }
                tx.send(batch).map_err(|_| "test receiver gone")
            }
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(follower.run(sink, async move {
        let _ = stopped.await;
    }));
    polled(&status).await;

    create_and_delete(&tier, 1).await;
    let batch = next_accepted(&mut accepted).await;
    assert_eq!(sids(&batch), vec![1]);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one failed delivery, one redelivery");
        assert_eq!(seen[0].0, seen[1].0, "the same batch again");
        assert_eq!(
            seen[0].1, seen[1].1,
            "the failed batch did not move the checkpoint"
        );
        assert_ne!(
            seen[1].1.as_deref(),
            Some(batch[0].sequence_number.as_str())
        );
    }
    wait_for_checkpoint(&checkpoints, &batch[0].sequence_number).await;

    // Accepted once: it never comes back.
    create_and_delete(&tier, 2).await;
    let next = next_accepted(&mut accepted).await;
    assert_eq!(sids(&next), vec![2]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_begins_at_latest() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    create_and_delete(&tier, 1).await;

    let started = SystemTime::now();
    let mut follower = follow(
        &server.url(),
        tier.table(),
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;
    // What was written before the LATEST position is in no record it reads:
    // its coverage begins after that position was taken.
    let covered = follower.status.covered_since().expect("positioned");
    assert!(covered >= started, "{covered:?} before {started:?}");
    create_and_delete(&tier, 2).await;
    // Had the history been replayed, session 1 would come first.
    assert_eq!(sids(&follower.take(1).await), vec![2]);
    assert_eq!(follower.status.covered_since(), Some(covered), "unchanged");
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_follower_reads_an_unknown_shard_from_the_trim_horizon_and_drops_stale_checkpoints(
) {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await;
    create_and_delete(&tier, 1).await;

    // The store holds a checkpoint of a shard that has since expired: this
    // node is resuming, so the live shard (no checkpoint) is read from its
    // start.
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    edge_session_sync::Checkpoints::put(
        checkpoints.as_ref(),
        "shardId-expired",
        "100000000000000000001",
    )
    .unwrap();
    let mut follower = follow(&server.url(), tier.table(), checkpoints.clone(), fast()).await;
    let got = follower.take(1).await;
    assert_eq!(sids(&got), vec![1]);
    wait_for_checkpoint(&checkpoints, &got[0].sequence_number).await;
    let snapshot = checkpoints.snapshot();
    assert!(
        !snapshot.contains_key("shardId-expired"),
        "stale checkpoint pruned: {snapshot:?}"
    );
    assert_eq!(snapshot.len(), 1);
    follower.stop().await;
}

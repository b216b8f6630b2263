//! Faults the follower rides out, each injected by the test proxy in front
//! of the embedded server: an expired iterator, trimmed data, throttling;
//! and an endpoint nothing listens on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edge_session_sync::MemoryCheckpoints;
use edge_session_test_support::dynamo::{self, create_and_delete};
use edge_session_test_support::follower::{fast, follow, followed_through, sids};

use crate::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_iterator_is_reacquired_after_the_checkpoint_without_loss_or_repeat() {
    let server = dynamo::temporary();
    let proxy = Proxy::start(&server.url()).await;
    let (tier, mut follower) = followed_through(&server, &proxy.url).await;
    create_and_delete(&tier, 1).await;
    let first = follower.take(1).await;
    assert_eq!(sids(&first), vec![1]);

    proxy.inject("GetRecords", "ExpiredIteratorException", 1);
    create_and_delete(&tier, 2).await;
    create_and_delete(&tier, 3).await;
    let rest = follower.take(2).await;
    assert_eq!(sids(&rest), vec![2, 3], "{rest:?}");
    assert_eq!(proxy.faults_left(), 0, "the fault was hit");
    let after = proxy
        .requests("GetShardIterator")
        .into_iter()
        .filter(|body| body.contains("AFTER_SEQUENCE_NUMBER"))
        .count();
    assert!(
        after >= 1,
        "re-acquired AFTER_SEQUENCE_NUMBER of the last accepted record"
    );
    assert_eq!(follower.status.gaps(), 0);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_data_is_reported_as_a_gap_and_reading_goes_on_from_the_trim_horizon() {
    let server = dynamo::temporary();
    let proxy = Proxy::start(&server.url()).await;
    let (tier, mut follower) = followed_through(&server, &proxy.url).await;
    create_and_delete(&tier, 1).await;
    assert_eq!(sids(&follower.take(1).await), vec![1]);
    let covered = follower.status.covered_since().expect("positioned");

    let lost_at = SystemTime::now();
    proxy.inject("GetRecords", "TrimmedDataAccessException", 1);
    create_and_delete(&tier, 2).await;
    // The embedded server trims only records a day old, so its trim horizon
    // is the shard's first record: session 1 comes again (at-least-once),
    // then 2.
    let got = follower.take(2).await;
    assert_eq!(sids(&got), vec![1, 2], "{got:?}");
    assert_eq!(follower.status.gaps(), 1);
    let now_covered = follower.status.covered_since().expect("positioned");
    assert!(
        now_covered >= lost_at && now_covered > covered,
        "a gap moves the coverage past the loss: {now_covered:?}, lost at {lost_at:?}"
    );
    assert!(proxy
        .requests("GetShardIterator")
        .iter()
        .any(|body| body.contains("TRIM_HORIZON")));
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_and_loses_nothing() {
    let server = dynamo::temporary();
    let proxy = Proxy::start(&server.url()).await;
    let (tier, mut follower) = followed_through(&server, &proxy.url).await;
    // More than the SDK's attempts per call (3): the follower's own backoff
    // takes over, keeping its iterator.
    proxy.inject("GetRecords", "LimitExceededException", 5);
    create_and_delete(&tier, 1).await;
    create_and_delete(&tier, 2).await;
    let got = follower.take(2).await;
    assert_eq!(sids(&got), vec![1, 2], "{got:?}");
    assert_eq!(proxy.faults_left(), 0);
    assert_eq!(
        proxy.requests("GetShardIterator").len(),
        1,
        "the iterator survived the throttling"
    );
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_retried_until_shutdown() {
    // A port that was just free: connections are refused.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let follower = follow(&url, "nowhere", Arc::new(MemoryCheckpoints::new()), fast()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!follower.task.is_finished(), "still retrying");
    assert_eq!(follower.status.last_poll_ok_at(), None);
    assert_eq!(follower.status.lag(SystemTime::now()), None);
    follower.stop().await;
}

//! Tables of shapes the tier does not make: one without a stream (the
//! follower refuses it at start-up), one with a keys-only stream (every
//! modify and remove is an invalidation, with no version to compare).

use std::sync::Arc;

use aws_sdk_dynamodb::types::StreamViewType;
use edge_session_sync::{DynamoTier, ErrorKind, InvalidationKind, MemoryCheckpoints, SID_LEN};
use edge_session_test_support::dynamo::{self, item, sid_table, stream_of};
use edge_session_test_support::follower::{fast, follow, sids, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_stream_is_an_error_at_start_up() {
    let server = dynamo::temporary();
    let client = dynamo::settings(&server.url()).build().await;
    sid_table(&client, "no-stream").send().await.unwrap();
    let follower = follow(
        &server.url(),
        "no-stream",
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    let err = tokio::time::timeout(WAIT, follower.task)
        .await
        .unwrap()
        .unwrap()
        .expect_err("no stream to follow");
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert!(err.message.contains("no stream"), "{err}");
    drop(follower.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_only_stream_invalidates_every_modify_and_remove() {
    let server = dynamo::temporary();
    let client = dynamo::settings(&server.url()).build().await;
    sid_table(&client, "keys-only")
        .stream_specification(stream_of(StreamViewType::KeysOnly))
        .send()
        .await
        .unwrap();
    let tier = DynamoTier::new(client, "keys-only");
    let mut follower = follow(
        &server.url(),
        "keys-only",
        Arc::new(MemoryCheckpoints::new()),
        fast(),
    )
    .await;
    follower.ready().await;
    tier.create(&item(1, 1)).await.unwrap().unwrap();
    tier.update(&item(1, 2), 1).await.unwrap().unwrap();
    tier.delete(&[1; SID_LEN]).await.unwrap();
    let got = follower.take(2).await;
    assert_eq!(sids(&got), vec![1, 1]);
    assert_eq!(
        got[0].kind,
        InvalidationKind::VersionRaised { new_ver: None }
    );
    assert_eq!(got[1].kind, InvalidationKind::Removed);
    follower.stop().await;
}

//! Which writes the follower hands over as invalidations (deletes, version
//! raises, a session rotated away), which it does not (inserts, touches),
//! and what each invalidation carries.

use std::time::{Duration, SystemTime};

use edge_session_sync::{InvalidationKind, SID_LEN};
use edge_session_test_support::dynamo::{
    self, create_and_delete, delete_with_clock_behind, item, rotate_in_a_transaction,
};
use edge_session_test_support::follower::{followed_table, sids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_version_raises_are_invalidations_and_inserts_are_not() {
    let server = dynamo::temporary();
    let (tier, mut follower) = followed_table(&server).await;

    let before = SystemTime::now() - Duration::from_secs(2);
    tier.create(&item(1, 1)).await.unwrap().unwrap();
    tier.create(&item(2, 1)).await.unwrap().unwrap();
    tier.update(&item(1, 2), 1).await.unwrap().unwrap();
    tier.delete(&[2; SID_LEN]).await.unwrap();
    // A marker: once it arrives, everything before it was processed.
    create_and_delete(&tier, 3).await;

    let got = follower.take(3).await;
    assert_eq!(sids(&got), vec![1, 2, 3], "{got:?}");
    assert_eq!(
        got[0].kind,
        InvalidationKind::VersionRaised { new_ver: Some(2) }
    );
    assert_eq!(got[1].kind, InvalidationKind::Removed);
    assert_eq!(got[2].kind, InvalidationKind::Removed);
    assert!(got[0].sequence_number < got[1].sequence_number);
    for invalidation in &got {
        let created = invalidation
            .approximate_creation
            .expect("dynoxide reports ApproximateCreationDateTime");
        assert!(created >= before && created <= SystemTime::now() + Duration::from_secs(2));
    }
    let lag = follower.status.lag(SystemTime::now()).expect("lag known");
    assert!(lag < Duration::from_secs(10), "{lag:?}");
    assert_eq!(follower.status.gaps(), 0);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_rotated_away_in_a_transaction_is_invalidated_everywhere() {
    let server = dynamo::temporary();
    let (tier, mut follower) = followed_table(&server).await;

    // Regenerate as one TransactWriteItems: delete the old key, put the new.
    tier.create(&item(1, 1)).await.unwrap().unwrap();
    rotate_in_a_transaction(&tier, 1, &item(2, 1)).await;
    create_and_delete(&tier, 3).await;

    let got = follower.take(2).await;
    assert_eq!(
        sids(&got),
        vec![1, 3],
        "the new session is an insert: {got:?}"
    );
    assert_eq!(got[0].kind, InvalidationKind::Removed);
    follower.stop().await;
}

/// A touch (only `last_seen_at` moved) is one conditional put that no
/// follower hands over; the version raise after it is handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touches_are_not_broadcast() {
    let server = dynamo::temporary();
    let (tier, mut follower) = followed_table(&server).await;

    tier.create(&item(1, 1)).await.unwrap().unwrap();
    for ver in 2..=4 {
        tier.touch(&item(1, ver), ver - 1).await.unwrap().unwrap();
    }
    assert!(
        tier.touch(&item(1, 9), 1).await.unwrap().is_err(),
        "a touch of a copy that moved on is a conflict"
    );
    // A real rewrite after the touches, then a marker.
    tier.update(&item(1, 5), 4).await.unwrap().unwrap();
    create_and_delete(&tier, 2).await;

    let got = follower.take(2).await;
    assert_eq!(
        sids(&got),
        vec![1, 2],
        "only the rewrite and the marker: {got:?}"
    );
    assert_eq!(
        got[0].kind,
        InvalidationKind::VersionRaised { new_ver: Some(5) }
    );
    follower.stop().await;
}

/// A writer whose clock runs five seconds behind stamps its journal entry
/// with that clock; the stream places the delete by its commit, so the
/// follower hands it over all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_with_a_skewed_clock_loses_no_revocation() {
    let server = dynamo::temporary();
    let (tier, mut follower) = followed_table(&server).await;

    tier.create(&item(1, 1)).await.unwrap().unwrap();
    delete_with_clock_behind(&tier, 1, Duration::from_secs(5)).await;
    create_and_delete(&tier, 2).await;

    let got = follower.until(&[1, 2]).await;
    let first = got.iter().find(|i| i.sid[0] == 1).unwrap();
    assert_eq!(first.kind, InvalidationKind::Removed);
    follower.stop().await;
}

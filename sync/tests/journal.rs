//! The change journal against dynoxide through the official SDK: every
//! invalidating write adds its entry in the same transaction, and a
//! [`JournalFollower`] hands them over, resumes from its checkpoint, and
//! reads an entry that became visible late.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use edge_session_sync::{
    DynamoTier, EpochGuard, Invalidation, InvalidationKind, JournalFollower, JournalSettings,
    MemoryCheckpoints, JOURNAL_CHECKPOINT, SID_LEN,
};

mod common;
use common::*;

fn quick() -> JournalSettings {
    JournalSettings {
        partitions: 2,
        poll_interval: Duration::from_millis(50),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..JournalSettings::default()
    }
}

fn follow(tier: &DynamoTier, checkpoints: Arc<MemoryCheckpoints>) -> Running {
    let follower = JournalFollower::new(tier.client().clone(), tier.table(), checkpoints, quick());
    let status = follower.status();
    Running::spawn(status, |sink, shutdown| follower.run(sink, shutdown))
}

fn kind_of(got: &[Invalidation], byte: u8) -> InvalidationKind {
    got.iter().find(|i| i.sid[0] == byte).unwrap().kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalidating_write_reaches_a_journal_follower_and_inserts_do_not() {
    let server = Dynoxide::start();
    let tier = table(&server.url).await.with_journal(quick());
    let mut follower = follow(&tier, Arc::new(MemoryCheckpoints::new()));
    follower.ready().await;

    for byte in 1..=3 {
        tier.create(&item(byte, 1)).await.unwrap().unwrap();
    }
    assert!(tier.delete(&[1; SID_LEN]).await.unwrap());
    assert!(
        !tier.delete(&[9; SID_LEN]).await.unwrap(),
        "nothing to delete"
    );
    tier.update(&item(2, 2), 1).await.unwrap().unwrap();
    tier.rotate(&[3; SID_LEN], 1, &item(4, 1), None)
        .await
        .unwrap()
        .unwrap();
    let epoch = tier
        .bump_user_epoch(&[5; SID_LEN], u64::MAX / 2)
        .await
        .unwrap();
    assert_eq!(epoch, 1);
    assert_eq!(
        tier.bump_user_epoch(&[5; SID_LEN], u64::MAX / 2)
            .await
            .unwrap(),
        2
    );

    let got = follower.until(&[1, 2, 3, 5]).await;
    assert_eq!(kind_of(&got, 1), InvalidationKind::Removed);
    assert_eq!(
        kind_of(&got, 2),
        InvalidationKind::VersionRaised { new_ver: Some(2) }
    );
    assert_eq!(kind_of(&got, 3), InvalidationKind::Removed, "rotated away");
    let epochs: Vec<_> = got
        .iter()
        .filter(|i| i.sid[0] == 5)
        .map(|i| i.kind)
        .collect();
    assert!(epochs.contains(&InvalidationKind::VersionRaised { new_ver: Some(2) }));
    assert!(
        !got.iter().any(|i| i.sid[0] == 4 || i.sid[0] == 9),
        "a new session and a delete of nothing are no invalidations: {got:?}"
    );
    // A session guarded by the raised epoch can no longer be created.
    let guard = EpochGuard {
        sid: [5; SID_LEN],
        epoch: 1,
    };
    assert!(tier
        .create_guarded(&item(6, 1), guard)
        .await
        .unwrap()
        .is_err());
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_journal_follower_resumes_from_its_checkpoint_and_misses_nothing() {
    let server = Dynoxide::start();
    let tier = table(&server.url).await.with_journal(quick());
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let mut first = follow(&tier, checkpoints.clone());
    first.ready().await;
    assert!(
        first.status.covered_since().unwrap() > UNIX_EPOCH,
        "a cold start covers from its start only"
    );
    create_and_delete(&tier, 1).await;
    first.until(&[1]).await;
    first.stop().await;
    assert!(checkpoints.snapshot().contains_key(JOURNAL_CHECKPOINT));

    // Revoked while no follower runs.
    create_and_delete(&tier, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut second = follow(&tier, checkpoints.clone());
    let got = second.until(&[2]).await;
    assert_eq!(kind_of(&got, 2), InvalidationKind::Removed);
    second.ready().await;
    assert_eq!(
        second.status.covered_since(),
        Some(UNIX_EPOCH),
        "resumed from a checkpoint: everything is covered"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_visible_late_is_still_read_within_the_settle_window() {
    let server = Dynoxide::start();
    let tier = table(&server.url).await.with_journal(quick());
    let mut follower = follow(&tier, Arc::new(MemoryCheckpoints::new()));
    follower.ready().await;
    // Let the follower poll past the moment the entry will be stamped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 1000;
    // An entry stamped a second ago, as a writer whose clock runs behind (or
    // an index lagging) makes it: written as the journal's format says.
    let target = [7u8; SID_LEN];
    let partition = target[0] % quick().partitions;
    let entry = HashMap::from([
        (
            "sid".to_owned(),
            AttributeValue::B(Blob::new(vec![0xee; SID_LEN])),
        ),
        (
            "jb".to_owned(),
            AttributeValue::S(format!("{}.{partition}", stamp / 60_000)),
        ),
        ("jt".to_owned(), AttributeValue::N(stamp.to_string())),
        (
            "jk".to_owned(),
            AttributeValue::B(Blob::new(target.to_vec())),
        ),
        (
            "exp".to_owned(),
            AttributeValue::N((stamp / 1000 + 60).to_string()),
        ),
    ]);
    tier.client()
        .put_item()
        .table_name(tier.table())
        .set_item(Some(entry))
        .send()
        .await
        .unwrap();
    let got = follower.until(&[7]).await;
    assert_eq!(kind_of(&got, 7), InvalidationKind::Removed);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_adds_the_journal_index_to_a_table_made_without_it() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    };
    let server = Dynoxide::start();
    let client = settings(&server.url).build().await;
    let attr = |name: &str, ty| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ty)
            .build()
            .unwrap()
    };
    let hash = |name: &str| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(KeyType::Hash)
            .build()
            .unwrap()
    };
    // The shape an earlier version made: no journal index.
    client
        .create_table()
        .table_name("older")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("sid", ScalarAttributeType::B))
        .attribute_definitions(attr("uid", ScalarAttributeType::S))
        .key_schema(hash("sid"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("uid-index")
                .key_schema(hash("uid"))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let tier = DynamoTier::new(client, "older").with_journal(quick());
    let report = tier
        .provision()
        .await
        .expect("provision upgrades the table");
    assert!(!report.created);
    assert!(report.journal_index_added);
    assert!(
        !tier.provision().await.unwrap().journal_index_added,
        "idempotent"
    );

    let mut follower = follow(&tier, Arc::new(MemoryCheckpoints::new()));
    follower.ready().await;
    create_and_delete(&tier, 3).await;
    follower.until(&[3]).await;
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_journal_partition_count_is_refused() {
    let server = Dynoxide::start();
    let two = table(&server.url).await.with_journal(quick());
    assert_eq!(quick().partitions, 2);
    two.claim_journal_partitions()
        .await
        .expect("the first node records its count");
    two.claim_journal_partitions()
        .await
        .expect("the same count again is fine");
    let three = DynamoTier::new(two.client().clone(), two.table()).with_journal(JournalSettings {
        partitions: 3,
        ..quick()
    });
    let err = three.claim_journal_partitions().await.unwrap_err();
    assert_eq!(err.kind, edge_session_sync::ErrorKind::Rejected);
    assert!(err.message.contains("records 2"), "{}", err.message);
}

/// A touch writes no journal entry: the journal carries only what
/// invalidates a cached copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touches_are_not_broadcast() {
    let server = Dynoxide::start();
    let tier = table(&server.url).await.with_journal(quick());
    let mut follower = follow(&tier, Arc::new(MemoryCheckpoints::new()));
    follower.ready().await;

    tier.create(&item(1, 1)).await.unwrap().unwrap();
    for ver in 2..=4 {
        tier.touch(&item(1, ver), ver - 1).await.unwrap().unwrap();
    }
    tier.create(&item(2, 1)).await.unwrap().unwrap();
    assert!(tier.delete(&[2; SID_LEN]).await.unwrap());

    let got = follower.until(&[2]).await;
    assert!(
        got.iter().all(|i| i.sid[0] != 1),
        "a touch was journaled: {got:?}"
    );
    follower.stop().await;
}

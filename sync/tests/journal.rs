//! The change journal's entries against the embedded server through the
//! official SDK: with the journal written, every invalidating write adds its
//! entry in the same transaction (what nodes of an older build read during
//! an upgrade); with it off, none does; `provision` adds the index to an old
//! table; a node with another partition count is refused.

use edge_session_sync::{
    journal_entry_of, DynamoTier, EpochGuard, Invalidation, InvalidationKind, JournalSettings,
    JOURNAL_INDEX, SID_LEN,
};
use edge_session_test_support::dynamo::{
    self, attribute, create_and_delete, hash_key, item, sid_table, stream_of, table,
};

fn quick() -> JournalSettings {
    JournalSettings {
        write: true,
        partitions: 2,
        ..JournalSettings::default()
    }
}

/// Every entry the index holds, read back.
async fn entries(tier: &DynamoTier) -> Vec<Invalidation> {
    let out = tier
        .client()
        .scan()
        .table_name(tier.table())
        .index_name(JOURNAL_INDEX)
        .send()
        .await
        .expect("scan the journal index");
    out.items()
        .iter()
        .filter_map(|item| journal_entry_of(item).map(|(_, inv)| inv))
        .collect()
}

fn kinds_of(got: &[Invalidation], byte: u8) -> Vec<InvalidationKind> {
    got.iter()
        .filter(|i| i.sid[0] == byte)
        .map(|i| i.kind)
        .collect()
}

/// Every kind of invalidating write, and two that are not.
async fn write_everything(tier: &DynamoTier) {
    for byte in 1..=3 {
        tier.create(&item(byte, 1)).await.unwrap().unwrap();
    }
    assert!(tier.delete(&[1; SID_LEN]).await.unwrap());
    assert!(
        !tier.delete(&[9; SID_LEN]).await.unwrap(),
        "nothing to delete"
    );
    tier.update(&item(2, 2), 1).await.unwrap().unwrap();
    tier.touch(&item(2, 3), 2).await.unwrap().unwrap();
    tier.rotate(&[3; SID_LEN], 1, &item(4, 1), None)
        .await
        .unwrap()
        .unwrap();
    for expected in 1..=2 {
        let epoch = tier
            .bump_user_epoch(&[5; SID_LEN], None, u64::MAX / 2)
            .await
            .unwrap();
        assert_eq!(epoch, expected);
    }
    // A session guarded by the raised epoch can no longer be created.
    let guard = EpochGuard {
        sid: [5; SID_LEN],
        epoch: 1,
        adds: 1,
        limit: None,
        exp: 4_000_000_000,
    };
    assert!(tier
        .create_guarded(&item(6, 1), guard)
        .await
        .unwrap()
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_journal_written_every_invalidating_write_adds_its_entry_and_nothing_else_does() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await.with_journal(quick());
    write_everything(&tier).await;
    let got = entries(&tier).await;
    assert_eq!(kinds_of(&got, 1), vec![InvalidationKind::Removed]);
    assert_eq!(
        kinds_of(&got, 2),
        vec![InvalidationKind::VersionRaised { new_ver: Some(2) }],
        "the update, not the touch after it"
    );
    assert_eq!(
        kinds_of(&got, 3),
        vec![InvalidationKind::Removed],
        "rotated away"
    );
    let mut epochs = kinds_of(&got, 5);
    epochs.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        epochs,
        vec![
            InvalidationKind::VersionRaised { new_ver: Some(1) },
            InvalidationKind::VersionRaised { new_ver: Some(2) },
        ]
    );
    for byte in [4, 6, 9] {
        assert!(
            kinds_of(&got, byte).is_empty(),
            "a new session, a refused one and a delete of nothing are no invalidations"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_journal_off_no_write_adds_an_entry() {
    let server = dynamo::temporary();
    let tier = table(&server.url()).await.with_journal(JournalSettings {
        write: false,
        ..quick()
    });
    write_everything(&tier).await;
    assert!(entries(&tier).await.is_empty());
    assert!(!tier.journal_has_entries().await.unwrap());
    let written = tier.clone().with_journal(quick());
    assert!(written.delete(&[2; SID_LEN]).await.unwrap());
    assert!(
        tier.journal_has_entries().await.unwrap(),
        "provision reports an index still in use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_adds_the_journal_index_to_a_table_made_without_it() {
    use aws_sdk_dynamodb::types::{
        GlobalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType, StreamViewType,
    };
    let server = dynamo::temporary();
    let client = dynamo::settings(&server.url()).build().await;
    // The shape an earlier version made: no journal index.
    sid_table(&client, "older")
        .attribute_definitions(attribute("uid", ScalarAttributeType::S))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("uid-index")
                .key_schema(hash_key("uid"))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .stream_specification(stream_of(StreamViewType::NewAndOldImages))
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

    create_and_delete(&tier, 3).await;
    assert_eq!(
        kinds_of(&entries(&tier).await, 3),
        vec![InvalidationKind::Removed],
        "the added index holds the entries written since"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_journal_partition_count_is_refused() {
    let server = dynamo::temporary();
    let two = table(&server.url()).await.with_journal(quick());
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

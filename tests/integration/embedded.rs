//! The embedded DynamoDB server's stream log: indexed, so a write or a
//! `GetRecords` does not scan every stream record ever written, and trimmed
//! after DynamoDB Streams' 24 hours, so it does not grow for ever.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use edge_session::{
    EmbeddedDynamo, NewSession, SledCache, StoreSettings, TieredStore, STREAM_RETENTION,
};
use edge_session_sync::{DynamoTier, Endpoint};

use crate::harness::{client_settings, now, table_name};

async fn store_on(server: &EmbeddedDynamo) -> TieredStore {
    let client = client_settings(Endpoint::Embedded(server.url()))
        .build()
        .await;
    let tier = DynamoTier::new(client, table_name());
    tier.provision().await.expect("provision");
    TieredStore::new(
        SledCache::temporary().expect("temporary sled"),
        tier,
        StoreSettings::default(),
    )
}

/// The statements dynoxide 3.2 runs against its stream log (storage.rs):
/// the per-write next sequence number and the `GetRecords` page.
const DYNOXIDE_STREAM_QUERIES: [&str; 2] = [
    "SELECT COALESCE(MAX(CAST(sequence_number AS INTEGER)), 0) + 1 FROM _stream_records \
     WHERE table_name = 'sessions'",
    "SELECT event_name, keys_json, new_image, old_image, sequence_number, created_at, \
     user_identity, event_id FROM _stream_records \
     WHERE table_name = 'sessions' AND shard_id = 'shard-0' AND CAST(sequence_number AS INTEGER) > 7 \
     ORDER BY CAST(sequence_number AS INTEGER) ASC LIMIT 1000",
];

#[tokio::test]
async fn stream_queries_use_the_index_instead_of_scanning_every_table() {
    let server = EmbeddedDynamo::start_temporary(Duration::from_secs(3600)).unwrap();
    let log = server.stream_log().unwrap();
    for sql in DYNOXIDE_STREAM_QUERIES {
        let plan = log.plan(sql).unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("edge_session_stream_seq")),
            "{sql}\n{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step.starts_with("SCAN _stream_records")),
            "{sql}\n{plan:?}"
        );
    }
}

#[tokio::test]
async fn stream_records_are_trimmed_after_a_day_and_the_stream_goes_on() {
    let server = EmbeddedDynamo::start_temporary(Duration::from_secs(3600)).unwrap();
    let store = store_on(&server).await;
    let log = server.stream_log().unwrap();
    for _ in 0..5 {
        store
            .create(NewSession::anonymous(BTreeMap::new()), now())
            .await
            .unwrap();
    }
    let written = log.records().unwrap();
    assert!(written >= 5, "one stream record per create: {written}");

    let today = SystemTime::now();
    assert_eq!(
        log.trim(today, STREAM_RETENTION).unwrap(),
        0,
        "fresh records stay"
    );
    assert_eq!(log.records().unwrap(), written);

    let tomorrow = today + STREAM_RETENTION + Duration::from_secs(60);
    assert_eq!(
        log.trim(tomorrow, STREAM_RETENTION).unwrap() as u64,
        written
    );
    assert_eq!(log.records().unwrap(), 0);

    // Writes after a trim still reach the stream.
    let (token, _) = store
        .create(NewSession::anonymous(BTreeMap::new()), now())
        .await
        .unwrap();
    assert_eq!(log.records().unwrap(), 1);
    assert!(store.load(&token, now()).await.unwrap().is_some());
}

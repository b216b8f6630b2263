//! Record formats across the whole store: a format-1 record (what every
//! build before format 2 wrote) loads from DynamoDB and from sled, is
//! rewritten in format 2 by its next write, and a node still writing
//! format 1 (`session.record_format = 1`, a rolling upgrade) and a node
//! writing format 2 read each other's records. A cache hit leaves the
//! application data in its bytes.

use std::collections::BTreeMap;

use edge_session::codec::{self, Format};
use edge_session::{
    item_of, CacheLookup, NewSession, Policy, SessionChange, SessionRecord, SessionToken,
    SledCache, StorageKey, StoreSettings, TieredStore,
};
use edge_session_sync::BreakerSettings;

use crate::harness::{dead_tier, now, Cluster};

const MIN: u64 = 60_000;

/// A bound session with data, as a format-1 build wrote it at `t`.
fn bound_record(t: u64) -> SessionRecord {
    let mut record = SessionRecord::new(&Policy::default(), t);
    record.version = 3;
    record.user_id = Some("alice".into());
    record.role = Some("admin".into());
    record.data = BTreeMap::from([("cart".to_owned(), "3 items".to_owned())]).into();
    record
}

/// The format byte of the body DynamoDB holds under `key`.
async fn stored_format(cluster: &Cluster, key: &StorageKey) -> u8 {
    let item = cluster
        .tier
        .get(key.as_bytes())
        .await
        .unwrap()
        .expect("item");
    item.body[2]
}

/// A node whose DynamoDB endpoint refuses every connection: whatever it
/// serves came from its sled cache.
async fn offline_node(cache: SledCache) -> TieredStore {
    TieredStore::new(
        cache,
        dead_tier("offline", BreakerSettings::default()).await,
        StoreSettings::default(),
    )
}

#[tokio::test]
async fn a_format_1_record_in_dynamodb_loads_and_its_next_write_is_format_2() {
    let cluster = Cluster::new().await;
    let t = now();
    let record = bound_record(t);
    let key = SessionToken::generate().storage_key();
    let v1 = codec::encode_as(&record, Format::V1);
    assert_eq!(v1[2], 1);
    cluster
        .tier
        .create(&item_of(&key, &record, v1))
        .await
        .unwrap()
        .unwrap();

    let node = cluster.node(StoreSettings::default());
    let loaded = node.load_key(key, t + 1_000).await.unwrap().expect("loads");
    assert_eq!(loaded.record, record);

    // Two minutes later: past the lease (revalidated) and the touch interval
    // (written back), in format 2, the data unchanged.
    let touched = node
        .load_key(key, t + 2 * MIN)
        .await
        .unwrap()
        .expect("loads");
    assert_eq!(touched.record.version, record.version + 1);
    assert_eq!(touched.record.data, record.data);
    assert_eq!(stored_format(&cluster, &key).await, 2);
    let item = cluster.tier.get(key.as_bytes()).await.unwrap().unwrap();
    assert_eq!(codec::decode(&item.body).unwrap(), touched.record);
}

#[tokio::test]
async fn a_format_1_record_in_sled_is_served_from_the_cache() {
    let t = now();
    let record = bound_record(t);
    let key = SessionToken::generate().storage_key();
    let cache = SledCache::temporary().unwrap();
    let v1 = codec::encode_as(&record, Format::V1);
    cache.fill(&key, t, record.version, &v1).unwrap();

    let node = offline_node(cache).await;
    let loaded = node
        .load_key(key, t + 1_000)
        .await
        .unwrap()
        .expect("served from sled");
    assert_eq!(loaded.record, record);
}

#[tokio::test]
async fn a_cache_hit_leaves_the_data_in_its_bytes() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let t = now();
    let data = BTreeMap::from([("theme".to_owned(), "dark".to_owned())]);
    let (_, created) = node
        .create(NewSession::anonymous(data.clone()), t)
        .await
        .unwrap();

    let CacheLookup::Fresh(hit) = node.lookup_cached(&created.key, t + 1).unwrap() else {
        panic!("a fresh hit");
    };
    assert!(!hit.data.is_decoded(), "a hit decoded the data");
    assert_eq!(hit.data.len(), 1);
    let loaded = node.load_key(created.key, t + 1).await.unwrap().unwrap();
    assert!(!loaded.record.data.is_decoded());
    // A route that asks for it gets it.
    assert_eq!(loaded.record.data, data);
    assert_eq!(loaded.record, created.record);
}

#[tokio::test]
async fn nodes_writing_format_1_and_format_2_read_each_other() {
    let cluster = Cluster::new().await;
    let old_writer = cluster.node(StoreSettings {
        record_format: Format::V1,
        ..StoreSettings::default()
    });
    let new_writer = cluster.node(StoreSettings::default());
    let t = now();

    let data = BTreeMap::from([("step".to_owned(), "1".to_owned())]);
    let (_, created) = old_writer
        .create(NewSession::anonymous(data), t)
        .await
        .unwrap();
    assert_eq!(stored_format(&cluster, &created.key).await, 1);

    let read = new_writer
        .load_key(created.key, t + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.record, created.record);
    let mut next = read.record.data.clone();
    next.insert("step".into(), "2".into());
    let updated = new_writer
        .update(&read, SessionChange::data(next), t + 2)
        .await
        .unwrap()
        .expect("no conflict");
    assert_eq!(stored_format(&cluster, &created.key).await, 2);

    // The format-1 writer's cached copy is stale: past its lease it reads
    // DynamoDB's format-2 record, and its own next write is format 1 again.
    let seen = old_writer
        .load_key(created.key, t + 2 * MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.record.data.get("step").map(String::as_str), Some("2"));
    assert!(seen.record.version > updated.record.version, "touched");
    assert_eq!(stored_format(&cluster, &created.key).await, 1);
}

//! The two-tier core (`TieredStore`: a sled cache over DynamoDB) against a
//! real DynamoDB-wire server, one behaviour per file. Each security
//! property is a test named after the attack it stops.
//!
//! - [`at_rest`]: what the tiers hold: no planted token, no raw token, no
//!   expired session, and tombstones that outlive a restart.
//! - [`regenerate`]: rotating a session's token at sign-in.
//! - [`logout`]: ending one session, against races and stale copies.
//! - [`everywhere`]: ending every session of a user, or of everyone.
//! - [`outage`]: DynamoDB unreachable: the outbox, the lease, the breaker.

mod at_rest;
mod everywhere;
mod logout;
mod outage;
mod regenerate;

use std::collections::BTreeMap;

use edge_session::{
    codec, NewSession, Policy, Session, SessionRecord, SessionToken, StorageKey, StoreSettings,
    TieredStore, UserBinding,
};
use edge_session_sync::Item;

use crate::harness::{now, Cluster};

/// A minute in milliseconds.
const MIN: u64 = 60_000;

/// Session data from key/value pairs.
fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A binding to the user alice, an admin.
fn alice() -> Option<UserBinding> {
    Some(UserBinding {
        user_id: "alice".into(),
        role: Some("admin".into()),
        client: None,
    })
}

/// A binding to `user`, with no role.
fn binding(user: &str) -> UserBinding {
    UserBinding {
        user_id: user.into(),
        role: None,
        client: None,
    }
}

/// A new session bound to `user` from the start.
fn bound(user: &str) -> NewSession {
    NewSession {
        binding: Some(binding(user)),
        ..NewSession::default()
    }
}

/// Store settings whose cached copies are revalidated after `ms`.
fn lease(ms: u64) -> StoreSettings {
    StoreSettings {
        revalidate_after_ms: ms,
        ..StoreSettings::default()
    }
}

/// Two nodes with `settings` over a fresh table, and the time now.
async fn two_nodes(settings: StoreSettings) -> (Cluster, TieredStore, TieredStore, u64) {
    let cluster = Cluster::new().await;
    let a = cluster.node(settings);
    let b = cluster.node(settings);
    (cluster, a, b, now())
}

/// A new anonymous session with no data on `node` at `t`.
async fn anonymous(node: &TieredStore, t: u64) -> (SessionToken, Session) {
    node.create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap()
}

/// The item DynamoDB holds under `key`, if any.
async fn dynamodb_item(cluster: &Cluster, key: &StorageKey) -> Option<Item> {
    cluster.tier.get(key.as_bytes()).await.unwrap()
}

/// Whether DynamoDB holds an item under `key`.
async fn in_dynamodb(cluster: &Cluster, key: &StorageKey) -> bool {
    dynamodb_item(cluster, key).await.is_some()
}

/// `token`'s session is gone from both tiers: `node` neither loads nor
/// caches it, DynamoDB holds no item for it, and a node with a cold cache
/// loads nothing either.
async fn assert_gone_from_both_tiers(
    cluster: &Cluster,
    node: &TieredStore,
    token: &SessionToken,
    t: u64,
) {
    let key = token.storage_key();
    assert_eq!(
        node.load(token, t).await.unwrap(),
        None,
        "this node loads it"
    );
    assert!(
        node.cache().get(&key).unwrap().is_none(),
        "this node caches it"
    );
    assert!(!in_dynamodb(cluster, &key).await, "DynamoDB holds it");
    let cold = cluster.node(StoreSettings::default());
    assert_eq!(
        cold.load(token, t).await.unwrap(),
        None,
        "a cold node loads it"
    );
}

/// A record of `user` written straight to DynamoDB under `key`, behind
/// every node's back (a stale replica's write, or a session a listing
/// missed): the item to put, and the record it holds.
fn straggler(key: &StorageKey, user: &str, t: u64) -> (Item, SessionRecord) {
    let mut record = SessionRecord::new(&Policy::default(), t);
    record.user_id = Some(user.into());
    let item = Item {
        sid: key.0,
        uid: Some(user.into()),
        ver: record.version,
        exp: record.ttl_epoch_secs(),
        body: codec::encode(&record),
    };
    (item, record)
}

//! Ending one session: a write that loaded it before the logout cannot
//! bring it back (on this node or another), a cache fill racing the logout
//! never lands over its tombstone, and another node's cached copy is
//! revalidated once its lease runs out.

use edge_session::{Destroyed, FillOutcome, Session, SessionChange, StoreSettings, TieredStore};

use super::{anonymous, assert_gone_from_both_tiers, data, lease, two_nodes};
use crate::harness::{now, Cluster};

/// Whether `node` refuses a write to `session`, loaded before a logout.
async fn write_after_logout_refused(node: &TieredStore, session: &Session, t: u64) -> bool {
    let change = SessionChange::data(data(&[("written", "after logout")]));
    node.update(session, change, t).await.unwrap().is_err()
}

#[tokio::test]
async fn logout_race_cannot_resurrect_session() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let t = now();
    let (token, _) = anonymous(&node, t).await;
    // A request loads the session, then a logout lands before it writes.
    let in_flight = node.load(&token, t).await.unwrap().unwrap();
    assert_eq!(node.destroy(&token, t).await.unwrap(), Destroyed::Confirmed);
    assert!(
        write_after_logout_refused(&node, &in_flight, t).await,
        "the late write is refused"
    );
    assert!(
        cluster.scan().await.is_empty(),
        "nothing written back to DynamoDB"
    );
    assert_gone_from_both_tiers(&cluster, &node, &token, t).await;

    // Same race across nodes: B loaded it, A logs out, B's write is refused by
    // DynamoDB's version condition, and B evicts its stale copy.
    let a = cluster.node(StoreSettings::default());
    let b = cluster.node(StoreSettings::default());
    let (token, _) = anonymous(&a, t).await;
    let on_b = b.load(&token, t).await.unwrap().unwrap();
    assert_eq!(a.destroy(&token, t).await.unwrap(), Destroyed::Confirmed);
    assert!(write_after_logout_refused(&b, &on_b, t).await);
    assert!(
        cluster.scan().await.is_empty(),
        "nothing resurrected in DynamoDB"
    );
    assert_gone_from_both_tiers(&cluster, &b, &token, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_fill_never_overwrites_tombstone() {
    let (_cluster, writer, node, t) = two_nodes(StoreSettings::default()).await;
    let mut loaded_before_destroy = 0;
    for i in 0..200 {
        let (token, _) = anonymous(&writer, t).await;
        // A cold-cache load (DynamoDB read, then fill) races a destroy on the
        // same node; alternate which one is polled first.
        let load = {
            let node = node.clone();
            let token = token.clone();
            tokio::spawn(async move { node.load(&token, t).await })
        };
        let destroy = {
            let node = node.clone();
            let token = token.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                node.destroy(&token, t).await
            })
        };
        let (loaded, destroyed) = (
            load.await.unwrap().unwrap(),
            destroy.await.unwrap().unwrap(),
        );
        assert_eq!(destroyed, Destroyed::Confirmed);
        loaded_before_destroy += usize::from(loaded.is_some());
        let key = token.storage_key();
        assert!(
            node.cache().get(&key).unwrap().is_none(),
            "iteration {i}: a fill landed over the tombstone"
        );
        assert_eq!(node.load(&token, t).await.unwrap(), None, "iteration {i}");
        // A fill of the pre-destroy copy arriving late is refused too.
        let stale = writer
            .cache()
            .get(&key)
            .unwrap()
            .expect("writer still caches its copy");
        assert_eq!(
            node.cache()
                .fill(&key, t, stale.version, stale.bytes())
                .unwrap(),
            FillOutcome::Tombstoned
        );
    }
    // Both interleavings happened (otherwise the race was not exercised).
    println!("loads that won the race: {loaded_before_destroy}/200");
}

#[tokio::test]
async fn stale_cache_is_revalidated_after_the_lease() {
    let cluster = Cluster::new().await;
    let a = cluster.node(lease(5_000));
    let b = cluster.node(lease(5_000));
    let t = now();
    let (token, _) = anonymous(&a, t).await;
    assert!(b.load(&token, t).await.unwrap().is_some(), "B caches it");
    a.destroy(&token, t).await.unwrap();
    // Within the lease B may still serve its copy; past it, B asks DynamoDB
    // and drops its copy.
    assert_gone_from_both_tiers(&cluster, &b, &token, t + 5_000).await;
}

//! Rotating a session's token (`regenerate`, done at every sign-in): the
//! pre-login token dies in both tiers, a rotation over a changed session
//! changes nothing, the outbox replay never cancels one in flight, and a
//! logout that lands during a failing rotation is kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use edge_session::{
    codec, Destroyed, NewSession, Session, SessionChange, SessionToken, StoreSettings, TieredStore,
};
use edge_session_sync::RotateConflict;

use super::{
    alice, anonymous, assert_gone_from_both_tiers, binding, data, dynamodb_item, two_nodes,
};
use crate::harness::{now, Cluster};

#[tokio::test]
async fn pre_login_token_is_dead_after_regenerate() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let t = now();
    let (old_token, anon) = node
        .create(NewSession::anonymous(data(&[("cart", "3 items")])), t)
        .await
        .unwrap();
    let loaded = node
        .load(&old_token, t)
        .await
        .unwrap()
        .expect("fresh session loads");
    assert_eq!(loaded, anon);

    let (new_token, bound) = node
        .regenerate(&loaded, alice(), true, t)
        .await
        .unwrap()
        .expect("no conflict");
    assert_ne!(new_token, old_token);
    assert_eq!(bound.record.user_id.as_deref(), Some("alice"));
    assert_eq!(bound.record.data, data(&[("cart", "3 items")]));

    // The old token loads as nothing, here and on a node with a cold cache,
    // and neither tier holds it.
    assert_gone_from_both_tiers(&cluster, &node, &old_token, t).await;
    assert!(
        node.cache()
            .tombstone_of(&old_token.storage_key())
            .unwrap()
            .is_some(),
        "tombstone written"
    );
    assert_eq!(node.cache().outbox_len(), 0, "revocation confirmed");
    let new_item = dynamodb_item(&cluster, &bound.key)
        .await
        .expect("new item stored");
    assert_eq!(new_item.uid.as_deref(), Some("alice"));

    // The new token loads the bound user on both nodes.
    let other = cluster.node(StoreSettings::default());
    for n in [&node, &other] {
        let s = n
            .load(&new_token, t)
            .await
            .unwrap()
            .expect("new token loads");
        assert_eq!(s.record.user_id.as_deref(), Some("alice"));
        assert_eq!(s.record.role.as_deref(), Some("admin"));
    }
}

/// A session made and loaded on `a`, then written on `b` behind `a`'s back:
/// its token, `a`'s copy (now one version behind), and `b`'s write.
async fn changed_behind_a(
    a: &TieredStore,
    b: &TieredStore,
    t: u64,
) -> (SessionToken, Session, Session) {
    let (token, _) = anonymous(a, t).await;
    let on_a = a.load(&token, t).await.unwrap().unwrap();
    let on_b = b.load(&token, t).await.unwrap().unwrap();
    let written = b
        .update(&on_b, SessionChange::data(data(&[("k", "from b")])), t)
        .await
        .unwrap()
        .unwrap();
    (token, on_a, written)
}

#[tokio::test]
async fn regenerate_is_all_or_nothing() {
    let (cluster, a, b, t) = two_nodes(StoreSettings::default()).await;
    // Node B writes the session meanwhile: A's copy is now one version behind.
    let (token, on_a, written) = changed_behind_a(&a, &b, t).await;

    let outcome = a.regenerate(&on_a, alice(), false, t).await.unwrap();
    assert_eq!(outcome.map(|_| ()), Err(RotateConflict::OldChanged));

    // DynamoDB holds exactly B's write: no new item, the old one intact.
    let items = cluster.scan().await;
    assert_eq!(items.len(), 1, "no new item, no half-done state");
    let item = dynamodb_item(&cluster, &on_a.key)
        .await
        .expect("old item intact");
    assert_eq!(item.ver, written.record.version);
    assert_eq!(item.uid, None, "not elevated");
    assert_eq!(codec::decode(&item.body).unwrap(), written.record);
    // A's provisional revocation was lifted, nothing queued; the session still
    // works everywhere, unelevated.
    assert!(!a.cache().is_tombstoned(&on_a.key).unwrap());
    assert_eq!(a.cache().outbox_len(), 0);
    let reloaded = a.load(&token, t).await.unwrap().expect("still loads");
    assert_eq!(reloaded.record, written.record);

    // With the fresh version the same regenerate goes through.
    assert!(a
        .regenerate(&reloaded, alice(), false, t)
        .await
        .unwrap()
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_replay_never_cancels_a_regenerate_in_flight() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    // The outbox replay runs flat out beside the logins (a node runs it in
    // the background): it must not replay a regenerate's pending delete
    // before that regenerate's own transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            let mut passes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                node.drain_outbox(256).await.unwrap();
                passes += 1;
                tokio::task::yield_now().await;
            }
            passes
        })
    };
    let mut tasks = Vec::new();
    for w in 0..8 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = Vec::new();
            for i in 0..25 {
                let t = now();
                let (_, s) = node.create(NewSession::default(), t).await.unwrap();
                let user = Some(binding(&format!("u-{w}-{i}")));
                if let Err(conflict) = node.regenerate(&s, user, false, t).await.unwrap() {
                    conflicts.push(conflict);
                }
            }
            conflicts
        }));
    }
    let mut conflicts = Vec::new();
    for t in tasks {
        conflicts.extend(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let passes = drainer.await.unwrap();
    assert!(passes > 10, "the replay ran ({passes} passes)");
    assert_eq!(conflicts, vec![], "logins cancelled by the outbox replay");
}

/// A regenerate whose transaction is refused lifts its provisional
/// tombstone. A logout that lands between that tombstone and the lift is its
/// own revocation: its final tombstone, outbox entry and DynamoDB delete
/// survive the lift. (The regenerate is held at that point through the
/// coordinator's one test seam, so the interleaving is exact.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_during_a_failing_regenerate_is_not_lost() {
    let (cluster, a, b, t) = two_nodes(StoreSettings::default()).await;
    // Another writer changes the session: A's regenerate will meet a conflict.
    let (token, on_a, _) = changed_behind_a(&a, &b, t).await;

    let hold = a.hold_regenerate(on_a.key);
    let regenerating = tokio::spawn({
        let (a, on_a) = (a.clone(), on_a.clone());
        async move { a.regenerate(&on_a, alice(), false, t).await }
    });
    hold.reached
        .await
        .expect("the regenerate wrote its tombstone");
    assert!(a.cache().is_tombstoned(&on_a.key).unwrap());
    // The logout lands while the regenerate is in flight.
    let destroyed = a.destroy(&token, t).await.unwrap();
    hold.release.send(()).unwrap();
    let outcome = regenerating.await.unwrap().unwrap();
    assert_eq!(outcome.map(|_| ()), Err(RotateConflict::OldChanged));

    // Refused in both tiers, on this node and on a fresh one.
    assert_gone_from_both_tiers(&cluster, &a, &token, t).await;
    assert!(
        a.cache().is_tombstoned(&on_a.key).unwrap(),
        "tombstone kept"
    );
    assert_eq!(
        destroyed,
        Destroyed::Confirmed,
        "the logout did its own delete"
    );
    assert_eq!(a.cache().outbox_len(), 0, "and it was confirmed");
    assert!(cluster.scan().await.is_empty(), "no new session either");
}

//! Ending every session of a user ("log out everywhere") or of everyone: a
//! session bound under the old epoch is outlawed on every node, also one
//! bound while the revoke was listing, one a listing missed, or one signed
//! in on a node that had not heard of the revoke yet.

use std::time::Duration;

use edge_session::{Session, SessionToken, StorageKey};
use edge_session_sync::{EpochGuard, RotateConflict};

use super::{anonymous, binding, bound, in_dynamodb, lease, straggler, two_nodes};
use crate::harness::{now, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_everywhere_outlaws_sessions_bound_concurrently() {
    let settings = lease(5_000);
    let (cluster, a, b, t) = two_nodes(settings).await;

    // Sessions B issued before the revoke, one of them hot in B's cache.
    let (early, _) = b.create(bound("uma"), t).await.unwrap();
    let (hot, _) = b.create(bound("uma"), t).await.unwrap();
    assert!(b.load(&hot, t).await.unwrap().is_some());

    // B keeps signing uma in while A logs her out everywhere.
    let writer = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut issued = Vec::new();
            for _ in 0..20 {
                let (token, s) = b.create(bound("uma"), t).await.unwrap();
                issued.push((token, s.record.user_epoch));
                tokio::task::yield_now().await;
            }
            issued
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let revoked = a.revoke_user("uma", t).await.unwrap();
    let issued = writer.await.unwrap();
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(b.create(bound("uma"), t).await.unwrap().0);
    }
    assert!(revoked >= 2);

    // A session bound under the old epoch can no longer be written at all.
    let epoch = cluster
        .tier
        .user_epoch(StorageKey::user_epoch("uma").as_bytes())
        .await
        .unwrap();
    assert_eq!(epoch, 1);
    let straggler_token = SessionToken::generate();
    let (item, _) = straggler(&straggler_token.storage_key(), "uma", t);
    let guard = EpochGuard {
        sid: StorageKey::user_epoch("uma").0,
        epoch: 0,
        adds: 1,
        limit: None,
        exp: 4_000_000_000,
    };
    assert_eq!(
        cluster.tier.create_guarded(&item, guard).await.unwrap(),
        Err(RotateConflict::EpochChanged)
    );
    // One that got in anyway (a GSI listing that missed it) is refused at load and cleaned up.
    cluster.tier.create(&item).await.unwrap().unwrap();
    assert_eq!(a.load(&straggler_token, t).await.unwrap(), None);
    assert!(!in_dynamodb(&cluster, &straggler_token.storage_key()).await);

    // Past the lease, every node agrees: only sessions bound after the revoke live.
    let later = t + 5_000;
    for node in [&a, &b, &cluster.node(settings)] {
        for token in [&early, &hot] {
            assert_eq!(
                node.load(token, later).await.unwrap(),
                None,
                "pre-revoke session survived"
            );
        }
        for (token, bound_epoch) in &issued {
            let alive = node.load(token, later).await.unwrap().is_some();
            // Bound under the old epoch: dead. Bound under the new one while
            // the revoke was still listing: either way is right.
            if *bound_epoch < epoch {
                assert!(!alive, "a session bound under epoch {bound_epoch} survived");
            }
        }
        for token in &after {
            assert!(
                node.load(token, later).await.unwrap().is_some(),
                "a login after the revoke works"
            );
        }
    }
    let survivors = issued.iter().filter(|(_, e)| *e == epoch).count();
    println!(
        "sessions bound during the revoke: {}, bound after it (alive): {survivors}",
        issued.len()
    );
}

/// `regenerate` guesses the user's epoch instead of reading it; a node that
/// never saw the user's "log out everywhere" guesses wrong, and must neither
/// refuse the login nor bind it under the old epoch, nor carry an outlawed
/// login over on a rotation without sign-in.
#[tokio::test]
async fn login_on_a_node_that_missed_logout_everywhere_binds_under_the_new_epoch() {
    let settings = lease(5_000);
    let cluster = Cluster::new().await;
    let (a, c) = (cluster.node(settings), cluster.node(settings));
    let t = now();
    let (before, _) = c.create(bound("vic"), t).await.unwrap();
    a.revoke_user("vic", t).await.unwrap();
    a.revoke_user("vic", t).await.unwrap();

    // C signs vic in again from a fresh anonymous session: it knows no epoch.
    let (anon, _) = anonymous(&c, t).await;
    let anon = c.load(&anon, t).await.unwrap().unwrap();
    let (token, session) = c
        .regenerate(&anon, Some(binding("vic")), false, t)
        .await
        .unwrap()
        .expect("the login goes through despite the wrong guess");
    assert_eq!(
        session.record.user_epoch, 2,
        "bound under the current epoch"
    );
    let later = t + 5_000;
    for node in [&a, &c, &cluster.node(settings)] {
        assert!(node.load(&token, later).await.unwrap().is_some());
    }

    // A rotation without a fresh sign-in of a session bound before the
    // revoke (one the listing missed, still in DynamoDB), on a node that has
    // not seen the revoke, is refused and leaves the old session as it was.
    assert_eq!(c.load(&before, later).await.unwrap(), None);
    let straggler_token = SessionToken::generate();
    let (item, record) = straggler(&straggler_token.storage_key(), "vic", t);
    cluster.tier.create(&item).await.unwrap().unwrap();
    let stale = Session {
        key: straggler_token.storage_key(),
        record,
    };
    let fresh_node = cluster.node(settings);
    assert_eq!(
        fresh_node.regenerate(&stale, None, true, t).await.unwrap(),
        Err(RotateConflict::EpochChanged)
    );
    assert_eq!(fresh_node.load(&straggler_token, t).await.unwrap(), None);
}

/// A sign-in on a node that read the fleet's global epoch before another
/// node ended every session is bound under the old epoch. It is refused as
/// soon as its node learns the raise (the stream delivers the epoch item's
/// new version, applied here as the follower applies it), and was never
/// served by the node that took the call; a sign-in after that lives.
#[tokio::test]
async fn a_sign_in_racing_the_end_of_every_session_is_outlawed() {
    let settings = lease(600_000);
    let (_cluster, a, b, t) = two_nodes(settings).await;
    // B signs someone in: it reads the global epoch (0), kept for its lease.
    b.create(bound("vi"), t).await.unwrap();
    assert_eq!(a.revoke_everyone(t).await.unwrap(), 1);
    let (racing, s) = b.create(bound("wu"), t).await.unwrap();
    assert_eq!(s.record.bound_global_epoch(), 0, "B has not heard yet");
    assert!(a.load(&racing, t).await.unwrap().is_none(), "A refuses it");
    b.apply_version_raised(StorageKey::global_epoch(), Some(1), t)
        .unwrap();
    assert!(b.load(&racing, t).await.unwrap().is_none(), "B refuses it");
    let (later, s) = b.create(bound("wu"), t).await.unwrap();
    assert_eq!(s.record.bound_global_epoch(), 1);
    assert!(a.load(&later, t).await.unwrap().is_some());
    assert!(b.load(&later, t).await.unwrap().is_some());
}

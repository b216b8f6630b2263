//! The two-tier core against a real DynamoDB-wire server: each security
//! property is a test named after the attack it stops.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use edge_session::{
    codec, Destroyed, FillOutcome, NewSession, Policy, SessionChange, SessionToken, SledCache,
    StoreSettings, TieredStore, UserBinding,
};
use edge_session_sync::RotateConflict;

use crate::harness::{dead_tier, now, Cluster};

const MIN: u64 = 60_000;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alice() -> Option<UserBinding> {
    Some(UserBinding {
        user_id: "alice".into(),
        role: Some("admin".into()),
        client: None,
    })
}

#[tokio::test]
async fn planted_token_is_not_adopted() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let planted = SessionToken::generate();
    let t = now();

    assert_eq!(node.load(&planted, t).await.unwrap(), None);
    // A logout carrying it writes nothing either.
    assert_eq!(
        node.destroy(&planted, t).await.unwrap(),
        Destroyed::NotFound
    );
    assert_eq!(node.load(&planted, t).await.unwrap(), None);

    assert!(
        node.cache().dump().unwrap().is_empty(),
        "nothing written to sled"
    );
    assert!(
        cluster.scan().await.is_empty(),
        "nothing written to DynamoDB"
    );
}

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

    // The old token loads as nothing, here and on a node with a cold cache.
    assert_eq!(node.load(&old_token, t).await.unwrap(), None);
    let other = cluster.node(StoreSettings::default());
    assert_eq!(other.load(&old_token, t).await.unwrap(), None);

    // Inspect both tiers directly.
    let old_key = old_token.storage_key();
    assert!(
        cluster
            .tier
            .get(old_key.as_bytes())
            .await
            .unwrap()
            .is_none(),
        "old item deleted"
    );
    assert!(
        node.cache().get(&old_key).unwrap().is_none(),
        "old record evicted"
    );
    assert!(
        node.cache().tombstone_of(&old_key).unwrap().is_some(),
        "tombstone written"
    );
    assert_eq!(node.cache().outbox_len(), 0, "revocation confirmed");
    let new_item = cluster
        .tier
        .get(bound.key.as_bytes())
        .await
        .unwrap()
        .expect("new item stored");
    assert_eq!(new_item.uid.as_deref(), Some("alice"));

    // The new token loads the bound user on both nodes.
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

#[tokio::test]
async fn regenerate_is_all_or_nothing() {
    let cluster = Cluster::new().await;
    let a = cluster.node(StoreSettings::default());
    let b = cluster.node(StoreSettings::default());
    let t = now();
    let (token, _) = a
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    let on_a = a.load(&token, t).await.unwrap().unwrap();
    // Node B writes the session meanwhile: A's copy is now one version behind.
    let on_b = b.load(&token, t).await.unwrap().unwrap();
    let written = b
        .update(&on_b, SessionChange::data(data(&[("k", "from b")])), t)
        .await
        .unwrap()
        .unwrap();

    let outcome = a.regenerate(&on_a, alice(), false, t).await.unwrap();
    assert_eq!(outcome.map(|_| ()), Err(RotateConflict::OldChanged));

    // DynamoDB holds exactly B's write: no new item, the old one intact.
    let items = cluster.scan().await;
    assert_eq!(items.len(), 1, "no new item, no half-done state");
    let item = cluster
        .tier
        .get(on_a.key.as_bytes())
        .await
        .unwrap()
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

#[tokio::test]
async fn logout_race_cannot_resurrect_session() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let t = now();
    let (token, _) = node
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    // A request loads the session, then a logout lands before it writes.
    let in_flight = node.load(&token, t).await.unwrap().unwrap();
    assert_eq!(node.destroy(&token, t).await.unwrap(), Destroyed::Confirmed);
    let late = node
        .update(
            &in_flight,
            SessionChange::data(data(&[("written", "after logout")])),
            t,
        )
        .await
        .unwrap();
    assert!(late.is_err(), "the late write is refused");
    assert!(
        cluster.scan().await.is_empty(),
        "nothing written back to DynamoDB"
    );
    assert!(
        node.cache().get(&in_flight.key).unwrap().is_none(),
        "nothing cached"
    );
    assert_eq!(node.load(&token, t).await.unwrap(), None);

    // Same race across nodes: B loaded it, A logs out, B's write is refused by
    // DynamoDB's version condition.
    let a = cluster.node(StoreSettings::default());
    let b = cluster.node(StoreSettings::default());
    let (token, _) = a
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    let on_b = b.load(&token, t).await.unwrap().unwrap();
    assert_eq!(a.destroy(&token, t).await.unwrap(), Destroyed::Confirmed);
    assert!(b
        .update(
            &on_b,
            SessionChange::data(data(&[("written", "after logout")])),
            t
        )
        .await
        .unwrap()
        .is_err());
    assert!(
        cluster.scan().await.is_empty(),
        "nothing resurrected in DynamoDB"
    );
    assert!(
        b.cache().get(&on_b.key).unwrap().is_none(),
        "B evicted its stale copy"
    );
    assert_eq!(b.load(&token, t).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_fill_never_overwrites_tombstone() {
    let cluster = Cluster::new().await;
    let writer = cluster.node(StoreSettings::default());
    let node = cluster.node(StoreSettings::default());
    let t = now();
    let mut loaded_before_destroy = 0;
    for i in 0..200 {
        let (token, _) = writer
            .create(NewSession::anonymous(BTreeMap::new()), t)
            .await
            .unwrap();
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
async fn expired_session_is_rejected_in_both_tiers() {
    let policy = Policy {
        idle_timeout_ms: 10 * MIN,
        absolute_timeout_ms: 60 * MIN,
        touch_interval_ms: MIN,
    };
    let settings = StoreSettings {
        policy,
        ..StoreSettings::default()
    };
    let cluster = Cluster::new().await;
    let node = cluster.node(settings);
    let t0 = now();

    // Idle: unused for the idle timeout.
    let (idle, _) = node
        .create(NewSession::anonymous(BTreeMap::new()), t0)
        .await
        .unwrap();
    assert!(node.load(&idle, t0 + 10 * MIN - 1).await.unwrap().is_some());
    // That load touched it: the idle clock restarted.
    assert!(node.load(&idle, t0 + 19 * MIN).await.unwrap().is_some());
    let idle_at = t0 + 29 * MIN;
    assert_eq!(
        node.load(&idle, idle_at).await.unwrap(),
        None,
        "sled tier rejects"
    );
    assert_eq!(
        cluster.node(settings).load(&idle, idle_at).await.unwrap(),
        None,
        "DynamoDB tier rejects"
    );
    assert!(
        cluster
            .tier
            .get(idle.storage_key().as_bytes())
            .await
            .unwrap()
            .is_some(),
        "TTL is lazy"
    );

    // Absolute: used every 5 minutes, still over at 60 minutes.
    let (busy, _) = node
        .create(NewSession::anonymous(BTreeMap::new()), t0)
        .await
        .unwrap();
    for m in (5..60).step_by(5) {
        assert!(
            node.load(&busy, t0 + m * MIN).await.unwrap().is_some(),
            "alive at {m} min"
        );
    }
    let over = t0 + 60 * MIN;
    assert_eq!(
        node.load(&busy, over).await.unwrap(),
        None,
        "sled tier rejects"
    );
    assert_eq!(
        cluster.node(settings).load(&busy, over).await.unwrap(),
        None,
        "DynamoDB tier rejects"
    );
    assert!(
        cluster
            .tier
            .get(busy.storage_key().as_bytes())
            .await
            .unwrap()
            .is_some(),
        "TTL is lazy"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn raw_tokens_are_never_stored() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    let t = now();
    let mut tokens = Vec::new();
    for i in 0..5 {
        let (token, s) = node
            .create(NewSession::anonymous(data(&[("i", &i.to_string())])), t)
            .await
            .unwrap();
        let s = node
            .update(&s, SessionChange::data(data(&[("i", "updated")])), t)
            .await
            .unwrap()
            .unwrap();
        let (new, _) = node
            .regenerate(&s, alice(), true, t)
            .await
            .unwrap()
            .unwrap();
        tokens.push(token);
        tokens.push(new);
    }
    node.destroy(&tokens[1], t).await.unwrap();

    let dump = node.cache().dump().unwrap();
    assert!(!dump.is_empty());
    let items = cluster.scan().await;
    assert!(!items.is_empty());
    for token in &tokens {
        let raw = token.expose_bytes();
        let text = token.expose();
        let b64std = base64::engine::general_purpose::STANDARD.encode(raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let needles: [&[u8]; 4] = [raw, text.as_bytes(), b64std.as_bytes(), hex.as_bytes()];
        for (tree, k, v) in &dump {
            for needle in needles {
                assert!(
                    !contains(k, needle) && !contains(v, needle),
                    "token found in sled tree {tree}"
                );
            }
        }
        for item in &items {
            for (name, value) in item {
                let bytes: Vec<u8> = match value {
                    AttributeValue::B(b) => b.as_ref().to_vec(),
                    AttributeValue::S(s) | AttributeValue::N(s) => s.as_bytes().to_vec(),
                    other => format!("{other:?}").into_bytes(),
                };
                for needle in needles {
                    assert!(
                        !contains(&bytes, needle),
                        "token found in DynamoDB attribute {name}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn tombstones_survive_restart() {
    let cluster = Cluster::new().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let node = cluster.node_at(dir.path(), StoreSettings::default());
    let (logged_out, _) = node
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    let (pre_login, s) = node
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    let (logged_in, _) = node
        .regenerate(&s, alice(), false, t)
        .await
        .unwrap()
        .unwrap();
    node.destroy(&logged_out, t).await.unwrap();
    // Keep copies of the revoked items, to put back behind the node's back.
    let revoked: Vec<_> = [&logged_out, &pre_login]
        .iter()
        .map(|t| t.storage_key())
        .collect();
    drop(node);

    let node = cluster.node_at(dir.path(), StoreSettings::default());
    assert_eq!(node.load(&logged_out, t).await.unwrap(), None);
    assert_eq!(node.load(&pre_login, t).await.unwrap(), None);
    assert!(
        node.load(&logged_in, t).await.unwrap().is_some(),
        "live session survives restart"
    );
    // Even if a stale replica wrote the items back, this node refuses them:
    // the tombstones themselves survived, not just DynamoDB's deletes.
    for key in &revoked {
        assert!(node.cache().is_tombstoned(key).unwrap());
        let mut record = edge_session::SessionRecord::new(&Policy::default(), t);
        record.user_id = Some("alice".into());
        let item = edge_session_sync::Item {
            sid: key.0,
            uid: record.user_id.as_deref().map(str::to_owned),
            ver: record.version,
            exp: record.ttl_epoch_secs(),
            body: codec::encode(&record),
        };
        cluster.tier.create(&item).await.unwrap().unwrap();
    }
    assert_eq!(node.load(&logged_out, t).await.unwrap(), None);
    assert_eq!(node.load(&pre_login, t).await.unwrap(), None);
}

#[tokio::test]
async fn logout_during_dynamodb_outage_is_queued_and_replayed() {
    let cluster = Cluster::new().await;
    let cache = SledCache::temporary().unwrap();
    let live = TieredStore::new(
        cache.clone(),
        cluster.tier.clone(),
        StoreSettings::default(),
    );
    // The same node, its DynamoDB unreachable: a port nothing listens on.
    let down = TieredStore::new(
        cache.clone(),
        dead_tier(cluster.tier.table(), Default::default()).await,
        StoreSettings::default(),
    );
    let t = now();
    let (token, _) = live
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    assert!(live.load(&token, t).await.unwrap().is_some());

    assert_eq!(down.destroy(&token, t).await.unwrap(), Destroyed::Pending);
    assert_eq!(
        down.load(&token, t).await.unwrap(),
        None,
        "dead on this node at once"
    );
    assert_eq!(cache.outbox_len(), 1);
    // Login is refused outright while DynamoDB is down: no token issued.
    let err = down
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(down.drain_outbox(10).await.is_err());
    assert!(
        cluster
            .tier
            .get(token.storage_key().as_bytes())
            .await
            .unwrap()
            .is_some(),
        "still in DynamoDB"
    );

    // DynamoDB is back: the outbox drains and the tiers agree.
    let report = live.drain_outbox(10).await.unwrap();
    assert_eq!((report.confirmed, report.remaining), (1, 0));
    assert!(cluster
        .tier
        .get(token.storage_key().as_bytes())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        cluster
            .node(StoreSettings::default())
            .load(&token, t)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn stale_cache_is_revalidated_after_the_lease() {
    let settings = StoreSettings {
        revalidate_after_ms: 5_000,
        ..StoreSettings::default()
    };
    let cluster = Cluster::new().await;
    let a = cluster.node(settings);
    let b = cluster.node(settings);
    let t = now();
    let (token, _) = a
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    assert!(b.load(&token, t).await.unwrap().is_some(), "B caches it");
    a.destroy(&token, t).await.unwrap();
    // Within the lease B may still serve its copy; past it, B asks DynamoDB.
    assert_eq!(b.load(&token, t + 5_000).await.unwrap(), None);
    assert!(b.cache().get(&token.storage_key()).unwrap().is_none());
}

fn bound(user: &str) -> NewSession {
    NewSession {
        binding: Some(UserBinding {
            user_id: user.into(),
            role: None,
            client: None,
        }),
        ..NewSession::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_everywhere_outlaws_sessions_bound_concurrently() {
    let settings = StoreSettings {
        revalidate_after_ms: 5_000,
        ..StoreSettings::default()
    };
    let cluster = Cluster::new().await;
    let a = cluster.node(settings);
    let b = cluster.node(settings);
    let t = now();

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
        .user_epoch(edge_session::StorageKey::user_epoch("uma").as_bytes())
        .await
        .unwrap();
    assert_eq!(epoch, 1);
    let mut stale = edge_session::SessionRecord::new(&Policy::default(), t);
    stale.user_id = Some("uma".into());
    let straggler = SessionToken::generate();
    let item = edge_session_sync::Item {
        sid: straggler.storage_key().0,
        uid: Some("uma".into()),
        ver: 1,
        exp: stale.ttl_epoch_secs(),
        body: codec::encode(&stale),
    };
    let guard = edge_session_sync::EpochGuard {
        sid: edge_session::StorageKey::user_epoch("uma").0,
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
    assert_eq!(a.load(&straggler, t).await.unwrap(), None);
    assert!(cluster
        .tier
        .get(straggler.storage_key().as_bytes())
        .await
        .unwrap()
        .is_none());

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
    let settings = StoreSettings {
        revalidate_after_ms: 5_000,
        ..StoreSettings::default()
    };
    let cluster = Cluster::new().await;
    let (a, c) = (cluster.node(settings), cluster.node(settings));
    let t = now();
    let (before, _) = c.create(bound("vic"), t).await.unwrap();
    a.revoke_user("vic", t).await.unwrap();
    a.revoke_user("vic", t).await.unwrap();

    // C signs vic in again from a fresh anonymous session: it knows no epoch.
    let (anon, _) = c
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    let anon = c.load(&anon, t).await.unwrap().unwrap();
    let binding = UserBinding {
        user_id: "vic".into(),
        role: None,
        client: None,
    };
    let (token, session) = c
        .regenerate(&anon, Some(binding), false, t)
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
    let mut record = edge_session::SessionRecord::new(&Policy::default(), t);
    record.user_id = Some("vic".into());
    let straggler = SessionToken::generate();
    cluster
        .tier
        .create(&edge_session_sync::Item {
            sid: straggler.storage_key().0,
            uid: Some("vic".into()),
            ver: record.version,
            exp: record.ttl_epoch_secs(),
            body: codec::encode(&record),
        })
        .await
        .unwrap()
        .unwrap();
    let stale = edge_session::Session {
        key: straggler.storage_key(),
        record,
    };
    let fresh_node = cluster.node(settings);
    assert_eq!(
        fresh_node.regenerate(&stale, None, true, t).await.unwrap(),
        Err(RotateConflict::EpochChanged)
    );
    assert_eq!(fresh_node.load(&straggler, t).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_replay_never_cancels_a_regenerate_in_flight() {
    let cluster = Cluster::new().await;
    let node = cluster.node(StoreSettings::default());
    // The outbox replay runs flat out beside the logins (a node runs it in
    // the background): it must not replay a regenerate's pending delete
    // before that regenerate's own transaction.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainer = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            let mut passes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
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
                let binding = Some(UserBinding {
                    user_id: format!("u-{w}-{i}"),
                    role: None,
                    client: None,
                });
                if let Err(conflict) = node.regenerate(&s, binding, false, t).await.unwrap() {
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let passes = drainer.await.unwrap();
    assert!(passes > 10, "the replay ran ({passes} passes)");
    assert_eq!(conflicts, vec![], "logins cancelled by the outbox replay");
}

#[tokio::test]
async fn outage_past_the_lease_follows_on_unreachable() {
    use edge_session::OnUnreachable;
    let cluster = Cluster::new().await;
    let cache = SledCache::temporary().unwrap();
    let lease = StoreSettings {
        revalidate_after_ms: 1_000,
        ..StoreSettings::default()
    };
    let live = TieredStore::new(cache.clone(), cluster.tier.clone(), lease);
    let t = now();
    let (token, _) = live.create(NewSession::default(), t).await.unwrap();
    assert!(live.load(&token, t).await.unwrap().is_some());

    let never_open = edge_session_sync::BreakerSettings {
        failures_to_open: 0,
        ..Default::default()
    };
    let reject = TieredStore::new(
        cache.clone(),
        dead_tier(cluster.tier.table(), never_open).await,
        lease,
    );
    assert!(
        reject.load(&token, t + 500).await.unwrap().is_some(),
        "within the lease: served"
    );
    let err = reject.load(&token, t + 2_000).await.unwrap_err();
    assert!(err.is_unavailable(), "past the lease: 503, {err}");

    let serve = StoreSettings {
        on_unreachable: OnUnreachable::ServeCached {
            max_stale_ms: 5_000,
        },
        ..lease
    };
    let serving = TieredStore::new(
        cache.clone(),
        dead_tier(cluster.tier.table(), never_open).await,
        serve,
    );
    assert!(
        serving.load(&token, t + 2_000).await.unwrap().is_some(),
        "serve_cached: served"
    );
    assert!(
        serving
            .load(&token, t + 6_000)
            .await
            .unwrap_err()
            .is_unavailable(),
        "past max_stale: 503"
    );
    // A revocation this node knows about still wins over serve_cached.
    assert_eq!(
        serving.destroy(&token, t + 2_000).await.unwrap(),
        Destroyed::Pending
    );
    assert_eq!(serving.load(&token, t + 2_000).await.unwrap(), None);
}

#[tokio::test]
async fn circuit_breaker_fails_fast_while_dynamodb_is_down() {
    let breaker = edge_session_sync::BreakerSettings {
        failures_to_open: 2,
        cooldown: Duration::from_secs(60),
    };
    let tier = dead_tier("any-table", breaker).await;
    let key = [7u8; 32];
    for _ in 0..2 {
        let err = tier.get(&key).await.unwrap_err();
        assert!(
            err.is_unavailable() && !err.message.contains("circuit open"),
            "{err}"
        );
    }
    assert!(tier.is_circuit_open());
    let err = tier.get(&key).await.unwrap_err();
    assert!(
        err.is_unavailable() && err.message.contains("circuit open"),
        "{err}"
    );
    let err = tier.ping().await.unwrap_err();
    assert!(
        err.message.contains("circuit open"),
        "readiness fails fast too: {err}"
    );
}

/// A regenerate whose transaction is refused lifts its provisional
/// tombstone. A logout that lands between that tombstone and the lift is its
/// own revocation: its final tombstone, outbox entry and DynamoDB delete
/// survive the lift. (The regenerate is held at that point through the
/// coordinator's one test seam, so the interleaving is exact.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_during_a_failing_regenerate_is_not_lost() {
    let cluster = Cluster::new().await;
    let a = cluster.node(StoreSettings::default());
    let b = cluster.node(StoreSettings::default());
    let t = now();
    let (token, _) = a
        .create(NewSession::anonymous(BTreeMap::new()), t)
        .await
        .unwrap();
    let on_a = a.load(&token, t).await.unwrap().unwrap();
    // Another writer changes the session: A's regenerate will meet a conflict.
    let on_b = b.load(&token, t).await.unwrap().unwrap();
    b.update(&on_b, SessionChange::data(data(&[("k", "from b")])), t)
        .await
        .unwrap()
        .unwrap();

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
    assert_eq!(a.load(&token, t).await.unwrap(), None, "this node");
    assert!(
        cluster
            .tier
            .get(on_a.key.as_bytes())
            .await
            .unwrap()
            .is_none(),
        "deleted in DynamoDB"
    );
    let fresh = cluster.node(StoreSettings::default());
    assert_eq!(fresh.load(&token, t).await.unwrap(), None, "a fresh node");
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

/// A sign-in on a node that read the fleet's global epoch before another
/// node ended every session is bound under the old epoch. It is refused as
/// soon as its node learns the raise (the stream delivers the epoch item's
/// new version, applied here as the follower applies it), and was never
/// served by the node that took the call; a sign-in after that lives.
#[tokio::test]
async fn a_sign_in_racing_the_end_of_every_session_is_outlawed() {
    let settings = StoreSettings {
        revalidate_after_ms: 600_000,
        ..StoreSettings::default()
    };
    let cluster = Cluster::new().await;
    let a = cluster.node(settings);
    let b = cluster.node(settings);
    let t = now();
    // B signs someone in: it reads the global epoch (0), kept for its lease.
    b.create(bound("vi"), t).await.unwrap();
    assert_eq!(a.revoke_everyone(t).await.unwrap(), 1);
    let (racing, s) = b.create(bound("wu"), t).await.unwrap();
    assert_eq!(s.record.bound_global_epoch(), 0, "B has not heard yet");
    assert!(a.load(&racing, t).await.unwrap().is_none(), "A refuses it");
    b.apply_version_raised(edge_session::StorageKey::global_epoch(), Some(1), t)
        .unwrap();
    assert!(b.load(&racing, t).await.unwrap().is_none(), "B refuses it");
    let (later, s) = b.create(bound("wu"), t).await.unwrap();
    assert_eq!(s.record.bound_global_epoch(), 1);
    assert!(a.load(&later, t).await.unwrap().is_some());
    assert!(b.load(&later, t).await.unwrap().is_some());
}

//! DynamoDB unreachable: a logout is queued in the outbox and replayed, a
//! login is refused, a cached session is served within its lease and past
//! it as `on_unreachable` says, and the circuit breaker fails fast.

use std::time::Duration;

use edge_session::{Destroyed, NewSession, OnUnreachable, SledCache, StoreSettings, TieredStore};
use edge_session_sync::BreakerSettings;

use super::{anonymous, assert_gone_from_both_tiers, in_dynamodb, lease};
use crate::harness::{dead_tier, now, Cluster};

/// A node on `cache` whose DynamoDB is unreachable (a port nothing
/// listens on), its breaker as `breaker` says.
async fn cut_off(
    cache: &SledCache,
    cluster: &Cluster,
    breaker: BreakerSettings,
    settings: StoreSettings,
) -> TieredStore {
    let tier = dead_tier(cluster.tier.table(), breaker).await;
    TieredStore::new(cache.clone(), tier, settings)
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
    let down = cut_off(
        &cache,
        &cluster,
        Default::default(),
        StoreSettings::default(),
    )
    .await;
    let t = now();
    let (token, _) = anonymous(&live, t).await;
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
        .create(NewSession::anonymous(Default::default()), t)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(down.drain_outbox(10).await.is_err());
    assert!(
        in_dynamodb(&cluster, &token.storage_key()).await,
        "still in DynamoDB"
    );

    // DynamoDB is back: the outbox drains and the tiers agree.
    let report = live.drain_outbox(10).await.unwrap();
    assert_eq!((report.confirmed, report.remaining), (1, 0));
    assert_gone_from_both_tiers(&cluster, &live, &token, t).await;
}

#[tokio::test]
async fn outage_past_the_lease_follows_on_unreachable() {
    let cluster = Cluster::new().await;
    let cache = SledCache::temporary().unwrap();
    let lease = lease(1_000);
    let live = TieredStore::new(cache.clone(), cluster.tier.clone(), lease);
    let t = now();
    let (token, _) = live.create(NewSession::default(), t).await.unwrap();
    assert!(live.load(&token, t).await.unwrap().is_some());

    let never_open = BreakerSettings {
        failures_to_open: 0,
        ..Default::default()
    };
    let reject = cut_off(&cache, &cluster, never_open, lease).await;
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
    let serving = cut_off(&cache, &cluster, never_open, serve).await;
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
    let breaker = BreakerSettings {
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

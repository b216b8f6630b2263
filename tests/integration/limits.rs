//! DynamoDB's per-partition write limit, enforced by the fault proxy
//! (`Fault::PartitionLimit`): the embedded server enforces none, so without
//! it a hot key looks fine here and throttles in production. A hot key is
//! throttled and cold ones are not; and a flood of touches, each on its own
//! session's key, cannot throttle the logouts beside it.

use std::collections::BTreeMap;
use std::time::Duration;

use edge_session::{NewSession, TieredStore};
use edge_session_sync::{DynamoTier, Endpoint, Item, SID_LEN};

use edge_session_test_support::dynamo::filler_item;

use crate::faultproxy::{Fault, FaultProxy};
use crate::harness::{client_settings, fault_proxy, now, Cluster, TestNode};

fn item(sid: [u8; SID_LEN], ver: u64) -> Item {
    filler_item(sid, ver, 16)
}

/// 40 writes on one key as fast as they go, then one write on each of 40
/// keys, through a proxy allowing `limit` units a second per key: how many
/// of each kind it refused.
async fn hot_and_cold(limit: Option<u32>) -> (u64, u64) {
    let proxy = FaultProxy::to_harness().await.expect("plain http endpoint");
    let cluster = Cluster::new().await;
    // The embedded server checks no credentials; any static pair will do.
    let client = client_settings(Endpoint::Static {
        url: proxy.url(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
    })
    .build()
    .await;
    let tier = DynamoTier::new(client, cluster.tier.table());
    if let Some(limit) = limit {
        proxy.set(Fault::PartitionLimit(limit));
    }
    let hot = [1; SID_LEN];
    tier.create(&item(hot, 1))
        .await
        .expect("the proxy forwards")
        .unwrap();
    for ver in 2..=40 {
        let _ = tier.touch(&item(hot, ver), ver - 1).await;
    }
    let after_hot = proxy.throttled();
    for byte in 2..=41u8 {
        let _ = tier.create(&item([byte; SID_LEN], 1)).await;
    }
    (after_hot, proxy.throttled() - after_hot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_partition_key_is_throttled_and_cold_ones_are_not() {
    if FaultProxy::to_harness().await.is_none() {
        eprintln!("skipped: the DynamoDB endpoint is not plain http");
        return;
    }
    let started = std::time::Instant::now();
    let (hot, cold) = hot_and_cold(Some(10)).await;
    eprintln!(
        "{hot} of the hot key's writes refused in {:?}",
        started.elapsed()
    );
    assert!(
        hot > 0,
        "40 writes on one key, as fast as they go, under a limit of 10 a second"
    );
    assert_eq!(cold, 0, "one write on each of 40 keys");
    assert_eq!(hot_and_cold(None).await, (0, 0), "no limit, no refusal");
}

/// 300 sessions touched at once beside 40 logouts, every key limited to 100
/// write units a second (a tenth of DynamoDB's, so the flood fits this
/// machine). A touch writes only its own session's key, and a logout only
/// its own: nothing is refused, every logout reaches DynamoDB at once. (When
/// touches and logouts each wrote a change-journal entry, every entry of a
/// minute shared one index key: the touches used it up and the logouts
/// were refused with them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_touches_cannot_throttle_logouts() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let cluster = Cluster::new().await;
    let extra = "[stream]\nenabled = false\n[session]\ntouch_interval_secs = 60\n\
         [cache]\nrevalidate_after_ms = 600000\n";
    let node = TestNode::spawn_proxied(cluster.tier.table(), &proxy.url(), "", extra).await;
    let store = node.store.clone();
    let start = now();
    let mut sessions = Vec::new();
    for i in 0..340 {
        let data = BTreeMap::from([("n".to_owned(), i.to_string())]);
        let (token, _) = store
            .create(NewSession::anonymous(data), start)
            .await
            .expect("session created");
        sessions.push(token);
    }
    let logouts = sessions.split_off(300);

    proxy.set(Fault::PartitionLimit(100));
    let later = start + 61_000; // every session is due for a touch
                                // 32 requests in flight: as many as this machine's embedded server
                                // answers within the node's 500 ms attempt timeout.
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    // A logout after every seventh touch, all through the flood.
    let mut pending_logouts = logouts.clone().into_iter();
    for (i, token) in sessions.into_iter().enumerate() {
        let toucher: TieredStore = store.clone();
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let _permit = permit;
            let served = toucher.load(&token, later).await;
            assert!(
                matches!(served, Ok(Some(_))),
                "touched and served: {served:?}"
            );
        });
        if i % 7 == 6 {
            if let Some(token) = pending_logouts.next() {
                let store = store.clone();
                let permit = in_flight.clone().acquire_owned().await.unwrap();
                tasks.spawn(async move {
                    let _permit = permit;
                    store.destroy(&token, later).await.expect("logged out");
                });
            }
        }
    }
    assert!(
        pending_logouts.next().is_none(),
        "every logout ran in the flood"
    );
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(proxy.throttled(), 0, "a write was refused for capacity");
    assert_eq!(
        store.cache().outbox_len(),
        0,
        "every logout reached DynamoDB at once"
    );
    for token in &logouts {
        assert!(
            cluster
                .tier
                .get(token.storage_key().as_bytes())
                .await
                .unwrap()
                .is_none(),
            "a logged-out session is still in DynamoDB"
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

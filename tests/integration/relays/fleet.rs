//! A fleet on relays, every node reaching DynamoDB through a fault proxy
//! with a late change feed, beside a background load written through a
//! proxy enforcing DynamoDB's per-partition limit: every sampled revocation
//! reaches every node and nothing is throttled.

use std::time::{Duration, Instant};

use edge_session_sync::{DynamoTier, Endpoint, Item, SID_LEN};
use edge_session_test_support::dynamo::filler_item;
use reqwest::StatusCode;

use super::{all_live, cached_everywhere_then_revoked, holding, relay_toml, SECRET};
use crate::child::Node;
use crate::coherence::{percentile, start_proxied, terminate_all};
use crate::faultproxy::{Fault, FaultProxy};
use crate::harness::{client, client_settings, fault_proxy, session_status, Cluster};

/// Every DynamoDB call the node at `url` has made, by its metrics.
async fn dynamodb_calls(c: &reqwest::Client, url: &String) -> f64 {
    let text = crate::harness::metrics_text((c, url)).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("edge_session_dynamodb_call_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How long until the node at `url` refuses `token` (at most 10 s).
async fn refused_after(c: reqwest::Client, url: String, token: String) -> Duration {
    let started = Instant::now();
    loop {
        if session_status((&c, &url), &token).await.unwrap() == StatusCode::NOT_FOUND {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still served after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A session item of the background load.
fn load_item(n: u64, ver: u64) -> Item {
    let mut sid = [0x5a; SID_LEN];
    sid[..8].copy_from_slice(&n.to_be_bytes());
    filler_item(sid, ver, 64)
}

/// One of `workers` background writers: worker `w` revokes (creates then
/// deletes) and touches its share of `revocations` and `touches` a second
/// until `stop`. Returns what it did.
async fn load_worker(
    tier: DynamoTier,
    (w, workers): (u64, u64),
    (revocations, touches): (u32, u32),
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64) {
    // Its touched sessions (100 each), and their versions.
    let pool = 100u64;
    let mut versions = vec![1u64; pool as usize];
    let own = |i: u64| (w << 40) | i;
    for i in 0..pool {
        tier.create(&load_item(own(i), 1)).await.unwrap().unwrap();
    }
    let started = Instant::now();
    let share = |rate: u32| f64::from(rate) / workers as f64;
    let (mut revoked, mut touched, mut next) = (0u64, 0u64, pool);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !*stop.borrow() {
        tick.tick().await;
        let due = |rate: u32| (started.elapsed().as_secs_f64() * share(rate)) as u64;
        let (revocations_due, touches_due) = (due(revocations), due(touches));
        // Both kinds in turn, so that one falling behind does not starve
        // the other.
        while (revoked < revocations_due || touched < touches_due) && !*stop.borrow() {
            if revoked < revocations_due {
                next += 1;
                let item = load_item(own(next), 1);
                let created = tier.create(&item).await;
                let deleted = tier.delete(&item.sid).await;
                assert!(
                    matches!((created, deleted), (Ok(Ok(())), Ok(true))),
                    "a background revocation failed"
                );
                revoked += 1;
            }
            if touched < touches_due {
                let i = (touched % pool) as usize;
                let item = load_item(own(i as u64), versions[i] + 1);
                let done = tier.touch(&item, versions[i]).await;
                assert!(
                    matches!(done, Ok(Ok(()))),
                    "a background touch failed: {done:?}"
                );
                versions[i] += 1;
                touched += 1;
            }
        }
    }
    (revoked, touched)
}

/// Background writes beside the fleet, by 16 writers: `revocations`
/// sessions created and deleted and `touches` touches a second, straight to
/// the table through `tier`. Returns the revocations and touches done, and
/// over how long.
async fn load(
    tier: DynamoTier,
    rates: (u32, u32),
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64, Duration) {
    let workers = 16;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        tasks.spawn(load_worker(tier.clone(), (w, workers), rates, stop.clone()));
    }
    let (mut revoked, mut touched) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (r, t) = done.unwrap();
        revoked += r;
        touched += t;
    }
    (revoked, touched, started.elapsed())
}

/// A fleet on relays (`EDGE_SESSION_RELAY_FLEET` nodes, default 5, three of
/// them candidates), every node reaching DynamoDB through the fault proxy
/// with the change feed 300 ms late, beside a background load
/// (`EDGE_SESSION_RELAY_FLEET_LOAD="<revocations>,<touches>"` a second,
/// default 10 and 50) written through a proxy enforcing DynamoDB's
/// per-partition limit: every sampled revocation reaches every node, nothing
/// is throttled, and what each node asks of DynamoDB while idle does not
/// grow with the fleet (printed: run it at two sizes to compare).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_on_relays_gets_every_revocation() {
    let n: usize = std::env::var("EDGE_SESSION_RELAY_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(3);
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    proxy.set(Fault::FeedDelay(Duration::from_millis(300)));
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| start_proxied(d.path(), &table, &proxy, &relay_toml(i < 3, SECRET)))
        .collect();
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;

    let idle = Duration::from_secs(5);
    let mut before = Vec::new();
    for node in &nodes {
        before.push(dynamodb_calls(&c, &node.url).await);
    }
    tokio::time::sleep(idle).await;
    let mut rates = Vec::new();
    for (node, was) in nodes.iter().zip(&before) {
        rates.push((dynamodb_calls(&c, &node.url).await - was) / idle.as_secs_f64());
    }
    let mut holders = Vec::new();
    for node in &nodes {
        holders.push(holding(&c, node).await);
    }
    let per = |relays: bool| -> Vec<String> {
        rates
            .iter()
            .zip(&holders)
            .filter(|(_, h)| **h == relays)
            .map(|(r, _)| format!("{r:.1}"))
            .collect()
    };
    eprintln!(
        "{n} nodes idle, DynamoDB calls a second: relays {:?}, others {:?}",
        per(true),
        per(false)
    );

    let (revocations, touches) = std::env::var("EDGE_SESSION_RELAY_FLEET_LOAD")
        .ok()
        .and_then(|v| {
            let (r, t) = v.split_once(',')?;
            Some((r.trim().parse().ok()?, t.trim().parse().ok()?))
        })
        .unwrap_or((10u32, 50u32));
    let limits = FaultProxy::to_harness().await.expect("plain http endpoint");
    limits.set(Fault::PartitionLimit(1000));
    let writer_tier = DynamoTier::new(
        client_settings(Endpoint::Static {
            url: limits.url(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        })
        .build()
        .await,
        &table,
    );
    let (stop_load, load_stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(load(writer_tier, (revocations, touches), load_stopped));

    let mut times = Vec::new();
    for i in 0..20 {
        let writer = &nodes[i % n];
        let user = format!("fleet-{i}");
        let token = cached_everywhere_then_revoked(&c, &nodes, writer, &user).await;
        let mut waits = tokio::task::JoinSet::new();
        for node in nodes.iter().filter(|n| n.url != writer.url) {
            waits.spawn(refused_after(c.clone(), node.url.clone(), token.clone()));
        }
        while let Some(took) = waits.join_next().await {
            times.push(took.unwrap());
        }
    }
    stop_load.send_replace(true);
    let (revoked, touched, took) = background.await.unwrap();
    let secs = took.as_secs_f64();
    times.sort();
    eprintln!(
        "{n} nodes, {} sampled (node, revocation) pairs, none missed: p50 {:?}, p99 {:?}, max {:?}; \
         beside {:.0} revocations/s and {:.0} touches/s (asked {revocations} and {touches}), {} refused for capacity",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap(),
        revoked as f64 / secs,
        touched as f64 / secs,
        limits.throttled(),
    );
    assert_eq!(limits.throttled(), 0, "a write was refused for capacity");
    terminate_all(nodes).await;
}

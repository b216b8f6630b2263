//! Relays (`stream.source = "relays"`): node processes on one table, a
//! few of them holding relay slots and pushing the stream to all. A
//! revocation reaches every node through them; killing the primary relay
//! loses none; with every relay down, nodes fall to the short lease; a
//! relay that cannot sign with the fleet secret is refused.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::child::Node;
use crate::coherence::{percentile, start, start_proxied, status, terminate_all, until_refused};
use crate::faultproxy::{Fault, FaultProxy};
use crate::harness::{
    client, client_settings, end_session, eventually, metric, service_login, v1_session, Cluster,
};
use edge_session::sync::{DynamoTier, Endpoint, Item, SlotId, SID_LEN};

const SECRET: &str = "relay-test-secret-0123456789abcdef";

/// A relay node's settings (`candidate`: it may hold a slot) over a
/// ten-minute lease, so only the relays can make a node refuse in time.
fn relay_toml(candidate: bool, secret: &str) -> String {
    let listen = if candidate {
        "listen = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    relay_toml_with(listen, secret)
}

/// As [`relay_toml`], with `relay` (lines of the `[relay]` table) saying
/// whether and where the node relays.
fn relay_toml_with(relay: &str, secret: &str) -> String {
    let listen = relay;
    format!(
        "\n[stream]\nsource = \"relays\"\npoll_interval_ms = 100\nheartbeat_interval_ms = 300\n\
         lag_threshold_ms = 1500\n[relay]\n{listen}secret = \"{secret}\"\nlease_ms = 1500\nbeat_ms = 300\n\
         [cache]\nrevalidate_after_ms = 600000\n[session]\ntouch_interval_secs = 1200\n"
    )
}

async fn lease(c: &reqwest::Client, node: &Node) -> Option<f64> {
    metric((c, &node.url), "edge_session_lease_seconds").await
}

async fn holding(c: &reqwest::Client, node: &Node) -> bool {
    metric((c, &node.url), "edge_session_relay_holding").await == Some(1.0)
}

async fn revoke(c: &reqwest::Client, node: &Node, token: &str) {
    assert_eq!(
        end_session((c, &node.url), token).await,
        StatusCode::NO_CONTENT
    );
}

/// `n` relay nodes over `table`, the first `candidates` of them candidates.
fn fleet(table: &str, dirs: &[tempfile::TempDir], candidates: usize) -> Vec<Node> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| start(d.path(), table, &relay_toml(i < candidates, SECRET)))
        .collect()
}

async fn all_live(c: &reqwest::Client, nodes: &[&Node]) {
    for node in nodes {
        eventually("a node's relays live: the ten-minute lease", || async {
            lease(c, node).await == Some(600.0)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_reach_every_node_through_the_relays() {
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // Two candidates for the two slots, two nodes that only subscribe.
    let nodes = fleet(&table, &dirs, 2);
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    let mut times = Vec::new();
    for i in 0..20 {
        let writer = &nodes[i % 4];
        let token = service_login((&c, &writer.url), &format!("relayed-{i}")).await;
        for node in &nodes {
            assert_eq!(status(&c, node, &token).await, StatusCode::OK);
        }
        revoke(&c, writer, &token).await;
        let others: Vec<&Node> = nodes.iter().filter(|n| n.url != writer.url).collect();
        let give_up = Duration::from_secs(10);
        let (a, b, cc) = tokio::join!(
            until_refused(&c, others[0], &token, give_up),
            until_refused(&c, others[1], &token, give_up),
            until_refused(&c, others[2], &token, give_up)
        );
        times.extend([a, b, cc]);
    }
    times.sort();
    eprintln!(
        "through two relays, {} (node, revocation) pairs: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap()
    );
    terminate_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_primary_relay_loses_no_revocation() {
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // Three candidates for two slots: one waits to take over.
    let mut nodes = fleet(&table, &dirs, 3);
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    let mut held = Vec::new();
    for node in nodes.iter().take(3) {
        held.push(holding(&c, node).await);
    }
    let holder = held
        .iter()
        .position(|h| *h)
        .expect("a candidate holds a slot");
    let waiting = held.iter().position(|h| !*h).expect("a candidate waits");
    // The writer and the watched node are never the one killed.
    let (writer, watched) = (3, if holder == 0 { 1 } else { 0 });
    let mut tokens = Vec::new();
    for i in 0..30 {
        let token = service_login((&c, &nodes[writer].url), &format!("kill-{i}")).await;
        assert_eq!(status(&c, &nodes[watched], &token).await, StatusCode::OK);
        tokens.push(token);
    }
    // Revoke a third, kill the holder (SIGKILL), revoke the rest.
    for token in &tokens[..10] {
        revoke(&c, &nodes[writer], token).await;
    }
    drop(nodes.remove(holder));
    let shift = |i: usize| if i > holder { i - 1 } else { i };
    let (watched, writer, waiting) = (shift(watched), shift(writer), shift(waiting));
    for token in &tokens[10..] {
        revoke(&c, &nodes[writer], token).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    for token in &tokens {
        until_refused(&c, &nodes[watched], token, Duration::from_secs(10)).await;
    }
    eprintln!(
        "every revocation refused on the watched node {:?} after the last one",
        started.elapsed()
    );
    // The waiting candidate takes the dead holder's slot over, resuming
    // the positions the dead holder kept in the table.
    eventually("the slot is taken over", || async {
        holding(&c, &nodes[waiting]).await
    })
    .await;
    let resumed = metric(
        (&c, &nodes[waiting].url),
        "edge_session_relay_resumed_shards",
    )
    .await;
    assert!(
        resumed.is_some_and(|shards| shards >= 1.0),
        "the successor resumed no position: {resumed:?}"
    );
    terminate_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_relay_down_nodes_fall_to_the_short_lease() {
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = fleet(&table, &dirs, 2);
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    let subscriber = nodes.pop().unwrap();
    drop(nodes); // both relays killed
    let took = eventually("the subscriber falls to the short lease", || async {
        lease(&c, &subscriber).await == Some(1.0)
    })
    .await;
    eprintln!("on the short lease {took:?} after both relays died");
    terminate_all([subscriber]).await;
}

/// A port free a moment ago on 127.0.0.1 (for a listener whose port must be
/// known before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The network between one node and every relay fails (DynamoDB still
/// answers it; the other nodes still reach the relays). Each relay's feed
/// is reached through a proxy that holds back the cut node's subscriptions.
/// The cut node falls to the short lease and refuses another node's
/// revocation within it; the others stay on the long lease; healed, the
/// node is back on the long lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_relays_falls_to_the_short_lease() {
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut proxies = Vec::new();
    let mut nodes = Vec::new();
    for dir in &dirs[..2] {
        let port = free_port();
        let proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).await;
        let relay = format!(
            "listen = \"127.0.0.1:{port}\"\nadvertise_url = \"{}\"\n",
            proxy.url()
        );
        nodes.push(start(dir.path(), &table, &relay_toml_with(&relay, SECRET)));
        proxies.push(proxy);
    }
    nodes.push(start(dirs[2].path(), &table, &relay_toml(false, SECRET)));
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    let (writer, cut) = (&nodes[0], &nodes[2]);
    let token = service_login((&c, &writer.url), "cut-off").await;
    assert_eq!(status(&c, cut, &token).await, StatusCode::OK);

    // A subscription names its node: the proxies hold back the cut node's.
    let name = cut.url.strip_prefix("http://").unwrap();
    let marker: &'static str = format!("x-edge-session-node: {name}\r\n").leak();
    for proxy in &proxies {
        proxy.set(Fault::HoldRequestsTo(marker));
    }
    let took = eventually("the cut node falls to the short lease", || async {
        lease(&c, cut).await == Some(1.0)
    })
    .await;
    eprintln!("the cut node on the short lease {took:?} after the cut");
    assert!(
        proxies.iter().any(|p| p.held() >= 1),
        "no subscription of the cut node was held"
    );
    all_live(&c, &[&nodes[0], &nodes[1]]).await;
    revoke(&c, writer, &token).await;
    let refused = until_refused(&c, cut, &token, Duration::from_secs(5)).await;
    eprintln!("the cut node refused the revocation after {refused:?}");

    for proxy in &proxies {
        proxy.set(Fault::Pass);
    }
    all_live(&c, &[cut]).await;
    terminate_all(nodes).await;
}

/// A node killed while another node revokes a session it had cached, and
/// started again on the same cache: the relays' rings no longer hold what
/// it missed (a node down for a day is no different), so what it cached
/// before counts as unconfirmed, and the revoked session is refused on its
/// first request after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_while_a_revocation_passed_does_not_serve_it_after_restart() {
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = fleet(&table, &dirs, 2);
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    let token = service_login((&c, &nodes[0].url), "down-and-back").await;
    assert_eq!(status(&c, &nodes[2], &token).await, StatusCode::OK);
    // sled writes the cache to disk every 500 ms: let the entry reach it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(nodes.pop()); // SIGKILL: the cache stays on disk as it was
    revoke(&c, &nodes[0], &token).await;
    // The revocation passes through the relays while the node is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = start(dirs[2].path(), &table, &relay_toml(false, SECRET));
    all_live(&c, &[&back]).await;
    assert_eq!(
        status(&c, &back, &token).await,
        StatusCode::NOT_FOUND,
        "a revocation missed while down was served from the cache"
    );
    nodes.push(back);
    terminate_all(nodes).await;
}

/// The only relay (one slot) is killed and started again: it takes its slot
/// back and resumes the positions it kept in the table, and nodes are back
/// on the long lease, refusing what was revoked while no relay ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_relay_resumes_from_its_checkpoint() {
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let one_slot = |listen: &str| relay_toml_with(&format!("{listen}slots = 1\n"), SECRET);
    let relay_lines = one_slot("listen = \"127.0.0.1:0\"\n");
    let mut nodes = vec![
        start(dirs[0].path(), &table, &relay_lines),
        start(dirs[1].path(), &table, &one_slot("")),
        start(dirs[2].path(), &table, &one_slot("")),
    ];
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    assert!(holding(&c, &nodes[0]).await);
    let resumed = |node: &Node| {
        let url = node.url.clone();
        let c = c.clone();
        async move {
            metric((&c, &url), "edge_session_relay_resumed_shards")
                .await
                .unwrap_or(0.0)
        }
    };
    assert_eq!(
        resumed(&nodes[0]).await,
        0.0,
        "a first start resumes nothing"
    );
    let token = service_login((&c, &nodes[1].url), "restarted-relay").await;
    assert_eq!(status(&c, &nodes[2], &token).await, StatusCode::OK);

    drop(nodes.remove(0)); // SIGKILL
    revoke(&c, &nodes[0], &token).await;
    let relay = start(dirs[0].path(), &table, &relay_lines);
    eventually("the restarted relay holds its slot again", || async {
        holding(&c, &relay).await
    })
    .await;
    let shards = resumed(&relay).await;
    assert!(shards >= 1.0, "the restarted relay resumed no position");
    all_live(&c, &[&nodes[0], &nodes[1]]).await;
    assert_eq!(status(&c, &nodes[1], &token).await, StatusCode::NOT_FOUND);
    nodes.push(relay);
    terminate_all(nodes).await;
}

/// The table's stream is switched off and on again (a new stream ARN; the
/// writes between the two streams are in neither): a revocation made in
/// that gap reaches no relay, so every node must count what it cached
/// before the new stream as unconfirmed, and refuse the revoked session
/// within the short lease, long before the ten-minute one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_stream_loses_no_revocation() {
    let cluster = Cluster::new().await;
    let table = cluster.tier.table().to_owned();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = fleet(&table, &dirs, 2);
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    let token = service_login((&c, &nodes[0].url), "replaced-stream").await;
    assert_eq!(status(&c, &nodes[2], &token).await, StatusCode::OK);

    let dynamodb = client_settings(crate::harness::endpoint()).build().await;
    let stream = |enabled: bool| {
        let mut spec =
            aws_sdk_dynamodb::types::StreamSpecification::builder().stream_enabled(enabled);
        if enabled {
            spec = spec.stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages);
        }
        dynamodb
            .update_table()
            .table_name(&table)
            .stream_specification(spec.build().unwrap())
            .send()
    };
    stream(false).await.unwrap();
    revoke(&c, &nodes[0], &token).await;
    stream(true).await.unwrap();
    let took = until_refused(&c, &nodes[2], &token, Duration::from_secs(15)).await;
    eprintln!("refused {took:?} after the stream was replaced");
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    terminate_all(nodes).await;
}

/// A relay in a slot that cannot sign with the fleet secret: it accepts any
/// subscriber and sends a hello and heartbeats that would keep a node on
/// the long lease. The node refuses every frame and stays on the short
/// lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_relay_is_refused() {
    let cluster = Cluster::new().await;
    let table = cluster.tier.table().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    for slot in 0..2 {
        let epoch = cluster
            .tier
            .claim_relay_slot(SlotId::new("default", slot), None, "forger", &url)
            .await
            .unwrap()
            .expect("the slot was free");
        assert_eq!(epoch, 1);
    }
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let forged = tokio::spawn(forged_relay(listener, served.clone()));
    // The forger keeps its slots fresh: nobody else may claim them.
    let tier = cluster.tier.clone();
    let renew = tokio::spawn(async move {
        loop {
            for slot in 0..2 {
                let _ = tier
                    .renew_relay_slot(SlotId::new("default", slot), 1, "forger")
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &table, &relay_toml(false, SECRET));
    let c = client();
    eventually("the node subscribed to the forged relay", || async {
        served.load(std::sync::atomic::Ordering::SeqCst) >= 3
    })
    .await;
    eventually("the node refused its frames", || async {
        metric((&c, &node.url), "edge_session_relay_frames_refused_total")
            .await
            .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            lease(&c, &node).await,
            Some(1.0),
            "forged heartbeats believed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    renew.abort();
    forged.abort();
    terminate_all([node]).await;
}

/// Serve every connection a chunked feed of frames signed with a key that
/// is not the fleet's: a hello, then a heartbeat every 100 ms.
async fn forged_relay(
    listener: tokio::net::TcpListener,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let _ = stream.read(&mut head).await;
            let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            let mut line = |text: String| {
                let text = format!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA {text}\n");
                out.extend_from_slice(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes());
            };
            line(r#"{"e":1,"s":0,"t":"hello","resumed":false}"#.to_owned());
            for s in 1..50 {
                line(format!(r#"{{"e":1,"s":{s},"t":"beat","age":10}}"#));
            }
            for chunk in out.chunks(64) {
                if stream.write_all(chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

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
        let res = v1_session((&c, &url), Method::GET, "/v1/session", &token)
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::NOT_FOUND {
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
    Item {
        sid,
        uid: None,
        ver,
        exp: u64::MAX / 2,
        body: vec![0; 64],
    }
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
    let Some(proxy) = FaultProxy::to_harness().await else {
        eprintln!("skipped: the DynamoDB endpoint is not plain http");
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
        let token = service_login((&c, &writer.url), &format!("fleet-{i}")).await;
        for node in &nodes {
            assert_eq!(status(&c, node, &token).await, StatusCode::OK);
        }
        revoke(&c, writer, &token).await;
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

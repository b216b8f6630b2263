//! Relays (`stream.source = "relays"`): node processes on one table, a
//! few of them holding relay slots and pushing the stream to all. A
//! revocation reaches every node through them; killing the primary relay
//! loses none; with every relay down, nodes fall to the short lease; a
//! relay that cannot sign with the fleet secret is refused.
//!
//! - [`forged`]: a relay that cannot sign with the fleet secret.
//! - [`fleet`]: a fleet on relays beside a background load.

mod fleet;
mod forged;

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::child::Node;
use crate::coherence::{percentile, start, status, terminate_all, until_refused};
use crate::faultproxy::{Fault, FaultProxy};
use crate::harness::{
    client, client_settings, end_session, eventually, metric, service_login, Cluster,
};

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

/// A fleet of `size` relay nodes over a fresh table, the first `candidates`
/// of them candidates, every one on the long lease: the table, the nodes'
/// directories, the nodes, and a client.
async fn live_fleet(
    size: usize,
    candidates: usize,
) -> (String, Vec<tempfile::TempDir>, Vec<Node>, reqwest::Client) {
    let table = Cluster::new().await.tier.table().to_owned();
    let dirs: Vec<_> = (0..size).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = fleet(&table, &dirs, candidates);
    let c = client();
    all_live(&c, &nodes.iter().collect::<Vec<_>>()).await;
    (table, dirs, nodes, c)
}

/// A session signed in as `user` on `writer`, read (and cached) by every
/// one of `nodes`, then revoked on `writer`: its token.
async fn cached_everywhere_then_revoked(
    c: &reqwest::Client,
    nodes: &[Node],
    writer: &Node,
    user: &str,
) -> String {
    let token = service_login((c, &writer.url), user).await;
    for node in nodes {
        assert_eq!(status(c, node, &token).await, StatusCode::OK);
    }
    revoke(c, writer, &token).await;
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_reach_every_node_through_the_relays() {
    // Two candidates for the two slots, two nodes that only subscribe.
    let (_table, _dirs, nodes, c) = live_fleet(4, 2).await;
    let mut times = Vec::new();
    for i in 0..20 {
        let writer = &nodes[i % 4];
        let user = format!("relayed-{i}");
        let token = cached_everywhere_then_revoked(&c, &nodes, writer, &user).await;
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
    // Three candidates for two slots: one waits to take over.
    let (_table, _dirs, mut nodes, c) = live_fleet(4, 3).await;
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
    let (_table, _dirs, mut nodes, c) = live_fleet(3, 2).await;
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
    let (table, dirs, mut nodes, c) = live_fleet(3, 2).await;
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
    let (table, _dirs, nodes, c) = live_fleet(3, 2).await;
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

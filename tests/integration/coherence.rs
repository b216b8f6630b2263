//! Several nodes as separate processes over one DynamoDB-wire endpoint (the
//! harness's): a revocation on one node reaches the others, through the
//! stream follower when it runs and within the lease when it does not; a
//! follower restart misses nothing; a revocation made while a node's
//! follower is still taking its first position is not missed either.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::child::Node;
use crate::faultproxy::{Fault, FaultProxy, IndexLag};
use crate::harness::{
    client, end_session, eventually, fault_proxy, metric, node_toml, proxied_node_toml,
    service_login, table_name, v1, v1_session, Cluster,
};
use crate::process;

/// Start a node process over `table` with `extra` TOML sections.
pub(crate) fn start(dir: &Path, table: &str, extra: &str) -> Node {
    let mut toml = node_toml(&dir.join("data"), table, "");
    toml.push_str(extra);
    start_toml(dir, &toml)
}

/// Start a node process from a whole config written under `dir`.
pub(crate) fn start_toml(dir: &Path, toml: &str) -> Node {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    process::start(
        &path,
        &std::env::var("NODE_LOG").unwrap_or_else(|_| "warn".into()),
    )
}

/// Start a node over `table` that reaches DynamoDB through `proxy`.
pub(crate) fn start_proxied(dir: &Path, table: &str, proxy: &FaultProxy, extra: &str) -> Node {
    let toml = proxied_node_toml(&dir.join("data"), table, &proxy.url(), "", extra);
    start_toml(dir, &toml)
}

/// Stop every node with SIGTERM; each must exit cleanly.
/// SIGTERM to the node process `node`, and wait (off the runtime's
/// threads) until it exits, which it must do cleanly: what it wrote.
pub(crate) async fn terminate_cleanly(node: Node) -> String {
    let (status, output) = tokio::task::spawn_blocking(move || node.terminate().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "exit status {status:?}; output:\n{output}"
    );
    output
}

/// [`terminate_cleanly`] each of `nodes`.
pub(crate) async fn terminate_all(nodes: impl IntoIterator<Item = Node>) {
    for node in nodes {
        terminate_cleanly(node).await;
    }
}

pub(crate) async fn status(c: &reqwest::Client, node: &Node, token: &str) -> StatusCode {
    v1_session((c, &node.url), Method::GET, "/v1/session", token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Wait until each of `nodes` has its follower healthy: the ten-minute lease
/// of [`LONG_LEASE`].
async fn on_the_long_lease(c: &reqwest::Client, nodes: &[&Node]) {
    for node in nodes {
        eventually("the node's follower healthy: the long lease", || async {
            metric((c, &node.url), "edge_session_lease_seconds").await == Some(600.0)
        })
        .await;
    }
}

/// Poll `node` until `token` is refused; the time it took.
pub(crate) async fn until_refused(
    c: &reqwest::Client,
    node: &Node,
    token: &str,
    give_up: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        match status(c, node, token).await {
            StatusCode::NOT_FOUND => return started.elapsed(),
            StatusCode::OK => {}
            other => panic!("unexpected status {other}"),
        }
        assert!(
            started.elapsed() < give_up,
            "still served after {give_up:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const STREAM_FAST: &str = "\n[stream]\npoll_interval_ms = 100\n";

/// A ten-minute lease and no touch within a test: only the follower can
/// make a node refuse a revoked session in time.
const LONG_LEASE: &str =
    "\n[cache]\nrevalidate_after_ms = 600000\n[session]\ntouch_interval_secs = 1200\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_on_one_node_reaches_the_others() {
    let table = table_name();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // A long lease: only the stream follower can make B and C refuse fast.
    let lease_ms = 30_000;
    let extra = format!("{STREAM_FAST}\n[cache]\nrevalidate_after_ms = {lease_ms}\n");
    let nodes: Vec<Node> = dirs
        .iter()
        .map(|d| start(d.path(), &table, &extra))
        .collect();
    let nodes = std::sync::Arc::new(nodes);
    // Let every follower find its shards before the first revocation.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let workers = 8;
    let per_worker = 25;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let (a, b, cc) = (&nodes[0], &nodes[1], &nodes[2]);
            let mut times = Vec::new();
            for i in 0..per_worker {
                let token = service_login((&c, &a.url), &format!("user-{w}-{i}")).await;
                assert_eq!(
                    status(&c, b, &token).await,
                    StatusCode::OK,
                    "B reads it (and caches it)"
                );
                assert_eq!(
                    status(&c, cc, &token).await,
                    StatusCode::OK,
                    "C reads it (and caches it)"
                );
                assert_eq!(
                    end_session((&c, &a.url), &token).await,
                    StatusCode::NO_CONTENT
                );
                assert_eq!(
                    status(&c, a, &token).await,
                    StatusCode::NOT_FOUND,
                    "A refuses at once"
                );
                let (tb, tc) = tokio::join!(
                    until_refused(&c, b, &token, Duration::from_millis(lease_ms)),
                    until_refused(&c, cc, &token, Duration::from_millis(lease_ms))
                );
                times.push(tb);
                times.push(tc);
            }
            times
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    times.sort();
    assert_eq!(times.len(), 2 * workers * per_worker);
    println!(
        "propagation over {} revocations x 2 nodes: p50 {:?}, p99 {:?}, max {:?}",
        workers * per_worker,
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times.last().unwrap()
    );
    let nodes = std::sync::Arc::try_unwrap(nodes).ok().unwrap();
    terminate_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_follower_off_the_lease_bounds_staleness() {
    let table = table_name();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lease_ms = 1500;
    let a = start(da.path(), &table, "");
    let b = start(
        db.path(),
        &table,
        &format!("\n[stream]\nenabled = false\n[cache]\nrevalidate_after_ms = {lease_ms}\n"),
    );
    let c = client();
    let mut times = Vec::new();
    for i in 0..10 {
        let token = service_login((&c, &a.url), &format!("lease-{i}")).await;
        assert_eq!(status(&c, &b, &token).await, StatusCode::OK);
        let cached_at = Instant::now();
        assert_eq!(
            end_session((&c, &a.url), &token).await,
            StatusCode::NO_CONTENT
        );
        // B may serve its copy until the lease runs out, never after.
        let waited = until_refused(&c, &b, &token, Duration::from_millis(lease_ms + 1000)).await;
        let since_cached = cached_at.elapsed();
        assert!(
            since_cached <= Duration::from_millis(lease_ms + 1000),
            "{since_cached:?}"
        );
        times.push(waited);
    }
    times.sort();
    println!(
        "follower off, lease {lease_ms} ms: refused after p50 {:?}, max {:?}",
        percentile(&times, 0.5),
        times.last().unwrap()
    );
    terminate_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_restart_misses_no_revocation() {
    let table = table_name();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A 10-minute lease: within this test only the stream can make B refuse.
    let extra = format!("{STREAM_FAST}\n[cache]\nrevalidate_after_ms = 600000\n");
    let a = start(da.path(), &table, &extra);
    let b = start(db.path(), &table, &extra);
    let c = client();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut tokens = Vec::new();
    for i in 0..20 {
        let token = service_login((&c, &a.url), &format!("restart-{i}")).await;
        assert_eq!(status(&c, &b, &token).await, StatusCode::OK);
        tokens.push(token);
    }
    // Revoke one while B runs, so B has a checkpoint to resume from.
    v1_session((&c, &a.url), Method::DELETE, "/v1/session", &tokens[0])
        .send()
        .await
        .unwrap();
    until_refused(&c, &b, &tokens[0], Duration::from_secs(10)).await;

    terminate_cleanly(b).await;
    // While B is down, A revokes half of them.
    for token in tokens.iter().skip(1).step_by(2) {
        assert_eq!(
            end_session((&c, &a.url), token).await,
            StatusCode::NO_CONTENT
        );
    }
    let b = start(db.path(), &table, &extra);
    for (i, token) in tokens.iter().enumerate().skip(1) {
        if i % 2 == 1 {
            until_refused(&c, &b, token, Duration::from_secs(10)).await;
        }
    }
    for (i, token) in tokens.iter().enumerate().skip(1) {
        if i % 2 == 0 {
            assert_eq!(
                status(&c, &b, token).await,
                StatusCode::OK,
                "untouched session {i} still served"
            );
        }
    }
    terminate_all([a, b]).await;
}

/// A cold-starting node serves (and caches) sessions before its follower has
/// taken its `LATEST` position; a revocation written in between is in no
/// record that follower will read. Node B reaches DynamoDB through the fault
/// proxy, which holds back its `GetShardIterator` calls (B's follower start
/// is slowed for as long as the test needs) and passes everything else. B
/// caches sessions at once, A revokes them, then B's follower takes its
/// position and becomes healthy, so B's ten-minute lease is in force: only
/// the rule "a record confirmed before the follower's position is served on
/// the short lease" (docs/design.md, tier rule 6) makes B refuse them now.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_during_a_stream_followers_cold_start_is_not_missed() {
    cold_start_revocation("stream", "GetShardIterator").await;
}

/// B starts while A revokes, its follower (reading `source`) held at its
/// first `first_read` until the revocations are done.
async fn cold_start_revocation(source: &str, first_read: &'static str) {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let table = table_name();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A ten-minute lease (the short one stays 1 s) and no touch within the
    // test: nothing else makes B re-read a session.
    let extra = format!(
        "{STREAM_FAST}source = \"{source}\"\n[cache]\nrevalidate_after_ms = 600000\n\
         [session]\ntouch_interval_secs = 1200\n"
    );
    let a = start(da.path(), &table, &extra);
    let c = client();
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(service_login((&c, &a.url), &format!("cold-{i}")).await);
    }

    proxy.set(Fault::HoldRequestsTo(first_read));
    let b_toml = proxied_node_toml(&db.path().join("data"), &table, &proxy.url(), "", &extra);
    let b = start_toml(db.path(), &b_toml);
    for token in &tokens {
        assert_eq!(status(&c, &b, token).await, StatusCode::OK, "B caches it");
    }
    for token in &tokens {
        assert_eq!(
            end_session((&c, &a.url), token).await,
            StatusCode::NO_CONTENT
        );
    }
    // B's follower is still waiting for its position: the revocations are
    // before it, in no record B will read.
    eventually("B's follower asks for its position", || async {
        proxy.held() > 0
    })
    .await;
    proxy.set(Fault::Pass);
    eventually(
        "B's follower healthy: the ten-minute lease in force",
        || async { metric((&c, &b.url), "edge_session_lease_seconds").await == Some(600.0) },
    )
    .await;

    for token in &tokens {
        until_refused(&c, &b, token, Duration::from_secs(30)).await;
    }
    for token in &tokens {
        assert_eq!(
            status(&c, &b, token).await,
            StatusCode::NOT_FOUND,
            "refused for good"
        );
    }
    terminate_all([a, b]).await;
}

/// A logout whose transaction reaches DynamoDB seconds after its node built
/// it (a slow link, or the SDK retrying the same body) still reaches every
/// other node: the stream places a write by its commit, not by its
/// writer's clock. (The change journal's clock window missed exactly this:
/// B served the logged-out token for its whole lease.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_committed_late_is_not_missed() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let cluster = Cluster::new().await;
    let table = cluster.tier.table().to_owned();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A ten-minute lease: only the follower can make B refuse in time.
    let extra = format!("{STREAM_FAST}{LONG_LEASE}");
    let a = start_proxied(da.path(), &table, &proxy, &extra);
    let b = start(db.path(), &table, &extra);
    let c = client();
    let token = service_login((&c, &a.url), "late-commit").await;
    assert_eq!(status(&c, &b, &token).await, StatusCode::OK, "B caches it");
    on_the_long_lease(&c, &[&b]).await;

    // A's writes now reach the table three seconds after A sends them.
    let late = Duration::from_secs(3);
    proxy.set(Fault::SlowRequestsTo("TransactWriteItems", late));
    assert_eq!(
        end_session((&c, &a.url), &token).await,
        StatusCode::NO_CONTENT
    );
    // A answers once the revocation is durable here (its outbox retries the
    // delete); the delete commits seconds later. From the commit, B must
    // refuse within its follower's delivery time, far inside the lease.
    let answered = Instant::now();
    eventually("the late delete commits", || async {
        !crate::faults::in_dynamodb(&cluster, &token).await
    })
    .await;
    let committed = answered.elapsed();
    let took = until_refused(&c, &b, &token, Duration::from_secs(5)).await;
    eprintln!("the delete committed {committed:?} after A answered; B refused it {took:?} later");
    proxy.set(Fault::Pass);
    terminate_all([a, b]).await;
}

/// A feed that answers every poll and delivers nothing looks healthy to a
/// follower that judges itself by its polls. The heartbeat it writes stops
/// coming back, so the node shortens its lease, and restores it when the
/// feed flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_feed_shortens_the_lease() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let table = Cluster::new().await.tier.table().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{STREAM_FAST}heartbeat_interval_ms = 300\nlag_threshold_ms = 1500\n\
         [cache]\nrevalidate_after_ms = 600000\n"
    );
    let node = start_proxied(dir.path(), &table, &proxy, &extra);
    let c = client();
    let lease = || async { metric((&c, &node.url), "edge_session_lease_seconds").await };
    eventually("the follower healthy: the long lease", || async {
        lease().await == Some(600.0)
    })
    .await;

    proxy.set(Fault::StallFeed);
    eventually("the stuck feed shortens the lease", || async {
        lease().await == Some(1.0)
    })
    .await;
    assert!(
        proxy.stalled() > 0,
        "the follower kept polling the stuck feed"
    );

    proxy.set(Fault::Pass);
    eventually("the flowing feed restores the lease", || async {
        lease().await == Some(600.0)
    })
    .await;
    terminate_all([node]).await;
}

/// What a change feed delivers shows up late (DynamoDB Streams' record
/// delay, an index's propagation delay): 2.5 s here, longer than the
/// journal's 2 s settle window. A position-based reader delivers the
/// revocation late, never misses it. (The journal missed it: the entry was
/// past its window by the time the index showed it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn index_or_stream_delay_loses_no_revocation() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let table = Cluster::new().await.tier.table().to_owned();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = format!("{STREAM_FAST}{LONG_LEASE}");
    let a = start(da.path(), &table, &extra);
    let b = start_proxied(db.path(), &table, &proxy, &extra);
    let c = client();
    on_the_long_lease(&c, &[&b]).await;
    let delay = Duration::from_millis(2500);
    proxy.set(Fault::FeedDelay(delay));
    for i in 0..3 {
        let token = service_login((&c, &a.url), &format!("delayed-{i}")).await;
        assert_eq!(status(&c, &b, &token).await, StatusCode::OK, "B caches it");
        assert_eq!(
            end_session((&c, &a.url), &token).await,
            StatusCode::NO_CONTENT
        );
        let took = until_refused(&c, &b, &token, delay + Duration::from_secs(5)).await;
        eprintln!("with the feed {delay:?} late, B refused the logout after {took:?}");
    }
    proxy.set(Fault::Pass);
    terminate_all([a, b]).await;
}

/// "Log out everywhere" while the user index is late (a seeded delay: median
/// 20 ms, p99 800 ms, one write in a thousand 5 s late): the index query
/// misses the newest sessions, so the listing alone would leave them alive.
/// The user's revocation epoch, raised first, ends them anyway, on the node
/// that revoked and on the node that made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_the_index_has_not_seen_is_ended_with_its_user() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let table = Cluster::new().await.tier.table().to_owned();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = format!("{STREAM_FAST}{LONG_LEASE}");
    let a = start_proxied(da.path(), &table, &proxy, &extra);
    let b = start_proxied(db.path(), &table, &proxy, &extra);
    let c = client();
    on_the_long_lease(&c, &[&a, &b]).await;
    proxy.set(Fault::IndexDelay(IndexLag::Seeded(0x5eed)));
    // The delays are drawn per item: on a loaded machine a round can find
    // every item's delay past before the listing. Up to three rounds (each
    // a user of its own) until the index hides one; every round's sessions
    // must end either way.
    let (mut hidden, mut tokens) = (0, Vec::new());
    for round in 0..3 {
        let user = format!("late-index-{round}");
        tokens.clear();
        for _ in 0..24 {
            let token = service_login((&c, &a.url), &user).await;
            assert_eq!(status(&c, &a, &token).await, StatusCode::OK);
            tokens.push(token);
        }
        let before = proxy.index_hidden();
        let res = v1(
            (&c, &b.url),
            Method::DELETE,
            &format!("/v1/users/{user}/sessions"),
        )
        .send()
        .await
        .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        hidden = proxy.index_hidden() - before;
        for token in &tokens {
            assert_eq!(status(&c, &b, token).await, StatusCode::NOT_FOUND);
            until_refused(&c, &a, token, Duration::from_secs(10)).await;
        }
        if hidden >= 1 {
            break;
        }
    }
    assert!(
        hidden >= 1,
        "the index hid nothing in three rounds: the fault did not bite"
    );
    eprintln!(
        "the user index left out {hidden} of {} sessions; every one ended",
        tokens.len()
    );
    proxy.set(Fault::Pass);
    terminate_all([a, b]).await;
}

/// An operator ends every session of every user (a leaked signing secret,
/// a breach) with one call: every signed-in session is refused on the node
/// that took the call at once, and on the other node (on a ten-minute
/// lease) through the stream; anonymous sessions and sign-ins after the
/// call are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_every_session_of_every_user_takes_one_call() {
    let table = Cluster::new().await.tier.table().to_owned();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = format!("{STREAM_FAST}{LONG_LEASE}");
    let (a, b) = (
        start(da.path(), &table, &extra),
        start(db.path(), &table, &extra),
    );
    let c = client();
    on_the_long_lease(&c, &[&a, &b]).await;
    let mut tokens = Vec::new();
    for i in 0..6 {
        let writer = if i % 2 == 0 { &a } else { &b };
        let token = service_login((&c, &writer.url), &format!("everyone-{i}")).await;
        for node in [&a, &b] {
            assert_eq!(status(&c, node, &token).await, StatusCode::OK, "cached");
        }
        tokens.push(token);
    }
    let anonymous = v1((&c, &a.url), Method::POST, "/v1/sessions")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let res = v1((&c, &a.url), Method::DELETE, "/v1/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let epoch = res.json::<serde_json::Value>().await.unwrap()["global_epoch"].clone();
    assert_eq!(epoch, 1, "one raise");
    for token in &tokens {
        assert_eq!(
            status(&c, &a, token).await,
            StatusCode::NOT_FOUND,
            "at once here"
        );
    }
    let started = Instant::now();
    for token in &tokens {
        until_refused(&c, &b, token, Duration::from_secs(10)).await;
    }
    eprintln!(
        "every session ended on the other node {:?} after the call",
        started.elapsed()
    );
    for node in [&a, &b] {
        assert_eq!(
            status(&c, node, &anonymous).await,
            StatusCode::OK,
            "anonymous kept"
        );
    }
    let after = service_login((&c, &b.url), "everyone-after").await;
    for node in [&a, &b] {
        assert_eq!(
            status(&c, node, &after).await,
            StatusCode::OK,
            "a later sign-in works"
        );
    }
    terminate_all([a, b]).await;
}

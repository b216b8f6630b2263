//! The outage semantics (README "Operations", `src/store.rs` failure table),
//! through the fault proxy: nodes whose DynamoDB endpoint is a
//! [`FaultProxy`] in front of the harness's server, checked against the table
//! itself through the harness's own, unproxied client.
//!
//! For each fault: login (create and regenerate) gets 503 `store_unavailable`
//! with no cookie and writes nothing; logout kills the token on this node at
//! once and queues the DynamoDB delete (`edge_session_outbox_pending` > 0); a
//! cached session within its lease is served, past it the node follows
//! `dynamodb.on_unreachable`; `/readyz` is 503. After the fault clears:
//! `/readyz` is 200, the background upkeep drains the outbox, and both tiers
//! (and a fresh node) agree on every token.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use edge_session::{NewSession, SessionToken, StoreSettings};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::faultproxy::{Fault, FaultProxy};
use crate::harness::{
    anonymous_token, browser, browser_login, eventually, fault_proxy, login_form, logout, metric,
    metrics_text, now, outbox_pending, proxied_node_toml, readyz, session_cookie,
    session_set_cookie, token, v1_call, v1_session, whoami, Cluster, TestNode, ALICE_PASSWORD,
    BOB_PASSWORD,
};

/// The lease of the nodes under test: long enough for the in-lease checks,
/// short enough to wait out.
const LEASE_MS: u64 = 4_000;

/// A node behind `proxy` over `table`: stream off (the lease alone bounds
/// staleness, so the timing below is exact), the given `on_unreachable`.
pub async fn proxied_node(proxy: &FaultProxy, table: &str, on_unreachable: &str) -> TestNode {
    let dynamodb = format!(
        "breaker_failures = 3\nbreaker_cooldown_ms = 500\non_unreachable = \"{on_unreachable}\"\nmax_stale_ms = 60000"
    );
    let extra = format!("[cache]\nrevalidate_after_ms = {LEASE_MS}\n[stream]\nenabled = false\n");
    TestNode::spawn_proxied(table, &proxy.url(), &dynamodb, &extra).await
}

/// Every `sid` in the table, read directly.
pub async fn sids(cluster: &Cluster) -> BTreeSet<Vec<u8>> {
    cluster
        .scan()
        .await
        .iter()
        .map(|item| match item.get("sid") {
            Some(aws_sdk_dynamodb::types::AttributeValue::B(b)) => b.as_ref().to_vec(),
            other => panic!("an item without a binary sid: {other:?}"),
        })
        .collect()
}

/// Whether DynamoDB holds the session of `value` (direct read).
pub(crate) async fn in_dynamodb(cluster: &Cluster, value: &str) -> bool {
    cluster
        .tier
        .get(token(value).storage_key().as_bytes())
        .await
        .expect("the harness reaches DynamoDB directly")
        .is_some()
}

/// A 503 `store_unavailable` that issues no session.
async fn assert_refused_without_a_session(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(
        session_set_cookie(&res).is_none(),
        "{what}: a session cookie was issued"
    );
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"], "store_unavailable", "{what}: {body}");
    assert!(body.get("token").is_none(), "{what}: a token was issued");
}

/// The sessions one node holds when the fault starts.
struct Sessions {
    /// Signed in, cached: served within the lease.
    keep: String,
    /// Signed in, logged out during the fault.
    victim: String,
    /// An anonymous browser session that logs in during the fault.
    planted: String,
    /// An anonymous `/v1` session regenerated during the fault.
    service: String,
}

async fn prepare(node: &TestNode) -> Sessions {
    let res = login_form(node, None, "alice", ALICE_PASSWORD)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let keep = session_cookie(&res);
    let res = login_form(node, None, "bob", BOB_PASSWORD).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let victim = session_cookie(&res);
    // A pre-login session an attacker obtained (GET / issues none).
    let planted = anonymous_token(&node).await;
    let service = anonymous_token(&node).await;
    Sessions {
        keep,
        victim,
        planted,
        service,
    }
}

/// The checks while the fault is on, on one node. Returns when it finished.
async fn during_the_fault(node: &TestNode, s: &Sessions, fault: Fault) {
    assert_eq!(
        whoami(node, &s.keep).await.unwrap(),
        StatusCode::OK,
        "{fault:?}: a cached session within its lease is served"
    );

    assert_eq!(
        logout(node, &s.victim).await.unwrap(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        whoami(node, &s.victim).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "{fault:?}: logged out, dead on this node at once"
    );
    assert!(
        node.store.cache().outbox_len() >= 1,
        "{fault:?}: the revocation waits in the outbox"
    );
    eventually("/metrics shows the outbox", || async {
        outbox_pending(node).await.is_some_and(|v| v >= 1.0)
    })
    .await;

    assert_refused_without_a_session(
        login_form(node, None, "alice", ALICE_PASSWORD)
            .await
            .unwrap(),
        &format!("{fault:?}: login (create)"),
    )
    .await;
    assert_refused_without_a_session(
        login_form(node, Some(&s.planted), "alice", ALICE_PASSWORD)
            .await
            .unwrap(),
        &format!("{fault:?}: login (regenerate)"),
    )
    .await;
    let res = v1_session(node, Method::POST, "/v1/session/regenerate", &s.service)
        .json(&json!({"user_id": "carol"}))
        .send()
        .await
        .unwrap();
    assert_refused_without_a_session(res, &format!("{fault:?}: /v1 regenerate")).await;
    let res = node.v1(Method::POST, "/v1/sessions").send().await.unwrap();
    assert_refused_without_a_session(res, &format!("{fault:?}: /v1 create")).await;

    assert_eq!(
        readyz(node).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{fault:?}: not ready while DynamoDB is unreachable"
    );
}

/// After recovery: the node's answer for `value` and DynamoDB's agree, and
/// a fresh node (its own empty cache) agrees too.
async fn tiers_agree(cluster: &Cluster, node: &TestNode, value: &str, what: &str) -> bool {
    let t = now();
    let here = node.store.load(&token(value), t).await.unwrap().is_some();
    let there = in_dynamodb(cluster, value).await;
    let fresh = cluster
        .node(StoreSettings::default())
        .load(&token(value), t)
        .await
        .unwrap()
        .is_some();
    assert_eq!(
        (here, fresh),
        (there, there),
        "{what}: node says {here}, DynamoDB {there}, a fresh node {fresh}"
    );
    there
}

async fn outage_semantics_hold(fault: Fault) {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let cluster = Cluster::new().await;
    let table = cluster.tier.table().to_owned();
    let reject = proxied_node(&proxy, &table, "reject").await;
    let serve = proxied_node(&proxy, &table, "serve_cached").await;
    let (r, s) = tokio::join!(prepare(&reject), prepare(&serve));
    let filled = Instant::now();
    let before = sids(&cluster).await;

    proxy.set(fault);
    tokio::join!(
        during_the_fault(&reject, &r, fault),
        during_the_fault(&serve, &s, fault)
    );
    let fault_phase = filled.elapsed();
    assert!(
        fault_phase < Duration::from_millis(LEASE_MS) * 4,
        "{fault:?}: the fault phase took {fault_phase:?}: requests piled up"
    );

    // Past the lease, DynamoDB still unreachable: the configured policy.
    let past = Duration::from_millis(LEASE_MS + 300);
    if let Some(wait) = past.checked_sub(filled.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    let res = browser(&reject, Method::GET, "/whoami", Some(&r.keep))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{fault:?}: past the lease, on_unreachable = reject"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "store_unavailable"
    );
    assert_eq!(
        whoami(&serve, &s.keep).await.unwrap(),
        StatusCode::OK,
        "{fault:?}: past the lease, on_unreachable = serve_cached (within max_stale_ms)"
    );
    assert_eq!(
        whoami(&serve, &s.victim).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "{fault:?}: serve_cached never serves a session revoked here"
    );

    // The fault clears.
    proxy.set(Fault::Pass);
    let ready = eventually("/readyz is 200 again", || async {
        readyz(&reject).await.unwrap() == StatusCode::OK
            && readyz(&serve).await.unwrap() == StatusCode::OK
    })
    .await;
    let drained = eventually("the outbox drains", || async {
        reject.store.cache().outbox_len() == 0 && serve.store.cache().outbox_len() == 0
    })
    .await;
    for node in [&reject, &serve] {
        eventually("/metrics shows an empty outbox", || async {
            outbox_pending(node).await == Some(0.0)
        })
        .await;
    }

    // Nothing was written by the refused logins; the tiers agree on every token.
    let after = sids(&cluster).await;
    assert!(
        after.is_subset(&before),
        "{fault:?}: {} item(s) appeared in DynamoDB during the fault",
        after.difference(&before).count()
    );
    for (node, s) in [(&reject, &r), (&serve, &s)] {
        assert!(
            !tiers_agree(&cluster, node, &s.victim, "logged out").await,
            "{fault:?}: the logout reached DynamoDB"
        );
        assert!(tiers_agree(&cluster, node, &s.keep, "kept").await);
        tiers_agree(&cluster, node, &s.planted, "planted").await;
        tiers_agree(&cluster, node, &s.service, "service").await;
        assert_eq!(whoami(node, &s.keep).await.unwrap(), StatusCode::OK);
        let res = login_form(node, Some(&s.planted), "alice", ALICE_PASSWORD)
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{fault:?}: login works again"
        );
        assert_eq!(
            whoami(node, &session_cookie(&res)).await.unwrap(),
            StatusCode::OK
        );
    }
    println!(
        "{fault:?}: fault phase {fault_phase:?}, ready again after {ready:?}, outbox drained {drained:?} later; {} connections through the proxy",
        proxy.accepted()
    );
    reject.stop().await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_follow_the_outage_semantics() {
    outage_semantics_hold(Fault::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_follow_the_outage_semantics() {
    outage_semantics_hold(Fault::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_dynamodb_follows_the_outage_semantics() {
    outage_semantics_hold(Fault::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_past_the_timeouts_follows_the_outage_semantics() {
    outage_semantics_hold(Fault::Latency(Duration::from_millis(2_000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_cut_halfway_follow_the_outage_semantics() {
    outage_semantics_hold(Fault::CutResponse).await;
}

/// The circuit breaker lets one probe through after its cool-down. `/readyz`
/// gives up on its DynamoDB ping after 2 s; with an attempt timeout longer
/// than that, the abandoned ping was that probe. The breaker must probe again
/// once DynamoDB answers, not fail every call fast for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_probe_does_not_wedge_the_circuit_breaker() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let cluster = Cluster::new().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxied_node_toml(
        dir.path(),
        cluster.tier.table(),
        &proxy.url(),
        "breaker_failures = 1\nbreaker_cooldown_ms = 300",
        "[stream]\nenabled = false\n",
    )
    // Attempts outlast /readyz's own 2 s limit (as with the defaults: 2 s
    // attempts within a 5 s operation).
    .replace("attempt_timeout_ms = 500", "attempt_timeout_ms = 3000")
    .replace("operation_timeout_ms = 1500", "operation_timeout_ms = 5000")
    .replace("max_attempts = 2", "max_attempts = 1");
    let node = TestNode::spawn_toml(dir, &toml).await;
    assert_eq!(readyz(&node).await.unwrap(), StatusCode::OK);
    // /readyz reuses that answer for a second: the probe below must not.
    let cached_until = std::time::Instant::now() + Duration::from_millis(1_100);

    proxy.set(Fault::BlackHole);
    // One call that times out opens the breaker.
    let res = node.v1(Method::POST, "/v1/sessions").send().await.unwrap();
    assert_refused_without_a_session(res, "create while black-holed").await;
    assert!(node.store.dynamo().is_circuit_open());
    // After the cool-down, /readyz's ping is the probe, and /readyz gives up on it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tokio::time::sleep_until(cached_until.into()).await;
    assert_eq!(
        readyz(&node).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    proxy.set(Fault::Pass);
    eventually("/readyz is 200 once DynamoDB answers", || async {
        readyz(&node).await.unwrap() == StatusCode::OK
    })
    .await;
    assert_eq!(
        v1_call(&node, Method::POST, "/v1/sessions").await.0,
        StatusCode::CREATED
    );
    node.stop().await;
}

/// Items in the table bound to `user` (direct scan).
async fn bound_to(cluster: &Cluster, user: &str) -> usize {
    cluster
        .scan()
        .await
        .iter()
        .filter(|item| {
            matches!(item.get("uid"), Some(aws_sdk_dynamodb::types::AttributeValue::S(u)) if u == user)
        })
        .count()
}

/// A proxy in front of the harness's endpoint (`None` when it is not plain
/// http), a fresh table, a node behind the proxy with `on_unreachable =
/// "reject"`, and a pre-login session created there (`POST /v1/sessions`:
/// what an attacker would plant).
async fn planted_behind_a_proxy() -> Option<(FaultProxy, Cluster, TestNode, String)> {
    let proxy = FaultProxy::to_harness().await?;
    let cluster = Cluster::new().await;
    let node = proxied_node(&proxy, cluster.tier.table(), "reject").await;
    let planted = anonymous_token(&node).await;
    Some((proxy, cluster, node, planted))
}

/// DynamoDB did a login's transaction but its first answer was lost; the
/// SDK sends it again. The SDK fills `TransactWriteItems`' idempotency token
/// (`ClientRequestToken`) itself, the same on every attempt, so DynamoDB
/// answers the retry as the success it was instead of refusing it (the old
/// item is gone, the new one exists): the login succeeds once, and no session
/// nobody holds is left in the user's listing.
#[tokio::test]
async fn login_retried_after_a_lost_answer_leaves_no_orphan_session() {
    let Some((proxy, cluster, node, planted)) = planted_behind_a_proxy().await else {
        eprintln!("skipped: the harness endpoint is not plain http");
        return;
    };

    proxy.set(Fault::CutOneResponseTo("TransactWriteItems"));
    let res = login_form(&node, Some(&planted), "alice", ALICE_PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the retried login succeeds"
    );
    let signed_in = session_cookie(&res);
    assert_ne!(signed_in, planted);
    assert!(proxy.cut_made(), "the transaction's first answer was cut");
    proxy.set(Fault::Pass);

    assert_eq!(whoami(&node, &signed_in).await.unwrap(), StatusCode::OK);
    assert_eq!(
        whoami(&node, &planted).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bound_to(&cluster, "alice").await,
        1,
        "exactly the issued session is bound to alice in DynamoDB"
    );
    node.stop().await;
}

/// DynamoDB did the write but its answer was cut halfway: the node cannot
/// know the outcome and fails closed. No session is issued; the token the
/// browser carried is dead on this node at once; the outbox deletes it (and
/// anything the unanswered write may have created) once DynamoDB answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_answer_is_cut_fail_closed() {
    let Some((proxy, cluster, node, planted)) = planted_behind_a_proxy().await else {
        eprintln!("skipped: the harness endpoint is not plain http");
        return;
    };
    let res = login_form(&node, None, "bob", BOB_PASSWORD).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let victim = session_cookie(&res);

    // Reads pass; the answer to every transaction (login) is cut.
    proxy.set(Fault::CutResponseTo("TransactWriteItems"));
    assert_refused_without_a_session(
        login_form(&node, Some(&planted), "alice", ALICE_PASSWORD)
            .await
            .unwrap(),
        "login (regenerate) with its answer cut",
    )
    .await;
    assert_eq!(
        node.store.load(&token(&planted), now()).await.unwrap(),
        None,
        "the token the browser carried is dead here at once"
    );
    assert!(node.store.cache().outbox_len() >= 1);
    assert_refused_without_a_session(
        login_form(&node, None, "alice", ALICE_PASSWORD)
            .await
            .unwrap(),
        "login (create) with its answer cut",
    )
    .await;

    // The answer to every delete (logout) is cut.
    proxy.set(Fault::CutResponseTo("DeleteItem"));
    assert_eq!(logout(&node, &victim).await.unwrap(), StatusCode::SEE_OTHER);
    assert_eq!(
        whoami(&node, &victim).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert!(node.store.cache().outbox_len() >= 1);

    proxy.set(Fault::Pass);
    eventually("the outbox drains", || async {
        node.store.cache().outbox_len() == 0
    })
    .await;
    for (value, what) in [(&planted, "pre-login"), (&victim, "logged out")] {
        assert!(
            !tiers_agree(&cluster, &node, value, what).await,
            "{what}: deleted in DynamoDB"
        );
    }
    // The two logins' transactions did happen; their sessions were never
    // issued, and the outbox removed them too: none lingers in alice's listing.
    assert_eq!(
        bound_to(&cluster, "alice").await,
        0,
        "an unissued session of alice is left in DynamoDB"
    );
    let res = node
        .v1(Method::GET, "/v1/users/alice/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    node.stop().await;
}

/// The value of `name{reason="<reason>"}` in the node's `/metrics`.
async fn dropped(node: &TestNode, reason: &str) -> f64 {
    let text = metrics_text(&node).await.unwrap();
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .find(|l| {
            l.starts_with("edge_session_unverified_revocations_dropped_total{")
                && l.contains(&label)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Tombstones in the node's sled cache (read directly).
fn tombstones(node: &TestNode) -> usize {
    let dump = node.store.cache().dump().unwrap();
    dump.iter()
        .filter(|(tree, _, _)| tree == "tombstones")
        .count()
}

/// While DynamoDB is black-holed, logouts carrying random (never issued)
/// tokens cannot be checked. Each may cost at most a slot in a bounded
/// queue: past the cap they are refused (503) and counted, and neither the
/// tombstones nor the outbox grow past it. A real logout in the same outage
/// still lands (a cached session's durably; an uncached one's through the
/// queue). Once DynamoDB answers, the queue is replayed: nothing of the
/// random tokens remains, and the real sessions are gone from DynamoDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_token_logouts_during_an_outage_are_bounded() {
    const CAP: usize = 40;
    const N: usize = 400;
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let cluster = Cluster::new().await;
    let node = TestNode::spawn_proxied(
        cluster.tier.table(),
        &proxy.url(),
        "breaker_failures = 3\nbreaker_cooldown_ms = 500",
        &format!("[cache]\nmax_unverified_revocations = {CAP}\n[stream]\nenabled = false\n"),
    )
    .await;
    // A session this node caches, and one only another node ever loaded.
    let cached = browser_login(&node, "bob", BOB_PASSWORD).await;
    let (elsewhere, _) = cluster
        .node(StoreSettings::default())
        .create(NewSession::anonymous(Default::default()), now())
        .await
        .unwrap();
    let elsewhere = elsewhere.expose();

    proxy.set(Fault::BlackHole);
    // The real sessions' logouts, before the flood fills the queue.
    assert_eq!(logout(&node, &cached).await.unwrap(), StatusCode::SEE_OTHER);
    assert_eq!(
        logout(&node, &elsewhere).await.unwrap(),
        StatusCode::SEE_OTHER,
        "an uncached session's logout is queued"
    );
    let random: Vec<String> = (0..N).map(|_| SessionToken::generate().expose()).collect();
    let mut statuses = Vec::new();
    for chunk in random.chunks(20) {
        let mut answers = tokio::task::JoinSet::new();
        for value in chunk {
            let (client, url, value) = (node.client.clone(), node.url.clone(), value.clone());
            answers.spawn(async move { logout((&client, url.as_str()), &value).await.unwrap() });
        }
        while let Some(status) = answers.join_next().await {
            statuses.push(status.unwrap());
        }
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::SEE_OTHER)
        .count();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SEE_OTHER || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    let cache = node.store.cache();
    assert_eq!(
        accepted,
        CAP - 1,
        "the queue took what fit next to the real one"
    );
    assert_eq!(cache.unverified_len(), CAP);
    assert!(
        tombstones(&node) <= CAP + 1,
        "{} tombstones",
        tombstones(&node)
    );
    assert_eq!(cache.outbox_len(), 1, "only the cached session's delete");
    assert_eq!(
        metric(&node, "edge_session_unverified_revocations").await,
        Some(CAP as f64)
    );
    assert_eq!(dropped(&node, "full").await, (N - accepted) as f64);
    for value in [&cached, &elsewhere] {
        assert_eq!(
            whoami(&node, value).await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
    }

    proxy.set(Fault::Pass);
    eventually("the outbox and the unverified queue drain", || async {
        cache.outbox_len() == 0 && cache.unverified_len() == 0
    })
    .await;
    assert!(dropped(&node, "unknown").await >= accepted as f64);
    assert_eq!(
        metric(&node, "edge_session_unverified_revocations").await,
        Some(0.0)
    );
    for value in &random {
        assert!(
            !cache.is_tombstoned(&token(value).storage_key()).unwrap(),
            "a random token's tombstone remains"
        );
    }
    assert_eq!(tombstones(&node), 2, "the real sessions' tombstones only");
    for (value, what) in [(&cached, "cached"), (&elsewhere, "uncached")] {
        assert!(
            !tiers_agree(&cluster, &node, value, what).await,
            "{what}: the logout reached DynamoDB"
        );
    }
    node.stop().await;
}

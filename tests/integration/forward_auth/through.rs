//! Through real nginx `auth_request` and Caddy `forward_auth`: the proxy
//! asks a node before it forwards, the app behind it sees who is signed in
//! and nothing a client made up, and a revocation on another node shuts the
//! door within the coherence bound (README "Several nodes").

use std::time::{Duration, Instant};

use reqwest::header::COOKIE;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::proxies::{Kind, Proxy, Upstream};
use super::{jwks, verify};
use crate::harness::{
    browser_login, client, cookie, logout, node_toml, service_login, table_name, TestNode,
    ALICE_PASSWORD, BOB_PASSWORD,
};

/// A node, the app, and `kind` in front of the app asking the node.
async fn setup(kind: Kind) -> (TestNode, Upstream, Proxy) {
    let node = TestNode::spawn().await;
    let upstream = Upstream::start();
    let proxy = Proxy::start(kind, node_addr(&node), upstream.addr).await;
    (node, upstream, proxy)
}

fn node_addr(node: &TestNode) -> &str {
    node.url.strip_prefix("http://").unwrap()
}

/// `method path` through `proxy`, with the session cookie `carried` if any.
fn request(proxy: &Proxy, method: Method, path: &str, carried: Option<&str>) -> RequestBuilder {
    let req = client().request(method, format!("{}{path}", proxy.url));
    match carried {
        Some(value) => req.header(COOKIE, cookie(value)),
        None => req,
    }
}

/// Send `req`: the status and, from the app, its JSON answer.
async fn answer(req: RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `GET path` through `proxy` with the session cookie `carried` if any and
/// `extra` headers: the status and, from the app, its JSON answer.
async fn through(
    proxy: &Proxy,
    path: &str,
    carried: Option<&str>,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = request(proxy, Method::GET, path, carried);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    answer(req).await
}

/// The app's view of one identity header (`name` exactly as sent).
fn seen<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    match body["identity"][name].as_array().map(Vec::as_slice) {
        None => None,
        Some([one]) => one.as_str(),
        Some(many) => panic!("{name} reached the app {} times: {body}", many.len()),
    }
}

async fn the_proxy_guards_the_app(kind: Kind) {
    let (node, upstream, proxy) = setup(kind).await;
    let set = jwks(&node).await;

    let (status, _) = through(&proxy, "/orders", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind:?}: no cookie");
    let (status, _) = through(&proxy, "/orders", Some("not-a-token"), &[]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{kind:?}: a made-up cookie"
    );
    assert_eq!(
        upstream.hits(),
        0,
        "{kind:?}: the app saw a refused request"
    );

    let alice = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let (status, body) = through(&proxy, "/orders?page=2", Some(&alice), &[]).await;
    assert_eq!(status, StatusCode::OK, "{kind:?}: {body}");
    assert_eq!(body["user"], "alice", "{kind:?}: {body}");
    assert_eq!(body["path"], "/orders?page=2", "{kind:?}");
    assert_eq!(seen(&body, "x-edge-role"), Some("admin"), "{kind:?}");
    let claims = verify(seen(&body, "x-edge-assertion").unwrap(), &set).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(Some(claims.sid.as_str()), seen(&body, "x-edge-session"));

    // A POST with a body: the check gets no body, the app gets it all.
    let post = request(&proxy, Method::POST, "/orders", Some(&alice)).body("{\"order\":7}");
    let (status, body) = answer(post).await;
    assert_eq!(
        (status, &body["user"]),
        (StatusCode::OK, &Value::from("alice")),
        "{kind:?}"
    );

    // Only admins under /admin/.
    let bob = browser_login(&node, "bob", BOB_PASSWORD).await;
    let (status, body) = through(&proxy, "/admin/users", Some(&alice), &[]).await;
    assert_eq!(
        (status, &body["user"]),
        (StatusCode::OK, &Value::from("alice")),
        "{kind:?}"
    );
    let hits = upstream.hits();
    let (status, _) = through(&proxy, "/admin/users", Some(&bob), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{kind:?}: bob is no admin");
    assert_eq!(
        upstream.hits(),
        hits,
        "{kind:?}: the app saw a refused request"
    );
    let (status, body) = through(&proxy, "/orders", Some(&bob), &[]).await;
    assert_eq!(
        (status, &body["user"]),
        (StatusCode::OK, &Value::from("bob")),
        "{kind:?}"
    );

    assert_eq!(logout(&node, &bob).await.unwrap(), StatusCode::SEE_OTHER);
    let (status, _) = through(&proxy, "/orders", Some(&bob), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind:?}: logged out");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_guards_the_app() {
    the_proxy_guards_the_app(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_guards_the_app() {
    the_proxy_guards_the_app(Kind::Caddy).await;
}

/// What a client sends to pass for someone else: the identity headers, in
/// both spellings an app may read as the same name.
const FORGED: [(&str, &str); 6] = [
    ("X-Edge-User", "mallory"),
    ("X_Edge_User", "mallory"),
    ("X-Edge-Role", "admin"),
    ("X_Edge_Role", "admin"),
    ("X-Edge-Session", "forged"),
    ("X-Edge-Assertion", "forged.forged.forged"),
];

/// The app sees the proxy's identity headers only: none in `_` spelling,
/// none twice, and the real values (the role absent or empty for a user
/// without one).
fn assert_only_the_real_identity(kind: Kind, body: &Value, user: &str, role: &str) {
    let names: Vec<&String> = body["identity"].as_object().unwrap().keys().collect();
    for name in &names {
        assert!(
            !name.contains('_'),
            "{kind:?}: {name} reached the app: {body}"
        );
    }
    assert_eq!(seen(body, "x-edge-user"), Some(user), "{kind:?}: {body}");
    let seen_role = seen(body, "x-edge-role").unwrap_or("");
    assert_eq!(seen_role, role, "{kind:?}: {body}");
    assert_ne!(seen(body, "x-edge-session"), Some("forged"), "{kind:?}");
    let assertion = seen(body, "x-edge-assertion");
    assert_ne!(assertion, Some("forged.forged.forged"), "{kind:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_header_through_forward_auth_is_overwritten() {
    for kind in [Kind::Nginx, Kind::Caddy] {
        let (node, upstream, proxy) = setup(kind).await;
        let (status, _) = through(&proxy, "/orders", None, &FORGED).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind:?}: no session");
        assert_eq!(upstream.hits(), 0, "{kind:?}: the app saw the forgery");

        let bob = browser_login(&node, "bob", BOB_PASSWORD).await;
        let (status, body) = through(&proxy, "/orders", Some(&bob), &FORGED).await;
        assert_eq!(status, StatusCode::OK, "{kind:?}");
        assert_only_the_real_identity(kind, &body, "bob", "user");

        // A user without a role: the check answers an empty X-Edge-Role,
        // and the client's `admin` must not survive it.
        let carol = service_login(&node, "carol").await;
        let (status, body) = through(&proxy, "/orders", Some(&carol), &FORGED).await;
        assert_eq!(status, StatusCode::OK, "{kind:?}");
        assert_only_the_real_identity(kind, &body, "carol", "");
        node.stop().await;
    }
}

/// How many revocations each proxy test measures.
const ROUNDS: usize = 5;

/// Two nodes on one table following its stream (`poll_interval_ms = 100`,
/// as in coherence.rs) with a long lease, so only the follower can tell B
/// of A's revocation; `kind` asks B. Each round: sign in at B, pass through
/// the proxy (B caches the session), log out at A, and time until the
/// proxy answers 401. The bound asserted is the one README "Several nodes"
/// gives for a follower that stalls, from B's own config; a healthy
/// follower is well inside it.
async fn revocation_on_another_node_reaches(kind: Kind) {
    let table = table_name();
    let extra = "[stream]\npoll_interval_ms = 100\n[cache]\nrevalidate_after_ms = 30000\n";
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml_a = node_toml(dir_a.path(), &table, extra);
    let toml_b = node_toml(dir_b.path(), &table, extra);
    let config = edge_session::config::Config::from_toml(&toml_b).unwrap();
    let bound = Duration::from_millis(
        config.stream.lag_threshold_ms + config.cache.revalidate_after_lagging_ms + 250,
    );
    let a = TestNode::spawn_toml(dir_a, &toml_a).await;
    let b = TestNode::spawn_toml(dir_b, &toml_b).await;
    let upstream = Upstream::start();
    let proxy = Proxy::start(kind, node_addr(&b), upstream.addr).await;
    // Let B's follower find its shards before the first revocation.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let value = browser_login(&b, "alice", ALICE_PASSWORD).await;
        let (status, body) = through(&proxy, "/orders", Some(&value), &[]).await;
        assert_eq!(
            (status, &body["user"]),
            (StatusCode::OK, &Value::from("alice")),
            "{kind:?}"
        );
        assert_eq!(logout(&a, &value).await.unwrap(), StatusCode::SEE_OTHER);
        let revoked = Instant::now();
        loop {
            let (status, _) = through(&proxy, "/orders", Some(&value), &[]).await;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(status, StatusCode::OK, "{kind:?} round {round}");
            assert!(
                revoked.elapsed() <= bound,
                "{kind:?} round {round}: still let through {:?} after the revocation on another node (bound {bound:?})",
                revoked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(revoked.elapsed());
    }
    times.sort();
    println!(
        "{kind:?}: a revocation on node A refused through {kind:?} asking node B after \
         min {:?}, median {:?}, max {:?} over {ROUNDS} (bound {bound:?})",
        times[0],
        times[ROUNDS / 2],
        times[ROUNDS - 1]
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_another_node_reaches_nginx_within_the_coherence_bound() {
    revocation_on_another_node_reaches(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_another_node_reaches_caddy_within_the_coherence_bound() {
    revocation_on_another_node_reaches(Kind::Caddy).await;
}

/// The configs the README shows are the ones these tests run: each of its
/// `nginx` and `caddyfile` blocks is part of the template of that proxy.
#[test]
fn the_readme_shows_the_tested_proxy_configs() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split_once("## Gateway: forward auth")
        .expect("README has a \"Gateway: forward auth\" section")
        .1;
    let section = section.split("\n## ").next().unwrap();
    for (fence, kind) in [("```nginx\n", Kind::Nginx), ("```caddyfile\n", Kind::Caddy)] {
        let blocks: Vec<&str> = section
            .split(fence)
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap())
            .collect();
        assert!(!blocks.is_empty(), "no {fence:?} block in the section");
        for block in blocks {
            assert!(
                kind.template().contains(block),
                "README shows a {kind:?} config that examples/forward-auth/ does not have:\n{block}"
            );
        }
    }
}

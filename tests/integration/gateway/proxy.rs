//! What reaches the upstream and what comes back: identity headers only
//! from the node, never the session token, hop-by-hop headers on their hop,
//! forwarding headers believed only from a trusted peer, bodies streamed
//! past `server.max_body_bytes` both ways, 502 and 504.

use std::time::{Duration, Instant};

use reqwest::header::COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::upstreams;
use super::{
    express_gateway, express_gateway_through_faults, gateway_node, raw_request, upstream_saw,
    Express,
};
use crate::faultproxy::Fault;
use crate::hardening::{trickle_body, BODY_TIMEOUTS};
use crate::harness::{assert_error, browser, cookie, metric, service_login, TestNode};

/// `clients` connections to `node`, each sending the request head `head`
/// and then trickling its body (for at most 30 s): what each was answered,
/// as [`trickle_body`] tells it.
fn trickle_bodies(
    node: &TestNode,
    clients: usize,
    head: &'static str,
) -> Vec<tokio::task::JoinHandle<Option<Vec<u8>>>> {
    (0..clients)
        .map(|_| {
            let addr = node.addr().to_owned();
            tokio::spawn(async move { trickle_body(&addr, head, Duration::from_secs(30)).await })
        })
        .collect()
}

/// `GET /headers` through `node`, from the client a trusted proxy names
/// `client` in `X-Forwarded-For`.
async fn headers_from(node: &TestNode, client: &str) -> reqwest::Response {
    let req = node.client.get(node.at("/headers"));
    req.header("x-forwarded-for", client).send().await.unwrap()
}

/// Every header the upstream received whose name, read with `_` as `-`,
/// starts with `x-edge-`, as `(name, value)`.
fn edge_headers(saw: &Value) -> Vec<(String, String)> {
    saw.as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| {
            name.replace('_', "-")
                .to_ascii_lowercase()
                .starts_with("x-edge-")
        })
        .map(|(n, v)| (n.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `X-Edge-*` headers in every case and `_` spelling, each claiming to be
/// someone: the identity and nonce headers the upstream trusts.
const FORGED: &[&str] = &[
    "X-Edge-User: mallory",
    "x-edge-user: mallory",
    "X_Edge_User: mallory",
    "x_edge-user: mallory",
    "X-EDGE-ROLE: admin",
    "x-Edge_Role: admin",
    "X-Edge-Session: forged-handle",
    "X_EDGE_SESSION: forged-handle",
    "X-Edge-Auth-Time: 1",
    "x_edge_auth_time: 1",
    "X-Edge-Nonce: forged-nonce",
    "x_edge_nonce: forged-nonce",
    "X-Edge-Assertion: forged.assertion.jwt",
    "X_Edge_Assertion: forged.assertion.jwt",
    "X-Edge-Anything-Else: forged",
];

async fn forged_request(url: &str, session: Option<&str>) -> Value {
    let mut request =
        String::from("GET /headers HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n");
    for line in FORGED {
        request.push_str(line);
        request.push_str("\r\n");
    }
    if let Some(token) = session {
        request.push_str(&format!("Cookie: {}\r\n", cookie(token)));
    }
    request.push_str("\r\n");
    let res = raw_request(url, request.as_bytes()).await;
    assert_eq!(res.status, 200, "{}", res.head);
    serde_json::from_slice(&res.body).unwrap()
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_upstream() {
    let (_express, node) = express_gateway("", "").await;

    // No session: the only X-Edge-* header upstream is the node's nonce.
    let saw = forged_request(&node.url, None).await;
    let edge = edge_headers(&saw);
    assert_eq!(edge.len(), 1, "only the nonce: {edge:?}");
    assert_eq!(edge[0].0, "x-edge-nonce");
    assert_eq!(edge[0].1.len(), 22, "128 bits of base64url: {edge:?}");
    assert!(!saw.to_string().contains("forged") && !saw.to_string().contains("mallory"));

    // A signed-in session: exactly the node's identity, nothing forged.
    let token = service_login(&node, "alice").await;
    let saw = forged_request(&node.url, Some(&token)).await;
    let mut names: Vec<String> = edge_headers(&saw).into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "x-edge-assertion",
            "x-edge-auth-time",
            "x-edge-nonce",
            "x-edge-role",
            "x-edge-session",
            "x-edge-user"
        ]
    );
    assert_eq!(saw["x-edge-user"], "alice");
    assert_eq!(saw["x-edge-role"], "");
    assert_ne!(
        saw["x-edge-auth-time"], "1",
        "the node's auth time, not the client's"
    );
    assert!(!saw.to_string().contains("forged") && !saw.to_string().contains("mallory"));
    assert_eq!(
        saw["x-edge-assertion"].as_str().unwrap().split('.').count(),
        3
    );
}

#[tokio::test]
async fn session_token_never_reaches_the_upstream() {
    let (_express, node) = express_gateway("", "").await;
    let token = service_login(&node, "alice").await;

    let res = node
        .client
        .get(node.at("/headers"))
        .header(COOKIE, format!("theme=dark; {}; lang=en", cookie(&token)))
        .header(COOKIE, format!(" {} ;x=1", cookie(&token)))
        .send()
        .await
        .unwrap();
    let saw: Value = res.json().await.unwrap();
    assert_eq!(saw["cookie"], "theme=dark; lang=en; x=1");
    assert_eq!(saw["x-edge-user"], "alice", "the session was still read");
    assert!(
        !saw.to_string().contains(&token),
        "the token reached the upstream: {saw}"
    );

    // Only the session cookie: no Cookie header at all.
    let saw = upstream_saw(&node, Some(&token), &[]).await;
    assert!(saw.get("cookie").is_none(), "{saw}");
    assert!(!saw.to_string().contains(&token));
}

#[tokio::test]
async fn the_nodes_own_routes_are_not_proxied() {
    let (_express, node) = express_gateway("", "").await;
    let token = service_login(&node, "alice").await;
    let res = browser(&node, Method::GET, "/.edge/whoami", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["user_id"], "alice");
    let res = node.client.get(node.at("/healthz")).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    // The app's paths, even those the node serves when it is not a proxy.
    // The node's middlewares leave proxied answers alone (its framing
    // headers go on its own HTML pages only).
    let res = node.client.get(node.at("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("x-frame-options").is_none());
    assert!(res.text().await.unwrap().contains("Example app"));
    let res = node.client.get(node.at("/whoami")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        res.text().await.unwrap().contains("Cannot GET /whoami"),
        "Express's own 404"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let (_express, node) = express_gateway("", "").await;
    let request = "GET /headers HTTP/1.1\r\nHost: app.example\r\n\
        Connection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
        Trailer: X-Late\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-End-To-End: kept\r\n\r\n";
    let res = raw_request(&node.url, request.as_bytes()).await;
    let saw: Value = serde_json::from_slice(&res.body).unwrap();
    for gone in [
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert!(
            saw.get(gone).is_none(),
            "{gone} reached the upstream: {saw}"
        );
    }
    assert!(!saw["connection"]
        .as_str()
        .unwrap_or("")
        .contains("x-drop-me"));
    assert_eq!(saw["x-end-to-end"], "kept");

    // And back: the upstream's hop-by-hop headers stay with the node.
    let upstream = upstreams::raw(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n\
          Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-Late\r\nUpgrade: h2c\r\n\
          X-End-To-End: kept\r\n\r\nok",
    ))
    .await;
    let node = gateway_node(&upstream.url, "", "").await;
    let res = raw_request(
        &node.url,
        b"GET /x HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"ok");
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !res.head.contains(&format!("\r\n{gone}:")),
            "{gone} reached the client: {}",
            res.head
        );
    }
    assert!(res.head.contains("\r\nx-end-to-end: kept"));
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_a_trusted_peer() {
    let express = Express::start();
    let claims: &[(&str, &str)] = &[
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "claimed.example"),
        ("forwarded", "for=203.0.113.9;proto=https"),
    ];
    let express_authority = express.url.trim_start_matches("http://");

    let untrusted = gateway_node(&express.url, "", "").await;
    let saw = upstream_saw(&untrusted, None, claims).await;
    assert_eq!(saw["x-forwarded-for"], "127.0.0.1");
    assert_eq!(saw["x-forwarded-proto"], "http");
    let node_authority = untrusted.url.trim_start_matches("http://");
    assert_eq!(saw["x-forwarded-host"], node_authority, "the original Host");
    assert!(saw.get("forwarded").is_none(), "{saw}");
    assert_eq!(
        saw["host"], express_authority,
        "the upstream's own authority"
    );

    let trusted = gateway_node(&express.url, "", "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let saw = upstream_saw(&trusted, None, claims).await;
    assert_eq!(saw["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(saw["x-forwarded-proto"], "https");
    assert_eq!(saw["x-forwarded-host"], "claimed.example");
    assert_eq!(saw["forwarded"], "for=203.0.113.9;proto=https");
    assert_eq!(saw["host"], express_authority);
}

#[tokio::test]
async fn proxied_bodies_stream_both_ways_past_max_body_bytes() {
    let upstream = upstreams::echo().await;
    let node = gateway_node(&upstream.url, "", "").await;
    // 1 MiB against the default 16 KiB `server.max_body_bytes`.
    let sent: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();

    let res = node
        .client
        .post(node.at("/echo"))
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-saw-content-length"], "1048576");
    assert_eq!(res.bytes().await.unwrap(), sent, "the known-length body");

    // A chunked upload goes up chunked.
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for chunk in sent.chunks(100_000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let res = raw_request(&node.url, &request).await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert!(
        res.head.contains("x-saw-transfer-encoding: chunked"),
        "{}",
        res.head
    );
    assert_eq!(res.body, sent, "the chunked body");

    // A large download.
    let n = 8 * 1024 * 1024;
    let res = node
        .client
        .get(node.at(&format!("/bytes?n={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().len(), n);
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_a_silent_one_504() {
    let node = gateway_node(&upstreams::nothing_listening(), "", "").await;
    let res = node.client.get(node.at("/anything")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "upstream_unavailable"
    );
    // The node's own routes do not depend on the upstream.
    let res = node.client.get(node.at("/.edge/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let silent = upstreams::raw(None).await;
    let node = gateway_node(&silent.url, "upstream_timeout_ms = 500", "").await;
    let started = Instant::now();
    let res = node.client.get(node.at("/anything")).send().await.unwrap();
    let took = started.elapsed();
    assert_error(res, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout").await;
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let errors = metric(&node, "edge_session_gateway_upstream_errors_total").await;
    assert!(errors.is_some_and(|n| n >= 1.0), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_whose_session_cannot_be_read_is_refused_not_sent_anonymously() {
    let Some((proxy, _express, node)) = express_gateway_through_faults().await else {
        return;
    };

    proxy.set(Fault::Refuse);
    // A cookie this node has not cached: only DynamoDB could say whose it is.
    let unknown = "A".repeat(43);
    let res = browser(&node, Method::GET, "/headers", Some(&unknown))
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
    // Without a cookie there is nothing to read: the app answers.
    let saw = upstream_saw(&node, None, &[]).await;
    assert!(saw.get("x-edge-user").is_none());
    proxy.set(Fault::Pass);
}

/// Clients that announce a large body and trickle it, to hold the
/// connections the proxy keeps to the app (it sends the whole body before it
/// reads the answer): past `server.client_body_timeout_ms` plus a second per
/// `server.client_body_min_rate` bytes, each gets 408 and its upstream
/// connection is given up, so another client's request goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickled_body_cannot_hold_the_upstream_pool() {
    let (_express, node) = express_gateway("upstream_max_connections = 2", BODY_TIMEOUTS).await;
    let head = "POST /headers HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100000\r\n\r\n";
    // Two workers with two upstream connections each: eight tricklers take
    // them all (100,000 bytes at 10 a second would take hours).
    let tricklers = trickle_bodies(&node, 8, head);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = node.client.get(node.at("/headers")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the pool was held");
    for trickler in tricklers {
        let answered = trickler
            .await
            .unwrap()
            .expect("the node closed the trickle");
        let text = String::from_utf8_lossy(&answered);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
}

/// One client cannot have more than `gateway.max_inflight_per_client`
/// proxied requests in flight: the next gets 429 before anything is sent
/// upstream, and other clients are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_cannot_take_every_upstream_connection() {
    let (_express, node) = express_gateway(
        "max_inflight_per_client = 2",
        "client_body_timeout_ms = 5000\ntrusted_proxies = [\"127.0.0.1\"]",
    )
    .await;
    let head = "POST /headers HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.9\r\n\
                Content-Length: 100000\r\n\r\n";
    let held = trickle_bodies(&node, 2, head);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let same = headers_from(&node, "203.0.113.9").await;
    assert_eq!(same.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(same.headers().get("retry-after").is_some());
    let other = headers_from(&node, "203.0.113.10").await;
    assert_eq!(other.status(), StatusCode::OK);
    for h in held {
        h.await.unwrap();
    }
}

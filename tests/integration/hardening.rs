//! HTTP hardening against a live node: slow request heads are cut off,
//! HTML cannot be framed, the bearer scheme is case-insensitive, records
//! have a size cap, and the ops routes can live on their own listener.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{assert_error, table_name, token_with_data, v1_session, TestNode, API_KEY};

/// Request heads get a second, kept-alive connections a second idle.
const HEAD_TIMEOUTS: &str =
    "client_request_timeout_ms = 1000\nkeep_alive_ms = 1000\nclient_disconnect_timeout_ms = 500";

/// Request bodies get a second, plus one per KiB.
pub(crate) const BODY_TIMEOUTS: &str = "client_body_timeout_ms = 1000\nclient_body_min_rate = 1024";

/// `GET url` with the node's client.
async fn get(node: &TestNode, url: &str) -> reqwest::Response {
    node.client.get(url).send().await.unwrap()
}

/// A node with its ops routes on a listener of their own: the node and
/// that listener's `http://host:port`.
async fn node_with_ops_listener() -> (TestNode, String) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ops_addr = free.local_addr().unwrap();
    drop(free);
    let node = TestNode::spawn_with(&format!("ops_listen = \"{ops_addr}\""), None).await;
    (node, format!("http://{ops_addr}"))
}

/// Read `stream` until `needle` has arrived; false if it closed first.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Trickle a request head that never ends, a byte every 200 ms, for at most
/// `give_up`; what the server did: `Some(first bytes it answered)` once it
/// closed the connection, `None` if it still held it open.
async fn trickle(stream: TcpStream, give_up: Duration) -> Option<Vec<u8>> {
    let head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    drip(stream, head, Duration::from_millis(200), give_up).await
}

/// Send `head` on `stream` at once, then a byte every `every` for at most
/// `give_up`: `Some(what the server answered)` once it closed the
/// connection, `None` if it still held it open.
async fn drip(
    stream: TcpStream,
    head: &str,
    every: Duration,
    give_up: Duration,
) -> Option<Vec<u8>> {
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answered = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return answered,
                Ok(n) => answered.extend_from_slice(&buf[..n]),
            }
        }
    });
    wr.write_all(head.as_bytes()).await.ok()?;
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < give_up {
        if wr.write_all(b"a").await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
    }
    // Closed by the server: the reader ends at once.
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .ok()
        .map(|r| r.unwrap())
}

#[tokio::test]
async fn trickled_request_head_is_cut_off() {
    let node = TestNode::spawn_with(HEAD_TIMEOUTS, None).await;
    let addr = node.addr();
    // Well past keep-alive + request timeout: the server must have acted.
    let give_up = Duration::from_secs(30);

    // The first request on a connection.
    let first = TcpStream::connect(addr).await.unwrap();
    let answered = trickle(first, give_up)
        .await
        .expect("the connection is closed");
    assert!(
        answered.is_empty() || answered.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answered)
    );

    // A later request on a kept-alive connection.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until(&mut kept, b"{\"status\":\"ok\"}").await);
    assert!(
        trickle(kept, give_up).await.is_some(),
        "a kept-alive connection trickling its next head is closed"
    );
}

/// Send the request head `head` to `addr`, then trickle its body a byte
/// every 100 ms for at most `give_up`: `Some(what the server answered)` once
/// it closed the connection, `None` if it still held it open.
pub(crate) async fn trickle_body(addr: &str, head: &str, give_up: Duration) -> Option<Vec<u8>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    drip(stream, head, Duration::from_millis(100), give_up).await
}

/// A client announces a body and trickles it, to hold the node's request
/// (and the memory and connection it costs) for as long as it likes. Past
/// `server.client_body_timeout_ms` plus a second per
/// `server.client_body_min_rate` bytes, it gets 408 and the connection is
/// closed.
#[tokio::test]
async fn trickled_body_to_the_node_is_cut_off() {
    let node = TestNode::spawn_with(BODY_TIMEOUTS, None).await;
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    );
    // 10,000 bytes at 10 a second would take 1,000 s.
    let answered = trickle_body(node.addr(), &head, Duration::from_secs(30))
        .await
        .expect("the node closed the connection");
    let text = String::from_utf8_lossy(&answered);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    // The node goes on serving.
    let res = node.client.get(node.at("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn html_cannot_be_framed() {
    let node = TestNode::spawn().await;
    let page = node.client.get(node.at("/")).send().await.unwrap();
    let failed = node
        .client
        .post(node.at("/login"))
        .form(&[("username", "alice"), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    for res in [&page, &failed] {
        let h = res.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["content-security-policy"], "frame-ancestors 'none'");
    }
}

/// The status of `POST /v1/sessions` with the API key under `scheme`.
async fn create_under_scheme(node: &TestNode, scheme: &str) -> StatusCode {
    let res = node
        .client
        .post(node.at("/v1/sessions"))
        .header("authorization", format!("{scheme} {API_KEY}"))
        .send()
        .await
        .unwrap();
    res.status()
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let node = TestNode::spawn().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let status = create_under_scheme(&node, scheme).await;
        assert_eq!(status, StatusCode::CREATED, "{scheme}");
    }
    let status = create_under_scheme(&node, "Basic").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oversized_record_is_refused_before_dynamodb() {
    let node = TestNode::spawn_on(&table_name(), "[session]\nmax_record_bytes = 2048\n").await;
    let big = "x".repeat(3000);
    // Within the 16 KiB body limit, over the record cap.
    let res = node
        .v1(Method::POST, "/v1/sessions")
        .json(&json!({"data": {"big": big}}))
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "record_too_large").await;

    let token = token_with_data(&node, json!({"small": "1"})).await;
    // Grown past the cap by one PATCH: refused, and nothing changed.
    let res = v1_session(&node, Method::PATCH, "/v1/session", &token)
        .json(&json!({"data": {"big": big}}))
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "record_too_large").await;
    let res = v1_session(&node, Method::GET, "/v1/session", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap()["data"],
        json!({"small": "1"})
    );
}

#[tokio::test]
async fn ops_routes_live_only_on_the_ops_listener() {
    let (node, ops) = node_with_ops_listener().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let main = node.client.get(node.at(path)).send().await.unwrap();
        assert_eq!(
            main.status(),
            StatusCode::NOT_FOUND,
            "{path} on the main listener"
        );
        let there = get(&node, &format!("{ops}{path}")).await;
        assert_eq!(there.status(), StatusCode::OK, "{path} on the ops listener");
    }
    let res = node.client.get(format!("{ops}/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = node.client.get(node.at("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// With the ops routes on their own listener, a percent-encoded spelling of
/// one on the public listener (which the router decodes into the same
/// route) is refused like the plain one.
#[tokio::test]
async fn encoded_ops_path_on_the_public_listener_is_refused() {
    let (node, ops) = node_with_ops_listener().await;
    for path in [
        "/%6Detrics",
        "/%6detrics",
        "/metric%73",
        "/%68ealthz",
        "/%72eadyz",
        "/%6D%65%74%72%69%63%73",
    ] {
        let res = node.client.get(node.at(path)).send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::NOT_FOUND,
            "{path} on the public listener"
        );
        let body = res.text().await.unwrap();
        assert!(
            !body.contains("edge_session_"),
            "{path} served the metrics on the public listener"
        );
    }
    let res = get(&node, &format!("{ops}/%6Detrics")).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the same spelling on the ops listener"
    );
}

#[tokio::test]
async fn readiness_says_only_ready_or_not() {
    let node = TestNode::spawn().await;
    for _ in 0..20 {
        let res = node.client.get(node.at("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"status": "ready"})
        );
    }
}

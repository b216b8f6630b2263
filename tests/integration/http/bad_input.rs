//! Hostile input: malformed, oversized or unauthenticated requests get
//! the documented status and a JSON error that echoes no token, and the
//! node keeps serving; made-up methods cannot grow the metric series.

use reqwest::header::{CONTENT_TYPE, COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    client, cookie, metrics_text, read_session, service_login, v1_session, TestNode,
};

/// A hostile request: what it is, the request, and the status it must get.
type Case = (&'static str, RequestBuilder, StatusCode);

/// Hostile requests to the service API, with `token` a live session's.
fn service_api_cases(node: &TestNode, c: &reqwest::Client, token: &str) -> Vec<Case> {
    let big = "x".repeat(64 * 1024);
    let unknown = edge_session::SessionToken::generate().expose().to_owned();
    vec![
        (
            "no api key",
            c.get(node.at("/v1/session"))
                .header("x-session-token", token),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong api key",
            c.get(node.at("/v1/session"))
                .bearer_auth("nope-nope-nope-nope")
                .header("x-session-token", token),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "basic auth",
            c.get(node.at("/v1/session")).basic_auth("a", Some("b")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "missing token",
            node.v1(Method::GET, "/v1/session"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "garbage token",
            v1_session(node, Method::GET, "/v1/session", "not a token"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "oversized token header",
            v1_session(node, Method::GET, "/v1/session", &"A".repeat(4000)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown token",
            v1_session(node, Method::GET, "/v1/session", &unknown),
            StatusCode::NOT_FOUND,
        ),
        (
            "malformed json",
            v1_session(node, Method::PATCH, "/v1/session", token)
                .header(CONTENT_TYPE, "application/json")
                .body("{\"data\": {"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong json shape",
            v1_session(node, Method::PATCH, "/v1/session", token).json(&json!({"data": {"a": 1}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            v1_session(node, Method::POST, "/v1/session/regenerate", token)
                .json(&json!({"user_id": "x", "admin": true})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty user id",
            v1_session(node, Method::POST, "/v1/session/regenerate", token)
                .json(&json!({"user_id": ""})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "oversized body",
            v1_session(node, Method::PATCH, "/v1/session", token)
                .header(CONTENT_TYPE, "application/json")
                .body(format!("{{\"data\":{{\"a\":\"{big}\"}}}}")),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "oversized create body",
            node.v1(Method::POST, "/v1/sessions")
                .header(CONTENT_TYPE, "application/json")
                .body(format!("{{\"data\":{{\"a\":\"{big}\"}}}}")),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "wrong content type",
            v1_session(node, Method::PATCH, "/v1/session", token)
                .header(CONTENT_TYPE, "text/plain")
                .body("{\"data\":{}}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "create with form body",
            node.v1(Method::POST, "/v1/sessions").form(&[("data", "x")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ]
}

/// Hostile requests to the browser endpoints, with `token` a live session's.
fn browser_cases(node: &TestNode, c: &reqwest::Client, token: &str) -> Vec<Case> {
    let big = "x".repeat(64 * 1024);
    vec![
        (
            "login wrong content type",
            c.post(node.at("/login"))
                .header(CONTENT_TYPE, "text/plain")
                .body("username=alice"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "login malformed json",
            c.post(node.at("/login"))
                .header(CONTENT_TYPE, "application/json")
                .body("{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "login missing field",
            c.post(node.at("/login")).form(&[("username", "alice")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "login oversized",
            c.post(node.at("/login"))
                .form(&[("username", "alice"), ("password", big.as_str())]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "garbage cookie",
            c.get(node.at("/whoami"))
                .header(COOKIE, "__Host-sid=%%%; ;;=="),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "non-utf8 cookie",
            c.get(node.at("/whoami")).header(
                COOKIE,
                reqwest::header::HeaderValue::from_bytes(b"__Host-sid=\xff\xfe").unwrap(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "oversized cookie",
            c.get(node.at("/whoami"))
                .header(COOKIE, format!("__Host-sid={}", "A".repeat(8000))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown route",
            c.get(node.at("/v2/whatever")),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            c.put(node.at("/login")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "bad handle",
            c.delete(node.at("/me/sessions/zzz"))
                .header(COOKIE, cookie(token)),
            StatusCode::NOT_FOUND,
        ),
        (
            "bad user id",
            node.v1(
                Method::GET,
                &format!("/v1/users/{}/sessions", "u".repeat(300)),
            ),
            StatusCode::BAD_REQUEST,
        ),
    ]
}

/// `case` gets its documented status and, unless it is a browser's 401, a
/// JSON error; its answer never holds `token`, and `node` still answers
/// `/healthz` after it.
async fn check(node: &TestNode, c: &reqwest::Client, token: &str, case: Case) {
    let (name, req, expected) = case;
    let res = req.send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(res.status(), expected, "{name}");
    let content_type = res
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.text().await.unwrap();
    if expected != StatusCode::UNAUTHORIZED || name.contains("key") || name.contains("auth") {
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{name}: {body}"
        );
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
        assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{name}: {body}"
        );
    }
    assert!(
        !body.contains(token),
        "{name}: the token leaked into an error body"
    );
    let health = c.get(node.at("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "still serving after {name}"
    );
}

#[tokio::test]
async fn hostile_input_gets_documented_statuses_and_the_node_keeps_serving() {
    let node = TestNode::spawn().await;
    let c = client();
    let token = service_login(&node, "erin").await;
    let mut cases = service_api_cases(&node, &c, &token);
    cases.extend(browser_cases(&node, &c, &token));
    for case in cases {
        check(&node, &c, &token, case).await;
    }
    // The valid token survived all of it.
    assert_eq!(read_session(&node, &token).await.0, StatusCode::OK);
    node.stop().await;
}

/// Each distinct label value is a new metric series kept for ever: a client
/// sending requests with made-up methods must not be able to grow the
/// node's memory (and its /metrics page) without bound.
#[tokio::test]
async fn made_up_methods_cannot_grow_the_metric_series() {
    let node = TestNode::spawn().await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("X{i}ATTACK").as_bytes()).unwrap();
        let res = node
            .client
            .request(method, node.at("/whoami"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let text = metrics_text(&node).await.unwrap();
    assert!(!text.contains("ATTACK"), "a made-up method became a label");
    assert!(
        text.contains("method=\"OTHER\""),
        "made-up methods are counted as OTHER"
    );
    node.stop().await;
}

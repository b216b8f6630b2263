//! The operations endpoints: readiness, health and metrics, also while
//! DynamoDB is unreachable (503 `store_unavailable`, no session issued).

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{
    assert_error, browser_login, client, dynamodb_toml, metrics_text, node_toml,
    session_set_cookie, unreachable_url, TestNode, ALICE_PASSWORD, API_KEY,
};

#[tokio::test]
async fn operations_endpoints() {
    let node = TestNode::spawn().await;
    let res = node.client.get(node.at("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
    let _ = browser_login(&node, "alice", ALICE_PASSWORD).await;
    let text = metrics_text(&node).await.unwrap();
    for name in [
        "edge_session_http_request_duration_seconds_bucket",
        "edge_session_http_requests_total",
        "edge_session_dynamodb_call_duration_seconds_bucket",
        "edge_session_cache_lookups_total",
        "edge_session_outbox_pending",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(text.contains("route=\"/login\""));
    node.stop().await;
}

#[tokio::test]
async fn dynamodb_unreachable_is_503_store_unavailable() {
    let url = unreachable_url();
    let dir = tempfile::tempdir().unwrap();
    let toml = node_toml(dir.path(), "unreachable", "")
        .replace("provision_on_start = true", "provision_on_start = false")
        .replace(&endpoint_line(), &format!("endpoint = \"{url}\"\naccess_key_id = \"x\"\nsecret_access_key = \"y\"\nconnect_timeout_ms = 200"));
    let config = edge_session::config::Config::from_toml(&toml).unwrap();
    let app = edge_session::Application::build(config).await.unwrap();
    let url = app.url();
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    let c = client();
    let res = c
        .post(format!("{url}/v1/sessions"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
    let res = c
        .post(format!("{url}/login"))
        .form(&[("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        session_set_cookie(&res).is_none(),
        "no session issued while DynamoDB is down"
    );
    let res = c.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        c.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    handle.stop(true).await;
    task.await.unwrap().unwrap();
}

/// The endpoint line(s) `node_toml` writes for the harness endpoint.
fn endpoint_line() -> String {
    let toml = dynamodb_toml("t");
    toml.lines()
        .skip(1)
        .take_while(|l| !l.starts_with("table"))
        .collect::<Vec<_>>()
        .join("\n")
}

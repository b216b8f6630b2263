//! DynamoDB throttling is not an outage: a node (a child process, so its
//! `/metrics` are its own) whose DynamoDB answers every call with a
//! `ThrottlingException` (through the fault proxy) answers 503
//! `store_throttled` with `Retry-After`, keeps its circuit breaker closed
//! (every call still reaches DynamoDB, at the SDK's backoff), counts the
//! failures in `edge_session_dynamodb_errors_total{op,kind="throttled"}`,
//! and serves the first call after the throttling stops.

use reqwest::{header, Method, StatusCode};
use serde_json::Value;

use crate::coherence::terminate_cleanly;
use crate::faultproxy::Fault;
use crate::harness::{client, fault_proxy, metric, proxied_node_toml, v1, Cluster};
use crate::process;

/// The value of `name{labels...}` in the node's `/metrics` (`None`: absent).
async fn labelled(c: &reqwest::Client, url: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let text = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_does_not_open_the_breaker() {
    let Some(proxy) = fault_proxy().await else {
        return;
    };
    let cluster = Cluster::new().await;
    let dir = tempfile::tempdir().unwrap();
    // A breaker that would open after 3 unanswered calls and stay open for
    // ten minutes: if throttling counted, the calls below would fail fast.
    let toml = proxied_node_toml(
        &dir.path().join("data"),
        cluster.tier.table(),
        &proxy.url(),
        "breaker_failures = 3\nbreaker_cooldown_ms = 600000\n",
        "[stream]\nenabled = false\n",
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let node = process::start(&config, "warn");
    let c = client();
    let create = || v1((&c, &node.url), Method::POST, "/v1/sessions").send();
    assert_eq!(create().await.unwrap().status(), StatusCode::CREATED);

    proxy.set(Fault::Throttle);
    let calls = 12;
    for i in 0..calls {
        let before = proxy.throttled();
        let res = create().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "call {i}");
        let retry_after = res
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "call {i}: Retry-After in seconds, got {retry_after:?}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "store_throttled", "call {i}: {body}");
        assert!(
            proxy.throttled() > before,
            "call {i} failed fast instead of reaching DynamoDB"
        );
    }
    assert_eq!(
        metric((&c, &node.url), "edge_session_dynamodb_breaker_open")
            .await
            .unwrap_or(0.0),
        0.0,
        "the breaker stayed closed"
    );
    assert_eq!(
        metric(
            (&c, &node.url),
            "edge_session_dynamodb_breaker_rejections_total"
        )
        .await,
        None,
        "no call was failed fast"
    );
    let throttled = labelled(
        &c,
        &node.url,
        "edge_session_dynamodb_errors_total",
        &["op=\"create\"", "kind=\"throttled\""],
    )
    .await;
    assert!(
        throttled.is_some_and(|n| n >= f64::from(calls)),
        "errors_total{{op=\"create\",kind=\"throttled\"}}: {throttled:?}"
    );

    proxy.set(Fault::Pass);
    assert_eq!(
        create().await.unwrap().status(),
        StatusCode::CREATED,
        "the first call after the throttling stops succeeds"
    );
    terminate_cleanly(node).await;
}

//! The node over real sockets: a real HTTP client against `Application`
//! on 127.0.0.1:0, over a real DynamoDB-wire server, one behaviour per
//! file.
//!
//! - [`browser`]: signing in and out in a browser, and the cookie.
//! - [`service`]: the service API's sessions.
//! - [`own_sessions`]: a user's own sessions under `/me/sessions`.
//! - [`bad_input`]: hostile input and the statuses it gets.
//! - [`operations`]: readiness, health and metrics.

mod bad_input;
mod browser;
mod operations;
mod own_sessions;
mod service;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{whoami, TestNode};

/// A real, live pre-login session (`POST /v1/sessions`): what an attacker
/// who wants to plant a known identifier can obtain. (`GET /` issues none.)
async fn anonymous(node: &TestNode) -> String {
    let res = node.v1(Method::POST, "/v1/sessions").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        whoami(node, &token).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    token
}

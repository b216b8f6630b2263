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

use reqwest::StatusCode;

use crate::harness::{anonymous_token, whoami, TestNode};

/// A real, live pre-login session (`POST /v1/sessions`): what an attacker
/// who wants to plant a known identifier can obtain. (`GET /` issues none.)
async fn anonymous(node: &TestNode) -> String {
    let token = anonymous_token(&node).await;
    assert_eq!(
        whoami(node, &token).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    token
}

//! What edge-session's tests and its benchmark harness share, so that each
//! piece is written once:
//!
//! - [`child`]: a server as a child process (the integration tests start the
//!   `edge-session` binary with it; the bench harness starts every server it
//!   measures with it).
//! - [`faultproxy`]: a fault-injecting TCP proxy in front of a DynamoDB-wire
//!   server (refused, reset, black-holed, slow and cut connections,
//!   throttling, a stalled or late stream, late indexes): the integration
//!   tests' failure modes.
//! - [`streams_limits`]: an HTTP proxy that enforces DynamoDB Streams' read
//!   limits in front of the embedded server, which enforces none (the bench
//!   harness's fleet runs, and its own tests here).
//! - [`dynamo`]: the endpoint every test of one process shares (the
//!   integration suite's; `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT` names another),
//!   a file-backed embedded server of a test's own, fresh tables and items
//!   (the sync crate's tests and the integration tests).
//! - [`follower`]: a follower of the stream or the journal run for a test,
//!   and the waits on it (the sync crate's tests).
//!
//! It is no part of the node: only the workspace's tests and the bench crate
//! depend on it, and it uses none of the node's test hooks.

pub mod child;
pub mod dynamo;
pub mod faultproxy;
pub mod follower;
pub mod streams_limits;

//! The parts of the edge-session benchmarks shared by more than one program:
//!
//! - [`fleet`]: many nodes' followers over one table under DynamoDB Streams'
//!   read limits: revocation propagation, each node's calls, each node's
//!   lease (the `fleet` subcommand and the fleet test).
//! - [`raw`]: the raw DynamoDB `TransactWriteItems` a login wraps, built with
//!   the SDK client (the harness and the criterion bench `lookup` both
//!   measure `regenerate` beside it).
//!
//! What the harness shares with the tests is in the test support crate
//! (`tests/support`, `edge_session_test_support`): a server as a child
//! process (`child`, with which the harness starts every server it
//! measures) and the proxy that enforces DynamoDB Streams' read limits in
//! front of the embedded server (`streams_limits`, which the fleet runs read
//! through).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fleet;
pub mod raw;

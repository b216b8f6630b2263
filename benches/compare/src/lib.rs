//! The parts of the edge-session benchmarks shared by more than one program:
//!
//! - [`fleet`]: many nodes' followers over one table under those limits:
//!   revocation propagation, each node's calls, each node's lease (the
//!   `fleet` subcommand and the fleet test).
//! - [`node`]: a server as a child process (the `edge-session-bench` harness
//!   and the integration tests both start the node with it).
//! - [`raw`]: the raw DynamoDB `TransactWriteItems` a login wraps, built with
//!   the SDK client (the harness and the criterion bench `lookup` both
//!   measure `regenerate` beside it).
//! - [`streams_limits`]: an HTTP proxy that enforces DynamoDB Streams' read
//!   limits (readers per shard, `GetRecords` and `DescribeStream` rates) in
//!   front of the embedded server, which enforces none (the fleet runs).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod child;
pub mod fleet;
pub mod raw;
pub mod streams_limits;

//! The names of the targets a run measures, as they appear in its tables,
//! CSV files and plot.

/// The node under test.
pub const EDGE: &str = "edge-session";
/// A second edge-session binary (`--candidate-bin`).
pub const CANDIDATE: &str = "edge-session (candidate)";
/// The hello-world ceiling, in a child process.
pub const HELLO: &str = "hello (ceiling)";
/// The hello-world ceiling, in the harness process.
pub const HELLO_IN_PROCESS: &str = "hello (in-process)";
/// actix-session 0.11 over Redis.
pub const REDIS: &str = "actix-session+redis";
/// The raw DynamoDB transaction a login wraps.
pub const RAW: &str = "raw TransactWriteItems";
/// The store's login.
pub const REGENERATE: &str = "TieredStore::regenerate";

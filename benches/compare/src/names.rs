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
/// Forward auth on the node under test.
pub const AUTH_CHECK: &str = "edge-session /auth/check";
/// The built-in reverse proxy in front of the hello world.
pub const PROXY: &str = "edge-session proxy";
/// nginx `proxy_pass` to the hello world with `auth_request` to the node.
pub const NGINX: &str = "nginx + auth_request";
/// A login carried out by the proxy on the app's signed action.
pub const ACTION_LOGIN: &str = "login action (proxy)";
/// Express + express-session + connect-redis.
pub const EXPRESS_REDIS: &str = "express-session+connect-redis";
/// Express + express-session + connect-dynamodb (embedded DynamoDB server).
pub const EXPRESS_DYNAMODB: &str = "express-session+connect-dynamodb";

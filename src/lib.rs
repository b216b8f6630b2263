//! edge-session: an edge session server. A node keeps hot sessions in a local
//! sled cache and writes through to DynamoDB, the source of truth shared by
//! every node. Regenerate and destroy invalidate both tiers.
//!
//! # Layout
//!
//! - [`token`]: [`SessionToken`] (the bearer secret) and [`StorageKey`] (its
//!   blake3 derivation, the only key either tier stores).
//! - [`record`]: [`SessionRecord`] and the pure expiry rules.
//! - [`codec`]: the versioned CBOR envelope (the one file naming serde_cbor).
//! - [`cache`]: [`SledCache`], records, tombstones and the revocation outbox
//!   (the one file naming sled).
//! - [`store`]: [`TieredStore`], the coordinator that orders writes across
//!   both tiers; its module doc is the contract.
//! - [`embedded`]: the in-process DynamoDB-compatible server (dynoxide) for
//!   the default `dynamodb.endpoint = "embedded"`.
//! - [`coherence`]: the node side of the stream follower, and the lease
//!   watchdog (how another node's revocation reaches this one).
//! - [`config`]: layered configuration (file, then `EDGE_SESSION__*` env).
//! - [`http`]: the browser routes, the `/v1` service API, operations.
//! - [`app`]: [`app::Application`], a node assembled from a config.
//! - [`adapter`]: `actix_session::storage::SessionStore` for [`TieredStore`].
//! - [`telemetry`]: logging and the Prometheus recorder.
//! - DynamoDB itself lives in the `edge-session-sync` crate, re-exported as
//!   [`sync`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapter;
pub mod app;
pub mod cache;
pub mod codec;
pub mod coherence;
pub mod config;
pub mod embedded;
pub mod http;
pub mod record;
pub mod store;
pub mod telemetry;
pub mod token;

pub use edge_session_sync as sync;

pub use cache::SledCache;
pub use record::{Policy, SessionRecord, UnixMillis};
pub use store::{Session, TieredStore};
pub use token::{SessionToken, StorageKey, TokenError};

//! edge-session: an edge session server. A node keeps hot sessions in a local
//! sled cache and writes through to DynamoDB, the source of truth shared by
//! every node. Regenerate and destroy invalidate both tiers.
//!
//! # Layout
//!
//! Public modules hold only public API; the rest are private and what they
//! export is re-exported below.
//!
//! - `token`: [`SessionToken`] (the bearer secret) and [`StorageKey`] (its
//!   blake3 derivation, the only key either tier stores).
//! - `record`: [`SessionRecord`], the pure expiry rules, and [`now`], the
//!   wall clock; [`SessionData`], the application data, decoded on first use.
//! - [`client`]: what a sign-in records about its client (address, parsed
//!   `User-Agent`, place) under `session.record_client`.
//! - [`codec`]: the versioned record envelope: formats 3 and 2 (fixed
//!   header, read without serde; 3 adds the client section) and format 1
//!   (CBOR; `codec/v1.rs` is the one file naming serde_cbor).
//! - [`cache`]: [`SledCache`], records, tombstones and the revocation outbox
//!   (the one file naming sled).
//! - [`store`]: [`TieredStore`], the coordinator that orders writes across
//!   both tiers; its module doc is the contract.
//! - [`embedded`]: the in-process DynamoDB-compatible server (dynoxide) for
//!   the default `dynamodb.endpoint = "embedded"`.
//! - `coherence`: the node side of the stream follower, and the lease
//!   watchdog (how another node's revocation reaches this one).
//! - [`events`]: session events from the table's change feed: the region's
//!   emitter, its log in the table, and signed webhook deliveries.
//! - [`relay`]: relays, for a region of any size: a few nodes read the
//!   stream and push what it carries to every node over a signed feed.
//! - [`config`]: layered configuration (file, then `EDGE_SESSION__*` env).
//! - `http`: the browser routes, the `/v1` service API, operations; its
//!   contract is `docs/openapi.json` ([`OPENAPI_SPEC`], checked against
//!   [`route_table`] and [`ErrorCode`]).
//! - `assertion`: the gateway's signed identity assertion (Ed25519 JWT),
//!   its keys and JWK Set.
//! - [`app`]: [`Application`], a node assembled from a config.
//! - `adapter`: `actix_session::storage::SessionStore` for [`TieredStore`].
//! - [`telemetry`]: logging and the Prometheus recorder.
//! - DynamoDB itself lives in the `edge-session-sync` crate, re-exported as
//!   [`sync`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod adapter;
pub mod app;
mod assertion;
pub mod cache;
pub mod client;
pub mod codec;
pub mod coherence;
pub mod config;
pub mod embedded;
pub mod events;
mod http;
mod record;
pub mod relay;
pub mod store;
pub mod telemetry;
mod token;

pub use edge_session_sync as sync;

pub use adapter::USER_ID_KEY;
pub use app::Application;
pub use cache::SledCache;
pub use config::Config;
pub use http::{hash_password, route_table, ErrorCode, SPEC as OPENAPI_SPEC};
pub use record::{now, rfc3339, Policy, SessionData, SessionRecord, Text, UnixMillis};
pub use store::{Session, TieredStore};
pub use token::{SessionToken, StorageKey, TokenError};

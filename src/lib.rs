//! edge-session: an edge session server. A node keeps hot sessions in a local
//! sled cache and writes through to DynamoDB, the source of truth shared by
//! every node. Regenerate and destroy invalidate both tiers.
//!
//! # The API
//!
//! Everything public is named below, at the root, by a `pub use` from the
//! module that defines it; two namespaces are public as modules:
//! [`config`] (the configuration's sections, as `config.toml` spells them)
//! and [`codec`] (the record's versioned wire format). Inside the crate each
//! module imports from the module that defines a name, never from the root,
//! and the DynamoDB crate is always `edge_session_sync`.
//!
//! # Layout
//!
//! - `token`: [`SessionToken`] (the bearer secret) and [`StorageKey`] (its
//!   blake3 derivation, the only key either tier stores).
//! - `record`: [`SessionRecord`], the pure expiry rules, and [`now`], the
//!   wall clock; [`SessionData`], the application data, decoded on first use.
//! - `wire`: the primitive byte forms (varints, length-prefixed strings) that
//!   record format 2 and its client section are written in.
//! - `client`: what a sign-in records about its client (address, parsed
//!   `User-Agent`, place) under `session.record_client`.
//! - [`codec`]: the versioned record envelope: formats 3 and 2 (fixed
//!   header, read without serde; 3 adds the client section) and format 1
//!   (CBOR; `codec/v1.rs` is the one file naming serde_cbor).
//! - `cache`: [`SledCache`], records, tombstones and the revocation outbox
//!   (the one file naming sled).
//! - `store`: [`TieredStore`], the coordinator that orders writes across
//!   both tiers; its module doc indexes the operations.
//! - `embedded`: [`EmbeddedDynamo`], the in-process DynamoDB-compatible
//!   server (dynoxide) for the default `dynamodb.endpoint = "embedded"`.
//! - `coherence`: the node side of the stream follower, and the lease
//!   watchdog (how another node's revocation reaches this one).
//! - `events`: session events from the table's change feed: the region's
//!   emitter, its log in the table, and signed webhook deliveries.
//! - `relay`: relays, for a region of any size: a few nodes read the
//!   stream and push what it carries to every node over a signed feed.
//! - [`config`]: layered configuration (file, then `EDGE_SESSION__*` env).
//! - `http`: the browser routes, the `/v1` service API, operations; its
//!   contract is `docs/openapi.json` ([`OPENAPI_SPEC`], checked against
//!   [`route_table`] and [`ErrorCode`]).
//! - `assertion`: the gateway's signed identity assertion (Ed25519 JWT),
//!   its keys and JWK Set.
//! - `app`: [`Application`], a node assembled from a config.
//! - `adapter`: `actix_session::storage::SessionStore` for [`TieredStore`].
//! - `telemetry`: logging and the Prometheus recorder.
//! - DynamoDB itself lives in the `edge-session-sync` crate; the types this
//!   API takes from it are re-exported here ([`DynamoTier`] and its
//!   settings).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod adapter;
mod app;
mod assertion;
mod cache;
mod client;
pub mod codec;
mod coherence;
pub mod config;
mod embedded;
mod events;
mod http;
mod record;
mod relay;
mod store;
mod telemetry;
mod token;
mod wire;

pub use adapter::USER_ID_KEY;
pub use app::{dynamo_tier, Application};
pub use cache::{
    CacheError, CachedRecord, FillOutcome, OutboxEntry, QueuedUnverified, SledCache, SweepReport,
    Tombstone, TombstoneKind,
};
pub use client::{parse_agent, Agent, ClientInfo, ClientMode, GeoDb, Place, Recorder};
pub use coherence::{lease_of, CoherenceSettings};
pub use config::Config;
pub use edge_session_sync::{BreakerSettings, ClientSettings, DynamoError, DynamoTier, Endpoint};
pub use embedded::{EmbeddedDynamo, EmbeddedError, STREAM_RETENTION};
pub use http::{hash_password, route_table, ErrorCode, SPEC as OPENAPI_SPEC};
pub use record::{now, rfc3339, Policy, SessionData, SessionRecord, Text, UnixMillis};
#[cfg(feature = "test-support")]
pub use store::RegenerateHold;
pub use store::{
    item_of, CacheLookup, Destroyed, DrainReport, End, Error as StoreError, Homes, NewSession,
    OnUnreachable, Session, SessionChange, SessionPage, StoreSettings, TieredStore, UserBinding,
    DEFAULT_MAX_PER_USER, DEFAULT_MAX_RECORD_BYTES,
};
pub use telemetry::{init_logging, metrics_handle};
pub use token::{SessionToken, StorageKey, TokenError};

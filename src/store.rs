//! [`TieredStore`]: the coordinator. It decides the order of writes across the
//! sled tier ([`SledCache`]) and the DynamoDB tier ([`DynamoTier`]). DynamoDB
//! is the truth; sled may hold less, never more for longer than the lease.
//!
//! # Operations: order of writes, and what each failure leaves behind
//!
//! Each group of operations is one file, in the order of the index below; each
//! file is an `impl TieredStore` block with its private helpers:
//!
//! - `load.rs`: `load`, `load_key`, `lookup_cached` (the sled half of a
//!   load), the lease revalidation, and the single DynamoDB read shared by
//!   concurrent misses.
//! - `write.rs`: `create`, `update`.
//! - `rotate.rs`: `regenerate`.
//! - `revocation.rs`: `destroy`, `destroy_key`, `revoke_user`,
//!   `revoke_user_session`, `evict_past_limit` (a login's eviction of the
//!   user's oldest sessions), and the durable tombstone + outbox entry each
//!   writes first.
//! - `listing.rs`: the paginated listing of one user's sessions.
//! - `upkeep.rs`: `drain_outbox`, `drain_unverified`, and `maintain`, the
//!   background replay and cache sweeps.
//! - `background.rs`: the work an operation starts and does not wait for,
//!   and `close`, which waits for it and then closes the cache.
//! - `remote.rs`: what other nodes did, as the stream reports it
//!   (`apply_removed`, `apply_version_raised`).
//! - `lease.rs`: the lease, where it is set, shortened and read, and which
//!   cached records the stream follower's position covers (the others get
//!   the short lease).
//! - `epochs.rs`: users' revocation epochs as this node knows them (read by
//!   `load`, `create` and `regenerate`, raised by `revoke_user` and the
//!   stream). Its only write is `load`'s step 4: an outlawed session is
//!   destroyed as by `destroy`.
//!
//! - `homes.rs`: other regions' replicas (`[regions]`): the read of a
//!   session's home on a miss, and where its touches and logouts are
//!   written.
//!
//! This file holds the public types and the shared state; `epochs/known.rs`,
//! `single_flight.rs`, `in_flight.rs` and `unknown.rs` (the negative cache)
//! hold the parts of that state that take a lock, each behind a narrow API.
//!
//! The operations, each with its steps and what a failure at each step leaves on its
//! own doc comment:
//!
//! - [`load`](TieredStore::load) (`load.rs`)
//! - [`create`](TieredStore::create) (`write.rs`)
//! - [`update`](TieredStore::update) (`write.rs`)
//! - [`regenerate`](TieredStore::regenerate) (`rotate.rs`)
//! - [`destroy`](TieredStore::destroy) (`revocation.rs`)
//! - `evict_past_limit` (`revocation.rs`): after a login at the user's cap
//! - [`revoke_user`](TieredStore::revoke_user) (`revocation.rs`)
//! - [`drain_outbox`](TieredStore::drain_outbox) (`upkeep.rs`)
//! - [`drain_unverified`](TieredStore::drain_unverified) (`upkeep.rs`)
//! - [`apply_removed`](TieredStore::apply_removed) / `apply_version_raised` (`remote.rs`)
//!
//! A crash between any two steps is covered by the same failure lists: sled writes
//! are flushed before DynamoDB calls (a regenerate's before its answer), so
//! an answered revocation is never forgotten, and nothing is issued to a
//! client before DynamoDB has it.
//!
//! The durable tombstone + outbox entry that `destroy` and a `create`
//! without an answer write before DynamoDB is touched is one method,
//! `write_revocation` (`revocation.rs`); `regenerate`'s provisional one is
//! `write_provisional_revocation`. A tombstone's kind (final, provisional,
//! unverified: [`TombstoneKind`](crate::cache::TombstoneKind)) says who may
//! remove it: only the regenerate that wrote a provisional one lifts it, so
//! every destroy stays its own revocation (docs/design.md, tier rule 7).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use edge_session_sync::{DynamoError, DynamoTier, Item};

use crate::cache::{CacheError, SledCache};
use crate::client::{ClientInfo, ClientMode};
use crate::codec::{self, DecodeError, Format};
use crate::record::{Policy, SessionRecord, UnixMillis};
use crate::token::StorageKey;
use epochs::Epochs;
#[cfg(feature = "test-support")]
pub use hold::RegenerateHold;
pub use homes::Homes;
use in_flight::RevokingSet;
use single_flight::SingleFlight;
use unknown::UnknownKeys;

// The groups of operations, in the order of the table above.
mod load;

mod write;

mod rotate;

mod listing;
mod revocation;
mod upkeep;

mod background;

mod lease;
mod remote;

mod epochs;

// The parts of the shared state that take a lock.
#[cfg(feature = "test-support")]
mod hold;
mod homes;
mod in_flight;
mod single_flight;
mod unknown;

/// A live session as loaded: its key and record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The storage key (hashed token).
    pub key: StorageKey,
    /// The record.
    pub record: SessionRecord,
}

/// The user a session is bound to by `regenerate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBinding {
    /// The user.
    pub user_id: String,
    /// The user's role.
    pub role: Option<String>,
    /// What the sign-in recorded about its client (`None`: nothing).
    pub client: Option<ClientInfo>,
}

/// What a new session starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSession {
    /// Bind a user at creation (`None`: anonymous).
    pub binding: Option<UserBinding>,
    /// Application data.
    pub data: BTreeMap<String, String>,
    /// Idle timeout for this session (`None`: the policy's).
    pub idle_timeout_ms: Option<u64>,
}

impl NewSession {
    /// An anonymous session holding `data`.
    pub fn anonymous(data: BTreeMap<String, String>) -> Self {
        NewSession {
            data,
            ..NewSession::default()
        }
    }
}

/// A change written by [`TieredStore::update`]. `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChange {
    /// Replace the application data.
    pub data: Option<BTreeMap<String, String>>,
    /// Replace the idle timeout.
    pub idle_timeout_ms: Option<u64>,
}

impl SessionChange {
    /// Replace the data.
    pub fn data(data: impl Into<BTreeMap<String, String>>) -> Self {
        SessionChange {
            data: Some(data.into()),
            ..SessionChange::default()
        }
    }
}

/// Why a session ends. With session events on
/// ([`StoreSettings::end_reasons`]) it is written on the item just before
/// the delete (one more write unit), so that the delete's stream record
/// says why; a rotation's delete carries none (its new session names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its holder signed out (logout, `DELETE /v1/session`, the gateway's
    /// `logout` action).
    SignedOut,
    /// The user ended it from another of their sessions.
    ByUser,
    /// An administrator ended it (`/v1`).
    ByAdmin,
    /// Its user was signed out everywhere.
    Everywhere,
    /// Its user's sessions passed `session.max_per_user`.
    Evicted,
    /// A node found it expired.
    Expired,
    /// Its delete was replayed after DynamoDB was unreachable; the reason
    /// it was first given, if any, was written then (the first one stays).
    Deferred,
}

impl End {
    /// The value written on the item (`why`).
    pub fn as_str(self) -> &'static str {
        match self {
            End::SignedOut => "signed_out",
            End::ByUser => "user",
            End::ByAdmin => "admin",
            End::Everywhere => "everywhere",
            End::Evicted => "evicted",
            End::Expired => "expired",
            End::Deferred => "deferred",
        }
    }

    /// The end written as `why`.
    pub fn parse(why: &str) -> Option<End> {
        [
            End::SignedOut,
            End::ByUser,
            End::ByAdmin,
            End::Everywhere,
            End::Evicted,
            End::Expired,
            End::Deferred,
        ]
        .into_iter()
        .find(|e| e.as_str() == why)
    }
}

/// What `destroy` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// Dead on this node and deleted from DynamoDB.
    Confirmed,
    /// Dead on this node; the DynamoDB delete waits in the durable outbox.
    Pending,
    /// There was no such session; nothing was written.
    NotFound,
    /// It was already revoked on this node for good; nothing was written.
    AlreadyRevoked,
    /// Neither tier could say whether it exists (not cached here, DynamoDB
    /// unreachable): refused on this node, and its DynamoDB delete waits in
    /// the bounded queue of unverified revocations (no fsync, no outbox).
    Unverified,
}

/// One page of a user's live sessions (see
/// [`TieredStore::list_user_sessions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPage {
    /// The live sessions of the page, in the index's order (by storage key,
    /// not by time). Expired, locally revoked and outlawed sessions are left
    /// out after the read, so a page may hold fewer than the limit (even
    /// none) while `next` is set.
    pub sessions: Vec<Session>,
    /// Where the next page starts (after this key), if one may follow.
    pub next: Option<StorageKey>,
}

/// What the sled tier alone says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    /// Cached and confirmed within the lease (expiry not yet checked).
    Fresh(SessionRecord),
    /// Cached, but confirmed longer ago than the lease: revalidate first.
    Stale {
        /// The cached record.
        record: SessionRecord,
        /// When DynamoDB last confirmed it.
        fetched_at: UnixMillis,
    },
    /// Revoked on this node.
    Revoked,
    /// Not cached: ask DynamoDB.
    Miss,
}

/// What one outbox pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Revocations DynamoDB confirmed in this pass.
    pub confirmed: usize,
    /// Revocations still waiting.
    pub remaining: usize,
}

/// A tier failed. Expected outcomes (miss, conflict) are values, not errors.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// DynamoDB did not complete the call.
    #[error(transparent)]
    Dynamo(#[from] DynamoError),
    /// The local cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// DynamoDB holds a record this build cannot read.
    #[error("stored session record: {0}")]
    Corrupt(#[from] DecodeError),
    /// The encoded record would be over `max_record_bytes`; nothing written.
    #[error("session record of {size} bytes is over the {max}-byte limit")]
    RecordTooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl Error {
    /// DynamoDB could not be reached: the 503 `store_unavailable` case.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Dynamo(e) if e.is_unavailable())
    }
}

/// Settings for a [`TieredStore`].
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    /// Expiry policy for new sessions.
    pub policy: Policy,
    /// A cached record confirmed longer ago than this is re-checked against
    /// DynamoDB (one consistent read of `ver`) before it is served.
    pub revalidate_after_ms: u64,
    /// What a load does with a cached record past its lease when DynamoDB
    /// cannot be reached.
    pub on_unreachable: OnUnreachable,
    /// Cap on the queue of unverified revocations (logouts of keys this node
    /// could not check); a logout past it is refused (503).
    pub max_unverified_revocations: usize,
    /// The most live sessions one user keeps: a login past it revokes the
    /// user's oldest sessions (by `created_at`). At least 1.
    pub max_per_user: usize,
    /// The largest encoded record `create` and `update` write.
    pub max_record_bytes: usize,
    /// A key DynamoDB had no item for is answered "unknown" from memory for
    /// this long (0: always ask). `unknown.rs` says why this never hides a
    /// session that exists.
    pub negative_ttl_ms: u64,
    /// At most this many keys are remembered as unknown (oldest dropped
    /// first).
    pub negative_max_entries: usize,
    /// The record format every write uses (both are always read): format 1
    /// only while nodes of a build that reads nothing else share the table
    /// (docs/design.md, "Record").
    pub record_format: Format,
    /// What a touch keeps of the address a session was last used from
    /// (`session.record_client`).
    pub record_client: ClientMode,
    /// Write why a session ends on its item before the delete ([`End`]):
    /// on when the node emits session events (`events.enabled`).
    pub end_reasons: bool,
}

/// [`StoreSettings::max_per_user`] unless configured (`session.max_per_user`).
pub const DEFAULT_MAX_PER_USER: usize = 32;

/// The default cap on an encoded record, well under DynamoDB's 400 KB item.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;

/// What a load does with a cached record past its lease while DynamoDB is
/// unreachable. (Within the lease a cached record is served either way.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnreachable {
    /// Refuse: the caller gets 503 `store_unavailable`.
    #[default]
    Reject,
    /// Serve the cached record if DynamoDB confirmed it at most
    /// `max_stale_ms` ago (revocations elsewhere may go unseen that long).
    ServeCached {
        /// Upper bound on the age of a record served this way.
        max_stale_ms: u64,
    },
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            policy: Policy::default(),
            revalidate_after_ms: 30_000,
            on_unreachable: OnUnreachable::Reject,
            max_unverified_revocations: 10_000,
            max_per_user: DEFAULT_MAX_PER_USER,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            negative_ttl_ms: 1_000,
            negative_max_entries: 10_000,
            record_format: Format::default(),
            record_client: ClientMode::default(),
            end_reasons: false,
        }
    }
}

type Fetch = Result<Option<Item>, DynamoError>;

/// The two-tier session store. Cheap to clone.
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Inner>,
}

struct Inner {
    cache: SledCache,
    dynamo: DynamoTier,
    settings: StoreSettings,
    /// Loads that missed sled, by key: concurrent misses share one read.
    misses: SingleFlight<Fetch>,
    /// Users' revocation epochs as this node last read them.
    epochs: Epochs,
    /// The fleet's global revocation epoch as this node last read it.
    global: epochs::GlobalEpoch,
    /// The lease in force (ms): `settings.revalidate_after_ms`, shortened
    /// while the stream follower lags (see [`TieredStore::set_revalidate_after_ms`]).
    revalidate_after_ms: AtomicU64,
    /// Which cached records the follower's position covers (records
    /// confirmed before it get the short lease; see `lease.rs`).
    coverage: lease::Coverage,
    /// Keys a live request is revoking: the outbox replay skips them.
    revoking: RevokingSet,
    /// Keys DynamoDB recently had no item for (the negative cache).
    unknown: UnknownKeys,
    /// The other regions' replicas, when this is one region of several.
    homes: std::sync::OnceLock<homes::Homes>,
    /// Work started and not awaited, which `close` waits for.
    background: background::Background,
    /// Regenerates a test holds (`test-support`).
    #[cfg(feature = "test-support")]
    holds: hold::Holds,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("table", &self.inner.dynamo.table())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// The DynamoDB item of `record` stored under `key`, `body` being its
/// encoding (in whichever record format).
pub fn item_of(key: &StorageKey, record: &SessionRecord, body: Vec<u8>) -> Item {
    Item {
        sid: key.0,
        uid: record.user_id.as_deref().map(str::to_owned),
        ver: record.version,
        exp: record.ttl_epoch_secs(),
        body,
    }
}

fn nonce() -> u64 {
    getrandom::u64().expect("the OS CSPRNG is unavailable")
}

impl TieredStore {
    /// A store over `cache` and `dynamo`.
    pub fn new(cache: SledCache, dynamo: DynamoTier, settings: StoreSettings) -> Self {
        TieredStore {
            inner: Arc::new(Inner {
                cache,
                dynamo,
                settings,
                misses: SingleFlight::default(),
                epochs: Epochs::default(),
                global: epochs::GlobalEpoch::default(),
                revalidate_after_ms: AtomicU64::new(settings.revalidate_after_ms),
                coverage: lease::Coverage::default(),
                revoking: RevokingSet::default(),
                unknown: UnknownKeys::new(settings.negative_ttl_ms, settings.negative_max_entries),
                homes: std::sync::OnceLock::new(),
                background: background::Background::default(),
                #[cfg(feature = "test-support")]
                holds: hold::Holds::default(),
            }),
        }
    }

    /// The sled tier (for audits, metrics and tests).
    pub fn cache(&self) -> &SledCache {
        &self.inner.cache
    }

    /// The DynamoDB tier (for audits, metrics and tests).
    pub fn dynamo(&self) -> &DynamoTier {
        &self.inner.dynamo
    }

    /// The settings.
    pub fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    /// `record` encoded in the configured format.
    fn encode(&self, record: &SessionRecord) -> Vec<u8> {
        codec::encode_as(record, self.inner.settings.record_format)
    }
}

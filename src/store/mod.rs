//! [`TieredStore`]: the coordinator. It decides the order of writes across the
//! sled tier ([`SledCache`]) and the DynamoDB tier ([`DynamoTier`]). DynamoDB
//! is the truth; sled may hold less, never more for longer than the lease.
//!
//! # Operations: order of writes, and what each failure leaves behind
//!
//! Each group of operations is one file, in the order of this table; each
//! file is an `impl TieredStore` block with its private helpers:
//!
//! - `load.rs`: `load`, `load_key`, `lookup_cached` (the sled half of a
//!   load), the lease revalidation, and the single DynamoDB read shared by
//!   concurrent misses.
//! - `write.rs`: `create`, `update`.
//! - `rotate.rs`: `regenerate`.
//! - `revoke.rs`: `destroy`, `destroy_key`, `revoke_user` (and the listing
//!   and revocation of one user's sessions), `drain_outbox`, and `maintain`,
//!   the background outbox replay and cache sweeps.
//! - `remote.rs`: what other nodes did, as the stream reports it
//!   (`apply_removed`, `apply_version_raised`), and the lease.
//! - `epochs.rs`: users' revocation epochs as this node knows them (read by
//!   `load`, `create` and `regenerate`, raised by `revoke_user` and the
//!   stream). Its only write is `load`'s step 4: an outlawed session is
//!   destroyed as by `destroy`.
//!
//! This file holds the public types and the shared state; `epoch_map.rs`,
//! `single_flight.rs`, `revoking.rs` and `unknown.rs` (the negative cache)
//! hold the parts of that state that take a lock, each behind a narrow API.
//!
//! | file | operation | steps, in order | a failure at step N leaves |
//! |---|---|---|---|
//! | `load.rs` | `load` | 1. sled get; a hit within the lease is decoded, expiry-checked, checked against the user's revocation epoch this node knows (no I/O), served. 2. on a miss: if tombstoned, `None` without asking DynamoDB; if DynamoDB had no item for the key less than `negative_ttl_ms` ago (the in-memory negative cache, `unknown.rs`), `None` without asking again. 3. one consistent DynamoDB get per key at a time (concurrent misses share it); no item → remembered in the negative cache; a hit past the lease reads only `ver`. 4. a bound record is checked against its user's epoch (memory within the lease, else one consistent read); an outlawed one is destroyed. 5. fill sled, unless a tombstone or a newer version is there. 6. if `last_seen_at` is older than the touch interval, a conditional write of the next version | 1: cache error, nothing written. A key DynamoDB does not have (an unknown or never-issued token) costs at most one read per `negative_ttl_ms` and no write in either tier. 3: unreachable → `Err` (503), nothing written; past the lease with `OnUnreachable::ServeCached`, the cached copy is served up to `max_stale_ms`. 5: not served if a tombstone appeared meanwhile. 6: unreachable → served as loaded (touch is best effort); version conflict → the record is re-read |
//! | `write.rs` | `create` | 1. with a user binding: a consistent read of the user's epoch. 2. DynamoDB put conditional on `attribute_not_exists` (bound: in one transaction with a check that the epoch is unchanged; a login without a prior session is this one write). 3. drop the key from the negative cache, fill sled | 1–2: `Err`, no token issued; refused → nothing written anywhere; no answer → the put may have happened: a bound session's key is tombstoned and queued in the outbox, which deletes it once DynamoDB answers (an unbound one is listed nowhere and expires by TTL); an epoch that moved meanwhile → read it again and retry. 3: the session exists in DynamoDB and is loaded on first use |
//! | `write.rs` | `update` | 1. refuse if tombstoned here. 2. DynamoDB put conditional on the caller's `version`. 3. fill sled | 2: conflict (changed or deleted elsewhere) → `Conflict` and the stale cached copy is evicted; unreachable → `Err`, nothing written. 3: as for `create` |
//! | `rotate.rs` | `regenerate` | 1. the bound user's epoch as this node knows it (within the lease; else the old session's if the same user's, else 0), no I/O; refuse to carry a login the epoch outlawed. 2. durable tombstone + outbox entry for the old key (one sled transaction, flushed); the key is marked in flight so the outbox replay leaves it alone. 3. ONE `TransactWriteItems`: delete old (conditional on its version), put new (`attribute_not_exists`), check the user's epoch. 4. ack the outbox, fill sled with the new record | 1–2: `Err`, nothing changed. 3: the epoch check failed on a guessed epoch → nothing was written: read the epoch (consistent), go back to 1 once; another conflict → the transaction wrote nothing; the tombstone and outbox entry this call wrote are lifted, `Conflict` returned; unreachable or unknown outcome → fail closed: the old token stays dead here and the outbox deletes it from DynamoDB once reachable, and the new key too (the transaction may have happened unanswered); no new token is issued |
//! | `revoke.rs` | `destroy` | 1. if not cached, confirm existence in DynamoDB (so unknown tokens write nothing). 2. durable tombstone + outbox entry (one transaction, flushed), marked in flight. 3. unconditional DynamoDB delete. 4. ack the outbox | 1: unreachable → proceed anyway (fail closed). 2: `Err`, nothing changed. 3: the token is already dead here; the outbox retries the delete until DynamoDB confirms (`Destroyed::Pending`) |
//! | `revoke.rs` | `revoke_user` | 1. advance the user's epoch in DynamoDB (from then on every session bound under an older epoch is refused at load, and concurrent binds fail their epoch check). 2. `destroy` each session the GSI lists | 1: `Err`, nothing changed. 2: sessions not yet destroyed are still outlawed by the epoch |
//! | `revoke.rs` | `drain_outbox` | for each pending revocation not in flight: DynamoDB delete, then ack | the entry stays and is retried with backoff |
//! | `remote.rs` | `apply_removed` / `apply_version_raised` (stream) | tombstone (no outbox: DynamoDB already deleted it) / evict a stale copy or note a user's new epoch | the follower redelivers the batch; applying twice is harmless |
//!
//! A crash between any two steps is covered by the same column: sled writes
//! before DynamoDB calls are flushed, so a revocation is never forgotten, and
//! nothing is issued to a client before DynamoDB has it.
//!
//! The durable tombstone + outbox entry that `regenerate`, `destroy` and a
//! `create` without an answer write before DynamoDB is touched is one
//! method, `write_revocation` (`revoke.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use edge_session_sync::{DynamoError, DynamoTier, Item};

use crate::cache::{CacheError, SledCache};
use crate::codec::DecodeError;
use crate::record::{Policy, SessionRecord, UnixMillis};
use crate::token::StorageKey;
use epoch_map::Epochs;
use revoking::RevokingSet;
use single_flight::SingleFlight;
use unknown::UnknownKeys;

// The groups of operations, in the order of the table above.
mod load;

mod write;

mod rotate;

mod revoke;

mod remote;

mod epochs;

// The parts of the shared state that take a lock.
mod epoch_map;
mod revoking;
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
    pub fn data(data: BTreeMap<String, String>) -> Self {
        SessionChange {
            data: Some(data),
            ..SessionChange::default()
        }
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
    /// It was already revoked on this node; nothing was written.
    AlreadyRevoked,
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
    /// A key DynamoDB had no item for is answered "unknown" from memory for
    /// this long (0: always ask). `unknown.rs` says why this never hides a
    /// session that exists.
    pub negative_ttl_ms: u64,
    /// At most this many keys are remembered as unknown (oldest dropped
    /// first).
    pub negative_max_entries: usize,
}

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
            negative_ttl_ms: 1_000,
            negative_max_entries: 10_000,
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
    /// The lease in force (ms): `settings.revalidate_after_ms`, shortened
    /// while the stream follower lags (see [`TieredStore::set_lease`]).
    lease_ms: AtomicU64,
    /// Keys a live request is revoking: the outbox replay skips them.
    revoking: RevokingSet,
    /// Keys DynamoDB recently had no item for (the negative cache).
    unknown: UnknownKeys,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("table", &self.inner.dynamo.table())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

fn item_of(key: &StorageKey, record: &SessionRecord, body: Vec<u8>) -> Item {
    Item {
        sid: key.0,
        uid: record.user_id.clone(),
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
                lease_ms: AtomicU64::new(settings.revalidate_after_ms),
                revoking: RevokingSet::default(),
                unknown: UnknownKeys::new(settings.negative_ttl_ms, settings.negative_max_entries),
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
}

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
//! - `revocation.rs`: `destroy`, `destroy_key`, `revoke_user`,
//!   `revoke_user_session`, `evict_past_limit` (a login's eviction of the
//!   user's oldest sessions), and the durable tombstone + outbox entry each
//!   writes first.
//! - `listing.rs`: the paginated listing of one user's sessions.
//! - `upkeep.rs`: `drain_outbox`, `drain_unverified`, and `maintain`, the
//!   background replay and cache sweeps.
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
//! This file holds the public types and the shared state; `known_epochs.rs`,
//! `single_flight.rs`, `in_flight.rs` and `unknown.rs` (the negative cache)
//! hold the parts of that state that take a lock, each behind a narrow API.
//!
//! | file | operation | steps, in order | a failure at step N leaves |
//! |---|---|---|---|
//! | `load.rs` | `load` | 1. sled get; a hit within the lease (at most the short lease for a record confirmed before the stream follower's position, `lease.rs`) is decoded, expiry-checked (a copy idle by its own `last_seen_at` but within its absolute expiry is re-read first, since another node may have touched it), checked against the user's revocation epoch this node knows (no I/O), served. 2. on a miss: if tombstoned, `None` without asking DynamoDB; if DynamoDB had no item for the key less than `negative_ttl_ms` ago (the in-memory negative cache, `unknown.rs`), `None` without asking again. 3. one consistent DynamoDB get per key at a time (concurrent misses share it); no item, and the token names another region as its home (`homes.rs`) → one read of the home replica, bounded; no item there either → remembered in the negative cache; a hit past the lease reads only `ver`. 4. a bound record is checked against its user's epoch (memory within the lease, else one consistent read); an outlawed one is destroyed. 5. fill sled, unless a tombstone or a newer version is there. 6. if `last_seen_at` is older than the touch interval, one conditional put of the next version marked as a touch (in the session's home replica when that is another region's; refused on an item stamped with its end reason): no journal entry, and no change feed carries it to other nodes (a copy there loses on `ver` at its next write or lease check) | 1: cache error, nothing written. A key DynamoDB does not have (an unknown or never-issued token) costs at most one read per `negative_ttl_ms` and no write in either tier. 3: unreachable → `Err` (503), nothing written; past the lease with `OnUnreachable::ServeCached`, the cached copy is served up to `max_stale_ms`. 5: not served if a tombstone appeared meanwhile. 6: unreachable → served as loaded (touch is best effort); version conflict → the record is re-read |
//! | `write.rs` | `create` | 0. refuse a record encoded over `max_record_bytes` (`RecordTooLarge`, nothing written). 1. with a user binding: a consistent read of the user's epoch. 2. DynamoDB put conditional on `attribute_not_exists` (bound: in one transaction with an update of the epoch item, conditional on the epoch unchanged and the user's session count under the cap, that counts the session; at the cap, written again without it). 3. fill sled. 4. bound, at the cap: `evict_past_limit`, in a task of its own (the answer does not wait for it) | 1–2: `Err`, no token issued; refused → nothing written anywhere; no answer → the put may have happened: a bound session's key is tombstoned and queued in the outbox, which deletes it once DynamoDB answers (an unbound one is listed nowhere and expires by TTL); an epoch that moved meanwhile → read it again and retry. 3: the session exists in DynamoDB and is loaded on first use. 4: never fails the call (see `evict_past_limit`) |
//! | `write.rs` | `update` | 0. as for `create`. 1. refuse if tombstoned here. 2. DynamoDB put conditional on the caller's `version`. 3. fill sled | 2: conflict (changed or deleted elsewhere) → `Conflict` and the stale cached copy is evicted; unreachable → `Err`, nothing written. 3: as for `create` |
//! | `rotate.rs` | `regenerate` | 1. the bound user's epoch as this node knows it (within the lease; else the old session's if the same user's, else 0), no I/O; refuse to carry a login the epoch outlawed. 2. *provisional* tombstone + outbox entry for the old key (one sled transaction; refused if a final or unverified tombstone is there: `OldChanged`); the key is marked in flight so the outbox replay leaves it alone. 3. ONE `TransactWriteItems`: delete old (conditional on its version), put new (`attribute_not_exists`), check the user's epoch; step 2's flush runs meanwhile, and nothing is issued before both are done. 4. ack the outbox (the tombstone becomes final), fill sled with the new record. 5. a sign-in (a binding given): `evict_past_limit`, in a task of its own | 1–2: `Err`, nothing changed. 3: the epoch check failed on a guessed epoch → nothing was written: read the epoch (consistent), go back to 1 once; another conflict → the transaction wrote nothing; the provisional tombstone and outbox entry this call wrote are lifted (a destroy that landed meanwhile wrote its own final ones, which stay), `Conflict` returned; unreachable or unknown outcome → fail closed: the old token stays dead here and the outbox deletes it from DynamoDB once reachable (its ack makes the tombstone final), and the new key too (the transaction may have happened unanswered); no new token is issued. the flush fails after a commit → no token issued, the new key's delete queued, `Err`; a crash after the commit and before the flush → the old item is gone from DynamoDB, and the restarted node refuses its token once its stream or lease says so (docs/design.md, tier rule 2). 5: never fails the call (see `evict_past_limit`) |
//! | `revocation.rs` | `destroy` | 0. a final tombstone → `AlreadyRevoked`, nothing written; a provisional one (a regenerate in flight) → known, go to 2. 1. if not cached, confirm existence in DynamoDB (so unknown tokens write nothing), unless DynamoDB had no item for the key less than `negative_ttl_ms` ago (the negative cache, as for `load`; a miss is remembered there). 2. durable final tombstone + outbox entry (one transaction, flushed, replacing a provisional or unverified tombstone), marked in flight. 3. with session events on, the end reason written on the item (`why`; the first stays); then the DynamoDB delete, unconditional but for existence. 4. ack the outbox. 5. a token homed in another region: the same reason and delete in its home replica (bounded), and a final tombstone here if this replica did not have it yet | 1: not there → `NotFound`, nothing written; unreachable → the bounded unverified queue (unverified tombstone + queue entry, flushed; no outbox entry), `Unverified`; the queue at `cache.max_unverified_revocations` → `Err` (503), nothing written. 2: `Err`, nothing changed. 3: the token is already dead here; the outbox retries the delete until DynamoDB confirms (`Destroyed::Pending`) |
//! | `revocation.rs` | `evict_past_limit` (after a login's DynamoDB write succeeded, when its transaction found the user's session count at the cap) | 0. one consistent read of the count. 1. one GSI listing of the user's sessions (bounded: the limit plus logins racing this one). 2. the live ones other than the new session, oldest `created_at` first: `destroy` each past `max_per_user - 1`. 3. set the count to the sessions left, conditional on the count read in 0 | nothing here fails the login: 1: logged, counted (`edge_session_evictions_total{result="failed"}`), nothing evicted: the user keeps one session over the limit until the next login. 2: each as `destroy` (its delete waits in the outbox, `result="pending"`); another login racing this one, or the GSI lagging, can leave the user briefly over the limit or one under it |
//! | `revocation.rs` | `revoke_user` | 1. advance the user's epoch in DynamoDB (from then on every session bound under an older epoch is refused at load, and concurrent binds fail their epoch check). 2. `destroy` each session the GSI lists. 3. in each other region's replica (`homes.rs`): raise the epoch to at least the new one, and delete (reason first) each session its GSI lists | 1: `Err`, nothing changed. 2: sessions not yet destroyed are still outlawed by the epoch. 3: `Err` (the call is safe to repeat); what replicated is outlawed there by the epoch's replication |
//! | `upkeep.rs` | `drain_outbox` | for each pending revocation not in flight: the end reason `deferred` (unless one is there), DynamoDB delete, then ack | the entry stays and is retried with backoff |
//! | `upkeep.rs` | `drain_unverified` | for each queued unverified revocation: DynamoDB delete; it removed an item → the tombstone becomes final; it found nothing → the entry and its tombstone are dropped (counted) | the entry stays and is retried with backoff |
//! | `remote.rs` | `apply_removed` / `apply_version_raised` (stream) | tombstone (no outbox: DynamoDB already deleted it) / evict a stale copy or note a user's new epoch | the follower redelivers the batch; applying twice is harmless |
//!
//! A crash between any two steps is covered by the same column: sled writes
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
pub use homes::Homes;
use in_flight::RevokingSet;
use known_epochs::Epochs;
use single_flight::SingleFlight;
use unknown::UnknownKeys;

// The groups of operations, in the order of the table above.
mod load;

mod write;

mod rotate;

mod listing;
mod revocation;
mod upkeep;

mod lease;
mod remote;

mod epochs;

// The parts of the shared state that take a lock.
mod homes;
mod in_flight;
mod known_epochs;
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
    /// while the stream follower lags (see [`TieredStore::set_lease`]).
    lease_ms: AtomicU64,
    /// Which cached records the follower's position covers (records
    /// confirmed before it get the short lease; see `lease.rs`).
    coverage: lease::Coverage,
    /// Keys a live request is revoking: the outbox replay skips them.
    revoking: RevokingSet,
    /// Keys DynamoDB recently had no item for (the negative cache).
    unknown: UnknownKeys,
    /// The other regions' replicas, when this is one region of several.
    homes: std::sync::OnceLock<homes::Homes>,
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
                lease_ms: AtomicU64::new(settings.revalidate_after_ms),
                coverage: lease::Coverage::default(),
                revoking: RevokingSet::default(),
                unknown: UnknownKeys::new(settings.negative_ttl_ms, settings.negative_max_entries),
                homes: std::sync::OnceLock::new(),
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

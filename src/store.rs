//! [`TieredStore`]: the coordinator. It decides the order of writes across the
//! sled tier ([`SledCache`]) and the DynamoDB tier ([`DynamoTier`]). DynamoDB
//! is the truth; sled may hold less, never more for longer than the lease.
//!
//! # Operations: order of writes, and what each failure leaves behind
//!
//! | operation | steps, in order | a failure at step N leaves |
//! |---|---|---|
//! | `load` | 1. sled get; a hit within the lease is decoded, expiry-checked, checked against the user's revocation epoch this node knows (no I/O), served. 2. on a miss: if tombstoned, `None` without asking DynamoDB. 3. one consistent DynamoDB get per key at a time (concurrent misses share it); a hit past the lease reads only `ver`. 4. a bound record is checked against its user's epoch (memory within the lease, else one consistent read); an outlawed one is destroyed. 5. fill sled, unless a tombstone or a newer version is there. 6. if `last_seen_at` is older than the touch interval, a conditional write of the next version | 1: cache error, nothing written. 3: unreachable → `Err` (503), nothing written; past the lease with `OnUnreachable::ServeCached`, the cached copy is served up to `max_stale_ms`. 5: not served if a tombstone appeared meanwhile. 6: unreachable → served as loaded (touch is best effort); version conflict → the record is re-read |
//! | `create` | 1. with a user binding: a consistent read of the user's epoch. 2. DynamoDB put conditional on `attribute_not_exists` (bound: in one transaction with a check that the epoch is unchanged). 3. fill sled | 1–2: `Err`, no token issued; refused → nothing written anywhere; no answer → the put may have happened: a bound session's key is tombstoned and queued in the outbox, which deletes it once DynamoDB answers (an unbound one is listed nowhere and expires by TTL); an epoch that moved meanwhile → read it again and retry. 3: the session exists in DynamoDB and is loaded on first use |
//! | `update` | 1. refuse if tombstoned here. 2. DynamoDB put conditional on the caller's `version`. 3. fill sled | 2: conflict (changed or deleted elsewhere) → `Conflict` and the stale cached copy is evicted; unreachable → `Err`, nothing written. 3: as for `create` |
//! | `regenerate` | 1. the bound user's epoch as this node knows it (within the lease; else the old session's if the same user's, else 0), no I/O; refuse to carry a login the epoch outlawed. 2. durable tombstone + outbox entry for the old key (one sled transaction, flushed); the key is marked in flight so the outbox replay leaves it alone. 3. ONE `TransactWriteItems`: delete old (conditional on its version), put new (`attribute_not_exists`), check the user's epoch. 4. ack the outbox, fill sled with the new record | 1–2: `Err`, nothing changed. 3: the epoch check failed on a guessed epoch → nothing was written: read the epoch (consistent), go back to 1 once; another conflict → the transaction wrote nothing; the tombstone and outbox entry this call wrote are lifted, `Conflict` returned; unreachable or unknown outcome → fail closed: the old token stays dead here and the outbox deletes it from DynamoDB once reachable, and the new key too (the transaction may have happened unanswered); no new token is issued |
//! | `destroy` | 1. if not cached, confirm existence in DynamoDB (so unknown tokens write nothing). 2. durable tombstone + outbox entry (one transaction, flushed), marked in flight. 3. unconditional DynamoDB delete. 4. ack the outbox | 1: unreachable → proceed anyway (fail closed). 2: `Err`, nothing changed. 3: the token is already dead here; the outbox retries the delete until DynamoDB confirms (`Destroyed::Pending`) |
//! | `revoke_user` | 1. advance the user's epoch in DynamoDB (from then on every session bound under an older epoch is refused at load, and concurrent binds fail their epoch check). 2. `destroy` each session the GSI lists | 1: `Err`, nothing changed. 2: sessions not yet destroyed are still outlawed by the epoch |
//! | `drain_outbox` | for each pending revocation not in flight: DynamoDB delete, then ack | the entry stays and is retried with backoff |
//! | `apply_removed` / `apply_version_raised` (stream) | tombstone (no outbox: DynamoDB already deleted it) / evict a stale copy or note a user's new epoch | the follower redelivers the batch; applying twice is harmless |
//!
//! A crash between any two steps is covered by the same column: sled writes
//! before DynamoDB calls are flushed, so a revocation is never forgotten, and
//! nothing is issued to a client before DynamoDB has it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_session_sync::{Conflict, DynamoTier, EpochGuard, Item, RotateConflict, StoreError};
use tokio::sync::OnceCell;

use crate::cache::{CacheError, FillOutcome, SledCache, Tombstone};
use crate::codec::{self, DecodeError};
use crate::record::{Policy, SessionRecord, UnixMillis};
use crate::token::{SessionToken, StorageKey};

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
    Dynamo(#[from] StoreError),
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
        }
    }
}

type Fetch = Result<Option<Item>, StoreError>;

/// The two-tier session store. Cheap to clone.
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Inner>,
}

struct Inner {
    cache: SledCache,
    dynamo: DynamoTier,
    settings: StoreSettings,
    inflight: Mutex<HashMap<StorageKey, Arc<OnceCell<Fetch>>>>,
    epochs: Mutex<Epochs>,
    /// The lease in force (ms): `settings.revalidate_after_ms`, shortened
    /// while the stream follower lags (see [`TieredStore::set_lease`]).
    lease_ms: AtomicU64,
    /// Keys whose revocation a request is carrying out right now: the
    /// outbox replay leaves their entries alone (replaying a regenerate's
    /// delete before its transaction runs would cancel the transaction).
    revoking: Mutex<HashSet<StorageKey>>,
}

/// Marks a key as being revoked by a live request until dropped.
struct Revoking<'a> {
    set: &'a Mutex<HashSet<StorageKey>>,
    key: StorageKey,
}

impl<'a> Revoking<'a> {
    fn new(set: &'a Mutex<HashSet<StorageKey>>, key: StorageKey) -> Self {
        set.lock()
            .expect("revoking set poisoned by a panic")
            .insert(key);
        Revoking { set, key }
    }
}

impl Drop for Revoking<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

/// Users' revocation epochs as this node last read them.
#[derive(Default)]
struct Epochs {
    /// user → (epoch, when it was read).
    by_user: HashMap<String, (u64, UnixMillis)>,
    /// epoch item key → user (to apply stream events about epoch items).
    by_key: HashMap<StorageKey, String>,
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
                inflight: Mutex::new(HashMap::new()),
                epochs: Mutex::default(),
                lease_ms: AtomicU64::new(settings.revalidate_after_ms),
                revoking: Mutex::new(HashSet::new()),
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

    /// The lease in force, in milliseconds: a cached record confirmed longer
    /// ago than this is re-checked against DynamoDB before it is served.
    pub fn lease_ms(&self) -> u64 {
        self.inner.lease_ms.load(Ordering::Relaxed)
    }

    /// Change the lease (the node shortens it while the stream follower
    /// lags, and restores it when the follower catches up).
    pub fn set_lease(&self, ms: u64) {
        self.inner.lease_ms.store(ms, Ordering::Relaxed);
        metrics::gauge!("edge_session_lease_seconds").set(ms as f64 / 1000.0);
    }

    /// A stream event says the item under `key` was deleted (logout,
    /// regenerate or revoke on another node, or TTL): revoke it here. A
    /// session this node caches is tombstoned until its absolute expiry; any
    /// other key for two leases, which covers a load that read the item just
    /// before the delete and fills after it. Not flushed: call
    /// [`SledCache::flush`] once per batch.
    pub fn apply_removed(&self, key: StorageKey, now: UnixMillis) -> Result<(), Error> {
        let cache = &self.inner.cache;
        let keep_until = match cache.get(&key)? {
            Some(hit) => codec::decode(hit.bytes()).map_or(
                now.saturating_add(self.inner.settings.policy.absolute_timeout_ms),
                |r| r.absolute_expiry.max(now),
            ),
            None => now.saturating_add(2 * self.lease_ms()),
        };
        cache.revoke_locally(
            &key,
            Tombstone {
                keep_until,
                nonce: nonce(),
            },
        )?;
        Ok(())
    }

    /// The live session for `token`, or `None` (unknown, expired, revoked).
    /// Never writes anything for a token the server did not issue.
    pub async fn load(
        &self,
        token: &SessionToken,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        self.load_key(token.storage_key(), now).await
    }

    /// [`load`](Self::load) by storage key.
    pub async fn load_key(
        &self,
        key: StorageKey,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        let lookup = self.lookup_cached(&key, now)?;
        let result = match &lookup {
            CacheLookup::Fresh(_) => 0,
            CacheLookup::Stale { .. } => 1,
            CacheLookup::Revoked => 2,
            CacheLookup::Miss => 3,
        };
        // Handles registered once per thread (after the recorder is installed).
        thread_local! {
            static LOOKUPS: [metrics::Counter; 4] = ["hit", "stale", "revoked", "miss"]
                .map(|r| metrics::counter!("edge_session_cache_lookups_total", "result" => r));
        }
        LOOKUPS.with(|c| c[result].increment(1));
        match lookup {
            CacheLookup::Fresh(record) => {
                // Hot path: no DynamoDB future is built at all.
                if !record.is_live(now) {
                    return Ok(None);
                }
                if !record.needs_touch(&self.inner.settings.policy, now) && !self.outlawed(&record)
                {
                    return Ok(Some(Session { key, record }));
                }
                Box::pin(self.serve(key, record, now)).await
            }
            CacheLookup::Revoked => Ok(None),
            CacheLookup::Stale { record, fetched_at } => {
                Box::pin(self.revalidate(key, record, fetched_at, now)).await
            }
            CacheLookup::Miss => {
                Box::pin(async move {
                    match self.fetch(key).await? {
                        None => Ok(None),
                        Some(item) => self.accept(key, item, now).await,
                    }
                })
                .await
            }
        }
    }

    /// The sled half of a load: no I/O beyond sled, no `.await`. This is the
    /// whole hot path of a cache hit (the `lookup/cache_hit` benchmark).
    pub fn lookup_cached(&self, key: &StorageKey, now: UnixMillis) -> Result<CacheLookup, Error> {
        let cache = &self.inner.cache;
        if let Some(hit) = cache.get(key)? {
            return match codec::decode(hit.bytes()) {
                Ok(record) if now.saturating_sub(hit.fetched_at) < self.lease_ms() => {
                    Ok(CacheLookup::Fresh(record))
                }
                Ok(record) => Ok(CacheLookup::Stale {
                    record,
                    fetched_at: hit.fetched_at,
                }),
                Err(err) => {
                    tracing::warn!(%err, "evicting an undecodable cached record");
                    cache.evict(key)?;
                    Ok(CacheLookup::Miss)
                }
            };
        }
        // A key is never cached and tombstoned at once (see `cache`), so the
        // tombstone lookup is only paid on a miss.
        if cache.is_tombstoned(key)? {
            return Ok(CacheLookup::Revoked);
        }
        Ok(CacheLookup::Miss)
    }

    /// A cached record past its lease: one consistent read of `ver`. Same
    /// version: confirm and serve. Otherwise re-read the whole item.
    async fn revalidate(
        &self,
        key: StorageKey,
        record: SessionRecord,
        fetched_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        let cache = &self.inner.cache;
        metrics::counter!("edge_session_lease_revalidations_total").increment(1);
        let version = match self.inner.dynamo.get_version(key.as_bytes()).await {
            Ok(version) => version,
            Err(err) if err.is_unavailable() => {
                return match self.inner.settings.on_unreachable {
                    // Past the lease and DynamoDB cannot confirm it: the
                    // operator chose to serve what this node has, up to a bound.
                    OnUnreachable::ServeCached { max_stale_ms }
                        if now.saturating_sub(fetched_at) <= max_stale_ms =>
                    {
                        metrics::counter!("edge_session_stale_serves_total").increment(1);
                        if !record.is_live(now) || self.outlawed(&record) {
                            return Ok(None);
                        }
                        Ok(Some(Session { key, record }))
                    }
                    _ => Err(err.into()),
                };
            }
            Err(err) => return Err(err.into()),
        };
        match version {
            Some(ver) if ver == record.version => {
                if !self.epoch_allows(key, &record, now).await? {
                    return Ok(None);
                }
                let bytes = codec::encode(&record);
                match cache.fill(&key, now, ver, &bytes)? {
                    FillOutcome::Tombstoned => Ok(None),
                    FillOutcome::Filled | FillOutcome::Superseded => {
                        self.serve(key, record, now).await
                    }
                }
            }
            Some(_) => match self.fetch(key).await? {
                None => Ok(None),
                Some(item) => self.accept(key, item, now).await,
            },
            None => {
                cache.evict(&key)?;
                Ok(None)
            }
        }
    }

    /// A user's current revocation epoch: from memory if read within the
    /// lease (unless `fresh`), else one consistent read.
    async fn user_epoch(&self, user_id: &str, now: UnixMillis, fresh: bool) -> Result<u64, Error> {
        if !fresh {
            let epochs = self
                .inner
                .epochs
                .lock()
                .expect("epoch map poisoned by a panic");
            if let Some((epoch, read_at)) = epochs.by_user.get(user_id) {
                if now.saturating_sub(*read_at) < self.lease_ms() {
                    return Ok(*epoch);
                }
            }
        }
        let epoch = self
            .inner
            .dynamo
            .user_epoch(StorageKey::user_epoch(user_id).as_bytes())
            .await?;
        self.note_epoch(user_id, epoch, now);
        Ok(epoch)
    }

    /// `user_id`'s epoch as this node knows it (read within the lease).
    fn known_epoch(&self, user_id: &str, now: UnixMillis) -> Option<u64> {
        let epochs = self
            .inner
            .epochs
            .lock()
            .expect("epoch map poisoned by a panic");
        epochs
            .by_user
            .get(user_id)
            .filter(|(_, read_at)| now.saturating_sub(*read_at) < self.lease_ms())
            .map(|(epoch, _)| *epoch)
    }

    /// Remember `user_id`'s epoch (epochs only grow).
    fn note_epoch(&self, user_id: &str, epoch: u64, now: UnixMillis) {
        let mut epochs = self
            .inner
            .epochs
            .lock()
            .expect("epoch map poisoned by a panic");
        let entry = epochs
            .by_user
            .entry(user_id.to_owned())
            .or_insert((epoch, now));
        *entry = (entry.0.max(epoch), now);
        epochs
            .by_key
            .entry(StorageKey::user_epoch(user_id))
            .or_insert_with(|| user_id.to_owned());
    }

    /// Whether an epoch this node already knows outlaws `record` (no I/O).
    fn outlawed(&self, record: &SessionRecord) -> bool {
        let Some(user) = &record.user_id else {
            return false;
        };
        let epochs = self
            .inner
            .epochs
            .lock()
            .expect("epoch map poisoned by a panic");
        epochs
            .by_user
            .get(user)
            .is_some_and(|(epoch, _)| *epoch > record.user_epoch)
    }

    /// Check a bound record against its user's epoch (reading it if this
    /// node's copy is older than the lease). An outlawed session is destroyed.
    async fn epoch_allows(
        &self,
        key: StorageKey,
        record: &SessionRecord,
        now: UnixMillis,
    ) -> Result<bool, Error> {
        let Some(user) = &record.user_id else {
            return Ok(true);
        };
        if self.user_epoch(user, now, false).await? <= record.user_epoch {
            return Ok(true);
        }
        // Logged out everywhere, but missed by the listing (bound
        // concurrently, or the GSI lagged): finish the job.
        self.destroy_key(key, now).await?;
        Ok(false)
    }

    /// A stream event says an item's `ver` rose to `new_ver` (`None`: the
    /// stream carries no images): if the item is a user's epoch, remember it;
    /// if it is a cached session, drop the stale copy. Returns whether
    /// anything changed here.
    pub fn apply_version_raised(
        &self,
        key: StorageKey,
        new_ver: Option<u64>,
        now: UnixMillis,
    ) -> Result<bool, Error> {
        let user = {
            let epochs = self
                .inner
                .epochs
                .lock()
                .expect("epoch map poisoned by a panic");
            epochs.by_key.get(&key).cloned()
        };
        if let Some(user) = user {
            match new_ver {
                Some(epoch) => self.note_epoch(&user, epoch, now),
                // Unknown new epoch: forget ours, so the next check reads it.
                None => {
                    self.inner
                        .epochs
                        .lock()
                        .expect("epoch map poisoned by a panic")
                        .by_user
                        .remove(&user);
                }
            }
            return Ok(true);
        }
        match self.inner.cache.get(&key)? {
            Some(hit) if new_ver.is_none_or(|v| hit.version < v) => {
                self.inner.cache.evict(&key)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A record read from DynamoDB: check it, fill the cache, serve it.
    async fn accept(
        &self,
        key: StorageKey,
        item: Item,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        let record = codec::decode(&item.body)?;
        if !record.is_live(now) {
            self.inner.cache.evict(&key)?;
            return Ok(None);
        }
        if !self.epoch_allows(key, &record, now).await? {
            return Ok(None);
        }
        match self.inner.cache.fill(&key, now, item.ver, &item.body)? {
            FillOutcome::Tombstoned => Ok(None),
            FillOutcome::Filled | FillOutcome::Superseded => self.serve(key, record, now).await,
        }
    }

    /// Expiry check and coarse touch of a record about to be served.
    async fn serve(
        &self,
        key: StorageKey,
        record: SessionRecord,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        if !record.is_live(now) {
            return Ok(None);
        }
        if self.outlawed(&record) {
            self.inner.cache.evict(&key)?;
            return Ok(None);
        }
        if !record.needs_touch(&self.inner.settings.policy, now) {
            return Ok(Some(Session { key, record }));
        }
        let mut next = record.next_version();
        next.last_seen_at = now;
        let body = codec::encode(&next);
        match self
            .inner
            .dynamo
            .update(&item_of(&key, &next, body.clone()), record.version)
            .await
        {
            Ok(Ok(())) => match self.inner.cache.fill(&key, now, next.version, &body)? {
                FillOutcome::Tombstoned => Ok(None),
                FillOutcome::Filled | FillOutcome::Superseded => {
                    Ok(Some(Session { key, record: next }))
                }
            },
            Ok(Err(Conflict)) => {
                // Changed or deleted elsewhere: the cached copy is stale.
                self.inner.cache.evict(&key)?;
                match self.inner.dynamo.get(key.as_bytes()).await? {
                    None => Ok(None),
                    Some(item) => {
                        let record = codec::decode(&item.body)?;
                        if !record.is_live(now) {
                            return Ok(None);
                        }
                        match self.inner.cache.fill(&key, now, item.ver, &item.body)? {
                            FillOutcome::Tombstoned => Ok(None),
                            _ => Ok(Some(Session { key, record })),
                        }
                    }
                }
            }
            Err(err) if err.is_unavailable() => {
                tracing::debug!(%err, "touch skipped: DynamoDB unreachable");
                Ok(Some(Session { key, record }))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// One consistent DynamoDB read per key at a time: concurrent misses on
    /// the same key wait for the first one's answer.
    async fn fetch(&self, key: StorageKey) -> Fetch {
        let cell = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .expect("inflight map poisoned by a panic");
            Arc::clone(inflight.entry(key).or_default())
        };
        let result = cell
            .get_or_init(|| async {
                let result = self.inner.dynamo.get(key.as_bytes()).await;
                // Later misses must read afresh, not reuse this answer.
                let mut inflight = self
                    .inner
                    .inflight
                    .lock()
                    .expect("inflight map poisoned by a panic");
                if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    inflight.remove(&key);
                }
                result
            })
            .await;
        result.clone()
    }

    /// A new session, issued only once DynamoDB has it. A session bound to a
    /// user at creation is written in one transaction with a check of the
    /// user's revocation epoch, so a concurrent "log out everywhere" either
    /// outlaws it or happened before it.
    pub async fn create(
        &self,
        spec: NewSession,
        now: UnixMillis,
    ) -> Result<(SessionToken, Session), Error> {
        let mut record = SessionRecord::new(&self.inner.settings.policy, now);
        if let Some(b) = spec.binding {
            record.user_id = Some(b.user_id);
            record.role = b.role;
        }
        record.data = spec.data;
        if let Some(idle) = spec.idle_timeout_ms {
            record.idle_timeout_ms = idle;
        }
        for _ in 0..8 {
            let guard = match &record.user_id {
                Some(uid) => {
                    record.user_epoch = self.user_epoch(uid, now, true).await?;
                    Some(EpochGuard {
                        sid: StorageKey::user_epoch(uid).0,
                        epoch: record.user_epoch,
                    })
                }
                None => None,
            };
            let body = codec::encode(&record);
            let token = SessionToken::generate();
            let key = token.storage_key();
            let item = item_of(&key, &record, body.clone());
            let written = match guard {
                Some(guard) => self
                    .inner
                    .dynamo
                    .create_guarded(&item, guard)
                    .await
                    .map(|r| r.map_err(|_| ())),
                None => self
                    .inner
                    .dynamo
                    .create(&item)
                    .await
                    .map(|r| r.map_err(|_| ())),
            };
            let written = match written {
                Ok(written) => written,
                Err(err) => {
                    // A login's put may have happened unanswered: the
                    // session would sit in its user's listings unissued.
                    if err.is_unavailable() && record.user_id.is_some() {
                        self.queue_unissued(key, &record, now).await;
                    }
                    return Err(err.into());
                }
            };
            // A conflict is a 256-bit collision or an epoch that moved
            // meanwhile: draw again, with the epoch read afresh.
            if written.is_ok() {
                self.inner.cache.fill(&key, now, record.version, &body)?;
                return Ok((token, Session { key, record }));
            }
        }
        Err(Error::Dynamo(StoreError::new_unavailable(
            "create",
            "the user's revocation epoch kept moving",
        )))
    }

    /// Write `change` to `session`, conditional on its version being unchanged
    /// since it was loaded. Refreshes `last_seen_at`. A destroyed session is
    /// never written back. The user binding is not changed here: binding a
    /// user is a privilege change and goes through [`regenerate`](Self::regenerate).
    pub async fn update(
        &self,
        session: &Session,
        change: SessionChange,
        now: UnixMillis,
    ) -> Result<Result<Session, Conflict>, Error> {
        let key = session.key;
        if self.inner.cache.is_tombstoned(&key)? {
            return Ok(Err(Conflict));
        }
        let mut next = session.record.next_version();
        if let Some(data) = change.data {
            next.data = data;
        }
        if let Some(idle) = change.idle_timeout_ms {
            next.idle_timeout_ms = idle;
        }
        next.last_seen_at = now.max(next.last_seen_at);
        let body = codec::encode(&next);
        match self
            .inner
            .dynamo
            .update(&item_of(&key, &next, body.clone()), session.record.version)
            .await?
        {
            Ok(()) => match self.inner.cache.fill(&key, now, next.version, &body)? {
                // Destroyed on this node while the write was in flight: the
                // destroy's DynamoDB delete removes what was just written.
                FillOutcome::Tombstoned => Ok(Err(Conflict)),
                _ => Ok(Ok(Session { key, record: next })),
            },
            Err(Conflict) => {
                self.inner.cache.evict(&key)?;
                Ok(Err(Conflict))
            }
        }
    }

    /// Replace `old` by a new session with a new token (login, privilege
    /// change). `binding` binds a user (`None` keeps the old binding);
    /// `keep_data` carries the application data over. The old token is dead
    /// in both tiers when this returns `Ok(Ok(_))`.
    pub async fn regenerate(
        &self,
        old: &Session,
        binding: Option<UserBinding>,
        keep_data: bool,
        now: UnixMillis,
    ) -> Result<Result<(SessionToken, Session), RotateConflict>, Error> {
        let cache = &self.inner.cache;
        if cache.is_tombstoned(&old.key)? {
            return Ok(Err(RotateConflict::OldChanged));
        }
        let signs_in = binding.is_some();
        let (user, role) = match binding {
            Some(b) => (Some(b.user_id), b.role),
            None => (old.record.user_id.clone(), old.record.role.clone()),
        };
        let rebinds = old.record.user_id.is_some() && old.record.user_id == user;
        // The user's epoch, optimistically: the one this node read within the
        // lease, else the old session's if it is the same user's (epochs only
        // grow), else 0 (most users are never logged out everywhere). The
        // transaction's epoch check refuses a wrong guess without writing;
        // then the epoch is read (consistently) and the rotation tried once
        // more. This saves a DynamoDB read on almost every login.
        let mut epoch = user.as_deref().map(|uid| {
            self.known_epoch(uid, now)
                .unwrap_or(if rebinds { old.record.user_epoch } else { 0 })
        });
        let mut epoch_read = false;
        loop {
            // Rotating a session that was logged out everywhere, without a
            // fresh sign-in, would carry the revoked login over.
            if !signs_in
                && old.record.user_id.is_some()
                && epoch.is_some_and(|e| e > old.record.user_epoch)
            {
                return Ok(Err(RotateConflict::EpochChanged));
            }
            match self
                .rotate_once(old, user.as_deref(), role.as_deref(), epoch, keep_data, now)
                .await?
            {
                Err(RotateConflict::EpochChanged) if !epoch_read => {
                    if let Some(uid) = &user {
                        epoch = Some(self.user_epoch(uid, now, true).await?);
                    }
                    epoch_read = true;
                }
                outcome => return Ok(outcome),
            }
        }
    }

    /// One attempt of [`regenerate`](Self::regenerate) under `epoch`:
    /// revoke the old key here (flushed), then the one DynamoDB transaction.
    async fn rotate_once(
        &self,
        old: &Session,
        user: Option<&str>,
        role: Option<&str>,
        epoch: Option<u64>,
        keep_data: bool,
        now: UnixMillis,
    ) -> Result<Result<(SessionToken, Session), RotateConflict>, Error> {
        let cache = &self.inner.cache;
        let tomb = Tombstone {
            keep_until: old.record.absolute_expiry.max(now),
            nonce: nonce(),
        };
        let _revoking = Revoking::new(&self.inner.revoking, old.key);
        cache.revoke_and_queue(&old.key, tomb, now)?;
        cache.flush().await?;

        let token = SessionToken::generate();
        let key = token.storage_key();
        let mut record = SessionRecord::new(&self.inner.settings.policy, now);
        record.user_id = user.map(str::to_owned);
        record.role = role.map(str::to_owned);
        if keep_data {
            record.data.clone_from(&old.record.data);
        }
        record.user_epoch = epoch.unwrap_or(0);
        let guard = user.map(|uid| EpochGuard {
            sid: StorageKey::user_epoch(uid).0,
            epoch: record.user_epoch,
        });
        let body = codec::encode(&record);
        match self
            .inner
            .dynamo
            .rotate(
                old.key.as_bytes(),
                old.record.version,
                &item_of(&key, &record, body.clone()),
                guard,
            )
            .await
        {
            Ok(Ok(())) => {
                cache.ack(&old.key, tomb.nonce)?;
                cache.fill(&key, now, record.version, &body)?;
                Ok(Ok((token, Session { key, record })))
            }
            Ok(Err(conflict)) => {
                // Nothing was written in DynamoDB: undo this call's revocation
                // (unless another revocation of the key replaced it).
                cache.lift(&old.key, tomb.nonce)?;
                Ok(Err(conflict))
            }
            Err(err) => {
                tracing::warn!(%err, "regenerate failed; the old session stays revoked and its delete is queued");
                if err.is_unavailable() {
                    // The transaction may have happened unanswered.
                    self.queue_unissued(key, &record, now).await;
                }
                Err(err.into())
            }
        }
    }

    /// The write of a new session got no answer, so it may have happened,
    /// and its token will never be issued: queue its delete as a revocation
    /// (tombstone + outbox entry, flushed), so the outbox removes it once
    /// DynamoDB answers and it does not linger in its user's listings.
    async fn queue_unissued(&self, key: StorageKey, record: &SessionRecord, now: UnixMillis) {
        let tomb = Tombstone {
            keep_until: record.absolute_expiry.max(now),
            nonce: nonce(),
        };
        let queued = match self.inner.cache.revoke_and_queue(&key, tomb, now) {
            Ok(()) => self.inner.cache.flush().await,
            Err(err) => Err(err),
        };
        if let Err(err) = queued {
            tracing::warn!(%err, "could not queue the delete of an unissued session");
        }
    }

    /// Revoke the session under `token` in both tiers.
    pub async fn destroy(&self, token: &SessionToken, now: UnixMillis) -> Result<Destroyed, Error> {
        self.destroy_key(token.storage_key(), now).await
    }

    /// [`destroy`](Self::destroy) by storage key (admin revoke, "my sessions").
    pub async fn destroy_key(&self, key: StorageKey, now: UnixMillis) -> Result<Destroyed, Error> {
        let cache = &self.inner.cache;
        if cache.is_tombstoned(&key)? {
            return Ok(Destroyed::AlreadyRevoked);
        }
        let policy_bound = now.saturating_add(self.inner.settings.policy.absolute_timeout_ms);
        let keep_until = match cache.get(&key)? {
            Some(hit) => {
                codec::decode(hit.bytes()).map_or(policy_bound, |r| r.absolute_expiry.max(now))
            }
            None => match self.inner.dynamo.get(key.as_bytes()).await {
                Ok(None) => return Ok(Destroyed::NotFound),
                Ok(Some(item)) => {
                    codec::decode(&item.body).map_or(policy_bound, |r| r.absolute_expiry.max(now))
                }
                // Cannot tell whether it exists: fail closed.
                Err(err) if err.is_unavailable() => policy_bound,
                Err(err) => return Err(err.into()),
            },
        };
        let tomb = Tombstone {
            keep_until,
            nonce: nonce(),
        };
        let _revoking = Revoking::new(&self.inner.revoking, key);
        cache.revoke_and_queue(&key, tomb, now)?;
        cache.flush().await?;
        match self.inner.dynamo.delete(key.as_bytes()).await {
            Ok(_) => {
                cache.ack(&key, tomb.nonce)?;
                Ok(Destroyed::Confirmed)
            }
            Err(err) => {
                tracing::warn!(%err, "revocation queued in the outbox");
                Ok(Destroyed::Pending)
            }
        }
    }

    /// The live sessions bound to `user_id`, oldest first: the GSI listing
    /// (eventually consistent), minus expired records and sessions revoked on
    /// this node.
    pub async fn list_user_sessions(
        &self,
        user_id: &str,
        now: UnixMillis,
    ) -> Result<Vec<Session>, Error> {
        let mut out = Vec::new();
        for item in self.inner.dynamo.list_by_user(user_id).await? {
            let key = StorageKey(item.sid);
            if self.inner.cache.is_tombstoned(&key)? {
                continue;
            }
            let record = match codec::decode(&item.body) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(%err, "skipping an undecodable item in a user listing");
                    continue;
                }
            };
            if record.user_id.as_deref() == Some(user_id) && record.is_live(now) {
                out.push(Session { key, record });
            }
        }
        out.sort_by_key(|s| (s.record.created_at, s.key));
        Ok(out)
    }

    /// Revoke the session under `key` if it is bound to `user_id` (checked
    /// with a consistent read). `false`: no such session of that user.
    pub async fn revoke_user_session(
        &self,
        user_id: &str,
        key: StorageKey,
        now: UnixMillis,
    ) -> Result<bool, Error> {
        match self.inner.dynamo.get(key.as_bytes()).await? {
            Some(item) if item.uid.as_deref() == Some(user_id) => Ok(matches!(
                self.destroy_key(key, now).await?,
                Destroyed::Confirmed | Destroyed::Pending
            )),
            _ => Ok(false),
        }
    }

    /// Revoke every session bound to `user_id` ("log out everywhere").
    /// Returns how many were revoked.
    ///
    /// First the user's revocation epoch is advanced: from then on every
    /// session bound under an older epoch is refused at load (here at once;
    /// on other nodes on their next DynamoDB read, within the lease), and a
    /// session being bound concurrently fails its epoch check and retries
    /// under the new epoch. Then every session the GSI lists is destroyed.
    pub async fn revoke_user(&self, user_id: &str, now: UnixMillis) -> Result<usize, Error> {
        let key = StorageKey::user_epoch(user_id);
        // The epoch item must outlive every session it outlaws.
        let exp = now
            .saturating_add(self.inner.settings.policy.absolute_timeout_ms)
            .div_ceil(1000)
            + 86_400;
        let epoch = self
            .inner
            .dynamo
            .bump_user_epoch(key.as_bytes(), exp)
            .await?;
        self.note_epoch(user_id, epoch, now);
        let mut revoked = 0;
        for item in self.inner.dynamo.list_by_user(user_id).await? {
            if item.uid.as_deref() == Some(user_id)
                && matches!(
                    self.destroy_key(StorageKey(item.sid), now).await?,
                    Destroyed::Confirmed | Destroyed::Pending
                )
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// One pass over the outbox: replay up to `limit` pending deletes. Stops
    /// at the first one DynamoDB does not confirm.
    pub async fn drain_outbox(&self, limit: usize) -> Result<DrainReport, Error> {
        let cache = &self.inner.cache;
        let mut report = DrainReport::default();
        for (key, entry) in cache.pending(limit)? {
            if self
                .inner
                .revoking
                .lock()
                .expect("revoking set poisoned by a panic")
                .contains(&key)
            {
                continue;
            }
            self.inner.dynamo.delete(key.as_bytes()).await?;
            cache.ack(&key, entry.nonce)?;
            report.confirmed += 1;
        }
        report.remaining = cache.outbox_len();
        Ok(report)
    }

    /// Background upkeep until `shutdown` resolves: replay the outbox (with
    /// exponential backoff while DynamoDB is unreachable), and once a minute
    /// sweep expired tombstones and expired cached records (and report how
    /// many records are cached).
    pub async fn maintain(
        self,
        clock: fn() -> UnixMillis,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        const BASE: Duration = Duration::from_millis(250);
        const MAX: Duration = Duration::from_secs(30);
        let mut backoff = BASE;
        let mut last_sweep = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            if self.inner.cache.outbox_len() > 0 {
                match self.drain_outbox(256).await {
                    Ok(_) => backoff = BASE,
                    Err(err) => {
                        backoff = (backoff * 2).min(MAX);
                        tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "outbox replay failed");
                    }
                }
            }
            let now = clock();
            if now.saturating_sub(last_sweep) >= 60_000 {
                last_sweep = now;
                // Whole-tree scans: off the async threads.
                let cache = self.inner.cache.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    let tombstones = cache.sweep_tombstones(now)?;
                    let sessions = cache.sweep_expired_sessions(|bytes| {
                        codec::decode(bytes).map_or(true, |r| !r.is_live(now))
                    })?;
                    Ok::<_, CacheError>((tombstones, sessions))
                })
                .await;
                match swept {
                    Ok(Ok((tombstones, (expired, cached)))) => {
                        metrics::gauge!("edge_session_cached_sessions").set(cached as f64);
                        tracing::debug!(
                            tombstones = tombstones.tombstones,
                            expired,
                            cached,
                            "cache swept"
                        );
                    }
                    Ok(Err(err)) => tracing::warn!(%err, "cache sweep failed"),
                    Err(err) => tracing::warn!(%err, "cache sweep task failed"),
                }
            }
        }
    }
}

//! [`SledCache`]: the node-local tier. The only file (with its submodule
//! `revocations.rs`, the revocation state) that names sled.
//!
//! Trees:
//! - `sessions`: storage key → `fetched_at (u64 BE) | version (u64 BE) | record bytes`.
//! - `tombstones`: storage key → `keep_until (u64 BE) | nonce (u64 BE) | kind (u8)`.
//!   A revoked key; kept until the revoked session could no longer be live,
//!   then swept. The kind ([`TombstoneKind`]) says whose it is: final (a
//!   destroy, the stream, a regenerate that went through or whose outcome is
//!   unknown), provisional (a regenerate in flight, which may lift it), or
//!   unverified (a logout of a key nobody could check, see `unverified`).
//!   A 16-byte value (written before kinds existed) is final.
//! - `tombstone_expiry`: `keep_until (u64 BE) | storage key` → nothing. The
//!   tombstones by expiry, written in the same transaction as the tombstone,
//!   so the sweep reads only what expired. A data directory from before the
//!   index is indexed once when opened (marker `tombstone_expiry_index` in
//!   sled's default tree).
//! - `outbox`: storage key → `enqueued_at (u64 BE) | nonce (u64 BE)`. A
//!   revocation DynamoDB has not confirmed yet; retried until it lands.
//! - `unverified`: storage key → `enqueued_at (u64 BE)`. Logouts of keys this
//!   node could not verify (not cached, DynamoDB unreachable): a bounded
//!   queue (the caller's cap), each with an unverified tombstone; replayed
//!   when DynamoDB answers.
//! - `stream_checkpoints`: shard id → the sequence number of the last stream
//!   record applied from it (the stream follower's resume point).
//!
//! Invariant: a key is never in `sessions` and `tombstones` at once. Writing a
//! tombstone removes the cached record in the same transaction, and a fill
//! checks for a tombstone in the same transaction as it writes.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{IVec, Tree};

use crate::record::UnixMillis;
use crate::token::StorageKey;

mod group_commit;
mod revocations;

use group_commit::GroupCommit;
pub use revocations::{QueuedUnverified, TombstoneKind};

/// A sled operation failed (I/O, corruption) or an entry has the wrong shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("sled cache: {0}")]
pub struct CacheError(String);

impl CacheError {
    /// A close refused: `others` more handles still use the database.
    pub(crate) fn in_use(others: usize) -> Self {
        CacheError(format!("closing while {others} other handles are open"))
    }
}

impl From<sled::Error> for CacheError {
    fn from(e: sled::Error) -> Self {
        CacheError(e.to_string())
    }
}

impl From<TransactionError<()>> for CacheError {
    fn from(e: TransactionError<()>) -> Self {
        match e {
            TransactionError::Storage(e) => e.into(),
            TransactionError::Abort(()) => CacheError("transaction aborted".to_owned()),
        }
    }
}

/// A cached record as stored: when it was fetched from DynamoDB (or written
/// through), its version, and its encoded bytes.
#[derive(Debug, Clone)]
pub struct CachedRecord {
    /// When this copy was last confirmed against DynamoDB.
    pub fetched_at: UnixMillis,
    /// The record's version.
    pub version: u64,
    value: IVec,
}

impl CachedRecord {
    /// The encoded record.
    pub fn bytes(&self) -> &[u8] {
        &self.value[16..]
    }
}

/// A revoked key. The nonce tells one revocation from another, so a
/// regenerate that is rolled back lifts only its own tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// Sweep after this instant: the revoked session cannot be live then.
    pub keep_until: UnixMillis,
    /// Identifies this revocation.
    pub nonce: u64,
}

/// A revocation waiting for DynamoDB's confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxEntry {
    /// When it was enqueued.
    pub enqueued_at: UnixMillis,
    /// Identifies this revocation (same nonce as its tombstone).
    pub nonce: u64,
}

/// What a fill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// The record is now cached.
    Filled,
    /// The key is revoked on this node; nothing was written.
    Tombstoned,
    /// A newer version is already cached; nothing was written.
    Superseded,
}

/// One entry of [`SledCache::dump`]: tree name, key, value.
pub type DumpEntry = (String, Vec<u8>, Vec<u8>);

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Tombstones past `keep_until`.
    pub tombstones: usize,
}

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

/// Return once no database holds the lock of the sled directory `dir`:
/// take the lock sled takes (an exclusive `flock` on its `db` file),
/// waiting for it, then let it go.
fn wait_for_release(dir: &Path) -> Result<(), CacheError> {
    let path = dir.join("db");
    let file = std::fs::File::open(&path)
        .map_err(|e| CacheError(format!("opening {}: {e}", path.display())))?;
    file.lock()
        .map_err(|e| CacheError(format!("locking {}: {e}", path.display())))?;
    file.unlock()
        .map_err(|e| CacheError(format!("unlocking {}: {e}", path.display())))
}

fn unpair(bytes: &[u8]) -> Option<(u64, u64)> {
    let a = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let b = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((a, b))
}

/// The node-local tier.
#[derive(Clone)]
pub struct SledCache {
    db: sled::Db,
    sessions: Tree,
    tombstones: Tree,
    outbox: Tree,
    expiry: Tree,
    unverified: Tree,
    /// Entries in `unverified` (sled's `len` reads the whole tree).
    unverified_len: Arc<AtomicUsize>,
    /// Entries in `outbox`, kept as it changes for the same reason.
    outbox_len: Arc<AtomicUsize>,
    checkpoints: Tree,
    /// Concurrent flushes share one fsync.
    commits: Arc<GroupCommit>,
    /// The directory of a cache opened with [`open`](Self::open) (`None`:
    /// temporary), whose lock [`close`](Self::close) waits for.
    dir: Option<Arc<Path>>,
    /// One count per handle: [`close`](Self::close) refuses while another
    /// handle could still use the database.
    handles: Arc<()>,
}

impl std::fmt::Debug for SledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledCache")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl SledCache {
    /// Open (or create) the cache under `dir`.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| CacheError(format!("opening {}: {e}", dir.display())))?;
        let mut cache = Self::from_db(db)?;
        cache.dir = Some(dir.into());
        Ok(cache)
    }

    /// A cache in a temporary directory, removed on drop (tests, benches).
    pub fn temporary() -> Result<Self, CacheError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self, CacheError> {
        let unverified = db.open_tree("unverified")?;
        let outbox = db.open_tree("outbox")?;
        let cache = SledCache {
            sessions: db.open_tree("sessions")?,
            tombstones: db.open_tree("tombstones")?,
            outbox_len: Arc::new(AtomicUsize::new(outbox.len())),
            outbox,
            expiry: db.open_tree("tombstone_expiry")?,
            unverified_len: Arc::new(AtomicUsize::new(unverified.len())),
            unverified,
            checkpoints: db.open_tree("stream_checkpoints")?,
            commits: Arc::default(),
            db,
            dir: None,
            handles: Arc::default(),
        };
        cache.index_old_tombstones()?;
        Ok(cache)
    }

    /// Close the cache: flush it, drop this handle, and return once sled has
    /// let go of the directory, so it can be opened again at once (a restart
    /// in place). sled releases its lock when the last reference to the
    /// database goes, and the I/O threads of a dropped database can hold one
    /// for a moment after the drop; this waits for it (blocking on the lock
    /// itself, on the blocking pool) instead of failing the next open.
    ///
    /// Every other handle (a clone, a store over it) must be closed or dropped
    /// first: with one still open this returns an error and closes nothing.
    pub async fn close(self) -> Result<(), CacheError> {
        let others = Arc::strong_count(&self.handles) - 1;
        if others > 0 {
            return Err(CacheError::in_use(others));
        }
        self.flush().await?;
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        drop(self);
        tokio::task::spawn_blocking(move || wait_for_release(&dir))
            .await
            .map_err(|e| CacheError(format!("close task: {e}")))?
    }

    /// The cached record under `key`, if any.
    pub fn get(&self, key: &StorageKey) -> Result<Option<CachedRecord>, CacheError> {
        match self.sessions.get(key.as_bytes())? {
            None => Ok(None),
            Some(value) => {
                let (fetched_at, version) = unpair(&value)
                    .ok_or_else(|| CacheError("cached entry shorter than its header".to_owned()))?;
                Ok(Some(CachedRecord {
                    fetched_at,
                    version,
                    value,
                }))
            }
        }
    }

    /// The raw bytes under `key` in the sessions tree, nothing decoded: the
    /// baseline `lookup/cache_hit` is measured against (the benchmarks;
    /// `test-support` only).
    #[cfg(feature = "test-support")]
    pub fn raw_get(&self, key: &[u8]) -> Result<Option<sled::IVec>, CacheError> {
        Ok(self.sessions.get(key)?)
    }

    /// Cache `bytes` (version `version`, confirmed at `fetched_at`) unless the
    /// key is tombstoned or a newer version is already cached. One sled
    /// transaction, so a concurrent tombstone either sees this record (and
    /// removes it) or this fill sees the tombstone.
    pub fn fill(
        &self,
        key: &StorageKey,
        fetched_at: UnixMillis,
        version: u64,
        bytes: &[u8],
    ) -> Result<FillOutcome, CacheError> {
        let mut value = Vec::with_capacity(16 + bytes.len());
        value.extend_from_slice(&pair(fetched_at, version));
        value.extend_from_slice(bytes);
        let outcome =
            (&self.sessions, &self.tombstones).transaction(|(sessions, tombstones)| {
                if tombstones.get(key.as_bytes())?.is_some() {
                    return Ok(FillOutcome::Tombstoned);
                }
                if let Some(existing) = sessions.get(key.as_bytes())? {
                    if unpair(&existing).is_some_and(|(_, v)| v > version) {
                        return Ok(FillOutcome::Superseded);
                    }
                }
                sessions.insert(key.as_bytes(), value.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(FillOutcome::Filled)
            })?;
        Ok(outcome)
    }

    /// Drop the cached record (not a revocation: the next load asks DynamoDB).
    pub fn evict(&self, key: &StorageKey) -> Result<(), CacheError> {
        self.sessions.remove(key.as_bytes())?;
        Ok(())
    }

    /// Whether `key` is revoked on this node.
    pub fn is_tombstoned(&self, key: &StorageKey) -> Result<bool, CacheError> {
        Ok(self.tombstones.contains_key(key.as_bytes())?)
    }

    /// Up to `limit` pending revocations, oldest key order.
    pub fn pending(&self, limit: usize) -> Result<Vec<(StorageKey, OutboxEntry)>, CacheError> {
        let mut out = Vec::new();
        for entry in self.outbox.iter().take(limit) {
            let (k, v) = entry?;
            let key: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| CacheError("outbox key is not 32 bytes".into()))?;
            let (enqueued_at, nonce) =
                unpair(&v).ok_or_else(|| CacheError("outbox entry too short".into()))?;
            out.push((StorageKey(key), OutboxEntry { enqueued_at, nonce }));
        }
        Ok(out)
    }

    /// Revocations waiting for DynamoDB.
    pub fn outbox_len(&self) -> usize {
        self.outbox_len.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether no record is cached (cheap, unlike counting them).
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Remove cached records for which `expired(record bytes)` holds (each
    /// only if unchanged meanwhile). Returns (removed, kept). Reads the whole
    /// tree: run it off the request path.
    pub fn sweep_expired_sessions(
        &self,
        expired: impl Fn(&[u8]) -> bool,
    ) -> Result<(usize, usize), CacheError> {
        let (mut removed, mut kept) = (0, 0);
        for entry in self.sessions.iter() {
            let (k, v) = entry?;
            if v.len() >= 16 && !expired(&v[16..]) {
                kept += 1;
                continue;
            }
            match self.sessions.compare_and_swap(&k, Some(v), None::<&[u8]>)? {
                Ok(()) => removed += 1,
                Err(_) => kept += 1,
            }
        }
        Ok((removed, kept))
    }

    /// Make every write so far durable. Concurrent callers share one fsync
    /// (group commit, `cache/group_commit.rs`): a caller queued behind a
    /// flush in progress is covered by the next one, which starts after its
    /// writes.
    ///
    /// A blocking `flush` on Tokio's blocking pool, not sled's `flush_async`:
    /// sled 0.34 runs `flush_async` on its own small I/O thread pool, the one
    /// that also writes the log buffers a flush waits for, so a burst of
    /// concurrent flushes (logins and logouts racing on one node) takes every
    /// thread and waits for ever (spacejam/sled#1308, #1241; the test
    /// `concurrent_flushes_all_complete` hangs with `flush_async`).
    pub async fn flush(&self) -> Result<(), CacheError> {
        let db = self.db.clone();
        let flushed = self
            .commits
            .flush(
                move || db.flush().map(drop).map_err(CacheError::from),
                |e| CacheError(format!("flush task: {e}")),
            )
            .await?;
        metrics::counter!("edge_session_cache_flushes_total", "shared" => if flushed { "no" } else { "yes" })
            .increment(1);
        Ok(())
    }

    /// Every key and value in every tree but sled's default one (which
    /// holds only the format marker), for audits and tests (it reads the
    /// whole cache: never on a request path).
    pub fn dump(&self) -> Result<Vec<DumpEntry>, CacheError> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            if name == b"__sled__default" {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            for entry in tree.iter() {
                let (k, v) = entry?;
                out.push((name.clone(), k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }
}

/// The stream follower's checkpoints live in sled beside the tombstones
/// they protect, so a restart resumes where the node left off. A checkpoint
/// is written after the batch's invalidations were applied (and is flushed
/// with the next flush); losing the last one in a crash only replays records,
/// which are idempotent here.
impl edge_session_sync::Checkpoints for SledCache {
    fn get(&self, shard_id: &str) -> Result<Option<String>, edge_session_sync::CheckpointError> {
        let value = self
            .checkpoints
            .get(shard_id.as_bytes())
            .map_err(|e| edge_session_sync::CheckpointError(e.to_string()))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn put(
        &self,
        shard_id: &str,
        sequence_number: &str,
    ) -> Result<(), edge_session_sync::CheckpointError> {
        self.checkpoints
            .insert(shard_id.as_bytes(), sequence_number.as_bytes())
            .map(|_| ())
            .map_err(|e| edge_session_sync::CheckpointError(e.to_string()))
    }

    fn shard_ids(&self) -> Result<Vec<String>, edge_session_sync::CheckpointError> {
        self.checkpoints
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| edge_session_sync::CheckpointError(e.to_string()))
            })
            .collect()
    }

    fn remove(&self, shard_id: &str) -> Result<(), edge_session_sync::CheckpointError> {
        self.checkpoints
            .remove(shard_id.as_bytes())
            .map(|_| ())
            .map_err(|e| edge_session_sync::CheckpointError(e.to_string()))
    }
}

#[cfg(test)]
mod tests;

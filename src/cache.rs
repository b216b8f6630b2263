//! [`SledCache`]: the node-local tier. The only file that names sled.
//!
//! Trees:
//! - `sessions`: storage key → `fetched_at (u64 BE) | version (u64 BE) | record bytes`.
//! - `tombstones`: storage key → `keep_until (u64 BE) | nonce (u64 BE)`. A
//!   revoked key; kept until the revoked session could no longer be live, then
//!   swept.
//! - `outbox`: storage key → `enqueued_at (u64 BE) | nonce (u64 BE)`. A
//!   revocation DynamoDB has not confirmed yet; retried until it lands.
//!
//! - `stream_checkpoints`: shard id → the sequence number of the last stream
//!   record applied from it (the stream follower's resume point).
//!
//! Invariant: a key is never in `sessions` and `tombstones` at once. Writing a
//! tombstone removes the cached record in the same transaction, and a fill
//! checks for a tombstone in the same transaction as it writes.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{IVec, Tree};

use crate::record::UnixMillis;
use crate::token::StorageKey;

/// A sled operation failed (I/O, corruption) or an entry has the wrong shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("sled cache: {0}")]
pub struct CacheError(String);

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
    checkpoints: Tree,
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
        Self::from_db(db)
    }

    /// A cache in a temporary directory, removed on drop (tests, benches).
    pub fn temporary() -> Result<Self, CacheError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self, CacheError> {
        Ok(SledCache {
            sessions: db.open_tree("sessions")?,
            tombstones: db.open_tree("tombstones")?,
            outbox: db.open_tree("outbox")?,
            checkpoints: db.open_tree("stream_checkpoints")?,
            db,
        })
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
    /// baseline `lookup/cache_hit` is measured against (benches).
    #[doc(hidden)]
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

    /// The tombstone under `key`, if any.
    pub fn tombstone_of(&self, key: &StorageKey) -> Result<Option<Tombstone>, CacheError> {
        Ok(self
            .tombstones
            .get(key.as_bytes())?
            .and_then(|v| unpair(&v))
            .map(|(keep_until, nonce)| Tombstone { keep_until, nonce }))
    }

    /// Revoke `key` on this node and queue the DynamoDB delete: the
    /// tombstone (keeping the later `keep_until` if one exists), the removal
    /// of the cached record and an outbox entry enqueued at `now`, all in one
    /// transaction. Not yet durable: call [`flush`](Self::flush) before
    /// acting on it.
    pub fn revoke_and_queue(
        &self,
        key: &StorageKey,
        tomb: Tombstone,
        now: UnixMillis,
    ) -> Result<(), CacheError> {
        self.revoke(key, tomb, Some(now))
    }

    /// Revoke `key` on this node only, for a key DynamoDB already deleted:
    /// the tombstone (keeping the later `keep_until` if one exists) and the
    /// removal of the cached record, in one transaction; nothing is queued.
    /// Not yet durable: call [`flush`](Self::flush) before acting on it.
    pub fn revoke_locally(&self, key: &StorageKey, tomb: Tombstone) -> Result<(), CacheError> {
        self.revoke(key, tomb, None)
    }

    /// The one transaction behind [`revoke_and_queue`](Self::revoke_and_queue)
    /// (`queued_at` set) and [`revoke_locally`](Self::revoke_locally).
    fn revoke(
        &self,
        key: &StorageKey,
        tomb: Tombstone,
        queued_at: Option<UnixMillis>,
    ) -> Result<(), CacheError> {
        (&self.sessions, &self.tombstones, &self.outbox).transaction(
            |(sessions, tombstones, outbox)| {
                let keep_until = match tombstones.get(key.as_bytes())?.and_then(|v| unpair(&v)) {
                    Some((existing, _)) => existing.max(tomb.keep_until),
                    None => tomb.keep_until,
                };
                tombstones.insert(key.as_bytes(), &pair(keep_until, tomb.nonce)[..])?;
                sessions.remove(key.as_bytes())?;
                if let Some(now) = queued_at {
                    outbox.insert(key.as_bytes(), &pair(now, tomb.nonce)[..])?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            },
        )?;
        Ok(())
    }

    /// Undo [`revoke_and_queue`](Self::revoke_and_queue) for a revocation that turned out not to
    /// happen (a regenerate whose transaction was cancelled): removes the
    /// tombstone and the outbox entry only if they are still this revocation's
    /// (same nonce). Returns whether the tombstone was lifted.
    pub fn lift(&self, key: &StorageKey, nonce: u64) -> Result<bool, CacheError> {
        let lifted = (&self.tombstones, &self.outbox).transaction(|(tombstones, outbox)| {
            let ours =
                |v: Option<IVec>| v.and_then(|v| unpair(&v)).is_some_and(|(_, n)| n == nonce);
            if ours(outbox.get(key.as_bytes())?) {
                outbox.remove(key.as_bytes())?;
            }
            if ours(tombstones.get(key.as_bytes())?) {
                tombstones.remove(key.as_bytes())?;
                return Ok(true);
            }
            Ok::<_, ConflictableTransactionError<()>>(false)
        })?;
        Ok(lifted)
    }

    /// DynamoDB confirmed the revocation with `nonce`: drop it from the outbox
    /// (unless a later revocation of the same key replaced it).
    pub fn ack(&self, key: &StorageKey, nonce: u64) -> Result<(), CacheError> {
        let current = self.outbox.get(key.as_bytes())?;
        if let Some(current) = current {
            if unpair(&current).is_some_and(|(_, n)| n == nonce) {
                // A concurrent replacement makes the swap fail; that entry stays.
                let _ =
                    self.outbox
                        .compare_and_swap(key.as_bytes(), Some(current), None::<&[u8]>)?;
            }
        }
        Ok(())
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
        self.outbox.len()
    }

    /// Whether no record is cached (cheap, unlike counting them).
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Remove tombstones whose `keep_until` has passed.
    pub fn sweep_tombstones(&self, now: UnixMillis) -> Result<SweepReport, CacheError> {
        let mut report = SweepReport::default();
        for entry in self.tombstones.iter() {
            let (k, v) = entry?;
            if unpair(&v).is_some_and(|(keep_until, _)| keep_until < now) {
                // Only if unchanged: a fresh revocation of the same key stays.
                if self
                    .tombstones
                    .compare_and_swap(&k, Some(v), None::<&[u8]>)?
                    .is_ok()
                {
                    report.tombstones += 1;
                }
            }
        }
        Ok(report)
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

    /// Make every write so far durable.
    ///
    /// A blocking `flush` on Tokio's blocking pool, not sled's `flush_async`:
    /// sled 0.34 runs `flush_async` on its own small I/O thread pool, the one
    /// that also writes the log buffers a flush waits for, so a burst of
    /// concurrent flushes (logins and logouts racing on one node) takes every
    /// thread and waits for ever (spacejam/sled#1308, #1241; the test
    /// `concurrent_flushes_all_complete` hangs with `flush_async`).
    pub async fn flush(&self) -> Result<(), CacheError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| CacheError(format!("flush task: {e}")))??;
        Ok(())
    }

    /// Every key and value in every tree, for audits and tests (it reads the
    /// whole cache: never on a request path).
    pub fn dump(&self) -> Result<Vec<DumpEntry>, CacheError> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
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
impl crate::sync::Checkpoints for SledCache {
    fn get(&self, shard_id: &str) -> Result<Option<String>, crate::sync::CheckpointError> {
        let value = self
            .checkpoints
            .get(shard_id.as_bytes())
            .map_err(|e| crate::sync::CheckpointError(e.to_string()))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn put(
        &self,
        shard_id: &str,
        sequence_number: &str,
    ) -> Result<(), crate::sync::CheckpointError> {
        self.checkpoints
            .insert(shard_id.as_bytes(), sequence_number.as_bytes())
            .map(|_| ())
            .map_err(|e| crate::sync::CheckpointError(e.to_string()))
    }

    fn shard_ids(&self) -> Result<Vec<String>, crate::sync::CheckpointError> {
        self.checkpoints
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| crate::sync::CheckpointError(e.to_string()))
            })
            .collect()
    }

    fn remove(&self, shard_id: &str) -> Result<(), crate::sync::CheckpointError> {
        self.checkpoints
            .remove(shard_id.as_bytes())
            .map(|_| ())
            .map_err(|e| crate::sync::CheckpointError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> StorageKey {
        StorageKey([b; 32])
    }

    /// sled 0.34's `flush_async` can lose the wake-up of concurrent callers
    /// (spacejam/sled#1308, #1241): logins and logouts racing on one node
    /// then hang for ever. Every one of many concurrent flushes must finish.
    #[test]
    fn concurrent_flushes_all_complete() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let cache = SledCache::temporary().unwrap();
        runtime.block_on(async {
            for round in 0..20u8 {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..32u8 {
                    let cache = cache.clone();
                    tasks.spawn(async move {
                        cache.fill(&key(i), 1, u64::from(round) + 1, b"v").unwrap();
                        cache.flush().await.unwrap();
                    });
                }
                let all = async {
                    while let Some(done) = tasks.join_next().await {
                        done.unwrap();
                    }
                };
                // A liveness bound, not a speed target: 32 flushes of a few
                // bytes take milliseconds; a lost wake-up never ends.
                tokio::time::timeout(std::time::Duration::from_secs(60), all)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a flush never completed"));
            }
        });
    }

    #[test]
    fn fill_respects_tombstones_and_newer_versions() {
        let cache = SledCache::temporary().unwrap();
        assert_eq!(
            cache.fill(&key(1), 10, 2, b"v2").unwrap(),
            FillOutcome::Filled
        );
        assert_eq!(
            cache.fill(&key(1), 11, 1, b"v1").unwrap(),
            FillOutcome::Superseded
        );
        assert_eq!(cache.get(&key(1)).unwrap().unwrap().bytes(), b"v2");
        cache
            .revoke_and_queue(
                &key(1),
                Tombstone {
                    keep_until: 100,
                    nonce: 7,
                },
                10,
            )
            .unwrap();
        assert!(cache.get(&key(1)).unwrap().is_none());
        assert_eq!(
            cache.fill(&key(1), 12, 3, b"v3").unwrap(),
            FillOutcome::Tombstoned
        );
        assert!(cache.get(&key(1)).unwrap().is_none());
        assert_eq!(cache.outbox_len(), 1);
    }

    #[test]
    fn lift_only_removes_its_own_revocation() {
        let cache = SledCache::temporary().unwrap();
        cache
            .revoke_and_queue(
                &key(2),
                Tombstone {
                    keep_until: 100,
                    nonce: 1,
                },
                0,
            )
            .unwrap();
        cache
            .revoke_and_queue(
                &key(2),
                Tombstone {
                    keep_until: 50,
                    nonce: 2,
                },
                0,
            )
            .unwrap();
        assert!(!cache.lift(&key(2), 1).unwrap());
        assert!(cache.is_tombstoned(&key(2)).unwrap());
        assert_eq!(
            cache.tombstone_of(&key(2)).unwrap().unwrap().keep_until,
            100
        );
        assert!(cache.lift(&key(2), 2).unwrap());
        assert!(!cache.is_tombstoned(&key(2)).unwrap());
        assert_eq!(cache.outbox_len(), 0);
    }

    #[test]
    fn ack_keeps_a_newer_revocation() {
        let cache = SledCache::temporary().unwrap();
        cache
            .revoke_and_queue(
                &key(3),
                Tombstone {
                    keep_until: 100,
                    nonce: 1,
                },
                0,
            )
            .unwrap();
        cache
            .revoke_and_queue(
                &key(3),
                Tombstone {
                    keep_until: 100,
                    nonce: 2,
                },
                0,
            )
            .unwrap();
        cache.ack(&key(3), 1).unwrap();
        assert_eq!(
            cache.pending(10).unwrap(),
            vec![(
                key(3),
                OutboxEntry {
                    enqueued_at: 0,
                    nonce: 2
                }
            )]
        );
        cache.ack(&key(3), 2).unwrap();
        assert_eq!(cache.outbox_len(), 0);
    }

    #[test]
    fn sweep_expired_sessions_removes_what_the_predicate_calls_expired() {
        let cache = SledCache::temporary().unwrap();
        cache.fill(&key(6), 0, 1, b"old").unwrap();
        cache.fill(&key(7), 0, 1, b"new").unwrap();
        assert_eq!(
            cache
                .sweep_expired_sessions(|bytes| bytes == b"old")
                .unwrap(),
            (1, 1)
        );
        assert!(cache.get(&key(6)).unwrap().is_none());
        assert_eq!(cache.get(&key(7)).unwrap().unwrap().bytes(), b"new");
    }

    #[test]
    fn sweep_tombstones_removes_only_expired_ones() {
        let cache = SledCache::temporary().unwrap();
        cache
            .revoke_locally(
                &key(4),
                Tombstone {
                    keep_until: 100,
                    nonce: 1,
                },
            )
            .unwrap();
        cache
            .revoke_locally(
                &key(5),
                Tombstone {
                    keep_until: 300,
                    nonce: 1,
                },
            )
            .unwrap();
        assert_eq!(cache.sweep_tombstones(200).unwrap().tombstones, 1);
        assert!(!cache.is_tombstoned(&key(4)).unwrap());
        assert!(cache.is_tombstoned(&key(5)).unwrap());
    }
}

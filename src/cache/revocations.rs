//! The revocation state of the sled tier: tombstones (with their kind and
//! their expiry index), the outbox's acks, and the bounded queue of
//! unverified logouts. Every change to a tombstone is one sled transaction
//! with its index entry (and the outbox or queue entry it goes with).

use std::sync::atomic::Ordering;

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionalTree,
};
use sled::Transactional;

use super::{pair, unpair, CacheError, SledCache, SweepReport, Tombstone};
use crate::record::UnixMillis;
use crate::token::StorageKey;

/// Whose a tombstone is, which decides who may remove it before it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TombstoneKind {
    /// A revocation that stands: nothing lifts it; only the sweep removes
    /// it, after `keep_until`.
    Final,
    /// A regenerate in flight put it there; that call lifts it if its
    /// transaction is refused, and its ack makes it final.
    Provisional,
    /// A logout of a key nobody could verify (not cached, DynamoDB
    /// unreachable), waiting in the bounded `unverified` queue. Only the
    /// queue's replay or the sweep removes it (or a final one replaces it).
    Unverified,
}

impl TombstoneKind {
    fn byte(self) -> u8 {
        match self {
            TombstoneKind::Final => 0,
            TombstoneKind::Provisional => 1,
            TombstoneKind::Unverified => 2,
        }
    }
}

/// What [`SledCache::queue_unverified`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedUnverified {
    /// Queued (not yet durable: flush before acknowledging): the key is
    /// refused here until replayed.
    Queued,
    /// The key already carries a tombstone of this kind; nothing written.
    Tombstoned(TombstoneKind),
    /// The queue is at its cap; nothing written.
    Full,
}

/// The marker (in sled's default tree) that the expiry index is complete.
const INDEXED: &[u8] = b"tombstone_expiry_index";

type Tx<T> = ConflictableTransactionResult<T, ()>;

fn encode(t: Tombstone, kind: TombstoneKind) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(&pair(t.keep_until, t.nonce));
    out[16] = kind.byte();
    out
}

fn decode(bytes: &[u8]) -> Option<(Tombstone, TombstoneKind)> {
    let (keep_until, nonce) = unpair(bytes)?;
    let kind = match bytes.get(16) {
        None | Some(0) => TombstoneKind::Final,
        Some(1) => TombstoneKind::Provisional,
        Some(_) => TombstoneKind::Unverified,
    };
    Some((Tombstone { keep_until, nonce }, kind))
}

fn expiry_key(keep_until: UnixMillis, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&keep_until.to_be_bytes());
    out.extend_from_slice(key);
    out
}

fn read(
    tombstones: &TransactionalTree,
    key: &StorageKey,
) -> Tx<Option<(Tombstone, TombstoneKind)>> {
    Ok(tombstones.get(key.as_bytes())?.and_then(|v| decode(&v)))
}

/// Write `new` over `old` (as read in this transaction), index included.
fn put(
    tombstones: &TransactionalTree,
    expiry: &TransactionalTree,
    key: &StorageKey,
    old: Option<Tombstone>,
    new: Tombstone,
    kind: TombstoneKind,
) -> Tx<()> {
    if let Some(old) = old.filter(|o| o.keep_until != new.keep_until) {
        expiry.remove(expiry_key(old.keep_until, key.as_bytes()))?;
    }
    expiry.insert(expiry_key(new.keep_until, key.as_bytes()), &[][..])?;
    tombstones.insert(key.as_bytes(), &encode(new, kind)[..])?;
    Ok(())
}

/// Remove the tombstone `old` (as read in this transaction), index included.
fn remove(
    tombstones: &TransactionalTree,
    expiry: &TransactionalTree,
    key: &StorageKey,
    old: Tombstone,
) -> Tx<()> {
    expiry.remove(expiry_key(old.keep_until, key.as_bytes()))?;
    tombstones.remove(key.as_bytes())?;
    Ok(())
}

impl SledCache {
    /// The tombstone under `key`, if any.
    pub fn tombstone_of(&self, key: &StorageKey) -> Result<Option<Tombstone>, CacheError> {
        Ok(self.revocation_of(key)?.map(|(t, _)| t))
    }

    /// The tombstone under `key` and its kind, if any.
    pub fn revocation_of(
        &self,
        key: &StorageKey,
    ) -> Result<Option<(Tombstone, TombstoneKind)>, CacheError> {
        Ok(self
            .tombstones
            .get(key.as_bytes())?
            .and_then(|v| decode(&v)))
    }

    /// Revoke `key` on this node for good and queue the DynamoDB delete: a
    /// final tombstone (keeping the later `keep_until` if one exists), the
    /// removal of the cached record and an outbox entry enqueued at `now`,
    /// all in one transaction. It replaces a provisional or unverified
    /// tombstone (and takes the key out of the unverified queue). Not yet
    /// durable: call [`flush`](Self::flush) before acting on it.
    pub fn revoke_and_queue(
        &self,
        key: &StorageKey,
        tomb: Tombstone,
        now: UnixMillis,
    ) -> Result<(), CacheError> {
        self.revoke(key, tomb, TombstoneKind::Final, Some(now))
            .map(|_| ())
    }

    /// As [`revoke_and_queue`](Self::revoke_and_queue), but provisional (a
    /// regenerate in flight, which may [`lift`](Self::lift) it), and only if
    /// the key carries no final or unverified tombstone: `false` then, and
    /// nothing is written.
    pub fn revoke_provisionally(
        &self,
        key: &StorageKey,
        tomb: Tombstone,
        now: UnixMillis,
    ) -> Result<bool, CacheError> {
        self.revoke(key, tomb, TombstoneKind::Provisional, Some(now))
    }

    /// Revoke `key` on this node only, for a key DynamoDB already deleted: a
    /// final tombstone (keeping the later `keep_until` if one exists) and the
    /// removal of the cached record, in one transaction; nothing is queued.
    /// Not yet durable: call [`flush`](Self::flush) before acting on it.
    pub fn revoke_locally(&self, key: &StorageKey, tomb: Tombstone) -> Result<(), CacheError> {
        self.revoke(key, tomb, TombstoneKind::Final, None)
            .map(|_| ())
    }

    /// The one transaction behind the three revocations above.
    fn revoke(
        &self,
        key: &StorageKey,
        tomb: Tombstone,
        kind: TombstoneKind,
        queued_at: Option<UnixMillis>,
    ) -> Result<bool, CacheError> {
        let trees = (
            &self.sessions,
            &self.tombstones,
            &self.expiry,
            &self.outbox,
            &self.unverified,
        );
        let (written, dequeued, enqueued) =
            trees.transaction(|(sessions, tombstones, expiry, outbox, unverified)| {
                let old = read(tombstones, key)?;
                if kind == TombstoneKind::Provisional
                    && old.is_some_and(|(_, k)| k != TombstoneKind::Provisional)
                {
                    return Ok((false, false, false));
                }
                let old = old.map(|(t, _)| t);
                let keep_until = old.map_or(tomb.keep_until, |o| o.keep_until.max(tomb.keep_until));
                let new = Tombstone { keep_until, ..tomb };
                put(tombstones, expiry, key, old, new, kind)?;
                sessions.remove(key.as_bytes())?;
                let mut enqueued = false;
                if let Some(now) = queued_at {
                    enqueued = outbox
                        .insert(key.as_bytes(), &pair(now, tomb.nonce)[..])?
                        .is_none();
                }
                let dequeued = unverified.remove(key.as_bytes())?.is_some();
                Ok::<_, ConflictableTransactionError<()>>((true, dequeued, enqueued))
            })?;
        if dequeued {
            self.unverified_len.fetch_sub(1, Ordering::Relaxed);
        }
        if enqueued {
            self.outbox_len.fetch_add(1, Ordering::Relaxed);
        }
        Ok(written)
    }

    /// Undo [`revoke_provisionally`](Self::revoke_provisionally) for a
    /// revocation that turned out not to happen (a regenerate whose
    /// transaction was refused): removes the tombstone and the outbox entry
    /// only if they are still this revocation's (same nonce) and the
    /// tombstone is still provisional. A destroy that landed meanwhile wrote
    /// its own final tombstone, which stays. Returns whether it was lifted.
    pub fn lift(&self, key: &StorageKey, nonce: u64) -> Result<bool, CacheError> {
        let trees = (&self.tombstones, &self.expiry, &self.outbox);
        let (lifted, unqueued) = trees.transaction(|(tombstones, expiry, outbox)| {
            let mut unqueued = false;
            if outbox
                .get(key.as_bytes())?
                .and_then(|v| unpair(&v))
                .is_some_and(|(_, n)| n == nonce)
            {
                unqueued = outbox.remove(key.as_bytes())?.is_some();
            }
            match read(tombstones, key)? {
                Some((t, TombstoneKind::Provisional)) if t.nonce == nonce => {
                    remove(tombstones, expiry, key, t)?;
                    Ok((true, unqueued))
                }
                _ => Ok::<_, ConflictableTransactionError<()>>((false, unqueued)),
            }
        })?;
        if unqueued {
            self.outbox_len.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(lifted)
    }

    /// DynamoDB confirmed the revocation with `nonce`: drop it from the outbox
    /// (unless a later revocation of the same key replaced it), and make its
    /// tombstone final if it was provisional (nothing can undo it now).
    pub fn ack(&self, key: &StorageKey, nonce: u64) -> Result<(), CacheError> {
        let trees = (&self.tombstones, &self.outbox);
        let unqueued = trees.transaction(|(tombstones, outbox)| {
            let mut unqueued = false;
            if outbox
                .get(key.as_bytes())?
                .and_then(|v| unpair(&v))
                .is_some_and(|(_, n)| n == nonce)
            {
                unqueued = outbox.remove(key.as_bytes())?.is_some();
            }
            if let Some((t, TombstoneKind::Provisional)) = read(tombstones, key)? {
                if t.nonce == nonce {
                    tombstones.insert(key.as_bytes(), &encode(t, TombstoneKind::Final)[..])?;
                }
            }
            Ok::<_, ConflictableTransactionError<()>>(unqueued)
        })?;
        if unqueued {
            self.outbox_len.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Queue the revocation of a key nobody could verify: an unverified
    /// tombstone kept until `keep_until` and a queue entry, in one
    /// transaction, unless the queue holds `cap` entries already or the key
    /// carries a tombstone already. Not yet durable: call
    /// [`flush`](Self::flush) before acting on it.
    pub fn queue_unverified(
        &self,
        key: &StorageKey,
        keep_until: UnixMillis,
        now: UnixMillis,
        cap: usize,
    ) -> Result<QueuedUnverified, CacheError> {
        // Reserve a slot first, so concurrent callers never pass the cap.
        let reserved =
            self.unverified_len
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < cap).then_some(n + 1)
                });
        if reserved.is_err() {
            return Ok(QueuedUnverified::Full);
        }
        let trees = (
            &self.sessions,
            &self.tombstones,
            &self.expiry,
            &self.unverified,
        );
        let outcome = trees.transaction(|(sessions, tombstones, expiry, unverified)| {
            if let Some((_, kind)) = read(tombstones, key)? {
                return Ok((QueuedUnverified::Tombstoned(kind), false));
            }
            let tomb = Tombstone {
                keep_until,
                nonce: 0,
            };
            put(
                tombstones,
                expiry,
                key,
                None,
                tomb,
                TombstoneKind::Unverified,
            )?;
            sessions.remove(key.as_bytes())?;
            unverified.insert(key.as_bytes(), &now.to_be_bytes()[..])?;
            Ok::<_, ConflictableTransactionError<()>>((QueuedUnverified::Queued, true))
        });
        match outcome {
            Ok((outcome, true)) => Ok(outcome),
            Ok((outcome, false)) => {
                self.unverified_len.fetch_sub(1, Ordering::Relaxed);
                Ok(outcome)
            }
            Err(err) => {
                self.unverified_len.fetch_sub(1, Ordering::Relaxed);
                Err(err.into())
            }
        }
    }

    /// Up to `limit` queued unverified revocations (key order).
    pub fn unverified(&self, limit: usize) -> Result<Vec<StorageKey>, CacheError> {
        let mut out = Vec::new();
        for entry in self.unverified.iter().keys().take(limit) {
            let key: [u8; 32] = entry?
                .as_ref()
                .try_into()
                .map_err(|_| CacheError("unverified key is not 32 bytes".into()))?;
            out.push(StorageKey(key));
        }
        Ok(out)
    }

    /// Unverified revocations waiting for DynamoDB.
    pub fn unverified_len(&self) -> usize {
        self.unverified_len.load(Ordering::Relaxed)
    }

    /// An unverified revocation's key turned out not to exist in DynamoDB:
    /// drop it (queue entry and unverified tombstone). Returns whether it
    /// was queued.
    pub fn drop_unverified(&self, key: &StorageKey) -> Result<bool, CacheError> {
        let trees = (&self.tombstones, &self.expiry, &self.unverified);
        let dropped = trees.transaction(|(tombstones, expiry, unverified)| {
            if let Some((t, TombstoneKind::Unverified)) = read(tombstones, key)? {
                remove(tombstones, expiry, key, t)?;
            }
            Ok::<_, ConflictableTransactionError<()>>(unverified.remove(key.as_bytes())?.is_some())
        })?;
        if dropped {
            self.unverified_len.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(dropped)
    }

    /// Remove tombstones whose `keep_until` has passed, reading only the
    /// expired part of the expiry index (an expired unverified tombstone
    /// leaves the queue with it).
    pub fn sweep_tombstones(&self, now: UnixMillis) -> Result<SweepReport, CacheError> {
        let mut report = SweepReport::default();
        let trees = (&self.tombstones, &self.expiry, &self.unverified);
        for entry in self.expiry.range(..&now.to_be_bytes()[..]) {
            let (index_key, _) = entry?;
            let parsed = index_key
                .get(..8)
                .and_then(|e| <[u8; 8]>::try_from(e).ok())
                .zip(
                    index_key
                        .get(8..)
                        .and_then(|k| <[u8; 32]>::try_from(k).ok()),
                );
            let Some((exp, key)) = parsed.map(|(e, k)| (u64::from_be_bytes(e), StorageKey(k)))
            else {
                self.expiry.remove(&index_key)?;
                continue;
            };
            let (swept, dequeued) = trees.transaction(|(tombstones, expiry, unverified)| {
                match read(tombstones, &key)? {
                    // Only if unchanged: a later revocation of the key stays.
                    Some((t, kind)) if t.keep_until == exp => {
                        remove(tombstones, expiry, &key, t)?;
                        let dequeued = kind == TombstoneKind::Unverified
                            && unverified.remove(key.as_bytes())?.is_some();
                        Ok((true, dequeued))
                    }
                    _ => {
                        expiry.remove(&index_key)?;
                        Ok::<_, ConflictableTransactionError<()>>((false, false))
                    }
                }
            })?;
            report.tombstones += usize::from(swept);
            if dequeued {
                self.unverified_len.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(report)
    }

    /// Entries in the expiry index (tests: the sweep reads only these).
    #[cfg(test)]
    pub(crate) fn expiry_index_len(&self) -> usize {
        self.expiry.len()
    }

    /// Index the tombstones of a data directory from before the expiry
    /// index, once (idempotent, so a crash midway only repeats it).
    pub(super) fn index_old_tombstones(&self) -> Result<(), CacheError> {
        if self.db.get(INDEXED)?.is_some() {
            return Ok(());
        }
        if !self.tombstones.is_empty() {
            for entry in self.tombstones.iter() {
                let (key, value) = entry?;
                if let Some((t, _)) = decode(&value) {
                    self.expiry
                        .insert(expiry_key(t.keep_until, &key), &[][..])?;
                }
            }
        }
        self.db.insert(INDEXED, &[1][..])?;
        self.db.flush()?;
        Ok(())
    }
}

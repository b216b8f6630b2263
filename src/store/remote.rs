//! What other nodes did, as the stream follower reports it (`apply_removed`,
//! `apply_version_raised`, the last row of the table in the [store](super)
//! module doc), and the lease that bounds how long this node may miss it:
//! the lease in force for a record the follower's stream position covers,
//! at most the short lease for one confirmed before that position
//! (docs/design.md, tier rule 6).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{nonce, Error, TieredStore};
use crate::cache::Tombstone;
use crate::codec;
use crate::record::UnixMillis;
use crate::token::StorageKey;

impl TieredStore {
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
        if key == StorageKey::global_epoch() {
            self.note_global_epoch(new_ver);
            return Ok(true);
        }
        if let Some(user) = self.inner.epochs.user_of(&key) {
            match new_ver {
                Some(epoch) => self.note_epoch(&user, epoch, now),
                // Unknown new epoch: forget ours, so the next check reads it.
                None => self.inner.epochs.forget(&user),
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

    /// The lease in force, in milliseconds: a cached record confirmed longer
    /// ago than this is re-checked against DynamoDB before it is served.
    pub fn lease_ms(&self) -> u64 {
        self.inner.lease_ms.load(Ordering::Relaxed)
    }

    /// The lease of a cached record DynamoDB confirmed at `confirmed_at`:
    /// [`lease_ms`](Self::lease_ms) if the stream follower's position
    /// covers it (confirmed at or after [`set_coverage`](Self::set_coverage)'s
    /// `since`), else at most the short lease. Two atomic loads: the hot path.
    pub fn lease_at(&self, confirmed_at: UnixMillis) -> u64 {
        let lease = self.lease_ms();
        let coverage = &self.inner.coverage;
        if confirmed_at >= coverage.since_ms.load(Ordering::Relaxed) {
            lease
        } else {
            lease.min(coverage.short_lease_ms.load(Ordering::Relaxed))
        }
    }

    /// Which cached records the stream follower's position covers: those
    /// confirmed at or after `since` (`None`: none, the follower has not
    /// taken its position yet). A record confirmed earlier may have been
    /// revoked by a write in no record the follower will read, so it is
    /// served for at most `short_lease_ms` before it is re-checked. Without
    /// a follower (never called) every record is covered: the lease alone is
    /// the bound.
    pub fn set_coverage(&self, since: Option<UnixMillis>, short_lease_ms: u64) {
        let coverage = &self.inner.coverage;
        coverage
            .short_lease_ms
            .store(short_lease_ms, Ordering::Relaxed);
        coverage
            .since_ms
            .store(since.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Change the lease (the node shortens it while the stream follower
    /// lags, and restores it when the follower catches up).
    pub fn set_lease(&self, ms: u64) {
        self.inner.lease_ms.store(ms, Ordering::Relaxed);
        metrics::gauge!("edge_session_lease_seconds").set(ms as f64 / 1000.0);
    }
}

/// What the stream follower's position covers (see
/// [`TieredStore::set_coverage`]).
#[derive(Debug)]
pub(super) struct Coverage {
    /// Records confirmed at or after this (ms) are covered; `u64::MAX`: none.
    since_ms: AtomicU64,
    /// The lease of a record confirmed before `since_ms`.
    short_lease_ms: AtomicU64,
}

impl Default for Coverage {
    /// Every record covered: no follower, the lease alone.
    fn default() -> Self {
        Coverage {
            since_ms: AtomicU64::new(0),
            short_lease_ms: AtomicU64::new(u64::MAX),
        }
    }
}

//! What other nodes did, as the stream follower reports it (`apply_removed`,
//! `apply_version_raised`; `apply_removed`'s doc comment has what a failure
//! leaves). How long this node may miss it is the lease's (`lease.rs`).

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
    /// [`SledCache::flush`](crate::cache::SledCache::flush) once per batch.
    ///
    /// # Steps
    ///
    /// tombstone (no outbox: DynamoDB already deleted it) / evict a stale copy or note a user's new
    /// epoch
    ///
    /// # What a failure leaves
    ///
    /// - the follower redelivers the batch; applying twice is harmless
    pub fn apply_removed(&self, key: StorageKey, now: UnixMillis) -> Result<(), Error> {
        let cache = &self.inner.cache;
        let keep_until = match cache.get(&key)? {
            Some(hit) => codec::decode(hit.bytes()).map_or(
                now.saturating_add(self.inner.settings.policy.absolute_timeout_ms),
                |r| r.absolute_expiry.max(now),
            ),
            None => now.saturating_add(2 * self.revalidate_after_ms()),
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
}

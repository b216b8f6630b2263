//! Revocation epochs as this node knows them: a session bound under an
//! older epoch than its user's is outlawed ("log out everywhere"), and so is
//! one bound under an older global epoch than the fleet's ("end every
//! session of every user", `DELETE /v1/sessions`).
//!
//! The global epoch is one item. A node reads it at most once per lease
//! (on a login, or re-checking a record against DynamoDB), and learns a
//! raise within the coherence bound: the stream (or a relay) delivers the
//! item's new version, which is the epoch itself. It never expires, so the
//! value a node reads only grows.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{End, Error, TieredStore};

mod known;

use crate::record::{SessionRecord, UnixMillis};
use crate::token::StorageKey;
pub(super) use known::Epochs;

impl TieredStore {
    /// A user's current revocation epoch: from memory if read within the
    /// lease (unless `fresh`), else one consistent read.
    pub(super) async fn user_epoch(
        &self,
        user_id: &str,
        now: UnixMillis,
        fresh: bool,
    ) -> Result<u64, Error> {
        if !fresh {
            if let Some(epoch) = self.known_epoch(user_id, now) {
                return Ok(epoch);
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

    /// Until when (epoch seconds, its TTL) a user's epoch item written now
    /// must live: past every session bound or outlawed under it.
    pub(super) fn epoch_item_exp(&self, now: UnixMillis) -> u64 {
        now.saturating_add(self.inner.settings.policy.absolute_timeout_ms)
            .div_ceil(1000)
            + 86_400
    }

    /// `session.max_per_user`: the count a login may not take a user's
    /// sessions past (kept in the epoch item, see [`EpochGuard`]).
    ///
    /// [`EpochGuard`]: edge_session_sync::EpochGuard
    pub(super) fn session_cap(&self) -> u64 {
        self.inner.settings.max_per_user.max(1) as u64
    }

    /// `user_id`'s epoch as this node knows it (read within the lease).
    pub(super) fn known_epoch(&self, user_id: &str, now: UnixMillis) -> Option<u64> {
        self.inner
            .epochs
            .known(user_id, now, self.revalidate_after_ms())
    }

    /// Remember `user_id`'s epoch (epochs only grow).
    pub(super) fn note_epoch(&self, user_id: &str, epoch: u64, now: UnixMillis) {
        self.inner.epochs.note(user_id, epoch, now);
    }

    /// Whether an epoch this node already knows outlaws `record` (no I/O).
    pub(super) fn outlawed(&self, record: &SessionRecord) -> bool {
        record.user_id.as_deref().is_some_and(|user| {
            record.bound_global_epoch() < self.inner.global.value()
                || self.inner.epochs.outlaws(user, record.bound_user_epoch())
        })
    }

    /// The fleet's global revocation epoch: from memory if read within the
    /// lease, else one consistent read.
    pub(super) async fn global_epoch(&self, now: UnixMillis) -> Result<u64, Error> {
        let global = &self.inner.global;
        if now.saturating_sub(global.read_at.load(Ordering::Relaxed)) < self.revalidate_after_ms() {
            return Ok(global.value());
        }
        let epoch = self
            .inner
            .dynamo
            .user_epoch(StorageKey::global_epoch().as_bytes())
            .await?;
        global.note(epoch, now);
        Ok(global.value())
    }

    /// End every session of every user: raise the global epoch. Every node
    /// refuses each session bound under an older one (this node at once,
    /// the others within the coherence bound), including logins racing
    /// this call. Returns the new epoch.
    pub async fn revoke_everyone(&self, now: UnixMillis) -> Result<u64, Error> {
        // Never expires: a node's memory of it must never be above the item.
        let exp = u64::from(u32::MAX);
        let key = StorageKey::global_epoch();
        // The item exists before its first raise, so that every raise is a
        // modification, which the stream and the relays carry to every node
        // (a new item is not an invalidation). Already there: nothing done.
        let _ = self
            .inner
            .dynamo
            .create(&edge_session_sync::Item {
                sid: key.0,
                uid: None,
                ver: 0,
                exp,
                body: Vec::new(),
            })
            .await?;
        let epoch = self
            .inner
            .dynamo
            .bump_user_epoch(key.as_bytes(), None, exp)
            .await?;
        self.inner.global.note(epoch, now);
        metrics::counter!("edge_session_global_revocations_total").increment(1);
        Ok(epoch)
    }

    /// A raise of the global epoch delivered by the stream or a relay.
    pub(super) fn note_global_epoch(&self, epoch: Option<u64>) {
        match epoch {
            Some(epoch) => self.inner.global.raise(epoch),
            // Unknown new value: read it again at the next check.
            None => self.inner.global.read_at.store(0, Ordering::Relaxed),
        }
    }

    /// Check a bound record against its user's epoch (reading it if this
    /// node's copy is older than the lease). An outlawed session is destroyed.
    pub(super) async fn epoch_allows(
        &self,
        key: StorageKey,
        record: &SessionRecord,
        now: UnixMillis,
    ) -> Result<bool, Error> {
        let Some(user) = &record.user_id else {
            return Ok(true);
        };
        if self.global_epoch(now).await? <= record.bound_global_epoch()
            && self.user_epoch(user, now, false).await? <= record.bound_user_epoch()
        {
            return Ok(true);
        }
        // Logged out everywhere, but missed by the listing (bound
        // concurrently, or the GSI lagged): finish the job.
        self.destroy_key(key, End::Everywhere, now).await?;
        Ok(false)
    }
}

/// The fleet's global epoch as this node knows it, and when it was read.
#[derive(Debug, Default)]
pub(super) struct GlobalEpoch {
    value: AtomicU64,
    /// When it was last read from DynamoDB (ms); 0: never.
    read_at: AtomicU64,
}

impl GlobalEpoch {
    fn value(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Raise to `epoch` (epochs only grow).
    fn raise(&self, epoch: u64) {
        self.value.fetch_max(epoch, Ordering::Relaxed);
    }

    /// `epoch`, as read from DynamoDB at `now`.
    fn note(&self, epoch: u64, now: UnixMillis) {
        self.raise(epoch);
        self.read_at.store(now, Ordering::Relaxed);
    }
}

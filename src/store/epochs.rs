//! Users' revocation epochs as this node knows them: a session bound under
//! an older epoch than its user's is outlawed ("log out everywhere").

use super::{Error, TieredStore};
use crate::record::{SessionRecord, UnixMillis};
use crate::token::StorageKey;

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
    pub(super) fn known_epoch(&self, user_id: &str, now: UnixMillis) -> Option<u64> {
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
    pub(super) fn note_epoch(&self, user_id: &str, epoch: u64, now: UnixMillis) {
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
    pub(super) fn outlawed(&self, record: &SessionRecord) -> bool {
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
    pub(super) async fn epoch_allows(
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
}

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

    /// `user_id`'s epoch as this node knows it (read within the lease).
    pub(super) fn known_epoch(&self, user_id: &str, now: UnixMillis) -> Option<u64> {
        self.inner.epochs.known(user_id, now, self.lease_ms())
    }

    /// Remember `user_id`'s epoch (epochs only grow).
    pub(super) fn note_epoch(&self, user_id: &str, epoch: u64, now: UnixMillis) {
        self.inner.epochs.note(user_id, epoch, now);
    }

    /// Whether an epoch this node already knows outlaws `record` (no I/O).
    pub(super) fn outlawed(&self, record: &SessionRecord) -> bool {
        record
            .user_id
            .as_deref()
            .is_some_and(|user| self.inner.epochs.outlaws(user, record.user_epoch))
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

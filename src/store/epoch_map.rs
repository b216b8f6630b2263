//! [`Epochs`]: users' revocation epochs as this node last read them, behind
//! one lock. Epochs only grow; a copy older than the lease is not trusted.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::record::UnixMillis;
use crate::token::StorageKey;

/// Users' revocation epochs as this node last read them.
#[derive(Default)]
pub(super) struct Epochs {
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    /// user → (epoch, when it was read).
    by_user: HashMap<String, (u64, UnixMillis)>,
    /// epoch item key → user (to apply stream events about epoch items).
    by_key: HashMap<StorageKey, String>,
}

impl Epochs {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().expect("epoch map poisoned by a panic")
    }

    /// `user_id`'s epoch if it was read less than `lease_ms` before `now`.
    pub(super) fn known(&self, user_id: &str, now: UnixMillis, lease_ms: u64) -> Option<u64> {
        self.lock()
            .by_user
            .get(user_id)
            .filter(|(_, read_at)| now.saturating_sub(*read_at) < lease_ms)
            .map(|(epoch, _)| *epoch)
    }

    /// Whether `user_id`'s epoch, as last read (however long ago), is above
    /// `epoch`: a session bound under `epoch` is outlawed.
    pub(super) fn outlaws(&self, user_id: &str, epoch: u64) -> bool {
        self.lock()
            .by_user
            .get(user_id)
            .is_some_and(|(known, _)| *known > epoch)
    }

    /// Remember `user_id`'s epoch as read at `now` (keeping the higher one).
    pub(super) fn note(&self, user_id: &str, epoch: u64, now: UnixMillis) {
        let mut maps = self.lock();
        let entry = maps
            .by_user
            .entry(user_id.to_owned())
            .or_insert((epoch, now));
        *entry = (entry.0.max(epoch), now);
        maps.by_key
            .entry(StorageKey::user_epoch(user_id))
            .or_insert_with(|| user_id.to_owned());
    }

    /// The user whose epoch item is stored under `key`, if this node has
    /// noted that user's epoch.
    pub(super) fn user_of(&self, key: &StorageKey) -> Option<String> {
        self.lock().by_key.get(key).cloned()
    }

    /// Forget `user_id`'s epoch, so the next check reads it.
    pub(super) fn forget(&self, user_id: &str) {
        self.lock().by_user.remove(user_id);
    }
}

//! [`Epochs`]: users' revocation epochs as this node last read them, behind
//! one lock. Epochs only grow; a copy older than the lease is not trusted.
//!
//! Bounded: at most [`MAX_USERS`] users. Past it, a quarter of the entries
//! go, epoch-0 ones first (they outlaw nothing; forgetting one costs only a
//! read), then the least recently read. Forgetting a non-zero epoch only
//! means the next check reads it: a cached record is re-checked against
//! DynamoDB within its lease anyway (the cross-node bound: docs/design.md, tier rule 6).
//! Worst case: `MAX_USERS` × (two copies of a user id of at most 256 bytes,
//! a 32-byte key, 16 bytes of epoch and time, ≈ 100 bytes of map overhead)
//! ≈ 65,536 × 660 B ≈ 43 MB; with typical ids (≤ 40 bytes) ≈ 14 MB.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::record::UnixMillis;
use crate::token::StorageKey;

/// Users whose epoch this node keeps. Epochs are read for signed-in users
/// only (a login, a bound session's load, a "log out everywhere"), so this
/// is far above the users active on one node within a lease, and small
/// enough (see the module doc) to keep without a setting.
pub(in crate::store) const MAX_USERS: usize = 65_536;

/// Users' revocation epochs as this node last read them.
#[derive(Default)]
pub(in crate::store) struct Epochs {
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

    /// `user_id`'s epoch if it was read less than `revalidate_after_ms` before `now`.
    pub(in crate::store) fn known(
        &self,
        user_id: &str,
        now: UnixMillis,
        revalidate_after_ms: u64,
    ) -> Option<u64> {
        self.lock()
            .by_user
            .get(user_id)
            .filter(|(_, read_at)| now.saturating_sub(*read_at) < revalidate_after_ms)
            .map(|(epoch, _)| *epoch)
    }

    /// Whether `user_id`'s epoch, as last read (however long ago), is above
    /// `epoch`: a session bound under `epoch` is outlawed.
    pub(in crate::store) fn outlaws(&self, user_id: &str, epoch: u64) -> bool {
        self.lock()
            .by_user
            .get(user_id)
            .is_some_and(|(known, _)| *known > epoch)
    }

    /// Remember `user_id`'s epoch as read at `now` (keeping the higher one).
    pub(in crate::store) fn note(&self, user_id: &str, epoch: u64, now: UnixMillis) {
        let mut maps = self.lock();
        if maps.by_user.len() >= MAX_USERS && !maps.by_user.contains_key(user_id) {
            maps.shrink();
        }
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
    pub(in crate::store) fn user_of(&self, key: &StorageKey) -> Option<String> {
        self.lock().by_key.get(key).cloned()
    }

    /// Forget when `user_id`'s epoch was read, so the next check reads it
    /// (the epoch itself still outlaws older sessions: epochs only grow).
    pub(in crate::store) fn forget(&self, user_id: &str) {
        if let Some(entry) = self.lock().by_user.get_mut(user_id) {
            entry.1 = 0;
        }
    }

    /// Users whose epoch is kept (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        let maps = self.lock();
        debug_assert!(maps.by_key.len() <= maps.by_user.len());
        maps.by_user.len()
    }
}

impl Maps {
    /// Drop a quarter of the entries: epoch 0 first, then the least
    /// recently read. O(n log n) once per `MAX_USERS / 4` new users.
    fn shrink(&mut self) {
        let mut order: Vec<(bool, UnixMillis, String)> = self
            .by_user
            .iter()
            .map(|(user, (epoch, read_at))| (*epoch != 0, *read_at, user.clone()))
            .collect();
        order.sort_unstable();
        for (_, _, user) in order.into_iter().take(MAX_USERS / 4) {
            self.by_user.remove(&user);
            self.by_key.remove(&StorageKey::user_epoch(&user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_map_is_bounded_and_keeps_what_outlaws() {
        let epochs = Epochs::default();
        epochs.note("revoked", 3, 0);
        for i in 0..MAX_USERS + 10 {
            epochs.note(&format!("user-{i}"), 0, 1 + i as u64);
        }
        assert!(epochs.len() <= MAX_USERS, "{} users kept", epochs.len());
        assert!(
            epochs.outlaws("revoked", 2),
            "a non-zero epoch outlives epoch-0 entries"
        );
        assert!(
            epochs
                .known(
                    &format!("user-{}", MAX_USERS + 9),
                    MAX_USERS as u64 + 10,
                    1000
                )
                .is_some(),
            "the newest entry stays"
        );
        assert!(
            epochs.known("user-0", 2, 1000).is_none(),
            "the oldest epoch-0 entries went first"
        );
        assert!(epochs.user_of(&StorageKey::user_epoch("user-0")).is_none());
        assert_eq!(
            epochs
                .user_of(&StorageKey::user_epoch("revoked"))
                .as_deref(),
            Some("revoked")
        );

        epochs.forget("revoked");
        assert!(
            epochs.known("revoked", 5, 1000).is_none()
                || epochs.known("revoked", 5_000, 1000).is_none()
        );
        assert!(epochs.outlaws("revoked", 2), "forgetting keeps the epoch");
    }
}

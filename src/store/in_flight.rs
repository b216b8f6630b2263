//! [`RevokingSet`]: the keys whose revocation a request is carrying out right
//! now. The outbox replay leaves their entries alone: replaying a
//! regenerate's delete before its transaction runs would cancel the
//! transaction.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use crate::token::StorageKey;

/// Keys being revoked by live requests.
#[derive(Default)]
pub(super) struct RevokingSet {
    keys: Mutex<HashSet<StorageKey>>,
}

impl RevokingSet {
    fn lock(&self) -> MutexGuard<'_, HashSet<StorageKey>> {
        self.keys.lock().expect("revoking set poisoned by a panic")
    }

    /// Mark `key` as being revoked until the returned guard is dropped.
    pub(super) fn mark(&self, key: StorageKey) -> Revoking<'_> {
        self.lock().insert(key);
        Revoking { set: self, key }
    }

    /// Whether a live request is revoking `key`.
    pub(super) fn contains(&self, key: &StorageKey) -> bool {
        self.lock().contains(key)
    }
}

/// Marks a key as being revoked by a live request until dropped.
pub(super) struct Revoking<'a> {
    set: &'a RevokingSet,
    key: StorageKey,
}

impl Drop for Revoking<'_> {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.set.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

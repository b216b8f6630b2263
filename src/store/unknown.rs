//! [`UnknownKeys`]: the negative cache. A key DynamoDB answered "no such
//! item" for is remembered for a short while (`cache.negative_ttl_ms`), so a
//! client repeating one unknown token costs at most one consistent read per
//! that interval instead of one per request. In memory only (a restart
//! forgets it), bounded by `cache.negative_max_entries`: past the cap the
//! oldest entries go first, so a flood of distinct unknown tokens costs what
//! it cost without this cache (one read each) and never more memory.
//!
//! Why an entry never hides a session that exists: a token is handed out
//! only after DynamoDB holds its item (`create`, `regenerate`), so no client
//! can present a real token before its item exists, and a consistent read
//! then finds it. A key is remembered as unknown only if someone presented it
//! before it was issued: a guess of a 256-bit value, which the issuing
//! node's CSPRNG then draws again with probability 2^-256. Even so, this node
//! drops the entry when it creates that key. (With global tables, a token
//! issued in another region is unknown here until its item replicates; the
//! entry stretches that window by at most the TTL. The stream follower
//! ignores INSERTs, so it cannot shorten it.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::record::UnixMillis;
use crate::token::StorageKey;

/// Keys DynamoDB recently had no item for.
pub(super) struct UnknownKeys {
    ttl_ms: u64,
    cap: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Key → until when it is known to be unknown.
    until: HashMap<StorageKey, UnixMillis>,
    /// Insertion order, for expiry and for eviction at the cap. May hold a
    /// key twice (re-inserted after expiry) or a forgotten key; its length
    /// is what the cap bounds.
    order: VecDeque<(StorageKey, UnixMillis)>,
}

impl UnknownKeys {
    /// A cache remembering each key for `ttl_ms`, at most `cap` entries. Either
    /// zero disables it.
    pub(super) fn new(ttl_ms: u64, cap: usize) -> Self {
        UnknownKeys {
            ttl_ms,
            cap,
            entries: Mutex::new(Entries::default()),
        }
    }

    fn enabled(&self) -> bool {
        self.ttl_ms > 0 && self.cap > 0
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .expect("negative cache poisoned by a panic")
    }

    /// Whether DynamoDB had no item for `key` less than the TTL before `now`.
    pub(super) fn contains(&self, key: &StorageKey, now: UnixMillis) -> bool {
        self.enabled() && self.lock().until.get(key).is_some_and(|&u| now < u)
    }

    /// DynamoDB had no item for `key` at `now`.
    pub(super) fn insert(&self, key: StorageKey, now: UnixMillis) {
        if !self.enabled() {
            return;
        }
        let until = now.saturating_add(self.ttl_ms);
        let mut entries = self.lock();
        let Entries { until: map, order } = &mut *entries;
        while let Some(&(old, old_until)) = order.front() {
            if old_until > now && order.len() < self.cap {
                break;
            }
            order.pop_front();
            if map.get(&old) == Some(&old_until) {
                map.remove(&old);
            }
        }
        map.insert(key, until);
        order.push_back((key, until));
    }

    /// `key` exists now (this node created it, or the stream saw it written).
    pub(super) fn forget(&self, key: &StorageKey) {
        if self.enabled() {
            self.lock().until.remove(key);
        }
    }

    /// How many keys are remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> StorageKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        StorageKey(k)
    }

    #[test]
    fn an_entry_lasts_the_ttl() {
        let c = UnknownKeys::new(1_000, 10);
        c.insert(key(1), 5_000);
        assert!(c.contains(&key(1), 5_000));
        assert!(c.contains(&key(1), 5_999));
        assert!(!c.contains(&key(1), 6_000));
        assert!(!c.contains(&key(2), 5_000));
    }

    #[test]
    fn the_cap_bounds_the_entries_oldest_first() {
        let c = UnknownKeys::new(60_000, 100);
        for i in 0..10_000 {
            c.insert(key(i), 1_000);
            assert!(c.lock().order.len() <= 100);
        }
        assert_eq!(c.len(), 100);
        assert!(c.contains(&key(9_999), 1_000));
        assert!(!c.contains(&key(0), 1_000));
    }

    #[test]
    fn expired_entries_are_dropped_on_insert() {
        let c = UnknownKeys::new(1_000, 100);
        for i in 0..50 {
            c.insert(key(i), 1_000);
        }
        c.insert(key(99), 3_000);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn forget_drops_the_entry_and_zero_disables() {
        let c = UnknownKeys::new(1_000, 10);
        c.insert(key(1), 0);
        c.forget(&key(1));
        assert!(!c.contains(&key(1), 0));
        // Re-inserted after a forget, and the stale order entry is harmless.
        c.insert(key(1), 10);
        assert!(c.contains(&key(1), 10));
        for off in [UnknownKeys::new(0, 10), UnknownKeys::new(1_000, 0)] {
            off.insert(key(1), 0);
            assert!(!off.contains(&key(1), 0));
        }
    }
}

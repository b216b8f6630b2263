//! A bounded keyed state store for `governor`: the login budgets' tables.
//!
//! `governor`'s own keyed stores grow until swept, so a full table had to
//! refuse everyone. This one never refuses: a key it has not seen takes
//! the room of the entries that owe least. Each entry is a key's GCRA
//! theoretical arrival time (TAT); the lowest TATs are keys with budget
//! left (a key tried once, recovered, or nearly), the highest are the keys
//! being refused. When a shard is full, the eighth of it with the lowest
//! TATs is dropped at once (amortized O(1) per insert), so filling the table
//! with fresh keys evicts fresh keys, and a key over its budget keeps its
//! state while any key with budget left remains to evict. An evicted key
//! starts again with a full budget: at most one burst more per eviction.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;

/// Shards: lock contention stays low across workers.
const SHARDS: usize = 16;

/// At most `capacity` keys (rounded up to a multiple of the shard count),
/// each about 100 bytes.
#[derive(Debug)]
pub struct EvictingStore<K> {
    shards: Vec<Mutex<HashMap<K, u64>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone> EvictingStore<K> {
    /// A store holding at most about `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        EvictingStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, HashMap<K, u64>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn each_shard(&self) -> impl Iterator<Item = MutexGuard<'_, HashMap<K, u64>>> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Drop the eighth of `shard` with the lowest TATs (at least one entry).
fn make_room<K: Hash + Eq>(shard: &mut HashMap<K, u64>) {
    let mut tats: Vec<u64> = shard.values().copied().collect();
    let drop = (tats.len() / 8).max(1);
    let (_, threshold, _) = tats.select_nth_unstable(drop - 1);
    let threshold = *threshold;
    let mut left = drop;
    shard.retain(|_, tat| {
        if left > 0 && *tat <= threshold {
            left -= 1;
            false
        } else {
            true
        }
    });
}

impl<K: Hash + Eq + Clone> StateStore for EvictingStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = self.shard(key);
        let current = shard.get(key).copied();
        let (answer, tat) = f(current.map(Nanos::from))?;
        if current.is_none() && shard.len() >= self.per_shard {
            make_room(&mut shard);
        }
        shard.insert(key.clone(), tat.as_u64());
        Ok(answer)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for EvictingStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        for mut shard in self.each_shard() {
            shard.retain(|_, tat| *tat > drop_below);
        }
    }

    fn shrink_to_fit(&self) {
        for mut shard in self.each_shard() {
            shard.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.each_shard().map(|s| s.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_store_drops_the_lowest_arrival_times_first() {
        let mut shard: HashMap<u32, u64> = (0..80).map(|k| (k, u64::from(k))).collect();
        make_room(&mut shard);
        assert_eq!(shard.len(), 70);
        assert!((0..10).all(|k| !shard.contains_key(&k)));
        assert!((10..80).all(|k| shard.contains_key(&k)));
    }
}

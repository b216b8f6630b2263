//! [`Checkpoints`]: where the follower keeps, per shard, the sequence number
//! of the last record whose batch the consumer accepted, and
//! [`MemoryCheckpoints`], the in-memory store.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Per-shard checkpoints: the sequence number of the last record whose batch
/// the consumer accepted. The node keeps them durable (in sled); one store
/// serves one table's stream. Calls are made from the follower's task and
/// must be quick (no network).
pub trait Checkpoints: Send + Sync {
    /// The checkpoint of `shard_id`, if any.
    fn get(&self, shard_id: &str) -> Result<Option<String>, CheckpointError>;
    /// Store `sequence_number` as the checkpoint of `shard_id`. Sequence
    /// numbers given for one shard only ever grow.
    fn put(&self, shard_id: &str, sequence_number: &str) -> Result<(), CheckpointError>;
    /// Every shard id with a checkpoint.
    fn shard_ids(&self) -> Result<Vec<String>, CheckpointError>;
    /// Drop the checkpoint of a shard the stream no longer lists.
    fn remove(&self, shard_id: &str) -> Result<(), CheckpointError>;
}

/// The checkpoint store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint store: {0}")]
pub struct CheckpointError(pub String);

/// [`Checkpoints`] in memory, for tests and for a node that accepts a cold
/// start after every restart.
#[derive(Debug, Default)]
pub struct MemoryCheckpoints {
    map: Mutex<BTreeMap<String, String>>,
}

impl MemoryCheckpoints {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every checkpoint.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A panic while holding the lock cannot leave the map half-written
        // (each call is one map operation), so a poisoned lock is still good.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Checkpoints for MemoryCheckpoints {
    fn get(&self, shard_id: &str) -> Result<Option<String>, CheckpointError> {
        Ok(self.lock().get(shard_id).cloned())
    }

    fn put(&self, shard_id: &str, sequence_number: &str) -> Result<(), CheckpointError> {
        self.lock()
            .insert(shard_id.to_owned(), sequence_number.to_owned());
        Ok(())
    }

    fn shard_ids(&self) -> Result<Vec<String>, CheckpointError> {
        Ok(self.lock().keys().cloned().collect())
    }

    fn remove(&self, shard_id: &str) -> Result<(), CheckpointError> {
        self.lock().remove(shard_id);
        Ok(())
    }
}

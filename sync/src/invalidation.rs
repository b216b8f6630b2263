//! [`Invalidation`]: what a follower (of the stream or of the change
//! journal) hands the node: a key another writer removed or rewrote.

use std::time::SystemTime;

use crate::item::SID_LEN;

/// A session another writer removed or changed: evict it from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The session's key (the hashed token).
    pub sid: [u8; SID_LEN],
    /// What happened to it.
    pub kind: InvalidationKind,
    /// When the change was written, as the stream reports it (DynamoDB rounds
    /// it down to the second).
    pub approximate_creation: Option<SystemTime>,
    /// The record's sequence number in its shard.
    pub sequence_number: String,
}

/// What an [`Invalidation`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidationKind {
    /// The item was deleted (destroy, regenerate, revoke, or TTL): tombstone
    /// and evict.
    Removed,
    /// The item was rewritten with a higher `ver`: a cached copy below
    /// `new_ver` is stale. `None` when the stream carries no images
    /// (KEYS_ONLY) or no readable `ver`: evict whatever is cached.
    VersionRaised {
        /// The item's new `ver`, when the record carries it.
        new_ver: Option<u64>,
    },
}

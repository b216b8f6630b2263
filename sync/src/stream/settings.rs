//! [`FollowerSettings`]: the follower's tuning, and [`ColdStart`], where the
//! shards of a cold start begin.

use std::time::Duration;

/// Where the shards listed at a cold start (no checkpoint at all) begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColdStart {
    /// Only records written from now on: right for a node whose cache starts
    /// empty.
    #[default]
    Latest,
    /// Every record the stream still holds (up to 24 hours): for a node whose
    /// persisted cache may hold sessions revoked while it was down.
    TrimHorizon,
}

/// Tuning of a [`StreamFollower`](crate::StreamFollower). Every field has a default.
#[derive(Debug, Clone)]
pub struct FollowerSettings {
    /// Sleep of a shard after an empty `GetRecords` (the propagation delay
    /// when healthy). DynamoDB serves at most 5 `GetRecords` per shard per
    /// second.
    pub poll_interval: Duration,
    /// How often shards are listed again (also done at once when a shard
    /// closes).
    pub discover_every: Duration,
    /// `Limit` of each `GetRecords` (1..=1000).
    pub records_per_call: i32,
    /// Where the shards of a cold start begin.
    pub cold_start: ColdStart,
    /// First backoff after a failed poll; doubles per failure, jittered.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Write a heartbeat item to the table this often and watch for it to
    /// come back through the stream ([`FollowerStatus::heartbeat_age`](crate::FollowerStatus::heartbeat_age)):
    /// liveness measured end to end, not inferred from successful polls.
    /// `None`: no heartbeat (one write unit per interval when on).
    pub heartbeat_every: Option<Duration>,
    /// Also hand over every [`Change`](crate::Change) to a session or a
    /// user's epoch item, inserts included ([`StreamFollower::run_changes`](crate::StreamFollower::run_changes)).
    pub changes: bool,
}

impl Default for FollowerSettings {
    fn default() -> Self {
        FollowerSettings {
            poll_interval: Duration::from_millis(250),
            discover_every: Duration::from_secs(10),
            records_per_call: 1000,
            cold_start: ColdStart::Latest,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            heartbeat_every: None,
            changes: false,
        }
    }
}

//! [`StreamFollower`]: follows the session table's DynamoDB stream and hands
//! the node every [`Invalidation`] (a session removed, or its `ver` raised by
//! a write elsewhere), so that a revocation on one node evicts the session
//! from every other node's cache (docs/design.md, tier rules).
//!
//! # What it reads
//!
//! The table's current stream (`DescribeTable` → `LatestStreamArn`, looked up
//! again at every discovery), and **every** shard of it: shards are listed by
//! `DescribeStream`, paginated with `ExclusiveStartShardId`, every
//! [`FollowerSettings::discover_every`] and at once when a shard closes (its
//! children are then due). Each readable shard is polled with `GetRecords`;
//! an empty answer puts it to sleep for [`FollowerSettings::poll_interval`], a
//! full one is followed at once (catching up). Shards are polled concurrently;
//! batches are handed over one at a time.
//!
//! A REMOVE record becomes [`InvalidationKind::Removed`]; a MODIFY whose new
//! `ver` is above the old one becomes [`InvalidationKind::VersionRaised`] (a
//! MODIFY without both images, as on a KEYS_ONLY stream, counts as raised,
//! version unknown). INSERTs are not invalidations. The key is read from the
//! record's `Keys`, falling back to the new, then the old image (emulators
//! differ); a record with no readable 32-byte `sid` is skipped with a warning.
//!
//! # Guarantees
//!
//! - **Order.** Within a shard, batches are handed over in sequence-number
//!   order, one at a time, the next only after the consumer accepted the
//!   previous one. A child shard is read only once its parent is drained
//!   (closed, and every record handed over and accepted) or is no longer
//!   listed (expired). All records of one `sid` lie in one shard lineage, so a
//!   session's invalidations arrive in the order they were written. Unrelated
//!   shards have no order between them (they hold other sessions).
//! - **Checkpoints.** After the consumer returned `Ok` for a batch, the
//!   follower stores the batch's last sequence number for its shard
//!   ([`Checkpoints::put`]), never before. A batch the consumer failed is
//!   handed over again (the same invalidations, after a backoff) and the
//!   checkpoint does not move. A batch with no invalidation (only INSERTs) is
//!   checkpointed without calling the consumer.
//! - **At-least-once.** A restart resumes every shard `AFTER_SEQUENCE_NUMBER`
//!   of its checkpoint: nothing accepted is handed over again, nothing after
//!   it is skipped. The exceptions re-deliver, never skip: a crash (or a
//!   failed [`Checkpoints::put`]) between the consumer's `Ok` and the
//!   checkpoint, or a shutdown in the middle of a delivery. Applying an
//!   invalidation twice must therefore be harmless (evicting and tombstoning
//!   are).
//! - **Where a shard without a checkpoint starts.** On a *cold* start (the
//!   checkpoint store is empty: this node never followed the stream), the
//!   shards listed at start-up that have no listed parent start at `LATEST`
//!   (or `TRIM_HORIZON`, per [`FollowerSettings::cold_start`]): a node with a
//!   fresh cache has nothing to evict from before it started, and replaying
//!   24 hours of stream would only delay it. Every other shard without a
//!   checkpoint starts at `TRIM_HORIZON`: children found at start-up, shards
//!   created later (splits, rollovers), and every shard when the store is not
//!   empty (the node is resuming and its persisted cache may hold what those
//!   shards revoke). `LATEST` is used at most once per shard: an iterator that
//!   must be acquired again before anything was accepted starts at
//!   `TRIM_HORIZON`, so nothing written after start-up is skipped.
//! - **Coverage.** [`FollowerStatus::covered_since`] is the instant from
//!   which every write is in a record the follower has read or will read:
//!   `None` until each `LATEST` iterator is acquired, then the moment after
//!   the last of them was (the stream's start when no shard began at
//!   `LATEST`). It is raised, never lowered, whenever a position leaves
//!   something behind: records lost to retention (at the loss and again when
//!   the shard's new iterator is acquired), a shard found whose parent this
//!   follower never read (also counted as a gap), a replaced stream. A record
//!   the node read from DynamoDB before that instant may have been revoked
//!   by a write no record will show, so the node must re-read it rather than
//!   trust the stream to evict it.
//!
//! # Failures
//!
//! | what fails | what the follower does |
//! |---|---|
//! | `DescribeTable` at start-up | no answer: retries with backoff until shutdown; the table is missing or has no stream: `run` returns the error |
//! | discovery (`DescribeTable`, `DescribeStream`) later | keeps reading the shards it knows; retries with backoff |
//! | throttled (`LimitExceededException`, ...) or no answer | the SDK retries each call (standard mode); then the shard keeps its iterator and backs off (exponential, jittered) |
//! | `ExpiredIteratorException` | a new iterator `AFTER_SEQUENCE_NUMBER` of the last accepted record (else from the shard's start, `TRIM_HORIZON` if that was `LATEST`); nothing skipped |
//! | `TrimmedDataAccessException` | records were lost to the 24-hour retention: counted as a gap ([`FollowerStatus::gaps`]), reading resumes at `TRIM_HORIZON` |
//! | `ResourceNotFoundException` for a shard | the shard expired: counted as a gap, the shard is done, its children become readable |
//! | the consumer returns `Err` | no checkpoint; the same batch is handed over again after a backoff |
//! | [`Checkpoints::get`] | discovery fails (retried); no shard is started from a guess |
//! | [`Checkpoints::put`] | logged and counted; reading goes on (the next `put` supersedes it); a restart before then re-delivers |
//! | anything else (`ValidationException`, access denied) | the iterator is dropped, the shard backs off and acquires a new one |
//!
//! # Liveness
//!
//! With [`FollowerSettings::heartbeat_every`] set, the follower writes a
//! small heartbeat item of its own to the table that often, and notes the
//! writing time of each one that comes back through the stream and is
//! accepted ([`FollowerStatus::heartbeat_age`]). That is liveness measured
//! end to end: a feed that answers every poll but delivers nothing (stuck
//! iterators, a wedged emulator, a stream no longer fed) stops returning
//! heartbeats, and the node shortens its lease, whatever the polls say.
//! A heartbeat is neither an invalidation nor handed to the consumer.
//!
//! The lag figure ([`FollowerStatus::lag`]) and the metrics
//! `edge_session_stream_lag_seconds` (gauge), `edge_session_stream_records_total`,
//! `edge_session_stream_invalidations_total` and
//! `edge_session_stream_errors_total{kind}` (counters) show how far behind the
//! follower is; the node shortens its cache lease when the lag passes a bound.
//!
//! # Layout
//!
//! - [`checkpoints`]: the [`Checkpoints`] seam and [`MemoryCheckpoints`].
//! - [`settings`]: [`FollowerSettings`] and [`ColdStart`].
//! - [`status`]: [`FollowerStatus`], the follower's health and lag.
//! - [`record`]: stream record → [`Invalidation`], and a batch of them.
//! - [`shards`]: the known shards, parent before child, start positions.
//! - [`recovery`]: what a failed poll means and what the follower does.
//! - [`fetch`]: the calls (`DescribeTable`, `DescribeStream`,
//!   `GetShardIterator`, `GetRecords`) and the backoff.
//! - [`heartbeat`]: the item a follower writes and watches come back.
//! - [`follow`]: the loop's state and its steps; [`StreamFollower::run`]
//!   strings them together.

use std::future::Future;
use std::sync::Arc;

pub(crate) mod checkpoints;
mod fetch;
mod follow;
mod heartbeat;
mod record;
mod recovery;
mod settings;
mod shards;
mod status;

use crate::change::Change;
use crate::invalidation::Invalidation;
pub use checkpoints::{CheckpointError, Checkpoints, MemoryCheckpoints};
pub use settings::{ColdStart, FollowerSettings};
pub use status::FollowerStatus;

use crate::error::DynamoError;
use follow::{collect, FollowLoop, Follower};

/// Follows the table's stream; see the [module docs](self).
pub struct StreamFollower {
    follower: Follower,
}

impl std::fmt::Debug for StreamFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFollower")
            .field("table", &self.follower.table)
            .field("settings", &self.follower.settings)
            .finish_non_exhaustive()
    }
}

impl StreamFollower {
    /// A follower of `table`'s stream. Build both clients from the same
    /// [`ClientSettings`](crate::ClientSettings) (`build` and `build_streams`).
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: impl Into<String>,
        checkpoints: Arc<dyn Checkpoints>,
        settings: FollowerSettings,
    ) -> Self {
        StreamFollower {
            follower: Follower {
                dynamodb,
                streams,
                table: table.into(),
                checkpoints,
                settings,
                status: FollowerStatus::default(),
                heartbeat_sid: heartbeat::new_key(),
            },
        }
    }

    /// A handle on this follower's health, valid after `run` has consumed it.
    pub fn status(&self) -> FollowerStatus {
        self.follower.status.clone()
    }

    /// Follow the stream until `shutdown` completes, handing each batch of
    /// invalidations to `sink`. A batch is checkpointed only after `sink`
    /// returned `Ok`; on `Err` the same batch is handed over again later.
    ///
    /// Returns `Ok` on shutdown, and an error only when the table is missing
    /// or has no stream at start-up; every later failure is retried.
    pub async fn run<F, Fut, E>(self, mut sink: F, shutdown: impl Future) -> Result<(), DynamoError>
    where
        F: FnMut(Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.run_changes(move |invalidations, _| sink(invalidations), shutdown)
            .await
    }

    /// [`run`](Self::run), handing each batch's [`Change`]s too (with
    /// [`FollowerSettings::changes`]; otherwise the second vector is always
    /// empty). A batch is checkpointed only after `sink` returned `Ok`.
    pub async fn run_changes<F, Fut, E>(
        self,
        mut sink: F,
        shutdown: impl Future,
    ) -> Result<(), DynamoError>
    where
        F: FnMut(Vec<Invalidation>, Vec<Change>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        // Stopped when `run` returns, however it returns.
        let _heartbeat = self.follower.settings.heartbeat_every.map(|every| {
            self.follower.status.set_heartbeat_on();
            heartbeat::spawn(
                self.follower.dynamodb.clone(),
                self.follower.table.clone(),
                self.follower.heartbeat_sid,
                every,
            )
        });
        // Each step returns `None` when `shutdown` completed during it.
        let Some(mut follow) = FollowLoop::start(self.follower, shutdown.as_mut()).await? else {
            return Ok(());
        };
        loop {
            if follow.discovery_due() && follow.discover(shutdown.as_mut()).await.is_none() {
                return Ok(());
            }
            // One round: every readable shard whose time has come.
            let Some(fetches) = follow.poll_due(&mut sink, shutdown.as_mut()).await else {
                return Ok(());
            };
            let Some(fetched) = collect(fetches, shutdown.as_mut()).await else {
                return Ok(());
            };
            let handled = follow.handle_fetched(fetched, &mut sink, shutdown.as_mut());
            if handled.await.is_none() {
                return Ok(());
            }
            follow.publish();
            if follow.sleep(shutdown.as_mut()).await.is_none() {
                return Ok(());
            }
        }
    }
}

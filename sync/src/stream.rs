//! [`StreamFollower`]: follows the session table's DynamoDB stream and hands
//! the node every [`Invalidation`] (a session removed, or its `ver` raised by
//! a write elsewhere), so that a revocation on one node evicts the session
//! from every other node's cache (tier rule 6).
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
//! The lag figure ([`FollowerStatus::lag`]) and the metrics
//! `edge_session_stream_lag_seconds` (gauge), `edge_session_stream_records_total`,
//! `edge_session_stream_invalidations_total` and
//! `edge_session_stream_errors_total{kind}` (counters) show how far behind the
//! follower is; the node shortens its cache lease when the lag passes a bound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{
    AttributeValue, OperationType, Record, ShardIteratorType, StreamRecord,
};

use crate::error::{classify, ErrorKind, StoreError};
use crate::item::{SID, SID_LEN, VER};

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

/// Tuning of a [`StreamFollower`]. Every field has a default.
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
        }
    }
}

/// A cheap, cloneable view of a running follower's health.
#[derive(Debug, Clone, Default)]
pub struct FollowerStatus {
    inner: Arc<StatusInner>,
}

#[derive(Debug)]
struct StatusInner {
    /// Milliseconds since the epoch; 0 = never.
    last_poll_ok_ms: AtomicU64,
    /// Milliseconds; `u64::MAX` = no record processed yet.
    last_record_age_ms: AtomicU64,
    gaps: AtomicU64,
}

impl Default for StatusInner {
    fn default() -> Self {
        StatusInner {
            last_poll_ok_ms: AtomicU64::new(0),
            last_record_age_ms: AtomicU64::new(u64::MAX),
            gaps: AtomicU64::new(0),
        }
    }
}

impl FollowerStatus {
    /// The latest instant at which every readable shard was known to be
    /// applied up to date (its last poll found nothing new, or its last batch
    /// was accepted). `None` until that has happened once.
    pub fn last_poll_ok_at(&self) -> Option<SystemTime> {
        match self.inner.last_poll_ok_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// How old the newest record of the last accepted batch was when it was
    /// accepted (the largest over shards; zero for a shard that is caught
    /// up). `None` before the first poll. Coarse: creation times are whole
    /// seconds.
    pub fn last_record_age(&self) -> Option<Duration> {
        match self.inner.last_record_age_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The lag estimate at `now`: how old a write may be and still not be
    /// applied (`last_record_age` plus the time since `last_poll_ok_at`).
    /// `None` (unknown: treat as lagging) before the first successful poll.
    pub fn lag(&self, now: SystemTime) -> Option<Duration> {
        let ok_at = self.last_poll_ok_at()?;
        let since = now.duration_since(ok_at).unwrap_or(Duration::ZERO);
        Some(since + self.last_record_age().unwrap_or(Duration::ZERO))
    }

    /// How many times records were lost to the stream's retention (trimmed
    /// or expired before they were read). Each is a window in which a
    /// revocation may have been missed; only the lease covers it.
    pub fn gaps(&self) -> u64 {
        self.inner.gaps.load(Ordering::Relaxed)
    }

    fn set(&self, ok_at: SystemTime, record_age: Duration) {
        let ms = ok_at
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis().max(1) as u64);
        self.inner.last_poll_ok_ms.store(ms, Ordering::Relaxed);
        self.inner.last_record_age_ms.store(
            (record_age.as_millis() as u64).min(u64::MAX - 1),
            Ordering::Relaxed,
        );
    }

    fn gap(&self) {
        self.inner.gaps.fetch_add(1, Ordering::Relaxed);
    }
}

/// Follows the table's stream; see the [module docs](self).
pub struct StreamFollower {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
    checkpoints: Arc<dyn Checkpoints>,
    settings: FollowerSettings,
    status: FollowerStatus,
}

impl std::fmt::Debug for StreamFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFollower")
            .field("table", &self.table)
            .field("settings", &self.settings)
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
            dynamodb,
            streams,
            table: table.into(),
            checkpoints,
            settings,
            status: FollowerStatus::default(),
        }
    }

    /// A handle on this follower's health, valid after `run` has consumed it.
    pub fn status(&self) -> FollowerStatus {
        self.status.clone()
    }

    /// Follow the stream until `shutdown` completes, handing each batch of
    /// invalidations to `sink`. A batch is checkpointed only after `sink`
    /// returned `Ok`; on `Err` the same batch is handed over again later.
    ///
    /// Returns `Ok` on shutdown, and an error only when the table is missing
    /// or has no stream at start-up; every later failure is retried.
    pub async fn run<F, Fut, E>(self, mut sink: F, shutdown: impl Future) -> Result<(), StoreError>
    where
        F: FnMut(Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut arn = {
            let mut failures = 0;
            loop {
                let found = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    found = self.stream_arn() => found,
                };
                match found {
                    Ok(arn) => break arn,
                    Err(err) if err.is_unavailable() => {
                        failures += 1;
                        tracing::warn!(%err, "stream follower: table not reachable yet");
                        count_error("describe");
                        let wait = self.backoff(failures);
                        tokio::select! {
                            _ = &mut shutdown => return Ok(()),
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        tracing::info!(table = %self.table, stream = %arn, "stream follower started");

        let mut shards = Shards::default();
        let mut first_discovery = true;
        let mut discovery_failures = 0;
        let mut next_discovery = Instant::now();
        // Closed shards whose children have not been listed yet, and since when.
        let mut awaiting_children: HashMap<String, Instant> = HashMap::new();
        loop {
            if Instant::now() >= next_discovery {
                let listed = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    listed = self.discover(&mut arn) => listed,
                };
                let now = Instant::now();
                let merged = listed.and_then(|listed| {
                    self.merge(&mut shards, &arn, &listed, first_discovery, now)
                });
                match merged {
                    Ok(()) => {
                        first_discovery = false;
                        discovery_failures = 0;
                        next_discovery = now + self.settings.discover_every;
                        awaiting_children.retain(|parent, since| {
                            !shards.has_child_of(parent)
                                && now.duration_since(*since) < self.settings.discover_every * 6
                        });
                        if !awaiting_children.is_empty() {
                            // A closed shard's children appear within moments.
                            next_discovery =
                                next_discovery.min(now + self.settings.poll_interval * 4);
                        }
                    }
                    Err(err) => {
                        discovery_failures += 1;
                        tracing::warn!(%err, "stream follower: shard discovery failed");
                        count_error("describe");
                        next_discovery = now + self.backoff(discovery_failures);
                    }
                }
            }

            // One round: every readable shard whose time has come.
            let now = Instant::now();
            let due = shards.due(now);
            let mut fetches = tokio::task::JoinSet::new();
            for id in due {
                let shard = shards.get_mut(&id);
                if shard.pending.is_some() {
                    let delivered = tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        delivered = self.deliver(&id, shard, &mut sink) => delivered,
                    };
                    if delivered && self.after_delivery(&id, shard) == Step::Closed {
                        awaiting_children.insert(id, Instant::now());
                        next_discovery = Instant::now();
                    }
                    continue;
                }
                let fetch = fetch(
                    self.streams.clone(),
                    shard.stream_arn.clone(),
                    id.clone(),
                    shard.iterator.take(),
                    shard.resume.clone(),
                    self.settings.records_per_call,
                );
                fetches.spawn(async move { (id, fetch.await) });
            }
            let mut results = Vec::with_capacity(fetches.len());
            loop {
                let next = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    next = fetches.join_next() => next,
                };
                match next {
                    None => break,
                    Some(Ok(result)) => results.push(result),
                    Some(Err(err)) => {
                        // A fetch task panicked: the SDK never should. The
                        // shard has no iterator now and re-acquires one.
                        tracing::error!(%err, "stream follower: fetch task failed");
                        count_error("rejected");
                    }
                }
            }
            results.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, fetched) in results {
                let closed = {
                    let shard = shards.get_mut(&id);
                    let step = tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        step = self.handle(&id, shard, fetched, &mut sink) => step,
                    };
                    step == Step::Closed
                };
                if closed {
                    awaiting_children.insert(id, Instant::now());
                    next_discovery = Instant::now();
                }
            }
            self.publish(&shards);

            let wake = shards
                .next_due()
                .map_or(next_discovery, |due| due.min(next_discovery));
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// The table's current stream ARN.
    async fn stream_arn(&self) -> Result<String, StoreError> {
        let op = "stream_follower";
        let table = crate::tier::describe(&self.dynamodb, &self.table, op).await?;
        match table.latest_stream_arn() {
            Some(arn) if !arn.is_empty() => Ok(arn.to_owned()),
            _ => Err(StoreError::new(
                op,
                ErrorKind::Rejected,
                format!("table `{}` has no stream to follow", self.table),
            )),
        }
    }

    /// The current stream ARN (updated in place) and its complete shard list.
    async fn discover(&self, arn: &mut String) -> Result<Vec<Listed>, DiscoveryError> {
        let latest = self.stream_arn().await?;
        if latest != *arn {
            tracing::info!(old = %arn, new = %latest, "stream follower: the table has a new stream");
            *arn = latest;
        }
        let mut listed = Vec::new();
        let mut seen = HashSet::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .streams
                .describe_stream()
                .stream_arn(arn.as_str())
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|err| classify("describe_stream", &err))?;
            let description = out.stream_description().ok_or_else(|| {
                StoreError::new(
                    "describe_stream",
                    ErrorKind::Malformed,
                    "no stream description",
                )
            })?;
            let mut new_in_page = false;
            for shard in description.shards() {
                let Some(id) = shard.shard_id() else { continue };
                if seen.insert(id.to_owned()) {
                    new_in_page = true;
                    listed.push(Listed {
                        id: id.to_owned(),
                        parent: shard.parent_shard_id().map(str::to_owned),
                    });
                }
            }
            match description.last_evaluated_shard_id() {
                // A server that ignores `ExclusiveStartShardId` would repeat
                // its page forever; stop when a page brings nothing new.
                Some(last) if !last.is_empty() && new_in_page => start = Some(last.to_owned()),
                _ => return Ok(listed),
            }
        }
    }

    /// Merge a complete listing into `shards` and drop the checkpoints of
    /// shards that are gone.
    fn merge(
        &self,
        shards: &mut Shards,
        arn: &str,
        listed: &[Listed],
        first: bool,
        now: Instant,
    ) -> Result<(), DiscoveryError> {
        let cold = first && self.checkpoints.shard_ids()?.is_empty();
        let checkpoints = &self.checkpoints;
        let added = shards.merge(
            arn,
            listed,
            Start {
                first,
                cold,
                cold_start: self.settings.cold_start,
            },
            |id| checkpoints.get(id),
            now,
            SystemTime::now(),
        )?;
        for (id, position) in &added {
            tracing::debug!(shard = %id, ?position, "stream follower: following shard");
        }
        for id in self.checkpoints.shard_ids()? {
            if !shards.contains(&id) {
                tracing::debug!(shard = %id, "stream follower: dropping the checkpoint of an expired shard");
                self.checkpoints.remove(&id)?;
            }
        }
        Ok(())
    }

    /// Process what a fetch returned.
    async fn handle<F, Fut, E>(
        &self,
        id: &str,
        shard: &mut ShardState,
        fetched: Fetched,
        sink: &mut F,
    ) -> Step
    where
        F: FnMut(Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        if fetched.acquired && shard.resume == Position::Latest {
            shard.resume = Position::TrimHorizon;
        }
        let now = Instant::now();
        match fetched.outcome {
            Outcome::Records { records, next } => {
                shard.failures = 0;
                shard.iterator = next;
                let closed = shard.iterator.is_none();
                if records.is_empty() {
                    shard.ok_at = Some(SystemTime::now());
                    shard.record_age = Duration::ZERO;
                    if closed {
                        return self.close(id, shard);
                    }
                    shard.next_poll_at = now + self.settings.poll_interval;
                    return Step::Polled;
                }
                shard.full = records.len() >= self.settings.records_per_call.max(1) as usize;
                shard.pending = Some(Pending::from_records(&records, closed));
                if self.deliver(id, shard, sink).await {
                    return self.after_delivery(id, shard);
                }
                Step::Polled
            }
            Outcome::Failed {
                op,
                failure,
                message,
                iterator,
            } => {
                let action = recover(failure, op, &shard.resume);
                tracing::warn!(shard = %id, op = op.name(), ?failure, %message, "stream follower: poll failed");
                count_error(failure.name());
                if action.keep_iterator {
                    shard.iterator = iterator;
                }
                if let Some(position) = action.resume {
                    shard.resume = position;
                }
                if action.gap {
                    tracing::warn!(shard = %id, "stream follower: records were lost to the stream's retention; revocations in them are covered only by the lease");
                    self.status.gap();
                }
                if action.done {
                    return self.close(id, shard);
                }
                if action.backoff {
                    shard.failures += 1;
                    shard.next_poll_at = now + self.backoff(shard.failures);
                } else {
                    shard.next_poll_at = now;
                }
                Step::Polled
            }
        }
    }

    /// Hand the shard's pending batch to the consumer; on `Ok`, checkpoint.
    /// Returns whether it was accepted.
    async fn deliver<F, Fut, E>(&self, id: &str, shard: &mut ShardState, sink: &mut F) -> bool
    where
        F: FnMut(Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let Some(pending) = &shard.pending else {
            return true;
        };
        if !pending.invalidations.is_empty() {
            if let Err(err) = sink(pending.invalidations.clone()).await {
                tracing::warn!(shard = %id, %err, "stream follower: the consumer failed a batch; it will be handed over again");
                count_error("sink");
                shard.failures += 1;
                shard.next_poll_at = Instant::now() + self.backoff(shard.failures);
                return false;
            }
        }
        // `pending` is Some: checked above.
        let Some(pending) = shard.pending.take() else {
            return true;
        };
        if let Some(sequence) = &pending.last_sequence {
            if let Err(err) = self.checkpoints.put(id, sequence) {
                tracing::error!(shard = %id, %err, "stream follower: checkpoint not stored; a restart will hand this batch over again");
                count_error("checkpoint");
            }
            shard.resume = Position::After(sequence.clone());
        }
        shard.failures = 0;
        let accepted_at = SystemTime::now();
        shard.ok_at = Some(accepted_at);
        shard.record_age = pending
            .newest
            .and_then(|t| accepted_at.duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        shard.closed_after_pending = pending.closed;
        metrics::counter!("edge_session_stream_records_total").increment(pending.records as u64);
        metrics::counter!("edge_session_stream_invalidations_total")
            .increment(pending.invalidations.len() as u64);
        true
    }

    /// After an accepted batch: poll again (at once if the batch was full),
    /// or finish a closed shard.
    fn after_delivery(&self, id: &str, shard: &mut ShardState) -> Step {
        if shard.closed_after_pending {
            return self.close(id, shard);
        }
        shard.next_poll_at = if shard.full {
            Instant::now()
        } else {
            Instant::now() + self.settings.poll_interval
        };
        Step::Polled
    }

    fn close(&self, id: &str, shard: &mut ShardState) -> Step {
        tracing::debug!(shard = %id, "stream follower: shard closed and drained");
        shard.done = true;
        shard.iterator = None;
        Step::Closed
    }

    /// Update the status handle and the lag gauge.
    fn publish(&self, shards: &Shards) {
        let Some((ok_at, record_age)) = shards.health() else {
            return;
        };
        self.status.set(ok_at, record_age);
        if let Some(lag) = self.status.lag(SystemTime::now()) {
            metrics::gauge!("edge_session_stream_lag_seconds").set(lag.as_secs_f64());
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff(
            failures,
            self.settings.backoff_base,
            self.settings.backoff_max,
            jitter(),
        )
    }
}

fn count_error(kind: &'static str) {
    metrics::counter!("edge_session_stream_errors_total", "kind" => kind).increment(1);
}

/// Discovery failed: a call, or the checkpoint store.
#[derive(Debug, thiserror::Error)]
enum DiscoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What one round did with a shard.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Polled,
    Closed,
}

/// One shard as `DescribeStream` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: String,
    parent: Option<String>,
}

/// Where to acquire a shard iterator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    TrimHorizon,
    Latest,
    After(String),
}

/// The inputs of the start-position choice that are the same for a whole
/// listing.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// This is the follower's first successful listing.
    first: bool,
    /// The checkpoint store was empty at start-up.
    cold: bool,
    cold_start: ColdStart,
}

/// Where a shard with no iterator yet begins (see the module docs).
fn initial_position(checkpoint: Option<String>, parent_listed: bool, start: Start) -> Position {
    match checkpoint {
        Some(sequence) => Position::After(sequence),
        None if start.first && start.cold && !parent_listed => match start.cold_start {
            ColdStart::Latest => Position::Latest,
            ColdStart::TrimHorizon => Position::TrimHorizon,
        },
        None => Position::TrimHorizon,
    }
}

/// A failed `GetShardIterator` or `GetRecords`, by what the follower does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Expired,
    Trimmed,
    Gone,
    Throttled,
    Unavailable,
    Rejected,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Expired => "expired_iterator",
            Failure::Trimmed => "trimmed",
            Failure::Gone => "shard_gone",
            Failure::Throttled => "throttled",
            Failure::Unavailable => "unavailable",
            Failure::Rejected => "rejected",
        }
    }
}

/// Classify a service error code (`server_error`: the status was 5xx).
fn failure_of_code(code: &str, server_error: bool) -> Failure {
    match code {
        "ExpiredIteratorException" => Failure::Expired,
        "TrimmedDataAccessException" => Failure::Trimmed,
        "ResourceNotFoundException" => Failure::Gone,
        "LimitExceededException"
        | "ThrottlingException"
        | "Throttling"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded" => Failure::Throttled,
        "InternalServerError" | "ServiceUnavailable" => Failure::Unavailable,
        _ if server_error => Failure::Unavailable,
        _ => Failure::Rejected,
    }
}

fn failure_of<E>(
    err: &SdkError<E, aws_sdk_dynamodbstreams::config::http::HttpResponse>,
) -> (Failure, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let code = inner.code().unwrap_or("Unknown");
            (
                failure_of_code(code, service.raw().status().is_server_error()),
                format!("{code}: {}", inner.message().unwrap_or("")),
            )
        }
        SdkError::ConstructionFailure(_) => {
            (Failure::Rejected, DisplayErrorContext(err).to_string())
        }
        _ => (Failure::Unavailable, DisplayErrorContext(err).to_string()),
    }
}

/// Which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GetShardIterator,
    GetRecords,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GetShardIterator => "get_shard_iterator",
            Op::GetRecords => "get_records",
        }
    }
}

/// What to do about a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recovery {
    /// The iterator is still good: use it again.
    keep_iterator: bool,
    /// Acquire the next iterator from here instead.
    resume: Option<Position>,
    /// Records were lost to retention.
    gap: bool,
    /// The shard cannot be read any further.
    done: bool,
    /// Wait before trying again (otherwise: at once).
    backoff: bool,
}

fn recover(failure: Failure, op: Op, resume: &Position) -> Recovery {
    let base = Recovery {
        keep_iterator: false,
        resume: None,
        gap: false,
        done: false,
        backoff: false,
    };
    match failure {
        // Acquire again from the last accepted record; `LATEST` would skip
        // what was written since the first iterator.
        Failure::Expired => Recovery {
            resume: (*resume == Position::Latest).then_some(Position::TrimHorizon),
            ..base
        },
        Failure::Trimmed if op == Op::GetShardIterator && *resume == Position::TrimHorizon => {
            Recovery {
                gap: true,
                done: true,
                ..base
            }
        }
        Failure::Trimmed => Recovery {
            resume: Some(Position::TrimHorizon),
            gap: true,
            ..base
        },
        Failure::Gone => Recovery {
            gap: true,
            done: true,
            ..base
        },
        Failure::Throttled | Failure::Unavailable => Recovery {
            keep_iterator: true,
            backoff: true,
            ..base
        },
        Failure::Rejected => Recovery {
            backoff: true,
            ..base
        },
    }
}

/// Exponential backoff (`base` doubled per failure after the first, at most
/// `max`), scaled by a jitter in [0.5, 1].
fn backoff(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << doublings).min(max);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs from call to call (no RNG dependency:
/// std's randomly keyed hasher over the current instant).
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What one fetch task brings back.
#[derive(Debug)]
struct Fetched {
    /// A new iterator was acquired (so `LATEST`, if used, is spent).
    acquired: bool,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    Records {
        records: Vec<Record>,
        /// `None`: the shard is closed and this was its end.
        next: Option<String>,
    },
    Failed {
        op: Op,
        failure: Failure,
        message: String,
        /// The iterator that was used, to keep if it is still good.
        iterator: Option<String>,
    },
}

/// Acquire an iterator if there is none, then one `GetRecords`.
async fn fetch(
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    shard_id: String,
    iterator: Option<String>,
    resume: Position,
    limit: i32,
) -> Fetched {
    let (iterator, acquired) = match iterator {
        Some(iterator) => (iterator, false),
        None => {
            let (kind, sequence) = match resume {
                Position::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
                Position::Latest => (ShardIteratorType::Latest, None),
                Position::After(sequence) => {
                    (ShardIteratorType::AfterSequenceNumber, Some(sequence))
                }
            };
            let answer = client
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(shard_id)
                .shard_iterator_type(kind)
                .set_sequence_number(sequence)
                .send()
                .await;
            match answer {
                Ok(out) => match out.shard_iterator {
                    Some(iterator) => (iterator, true),
                    // No iterator: the shard is closed and has nothing at or
                    // after that position.
                    None => {
                        return Fetched {
                            acquired: true,
                            outcome: Outcome::Records {
                                records: Vec::new(),
                                next: None,
                            },
                        }
                    }
                },
                Err(err) => {
                    let (failure, message) = failure_of(&err);
                    return Fetched {
                        acquired: false,
                        outcome: Outcome::Failed {
                            op: Op::GetShardIterator,
                            failure,
                            message,
                            iterator: None,
                        },
                    };
                }
            }
        }
    };
    let answer = client
        .get_records()
        .shard_iterator(iterator.clone())
        .limit(limit.clamp(1, 1000))
        .send()
        .await;
    let outcome = match answer {
        Ok(out) => Outcome::Records {
            records: out.records.unwrap_or_default(),
            next: out.next_shard_iterator.filter(|i| !i.is_empty()),
        },
        Err(err) => {
            let (failure, message) = failure_of(&err);
            Outcome::Failed {
                op: Op::GetRecords,
                failure,
                message,
                iterator: Some(iterator),
            }
        }
    };
    Fetched { acquired, outcome }
}

/// A batch read but not yet accepted by the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    invalidations: Vec<Invalidation>,
    /// The batch's last sequence number: the checkpoint once accepted.
    last_sequence: Option<String>,
    /// Records in the batch, invalidations or not.
    records: usize,
    /// The newest creation time in the batch.
    newest: Option<SystemTime>,
    /// The shard ended with this batch.
    closed: bool,
}

impl Pending {
    fn from_records(records: &[Record], closed: bool) -> Self {
        let mut pending = Pending {
            invalidations: Vec::new(),
            last_sequence: None,
            records: records.len(),
            newest: None,
            closed,
        };
        for record in records {
            let stream = record.dynamodb();
            if let Some(sequence) = stream.and_then(StreamRecord::sequence_number) {
                pending.last_sequence = Some(sequence.to_owned());
            }
            if let Some(created) = stream.and_then(creation_time) {
                pending.newest = Some(pending.newest.map_or(created, |n| n.max(created)));
            }
            match map_record(record) {
                Mapped::Invalidation(invalidation) => pending.invalidations.push(invalidation),
                Mapped::Ignored => {}
                Mapped::Skipped(why) => tracing::warn!(
                    sequence = stream
                        .and_then(StreamRecord::sequence_number)
                        .unwrap_or("?"),
                    why,
                    "stream follower: record skipped"
                ),
            }
        }
        pending
    }
}

/// A stream record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mapped {
    Invalidation(Invalidation),
    /// Not an invalidation (an INSERT, or a MODIFY that did not raise `ver`).
    Ignored,
    /// Unreadable: why.
    Skipped(&'static str),
}

fn map_record(record: &Record) -> Mapped {
    let Some(stream) = record.dynamodb() else {
        return Mapped::Skipped("no `dynamodb` section");
    };
    let kind = match record.event_name() {
        Some(OperationType::Insert) => return Mapped::Ignored,
        Some(OperationType::Remove) => InvalidationKind::Removed,
        Some(OperationType::Modify) => {
            let old = stream.old_image().and_then(version);
            let new = stream.new_image().and_then(version);
            match (old, new) {
                (Some(old), Some(new)) if new <= old => return Mapped::Ignored,
                (_, new) => InvalidationKind::VersionRaised { new_ver: new },
            }
        }
        _ => return Mapped::Skipped("unknown event name"),
    };
    let Some(sid) = sid_of(stream) else {
        return Mapped::Skipped("no readable `sid` in Keys or images");
    };
    let Some(sequence_number) = stream.sequence_number() else {
        return Mapped::Skipped("no sequence number");
    };
    Mapped::Invalidation(Invalidation {
        sid,
        kind,
        approximate_creation: creation_time(stream),
        sequence_number: sequence_number.to_owned(),
    })
}

/// The key from `Keys`, else from the new image, else from the old one.
fn sid_of(stream: &StreamRecord) -> Option<[u8; SID_LEN]> {
    [stream.keys(), stream.new_image(), stream.old_image()]
        .into_iter()
        .flatten()
        .find_map(|map| match map.get(SID) {
            Some(AttributeValue::B(blob)) => <[u8; SID_LEN]>::try_from(blob.as_ref()).ok(),
            _ => None,
        })
}

fn version(image: &HashMap<String, AttributeValue>) -> Option<u64> {
    match image.get(VER) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn creation_time(stream: &StreamRecord) -> Option<SystemTime> {
    SystemTime::try_from(*stream.approximate_creation_date_time()?).ok()
}

/// What the follower knows of one shard.
#[derive(Debug)]
struct ShardState {
    parent: Option<String>,
    stream_arn: String,
    /// Where the next iterator is acquired from.
    resume: Position,
    iterator: Option<String>,
    pending: Option<Pending>,
    /// The last batch filled `records_per_call`: poll again at once.
    full: bool,
    /// The pending batch is the shard's last.
    closed_after_pending: bool,
    /// Closed and drained.
    done: bool,
    /// In the latest listing.
    listed: bool,
    failures: u32,
    next_poll_at: Instant,
    /// When the shard was last known applied up to date.
    ok_at: Option<SystemTime>,
    record_age: Duration,
}

/// Every shard the follower knows, by id.
#[derive(Debug, Default)]
struct Shards {
    map: BTreeMap<String, ShardState>,
}

impl Shards {
    fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    fn get_mut(&mut self, id: &str) -> &mut ShardState {
        // Ids come from `due`, over this same map, in the same round: the
        // map only changes in `merge`, between rounds.
        self.map
            .get_mut(id)
            .expect("a due shard id names a known shard")
    }

    /// Not done, and its parent (if any) is done or unknown.
    fn readable(&self, id: &str) -> bool {
        let Some(shard) = self.map.get(id) else {
            return false;
        };
        !shard.done
            && shard
                .parent
                .as_deref()
                .and_then(|parent| self.map.get(parent))
                .is_none_or(|parent| parent.done)
    }

    fn has_child_of(&self, parent: &str) -> bool {
        self.map
            .values()
            .any(|shard| shard.parent.as_deref() == Some(parent))
    }

    /// Readable shards whose poll time has come, in id order.
    fn due(&self, now: Instant) -> Vec<String> {
        self.map
            .iter()
            .filter(|(id, shard)| shard.next_poll_at <= now && self.readable(id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The earliest poll time of a readable shard.
    fn next_due(&self) -> Option<Instant> {
        self.map
            .iter()
            .filter(|(id, _)| self.readable(id))
            .map(|(_, shard)| shard.next_poll_at)
            .min()
    }

    /// The oldest `ok_at` and the largest record age over readable shards;
    /// `None` when no shard is readable.
    fn health(&self) -> Option<(SystemTime, Duration)> {
        let mut ok_at: Option<SystemTime> = None;
        let mut age = Duration::ZERO;
        let mut any = false;
        for (id, shard) in &self.map {
            if !self.readable(id) {
                continue;
            }
            any = true;
            let shard_ok = shard.ok_at?;
            ok_at = Some(ok_at.map_or(shard_ok, |o| o.min(shard_ok)));
            age = age.max(shard.record_age);
        }
        if any {
            ok_at.map(|o| (o, age))
        } else {
            None
        }
    }

    /// Add the listed shards not known yet (all or none: a failed checkpoint
    /// lookup adds nothing, so no child is read before an unregistered
    /// parent), mark which known ones are listed, and forget the done shards
    /// no longer listed. Returns the added shards and their start positions.
    fn merge(
        &mut self,
        arn: &str,
        listed: &[Listed],
        start: Start,
        mut checkpoint: impl FnMut(&str) -> Result<Option<String>, CheckpointError>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Vec<(String, Position)>, CheckpointError> {
        let ids: HashSet<&str> = listed.iter().map(|l| l.id.as_str()).collect();
        let mut added = Vec::new();
        for shard in listed {
            if self.map.contains_key(&shard.id) {
                continue;
            }
            let parent_listed = shard
                .parent
                .as_deref()
                .is_some_and(|parent| ids.contains(parent));
            let position = initial_position(checkpoint(&shard.id)?, parent_listed, start);
            added.push((shard, position));
        }
        // Shards of an earlier stream (the table's stream was replaced) are
        // not listed either: read until they end, then forgotten.
        for shard in self.map.values_mut() {
            shard.listed = false;
        }
        for id in &ids {
            if let Some(shard) = self.map.get_mut(*id) {
                shard.listed = true;
            }
        }
        self.map.retain(|_, shard| !shard.done || shard.listed);
        let mut report = Vec::with_capacity(added.len());
        for (shard, position) in added {
            report.push((shard.id.clone(), position.clone()));
            self.map.insert(
                shard.id.clone(),
                ShardState {
                    parent: shard.parent.clone(),
                    stream_arn: arn.to_owned(),
                    resume: position,
                    iterator: None,
                    pending: None,
                    full: false,
                    closed_after_pending: false,
                    done: false,
                    listed: true,
                    failures: 0,
                    next_poll_at: now,
                    // A shard found later starts as healthy as of now, so the
                    // lag does not jump while its first poll is under way.
                    ok_at: (!start.first).then_some(wall_now),
                    record_age: Duration::ZERO,
                },
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};

    const WARM: Start = Start {
        first: true,
        cold: false,
        cold_start: ColdStart::Latest,
    };
    const COLD: Start = Start {
        first: true,
        cold: true,
        cold_start: ColdStart::Latest,
    };
    const LATER: Start = Start {
        first: false,
        cold: true,
        cold_start: ColdStart::Latest,
    };

    fn listed(id: &str, parent: Option<&str>) -> Listed {
        Listed {
            id: id.into(),
            parent: parent.map(Into::into),
        }
    }

    fn no_checkpoints(_: &str) -> Result<Option<String>, CheckpointError> {
        Ok(None)
    }

    fn merged(listing: &[Listed], start: Start) -> (Shards, Vec<(String, Position)>) {
        let mut shards = Shards::default();
        let added = shards
            .merge(
                "arn",
                listing,
                start,
                no_checkpoints,
                Instant::now(),
                SystemTime::now(),
            )
            .unwrap();
        (shards, added)
    }

    #[test]
    fn a_checkpoint_always_wins() {
        for start in [WARM, COLD, LATER] {
            assert_eq!(
                initial_position(Some("123".into()), false, start),
                Position::After("123".into())
            );
        }
    }

    #[test]
    fn only_root_shards_of_a_cold_start_begin_at_the_cold_start_position() {
        assert_eq!(initial_position(None, false, COLD), Position::Latest);
        let trim = Start {
            cold_start: ColdStart::TrimHorizon,
            ..COLD
        };
        assert_eq!(initial_position(None, false, trim), Position::TrimHorizon);
        // A child listed at start-up: its parent is read from LATEST, so the
        // child must not skip anything written after that.
        assert_eq!(initial_position(None, true, COLD), Position::TrimHorizon);
        // Resuming (the store has checkpoints): never skip.
        assert_eq!(initial_position(None, false, WARM), Position::TrimHorizon);
        // Shards found after start-up (splits, rollovers): never skip.
        assert_eq!(initial_position(None, false, LATER), Position::TrimHorizon);
    }

    #[test]
    fn a_child_is_read_only_after_its_parent_is_drained() {
        let listing = [
            listed("a", None),
            listed("b", Some("a")),
            listed("c", Some("b")),
            listed("orphan", Some("expired")),
        ];
        let (mut shards, added) = merged(&listing, COLD);
        assert_eq!(
            added,
            vec![
                ("a".into(), Position::Latest),
                ("b".into(), Position::TrimHorizon),
                ("c".into(), Position::TrimHorizon),
                ("orphan".into(), Position::Latest),
            ]
        );
        let now = Instant::now();
        assert_eq!(shards.due(now), vec!["a".to_owned(), "orphan".to_owned()]);
        shards.get_mut("a").done = true;
        assert_eq!(shards.due(now), vec!["b".to_owned(), "orphan".to_owned()]);
        shards.get_mut("b").done = true;
        assert_eq!(shards.due(now), vec!["c".to_owned(), "orphan".to_owned()]);
    }

    #[test]
    fn a_child_whose_parent_expired_from_the_listing_is_readable() {
        let (mut shards, _) = merged(&[listed("a", None), listed("b", Some("a"))], COLD);
        assert!(!shards.readable("b"));
        // `a` not done but no longer listed: still read until it ends.
        shards
            .merge(
                "arn",
                &[listed("b", Some("a"))],
                LATER,
                no_checkpoints,
                Instant::now(),
                SystemTime::now(),
            )
            .unwrap();
        assert!(shards.contains("a"));
        assert!(!shards.readable("b"));
        // Done and unlisted: forgotten, so the child goes on.
        shards.get_mut("a").done = true;
        shards
            .merge(
                "arn",
                &[listed("b", Some("a"))],
                LATER,
                no_checkpoints,
                Instant::now(),
                SystemTime::now(),
            )
            .unwrap();
        assert!(!shards.contains("a"));
        assert!(shards.readable("b"));
    }

    #[test]
    fn a_failed_checkpoint_lookup_adds_no_shard() {
        let mut shards = Shards::default();
        let mut calls = 0;
        let result = shards.merge(
            "arn",
            &[listed("a", None), listed("b", Some("a"))],
            WARM,
            |id| {
                calls += 1;
                if id == "a" {
                    Err(CheckpointError("disk".into()))
                } else {
                    Ok(None)
                }
            },
            Instant::now(),
            SystemTime::now(),
        );
        assert!(result.is_err());
        assert!(!shards.contains("a") && !shards.contains("b"));
        assert!(calls >= 1);
    }

    #[test]
    fn expired_iterators_resume_without_skipping() {
        let after = Position::After("7".into());
        let r = recover(Failure::Expired, Op::GetRecords, &after);
        assert!(!r.keep_iterator && !r.gap && !r.done && !r.backoff);
        assert_eq!(r.resume, None, "re-acquired after the last accepted record");
        let r = recover(Failure::Expired, Op::GetRecords, &Position::Latest);
        assert_eq!(r.resume, Some(Position::TrimHorizon));
    }

    #[test]
    fn trimmed_data_is_a_gap_and_resumes_at_the_trim_horizon() {
        let after = Position::After("7".into());
        for op in [Op::GetShardIterator, Op::GetRecords] {
            let r = recover(Failure::Trimmed, op, &after);
            assert_eq!(r.resume, Some(Position::TrimHorizon));
            assert!(r.gap && !r.done && !r.keep_iterator);
        }
        // Nothing left at all: the shard is done rather than retried forever.
        let r = recover(
            Failure::Trimmed,
            Op::GetShardIterator,
            &Position::TrimHorizon,
        );
        assert!(r.gap && r.done);
    }

    #[test]
    fn throttling_keeps_the_iterator_and_backs_off() {
        for failure in [Failure::Throttled, Failure::Unavailable] {
            let r = recover(failure, Op::GetRecords, &Position::TrimHorizon);
            assert!(r.keep_iterator && r.backoff && !r.gap && !r.done);
        }
        let r = recover(Failure::Rejected, Op::GetRecords, &Position::TrimHorizon);
        assert!(!r.keep_iterator && r.backoff);
        let r = recover(Failure::Gone, Op::GetRecords, &Position::TrimHorizon);
        assert!(r.done && r.gap);
    }

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(
            failure_of_code("ExpiredIteratorException", false),
            Failure::Expired
        );
        assert_eq!(
            failure_of_code("TrimmedDataAccessException", false),
            Failure::Trimmed
        );
        assert_eq!(
            failure_of_code("ResourceNotFoundException", false),
            Failure::Gone
        );
        assert_eq!(
            failure_of_code("LimitExceededException", false),
            Failure::Throttled
        );
        assert_eq!(failure_of_code("Whatever", true), Failure::Unavailable);
        assert_eq!(
            failure_of_code("ValidationException", false),
            Failure::Rejected
        );
    }

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        assert_eq!(backoff(1, base, max, 1.0), base);
        assert_eq!(backoff(1, base, max, 0.0), base / 2);
        assert_eq!(backoff(3, base, max, 1.0), base * 4);
        assert_eq!(backoff(40, base, max, 1.0), max);
        assert_eq!(backoff(u32::MAX, base, max, 0.0), max / 2);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    fn sid_value(byte: u8) -> AttributeValue {
        AttributeValue::B(Blob::new(vec![byte; SID_LEN]))
    }

    fn image(sid: Option<u8>, ver: Option<&str>) -> HashMap<String, AttributeValue> {
        let mut map = HashMap::new();
        if let Some(sid) = sid {
            map.insert(SID.to_owned(), sid_value(sid));
        }
        if let Some(ver) = ver {
            map.insert(VER.to_owned(), AttributeValue::N(ver.into()));
        }
        map
    }

    fn record(
        event: OperationType,
        keys: Option<HashMap<String, AttributeValue>>,
        old: Option<HashMap<String, AttributeValue>>,
        new: Option<HashMap<String, AttributeValue>>,
    ) -> Record {
        let stream = StreamRecord::builder()
            .set_keys(keys)
            .set_old_image(old)
            .set_new_image(new)
            .sequence_number("100000000000000000042")
            .approximate_creation_date_time(DateTime::from_secs(1_700_000_000))
            .build();
        Record::builder().event_name(event).dynamodb(stream).build()
    }

    fn kind_of(record: &Record) -> Option<InvalidationKind> {
        match map_record(record) {
            Mapped::Invalidation(i) => Some(i.kind),
            _ => None,
        }
    }

    #[test]
    fn a_remove_is_an_invalidation_with_its_key_and_time() {
        let r = record(
            OperationType::Remove,
            Some(image(Some(1), None)),
            Some(image(Some(1), Some("3"))),
            None,
        );
        assert_eq!(
            map_record(&r),
            Mapped::Invalidation(Invalidation {
                sid: [1; SID_LEN],
                kind: InvalidationKind::Removed,
                approximate_creation: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                sequence_number: "100000000000000000042".into(),
            })
        );
    }

    #[test]
    fn an_insert_is_not_an_invalidation() {
        let r = record(
            OperationType::Insert,
            Some(image(Some(1), None)),
            None,
            Some(image(Some(1), Some("1"))),
        );
        assert_eq!(map_record(&r), Mapped::Ignored);
    }

    #[test]
    fn a_modify_invalidates_only_when_ver_rises() {
        let keys = Some(image(Some(2), None));
        let raised = record(
            OperationType::Modify,
            keys.clone(),
            Some(image(Some(2), Some("4"))),
            Some(image(Some(2), Some("5"))),
        );
        assert_eq!(
            kind_of(&raised),
            Some(InvalidationKind::VersionRaised { new_ver: Some(5) })
        );
        let same = record(
            OperationType::Modify,
            keys.clone(),
            Some(image(Some(2), Some("5"))),
            Some(image(Some(2), Some("5"))),
        );
        assert_eq!(map_record(&same), Mapped::Ignored);
        // NEW_IMAGE only: the node compares with what it caches.
        let new_only = record(
            OperationType::Modify,
            keys,
            None,
            Some(image(Some(2), Some("9"))),
        );
        assert_eq!(
            kind_of(&new_only),
            Some(InvalidationKind::VersionRaised { new_ver: Some(9) })
        );
    }

    #[test]
    fn a_keys_only_modify_invalidates_with_unknown_version() {
        let r = record(
            OperationType::Modify,
            Some(image(Some(3), None)),
            None,
            None,
        );
        assert_eq!(
            kind_of(&r),
            Some(InvalidationKind::VersionRaised { new_ver: None })
        );
    }

    #[test]
    fn the_key_falls_back_to_the_images_when_keys_lack_it() {
        let from_old = record(
            OperationType::Remove,
            None,
            Some(image(Some(4), Some("1"))),
            None,
        );
        let Mapped::Invalidation(i) = map_record(&from_old) else {
            panic!("expected an invalidation");
        };
        assert_eq!(i.sid, [4; SID_LEN]);
        let from_new = record(
            OperationType::Modify,
            Some(HashMap::new()),
            Some(image(Some(5), Some("1"))),
            Some(image(Some(5), Some("2"))),
        );
        let Mapped::Invalidation(i) = map_record(&from_new) else {
            panic!("expected an invalidation");
        };
        assert_eq!(i.sid, [5; SID_LEN]);
    }

    #[test]
    fn a_record_without_a_readable_key_is_skipped() {
        let mut bad = HashMap::new();
        bad.insert(SID.to_owned(), AttributeValue::B(Blob::new(vec![1, 2, 3])));
        let short = record(OperationType::Remove, Some(bad), None, None);
        assert!(matches!(map_record(&short), Mapped::Skipped(_)));
        let mut wrong_type = HashMap::new();
        wrong_type.insert(SID.to_owned(), AttributeValue::S("x".into()));
        let typed = record(OperationType::Remove, Some(wrong_type), None, None);
        assert!(matches!(map_record(&typed), Mapped::Skipped(_)));
        let none = record(OperationType::Remove, None, None, None);
        assert!(matches!(map_record(&none), Mapped::Skipped(_)));
        let no_section = Record::builder().event_name(OperationType::Remove).build();
        assert!(matches!(map_record(&no_section), Mapped::Skipped(_)));
    }

    #[test]
    fn a_batch_checkpoints_its_last_record_even_without_invalidations() {
        let insert = record(
            OperationType::Insert,
            Some(image(Some(1), None)),
            None,
            Some(image(Some(1), Some("1"))),
        );
        let pending = Pending::from_records(&[insert.clone(), insert], false);
        assert!(pending.invalidations.is_empty());
        assert_eq!(pending.records, 2);
        assert_eq!(
            pending.last_sequence.as_deref(),
            Some("100000000000000000042")
        );
    }

    #[test]
    fn lag_adds_record_age_to_the_time_since_the_last_good_poll() {
        let status = FollowerStatus::default();
        assert_eq!(status.lag(SystemTime::now()), None);
        let ok = UNIX_EPOCH + Duration::from_secs(1_000);
        status.set(ok, Duration::from_secs(2));
        assert_eq!(status.last_poll_ok_at(), Some(ok));
        assert_eq!(
            status.lag(ok + Duration::from_secs(3)),
            Some(Duration::from_secs(5))
        );
    }
}

//! The follow loop: [`FollowLoop`] carries what one round leaves to the next
//! (the current stream, the shards, when to list them again), and its steps
//! (`discover`, `poll_due`, `handle_fetched`, `publish`, `sleep`) are what
//! `StreamFollower::run` strings together.
//! [`Follower`] is the part that does not change while it runs: the clients,
//! the checkpoint store, the settings and the status handle; it hands batches
//! over (`deliver`) and checkpoints them once accepted (`checkpoint`).
//!
//! Every step that awaits returns `None` when the shutdown future completed
//! first: `run` then returns at once (a batch in the middle of its delivery
//! is not checkpointed, and is handed over again after a restart).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;

use super::checkpoints::{CheckpointError, Checkpoints};
use super::fetch::{backoff, fetch, jitter, list_shards, stream_arn, Fetched, Outcome};
use super::record::Pending;
use super::recovery::recover;
use super::settings::FollowerSettings;
use super::shards::{Listed, Position, ShardState, Shards, Start};
use super::status::FollowerStatus;
use crate::change::Change;
use crate::error::DynamoError;
use crate::invalidation::Invalidation;

/// What the follower talks to and reports through.
pub(super) struct Follower {
    pub(super) dynamodb: aws_sdk_dynamodb::Client,
    pub(super) streams: aws_sdk_dynamodbstreams::Client,
    pub(super) table: String,
    pub(super) checkpoints: Arc<dyn Checkpoints>,
    pub(super) settings: FollowerSettings,
    pub(super) status: FollowerStatus,
    /// The key of this follower's own heartbeat item (random per follower).
    pub(super) heartbeat_sid: [u8; crate::item::SID_LEN],
}

/// The follow loop's state between rounds.
pub(super) struct FollowLoop {
    follower: Follower,
    /// The table's current stream.
    arn: String,
    shards: Shards,
    /// No listing has succeeded yet.
    first_discovery: bool,
    discovery_failures: u32,
    next_discovery: Instant,
    /// Closed shards whose children have not been listed yet, and since when.
    awaiting_children: HashMap<String, Instant>,
}

/// `future`'s output, or `None` when `shutdown` completes first.
async fn unless_shutdown<S, T>(shutdown: Pin<&mut S>, future: impl Future<Output = T>) -> Option<T>
where
    S: Future,
{
    tokio::select! {
        _ = shutdown => None,
        out = future => Some(out),
    }
}

impl FollowLoop {
    /// Look up the table's stream, retrying with backoff while DynamoDB does
    /// not answer. `Ok(None)`: shutdown came first. An error: the table is
    /// missing or has no stream.
    pub(super) async fn start<S: Future>(
        follower: Follower,
        mut shutdown: Pin<&mut S>,
    ) -> Result<Option<FollowLoop>, DynamoError> {
        let mut failures = 0;
        let arn = loop {
            let Some(found) = unless_shutdown(shutdown.as_mut(), follower.stream_arn()).await
            else {
                return Ok(None);
            };
            match found {
                Ok(arn) => break arn,
                Err(err) if err.is_unavailable() => {
                    failures += 1;
                    tracing::warn!(%err, "stream follower: table not reachable yet");
                    count_error("describe");
                    let wait = follower.backoff(failures);
                    let slept = tokio::time::sleep(wait);
                    if unless_shutdown(shutdown.as_mut(), slept).await.is_none() {
                        return Ok(None);
                    }
                }
                Err(err) => return Err(err),
            }
        };
        tracing::info!(table = %follower.table, stream = %arn, "stream follower started");
        Ok(Some(FollowLoop {
            follower,
            arn,
            shards: Shards::default(),
            first_discovery: true,
            discovery_failures: 0,
            next_discovery: Instant::now(),
            awaiting_children: HashMap::new(),
        }))
    }

    /// Whether the shards are to be listed again now.
    pub(super) fn discovery_due(&self) -> bool {
        Instant::now() >= self.next_discovery
    }

    /// List the stream's shards and merge them in; on failure, list again
    /// after a backoff.
    pub(super) async fn discover<S: Future>(&mut self, shutdown: Pin<&mut S>) -> Option<()> {
        let listed = unless_shutdown(shutdown, self.follower.discover(&mut self.arn)).await?;
        let now = Instant::now();
        let merged = listed.and_then(|listed| {
            self.follower.merge(
                &mut self.shards,
                &self.arn,
                &listed,
                self.first_discovery,
                now,
            )
        });
        match merged {
            Ok(()) => {
                self.first_discovery = false;
                self.discovery_failures = 0;
                let every = self.follower.settings.discover_every;
                self.next_discovery = now + every;
                let shards = &self.shards;
                self.awaiting_children.retain(|parent, since| {
                    !shards.has_child_of(parent) && now.duration_since(*since) < every * 6
                });
                if !self.awaiting_children.is_empty() {
                    // A closed shard's children appear within moments.
                    self.next_discovery = self
                        .next_discovery
                        .min(now + self.follower.settings.poll_interval * 4);
                }
            }
            Err(err) => {
                self.discovery_failures += 1;
                tracing::warn!(%err, "stream follower: shard discovery failed");
                count_error("describe");
                self.next_discovery = now + self.follower.backoff(self.discovery_failures);
            }
        }
        Some(())
    }

    /// Start a round over the readable shards whose time has come: a shard
    /// with a pending batch hands it over again; every other one gets a fetch
    /// task.
    pub(super) async fn poll_due<F, Fut, E, S>(
        &mut self,
        sink: &mut F,
        mut shutdown: Pin<&mut S>,
    ) -> Option<JoinSet<(String, Fetched)>>
    where
        F: FnMut(Vec<Invalidation>, Vec<Change>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
        S: Future,
    {
        let now = Instant::now();
        let due = self.shards.due(now);
        let mut fetches = JoinSet::new();
        for id in due {
            let shard = self.shards.get_mut(&id);
            if shard.pending.is_some() {
                let delivered = self.follower.deliver(&id, shard, sink);
                let delivered = unless_shutdown(shutdown.as_mut(), delivered).await?;
                if delivered && self.follower.after_delivery(&id, shard) == Step::Closed {
                    self.closed(id);
                }
                continue;
            }
            let fetch = fetch(
                self.follower.streams.clone(),
                shard.stream_arn.clone(),
                id.clone(),
                shard.iterator.take(),
                shard.resume.clone(),
                self.follower.settings.records_per_call,
            );
            fetches.spawn(async move { (id, fetch.await) });
        }
        Some(fetches)
    }

    /// Process what the round's fetches returned, in shard-id order.
    pub(super) async fn handle_fetched<F, Fut, E, S>(
        &mut self,
        fetched: Vec<(String, Fetched)>,
        sink: &mut F,
        mut shutdown: Pin<&mut S>,
    ) -> Option<()>
    where
        F: FnMut(Vec<Invalidation>, Vec<Change>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
        S: Future,
    {
        for (id, fetched) in fetched {
            let shard = self.shards.get_mut(&id);
            let step = self.follower.handle(&id, shard, fetched, sink);
            if unless_shutdown(shutdown.as_mut(), step).await? == Step::Closed {
                self.closed(id);
            }
        }
        Some(())
    }

    /// Update the status handle (coverage, health) and the lag gauge.
    pub(super) fn publish(&self) {
        let status = &self.follower.status;
        status.set_positioned(!self.shards.awaiting_position());
        let Some((ok_at, record_age)) = self.shards.health() else {
            return;
        };
        status.set(ok_at, record_age);
        if let Some(lag) = status.lag(SystemTime::now()) {
            metrics::gauge!("edge_session_stream_lag_seconds").set(lag.as_secs_f64());
        }
    }

    /// Sleep until a shard is due, or discovery is.
    pub(super) async fn sleep<S: Future>(&self, shutdown: Pin<&mut S>) -> Option<()> {
        let wake = self
            .shards
            .next_due()
            .map_or(self.next_discovery, |due| due.min(self.next_discovery));
        unless_shutdown(shutdown, tokio::time::sleep_until(wake.into())).await
    }

    /// A shard closed and drained: its children are due, so list at once.
    fn closed(&mut self, id: String) {
        self.awaiting_children.insert(id, Instant::now());
        self.next_discovery = Instant::now();
    }
}

/// The results of a round's fetch tasks, in shard-id order.
pub(super) async fn collect<S: Future>(
    mut fetches: JoinSet<(String, Fetched)>,
    mut shutdown: Pin<&mut S>,
) -> Option<Vec<(String, Fetched)>> {
    let mut results = Vec::with_capacity(fetches.len());
    loop {
        match unless_shutdown(shutdown.as_mut(), fetches.join_next()).await? {
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
    Some(results)
}

impl Follower {
    /// The table's current stream ARN.
    async fn stream_arn(&self) -> Result<String, DynamoError> {
        stream_arn(&self.dynamodb, &self.table).await
    }

    /// The current stream ARN (updated in place) and its complete shard list.
    async fn discover(&self, arn: &mut String) -> Result<Vec<Listed>, DiscoveryError> {
        let latest = self.stream_arn().await?;
        if latest != *arn {
            tracing::info!(old = %arn, new = %latest, "stream follower: the table has a new stream");
            // Writes between the two streams are in neither.
            self.status.raise_covered_from(SystemTime::now());
            *arn = latest;
        }
        Ok(list_shards(&self.streams, arn).await?)
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
        let unread = !first && shards.unread_parent(listed);
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
        if unread {
            tracing::warn!("stream follower: a shard ended before it was seen; revocations in it are covered only by the lease");
            self.status.gap();
            self.status.raise_covered_from(SystemTime::now());
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
        F: FnMut(Vec<Invalidation>, Vec<Change>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        if fetched.acquired {
            if shard.uncovered {
                // The position just taken covers writes from now on (the
                // iterator's answer came before this instant).
                shard.uncovered = false;
                self.status.raise_covered_from(SystemTime::now());
            }
            if shard.resume == Position::Latest {
                shard.resume = Position::TrimHorizon;
            }
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
                shard.pending = Some(Pending::from_records(
                    &records,
                    closed,
                    self.settings.changes,
                ));
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
                    // What was read before is no longer vouched for; the
                    // next iterator's acquisition raises it again.
                    self.status.raise_covered_from(SystemTime::now());
                    shard.uncovered = !action.done;
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
        F: FnMut(Vec<Invalidation>, Vec<Change>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let Some(pending) = &shard.pending else {
            return true;
        };
        if !pending.invalidations.is_empty() || !pending.changes.is_empty() {
            let handed = sink(pending.invalidations.clone(), pending.changes.clone());
            if let Err(err) = handed.await {
                tracing::warn!(shard = %id, %err, "stream follower: the consumer failed a batch; it will be handed over again");
                count_error("sink");
                shard.failures += 1;
                shard.next_poll_at = Instant::now() + self.backoff(shard.failures);
                return false;
            }
        }
        self.checkpoint(id, shard);
        true
    }

    /// The consumer accepted the shard's pending batch: store its last
    /// sequence number as the shard's checkpoint and move the shard past it.
    fn checkpoint(&self, id: &str, shard: &mut ShardState) {
        let Some(pending) = shard.pending.take() else {
            return;
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
        for (sid, written_ms) in &pending.heartbeats {
            if *sid == self.heartbeat_sid {
                self.status.heartbeat_returned(*written_ms);
            }
        }
        metrics::counter!("edge_session_stream_records_total").increment(pending.records as u64);
        metrics::counter!("edge_session_stream_invalidations_total")
            .increment(pending.invalidations.len() as u64);
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
    Store(#[from] DynamoError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What one round did with a shard.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Polled,
    Closed,
}

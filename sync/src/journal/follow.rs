//! [`JournalFollower`]: reads the change journal (module docs) and hands the
//! node every [`Invalidation`] written by any node, as the stream follower
//! does, through the same consumer and the same [`FollowerStatus`].
//!
//! # Guarantees
//!
//! - **Window.** Each poll reads every entry stamped at or after the last
//!   good poll's start minus `settle` (a query per partition and minute),
//!   skips the entries it already handed over, and hands the rest over one
//!   query page at a time (a key's entries are all in one partition, in
//!   stamp order). A failed poll or a refused batch does not move the
//!   window: the next poll reads it all again. Memory holds one page and
//!   the keys of the entries inside the next window.
//! - **Checkpoint.** Once a batch is accepted, the start of the window the
//!   next poll will read is stored under [`JOURNAL_CHECKPOINT`]. A restart
//!   reads from there: nothing accepted is lost, some of it is handed over
//!   again (applying an invalidation twice is harmless).
//! - **Coverage** ([`FollowerStatus::covered_since`]): `None` until the
//!   first poll succeeds. A node resuming from a checkpoint younger than
//!   the retention covers everything; a cold start (no checkpoint) or one
//!   older than the retention (its entries may be gone: counted as a gap)
//!   covers from the moment it started.
//! - **Health.** Every accepted poll records its start as the last good
//!   poll, so the lag is the time since one, and the node's lease shortens
//!   when polls fail for longer than its threshold.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use super::{bucket_key, parse, unix_ms, JournalSettings, BUCKET, BUCKET_MS, JOURNAL_INDEX, STAMP};
use crate::error::{classify, DynamoError};
use crate::invalidation::Invalidation;
use crate::item::SID_LEN;
use crate::stream::{Checkpoints, FollowerStatus};

/// The key under which the follower keeps its position in [`Checkpoints`].
pub const JOURNAL_CHECKPOINT: &str = "journal";

/// Follows the table's change journal; see the [module docs](self).
pub struct JournalFollower {
    client: aws_sdk_dynamodb::Client,
    table: String,
    checkpoints: Arc<dyn Checkpoints>,
    settings: JournalSettings,
    status: FollowerStatus,
}

impl std::fmt::Debug for JournalFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalFollower")
            .field("table", &self.table)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Entries already handed over, kept while they can still be read again.
#[derive(Default)]
struct Seen {
    keys: HashMap<[u8; SID_LEN], u64>,
    order: VecDeque<(u64, [u8; SID_LEN])>,
}

impl Seen {
    fn contains(&self, own: &[u8; SID_LEN]) -> bool {
        self.keys.contains_key(own)
    }

    fn insert(&mut self, own: [u8; SID_LEN], stamp: u64) {
        if self.keys.insert(own, stamp).is_none() {
            self.order.push_back((stamp, own));
        }
    }

    /// Forget entries stamped before `from`: no window reads them again.
    fn forget_before(&mut self, from: u64) {
        // Entries arrive roughly in stamp order; one stamped late stays
        // until the entries before it go, which only delays its removal.
        while let Some(&(stamp, own)) = self.order.front() {
            if stamp >= from {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&own);
        }
    }
}

impl JournalFollower {
    /// A follower of `table`'s journal, keeping its position in `checkpoints`.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        checkpoints: Arc<dyn Checkpoints>,
        settings: JournalSettings,
    ) -> Self {
        JournalFollower {
            client,
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

    /// Follow the journal until `shutdown` completes, handing each batch of
    /// invalidations to `sink`; see [`StreamFollower::run`](crate::StreamFollower::run).
    /// Returns an error only when the checkpoint store cannot be read at
    /// start-up.
    pub async fn run<F, Fut, E>(self, mut sink: F, shutdown: impl Future) -> Result<(), DynamoError>
    where
        F: FnMut(Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let started = SystemTime::now();
        let mut from = self.start_position(started)?;
        let mut seen = Seen::default();
        let mut failures = 0u32;
        loop {
            let poll_start = SystemTime::now();
            let keep_from = unix_ms(poll_start).saturating_sub(self.settle_ms());
            let polled = tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                polled = self.poll(from, keep_from, &mut seen, &mut sink) => polled,
            };
            let pause = match polled {
                Ok(()) => {
                    failures = 0;
                    from = keep_from;
                    seen.forget_before(from);
                    self.accepted(poll_start, from);
                    self.settings.poll_interval
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%err, failures, "journal poll failed; retrying");
                    metrics::counter!("edge_session_stream_errors_total", "kind" => "journal")
                        .increment(1);
                    crate::stream::backoff_after(
                        failures,
                        self.settings.backoff_base,
                        self.settings.backoff_max,
                    )
                }
            };
            if let Some(lag) = self.status.lag(SystemTime::now()) {
                metrics::gauge!("edge_session_stream_lag_seconds").set(lag.as_secs_f64());
            }
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn settle_ms(&self) -> u64 {
        self.settings.settle.as_millis() as u64
    }

    /// Where the first poll's window starts, and what that covers.
    fn start_position(&self, started: SystemTime) -> Result<u64, DynamoError> {
        let now = unix_ms(started);
        let checkpoint = self
            .checkpoints
            .get(JOURNAL_CHECKPOINT)
            .map_err(|e| DynamoError::new("journal", crate::ErrorKind::Malformed, e.to_string()))?
            .and_then(|s| s.parse::<u64>().ok());
        let retention = self.settings.retention.as_millis() as u64;
        match checkpoint {
            Some(at) if now.saturating_sub(at) <= retention => Ok(at),
            stale => {
                if stale.is_some() {
                    tracing::warn!(
                        "journal position older than its retention: re-checking cached sessions"
                    );
                    self.status.gap();
                }
                // Covered from the start: a record read from DynamoDB before
                // it may have been revoked by an entry this node never reads.
                self.status.raise_covered_from(started);
                Ok(now.saturating_sub(self.settle_ms()))
            }
        }
    }

    /// The poll's batch was accepted (or empty): record the health and the
    /// position a restart resumes from.
    fn accepted(&self, poll_start: SystemTime, from: u64) {
        self.status.set(poll_start, Duration::ZERO);
        self.status.set_positioned(true);
        if let Err(err) = self.checkpoints.put(JOURNAL_CHECKPOINT, &from.to_string()) {
            tracing::warn!(%err, "journal checkpoint not stored; a restart re-reads more");
        }
    }

    /// One poll: read the window from `from`, page by page, and hand over
    /// each page's new entries as a batch. Entries stamped before
    /// `keep_from` (the next window's start) are not remembered: no later
    /// poll reads them again, so a long catch-up holds one page at a time.
    async fn poll<F, Fut, E>(
        &self,
        from: u64,
        keep_from: u64,
        seen: &mut Seen,
        sink: &mut F,
    ) -> Result<(), DynamoError>
    where
        F: FnMut(Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        // Writers' clocks may run ahead of this one by up to `settle`.
        let until = unix_ms(SystemTime::now()).saturating_add(self.settle_ms());
        for bucket in from / BUCKET_MS..=until / BUCKET_MS {
            // A key's entries all go to one partition, in stamp order.
            for partition in 0..self.settings.partitions.max(1) {
                let bucket = bucket_key(bucket, partition);
                let mut start = None;
                loop {
                    let (entries, next) = self.page(&bucket, from, start.take()).await?;
                    let fresh: Vec<_> = entries
                        .into_iter()
                        .filter(|(own, _)| !seen.contains(own))
                        .collect();
                    self.deliver(&fresh, sink).await?;
                    for (own, inv) in fresh {
                        let stamp = stamp_of(&inv);
                        if stamp >= keep_from {
                            seen.insert(own, stamp);
                        }
                    }
                    match next {
                        Some(key) => start = Some(key),
                        None => break,
                    }
                }
            }
        }
        Ok(())
    }

    /// Hand `fresh` over (nothing when empty); a refusal fails the poll.
    async fn deliver<F, Fut, E>(
        &self,
        fresh: &[([u8; SID_LEN], Invalidation)],
        sink: &mut F,
    ) -> Result<(), DynamoError>
    where
        F: FnMut(Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        if fresh.is_empty() {
            return Ok(());
        }
        let batch: Vec<Invalidation> = fresh.iter().map(|(_, inv)| inv.clone()).collect();
        let count = batch.len() as u64;
        sink(batch).await.map_err(|err| {
            DynamoError::new(
                "journal",
                crate::ErrorKind::Unavailable,
                format!("the node did not apply a batch: {err}"),
            )
        })?;
        metrics::counter!("edge_session_stream_records_total").increment(count);
        metrics::counter!("edge_session_stream_invalidations_total").increment(count);
        Ok(())
    }

    /// One page of `bucket`'s entries stamped at or after `from`, in stamp
    /// order (eventually consistent: a GSI offers nothing else), and where
    /// the next page starts.
    async fn page(
        &self,
        bucket: &str,
        from: u64,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<Page, DynamoError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(JOURNAL_INDEX)
            .key_condition_expression("#b = :b AND #t >= :t")
            .expression_attribute_names("#b", BUCKET)
            .expression_attribute_names("#t", STAMP)
            .expression_attribute_values(":b", AttributeValue::S(bucket.to_owned()))
            .expression_attribute_values(":t", AttributeValue::N(from.to_string()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|err| classify("journal", &err))?;
        let mut entries = Vec::with_capacity(out.items().len());
        for map in out.items() {
            match parse(map) {
                Some(entry) => entries.push(entry),
                None => tracing::warn!("skipping a journal-index item that is no entry"),
            }
        }
        let next = out.last_evaluated_key.filter(|key| !key.is_empty());
        Ok((entries, next))
    }
}

/// A page of entries and where the next one starts.
type Page = (
    Vec<([u8; SID_LEN], Invalidation)>,
    Option<HashMap<String, AttributeValue>>,
);

/// An entry's stamp, milliseconds since the epoch.
fn stamp_of(inv: &Invalidation) -> u64 {
    inv.approximate_creation
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_entries_are_forgotten_once_no_window_reads_them() {
        let mut seen = Seen::default();
        seen.insert([1; SID_LEN], 100);
        seen.insert([2; SID_LEN], 200);
        seen.insert([1; SID_LEN], 100);
        assert_eq!(seen.order.len(), 2, "an entry is kept once");
        seen.forget_before(150);
        assert!(!seen.contains(&[1; SID_LEN]));
        assert!(seen.contains(&[2; SID_LEN]));
    }
}

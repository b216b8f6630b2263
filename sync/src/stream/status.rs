//! [`FollowerStatus`]: the follower's health as others read it (the last
//! good poll, the age of the last accepted record, the lag, the gaps), and
//! what its stream positions cover ([`FollowerStatus::covered_since`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Milliseconds since the epoch from which the positions cover every
    /// shard (0: all the stream holds). Only ever raised.
    covered_from_ms: AtomicU64,
    /// Every shard's position is taken (no `LATEST` iterator still to
    /// acquire); until then nothing is covered.
    positioned: AtomicBool,
    /// The follower writes heartbeats, so their return is its liveness.
    heartbeat_on: AtomicBool,
    /// Milliseconds since the epoch (this node's clock) at which the newest
    /// heartbeat that came back through the stream was written; 0 = none.
    heartbeat_written_ms: AtomicU64,
}

impl Default for StatusInner {
    fn default() -> Self {
        StatusInner {
            last_poll_ok_ms: AtomicU64::new(0),
            last_record_age_ms: AtomicU64::new(u64::MAX),
            gaps: AtomicU64::new(0),
            covered_from_ms: AtomicU64::new(0),
            positioned: AtomicBool::new(false),
            heartbeat_on: AtomicBool::new(false),
            heartbeat_written_ms: AtomicU64::new(0),
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

    /// The instant from which the follower's stream positions cover every
    /// shard: every write made at or after it is in a record the follower
    /// has read or will read. So a record read from DynamoDB at or after it
    /// can only go stale through something the follower delivers; one read
    /// before it may have been revoked by a write in no record this follower
    /// will ever see, and only a re-read catches that.
    ///
    /// `None` until every shard's position is taken (a cold start's `LATEST`
    /// iterators acquired). `Some(UNIX_EPOCH)` when the positions cover all
    /// the stream holds (checkpoints, `TRIM_HORIZON`). Raised to the moment
    /// after a `LATEST` iterator was acquired, when records were lost to the
    /// stream's retention (and again when the shard's new iterator is
    /// acquired), when a shard appears whose parent this follower never
    /// read, and when the table's stream is replaced. Never lowered.
    pub fn covered_since(&self) -> Option<SystemTime> {
        if !self.inner.positioned.load(Ordering::SeqCst) {
            return None;
        }
        let ms = self.inner.covered_from_ms.load(Ordering::SeqCst);
        Some(UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Nothing before `at` is covered any more (rounded up to the next
    /// millisecond, so a read in the same millisecond is not counted in).
    pub(crate) fn raise_covered_from(&self, at: SystemTime) {
        let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| {
            let ms = d.as_millis() as u64;
            if d.subsec_nanos() % 1_000_000 == 0 {
                ms
            } else {
                ms.saturating_add(1)
            }
        });
        self.inner.covered_from_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// Whether every shard's position is taken.
    pub(crate) fn set_positioned(&self, positioned: bool) {
        self.inner.positioned.store(positioned, Ordering::SeqCst);
    }

    /// Record that every readable shard was applied up to date at `ok_at`,
    /// the newest accepted record being `record_age` old then.
    pub(crate) fn set(&self, ok_at: SystemTime, record_age: Duration) {
        let ms = ok_at
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis().max(1) as u64);
        self.inner.last_poll_ok_ms.store(ms, Ordering::Relaxed);
        self.inner.last_record_age_ms.store(
            (record_age.as_millis() as u64).min(u64::MAX - 1),
            Ordering::Relaxed,
        );
    }

    /// Whether this follower writes heartbeats: then only their return
    /// through the stream says it is live ([`heartbeat_age`](Self::heartbeat_age)).
    pub fn heartbeat_on(&self) -> bool {
        self.inner.heartbeat_on.load(Ordering::Relaxed)
    }

    /// How long ago, at `now`, the newest heartbeat that came back through
    /// the stream and was accepted had been written: every write committed
    /// before that instant in the heartbeat's shard has been handed over.
    /// Both instants are this node's clock, so another node's skew cannot
    /// move it. `None` before the first one came back.
    pub fn heartbeat_age(&self, now: SystemTime) -> Option<Duration> {
        match self.inner.heartbeat_written_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                now.duration_since(UNIX_EPOCH + Duration::from_millis(ms))
                    .unwrap_or(Duration::ZERO),
            ),
        }
    }

    pub(crate) fn set_heartbeat_on(&self) {
        self.inner.heartbeat_on.store(true, Ordering::Relaxed);
    }

    /// A heartbeat written at `written_ms` came back and was accepted.
    pub(crate) fn heartbeat_returned(&self, written_ms: u64) {
        self.inner
            .heartbeat_written_ms
            .fetch_max(written_ms, Ordering::Relaxed);
    }

    /// Count one gap.
    pub(crate) fn gap(&self) {
        self.inner.gaps.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn coverage_starts_once_positioned_and_only_moves_forward() {
        let status = FollowerStatus::default();
        assert_eq!(status.covered_since(), None, "no position taken yet");
        let at = UNIX_EPOCH + Duration::from_millis(5_000);
        status.raise_covered_from(at);
        assert_eq!(status.covered_since(), None);
        status.set_positioned(true);
        assert_eq!(status.covered_since(), Some(at));
        status.raise_covered_from(UNIX_EPOCH + Duration::from_millis(1_000));
        assert_eq!(status.covered_since(), Some(at), "never lowered");
        status.raise_covered_from(at + Duration::from_micros(1));
        assert_eq!(
            status.covered_since(),
            Some(at + Duration::from_millis(1)),
            "rounded up"
        );
        let fresh = FollowerStatus::default();
        fresh.set_positioned(true);
        assert_eq!(
            fresh.covered_since(),
            Some(UNIX_EPOCH),
            "all the stream holds"
        );
    }
}

//! [`FollowerStatus`]: the follower's health as others read it (the last
//! good poll, the age of the last accepted record, the lag, the gaps).

use std::sync::atomic::{AtomicU64, Ordering};
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

    /// Record that every readable shard was applied up to date at `ok_at`,
    /// the newest accepted record being `record_age` old then.
    pub(super) fn set(&self, ok_at: SystemTime, record_age: Duration) {
        let ms = ok_at
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis().max(1) as u64);
        self.inner.last_poll_ok_ms.store(ms, Ordering::Relaxed);
        self.inner.last_record_age_ms.store(
            (record_age.as_millis() as u64).min(u64::MAX - 1),
            Ordering::Relaxed,
        );
    }

    /// Count one gap.
    pub(super) fn gap(&self) {
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
}

//! The lease: how long a cached record DynamoDB confirmed may be served
//! before it is re-checked. It is set from `cache.revalidate_after_ms`,
//! shortened while the stream follower lags (`set_revalidate_after_ms`), and at most the
//! short lease for a record confirmed before the follower's stream position
//! (`set_coverage`), which nothing the follower reads would revoke
//! (docs/design.md, tier rule 6). Read on every cache hit (`lease_at`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::TieredStore;
use crate::record::UnixMillis;

impl TieredStore {
    /// The lease in force, in milliseconds: a cached record confirmed longer
    /// ago than this is re-checked against DynamoDB before it is served.
    pub fn revalidate_after_ms(&self) -> u64 {
        self.inner.revalidate_after_ms.load(Ordering::Relaxed)
    }

    /// The lease of a cached record DynamoDB confirmed at `confirmed_at`:
    /// [`revalidate_after_ms`](Self::revalidate_after_ms) if the stream follower's position
    /// covers it (confirmed at or after [`set_coverage`](Self::set_coverage)'s
    /// `since`), else at most the short lease. Two atomic loads: the hot path.
    pub fn lease_at(&self, confirmed_at: UnixMillis) -> u64 {
        let lease = self.revalidate_after_ms();
        let coverage = &self.inner.coverage;
        if confirmed_at >= coverage.since_ms.load(Ordering::Relaxed) {
            lease
        } else {
            lease.min(coverage.revalidate_after_lagging_ms.load(Ordering::Relaxed))
        }
    }

    /// Which cached records the stream follower's position covers: those
    /// confirmed at or after `since` (`None`: none, the follower has not
    /// taken its position yet). A record confirmed earlier may have been
    /// revoked by a write in no record the follower will read, so it is
    /// served for at most `revalidate_after_lagging_ms` before it is re-checked. Without
    /// a follower (never called) every record is covered: the lease alone is
    /// the bound.
    pub fn set_coverage(&self, since: Option<UnixMillis>, revalidate_after_lagging_ms: u64) {
        let coverage = &self.inner.coverage;
        coverage
            .revalidate_after_lagging_ms
            .store(revalidate_after_lagging_ms, Ordering::Relaxed);
        coverage
            .since_ms
            .store(since.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Change the lease (the node shortens it while the stream follower
    /// lags, and restores it when the follower catches up).
    pub fn set_revalidate_after_ms(&self, ms: u64) {
        self.inner.revalidate_after_ms.store(ms, Ordering::Relaxed);
        metrics::gauge!("edge_session_lease_seconds").set(ms as f64 / 1000.0);
    }
}

/// What the stream follower's position covers (see
/// [`TieredStore::set_coverage`]).
#[derive(Debug)]
pub(super) struct Coverage {
    /// Records confirmed at or after this (ms) are covered; `u64::MAX`: none.
    since_ms: AtomicU64,
    /// The lease of a record confirmed before `since_ms`.
    revalidate_after_lagging_ms: AtomicU64,
}

impl Default for Coverage {
    /// Every record covered: no follower, the lease alone.
    fn default() -> Self {
        Coverage {
            since_ms: AtomicU64::new(0),
            revalidate_after_lagging_ms: AtomicU64::new(u64::MAX),
        }
    }
}

//! Cross-node coherence: the node side of the follower, and the lease
//! watchdog.
//!
//! A node with `stream.source = "stream"` (the default) follows the table's
//! stream itself ([`StreamFollower`], in `sync/`; with `"relays"` the relays
//! do, `relay`) and applies what other nodes did ([`apply`]): a removal
//! becomes a local tombstone (and evicts the cached record), a raised `ver`
//! evicts a stale copy or advances a user's revocation epoch. A batch is
//! flushed to sled before the follower checkpoints it, so a restart resumes
//! after the last applied entry. Why the stream: docs/design.md,
//! "Coherence".
//!
//! The lease is the safety net. While the follower is healthy (its last
//! successful poll, and the newest record it applied, are younger than
//! `stream.lag_threshold_ms`, and so is the newest heartbeat of its own that
//! came back through the stream, when it writes them) the node serves cached
//! records for up to
//! `cache.revalidate_after_ms` without asking DynamoDB. When it lags, the
//! watchdog shortens the lease to `cache.revalidate_after_lagging_ms`, and
//! restores it when the follower catches up.
//!
//! The long lease is only for what the stream covers (docs/design.md, tier rule 6): a record
//! confirmed before the follower's position ([`FollowerStatus::covered_since`]:
//! a cold start's `LATEST` iterators, records lost to retention, a shard whose
//! parent was never read, a replaced stream) may have been revoked by a write
//! in no record this node will read. The watchdog hands that moment to the
//! store ([`TieredStore::set_coverage`]), which serves such a record for at
//! most `cache.revalidate_after_lagging_ms` before re-reading it; once
//! re-read it is covered. Until the position is taken nothing is covered.
//!
//! So another node's revocation is refused here within:
//! - the follower's delivery time (about `stream.poll_interval_ms` plus one
//!   round trip) while it is healthy and the record was confirmed after the
//!   follower's position;
//! - `cache.revalidate_after_lagging_ms` (+ one watchdog tick, 250 ms, after
//!   a gap) for a record confirmed before that position: the revocation
//!   during a node's cold start;
//! - `stream.lag_threshold_ms` + `cache.revalidate_after_lagging_ms` + one
//!   watchdog tick (250 ms) when the follower stalls or breaks;
//! - `cache.revalidate_after_ms` in every case (with the follower disabled,
//!   this is the bound).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::record::UnixMillis;
use crate::store::TieredStore;
use crate::token::StorageKey;
use edge_session_sync::{
    Checkpoints, ClientSettings, ColdStart, FollowerSettings, FollowerStatus, Invalidation,
    InvalidationKind, StreamFollower,
};

/// Coherence settings.
#[derive(Debug, Clone, Copy)]
pub struct CoherenceSettings {
    /// Pause after an empty read of a shard.
    pub poll_interval: Duration,
    /// The stream follower's heartbeat interval (`None`: no heartbeat).
    pub heartbeat_every: Option<Duration>,
    /// The follower lags when its last good poll or newest record is older.
    pub lag_threshold_ms: u64,
    /// The lease while the follower is healthy: `cache.revalidate_after_ms`.
    pub revalidate_after_ms: u64,
    /// The lease while it lags: `cache.revalidate_after_lagging_ms`.
    pub revalidate_after_lagging_ms: u64,
}

/// The lease the node should use, given the follower's health. Pure.
pub fn lease_for(
    last_poll_ok_age_ms: Option<u64>,
    last_record_age_ms: Option<u64>,
    settings: &CoherenceSettings,
) -> u64 {
    let healthy = last_poll_ok_age_ms.is_some_and(|age| age <= settings.lag_threshold_ms)
        && last_record_age_ms.is_none_or(|age| age <= settings.lag_threshold_ms);
    if healthy {
        settings.revalidate_after_ms
    } else {
        settings
            .revalidate_after_lagging_ms
            .min(settings.revalidate_after_ms)
    }
}

/// `at` in milliseconds since the epoch (the store's clock, `http::now`).
pub(crate) fn unix_ms(at: SystemTime) -> UnixMillis {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn age_ms(at: Option<SystemTime>, now: SystemTime) -> Option<u64> {
    at.map(|t| now.duration_since(t).map_or(0, |d| d.as_millis() as u64))
}

/// The lease the node should use at `now`, given its follower's `status`:
/// `lease_for` of the follower's health as the watchdog reads it.
/// A follower that writes heartbeats is live only while one came back
/// within `stream.lag_threshold_ms`, whatever its polls say.
pub fn lease_of(status: &FollowerStatus, now: SystemTime, settings: &CoherenceSettings) -> u64 {
    let heartbeat_late = status.heartbeat_on()
        && status
            .heartbeat_age(now)
            .is_none_or(|age| age.as_millis() as u64 > settings.lag_threshold_ms);
    if heartbeat_late {
        return settings
            .revalidate_after_lagging_ms
            .min(settings.revalidate_after_ms);
    }
    lease_for(
        age_ms(status.last_poll_ok_at(), now),
        status.last_record_age().map(|d| d.as_millis() as u64),
        settings,
    )
}

/// Follow the stream and keep the lease in step with the follower's health,
/// until `shutdown` resolves.
pub async fn run(
    store: TieredStore,
    client: ClientSettings,
    settings: CoherenceSettings,
    clock: fn() -> UnixMillis,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    // Nothing cached so far is covered by a stream position yet.
    let revalidate_after_lagging_ms = settings
        .revalidate_after_lagging_ms
        .min(settings.revalidate_after_ms);
    store.set_coverage(None, revalidate_after_lagging_ms);
    let checkpoints = Arc::new(store.cache().clone()) as Arc<dyn Checkpoints>;
    let table = store.dynamo().table().to_owned();
    let sink_store = store.clone();
    let sink = move |batch: Vec<Invalidation>| apply(sink_store.clone(), batch, clock);
    // A persisted cache may hold sessions revoked while this node was down:
    // with no checkpoint yet, read what the stream still holds.
    let cold_start = if !store.cache().is_empty() {
        ColdStart::TrimHorizon
    } else {
        ColdStart::Latest
    };
    let follower = StreamFollower::new(
        client.build().await,
        client.build_streams().await,
        table,
        checkpoints,
        FollowerSettings {
            poll_interval: settings.poll_interval,
            heartbeat_every: settings.heartbeat_every,
            cold_start,
            ..FollowerSettings::default()
        },
    );
    let status = follower.status();
    let follow = follower.run(sink, shutdown);
    let (stop_watchdog, watchdog_stopped) = tokio::sync::oneshot::channel::<()>();
    let watchdog = tokio::spawn(watch(store.clone(), status, settings, watchdog_stopped));
    let result = follow.await;
    if let Err(err) = result {
        tracing::error!(%err, "the follower stopped; the lease alone bounds staleness now");
        store.set_revalidate_after_ms(
            settings
                .revalidate_after_lagging_ms
                .min(settings.revalidate_after_ms),
        );
    }
    let _ = stop_watchdog.send(());
    let _ = watchdog.await;
}

/// Apply one batch of what other nodes did to this node's cache, durably
/// (flushed before the follower moves its position past it).
pub async fn apply(
    store: TieredStore,
    batch: Vec<Invalidation>,
    clock: fn() -> UnixMillis,
) -> Result<(), crate::store::Error> {
    let now = clock();
    for inv in &batch {
        let key = StorageKey(inv.sid);
        match inv.kind {
            InvalidationKind::Removed => store.apply_removed(key, now)?,
            InvalidationKind::VersionRaised { new_ver } => {
                store.apply_version_raised(key, new_ver, now)?;
            }
            _ => store.cache().evict(&key)?,
        }
    }
    metrics::counter!("edge_session_stream_invalidations_applied_total")
        .increment(batch.len() as u64);
    store.cache().flush().await?;
    Ok(())
}

async fn watch(
    store: TieredStore,
    status: FollowerStatus,
    settings: CoherenceSettings,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut gaps = status.gaps();
    let revalidate_after_lagging_ms = settings
        .revalidate_after_lagging_ms
        .min(settings.revalidate_after_ms);
    let mut covered = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now();
        // Records lost to the stream's retention (a gap) raise the
        // follower's coverage: every record confirmed before is re-checked
        // after the short lease.
        if status.gaps() != gaps {
            gaps = status.gaps();
            tracing::warn!(
                gaps,
                "stream records were lost to retention; re-checking cached sessions"
            );
        }
        let since = status.covered_since().map(unix_ms);
        if since != covered {
            covered = since;
            store.set_coverage(since, revalidate_after_lagging_ms);
            tracing::info!(
                covered_since_ms = since,
                "stream coverage moved: cached sessions confirmed before it are re-checked"
            );
        }
        if let Some(age) = status.heartbeat_age(now) {
            metrics::gauge!("edge_session_stream_heartbeat_age_seconds").set(age.as_secs_f64());
        }
        let lease = lease_of(&status, now, &settings);
        if lease != store.revalidate_after_ms() {
            if lease < settings.revalidate_after_ms && status.last_poll_ok_at().is_none() {
                tracing::info!(
                    lease_ms = lease,
                    "stream follower starting: short lease until its first poll"
                );
            } else if lease < settings.revalidate_after_ms {
                tracing::warn!(lease_ms = lease, "stream follower lagging: lease shortened");
            } else {
                tracing::info!(lease_ms = lease, "stream follower healthy: lease restored");
            }
            store.set_revalidate_after_ms(lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: CoherenceSettings = CoherenceSettings {
        poll_interval: Duration::from_millis(250),
        heartbeat_every: None,
        lag_threshold_ms: 3000,
        revalidate_after_ms: 30_000,
        revalidate_after_lagging_ms: 1000,
    };

    #[test]
    fn lease_follows_follower_health() {
        assert_eq!(
            lease_for(Some(100), None, &S),
            30_000,
            "healthy, idle stream"
        );
        assert_eq!(
            lease_for(Some(100), Some(2000), &S),
            30_000,
            "healthy, busy stream"
        );
        assert_eq!(lease_for(None, None, &S), 1000, "never polled");
        assert_eq!(lease_for(Some(3001), None, &S), 1000, "polls failing");
        assert_eq!(
            lease_for(Some(100), Some(10_000), &S),
            1000,
            "records applied late"
        );
        let short = CoherenceSettings {
            revalidate_after_ms: 500,
            ..S
        };
        assert_eq!(
            lease_for(None, None, &short),
            500,
            "never longer than the configured lease"
        );
    }
}

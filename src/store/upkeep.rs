//! Background upkeep: the replay of the outbox and of the unverified queue
//! (their doc comments have their steps and failures), and the
//! sweeps of expired tombstones and cached records (`maintain`).

use std::time::Duration;

use super::revocation::unverified_dropped;
use super::{nonce, DrainReport, End, Error, TieredStore};
use crate::cache::{CacheError, Tombstone};
use crate::codec;
use crate::record::UnixMillis;

impl TieredStore {
    /// One pass over the unverified queue: a DynamoDB delete for each of up
    /// to `limit` keys. A delete that removed an item confirms a real
    /// session's logout (its tombstone becomes final); one that found
    /// nothing drops a key that never existed (or was already gone). Stops
    /// at the first delete DynamoDB does not answer.
    ///
    /// # Steps
    ///
    /// for each queued unverified revocation: DynamoDB delete; it removed an item → the tombstone
    /// becomes final; it found nothing → the entry and its tombstone are dropped (counted)
    ///
    /// # What a failure leaves
    ///
    /// - the entry stays and is retried with backoff
    pub async fn drain_unverified(&self, limit: usize) -> Result<DrainReport, Error> {
        let cache = &self.inner.cache;
        let mut report = DrainReport::default();
        let result = async {
            for key in cache.unverified(limit)? {
                match self.delete_ending(&key, End::Deferred).await? {
                    true => {
                        let keep_until = cache.tombstone_of(&key)?.map_or(0, |t| t.keep_until);
                        let tomb = Tombstone {
                            keep_until,
                            nonce: nonce(),
                        };
                        cache.revoke_locally(&key, tomb)?;
                        report.confirmed += 1;
                    }
                    false => {
                        if cache.drop_unverified(&key)? {
                            unverified_dropped("unknown");
                        }
                    }
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        report.remaining = cache.unverified_len();
        self.report_unverified();
        result.map(|()| report)
    }

    /// One pass over the outbox: replay up to `limit` pending deletes. Stops
    /// at the first one DynamoDB does not confirm.
    ///
    /// # Steps
    ///
    /// for each pending revocation not in flight: the end reason `deferred` (unless one is there),
    /// DynamoDB delete, then ack
    ///
    /// # What a failure leaves
    ///
    /// - the entry stays and is retried with backoff
    pub async fn drain_outbox(&self, limit: usize) -> Result<DrainReport, Error> {
        let cache = &self.inner.cache;
        let mut report = DrainReport::default();
        for (key, entry) in cache.pending(limit)? {
            if self.inner.revoking.contains(&key) {
                continue;
            }
            self.delete_ending(&key, End::Deferred).await?;
            cache.ack(&key, entry.nonce)?;
            report.confirmed += 1;
        }
        report.remaining = cache.outbox_len();
        Ok(report)
    }

    /// Background upkeep until `shutdown` resolves: replay the outbox and
    /// the unverified queue (with exponential backoff while DynamoDB is
    /// unreachable), and once a minute sweep expired tombstones (through
    /// their expiry index) and expired cached records (and report how many
    /// records are cached).
    pub async fn maintain(
        self,
        clock: fn() -> UnixMillis,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        const BASE: Duration = Duration::from_millis(250);
        const MAX: Duration = Duration::from_secs(30);
        let mut backoff = BASE;
        let mut last_sweep = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            if self.inner.cache.outbox_len() > 0 || self.inner.cache.unverified_len() > 0 {
                let drained = match self.drain_outbox(256).await {
                    Ok(_) => self.drain_unverified(256).await,
                    Err(err) => Err(err),
                };
                match drained {
                    Ok(_) => backoff = BASE,
                    Err(err) => {
                        backoff = (backoff * 2).min(MAX);
                        tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "revocation replay failed");
                    }
                }
            }
            let now = clock();
            if now.saturating_sub(last_sweep) >= 60_000 {
                last_sweep = now;
                // The session sweep reads the whole tree: off the async threads.
                let cache = self.inner.cache.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    let tombstones = cache.sweep_tombstones(now)?;
                    let sessions = cache.sweep_expired_sessions(|bytes| {
                        codec::decode(bytes).map_or(true, |r| !r.is_live(now))
                    })?;
                    Ok::<_, CacheError>((tombstones, sessions))
                })
                .await;
                match swept {
                    Ok(Ok((tombstones, (expired, cached)))) => {
                        metrics::gauge!("edge_session_cached_sessions").set(cached as f64);
                        tracing::debug!(
                            tombstones = tombstones.tombstones,
                            expired,
                            cached,
                            "cache swept"
                        );
                    }
                    Ok(Err(err)) => tracing::warn!(%err, "cache sweep failed"),
                    Err(err) => tracing::warn!(%err, "cache sweep task failed"),
                }
            }
        }
    }
}

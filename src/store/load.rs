//! Loads: the sled lookup, the lease revalidation, the single DynamoDB read
//! shared by concurrent misses, and the coarse touch of a record served
//! (`load`'s doc comment has its steps and failures). A touch is one
//! conditional put that no other node is told of; a copy that looks idle
//! here is re-read before it is refused, since another node may have
//! touched it.

use std::net::IpAddr;

use edge_session_sync::{Conflict, Item};

use super::{item_of, CacheLookup, End, Error, Fetch, OnUnreachable, Session, TieredStore};
use crate::cache::FillOutcome;
use crate::codec;
use crate::record::{SessionRecord, UnixMillis};
use crate::token::{SessionToken, StorageKey};

/// What a load is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Serving the user (from this address, when the caller knows it): a
    /// served session is touched (at most once per `touch_interval_ms`),
    /// and the touch keeps the address as the session's last one. The
    /// touch is written in the session's home region (the second field),
    /// where a logout is: a touch here could outlive it there, last writer
    /// winning.
    Serve(Option<IpAddr>, Option<u8>),
    /// Checking that it is still live: never touched.
    Check,
}

impl TieredStore {
    /// The live session for `token`, or `None` (unknown, expired, revoked).
    /// Never writes anything for a token the server did not issue.
    ///
    /// # Steps
    ///
    /// 1. sled get; a hit within the lease (at most the short lease for a record confirmed before
    ///    the stream follower's position, `lease.rs`) is decoded, expiry-checked (a copy idle by
    ///    its own `last_seen_at` but within its absolute expiry is re-read first, since another
    ///    node may have touched it), checked against the user's revocation epoch this node knows
    ///    (no I/O), served.
    /// 2. on a miss: if tombstoned, `None` without asking DynamoDB; if DynamoDB had no item for the
    ///    key less than `negative_ttl_ms` ago (the in-memory negative cache, `unknown.rs`), `None`
    ///    without asking again.
    /// 3. one consistent DynamoDB get per key at a time (concurrent misses share it); no item, and
    ///    the token names another region as its home (`homes.rs`) → one read of the home replica,
    ///    bounded; no item there either → remembered in the negative cache; a hit past the lease
    ///    reads only `ver`.
    /// 4. a bound record is checked against its user's epoch (memory within the lease, else one
    ///    consistent read); an outlawed one is destroyed.
    /// 5. fill sled, unless a tombstone or a newer version is there.
    /// 6. if `last_seen_at` is older than the touch interval, one conditional put of the next
    ///    version marked as a touch (in the session's home replica when that is another region's;
    ///    refused on an item stamped with its end reason): no journal entry, and no change feed
    ///    carries it to other nodes (a copy there loses on `ver` at its next write or lease check)
    ///
    /// # What a failure leaves
    ///
    /// - At 1: cache error, nothing written. A key DynamoDB does not have (an unknown or
    ///   never-issued token) costs at most one read per `negative_ttl_ms` and no write in either
    ///   tier.
    /// - At 3: unreachable → `Err` (503), nothing written; past the lease with
    ///   `OnUnreachable::ServeCached`, the cached copy is served up to `max_stale_ms`.
    /// - At 5: not served if a tombstone appeared meanwhile.
    /// - At 6: unreachable → served as loaded (touch is best effort); version conflict → the record
    ///   is re-read
    pub async fn load(
        &self,
        token: &SessionToken,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        self.load_as(
            token.storage_key(),
            now,
            Use::Serve(None, token.home()),
            token.home(),
        )
        .await
    }

    /// [`load`](Self::load) by storage key.
    pub async fn load_key(
        &self,
        key: StorageKey,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        self.load_as(key, now, Use::Serve(None, None), None).await
    }

    /// [`load`](Self::load) for a request from `from`: a touch records it
    /// as the session's last address (`session.record_client`), in the same
    /// write.
    pub async fn load_from(
        &self,
        token: &SessionToken,
        from: IpAddr,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        self.load_as(
            token.storage_key(),
            now,
            Use::Serve(Some(from), token.home()),
            token.home(),
        )
        .await
    }

    /// Whether `token`'s session is still live, as [`load`](Self::load)
    /// decides it, but without the touch: a check that is not the user's
    /// activity (an open WebSocket's re-check) must not keep an idle
    /// session alive.
    pub async fn check(
        &self,
        token: &SessionToken,
        now: UnixMillis,
    ) -> Result<Option<Session>, Error> {
        self.load_as(token.storage_key(), now, Use::Check, token.home())
            .await
    }

    /// A load of `key`, whose token names `home` as its home region (if
    /// any): a miss here reads there before it answers none.
    async fn load_as(
        &self,
        key: StorageKey,
        now: UnixMillis,
        used: Use,
        home: Option<u8>,
    ) -> Result<Option<Session>, Error> {
        let lookup = self.lookup_cached(&key, now)?;
        let result = match &lookup {
            CacheLookup::Fresh(_) => 0,
            CacheLookup::Stale { .. } => 1,
            CacheLookup::Revoked => 2,
            CacheLookup::Miss => 3,
        };
        // Handles registered once per thread (after the recorder is installed).
        thread_local! {
            static LOOKUPS: [metrics::Counter; 4] = ["hit", "stale", "revoked", "miss"]
                .map(|r| metrics::counter!("edge_session_cache_lookups_total", "result" => r));
        }
        LOOKUPS.with(|c| c[result].increment(1));
        match lookup {
            CacheLookup::Fresh(record) => {
                // Hot path: no DynamoDB future is built at all.
                if !record.is_live(now) {
                    if now >= record.absolute_expiry {
                        return Ok(None);
                    }
                    // Idle by this copy, but touches are not broadcast:
                    // another node may have served it since. Ask.
                    return Box::pin(self.revalidate(key, (record, now), now, used, home)).await;
                }
                let touch = matches!(used, Use::Serve(..))
                    && record.needs_touch(&self.inner.settings.policy, now);
                if !touch && !self.outlawed(&record) {
                    return Ok(Some(Session { key, record }));
                }
                Box::pin(self.serve(key, record, now, used)).await
            }
            CacheLookup::Revoked => Ok(None),
            CacheLookup::Stale { record, fetched_at } => {
                Box::pin(self.revalidate(key, (record, fetched_at), now, used, home)).await
            }
            CacheLookup::Miss => {
                // Known to be unknown (the negative cache): no I/O.
                if self.inner.unknown.contains(&key, now) {
                    metrics::counter!("edge_session_negative_cache_hits_total").increment(1);
                    return Ok(None);
                }
                Box::pin(async move {
                    let found = match self.fetch(key).await? {
                        Some(item) => Some(item),
                        // Not replicated here yet? Its home has it.
                        None => self.fetch_home(key, home).await?,
                    };
                    match found {
                        None => {
                            self.inner.unknown.insert(key, now);
                            Ok(None)
                        }
                        Some(item) => self.accept(key, item, now, used).await,
                    }
                })
                .await
            }
        }
    }

    /// The sled half of a load: no I/O beyond sled, no `.await`. This is the
    /// whole hot path of a cache hit (the `lookup/cache_hit` benchmark).
    pub fn lookup_cached(&self, key: &StorageKey, now: UnixMillis) -> Result<CacheLookup, Error> {
        let cache = &self.inner.cache;
        if let Some(hit) = cache.get(key)? {
            return match codec::decode(hit.bytes()) {
                Ok(record)
                    if now.saturating_sub(hit.fetched_at) < self.lease_at(hit.fetched_at) =>
                {
                    Ok(CacheLookup::Fresh(record))
                }
                Ok(record) => Ok(CacheLookup::Stale {
                    record,
                    fetched_at: hit.fetched_at,
                }),
                Err(err) => {
                    tracing::warn!(%err, "evicting an undecodable cached record");
                    cache.evict(key)?;
                    Ok(CacheLookup::Miss)
                }
            };
        }
        // A key is never cached and tombstoned at once (see `cache`), so the
        // tombstone lookup is only paid on a miss.
        if cache.is_tombstoned(key)? {
            return Ok(CacheLookup::Revoked);
        }
        Ok(CacheLookup::Miss)
    }

    /// A cached record past its lease: one consistent read of `ver`. Same
    /// version: confirm and serve. Otherwise re-read the whole item.
    async fn revalidate(
        &self,
        key: StorageKey,
        (record, fetched_at): (SessionRecord, UnixMillis),
        now: UnixMillis,
        used: Use,
        home: Option<u8>,
    ) -> Result<Option<Session>, Error> {
        let cache = &self.inner.cache;
        metrics::counter!("edge_session_lease_revalidations_total").increment(1);
        let version = match self.inner.dynamo.get_version(key.as_bytes()).await {
            Ok(version) => version,
            Err(err) if err.is_unavailable() => {
                return match self.inner.settings.on_unreachable {
                    // Past the lease and DynamoDB cannot confirm it: the
                    // operator chose to serve what this node has, up to a bound.
                    OnUnreachable::ServeCached { max_stale_ms }
                        if now.saturating_sub(fetched_at) <= max_stale_ms =>
                    {
                        metrics::counter!("edge_session_stale_serves_total").increment(1);
                        if !record.is_live(now) || self.outlawed(&record) {
                            return Ok(None);
                        }
                        Ok(Some(Session { key, record }))
                    }
                    _ => Err(err.into()),
                };
            }
            Err(err) => return Err(err.into()),
        };
        match version {
            Some(ver) if ver == record.version => {
                if !self.epoch_allows(key, &record, now).await? {
                    return Ok(None);
                }
                let bytes = self.encode(&record);
                match cache.fill(&key, now, ver, &bytes)? {
                    FillOutcome::Tombstoned => Ok(None),
                    FillOutcome::Filled | FillOutcome::Superseded => {
                        self.serve(key, record, now, used).await
                    }
                }
            }
            Some(_) => match self.fetch(key).await? {
                None => Ok(None),
                Some(item) => self.accept(key, item, now, used).await,
            },
            None => {
                cache.evict(&key)?;
                // Filled from its home and not replicated here yet?
                match self.fetch_home(key, home).await? {
                    Some(item) => self.accept(key, item, now, used).await,
                    None => Ok(None),
                }
            }
        }
    }

    /// A record read from DynamoDB: check it, fill the cache, serve it.
    async fn accept(
        &self,
        key: StorageKey,
        item: Item,
        now: UnixMillis,
        used: Use,
    ) -> Result<Option<Session>, Error> {
        let record = codec::decode(&item.body)?;
        if !record.is_live(now) {
            self.inner.cache.evict(&key)?;
            self.end_expired(key);
            return Ok(None);
        }
        if !self.epoch_allows(key, &record, now).await? {
            return Ok(None);
        }
        match self.inner.cache.fill(&key, now, item.ver, &item.body)? {
            FillOutcome::Tombstoned => Ok(None),
            FillOutcome::Filled | FillOutcome::Superseded => {
                self.serve(key, record, now, used).await
            }
        }
    }

    /// Expiry check and coarse touch of a record about to be served.
    async fn serve(
        &self,
        key: StorageKey,
        record: SessionRecord,
        now: UnixMillis,
        used: Use,
    ) -> Result<Option<Session>, Error> {
        if !record.is_live(now) {
            return Ok(None);
        }
        if self.outlawed(&record) {
            self.inner.cache.evict(&key)?;
            return Ok(None);
        }
        if used == Use::Check || !record.needs_touch(&self.inner.settings.policy, now) {
            return Ok(Some(Session { key, record }));
        }
        let mut next = record.next_version();
        next.last_seen_at = now;
        if let (Use::Serve(Some(ip), _), Some(client)) = (used, &record.client) {
            if let Some(address) = self.inner.settings.record_client.address(ip) {
                if client.fields().last_address != Some(address.as_str()) {
                    next.client = Some(client.seen_from(&address));
                }
            }
        }
        let body = self.encode(&next);
        let home = match used {
            Use::Serve(_, home) => home,
            Use::Check => None,
        };
        let tier = self.write_tier(home);
        match tier
            .touch(&item_of(&key, &next, body.clone()), record.version)
            .await
        {
            Ok(Ok(())) => match self.inner.cache.fill(&key, now, next.version, &body)? {
                FillOutcome::Tombstoned => Ok(None),
                FillOutcome::Filled | FillOutcome::Superseded => {
                    Ok(Some(Session { key, record: next }))
                }
            },
            Ok(Err(Conflict)) => {
                // Changed or deleted elsewhere: the cached copy is stale.
                self.inner.cache.evict(&key)?;
                match tier.get(key.as_bytes()).await? {
                    None => Ok(None),
                    Some(item) => {
                        let record = codec::decode(&item.body)?;
                        if !record.is_live(now) {
                            return Ok(None);
                        }
                        match self.inner.cache.fill(&key, now, item.ver, &item.body)? {
                            FillOutcome::Tombstoned => Ok(None),
                            _ => Ok(Some(Session { key, record })),
                        }
                    }
                }
            }
            Err(err) if err.is_unavailable() => {
                tracing::debug!(%err, "touch skipped: DynamoDB unreachable");
                Ok(Some(Session { key, record }))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// With session events on: delete a session DynamoDB still holds past
    /// its expiry, marked expired, in the background (its TTL deletion may
    /// come days later). At most once per session: the item is then gone.
    fn end_expired(&self, key: StorageKey) {
        if !self.inner.settings.end_reasons {
            return;
        }
        let dynamo = self.inner.dynamo.clone();
        self.spawn_background(async move {
            let ended = async {
                if dynamo
                    .stamp_end(key.as_bytes(), End::Expired.as_str())
                    .await?
                {
                    dynamo.delete(key.as_bytes()).await?;
                }
                Ok::<_, edge_session_sync::DynamoError>(())
            };
            if let Err(err) = ended.await {
                tracing::debug!(%err, "an expired session's delete failed; its TTL will do it");
            }
        });
    }

    /// One consistent DynamoDB read per key at a time: concurrent misses on
    /// the same key wait for the first one's answer.
    async fn fetch(&self, key: StorageKey) -> Fetch {
        self.inner
            .misses
            .run(key, || self.inner.dynamo.get(key.as_bytes()))
            .await
    }
}

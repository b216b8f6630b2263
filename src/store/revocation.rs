//! Revocations: `destroy` (and `destroy_key`), `revoke_user`, and the
//! eviction of a user's oldest sessions past `max_per_user` at login (each
//! operation's doc comment has its steps and failures): each a durable
//! tombstone here and an outbox entry before DynamoDB is touched; the
//! bounded queue of logouts this node could not verify; and, with session
//! events on, the end reason written before each delete.

use edge_session_sync::DynamoError;

use super::{nonce, Destroyed, End, Error, Session, TieredStore};
use crate::cache::{CacheError, QueuedUnverified, Tombstone, TombstoneKind};
use crate::codec;
use crate::record::UnixMillis;
use crate::token::{SessionToken, StorageKey};

/// Count an unverified revocation dropped: `full` (refused at the cap) or
/// `unknown` (DynamoDB never had the key).
pub(super) fn unverified_dropped(reason: &'static str) {
    metrics::counter!("edge_session_unverified_revocations_dropped_total", "reason" => reason)
        .increment(1);
}

impl TieredStore {
    /// Revoke the session under `token` in both tiers.
    ///
    /// # Steps
    ///
    /// 0. a final tombstone → `AlreadyRevoked`, nothing written; a provisional one (a regenerate in
    ///    flight) → known, go to 2.
    /// 1. if not cached, confirm existence in DynamoDB (so unknown tokens write nothing), unless
    ///    DynamoDB had no item for the key less than `negative_ttl_ms` ago (the negative cache, as
    ///    for `load`; a miss is remembered there).
    /// 2. durable final tombstone + outbox entry (one transaction, flushed, replacing a provisional
    ///    or unverified tombstone), marked in flight.
    /// 3. with session events on, the end reason written on the item (`why`; the first stays); then
    ///    the DynamoDB delete, unconditional but for existence.
    /// 4. ack the outbox.
    /// 5. a token homed in another region: the same reason and delete in its home replica
    ///    (bounded), and a final tombstone here if this replica did not have it yet
    ///
    /// # What a failure leaves
    ///
    /// - At 1: not there → `NotFound`, nothing written; unreachable → the bounded unverified queue
    ///   (unverified tombstone + queue entry, flushed; no outbox entry), `Unverified`; the queue at
    ///   `cache.max_unverified_revocations` → `Err` (503), nothing written.
    /// - At 2: `Err`, nothing changed.
    /// - At 3: the token is already dead here; the outbox retries the delete until DynamoDB
    ///   confirms (`Destroyed::Pending`)
    pub async fn destroy(&self, token: &SessionToken, now: UnixMillis) -> Result<Destroyed, Error> {
        let destroyed = self
            .destroy_key(token.storage_key(), End::SignedOut, now)
            .await?;
        // Homed elsewhere (and maybe not here yet): ended there too.
        let key = token.storage_key();
        let at_home = self.end_at_home(key, End::SignedOut, token.home()).await;
        if at_home && destroyed == Destroyed::NotFound {
            // Not replicated here yet: refused here from now on all the
            // same, whatever replication brings in before the delete.
            let keep_until = now.saturating_add(self.inner.settings.policy.absolute_timeout_ms);
            let tomb = Tombstone {
                keep_until,
                nonce: nonce(),
            };
            self.inner.cache.revoke_locally(&key, tomb)?;
            self.inner.cache.flush().await?;
            return Ok(Destroyed::Confirmed);
        }
        Ok(destroyed)
    }

    /// The DynamoDB delete of an ending session, with its reason written
    /// first when session events are on (the first reason written stays).
    /// Whether an item was deleted.
    pub(super) async fn delete_ending(
        &self,
        key: &StorageKey,
        end: End,
    ) -> Result<bool, DynamoError> {
        if self.inner.settings.end_reasons {
            self.inner
                .dynamo
                .stamp_end(key.as_bytes(), end.as_str())
                .await?;
        }
        self.inner.dynamo.delete(key.as_bytes()).await
    }

    /// [`destroy`](Self::destroy) by storage key (admin revoke, "my sessions").
    ///
    /// Every destroy is its own revocation: it defers only to a final
    /// tombstone (a revocation nothing can undo, whose DynamoDB delete is
    /// done or durably queued). A provisional one (a regenerate in flight,
    /// which lifts it if its transaction is refused) tells that the key is
    /// live, and this destroy writes its own final tombstone, outbox entry
    /// and DynamoDB delete over it.
    pub async fn destroy_key(
        &self,
        key: StorageKey,
        end: End,
        now: UnixMillis,
    ) -> Result<Destroyed, Error> {
        let cache = &self.inner.cache;
        let existing = cache.revocation_of(&key)?;
        let policy_bound = now.saturating_add(self.inner.settings.policy.absolute_timeout_ms);
        let keep_until = match existing {
            Some((_, TombstoneKind::Final)) => return Ok(Destroyed::AlreadyRevoked),
            // A regenerate in flight loaded it: a key this node knows.
            Some((tomb, TombstoneKind::Provisional)) => tomb.keep_until.max(now),
            _ => match cache.get(&key)? {
                Some(hit) => {
                    codec::decode(hit.bytes()).map_or(policy_bound, |r| r.absolute_expiry.max(now))
                }
                // Known to be unknown (the negative cache, as for loads): no
                // I/O. A token is issued only after DynamoDB has it, so a key
                // DynamoDB lacked a moment ago is no session now.
                None if self.inner.unknown.contains(&key, now) => {
                    metrics::counter!("edge_session_negative_cache_hits_total").increment(1);
                    return Ok(Destroyed::NotFound);
                }
                None => match self.inner.dynamo.get(key.as_bytes()).await {
                    Ok(None) => {
                        self.inner.unknown.insert(key, now);
                        if cache.drop_unverified(&key)? {
                            unverified_dropped("unknown");
                        }
                        return Ok(Destroyed::NotFound);
                    }
                    Ok(Some(item)) => codec::decode(&item.body)
                        .map_or(policy_bound, |r| r.absolute_expiry.max(now)),
                    // Cannot tell whether it exists: the bounded queue.
                    Err(err) if err.is_unavailable() => {
                        if matches!(existing, Some((_, TombstoneKind::Unverified))) {
                            return Ok(Destroyed::Unverified);
                        }
                        match self.queue_unverified(key, policy_bound, now).await? {
                            Some(outcome) => return outcome.ok_or_else(|| err.into()),
                            None => policy_bound,
                        }
                    }
                    Err(err) => return Err(err.into()),
                },
            },
        };
        let _revoking = self.inner.revoking.mark(key);
        let tomb = self.write_revocation(&key, keep_until, now).await?;
        match self.delete_ending(&key, end).await {
            Ok(_) => {
                cache.ack(&key, tomb.nonce)?;
                Ok(Destroyed::Confirmed)
            }
            Err(err) => {
                tracing::warn!(%err, "revocation queued in the outbox");
                Ok(Destroyed::Pending)
            }
        }
    }

    /// The logout of a key this node cannot verify (not cached, DynamoDB
    /// unreachable): into the bounded unverified queue (an unverified
    /// tombstone and a queue entry, flushed; no outbox entry). `None`: the
    /// key turned out to be known here (a regenerate in flight), so the
    /// caller writes a durable revocation; `Some(None)`: the queue is full,
    /// refused (the caller answers 503: nothing is acknowledged).
    ///
    /// What an unknown token can buy: while DynamoDB is unreachable, one
    /// queue slot (≈ 100 bytes of sled, one fsync) and only while the queue
    /// is below its cap; once DynamoDB answers, the replay frees the slot and
    /// an unknown token buys nothing (`NotFound`, no write). So an outage
    /// costs at most `max_unverified_revocations` entries and fsyncs.
    ///
    /// Why no acknowledged logout of a real session is lost: a key that is
    /// cached here, or that a regenerate in flight holds, takes the durable
    /// path (final tombstone, outbox entry, fsync). Any other key cannot be
    /// served by this node until DynamoDB answers (a miss needs DynamoDB's
    /// read), so nothing this node serves is left live by queuing it. A
    /// queued key is refused here from the moment it is queued (load and
    /// fill see its tombstone), durably (flushed before the answer, so it
    /// survives a kill -9), and its DynamoDB delete is replayed once DynamoDB
    /// answers: a real session is deleted there (and its tombstone becomes
    /// final), a key that never existed is dropped. Past the cap the logout
    /// is refused with 503, never acknowledged and dropped.
    async fn queue_unverified(
        &self,
        key: StorageKey,
        keep_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Option<Option<Destroyed>>, Error> {
        let cap = self.inner.settings.max_unverified_revocations;
        let queued = self
            .inner
            .cache
            .queue_unverified(&key, keep_until, now, cap)?;
        self.report_unverified();
        Ok(match queued {
            QueuedUnverified::Queued => {
                self.inner.cache.flush().await?;
                Some(Some(Destroyed::Unverified))
            }
            QueuedUnverified::Tombstoned(TombstoneKind::Final) => {
                Some(Some(Destroyed::AlreadyRevoked))
            }
            QueuedUnverified::Tombstoned(TombstoneKind::Unverified) => {
                Some(Some(Destroyed::Unverified))
            }
            QueuedUnverified::Tombstoned(TombstoneKind::Provisional) => None,
            QueuedUnverified::Full => {
                unverified_dropped("full");
                Some(None)
            }
        })
    }

    /// Set the gauge of queued unverified revocations.
    pub(super) fn report_unverified(&self) {
        metrics::gauge!("edge_session_unverified_revocations")
            .set(self.inner.cache.unverified_len() as f64);
    }

    /// Revoke `key` here, durably, before DynamoDB is touched: a final
    /// tombstone kept until `keep_until` and an outbox entry (one sled
    /// transaction), flushed. From then on the key is dead on this node and
    /// the outbox deletes it from DynamoDB, unless the caller acks the
    /// returned tombstone's nonce.
    pub(super) async fn write_revocation(
        &self,
        key: &StorageKey,
        keep_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Tombstone, CacheError> {
        let tomb = Tombstone {
            keep_until,
            nonce: nonce(),
        };
        self.inner.cache.revoke_and_queue(key, tomb, now)?;
        self.inner.cache.flush().await?;
        Ok(tomb)
    }

    /// As [`write_revocation`](Self::write_revocation), but provisional: the
    /// caller (a regenerate) may lift it. `None` when the key already
    /// carries a final or unverified tombstone: nothing is written. NOT
    /// flushed: the caller flushes while its transaction is in flight and
    /// issues nothing before both are done (`rotate.rs`).
    pub(super) fn write_provisional_revocation(
        &self,
        key: &StorageKey,
        keep_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Option<Tombstone>, CacheError> {
        let tomb = Tombstone {
            keep_until,
            nonce: nonce(),
        };
        if !self.inner.cache.revoke_provisionally(key, tomb, now)? {
            return Ok(None);
        }
        Ok(Some(tomb))
    }

    /// After a login bound `kept` to its user: revoke that user's oldest
    /// sessions (by `created_at`), each as by [`destroy`](Self::destroy), so
    /// that at most `max_per_user` stay live, `kept` among them. Called once
    /// the login's DynamoDB write succeeded; a failure here is logged and
    /// counted, never the login's failure.
    ///
    /// Oldest by `created_at`, not `last_seen_at`: `created_at` is fixed at
    /// login and every node reads the same value, while `last_seen_at` is
    /// written back coarsely (the touch interval) by whichever node served;
    /// and a stolen session its thief keeps busy cannot make itself the
    /// newest and outlive its owner's later logins.
    ///
    /// A login does not wait for it ([`evict_after_login`](Self::evict_after_login)).
    ///
    /// # Steps
    /// Runs after a login's DynamoDB write succeeded, when its transaction found the user's session
    /// count at the cap.
    ///
    ///
    /// 0. one consistent read of the count.
    /// 1. one GSI listing of the user's sessions (bounded: the limit plus logins racing this one).
    /// 2. the live ones other than the new session, oldest `created_at` first: `destroy` each past
    ///    `max_per_user - 1`.
    /// 3. set the count to the sessions left, conditional on the count read in 0
    ///
    /// # What a failure leaves
    ///
    /// - nothing here fails the login: 1: logged, counted
    ///   (`edge_session_evictions_total{result="failed"}`), nothing evicted: the user keeps one
    ///   session over the limit until the next login.
    /// - At 2: each as `destroy` (its delete waits in the outbox, `result="pending"`); another
    ///   login racing this one, or the GSI lagging, can leave the user briefly over the limit or
    ///   one under it
    pub(super) async fn evict_past_limit(&self, kept: &Session, now: UnixMillis) {
        let Some(user) = kept.record.user_id.as_deref() else {
            return;
        };
        if let Err(err) = self.evict_oldest(user, kept.key, now).await {
            tracing::warn!(%err, "could not evict a user's oldest sessions");
            metrics::counter!("edge_session_evictions_total", "result" => "failed").increment(1);
        }
    }

    /// Run [`evict_past_limit`](Self::evict_past_limit) for a login that
    /// just succeeded, without holding up its answer: the listing is a GSI
    /// query (milliseconds on DynamoDB), and its outcome never changes the
    /// login's. Until it is done the user may hold one session over the
    /// limit, as while a racing login's is.
    pub(super) fn evict_after_login(&self, kept: &Session, now: UnixMillis) {
        if kept.record.user_id.is_none() {
            return;
        }
        let (store, kept) = (self.clone(), kept.clone());
        self.spawn_background(async move { store.evict_past_limit(&kept, now).await });
    }

    /// [`evict_past_limit`](Self::evict_past_limit): one listing of the
    /// user's sessions (bounded by the limit itself, plus logins racing this
    /// one), then a destroy of each of the oldest past it.
    async fn evict_oldest(
        &self,
        user_id: &str,
        kept: StorageKey,
        now: UnixMillis,
    ) -> Result<(), Error> {
        let max = self.session_cap() as usize;
        let epoch_item = StorageKey::user_epoch(user_id);
        let counted = self
            .inner
            .dynamo
            .session_count(epoch_item.as_bytes())
            .await?;
        let mut others = Vec::new();
        for item in self.inner.dynamo.list_by_user(user_id).await? {
            // `kept` counts whether or not the index shows it yet.
            if item.sid != kept.0 {
                others.extend(self.live_session(user_id, item, now)?);
            }
        }
        let excess = (others.len() + 1).saturating_sub(max);
        let left = (others.len() + 1 - excess) as u64;
        others.sort_by_key(|s| (s.record.created_at, s.key));
        for session in others.into_iter().take(excess) {
            let result = match self.destroy_key(session.key, End::Evicted, now).await {
                Ok(Destroyed::Confirmed) => "confirmed",
                Ok(Destroyed::Pending | Destroyed::Unverified) => "pending",
                Ok(Destroyed::NotFound | Destroyed::AlreadyRevoked) => continue,
                Err(err) => {
                    tracing::warn!(%err, "could not evict one of a user's oldest sessions");
                    "failed"
                }
            };
            metrics::counter!("edge_session_evictions_total", "result" => result).increment(1);
        }
        // The count, an upper bound, becomes the number left live (unless a
        // login counted itself meanwhile: then the next one at the limit
        // sets it). After the evictions, so that a failure here costs none.
        self.inner
            .dynamo
            .reset_session_count(epoch_item.as_bytes(), counted, left)
            .await?;
        Ok(())
    }

    /// Revoke the session under `key` if it is bound to `user_id` (checked
    /// with a consistent read), for `end` (the user, or an administrator).
    /// `false`: no such session of that user.
    pub async fn revoke_user_session(
        &self,
        user_id: &str,
        key: StorageKey,
        end: End,
        now: UnixMillis,
    ) -> Result<bool, Error> {
        match self.inner.dynamo.get(key.as_bytes()).await? {
            Some(item) if item.uid.as_deref() == Some(user_id) => Ok(matches!(
                self.destroy_key(key, end, now).await?,
                Destroyed::Confirmed | Destroyed::Pending
            )),
            _ => Ok(false),
        }
    }

    /// Revoke every session bound to `user_id` ("log out everywhere").
    /// Returns how many were revoked.
    ///
    /// First the user's revocation epoch is advanced: from then on every
    /// session bound under an older epoch is refused at load (here at once;
    /// on other nodes on their next DynamoDB read, within the lease), and a
    /// session being bound concurrently fails its epoch check and retries
    /// under the new epoch. Then every session the GSI lists is destroyed.
    ///
    /// # Steps
    ///
    /// 1. advance the user's epoch in DynamoDB (from then on every session bound under an older
    ///    epoch is refused at load, and concurrent binds fail their epoch check).
    /// 2. `destroy` each session the GSI lists.
    /// 3. in each other region's replica (`homes.rs`): raise the epoch to at least the new one, and
    ///    delete (reason first) each session its GSI lists
    ///
    /// # What a failure leaves
    ///
    /// - At 1: `Err`, nothing changed.
    /// - At 2: sessions not yet destroyed are still outlawed by the epoch.
    /// - At 3: `Err` (the call is safe to repeat); what replicated is outlawed there by the epoch's
    ///   replication
    pub async fn revoke_user(&self, user_id: &str, now: UnixMillis) -> Result<usize, Error> {
        let key = StorageKey::user_epoch(user_id);
        let exp = self.epoch_item_exp(now);
        let epoch = self
            .inner
            .dynamo
            .bump_user_epoch(key.as_bytes(), Some(user_id), exp)
            .await?;
        self.note_epoch(user_id, epoch, now);
        let mut revoked = std::collections::HashSet::new();
        for item in self.inner.dynamo.list_by_user(user_id).await? {
            if item.uid.as_deref() == Some(user_id)
                && matches!(
                    self.destroy_key(StorageKey(item.sid), End::Everywhere, now)
                        .await?,
                    Destroyed::Confirmed | Destroyed::Pending
                )
            {
                revoked.insert(item.sid);
            }
        }
        // Every other region's replica too: its epoch raised there, and the
        // sessions it lists ended there, whether or not they reached here.
        for tier in self.other_replicas() {
            tier.raise_user_epoch_to(key.as_bytes(), user_id, epoch, exp)
                .await?;
            for item in tier.list_by_user(user_id).await? {
                if item.uid.as_deref() != Some(user_id) {
                    continue;
                }
                if self.inner.settings.end_reasons {
                    tier.stamp_end(&item.sid, End::Everywhere.as_str()).await?;
                }
                if tier.delete(&item.sid).await? {
                    revoked.insert(item.sid);
                }
            }
        }
        Ok(revoked.len())
    }
}

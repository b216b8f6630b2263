//! Writes of a session's content: `create` and `update` (their doc
//! comments have their steps and failures).

use edge_session_sync::{Conflict, DynamoError, EpochGuard, RotateConflict};

use super::{item_of, Error, NewSession, Session, SessionChange, TieredStore};
use crate::cache::FillOutcome;
use crate::record::{SessionRecord, UnixMillis};
use crate::token::{SessionToken, StorageKey};

impl TieredStore {
    /// `body` if within `max_record_bytes`, else `RecordTooLarge`.
    fn within_size(&self, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        let max = self.inner.settings.max_record_bytes;
        if body.len() > max {
            return Err(Error::RecordTooLarge {
                size: body.len(),
                max,
            });
        }
        Ok(body)
    }

    /// A new session, issued only once DynamoDB has it. A session bound to a
    /// user at creation is written in one transaction with a check of the
    /// user's revocation epoch, so a concurrent "log out everywhere" either
    /// outlaws it or happened before it. Once written, it evicts the user's
    /// oldest sessions past `max_per_user`.
    ///
    /// # Steps
    ///
    /// 0. refuse a record encoded over `max_record_bytes` (`RecordTooLarge`, nothing written).
    /// 1. with a user binding: a consistent read of the user's epoch.
    /// 2. DynamoDB put conditional on `attribute_not_exists` (bound: in one transaction with an
    ///    update of the epoch item, conditional on the epoch unchanged and the user's session count
    ///    under the cap, that counts the session; at the cap, written again without it).
    /// 3. fill sled.
    /// 4. bound, at the cap: `evict_past_limit`, in a task of its own (the answer does not wait for
    ///    it)
    ///
    /// # What a failure leaves
    ///
    /// - At 1–2: `Err`, no token issued; refused → nothing written anywhere; no answer → the put
    ///   may have happened: a bound session's key is tombstoned and queued in the outbox, which
    ///   deletes it once DynamoDB answers (an unbound one is listed nowhere and expires by TTL); an
    ///   epoch that moved meanwhile → read it again and retry.
    /// - At 3: the session exists in DynamoDB and is loaded on first use.
    /// - At 4: never fails the call (see `evict_past_limit`)
    pub async fn create(
        &self,
        spec: NewSession,
        now: UnixMillis,
    ) -> Result<(SessionToken, Session), Error> {
        let mut record = SessionRecord::new(&self.inner.settings.policy, now);
        if let Some(b) = spec.binding {
            record.user_id = Some(b.user_id.into());
            record.role = b.role.map(Into::into);
            record.client = b.client;
        }
        record.data = spec.data.into();
        if let Some(idle) = spec.idle_timeout_ms {
            record.idle_timeout_ms = idle;
        }
        // As at login: the user's session count is checked against the
        // limit in the write; only one that finds it reached evicts.
        let mut limit = Some(self.session_cap());
        for _ in 0..8 {
            let guard = match record.user_id.clone() {
                Some(uid) => {
                    let user_epoch = self.user_epoch(&uid, now, true).await?;
                    let global = self.global_epoch(now).await?;
                    record.set_epochs(global, user_epoch);
                    Some(EpochGuard {
                        sid: StorageKey::user_epoch(&uid).0,
                        epoch: user_epoch,
                        adds: 1,
                        limit,
                        exp: self.epoch_item_exp(now),
                    })
                }
                None => None,
            };
            let body = self.within_size(self.encode(&record))?;
            let token = SessionToken::generate_in(self.own_home());
            let key = token.storage_key();
            let item = item_of(&key, &record, body.clone());
            let written = match guard {
                Some(guard) => self.inner.dynamo.create_guarded(&item, guard).await,
                None => self
                    .inner
                    .dynamo
                    .create(&item)
                    .await
                    .map(|r| r.map_err(|_| RotateConflict::NewExists)),
            };
            let written = match written {
                Ok(written) => written,
                Err(err) => {
                    // A login's put may have happened unanswered: the
                    // session would sit in its user's listings unissued.
                    if err.is_unavailable() && record.user_id.is_some() {
                        self.queue_unissued(key, &record, now).await;
                    }
                    return Err(err.into());
                }
            };
            // A conflict is a 256-bit collision or an epoch that moved
            // meanwhile: draw again, with the epoch read afresh. At the
            // limit: write all the same, then evict the oldest.
            match written {
                Ok(()) => {
                    self.inner.unknown.forget(&key);
                    self.inner.cache.fill(&key, now, record.version, &body)?;
                    let session = Session { key, record };
                    if limit.is_none() {
                        self.evict_after_login(&session, now);
                    }
                    return Ok((token, session));
                }
                Err(RotateConflict::UserAtLimit) => limit = None,
                Err(_) => {}
            }
        }
        Err(Error::Dynamo(DynamoError::new_unavailable(
            "create",
            "the user's revocation epoch kept moving",
        )))
    }

    /// Write `change` to `session`, conditional on its version being unchanged
    /// since it was loaded. Refreshes `last_seen_at`. A destroyed session is
    /// never written back. The user binding is not changed here: binding a
    /// user is a privilege change and goes through [`regenerate`](Self::regenerate).
    ///
    /// # Steps
    ///
    /// 0. as for `create`.
    /// 1. refuse if tombstoned here.
    /// 2. DynamoDB put conditional on the caller's `version`.
    /// 3. fill sled
    ///
    /// # What a failure leaves
    ///
    /// - At 2: conflict (changed or deleted elsewhere) → `Conflict` and the stale cached copy is
    ///   evicted; unreachable → `Err`, nothing written.
    /// - At 3: as for `create`
    pub async fn update(
        &self,
        session: &Session,
        change: SessionChange,
        now: UnixMillis,
    ) -> Result<Result<Session, Conflict>, Error> {
        let key = session.key;
        if self.inner.cache.is_tombstoned(&key)? {
            return Ok(Err(Conflict));
        }
        let mut next = session.record.next_version();
        if let Some(data) = change.data {
            next.data = data.into();
        }
        if let Some(idle) = change.idle_timeout_ms {
            next.idle_timeout_ms = idle;
        }
        next.last_seen_at = now.max(next.last_seen_at);
        let body = self.within_size(self.encode(&next))?;
        match self
            .inner
            .dynamo
            .update(&item_of(&key, &next, body.clone()), session.record.version)
            .await?
        {
            Ok(()) => match self.inner.cache.fill(&key, now, next.version, &body)? {
                // Destroyed on this node while the write was in flight: the
                // destroy's DynamoDB delete removes what was just written.
                FillOutcome::Tombstoned => Ok(Err(Conflict)),
                _ => Ok(Ok(Session { key, record: next })),
            },
            Err(Conflict) => {
                self.inner.cache.evict(&key)?;
                Ok(Err(Conflict))
            }
        }
    }
}

//! `regenerate`: a new token for a session in one DynamoDB transaction
//! (its doc comment has its steps and failures).

use edge_session_sync::{EpochGuard, RotateConflict};

use super::{item_of, Error, Session, TieredStore, UserBinding};
use crate::client::ClientInfo;
use crate::record::{SessionRecord, Text, UnixMillis};
use crate::token::{SessionToken, StorageKey};

impl TieredStore {
    /// Replace `old` by a new session with a new token (login, privilege
    /// change). `binding` binds a user (`None` keeps the old binding);
    /// `keep_data` carries the application data over. The old token is dead
    /// in both tiers when this returns `Ok(Ok(_))`. A sign-in (`binding`
    /// given) then evicts the user's oldest sessions past `max_per_user`.
    ///
    /// # Steps
    ///
    /// 1. the bound user's epoch as this node knows it (within the lease; else the old session's if
    ///    the same user's, else 0), no I/O; refuse to carry a login the epoch outlawed.
    /// 2. *provisional* tombstone + outbox entry for the old key (one sled transaction; refused if
    ///    a final or unverified tombstone is there: `OldChanged`); the key is marked in flight so
    ///    the outbox replay leaves it alone.
    /// 3. ONE `TransactWriteItems`: delete old (conditional on its version), put new
    ///    (`attribute_not_exists`), check the user's epoch; step 2's flush runs meanwhile, and
    ///    nothing is issued before both are done.
    /// 4. ack the outbox (the tombstone becomes final), fill sled with the new record.
    /// 5. a sign-in (a binding given): `evict_past_limit`, in a task of its own
    ///
    /// # What a failure leaves
    ///
    /// - At 1–2: `Err`, nothing changed.
    /// - At 3: the epoch check failed on a guessed epoch → nothing was written: read the epoch
    ///   (consistent), go back to 1 once; another conflict → the transaction wrote nothing; the
    ///   provisional tombstone and outbox entry this call wrote are lifted (a destroy that landed
    ///   meanwhile wrote its own final ones, which stay), `Conflict` returned; unreachable or
    ///   unknown outcome → fail closed: the old token stays dead here and the outbox deletes it
    ///   from DynamoDB once reachable (its ack makes the tombstone final), and the new key too (the
    ///   transaction may have happened unanswered); no new token is issued. the flush fails after a
    ///   commit → no token issued, the new key's delete queued, `Err`; a crash after the commit and
    ///   before the flush → the old item is gone from DynamoDB, and the restarted node refuses its
    ///   token once its stream or lease says so (docs/design.md, tier rule 2).
    /// - At 5: never fails the call (see `evict_past_limit`)
    pub async fn regenerate(
        &self,
        old: &Session,
        binding: Option<UserBinding>,
        keep_data: bool,
        now: UnixMillis,
    ) -> Result<Result<(SessionToken, Session), RotateConflict>, Error> {
        let cache = &self.inner.cache;
        if cache.is_tombstoned(&old.key)? {
            return Ok(Err(RotateConflict::OldChanged));
        }
        let signs_in = binding.is_some();
        // A sign-in records its own client; a rotation without one keeps
        // the old session's.
        let (user, role, client): (Option<Text>, Option<Text>, _) = match binding {
            Some(b) => (Some(b.user_id.into()), b.role.map(Into::into), b.client),
            None => (
                old.record.user_id.clone(),
                old.record.role.clone(),
                old.record.client.clone(),
            ),
        };
        let rebinds = old.record.user_id.is_some() && old.record.user_id == user;
        // The user's epoch, optimistically: the one this node read within the
        // lease, else the old session's if it is the same user's (epochs only
        // grow), else 0 (most users are never logged out everywhere). The
        // transaction's epoch check refuses a wrong guess without writing;
        // then the epoch is read (consistently) and the rotation tried once
        // more. This saves a DynamoDB read on almost every login.
        let mut epoch = user.as_deref().map(|uid| {
            self.known_epoch(uid, now).unwrap_or(if rebinds {
                old.record.bound_user_epoch()
            } else {
                0
            })
        });
        let mut epoch_read = false;
        // The user's session count is checked against the limit in the
        // transaction; only a login that finds it reached lists (and evicts
        // from) the user's sessions.
        let mut limit = Some(self.session_cap());
        loop {
            // Rotating a session that was logged out everywhere, without a
            // fresh sign-in, would carry the revoked login over.
            if !signs_in
                && old.record.user_id.is_some()
                && epoch.is_some_and(|e| e > old.record.bound_user_epoch())
            {
                return Ok(Err(RotateConflict::EpochChanged));
            }
            let guard = (epoch, limit);
            let bound = Bound {
                user: user.as_deref(),
                role: role.as_deref(),
                client: client.as_ref(),
                home: self.own_home(),
            };
            match self.rotate_once(old, &bound, guard, keep_data, now).await? {
                Err(RotateConflict::EpochChanged) if !epoch_read => {
                    if let Some(uid) = &user {
                        epoch = Some(self.user_epoch(uid, now, true).await?);
                    }
                    epoch_read = true;
                }
                Err(RotateConflict::UserAtLimit) if limit.is_some() => {
                    // At the limit: sign in all the same, then evict the
                    // user's oldest sessions (without holding this login up).
                    limit = None;
                }
                outcome => {
                    if let (true, None, Ok((_, session))) = (signs_in, limit, &outcome) {
                        self.evict_after_login(session, now);
                    }
                    return Ok(outcome);
                }
            }
        }
    }

    /// One attempt of [`regenerate`](Self::regenerate) under `epoch`:
    /// revoke the old key here, then the one DynamoDB transaction, the
    /// revocation's flush running while the transaction is in flight.
    ///
    /// Why the flush may overlap the transaction (docs/design.md, tier rule
    /// 2): the provisional tombstone is in sled before the transaction is
    /// sent, so while this process lives the old token is refused here from
    /// that instant; and nothing is issued (no new token, no answer) until
    /// the flush AND the transaction are done, so a login that is answered
    /// is durable. A crash between the transaction's commit and the flush
    /// loses only an unanswered login's local tombstone: the old item is
    /// gone from DynamoDB, the restarted node learns that from its stream
    /// (it resumes from its durable checkpoint) or its lease, as every other
    /// node does, and the new token was never issued.
    ///
    /// `guard`: the user's epoch, and the limit on the user's session count
    /// if this rotation adds a session to the user (`None`: count it, with
    /// no limit).
    async fn rotate_once(
        &self,
        old: &Session,
        bound: &Bound<'_>,
        guard: (Option<u64>, Option<u64>),
        keep_data: bool,
        now: UnixMillis,
    ) -> Result<Result<(SessionToken, Session), RotateConflict>, Error> {
        let (epoch, limit) = guard;
        let user = bound.user;
        let cache = &self.inner.cache;
        // A bound session carries the fleet's global epoch (read at most
        // once per lease): one bound while everyone is logged out is
        // outlawed once this node learns the raise.
        let global = match user {
            Some(_) => self.global_epoch(now).await?,
            None => 0,
        };
        let _revoking = self.inner.revoking.mark(old.key);
        let Some(tomb) =
            self.write_provisional_revocation(&old.key, old.record.absolute_expiry.max(now), now)?
        else {
            // Revoked for good meanwhile (a logout): nothing to rotate.
            return Ok(Err(RotateConflict::OldChanged));
        };
        #[cfg(feature = "test-support")]
        self.inner.holds.pause_if_held(&old.key).await;
        let (token, key, record) = new_record(
            old,
            bound,
            (global, epoch),
            keep_data,
            &self.inner.settings.policy,
            now,
        );
        // Rebinding the old session's own user replaces one of its sessions.
        let adds = u64::from(old.record.user_id.as_deref() != user);
        let guard = user.map(|uid| EpochGuard {
            sid: StorageKey::user_epoch(uid).0,
            epoch: record.bound_user_epoch(),
            adds,
            limit: limit.filter(|_| adds > 0),
            exp: self.epoch_item_exp(now),
        });
        let body = self.encode(&record);
        let item = item_of(&key, &record, body.clone());
        let (flushed, rotated) = tokio::join!(
            cache.flush(),
            self.inner
                .dynamo
                .rotate(old.key.as_bytes(), old.record.version, &item, guard)
        );
        match (rotated, flushed) {
            (Ok(Ok(())), Ok(())) => {
                cache.ack(&old.key, tomb.nonce)?;
                self.inner.unknown.forget(&key);
                cache.fill(&key, now, record.version, &body)?;
                Ok(Ok((token, Session { key, record })))
            }
            (Ok(Ok(())), Err(flush)) => {
                // Written in DynamoDB, but the old key's revocation is not
                // durable here: issue nothing (fail closed) and queue the
                // unissued session's delete.
                tracing::warn!(err = %flush, "regenerate: the revocation could not be flushed; no token issued");
                self.queue_unissued(key, &record, now).await;
                Err(flush.into())
            }
            (Ok(Err(conflict)), flushed) => {
                // Nothing was written in DynamoDB: undo this call's provisional
                // revocation (unless a destroy replaced it with its own).
                cache.lift(&old.key, tomb.nonce)?;
                flushed?;
                Ok(Err(conflict))
            }
            (Err(err), _) => {
                // The provisional tombstone stays (fail closed); the outbox's
                // ack makes it final once DynamoDB confirms the delete.
                tracing::warn!(%err, "regenerate failed; the old session stays revoked and its delete is queued");
                if err.is_unavailable() {
                    // The transaction may have happened unanswered.
                    self.queue_unissued(key, &record, now).await;
                }
                Err(err.into())
            }
        }
    }

    /// The write of a new session got no answer, so it may have happened,
    /// and its token will never be issued: queue its delete as a revocation
    /// (tombstone + outbox entry, flushed), so the outbox removes it once
    /// DynamoDB answers and it does not linger in its user's listings.
    pub(super) async fn queue_unissued(
        &self,
        key: StorageKey,
        record: &SessionRecord,
        now: UnixMillis,
    ) {
        let queued = self
            .write_revocation(&key, record.absolute_expiry.max(now), now)
            .await;
        if let Err(err) = queued {
            tracing::warn!(%err, "could not queue the delete of an unissued session");
        }
    }
}

/// Who the session replacing another is bound to, with what the sign-in
/// recorded about its client.
struct Bound<'a> {
    user: Option<&'a str>,
    role: Option<&'a str>,
    client: Option<&'a ClientInfo>,
    /// The home region the new token names.
    home: Option<u8>,
}

/// The session replacing `old`: a new token, its key, its record.
fn new_record(
    old: &Session,
    bound: &Bound<'_>,
    (global, epoch): (u64, Option<u64>),
    keep_data: bool,
    policy: &crate::record::Policy,
    now: UnixMillis,
) -> (SessionToken, StorageKey, SessionRecord) {
    let token = SessionToken::generate_in(bound.home);
    let key = token.storage_key();
    let mut record = SessionRecord::new(policy, now);
    record.user_id = bound.user.map(Text::new);
    record.role = bound.role.map(Text::new);
    record.client = bound.client.cloned();
    if keep_data {
        record.data.clone_from(&old.record.data);
    }
    record.set_epochs(global, epoch.unwrap_or(0));
    (token, key, record)
}

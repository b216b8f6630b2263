//! [`SessionStore`] for [`TieredStore`]: an actix-web app gets both tiers with
//! `SessionMiddleware::new(store, key)`.
//!
//! # Mapping
//!
//! The actix-session [`SessionKey`] is the [`SessionToken`] wire form (43
//! characters of base64url); the session state is the record's `data`; the
//! middleware's TTL is the record's idle timeout (`idle_timeout_ms`), capped as
//! always by the store's absolute timeout. `now` is the system clock.
//!
//! | call | what it does | failure |
//! |---|---|---|
//! | `load` | [`TieredStore::load`]. A key that does not parse as a token, or names no live session (unknown, expired, revoked), is `None`: the middleware then starts a fresh session under a new key, never the presented one | `LoadError::Other` (500) |
//! | `save` | [`TieredStore::create`] with the state and TTL; the new token is the key | `SaveError::Other`, no key issued |
//! | `update` | load, then [`TieredStore::update`] (data and TTL, conditional on the version just loaded); on a version conflict, reload once and retry. Returns the same key | session gone meanwhile (revoked or expired while the request ran): `UpdateError::Other`, nothing written. Two conflicts: `UpdateError::Other` |
//! | `update_ttl` | load, then [`TieredStore::update`] with the TTL only (refreshes `last_seen_at`) | session gone: `Ok`, nothing to extend. Two conflicts: `Ok` (the competing write refreshed `last_seen_at` too) |
//! | `delete` | [`TieredStore::destroy`]: tombstone here, then delete in DynamoDB | `Err`; a DynamoDB delete that did not go through waits in the outbox and is `Ok` (the key is already dead on this node) |
//!
//! Unlike actix-session's Redis store, `update` does not fall back to issuing
//! a new key when the session has vanished since the request began: the
//! likeliest cause is a logout or an admin revocation racing the request, and
//! saving the request's state under a new key would bring the revoked login
//! back. The client gets a 500 once, then a fresh empty session.
//!
//! # Renew (login) and purge (logout)
//!
//! `Session::renew` is carried out by the middleware as `delete(old)` then
//! `save(new)`: two calls, not [`TieredStore::regenerate`]'s single
//! transaction. Each call is all-or-nothing across the tiers and the delete
//! comes first, so a failure fails closed: if the delete fails, nothing is
//! saved and the request fails; if the save fails after the delete, the old key
//! is dead and no new one is issued (the user logs in again). The pre-login key
//! is dead on this node and in DynamoDB before the new one exists; another
//! node that had it cached drops it within its revalidation lease
//! ([`StoreSettings::revalidate_after_ms`](crate::store::StoreSettings::revalidate_after_ms)).
//! `Session::purge` is `delete`.
//!
//! A revocation whose DynamoDB delete is queued is replayed by
//! [`TieredStore::maintain`]; an app using this adapter runs it in the
//! background, as the `actix_app` example does.
//!
//! The key is a bearer secret: no log line here carries it (nor does any error
//! returned to the middleware, which logs those).

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use anyhow::{anyhow, Context as _};

use crate::record::UnixMillis;
use crate::store::{self, NewSession, SessionChange};
use crate::sync::Conflict;
use crate::token::SessionToken;
use crate::TieredStore;

/// A TTL below this is taken as this: DynamoDB's TTL works in whole seconds,
/// and a zero or negative TTL would issue a key that is dead on arrival.
const MIN_TTL_MS: u64 = 1_000;

/// The middleware's TTL as an idle timeout in milliseconds, clamped to
/// `MIN_TTL_MS..=u64::MAX`.
fn idle_timeout_ms(ttl: &Duration) -> u64 {
    let ms = ttl
        .whole_milliseconds()
        .clamp(i128::from(MIN_TTL_MS), i128::from(u64::MAX));
    // Clamped into u64's range just above.
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn now() -> UnixMillis {
    // A clock before 1970 reads as 1970: every session then looks expired,
    // which fails closed.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a conditional write through [`TieredStore::update`] came to.
enum Written {
    /// Written, at the version loaded just before.
    Done,
    /// No live session under the key (revoked, expired, or never issued).
    Gone,
    /// The version moved under both attempts.
    Contended,
}

/// Load, write `change`, and on a version conflict reload once and retry.
async fn write_through(
    store: &TieredStore,
    token: &SessionToken,
    change: SessionChange,
) -> Result<Written, store::Error> {
    for _ in 0..2 {
        let now = now();
        let Some(session) = store.load(token, now).await? else {
            return Ok(Written::Gone);
        };
        match store.update(&session, change.clone(), now).await? {
            Ok(_) => return Ok(Written::Done),
            Err(Conflict) => continue,
        }
    }
    Ok(Written::Contended)
}

fn state_of(data: BTreeMap<String, String>) -> HashMap<String, String> {
    data.into_iter().collect()
}

impl SessionStore for TieredStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let Ok(token) = SessionToken::parse(session_key.as_ref()) else {
            return Ok(None);
        };
        let session = TieredStore::load(self, &token, now())
            .await
            .context("loading a session")
            .map_err(LoadError::Other)?;
        Ok(session.map(|s| state_of(s.record.data)))
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        let spec = NewSession {
            binding: None,
            data: session_state.into_iter().collect(),
            idle_timeout_ms: Some(idle_timeout_ms(ttl)),
        };
        let (token, _) = self
            .create(spec, now())
            .await
            .context("creating a session")
            .map_err(SaveError::Other)?;
        SessionKey::try_from(token.expose())
            // 43 characters, far below the 4064-byte limit: cannot fail.
            .map_err(|_| SaveError::Other(anyhow!("a session token did not fit a cookie")))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let Ok(token) = SessionToken::parse(session_key.as_ref()) else {
            // The middleware only updates a key that loaded; never adopt one.
            return Err(UpdateError::Other(anyhow!(
                "refusing to update a key that is not a session token"
            )));
        };
        let change = SessionChange {
            data: Some(session_state.into_iter().collect()),
            idle_timeout_ms: Some(idle_timeout_ms(ttl)),
        };
        match write_through(self, &token, change)
            .await
            .context("updating a session")
            .map_err(UpdateError::Other)?
        {
            Written::Done => Ok(session_key),
            Written::Gone => {
                tracing::info!("session ended while its request ran; its state is not saved");
                Err(UpdateError::Other(anyhow!(
                    "the session ended while the request ran"
                )))
            }
            Written::Contended => Err(UpdateError::Other(anyhow!(
                "the session kept changing under concurrent writes"
            ))),
        }
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> anyhow::Result<()> {
        let Ok(token) = SessionToken::parse(session_key.as_ref()) else {
            return Ok(());
        };
        let change = SessionChange {
            data: None,
            idle_timeout_ms: Some(idle_timeout_ms(ttl)),
        };
        match write_through(self, &token, change)
            .await
            .context("extending a session")?
        {
            Written::Done | Written::Gone => {}
            Written::Contended => {
                tracing::debug!("TTL extension skipped: concurrent writes refreshed the session");
            }
        }
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let Ok(token) = SessionToken::parse(session_key.as_ref()) else {
            return Ok(());
        };
        let outcome = self
            .destroy(&token, now())
            .await
            .context("revoking a session")?;
        if outcome == store::Destroyed::Pending {
            tracing::warn!("session revoked on this node; its DynamoDB delete is queued");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_clamped_not_panicking() {
        assert_eq!(idle_timeout_ms(&Duration::seconds(60)), 60_000);
        assert_eq!(idle_timeout_ms(&Duration::ZERO), MIN_TTL_MS);
        assert_eq!(idle_timeout_ms(&Duration::seconds(-5)), MIN_TTL_MS);
        assert_eq!(idle_timeout_ms(&Duration::MIN), MIN_TTL_MS);
        assert_eq!(idle_timeout_ms(&Duration::MAX), u64::MAX);
        assert_eq!(idle_timeout_ms(&Duration::milliseconds(1_500)), 1_500);
    }
}

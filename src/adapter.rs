//! [`SessionStore`] for [`TieredStore`]: an actix-web app gets both tiers with
//! `SessionMiddleware::new(store, key)`.
//!
//! # Mapping
//!
//! The actix-session [`SessionKey`] is the [`SessionToken`] wire form (43
//! characters of base64url); the session state is the record's `data`, plus
//! the reserved key [`USER_ID_KEY`] for the record's user binding (below).
//! The idle timeout (`idle_timeout_ms`) is the smaller of the middleware's TTL
//! (actix-session passes it to `save`, `update` and `update_ttl`; one day
//! unless the app sets a `PersistentSession`) and the node's policy
//! ([`Policy::idle_timeout_ms`](crate::record::Policy::idle_timeout_ms),
//! `session.idle_timeout_secs`), capped as always by the store's absolute
//! timeout: an app cannot keep a session alive longer than the node allows.
//! `now` is the system clock.
//!
//! | call | what it does | failure |
//! |---|---|---|
//! | `load` | [`TieredStore::load`]. A key that does not parse as a token, or names no live session (unknown, expired, revoked), is `None`: the middleware then starts a fresh session under a new key, never the presented one. An unknown key costs at most one DynamoDB read per `cache.negative_ttl_ms` and no write | `LoadError::Other` (500) |
//! | `save` | [`TieredStore::create`] with the state, the binding and the TTL; the new token is the key. Empty state (no data, no binding) writes nothing: see below | `SaveError::Other`, no key issued |
//! | `update` | load, then [`TieredStore::update`] (data and TTL, conditional on the version just loaded); on a version conflict, reload once and retry. Returns the same key | session gone meanwhile (revoked or expired while the request ran): `UpdateError::Other`, nothing written. Two conflicts: `UpdateError::Other`. A change of [`USER_ID_KEY`]: `UpdateError::Other`, nothing written |
//! | `update_ttl` | load, then [`TieredStore::update`] with the TTL only (refreshes `last_seen_at`) | session gone: `Ok`, nothing to extend. Two conflicts: `Ok` (the competing write refreshed `last_seen_at` too) |
//! | `delete` | [`TieredStore::destroy`]: tombstone here, then delete in DynamoDB | `Err`; a DynamoDB delete that did not go through waits in the outbox and is `Ok` (the key is already dead on this node) |
//!
//! Unlike actix-session's Redis store, `update` does not fall back to issuing
//! a new key when the session has vanished since the request began: the
//! likeliest cause is a logout or an admin revocation racing the request, and
//! saving the request's state under a new key would bring the revoked login
//! back. The client gets a 500 once, then a fresh empty session.
//!
//! # Nothing stored for an empty session
//!
//! actix-session 0.11 calls `save` only when there is something to write: a
//! request without a session key saves only if the handler left state in it,
//! and otherwise sets no cookie. The one call with empty state is `renew` on
//! a live session whose state is empty (say `clear()` then `renew()`): the
//! middleware deletes the old key, then `save`s and sets a cookie with the
//! key `save` returns. `save` must return a key, so for empty state it returns
//! a fresh token of its own drawing and writes nothing in either tier. The
//! token names no session: on the next request `load` answers `None`, the
//! middleware starts afresh with no key, and the first state the app stores
//! goes through `save` under another new key. The unstored token is never
//! adopted (no call writes under a key the store did not issue).
//!
//! # Binding a user: [`USER_ID_KEY`]
//!
//! An app binds a user to its session by storing the user id under the
//! reserved state key `"edge-session.user_id"` ([`USER_ID_KEY`]), as a JSON
//! string (what `Session::insert(USER_ID_KEY, "alice")` stores), together
//! with `Session::renew()`:
//!
//! ```ignore
//! session.renew(); // a privilege change: new key, the old one dies
//! session.insert(edge_session::USER_ID_KEY, &user_id)?;
//! ```
//!
//! The adapter maps it to the record's user binding, not to `data`: `save`
//! creates the session bound ([`TieredStore::create`] with a
//! [`UserBinding`], one transaction with the user's revocation-epoch check),
//! and `load` puts it back into the state (`Session::get::<String>`). So a
//! bound adapter session is listed by
//! [`TieredStore::list_user_sessions`], refused once the user's epoch moves,
//! and destroyed by [`TieredStore::revoke_user`] (log out everywhere), like
//! any login of the node's own HTTP API. The binding is set only on a new
//! key: an `update` that adds, changes or removes [`USER_ID_KEY`] without
//! `renew()` fails and writes nothing (binding a user to the key the browser
//! carried before login would be session fixation). To sign out, `purge()`.
//! A value that is not a JSON string of 1-256 bytes fails the call.
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
use crate::store::TieredStore;
use crate::store::{self, NewSession, SessionChange, UserBinding};
use crate::token::SessionToken;
use edge_session_sync::Conflict;

/// The reserved state key whose value (a JSON string) is the session's
/// bound user: see the module doc.
pub const USER_ID_KEY: &str = "edge-session.user_id";

/// The longest user id accepted under [`USER_ID_KEY`], in bytes.
const MAX_USER_ID_BYTES: usize = 256;

/// A TTL below this is taken as this: DynamoDB's TTL works in whole seconds,
/// and a zero or negative TTL would issue a key that is dead on arrival.
const MIN_TTL_MS: u64 = 1_000;

/// The middleware's TTL as an idle timeout in milliseconds, clamped to
/// `MIN_TTL_MS..=u64::MAX`.
fn ttl_ms(ttl: &Duration) -> u64 {
    let ms = ttl
        .whole_milliseconds()
        .clamp(i128::from(MIN_TTL_MS), i128::from(u64::MAX));
    // Clamped into u64's range just above.
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The idle timeout for an adapter session: the middleware's TTL, bounded by
/// the node's policy.
fn idle_timeout_ms(store: &TieredStore, ttl: &Duration) -> u64 {
    ttl_ms(ttl).min(store.settings().policy.idle_timeout_ms)
}

/// The middleware's state split into the record's data and its binding.
struct State {
    data: BTreeMap<String, String>,
    user_id: Option<String>,
}

fn split(mut state: HashMap<String, String>) -> anyhow::Result<State> {
    let user_id = match state.remove(USER_ID_KEY) {
        None => None,
        Some(json) => {
            let id: String = serde_json::from_str(&json)
                .map_err(|_| anyhow!("`{USER_ID_KEY}` must hold a JSON string"))?;
            if id.is_empty() || id.len() > MAX_USER_ID_BYTES {
                return Err(anyhow!(
                    "`{USER_ID_KEY}` must be 1-{MAX_USER_ID_BYTES} bytes"
                ));
            }
            Some(id)
        }
    };
    Ok(State {
        data: state.into_iter().collect(),
        user_id,
    })
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
    /// The state names another user than the session is bound to.
    Rebind,
}

/// Load, write `change`, and on a version conflict reload once and retry.
/// With `user`, the session must be bound to exactly that user (or, with
/// `Some(None)`, to none).
async fn write_through(
    store: &TieredStore,
    token: &SessionToken,
    change: SessionChange,
    user: Option<Option<&str>>,
) -> Result<Written, store::Error> {
    for _ in 0..2 {
        let now = now();
        let Some(session) = store.load(token, now).await? else {
            return Ok(Written::Gone);
        };
        if user.is_some_and(|u| u != session.record.user_id.as_deref()) {
            return Ok(Written::Rebind);
        }
        match store.update(&session, change.clone(), now).await? {
            Ok(_) => return Ok(Written::Done),
            Err(Conflict) => continue,
        }
    }
    Ok(Written::Contended)
}

fn state_of(record: crate::record::SessionRecord) -> HashMap<String, String> {
    let mut state: HashMap<_, _> = record.data.into_iter().collect();
    if let Some(user) = record.user_id {
        // A JSON string, as `Session::insert` would have stored it.
        state.insert(
            USER_ID_KEY.to_owned(),
            serde_json::Value::from(user.as_str()).to_string(),
        );
    }
    state
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
        Ok(session.map(|s| state_of(s.record)))
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        let state = split(session_state).map_err(SaveError::Other)?;
        let token = if state.data.is_empty() && state.user_id.is_none() {
            // Nothing to keep: a key that names no session (module doc).
            SessionToken::generate()
        } else {
            let spec = NewSession {
                binding: state.user_id.map(|user_id| UserBinding {
                    user_id,
                    role: None,
                    client: None,
                }),
                data: state.data,
                idle_timeout_ms: Some(idle_timeout_ms(self, ttl)),
            };
            let (token, _) = self
                .create(spec, now())
                .await
                .context("creating a session")
                .map_err(SaveError::Other)?;
            token
        };
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
        let state = split(session_state).map_err(UpdateError::Other)?;
        let change = SessionChange {
            data: Some(state.data),
            idle_timeout_ms: Some(idle_timeout_ms(self, ttl)),
        };
        match write_through(self, &token, change, Some(state.user_id.as_deref()))
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
            Written::Rebind => Err(UpdateError::Other(anyhow!(
                "`{USER_ID_KEY}` changes only with Session::renew (a new key)"
            ))),
        }
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> anyhow::Result<()> {
        let Ok(token) = SessionToken::parse(session_key.as_ref()) else {
            return Ok(());
        };
        let change = SessionChange {
            data: None,
            idle_timeout_ms: Some(idle_timeout_ms(self, ttl)),
        };
        match write_through(self, &token, change, None)
            .await
            .context("extending a session")?
        {
            Written::Done | Written::Gone | Written::Rebind => {}
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
        assert_eq!(ttl_ms(&Duration::seconds(60)), 60_000);
        assert_eq!(ttl_ms(&Duration::ZERO), MIN_TTL_MS);
        assert_eq!(ttl_ms(&Duration::seconds(-5)), MIN_TTL_MS);
        assert_eq!(ttl_ms(&Duration::MIN), MIN_TTL_MS);
        assert_eq!(ttl_ms(&Duration::MAX), u64::MAX);
        assert_eq!(ttl_ms(&Duration::milliseconds(1_500)), 1_500);
    }

    #[test]
    fn the_binding_is_split_from_the_data() {
        let state = |v: &str| {
            HashMap::from([
                ("n".to_owned(), "1".to_owned()),
                (USER_ID_KEY.to_owned(), v.to_owned()),
            ])
        };
        let s = split(state("\"alice\"")).unwrap();
        assert_eq!(s.user_id.as_deref(), Some("alice"));
        assert_eq!(s.data, BTreeMap::from([("n".to_owned(), "1".to_owned())]));
        for bad in ["alice", "7", "\"\"", "null"] {
            assert!(split(state(bad)).is_err(), "{bad}");
        }
        assert!(split(state(&format!("\"{}\"", "u".repeat(257)))).is_err());
        let record = crate::record::SessionRecord {
            user_id: Some("alice".into()),
            ..crate::record::SessionRecord::new(&crate::record::Policy::default(), 0)
        };
        assert_eq!(state_of(record)[USER_ID_KEY], "\"alice\"");
    }
}

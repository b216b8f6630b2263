//! The identity assertion the gateway hands to the app behind it: an
//! Ed25519-signed JWT (`alg` `EdDSA`) naming the session's user, role and
//! handle, verifiable by anyone holding the node's JWK Set
//! (`/.well-known/jwks.json`).
//!
//! Signing costs more than the microsecond session lookup it rides on, so an
//! assertion is cached per session and reused while less than half its
//! lifetime has passed: the app never receives one with less than half its
//! lifetime left, and the hot forward-auth check does not sign. The cache is
//! bounded ([`MAX_CACHED`] entries, about 700 bytes each) and holds only
//! signed-in sessions, which an unauthenticated client cannot make.

mod keys;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::http::header::HeaderValue;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;

use crate::config::Config;
use crate::record::{secs, UnixMillis};
use crate::store::Session;
use crate::token::StorageKey;

/// Cached assertions at most (over all shards).
pub const MAX_CACHED: usize = 32_768;

/// Shards of the cache: a lock each, so concurrent checks rarely meet.
const SHARDS: usize = 16;

/// Who the session belongs to, as the gateway tells the app.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The bound user (`X-Edge-User`, claim `sub`).
    pub user: String,
    /// The user's role, empty if none (`X-Edge-Role`, claim `role`).
    pub role: String,
    /// The session's public handle (`X-Edge-Session`, claim `sid`).
    pub handle: String,
    /// When the user last authenticated, Unix seconds (`X-Edge-Auth-Time`,
    /// claim `auth_time`): every sign-in makes a new session, so this is
    /// the session's creation.
    pub auth_time: u64,
    /// The signed JWT (`X-Edge-Assertion`).
    pub assertion: Arc<str>,
    /// The gateway's header values for all of the above, made on first use
    /// (`None` if one cannot be a header value). An identity is cached, so
    /// a hot session's are made once.
    pub header_values: OnceLock<Option<[HeaderValue; 5]>>,
}

/// The JWT claims.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    role: &'a str,
    sid: &'a str,
    auth_time: u64,
    iat: u64,
    exp: u64,
}

struct Cached {
    identity: Arc<Identity>,
    /// Re-sign from this instant (half the lifetime).
    renew_at: UnixMillis,
    /// The assertion's `exp`, in milliseconds.
    expires_at: UnixMillis,
}

/// The signer, its JWK Set, and the per-session cache.
pub struct Assertions {
    header: Header,
    key: jsonwebtoken::EncodingKey,
    jwks: String,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    cache: Box<[Mutex<HashMap<StorageKey, Cached>>]>,
}

impl Assertions {
    /// The signer `config` names (`[gateway]`), generating the key into
    /// `data_dir` if none is configured. Fails on a key that is unreadable
    /// or not Ed25519.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let g = &config.gateway;
        let signing = keys::signing_key(g.signing_key.as_deref(), &config.data_dir)?;
        let published = g
            .published_keys
            .iter()
            .map(|p| keys::published_key(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let jwks = serde_json::to_string(&keys::jwk_set(&signing.jwk, &published))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signing.kid);
        Ok(Assertions {
            header,
            key: signing.encoding,
            jwks,
            issuer: g.issuer.clone(),
            audience: g.audience.clone(),
            ttl_secs: g.assertion_ttl_secs,
            cache: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    /// The JWK Set, as served.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The identity of `session` at `now`: `None` for an anonymous session.
    /// The caller has checked that the session is live.
    pub fn identity(
        &self,
        session: &Session,
        now: UnixMillis,
    ) -> Result<Option<Arc<Identity>>, jsonwebtoken::errors::Error> {
        let Some(user) = session.record.user_id.as_deref() else {
            return Ok(None);
        };
        let role = session.record.role.as_deref().unwrap_or("");
        let shard = &self.cache[usize::from(session.key.0[0]) % SHARDS];
        if let Some(hit) = lock(shard).get(&session.key) {
            if now < hit.renew_at && hit.identity.user == user && hit.identity.role == role {
                return Ok(Some(Arc::clone(&hit.identity)));
            }
        }
        let handle = session.key.handle();
        let iat = secs(now);
        // Never outlive the session itself.
        let exp = (iat + self.ttl_secs).min(secs(session.record.expires_at()).max(iat + 1));
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: user,
            role,
            sid: &handle,
            auth_time: secs(session.record.created_at),
            iat,
            exp,
        };
        let jwt = jsonwebtoken::encode(&self.header, &claims, &self.key)?;
        let identity = Arc::new(Identity {
            user: user.to_owned(),
            role: role.to_owned(),
            handle,
            auth_time: secs(session.record.created_at),
            assertion: jwt.into(),
            header_values: OnceLock::new(),
        });
        let cached = Cached {
            identity: Arc::clone(&identity),
            renew_at: iat * 1000 + (exp - iat) * 1000 / 2,
            expires_at: exp * 1000,
        };
        let mut map = lock(shard);
        if map.len() >= MAX_CACHED / SHARDS {
            map.retain(|_, c| c.expires_at > now);
            if map.len() >= MAX_CACHED / SHARDS {
                map.clear();
            }
        }
        map.insert(session.key, cached);
        Ok(Some(identity))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Policy, SessionRecord};
    use jsonwebtoken::{DecodingKey, Validation};

    fn signer(dir: &std::path::Path) -> Assertions {
        let config = Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        };
        Assertions::from_config(&config).unwrap()
    }

    fn session(user: Option<&str>, now: UnixMillis) -> Session {
        let mut record = SessionRecord::new(&Policy::default(), now);
        record.user_id = user.map(Into::into);
        record.role = Some("admin".into());
        Session {
            key: crate::token::SessionToken::generate().storage_key(),
            record,
        }
    }

    fn verify(signer: &Assertions, jwt: &str) -> serde_json::Value {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(signer.jwks_json()).unwrap();
        let header = jsonwebtoken::decode_header(jwt).unwrap();
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&["edge-session"]);
        v.set_audience(&["edge-session-upstream"]);
        let key = DecodingKey::from_jwk(jwk).unwrap();
        jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
            .unwrap()
            .claims
    }

    #[test]
    fn the_assertion_verifies_against_the_published_key_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let now = crate::record::now();
        let sess = session(Some("alice"), now);
        let id = s.identity(&sess, now).unwrap().unwrap();
        let claims = verify(&s, &id.assertion);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["sid"], sess.key.handle());
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(exp > iat && exp - iat <= 60);
    }

    #[test]
    fn an_anonymous_session_has_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::record::now();
        assert!(signer(dir.path())
            .identity(&session(None, now), now)
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_assertion_is_reused_for_half_its_lifetime_then_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let now = crate::record::now();
        let sess = session(Some("alice"), now);
        let first = s.identity(&sess, now).unwrap().unwrap();
        let later = s.identity(&sess, now + 29_000).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &later));
        let renewed = s.identity(&sess, now + 31_000).unwrap().unwrap();
        assert_ne!(first.assertion, renewed.assertion);
    }

    #[test]
    fn a_changed_role_is_signed_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let now = crate::record::now();
        let mut sess = session(Some("alice"), now);
        let first = s.identity(&sess, now).unwrap().unwrap();
        sess.record.role = Some("user".into());
        let second = s.identity(&sess, now + 1).unwrap().unwrap();
        assert_eq!(second.role, "user");
        assert_ne!(first.assertion, second.assertion);
        assert_eq!(verify(&s, &second.assertion)["role"], "user");
    }
}

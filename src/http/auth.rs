//! Credentials: login-page users (argon2id) and service API keys (compared
//! in constant time).

use std::collections::HashMap;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::UserConfig;

/// A user who may sign in on the login page.
#[derive(Clone)]
struct User {
    password_hash: SecretString,
    role: String,
}

/// The configured users.
#[derive(Clone)]
pub struct Users {
    by_id: HashMap<String, User>,
    /// Verified against when the user is unknown, so an unknown name costs
    /// the same time as a wrong password.
    dummy_hash: SecretString,
}

/// A successful sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user.
    pub user_id: String,
    /// The user's role.
    pub role: String,
}

impl Users {
    /// From `[[auth.users]]` (hashes already validated as PHC strings).
    pub fn new(users: &[UserConfig]) -> Self {
        let by_id = users
            .iter()
            .map(|u| {
                (
                    u.user_id.clone(),
                    User {
                        password_hash: u.password_hash.clone(),
                        role: u.role.clone(),
                    },
                )
            })
            .collect();
        let dummy_hash =
            hash_password("edge-session timing equaliser").expect("hashing a constant cannot fail");
        Users {
            by_id,
            dummy_hash: SecretString::from(dummy_hash),
        }
    }

    /// Check a username and password. CPU-heavy (argon2id): call it off the
    /// async workers (`web::block`).
    pub fn verify(&self, username: &str, password: &str) -> Option<SignedIn> {
        let (hash, user) = match self.by_id.get(username) {
            Some(user) => (user.password_hash.expose_secret(), Some(user)),
            None => (self.dummy_hash.expose_secret(), None),
        };
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        match (ok, user) {
            (true, Some(user)) => Some(SignedIn {
                user_id: username.to_owned(),
                role: user.role.clone(),
            }),
            _ => None,
        }
    }
}

/// Hash `password` as an argon2id PHC string with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The service API keys.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// From `api.keys`.
    pub fn new(keys: &[SecretString]) -> Self {
        ApiKeys {
            digests: keys.iter().map(|k| digest(k.expose_secret())).collect(),
        }
    }

    /// Whether `presented` is one of the keys. Both sides are hashed first so
    /// the comparison is fixed-length, and every key is compared, so neither
    /// the length nor the position of a match shows in the timing.
    pub fn accepts(&self, presented: &str) -> bool {
        let candidate = digest(presented);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&candidate)
            })
            .into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    blake3::derive_key("edge-session 2026-11 api key comparison", key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_the_right_password_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let users = Users::new(&[UserConfig {
            user_id: "alice".into(),
            password_hash: SecretString::from(hash),
            role: "admin".into(),
            demo: false,
        }]);
        assert_eq!(
            users.verify("alice", "correct horse"),
            Some(SignedIn {
                user_id: "alice".into(),
                role: "admin".into()
            })
        );
        assert_eq!(users.verify("alice", "wrong"), None);
        assert_eq!(users.verify("bob", "correct horse"), None);
        assert_eq!(users.verify("", ""), None);
    }

    #[test]
    fn api_keys_match_exactly() {
        let keys = ApiKeys::new(&[
            SecretString::from("k1-0123456789abcdef"),
            SecretString::from("k2-0123456789abcdef"),
        ]);
        assert!(keys.accepts("k1-0123456789abcdef"));
        assert!(keys.accepts("k2-0123456789abcdef"));
        assert!(!keys.accepts("k1-0123456789abcde"));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::new(&[]).accepts("anything"));
    }
}

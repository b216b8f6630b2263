//! Session identifiers.
//!
//! A [`SessionToken`] is 32 bytes from the OS CSPRNG, carried as 43 characters
//! of base64url without padding. It lives only in a cookie or a request header.
//! Neither tier stores it: both key a session by its [`StorageKey`], the blake3
//! key derivation of the token under a fixed domain-separation context.
//!
//! A node of a multi-region fleet (`[regions]`) issues version 2: one byte
//! naming the session's home region (`0x80 | place`, its place in
//! `regions.names`), then the 32 random bytes, carried as 44 characters. A
//! node reads the hint without a lookup, to find a session its own replica
//! does not have yet. The hint is part of what the key is derived from, so a
//! token whose hint was altered names no session. 43-character tokens
//! (version 1, no home) are always read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::sync::LazyLock;

/// Raw token length in bytes.
pub const TOKEN_BYTES: usize = 32;
/// Encoded token length: base64url without padding of 32 bytes.
pub const TOKEN_CHARS: usize = 43;

const STORAGE_KEY_CONTEXT: &str = "edge-session 2026-11 session token -> storage key v1";

/// Encoded length of a version-2 token (a home byte, then 32 random bytes).
pub const HOMED_TOKEN_CHARS: usize = 44;

/// The most regions a version-2 token can name.
pub const MAX_REGIONS: usize = 128;

/// A session token: the bearer secret. `Debug` redacts it and it has no
/// `Display`, so it cannot slip into a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; TOKEN_BYTES], Option<u8>);

/// Why a string is not a session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not 43 (or 44) characters.
    #[error("a session token is 43 or 44 characters")]
    Length,
    /// A character outside base64url, or non-canonical trailing bits.
    #[error("a session token is base64url without padding")]
    Encoding,
}

impl SessionToken {
    /// A fresh token from the OS CSPRNG.
    ///
    /// # Panics
    /// Only if the operating system cannot supply random bytes, in which case
    /// no session can be issued safely at all.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)
            .expect("the OS CSPRNG is unavailable; refusing to issue sessions");
        SessionToken(bytes, None)
    }

    /// A fresh token naming `home` (a place in `regions.names`, below
    /// `MAX_REGIONS`) as its home region; `None`: a version-1 token.
    pub fn generate_in(home: Option<u8>) -> Self {
        let SessionToken(bytes, _) = Self::generate();
        SessionToken(bytes, home.filter(|h| usize::from(*h) < MAX_REGIONS))
    }

    /// The home region this token names (its place in `regions.names`).
    pub fn home(&self) -> Option<u8> {
        self.1
    }

    /// Parse the wire form. Anything but 43 canonical base64url characters is
    /// rejected.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        if text.len() == HOMED_TOKEN_CHARS {
            let mut bytes = [0u8; TOKEN_BYTES + 1];
            return match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut bytes) {
                Ok(n) if n == TOKEN_BYTES + 1 && bytes[0] & 0x80 != 0 => {
                    let mut random = [0u8; TOKEN_BYTES];
                    random.copy_from_slice(&bytes[1..]);
                    Ok(SessionToken(random, Some(bytes[0] & 0x7f)))
                }
                _ => Err(TokenError::Encoding),
            };
        }
        if text.len() != TOKEN_CHARS {
            return Err(TokenError::Length);
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        // The base64 engine rejects non-canonical trailing bits (it decodes
        // with `decode_allow_trailing_bits = false`), so each token has
        // exactly one text form.
        match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut bytes) {
            Ok(TOKEN_BYTES) => Ok(SessionToken(bytes, None)),
            _ => Err(TokenError::Encoding),
        }
    }

    /// The wire form, for a `Set-Cookie` or a JSON response to the session's
    /// owner. Never log it.
    pub fn expose(&self) -> String {
        match self.1 {
            None => URL_SAFE_NO_PAD.encode(self.0),
            Some(home) => {
                let mut bytes = [0u8; TOKEN_BYTES + 1];
                bytes[0] = 0x80 | home;
                bytes[1..].copy_from_slice(&self.0);
                URL_SAFE_NO_PAD.encode(bytes)
            }
        }
    }

    /// The raw bytes (tests scan the tiers for them).
    pub fn expose_bytes(&self) -> &[u8; TOKEN_BYTES] {
        &self.0
    }

    /// The key both tiers store this session under.
    pub fn storage_key(&self) -> StorageKey {
        // Same output as `blake3::derive_key(STORAGE_KEY_CONTEXT, token)`, without
        // re-hashing the context on every call.
        static DERIVER: LazyLock<blake3::Hasher> =
            LazyLock::new(|| blake3::Hasher::new_derive_key(STORAGE_KEY_CONTEXT));
        let mut hasher = DERIVER.clone();
        if let Some(home) = self.1 {
            hasher.update(&[0x80 | home]);
        }
        hasher.update(&self.0);
        StorageKey(*hasher.finalize().as_bytes())
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// The hashed token: the partition key in DynamoDB and the key in sled. It
/// cannot be turned back into the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey(pub [u8; 32]);

impl StorageKey {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An opaque public identifier of the session (base64url of the key), used
    /// as the `handle` in session listings.
    pub fn handle(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The key of `user_id`'s revocation-epoch item ("log out everywhere").
    /// In its own domain, so it can never equal a session's key.
    pub fn user_epoch(user_id: &str) -> Self {
        StorageKey(blake3::derive_key(
            "edge-session 2026-11 user revocation epoch v1",
            user_id.as_bytes(),
        ))
    }

    /// The item holding the fleet's global revocation epoch ("end every
    /// session of every user").
    pub fn global_epoch() -> Self {
        StorageKey(blake3::derive_key(
            "edge-session 2026-12 global revocation epoch v1",
            b"",
        ))
    }

    /// Parse a `handle` back into the key it names.
    pub fn from_handle(handle: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(handle.as_bytes(), &mut bytes) {
            Ok(32) if handle.len() == TOKEN_CHARS => Some(StorageKey(bytes)),
            _ => None,
        }
    }
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StorageKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_round_trip_and_differ() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        assert_eq!(SessionToken::parse(&a.expose()).unwrap(), a);
        assert_ne!(a.storage_key(), b.storage_key());
    }

    #[test]
    fn a_homed_token_names_its_region_and_its_own_key() {
        let t = SessionToken::generate_in(Some(3));
        let text = t.expose();
        assert_eq!(text.len(), HOMED_TOKEN_CHARS);
        let back = SessionToken::parse(&text).unwrap();
        assert_eq!(
            (back.home(), back.storage_key()),
            (Some(3), t.storage_key())
        );
        // The same random bytes under another home: another session.
        let moved = SessionToken(t.0, Some(4));
        assert_ne!(moved.storage_key(), t.storage_key());
        assert_ne!(SessionToken(t.0, None).storage_key(), t.storage_key());
        assert_eq!(SessionToken::generate_in(Some(200)).home(), None);
    }

    #[test]
    fn debug_redacts_the_token() {
        let t = SessionToken::generate();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.expose()));
        assert_eq!(shown, "SessionToken(<redacted>)");
    }

    #[test]
    fn parse_rejects_everything_but_canonical_base64url() {
        let good = SessionToken::generate().expose();
        assert_eq!(SessionToken::parse(""), Err(TokenError::Length));
        assert_eq!(SessionToken::parse(&good[..42]), Err(TokenError::Length));
        assert_eq!(
            SessionToken::parse(&format!("{good}AA")),
            Err(TokenError::Length)
        );
        // 44 characters are a version-2 token: a home byte with its high bit.
        assert_eq!(
            SessionToken::parse(&format!("A{good}")),
            Err(TokenError::Encoding)
        );
        let mut plus = good.clone().into_bytes();
        plus[0] = b'+';
        assert_eq!(
            SessionToken::parse(std::str::from_utf8(&plus).unwrap()),
            Err(TokenError::Encoding)
        );
        // 43 chars encode 258 bits; the last char's low 2 bits must be zero.
        let mut trailing = good.into_bytes();
        trailing[42] = b'B';
        assert_eq!(
            SessionToken::parse(std::str::from_utf8(&trailing).unwrap()),
            Err(TokenError::Encoding)
        );
        assert_eq!(
            SessionToken::parse(&"é".repeat(21)),
            Err(TokenError::Length)
        );
    }

    #[test]
    fn storage_key_is_domain_separated_from_plain_hash() {
        let t = SessionToken::generate();
        assert_ne!(
            t.storage_key().0,
            *blake3::hash(t.expose_bytes()).as_bytes()
        );
    }

    #[test]
    fn storage_key_is_blake3_derive_key() {
        let t = SessionToken::generate();
        assert_eq!(
            t.storage_key().0,
            blake3::derive_key(STORAGE_KEY_CONTEXT, t.expose_bytes())
        );
    }

    #[test]
    fn handle_round_trips() {
        let key = SessionToken::generate().storage_key();
        assert_eq!(StorageKey::from_handle(&key.handle()), Some(key));
        assert_eq!(StorageKey::from_handle("nope"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = SessionToken::parse(&s);
        }

        #[test]
        fn parse_accepts_exactly_the_canonical_encoding(bytes in any::<[u8; 32]>()) {
            let text = URL_SAFE_NO_PAD.encode(bytes);
            let parsed = SessionToken::parse(&text).unwrap();
            prop_assert_eq!(parsed.expose_bytes(), &bytes);
        }
    }
}

//! The relay feed's wire format: one frame per line, `<mac> <json>\n`.
//!
//! `json` is a [`Frame`]; `mac` is HMAC-SHA256 over the subscriber's nonce,
//! a newline and `json`, keyed with `relay.secret`, in URL-safe base64. The
//! nonce is the subscriber's own, fresh per connection, so a frame recorded
//! from one connection is refused on another: a node accepts only what a
//! holder of the fleet secret signed for it. The subscription request is
//! signed the same way (HMAC over a fixed label and the nonce), so the feed
//! is served only to the fleet.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use edge_session_sync::SID_LEN;

type HmacSha256 = Hmac<Sha256>;

/// The longest frame line a subscriber reads (a batch of 1,000
/// invalidations is about 150 KB).
pub const MAX_LINE: usize = 4 << 20;

/// The header a subscriber names itself in (its public address), for the
/// relay's log: it is not signed and grants nothing.
pub const NODE_HEADER: &str = "x-edge-session-node";

/// The label a subscription request's MAC covers, with the nonce.
const SUBSCRIBE: &[u8] = b"edge-session relay subscribe\n";

/// One invalidation as relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    /// The session key, URL-safe base64.
    pub k: String,
    /// The new `ver`; absent: removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u64>,
    /// `true`: raised with the version unknown (evict whatever is cached).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub u: bool,
    /// The stream record's sequence number (what duplicates share).
    pub q: String,
}

/// One frame of a relay's feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The relay's epoch (its slot's fencing token).
    pub e: u64,
    /// Dense sequence number within the epoch; a hello carries the last
    /// number already sent before it.
    pub s: u64,
    /// What the frame says.
    #[serde(flatten)]
    pub body: Body,
}

/// What a frame says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Body {
    /// First frame of a connection: `resumed` when the feed goes on right
    /// after the subscriber's `after` (nothing in between was lost).
    Hello {
        /// The subscriber's `after` was still in the ring.
        resumed: bool,
    },
    /// Invalidations of one batch, in stream order.
    Batch {
        /// The invalidations.
        inv: Vec<Relayed>,
    },
    /// The relay's own heartbeat came back through the stream `age` ms
    /// after it wrote it (the relay's clock for both).
    Beat {
        /// Milliseconds between the heartbeat's write and this frame.
        age: u64,
    },
    /// The relay's position no longer covers everything before now
    /// (records lost to retention, a replaced stream): a subscriber's
    /// coverage restarts.
    Reset,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length")
}

/// A fresh random nonce, base64.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS CSPRNG is unavailable");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The MAC a subscription request for `nonce` carries.
pub fn subscribe_mac(secret: &[u8], nonce: &str) -> String {
    let mut m = mac(secret);
    m.update(SUBSCRIBE);
    m.update(nonce.as_bytes());
    URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// Whether `given` is the subscription MAC of `nonce` (constant time).
pub fn subscribe_mac_ok(secret: &[u8], nonce: &str, given: &str) -> bool {
    let Ok(given) = URL_SAFE_NO_PAD.decode(given) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(SUBSCRIBE);
    m.update(nonce.as_bytes());
    m.verify_slice(&given).is_ok()
}

/// `frame`'s JSON (signed per subscriber by [`sign`]).
pub fn json(frame: &Frame) -> String {
    serde_json::to_string(frame).expect("a frame serializes")
}

/// The line carrying `json` to the subscriber with `nonce`.
pub fn sign(secret: &[u8], nonce: &str, json: &str) -> String {
    let mut m = mac(secret);
    m.update(nonce.as_bytes());
    m.update(b"\n");
    m.update(json.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{tag} {json}\n")
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `<mac> <json>` shape.
    #[error("not a frame line")]
    Shape,
    /// The MAC does not verify: not signed with the fleet secret for this
    /// connection.
    #[error("bad signature")]
    Signature,
    /// Signed, but not a frame.
    #[error("undecodable frame: {0}")]
    Json(String),
}

/// Verify and decode one line (without its newline).
pub fn open(secret: &[u8], nonce: &str, line: &[u8]) -> Result<Frame, Refused> {
    let at = line.iter().position(|b| *b == b' ').ok_or(Refused::Shape)?;
    let (tag, json) = (&line[..at], &line[at + 1..]);
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Shape)?;
    let mut m = mac(secret);
    m.update(nonce.as_bytes());
    m.update(b"\n");
    m.update(json);
    m.verify_slice(&tag).map_err(|_| Refused::Signature)?;
    serde_json::from_slice(json).map_err(|e| Refused::Json(e.to_string()))
}

/// A session key as relayed.
pub fn encode_key(sid: &[u8; SID_LEN]) -> String {
    URL_SAFE_NO_PAD.encode(sid)
}

/// A relayed session key, if it is one.
pub fn decode_key(text: &str) -> Option<[u8; SID_LEN]> {
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_frame_opens_only_with_the_secret_and_the_nonce_it_was_signed_for() {
        let frame = Frame {
            e: 3,
            s: 9,
            body: Body::Batch {
                inv: vec![Relayed {
                    k: encode_key(&[7; SID_LEN]),
                    v: None,
                    u: false,
                    q: "42".into(),
                }],
            },
        };
        let line = sign(SECRET, "n1", &json(&frame));
        let line = line.trim_end().as_bytes();
        assert_eq!(open(SECRET, "n1", line), Ok(frame));
        assert_eq!(open(SECRET, "n2", line), Err(Refused::Signature));
        assert_eq!(
            open(b"another secret of thirty-two bytes", "n1", line),
            Err(Refused::Signature)
        );
        assert_eq!(open(SECRET, "n1", b"garbage"), Err(Refused::Shape));
    }

    #[test]
    fn subscription_macs_verify_in_constant_time_and_refuse_others() {
        let m = subscribe_mac(SECRET, "abc");
        assert!(subscribe_mac_ok(SECRET, "abc", &m));
        assert!(!subscribe_mac_ok(SECRET, "abd", &m));
        assert!(!subscribe_mac_ok(b"x", "abc", &m));
        assert!(!subscribe_mac_ok(SECRET, "abc", "not base64 !"));
    }

    #[test]
    fn keys_round_trip_and_bad_ones_are_none() {
        assert_eq!(decode_key(&encode_key(&[1; SID_LEN])), Some([1; SID_LEN]));
        assert_eq!(decode_key("AAAA"), None);
    }
}

//! The session record and its expiry rules. Pure: every decision takes `now`
//! (milliseconds since the Unix epoch) as a parameter; [`now`] is the wall
//! clock callers read it from.
//!
//! `data.rs` holds [`SessionData`], the application data that stays in its
//! stored bytes until it is used, written in the byte forms of
//! `src/wire.rs` that record format 2 and its sections share.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::client::ClientInfo;

mod data;
mod text;

pub use data::SessionData;
pub use text::Text;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// Wall-clock now.
pub fn now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds to whole epoch seconds, the unit of times in JSON.
pub fn secs(ms: UnixMillis) -> u64 {
    ms / 1000
}

/// UTC calendar date and time of `epoch_secs`: year, month, day, hour,
/// minute, second (Howard Hinnant's civil-from-days).
pub fn civil(epoch_secs: u64) -> (i64, u64, u64, u64, u64, u64) {
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, (secs % 3600) / 60, secs % 60)
}

/// `epoch_secs` in RFC 3339, UTC (`2026-12-07T14:00:00Z`).
pub fn rfc3339(epoch_secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(epoch_secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// One session, as both tiers store it (encoded by [`crate::codec`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Incremented on every write; every DynamoDB write is conditional on it.
    pub version: u64,
    /// The bound user; `None` while anonymous.
    pub user_id: Option<Text>,
    /// The bound user's role.
    pub role: Option<Text>,
    /// The revocation epochs when the user was bound, in one word: the
    /// user's in the low 32 bits ([`bound_user_epoch`](Self::bound_user_epoch)),
    /// the fleet's global one in the high 32
    /// ([`bound_global_epoch`](Self::bound_global_epoch)). A session bound
    /// under an older epoch than its user's, or than the fleet's, was
    /// logged out everywhere. (One word keeps both record formats as they
    /// are; a record of a build without the global epoch reads as global
    /// epoch 0.)
    pub user_epoch: u64,
    /// Application data, decoded on first use.
    pub data: SessionData,
    /// When the session was created.
    pub created_at: UnixMillis,
    /// Last activity, refreshed coarsely (see [`Policy::touch_interval_ms`]).
    pub last_seen_at: UnixMillis,
    /// Idle timeout in milliseconds.
    pub idle_timeout_ms: u64,
    /// Absolute expiry: the session ends then, however active.
    pub absolute_expiry: UnixMillis,
    /// What the sign-in recorded about its client (`session.record_client`);
    /// kept only by record format 3.
    pub client: Option<ClientInfo>,
}

/// The expiry policy applied to new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A session unused for this long ends.
    pub idle_timeout_ms: u64,
    /// A session ends this long after it was created, however active.
    pub absolute_timeout_ms: u64,
    /// `last_seen_at` is written back at most this often per session.
    pub touch_interval_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            idle_timeout_ms: 30 * 60 * 1000,
            absolute_timeout_ms: 12 * 60 * 60 * 1000,
            touch_interval_ms: 60 * 1000,
        }
    }
}

impl SessionRecord {
    /// The user's revocation epoch this session was bound under.
    pub fn bound_user_epoch(&self) -> u64 {
        self.user_epoch & u64::from(u32::MAX)
    }

    /// The fleet's global revocation epoch this session was bound under.
    pub fn bound_global_epoch(&self) -> u64 {
        self.user_epoch >> 32
    }

    /// Bind under the fleet's epoch `global` and the user's `user`.
    pub fn set_epochs(&mut self, global: u64, user: u64) {
        let clamp = |e: u64| e.min(u64::from(u32::MAX));
        self.user_epoch = (clamp(global) << 32) | clamp(user);
    }

    /// A fresh record at version 1.
    pub fn new(policy: &Policy, now: UnixMillis) -> Self {
        SessionRecord {
            version: 1,
            user_id: None,
            role: None,
            user_epoch: 0,
            data: SessionData::new(),
            created_at: now,
            last_seen_at: now,
            idle_timeout_ms: policy.idle_timeout_ms,
            absolute_expiry: now.saturating_add(policy.absolute_timeout_ms),
            client: None,
        }
    }

    /// The instant the session ends unless it is used before then.
    pub fn expires_at(&self) -> UnixMillis {
        self.last_seen_at
            .saturating_add(self.idle_timeout_ms)
            .min(self.absolute_expiry)
    }

    /// Whether the session may be served at `now`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        now < self.expires_at()
    }

    /// Whether `last_seen_at` is stale enough to be written back at `now`.
    pub fn needs_touch(&self, policy: &Policy, now: UnixMillis) -> bool {
        now.saturating_sub(self.last_seen_at) >= policy.touch_interval_ms
    }

    /// The DynamoDB `exp` attribute (epoch seconds, rounded up): TTL may
    /// delete the item after this.
    pub fn ttl_epoch_secs(&self) -> u64 {
        self.expires_at().div_ceil(1000)
    }

    /// The successor of this record: same content, version + 1.
    pub fn next_version(&self) -> Self {
        SessionRecord {
            version: self.version + 1,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn policy() -> Policy {
        Policy {
            idle_timeout_ms: 10 * MIN,
            absolute_timeout_ms: 60 * MIN,
            touch_interval_ms: MIN,
        }
    }

    #[test]
    fn idle_expiry() {
        let r = SessionRecord::new(&policy(), 1_000_000);
        assert!(r.is_live(1_000_000));
        assert!(r.is_live(1_000_000 + 10 * MIN - 1));
        assert!(!r.is_live(1_000_000 + 10 * MIN));
    }

    #[test]
    fn activity_extends_idle_but_never_past_absolute() {
        let mut r = SessionRecord::new(&policy(), 0);
        r.last_seen_at = 55 * MIN;
        assert_eq!(r.expires_at(), 60 * MIN);
        assert!(r.is_live(60 * MIN - 1));
        assert!(!r.is_live(60 * MIN));
    }

    #[test]
    fn touch_is_coarse() {
        let r = SessionRecord::new(&policy(), 0);
        assert!(!r.needs_touch(&policy(), MIN - 1));
        assert!(r.needs_touch(&policy(), MIN));
    }

    #[test]
    fn ttl_rounds_up_to_seconds() {
        let mut r = SessionRecord::new(&policy(), 1);
        r.idle_timeout_ms = 1000;
        assert_eq!(r.expires_at(), 1001);
        assert_eq!(r.ttl_epoch_secs(), 2);
    }
}

//! `[auth]`: the login page's users, and what a login may cost.

use secrecy::SecretString;
use serde::Deserialize;

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.users]]`
    pub users: Vec<UserConfig>,
    /// Threads checking passwords, apart from the pool flushing sled (0: one per core).
    pub hash_workers: usize,
    /// Password checks that may wait for a hash worker; more get 429.
    pub hash_queue: usize,
    /// Logins in progress at once (from before the body is read to the
    /// answer); more get 429 at once, without their body being read.
    pub max_logins_in_flight: usize,
    /// Login attempts per client address per minute.
    pub per_ip_per_minute: u32,
    /// Attempts a client address may make at once before the rate applies.
    pub per_ip_burst: u32,
    /// Login attempts per IPv6 /48 per minute (addresses are counted per
    /// /64 by `per_ip_*`; a routed /48 holds 65,536 of them).
    pub per_ipv6_48_per_minute: u32,
    /// Attempts a /48 may make at once before its rate applies.
    pub per_ipv6_48_burst: u32,
    /// Login attempts per username (known or not) per minute.
    pub per_account_per_minute: u32,
    /// Attempts on one username at once before the rate applies.
    pub per_account_burst: u32,
    /// Keys each budget table tracks at most; when full, a new key takes
    /// the room of the keys that owe least (nobody is refused for it).
    pub max_tracked: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users: Vec::new(),
            hash_workers: 0,
            hash_queue: 16,
            max_logins_in_flight: 64,
            per_ip_per_minute: 30,
            per_ip_burst: 10,
            per_ipv6_48_per_minute: 300,
            per_ipv6_48_burst: 100,
            per_account_per_minute: 10,
            per_account_burst: 5,
            max_tracked: 100_000,
        }
    }
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name and bound user id.
    pub user_id: String,
    /// argon2id PHC string (`edge-session hash-password`).
    pub password_hash: SecretString,
    /// Role bound to the session.
    #[serde(default = "UserConfig::default_role")]
    pub role: String,
    /// Marks the shipped demo user (warned about on non-loopback addresses).
    #[serde(default)]
    pub demo: bool,
}

impl UserConfig {
    fn default_role() -> String {
        "user".into()
    }
}

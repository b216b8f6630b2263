//! Login budgets (anti-automation), each a `governor` GCRA limiter keyed
//! by the client or the username, and the client address itself (the TCP
//! peer, or `X-Forwarded-For` behind a trusted proxy). An attempt is
//! counted, in order, against:
//!
//! 1. its address (`auth.per_ip_*`): an IPv4 address, or an IPv6 /64 (one
//!    host usually holds a whole /64);
//! 2. for IPv6, its /48 (`auth.per_ipv6_48_*`, looser: a routed /48 holds
//!    65,536 /64s);
//! 3. the pair of username and address, at half the username's rate and
//!    one attempt less than its burst: one address can never spend all of an
//!    account's budget, so on its own it can never keep the account locked
//!    (every other address keeps at least one attempt at once, and half the
//!    rate);
//! 4. the username (`auth.per_account_*`), known or not.
//!
//! A budget refused stops the count there: later budgets are not spent.
//!
//! Memory: each table holds at most about `auth.max_tracked` keys (about
//! 100 bytes each, four tables). A full table never refuses: a key it has
//! not seen takes the room of the keys that owe least ([`evicting`]), so
//! filling the tables with fresh addresses or usernames locks no one out
//! and evicts no key that is being refused while keys with budget left
//! remain. Every [`SWEEP_EVERY`] the keys whose budget has fully recovered
//! are dropped.

mod evicting;

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::config::{AuthConfig, IpNet};
use evicting::EvictingStore;

/// How often recovered entries are dropped from the limiters.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a client address is counted as: an IPv4 address, or an IPv6 /64.
type AddrKey = IpAddr;

/// A username's key: 16 bytes of a keyed hash, so a long name costs no
/// more memory than a short one.
type AccountKey = [u8; 16];

/// A GCRA limiter over a bounded table.
type Limiter<K> = RateLimiter<K, EvictingStore<K>, DefaultClock>;

fn limiter<K: std::hash::Hash + Eq + Clone>(quota: Quota, capacity: usize) -> Limiter<K> {
    RateLimiter::new(quota, EvictingStore::new(capacity), DefaultClock::default())
}

/// The budgets. Shared by every worker.
pub struct Budgets {
    per_addr: Limiter<AddrKey>,
    per_v6_48: Limiter<u64>,
    per_pair: Limiter<(AccountKey, AddrKey)>,
    per_account: Limiter<AccountKey>,
    /// Made once: building a quanta clock calibrates it (CPUID), which a
    /// profile of a login flood found to be a fifth of the node's CPU when
    /// it was built per attempt.
    clock: DefaultClock,
    started: Instant,
    /// Milliseconds after `started` of the last sweep.
    last_sweep_ms: AtomicU64,
}

/// Over budget: retry after this many seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Seconds until an attempt would be counted again.
    pub retry_after_secs: u64,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    Quota::per_minute(nz(per_minute)).allow_burst(nz(burst))
}

/// Half of `per_minute`, and one attempt less than `burst` at once (at
/// least one).
fn pair_quota(per_minute: u32, burst: u32) -> Quota {
    let period = Duration::from_secs(120) / per_minute.max(1);
    Quota::with_period(period)
        .expect("a non-zero period")
        .allow_burst(nz(burst.saturating_sub(1)))
}

impl Budgets {
    /// The budgets of `[auth]`.
    pub fn new(config: &AuthConfig) -> Self {
        let cap = config.max_tracked;
        let (account_rate, account_burst) =
            (config.per_account_per_minute, config.per_account_burst);
        Budgets {
            per_addr: limiter(quota(config.per_ip_per_minute, config.per_ip_burst), cap),
            per_v6_48: limiter(
                quota(config.per_ipv6_48_per_minute, config.per_ipv6_48_burst),
                cap,
            ),
            per_pair: limiter(pair_quota(account_rate, account_burst), cap),
            per_account: limiter(quota(account_rate, account_burst), cap),
            clock: DefaultClock::default(),
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    /// Count one login attempt from `addr` on `username` against each
    /// budget in turn (see the module's docs).
    pub fn attempt(&self, addr: IpAddr, username: &str) -> Result<(), OverBudget> {
        self.sweep_if_due();
        let over = |not_until: governor::NotUntil<_>| OverBudget {
            retry_after_secs: not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64,
        };
        let addr = addr_key(addr);
        self.per_addr.check_key(&addr).map_err(over)?;
        if let IpAddr::V6(v6) = addr {
            let net = (u128::from(v6) >> 80) as u64;
            self.per_v6_48.check_key(&net).map_err(over)?;
        }
        let account = account_key(username);
        self.per_pair.check_key(&(account, addr)).map_err(over)?;
        self.per_account.check_key(&account).map_err(over)
    }

    /// Entries in the address and username tables (tests, metrics).
    pub fn tracked(&self) -> (usize, usize) {
        (self.per_addr.len(), self.per_account.len())
    }

    fn sweep_if_due(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64 {
            return;
        }
        // One caller sweeps; the others go on.
        if self
            .last_sweep_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.per_addr.retain_recent();
            self.per_addr.shrink_to_fit();
            self.per_v6_48.retain_recent();
            self.per_pair.retain_recent();
            self.per_pair.shrink_to_fit();
            self.per_account.retain_recent();
            self.per_account.shrink_to_fit();
            let (addrs, accounts) = self.tracked();
            metrics::gauge!("edge_session_login_tracked", "by" => "address").set(addrs as f64);
            metrics::gauge!("edge_session_login_tracked", "by" => "account").set(accounts as f64);
        }
    }
}

/// What a client address is counted as (IPv6: its /64).
pub fn addr_key(addr: IpAddr) -> AddrKey {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn account_key(username: &str) -> AccountKey {
    let hash = blake3::derive_key("edge-session 2026-11 login budget", username.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash[..16]);
    key
}

/// The client's address: the TCP peer, unless the peer is one of
/// `trusted` proxies; then the right-most `X-Forwarded-For` hop that is not
/// itself trusted (hops to its left are the client's to forge). A hop that
/// does not parse ends the walk at the last good one.
pub fn client_addr(req: &HttpRequest, trusted: &[IpNet]) -> IpAddr {
    let Some(peer) = req.peer_addr().map(|a| a.ip().to_canonical()) else {
        return IpAddr::from([0, 0, 0, 0]);
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let values: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut client = peer;
    for hop in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = parse_hop(hop.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` hop: an address, optionally with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(peer: &str, xff: &[&str]) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(peer.parse().unwrap());
        for v in xff {
            r = r.append_header(("X-Forwarded-For", *v));
        }
        r.to_http_request()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_addr(&req("192.0.2.1:1", &["203.0.113.9"]), &trusted),
            ip("192.0.2.1")
        );
        // Trusted peer: the right-most untrusted hop, forged hops left of it ignored.
        assert_eq!(
            client_addr(
                &req("10.0.0.1:1", &["1.1.1.1, 203.0.113.9", "10.0.0.2"]),
                &trusted
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(&req("10.0.0.1:1", &["garbage, 198.51.100.7:443"]), &trusted),
            ip("198.51.100.7")
        );
        // No header, or nothing usable: the proxy itself.
        assert_eq!(
            client_addr(&req("10.0.0.1:1", &[]), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_addr(&req("10.0.0.1:1", &["nonsense"]), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn budgets_refuse_over_rate_and_bound_their_maps() {
        let config = AuthConfig {
            per_ip_per_minute: 1,
            per_ip_burst: 2,
            per_ipv6_48_per_minute: 1,
            per_ipv6_48_burst: 3,
            per_account_per_minute: 1,
            per_account_burst: 4,
            max_tracked: 16,
            ..AuthConfig::default()
        };
        let b = Budgets::new(&config);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(b.attempt(ip("192.0.2.1"), "alice").is_ok());
        assert!(b.attempt(ip("192.0.2.1"), "alice").is_ok());
        let over = b.attempt(ip("192.0.2.1"), "alice").unwrap_err();
        assert!(over.retry_after_secs >= 1 && over.retry_after_secs <= 60);
        // The same account from other addresses: what is left of its budget.
        assert!(b.attempt(ip("192.0.2.2"), "alice").is_ok());
        assert!(b.attempt(ip("192.0.2.3"), "alice").is_ok());
        assert!(b.attempt(ip("192.0.2.4"), "alice").is_err());
        // IPv6 addresses of one /64 share a budget, and /64s of one /48 a
        // looser one.
        assert!(b.attempt(ip("2001:db8::1"), "x").is_ok());
        assert!(b.attempt(ip("2001:db8::2"), "y").is_ok());
        assert!(b.attempt(ip("2001:db8::3"), "z").is_err());
        assert!(b.attempt(ip("2001:db8:0:1::1"), "z").is_ok());
        assert!(b.attempt(ip("2001:db8:0:2::1"), "z").is_err());
        // Full tables refuse no one: fresh keys take the room of others.
        for i in 0..100u32 {
            let addr = IpAddr::from([198, 51, 100, (i % 250) as u8]);
            let _ = b.attempt(addr, &format!("user-{i}"));
        }
        assert!(b.attempt(ip("2001:db8:1::1"), "w").is_ok());
        let (addrs, accounts) = b.tracked();
        assert!(addrs <= 16 && accounts <= 16, "bounded: {:?}", b.tracked());
    }

    #[test]
    fn one_address_never_spends_all_of_an_accounts_budget() {
        let config = AuthConfig {
            per_ip_per_minute: 1000,
            per_ip_burst: 1000,
            per_account_per_minute: 10,
            per_account_burst: 6,
            ..AuthConfig::default()
        };
        let b = Budgets::new(&config);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let passed = (0..50)
            .filter(|_| b.attempt(ip("192.0.2.1"), "alice").is_ok())
            .count();
        assert_eq!(passed, 5, "one less than the burst");
        let others = (2..=5)
            .filter(|i| b.attempt(ip(&format!("192.0.2.{i}")), "alice").is_ok())
            .count();
        assert_eq!(others, 1, "the rest is left for other addresses");
    }
}

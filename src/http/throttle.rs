//! Login budgets (anti-automation): a rate per client address and a rate per
//! username, each a `governor` keyed GCRA limiter, and the client address
//! itself (the TCP peer, or `X-Forwarded-For` behind a trusted proxy).
//!
//! Memory: each limiter holds one entry (about 100 bytes) per key it has
//! seen and not yet forgotten. Every [`SWEEP_EVERY`] the entries whose
//! budget has fully recovered are dropped (`retain_recent`) and the maps
//! shrunk. A map at `auth.max_tracked` entries refuses every attempt (429)
//! until a sweep frees room: worst case `2 × max_tracked` entries in all.
//! A username only reaches the per-account map once its address passed its
//! own budget.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{AuthConfig, IpNet};

/// How often recovered entries are dropped from the limiters.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a client address is counted as: an IPv4 address, or an IPv6 /64
/// (one host usually holds a whole /64).
type AddrKey = IpAddr;

/// A username's key: 16 bytes of a keyed hash, so a long name costs no
/// more memory than a short one.
type AccountKey = [u8; 16];

/// The two budgets. Shared by every worker.
pub struct Budgets {
    per_addr: DefaultKeyedRateLimiter<AddrKey>,
    per_account: DefaultKeyedRateLimiter<AccountKey>,
    max_tracked: usize,
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

fn quota(per_minute: u32, burst: u32) -> Quota {
    let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
    Quota::per_minute(nz(per_minute)).allow_burst(nz(burst))
}

impl Budgets {
    /// The budgets of `[auth]`.
    pub fn new(config: &AuthConfig) -> Self {
        Budgets {
            per_addr: RateLimiter::keyed(quota(config.per_ip_per_minute, config.per_ip_burst)),
            per_account: RateLimiter::keyed(quota(
                config.per_account_per_minute,
                config.per_account_burst,
            )),
            max_tracked: config.max_tracked,
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    /// Count one login attempt from `addr` on `username`: first against the
    /// address's budget, then (only if that passed) the username's.
    pub fn attempt(&self, addr: IpAddr, username: &str) -> Result<(), OverBudget> {
        self.sweep_if_due();
        if self.per_addr.len() >= self.max_tracked || self.per_account.len() >= self.max_tracked {
            return Err(OverBudget {
                retry_after_secs: SWEEP_EVERY.as_secs(),
            });
        }
        let clock = DefaultClock::default();
        let over = |not_until: governor::NotUntil<_>| OverBudget {
            retry_after_secs: not_until
                .wait_time_from(clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64,
        };
        self.per_addr.check_key(&addr_key(addr)).map_err(over)?;
        self.per_account
            .check_key(&account_key(username))
            .map_err(over)
    }

    /// Entries in the two maps (tests, metrics).
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
            self.per_account.retain_recent();
            self.per_account.shrink_to_fit();
            let (addrs, accounts) = self.tracked();
            metrics::gauge!("edge_session_login_tracked", "by" => "address").set(addrs as f64);
            metrics::gauge!("edge_session_login_tracked", "by" => "account").set(accounts as f64);
        }
    }
}

fn addr_key(addr: IpAddr) -> AddrKey {
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
            per_account_per_minute: 1,
            per_account_burst: 3,
            max_tracked: 4,
            ..AuthConfig::default()
        };
        let b = Budgets::new(&config);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(b.attempt(a, "alice").is_ok());
        assert!(b.attempt(a, "alice").is_ok());
        let over = b.attempt(a, "alice").unwrap_err();
        assert!(over.retry_after_secs >= 1 && over.retry_after_secs <= 60);
        // The same account from another address: one attempt left.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(b.attempt(other, "alice").is_ok());
        assert!(b.attempt(other, "alice").is_err());
        // IPv6 addresses of one /64 share a budget.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(b.attempt(v6("2001:db8::1"), "x").is_ok());
        assert!(b.attempt(v6("2001:db8::2"), "y").is_ok());
        assert!(b.attempt(v6("2001:db8::3"), "z").is_err());
        // Full maps refuse new keys until a sweep.
        assert!(b.attempt(v6("2001:db8:1::1"), "w").is_ok());
        assert_eq!(b.tracked().0, 4);
        assert!(b.attempt(v6("2001:db8:2::1"), "v").is_err());
    }
}

//! What a session records about the client that signed it in, so a person
//! can tell their sessions apart ("Firefox on Linux · 203.0.113.0/24 ·
//! Berlin"), and what `session.record_client` lets it keep.
//!
//! - [`ClientInfo`]: the recorded fields, as a record carries them (one
//!   byte section, read in place; `record_format = 3`). Each field is at
//!   most [`FIELD_MAX`] bytes, so the section is at most [`SECTION_MAX`]
//!   (455 bytes; it counts against `session.max_record_bytes`).
//! - [`ClientMode`]: `full` keeps the address, the browser with its major
//!   version, the OS, the device and (with `session.geoip_database`) the
//!   country and city; `truncated` keeps the address's /24 (IPv4) or /48
//!   (IPv6) network and the browser family only; `off` keeps nothing.
//! - [`Recorder`]: builds a [`ClientInfo`] from a request's address and
//!   `User-Agent`. The agent is parsed by the uap-core project's regexes
//!   (`client/regexes.json`, converted from its `regexes.yaml`, through the
//!   `ua-parser` crate); the place comes from a MaxMind-format database
//!   (`client/geo.rs`).
//!
//! The fields are stored in the session's record in both tiers, and so
//! deleted with it (logout, revocation, expiry: DynamoDB's TTL deletes the
//! item); a touch refreshes `last_address`. Nothing else keeps them, except
//! the session events that carry them (docs/design.md, "Session events").

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::wire::{self, Reader, WireError};

pub mod geo;

pub use geo::{GeoDb, Place};

/// The longest field kept, in bytes (cut on a character boundary).
pub const FIELD_MAX: usize = 64;
/// The longest encoded [`ClientInfo`]: seven fields, each behind a one-byte
/// length.
pub const SECTION_MAX: usize = 7 * (FIELD_MAX + 1);

/// `session.record_client`: what a sign-in records about its client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMode {
    /// Address, browser and version, OS, device, country and city.
    #[default]
    Full,
    /// The address's /24 or /48 network and the browser family only.
    Truncated,
    /// Nothing.
    Off,
}

impl ClientMode {
    /// `ip` as this mode keeps it; `None` when it keeps nothing.
    pub fn address(self, ip: IpAddr) -> Option<String> {
        match self {
            ClientMode::Off => None,
            ClientMode::Full => Some(ip.to_string()),
            ClientMode::Truncated => Some(match ip {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    format!("{a}.{b}.{c}.0/24")
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
                    format!("{net}/48")
                }
            }),
        }
    }
}

/// The recorded fields, each optional (the API leaves out what is absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientFields<'a> {
    /// The address (or network) the session signed in from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<&'a str>,
    /// The address (or network) it was last used from, refreshed with the
    /// touch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_address: Option<&'a str>,
    /// Browser family, with its major version in `full` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser: Option<&'a str>,
    /// Operating system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<&'a str>,
    /// Device ("iPhone", "Pixel 7"); absent for a desktop browser.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a str>,
    /// ISO 3166 country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<&'a str>,
    /// City, in English.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<&'a str>,
}

impl<'a> ClientFields<'a> {
    fn each(&self) -> [Option<&'a str>; 7] {
        [
            self.address,
            self.last_address,
            self.browser,
            self.os,
            self.device,
            self.country,
            self.city,
        ]
    }

    /// One line for a person: "Firefox 133 on Linux · 203.0.113.7 · Berlin".
    pub fn summary(&self) -> String {
        let agent = match (self.browser, self.os) {
            (Some(b), Some(o)) => Some(format!("{b} on {o}")),
            (b, o) => b.or(o).map(str::to_owned),
        };
        let place = match (self.city, self.country) {
            (Some(city), Some(country)) => Some(format!("{city}, {country}")),
            (c, k) => c.or(k).map(str::to_owned),
        };
        let parts: Vec<String> = [
            agent,
            self.device.map(str::to_owned),
            self.last_address.or(self.address).map(str::to_owned),
            place,
        ]
        .into_iter()
        .flatten()
        .collect();
        parts.join(" · ")
    }
}

/// What a session recorded about its client: the encoded section, read in
/// place ([`fields`](Self::fields)).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientInfo(Arc<[u8]>);

impl std::fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fields().fmt(f)
    }
}

/// `s` cut to at most [`FIELD_MAX`] bytes on a character boundary, without
/// control characters; `None` if nothing is left.
fn field(s: Option<&str>) -> Option<&str> {
    let s = s?.trim();
    let mut end = s.len().min(FIELD_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = &s[..end];
    (!s.is_empty() && !s.chars().any(char::is_control)).then_some(s)
}

impl ClientInfo {
    /// The section holding `fields`, each cut to `FIELD_MAX` (64) bytes;
    /// `None` if every field is empty.
    pub fn new(fields: &ClientFields<'_>) -> Option<ClientInfo> {
        let each = fields.each().map(field);
        if each.iter().all(Option::is_none) {
            return None;
        }
        let mut out = Vec::with_capacity(SECTION_MAX);
        for f in each {
            wire::put_opt_str(&mut out, f);
        }
        Some(ClientInfo(out.into()))
    }

    /// A section [`bytes`](Self::bytes) wrote; every field checked.
    pub(crate) fn read(section: &[u8]) -> Result<ClientInfo, WireError> {
        if section.len() > SECTION_MAX {
            return Err(WireError("client section too long"));
        }
        let mut reader = Reader::new(section);
        for _ in 0..7 {
            reader.opt_str()?;
        }
        if !reader.rest().is_empty() {
            return Err(WireError("bytes after the client section"));
        }
        Ok(ClientInfo(section.into()))
    }

    /// The encoded section.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The fields.
    pub fn fields(&self) -> ClientFields<'_> {
        // `read` and `new` checked every field: these reads cannot fail.
        let mut reader = Reader::new(&self.0);
        let mut next = || reader.opt_str().ok().flatten();
        ClientFields {
            address: next(),
            last_address: next(),
            browser: next(),
            os: next(),
            device: next(),
            country: next(),
            city: next(),
        }
    }

    /// The same with `last_address` replaced (a touch from `address`).
    pub fn seen_from(&self, address: &str) -> ClientInfo {
        let fields = ClientFields {
            last_address: Some(address),
            ..self.fields()
        };
        ClientInfo::new(&fields).unwrap_or_else(|| self.clone())
    }
}

/// The agent parser, built once per process on first use (about a second
/// of regex compilation; [`Recorder::warm`] starts it early).
static AGENTS: OnceLock<Option<ua_parser::Extractor<'static>>> = OnceLock::new();

fn agents() -> Option<&'static ua_parser::Extractor<'static>> {
    AGENTS
        .get_or_init(|| {
            let started = std::time::Instant::now();
            let regexes: ua_parser::Regexes<'static> =
                match serde_json::from_str(include_str!("client/regexes.json")) {
                    Ok(r) => r,
                    Err(err) => {
                        tracing::error!(%err, "the user-agent regexes do not parse");
                        return None;
                    }
                };
            let built = ua_parser::Extractor::try_from(regexes)
                .inspect_err(|err| tracing::error!(%err, "the user-agent regexes do not build"))
                .ok();
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "user-agent parser built"
            );
            built
        })
        .as_ref()
}

/// The parsed agent: browser family and major version, OS, device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agent {
    /// Browser family ("Firefox").
    pub browser: Option<String>,
    /// Its major version ("133").
    pub major: Option<String>,
    /// OS family, with its major version where the parser has one.
    pub os: Option<String>,
    /// Device family; `None` for "Other" (a desktop).
    pub device: Option<String>,
}

/// Parse a `User-Agent` (only its first 512 bytes are read).
pub fn parse_agent(user_agent: &str) -> Agent {
    let Some(extractor) = agents() else {
        return Agent::default();
    };
    let mut end = user_agent.len().min(512);
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    let (ua, os, dev) = extractor.extract(&user_agent[..end]);
    let known = |s: &str| (s != "Other").then(|| s.to_owned());
    Agent {
        browser: ua.as_ref().and_then(|u| known(&u.family)),
        major: ua.as_ref().and_then(|u| u.major.map(str::to_owned)),
        os: os.as_ref().and_then(|o| {
            let family = known(&o.os)?;
            // "Windows 10", "Mac OS X": the family, plus Windows' version
            // (the name people know it by).
            Some(match (&*o.os, o.major.as_deref()) {
                ("Windows", Some(major)) => format!("{family} {major}"),
                _ => family,
            })
        }),
        device: dev.as_ref().and_then(|d| known(&d.device)),
    }
}

/// Builds what a sign-in records, under `session.record_client`.
#[derive(Clone, Default)]
pub struct Recorder {
    mode: ClientMode,
    geo: Option<Arc<GeoDb>>,
}

impl Recorder {
    /// A recorder in `mode`, with the database at `geoip` if given. Fails
    /// with a message if the database cannot be opened.
    pub fn new(mode: ClientMode, geoip: Option<&Path>) -> Result<Recorder, String> {
        let geo = match (mode, geoip) {
            (ClientMode::Full, Some(path)) => Some(Arc::new(GeoDb::open(path)?)),
            _ => None,
        };
        Ok(Recorder { mode, geo })
    }

    /// The mode.
    pub fn mode(&self) -> ClientMode {
        self.mode
    }

    /// Build the agent parser now, on a thread of its own, so the first
    /// sign-in does not wait for it.
    pub fn warm(&self) {
        if self.mode != ClientMode::Off {
            std::thread::spawn(|| {
                agents();
            });
        }
    }

    /// What a sign-in from `ip` with `user_agent` records; `None` in `off`
    /// mode.
    pub fn record(&self, ip: IpAddr, user_agent: Option<&str>) -> Option<ClientInfo> {
        // An IPv4 address mapped into IPv6 is the IPv4 address.
        let ip = ip.to_canonical();
        let address = self.mode.address(ip)?;
        let agent = user_agent.map(parse_agent).unwrap_or_default();
        if self.mode == ClientMode::Truncated {
            return ClientInfo::new(&ClientFields {
                address: Some(&address),
                last_address: Some(&address),
                browser: agent.browser.as_deref(),
                ..ClientFields::default()
            });
        }
        let browser = match (&agent.browser, &agent.major) {
            (Some(b), Some(m)) => Some(format!("{b} {m}")),
            (b, _) => b.clone(),
        };
        let place = self.geo.as_ref().map(|g| g.locate(ip)).unwrap_or_default();
        ClientInfo::new(&ClientFields {
            address: Some(&address),
            last_address: Some(&address),
            browser: browser.as_deref(),
            os: agent.os.as_deref(),
            device: agent.device.as_deref(),
            country: place.country.as_deref(),
            city: place.city.as_deref(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

    #[test]
    fn agents_are_parsed_by_the_uap_regexes() {
        let a = parse_agent(FIREFOX_LINUX);
        assert_eq!(a.browser.as_deref(), Some("Firefox"));
        assert_eq!(a.major.as_deref(), Some("133"));
        assert_eq!(a.os.as_deref(), Some("Linux"));
        assert_eq!(a.device, None);
        let b = parse_agent(SAFARI_IPHONE);
        assert_eq!(b.browser.as_deref(), Some("Mobile Safari"));
        assert_eq!(b.os.as_deref(), Some("iOS"));
        assert_eq!(b.device.as_deref(), Some("iPhone"));
        assert_eq!(parse_agent("curl/8.5.0").browser.as_deref(), Some("curl"));
        assert_eq!(parse_agent("").browser, None);
    }

    #[test]
    fn truncated_keeps_the_network_and_the_browser_family_only() {
        let r = Recorder::new(ClientMode::Truncated, None).expect("no database");
        let v4 = r
            .record("203.0.113.77".parse().expect("ip"), Some(FIREFOX_LINUX))
            .expect("recorded");
        let f = v4.fields();
        assert_eq!(f.address, Some("203.0.113.0/24"));
        assert_eq!(f.browser, Some("Firefox"));
        assert_eq!(
            (f.os, f.device, f.country, f.city),
            (None, None, None, None)
        );
        let v6 = r
            .record("2001:db8:1234:5678::1".parse().expect("ip"), None)
            .expect("recorded");
        assert_eq!(v6.fields().address, Some("2001:db8:1234::/48"));
    }

    #[test]
    fn off_records_nothing() {
        let r = Recorder::new(ClientMode::Off, None).expect("no database");
        assert!(r
            .record("203.0.113.77".parse().expect("ip"), Some(FIREFOX_LINUX))
            .is_none());
    }

    #[test]
    fn the_section_is_bounded_and_round_trips() {
        let long = "é".repeat(200);
        let fields = ClientFields {
            address: Some(&long),
            last_address: Some(&long),
            browser: Some(&long),
            os: Some(&long),
            device: Some(&long),
            country: Some(&long),
            city: Some(&long),
        };
        let info = ClientInfo::new(&fields).expect("fields");
        assert!(info.bytes().len() <= SECTION_MAX);
        assert_eq!(info.fields().city.map(str::len), Some(FIELD_MAX));
        let read = ClientInfo::read(info.bytes()).expect("reads back");
        assert_eq!(read, info);
        assert!(ClientInfo::read(&[9, b'x']).is_err());
        assert!(ClientInfo::new(&ClientFields::default()).is_none());
        let seen = info.seen_from("198.51.100.1");
        assert_eq!(seen.fields().last_address, Some("198.51.100.1"));
        assert_eq!(seen.fields().os, info.fields().os);
    }

    #[test]
    fn the_summary_reads_like_a_sentence() {
        let f = ClientFields {
            address: Some("203.0.113.0/24"),
            last_address: Some("203.0.113.0/24"),
            browser: Some("Firefox 133"),
            os: Some("Linux"),
            city: Some("Berlin"),
            country: Some("DE"),
            ..ClientFields::default()
        };
        assert_eq!(
            f.summary(),
            "Firefox 133 on Linux · 203.0.113.0/24 · Berlin, DE"
        );
    }
}

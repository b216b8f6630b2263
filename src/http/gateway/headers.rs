//! The header rules of the reverse proxy, as pure functions of header maps.
//!
//! Both directions (RFC 9110 §7.6.1): the hop-by-hop fields (`Connection`,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
//! `Upgrade`, `Proxy-Authorization`, `Proxy-Authenticate`) and every field
//! named in `Connection` stay on their hop. The framing headers
//! (`Content-Length`) are rewritten by the HTTP layer from the body it
//! streams, so they are not copied either.
//!
//! Towards the upstream ([`to_upstream`]):
//!
//! - every field whose name, lower-cased with `_` read as `-`, starts with
//!   `x-edge-` is removed (apps behind CGI-style servers read `X_Edge_User`
//!   as `X-Edge-User`); the node adds its own after this;
//! - the session cookie is removed from `Cookie` (other cookies kept, the
//!   header dropped if nothing is left);
//! - `Host` becomes the upstream's (set by the client), the original goes
//!   into `X-Forwarded-Host`;
//! - `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`
//!   and `X-Real-IP` are believed only from a peer in
//!   `server.trusted_proxies`: from one, the peer is appended to its
//!   `X-Forwarded-For` and the others are kept; from anyone else they are
//!   replaced (`X-Forwarded-For` by the peer, the protocol by the
//!   listener's) or dropped (`Forwarded`, `X-Real-IP`);
//! - `Expect` is dropped: the node answered it to the client already.
//!
//! Towards the client ([`to_client`]): the upstream's action headers are
//! removed (they are for the node), and so is any `Set-Cookie` of the
//! session cookie: only the node sets it.

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Edge-Nonce`: the per-request nonce the upstream signs actions over.
pub const NONCE: HeaderName = HeaderName::from_static("x-edge-nonce");
/// `X-Edge-Action`: what the upstream asks the node to do.
pub const ACTION: HeaderName = HeaderName::from_static("x-edge-action");
/// `X-Edge-Action-Signature`: the action's HMAC over the nonce.
pub const ACTION_SIGNATURE: HeaderName = HeaderName::from_static("x-edge-action-signature");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The hop-by-hop fields of RFC 9110 §7.6.1 (and the legacy ones).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// What the proxy knows of the request's hop.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// The peer is in `server.trusted_proxies`.
    pub trusted: bool,
    /// The listener is TLS.
    pub secure: bool,
    /// `cookie.name`.
    pub cookie_name: &'a str,
}

/// Whether `name` is an `X-Edge-*` field in any spelling (`_` read as `-`;
/// names arrive lower-cased).
pub fn is_edge_header(name: &str) -> bool {
    const PREFIX: &[u8] = b"x-edge-";
    let bytes = name.as_bytes();
    bytes.len() >= PREFIX.len()
        && bytes
            .iter()
            .zip(PREFIX)
            .all(|(b, p)| b.to_ascii_lowercase() == *p || (*b == b'_' && *p == b'-'))
}

/// The field names listed in the `Connection` headers of `headers`, lower
/// case.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The end-to-end fields of `headers`: no hop-by-hop field, none listed in
/// `Connection`, no `Content-Length`.
fn end_to_end(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    let listed = connection_listed(headers);
    headers.iter().filter(move |(name, _)| {
        let name = name.as_str();
        !HOP_BY_HOP.contains(&name)
            && name != header::CONTENT_LENGTH.as_str()
            && !listed.iter().any(|l| l == name)
    })
}

/// The `Cookie` value without the cookie `name`, from every `Cookie` header
/// of `headers`; `None` if nothing is left.
pub fn cookie_without(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let kept: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let cookie = pair.split(|b| *b == b'=').next().unwrap_or_default();
            cookie.trim_ascii() != name.as_bytes()
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
}

/// The headers to send upstream for a request with `headers` over `hop`
/// (identity and nonce not yet added; `Host` left for the client to set).
pub fn to_upstream(headers: &HeaderMap, hop: &Hop<'_>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in end_to_end(headers) {
        let dropped = is_edge_header(name.as_str())
            || *name == header::HOST
            || *name == header::COOKIE
            || *name == header::EXPECT
            || (!hop.trusted
                && (*name == header::FORWARDED
                    || *name == X_FORWARDED_PROTO
                    || *name == X_FORWARDED_HOST
                    || *name == X_REAL_IP))
            || *name == X_FORWARDED_FOR;
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(cookie) = cookie_without(headers, hop.cookie_name) {
        out.insert(header::COOKIE, cookie);
    }
    if let Some(xff) = forwarded_for(headers, hop) {
        out.insert(X_FORWARDED_FOR, xff);
    }
    if !out.contains_key(X_FORWARDED_PROTO) {
        let proto = if hop.secure { "https" } else { "http" };
        out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !out.contains_key(X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST) {
            out.insert(X_FORWARDED_HOST, host.clone());
        }
    }
    out
}

/// `X-Forwarded-For`: the peer, appended to the incoming list when the peer
/// is trusted.
fn forwarded_for(headers: &HeaderMap, hop: &Hop<'_>) -> Option<HeaderValue> {
    let peer = hop.peer?.to_canonical().to_string();
    let mut hops: Vec<String> = Vec::new();
    if hop.trusted {
        hops.extend(
            headers
                .get_all(X_FORWARDED_FOR)
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
        );
    }
    hops.push(peer);
    HeaderValue::from_str(&hops.join(", ")).ok()
}

/// The headers to send the client for an upstream response with `headers`:
/// no hop-by-hop field, no action header, no `Set-Cookie` of `cookie_name`.
pub fn to_client(headers: &HeaderMap, cookie_name: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in end_to_end(headers) {
        let dropped = *name == ACTION
            || *name == ACTION_SIGNATURE
            || (*name == header::SET_COOKIE && sets_cookie(value, cookie_name));
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Whether the `Set-Cookie` `value` may set the cookie `name` in some
/// browser: its name is `name`, starts with it, or is empty (browsers
/// differ on a nameless cookie), or its value starts with `name`.
fn sets_cookie(value: &HeaderValue, name: &str) -> bool {
    let bytes = value.as_bytes();
    let pair_end = bytes.iter().position(|b| *b == b';').unwrap_or(bytes.len());
    let pair = &bytes[..pair_end];
    let (cookie, cookie_value) = match pair.iter().position(|b| *b == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &pair[pair.len()..]),
    };
    let starts = |text: &[u8]| {
        let text = text.trim_ascii();
        text.len() >= name.len() && text[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    };
    cookie.trim_ascii().is_empty() || starts(cookie) || starts(cookie_value)
}

/// 128 random bits, base64url: the nonce of one proxied request.
pub fn nonce() -> Result<HeaderValue, getrandom::Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(HeaderValue::from_str(&text).expect("base64url is a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn hop(trusted: bool) -> Hop<'static> {
        Hop {
            peer: Some("192.0.2.7".parse().unwrap()),
            trusted,
            secure: false,
            cookie_name: "__Host-sid",
        }
    }

    #[test]
    fn edge_headers_in_every_spelling_are_recognised() {
        for name in [
            "x-edge-user",
            "x_edge_user",
            "x-edge_role",
            "x_edge-session",
            "x-edge-nonce",
            "x-edge-assertion",
            "x-edge-",
        ] {
            assert!(is_edge_header(name), "{name}");
        }
        for name in ["x-edge", "x-edgeuser", "x-forwarded-for", "edge-user"] {
            assert!(!is_edge_header(name), "{name}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_stay_behind() {
        let m = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
            ("content-length", "3"),
        ]);
        let out = to_upstream(&m, &hop(false));
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te",
            "upgrade",
            "proxy-authorization",
            "content-length",
        ] {
            assert!(!names.contains(&gone), "{gone} forwarded");
        }
        assert_eq!(out.get("accept").unwrap(), "*/*");
    }

    #[test]
    fn only_the_session_cookie_is_removed() {
        let m = map(&[
            ("cookie", "a=1; __Host-sid=TOKEN; b=2"),
            ("cookie", " __Host-sid =T2;c=3"),
        ]);
        assert_eq!(cookie_without(&m, "__Host-sid").unwrap(), "a=1; b=2; c=3");
        let only = map(&[("cookie", "__Host-sid=TOKEN")]);
        assert!(to_upstream(&only, &hop(false)).get("cookie").is_none());
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_a_trusted_peer() {
        let m = map(&[
            ("host", "app.example"),
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let untrusted = to_upstream(&m, &hop(false));
        assert_eq!(untrusted.get("x-forwarded-for").unwrap(), "192.0.2.7");
        assert_eq!(untrusted.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(untrusted.get("x-forwarded-host").unwrap(), "app.example");
        assert!(untrusted.get("forwarded").is_none());
        assert!(untrusted.get("x-real-ip").is_none());
        assert!(untrusted.get("host").is_none());
        let trusted = to_upstream(&m, &hop(true));
        assert_eq!(
            trusted.get("x-forwarded-for").unwrap(),
            "203.0.113.1, 192.0.2.7"
        );
        assert_eq!(trusted.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(trusted.get("x-forwarded-host").unwrap(), "evil.example");
        assert_eq!(trusted.get("forwarded").unwrap(), "for=1.2.3.4");
    }

    #[test]
    fn the_upstream_cannot_set_the_session_cookie_or_pass_on_its_actions() {
        let m = map(&[
            ("set-cookie", "__Host-sid=FORGED; Path=/"),
            ("set-cookie", "__host-SID=x"),
            ("set-cookie", "theme=dark"),
            ("x-edge-action", "logout"),
            ("x-edge-action-signature", "00"),
            ("transfer-encoding", "chunked"),
        ]);
        let out = to_client(&m, "__Host-sid");
        let cookies: Vec<_> = out.get_all("set-cookie").collect();
        assert_eq!(cookies, ["theme=dark"]);
        assert!(out.get("x-edge-action").is_none());
        assert!(out.get("x-edge-action-signature").is_none());
        assert!(out.get("transfer-encoding").is_none());
    }

    /// Browsers differ on a cookie with no name (`=__Host-sid=x` is read
    /// by some as the cookie `__Host-sid`): the app may set none, nor one
    /// whose name or value starts with the session cookie's name.
    #[test]
    fn nameless_cookie_from_the_app_is_dropped() {
        let m = map(&[
            ("set-cookie", "=__Host-sid=FORGED; Path=/"),
            ("set-cookie", "=x"),
            ("set-cookie", " =x"),
            ("set-cookie", "__Host-sid2=x"),
            ("set-cookie", "__Host-sidX=x"),
            ("set-cookie", "a=__Host-sid=x"),
            ("set-cookie", "theme=dark"),
        ]);
        let out = to_client(&m, "__Host-sid");
        let cookies: Vec<_> = out.get_all("set-cookie").collect();
        assert_eq!(cookies, ["theme=dark"]);
    }

    #[test]
    fn nonces_are_128_bits_of_base64url() {
        let a = nonce().unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, nonce().unwrap());
    }
}

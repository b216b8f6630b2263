//! `[gateway]`: forward auth (the identity assertion and its keys) and the
//! reverse proxy in front of an app that keeps no session code
//! (docs/gateway.md).

use std::path::PathBuf;

use actix_web::http::Uri;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ConfigError;

/// The shortest `gateway.action_secret`, in bytes.
pub const MIN_ACTION_SECRET_BYTES: usize = 32;

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The app behind the node (`http://host:port`); set, the node is a
    /// reverse proxy and its own browser routes move under `/.edge/`.
    pub upstream: Option<String>,
    /// HMAC-SHA256 key of the upstream's `X-Edge-Action-Signature`
    /// (required with `upstream`, at least 32 bytes).
    pub action_secret: Option<SecretString>,
    /// Path prefixes that need an identity: without one, HTML requests are
    /// sent to the login page, others get 401. `["/*"]`: every path (deny
    /// by default), save `public`.
    pub protect: Vec<String>,
    /// Path prefixes anyone may reach, under a protected one (`["/*"]`):
    /// a path is public only if every reading of it is under one.
    pub public: Vec<String>,
    /// Origins besides the node's own whose requests may carry out an
    /// upstream action (`https://app.example.com`, no path).
    pub action_origins: Vec<String>,
    /// `iss` of the assertion.
    pub issuer: String,
    /// `aud` of the assertion.
    pub audience: String,
    /// Lifetime of an assertion (`exp - iat`), seconds.
    pub assertion_ttl_secs: u64,
    /// Ed25519 signing key (PKCS#8 PEM). Unset: generated once into
    /// `data_dir/gateway-ed25519.pem` (mode 0600) and kept across restarts.
    pub signing_key: Option<PathBuf>,
    /// More keys published in the JWK Set (PEM: a PKCS#8 private key or an
    /// SPKI public key), e.g. the previous signing key during a rotation.
    pub published_keys: Vec<PathBuf>,
    /// Connecting to the upstream may take this long (ms).
    pub upstream_connect_timeout_ms: u64,
    /// The upstream must send its response head within this long (ms).
    pub upstream_timeout_ms: u64,
    /// Connections to the upstream each worker keeps at most.
    pub upstream_max_connections: usize,
    /// Proxied requests one client (an IPv4 address, an IPv6 /64) may have
    /// in flight at once; more get 429.
    pub max_inflight_per_client: u32,
    /// How often a proxied WebSocket's session is checked (ms): a revoked
    /// session's sockets close within this long after the node knows.
    pub websocket_check_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            upstream: None,
            action_secret: None,
            protect: Vec::new(),
            public: Vec::new(),
            action_origins: Vec::new(),
            issuer: "edge-session".into(),
            audience: "edge-session-upstream".into(),
            assertion_ttl_secs: 60,
            signing_key: None,
            published_keys: Vec::new(),
            upstream_connect_timeout_ms: 2_000,
            upstream_timeout_ms: 30_000,
            upstream_max_connections: 256,
            max_inflight_per_client: 64,
            websocket_check_ms: 250,
        }
    }
}

impl GatewayConfig {
    /// The upstream as a URI, once validated.
    pub fn upstream_uri(&self) -> Option<Uri> {
        self.upstream.as_deref().and_then(|u| u.parse().ok())
    }

    /// The checks the types cannot express.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError(format!(
                "invalid configuration: `gateway.{key}` {why}"
            )))
        };
        if let Some(upstream) = &self.upstream {
            let ok = upstream.parse::<Uri>().is_ok_and(|u| {
                u.scheme_str() == Some("http")
                    && u.authority().is_some()
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none()
            });
            if !ok {
                return bad("upstream", "must be an http://host:port URL with no path");
            }
            match &self.action_secret {
                None => {
                    return bad(
                        "action_secret",
                        "is required when `gateway.upstream` is set",
                    )
                }
                Some(s) if s.expose_secret().len() < MIN_ACTION_SECRET_BYTES => {
                    return bad("action_secret", "must be at least 32 bytes")
                }
                Some(_) => {}
            }
        }
        for (list, prefixes) in [("protect", &self.protect), ("public", &self.public)] {
            for (i, prefix) in prefixes.iter().enumerate() {
                if !prefix.starts_with('/') || prefix.starts_with("//") {
                    return bad(
                        &format!("{list}[{i}]"),
                        "must be a path starting with one `/`",
                    );
                }
            }
        }
        for (i, origin) in self.action_origins.iter().enumerate() {
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let exact = host.is_some_and(|h| {
                !h.is_empty()
                    && h.chars().all(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || matches!(c, '.' | '-' | ':' | '[' | ']')
                    })
            });
            if !exact {
                return bad(
                    &format!("action_origins[{i}]"),
                    "must be an origin as browsers send it: http(s)://host[:port], lower case, nothing after",
                );
            }
        }
        if !self.public.is_empty() && self.protect.is_empty() {
            return bad(
                "public",
                "lists exceptions to `gateway.protect`, which is empty (deny by default: `protect = [\"/*\"]`)",
            );
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return bad("issuer", "and `gateway.audience` must not be empty");
        }
        if !(2..=86_400).contains(&self.assertion_ttl_secs) {
            return bad("assertion_ttl_secs", "must be 2-86400");
        }
        for (key, value) in [
            (
                "upstream_connect_timeout_ms",
                self.upstream_connect_timeout_ms,
            ),
            ("upstream_timeout_ms", self.upstream_timeout_ms),
            (
                "upstream_max_connections",
                self.upstream_max_connections as u64,
            ),
            ("websocket_check_ms", self.websocket_check_ms),
            (
                "max_inflight_per_client",
                self.max_inflight_per_client.into(),
            ),
        ] {
            if value == 0 {
                return bad(key, "must be positive");
            }
        }
        Ok(())
    }
}

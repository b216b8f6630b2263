//! The checks of a [`Config`] that its types cannot express. Each error
//! names the key as written in config.toml and what was expected.

use secrecy::ExposeSecret;

use super::{Config, ConfigError, MAX_SESSIONS_PER_USER};

fn bad(key: &str, why: String) -> Result<(), ConfigError> {
    Err(ConfigError(format!("invalid configuration: `{key}` {why}")))
}

impl Config {
    /// The checks the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_server_and_dynamodb()?;
        self.check_credentials()?;
        self.check_sessions_and_limits()?;
        self.events.validate()?;
        self.regions.validate(&self.relay.region)?;
        self.gateway.validate()
    }

    /// `[relay]`, read only with `stream.source = "relays"`.
    fn check_relay(&self) -> Result<(), ConfigError> {
        if self.stream.source != super::StreamSource::Relays {
            return Ok(());
        }
        let relay = &self.relay;
        if relay
            .secret
            .as_ref()
            .is_none_or(|s| s.expose_secret().len() < 32)
        {
            return bad(
                "relay.secret",
                "must be set, at least 32 bytes, with stream.source = \"relays\"".into(),
            );
        }
        if relay.region.is_empty() || relay.region.len() > 64 {
            return bad("relay.region", "must be 1-64 characters".into());
        }
        if relay.slots == 0 || relay.slots > edge_session_sync::MAX_RELAY_SLOTS {
            return bad("relay.slots", "must be 1-4".into());
        }
        if relay.beat_ms < 100 || relay.lease_ms < 3 * relay.beat_ms || relay.lease_ms > 60_000 {
            return bad(
                "relay.lease_ms",
                "must be at least three relay.beat_ms (at least 100) and at most 60000".into(),
            );
        }
        if self.stream.heartbeat_interval_ms == 0 {
            return bad(
                "stream.heartbeat_interval_ms",
                "must be on with stream.source = \"relays\": relayed heartbeats are how a node knows its relays are live".into(),
            );
        }
        if let Some(listen) = relay.listen {
            match &relay.advertise_url {
                Some(url) if !url.starts_with("http://") => {
                    return bad("relay.advertise_url", "must be an http:// URL".into());
                }
                None if listen.ip().is_unspecified() => {
                    return bad(
                        "relay.advertise_url",
                        "must be set when relay.listen is an unspecified address".into(),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `[server]` body size and `[dynamodb]`.
    fn check_server_and_dynamodb(&self) -> Result<(), ConfigError> {
        if self.server.max_body_bytes < 256 {
            return bad("server.max_body_bytes", "must be at least 256".into());
        }
        if self.dynamodb.table.len() < 3
            || self.dynamodb.table.len() > 255
            || !self
                .dynamodb
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return bad(
                "dynamodb.table",
                "must be 3-255 characters of [A-Za-z0-9_.-]".into(),
            );
        }
        if self.dynamodb.access_key_id.is_some() != self.dynamodb.secret_access_key.is_some() {
            return bad(
                "dynamodb.access_key_id",
                "and `dynamodb.secret_access_key` must be set together".into(),
            );
        }
        if self.dynamodb.max_attempts == 0 {
            return bad("dynamodb.max_attempts", "must be at least 1".into());
        }
        Ok(())
    }

    /// API keys, users and the cookie.
    fn check_credentials(&self) -> Result<(), ConfigError> {
        for (i, key) in self.api.keys.iter().enumerate() {
            if key.expose_secret().len() < 16 {
                return bad(
                    &format!("api.keys[{i}]"),
                    "must be at least 16 characters".into(),
                );
            }
        }
        for (i, user) in self.auth.users.iter().enumerate() {
            if user.user_id.is_empty() || user.user_id.len() > 256 {
                return bad(
                    &format!("auth.users[{i}].user_id"),
                    "must be 1-256 characters".into(),
                );
            }
            if let Err(e) = argon2::PasswordHash::new(user.password_hash.expose_secret()) {
                return bad(
                    &format!("auth.users[{i}].password_hash"),
                    format!("is not a PHC string ({e})"),
                );
            }
        }
        let name = &self.cookie.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return bad("cookie.name", "must be a non-empty cookie token".into());
        }
        if (name.starts_with("__Host-") || name.starts_with("__Secure-")) && !self.cookie.secure {
            return bad(
                "cookie.secure",
                format!("must be true for a cookie named {name}"),
            );
        }
        Ok(())
    }

    /// Session policy, the listeners, the login budgets, the stream.
    fn check_sessions_and_limits(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        if s.idle_timeout_secs == 0 || s.absolute_timeout_secs == 0 {
            return bad(
                "session.idle_timeout_secs",
                "and `session.absolute_timeout_secs` must be positive".into(),
            );
        }
        if s.touch_interval_secs >= s.idle_timeout_secs {
            return bad(
                "session.touch_interval_secs",
                "must be less than `session.idle_timeout_secs`".into(),
            );
        }
        if !(1..=MAX_SESSIONS_PER_USER).contains(&s.max_per_user) {
            return bad(
                "session.max_per_user",
                format!("must be 1-{MAX_SESSIONS_PER_USER}"),
            );
        }
        if self
            .server
            .ops_listen
            .is_some_and(|ops| ops == self.server.listen)
        {
            return bad(
                "server.ops_listen",
                "must differ from `server.listen`".into(),
            );
        }
        let (v, a) = (&self.server, &self.auth);
        for (key, value) in [
            (
                "server.client_request_timeout_ms",
                v.client_request_timeout_ms,
            ),
            ("server.keep_alive_ms", v.keep_alive_ms),
            ("server.client_body_timeout_ms", v.client_body_timeout_ms),
            ("server.client_body_min_rate", v.client_body_min_rate),
            ("auth.hash_queue", a.hash_queue as u64),
            ("auth.max_logins_in_flight", a.max_logins_in_flight as u64),
            ("auth.per_ip_per_minute", a.per_ip_per_minute.into()),
            ("auth.per_ip_burst", a.per_ip_burst.into()),
            (
                "auth.per_ipv6_48_per_minute",
                a.per_ipv6_48_per_minute.into(),
            ),
            ("auth.per_ipv6_48_burst", a.per_ipv6_48_burst.into()),
            (
                "auth.per_account_per_minute",
                a.per_account_per_minute.into(),
            ),
            ("auth.per_account_burst", a.per_account_burst.into()),
            ("auth.max_tracked", a.max_tracked as u64),
        ] {
            if value == 0 {
                return bad(key, "must be positive".into());
            }
        }
        if !(1024..=350 * 1024).contains(&s.max_record_bytes) {
            return bad(
                "session.max_record_bytes",
                "must be 1024-358400 (DynamoDB items are at most 400 KB)".into(),
            );
        }
        if crate::codec::Format::from_byte(s.record_format).is_none() {
            return bad(
                "session.record_format",
                "must be 1, 2 or 3 (below 3 only while nodes of a build that reads no later format share the table)".into(),
            );
        }
        if self.stream.poll_interval_ms == 0 || self.stream.poll_interval_ms > 60_000 {
            return bad("stream.poll_interval_ms", "must be 1-60000".into());
        }
        let partitions = self.stream.journal_partitions;
        if partitions == 0 || partitions > edge_session_sync::MAX_PARTITIONS {
            return bad("stream.journal_partitions", "must be 1-16".into());
        }
        self.check_relay()?;
        if self.stream.source == super::StreamSource::Journal {
            return bad(
                "stream.source",
                "\"journal\" is no longer read: use \"relays\" (or \"stream\" for one or two nodes), \
                 with stream.journal_writes = true while nodes of an older build still read the journal \
                 (docs/design.md, \"Moving a fleet off the journal\")"
                    .into(),
            );
        }
        if self.stream.journal_settle_ms.is_some() {
            return bad(
                "stream.journal_settle_ms",
                "is no longer read (the journal reader is gone): remove it".into(),
            );
        }
        let heartbeat = self.stream.heartbeat_interval_ms;
        if heartbeat != 0 && (heartbeat < 100 || heartbeat >= self.stream.lag_threshold_ms) {
            return bad(
                "stream.heartbeat_interval_ms",
                "must be 0 (off) or 100 up to below stream.lag_threshold_ms".into(),
            );
        }
        Ok(())
    }
}

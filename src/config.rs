//! Node configuration: `config.toml` (every key optional, defaults below),
//! then environment variables `EDGE_SESSION__<SECTION>__<KEY>` on top.
//! Unknown keys and bad values fail start-up with the key's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// sled cache (and the embedded DynamoDB file in embedded mode).
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// DynamoDB tier.
    #[serde(default)]
    pub dynamodb: DynamoConfig,
    /// Service API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Login page users.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Browser session cookie.
    #[serde(default)]
    pub cookie: CookieConfig,
    /// Expiry policy.
    #[serde(default)]
    pub session: SessionConfig,
    /// sled tier.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Stream follower.
    #[serde(default)]
    pub stream: StreamConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Bind address, `host:port`; port 0 picks a free port.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Worker threads (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// Largest request body accepted, in bytes (larger: 413).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[serde(default = "defaults::shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Optional TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[dynamodb]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoConfig {
    /// `"embedded"`, `"aws"` (the SDK's regional endpoint) or a URL.
    #[serde(default = "defaults::endpoint")]
    pub endpoint: String,
    /// Table name.
    #[serde(default = "defaults::table")]
    pub table: String,
    /// Region (signing region for non-AWS endpoints).
    #[serde(default = "defaults::region")]
    pub region: String,
    /// Create or check the table at start-up (always on in embedded mode).
    #[serde(default)]
    pub provision_on_start: bool,
    /// Static credentials for a DynamoDB-compatible server (DynamoDB Local).
    /// Unset: the standard AWS credential chain.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret for `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// Connect timeout.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of one attempt.
    #[serde(default = "defaults::attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    /// Timeout of a call, retries included.
    #[serde(default = "defaults::operation_timeout_ms")]
    pub operation_timeout_ms: u64,
    /// Attempts per call (SDK standard retry mode, jittered backoff).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Embedded mode: how often expired items are swept (TTL).
    #[serde(default = "defaults::ttl_sweep_secs")]
    pub ttl_sweep_secs: u64,
    /// Consecutive unanswered calls that open the circuit breaker (0: never).
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker fails calls fast before it probes again.
    #[serde(default = "defaults::breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// A cached session past its lease while DynamoDB is unreachable:
    /// `"reject"` (503) or `"serve_cached"` (up to `max_stale_ms` old).
    #[serde(default = "defaults::on_unreachable")]
    pub on_unreachable: String,
    /// With `serve_cached`: the oldest confirmation a served record may have.
    #[serde(default = "defaults::max_stale_ms")]
    pub max_stale_ms: u64,
}

/// `[api]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer keys for `/v1` (env: comma-separated). Empty: `/v1` refuses all.
    #[serde(default, deserialize_with = "list_or_csv")]
    pub keys: Vec<SecretString>,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.users]]`
    #[serde(default)]
    pub users: Vec<UserConfig>,
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
    #[serde(default = "defaults::role")]
    pub role: String,
    /// Marks the shipped demo user (warned about on non-loopback addresses).
    #[serde(default)]
    pub demo: bool,
}

/// `[cookie]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name.
    #[serde(default = "defaults::cookie_name")]
    pub name: String,
    /// `Secure` attribute.
    #[serde(default = "defaults::yes")]
    pub secure: bool,
}

/// `[session]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused this long ends.
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// A session ends this long after creation, however active.
    #[serde(default = "defaults::absolute_timeout_secs")]
    pub absolute_timeout_secs: u64,
    /// `last_seen_at` is written back at most this often per session.
    #[serde(default = "defaults::touch_interval_secs")]
    pub touch_interval_secs: u64,
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// A cached record older than this is re-checked against DynamoDB
    /// before use (the cross-node staleness bound).
    #[serde(default = "defaults::revalidate_after_ms")]
    pub revalidate_after_ms: u64,
    /// The lease while the stream follower lags or is broken.
    #[serde(default = "defaults::revalidate_after_lagging_ms")]
    pub revalidate_after_lagging_ms: u64,
    /// Cap on queued logouts of keys this node could not verify.
    #[serde(default = "defaults::max_unverified_revocations")]
    pub max_unverified_revocations: usize,
}

/// `[stream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Follow the table's stream and evict what other nodes revoke.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Pause after an empty read of a shard (the propagation delay).
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The follower lags when its last good poll or newest applied record
    /// is older than this; the lease then shortens.
    #[serde(default = "defaults::lag_threshold_ms")]
    pub lag_threshold_ms: u64,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter (`RUST_LOG` wins when set).
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// `"text"` or `"json"`.
    #[serde(default = "defaults::log_format")]
    pub format: String,
}

mod defaults {
    use std::path::PathBuf;

    pub fn data_dir() -> PathBuf {
        PathBuf::from("data")
    }
    pub fn listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn max_body_bytes() -> usize {
        16 * 1024
    }
    pub fn shutdown_timeout_secs() -> u64 {
        30
    }
    pub fn endpoint() -> String {
        "embedded".into()
    }
    pub fn table() -> String {
        "edge-sessions".into()
    }
    pub fn region() -> String {
        "us-east-1".into()
    }
    pub fn connect_timeout_ms() -> u64 {
        1000
    }
    pub fn attempt_timeout_ms() -> u64 {
        2000
    }
    pub fn operation_timeout_ms() -> u64 {
        5000
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn ttl_sweep_secs() -> u64 {
        60
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_cooldown_ms() -> u64 {
        2000
    }
    pub fn on_unreachable() -> String {
        "reject".into()
    }
    pub fn max_stale_ms() -> u64 {
        300_000
    }
    pub fn role() -> String {
        "user".into()
    }
    pub fn cookie_name() -> String {
        "__Host-sid".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn idle_timeout_secs() -> u64 {
        30 * 60
    }
    pub fn absolute_timeout_secs() -> u64 {
        12 * 60 * 60
    }
    pub fn touch_interval_secs() -> u64 {
        60
    }
    pub fn revalidate_after_ms() -> u64 {
        30_000
    }
    pub fn revalidate_after_lagging_ms() -> u64 {
        1000
    }
    pub fn max_unverified_revocations() -> usize {
        10_000
    }
    pub fn poll_interval_ms() -> u64 {
        250
    }
    pub fn lag_threshold_ms() -> u64 {
        3000
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn log_format() -> String {
        "text".into()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: defaults::listen(),
            workers: 0,
            max_body_bytes: defaults::max_body_bytes(),
            shutdown_timeout_secs: defaults::shutdown_timeout_secs(),
            tls: None,
        }
    }
}

impl Default for DynamoConfig {
    fn default() -> Self {
        DynamoConfig {
            endpoint: defaults::endpoint(),
            table: defaults::table(),
            region: defaults::region(),
            provision_on_start: false,
            access_key_id: None,
            secret_access_key: None,
            connect_timeout_ms: defaults::connect_timeout_ms(),
            attempt_timeout_ms: defaults::attempt_timeout_ms(),
            operation_timeout_ms: defaults::operation_timeout_ms(),
            max_attempts: defaults::max_attempts(),
            ttl_sweep_secs: defaults::ttl_sweep_secs(),
            breaker_failures: defaults::breaker_failures(),
            breaker_cooldown_ms: defaults::breaker_cooldown_ms(),
            on_unreachable: defaults::on_unreachable(),
            max_stale_ms: defaults::max_stale_ms(),
        }
    }
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: defaults::cookie_name(),
            secure: true,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout_secs: defaults::idle_timeout_secs(),
            absolute_timeout_secs: defaults::absolute_timeout_secs(),
            touch_interval_secs: defaults::touch_interval_secs(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            revalidate_after_ms: defaults::revalidate_after_ms(),
            revalidate_after_lagging_ms: defaults::revalidate_after_lagging_ms(),
            max_unverified_revocations: defaults::max_unverified_revocations(),
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            enabled: true,
            poll_interval_ms: defaults::poll_interval_ms(),
            lag_threshold_ms: defaults::lag_threshold_ms(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: defaults::log_level(),
            format: defaults::log_format(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: defaults::data_dir(),
            server: ServerConfig::default(),
            dynamodb: DynamoConfig::default(),
            api: ApiConfig::default(),
            auth: AuthConfig::default(),
            cookie: CookieConfig::default(),
            session: SessionConfig::default(),
            cache: CacheConfig::default(),
            stream: StreamConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// A list from TOML, or a comma-separated string from the environment.
fn list_or_csv<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(de)? {
        ListOrCsv::List(items) => items.into_iter().map(SecretString::from).collect(),
        ListOrCsv::Csv(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect(),
    })
}

/// A configuration that cannot be used. The message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Load `path` (a missing file is an error only if `required`), then the
    /// environment, then check every value.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        Self::from_figment(
            Figment::new()
                .merge(Toml::file(path))
                .merge(Env::prefixed("EDGE_SESSION__").split("__")),
        )
    }

    /// Parse a TOML document (tests), with no environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let errors: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError(format!("invalid configuration: {}", errors.join("; ")))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| {
            Err(ConfigError(format!("invalid configuration: `{key}` {why}")))
        };
        if let Err(e) = self.server.listen.parse::<SocketAddr>() {
            return bad(
                "server.listen",
                format!("must be host:port with an IP host ({e})"),
            );
        }
        if self.server.max_body_bytes < 256 {
            return bad("server.max_body_bytes", "must be at least 256".into());
        }
        let endpoint = self.dynamodb.endpoint.as_str();
        if !(endpoint == "embedded"
            || endpoint == "aws"
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return bad(
                "dynamodb.endpoint",
                "must be \"embedded\", \"aws\" or an http(s):// URL".into(),
            );
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
        if !matches!(
            self.dynamodb.on_unreachable.as_str(),
            "reject" | "serve_cached"
        ) {
            return bad(
                "dynamodb.on_unreachable",
                "must be \"reject\" or \"serve_cached\"".into(),
            );
        }
        if self.dynamodb.max_attempts == 0 {
            return bad("dynamodb.max_attempts", "must be at least 1".into());
        }
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
        if self.stream.poll_interval_ms == 0 || self.stream.poll_interval_ms > 60_000 {
            return bad("stream.poll_interval_ms", "must be 1-60000".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be \"text\" or \"json\"".into());
        }
        Ok(())
    }

    /// The `dynamodb.on_unreachable` policy (validated).
    pub fn on_unreachable(&self) -> crate::store::OnUnreachable {
        match self.dynamodb.on_unreachable.as_str() {
            "serve_cached" => crate::store::OnUnreachable::ServeCached {
                max_stale_ms: self.dynamodb.max_stale_ms,
            },
            _ => crate::store::OnUnreachable::Reject,
        }
    }

    /// The listen address (validated).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .expect("validated in Config::validate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let shipped = Config::from_toml(&text).unwrap();
        let defaults = Config::from_toml("").unwrap();
        assert_eq!(
            format!("{:?}", shipped.server),
            format!("{:?}", defaults.server)
        );
        assert_eq!(
            format!("{:?}", shipped.dynamodb),
            format!("{:?}", defaults.dynamodb)
        );
        assert_eq!(
            format!("{:?}", shipped.cookie),
            format!("{:?}", defaults.cookie)
        );
        assert_eq!(
            format!("{:?}", shipped.session),
            format!("{:?}", defaults.session)
        );
        assert_eq!(
            format!("{:?}", shipped.cache),
            format!("{:?}", defaults.cache)
        );
        assert_eq!(format!("{:?}", shipped.log), format!("{:?}", defaults.log));
        assert_eq!(shipped.data_dir, defaults.data_dir);
        assert_eq!(shipped.auth.users.len(), 1);
        assert!(shipped.auth.users[0].demo);
    }

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err("[server]\nlisten = \"nope\"").contains("server.listen"));
        assert!(err("[server]\nlistn = \"127.0.0.1:1\"").contains("listn"));
        assert!(err("surprise = 1").contains("surprise"));
        assert!(err("[session]\nidle_timeout_secs = \"soon\"").contains("idle_timeout_secs"));
        assert!(
            err("[session]\nidle_timeout_secs = 30\ntouch_interval_secs = 60")
                .contains("session.touch_interval_secs")
        );
        assert!(err("[cookie]\nsecure = false").contains("cookie.secure"));
        assert!(err("[dynamodb]\nendpoint = \"ftp://x\"").contains("dynamodb.endpoint"));
        assert!(err("[api]\nkeys = [\"short\"]").contains("api.keys[0]"));
        assert!(
            err("[[auth.users]]\nuser_id = \"a\"\npassword_hash = \"plain\"")
                .contains("auth.users[0].password_hash")
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = Config::from_toml("[api]\nkeys = [\"super-secret-api-key-123\"]").unwrap();
        assert!(!format!("{c:?}").contains("super-secret-api-key-123"));
    }

    #[test]
    fn env_style_comma_separated_keys() {
        let figment = Figment::new().merge(Toml::string(
            "[api]\nkeys = \"a-very-long-key-0001, a-very-long-key-0002\"",
        ));
        let c = Config::from_figment(figment).unwrap();
        assert_eq!(c.api.keys.len(), 2);
    }
}

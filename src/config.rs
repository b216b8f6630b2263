//! Node configuration: `config.toml` (every key optional; each section's
//! `Default` holds its defaults, which the shipped `config.toml` documents),
//! then environment variables `EDGE_SESSION__<SECTION>__<KEY>` on top.
//! Unknown keys and bad values fail start-up with the key's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{de, Deserialize, Deserializer};

mod auth;
mod events;
mod gateway;
mod ipnet;
mod parse;
mod regions;
mod validate;

pub use auth::{AuthConfig, UserConfig};
pub use events::{EventsConfig, WebhookConfig, EVENT_TYPES};
pub use gateway::{GatewayConfig, MIN_ACTION_SECRET_BYTES};

pub use ipnet::IpNet;
use parse::{list_or_csv, opt_socket_addr, socket_addr};
pub use regions::{RegionsConfig, ReplicaConfig};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// sled cache (and the embedded DynamoDB file in embedded mode).
    pub data_dir: PathBuf,
    /// HTTP server.
    pub server: ServerConfig,
    /// DynamoDB tier.
    pub dynamodb: DynamoConfig,
    /// Service API.
    pub api: ApiConfig,
    /// Login page users.
    pub auth: AuthConfig,
    /// Browser session cookie.
    pub cookie: CookieConfig,
    /// Expiry policy.
    pub session: SessionConfig,
    /// sled tier.
    pub cache: CacheConfig,
    /// Stream follower.
    pub stream: StreamConfig,
    /// Relays (with `stream.source = "relays"`).
    pub relay: RelayConfig,
    /// Logging.
    pub log: LogConfig,
    /// Forward auth and the reverse proxy.
    pub gateway: GatewayConfig,
    /// Session events.
    pub events: EventsConfig,
    /// The regions of a global table.
    pub regions: RegionsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            dynamodb: DynamoConfig::default(),
            api: ApiConfig::default(),
            auth: AuthConfig::default(),
            cookie: CookieConfig::default(),
            session: SessionConfig::default(),
            cache: CacheConfig::default(),
            stream: StreamConfig::default(),
            relay: RelayConfig::default(),
            log: LogConfig::default(),
            gateway: GatewayConfig::default(),
            events: EventsConfig::default(),
            regions: RegionsConfig::default(),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Bind address, `host:port` with an IP host; port 0 picks a free port.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// On SIGTERM, how long in-flight requests get to finish.
    pub shutdown_timeout_secs: u64,
    /// Optional TLS.
    pub tls: Option<TlsConfig>,
    /// A connection must deliver a request head within this long.
    pub client_request_timeout_ms: u64,
    /// A request body gets this long (a grace period), plus a second per
    /// `client_body_min_rate` bytes it has delivered; slower: 408.
    pub client_body_timeout_ms: u64,
    /// Bytes a second a request body must keep up past its grace period.
    pub client_body_min_rate: u64,
    /// How long a closing connection gets to take the last response.
    pub client_disconnect_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive_ms: u64,
    /// Proxies whose `X-Forwarded-For` is believed (IPs or CIDRs).
    pub trusted_proxies: Vec<IpNet>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (unset: `listen`).
    #[serde(deserialize_with = "opt_socket_addr")]
    pub ops_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            max_body_bytes: 16 * 1024,
            shutdown_timeout_secs: 30,
            tls: None,
            client_request_timeout_ms: 5000,
            client_body_timeout_ms: 10_000,
            client_body_min_rate: 1024,
            client_disconnect_timeout_ms: 1000,
            keep_alive_ms: 5000,
            trusted_proxies: Vec::new(),
            ops_listen: None,
        }
    }
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

/// `dynamodb.endpoint`: which DynamoDB the node talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynamoEndpoint {
    /// `"embedded"`: the in-process store under `data_dir`.
    Embedded,
    /// `"aws"`: the SDK's regional endpoint.
    Aws,
    /// An `http://` or `https://` URL (DynamoDB Local, a proxy).
    Url(String),
}

impl<'de> Deserialize<'de> for DynamoEndpoint {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        match text.as_str() {
            "embedded" => Ok(DynamoEndpoint::Embedded),
            "aws" => Ok(DynamoEndpoint::Aws),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(DynamoEndpoint::Url(text))
            }
            other => Err(de::Error::invalid_value(
                de::Unexpected::Str(other),
                &"\"embedded\", \"aws\" or an http(s):// URL",
            )),
        }
    }
}

/// `dynamodb.on_unreachable`: a cached session past its lease while
/// DynamoDB is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnreachableMode {
    /// `"reject"`: 503.
    Reject,
    /// `"serve_cached"`: served if confirmed at most `max_stale_ms` ago.
    ServeCached,
}

/// `[dynamodb]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoConfig {
    /// `"embedded"`, `"aws"` (the SDK's regional endpoint) or a URL.
    pub endpoint: DynamoEndpoint,
    /// Table name.
    pub table: String,
    /// Region (signing region for non-AWS endpoints).
    pub region: String,
    /// Create or check the table at start-up (always on in embedded mode).
    pub provision_on_start: bool,
    /// Static credentials for a DynamoDB-compatible server (DynamoDB Local).
    /// Unset: the standard AWS credential chain.
    pub access_key_id: Option<String>,
    /// Secret for `access_key_id`.
    pub secret_access_key: Option<SecretString>,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Timeout of one attempt.
    pub attempt_timeout_ms: u64,
    /// Timeout of a call, retries included.
    pub operation_timeout_ms: u64,
    /// Attempts per call (SDK standard retry mode, jittered backoff).
    pub max_attempts: u32,
    /// Embedded mode: how often expired items are swept (TTL).
    pub ttl_sweep_secs: u64,
    /// Consecutive unanswered calls that open the circuit breaker (0: never).
    pub breaker_failures: u32,
    /// How long the breaker fails calls fast before it probes again.
    pub breaker_cooldown_ms: u64,
    /// A cached session past its lease while DynamoDB is unreachable.
    pub on_unreachable: OnUnreachableMode,
    /// With `serve_cached`: the oldest confirmation a served record may have.
    pub max_stale_ms: u64,
}

impl Default for DynamoConfig {
    fn default() -> Self {
        DynamoConfig {
            endpoint: DynamoEndpoint::Embedded,
            table: "edge-sessions".into(),
            region: "us-east-1".into(),
            provision_on_start: false,
            access_key_id: None,
            secret_access_key: None,
            connect_timeout_ms: 1000,
            attempt_timeout_ms: 2000,
            operation_timeout_ms: 5000,
            max_attempts: 3,
            ttl_sweep_secs: 60,
            breaker_failures: 5,
            breaker_cooldown_ms: 2000,
            on_unreachable: OnUnreachableMode::Reject,
            max_stale_ms: 300_000,
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer keys for `/v1` (env: comma-separated). Empty: `/v1` refuses all.
    #[serde(deserialize_with = "list_or_csv")]
    pub keys: Vec<SecretString>,
}

/// `[cookie]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name.
    pub name: String,
    /// `Secure` attribute.
    pub secure: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "__Host-sid".into(),
            secure: true,
        }
    }
}

/// The largest `session.max_per_user`: a login lists all of its user's
/// sessions to evict the oldest, so this bounds what one login reads.
pub const MAX_SESSIONS_PER_USER: usize = 1000;

/// `[session]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle_timeout_secs: u64,
    /// A session ends this long after creation, however active.
    pub absolute_timeout_secs: u64,
    /// `last_seen_at` is written back at most this often per session.
    pub touch_interval_secs: u64,
    /// The most live sessions one user keeps; a login past it revokes the
    /// user's oldest.
    pub max_per_user: usize,
    /// From the browser, ending another of one's sessions needs a sign-in
    /// within this long, or the password sent again (0: always the password).
    pub reauth_window_secs: u64,
    /// The largest encoded session record (larger writes: 413).
    pub max_record_bytes: usize,
    /// The record format this node writes (1, 2 or 3; it reads all three).
    pub record_format: u8,
    /// What a sign-in records about its client.
    pub record_client: crate::client::ClientMode,
    /// A MaxMind-format database placing the sign-in's address.
    pub geoip_database: Option<std::path::PathBuf>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout_secs: 30 * 60,
            absolute_timeout_secs: 12 * 60 * 60,
            touch_interval_secs: 60,
            max_per_user: crate::store::DEFAULT_MAX_PER_USER,
            reauth_window_secs: 300,
            max_record_bytes: crate::store::DEFAULT_MAX_RECORD_BYTES,
            record_format: crate::codec::FORMAT_VERSION,
            record_client: crate::client::ClientMode::default(),
            geoip_database: None,
        }
    }
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// A cached record older than this is re-checked against DynamoDB
    /// before use (the cross-node staleness bound).
    pub revalidate_after_ms: u64,
    /// The lease while the stream follower lags or is broken.
    pub revalidate_after_lagging_ms: u64,
    /// Cap on queued logouts of keys this node could not verify.
    pub max_unverified_revocations: usize,
    /// A token DynamoDB has no session for is answered "unknown" from
    /// memory for this long (0: always ask DynamoDB).
    pub negative_ttl_ms: u64,
    /// At most this many unknown tokens are remembered (oldest dropped).
    pub negative_max_entries: usize,
}

impl Default for CacheConfig {
    /// The store's own defaults, so each is written once.
    fn default() -> Self {
        let store = crate::store::StoreSettings::default();
        CacheConfig {
            revalidate_after_ms: store.revalidate_after_ms,
            revalidate_after_lagging_ms: 1000,
            max_unverified_revocations: store.max_unverified_revocations,
            negative_ttl_ms: store.negative_ttl_ms,
            negative_max_entries: store.negative_max_entries,
        }
    }
}

/// `[stream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Follow what other nodes revoke (from `source`) and evict it.
    pub enabled: bool,
    /// Where revocations are read from.
    pub source: StreamSource,
    /// Pause between two reads (the propagation delay).
    pub poll_interval_ms: u64,
    /// The follower lags when its last good poll or newest applied record
    /// is older than this; the lease then shortens.
    pub lag_threshold_ms: u64,
    /// Partition keys of the change journal per minute (1-16); every node
    /// of a table must use the same number.
    pub journal_partitions: u8,
    /// No longer read (the journal reader is gone); setting it is an error
    /// that says so.
    pub journal_settle_ms: Option<u64>,
    /// Whether invalidating writes add a change-journal entry, for nodes of
    /// an older build that still read the journal (default: no).
    pub journal_writes: bool,
    /// With `source = "stream"`: write a heartbeat item this often and count
    /// the follower live only while one came back through the stream within
    /// `lag_threshold_ms` (0: off, liveness from polls alone).
    pub heartbeat_interval_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            enabled: true,
            source: StreamSource::Stream,
            poll_interval_ms: 250,
            lag_threshold_ms: 3000,
            journal_partitions: 1,
            journal_settle_ms: None,
            journal_writes: false,
            heartbeat_interval_ms: 1000,
        }
    }
}

/// `stream.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamSource {
    /// `"journal"`: no longer read; accepted only to say what replaced it.
    Journal,
    /// `"stream"`: the table's DynamoDB stream (two nodes per region at most).
    Stream,
    /// `"relays"`: a few nodes of the region (`relay.slots`) read the stream
    /// and push what it carries to every node (any number of nodes).
    Relays,
}

/// `[relay]`: the fleet's relays, with `stream.source = "relays"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Where this node serves its feed while it holds a relay slot; unset:
    /// this node never relays, it only subscribes.
    pub listen: Option<std::net::SocketAddr>,
    /// How other nodes reach that feed (default `http://<listen>`, which
    /// needs a specific address, not 0.0.0.0).
    pub advertise_url: Option<String>,
    /// The fleet's shared secret (at least 32 bytes): every frame is signed
    /// with it, and a node refuses a frame it cannot verify.
    pub secret: Option<SecretString>,
    /// This region's name: each region of a global table elects its own
    /// relays, from its own slots.
    pub region: String,
    /// Relay slots in the region (1-4): DynamoDB Streams serves two readers
    /// per shard.
    pub slots: u8,
    /// A holder that has not renewed its slot for this long loses it.
    pub lease_ms: u64,
    /// How often a holder renews its slot and flushes its stream positions,
    /// and how often every node reads the slots.
    pub beat_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: None,
            advertise_url: None,
            secret: None,
            region: "default".into(),
            slots: 2,
            lease_ms: 5000,
            beat_ms: 1000,
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `"text"`: human-readable lines.
    Text,
    /// `"json"`: one JSON object per event.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter (`RUST_LOG` wins when set).
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
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
            // Each error leads with its key as written in config.toml: figment
            // names an environment variable's key in its own spelling.
            let errors: Vec<String> = e
                .into_iter()
                .map(|e| match e.path.join(".") {
                    key if key.is_empty() => e.to_string(),
                    key => format!("`{key}`: {e}"),
                })
                .collect();
            ConfigError(format!("invalid configuration: {}", errors.join("; ")))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The `dynamodb.on_unreachable` policy, with `max_stale_ms`.
    pub fn on_unreachable(&self) -> crate::store::OnUnreachable {
        match self.dynamodb.on_unreachable {
            OnUnreachableMode::ServeCached => crate::store::OnUnreachable::ServeCached {
                max_stale_ms: self.dynamodb.max_stale_ms,
            },
            OnUnreachableMode::Reject => crate::store::OnUnreachable::Reject,
        }
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

    #[test]
    fn shipped_config_is_the_default_config_plus_the_demo_user() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let shipped = Config::from_toml(&text).unwrap();
        assert_eq!(shipped.auth.users.len(), 1);
        let without_users = Config {
            auth: AuthConfig::default(),
            ..shipped
        };
        assert_eq!(
            format!("{without_users:?}"),
            format!("{:?}", Config::default())
        );
        assert_eq!(
            format!("{:?}", Config::from_toml("").unwrap()),
            format!("{:?}", Config::default())
        );
    }

    #[test]
    fn typed_values_take_their_wire_names() {
        let c = Config::from_toml(
            "[server]\nlisten = \"0.0.0.0:9\"\n[dynamodb]\nendpoint = \"http://127.0.0.1:8000\"\n\
             on_unreachable = \"serve_cached\"\n[log]\nformat = \"json\"",
        )
        .unwrap();
        assert_eq!(c.server.listen, SocketAddr::from(([0, 0, 0, 0], 9)));
        assert_eq!(
            c.dynamodb.endpoint,
            DynamoEndpoint::Url("http://127.0.0.1:8000".into())
        );
        assert_eq!(c.dynamodb.on_unreachable, OnUnreachableMode::ServeCached);
        assert_eq!(c.log.format, LogFormat::Json);
        let aws = Config::from_toml("[dynamodb]\nendpoint = \"aws\"").unwrap();
        assert_eq!(aws.dynamodb.endpoint, DynamoEndpoint::Aws);
        let defaults = Config::default();
        assert_eq!(defaults.dynamodb.endpoint, DynamoEndpoint::Embedded);
        assert_eq!(defaults.dynamodb.on_unreachable, OnUnreachableMode::Reject);
        assert_eq!(defaults.log.format, LogFormat::Text);
    }

    #[test]
    fn typed_values_name_their_key_and_what_was_expected() {
        let e = err("[server]\nlisten = \"nope\"");
        assert!(
            e.contains("server.listen") && e.contains("host:port"),
            "{e}"
        );
        let e = err("[dynamodb]\nendpoint = \"ftp://x\"");
        assert!(
            e.contains("dynamodb.endpoint") && e.contains("http(s)://"),
            "{e}"
        );
        let e = err("[dynamodb]\non_unreachable = \"maybe\"");
        assert!(
            e.contains("dynamodb.on_unreachable") && e.contains("serve_cached"),
            "{e}"
        );
        let e = err("[log]\nformat = \"xml\"");
        assert!(e.contains("log.format") && e.contains("json"), "{e}");
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
        assert!(err("[session]\nrecord_format = 4").contains("session.record_format"));
        let relays = "[stream]\nsource = \"relays\"\n";
        assert!(err(relays).contains("relay.secret"), "no secret");
        assert!(err(&format!("{relays}[relay]\nsecret = \"short\"")).contains("relay.secret"));
        let secret = "[relay]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
        assert!(Config::from_toml(&format!("{relays}{secret}")).is_ok());
        assert!(err(&format!("{relays}{secret}slots = 5")).contains("relay.slots"));
        assert!(err(&format!("{relays}{secret}region = \"\"")).contains("relay.region"));
        assert!(err(&format!("{relays}{secret}listen = \"0.0.0.0:8081\""))
            .contains("relay.advertise_url"));
        assert!(
            err(&format!("{relays}{secret}beat_ms = 1000\nlease_ms = 2000"))
                .contains("relay.lease_ms")
        );
        assert!(
            err("[stream]\nheartbeat_interval_ms = 5000").contains("stream.heartbeat_interval_ms")
        );
        assert!(err("[stream]\nsource = \"journal\"").contains("stream.source"));
        assert!(err("[stream]\njournal_settle_ms = 2000").contains("stream.journal_settle_ms"));
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

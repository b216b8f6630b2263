//! `[events]`: session events, from the table's change feed, out through
//! signed webhooks and the `/v1/events` feed (docs/design.md, "Session
//! events").

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ConfigError;

/// Every event type, as `events.webhooks[].types` names them.
pub const EVENT_TYPES: [&str; 7] = [
    "session.created",
    "session.signed_in",
    "session.signed_out",
    "session.revoked",
    "session.evicted",
    "session.expired",
    "user.signed_out_everywhere",
];

/// `[events]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Emit session events: one node per region (`relay.region`) holds the
    /// emitter's slot, and every node writes why a session ends before its
    /// delete. Turn it on on every node of the region.
    pub enabled: bool,
    /// Where events are delivered.
    pub webhooks: Vec<WebhookConfig>,
    /// A webhook at most this many events behind loses the oldest (counted
    /// as dropped).
    pub max_pending: u64,
    /// How long the log keeps an event (the feed's cursor is good that
    /// long), seconds; at least a day.
    pub retention_secs: u64,
    /// The emitter's slot is renewed this often (ms), and its positions and
    /// head flushed.
    pub beat_ms: u64,
    /// A slot not renewed for this long is taken over (ms).
    pub lease_ms: u64,
    /// How often the emitter polls each shard of the stream at most (ms).
    pub poll_interval_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            enabled: false,
            webhooks: Vec::new(),
            max_pending: 100_000,
            retention_secs: 25 * 3600,
            beat_ms: 1000,
            lease_ms: 5000,
            poll_interval_ms: 500,
        }
    }
}

/// One `[[events.webhooks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name in metrics and in the table (its cursor): the URL's host
    /// and path when unset.
    #[serde(default)]
    pub name: Option<String>,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The Standard Webhooks secret: `whsec_` and a base64 key.
    pub secret: SecretString,
    /// The event types sent (empty: all).
    #[serde(default)]
    pub types: Vec<String>,
}

impl WebhookConfig {
    /// The name it is known by.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
            rest.split(['?', '#']).next().unwrap_or(rest).to_owned()
        })
    }

    /// The HMAC key the secret holds (`None` if it does not decode).
    pub fn key(&self) -> Option<Vec<u8>> {
        let secret = self.secret.expose_secret();
        let b64 = secret.strip_prefix("whsec_")?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|k| !k.is_empty())
    }
}

fn bad(key: &str, why: String) -> Result<(), ConfigError> {
    Err(ConfigError(format!("invalid configuration: `{key}` {why}")))
}

impl EventsConfig {
    /// The checks the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.webhooks.is_empty() && !self.enabled {
            return bad("events.webhooks", "needs `events.enabled = true`".into());
        }
        if self.retention_secs < 86_400 {
            return bad(
                "events.retention_secs",
                "must be at least 86400 (a day)".into(),
            );
        }
        if self.max_pending == 0 {
            return bad("events.max_pending", "must be positive".into());
        }
        if self.beat_ms == 0 || self.lease_ms <= self.beat_ms * 2 {
            return bad(
                "events.lease_ms",
                "must be more than twice `events.beat_ms` (and that positive)".into(),
            );
        }
        if !(100..=60_000).contains(&self.poll_interval_ms) {
            return bad("events.poll_interval_ms", "must be 100-60000".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let key = format!("events.webhooks[{i}]");
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://"))
                || hook.url.parse::<hyper::Uri>().is_err()
            {
                return bad(
                    &format!("{key}.url"),
                    "must be an http:// or https:// URL".into(),
                );
            }
            if hook.key().is_none() {
                return bad(
                    &format!("{key}.secret"),
                    "must be `whsec_` followed by a base64 key (Standard Webhooks)".into(),
                );
            }
            if let Some(t) = hook
                .types
                .iter()
                .find(|t| !EVENT_TYPES.contains(&t.as_str()))
            {
                return bad(
                    &format!("{key}.types"),
                    format!("names `{t}`, which is none of {}", EVENT_TYPES.join(", ")),
                );
            }
            if !names.insert(hook.label()) {
                return bad(
                    &format!("{key}.name"),
                    "is another webhook's too: give each its own `name`".into(),
                );
            }
        }
        Ok(())
    }
}

//! Webhook deliveries, from the event log, by the region's emitter.
//!
//! - **Signed** as Standard Webhooks does: `webhook-id` (the event's id),
//!   `webhook-timestamp` (when this attempt was signed, Unix seconds) and
//!   `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
//!   `id.timestamp.body` under the secret's key). Every attempt is signed
//!   afresh, so a retry after an hour is not refused as a replay.
//! - **In order, at least once.** A webhook's events go out one at a time in
//!   log order (so in order per session too); an event is retried until the
//!   receiver answers 2xx, with backoff from 1 s doubling to 30 s. The last
//!   delivered number (the cursor) is kept in the table, written after each
//!   batch and when the emitter stops: a successor, or this node after a
//!   restart, resumes there and may deliver a batch again, never skip one.
//! - **Bounded.** A webhook more than `events.max_pending` events behind
//!   skips its oldest (`edge_session_webhook_dropped_total`); an entry the
//!   log no longer holds (past `events.retention_secs`) is dropped too.
//! - **Metrics**, labelled by the webhook's name:
//!   `edge_session_webhook_pending`, `_delivered_total`, `_failed_total`
//!   (attempts), `_dropped_total`.
//!
//! A webhook with no cursor yet starts at the log's head: a new receiver
//! gets the events from its first start on, not the whole log.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use sha2::Sha256;
use tokio::sync::watch;

use crate::config::WebhookConfig;
use edge_session_sync::{DynamoTier, EventLog, LoggedEvent};

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The log's head as the emitter knows it: the next free number.
pub(super) trait Head: Send + Sync {
    fn head(&self) -> u64;
    /// Whether this node still holds the slot (no delivery once it may not).
    fn holding(&self) -> bool;
}

/// One configured webhook, ready to deliver to.
#[derive(Clone)]
pub struct Hook {
    label: String,
    url: hyper::Uri,
    key: Arc<[u8]>,
    types: Arc<[String]>,
    client: Client<Https, Full<Bytes>>,
}

impl Hook {
    /// The webhook `config` names (checked by the config's validation).
    pub fn new(config: &WebhookConfig) -> anyhow::Result<Hook> {
        let url = config.url.parse()?;
        let key = config
            .key()
            .ok_or_else(|| anyhow::anyhow!("events.webhooks: the secret does not decode"))?;
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!("events: no system root certificates; https webhooks will fail");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Hook {
            label: config.label(),
            url,
            key: key.into(),
            types: config.types.clone().into(),
            client,
        })
    }

    fn wants(&self, kind: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == kind)
    }

    /// One signed POST of `event`; `Ok` on a 2xx answer.
    async fn post(&self, event: &LoggedEvent) -> Result<(), String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let signature = sign(&self.key, &event.id, &timestamp, event.json.as_bytes());
        let request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "edge-session-webhooks")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(event.json.clone())))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    }
}

/// The `webhook-signature` of one attempt: `v1,` and the base64 HMAC-SHA256
/// of `id.timestamp.body` under `key`.
pub(super) fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The webhook's cursor as the table keeps it; a webhook never started
/// starts at the log's head. `None` when halted first.
async fn start_cursor(
    tier: &DynamoTier,
    log: EventLog,
    label: &str,
    head: &dyn Head,
    halt: &mut watch::Receiver<bool>,
) -> Option<u64> {
    loop {
        match tier.webhook_cursor(log, label).await {
            Ok(None) => {
                let start = head.head().saturating_sub(1);
                if tier.set_webhook_cursor(log, label, start).await.is_ok() {
                    return Some(start);
                }
            }
            Ok(Some(cursor)) => return Some(cursor),
            Err(err) => tracing::debug!(%err, webhook = %label, "webhook cursor not read"),
        }
        tokio::select! {
            _ = halt.wait_for(|h| *h) => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Deliver `log` to `hook` from its cursor until `halt`.
pub(super) async fn deliver(
    tier: DynamoTier,
    log: EventLog,
    hook: Hook,
    head: Arc<dyn Head>,
    max_pending: u64,
    mut halt: watch::Receiver<bool>,
) {
    let label = hook.label.clone();
    let pending_gauge = metrics::gauge!("edge_session_webhook_pending", "webhook" => label.clone());
    let delivered =
        metrics::counter!("edge_session_webhook_delivered_total", "webhook" => label.clone());
    let failed = metrics::counter!("edge_session_webhook_failed_total", "webhook" => label.clone());
    let dropped =
        metrics::counter!("edge_session_webhook_dropped_total", "webhook" => label.clone());
    let halted = |halt: &watch::Receiver<bool>| *halt.borrow() || !head.holding();
    // The cursor: the last number delivered (or skipped).
    let Some(mut cursor) = start_cursor(&tier, log, &label, head.as_ref(), &mut halt).await else {
        return;
    };
    let mut saved = cursor;
    while !halted(&halt) {
        let last = head.head().saturating_sub(1);
        let pending = last.saturating_sub(cursor);
        if pending > max_pending {
            dropped.increment(pending - max_pending);
            tracing::warn!(webhook = %label, dropped = pending - max_pending, "webhook too far behind: its oldest events are dropped");
            cursor = last - max_pending;
        }
        pending_gauge.set(last.saturating_sub(cursor) as f64);
        if cursor >= last {
            if saved != cursor && tier.set_webhook_cursor(log, &label, cursor).await.is_ok() {
                saved = cursor;
            }
            tokio::select! {
                _ = halt.wait_for(|h| *h) => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let batch = match tier
            .read_events(log, cursor + 1, (last - cursor).min(100))
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                tracing::debug!(%err, webhook = %label, "event log not read");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if batch.first().is_none_or(|e| e.number != cursor + 1) {
            // Below the head, so written: gone from the log (past its
            // retention). Skip to the first entry still there (or past the
            // whole window).
            let to = batch
                .first()
                .map_or(cursor + (last - cursor).min(100), |e| e.number - 1);
            dropped.increment(to - cursor);
            tracing::warn!(webhook = %label, dropped = to - cursor, "webhook events gone from the log before delivery");
            cursor = to;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut backoff = Duration::from_secs(1);
        for event in batch {
            if event.number != cursor + 1 || halted(&halt) {
                break;
            }
            if !super::type_of(&event.json).is_some_and(|k| hook.wants(&k)) {
                cursor = event.number;
                continue;
            }
            loop {
                match hook.post(&event).await {
                    Ok(()) => {
                        delivered.increment(1);
                        cursor = event.number;
                        break;
                    }
                    Err(why) => {
                        failed.increment(1);
                        tracing::info!(webhook = %label, id = %event.id, %why, retry_in_ms = backoff.as_millis() as u64, "webhook delivery failed");
                    }
                }
                // Too far behind while retrying: the drop above moves on.
                let behind = head.head().saturating_sub(1).saturating_sub(cursor);
                pending_gauge.set(behind as f64);
                if behind > max_pending {
                    break;
                }
                tokio::select! {
                    _ = halt.wait_for(|h| *h) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            if cursor != event.number {
                break;
            }
        }
        if saved != cursor && tier.set_webhook_cursor(log, &label, cursor).await.is_ok() {
            saved = cursor;
        }
    }
    if saved != cursor {
        let _ = tier.set_webhook_cursor(log, &label, cursor).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_standard_webhooks_v1() {
        // The example of the Standard Webhooks specification.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}

//! The follower's heartbeat: a small item of its own (`sid` random per
//! follower, `ver` counting up, `hb` the writer's clock, `exp` an hour on
//! for TTL, no `body`) put every `heartbeat_every`. Its return through the
//! stream is the follower's liveness (the module doc of [`super`]). Each put
//! is one write unit; a failed one is only logged: the missing return is
//! what the node acts on.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::item::{EXP, HEARTBEAT, SID, SID_LEN, VER};

/// How long TTL keeps a heartbeat item after its last write.
const KEEP: Duration = Duration::from_secs(3600);

/// A fresh random key: each follower's heartbeats are its own.
pub(super) fn new_key() -> [u8; SID_LEN] {
    let mut key = [0u8; SID_LEN];
    getrandom::fill(&mut key).expect("the OS CSPRNG is unavailable");
    key
}

/// Aborts the heartbeat task when dropped.
pub(super) struct Beating(tokio::task::JoinHandle<()>);

impl Drop for Beating {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The heartbeat item written at `now` as the `count`th.
fn item(sid: &[u8; SID_LEN], count: u64, now: SystemTime) -> HashMap<String, AttributeValue> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    HashMap::from([
        (SID.to_owned(), AttributeValue::B(Blob::new(sid.to_vec()))),
        (VER.to_owned(), AttributeValue::N(count.to_string())),
        (
            EXP.to_owned(),
            AttributeValue::N((since + KEEP).as_secs().to_string()),
        ),
        (
            HEARTBEAT.to_owned(),
            AttributeValue::N((since.as_millis() as u64).max(1).to_string()),
        ),
    ])
}

/// Put the heartbeat item every `every` until the returned guard is dropped.
pub(super) fn spawn(
    client: aws_sdk_dynamodb::Client,
    table: String,
    sid: [u8; SID_LEN],
    every: Duration,
) -> Beating {
    Beating(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for count in 1u64.. {
            tick.tick().await;
            let put = client
                .put_item()
                .table_name(&table)
                .set_item(Some(item(&sid, count, SystemTime::now())))
                .send();
            // A put that outlives its interval is abandoned: the next one
            // carries a newer time anyway.
            match tokio::time::timeout(every.max(Duration::from_secs(1)), put).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::debug!(err = %aws_sdk_dynamodb::error::DisplayErrorContext(&err), "heartbeat not written")
                }
                Err(_) => tracing::debug!("heartbeat write timed out"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_item_carries_the_writers_clock_and_no_body() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let map = item(&[7; SID_LEN], 3, at);
        assert_eq!(map[HEARTBEAT], AttributeValue::N("1700000000123".into()));
        assert_eq!(map[VER], AttributeValue::N("3".into()));
        assert_eq!(map[EXP], AttributeValue::N("1700003600".into()));
        assert!(!map.contains_key(crate::item::BODY));
        assert_ne!(new_key(), new_key());
    }
}

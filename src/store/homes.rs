//! Home regions (`[regions]`): a session is written in the region that
//! issued it, and reaches the other replicas of a global table only after
//! replication. Its token names that home region, so a node that misses a
//! session in its own replica reads the home replica (strongly consistent,
//! bounded by `regions.home_timeout_ms`, behind that region's own circuit
//! breaker) before answering that there is no such session, and fills its
//! cache from it.
//!
//! What a token with another region's hint can buy: one read there, once per
//! key and `cache.negative_ttl_ms` (the negative cache remembers the miss),
//! as a token unknown here buys one read here. A home that cannot be
//! reached is an outage (503 `store_unavailable`), never a false "signed
//! out".

use std::time::Duration;

use edge_session_sync::{DynamoError, DynamoTier, Item};

use super::TieredStore;
use crate::token::StorageKey;

/// The other regions' replicas, by their place in `regions.names`.
pub struct Homes {
    own: u8,
    replicas: Vec<Option<DynamoTier>>,
    timeout: Duration,
}

impl Homes {
    /// This node is region `own`; `replicas` are the others'.
    pub fn new(own: u8, replicas: Vec<(u8, DynamoTier)>, timeout: Duration) -> Homes {
        let mut by_place: Vec<Option<DynamoTier>> = Vec::new();
        for (place, tier) in replicas {
            let i = usize::from(place);
            if by_place.len() <= i {
                by_place.resize(i + 1, None);
            }
            by_place[i] = Some(tier);
        }
        Homes {
            own,
            replicas: by_place,
            timeout,
        }
    }
}

impl TieredStore {
    /// Make this store one region of several (once; later calls are
    /// ignored): it issues tokens naming `homes`' own place, and reads a
    /// missed session from its home replica.
    pub fn set_homes(&self, homes: Homes) {
        let _ = self.inner.homes.set(homes);
    }

    /// The home place this node's new tokens name (`None`: one region).
    pub(super) fn own_home(&self) -> Option<u8> {
        self.inner.homes.get().map(|h| h.own)
    }

    /// The other regions' replicas.
    pub(super) fn other_replicas(&self) -> Vec<DynamoTier> {
        self.inner
            .homes
            .get()
            .map(|homes| homes.replicas.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// End the session under `key` in its home replica too, when that is
    /// another region's (its reason first, with session events on): a
    /// logout here is then a logout there at once, and no write there can
    /// outlive it through last-writer-wins. Bounded by
    /// `regions.home_timeout_ms`; a failure is logged (the delete made here
    /// replicates there all the same). Whether the home replica deleted it.
    pub(super) async fn end_at_home(
        &self,
        key: StorageKey,
        end: super::End,
        home: Option<u8>,
    ) -> bool {
        let tier = self.write_tier(home);
        if std::ptr::eq(tier, &self.inner.dynamo) {
            return false;
        }
        let timeout = self
            .inner
            .homes
            .get()
            .map_or(Duration::from_secs(1), |h| h.timeout);
        let ended = tokio::time::timeout(timeout, async {
            if self.inner.settings.end_reasons {
                tier.stamp_end(key.as_bytes(), end.as_str()).await?;
            }
            tier.delete(key.as_bytes()).await
        })
        .await;
        let failed = match ended {
            Ok(Ok(deleted)) => return deleted,
            Ok(Err(err)) => err.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        metrics::counter!("edge_session_home_revocations_failed_total").increment(1);
        tracing::warn!(why = %failed, "a revocation did not reach the session's home region; replication carries it there");
        false
    }

    /// Where a write to a session homed in `home` goes: that region's
    /// replica when it is another's (and configured), else this one's.
    pub(super) fn write_tier(&self, home: Option<u8>) -> &DynamoTier {
        self.inner
            .homes
            .get()
            .and_then(|homes| {
                let home = home.filter(|h| *h != homes.own)?;
                homes.replicas.get(usize::from(home))?.as_ref()
            })
            .unwrap_or(&self.inner.dynamo)
    }

    /// The session under `key` in the replica of `home`, when that is
    /// another region's: `None` when there is none there, or nothing to ask.
    pub(super) async fn fetch_home(
        &self,
        key: StorageKey,
        home: Option<u8>,
    ) -> Result<Option<Item>, DynamoError> {
        let Some(homes) = self.inner.homes.get() else {
            return Ok(None);
        };
        let Some(home) = home.filter(|h| *h != homes.own) else {
            return Ok(None);
        };
        let Some(Some(tier)) = homes.replicas.get(usize::from(home)) else {
            return Ok(None);
        };
        let read = tokio::time::timeout(homes.timeout, tier.get(key.as_bytes())).await;
        let result = match read {
            Ok(result) => result,
            Err(_) => Err(DynamoError::new_unavailable(
                "home_read",
                "the session's home region did not answer in time",
            )),
        };
        let label = match &result {
            Ok(Some(_)) => "found",
            Ok(None) => "absent",
            Err(_) => "failed",
        };
        metrics::counter!("edge_session_home_reads_total", "result" => label).increment(1);
        result
    }
}

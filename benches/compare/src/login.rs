//! Login throughput: [`TieredStore::regenerate`] beside the raw DynamoDB
//! `TransactWriteItems` it wraps (the same three items: conditional delete
//! of the old key, conditional put of the new one, the user's epoch check
//! with its session count),
//! both against one embedded DynamoDB (SQLite file) and an on-disk sled
//! cache, as a node runs them. The parts of `regenerate` that are not the
//! transaction are timed alone too: the consistent read of the user's
//! revocation epoch and the durable (flushed) tombstone.
//!
//! Set-up (creating the anonymous sessions a login regenerates, or the old
//! items a raw transaction deletes) is done before each timed batch. Each
//! login binds a different user, as real traffic does. The table's stream is
//! off (see [`bench_table`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use edge_session::{
    now, EmbeddedDynamo, NewSession, SessionRecord, SessionToken, SledCache, StorageKey,
    StoreSettings, TieredStore, Tombstone, UserBinding,
};
use edge_session_bench::raw::{bench_table, item, login_transaction};

use crate::load::{drain, Sample};
use crate::peers::USER_ID;

/// A store over an embedded DynamoDB file and a sled cache, in `dir`.
pub struct LoginBench {
    store: TieredStore,
    embedded: Option<EmbeddedDynamo>,
}

/// A fresh user for each login, as real traffic has: one user with
/// thousands of sessions would make a hot `uid-index` partition (the embedded
/// store slows down as it grows) and measure that instead.
fn user() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{USER_ID}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn binding(user_id: String) -> UserBinding {
    UserBinding {
        user_id,
        role: Some("member".to_owned()),
        client: None,
    }
}

/// Ops per timed batch: enough to keep `concurrency` workers busy.
fn batch(concurrency: usize) -> usize {
    (48 * concurrency).max(96)
}

impl LoginBench {
    /// Start the embedded server on a file under `dir`, provision, open sled.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let embedded =
            EmbeddedDynamo::start_file(&dir.join("dynamodb.sqlite3"), Duration::from_secs(60))
                .context("starting the embedded DynamoDB store")?;
        let tier = bench_table(&embedded, "bench-login").await?;
        let cache = SledCache::open(&dir.join("cache")).context("opening sled")?;
        // As a node does: the store's metrics go to a real recorder.
        let _ = edge_session::metrics_handle();
        Ok(LoginBench {
            store: TieredStore::new(cache, tier, StoreSettings::default()),
            embedded: Some(embedded),
        })
    }

    /// Timed batches of `regenerate` (anonymous session → bound to a user, as
    /// `POST /login` does) until `duration` of timed work has passed.
    pub async fn regenerate(
        &self,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<Sample> {
        let mut total = Sample::empty();
        while total.elapsed < duration {
            let mut sessions = Vec::with_capacity(batch(concurrency));
            for _ in 0..batch(concurrency) {
                let (_, session) = self.store.create(NewSession::default(), now()).await?;
                sessions.push((session, user()));
            }
            let store = self.store.clone();
            let sample = drain(sessions, concurrency, move |(session, user_id)| {
                let store = store.clone();
                async move {
                    Ok(store
                        .regenerate(&session, Some(binding(user_id)), false, now())
                        .await?
                        .is_ok())
                }
            })
            .await;
            total.merge(&sample);
        }
        Ok(total)
    }

    /// Timed batches of the raw `TransactWriteItems` that `regenerate` sends,
    /// built with the SDK client directly.
    pub async fn raw_transaction(
        &self,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<Sample> {
        let tier = self.store.dynamo().clone();
        let policy = self.store.settings().policy;
        let mut total = Sample::empty();
        while total.elapsed < duration {
            let mut pairs = Vec::with_capacity(batch(concurrency));
            for _ in 0..batch(concurrency) {
                let t = now();
                let old_key = SessionToken::generate().storage_key();
                let anonymous = SessionRecord::new(&policy, t);
                if tier.create(&item(&old_key, &anonymous)).await?.is_err() {
                    anyhow::bail!("a fresh random key collided");
                }
                let user_id = user();
                let epoch_sid = StorageKey::user_epoch(&user_id);
                let mut bound = SessionRecord::new(&policy, t);
                bound.user_id = Some(user_id.into());
                bound.role = Some("member".into());
                let new_key = SessionToken::generate().storage_key();
                pairs.push((old_key, item(&new_key, &bound), epoch_sid));
            }
            let tier = tier.clone();
            let sample = drain(pairs, concurrency, move |(old_key, new_item, epoch_sid)| {
                let tier = tier.clone();
                async move {
                    login_transaction(&tier, &old_key, &new_item, &epoch_sid)?
                        .send()
                        .await?;
                    Ok(true)
                }
            })
            .await;
            total.merge(&sample);
        }
        Ok(total)
    }

    /// The consistent read of the user's epoch that `regenerate` makes first.
    pub async fn epoch_read(&self, ops: usize) -> Sample {
        let tier = self.store.dynamo().clone();
        drain(vec![(); ops], 1, move |()| {
            let tier = tier.clone();
            let sid = StorageKey::user_epoch(&user());
            async move {
                tier.user_epoch(sid.as_bytes()).await?;
                Ok(true)
            }
        })
        .await
    }

    /// The durable tombstone `regenerate` writes before DynamoDB is touched:
    /// one sled transaction (tombstone, outbox entry) and a flush.
    pub async fn durable_tombstone(&self, ops: usize) -> Sample {
        let cache = self.store.cache().clone();
        drain(vec![(); ops], 1, move |()| {
            let cache = cache.clone();
            async move {
                let key = SessionToken::generate().storage_key();
                let t = now();
                let tomb = Tombstone {
                    keep_until: t + 60_000,
                    nonce: getrandom::u64()?,
                };
                cache.revoke_and_queue(&key, tomb, t)?;
                cache.flush().await?;
                Ok(true)
            }
        })
        .await
    }

    /// Stop the embedded server.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(embedded) = self.embedded.take() {
            tokio::task::spawn_blocking(move || embedded.stop()).await?;
        }
        Ok(())
    }
}

//! Test harness: a DynamoDB-wire endpoint and nodes (a sled cache each) over
//! one fresh table per test.
//!
//! By default the harness starts one embedded dynoxide server per test binary,
//! in memory, on 127.0.0.1:0. Set `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT` to a URL
//! (DynamoDB Local, another emulator, or `aws` for real DynamoDB in
//! `EDGE_SESSION_TEST_DYNAMODB_REGION`, default us-east-1) to run the same
//! suite there; credentials then come from the standard AWS chain.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_session::embedded::EmbeddedDynamo;
use edge_session::store::StoreSettings;
use edge_session::sync::{ClientSettings, DynamoTier, Endpoint};
use edge_session::{SledCache, TieredStore};

static EMBEDDED: OnceLock<EmbeddedDynamo> = OnceLock::new();

/// The endpoint every test in this binary uses.
pub fn endpoint() -> Endpoint {
    match std::env::var("EDGE_SESSION_TEST_DYNAMODB_ENDPOINT") {
        Ok(url) if url == "aws" => Endpoint::Aws,
        Ok(url) if !url.is_empty() => Endpoint::Url(url),
        _ => {
            let server = EMBEDDED.get_or_init(|| {
                EmbeddedDynamo::start_in_memory(Duration::from_secs(1))
                    .expect("embedded DynamoDB starts")
            });
            Endpoint::Embedded(server.url())
        }
    }
}

/// Client settings for `endpoint`, with short timeouts so a fault shows fast.
pub fn client_settings(endpoint: Endpoint) -> ClientSettings {
    ClientSettings {
        endpoint,
        region: std::env::var("EDGE_SESSION_TEST_DYNAMODB_REGION")
            .unwrap_or_else(|_| "us-east-1".into()),
        ..ClientSettings::default()
    }
}

/// Wall-clock now in milliseconds. Tests offset from it (not from 0) so
/// the emulator's TTL sweep, which uses the real clock, leaves items alone.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A fresh table, provisioned, and a way to start nodes over it.
pub struct Cluster {
    pub tier: DynamoTier,
}

impl Cluster {
    pub async fn new() -> Self {
        let table = format!("edge-session-test-{:016x}", getrandom::u64().unwrap());
        let client = client_settings(endpoint()).build().await;
        let tier = DynamoTier::new(client, table);
        tier.provision().await.expect("provision the test table");
        Cluster { tier }
    }

    /// A node: its own temporary sled cache over the shared table.
    pub fn node(&self, settings: StoreSettings) -> TieredStore {
        TieredStore::new(
            SledCache::temporary().expect("temporary sled"),
            self.tier.clone(),
            settings,
        )
    }

    /// A node whose cache lives in `dir` (restart tests).
    pub fn node_at(&self, dir: &std::path::Path, settings: StoreSettings) -> TieredStore {
        TieredStore::new(
            SledCache::open(dir).expect("open sled"),
            self.tier.clone(),
            settings,
        )
    }

    /// Every item in the table, as raw attribute maps.
    pub async fn scan(&self) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .tier
                .client()
                .scan()
                .table_name(self.tier.table())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }
}

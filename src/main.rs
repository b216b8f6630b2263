//! `edge-session`: run a node. Until the HTTP layer lands, `serve` starts the
//! embedded DynamoDB-compatible store under `./data`, provisions the table,
//! opens the sled cache and reports ready.

use std::time::Duration;

use anyhow::Context as _;
use edge_session::embedded::EmbeddedDynamo;
use edge_session::store::StoreSettings;
use edge_session::sync::{ClientSettings, DynamoTier, Endpoint};
use edge_session::{SledCache, TieredStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data_dir = std::path::PathBuf::from("data");
    let embedded =
        EmbeddedDynamo::start_file(&data_dir.join("dynamodb.sqlite3"), Duration::from_secs(60))
            .context("starting the embedded DynamoDB store")?;
    let client = ClientSettings {
        endpoint: Endpoint::Embedded(embedded.url()),
        ..ClientSettings::default()
    }
    .build()
    .await;
    let tier = DynamoTier::new(client, "edge-sessions");
    tier.provision()
        .await
        .context("provisioning the session table")?;
    let cache = SledCache::open(&data_dir.join("cache")).context("opening the sled cache")?;
    let store = TieredStore::new(cache, tier, StoreSettings::default());
    println!(
        "edge-session store ready: embedded DynamoDB at {}, sled cache under {}",
        embedded.url(),
        data_dir.display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    store
        .cache()
        .flush()
        .await
        .context("flushing the sled cache")?;
    Ok(())
}

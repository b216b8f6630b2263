//! DynamoDB for tests: the endpoint every test of one process shares, a
//! server of a test's own, client settings, fresh tables and items, and the
//! writes a test makes past the tier.
//!
//! Contract:
//! - [`endpoint`] is the integration suite's endpoint: the one named by
//!   `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT` (a URL, or `aws` for real DynamoDB),
//!   or else one embedded server per test process, started on first use and
//!   never stopped, on a SQLite file under Cargo's temporary directory
//!   (`target/tmp/test-dynamodb/<pid>/`; each start removes what processes
//!   no longer alive left there).
//! - [`temporary`] is a server of the caller's own: the product's embedded
//!   server on a file in a fresh temporary directory, removed when it is
//!   dropped. It is file-backed, as the node's is, because the index it adds
//!   on the stream log needs a second connection to the same file
//!   (`src/embedded.rs`); a test of the stream sees what a node sees.
//! - Table names from [`unique_name`] are unique within a process and across
//!   runs, so tests can share a server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, StreamSpecification, StreamViewType, TransactWriteItem,
};
use edge_session::EmbeddedDynamo;
use edge_session_sync::{ClientSettings, DynamoTier, Endpoint, Item, JournalChange, SID_LEN};

/// How often an embedded server started here runs its TTL sweep (and trims
/// its stream log): often, so a test of expiry waits little.
const TTL_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The environment variable naming another endpoint than the embedded server.
pub const ENDPOINT_VAR: &str = "EDGE_SESSION_TEST_DYNAMODB_ENDPOINT";

/// The endpoint every test in this process shares (see the module doc).
pub fn endpoint() -> Endpoint {
    static SHARED: OnceLock<EmbeddedDynamo> = OnceLock::new();
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if url == "aws" => Endpoint::Aws,
        Ok(url) if !url.is_empty() => Endpoint::Url(url),
        _ => {
            let server = SHARED.get_or_init(|| {
                EmbeddedDynamo::start_file(&shared_file(), TTL_SWEEP_EVERY)
                    .expect("embedded DynamoDB starts")
            });
            Endpoint::Embedded(server.url())
        }
    }
}

/// The shared server's file: one directory per test process. A static is
/// never dropped, so each start removes what earlier processes (no longer
/// alive) left.
fn shared_file() -> PathBuf {
    let root = cargo_tmp().join("test-dynamodb");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let pid = entry.file_name();
            if !std::path::Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let mine = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&mine);
    mine.join("dynamodb.sqlite3")
}

/// Cargo's temporary directory (`CARGO_TARGET_TMPDIR`, `<target>/tmp`),
/// found from the running test binary (`<target>/<profile>/deps/<name>`):
/// Cargo names it only to the test's own compilation, not to this library.
/// The system's temporary directory for a binary that lives elsewhere.
fn cargo_tmp() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let deps = exe.as_deref().and_then(std::path::Path::parent);
    let target = deps
        .filter(|deps| deps.ends_with("deps"))
        .and_then(|deps| deps.parent()?.parent());
    target.map_or_else(std::env::temp_dir, |target| target.join("tmp"))
}

/// A server of the caller's own, file-backed, on 127.0.0.1:0; dropping it
/// stops it and removes its directory.
pub fn temporary() -> EmbeddedDynamo {
    EmbeddedDynamo::start_temporary(TTL_SWEEP_EVERY).expect("embedded DynamoDB starts")
}

/// Client settings for the embedded server at `url`.
pub fn settings(url: &str) -> ClientSettings {
    ClientSettings {
        endpoint: Endpoint::Embedded(url.to_owned()),
        ..ClientSettings::default()
    }
}

/// `prefix`, then a suffix no other call in this process or earlier run
/// gave: the clock's nanoseconds and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{nanos}-{count}")
}

/// A fresh table on the embedded server at `url`, provisioned as a node
/// provisions its own.
pub async fn table(url: &str) -> DynamoTier {
    let tier = DynamoTier::new(settings(url).build().await, unique_name("sync-test"));
    tier.provision().await.expect("provision");
    tier
}

/// An attribute definition: `name` of type `ty`.
pub fn attribute(name: &str, ty: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ty)
        .build()
        .expect("a complete attribute definition")
}

/// A hash key on `name`.
pub fn hash_key(name: &str) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(KeyType::Hash)
        .build()
        .expect("a complete key element")
}

/// A stream enabled with `view`.
pub fn stream_of(view: StreamViewType) -> StreamSpecification {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(view)
        .build()
        .expect("a complete stream specification")
}

/// A `CreateTable` of `name` keyed by `sid` (binary), billed on demand, and
/// nothing else: tables of a shape the tier does not make start here, and the
/// caller adds what the test needs (a stream, an index) before sending it.
pub fn sid_table(client: &aws_sdk_dynamodb::Client, name: &str) -> CreateTableFluentBuilder {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("sid", ScalarAttributeType::B))
        .key_schema(hash_key("sid"))
}

/// An anonymous session item under `sid`, version `ver`, that never
/// expires within a test, with a body of `body_len` zero bytes: load that
/// only needs items of a size.
pub fn filler_item(sid: [u8; SID_LEN], ver: u64, body_len: usize) -> Item {
    Item {
        sid,
        uid: None,
        ver,
        exp: u64::MAX / 2,
        body: vec![0; body_len],
    }
}

/// Session `byte` (every byte of its key), version `ver`, an hour to live,
/// its body the one byte.
pub fn item(byte: u8, ver: u64) -> Item {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600;
    Item {
        sid: [byte; SID_LEN],
        uid: None,
        ver,
        exp,
        body: vec![byte],
    }
}

/// Create then delete session `byte`: one INSERT, one REMOVE.
pub async fn create_and_delete(tier: &DynamoTier, byte: u8) {
    tier.create(&item(byte, 1)).await.unwrap().unwrap();
    tier.delete(&[byte; SID_LEN]).await.unwrap();
}

/// Delete session `byte` and put `item` (its attributes) in one
/// `TransactWriteItems`, as the tier writes a rotation, or a delete with its
/// journal entry.
async fn delete_and_put(tier: &DynamoTier, byte: u8, item: HashMap<String, AttributeValue>) {
    let delete = Delete::builder()
        .table_name(tier.table())
        .key("sid", AttributeValue::B(Blob::new(vec![byte; SID_LEN])))
        .build()
        .expect("a complete delete");
    let put = Put::builder()
        .table_name(tier.table())
        .set_item(Some(item))
        .build()
        .expect("a complete put");
    tier.client()
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().delete(delete).build())
        .transact_items(TransactWriteItem::builder().put(put).build())
        .send()
        .await
        .expect("the transaction commits");
}

/// Rotate session `old` to `new` as one `TransactWriteItems` (delete the old
/// key, put the new item), as a regenerate does.
pub async fn rotate_in_a_transaction(tier: &DynamoTier, old: u8, new: &Item) {
    delete_and_put(tier, old, new.to_attributes()).await;
}

/// Delete session `byte` as a writer whose clock is `skew` behind true
/// time does: the delete and its journal entry in one transaction, the
/// entry stamped with that writer's clock.
pub async fn delete_with_clock_behind(tier: &DynamoTier, byte: u8, skew: Duration) {
    let stamp = SystemTime::now() - skew;
    let entry = edge_session_sync::journal_entry(
        &[byte; SID_LEN],
        JournalChange::Removed,
        stamp,
        tier.journal(),
    );
    delete_and_put(tier, byte, entry).await;
}

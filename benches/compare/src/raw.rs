//! The raw DynamoDB `TransactWriteItems` that `DynamoTier::rotate` sends for
//! a bound login, built with the SDK client directly: the conditional delete
//! of the old key (`ver = 1`, a fresh anonymous session), the conditional put
//! of the new item, the check of the user's revocation epoch (absent or 0),
//! and, when the tier writes the change journal, the entry of the old key's
//! removal. Measured beside `TieredStore::regenerate`, which wraps it.

use std::collections::HashMap;

use anyhow::Context as _;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::operation::transact_write_items::builders::TransactWriteItemsFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValuesOnConditionCheckFailure, StreamSpecification,
    TransactWriteItem, Update,
};
use edge_session::{codec, item_of, EmbeddedDynamo, SessionRecord, StorageKey};
use edge_session_sync::{journal_entry, ClientSettings, DynamoTier, Endpoint, Item, JournalChange};

/// A provisioned table `name` on the embedded server, its stream switched
/// off: the embedded store (dynoxide 3.2) finds the next stream sequence
/// number with a `MAX(CAST(..))` over every stream record, so with the stream
/// on each write costs more than the one before (p50 of the raw transaction
/// 1.1 ms → 6 ms over ~4 000 writes), and that drift, not edge-session, would
/// decide a ratio or the order of the benchmarks would.
pub async fn bench_table(embedded: &EmbeddedDynamo, name: &str) -> anyhow::Result<DynamoTier> {
    let client = ClientSettings {
        endpoint: Endpoint::Embedded(embedded.url()),
        ..ClientSettings::default()
    }
    .build()
    .await;
    let tier = DynamoTier::new(client, name);
    tier.provision().await.context("provisioning")?;
    tier.client()
        .update_table()
        .table_name(tier.table())
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(false)
                .build()?,
        )
        .send()
        .await
        .context("switching the bench table's stream off")?;
    Ok(tier)
}

/// The key attribute map of item `sid`.
pub fn key_map(sid: &[u8; 32]) -> HashMap<String, AttributeValue> {
    HashMap::from([("sid".to_owned(), AttributeValue::B(Blob::new(sid.to_vec())))])
}

/// The DynamoDB item of `record` stored under `key`, in the current format.
pub fn item(key: &StorageKey, record: &SessionRecord) -> Item {
    item_of(key, record, codec::encode(record))
}

/// The login transaction on `tier`: delete `old` (version 1), put `new`,
/// check the epoch item `epoch_sid` (absent or 0) and count the session in
/// it, journal the removal when the tier writes the journal.
/// Ready to `send()`.
pub fn login_transaction(
    tier: &DynamoTier,
    old: &StorageKey,
    new: &Item,
    epoch_sid: &StorageKey,
) -> Result<TransactWriteItemsFluentBuilder, BuildError> {
    let table = tier.table();
    let delete = Delete::builder()
        .table_name(table)
        .set_key(Some(key_map(old.as_bytes())))
        .condition_expression("ver = :expected")
        .expression_attribute_values(":expected", AttributeValue::N("1".into()))
        .build()?;
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(new.to_attributes()))
        .condition_expression("attribute_not_exists(sid)")
        .build()?;
    // The user's epoch check, and its session count raised (under the limit).
    let count = Update::builder()
        .table_name(table)
        .set_key(Some(key_map(epoch_sid.as_bytes())))
        .update_expression("ADD live :adds SET exp = if_not_exists(exp, :exp)")
        .condition_expression(
            "(attribute_not_exists(ver) OR ver = :epoch) AND (attribute_not_exists(live) OR live < :limit)",
        )
        .expression_attribute_values(":epoch", AttributeValue::N("0".into()))
        .expression_attribute_values(":adds", AttributeValue::N("1".into()))
        .expression_attribute_values(":exp", AttributeValue::N("4000000000".into()))
        .expression_attribute_values(":limit", AttributeValue::N("32".into()))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()?;
    let transaction = tier
        .client()
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().delete(delete).build())
        .transact_items(TransactWriteItem::builder().put(put).build())
        .transact_items(TransactWriteItem::builder().update(count).build());
    if !tier.journal().write {
        return Ok(transaction);
    }
    let journal = Put::builder()
        .table_name(table)
        .set_item(Some(journal_entry(
            old.as_bytes(),
            JournalChange::Removed,
            std::time::SystemTime::now(),
            tier.journal(),
        )))
        .build()?;
    Ok(transaction.transact_items(TransactWriteItem::builder().put(journal).build()))
}

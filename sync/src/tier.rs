//! [`DynamoTier`]: typed operations on the session table.
//!
//! Every write is conditional: `create` on `attribute_not_exists(sid)`,
//! `update` on `ver`, `rotate` is one `TransactWriteItems` (delete the old
//! item conditional on its `ver`, put the new one conditional on
//! `attribute_not_exists`). Reads are strongly consistent, except the GSI
//! query, which DynamoDB only serves eventually consistent.
//!
//! This file holds the tier, its single-item operations and the breaker
//! and capacity accounting every call shares; `transact.rs` the
//! transactions (`rotate`, `create_guarded`) and how a cancellation maps to
//! an outcome; `epochs.rs` users' epochs and session counts; `list.rs` the
//! index query of one user's sessions; `provision.rs` the table's creation
//! and check; `partitions.rs` the change journal's partitions.

use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, Delete, Put, ReturnConsumedCapacity, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;

use std::sync::Arc;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::breaker::{Breaker, BreakerSettings};
use crate::error::{
    classify, conditional, is_unreachable, Conflict, DynamoError, ErrorKind, RotateConflict,
    CONDITION_FAILED, TRANSACTION_CONFLICT,
};
use crate::item::{self, Item, SID_LEN};
use crate::journal::{self, Change, JournalSettings};

mod epochs;
mod list;
mod partitions;
mod provision;
mod transact;

pub use epochs::EpochGuard;
pub use list::UserPage;

/// Every DynamoDB call goes through `timed`: the circuit breaker admits it
/// (or fails it fast), its latency is recorded by operation, and whether
/// DynamoDB answered feeds the breaker (a throttled call was answered).
/// A failed call becomes a [`DynamoError`], counted by `op` and `kind`.
pub(crate) trait Timed<T, E>:
    std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>> + Sized
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn timed(
        self,
        op: &'static str,
        breaker: &Breaker,
    ) -> impl std::future::Future<Output = Result<Self::Output, DynamoError>> {
        async move {
            breaker.admit(op)?;
            let started = std::time::Instant::now();
            let out = self.await;
            metrics::histogram!("edge_session_dynamodb_call_duration_seconds", "op" => op)
                .record(started.elapsed().as_secs_f64());
            breaker.record(match &out {
                Ok(_) => true,
                Err(err) => !is_unreachable(err),
            });
            Ok(out)
        }
    }
}

impl<F, T, E> Timed<T, E> for F
where
    F: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
}

/// Name of the GSI on `uid`.
pub const UID_INDEX: &str = "uid-index";

/// The session table, reached through the official SDK.
#[derive(Clone, Debug)]
pub struct DynamoTier {
    client: Client,
    table: String,
    breaker: Arc<Breaker>,
    journal: Arc<JournalSettings>,
    /// Write units DynamoDB reported consumed, in thousandths.
    write_milli_units: Arc<std::sync::atomic::AtomicU64>,
}

/// What `provision` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionReport {
    /// The table did not exist and was created.
    pub created: bool,
    /// TTL on `exp` was switched on by this call.
    pub ttl_enabled: bool,
    /// The change journal's index was added to an existing table.
    pub journal_index_added: bool,
}

fn malformed(op: &'static str, err: impl std::fmt::Display) -> DynamoError {
    DynamoError::new(op, ErrorKind::Malformed, err.to_string())
}

impl DynamoTier {
    /// A tier over `table` using `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self::with_breaker(client, table, BreakerSettings::default())
    }

    /// A tier with explicit circuit-breaker settings.
    pub fn with_breaker(
        client: Client,
        table: impl Into<String>,
        breaker: BreakerSettings,
    ) -> Self {
        DynamoTier {
            client,
            table: table.into(),
            breaker: Arc::new(Breaker::new(breaker)),
            journal: Arc::new(JournalSettings::default()),
            write_milli_units: Arc::default(),
        }
    }

    /// This tier with `settings` for the change journal its writes add to.
    pub fn with_journal(mut self, settings: JournalSettings) -> Self {
        self.journal = Arc::new(settings);
        self
    }

    /// The change journal's settings.
    pub fn journal(&self) -> &JournalSettings {
        &self.journal
    }

    /// Write units DynamoDB reported consumed by this tier's writes so far
    /// (every write asks for `ReturnConsumedCapacity`), also counted in
    /// `edge_session_dynamodb_write_units_total{op}`.
    pub fn consumed_write_units(&self) -> f64 {
        self.write_milli_units
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1000.0
    }

    pub(crate) fn charge<'a>(
        &self,
        op: &'static str,
        consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
        let units: f64 = consumed
            .into_iter()
            .filter_map(ConsumedCapacity::capacity_units)
            .sum();
        if units > 0.0 {
            self.write_milli_units.fetch_add(
                (units * 1000.0).round() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            metrics::counter!("edge_session_dynamodb_write_units_total", "op" => op)
                .increment(units.ceil() as u64);
        }
    }

    /// Put `attributes` if the stored `ver` is `expected_ver`: one plain
    /// conditional write. A missing item, a changed one, or a transaction on
    /// it in flight is a conflict.
    async fn put_if_version(
        &self,
        op: &'static str,
        attributes: std::collections::HashMap<String, AttributeValue>,
        expected_ver: u64,
    ) -> Result<Result<(), Conflict>, DynamoError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attributes))
            .condition_expression("ver = :expected AND attribute_not_exists(why)")
            .expression_attribute_values(":expected", AttributeValue::N(expected_ver.to_string()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed(op, &self.breaker)
            .await?;
        match conditional(op, result, &[CONDITION_FAILED, TRANSACTION_CONFLICT])? {
            Some(out) => {
                self.charge(op, out.consumed_capacity());
                Ok(Ok(()))
            }
            None => Ok(Err(Conflict)),
        }
    }

    /// The journal entry saying `target` changed, as a transaction item.
    fn journal_entry(
        &self,
        target: &[u8; SID_LEN],
        change: Change,
        op: &'static str,
    ) -> Result<TransactWriteItem, DynamoError> {
        journal::entry_put(&self.table, target, change, &self.journal, op)
    }

    /// The circuit breaker every call of this tier goes through.
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Whether the circuit breaker is failing calls fast right now.
    pub fn is_circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The underlying SDK client (for the stream follower and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Put a new item, conditional on no item having its `sid`.
    pub async fn create(&self, item: &Item) -> Result<Result<(), Conflict>, DynamoError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.to_attributes()))
            .condition_expression("attribute_not_exists(sid)")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed("create", &self.breaker)
            .await?;
        match conditional("create", result, &[CONDITION_FAILED])? {
            Some(out) => {
                self.charge("create", out.consumed_capacity());
                Ok(Ok(()))
            }
            None => Ok(Err(Conflict)),
        }
    }

    /// Strongly consistent read of one item.
    pub async fn get(&self, sid: &[u8; SID_LEN]) -> Result<Option<Item>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item::key(sid)))
            .consistent_read(true)
            .send()
            .timed("get", &self.breaker)
            .await?
            .map_err(|err| classify("get", &err))?;
        match out.item {
            None => Ok(None),
            Some(map) => Item::from_attributes(&map)
                .map(Some)
                .map_err(|e| malformed("get", e)),
        }
    }

    /// Strongly consistent read of `ver` alone: the cheap lease check.
    pub async fn get_version(&self, sid: &[u8; SID_LEN]) -> Result<Option<u64>, DynamoError> {
        match self.read_attribute("get_version", sid, item::VER).await? {
            None => Ok(None),
            Some(map) => item::number(&map, item::VER)
                .map(Some)
                .map_err(|e| malformed("get_version", e)),
        }
    }

    /// The item under `sid` with only `attribute` (an empty map if the
    /// item lacks it), strongly consistent; `None`: no item.
    async fn read_attribute(
        &self,
        op: &'static str,
        sid: &[u8; SID_LEN],
        attribute: &str,
    ) -> Result<Option<std::collections::HashMap<String, AttributeValue>>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item::key(sid)))
            .consistent_read(true)
            .projection_expression(attribute)
            .send()
            .timed(op, &self.breaker)
            .await?
            .map_err(|err| classify(op, &err))?;
        Ok(out.item)
    }

    /// Replace the item, conditional on its stored `ver` being `expected_ver`
    /// (with the journal on, in one transaction with a journal entry of the
    /// raised version). A missing item is a conflict too: a deleted session
    /// is never written back. So is a transaction on the item in flight
    /// elsewhere.
    pub async fn update(
        &self,
        item: &Item,
        expected_ver: u64,
    ) -> Result<Result<(), Conflict>, DynamoError> {
        if !self.journal.write {
            return self
                .put_if_version("update", item.to_attributes(), expected_ver)
                .await;
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item.to_attributes()))
            .condition_expression("ver = :expected AND attribute_not_exists(why)")
            .expression_attribute_values(":expected", AttributeValue::N(expected_ver.to_string()))
            .build()
            .map_err(|e| DynamoError::new("update", ErrorKind::Rejected, e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            self.journal_entry(&item.sid, Change::Raised(item.ver), "update")?,
        ];
        match self
            .transact("update", items, &[RotateConflict::OldChanged], None)
            .await?
        {
            Ok(()) => Ok(Ok(())),
            Err(_) => Ok(Err(Conflict)),
        }
    }

    /// Write back a served session's `last_seen_at` (and so its idle expiry):
    /// one plain `PutItem` conditional on the stored `ver` being
    /// `expected_ver`, with no journal entry. A touch is not an invalidation:
    /// the item carries the [`TOUCHED`](crate::item::TOUCHED) marker, so a
    /// stream reader ignores it too, and a stale copy elsewhere loses on
    /// `ver` at its next write or lease check. One write unit for an item
    /// under 1 KB. A missing item is a conflict.
    pub async fn touch(
        &self,
        item: &Item,
        expected_ver: u64,
    ) -> Result<Result<(), Conflict>, DynamoError> {
        let mut attributes = item.to_attributes();
        attributes.insert(
            item::TOUCHED.to_owned(),
            AttributeValue::N(item.ver.to_string()),
        );
        self.put_if_version("touch", attributes, expected_ver).await
    }

    /// Run `update` (a transaction item's update) as one plain `UpdateItem`:
    /// `false` when its condition failed or a transaction on the item was in
    /// flight.
    async fn update_if(&self, op: &'static str, update: Update) -> Result<bool, DynamoError> {
        let result = self
            .client
            .update_item()
            .table_name(update.table_name())
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .set_condition_expression(update.condition_expression().map(str::to_owned))
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed(op, &self.breaker)
            .await?;
        let written = conditional(op, result, &[CONDITION_FAILED, TRANSACTION_CONFLICT])?;
        if let Some(out) = &written {
            self.charge(op, out.consumed_capacity());
        }
        Ok(written.is_some())
    }

    /// Delete the item whatever its version (a revocation must win over any
    /// concurrent write), with the journal on in one transaction with its
    /// entry. `true` when there was an item to delete. Idempotent. A
    /// transaction on the item in flight elsewhere fails it (throttled:
    /// nothing was written): the caller's outbox tries again.
    pub async fn delete(&self, sid: &[u8; SID_LEN]) -> Result<bool, DynamoError> {
        let op = "delete";
        if !self.journal.write {
            let result = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(item::key(sid)))
                .condition_expression("attribute_exists(sid)")
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .timed(op, &self.breaker)
                .await?;
            // A transaction on the item in flight refuses it: nothing was
            // written, and the outbox tries again.
            if let Err(SdkError::ServiceError(service)) = &result {
                if service.err().code() == Some(TRANSACTION_CONFLICT) {
                    return Err(DynamoError::new(
                        op,
                        ErrorKind::Throttled,
                        "a transaction on the item is in flight",
                    ));
                }
            }
            let deleted = conditional(op, result, &[CONDITION_FAILED])?;
            if let Some(out) = &deleted {
                self.charge(op, out.consumed_capacity());
            }
            return Ok(deleted.is_some());
        }
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(item::key(sid)))
            .condition_expression("attribute_exists(sid)")
            .build()
            .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            self.journal_entry(sid, Change::Removed, op)?,
        ];
        match self
            .transact(op, items, &[RotateConflict::OldChanged], None)
            .await?
        {
            Ok(()) => Ok(true),
            Err(RotateConflict::TransactionInProgress) => Err(DynamoError::new(
                op,
                ErrorKind::Throttled,
                "a transaction on the item is in flight",
            )),
            Err(_) => Ok(false),
        }
    }

    /// Whether the change journal's index still holds an entry (one
    /// `Scan` of the index with `Limit = 1`). Entries expire a day after
    /// they were written, so once no node writes the journal and this is
    /// `false`, `journal-index` can be dropped.
    pub async fn journal_has_entries(&self) -> Result<bool, DynamoError> {
        let op = "journal_scan";
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .index_name(journal::JOURNAL_INDEX)
            .limit(1)
            .send()
            .timed(op, &self.breaker)
            .await?
            .map_err(|err| classify(op, &err))?;
        Ok(out.count() > 0 || out.last_evaluated_key().is_some())
    }

    /// Cheap reachability check: the table exists and answers.
    pub async fn ping(&self) -> Result<(), DynamoError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .timed("ping", &self.breaker)
            .await?
            .map(|_| ())
            .map_err(|err| classify("ping", &err))
    }
}

//! [`DynamoTier`]: typed operations on the session table.
//!
//! Every write is conditional: `create` on `attribute_not_exists(sid)`,
//! `update` on `ver`, `rotate` is one `TransactWriteItems` (delete the old
//! item conditional on its `ver`, put the new one conditional on
//! `attribute_not_exists`). Reads are strongly consistent, except the GSI
//! query, which DynamoDB only serves eventually consistent.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, Delete, Put, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
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

mod list;
mod partitions;
mod provision;

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

/// Guards a write on a user's revocation epoch: the epoch item `sid` must
/// still be at `epoch` (0: never revoked, the item may be absent, or hold
/// no epoch yet).
///
/// The same item counts the user's sessions (`live`): the write adds
/// `adds` to it, and with a `limit`, is refused
/// ([`RotateConflict::UserAtLimit`]) when the count has reached it. The
/// count only ever grows here (an ended session is not subtracted): it is an
/// upper bound on the user's live sessions, set to the true number by
/// [`DynamoTier::reset_session_count`] when a login finds it at the limit.
/// So a login lists its user's sessions only then, not every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochGuard {
    /// The user's epoch item key.
    pub sid: [u8; SID_LEN],
    /// The epoch the caller read.
    pub epoch: u64,
    /// Sessions the write adds to the user's (0 or 1).
    pub adds: u64,
    /// Refuse the write when the count has reached this.
    pub limit: Option<u64>,
    /// Epoch seconds the item lives until, at least (TTL), when the write
    /// creates it: past every session bound under it.
    pub exp: u64,
}

/// The user's session count in the epoch item.
pub(crate) const LIVE: &str = "live";

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

    /// In ONE transaction: delete `old_sid` if its `ver` is `old_ver`, put
    /// `new` if its `sid` is free, and (with `guard`) check that the user's
    /// revocation epoch has not moved. All happen or none does.
    pub async fn rotate(
        &self,
        old_sid: &[u8; SID_LEN],
        old_ver: u64,
        new: &Item,
        guard: Option<EpochGuard>,
    ) -> Result<Result<(), RotateConflict>, DynamoError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(item::key(old_sid)))
            .condition_expression("ver = :expected AND attribute_not_exists(why)")
            .expression_attribute_values(":expected", AttributeValue::N(old_ver.to_string()))
            .build()
            .map_err(|e| DynamoError::new("rotate", ErrorKind::Rejected, e.to_string()))?;
        // The new item names the one it replaces (`prv`): a session event
        // tells a sign-in's previous session from a new visitor's.
        let mut put = new.to_attributes();
        put.insert(
            crate::change::PREVIOUS.to_owned(),
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(old_sid.to_vec())),
        );
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(put))
            .condition_expression("attribute_not_exists(sid)")
            .build()
            .map_err(|e| DynamoError::new("rotate", ErrorKind::Rejected, e.to_string()))?;
        let mut items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        let mut roles = vec![RotateConflict::OldChanged, RotateConflict::NewExists];
        if let Some(guard) = guard {
            items.push(self.epoch_guard(&guard, "rotate")?);
            roles.push(RotateConflict::EpochChanged);
        }
        // Last, and with no condition: it never decides the outcome.
        if self.journal.write {
            items.push(self.journal_entry(old_sid, Change::Removed, "rotate")?);
        }
        self.transact("rotate", items, &roles, guard.as_ref()).await
    }

    /// Put a new item bound to a user, in one transaction with a check that
    /// the user's revocation epoch is still `guard.epoch`.
    pub async fn create_guarded(
        &self,
        new: &Item,
        guard: EpochGuard,
    ) -> Result<Result<(), RotateConflict>, DynamoError> {
        let items = vec![
            self.put_new(new, "create")?,
            self.epoch_guard(&guard, "create")?,
        ];
        self.transact(
            "create",
            items,
            &[RotateConflict::NewExists, RotateConflict::EpochChanged],
            Some(&guard),
        )
        .await
    }

    fn put_new(&self, new: &Item, op: &'static str) -> Result<TransactWriteItem, DynamoError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(new.to_attributes()))
            .condition_expression("attribute_not_exists(sid)")
            .build()
            .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The epoch item's part of a guarded write: the epoch condition (and
    /// the limit's), and the count raised by `guard.adds`. On a failed
    /// condition the item's old image comes back, to tell which failed.
    fn epoch_guard(
        &self,
        guard: &EpochGuard,
        op: &'static str,
    ) -> Result<TransactWriteItem, DynamoError> {
        // Epoch 0 is "never revoked": the item may not exist yet, or hold
        // only a session count.
        let epoch = if guard.epoch == 0 {
            "(attribute_not_exists(ver) OR ver = :epoch)"
        } else {
            "ver = :epoch"
        };
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item::key(&guard.sid)))
            .update_expression("ADD live :adds SET exp = if_not_exists(exp, :exp)")
            .expression_attribute_values(":epoch", AttributeValue::N(guard.epoch.to_string()))
            .expression_attribute_values(":adds", AttributeValue::N(guard.adds.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(guard.exp.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = match guard.limit {
            Some(limit) => update
                .condition_expression(format!(
                    "{epoch} AND (attribute_not_exists(live) OR live < :limit)"
                ))
                .expression_attribute_values(":limit", AttributeValue::N(limit.to_string())),
            None => update.condition_expression(epoch),
        };
        let update = update
            .build()
            .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Set a user's session count (see [`EpochGuard`]) to `live`, if it is
    /// still `seen` (no login counted since it was read). `false`: it moved,
    /// and is left for the next login that finds it at the limit.
    pub async fn reset_session_count(
        &self,
        epoch_sid: &[u8; SID_LEN],
        seen: u64,
        live: u64,
    ) -> Result<bool, DynamoError> {
        let op = "reset_session_count";
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item::key(epoch_sid)))
            .update_expression("SET live = :live")
            .condition_expression("live = :seen")
            .expression_attribute_values(":seen", AttributeValue::N(seen.to_string()))
            .expression_attribute_values(":live", AttributeValue::N(live.to_string()))
            .build()
            .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
        self.update_if(op, update).await
    }

    /// A user's session count (see [`EpochGuard`]), strongly consistent: 0
    /// when none is kept yet.
    pub async fn session_count(&self, epoch_sid: &[u8; SID_LEN]) -> Result<u64, DynamoError> {
        match self
            .read_attribute("session_count", epoch_sid, LIVE)
            .await?
        {
            Some(map) if map.contains_key(LIVE) => {
                item::number(&map, LIVE).map_err(|e| malformed("session_count", e))
            }
            _ => Ok(0),
        }
    }

    /// Run one `TransactWriteItems`; a cancellation maps to the role of the
    /// first item whose condition failed. With `guard`, the item of role
    /// [`RotateConflict::EpochChanged`] is the guard's: its old image says
    /// whether the epoch moved or the user is at the limit.
    async fn transact(
        &self,
        op: &'static str,
        items: Vec<TransactWriteItem>,
        roles: &[RotateConflict],
        guard: Option<&EpochGuard>,
    ) -> Result<Result<(), RotateConflict>, DynamoError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed(op, &self.breaker)
            .await?;
        match result {
            Ok(out) => {
                self.charge(op, out.consumed_capacity());
                Ok(Ok(()))
            }
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => {
                    let codes: Vec<&str> = cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    match cancellation_outcome(&codes, roles) {
                        Some(RotateConflict::EpochChanged) => {
                            let at = roles
                                .iter()
                                .position(|r| *r == RotateConflict::EpochChanged);
                            let old = at.and_then(|i| cancel.cancellation_reasons().get(i));
                            let old = old.and_then(|r| r.item());
                            Ok(Err(guard_outcome(guard, old)))
                        }
                        Some(conflict) => Ok(Err(conflict)),
                        None => Err(DynamoError::new(
                            op,
                            cancellation_kind(&codes),
                            format!("transaction cancelled: {codes:?}"),
                        )),
                    }
                }
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                    Ok(Err(RotateConflict::TransactionInProgress))
                }
                _ => Err(classify(op, &err)),
            },
        }
    }

    /// A user's revocation epoch (0 when the user was never revoked):
    /// strongly consistent.
    pub async fn user_epoch(&self, epoch_sid: &[u8; SID_LEN]) -> Result<u64, DynamoError> {
        // No item, or one holding only the user's session count: never
        // revoked.
        match self
            .read_attribute("user_epoch", epoch_sid, item::VER)
            .await?
        {
            Some(map) if map.contains_key(item::VER) => {
                item::number(&map, item::VER).map_err(|e| malformed("user_epoch", e))
            }
            _ => Ok(0),
        }
    }

    /// Raise a user's revocation epoch to at least `epoch` (never lower
    /// it): how another region's replica learns a raise made here without
    /// waiting for replication, which could otherwise replace a higher
    /// epoch with a lower one (last writer wins).
    pub async fn raise_user_epoch_to(
        &self,
        epoch_sid: &[u8; SID_LEN],
        user: &str,
        epoch: u64,
        exp: u64,
    ) -> Result<(), DynamoError> {
        let op = "raise_user_epoch";
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item::key(epoch_sid)))
            .update_expression("SET ver = :epoch, exp = :exp, eu = :user")
            .condition_expression("attribute_not_exists(ver) OR ver < :epoch")
            .expression_attribute_values(":epoch", AttributeValue::N(epoch.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(exp.to_string()))
            .expression_attribute_values(":user", AttributeValue::S(user.to_owned()))
            .build()
            .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
        // Refused: it is there already, or higher.
        self.update_if(op, update).await.map(|_| ())
    }

    /// Advance a user's revocation epoch by one; returns the new epoch. The
    /// item lives until `exp` (epoch seconds), past any session it outlaws.
    /// The epoch is read, then raised conditionally on it, with its journal
    /// entry, in one transaction; a concurrent raise makes it read again.
    pub async fn bump_user_epoch(
        &self,
        epoch_sid: &[u8; SID_LEN],
        user: Option<&str>,
        exp: u64,
    ) -> Result<u64, DynamoError> {
        let op = "bump_user_epoch";
        for _ in 0..8 {
            let current = self.user_epoch(epoch_sid).await?;
            let next = current + 1;
            // Epoch 0 is "never revoked": the item may not exist yet, or
            // hold only the user's session count.
            let condition = if current == 0 {
                "attribute_not_exists(ver) OR ver = :current"
            } else {
                "ver = :current"
            };
            // The user is named on the item (`eu`), so that the raise's
            // stream record says whose sessions ended.
            let (set, named) = match user {
                Some(user) => (
                    "SET ver = :next, exp = :exp, eu = :user",
                    Some(AttributeValue::S(user.to_owned())),
                ),
                None => ("SET ver = :next, exp = :exp", None),
            };
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(item::key(epoch_sid)))
                .update_expression(set)
                .set_expression_attribute_values(
                    named.map(|u| std::collections::HashMap::from([(":user".to_owned(), u)])),
                )
                .condition_expression(condition)
                .expression_attribute_values(":current", AttributeValue::N(current.to_string()))
                .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
                .expression_attribute_values(":exp", AttributeValue::N(exp.to_string()))
                .build()
                .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
            if !self.journal.write {
                if self.update_if(op, update).await? {
                    return Ok(next);
                }
                continue;
            }
            let items = vec![
                TransactWriteItem::builder().update(update).build(),
                self.journal_entry(epoch_sid, Change::Raised(next), op)?,
            ];
            if self
                .transact(op, items, &[RotateConflict::OldChanged], None)
                .await?
                .is_ok()
            {
                return Ok(next);
            }
        }
        Err(DynamoError::new(
            op,
            ErrorKind::Throttled,
            "the epoch kept moving under concurrent revocations",
        ))
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

/// Why a guard's condition failed, from the epoch item's old image: the
/// epoch moved, or it did not and the user is at the limit.
fn guard_outcome(
    guard: Option<&EpochGuard>,
    old: Option<&std::collections::HashMap<String, AttributeValue>>,
) -> RotateConflict {
    let (Some(guard), Some(old)) = (guard, old) else {
        return RotateConflict::EpochChanged;
    };
    let epoch = match old.get(item::VER) {
        None => Some(0),
        Some(_) => item::number(old, item::VER).ok(),
    };
    if guard.limit.is_some() && epoch == Some(guard.epoch) {
        RotateConflict::UserAtLimit
    } else {
        RotateConflict::EpochChanged
    }
}

/// Map a cancelled transaction's reasons (in item order) to an outcome:
/// the role of the first item whose condition failed. `None` when the
/// cancellation is not a conflict (throttling, capacity): the caller treats
/// it as unavailable.
fn cancellation_outcome(codes: &[&str], roles: &[RotateConflict]) -> Option<RotateConflict> {
    if let Some(i) = codes.iter().position(|c| *c == "ConditionalCheckFailed") {
        return roles.get(i).copied();
    }
    if codes.contains(&"TransactionConflict") {
        return Some(RotateConflict::TransactionInProgress);
    }
    None
}

/// A cancellation that is not a conflict: throttled when an item was refused
/// for capacity, else no usable answer.
fn cancellation_kind(codes: &[&str]) -> ErrorKind {
    let capacity = ["ThrottlingError", "ProvisionedThroughputExceeded"];
    if codes.iter().any(|c| capacity.contains(c)) {
        ErrorKind::Throttled
    } else {
        ErrorKind::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotate_outcome(codes: &[&str]) -> Option<RotateConflict> {
        use RotateConflict::*;
        cancellation_outcome(codes, &[OldChanged, NewExists, EpochChanged])
    }

    #[test]
    fn a_refused_guard_is_the_limit_only_if_the_epoch_stood_still() {
        let guard = |epoch| EpochGuard {
            sid: [1; SID_LEN],
            epoch,
            adds: 1,
            limit: Some(3),
            exp: 0,
        };
        let old = |ver: Option<&str>| {
            let mut item = std::collections::HashMap::new();
            item.insert(LIVE.to_owned(), AttributeValue::N("3".into()));
            if let Some(ver) = ver {
                item.insert(item::VER.to_owned(), AttributeValue::N(ver.into()));
            }
            item
        };
        use RotateConflict::*;
        assert_eq!(
            guard_outcome(Some(&guard(0)), Some(&old(None))),
            UserAtLimit
        );
        assert_eq!(
            guard_outcome(Some(&guard(2)), Some(&old(Some("2")))),
            UserAtLimit
        );
        assert_eq!(
            guard_outcome(Some(&guard(0)), Some(&old(Some("1")))),
            EpochChanged
        );
        assert_eq!(
            guard_outcome(Some(&guard(2)), Some(&old(None))),
            EpochChanged
        );
        // No old image (the item was absent, or the store sent none).
        assert_eq!(guard_outcome(Some(&guard(0)), None), EpochChanged);
        let unlimited = EpochGuard {
            limit: None,
            ..guard(0)
        };
        assert_eq!(
            guard_outcome(Some(&unlimited), Some(&old(None))),
            EpochChanged
        );
    }

    #[test]
    fn cancellation_reasons_map_to_typed_outcomes() {
        assert_eq!(
            rotate_outcome(&["None", "None", "ConditionalCheckFailed"]),
            Some(RotateConflict::EpochChanged)
        );
        assert_eq!(
            rotate_outcome(&["ConditionalCheckFailed", "None"]),
            Some(RotateConflict::OldChanged)
        );
        assert_eq!(
            rotate_outcome(&["None", "ConditionalCheckFailed"]),
            Some(RotateConflict::NewExists)
        );
        assert_eq!(
            rotate_outcome(&["ConditionalCheckFailed", "ConditionalCheckFailed"]),
            Some(RotateConflict::OldChanged)
        );
        assert_eq!(
            rotate_outcome(&["TransactionConflict", "None"]),
            Some(RotateConflict::TransactionInProgress)
        );
        assert_eq!(rotate_outcome(&["ThrottlingError", "None"]), None);
        assert_eq!(
            cancellation_kind(&["ThrottlingError", "None"]),
            ErrorKind::Throttled
        );
        assert_eq!(rotate_outcome(&[]), None);
    }
}

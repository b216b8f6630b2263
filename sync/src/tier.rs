//! [`DynamoTier`]: typed operations on the session table.
//!
//! Every write is conditional: `create` on `attribute_not_exists(sid)`,
//! `update` on `ver`, `rotate` is one `TransactWriteItems` (delete the old
//! item conditional on its `ver`, put the new one conditional on
//! `attribute_not_exists`). Reads are strongly consistent, except the GSI
//! query, which DynamoDB only serves eventually consistent.

use std::time::Duration;

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
    TransactWriteItem,
};
use aws_sdk_dynamodb::Client;

use std::sync::Arc;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::breaker::{Breaker, BreakerSettings};
use crate::error::{classify, is_unreachable, Conflict, DynamoError, ErrorKind, RotateConflict};
use crate::item::{self, Item, SID_LEN};

mod list;

pub use list::UserPage;

/// Every DynamoDB call goes through `timed`: the circuit breaker admits it
/// (or fails it fast), its latency is recorded by operation, and whether
/// DynamoDB answered feeds the breaker (a throttled call was answered).
/// A failed call becomes a [`DynamoError`], counted by `op` and `kind`.
trait Timed<T, E>: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>> + Sized
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
}

/// Guards a write on a user's revocation epoch: the epoch item `sid` must
/// still be at `epoch` (0: never revoked, the item may be absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochGuard {
    /// The user's epoch item key.
    pub sid: [u8; SID_LEN],
    /// The epoch the caller read.
    pub epoch: u64,
}

/// What `provision` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionReport {
    /// The table did not exist and was created.
    pub created: bool,
    /// TTL on `exp` was switched on by this call.
    pub ttl_enabled: bool,
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
        }
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
            .send()
            .timed("create", &self.breaker)
            .await?;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(Err(Conflict))
            }
            Err(err) => Err(classify("create", &err)),
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
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item::key(sid)))
            .consistent_read(true)
            .projection_expression("ver")
            .send()
            .timed("get_version", &self.breaker)
            .await?
            .map_err(|err| classify("get_version", &err))?;
        match out.item {
            None => Ok(None),
            Some(map) => item::number(&map, item::VER)
                .map(Some)
                .map_err(|e| malformed("get_version", e)),
        }
    }

    /// Replace the item, conditional on its stored `ver` being `expected_ver`.
    /// A missing item is a conflict too: a deleted session is never written back.
    pub async fn update(
        &self,
        item: &Item,
        expected_ver: u64,
    ) -> Result<Result<(), Conflict>, DynamoError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.to_attributes()))
            .condition_expression("ver = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected_ver.to_string()))
            .send()
            .timed("update", &self.breaker)
            .await?;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(Err(Conflict))
            }
            Err(err) => Err(classify("update", &err)),
        }
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
            .condition_expression("ver = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(old_ver.to_string()))
            .build()
            .map_err(|e| DynamoError::new("rotate", ErrorKind::Rejected, e.to_string()))?;
        let mut items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            self.put_new(new, "rotate")?,
        ];
        let mut roles = vec![RotateConflict::OldChanged, RotateConflict::NewExists];
        if let Some(guard) = guard {
            items.push(self.epoch_check(&guard, "rotate")?);
            roles.push(RotateConflict::EpochChanged);
        }
        self.transact("rotate", items, &roles).await
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
            self.epoch_check(&guard, "create")?,
        ];
        self.transact(
            "create",
            items,
            &[RotateConflict::NewExists, RotateConflict::EpochChanged],
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

    fn epoch_check(
        &self,
        guard: &EpochGuard,
        op: &'static str,
    ) -> Result<TransactWriteItem, DynamoError> {
        // Epoch 0 is "never revoked": the item may not exist yet.
        let condition = if guard.epoch == 0 {
            "attribute_not_exists(sid) OR ver = :epoch"
        } else {
            "ver = :epoch"
        };
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(item::key(&guard.sid)))
            .condition_expression(condition)
            .expression_attribute_values(":epoch", AttributeValue::N(guard.epoch.to_string()))
            .build()
            .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Run one `TransactWriteItems`; a cancellation maps to the role of the
    /// first item whose condition failed.
    async fn transact(
        &self,
        op: &'static str,
        items: Vec<TransactWriteItem>,
        roles: &[RotateConflict],
    ) -> Result<Result<(), RotateConflict>, DynamoError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .timed(op, &self.breaker)
            .await?;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => {
                    let codes: Vec<&str> = cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    match cancellation_outcome(&codes, roles) {
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
        Ok(self.get_version(epoch_sid).await?.unwrap_or(0))
    }

    /// Advance a user's revocation epoch by one; returns the new epoch. The
    /// item lives until `exp` (epoch seconds), past any session it outlaws.
    pub async fn bump_user_epoch(
        &self,
        epoch_sid: &[u8; SID_LEN],
        exp: u64,
    ) -> Result<u64, DynamoError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item::key(epoch_sid)))
            .update_expression("SET ver = if_not_exists(ver, :zero) + :one, exp = :exp")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":exp", AttributeValue::N(exp.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .timed("bump_user_epoch", &self.breaker)
            .await?
            .map_err(|err| classify("bump_user_epoch", &err))?;
        let attrs = out.attributes.unwrap_or_default();
        item::number(&attrs, item::VER).map_err(|e| malformed("bump_user_epoch", e))
    }

    /// Delete the item whatever its version (a revocation must win over any
    /// concurrent write). Returns the deleted item's `ver`, `None` if there
    /// was none. Idempotent.
    pub async fn delete(&self, sid: &[u8; SID_LEN]) -> Result<Option<u64>, DynamoError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item::key(sid)))
            .return_values(ReturnValue::AllOld)
            .send()
            .timed("delete", &self.breaker)
            .await?
            .map_err(
                |err: aws_sdk_dynamodb::error::SdkError<DeleteItemError, _>| {
                    classify("delete", &err)
                },
            )?;
        match out.attributes {
            None => Ok(None),
            Some(map) => item::number(&map, item::VER)
                .map(Some)
                .map_err(|e| malformed("delete", e)),
        }
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

    /// Create the table (key `sid`, GSI `uid-index`, stream NEW_AND_OLD_IMAGES,
    /// TTL on `exp`) or check that an existing one has that shape. Idempotent.
    pub async fn provision(&self) -> Result<ProvisionReport, DynamoError> {
        let op = "provision";
        let created = match self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr_def(item::SID, ScalarAttributeType::B)?)
            .attribute_definitions(attr_def(item::UID, ScalarAttributeType::S)?)
            .key_schema(hash_key(item::SID)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(UID_INDEX)
                    .key_schema(hash_key(item::UID)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?,
            )
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?,
            )
            .send()
            .await
        {
            Ok(_) => true,
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(CreateTableError::ResourceInUseException(_))
                ) =>
            {
                false
            }
            Err(err) => return Err(classify(op, &err)),
        };
        self.wait_active().await?;
        self.check_shape().await?;
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|err| classify(op, &err))?;
        let ttl_on = ttl.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(item::EXP)
                && matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if !ttl_on {
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(item::EXP)
                        .build()
                        .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?,
                )
                .send()
                .await
                .map_err(|err| classify(op, &err))?;
        }
        Ok(ProvisionReport {
            created,
            ttl_enabled: !ttl_on,
        })
    }

    async fn wait_active(&self) -> Result<(), DynamoError> {
        for _ in 0..600 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|err| classify("provision", &err))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(DynamoError::new(
            "provision",
            ErrorKind::Unavailable,
            "table did not become ACTIVE within 120 s",
        ))
    }

    /// An existing table must have the key, the GSI and a stream we can follow.
    async fn check_shape(&self) -> Result<(), DynamoError> {
        let op = "provision";
        let table = describe(&self.client, &self.table, op).await?;
        let mut problems = Vec::new();
        let key_ok = table.key_schema().len() == 1
            && table.key_schema()[0].attribute_name() == item::SID
            && table.key_schema()[0].key_type() == &KeyType::Hash;
        if !key_ok {
            problems.push("partition key must be `sid` (B) with no sort key".to_owned());
        }
        let sid_binary = table.attribute_definitions().iter().any(|d| {
            d.attribute_name() == item::SID && d.attribute_type() == &ScalarAttributeType::B
        });
        if !sid_binary {
            problems.push("`sid` must be of type B".to_owned());
        }
        let gsi_ok = table.global_secondary_indexes().iter().any(|g| {
            g.index_name() == Some(UID_INDEX)
                && g.key_schema().first().map(|k| k.attribute_name()) == Some(item::UID)
        });
        if !gsi_ok {
            problems.push(format!("GSI `{UID_INDEX}` on `uid` is missing"));
        }
        let stream_ok = table
            .stream_specification()
            .is_some_and(|s| s.stream_enabled());
        if !stream_ok {
            problems.push(
                "the table's stream is not enabled (NEW_AND_OLD_IMAGES or KEYS_ONLY)".to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DynamoError::new(
                op,
                ErrorKind::Rejected,
                format!(
                    "table `{}` exists with the wrong shape: {}",
                    self.table,
                    problems.join("; ")
                ),
            ))
        }
    }
}

fn attr_def(name: &str, ty: ScalarAttributeType) -> Result<AttributeDefinition, DynamoError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ty)
        .build()
        .map_err(|e| DynamoError::new("provision", ErrorKind::Rejected, e.to_string()))
}

fn hash_key(name: &str) -> Result<KeySchemaElement, DynamoError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| DynamoError::new("provision", ErrorKind::Rejected, e.to_string()))
}

/// `DescribeTable` of `table`, its description required.
pub(crate) async fn describe(
    client: &Client,
    table: &str,
    op: &'static str,
) -> Result<aws_sdk_dynamodb::types::TableDescription, DynamoError> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|err| classify(op, &err))?;
    out.table
        .ok_or_else(|| DynamoError::new(op, ErrorKind::Malformed, "no table description"))
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

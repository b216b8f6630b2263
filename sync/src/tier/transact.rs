//! The writes that are one `TransactWriteItems`: `rotate` (delete the old
//! item conditional on its `ver`, put the new one conditional on
//! `attribute_not_exists`, with the user's epoch guard and the journal entry)
//! and `create_guarded`; and how a cancelled transaction's reasons map to a
//! [`RotateConflict`] or an error.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnConsumedCapacity, TransactWriteItem,
};

use super::epochs::{guard_outcome, EpochGuard};
use super::{classify, DynamoTier, Timed};
use crate::error::{DynamoError, ErrorKind, RotateConflict};
use crate::item::{self, Item, SID_LEN};
use crate::journal::Change;

impl DynamoTier {
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

    /// Run one `TransactWriteItems`; a cancellation maps to the role of the
    /// first item whose condition failed. With `guard`, the item of role
    /// [`RotateConflict::EpochChanged`] is the guard's: its old image says
    /// whether the epoch moved or the user is at the limit.
    pub(super) async fn transact(
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
    use crate::tier::epochs::LIVE;

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

//! Users' revocation epochs and session counts, in each user's epoch item:
//! the guard a login's write carries ([`EpochGuard`]), and the reads and
//! raises of the epoch (`user_epoch`, `raise_user_epoch_to`,
//! `bump_user_epoch`) and of the count (`session_count`,
//! `reset_session_count`).

use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::{malformed, DynamoTier};
use crate::error::{DynamoError, ErrorKind, RotateConflict};
use crate::item::{self, SID_LEN};
use crate::journal::Change;

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

/// Why a guard's condition failed, from the epoch item's old image: the
/// epoch moved, or it did not and the user is at the limit.
pub(super) fn guard_outcome(
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

impl DynamoTier {
    /// The epoch item's part of a guarded write: the epoch condition (and
    /// the limit's), and the count raised by `guard.adds`. On a failed
    /// condition the item's old image comes back, to tell which failed.
    pub(super) fn epoch_guard(
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
}

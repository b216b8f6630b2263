//! Listing a user's items through the GSI `uid-index` (eventually
//! consistent, as DynamoDB serves every GSI query).
//!
//! The index's key is `uid` alone, so within one user the items come in the
//! index's own order (DynamoDB orders a GSI partition by the base table's
//! key, `sid`): the same order on every query, which is what makes a page's
//! position a `sid`. A query's `ExclusiveStartKey` on the index is the index
//! key plus the table key, `{uid, sid}`, so a page's position is rebuilt
//! from the user id and the last `sid` of the page before. The position does
//! not have to be an item that still exists (or ever did): the query resumes
//! after where that `sid` would sort.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{malformed, DynamoTier, Timed, UID_INDEX};
use crate::error::{classify, DynamoError};
use crate::item::{self, Item, SID_LEN};

/// One page of a user's items, in the index's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// At most the `limit` asked for.
    pub items: Vec<Item>,
    /// The `sid` to start the next page after, if more items may follow.
    /// `None`: this was the last page.
    pub next: Option<[u8; SID_LEN]>,
}

impl DynamoTier {
    /// Every item bound to `uid`, through the GSI (eventually consistent):
    /// one query per 1 MB the user's items take.
    pub async fn list_by_user(&self, uid: &str) -> Result<Vec<Item>, DynamoError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let (page, last) = self.query_user(uid, start.take(), None).await?;
            items.extend(page);
            match last {
                Some(key) => start = Some(key),
                None => return Ok(items),
            }
        }
    }

    /// Up to `limit` items bound to `uid` that come after `after` in the
    /// index's order (from the first with `None`): ONE query, of `limit + 1`
    /// items, the extra one only telling whether another page follows, so the
    /// last page says so (no `next`) instead of leading to an empty one. A
    /// page can be shorter than `limit` with a `next` when DynamoDB stops at
    /// its 1 MB page size.
    pub async fn list_by_user_page(
        &self,
        uid: &str,
        after: Option<&[u8; SID_LEN]>,
        limit: u32,
    ) -> Result<UserPage, DynamoError> {
        let start = after.map(|sid| {
            HashMap::from([
                (item::UID.to_owned(), AttributeValue::S(uid.to_owned())),
                (
                    item::SID.to_owned(),
                    AttributeValue::B(Blob::new(sid.to_vec())),
                ),
            ])
        });
        let limit = limit.max(1);
        let (mut items, last) = self
            .query_user(uid, start, Some(limit.saturating_add(1)))
            .await?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|i| i.sid)
        } else {
            match last {
                Some(key) => Some(start_sid(&key)?),
                None => None,
            }
        };
        Ok(UserPage { items, next })
    }

    /// One query of `uid`'s items from `start`: the items and the
    /// `LastEvaluatedKey` when DynamoDB stopped before the end.
    async fn query_user(
        &self,
        uid: &str,
        start: Option<HashMap<String, AttributeValue>>,
        limit: Option<u32>,
    ) -> Result<(Vec<Item>, Option<HashMap<String, AttributeValue>>), DynamoError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(UID_INDEX)
            .key_condition_expression("uid = :u")
            .expression_attribute_values(":u", AttributeValue::S(uid.to_owned()))
            .set_exclusive_start_key(start)
            .set_limit(limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
            .send()
            .timed("list_by_user", &self.breaker)
            .await?
            .map_err(|err| classify("list_by_user", &err))?;
        let items = out
            .items()
            .iter()
            .map(|map| Item::from_attributes(map).map_err(|e| malformed("list_by_user", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let last = out.last_evaluated_key.filter(|key| !key.is_empty());
        Ok((items, last))
    }
}

/// The `sid` of a `LastEvaluatedKey` of the index.
fn start_sid(key: &HashMap<String, AttributeValue>) -> Result<[u8; SID_LEN], DynamoError> {
    match key.get(item::SID) {
        Some(AttributeValue::B(blob)) => blob
            .as_ref()
            .try_into()
            .map_err(|_| malformed("list_by_user", "LastEvaluatedKey: `sid` is not 32 bytes")),
        _ => Err(malformed(
            "list_by_user",
            "LastEvaluatedKey without a binary `sid`",
        )),
    }
}

//! The journal's partition count, recorded in the table: every node of a
//! table must write and read the same number of journal partitions, or
//! entries a writer puts in a partition its readers do not query are never
//! seen. The first node records its count in one settings item; every node
//! checks its own against it at start ([`DynamoTier::claim_journal_partitions`]).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoTier;
use crate::error::{classify, conditional, DynamoError, ErrorKind, CONDITION_FAILED};
use crate::item::{self, SID_LEN};

/// The settings item's key: not the hash of any token (those are blake3
/// outputs), so no session can ever have it.
pub(crate) const SETTINGS_SID: [u8; SID_LEN] = *b"edge-session journal settings\0\0\0";

/// The attribute holding the partition count.
pub(crate) const PARTITIONS: &str = "jp";

impl DynamoTier {
    /// Record this tier's journal partition count in the table if none is
    /// recorded yet, else check that it is the recorded one. A different
    /// count is an error of kind [`ErrorKind::Rejected`] naming both. Once
    /// recorded, a check is one consistent read.
    pub async fn claim_journal_partitions(&self) -> Result<(), DynamoError> {
        let op = "journal_partitions";
        let ours = u64::from(self.journal.partitions);
        let recorded = match self.recorded_partitions().await? {
            Some(recorded) => recorded,
            None if self.record_partitions(ours).await? => return Ok(()),
            // Another node recorded its count between the read and the write.
            None => self.recorded_partitions().await?.flatten(),
        };
        if recorded == Some(ours) {
            return Ok(());
        }
        Err(DynamoError::new(
            op,
            ErrorKind::Rejected,
            format!(
                "this node's stream.journal_partitions is {ours}, but the table `{}` records {}: \
                 every node of a table must use the same number",
                self.table,
                recorded.map_or("an unreadable value".to_owned(), |n| n.to_string())
            ),
        ))
    }

    /// Write `count` as the table's record unless one exists; whether it was
    /// written.
    async fn record_partitions(&self, count: u64) -> Result<bool, DynamoError> {
        let mut settings = item::key(&SETTINGS_SID);
        settings.insert(PARTITIONS.to_owned(), AttributeValue::N(count.to_string()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(settings))
            .condition_expression("attribute_not_exists(sid)")
            .send()
            .await;
        Ok(conditional("journal_partitions", put, &[CONDITION_FAILED])?.is_some())
    }

    /// The table's record: `None` when there is none, `Some(None)` when its
    /// count is unreadable.
    async fn recorded_partitions(&self) -> Result<Option<Option<u64>>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item::key(&SETTINGS_SID)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| classify("journal_partitions", &err))?;
        Ok(out
            .item
            .map(|map: HashMap<String, AttributeValue>| item::number(&map, PARTITIONS).ok()))
    }
}

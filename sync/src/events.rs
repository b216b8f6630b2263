//! The session-event log and its bookkeeping, in the session table: what
//! lets every node of a region serve the same event feed, and an emitter's
//! successor resume where it stopped.
//!
//! | item | key | attributes |
//! |---|---|---|
//! | log entry `n` | `es-events` `l` region `n` | `ev`: the event's JSON; `eid`: its id; `exp`: TTL |
//! | the log's head | `es-events` `h` region | `n`: the next free entry, as last flushed |
//! | a webhook's cursor | `es-events` `w` region hash(webhook) | `n`: the last entry delivered |
//!
//! Entries are numbered densely from 1 by the region's one emitter (a slot
//! held like a relay's), each put conditional on its number being free, so
//! no entry is ever overwritten. Every item here carries `evk` and no
//! `body`: no session read returns one, and the stream mappings skip them.
//!
//! Also here: [`DynamoTier::stamp_end`], which writes why a session ends on
//! its item just before the delete, so that the delete's stream record
//! says why.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnConsumedCapacity, TransactWriteItem,
};

use crate::error::{classify, conditional, DynamoError, CONDITION_FAILED};
use crate::item::{self, EXP, SID, SID_LEN};
use crate::tier::Timed as _;
use crate::DynamoTier;

/// Marks an item of the event machinery (its kind: `l`, `h` or `w`).
pub(crate) const EVENT_ITEM: &str = "evk";
const EVENT: &str = "ev";
const EVENT_ID: &str = "eid";
const NUMBER: &str = "n";

/// Whether an image is one of the event machinery's items.
pub(crate) fn is_event_item<V>(image: &HashMap<String, V>) -> bool {
    image.contains_key(EVENT_ITEM)
}

/// FNV-1a of `text`: a region's or a webhook's name in a key.
fn fnv(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// One region's event log: where its items are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLog {
    region: u64,
}

impl EventLog {
    /// The log of the region named `region`.
    pub fn new(region: &str) -> EventLog {
        EventLog {
            region: fnv(region),
        }
    }

    fn key(self, kind: u8, n: u64) -> [u8; SID_LEN] {
        let mut key = [0u8; SID_LEN];
        let tag = b"es-events";
        key[..tag.len()].copy_from_slice(tag);
        key[tag.len()] = kind;
        key[10..18].copy_from_slice(&self.region.to_be_bytes());
        key[18..26].copy_from_slice(&n.to_be_bytes());
        key
    }
}

/// What [`DynamoTier::append_event`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The entry was written.
    Written,
    /// The number was taken, by the event with this id.
    Taken(String),
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The item of log entry `number`: the event `id` with its JSON, kept until
/// `exp`.
fn entry(
    log: EventLog,
    number: u64,
    id: &str,
    json: &str,
    exp: u64,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            SID.to_owned(),
            AttributeValue::B(Blob::new(log.key(b'l', number).to_vec())),
        ),
        (EVENT_ITEM.to_owned(), AttributeValue::S("l".into())),
        (EVENT_ID.to_owned(), AttributeValue::S(id.to_owned())),
        (EVENT.to_owned(), AttributeValue::S(json.to_owned())),
        (EXP.to_owned(), n(exp)),
    ])
}

impl DynamoTier {
    /// Write on the session under `sid` why it ends (`why`), just before
    /// its delete: the delete's stream record carries it in the old image.
    /// The first reason written stays (a replayed delete does not overwrite
    /// the one its revocation gave). `false` when there is no such item, or
    /// it has a reason already. `ver` is not moved, so no cached copy is
    /// invalidated by it.
    pub async fn stamp_end(&self, sid: &[u8; SID_LEN], why: &str) -> Result<bool, DynamoError> {
        let op = "stamp_end";
        let out = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(item::key(sid)))
            .update_expression("SET #why = :why")
            .condition_expression("attribute_exists(body) AND attribute_not_exists(#why)")
            .expression_attribute_names("#why", crate::change::WHY)
            .expression_attribute_values(":why", AttributeValue::S(why.to_owned()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed(op, self.breaker())
            .await?;
        let written = conditional(op, out, &[CONDITION_FAILED])?;
        if let Some(out) = &written {
            self.charge(op, out.consumed_capacity());
        }
        Ok(written.is_some())
    }

    /// Put entry `number` of `log`: the event `id` with its JSON, kept until
    /// `exp` (epoch seconds), unless the number is taken.
    pub async fn append_event(
        &self,
        log: EventLog,
        number: u64,
        id: &str,
        json: &str,
        exp: u64,
    ) -> Result<Appended, DynamoError> {
        let op = "event_append";
        let out = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(entry(log, number, id, json, exp)))
            .condition_expression("attribute_not_exists(sid)")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed(op, self.breaker())
            .await?;
        if let Some(out) = conditional(op, out, &[CONDITION_FAILED])? {
            self.charge(op, out.consumed_capacity());
            return Ok(Appended::Written);
        }
        let taken = self.read_events(log, number, 1).await?;
        Ok(Appended::Taken(
            taken.into_iter().next().map(|e| e.id).unwrap_or_default(),
        ))
    }

    /// Put `entries` (id, JSON) as entries `first`, `first + 1`, ... of
    /// `log` in one transaction (at most 100), each conditional on its number
    /// being free: all are written, or none. `false` when a number was taken
    /// (the caller appends one by one, to learn which).
    pub async fn append_events(
        &self,
        log: EventLog,
        first: u64,
        entries: &[(String, String)],
        exp: u64,
    ) -> Result<bool, DynamoError> {
        let op = "event_append";
        let mut items = Vec::with_capacity(entries.len());
        for (i, (id, json)) in entries.iter().enumerate() {
            let put = Put::builder()
                .table_name(self.table())
                .set_item(Some(entry(log, first + i as u64, id, json, exp)))
                .condition_expression("attribute_not_exists(sid)")
                .build()
                .map_err(|e| DynamoError::new(op, crate::ErrorKind::Rejected, e.to_string()))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let out = self
            .client()
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed(op, self.breaker())
            .await?;
        match out {
            Ok(out) => {
                self.charge(op, out.consumed_capacity());
                Ok(true)
            }
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel))
                    if cancel
                        .cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
                {
                    Ok(false)
                }
                _ => Err(classify(op, &err)),
            },
        }
    }

    /// Entries `from`, `from + 1`, ... of `log`, at most `count` (≤ 100)
    /// numbers looked up with one consistent batch read; the ones present,
    /// in order. A gap means an entry not written yet, or expired.
    pub async fn read_events(
        &self,
        log: EventLog,
        from: u64,
        count: u64,
    ) -> Result<Vec<LoggedEvent>, DynamoError> {
        let op = "event_read";
        let count = count.clamp(1, 100);
        let mut keys: Vec<HashMap<String, AttributeValue>> = (from..from.saturating_add(count))
            .map(|i| item::key(&log.key(b'l', i)))
            .collect();
        let mut found = Vec::new();
        // Unprocessed keys (throttling) are asked for again, a few times,
        // backing off; still unread, the read fails: a caller must never
        // take an entry it could not read for one that is not there.
        for attempt in 0..5u32 {
            if keys.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(true)
                .build()
                .map_err(|e| DynamoError::new(op, crate::ErrorKind::Rejected, e.to_string()))?;
            let out = self
                .client()
                .batch_get_item()
                .request_items(self.table(), request)
                .send()
                .timed(op, self.breaker())
                .await?
                .map_err(|err| classify(op, &err))?;
            for map in out
                .responses
                .and_then(|mut r| r.remove(self.table()))
                .unwrap_or_default()
            {
                let sid = match map.get(SID) {
                    Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
                    _ => continue,
                };
                let (Some(AttributeValue::S(id)), Some(AttributeValue::S(json))) =
                    (map.get(EVENT_ID), map.get(EVENT))
                else {
                    continue;
                };
                let mut number = [0u8; 8];
                number.copy_from_slice(&sid[18..26]);
                found.push(LoggedEvent {
                    number: u64::from_be_bytes(number),
                    id: id.clone(),
                    json: json.clone(),
                });
            }
            keys = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(self.table()))
                .map(|k| k.keys)
                .unwrap_or_default();
        }
        if !keys.is_empty() {
            return Err(DynamoError::new(
                op,
                crate::ErrorKind::Throttled,
                format!("{} log entries left unread", keys.len()),
            ));
        }
        found.sort_by_key(|e| e.number);
        Ok(found)
    }

    /// A number kept under `kind` and `id` in `log` (the head, a cursor);
    /// `None` when never written.
    async fn read_number(
        &self,
        log: EventLog,
        kind: u8,
        id: u64,
    ) -> Result<Option<u64>, DynamoError> {
        let op = "event_number";
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(item::key(&log.key(kind, id))))
            .consistent_read(true)
            .send()
            .timed(op, self.breaker())
            .await?
            .map_err(|err| classify(op, &err))?;
        Ok(out.item.and_then(|map| item::number(&map, NUMBER).ok()))
    }

    /// Write a number kept under `kind` and `id`; with `forward`, only if it
    /// is above the one kept (`false` when it is not).
    async fn write_number(
        &self,
        log: EventLog,
        kind: u8,
        id: u64,
        value: u64,
        forward: bool,
    ) -> Result<bool, DynamoError> {
        let op = "event_number";
        let out = self
            .client()
            .put_item()
            .table_name(self.table())
            .item(
                SID,
                AttributeValue::B(Blob::new(log.key(kind, id).to_vec())),
            )
            .item(EVENT_ITEM, AttributeValue::S(char::from(kind).to_string()))
            .item(NUMBER, n(value))
            .set_condition_expression(
                forward.then(|| "attribute_not_exists(n) OR n < :n".to_owned()),
            )
            .set_expression_attribute_values(
                forward.then(|| HashMap::from([(":n".to_owned(), n(value))])),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .timed(op, self.breaker())
            .await?;
        match conditional(op, out, &[CONDITION_FAILED])? {
            Some(out) => {
                self.charge(op, out.consumed_capacity());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The log's head as last flushed: every entry below it was written.
    pub async fn event_head(&self, log: EventLog) -> Result<u64, DynamoError> {
        Ok(self.read_number(log, b'h', 0).await?.unwrap_or(0))
    }

    /// Flush the log's head: only forward (a holder that lost its slot
    /// cannot move it back). `false` when the kept head is not below.
    pub async fn set_event_head(&self, log: EventLog, head: u64) -> Result<bool, DynamoError> {
        self.write_number(log, b'h', 0, head, true).await
    }

    /// The last entry delivered to the webhook named `name` (0: none yet);
    /// `None` for a webhook never started.
    pub async fn webhook_cursor(
        &self,
        log: EventLog,
        name: &str,
    ) -> Result<Option<u64>, DynamoError> {
        self.read_number(log, b'w', fnv(name)).await
    }

    /// Store the last entry delivered to the webhook named `name`.
    pub async fn set_webhook_cursor(
        &self,
        log: EventLog,
        name: &str,
        delivered: u64,
    ) -> Result<(), DynamoError> {
        self.write_number(log, b'w', fnv(name), delivered, false)
            .await
            .map(|_| ())
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Its number in the log (the feed's cursor).
    pub number: u64,
    /// The event's id.
    pub id: String,
    /// The event's JSON.
    pub json: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_kind_region_and_number() {
        let eu = EventLog::new("eu");
        assert_ne!(eu.key(b'l', 1), eu.key(b'l', 2));
        assert_ne!(eu.key(b'l', 1), EventLog::new("us").key(b'l', 1));
        assert_ne!(eu.key(b'l', 0), eu.key(b'h', 0));
        assert_eq!(&eu.key(b'l', 1)[..9], b"es-events");
    }
}

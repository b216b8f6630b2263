//! Record mapping: what a stream record means to the cache ([`Invalidation`],
//! or nothing), and [`Pending`], a batch of records read but not yet accepted
//! by the consumer.
//!
//! A REMOVE is [`InvalidationKind::Removed`]; a MODIFY whose new `ver` is
//! above the old one is [`InvalidationKind::VersionRaised`] (without both
//! images, raised with the version unknown); an INSERT is nothing. The key is
//! read from `Keys`, then the new image, then the old one; a record with no
//! readable 32-byte `sid` is skipped.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, StreamRecord};

use crate::change::Change;
use crate::invalidation::{Invalidation, InvalidationKind};
use crate::item::{HEARTBEAT, SID, SID_LEN, TOUCHED, VER};

/// A batch read but not yet accepted by the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) invalidations: Vec<Invalidation>,
    /// The batch's changes, when the follower hands them over.
    pub(super) changes: Vec<Change>,
    /// The batch's last sequence number: the checkpoint once accepted.
    pub(super) last_sequence: Option<String>,
    /// Records in the batch, invalidations or not.
    pub(super) records: usize,
    /// The newest creation time in the batch.
    pub(super) newest: Option<SystemTime>,
    /// The shard ended with this batch.
    pub(super) closed: bool,
    /// Heartbeats in the batch: the writer's key and clock (ms).
    pub(super) heartbeats: Vec<([u8; SID_LEN], u64)>,
}

impl Pending {
    pub(super) fn from_records(records: &[Record], closed: bool, with_changes: bool) -> Self {
        let mut pending = Pending {
            invalidations: Vec::new(),
            changes: Vec::new(),
            last_sequence: None,
            records: records.len(),
            newest: None,
            closed,
            heartbeats: Vec::new(),
        };
        for record in records {
            let stream = record.dynamodb();
            if let Some(sequence) = stream.and_then(StreamRecord::sequence_number) {
                pending.last_sequence = Some(sequence.to_owned());
            }
            if let Some(created) = stream.and_then(creation_time) {
                pending.newest = Some(pending.newest.map_or(created, |n| n.max(created)));
            }
            if with_changes {
                pending.changes.extend(crate::change::change_of(record));
            }
            match map_record(record) {
                Mapped::Invalidation(invalidation) => pending.invalidations.push(invalidation),
                Mapped::Heartbeat { sid, written_ms } => pending.heartbeats.push((sid, written_ms)),
                Mapped::Ignored => {}
                Mapped::Skipped(why) => tracing::warn!(
                    sequence = stream
                        .and_then(StreamRecord::sequence_number)
                        .unwrap_or("?"),
                    why,
                    "stream follower: record skipped"
                ),
            }
        }
        pending
    }
}

/// A stream record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mapped {
    Invalidation(Invalidation),
    /// A follower's heartbeat came back: its key and its writer's clock.
    Heartbeat {
        sid: [u8; SID_LEN],
        written_ms: u64,
    },
    /// Not an invalidation (an INSERT, or a MODIFY that did not raise `ver`).
    Ignored,
    /// Unreadable: why.
    Skipped(&'static str),
}

fn map_record(record: &Record) -> Mapped {
    let Some(stream) = record.dynamodb() else {
        return Mapped::Skipped("no `dynamodb` section");
    };
    if let Some(written_ms) = stream
        .new_image()
        .and_then(|image| number(image, HEARTBEAT))
    {
        return match sid_of(stream) {
            Some(sid) => Mapped::Heartbeat { sid, written_ms },
            None => Mapped::Skipped("a heartbeat with no readable `sid`"),
        };
    }
    if stream.new_image().is_none()
        && stream
            .old_image()
            .is_some_and(|image| image.contains_key(HEARTBEAT))
    {
        // A heartbeat item expired (TTL): nobody caches it.
        return Mapped::Ignored;
    }
    if [stream.new_image(), stream.old_image()]
        .into_iter()
        .flatten()
        .any(|image| crate::relay::is_relay_item(image) || crate::events::is_event_item(image))
    {
        // A relay slot's renewal or checkpoint, or the event log's: nobody
        // caches it.
        return Mapped::Ignored;
    }
    let kind = match record.event_name() {
        Some(OperationType::Insert) => return Mapped::Ignored,
        Some(OperationType::Remove) => InvalidationKind::Removed,
        Some(OperationType::Modify) => {
            let old = stream.old_image().and_then(version);
            let new = stream.new_image().and_then(version);
            if new.is_some() && stream.new_image().and_then(touched) == new {
                // A touch: only `last_seen_at` moved. Not broadcast.
                return Mapped::Ignored;
            }
            match (old, new) {
                (Some(old), Some(new)) if new <= old => return Mapped::Ignored,
                // A user's epoch item whose session count moved, with no
                // epoch yet (a login): both images, neither with a
                // version. (A KEYS_ONLY stream has no images: invalidate.)
                (None, None) if stream.new_image().is_some() && stream.old_image().is_some() => {
                    return Mapped::Ignored
                }
                (_, new) => InvalidationKind::VersionRaised { new_ver: new },
            }
        }
        _ => return Mapped::Skipped("unknown event name"),
    };
    let Some(sid) = sid_of(stream) else {
        return Mapped::Skipped("no readable `sid` in Keys or images");
    };
    let Some(sequence_number) = stream.sequence_number() else {
        return Mapped::Skipped("no sequence number");
    };
    Mapped::Invalidation(Invalidation {
        sid,
        kind,
        approximate_creation: creation_time(stream),
        sequence_number: sequence_number.to_owned(),
    })
}

/// The key from `Keys`, else from the new image, else from the old one.
fn sid_of(stream: &StreamRecord) -> Option<[u8; SID_LEN]> {
    [stream.keys(), stream.new_image(), stream.old_image()]
        .into_iter()
        .flatten()
        .find_map(|map| match map.get(SID) {
            Some(AttributeValue::B(blob)) => <[u8; SID_LEN]>::try_from(blob.as_ref()).ok(),
            _ => None,
        })
}

fn version(image: &HashMap<String, AttributeValue>) -> Option<u64> {
    number(image, VER)
}

/// The `ver` a touch wrote, when the image's last write was one.
fn touched(image: &HashMap<String, AttributeValue>) -> Option<u64> {
    number(image, TOUCHED)
}

fn number(image: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    match image.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn creation_time(stream: &StreamRecord) -> Option<SystemTime> {
    SystemTime::try_from(*stream.approximate_creation_date_time()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use std::time::{Duration, UNIX_EPOCH};

    fn sid_value(byte: u8) -> AttributeValue {
        AttributeValue::B(Blob::new(vec![byte; SID_LEN]))
    }

    fn image(sid: Option<u8>, ver: Option<&str>) -> HashMap<String, AttributeValue> {
        let mut map = HashMap::new();
        if let Some(sid) = sid {
            map.insert(SID.to_owned(), sid_value(sid));
        }
        if let Some(ver) = ver {
            map.insert(VER.to_owned(), AttributeValue::N(ver.into()));
        }
        map
    }

    fn record(
        event: OperationType,
        keys: Option<HashMap<String, AttributeValue>>,
        old: Option<HashMap<String, AttributeValue>>,
        new: Option<HashMap<String, AttributeValue>>,
    ) -> Record {
        let stream = StreamRecord::builder()
            .set_keys(keys)
            .set_old_image(old)
            .set_new_image(new)
            .sequence_number("100000000000000000042")
            .approximate_creation_date_time(DateTime::from_secs(1_700_000_000))
            .build();
        Record::builder().event_name(event).dynamodb(stream).build()
    }

    fn kind_of(record: &Record) -> Option<InvalidationKind> {
        match map_record(record) {
            Mapped::Invalidation(i) => Some(i.kind),
            _ => None,
        }
    }

    #[test]
    fn a_remove_is_an_invalidation_with_its_key_and_time() {
        let r = record(
            OperationType::Remove,
            Some(image(Some(1), None)),
            Some(image(Some(1), Some("3"))),
            None,
        );
        assert_eq!(
            map_record(&r),
            Mapped::Invalidation(Invalidation {
                sid: [1; SID_LEN],
                kind: InvalidationKind::Removed,
                approximate_creation: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                sequence_number: "100000000000000000042".into(),
            })
        );
    }

    #[test]
    fn an_insert_is_not_an_invalidation() {
        let r = record(
            OperationType::Insert,
            Some(image(Some(1), None)),
            None,
            Some(image(Some(1), Some("1"))),
        );
        assert_eq!(map_record(&r), Mapped::Ignored);
    }

    #[test]
    fn a_modify_invalidates_only_when_ver_rises() {
        let keys = Some(image(Some(2), None));
        let raised = record(
            OperationType::Modify,
            keys.clone(),
            Some(image(Some(2), Some("4"))),
            Some(image(Some(2), Some("5"))),
        );
        assert_eq!(
            kind_of(&raised),
            Some(InvalidationKind::VersionRaised { new_ver: Some(5) })
        );
        let same = record(
            OperationType::Modify,
            keys.clone(),
            Some(image(Some(2), Some("5"))),
            Some(image(Some(2), Some("5"))),
        );
        assert_eq!(map_record(&same), Mapped::Ignored);
        // NEW_IMAGE only: the node compares with what it caches.
        let new_only = record(
            OperationType::Modify,
            keys,
            None,
            Some(image(Some(2), Some("9"))),
        );
        assert_eq!(
            kind_of(&new_only),
            Some(InvalidationKind::VersionRaised { new_ver: Some(9) })
        );
    }

    #[test]
    fn a_touch_is_not_an_invalidation_but_the_write_after_it_is() {
        let keys = Some(image(Some(3), None));
        let mut touched = image(Some(3), Some("6"));
        touched.insert(TOUCHED.to_owned(), AttributeValue::N("6".into()));
        let touch = record(
            OperationType::Modify,
            keys.clone(),
            Some(image(Some(3), Some("5"))),
            Some(touched.clone()),
        );
        assert_eq!(map_record(&touch), Mapped::Ignored);
        // A marker left from an older version is not this write's.
        let mut stale_marker = image(Some(3), Some("7"));
        stale_marker.insert(TOUCHED.to_owned(), AttributeValue::N("6".into()));
        let rewrite = record(
            OperationType::Modify,
            keys,
            Some(touched),
            Some(stale_marker),
        );
        assert_eq!(
            kind_of(&rewrite),
            Some(InvalidationKind::VersionRaised { new_ver: Some(7) })
        );
    }

    #[test]
    fn a_count_only_modify_of_an_epoch_item_is_ignored() {
        // A login counted a session in its user's epoch item, which holds
        // no epoch yet: no version in either image.
        let mut new = image(Some(4), None);
        new.insert("live".to_owned(), AttributeValue::N("2".into()));
        let mut old = image(Some(4), None);
        old.insert("live".to_owned(), AttributeValue::N("1".into()));
        let r = record(
            OperationType::Modify,
            Some(image(Some(4), None)),
            Some(new),
            Some(old),
        );
        assert_eq!(map_record(&r), Mapped::Ignored);
    }

    #[test]
    fn a_keys_only_modify_invalidates_with_unknown_version() {
        let r = record(
            OperationType::Modify,
            Some(image(Some(3), None)),
            None,
            None,
        );
        assert_eq!(
            kind_of(&r),
            Some(InvalidationKind::VersionRaised { new_ver: None })
        );
    }

    #[test]
    fn the_key_falls_back_to_the_images_when_keys_lack_it() {
        let from_old = record(
            OperationType::Remove,
            None,
            Some(image(Some(4), Some("1"))),
            None,
        );
        let Mapped::Invalidation(i) = map_record(&from_old) else {
            panic!("expected an invalidation");
        };
        assert_eq!(i.sid, [4; SID_LEN]);
        let from_new = record(
            OperationType::Modify,
            Some(HashMap::new()),
            Some(image(Some(5), Some("1"))),
            Some(image(Some(5), Some("2"))),
        );
        let Mapped::Invalidation(i) = map_record(&from_new) else {
            panic!("expected an invalidation");
        };
        assert_eq!(i.sid, [5; SID_LEN]);
    }

    #[test]
    fn a_record_without_a_readable_key_is_skipped() {
        let mut bad = HashMap::new();
        bad.insert(SID.to_owned(), AttributeValue::B(Blob::new(vec![1, 2, 3])));
        let short = record(OperationType::Remove, Some(bad), None, None);
        assert!(matches!(map_record(&short), Mapped::Skipped(_)));
        let mut wrong_type = HashMap::new();
        wrong_type.insert(SID.to_owned(), AttributeValue::S("x".into()));
        let typed = record(OperationType::Remove, Some(wrong_type), None, None);
        assert!(matches!(map_record(&typed), Mapped::Skipped(_)));
        let none = record(OperationType::Remove, None, None, None);
        assert!(matches!(map_record(&none), Mapped::Skipped(_)));
        let no_section = Record::builder().event_name(OperationType::Remove).build();
        assert!(matches!(map_record(&no_section), Mapped::Skipped(_)));
    }

    #[test]
    fn a_batch_checkpoints_its_last_record_even_without_invalidations() {
        let insert = record(
            OperationType::Insert,
            Some(image(Some(1), None)),
            None,
            Some(image(Some(1), Some("1"))),
        );
        let pending = Pending::from_records(&[insert.clone(), insert], false, false);
        assert!(pending.invalidations.is_empty());
        assert_eq!(pending.records, 2);
        assert_eq!(
            pending.last_sequence.as_deref(),
            Some("100000000000000000042")
        );
    }
}

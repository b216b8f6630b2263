//! The change journal's entries: what a fleet of older builds reads, kept
//! written while such a fleet moves to the stream or to relays.
//!
//! Nodes once learned what other nodes revoked from a journal in the table
//! instead of its stream; this build no longer reads it (it read by a clock
//! window and missed what became visible late: docs/design.md,
//! "Coherence"). With [`JournalSettings::write`] on, every write that
//! invalidates what other nodes may cache still writes, **in the same
//! transaction**, a small journal item, so that nodes of an older build
//! still reading the journal miss nothing during a rolling upgrade:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `sid` | B (32 bytes) | random: the item's own key, never a session's |
//! | `jb` | S | `"<bucket>.<p>"`: the minute of `jt` and a partition `p` of the target key |
//! | `jt` | N | the writer's clock at the write, milliseconds since the epoch |
//! | `jk` | B (32 bytes) | the session (or epoch) key the change is about |
//! | `jv` | N | the key's new `ver` (a version raise); absent: the key was removed |
//! | `exp` | N | TTL: `jt` plus [`JournalSettings::retention`] |
//!
//! The sparse GSI `journal-index` (`jb`, `jt`) holds only journal items;
//! `provision` says when it is empty, so that it can be dropped.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use crate::error::{DynamoError, ErrorKind};
use crate::invalidation::{Invalidation, InvalidationKind};
use crate::item::{self, SID_LEN};

/// The journal's GSI.
pub const JOURNAL_INDEX: &str = "journal-index";
pub(crate) const BUCKET: &str = "jb";
pub(crate) const STAMP: &str = "jt";
pub(crate) const TARGET: &str = "jk";
pub(crate) const NEW_VER: &str = "jv";

/// Width of a time bucket: one `jb` value per partition per minute.
pub(crate) const BUCKET_MS: u64 = 60_000;

/// Most partitions a journal may be spread over.
pub const MAX_PARTITIONS: u8 = 16;

/// How the journal is written. Writers and the older builds that read it
/// must agree on `partitions`.
#[derive(Debug, Clone, Copy)]
pub struct JournalSettings {
    /// Whether invalidating writes add their entry. Off, a delete, a data
    /// update and an epoch raise are single conditional writes (one write
    /// unit each under 1 KB) and a login's transaction has no fourth item;
    /// on, each pays a transaction with its entry (about five).
    pub write: bool,
    /// Partition keys per minute (1..=16). Each takes about 1,000 journal
    /// writes a second (DynamoDB's per-partition write limit).
    pub partitions: u8,
    /// How long an entry is kept (its TTL).
    pub retention: Duration,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            write: false,
            partitions: 1,
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a journal entry says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key was deleted.
    Removed,
    /// The key was rewritten at this `ver`.
    Raised(u64),
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `jb` value of `bucket` (a minute since the epoch) and `partition`.
pub(crate) fn bucket_key(bucket: u64, partition: u8) -> String {
    format!("{bucket}.{partition}")
}

/// The partition `target`'s entries go to.
fn partition_of(target: &[u8; SID_LEN], partitions: u8) -> u8 {
    target[0] % partitions.clamp(1, MAX_PARTITIONS)
}

/// The attributes of a journal entry about `target`, stamped `now`: what a
/// transaction that changes `target` puts beside the change. (Public for
/// benchmarks that build the same transaction by hand.)
pub fn entry(
    target: &[u8; SID_LEN],
    change: Change,
    now: SystemTime,
    settings: &JournalSettings,
) -> HashMap<String, AttributeValue> {
    let stamp = unix_ms(now);
    let mut own = [0u8; SID_LEN];
    // A random key: two entries never overwrite each other, and no client
    // can name one (session keys are hashes of 256-bit tokens).
    getrandom::fill(&mut own).expect("the OS random source failed");
    let bucket = bucket_key(stamp / BUCKET_MS, partition_of(target, settings.partitions));
    let exp = (stamp / 1000).saturating_add(settings.retention.as_secs());
    let mut map = HashMap::with_capacity(6);
    map.insert(item::SID.to_owned(), AttributeValue::B(Blob::new(own)));
    map.insert(BUCKET.to_owned(), AttributeValue::S(bucket));
    map.insert(STAMP.to_owned(), AttributeValue::N(stamp.to_string()));
    map.insert(
        TARGET.to_owned(),
        AttributeValue::B(Blob::new(target.to_vec())),
    );
    if let Change::Raised(ver) = change {
        map.insert(NEW_VER.to_owned(), AttributeValue::N(ver.to_string()));
    }
    map.insert(item::EXP.to_owned(), AttributeValue::N(exp.to_string()));
    map
}

/// The journal entry about `target` as one item of a transaction.
pub(crate) fn entry_put(
    table: &str,
    target: &[u8; SID_LEN],
    change: Change,
    settings: &JournalSettings,
    op: &'static str,
) -> Result<TransactWriteItem, DynamoError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(entry(target, change, SystemTime::now(), settings)))
        .build()
        .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// A journal entry read back: its own key and the invalidation it carries.
/// `None` for an item that is no entry.
pub fn parse(map: &HashMap<String, AttributeValue>) -> Option<([u8; SID_LEN], Invalidation)> {
    let blob = |name: &str| match map.get(name) {
        Some(AttributeValue::B(b)) => <[u8; SID_LEN]>::try_from(b.as_ref()).ok(),
        _ => None,
    };
    let own = blob(item::SID)?;
    let target = blob(TARGET)?;
    let stamp = item::number(map, STAMP).ok()?;
    let kind = match map.get(NEW_VER) {
        None => InvalidationKind::Removed,
        Some(_) => InvalidationKind::VersionRaised {
            new_ver: item::number(map, NEW_VER).ok(),
        },
    };
    Some((
        own,
        Invalidation {
            sid: target,
            kind,
            approximate_creation: Some(UNIX_EPOCH + Duration::from_millis(stamp)),
            sequence_number: stamp.to_string(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_the_invalidation_it_was_written_for() {
        let settings = JournalSettings {
            partitions: 4,
            ..JournalSettings::default()
        };
        let target = [7u8; SID_LEN];
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_123_456);
        let removed = entry(&target, Change::Removed, at, &settings);
        let (own, inv) = parse(&removed).unwrap();
        assert_ne!(own, target);
        assert_eq!(inv.sid, target);
        assert_eq!(inv.kind, InvalidationKind::Removed);
        assert_eq!(inv.approximate_creation, Some(at));
        let bucket = match &removed[BUCKET] {
            AttributeValue::S(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(bucket, format!("{}.3", 1_700_000_123_456 / BUCKET_MS));
        let raised = entry(&target, Change::Raised(9), at, &settings);
        assert_eq!(
            parse(&raised).unwrap().1.kind,
            InvalidationKind::VersionRaised { new_ver: Some(9) }
        );
        assert_ne!(
            parse(&raised).unwrap().0,
            own,
            "every entry has its own key"
        );
    }

    #[test]
    fn a_session_item_is_no_entry() {
        let item = crate::Item {
            sid: [1; SID_LEN],
            uid: None,
            ver: 1,
            exp: 1,
            body: vec![],
        };
        assert!(parse(&item.to_attributes()).is_none());
    }
}

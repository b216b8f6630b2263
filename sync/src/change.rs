//! [`Change`]: a stream record about a session or a user's epoch item, with
//! what its images say, for a consumer that turns the table's changes into
//! session events (the node's `events` module). A follower hands these over
//! only with [`FollowerSettings::changes`](crate::FollowerSettings::changes).
//!
//! A record is a change when one of its images is a session item (it has a
//! `body`) or a user's epoch item (it names its user in `eu`). Heartbeats,
//! relay slots, the event log and every other item of the table's own
//! machinery are not. What the images carry besides the item's own
//! attributes:
//!
//! | attribute | on | meaning |
//! |---|---|---|
//! | `why` | a session item, just before its delete | why it ends (`DynamoTier::stamp_end`) |
//! | `prv` | a session item written by a rotation | the key of the session it replaced |
//! | `eu` | a user's epoch item, from its first raise | the user |

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, StreamRecord};

use crate::item::{BODY, SID, SID_LEN, UID, VER};

/// Why a session ended, written on its item just before the delete.
pub(crate) const WHY: &str = "why";
/// The session a rotation replaced (its key).
pub(crate) const PREVIOUS: &str = "prv";
/// The user of an epoch item.
pub(crate) const EPOCH_USER: &str = "eu";

/// What happened to the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Written where there was none.
    Inserted,
    /// Rewritten.
    Modified,
    /// Deleted.
    Removed,
}

/// An item's image, as far as a session event needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    /// The bound user (`uid`).
    pub uid: Option<String>,
    /// `ver`: a session's version, an epoch item's epoch.
    pub ver: Option<u64>,
    /// The encoded record (a session item).
    pub body: Option<Vec<u8>>,
    /// Why the session ended (`why`).
    pub why: Option<String>,
    /// The key of the session a rotation replaced (`prv`).
    pub previous: Option<[u8; SID_LEN]>,
    /// The user of an epoch item (`eu`).
    pub epoch_user: Option<String>,
}

/// A stream record about a session or a user's epoch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The item's key.
    pub sid: [u8; SID_LEN],
    /// What happened.
    pub kind: ChangeKind,
    /// The record's sequence number in its shard (unique in the stream).
    pub sequence_number: String,
    /// When it was written, as the stream reports it (to the second).
    pub written_at: Option<SystemTime>,
    /// The delete was DynamoDB's TTL (`userIdentity` of the service
    /// `dynamodb.amazonaws.com`), not a client's.
    pub by_ttl: bool,
    /// The image before (absent for an insert, or on a KEYS_ONLY stream).
    pub old: Option<Image>,
    /// The image after (absent for a remove, or on a KEYS_ONLY stream).
    pub new: Option<Image>,
}

fn image(map: &HashMap<String, AttributeValue>) -> Image {
    let text = |name| match map.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    Image {
        uid: text(UID),
        ver: match map.get(VER) {
            Some(AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        },
        body: match map.get(BODY) {
            Some(AttributeValue::B(b)) => Some(b.as_ref().to_vec()),
            _ => None,
        },
        why: text(WHY),
        previous: match map.get(PREVIOUS) {
            Some(AttributeValue::B(b)) => <[u8; SID_LEN]>::try_from(b.as_ref()).ok(),
            _ => None,
        },
        epoch_user: text(EPOCH_USER),
    }
}

/// `record` as a [`Change`], or `None` when it is about none of the items
/// a session event can come from.
pub(crate) fn change_of(record: &Record) -> Option<Change> {
    let stream: &StreamRecord = record.dynamodb()?;
    let old = stream.old_image().map(image);
    let new = stream.new_image().map(image);
    let relevant = [&old, &new]
        .into_iter()
        .flatten()
        .any(|i| i.body.is_some() || i.epoch_user.is_some());
    if !relevant {
        return None;
    }
    let kind = match record.event_name()? {
        OperationType::Insert => ChangeKind::Inserted,
        OperationType::Modify => ChangeKind::Modified,
        OperationType::Remove => ChangeKind::Removed,
        _ => return None,
    };
    let sid = [stream.keys(), stream.new_image(), stream.old_image()]
        .into_iter()
        .flatten()
        .find_map(|map| match map.get(SID) {
            Some(AttributeValue::B(blob)) => <[u8; SID_LEN]>::try_from(blob.as_ref()).ok(),
            _ => None,
        })?;
    // DynamoDB sets `userIdentity` on a record only for its own TTL deletes
    // (`{"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}`). The
    // embedded server writes the members in lower camel case, which the SDK
    // does not read: an identity with neither member is the service's too.
    let by_ttl = record.user_identity().is_some_and(|who| {
        who.principal_id()
            .is_none_or(|p| p == "dynamodb.amazonaws.com")
            && who.r#type().is_none_or(|t| t == "Service")
    });
    Some(Change {
        sid,
        kind,
        sequence_number: stream.sequence_number()?.to_owned(),
        written_at: stream
            .approximate_creation_date_time()
            .and_then(|t| SystemTime::try_from(*t).ok()),
        by_ttl,
        old,
        new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::Blob;
    use aws_sdk_dynamodbstreams::types::Identity;

    fn session(ver: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                SID.to_owned(),
                AttributeValue::B(Blob::new(vec![7; SID_LEN])),
            ),
            (VER.to_owned(), AttributeValue::N(ver.into())),
            (
                BODY.to_owned(),
                AttributeValue::B(Blob::new(b"ES".to_vec())),
            ),
            (WHY.to_owned(), AttributeValue::S("signed_out".into())),
        ])
    }

    fn record(
        event: OperationType,
        old: Option<HashMap<String, AttributeValue>>,
    ) -> aws_sdk_dynamodbstreams::types::builders::RecordBuilder {
        let stream = StreamRecord::builder()
            .set_old_image(old)
            .sequence_number("42")
            .build();
        Record::builder().event_name(event).dynamodb(stream)
    }

    #[test]
    fn a_ttl_delete_is_told_apart_from_a_clients() {
        let by_client = change_of(&record(OperationType::Remove, Some(session("3"))).build())
            .expect("a session's change");
        assert!(!by_client.by_ttl);
        assert_eq!(by_client.kind, ChangeKind::Removed);
        let old = by_client.old.expect("old image");
        assert_eq!(old.why.as_deref(), Some("signed_out"));
        assert_eq!(old.ver, Some(3));
        let ttl = Identity::builder()
            .principal_id("dynamodb.amazonaws.com")
            .r#type("Service")
            .build();
        let by_ttl = record(OperationType::Remove, Some(session("3")))
            .user_identity(ttl)
            .build();
        assert!(change_of(&by_ttl).expect("a change").by_ttl);
        // As the embedded server writes it: members the SDK does not read.
        let unread = record(OperationType::Remove, Some(session("3")))
            .user_identity(Identity::builder().build())
            .build();
        assert!(change_of(&unread).expect("a change").by_ttl);
        let someone = record(OperationType::Remove, Some(session("3")))
            .user_identity(
                Identity::builder()
                    .principal_id("arn:aws:iam::1:user/x")
                    .build(),
            )
            .build();
        assert!(!change_of(&someone).expect("a change").by_ttl);
    }

    #[test]
    fn items_that_are_neither_sessions_nor_epochs_are_no_change() {
        let heartbeat = HashMap::from([
            (
                SID.to_owned(),
                AttributeValue::B(Blob::new(vec![1; SID_LEN])),
            ),
            ("hb".to_owned(), AttributeValue::N("1".into())),
        ]);
        assert!(change_of(&record(OperationType::Remove, Some(heartbeat)).build()).is_none());
    }
}

//! The DynamoDB item: `sid` (B, partition key), `uid` (S, GSI), `ver` (N),
//! `exp` (N, TTL), `body` (B). Pure mapping, no I/O.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

/// Length of the partition key: a 32-byte hash of the session token.
pub const SID_LEN: usize = 32;

pub(crate) const SID: &str = "sid";
pub(crate) const UID: &str = "uid";
pub(crate) const VER: &str = "ver";
pub(crate) const EXP: &str = "exp";
pub(crate) const BODY: &str = "body";
/// Present on an item whose last write was a touch (only `last_seen_at` and
/// the idle expiry moved), holding the `ver` that touch wrote: a change
/// feed skips a rewrite whose new image has it equal to `ver`. Any other
/// write replaces the whole item and so drops it.
pub(crate) const TOUCHED: &str = "tch";
/// Present only on a follower's heartbeat item: the writer's clock (ms
/// since the epoch) when it wrote it. Such an item has no `body`.
pub(crate) const HEARTBEAT: &str = "hb";

/// One session as the table stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    /// Partition key: the hashed session token (never the token itself).
    pub sid: [u8; SID_LEN],
    /// The bound user, absent while the session is anonymous (sparse GSI).
    pub uid: Option<String>,
    /// Record version; every write is conditional on it.
    pub ver: u64,
    /// Epoch seconds after which TTL may delete the item.
    pub exp: u64,
    /// The encoded session record, opaque to this crate.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field(
                "sid",
                &format_args!(
                    "{:02x}{:02x}{:02x}{:02x}..",
                    self.sid[0], self.sid[1], self.sid[2], self.sid[3]
                ),
            )
            .field("uid", &self.uid)
            .field("ver", &self.ver)
            .field("exp", &self.exp)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// An item read from the table does not have the shape edge-session writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// A required attribute is absent.
    #[error("attribute `{0}` is missing")]
    Missing(&'static str),
    /// An attribute has the wrong type or an unparsable value.
    #[error("attribute `{0}` has the wrong type or value")]
    Invalid(&'static str),
}

/// The key attribute map for `sid`.
pub(crate) fn key(sid: &[u8; SID_LEN]) -> HashMap<String, AttributeValue> {
    HashMap::from([(SID.to_owned(), AttributeValue::B(Blob::new(sid.to_vec())))])
}

impl Item {
    /// The attribute map written by `PutItem`.
    pub fn to_attributes(&self) -> HashMap<String, AttributeValue> {
        let mut map = HashMap::with_capacity(5);
        map.insert(
            SID.to_owned(),
            AttributeValue::B(Blob::new(self.sid.to_vec())),
        );
        if let Some(uid) = &self.uid {
            map.insert(UID.to_owned(), AttributeValue::S(uid.clone()));
        }
        map.insert(VER.to_owned(), AttributeValue::N(self.ver.to_string()));
        map.insert(EXP.to_owned(), AttributeValue::N(self.exp.to_string()));
        map.insert(
            BODY.to_owned(),
            AttributeValue::B(Blob::new(self.body.clone())),
        );
        map
    }

    /// Parse an attribute map read from the table.
    pub fn from_attributes(map: &HashMap<String, AttributeValue>) -> Result<Self, ItemError> {
        let sid = match map.get(SID) {
            None => return Err(ItemError::Missing(SID)),
            Some(AttributeValue::B(b)) => {
                <[u8; SID_LEN]>::try_from(b.as_ref()).map_err(|_| ItemError::Invalid(SID))?
            }
            Some(_) => return Err(ItemError::Invalid(SID)),
        };
        let uid = match map.get(UID) {
            None => None,
            Some(AttributeValue::S(s)) => Some(s.clone()),
            Some(_) => return Err(ItemError::Invalid(UID)),
        };
        let body = match map.get(BODY) {
            None => return Err(ItemError::Missing(BODY)),
            Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
            Some(_) => return Err(ItemError::Invalid(BODY)),
        };
        Ok(Item {
            sid,
            uid,
            ver: number(map, VER)?,
            exp: number(map, EXP)?,
            body,
        })
    }
}

/// A `u64` number attribute.
pub(crate) fn number(
    map: &HashMap<String, AttributeValue>,
    name: &'static str,
) -> Result<u64, ItemError> {
    match map.get(name) {
        None => Err(ItemError::Missing(name)),
        Some(AttributeValue::N(n)) => n.parse().map_err(|_| ItemError::Invalid(name)),
        Some(_) => Err(ItemError::Invalid(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_item() -> impl Strategy<Value = Item> {
        (
            any::<[u8; SID_LEN]>(),
            proptest::option::of("[a-zA-Z0-9@._-]{1,40}"),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..512),
        )
            .prop_map(|(sid, uid, ver, exp, body)| Item {
                sid,
                uid,
                ver,
                exp,
                body,
            })
    }

    proptest! {
        #[test]
        fn item_round_trips_through_attributes(item in arb_item()) {
            let back = Item::from_attributes(&item.to_attributes()).unwrap();
            prop_assert_eq!(back, item);
        }
    }

    #[test]
    fn wrong_shapes_are_typed_errors() {
        let item = Item {
            sid: [7; SID_LEN],
            uid: None,
            ver: 1,
            exp: 2,
            body: vec![1],
        };
        let mut map = item.to_attributes();
        map.insert(VER.into(), AttributeValue::S("1".into()));
        assert_eq!(Item::from_attributes(&map), Err(ItemError::Invalid(VER)));
        map.insert(VER.into(), AttributeValue::N("-1".into()));
        assert_eq!(Item::from_attributes(&map), Err(ItemError::Invalid(VER)));
        map.insert(VER.into(), AttributeValue::N("1".into()));
        map.insert(SID.into(), AttributeValue::B(Blob::new(vec![1, 2, 3])));
        assert_eq!(Item::from_attributes(&map), Err(ItemError::Invalid(SID)));
        map.remove(BODY);
        map.insert(SID.into(), AttributeValue::B(Blob::new(vec![0; SID_LEN])));
        assert_eq!(Item::from_attributes(&map), Err(ItemError::Missing(BODY)));
    }
}

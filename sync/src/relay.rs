//! Relay slots and relay checkpoints: what lets a few nodes per region read
//! the table's stream for all the others (`stream.source = "relays"`).
//!
//! # Slots
//!
//! A region has a fixed number of relay **slots** (two by default: DynamoDB
//! Streams serves two readers per shard). Each is one item in the session
//! table, KCL-style:
//!
//! | attribute | content |
//! |---|---|
//! | `sid` | a fixed 32-byte key per slot (no session key can equal it: those are hashes) |
//! | `ver` | the slot's **epoch**, the fencing token: raised by one at every claim |
//! | `rb` | the holder's **beat**, raised at every renewal |
//! | `ro` | the holder's id (random per process) |
//! | `ru` | the URL of the holder's feed |
//! | `exp` | TTL, a day after the last write |
//!
//! A holder renews every beat interval with an update conditional on its
//! epoch and id ([`DynamoTier::renew_relay_slot`]); a failed condition means
//! it lost the slot and must stop relaying. A candidate reads the slot and
//! claims it ([`DynamoTier::claim_relay_slot`]) only after it saw the same
//! epoch and beat for a whole lease on its **own** monotonic clock, with a
//! put conditional on that epoch and beat: two candidates cannot both win,
//! and no clock is compared across nodes. A holder that stops cleanly
//! releases its slot (deletes it, conditionally), so a successor claims at
//! once.
//!
//! # Checkpoints
//!
//! A holder's stream positions live in the table too, one item per slot
//! ([`TableCheckpoints`]): the follower checkpoints into memory, and the
//! holder flushes the whole map every beat. A successor in the slot resumes
//! from the last flush; what it reads again is delivered at least once,
//! never skipped.
//!
//! None of these items has a `body`: no session read can return one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{classify, conditional, DynamoError, ErrorKind, CONDITION_FAILED};
use crate::item::{self, EXP, SID, SID_LEN, VER};
use crate::stream::checkpoints::{CheckpointError, Checkpoints, MemoryCheckpoints};
use crate::tier::Timed as _;
use crate::DynamoTier;

/// The most relay slots a region can have.
pub const MAX_RELAY_SLOTS: u8 = 4;

/// The holder's beat.
const BEAT: &str = "rb";
/// The holder's id.
const OWNER: &str = "ro";
/// The holder's feed URL.
const URL: &str = "ru";
/// A slot's checkpoints: shard id → sequence number.
const POSITIONS: &str = "rc";

/// How long TTL keeps a slot or checkpoint item after its last write.
const KEEP: Duration = Duration::from_secs(86_400);

/// Whether an item (a stream image) is a relay slot or checkpoint item.
pub(crate) fn is_relay_item<V>(image: &HashMap<String, V>) -> bool {
    image.contains_key(OWNER) || image.contains_key(POSITIONS)
}

/// One relay slot of one region: a global table's regions each elect their
/// own relays, so the slot items of one region never meet another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    /// FNV-1a of the region's name.
    region: u64,
    /// The slot's number in the region.
    pub slot: u8,
}

impl SlotId {
    /// Slot `slot` of the region named `region`.
    pub fn new(region: &str, slot: u8) -> SlotId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in region.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        SlotId { region: hash, slot }
    }
}

fn fixed_key(kind: u8, id: SlotId) -> [u8; SID_LEN] {
    let mut key = [0u8; SID_LEN];
    let tag = b"edge-session relay";
    key[..tag.len()].copy_from_slice(tag);
    key[tag.len()..tag.len() + 8].copy_from_slice(&id.region.to_be_bytes());
    key[SID_LEN - 2] = kind;
    key[SID_LEN - 1] = id.slot;
    key
}

fn slot_key(id: SlotId) -> [u8; SID_LEN] {
    fixed_key(b's', id)
}

fn checkpoint_key(id: SlotId) -> [u8; SID_LEN] {
    fixed_key(b'c', id)
}

fn expiry() -> AttributeValue {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    AttributeValue::N((now + KEEP).as_secs().to_string())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// One relay slot as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySlot {
    /// The slot's number.
    pub slot: u8,
    /// The fencing epoch: raised at every claim.
    pub epoch: u64,
    /// The holder's beat: raised at every renewal.
    pub beat: u64,
    /// The holder's id.
    pub owner: String,
    /// The holder's feed URL.
    pub url: String,
}

impl DynamoTier {
    /// Slot `slot` as the table holds it now (strongly consistent), `None`
    /// when nobody holds it.
    pub async fn read_relay_slot(&self, slot: SlotId) -> Result<Option<RelaySlot>, DynamoError> {
        let op = "relay_slot";
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(item::key(&slot_key(slot))))
            .consistent_read(true)
            .send()
            .timed(op, self.breaker())
            .await?
            .map_err(|err| classify(op, &err))?;
        let Some(map) = out.item else {
            return Ok(None);
        };
        let text = |name: &'static str| match map.get(name) {
            Some(AttributeValue::S(s)) => Ok(s.clone()),
            _ => Err(DynamoError::new(
                op,
                ErrorKind::Malformed,
                format!("`{name}` missing"),
            )),
        };
        let number = |name: &'static str| {
            item::number(&map, name)
                .map_err(|e| DynamoError::new(op, ErrorKind::Malformed, e.to_string()))
        };
        Ok(Some(RelaySlot {
            slot: slot.slot,
            epoch: number(VER)?,
            beat: number(BEAT)?,
            owner: text(OWNER)?,
            url: text(URL)?,
        }))
    }

    /// Claim slot `slot` for `owner`, serving at `url`. `seen`: the epoch
    /// and beat the caller watched stand still for a whole lease (`None`:
    /// the slot was free). Returns the new epoch, or `None` when someone
    /// else renewed or claimed it first.
    pub async fn claim_relay_slot(
        &self,
        slot: SlotId,
        seen: Option<(u64, u64)>,
        owner: &str,
        url: &str,
    ) -> Result<Option<u64>, DynamoError> {
        let op = "relay_claim";
        let epoch = seen.map_or(1, |(epoch, _)| epoch + 1);
        let mut put = self
            .client()
            .put_item()
            .table_name(self.table())
            .item(SID, AttributeValue::B(Blob::new(slot_key(slot).to_vec())))
            .item(VER, n(epoch))
            .item(BEAT, n(0))
            .item(OWNER, AttributeValue::S(owner.to_owned()))
            .item(URL, AttributeValue::S(url.to_owned()))
            .item(EXP, expiry());
        put = match seen {
            None => put.condition_expression("attribute_not_exists(sid)"),
            Some((seen_epoch, seen_beat)) => put
                .condition_expression("ver = :epoch AND rb = :beat")
                .expression_attribute_values(":epoch", n(seen_epoch))
                .expression_attribute_values(":beat", n(seen_beat)),
        };
        let written = put.send().timed(op, self.breaker()).await?;
        Ok(conditional(op, written, &[CONDITION_FAILED])?.map(|_| epoch))
    }

    /// Renew `owner`'s hold on slot `slot` at `epoch`; `false` when the
    /// slot was claimed by someone else (stop relaying).
    pub async fn renew_relay_slot(
        &self,
        slot: SlotId,
        epoch: u64,
        owner: &str,
    ) -> Result<bool, DynamoError> {
        let op = "relay_renew";
        let out = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(item::key(&slot_key(slot))))
            .update_expression("SET rb = rb + :one, exp = :exp")
            .condition_expression("ver = :epoch AND ro = :owner")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":exp", expiry())
            .expression_attribute_values(":epoch", n(epoch))
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .send()
            .timed(op, self.breaker())
            .await?;
        Ok(conditional(op, out, &[CONDITION_FAILED])?.is_some())
    }

    /// Give slot `slot` up (a clean stop): deleted if `owner` still holds it
    /// at `epoch`, so a successor claims it at once.
    pub async fn release_relay_slot(
        &self,
        slot: SlotId,
        epoch: u64,
        owner: &str,
    ) -> Result<(), DynamoError> {
        let op = "relay_release";
        let out = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(item::key(&slot_key(slot))))
            .condition_expression("ver = :epoch AND ro = :owner")
            .expression_attribute_values(":epoch", n(epoch))
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .send()
            .timed(op, self.breaker())
            .await?;
        // Someone else holds it now: nothing of this holder's to give up.
        conditional(op, out, &[CONDITION_FAILED])?;
        Ok(())
    }
}

/// A slot's stream positions: kept in memory for the follower, flushed to
/// the slot's checkpoint item by [`flush`](Self::flush).
#[derive(Debug)]
pub struct TableCheckpoints {
    tier: DynamoTier,
    slot: SlotId,
    memory: MemoryCheckpoints,
    dirty: AtomicBool,
}

impl TableCheckpoints {
    /// The positions the slot's last holder flushed (none for a new slot).
    pub async fn load(tier: DynamoTier, slot: SlotId) -> Result<Arc<Self>, DynamoError> {
        let op = "relay_checkpoints";
        let out = tier
            .client()
            .get_item()
            .table_name(tier.table())
            .set_key(Some(item::key(&checkpoint_key(slot))))
            .consistent_read(true)
            .send()
            .timed(op, tier.breaker())
            .await?
            .map_err(|err| classify(op, &err))?;
        let memory = MemoryCheckpoints::new();
        if let Some(AttributeValue::M(positions)) =
            out.item.as_ref().and_then(|map| map.get(POSITIONS))
        {
            for (shard, sequence) in positions {
                if let AttributeValue::S(sequence) = sequence {
                    let _ = memory.put(shard, sequence);
                }
            }
        }
        Ok(Arc::new(TableCheckpoints {
            tier,
            slot,
            memory,
            dirty: AtomicBool::new(false),
        }))
    }

    /// A copy of every position.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.memory.snapshot()
    }

    /// Write every position to the slot's item, if any moved since the last
    /// flush. A failed write is retried by the next flush.
    pub async fn flush(&self) -> Result<(), DynamoError> {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let positions: HashMap<String, AttributeValue> = self
            .memory
            .snapshot()
            .into_iter()
            .map(|(shard, sequence)| (shard, AttributeValue::S(sequence)))
            .collect();
        let out = self
            .tier
            .client()
            .put_item()
            .table_name(self.tier.table())
            .item(
                SID,
                AttributeValue::B(Blob::new(checkpoint_key(self.slot).to_vec())),
            )
            .item(POSITIONS, AttributeValue::M(positions))
            .item(EXP, expiry())
            .send()
            .timed("relay_checkpoints", self.tier.breaker())
            .await;
        let written = match out {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(classify("relay_checkpoints", &err)),
            Err(err) => Err(err),
        };
        if written.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
        }
        written
    }
}

impl Checkpoints for TableCheckpoints {
    fn get(&self, shard_id: &str) -> Result<Option<String>, CheckpointError> {
        self.memory.get(shard_id)
    }

    fn put(&self, shard_id: &str, sequence_number: &str) -> Result<(), CheckpointError> {
        self.dirty.store(true, Ordering::SeqCst);
        self.memory.put(shard_id, sequence_number)
    }

    fn shard_ids(&self) -> Result<Vec<String>, CheckpointError> {
        self.memory.shard_ids()
    }

    fn remove(&self, shard_id: &str) -> Result<(), CheckpointError> {
        self.dirty.store(true, Ordering::SeqCst);
        self.memory.remove(shard_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_and_checkpoint_keys_are_distinct_per_slot_and_region_and_fixed() {
        let id = |region, slot| SlotId::new(region, slot);
        assert_ne!(slot_key(id("eu", 0)), slot_key(id("eu", 1)));
        assert_ne!(slot_key(id("eu", 0)), slot_key(id("us", 0)));
        assert_ne!(slot_key(id("eu", 0)), checkpoint_key(id("eu", 0)));
        assert_eq!(slot_key(id("eu", 1)), slot_key(id("eu", 1)));
        assert_eq!(&slot_key(id("eu", 0))[..18], b"edge-session relay");
    }
}

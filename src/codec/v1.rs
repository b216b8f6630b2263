//! Format 1: the record as packed CBOR (serde_cbor, fields by index, in
//! the order below). Every record written before format 2 is in it, so it
//! stays readable. It is written only while `session.record_format = 1`
//! (a rolling upgrade from a build that reads nothing else); tests prove
//! against committed format-1 records that [`encode`] writes what those
//! builds wrote. The only file that names serde_cbor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{SessionData, SessionRecord, Text};

/// Format 1's fields, in their packed order (the index is the field's place
/// here: never reorder).
#[derive(Serialize, Deserialize)]
struct RecordV1<D> {
    version: u64,
    user_id: Option<String>,
    role: Option<String>,
    user_epoch: u64,
    data: D,
    created_at: u64,
    last_seen_at: u64,
    idle_timeout_ms: u64,
    absolute_expiry: u64,
}

/// Append `record` in format 1.
pub(super) fn encode(record: &SessionRecord, out: &mut Vec<u8>) {
    let v1 = RecordV1 {
        version: record.version,
        user_id: record.user_id.as_deref().map(str::to_owned),
        role: record.role.as_deref().map(str::to_owned),
        user_epoch: record.user_epoch,
        data: &record.data,
        created_at: record.created_at,
        last_seen_at: record.last_seen_at,
        idle_timeout_ms: record.idle_timeout_ms,
        absolute_expiry: record.absolute_expiry,
    };
    // Serializing integers, strings and a string map into a Vec cannot
    // fail: no I/O error, no non-string map keys.
    let mut ser = serde_cbor::Serializer::new(out).packed_format();
    v1.serialize(&mut ser)
        .expect("a SessionRecord always serializes to CBOR");
}

/// Decode a format-1 payload (what follows the envelope).
pub(super) fn decode(payload: &[u8]) -> Result<SessionRecord, String> {
    let v1: RecordV1<BTreeMap<String, String>> =
        serde_cbor::from_slice(payload).map_err(|e| e.to_string())?;
    Ok(SessionRecord {
        version: v1.version,
        user_id: v1.user_id.map(Text::from),
        role: v1.role.map(Text::from),
        user_epoch: v1.user_epoch,
        data: SessionData::from(v1.data),
        created_at: v1.created_at,
        last_seen_at: v1.last_seen_at,
        idle_timeout_ms: v1.idle_timeout_ms,
        absolute_expiry: v1.absolute_expiry,
        client: None,
    })
}

//! Format 2: what a cache hit serves is read from fixed places, without
//! serde and without touching the application data.
//!
//! | bytes | field |
//! |---|---|
//! | 8, u64 little-endian | `version` |
//! | 8 | `user_epoch` |
//! | 8 | `created_at` |
//! | 8 | `last_seen_at` |
//! | 8 | `idle_timeout_ms` |
//! | 8 | `absolute_expiry` |
//! | varint, then bytes | `user_id`: 0 for none, else its length + 1, then UTF-8 |
//! | varint, then bytes | `role`: the same |
//! | varint, then bytes | format 3 only: the client section's length, then the section ([`ClientInfo`]) |
//! | the rest | `data`: the data section ([`SessionData`]), kept as bytes until used |
//!
//! Varints are unsigned LEB128 in their shortest form (`src/wire.rs`).

use crate::client::ClientInfo;
use crate::record::{SessionData, SessionRecord, Text};
use crate::wire::{self, Reader, WireError};

/// The fixed-width part: six u64 fields.
const FIXED: usize = 48;

/// Append `record` in format 2, or in format 3 with `client`.
pub(super) fn encode(record: &SessionRecord, client: Option<&ClientInfo>, out: &mut Vec<u8>) {
    for field in [
        record.version,
        record.user_epoch,
        record.created_at,
        record.last_seen_at,
        record.idle_timeout_ms,
        record.absolute_expiry,
    ] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    wire::put_opt_str(out, record.user_id.as_deref());
    wire::put_opt_str(out, record.role.as_deref());
    if let Some(client) = client {
        wire::put_varint(out, client.bytes().len() as u64);
        out.extend_from_slice(client.bytes());
    }
    record.data.write(out);
}

/// The `i`th u64 of the fixed part.
fn field(fixed: &[u8; FIXED], i: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&fixed[i * 8..i * 8 + 8]);
    u64::from_le_bytes(word)
}

/// Decode a format-2 payload (what follows the envelope), or a format-3 one
/// (`with_client`). The data section is checked, not decoded.
pub(super) fn decode(payload: &[u8], with_client: bool) -> Result<SessionRecord, WireError> {
    let (fixed, rest) = payload
        .split_first_chunk::<FIXED>()
        .ok_or(WireError("shorter than the fixed fields"))?;
    let mut reader = Reader::new(rest);
    // Read in place: no allocation for the short texts most are.
    let user_id = reader.opt_str()?.map(Text::new);
    let role = reader.opt_str()?.map(Text::new);
    let client = if with_client {
        let section = reader.str_bytes()?;
        Some(ClientInfo::read(section)?)
    } else {
        None
    };
    Ok(SessionRecord {
        version: field(fixed, 0),
        user_id,
        role,
        user_epoch: field(fixed, 1),
        data: SessionData::read(reader.rest())?,
        created_at: field(fixed, 2),
        last_seen_at: field(fixed, 3),
        idle_timeout_ms: field(fixed, 4),
        absolute_expiry: field(fixed, 5),
        client,
    })
}

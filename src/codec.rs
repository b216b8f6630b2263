//! The record codec: a versioned envelope around two formats.
//!
//! Envelope: `b"ES"`, one format byte, then the record in that format.
//!
//! - Format 3 (`codec/v2.rs`, written by default): format 2 with the
//!   client section ([`ClientInfo`](crate::client::ClientInfo)) between the
//!   role and the data. A record with no client section is written in
//!   format 2, byte for byte.
//! - Format 2 (`codec/v2.rs`): six fixed-width
//!   integers, the user and role as length-prefixed strings, then the
//!   application data as its own section, which a decode checks but leaves
//!   as bytes until something reads it ([`SessionData`](crate::record::SessionData)).
//!   A cache hit reads only what it serves.
//! - Format 1 (`codec/v1.rs`): packed CBOR through serde_cbor (the only
//!   file naming it). Every record written before format 2; still read,
//!   and written only while `session.record_format = 1`.
//!
//! All three are always read. A format byte this build does not know is a typed
//! error, never a guess. docs/design.md ("Record") says in which order a
//! fleet moves from writing one format to the other.

use crate::record::SessionRecord;

mod v1;
mod v2;

const MAGIC: &[u8; 2] = b"ES";
/// The format [`encode`] writes.
pub const FORMAT_VERSION: u8 = Format::V3 as u8;

/// A record format this build reads and can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Packed CBOR: the only format builds before format 2 read.
    V1 = 1,
    /// Fixed header, data decoded on use.
    V2 = 2,
    /// Format 2 with the client section.
    #[default]
    V3 = 3,
}

impl Format {
    /// The format with this envelope byte, if this build knows it.
    pub fn from_byte(byte: u8) -> Option<Format> {
        match byte {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            3 => Some(Format::V3),
            _ => None,
        }
    }
}

/// Bytes that are not a record this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Too short or without the `ES` magic.
    #[error("not a session record envelope")]
    NotAnEnvelope,
    /// An envelope from a format this build does not know.
    #[error("unknown record format version {0}")]
    UnknownFormat(u8),
    /// The payload does not decode to a record.
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// Encode a record in the current format ([`FORMAT_VERSION`]).
pub fn encode(record: &SessionRecord) -> Vec<u8> {
    encode_as(record, Format::default())
}

/// Encode a record in `format`.
pub fn encode_as(record: &SessionRecord, format: Format) -> Vec<u8> {
    let strings =
        record.user_id.as_deref().map_or(0, str::len) + record.role.as_deref().map_or(0, str::len);
    let client = record.client.as_ref().map_or(0, |c| c.bytes().len());
    let mut out = Vec::with_capacity(64 + strings + client + record.data.len() * 32);
    out.extend_from_slice(MAGIC);
    // Format 3 without a client section is format 2: a record nobody
    // recorded a client for stays readable by a build that reads 1 and 2.
    let format = match format {
        Format::V3 if record.client.is_none() => Format::V2,
        f => f,
    };
    out.push(format as u8);
    match format {
        Format::V1 => v1::encode(record, &mut out),
        Format::V2 => v2::encode(record, None, &mut out),
        Format::V3 => v2::encode(record, record.client.as_ref(), &mut out),
    }
    out
}

/// Decode bytes written by [`encode_as`] in any format this build knows.
pub fn decode(bytes: &[u8]) -> Result<SessionRecord, DecodeError> {
    let [m0, m1, format, payload @ ..] = bytes else {
        return Err(DecodeError::NotAnEnvelope);
    };
    if [*m0, *m1] != *MAGIC {
        return Err(DecodeError::NotAnEnvelope);
    }
    match Format::from_byte(*format) {
        Some(f @ (Format::V2 | Format::V3)) => {
            v2::decode(payload, f == Format::V3).map_err(|e| DecodeError::Malformed(e.to_string()))
        }
        Some(Format::V1) => v1::decode(payload).map_err(DecodeError::Malformed),
        None => Err(DecodeError::UnknownFormat(*format)),
    }
}

#[cfg(test)]
mod tests;

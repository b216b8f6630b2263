//! The record codec: serde_cbor behind a versioned envelope. The only file
//! that names serde_cbor, so a swap to another CBOR crate stays one file.
//!
//! Envelope: `b"ES"`, one format-version byte, then the record as packed CBOR
//! (fields by index, not by name: smaller and faster to decode).

use crate::record::SessionRecord;

const MAGIC: &[u8; 2] = b"ES";
/// The current envelope format.
pub const FORMAT_VERSION: u8 = 1;

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
    /// The CBOR payload does not decode to a record.
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// Encode a record.
pub fn encode(record: &SessionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + record.data.len() * 32);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    // Serializing a plain struct of integers, strings and a string map into a
    // Vec cannot fail: no I/O error, no non-string map keys.
    let mut ser = serde_cbor::Serializer::new(&mut out).packed_format();
    serde::Serialize::serialize(record, &mut ser)
        .expect("a SessionRecord always serializes to CBOR");
    out
}

/// Decode bytes written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<SessionRecord, DecodeError> {
    let (header, payload) = match bytes {
        [m0, m1, version, payload @ ..] => ([*m0, *m1, *version], payload),
        _ => return Err(DecodeError::NotAnEnvelope),
    };
    if header[..2] != MAGIC[..] {
        return Err(DecodeError::NotAnEnvelope);
    }
    if header[2] != FORMAT_VERSION {
        return Err(DecodeError::UnknownFormat(header[2]));
    }
    serde_cbor::from_slice(payload).map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = SessionRecord> {
        (
            any::<u64>(),
            proptest::option::of("\\PC{0,24}"),
            proptest::option::of("[a-z]{0,12}"),
            any::<u64>(),
            proptest::collection::btree_map("\\PC{0,16}", "\\PC{0,64}", 0..8),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        )
            .prop_map(|(version, user_id, role, user_epoch, data, (c, l, i, a))| {
                SessionRecord {
                    version,
                    user_id,
                    role,
                    user_epoch,
                    data,
                    created_at: c,
                    last_seen_at: l,
                    idle_timeout_ms: i,
                    absolute_expiry: a,
                }
            })
    }

    proptest! {
        #[test]
        fn record_round_trips(record in arb_record()) {
            prop_assert_eq!(decode(&encode(&record)).unwrap(), record);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn random_payload_behind_a_valid_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = b"ES\x01".to_vec();
            framed.extend(bytes);
            let _ = decode(&framed);
        }
    }

    #[test]
    fn bad_envelopes_are_typed_errors() {
        assert_eq!(decode(b""), Err(DecodeError::NotAnEnvelope));
        assert_eq!(decode(b"XY\x01\xa0"), Err(DecodeError::NotAnEnvelope));
        assert_eq!(decode(b"ES\x09\xa0"), Err(DecodeError::UnknownFormat(9)));
        assert!(matches!(
            decode(b"ES\x01\xff\xff"),
            Err(DecodeError::Malformed(_))
        ));
        let good = encode(&SessionRecord::new(&Default::default(), 5));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::Malformed(_))
        ));
    }
}

use std::collections::BTreeMap;

use super::*;
use crate::client::{ClientFields, ClientInfo};
use crate::record::{SessionData, Text};
use proptest::prelude::*;

/// Format-1 records committed before format 2 existed (the fuzz seeds).
const V1_ANONYMOUS: &[u8] = include_bytes!("../../fuzz/seeds/codec_decode/anonymous.bin");
const V1_BOUND: &[u8] = include_bytes!("../../fuzz/seeds/codec_decode/bound_with_data.bin");
/// The same two records in format 2, as this build first wrote them.
const V2_ANONYMOUS: &[u8] = include_bytes!("../../fuzz/seeds/codec_decode/anonymous_v2.bin");
const V2_BOUND: &[u8] = include_bytes!("../../fuzz/seeds/codec_decode/bound_with_data_v2.bin");

fn anonymous() -> SessionRecord {
    SessionRecord {
        version: 1,
        user_id: None,
        role: None,
        user_epoch: 0,
        data: SessionData::new(),
        created_at: 1_795_000_000_000,
        last_seen_at: 1_795_000_000_000,
        idle_timeout_ms: 1_800_000,
        absolute_expiry: 1_795_043_200_000,
        client: None,
    }
}

fn bound() -> SessionRecord {
    SessionRecord {
        version: 7,
        user_id: Some("alice".into()),
        role: Some("admin".into()),
        user_epoch: 2,
        data: BTreeMap::from([
            ("cart".to_owned(), "3".to_owned()),
            ("theme".to_owned(), "dark".to_owned()),
        ])
        .into(),
        created_at: 1_795_000_000_000,
        last_seen_at: 1_795_000_060_000,
        idle_timeout_ms: 1_800_000,
        absolute_expiry: 1_795_043_200_000,
        client: None,
    }
}

fn arb_record() -> impl Strategy<Value = SessionRecord> {
    (
        any::<u64>(),
        proptest::option::of("\\PC{0,24}"),
        proptest::option::of("[a-z]{0,12}"),
        any::<u64>(),
        proptest::collection::btree_map("\\PC{0,16}", "\\PC{0,64}", 0..8),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        proptest::option::of(("[0-9.]{1,15}", "\\PC{0,80}", "\\PC{0,20}")),
    )
        .prop_map(
            |(version, user_id, role, user_epoch, data, (c, l, i, a), client)| SessionRecord {
                version,
                user_id: user_id.map(Text::from),
                role: role.map(Text::from),
                user_epoch,
                data: data.into(),
                created_at: c,
                last_seen_at: l,
                idle_timeout_ms: i,
                absolute_expiry: a,
                client: client.and_then(|(addr, browser, city): (String, String, String)| {
                    ClientInfo::new(&ClientFields {
                        address: Some(&addr),
                        browser: Some(&browser),
                        city: Some(&city),
                        ..ClientFields::default()
                    })
                }),
            },
        )
}

fn arb_format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::V1), Just(Format::V2), Just(Format::V3)]
}

proptest! {
    #[test]
    fn record_round_trips(record in arb_record(), format in arb_format()) {
        let bytes = encode_as(&record, format);
        // Formats 1 and 2 keep no client section; format 3 writes one only
        // when there is one (else it is format 2, byte for byte).
        let (written, kept) = match format {
            Format::V3 if record.client.is_some() => (Format::V3, record.clone()),
            Format::V3 => (Format::V2, record.clone()),
            f => (f, SessionRecord { client: None, ..record.clone() }),
        };
        prop_assert_eq!(bytes[2], written as u8);
        prop_assert_eq!(decode(&bytes).unwrap(), kept);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn random_payload_behind_a_valid_header_never_panics(
        format in arb_format(),
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut framed = vec![b'E', b'S', format as u8];
        framed.extend(bytes);
        if let Ok(record) = decode(&framed) {
            // Accepted: the data decodes too, and survives a round trip.
            let _ = record.data.iter().count();
            prop_assert_eq!(decode(&encode(&record)).unwrap(), record);
        }
    }

    #[test]
    fn every_cut_of_a_valid_record_is_an_error(record in arb_record(), format in arb_format()) {
        let bytes = encode_as(&record, format);
        for cut in 0..bytes.len() {
            prop_assert!(decode(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
    }
}

#[test]
fn format_1_records_written_before_format_2_still_decode() {
    assert_eq!(decode(V1_ANONYMOUS).unwrap(), anonymous());
    assert_eq!(decode(V1_BOUND).unwrap(), bound());
}

#[test]
fn the_format_1_encoder_writes_what_format_1_builds_wrote() {
    assert_eq!(encode_as(&anonymous(), Format::V1), V1_ANONYMOUS);
    assert_eq!(encode_as(&bound(), Format::V1), V1_BOUND);
}

#[test]
fn format_2_bytes_do_not_drift() {
    assert_eq!(encode(&anonymous()), V2_ANONYMOUS);
    assert_eq!(encode(&bound()), V2_BOUND);
    assert_eq!(decode(V2_ANONYMOUS).unwrap(), anonymous());
    assert_eq!(decode(V2_BOUND).unwrap(), bound());
    // The fixed fields sit where the format's table says.
    assert_eq!(&V2_BOUND[..3], b"ES\x02");
    assert_eq!(V2_BOUND[3..11], 7u64.to_le_bytes(), "version");
    assert_eq!(V2_BOUND[11..19], 2u64.to_le_bytes(), "user_epoch");
    assert_eq!(
        V2_BOUND[43..51],
        1_795_043_200_000u64.to_le_bytes(),
        "absolute_expiry"
    );
    assert_eq!(&V2_BOUND[51..57], b"\x06alice", "user_id, length + 1");
}

#[test]
fn a_decode_leaves_the_data_as_bytes_until_it_is_read() {
    let record = decode(V2_BOUND).unwrap();
    assert!(!record.data.is_decoded());
    assert_eq!(record.data.len(), 2);
    assert_eq!(record.user_id.as_deref(), Some("alice"));
    assert!(!record.data.is_decoded());
    assert_eq!(record.data.get("cart").map(String::as_str), Some("3"));
    assert!(record.data.is_decoded());
}

#[test]
fn a_format_1_record_is_written_back_in_format_2() {
    let record = decode(V1_BOUND).unwrap();
    let again = encode(&record.next_version());
    assert_eq!(again[2], 2);
    assert_eq!(decode(&again).unwrap(), bound().next_version());
}

#[test]
fn bad_envelopes_are_typed_errors() {
    assert_eq!(decode(b""), Err(DecodeError::NotAnEnvelope));
    assert_eq!(decode(b"ES"), Err(DecodeError::NotAnEnvelope));
    assert_eq!(decode(b"XY\x01\xa0"), Err(DecodeError::NotAnEnvelope));
    assert_eq!(decode(b"ES\x09\xa0"), Err(DecodeError::UnknownFormat(9)));
    assert_eq!(decode(b"ES\x04"), Err(DecodeError::UnknownFormat(4)));
    assert_eq!(decode(b"ES\x00"), Err(DecodeError::UnknownFormat(0)));
    assert!(matches!(
        decode(b"ES\x01\xff\xff"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(decode(b"ES\x02"), Err(DecodeError::Malformed(_))));
    let mut with_client = SessionRecord::new(&Default::default(), 5);
    with_client.client = ClientInfo::new(&ClientFields {
        browser: Some("Firefox"),
        ..ClientFields::default()
    });
    for (format, record) in [
        (Format::V1, SessionRecord::new(&Default::default(), 5)),
        (Format::V2, SessionRecord::new(&Default::default(), 5)),
        (Format::V3, with_client),
    ] {
        let good = encode_as(&record, format);
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::Malformed(_))
        ));
        let mut longer = good.clone();
        longer.push(0);
        assert!(
            matches!(decode(&longer), Err(DecodeError::Malformed(_))),
            "trailing byte, {format:?}"
        );
    }
}

//! `codec::decode` on arbitrary bytes: what a node reads back from sled and
//! from DynamoDB items, in either record format. It must never panic; a
//! record it accepts must decode its data too (a format-2 decode checks the
//! data section and leaves decoding it for later: that later decode must
//! not fail), and survive an encode/decode round trip unchanged.
#![no_main]

use edge_session::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = codec::decode(data) {
        assert_eq!(
            record.data.iter().count(),
            record.data.len(),
            "the data's count differs from its entries"
        );
        for format in [codec::Format::V1, codec::Format::V2] {
            let again = codec::decode(&codec::encode_as(&record, format))
                .expect("re-encoded record decodes");
            assert_eq!(again, record, "record changed across a round trip");
        }
    }
});

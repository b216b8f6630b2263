//! `codec::decode` on arbitrary bytes: what a node reads back from sled and
//! from DynamoDB items. It must never panic, and a record it accepts must
//! survive an encode/decode round trip unchanged.
#![no_main]

use edge_session::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = codec::decode(data) {
        let again = codec::decode(&codec::encode(&record)).expect("re-encoded record decodes");
        assert_eq!(again, record, "record changed across a round trip");
    }
});

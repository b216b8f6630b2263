//! `SessionToken::parse` on arbitrary input: the wire form of every cookie
//! and `X-Session-Token` header. It must never panic, and whatever it accepts
//! must be the one canonical encoding of 32 bytes.
#![no_main]

use edge_session::SessionToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = SessionToken::parse(text) {
        assert_eq!(token.expose(), text, "accepted a non-canonical token");
        assert_eq!(SessionToken::parse(&token.expose()).as_ref(), Ok(&token));
    }
});

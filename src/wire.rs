//! The primitive byte forms of record format 2 ([`crate::codec`]): unsigned
//! LEB128 varints in their shortest form, and UTF-8 strings behind a varint
//! length. A [`Reader`] walks a byte slice and fails with a [`WireError`],
//! never a panic; nothing here allocates.

/// Bytes that do not follow format 2's primitive forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A cursor over encoded bytes.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// A varint: at most ten bytes, shortest form only (so each value has
    /// one encoding), at most 64 bits.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        // Below 128: one byte, the case of every length in a small record.
        match self.rest.split_first() {
            Some((&byte, rest)) if byte < 0x80 => {
                self.rest = rest;
                Ok(u64::from(byte))
            }
            _ => self.long_varint(),
        }
    }

    #[cold]
    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                return Err(WireError("varint over 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 {
                    return Err(WireError("varint not in its shortest form"));
                }
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(WireError("truncated varint"))
    }

    /// The next `len` bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        let len = usize::try_from(len).map_err(|_| WireError("length over the address space"))?;
        if len > self.rest.len() {
            return Err(WireError("truncated string"));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    /// A string's bytes, not checked for UTF-8: varint length, then that
    /// many bytes.
    #[inline]
    pub(crate) fn str_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        self.bytes(len)
    }

    /// An optional string: varint 0 for none, else the length plus one,
    /// then the string's bytes.
    #[inline]
    pub(crate) fn opt_str(&mut self) -> Result<Option<&'a str>, WireError> {
        match self.varint()? {
            0 => Ok(None),
            n => {
                let bytes = self.bytes(n - 1)?;
                std::str::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| WireError("string is not UTF-8"))
            }
        }
    }
}

/// Append `value` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Append a string as [`Reader::str_bytes`] reads it.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Append an optional string as [`Reader::opt_str`] reads it.
pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            put_varint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn varint_of(bytes: &[u8]) -> Result<u64, WireError> {
        let mut r = Reader::new(bytes);
        let v = r.varint()?;
        assert!(r.rest().is_empty(), "varint left bytes behind");
        Ok(v)
    }

    #[test]
    fn varints_are_leb128_in_their_shortest_form() {
        assert_eq!(varint_of(&[0]), Ok(0));
        assert_eq!(varint_of(&[0x7f]), Ok(127));
        assert_eq!(varint_of(&[0x80, 0x01]), Ok(128));
        assert_eq!(varint_of(&[0xe5, 0x8e, 0x26]), Ok(624_485));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint_of(&max), Ok(u64::MAX));
        let mut over = max;
        over[9] = 0x02;
        assert!(varint_of(&over).is_err(), "65 bits");
        assert!(varint_of(&[0x80, 0x00]).is_err(), "overlong zero");
        assert!(varint_of(&[0xff, 0x00]).is_err(), "overlong 127");
        assert!(varint_of(&[0x80]).is_err(), "truncated");
        assert!(varint_of(&[0xff; 11]).is_err(), "eleven bytes");
        assert!(varint_of(&[]).is_err(), "empty");
    }

    #[test]
    fn strings_are_length_prefixed_utf8() {
        let mut out = Vec::new();
        put_str(&mut out, "héllo");
        put_opt_str(&mut out, None);
        put_opt_str(&mut out, Some(""));
        put_opt_str(&mut out, Some("x"));
        let mut r = Reader::new(&out);
        assert_eq!(r.str_bytes(), Ok("héllo".as_bytes()));
        assert_eq!(r.opt_str(), Ok(None));
        assert_eq!(r.opt_str(), Ok(Some("")));
        assert_eq!(r.opt_str(), Ok(Some("x")));
        assert!(r.rest().is_empty());
        assert!(Reader::new(&[2, b'a']).str_bytes().is_err(), "truncated");
        assert!(Reader::new(&[1, 0xff]).opt_str().is_ok(), "empty");
        assert!(Reader::new(&[2, 0xff]).opt_str().is_err(), "not UTF-8");
        assert!(
            Reader::new(&[2, 0xc3]).opt_str().is_err(),
            "incomplete UTF-8"
        );
    }

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(varint_of(&out), Ok(v));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut r = Reader::new(&bytes);
            let _ = r.varint();
            let _ = r.opt_str();
            let _ = r.str_bytes();
        }
    }
}

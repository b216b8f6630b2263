//! [`SessionData`]: a session's application data, a string map that keeps
//! the bytes it was read from and is decoded only when something reads it.
//!
//! A cache hit serves a record's user, role and times; most routes never
//! look at its data. So the record decoder (format 2, [`crate::codec`])
//! checks the data section in full (lengths, UTF-8, key order) without
//! allocating a string, and keeps a copy of its bytes. The first read of the
//! map decodes it (once: later reads share it); the first write turns it
//! into a plain map; an encode of data nobody changed copies the bytes.
//!
//! The section's layout lives here, beside the only code that decodes it
//! lazily: a varint count, then that many entries `key | value`, each a
//! string as [`Reader::str_bytes`] reads it (varint length, then UTF-8
//! bytes). Keys are
//! strictly increasing bytewise (the order of `BTreeMap<String, String>`),
//! so a map has exactly one encoding and nothing follows the last entry.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};

use crate::wire::{self, Reader, WireError};

type Map = BTreeMap<String, String>;

/// Application data: a string map, decoded from its stored bytes on first
/// use. Reads go through `Deref` to the map (`data.get("k")`,
/// `data.iter()`), writes through `DerefMut` (`data.insert(..)`); `len` and
/// `is_empty` answer without decoding.
#[derive(Clone, Default)]
pub struct SessionData(Repr);

#[derive(Clone)]
enum Repr {
    /// Built by the application, decoded, or changed since it was read.
    Map(Map),
    /// As stored: a section [`walk`] accepted, and its map once decoded.
    Encoded {
        section: Section,
        len: usize,
        map: OnceLock<Map>,
    },
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Map(Map::new())
    }
}

/// The bytes of a data section: up to [`INLINE`] in place (no allocation on
/// a cache hit for the small data most sessions hold), else shared.
#[derive(Clone)]
enum Section {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

const INLINE: usize = 46;

impl Section {
    fn new(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0u8; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                Section::Inline { len, bytes: inline }
            }
            _ => Section::Shared(Arc::from(bytes)),
        }
    }
}

impl Deref for Section {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Section::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Section::Shared(bytes) => bytes,
        }
    }
}

/// Walk the entries of a data section, calling `each` on every one, and
/// return their number. Every check happens here, so bytes this accepted
/// once decode again without error, and `each` gets UTF-8.
fn walk<'a>(
    section: &'a [u8],
    mut each: impl FnMut(&'a [u8], &'a [u8]),
) -> Result<usize, WireError> {
    // All ASCII (lengths under 128 and ASCII text, the usual case): every
    // string is UTF-8 without checking each.
    let ascii = section.is_ascii();
    let utf8 = |s: &[u8]| ascii || std::str::from_utf8(s).is_ok();
    let mut reader = Reader::new(section);
    let count = reader.varint()?;
    let mut previous: Option<&[u8]> = None;
    // Each entry takes at least two bytes, so a huge count ends in an error
    // after at most `section.len() / 2` rounds.
    for _ in 0..count {
        let key = reader.str_bytes()?;
        let value = reader.str_bytes()?;
        if !utf8(key) || !utf8(value) {
            return Err(WireError("data string is not UTF-8"));
        }
        // Bytewise order is `str`'s order.
        if previous.is_some_and(|p| p >= key) {
            return Err(WireError("data keys not strictly increasing"));
        }
        previous = Some(key);
        each(key, value);
    }
    if !reader.rest().is_empty() {
        return Err(WireError("bytes after the data section"));
    }
    usize::try_from(count).map_err(|_| WireError("data count over the address space"))
}

fn decode(section: &[u8]) -> Map {
    // `section` is immutable and `walk` accepted it when it was read
    // (`SessionData::read`, the only way to an `Encoded`): the strings are
    // UTF-8 and the walk succeeds again.
    const CHECKED: &str = "a data section is checked when it is read";
    let text = |s: &[u8]| std::str::from_utf8(s).expect(CHECKED).to_owned();
    let mut map = Map::new();
    walk(section, |k, v| {
        map.insert(text(k), text(v));
    })
    .expect(CHECKED);
    map
}

impl SessionData {
    /// No data.
    pub fn new() -> Self {
        SessionData::default()
    }

    /// Read a data section (the whole of `section`): checked now, decoded
    /// on first use.
    pub(crate) fn read(section: &[u8]) -> Result<SessionData, WireError> {
        let len = walk(section, |_, _| {})?;
        if len == 0 {
            return Ok(SessionData::default());
        }
        Ok(SessionData(Repr::Encoded {
            section: Section::new(section),
            len,
            map: OnceLock::new(),
        }))
    }

    /// Append the data section that [`read`](Self::read) reads back.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Repr::Encoded { section, .. } => out.extend_from_slice(section),
            Repr::Map(map) => {
                wire::put_varint(out, map.len() as u64);
                for (key, value) in map {
                    wire::put_str(out, key);
                    wire::put_str(out, value);
                }
            }
        }
    }

    /// The number of entries (without decoding them).
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Map(map) => map.len(),
            Repr::Encoded { len, .. } => *len,
        }
    }

    /// Whether there are no entries (without decoding them).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the map was decoded from stored bytes (tests: a cache hit
    /// must not decode the data; `test-support` only).
    #[cfg(any(test, feature = "test-support"))]
    pub fn is_decoded(&self) -> bool {
        match &self.0 {
            Repr::Map(_) => true,
            Repr::Encoded { map, .. } => map.get().is_some(),
        }
    }

    /// The map, decoded if it was not yet.
    pub fn into_map(self) -> Map {
        match self.0 {
            Repr::Map(map) => map,
            Repr::Encoded { section, map, .. } => {
                map.into_inner().unwrap_or_else(|| decode(&section))
            }
        }
    }
}

impl Deref for SessionData {
    type Target = Map;

    fn deref(&self) -> &Map {
        match &self.0 {
            Repr::Map(map) => map,
            Repr::Encoded { section, map, .. } => map.get_or_init(|| decode(section)),
        }
    }
}

impl DerefMut for SessionData {
    fn deref_mut(&mut self) -> &mut Map {
        if let Repr::Encoded { .. } = self.0 {
            let taken = std::mem::take(&mut self.0);
            self.0 = Repr::Map(SessionData(taken).into_map());
        }
        match &mut self.0 {
            Repr::Map(map) => map,
            Repr::Encoded { .. } => unreachable!("replaced by a map just above"),
        }
    }
}

impl From<Map> for SessionData {
    fn from(map: Map) -> Self {
        SessionData(Repr::Map(map))
    }
}

impl From<SessionData> for Map {
    fn from(data: SessionData) -> Self {
        data.into_map()
    }
}

impl IntoIterator for SessionData {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_map().into_iter()
    }
}

impl PartialEq for SessionData {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            // One encoding per map: equal bytes, equal maps.
            (Repr::Encoded { section: a, .. }, Repr::Encoded { section: b, .. }) if **a == **b => {
                true
            }
            _ => **self == **other,
        }
    }
}

impl Eq for SessionData {}

impl PartialEq<Map> for SessionData {
    fn eq(&self, other: &Map) -> bool {
        **self == *other
    }
}

impl std::fmt::Debug for SessionData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl serde::Serialize for SessionData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn section(data: &SessionData) -> Vec<u8> {
        let mut out = Vec::new();
        data.write(&mut out);
        out
    }

    #[test]
    fn read_checks_but_does_not_decode() {
        let bytes = section(&map(&[("a", "1"), ("b", "2")]).into());
        let data = SessionData::read(&bytes).unwrap();
        assert!(!data.is_decoded());
        assert_eq!(data.len(), 2);
        assert!(!data.is_decoded(), "len answers from the count");
        assert_eq!(data.get("b").map(String::as_str), Some("2"));
        assert!(data.is_decoded());
        assert_eq!(data, map(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn a_write_turns_it_into_a_map_and_an_unchanged_one_reencodes_as_read() {
        let bytes = section(&map(&[("a", "1")]).into());
        let data = SessionData::read(&bytes).unwrap();
        assert_eq!(section(&data), bytes);
        let mut changed = data.clone();
        changed.insert("z".into(), "26".into());
        assert_eq!(changed, map(&[("a", "1"), ("z", "26")]));
        assert_eq!(data, map(&[("a", "1")]), "the clone is its own");
        assert_eq!(SessionData::read(&section(&changed)).unwrap(), changed);
    }

    #[test]
    fn bad_sections_are_errors() {
        assert!(SessionData::read(&[]).is_err(), "no count");
        assert!(SessionData::read(&[1, 1, b'a']).is_err(), "no value");
        assert!(SessionData::read(&[0, 0]).is_err(), "trailing byte");
        assert!(
            SessionData::read(&[1, 1, 0xff, 0]).is_err(),
            "key not UTF-8"
        );
        let twice = [2, 1, b'a', 0, 1, b'a', 0];
        assert!(SessionData::read(&twice).is_err(), "duplicate key");
        let backwards = [2, 1, b'b', 0, 1, b'a', 0];
        assert!(SessionData::read(&backwards).is_err(), "keys out of order");
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0];
        assert!(
            SessionData::read(&huge).is_err(),
            "a count the bytes cannot hold"
        );
    }

    proptest! {
        #[test]
        fn sections_round_trip(m in proptest::collection::btree_map("\\PC{0,12}", "\\PC{0,24}", 0..8)) {
            let data = SessionData::from(m.clone());
            let back = SessionData::read(&section(&data)).unwrap();
            prop_assert_eq!(back.len(), m.len());
            prop_assert_eq!(back.into_map(), m);
        }

        #[test]
        fn random_sections_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(data) = SessionData::read(&bytes) {
                // Accepted: it decodes, and re-encodes to the same bytes.
                let _ = data.len();
                prop_assert_eq!(section(&SessionData::from(data.into_map())), bytes);
            }
        }
    }
}

//! A writer of MaxMind DB (format 2.0) files, for tests: no database is
//! checked in and no writer crate is a dependency.
//!
//! [`write_city_db`] writes a GeoIP2-City-shaped database: an IPv6 search
//! tree (IPv4 networks at `::a.b.c.d`, where readers look IPv4 addresses up),
//! the 16-byte zero separator, a data section of one record per entry, then
//! the metadata marker and map. See <https://maxmind.github.io/MaxMind-DB/>.
//!
//! Test support: bad input panics with a message saying what is wrong.

use std::net::IpAddr;
use std::path::Path;

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
const SEPARATOR: usize = 16;
/// A fixed build time (2026-01-01T00:00:00Z): the same entries, the same bytes.
const BUILD_EPOCH: u64 = 1_767_225_600;

/// Write a City-shaped database: each entry is a network in CIDR form
/// ("203.0.113.0/24" or "2001:db8::/32"), an ISO country code and an English
/// city name. A later entry overrides an earlier one where they overlap.
pub fn write_city_db(path: &Path, entries: &[(&str, &str, &str)]) {
    std::fs::write(path, city_db(entries, None))
        .unwrap_or_else(|e| panic!("writing test MMDB {}: {e}", path.display()));
}

/// The database's bytes, with `record_size` bits per record (the smallest
/// that fits when `None`).
fn city_db(entries: &[(&str, &str, &str)], record_size: Option<u16>) -> Vec<u8> {
    let mut tree = vec![[Child::Empty; 2]]; // node 0 is the root
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (i, &(network, country, city)) in entries.iter().enumerate() {
        let (bits, prefix) = parse_network(network);
        insert(&mut tree, bits, prefix, i);
        offsets.push(data.len());
        let one = |key, value| Value::Map(vec![(key, value)]);
        let record = Value::Map(vec![
            ("city", one("names", one("en", Value::Str(city)))),
            ("country", one("iso_code", Value::Str(country))),
        ]);
        encode(&mut data, &record);
    }

    // Nodes in creation order (root first); a subtree an overriding entry
    // cut off stays in the file, unreachable, which readers allow.
    let node_count = tree.len() as u64;
    let record = |child: Child| match child {
        Child::Empty => node_count,
        Child::Node(n) => n as u64,
        Child::Data(i) => node_count + SEPARATOR as u64 + offsets[i] as u64,
    };
    let largest = node_count + (SEPARATOR + data.len()) as u64;
    let smallest = [24, 28, 32].into_iter().find(|&bits| largest < 1 << bits);
    let record_size = match (record_size, smallest) {
        (Some(bits), Some(fits)) if bits >= fits && [24, 28, 32].contains(&bits) => bits,
        (None, Some(fits)) => fits,
        _ => panic!("test MMDB: no {record_size:?}-bit records for {largest} values"),
    };

    let mut out = Vec::new();
    for node in &tree {
        let [left, right] = node.map(record);
        let (l, r) = (left.to_be_bytes(), right.to_be_bytes());
        if record_size == 28 {
            // 24 low bits each, around a byte of both high nibbles.
            out.extend_from_slice(&l[5..]);
            out.push((l[4] << 4) | r[4]);
            out.extend_from_slice(&r[5..]);
        } else {
            let skip = 8 - usize::from(record_size / 8);
            out.extend_from_slice(&l[skip..]);
            out.extend_from_slice(&r[skip..]);
        }
    }
    out.extend_from_slice(&[0; SEPARATOR]);
    out.extend_from_slice(&data);
    out.extend_from_slice(METADATA_MARKER);
    let metadata = Value::Map(vec![
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(BUILD_EPOCH)),
        ("database_type", Value::Str("GeoLite2-City")),
        (
            "description",
            Value::Map(vec![("en", Value::Str("edge-session test City database"))]),
        ),
        ("ip_version", Value::U16(6)),
        ("languages", Value::Array(vec![Value::Str("en")])),
        ("node_count", Value::U32(node_count as u32)),
        ("record_size", Value::U16(record_size)),
    ]);
    encode(&mut out, &metadata);
    out
}

/// "a.b.c.d/n" as `::a.b.c.d/(96+n)`, or "x::/n": the address as 128 bits
/// and the prefix length.
fn parse_network(network: &str) -> (u128, u32) {
    let bad = |why: &str| -> ! { panic!("test MMDB network {network:?}: {why}") };
    let (addr, len) = network.split_once('/').unwrap_or_else(|| bad("not CIDR"));
    let addr: IpAddr = addr.parse().unwrap_or_else(|_| bad("bad address"));
    let len: u32 = len.parse().unwrap_or_else(|_| bad("bad prefix length"));
    let (bits, prefix) = match addr {
        IpAddr::V4(v4) if len <= 32 => (u128::from(u32::from(v4)), 96 + len),
        IpAddr::V6(v6) if len <= 128 => (u128::from(v6), len),
        _ => bad("prefix length too long"),
    };
    if prefix == 0 {
        bad("::/0 cannot be a record (the root is a node)");
    }
    if prefix < 128 && bits << prefix != 0 {
        bad("host bits set");
    }
    (bits, prefix)
}

/// One half of a search-tree node.
#[derive(Clone, Copy)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

/// Point the network's prefix at entry `data`, pushing whatever a shorter
/// prefix held down to the new nodes on the way.
fn insert(tree: &mut Vec<[Child; 2]>, bits: u128, prefix: u32, data: usize) {
    let mut node = 0;
    for depth in 0..prefix {
        let bit = ((bits >> (127 - depth)) & 1) as usize;
        if depth + 1 == prefix {
            tree[node][bit] = Child::Data(data);
            return;
        }
        node = match tree[node][bit] {
            Child::Node(n) => n,
            inherited => {
                tree.push([inherited; 2]);
                tree[node][bit] = Child::Node(tree.len() - 1);
                tree.len() - 1
            }
        };
    }
}

/// The data-section types this writer needs.
enum Value<'a> {
    Str(&'a str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'a str, Value<'a>)>),
    Array(Vec<Value<'a>>),
}

fn encode(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::U16(n) => uint(out, 5, u64::from(*n)),
        Value::U32(n) => uint(out, 6, u64::from(*n)),
        Value::U64(n) => uint(out, 9, *n),
        Value::Map(pairs) => {
            control(out, 7, pairs.len());
            for (key, value) in pairs {
                encode(out, &Value::Str(key));
                encode(out, value);
            }
        }
        Value::Array(items) => {
            control(out, 11, items.len());
            items.iter().for_each(|item| encode(out, item));
        }
    }
}

/// An unsigned integer: big-endian, without leading zero bytes.
fn uint(out: &mut Vec<u8>, type_number: u8, n: u64) {
    let bytes = n.to_be_bytes();
    let skip = (n.leading_zeros() / 8) as usize;
    control(out, type_number, bytes.len() - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// The control byte (type in the top 3 bits, or 0 and an extended type byte
/// for types above 7), then the size in the low 5 bits and 0 to 3 more bytes.
fn control(out: &mut Vec<u8>, type_number: u8, size: usize) {
    let (low, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        65_821..=16_843_036 => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
        _ => panic!("test MMDB value too large ({size})"),
    };
    if type_number <= 7 {
        out.push((type_number << 5) | low);
    } else {
        out.push(low);
        out.push(type_number - 7);
    }
    out.extend_from_slice(&extra);
}

#[test]
fn written_databases_verify_and_read_back() {
    let (long, longer) = ("x".repeat(300), "y".repeat(70_000));
    let entries = [
        ("203.0.113.0/24", "DE", "Berlin"),
        ("203.0.113.128/25", "AT", "Wien"),
        ("2001:db8::/32", "FR", "Paris"),
        ("10.0.0.0/8", "JP", long.as_str()),
        ("2001:db8:ffff::/48", "US", longer.as_str()),
        ("192.0.2.0/25", "GB", "London"),
        ("192.0.2.0/24", "IE", "Dublin"), // overrides the /25 above
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    write_city_db(&path, &entries);
    let written = std::fs::read(&path).unwrap();
    assert_eq!(written, city_db(&entries, Some(24)));
    let expected = [
        ("203.0.113.7", Some(("DE", 6))),
        ("203.0.113.200", Some(("AT", 4))),
        ("::cb00:7107", Some(("DE", 6))), // 203.0.113.7 written as IPv6
        ("2001:db8::1", Some(("FR", 5))),
        ("2001:db8:ffff::1", Some(("US", 70_000))),
        ("10.1.2.3", Some(("JP", 300))),
        ("192.0.2.1", Some(("IE", 6))),
        ("198.51.100.1", None),
        ("2001:db9::1", None),
    ];
    let huge = "z".repeat(1 << 24);
    for bits in [24, 28, 32] {
        let mut entries = entries.to_vec();
        if bits == 28 {
            // Every other record's pointer then needs the high nibbles.
            entries.insert(0, ("100.64.0.0/10", "NZ", &huge));
        }
        let reader = maxminddb::Reader::from_source(city_db(&entries, Some(bits))).unwrap();
        reader.verify().unwrap();
        for (ip, want) in expected {
            let found = reader.lookup(ip.parse().unwrap()).unwrap();
            let got: Option<maxminddb::geoip2::City<'_>> = found.decode().unwrap();
            let got = got.map(|r| {
                (
                    r.country.iso_code.unwrap(),
                    r.city.names.english.unwrap().len(),
                )
            });
            assert_eq!(got, want, "{ip} at {bits} bits a record");
        }
    }
}

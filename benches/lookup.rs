//! Micro-benchmarks of the session-lookup hot path.
//!
//! `lookup/cache_hit` is the whole sled-side hot path of a load: storage-key
//! hash, sled get, CBOR decode, lease and expiry checks. It is measured beside
//! `lookup/raw_sled_get`: a plain sled `get` of a value of the same size among
//! the same number of keys, in the same run. Fixed seed; criterion reports the
//! median of its samples.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::collections::BTreeMap;
use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edge_session::store::{CacheLookup, StoreSettings};
use edge_session::sync::{ClientSettings, DynamoTier, Endpoint};
use edge_session::{codec, Policy, SessionRecord, SessionToken, SledCache, TieredStore};

const SESSIONS: usize = 100_000;
const NOW: u64 = 1_800_000_000_000;

/// A deterministic token stream (fixed seed), so runs compare.
fn tokens(n: usize) -> Vec<SessionToken> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            SessionToken::parse(&URL_SAFE_NO_PAD.encode(bytes)).expect("43 canonical chars")
        })
        .collect()
}

fn record(i: usize) -> SessionRecord {
    let mut r = SessionRecord::new(&Policy::default(), NOW);
    r.user_id = Some(format!("user-{i}@example.com"));
    r.role = Some("member".into());
    r.data = BTreeMap::from([
        ("theme".into(), "dark".into()),
        ("locale".into(), "en-GB".into()),
    ]);
    r
}

fn bench_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The store needs a DynamoDB tier; a cache hit never calls it, so a
    // client pointed at a closed port proves it.
    let client = runtime.block_on(
        ClientSettings {
            endpoint: Endpoint::Embedded("http://127.0.0.1:9".into()),
            ..ClientSettings::default()
        }
        .build(),
    );
    let cache = SledCache::temporary().unwrap();
    let store = TieredStore::new(
        cache.clone(),
        DynamoTier::new(client, "bench"),
        StoreSettings::default(),
    );
    let raw = sled::Config::new().temporary(true).open().unwrap();

    let tokens = tokens(SESSIONS);
    let mut value_len = 0;
    for (i, t) in tokens.iter().enumerate() {
        let r = record(i);
        let bytes = codec::encode(&r);
        cache
            .fill(&t.storage_key(), NOW, r.version, &bytes)
            .unwrap();
        // The raw tree stores a value of the same length under the same key.
        let mut value = vec![0u8; 16];
        value.extend_from_slice(&bytes);
        value_len = value.len();
        raw.insert(t.storage_key().as_bytes(), value).unwrap();
    }
    let keys: Vec<_> = tokens.iter().map(|t| *t.storage_key().as_bytes()).collect();

    let mut group = c.benchmark_group("lookup");
    let mut i = 0usize;
    group.bench_function(
        BenchmarkId::new("raw_sled_get", format!("{SESSIONS}x{value_len}B")),
        |b| {
            b.iter(|| {
                i = (i + 7919) % SESSIONS;
                black_box(raw.get(black_box(&keys[i])).unwrap())
            })
        },
    );
    let mut i = 0usize;
    group.bench_function(
        BenchmarkId::new("cache_hit", format!("{SESSIONS}x{value_len}B")),
        |b| {
            b.iter(|| {
                i = (i + 7919) % SESSIONS;
                let key = black_box(&tokens[i]).storage_key();
                match store.lookup_cached(&key, NOW).unwrap() {
                    CacheLookup::Fresh(record) => black_box(record.is_live(NOW)),
                    other => panic!("expected a fresh hit, got {other:?}"),
                }
            })
        },
    );
    group.finish();

    let mut group = c.benchmark_group("codec");
    let bytes = codec::encode(&record(1));
    group.bench_function("decode_small", |b| {
        b.iter(|| codec::decode(black_box(&bytes)).unwrap())
    });
    group.bench_function("encode_small", |b| {
        b.iter(|| codec::encode(black_box(&record(1))))
    });
    group.finish();

    let mut group = c.benchmark_group("token");
    group.bench_function("generate", |b| b.iter(SessionToken::generate));
    let t = SessionToken::generate();
    group.bench_function("storage_key", |b| b.iter(|| black_box(&t).storage_key()));
    group.bench_function("parse", |b| {
        let text = t.expose();
        b.iter(|| SessionToken::parse(black_box(&text)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);

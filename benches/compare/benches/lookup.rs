//! Micro-benchmarks of the session hot path and of login.
//!
//! - `token/*`: generation (OS CSPRNG), parsing, the storage-key hash.
//! - `codec/*`: encode and decode of a small record, and the decode of one
//!   with a recorded client (format 3).
//! - `client/parse_agent`: a sign-in's `User-Agent` through the uap-core
//!   regexes.
//! - `lookup/cache_hit/N` is the whole sled-side hot path of a load:
//!   storage-key hash, sled get, the record's header decode (format 2: the
//!   data stays as bytes), lease and expiry checks. It is
//!   measured beside `lookup/raw_sled_get/N`: a plain sled `get` of a value
//!   of the same size among the same number of keys, in the same run, at
//!   N = 10 000 and 1 000 000 cached sessions, and beside
//!   `lookup/raw_tree_get/N`: a plain get from the cache's own sessions
//!   tree. For each N the run also prints the resident memory per cached
//!   session and per-lookup percentiles (p50/p99/p99.9, from an HDR
//!   histogram of individually timed lookups), and at the end how the p99
//!   of `cache_hit` and of sled's own gets grow from the smallest N to the
//!   largest, and `cache_hit ÷ raw_tree_get` measured in alternating
//!   batches (the median of 21 per-round ratios), which the machine's other
//!   load moves far less than the ratio of two criterion medians taken
//!   seconds apart.
//! - `lookup/cache_miss`: a load whose record was evicted, through a
//!   `TieredStore` over the embedded DynamoDB (a temporary file): one consistent
//!   `GetItem`, decode, fill.
//! - `regenerate/tiered_store` beside `raw/transact_write_items`: a login
//!   through the store (durable tombstone, the transaction, fill)
//!   and the same `TransactWriteItems` built directly with the SDK client.
//!
//! Fixed seed; criterion reports the median of its samples. A filter
//! (`-- lookup/`, `-- lookup/cache_hit`, `-- codec`) also skips the setup of
//! the groups it cannot select (the 1M population, the embedded DynamoDB).
//! `EDGE_SESSION_BENCH_SESSIONS=10000` skips the 1M population (~1 min); a test
//! run (`cargo test --all-targets`, no `--bench` argument) uses 10k only.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edge_session::{
    codec, parse_agent, CacheLookup, ClientMode, EmbeddedDynamo, NewSession, Policy, Recorder,
    SessionRecord, SessionToken, SledCache, StorageKey, StoreSettings, TieredStore, UserBinding,
};
use edge_session_bench::raw::{bench_table, item, login_transaction};
use edge_session_sync::{ClientSettings, DynamoTier, Endpoint};
use hdrhistogram::Histogram;

const NOW: u64 = 1_800_000_000_000;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

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
    r.user_id = Some(format!("user-{i}@example.com").into());
    r.role = Some("member".into());
    r.data = BTreeMap::from([
        ("theme".into(), "dark".into()),
        ("locale".into(), "en-GB".into()),
    ])
    .into();
    r
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The session counts to measure (`EDGE_SESSION_BENCH_SESSIONS`, comma-separated).
fn session_counts() -> Vec<usize> {
    // `cargo test --all-targets` runs this file once per benchmark as a
    // smoke test (no `--bench` argument): the 1M fixture would only cost
    // minutes there.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    std::env::var("EDGE_SESSION_BENCH_SESSIONS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if benchmarking {
                vec![10_000, 1_000_000]
            } else {
                vec![10_000]
            }
        })
}

/// Whether criterion's command-line filter (if any) can select `group`:
/// populating a million sessions is skipped when it cannot.
fn selected(group: &str) -> bool {
    // criterion's options that take a value (the value is not a filter).
    const VALUED: &[&str] = &[
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--output-format",
        "--plotting-backend",
        "--format",
        "--color",
        "-c",
        "-s",
        "-b",
        "-p",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !VALUED.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a)
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| group.contains(f.as_str()) || f.contains(group))
}

/// A store whose DynamoDB tier is never reached (a cache hit never calls
/// it): a client pointed at a closed port proves it.
fn offline_store(runtime: &tokio::runtime::Runtime, cache: SledCache) -> TieredStore {
    let client = runtime.block_on(
        ClientSettings {
            endpoint: Endpoint::Embedded("http://127.0.0.1:9".into()),
            ..ClientSettings::default()
        }
        .build(),
    );
    TieredStore::new(
        cache,
        DynamoTier::new(client, "bench"),
        StoreSettings::default(),
    )
}

struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Time `ops` calls of `f` one by one (the clock read costs ~20-30 ns of
/// each figure, the same on both sides of a ratio).
fn percentiles(ops: usize, mut f: impl FnMut(usize)) -> Percentiles {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("static bounds");
    for i in 0..ops {
        let t0 = Instant::now();
        f(i);
        hist.saturating_record(t0.elapsed().as_nanos() as u64);
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50: us(0.5),
        p99: us(0.99),
        p999: us(0.999),
    }
}

/// `hit` time ÷ `base` time, each run `batch` times in turn for `rounds`
/// rounds (which goes first alternates; every call gets the next index, so
/// neither warms the other's keys): the median, lowest and highest of the
/// per-round ratios.
fn interleaved_ratio(
    rounds: usize,
    batch: usize,
    mut base: impl FnMut(usize),
    mut hit: impl FnMut(usize),
) -> (f64, f64, f64) {
    let mut next = 0usize;
    let mut timed = |f: &mut dyn FnMut(usize)| {
        let t0 = Instant::now();
        for _ in 0..batch {
            f(next);
            next += 1;
        }
        t0.elapsed().as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let b = timed(&mut base);
                timed(&mut hit) / b
            } else {
                let h = timed(&mut hit);
                h / timed(&mut base)
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (ratios[rounds / 2], ratios[0], ratios[rounds - 1])
}

/// The cache hit beside the raw tree get in alternating batches (their
/// ratio), then each lookup kind timed one by one (its tail), over `n`
/// cached sessions.
fn ratio_and_tails(
    n: usize,
    raw: &sled::Db,
    cache: &SledCache,
    store: &TieredStore,
    raw_keys: &[[u8; 32]],
    tokens: &[SessionToken],
) -> (Percentiles, Percentiles, Percentiles) {
    // The same two operations in alternating batches: the machine's
    // other load falls on both alike.
    let (rounds, batch) = (21, 20_000);
    let ratio = interleaved_ratio(
        rounds,
        batch,
        |j| {
            black_box(cache.raw_get(&raw_keys[(j * 7919) % n]).unwrap());
        },
        |j| {
            let key = tokens[(j * 7919) % n].storage_key();
            black_box(store.lookup_cached(&key, NOW).unwrap());
        },
    );
    eprintln!(
        "lookup: {n} sessions, cache_hit ÷ raw_tree_get over {rounds} alternating rounds of {batch} each: median {:.2}× (lowest {:.2}×, highest {:.2}×)",
        ratio.0, ratio.1, ratio.2
    );

    // Tails: the same operations, each timed on its own.
    let ops = 300_000;
    let raw_tail = percentiles(ops, |j| {
        black_box(raw.get(raw_keys[(j * 7919) % n]).unwrap());
    });
    let tree_tail = percentiles(ops, |j| {
        black_box(cache.raw_get(&raw_keys[(j * 7919) % n]).unwrap());
    });
    let hit_tail = percentiles(ops, |j| {
        let key = tokens[(j * 7919) % n].storage_key();
        black_box(store.lookup_cached(&key, NOW).unwrap());
    });
    eprintln!(
        "lookup: {n} sessions, {ops} lookups timed one by one: raw_sled_get p50 {:.2} µs p99 {:.2} µs p99.9 {:.2} µs | raw_tree_get p50 {:.2} µs p99 {:.2} µs p99.9 {:.2} µs | cache_hit p50 {:.2} µs p99 {:.2} µs p99.9 {:.2} µs",
        raw_tail.p50, raw_tail.p99, raw_tail.p999, tree_tail.p50, tree_tail.p99, tree_tail.p999, hit_tail.p50, hit_tail.p99, hit_tail.p999
    );
    (raw_tail, tree_tail, hit_tail)
}

fn bench_lookup(c: &mut Criterion) {
    if ![
        "lookup/cache_hit",
        "lookup/raw_sled_get",
        "lookup/raw_tree_get",
    ]
    .into_iter()
    .any(selected)
    {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // (sessions, raw_sled_get, raw_tree_get, cache_hit)
    let mut tails: Vec<(usize, Percentiles, Percentiles, Percentiles)> = Vec::new();
    for n in session_counts() {
        let tokens = tokens(n);
        let records: Vec<Vec<u8>> = (0..n).map(|i| codec::encode(&record(i))).collect();
        let keys: Vec<_> = tokens.iter().map(|t| t.storage_key()).collect();

        // RSS per cached session: only the sled cache grows in between.
        let cache = SledCache::temporary().unwrap();
        let store = offline_store(&runtime, cache.clone());
        let before = rss();
        let started = Instant::now();
        for (key, bytes) in keys.iter().zip(&records) {
            cache.fill(key, NOW, 1, bytes).unwrap();
        }
        let fill_secs = started.elapsed().as_secs_f64();
        let after = rss();
        eprintln!(
            "lookup: {n} sessions cached in {fill_secs:.1} s; RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per cached session ({} B record)",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            after.saturating_sub(before) as f64 / n as f64,
            records[0].len() + 16,
        );

        // The raw tree stores a value of the same length under the same key.
        let raw = sled::Config::new().temporary(true).open().unwrap();
        for (key, bytes) in keys.iter().zip(&records) {
            let mut value = vec![0u8; 16];
            value.extend_from_slice(bytes);
            raw.insert(key.as_bytes(), value).unwrap();
        }
        let value_len = records[0].len() + 16;
        let raw_keys: Vec<[u8; 32]> = keys.iter().map(|k| *k.as_bytes()).collect();

        let mut group = c.benchmark_group("lookup");
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        let mut i = 0usize;
        group.bench_function(
            BenchmarkId::new("raw_sled_get", format!("{n}x{value_len}B")),
            |b| {
                b.iter(|| {
                    i = (i + 7919) % n;
                    black_box(raw.get(black_box(&raw_keys[i])).unwrap())
                })
            },
        );
        // The strictest baseline: a raw get from the cache's own tree (the
        // same B-tree, filled the same way), so the difference is exactly
        // the hash, the decode and the checks.
        let mut i = 0usize;
        group.bench_function(
            BenchmarkId::new("raw_tree_get", format!("{n}x{value_len}B")),
            |b| {
                b.iter(|| {
                    i = (i + 7919) % n;
                    black_box(cache.raw_get(black_box(&raw_keys[i])).unwrap())
                })
            },
        );
        let mut i = 0usize;
        group.bench_function(
            BenchmarkId::new("cache_hit", format!("{n}x{value_len}B")),
            |b| {
                b.iter(|| {
                    i = (i + 7919) % n;
                    let key = black_box(&tokens[i]).storage_key();
                    match store.lookup_cached(&key, NOW).unwrap() {
                        CacheLookup::Fresh(record) => black_box(record.is_live(NOW)),
                        other => panic!("expected a fresh hit, got {other:?}"),
                    }
                })
            },
        );
        group.finish();

        let (raw_tail, tree_tail, hit_tail) =
            ratio_and_tails(n, &raw, &cache, &store, &raw_keys, &tokens);
        tails.push((n, raw_tail, tree_tail, hit_tail));
    }
    if let (Some((small, s_raw, s_tree, s_hit)), Some((large, l_raw, l_tree, l_hit))) =
        (tails.first(), tails.last())
    {
        if small != large {
            eprintln!(
                "lookup: p99 at {large} sessions ÷ p99 at {small}: cache_hit {:.2}× (p50 {:.2}×), raw_tree_get {:.2}× (p50 {:.2}×), raw_sled_get {:.2}× (p50 {:.2}×)",
                l_hit.p99 / s_hit.p99,
                l_hit.p50 / s_hit.p50,
                l_tree.p99 / s_tree.p99,
                l_tree.p50 / s_tree.p50,
                l_raw.p99 / s_raw.p99,
                l_raw.p50 / s_raw.p50,
            );
        }
    }
}

fn bench_codec_and_token(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let bytes = codec::encode(&record(1));
    group.bench_function("decode_small", |b| {
        b.iter(|| codec::decode(black_box(&bytes)).unwrap())
    });
    let r = record(1);
    group.bench_function("encode_small", |b| b.iter(|| codec::encode(black_box(&r))));
    // The same record as a sign-in now writes it: with what it recorded of
    // its client (format 3), which a decode keeps as one shared section.
    let signed_in = Recorder::new(ClientMode::Full, None)
        .expect("no database")
        .record("203.0.113.7".parse().expect("an address"), Some(FIREFOX));
    let with_client = codec::encode(&SessionRecord {
        client: signed_in,
        ..record(1)
    });
    group.bench_function("decode_with_client", |b| {
        b.iter(|| codec::decode(black_box(&with_client)).unwrap())
    });
    group.finish();

    // What a sign-in pays to record its client: the User-Agent through the
    // uap-core regexes (built once per process, before this runs).
    let mut group = c.benchmark_group("client");
    parse_agent(FIREFOX);
    group.bench_function("parse_agent", |b| {
        b.iter(|| parse_agent(black_box(FIREFOX)))
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

/// A store over the embedded DynamoDB (a temporary file) and a temporary sled.
fn embedded_store(runtime: &tokio::runtime::Runtime) -> (EmbeddedDynamo, TieredStore) {
    let embedded = EmbeddedDynamo::start_temporary(Duration::from_secs(3600)).unwrap();
    let tier = runtime.block_on(bench_table(&embedded, "bench")).unwrap();
    let store = TieredStore::new(
        SledCache::temporary().unwrap(),
        tier,
        StoreSettings::default(),
    );
    (embedded, store)
}

fn bound() -> UserBinding {
    UserBinding {
        user_id: "user-1@example.com".into(),
        role: Some("member".into()),
        client: None,
    }
}

fn bench_dynamo(c: &mut Criterion) {
    if !selected("lookup/cache_miss") && !selected("regenerate") && !selected("raw") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (embedded, store) = embedded_store(&runtime);

    // Misses: sessions created through the store, evicted before each load.
    let keys: Vec<StorageKey> = runtime.block_on(async {
        let mut keys = Vec::new();
        for i in 0..1000 {
            // One user per session: a user keeps at most
            // `session.max_per_user` sessions, and these must all stay live.
            let spec = NewSession {
                binding: Some(UserBinding {
                    user_id: format!("user-{i}@example.com"),
                    ..bound()
                }),
                ..NewSession::default()
            };
            keys.push(store.create(spec, NOW).await.unwrap().1.key);
        }
        keys
    });
    let mut group = c.benchmark_group("lookup");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let mut i = 0usize;
    group.bench_function("cache_miss", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    i = (i + 1) % keys.len();
                    store.cache().evict(&keys[i]).unwrap();
                    let t0 = Instant::now();
                    let loaded = store.load_key(keys[i], NOW).await.unwrap();
                    total += t0.elapsed();
                    assert!(loaded.is_some(), "a created session loads");
                }
                total
            })
        })
    });
    group.finish();

    // Login: the store's regenerate beside the raw transaction it wraps;
    // the anonymous session (or old item) is made outside the timing.
    let mut group = c.benchmark_group("regenerate");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("tiered_store", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_, old) = store.create(NewSession::default(), NOW).await.unwrap();
                    let t0 = Instant::now();
                    let rotated = store.regenerate(&old, Some(bound()), false, NOW).await;
                    total += t0.elapsed();
                    assert!(matches!(rotated, Ok(Ok(_))), "regenerate succeeds");
                }
                total
            })
        })
    });
    group.finish();

    let tier = store.dynamo().clone();
    let epoch_sid = StorageKey::user_epoch(&bound().user_id);
    let anonymous = SessionRecord::new(&Policy::default(), NOW);
    let mut signed_in = SessionRecord::new(&Policy::default(), NOW);
    signed_in.user_id = Some(bound().user_id.into());
    signed_in.role = bound().role.map(Into::into);
    let mut group = c.benchmark_group("raw");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("transact_write_items", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let old = SessionToken::generate().storage_key();
                    tier.create(&item(&old, &anonymous)).await.unwrap().unwrap();
                    let new = item(&SessionToken::generate().storage_key(), &signed_in);
                    let t0 = Instant::now();
                    // What `DynamoTier::rotate` sends for a bound login.
                    login_transaction(&tier, &old, &new, &epoch_sid)
                        .unwrap()
                        .send()
                        .await
                        .unwrap();
                    total += t0.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    embedded.stop();
}

criterion_group!(benches, bench_codec_and_token, bench_lookup, bench_dynamo);
criterion_main!(benches);

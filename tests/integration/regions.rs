//! Two regions of one global table, on the rig: two tables on the harness's
//! DynamoDB-wire server stand for two replicas, and a [`Replicator`] copies
//! every write of each to the other from its stream, as global tables do:
//!
//! - **asynchronously**, each write applied `lag` after the replicator saw it
//!   (plus up to `jitter`, drawn per record from a seed, so the items of one
//!   transaction can land apart and out of order);
//! - **last writer wins** per item: a write carries the time the replicator
//!   first saw it in its own replica, and a replica keeps whichever write
//!   to an item is later (a replicated write older than the replica's own
//!   last write to that item is dropped);
//! - with a **partition switch** (writes queue, then flow once healed), and
//!   per direction a further **delay** and a switch that **drops** its writes.
//!
//! It is test support, a seam like the fault proxy: the product knows nothing
//! of it. Each region's nodes follow their own replica's stream, which
//! carries local and replicated writes alike, as on a global table.
//!
//! The tests below pin what docs/multi-region.md says holds today, with the
//! figures it quotes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodbstreams::types::{AttributeValue as Sv, OperationType, ShardIteratorType};
use reqwest::StatusCode;

use crate::harness::{
    browser_login, client_settings, endpoint, node_toml, whoami, TestNode, ALICE_PASSWORD,
};

type Image = HashMap<String, Av>;

/// A stream attribute value as the table's own type.
fn to_table(v: &Sv) -> Av {
    match v {
        Sv::S(s) => Av::S(s.clone()),
        Sv::N(n) => Av::N(n.clone()),
        Sv::B(b) => Av::B(Blob::new(b.as_ref().to_vec())),
        Sv::Bool(b) => Av::Bool(*b),
        Sv::Null(n) => Av::Null(*n),
        Sv::Ss(v) => Av::Ss(v.clone()),
        Sv::Ns(v) => Av::Ns(v.clone()),
        Sv::Bs(v) => Av::Bs(v.iter().map(|b| Blob::new(b.as_ref().to_vec())).collect()),
        Sv::L(v) => Av::L(v.iter().map(to_table).collect()),
        Sv::M(m) => Av::M(m.iter().map(|(k, v)| (k.clone(), to_table(v))).collect()),
        _ => Av::Null(true),
    }
}

/// One write read from a replica's stream, on its way to the other.
struct Pending {
    key: Vec<u8>,
    /// The item after the write; `None` for a delete.
    image: Option<Image>,
    /// When the replicator first saw it: its last-writer-wins time.
    written: Instant,
    /// When it may be applied to the other replica.
    due: Instant,
}

/// What the replicator knows of each replica, by item key.
#[derive(Default)]
struct Replica {
    /// The time of the last write that replica holds for the item.
    last_write: HashMap<Vec<u8>, Instant>,
    /// What the replicator itself last wrote there (to tell its own
    /// writes, coming back through that replica's stream, from others').
    echoes: HashMap<Vec<u8>, Option<Image>>,
}

/// The switches and figures of a running replicator.
#[derive(Default)]
struct Control {
    lag_ms: AtomicU64,
    jitter_ms: AtomicU64,
    partitioned: AtomicBool,
    /// Per direction (0: a→b, 1: b→a): drop instead of apply.
    dropping: [AtomicBool; 2],
    /// Per direction: delay on top of the lag.
    extra_ms: [AtomicU64; 2],
    /// Per direction: writes applied, and writes that lost to a later one.
    applied: [AtomicU64; 2],
    lost: [AtomicU64; 2],
    replicas: Mutex<[Replica; 2]>,
}

/// Replicates two tables to each other (see the module doc).
pub struct Replicator {
    control: Arc<Control>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Replicator {
    /// Start replicating `tables[0]` and `tables[1]` to each other with
    /// `lag`.
    pub async fn start(tables: [&str; 2], lag: Duration) -> Replicator {
        let settings = client_settings(endpoint());
        let control = Arc::new(Control::default());
        control
            .lag_ms
            .store(lag.as_millis() as u64, Ordering::SeqCst);
        let mut tasks = Vec::new();
        for from in 0..2 {
            let dynamodb = settings.build().await;
            let streams = settings.build_streams().await;
            tasks.push(tokio::spawn(direction(
                dynamodb,
                streams,
                [tables[from].to_owned(), tables[1 - from].to_owned()],
                from,
                Arc::clone(&control),
            )));
        }
        Replicator { control, tasks }
    }

    pub fn set_lag(&self, lag: Duration) {
        self.control
            .lag_ms
            .store(lag.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_jitter(&self, jitter: Duration) {
        self.control
            .jitter_ms
            .store(jitter.as_millis() as u64, Ordering::SeqCst);
    }

    /// Cut (or heal) the link between the regions: writes queue meanwhile.
    pub fn partition(&self, cut: bool) {
        self.control.partitioned.store(cut, Ordering::SeqCst);
    }

    /// Delay what region `from` writes by `extra` more than the lag.
    pub fn delay_from(&self, from: usize, extra: Duration) {
        self.control.extra_ms[from].store(extra.as_millis() as u64, Ordering::SeqCst);
    }

    /// Drop (or stop dropping) what region `from` writes, on its way out.
    pub fn drop_from(&self, from: usize, dropping: bool) {
        self.control.dropping[from].store(dropping, Ordering::SeqCst);
    }

    /// Writes replicated out of region `from`, and writes that lost there
    /// to a later one.
    pub fn counts(&self, from: usize) -> (u64, u64) {
        (
            self.control.applied[from].load(Ordering::SeqCst),
            self.control.lost[from].load(Ordering::SeqCst),
        )
    }
}

/// A seeded jitter in `0..=max` ms for the `n`th record.
fn jitter(n: u64, max: u64) -> Duration {
    if max == 0 {
        return Duration::ZERO;
    }
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    Duration::from_millis(x % (max + 1))
}

/// Read `tables[0]`'s stream and apply each write to `tables[1]`.
async fn direction(
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    tables: [String; 2],
    from: usize,
    control: Arc<Control>,
) {
    let [source, target] = tables;
    let to = 1 - from;
    let arn = loop {
        let described = dynamodb.describe_table().table_name(&source).send().await;
        if let Some(arn) = described
            .ok()
            .and_then(|d| d.table?.latest_stream_arn().map(str::to_owned))
        {
            break arn;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let shards = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect("the source stream is described");
    let shard = shards
        .stream_description()
        .and_then(|d| {
            d.shards()
                .first()
                .and_then(|s| s.shard_id().map(str::to_owned))
        })
        .expect("the embedded stream has a shard");
    let mut iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("an iterator")
        .shard_iterator
        .expect("an iterator");
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut seen: u64 = 0;
    loop {
        // Read what the source replica wrote since.
        if let Ok(out) = streams.get_records().shard_iterator(&iterator).send().await {
            for record in out.records() {
                let Some(stream) = record.dynamodb() else {
                    continue;
                };
                let Some(Sv::B(key)) = stream.keys().and_then(|k| k.get("sid")) else {
                    continue;
                };
                let key = key.as_ref().to_vec();
                let image: Option<Image> = match record.event_name() {
                    Some(OperationType::Remove) => None,
                    _ => stream
                        .new_image()
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), to_table(v))).collect()),
                };
                let now = Instant::now();
                {
                    let mut replicas = control.replicas.lock().unwrap();
                    let here = &mut replicas[from];
                    // The replicator's own write, coming back: not a write
                    // of this region's.
                    if here.echoes.get(&key) == Some(&image) {
                        here.echoes.remove(&key);
                        continue;
                    }
                    here.echoes.remove(&key);
                    here.last_write.insert(key.clone(), now);
                }
                seen += 1;
                let lag = Duration::from_millis(
                    control.lag_ms.load(Ordering::SeqCst)
                        + control.extra_ms[from].load(Ordering::SeqCst),
                );
                let spread = jitter(seen, control.jitter_ms.load(Ordering::SeqCst));
                queue.push_back(Pending {
                    key,
                    image,
                    written: now,
                    due: now + lag + spread,
                });
            }
            if let Some(next) = out.next_shard_iterator() {
                iterator = next.to_owned();
            }
        }
        // Apply what is due, unless the regions are cut apart.
        if !control.partitioned.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut waiting = VecDeque::new();
            while let Some(write) = queue.pop_front() {
                if write.due > now {
                    waiting.push_back(write);
                    continue;
                }
                if control.dropping[from].load(Ordering::SeqCst) {
                    continue;
                }
                apply(&dynamodb, &target, write, from, to, &control).await;
            }
            queue = waiting;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Apply one replicated write to the target replica, last writer winning.
async fn apply(
    dynamodb: &aws_sdk_dynamodb::Client,
    target: &str,
    write: Pending,
    from: usize,
    to: usize,
    control: &Control,
) {
    {
        let mut replicas = control.replicas.lock().unwrap();
        let there = &mut replicas[to];
        if there
            .last_write
            .get(&write.key)
            .is_some_and(|last| *last > write.written)
        {
            control.lost[from].fetch_add(1, Ordering::SeqCst);
            return;
        }
        there.last_write.insert(write.key.clone(), write.written);
        there.echoes.insert(write.key.clone(), write.image.clone());
    }
    let done = match &write.image {
        Some(image) => dynamodb
            .put_item()
            .table_name(target)
            .set_item(Some(image.clone()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        None => dynamodb
            .delete_item()
            .table_name(target)
            .key("sid", Av::B(Blob::new(write.key.clone())))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
    };
    match done {
        Ok(()) => {
            control.applied[from].fetch_add(1, Ordering::SeqCst);
        }
        Err(err) => panic!("the replicator could not write to {target}: {err}"),
    }
}

/// The harness's DynamoDB URL (the replicas are tables there).
fn harness_url() -> Option<String> {
    match endpoint() {
        edge_session_sync::Endpoint::Embedded(url) | edge_session_sync::Endpoint::Url(url) => {
            Some(url)
        }
        _ => None,
    }
}

/// A node of region `names[own]` over `tables[own]`, reading the other
/// region's replica at `other_url` (`None`: no home regions at all).
async fn region_node(tables: &[String; 2], own: usize, other_url: Option<&str>) -> TestNode {
    region_node_with(tables, own, other_url, "").await
}

/// [`region_node`] with `more` TOML sections.
async fn region_node_with(
    tables: &[String; 2],
    own: usize,
    other_url: Option<&str>,
    more: &str,
) -> TestNode {
    let names = ["a", "b"];
    let dir = tempfile::tempdir().unwrap();
    let mut extra = format!("{more}[relay]\nregion = \"{}\"\n", names[own]);
    if let Some(url) = other_url {
        extra += &format!(
            "[regions]\nnames = [\"a\", \"b\"]\n[[regions.replica]]\nname = \"{}\"\n\
             endpoint = \"{url}\"\ntable = \"{}\"\nregion = \"us-east-1\"\n",
            names[1 - own],
            tables[1 - own]
        );
    }
    let toml = node_toml(dir.path(), &tables[own], &extra);
    TestNode::spawn_toml(dir, &toml).await
}

/// Two regions over fresh tables, replicated with `lag`, each node reading
/// the other's replica for sessions homed there (`homed`).
async fn two_regions(lag: Duration, homed: bool) -> (TestNode, TestNode, Replicator) {
    let tables = [crate::harness::table_name(), crate::harness::table_name()];
    let url = harness_url().filter(|_| homed);
    let a = region_node(&tables, 0, url.as_deref()).await;
    let b = region_node(&tables, 1, url.as_deref()).await;
    let replicator = Replicator::start([&tables[0], &tables[1]], lag).await;
    (a, b, replicator)
}

/// Percentiles of `took`, for the figures.
fn figures(mut took: Vec<Duration>) -> String {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    format!(
        "n {} p50 {:?} p99 {:?} max {:?}",
        took.len(),
        at(0.5),
        at(0.99),
        took[took.len() - 1]
    )
}

/// How many sign-ins and sign-outs the figures take
/// (`EDGE_SESSION_REGION_TRIES`, default 10).
fn tries() -> usize {
    std::env::var("EDGE_SESSION_REGION_TRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
}

/// Replication lag of the figures (`EDGE_SESSION_REGION_LAG_MS`, default 300).
fn lag() -> Duration {
    Duration::from_millis(
        std::env::var("EDGE_SESSION_REGION_LAG_MS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(300),
    )
}

#[tokio::test]
async fn without_home_regions_a_login_reaches_the_other_region_only_after_replication() {
    let (a, b, replicator) = two_regions(Duration::from_millis(500), false).await;
    replicator.set_lag(lag());
    // The items of one transaction (the old session's delete, the new one,
    // the user's count) land apart, in any order.
    replicator.set_jitter(Duration::from_millis(100));
    let mut took = Vec::new();
    for _ in 0..tries() {
        let cookie = browser_login(&a, "alice", ALICE_PASSWORD).await;
        let signed_in = Instant::now();
        loop {
            if whoami(&b, &cookie).await.unwrap() == StatusCode::OK {
                break;
            }
            assert!(
                signed_in.elapsed() < Duration::from_secs(20),
                "never replicated"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took.push(signed_in.elapsed());
    }
    eprintln!(
        "login in A -> valid in B, replication lag {:?}: {}",
        lag(),
        figures(took)
    );
    assert!(replicator.counts(0).0 > 0);
}

#[tokio::test]
async fn logout_in_one_region_is_refused_in_the_other_within_the_bound() {
    let (a, b, _replicator) = two_regions(lag(), true).await;
    let mut took = Vec::new();
    for _ in 0..tries() {
        let cookie = browser_login(&a, "alice", ALICE_PASSWORD).await;
        crate::harness::eventually("the login replicated", || async {
            whoami(&b, &cookie).await.unwrap() == StatusCode::OK
        })
        .await;
        // B has it cached now (a hit, on the long lease).
        assert_eq!(whoami(&b, &cookie).await.unwrap(), StatusCode::OK);
        assert_eq!(
            crate::harness::logout(&a, &cookie).await.unwrap(),
            StatusCode::SEE_OTHER
        );
        let out = Instant::now();
        loop {
            if whoami(&b, &cookie).await.unwrap() == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(out.elapsed() < Duration::from_secs(20), "B still serves it");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took.push(out.elapsed());
    }
    eprintln!(
        "logout in A -> refused in B, replication lag {:?}: {}",
        lag(),
        figures(took)
    );
}

#[tokio::test]
async fn a_partition_between_regions_holds_writes_until_it_heals() {
    let (a, b, replicator) = two_regions(Duration::from_millis(100), false).await;
    replicator.partition(true);
    let cookie = browser_login(&a, "alice", ALICE_PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Region B has not heard of it: to B it is an unknown token.
    assert_eq!(whoami(&b, &cookie).await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(&a, &cookie).await.unwrap(), StatusCode::OK);
    replicator.partition(false);
    crate::harness::eventually("the login crosses once healed", || async {
        whoami(&b, &cookie).await.unwrap() == StatusCode::OK
    })
    .await;
    // One direction slower than the other.
    replicator.delay_from(0, Duration::from_millis(1500));
    let slow = browser_login(&a, "alice", ALICE_PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(whoami(&b, &slow).await.unwrap(), StatusCode::UNAUTHORIZED);
    replicator.delay_from(0, Duration::ZERO);
    crate::harness::eventually("the slow direction delivers", || async {
        whoami(&b, &slow).await.unwrap() == StatusCode::OK
    })
    .await;
    // A direction that drops (a region's writes lost on the way) never
    // delivers them, even once it carries writes again.
    replicator.drop_from(1, true);
    let in_b = browser_login(&b, "alice", ALICE_PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    replicator.drop_from(1, false);
    let later = browser_login(&b, "alice", ALICE_PASSWORD).await;
    crate::harness::eventually("later writes cross", || async {
        whoami(&a, &later).await.unwrap() == StatusCode::OK
    })
    .await;
    assert_eq!(whoami(&a, &in_b).await.unwrap(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_in_one_region_is_valid_in_the_other_before_replication() {
    let (a, b, replicator) = two_regions(lag(), true).await;
    let mut took = Vec::new();
    for _ in 0..tries() {
        let cookie = browser_login(&a, "alice", ALICE_PASSWORD).await;
        assert_eq!(cookie.len(), 44, "a token naming its home region");
        let asked = Instant::now();
        // At once: the replicator has not carried it to B yet.
        assert_eq!(whoami(&b, &cookie).await.unwrap(), StatusCode::OK);
        took.push(asked.elapsed());
    }
    eprintln!(
        "login in A -> valid in B at once (replication lag {:?}), {} of {}: {}",
        lag(),
        took.len(),
        tries(),
        figures(took)
    );
    // Sessions homed in B are B's own.
    let in_b = browser_login(&b, "alice", ALICE_PASSWORD).await;
    assert_eq!(whoami(&a, &in_b).await.unwrap(), StatusCode::OK);
    drop(replicator);
}

#[tokio::test]
async fn a_token_whose_home_was_altered_only_misses() {
    let (a, b, _replicator) = two_regions(Duration::from_millis(100), true).await;
    let cookie = browser_login(&a, "alice", ALICE_PASSWORD).await;
    let token = edge_session::SessionToken::parse(&cookie).unwrap();
    assert_eq!(token.home(), Some(0));
    // The same random part, homed in B: another key, no session anywhere.
    let moved = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut bytes = engine.decode(&cookie).unwrap();
        bytes[0] = 0x80 | 1;
        engine.encode(bytes)
    };
    for node in [&a, &b] {
        assert_eq!(
            whoami(node, &moved).await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(whoami(&b, &cookie).await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn partition_between_regions_follows_the_outage_semantics() {
    let Some(url) = harness_url() else {
        return;
    };
    let tables = [crate::harness::table_name(), crate::harness::table_name()];
    // B reaches A's replica through a proxy the test can cut.
    let proxy = crate::faultproxy::FaultProxy::to_harness()
        .await
        .expect("a plain HTTP endpoint");
    let a = region_node(&tables, 0, Some(&url)).await;
    let b = region_node(&tables, 1, Some(&proxy.url())).await;
    let replicator = Replicator::start([&tables[0], &tables[1]], Duration::from_millis(100)).await;
    let mine = browser_login(&b, "alice", ALICE_PASSWORD).await;
    replicator.partition(true);
    proxy.set(crate::faultproxy::Fault::Refuse);
    let theirs = browser_login(&a, "alice", ALICE_PASSWORD).await;
    // A session homed in A that B cannot confirm is an outage there (503),
    // not a sign-out; B's own sessions are served as ever.
    assert_eq!(
        whoami(&b, &theirs).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(whoami(&b, &mine).await.unwrap(), StatusCode::OK);
    assert_eq!(whoami(&a, &theirs).await.unwrap(), StatusCode::OK);
    proxy.set(crate::faultproxy::Fault::Pass);
    replicator.partition(false);
    crate::harness::eventually("healed, B reads A's session", || async {
        whoami(&b, &theirs).await.unwrap() == StatusCode::OK
    })
    .await;
}

/// The item of the session `cookie` names, in `node`'s own replica.
async fn item_in(node: &TestNode, cookie: &str) -> bool {
    let key = edge_session::SessionToken::parse(cookie)
        .unwrap()
        .storage_key();
    node.store
        .dynamo()
        .get(key.as_bytes())
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn concurrent_write_in_the_other_region_cannot_resurrect_a_logged_out_session() {
    let Some(url) = harness_url() else {
        return;
    };
    let tables = [crate::harness::table_name(), crate::harness::table_name()];
    let touch_often = "[session]\ntouch_interval_secs = 1\n";
    let a = region_node_with(&tables, 0, Some(&url), touch_often).await;
    let b = region_node_with(&tables, 1, Some(&url), touch_often).await;
    let lag = Duration::from_millis(1500);
    let _replicator = Replicator::start([&tables[0], &tables[1]], lag).await;
    let cookie = browser_login(&a, "alice", ALICE_PASSWORD).await;
    // B serves it (from its home at first), and its replica gets it.
    assert_eq!(whoami(&b, &cookie).await.unwrap(), StatusCode::OK);
    crate::harness::eventually("replicated to B", || item_in(&b, &cookie)).await;
    // B's copy is due a touch; A signs the session out; B serves a request
    // before the delete has replicated there. A touch written in B's
    // replica would be later than the delete and win over it everywhere.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        crate::harness::logout(&a, &cookie).await.unwrap(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(whoami(&b, &cookie).await.unwrap(), StatusCode::UNAUTHORIZED);
    // Once everything has replicated, it is gone from both replicas and
    // neither region serves it.
    tokio::time::sleep(lag * 3).await;
    assert!(!item_in(&a, &cookie).await, "back in A's replica");
    assert!(!item_in(&b, &cookie).await, "back in B's replica");
    for node in [&a, &b] {
        assert_eq!(
            whoami(node, &cookie).await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn logout_everywhere_reaches_sessions_homed_in_every_region() {
    let (a, b, replicator) = two_regions(Duration::from_millis(200), true).await;
    // Nothing replicates meanwhile: each region holds only its own.
    replicator.partition(true);
    let in_a = browser_login(&a, "alice", ALICE_PASSWORD).await;
    let in_b = browser_login(&b, "alice", ALICE_PASSWORD).await;
    assert_eq!(whoami(&b, &in_b).await.unwrap(), StatusCode::OK);
    let res = a
        .v1(reqwest::Method::DELETE, "/v1/users/alice/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["revoked"], 2, "{body}");
    assert_eq!(whoami(&a, &in_a).await.unwrap(), StatusCode::UNAUTHORIZED);
    // B's own session, cached there, is refused once B's stream carries
    // the delete A made in B's replica: no replication involved.
    crate::harness::eventually("B refuses its own session", || async {
        whoami(&b, &in_b).await.unwrap() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(!item_in(&b, &in_b).await);
    replicator.partition(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (node, cookie) in [(&a, &in_a), (&b, &in_b), (&a, &in_b), (&b, &in_a)] {
        assert_eq!(
            whoami(node, cookie).await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
    }
}

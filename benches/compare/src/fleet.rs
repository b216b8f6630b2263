//! A fleet of nodes following one table, under DynamoDB Streams' read
//! limits: how fast a revocation reaches every node, what each node asks of
//! DynamoDB, and which lease each node is on.
//!
//! The nodes are in-process followers ([`StreamFollower`], the node's own,
//! with the node's own lease rule, [`lease_of`]), each with its own SDK
//! client and access key id, all
//! reading through one [`StreamsLimitProxy`] in front of the embedded
//! server. A writer (its own key id, counted apart) creates sessions, then
//! deletes them at a fixed rate through [`DynamoTier::delete`], the write a
//! logout makes. A node has a revocation once its follower handed it over:
//! the node's sink applies it in microseconds after that.
//!
//! A run has three phases: warm-up (every follower polled once, the
//! sessions created), idle (nothing written: the fleet's resting cost), and
//! load (deletes at `rate` a second). Propagation is measured from the
//! moment DynamoDB acknowledged the delete to the moment each node's
//! follower handed it over; a revocation a node has not seen `give_up`
//! after the load phase ended is missed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use edge_session::config::{CacheConfig, StreamSource};
use edge_session::{lease_of, CoherenceSettings, EmbeddedDynamo};
use edge_session_sync::{
    ClientSettings, DynamoTier, Endpoint, FollowerSettings, FollowerStatus, Invalidation,
    InvalidationKind, Item, MemoryCheckpoints, StreamFollower, SID_LEN,
};
use edge_session_test_support::streams_limits::{OpCounts, StreamsLimitProxy, StreamsLimits};
use tokio::sync::{mpsc, watch};

/// One fleet run.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Followers.
    pub nodes: usize,
    /// What they follow.
    pub source: StreamSource,
    /// What the proxy enforces.
    pub limits: StreamsLimits,
    /// Deletes a second in the load phase.
    pub rate: f64,
    /// Length of the idle phase.
    pub idle: Duration,
    /// Length of the load phase.
    pub load: Duration,
    /// Each follower's pause between reads (the node's `stream.poll_interval_ms`).
    pub poll_interval: Duration,
    /// The node's `stream.lag_threshold_ms`, `cache.revalidate_after_ms`
    /// and `cache.revalidate_after_lagging_ms`.
    pub lease: CoherenceSettings,
    /// How long after the load phase a revocation may still arrive.
    pub give_up: Duration,
}

impl FleetSpec {
    /// A run with the node's defaults.
    pub fn new(nodes: usize, source: StreamSource) -> Self {
        let poll_interval = FollowerSettings::default().poll_interval;
        let cache = CacheConfig::default();
        FleetSpec {
            nodes,
            source,
            limits: StreamsLimits::default(),
            rate: 100.0,
            idle: Duration::from_secs(5),
            load: Duration::from_secs(10),
            poll_interval,
            lease: CoherenceSettings {
                poll_interval,
                heartbeat_every: None,
                lag_threshold_ms: 3000,
                revalidate_after_ms: cache.revalidate_after_ms,
                revalidate_after_lagging_ms: cache.revalidate_after_lagging_ms,
            },
            give_up: Duration::from_secs(10),
        }
    }
}

/// Calls a second per node in one phase, by service.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// DynamoDB calls (`DescribeTable`, `Query`) per node per second.
    pub dynamodb: f64,
    /// DynamoDB Streams calls (`DescribeStream`, `GetShardIterator`,
    /// `GetRecords`) per node per second.
    pub streams: f64,
    /// Calls the proxy throttled, per node per second.
    pub throttled: f64,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct FleetReport {
    /// The spec's node count.
    pub nodes: usize,
    /// The spec's source.
    pub source: StreamSource,
    /// Revocations written in the load phase.
    pub revocations: usize,
    /// (node, revocation) pairs delivered, and their delay, sorted.
    pub delays: Vec<Duration>,
    /// (node, revocation) pairs never delivered within `give_up`.
    pub missed: usize,
    /// Idle phase.
    pub idle: Rates,
    /// Load phase.
    pub load: Rates,
    /// The writer's DynamoDB calls a second in the load phase.
    pub writer_per_sec: f64,
    /// Nodes on the long lease at every sample of idle and load.
    pub nodes_always_long: usize,
    /// Share of (node, sample) pairs on the short lease, idle and load.
    pub short_lease_share: f64,
    /// The shortest lease any node had in idle and load (ms).
    pub lowest_lease_ms: u64,
}

impl FleetReport {
    /// The delay below which share `p` of delivered pairs lie; a missed pair
    /// counts as longer than any.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let total = self.delays.len() + self.missed;
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 - 1.0) * p).round() as usize;
        self.delays.get(rank).copied()
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A node's follower, running.
struct Node {
    status: FollowerStatus,
    task: tokio::task::JoinHandle<()>,
}

/// Client settings of one reader or writer of the fleet: its own key id.
fn client_for(proxy: &StreamsLimitProxy, who: &str) -> ClientSettings {
    ClientSettings {
        endpoint: Endpoint::Static {
            url: proxy.url(),
            access_key_id: who.to_owned(),
            secret_access_key: "fleet".to_owned(),
        },
        ..ClientSettings::default()
    }
}

/// Start node `index`'s follower; every handed-over removal goes to
/// `arrivals` as (node, session key, when).
async fn start_node(
    spec: &FleetSpec,
    proxy: &StreamsLimitProxy,
    table: &str,
    index: usize,
    arrivals: mpsc::UnboundedSender<(usize, [u8; SID_LEN], Instant)>,
    stop: watch::Receiver<bool>,
) -> Node {
    let client = client_for(proxy, &format!("node-{index:03}"));
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let sink = move |batch: Vec<Invalidation>| {
        let now = Instant::now();
        for inv in batch {
            if inv.kind == InvalidationKind::Removed {
                let _ = arrivals.send((index, inv.sid, now));
            }
        }
        std::future::ready(Ok::<(), String>(()))
    };
    let mut stop_rx = stop;
    let shutdown = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    // Only the stream is followed in process: relays run as node processes.
    let settings = FollowerSettings {
        poll_interval: spec.poll_interval,
        ..FollowerSettings::default()
    };
    let f = StreamFollower::new(
        client.build().await,
        client.build_streams().await,
        table,
        checkpoints,
        settings,
    );
    let status = f.status();
    let task = tokio::spawn(async move { drop(f.run(sink, shutdown).await) });
    Node { status, task }
}

/// Sum the proxy's counts into per-node rates over `elapsed`.
fn rates(counts: &BTreeMap<(String, String), OpCounts>, nodes: usize, elapsed: Duration) -> Rates {
    let mut out = Rates::default();
    for ((reader, op), c) in counts {
        if !reader.starts_with("node-") {
            continue;
        }
        let calls = (c.forwarded + c.throttled) as f64;
        match op.as_str() {
            "DescribeStream" | "GetShardIterator" | "GetRecords" | "ListStreams" => {
                out.streams += calls
            }
            _ => out.dynamodb += calls,
        }
        out.throttled += c.throttled as f64;
    }
    let per = (nodes.max(1) as f64) * elapsed.as_secs_f64().max(1e-9);
    Rates {
        dynamodb: out.dynamodb / per,
        streams: out.streams / per,
        throttled: out.throttled / per,
    }
}

/// The writer's calls a second over `elapsed`.
fn writer_rate(counts: &BTreeMap<(String, String), OpCounts>, elapsed: Duration) -> f64 {
    let calls: u64 = counts
        .iter()
        .filter(|((reader, _), _)| reader == "writer")
        .map(|(_, c)| c.forwarded + c.throttled)
        .sum();
    calls as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Lease samples of every node, every 250 ms, until `stop`.
#[derive(Default)]
struct LeaseSamples {
    /// Per node: samples on the short lease.
    short: Vec<usize>,
    samples: usize,
    lowest_ms: u64,
}

fn sample_leases(statuses: &[FollowerStatus], lease: &CoherenceSettings, into: &mut LeaseSamples) {
    let now = SystemTime::now();
    if into.short.is_empty() {
        into.short = vec![0; statuses.len()];
        into.lowest_ms = u64::MAX;
    }
    into.samples += 1;
    for (i, status) in statuses.iter().enumerate() {
        let ms = lease_of(status, now, lease);
        into.lowest_ms = into.lowest_ms.min(ms);
        if ms < lease.revalidate_after_ms {
            into.short[i] += 1;
        }
    }
}

/// Wait `phase`, sampling the leases.
async fn sampled(
    phase: Duration,
    statuses: &[FollowerStatus],
    spec: &FleetSpec,
    into: &mut LeaseSamples,
) {
    let end = Instant::now() + phase;
    while Instant::now() < end {
        sample_leases(statuses, &spec.lease, into);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn session(byte_index: usize) -> Item {
    let mut sid = [0u8; SID_LEN];
    sid[..8].copy_from_slice(&(byte_index as u64).to_be_bytes());
    sid[8] = 0xf1;
    let exp = unix_ms(SystemTime::now()) / 1000 + 3600;
    Item {
        sid,
        uid: None,
        ver: 1,
        exp,
        body: vec![0; 64],
    }
}

/// Run one fleet; see the [module docs](self).
pub async fn run(spec: &FleetSpec) -> anyhow::Result<FleetReport> {
    let server = EmbeddedDynamo::start_temporary(Duration::from_secs(3600))
        .context("starting the embedded DynamoDB server")?;
    let proxy = StreamsLimitProxy::start(server.addr(), spec.limits)?;
    let table = "fleet";
    let writer = DynamoTier::new(client_for(&proxy, "writer").build().await, table);
    writer
        .provision()
        .await
        .context("provisioning the fleet's table")?;

    let (stop, stopped) = watch::channel(false);
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let mut nodes = Vec::with_capacity(spec.nodes);
    for i in 0..spec.nodes {
        nodes.push(start_node(spec, &proxy, table, i, arrivals_tx.clone(), stopped.clone()).await);
    }
    drop(arrivals_tx);
    let statuses: Vec<FollowerStatus> = nodes.iter().map(|n| n.status.clone()).collect();

    // Warm-up: every follower positioned, the sessions written.
    let count = (spec.rate * spec.load.as_secs_f64()).ceil() as usize;
    let sessions: Vec<Item> = (0..count).map(session).collect();
    for item in &sessions {
        writer
            .create(item)
            .await?
            .map_err(|_| anyhow::anyhow!("session exists"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while statuses.iter().any(|s| s.covered_since().is_none()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "followers not positioned within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    while arrivals.try_recv().is_ok() {}

    let mut leases = LeaseSamples::default();
    proxy.reset_counts();
    let idle_start = Instant::now();
    sampled(spec.idle, &statuses, spec, &mut leases).await;
    let idle = rates(&proxy.counts(), spec.nodes, idle_start.elapsed());

    proxy.reset_counts();
    let load_start = Instant::now();
    let writes = tokio::spawn(revoke_at_rate(writer.clone(), sessions, spec.rate));
    sampled(spec.load, &statuses, spec, &mut leases).await;
    let acked = writes.await.context("the writer panicked")??;
    let load_elapsed = load_start.elapsed();
    let counts = proxy.counts();
    let load = rates(&counts, spec.nodes, load_elapsed);
    let writer_per_sec = writer_rate(&counts, load_elapsed);

    let (delays, missed) = collect(&mut arrivals, &acked, spec).await;
    let _ = stop.send(true);
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), node.task).await;
    }
    server.stop();
    let always_long = leases.short.iter().filter(|s| **s == 0).count();
    let short_total: usize = leases.short.iter().sum();
    Ok(FleetReport {
        nodes: spec.nodes,
        source: spec.source,
        revocations: acked.len(),
        delays,
        missed,
        idle,
        load,
        writer_per_sec,
        nodes_always_long: always_long,
        short_lease_share: short_total as f64 / (leases.samples.max(1) * spec.nodes.max(1)) as f64,
        lowest_lease_ms: leases.lowest_ms,
    })
}

/// Delete every session, `rate` a second, on schedule; when each delete
/// was acknowledged.
async fn revoke_at_rate(
    writer: DynamoTier,
    sessions: Vec<Item>,
    rate: f64,
) -> anyhow::Result<HashMap<[u8; SID_LEN], Instant>> {
    let start = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut acked = HashMap::with_capacity(sessions.len());
    for (i, item) in sessions.iter().enumerate() {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let deleted = writer
            .delete(&item.sid)
            .await
            .context("a revocation failed")?;
        anyhow::ensure!(deleted, "the session to revoke was missing");
        acked.insert(item.sid, Instant::now());
    }
    Ok(acked)
}

/// Match arrivals to acknowledgements until every node has every
/// revocation or `give_up` passed.
async fn collect(
    arrivals: &mut mpsc::UnboundedReceiver<(usize, [u8; SID_LEN], Instant)>,
    acked: &HashMap<[u8; SID_LEN], Instant>,
    spec: &FleetSpec,
) -> (Vec<Duration>, usize) {
    let expected = acked.len() * spec.nodes;
    let mut seen: HashMap<(usize, [u8; SID_LEN]), Duration> = HashMap::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + spec.give_up;
    while seen.len() < expected {
        let next = tokio::time::timeout_at(deadline, arrivals.recv()).await;
        let Ok(Some((node, sid, at))) = next else {
            break;
        };
        if let Some(acked_at) = acked.get(&sid) {
            // Handed over before the writer's own clock read the ack: zero.
            let delay = at.saturating_duration_since(*acked_at);
            seen.entry((node, sid)).or_insert(delay);
        }
    }
    let mut delays: Vec<Duration> = seen.into_values().collect();
    delays.sort();
    let missed = expected - delays.len();
    (delays, missed)
}

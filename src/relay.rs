//! Relays (`stream.source = "relays"`): how a region of any size follows the
//! table's stream, which DynamoDB Streams serves to two readers per shard.
//!
//! - **Slots.** A region (`relay.region`) has `relay.slots` relay slots (two
//!   by default), each an item in the table with a fencing epoch (`sync`'s
//!   relay module); a global table's regions each elect their own. A
//!   node with `relay.listen` is a candidate: it claims a free slot, or one
//!   whose holder has not renewed it for `relay.lease_ms` (as this node's
//!   own clock measures it), and holds at most one.
//! - **Relaying.** A holder reads every shard of the stream with its own
//!   [`StreamFollower`] (positions flushed to the table every `relay.beat_ms`,
//!   so a successor in the slot resumes them), writes a heartbeat item, and
//!   publishes each batch, and each of its heartbeats that comes back through
//!   the stream, as signed frames with dense sequence numbers on its feed
//!   (`server`, `hub`, `frame`). It polls each shard at most every 450 ms,
//!   so two relays stay within Streams' five `GetRecords` a second.
//! - **Links.** Every node (holders too) reads the slot items every
//!   `relay.beat_ms` and keeps a link to each holder's feed (`subscribe`),
//!   applying each invalidation once, whichever relay delivers it first.
//! - **The lease.** A node counts its relays live only while a link's newest
//!   heartbeat, relay's age plus the time since it arrived, is within
//!   `stream.lag_threshold_ms`; otherwise every cached record gets the short
//!   lease. A record confirmed before every connected link was continuous
//!   (a cold start, a relay that lost frames, a new epoch on the only link)
//!   gets the short lease too (tier rule 6's coverage).
//!
//! So another node's revocation is refused here within a relay's delivery
//! time while one relay is live (two `GetRecords` intervals plus a push);
//! within `stream.lag_threshold_ms` + `cache.revalidate_after_lagging_ms` +
//! 250 ms when every relay is gone; and never later than
//! `cache.revalidate_after_ms`. Per node the table sees `relay.slots`
//! strongly consistent reads per `relay.beat_ms`, however large the fleet;
//! a holder adds a renewal, a checkpoint flush and a heartbeat write per
//! beat.

mod frame;
mod hub;
mod server;
mod subscribe;

use std::net::TcpListener;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::record::UnixMillis;
use crate::store::TieredStore;
use edge_session_sync::{
    ClientSettings, ColdStart, FollowerSettings, RelaySlot, SlotId, StreamFollower,
    TableCheckpoints,
};
use frame::Body;
use hub::{Hub, RING_FRAMES};
use subscribe::{lock, Link, LinkState, Seen};

/// How often a holder polls each shard at most: two relays then make at
/// most 4.4 `GetRecords` a second per shard, within Streams' five.
const RELAY_POLL_FLOOR: Duration = Duration::from_millis(450);

/// A random id naming this process as a slot's holder.
pub(crate) fn owner_id() -> String {
    frame::nonce()
}

/// What `relay::run` needs.
#[derive(Clone)]
pub struct RelaySettings {
    /// The fleet secret.
    pub secret: Arc<[u8]>,
    /// Bound at build, when this node is a candidate.
    pub listener: Option<Arc<TcpListener>>,
    /// How others reach this node's feed.
    pub advertise_url: String,
    /// How this node names itself to the relays it subscribes to (its
    /// public address): a relay logs who subscribes.
    pub node: String,
    /// The region whose slots these are (`relay.region`).
    pub region: String,
    /// Slots in the region.
    pub slots: u8,
    /// A holder not renewed for this long loses its slot.
    pub lease: Duration,
    /// Renewal, flush and slot-read interval.
    pub beat: Duration,
    /// The stream poll interval (floored at 450 ms for a holder).
    pub poll_interval: Duration,
    /// A holder's heartbeat interval.
    pub heartbeat_every: Duration,
    /// Relays count as live while a heartbeat is this fresh.
    pub lag_threshold_ms: u64,
    /// The lease while live: `cache.revalidate_after_ms`.
    pub revalidate_after_ms: u64,
    /// The lease otherwise: `cache.revalidate_after_lagging_ms`.
    pub revalidate_after_lagging_ms: u64,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("advertise_url", &self.advertise_url)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

/// A slot as this node last read it, and since when it stood still.
#[derive(Debug, Clone)]
pub struct SlotSeen {
    /// The holder, if any.
    pub holder: Option<RelaySlot>,
    /// When this node first saw the current epoch and beat.
    pub still_since: Instant,
}

/// Relay (when this node holds a slot) and follow the relays, keeping the
/// lease in step, until `shutdown` resolves.
pub async fn run(
    store: TieredStore,
    client: ClientSettings,
    settings: RelaySettings,
    clock: fn() -> UnixMillis,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let short = settings
        .revalidate_after_lagging_ms
        .min(settings.revalidate_after_ms);
    store.set_coverage(None, short);
    store.set_revalidate_after_ms(short);
    let slots = settings.slots as usize;
    let initial = vec![
        SlotSeen {
            holder: None,
            still_since: Instant::now(),
        };
        slots
    ];
    let (slots_tx, slots_rx) = watch::channel(initial);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_slots(store.clone(), settings.clone(), slots_tx));

    let hubs: server::Current = Arc::new(RwLock::new(None));
    let (stop_candidate, candidate_stopped) = oneshot::channel::<()>();
    let candidate = match &settings.listener {
        Some(listener) => {
            let listener = listener.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            });
            match listener {
                Ok(listener) => {
                    tasks.spawn(server::serve(
                        listener,
                        Arc::clone(&settings.secret),
                        Arc::clone(&hubs),
                    ));
                    Some(tokio::spawn(candidate(
                        store.clone(),
                        client.clone(),
                        settings.clone(),
                        slots_rx.clone(),
                        Arc::clone(&hubs),
                        candidate_stopped,
                    )))
                }
                Err(err) => {
                    tracing::error!(%err, "relay.listen unusable: this node will not relay");
                    None
                }
            }
        }
        None => None,
    };

    let seen = Arc::new(Mutex::new(Seen::default()));
    let links: Vec<Link> = (0..slots).map(|_| Link::default()).collect();
    for (slot, link) in links.iter().enumerate() {
        tasks.spawn(subscribe::follow(
            slot,
            slots_rx.clone(),
            Arc::clone(link),
            subscribe::Context {
                store: store.clone(),
                secret: Arc::clone(&settings.secret),
                seen: Arc::clone(&seen),
                clock,
                node: settings.node.as_str().into(),
            },
        ));
    }
    tokio::select! {
        _ = shutdown => {}
        _ = watchdog(store.clone(), &links, &settings) => {}
    }
    let _ = stop_candidate.send(());
    if let Some(candidate) = candidate {
        let _ = candidate.await;
    }
    tasks.abort_all();
}

/// Read every slot each beat; publish what was seen and since when each
/// stood still.
async fn watch_slots(
    store: TieredStore,
    settings: RelaySettings,
    slots_tx: watch::Sender<Vec<SlotSeen>>,
) {
    let mut tick = tokio::time::interval(settings.beat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut next = slots_tx.borrow().clone();
        let mut changed = false;
        for (slot, seen) in next.iter_mut().enumerate() {
            let read = store
                .dynamo()
                .read_relay_slot(SlotId::new(&settings.region, slot as u8))
                .await;
            let holder = match read {
                Ok(holder) => holder,
                Err(err) => {
                    tracing::debug!(%err, slot, "relay slot not read");
                    continue;
                }
            };
            let same = |a: &Option<RelaySlot>, b: &Option<RelaySlot>| {
                a.as_ref().map(|s| (s.epoch, s.beat)) == b.as_ref().map(|s| (s.epoch, s.beat))
            };
            if !same(&seen.holder, &holder) {
                seen.still_since = Instant::now();
                changed |= seen.holder.as_ref().map(|s| (s.epoch, &s.url))
                    != holder.as_ref().map(|s| (s.epoch, &s.url));
                seen.holder = holder;
            }
        }
        // Subscribers wake only when a holder changed; candidates read the
        // latest value at their own pace.
        if changed {
            slots_tx.send_replace(next);
        } else {
            slots_tx.send_if_modified(|current| {
                *current = next;
                false
            });
        }
    }
}

/// Claim a slot when one is free or stale, relay while holding it.
async fn candidate(
    store: TieredStore,
    client: ClientSettings,
    settings: RelaySettings,
    slots: watch::Receiver<Vec<SlotSeen>>,
    hubs: server::Current,
    mut stop: oneshot::Receiver<()>,
) {
    let owner = frame::nonce();
    let mut holding: Option<Relaying> = None;
    let mut last_renewed = Instant::now();
    let mut tick = tokio::time::interval(settings.beat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let tier = store.dynamo();
        if let Some(relaying) = &holding {
            match tier
                .renew_relay_slot(
                    SlotId::new(&settings.region, relaying.slot),
                    relaying.epoch,
                    &owner,
                )
                .await
            {
                Ok(true) => {
                    last_renewed = Instant::now();
                    if let Err(err) = relaying.checkpoints.flush().await {
                        tracing::warn!(%err, "relay positions not flushed; the next beat retries");
                    }
                }
                Ok(false) => {
                    tracing::warn!(
                        slot = relaying.slot,
                        "relay slot taken over: relaying stops"
                    );
                    stop_relaying(holding.take(), &hubs).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "relay slot not renewed");
                    // Stop before anyone may take the slot over.
                    if last_renewed.elapsed() + settings.beat >= settings.lease {
                        stop_relaying(holding.take(), &hubs).await;
                    }
                }
            }
            continue;
        }
        let seen = slots.borrow().clone();
        for (slot, s) in seen.iter().enumerate() {
            let claim = match &s.holder {
                None => Some(None),
                Some(h) if h.owner != owner && s.still_since.elapsed() >= settings.lease => {
                    Some(Some((h.epoch, h.beat)))
                }
                _ => None,
            };
            let Some(seen_hold) = claim else { continue };
            match tier
                .claim_relay_slot(
                    SlotId::new(&settings.region, slot as u8),
                    seen_hold,
                    &owner,
                    &settings.advertise_url,
                )
                .await
            {
                Ok(Some(epoch)) => {
                    tracing::info!(slot, epoch, "holding a relay slot: relaying the stream");
                    match Relaying::start(&store, &client, &settings, slot as u8, epoch, &hubs)
                        .await
                    {
                        Ok(relaying) => {
                            holding = Some(relaying);
                            last_renewed = Instant::now();
                        }
                        Err(err) => {
                            tracing::warn!(%err, "relay positions not read; giving the slot up");
                            let id = SlotId::new(&settings.region, slot as u8);
                            let _ = tier.release_relay_slot(id, epoch, &owner).await;
                        }
                    }
                    break;
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(%err, slot, "relay slot not claimed"),
            }
        }
    }
    if let Some(relaying) = holding.take() {
        let (slot, epoch) = (relaying.slot, relaying.epoch);
        let checkpoints = Arc::clone(&relaying.checkpoints);
        stop_relaying(Some(relaying), &hubs).await;
        let _ = checkpoints.flush().await;
        let id = SlotId::new(&settings.region, slot);
        let _ = store.dynamo().release_relay_slot(id, epoch, &owner).await;
    }
}

/// A held slot: the follower and what watches it.
struct Relaying {
    slot: u8,
    epoch: u64,
    checkpoints: Arc<TableCheckpoints>,
    stop: oneshot::Sender<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relaying {
    async fn start(
        store: &TieredStore,
        client: &ClientSettings,
        settings: &RelaySettings,
        slot: u8,
        epoch: u64,
        hubs: &server::Current,
    ) -> Result<Relaying, edge_session_sync::DynamoError> {
        let id = SlotId::new(&settings.region, slot);
        let checkpoints = TableCheckpoints::load(store.dynamo().clone(), id).await?;
        // A successor in the slot resumes its predecessor's positions.
        let resumed = checkpoints.snapshot().len();
        metrics::gauge!("edge_session_relay_resumed_shards").set(resumed as f64);
        tracing::info!(
            slot,
            epoch,
            resumed_shards = resumed,
            "relay positions read"
        );
        let hub = Hub::new(epoch, RING_FRAMES);
        *hubs.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&hub));
        let follower = StreamFollower::new(
            client.build().await,
            client.build_streams().await,
            store.dynamo().table(),
            Arc::clone(&checkpoints) as Arc<dyn edge_session_sync::Checkpoints>,
            FollowerSettings {
                poll_interval: settings.poll_interval.max(RELAY_POLL_FLOOR),
                heartbeat_every: Some(settings.heartbeat_every),
                cold_start: ColdStart::Latest,
                ..FollowerSettings::default()
            },
        );
        let status = follower.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let sink_hub = Arc::clone(&hub);
        let sink = move |batch: Vec<edge_session_sync::Invalidation>| {
            let hub = Arc::clone(&sink_hub);
            async move {
                hub.publish(Body::Batch {
                    inv: subscribe::relayed(&batch),
                });
                Ok::<(), std::convert::Infallible>(())
            }
        };
        let (stop_watch, watch_stopped) = watch::channel(false);
        let run = tokio::spawn(async move {
            if let Err(err) = follower
                .run(sink, async {
                    let _ = stopped.await;
                })
                .await
            {
                tracing::error!(%err, "the relay's stream follower stopped");
            }
            let _ = stop_watch.send(true);
        });
        let watcher = tokio::spawn(watch_follower(hub, status, watch_stopped));
        metrics::gauge!("edge_session_relay_holding").set(1.0);
        Ok(Relaying {
            slot,
            epoch,
            checkpoints,
            stop,
            tasks: vec![run, watcher],
        })
    }
}

/// Stop relaying: the follower ends, the hub is no longer served.
async fn stop_relaying(relaying: Option<Relaying>, hubs: &server::Current) {
    *hubs.write().unwrap_or_else(|e| e.into_inner()) = None;
    metrics::gauge!("edge_session_relay_holding").set(0.0);
    if let Some(relaying) = relaying {
        let _ = relaying.stop.send(());
        for task in relaying.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Publish the follower's heartbeats as they come back, a reset when its
/// coverage moves, and open the hub once its position is taken.
async fn watch_follower(
    hub: Arc<Hub>,
    status: edge_session_sync::FollowerStatus,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_written: Option<u128> = None;
    let mut covered = None;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let since = status.covered_since();
        if since.is_some() && !hub.is_ready() {
            covered = since;
            hub.set_ready();
        } else if since != covered {
            covered = since;
            hub.publish(Body::Reset);
        }
        let now = SystemTime::now();
        if let Some(age) = status.heartbeat_age(now) {
            let written = now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                .saturating_sub(age.as_millis());
            if last_written != Some(written) {
                last_written = Some(written);
                hub.publish(Body::Beat {
                    age: age.as_millis() as u64,
                });
            }
        }
    }
}

/// Keep the lease and the coverage in step with the links.
async fn watchdog(store: TieredStore, links: &[Link], settings: &RelaySettings) {
    let short = settings
        .revalidate_after_lagging_ms
        .min(settings.revalidate_after_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut covered: Option<Option<SystemTime>> = None;
    loop {
        tick.tick().await;
        let states: Vec<LinkState> = links.iter().map(|l| lock(l).clone()).collect();
        let live = states
            .iter()
            .filter_map(LinkState::beat_age_ms)
            .any(|age| age <= settings.lag_threshold_ms);
        let since = states
            .iter()
            .filter(|s| s.connected)
            .filter_map(|s| s.continuous_since)
            .min();
        if covered != Some(since) {
            covered = Some(since);
            store.set_coverage(since.map(crate::coherence::unix_ms), short);
        }
        metrics::gauge!("edge_session_relay_links")
            .set(states.iter().filter(|s| s.connected).count() as f64);
        let lease = if live {
            settings.revalidate_after_ms
        } else {
            short
        };
        if lease != store.revalidate_after_ms() {
            if live {
                tracing::info!(lease_ms = lease, "relays live: lease restored");
            } else {
                tracing::warn!(lease_ms = lease, "no live relay: lease shortened");
            }
            store.set_revalidate_after_ms(lease);
        }
    }
}

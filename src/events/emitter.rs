//! The region's emitter: one node per region turns the stream into the
//! event log, and delivers the log to the webhooks.
//!
//! - **The slot.** Every node with `events.enabled` is a candidate for one
//!   slot item (the relays' kind, under `<relay.region>#events`): it claims
//!   the slot when free, or when its epoch and beat stood still for
//!   `events.lease_ms` on this node's own clock; the holder renews it every
//!   `events.beat_ms` and stops emitting before anyone may take it over.
//! - **Following.** The holder runs its own stream follower with its
//!   positions in the slot's checkpoint item (flushed every beat), so a
//!   successor resumes them: what it reads again is the same events (same
//!   ids), never a skip. On a first start it begins at the stream's end.
//! - **Appending.** Each batch's events are appended to the log before the
//!   batch is accepted, numbered densely from the log's head. A successor
//!   first finds the true head (from the flushed one, reading forward) and
//!   the ids logged since the flushed head, and appends none of those again.
//! - **Delivering.** While it holds the slot, the holder runs one delivery
//!   task per webhook (`webhooks`), which read the log from their cursors.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Mutex};

use super::webhooks::{self, Hook};
use super::Event;
use crate::store::TieredStore;
use edge_session_sync::{
    Appended, Change, ClientSettings, ColdStart, DynamoError, DynamoTier, EventLog,
    FollowerSettings, SlotId, StreamFollower, TableCheckpoints,
};

/// What [`run`] needs.
#[derive(Clone)]
pub struct EmitterSettings {
    /// The region (`relay.region`): its nodes share one emitter and one log.
    pub region: String,
    /// Renewal and flush interval.
    pub beat: Duration,
    /// A slot not renewed this long is taken over.
    pub lease: Duration,
    /// Each shard is polled at most this often.
    pub poll_interval: Duration,
    /// How long the log keeps an event.
    pub retention: Duration,
    /// The webhooks.
    pub hooks: Vec<Hook>,
    /// A webhook this far behind loses its oldest events.
    pub max_pending: u64,
}

/// Be a candidate for the region's emitter slot until `shutdown`; emit
/// while holding it.
pub async fn run(
    store: TieredStore,
    client: ClientSettings,
    settings: EmitterSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let tier = store.dynamo().clone();
    let slot = SlotId::new(&format!("{}#events", settings.region), 0);
    let owner = crate::relay::owner_id();
    let (stop_tx, stop) = watch::channel(false);
    let stopper = async {
        shutdown.await;
        // The holder (if any) sees it, flushes, and gives the slot up.
        let _ = stop_tx.send(true);
    };
    let candidate = async {
        let mut seen: Option<((u64, u64), Instant)> = None;
        let mut tick = tokio::time::interval(settings.beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopped = stop.clone();
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let claim = match tier.read_relay_slot(slot).await {
                Ok(None) => Some(None),
                Ok(Some(held)) => {
                    let at = (held.epoch, held.beat);
                    match seen {
                        Some((was, since)) if was == at => {
                            (since.elapsed() >= settings.lease).then_some(Some(at))
                        }
                        _ => {
                            seen = Some((at, Instant::now()));
                            None
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, "events: slot not read");
                    None
                }
            };
            let Some(claim) = claim else { continue };
            match tier.claim_relay_slot(slot, claim, &owner, "").await {
                Ok(Some(epoch)) => {
                    tracing::info!(epoch, "holding the events slot: emitting session events");
                    hold(&tier, &client, &settings, slot, epoch, &owner, stop.clone()).await;
                    seen = None;
                    if *stop.borrow() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(%err, "events: slot not claimed"),
            }
        }
    };
    tokio::join!(stopper, candidate);
}

/// Emit while holding the slot at `epoch`: until the slot is lost or `stop`.
async fn hold(
    tier: &DynamoTier,
    client: &ClientSettings,
    settings: &EmitterSettings,
    slot: SlotId,
    epoch: u64,
    owner: &str,
    stop: watch::Receiver<bool>,
) {
    let log = EventLog::new(&settings.region);
    let started = async {
        let checkpoints = TableCheckpoints::load(tier.clone(), slot).await?;
        let (head, recent) = recover(tier, log).await?;
        Ok::<_, DynamoError>((checkpoints, head, recent))
    };
    let (checkpoints, head, recent) = match started.await {
        Ok(started) => started,
        Err(err) => {
            tracing::warn!(%err, "events: positions or log head not read; giving the slot up");
            let _ = tier.release_relay_slot(slot, epoch, owner).await;
            return;
        }
    };
    tracing::info!(
        head,
        resumed_shards = checkpoints.snapshot().len(),
        "events: log resumed"
    );
    let appender = Arc::new(Appender {
        tier: tier.clone(),
        log,
        next: AtomicU64::new(head),
        state: Mutex::new(recent),
        retention: settings.retention,
        lease: Lease::new(settings.lease.saturating_sub(settings.beat)),
    });
    let follower = StreamFollower::new(
        client.build().await,
        client.build_streams().await,
        tier.table(),
        Arc::clone(&checkpoints) as Arc<dyn edge_session_sync::Checkpoints>,
        FollowerSettings {
            poll_interval: settings.poll_interval,
            cold_start: ColdStart::Latest,
            changes: true,
            ..FollowerSettings::default()
        },
    );
    let (halt_tx, halt) = watch::channel(false);
    let sink_appender = Arc::clone(&appender);
    let mut halted = halt.clone();
    let following = tokio::spawn(async move {
        let sink = move |_, changes: Vec<Change>| {
            let appender = Arc::clone(&sink_appender);
            async move { appender.append(changes).await }
        };
        let stopped = async move {
            let _ = halted.wait_for(|h| *h).await;
        };
        if let Err(err) = follower.run_changes(sink, stopped).await {
            tracing::error!(%err, "events: the stream follower stopped");
        }
    });
    let deliveries: Vec<_> = settings
        .hooks
        .iter()
        .map(|hook| {
            tokio::spawn(webhooks::deliver(
                tier.clone(),
                log,
                hook.clone(),
                Arc::clone(&appender) as Arc<dyn webhooks::Head>,
                settings.max_pending,
                halt.clone(),
            ))
        })
        .collect();
    metrics::gauge!("edge_session_events_emitter").set(1.0);
    let beats = Beats {
        tier,
        slot,
        epoch,
        owner,
        log,
        checkpoints: &checkpoints,
        appender: &appender,
    };
    let stopping = beats.run(settings, head, stop).await;
    let _ = halt_tx.send(true);
    let _ = following.await;
    for delivery in deliveries {
        let _ = delivery.await;
    }
    metrics::gauge!("edge_session_events_emitter").set(0.0);
    // Only a holder that stops of its own accord still holds the slot: one
    // that lost it writes nothing more.
    if stopping {
        let _ = tier
            .set_event_head(log, appender.next.load(Ordering::SeqCst))
            .await;
        let _ = checkpoints.flush().await;
        let _ = tier.release_relay_slot(slot, epoch, owner).await;
    }
}

/// Until when the slot is this holder's, as its own monotonic clock says:
/// a renewal asked at `t` and granted holds until `t + lease - beat`, so
/// nothing is appended or delivered once a candidate may have taken over.
pub(super) struct Lease {
    origin: Instant,
    length: Duration,
    /// Milliseconds after `origin`.
    until_ms: AtomicU64,
}

impl Lease {
    fn new(length: Duration) -> Lease {
        Lease {
            origin: Instant::now(),
            length,
            until_ms: AtomicU64::new(length.as_millis() as u64),
        }
    }

    fn renewed_at(&self, asked: Instant) {
        let until = asked.duration_since(self.origin) + self.length;
        self.until_ms
            .fetch_max(until.as_millis() as u64, Ordering::SeqCst);
    }

    /// Whether the slot is still this holder's.
    pub(super) fn holds(&self) -> bool {
        (self.origin.elapsed().as_millis() as u64) < self.until_ms.load(Ordering::SeqCst)
    }
}

/// What the holder does every beat.
struct Beats<'a> {
    tier: &'a DynamoTier,
    slot: SlotId,
    epoch: u64,
    owner: &'a str,
    log: EventLog,
    checkpoints: &'a TableCheckpoints,
    appender: &'a Appender,
}

impl Beats<'_> {
    /// Every beat: renew the slot, flush the head, then the positions,
    /// until `stop` (`true`: stopped of its own accord) or the slot is lost
    /// (`false`).
    async fn run(
        &self,
        settings: &EmitterSettings,
        head: u64,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        let (tier, slot, epoch, owner, log) =
            (self.tier, self.slot, self.epoch, self.owner, self.log);
        let (checkpoints, appender) = (self.checkpoints, self.appender);
        let mut flushed_head = head;
        let mut tick = tokio::time::interval(settings.beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A renewal that has not answered when the lease (less a beat) is up
        // is a lost slot: nothing is appended or delivered past it.
        let patience = settings.lease.saturating_sub(settings.beat);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break true,
                _ = tick.tick() => {}
            }
            let asked = Instant::now();
            let renewed = tokio::time::timeout(patience, tier.renew_relay_slot(slot, epoch, owner));
            match renewed.await {
                Ok(Ok(true)) => appender.lease.renewed_at(asked),
                Ok(Ok(false)) => {
                    tracing::warn!("events slot taken over: emitting stops");
                    break false;
                }
                Ok(Err(err)) => tracing::warn!(%err, "events slot not renewed"),
                Err(_) => tracing::warn!("events slot renewal timed out"),
            }
            if !appender.lease.holds() {
                tracing::warn!("events slot lease ran out: emitting stops");
                break false;
            }
            // The head before the positions: a successor never resumes positions
            // past events it does not know were logged.
            let next = appender.next.load(Ordering::SeqCst);
            if next != flushed_head && tier.set_event_head(log, next).await.is_ok() {
                flushed_head = next;
            }
            if let Err(err) = checkpoints.flush().await {
                tracing::warn!(%err, "events: positions not flushed; the next beat retries");
            }
        }
    }
}

/// The log's true head (the next free number: the flushed head, read
/// forward past every entry written since), and the ids of those entries.
async fn recover(tier: &DynamoTier, log: EventLog) -> Result<(u64, HashSet<String>), DynamoError> {
    let mut head = tier.event_head(log).await?.max(1);
    let mut recent = HashSet::new();
    loop {
        let batch = tier.read_events(log, head, 100).await?;
        let mut advanced = false;
        for entry in batch {
            if entry.number != head {
                break;
            }
            recent.insert(entry.id);
            head += 1;
            advanced = true;
        }
        if !advanced {
            return Ok((head, recent));
        }
    }
}

/// Appends events to the log; shared by the follower's sink, the beat and
/// the deliveries.
struct Appender {
    tier: DynamoTier,
    log: EventLog,
    /// The next free number.
    next: AtomicU64,
    /// Ids logged since the flushed head when this holder started: a
    /// record read again is not logged twice.
    state: Mutex<HashSet<String>>,
    retention: Duration,
    lease: Lease,
}

impl webhooks::Head for Appender {
    fn head(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    fn holding(&self) -> bool {
        self.lease.holds()
    }
}

impl Appender {
    /// Log the events of `changes`, in order: up to 100 at a time in one
    /// transaction (all or none: no number is left empty), one by one when
    /// a number was taken (by this holder's predecessor). An error fails
    /// the batch (the follower hands it over again; what was logged is not
    /// logged again).
    async fn append(&self, changes: Vec<Change>) -> Result<(), DynamoError> {
        let mut recent = self.state.lock().await;
        let exp = (SystemTime::now() + self.retention)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut pending: Vec<(Event, String)> = Vec::new();
        for change in &changes {
            let Some(event) = Event::of(change) else {
                continue;
            };
            if recent.contains(&event.id) {
                continue;
            }
            match serde_json::to_string(&event) {
                Ok(json) => pending.push((event, json)),
                Err(err) => tracing::warn!(%err, "events: an event did not serialize"),
            }
        }
        for chunk in pending.chunks(100) {
            if !self.lease.holds() {
                // The batch is handed over again, to whoever holds the slot.
                return Err(DynamoError::new_unavailable(
                    "event_append",
                    "the events slot's lease ran out",
                ));
            }
            let first = self.next.load(Ordering::SeqCst);
            let together = chunk.len() > 1 && {
                let entries: Vec<(String, String)> = chunk
                    .iter()
                    .map(|(e, json)| (e.id.clone(), json.clone()))
                    .collect();
                self.tier
                    .append_events(self.log, first, &entries, exp)
                    .await?
            };
            if together {
                self.next
                    .store(first + chunk.len() as u64, Ordering::SeqCst);
                for (event, _) in chunk {
                    recent.insert(event.id.clone());
                    metrics::counter!("edge_session_events_total", "type" => event.kind)
                        .increment(1);
                }
                continue;
            }
            for (event, json) in chunk {
                self.append_one(event, json, exp).await?;
                recent.insert(event.id.clone());
            }
        }
        // Only the ids since the flushed head matter; keep the set small.
        if recent.len() > 100_000 {
            recent.clear();
        }
        Ok(())
    }

    /// Log one event at the next free number.
    async fn append_one(&self, event: &Event, json: &str, exp: u64) -> Result<(), DynamoError> {
        loop {
            let number = self.next.load(Ordering::SeqCst);
            let appended = self
                .tier
                .append_event(self.log, number, &event.id, json, exp)
                .await?;
            self.next.store(number + 1, Ordering::SeqCst);
            match appended {
                Appended::Written => {
                    metrics::counter!("edge_session_events_total", "type" => event.kind)
                        .increment(1);
                    return Ok(());
                }
                // Logged already (by this holder's predecessor).
                Appended::Taken(id) if id == event.id => return Ok(()),
                Appended::Taken(_) => {}
            }
        }
    }
}

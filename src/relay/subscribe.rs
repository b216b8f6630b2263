//! A node's link to one relay slot: it connects to the feed of whoever
//! holds the slot (the URL and epoch in the slot's item), verifies every
//! frame, checks that sequence numbers are dense, applies invalidations
//! (once, whichever of the relays delivers them first), and keeps what the
//! lease watchdog needs: since when this link has been continuous, and its
//! newest heartbeat.
//!
//! A gap (a sequence number skipped) or a lost connection makes the link
//! resubscribe after its last frame; the relay says whether it could go on
//! from there. If it could not, or the slot has a new epoch, the link is
//! continuous only from the new hello: the node re-reads what it confirmed
//! before, unless the other relay's link was continuous all along.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::frame::{self, Body, Frame, Refused, NODE_HEADER};
use super::server::Lines;
use super::SlotSeen;
use crate::record::UnixMillis;
use crate::store::TieredStore;
use edge_session_sync::{Invalidation, InvalidationKind};

/// What the watchdog reads of a link.
#[derive(Debug, Default, Clone)]
pub struct LinkState {
    /// Connected and past a verified hello.
    pub connected: bool,
    /// Since when every frame of the relay reached this node (this node's
    /// clock); `None`: not continuous.
    pub continuous_since: Option<SystemTime>,
    /// The newest heartbeat: when it arrived and how old it was then.
    pub beat: Option<(Instant, u64)>,
    /// The epoch and the last sequence number received in it.
    epoch: u64,
    last: u64,
}

impl LinkState {
    /// The newest heartbeat's age now: the relay's part plus the time since
    /// it arrived here (no clock is compared across nodes).
    pub fn beat_age_ms(&self) -> Option<u64> {
        self.beat
            .map(|(at, age)| age.saturating_add(at.elapsed().as_millis() as u64))
    }
}

/// A shared link state.
pub type Link = Arc<Mutex<LinkState>>;

/// Lock a link (a panic while holding it cannot leave it half-written).
pub fn lock(link: &Link) -> std::sync::MutexGuard<'_, LinkState> {
    link.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Recently applied `(key, stream sequence)` pairs: both relays deliver
/// every record, and the second copy is skipped. Bounded.
#[derive(Debug, Default)]
pub struct Seen {
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

const SEEN_MAX: usize = 65_536;

impl Seen {
    /// `true` the first time `(key, sequence)` is offered.
    fn first(&mut self, key: &str, sequence: &str) -> bool {
        let entry = (key.to_owned(), sequence.to_owned());
        if self.set.contains(&entry) {
            return false;
        }
        if self.order.len() >= SEEN_MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(entry.clone());
        self.order.push_back(entry);
        true
    }
}

/// What a link needs besides its slot.
#[derive(Clone)]
pub struct Context {
    pub store: TieredStore,
    pub secret: Arc<[u8]>,
    pub seen: Arc<Mutex<Seen>>,
    pub clock: fn() -> UnixMillis,
    /// This node's name for the relays ([`NODE_HEADER`]).
    pub node: Arc<str>,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The slot's holder changed: connect to the new one.
    SlotMoved,
    /// Anything else: reconnect after a pause.
    Failed(String),
}

/// Follow slot `slot` for as long as the task lives.
pub async fn follow(
    slot: usize,
    mut slots: watch::Receiver<Vec<SlotSeen>>,
    link: Link,
    cx: Context,
) {
    let mut failures = 0u32;
    loop {
        let target = slots
            .borrow_and_update()
            .get(slot)
            .and_then(|s| s.holder.clone());
        let Some(target) = target else {
            lock(&link).connected = false;
            let _ = slots.changed().await;
            continue;
        };
        match connect(&target, &mut slots, &link, &cx).await {
            End::SlotMoved => failures = 0,
            End::Failed(why) => {
                failures = failures.saturating_add(1);
                tracing::debug!(slot, url = %target.url, %why, "relay link ended");
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(4)));
                tokio::time::sleep(pause).await;
            }
        }
        lock(&link).connected = false;
    }
}

/// One connection to `target`'s feed, until it ends.
async fn connect(
    target: &edge_session_sync::RelaySlot,
    slots: &mut watch::Receiver<Vec<SlotSeen>>,
    link: &Link,
    cx: &Context,
) -> End {
    let (epoch, after) = {
        let state = lock(link);
        (state.epoch, state.last)
    };
    let nonce = frame::nonce();
    let mac = frame::subscribe_mac(&cx.secret, &nonce);
    let Some(rest) = target.url.strip_prefix("http://") else {
        return End::Failed(format!("not an http:// URL: {}", target.url));
    };
    let authority = rest.split('/').next().unwrap_or(rest).to_owned();
    let stream = match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return End::Failed(format!("connect: {err}")),
        Err(_) => return End::Failed("connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Lines>(TokioIo::new(stream)).await
    else {
        return End::Failed("handshake".into());
    };
    let driver = tokio::spawn(connection);
    let _stop_driver = AbortOnDrop(driver);
    let query = serde_urlencoded::to_string([
        ("after", after.to_string()),
        ("epoch", epoch.to_string()),
        ("nonce", nonce.clone()),
        ("mac", mac),
    ])
    .expect("plain pairs encode");
    let request = hyper::Request::get(format!("/feed?{query}"))
        .header(hyper::header::HOST, authority.as_str())
        .header(NODE_HEADER, &*cx.node)
        .body(Lines::once(""))
        .expect("a valid request");
    let response =
        match tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return End::Failed(format!("request: {err}")),
            Err(_) => return End::Failed("no answer within 5 s".into()),
        };
    if response.status() != hyper::StatusCode::OK {
        return End::Failed(format!("answered {}", response.status()));
    }
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let mut hello_seen = false;
    loop {
        let next = tokio::select! {
            next = std::future::poll_fn(|c| std::pin::Pin::new(&mut body).poll_frame(c)) => next,
            changed = slots.changed() => {
                if changed.is_err() {
                    return End::Failed("shutting down".into());
                }
                let now = slots.borrow().get(target.slot as usize).and_then(|s| s.holder.clone());
                if now.as_ref().is_none_or(|n| n.epoch != target.epoch || n.url != target.url) {
                    return End::SlotMoved;
                }
                continue;
            }
        };
        let data = match next {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(err)) => return End::Failed(format!("read: {err}")),
            None => return End::Failed("the relay closed the feed".into()),
        };
        buffer.extend_from_slice(&data);
        while let Some(at) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=at).collect();
            if let Err(end) = take(
                &line[..line.len() - 1],
                target,
                &nonce,
                &mut hello_seen,
                link,
                cx,
            )
            .await
            {
                return end;
            }
        }
        if buffer.len() > frame::MAX_LINE {
            return End::Failed("a frame line over the limit".into());
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Verify and act on one line.
async fn take(
    line: &[u8],
    target: &edge_session_sync::RelaySlot,
    nonce: &str,
    hello_seen: &mut bool,
    link: &Link,
    cx: &Context,
) -> Result<(), End> {
    let frame: Frame = match frame::open(&cx.secret, nonce, line) {
        Ok(frame) => frame,
        Err(why) => {
            metrics::counter!("edge_session_relay_frames_refused_total").increment(1);
            if why == Refused::Signature {
                tracing::warn!(url = %target.url, "relay frame refused: not signed with the fleet secret");
            }
            return Err(End::Failed(format!("frame refused: {why}")));
        }
    };
    if frame.e != target.epoch {
        // A deposed holder, or a slot read that is behind: not this epoch.
        return Err(End::Failed(format!(
            "epoch {} is not the slot's {}",
            frame.e, target.epoch
        )));
    }
    if !*hello_seen {
        let Body::Hello { resumed } = frame.body else {
            return Err(End::Failed("no hello first".into()));
        };
        *hello_seen = true;
        let mut state = lock(link);
        let continuous = resumed && state.epoch == frame.e && state.continuous_since.is_some();
        if !continuous {
            state.continuous_since = Some(SystemTime::now());
        }
        state.epoch = frame.e;
        state.last = frame.s;
        state.connected = true;
        return Ok(());
    }
    {
        let state = lock(link);
        if frame.s != state.last + 1 {
            return Err(End::Failed(format!(
                "gap: frame {} after {}",
                frame.s, state.last
            )));
        }
    }
    metrics::counter!("edge_session_relay_frames_total").increment(1);
    match frame.body {
        Body::Hello { .. } => return Err(End::Failed("a second hello".into())),
        Body::Beat { age } => lock(link).beat = Some((Instant::now(), age)),
        Body::Reset => lock(link).continuous_since = Some(SystemTime::now()),
        Body::Batch { inv } => {
            let batch = fresh(&inv, &cx.seen);
            if !batch.is_empty() {
                if let Err(err) = crate::coherence::apply(cx.store.clone(), batch, cx.clock).await {
                    // Not applied, and the relay will not send it again on
                    // this link: whatever was confirmed before is suspect.
                    tracing::warn!(%err, "relayed invalidations not applied; coverage restarts");
                    let mut state = lock(link);
                    state.continuous_since = None;
                    state.last = frame.s;
                    return Err(End::Failed("apply failed".into()));
                }
            }
        }
    }
    lock(link).last = frame.s;
    Ok(())
}

/// The invalidations of `inv` no link applied yet.
fn fresh(inv: &[frame::Relayed], seen: &Mutex<Seen>) -> Vec<Invalidation> {
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    inv.iter()
        .filter(|r| seen.first(&r.k, &r.q))
        .filter_map(|r| {
            let sid = frame::decode_key(&r.k)?;
            let kind = match (r.v, r.u) {
                (Some(ver), _) => InvalidationKind::VersionRaised { new_ver: Some(ver) },
                (None, true) => InvalidationKind::VersionRaised { new_ver: None },
                (None, false) => InvalidationKind::Removed,
            };
            Some(Invalidation {
                sid,
                kind,
                approximate_creation: None,
                sequence_number: r.q.clone(),
            })
        })
        .collect()
}

/// What a relay publishes for a follower's batch.
pub fn relayed(batch: &[Invalidation]) -> Vec<frame::Relayed> {
    batch
        .iter()
        .map(|i| {
            let (v, u) = match i.kind {
                InvalidationKind::VersionRaised { new_ver: Some(ver) } => (Some(ver), false),
                InvalidationKind::VersionRaised { new_ver: None } => (None, true),
                _ => (None, false),
            };
            frame::Relayed {
                k: frame::encode_key(&i.sid),
                v,
                u,
                q: i.sequence_number.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_is_applied_once_whichever_relay_brings_it() {
        let seen = Mutex::new(Seen::default());
        let batch = vec![Invalidation {
            sid: [3; 32],
            kind: InvalidationKind::Removed,
            approximate_creation: None,
            sequence_number: "100".into(),
        }];
        let relayed = relayed(&batch);
        assert_eq!(fresh(&relayed, &seen).len(), 1);
        assert!(fresh(&relayed, &seen).is_empty(), "the other relay's copy");
        let back = fresh(
            &[frame::Relayed {
                q: "101".into(),
                v: Some(4),
                ..relayed[0].clone()
            }],
            &seen,
        );
        assert_eq!(
            back[0].kind,
            InvalidationKind::VersionRaised { new_ver: Some(4) }
        );
    }
}

//! [`Hub`]: what a relay has published in its epoch, as a bounded ring of
//! signed-once JSON frames with dense sequence numbers, and a watch on the
//! newest one. Each subscriber's connection reads from it at its own pace;
//! one that falls more than the ring behind is cut and resubscribes, and is
//! told that it cannot resume.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::frame::{json, Body, Frame};

/// Frames a hub keeps for subscribers that reconnect. Each is one batch
/// (up to 1,000 invalidations) or one heartbeat; at a few hundred bytes
/// per batch under light load, the ring holds minutes of feed in a few MB.
pub const RING_FRAMES: usize = 16_384;

/// A relay's feed in one epoch.
#[derive(Debug)]
pub struct Hub {
    epoch: u64,
    ring: Mutex<Ring>,
    head: watch::Sender<u64>,
    ready: AtomicBool,
    cap: usize,
}

#[derive(Debug, Default)]
struct Ring {
    /// `(sequence, json)`, oldest first.
    frames: VecDeque<(u64, Arc<str>)>,
    /// The newest sequence number published (0: none yet).
    head: u64,
}

/// A subscriber asked to resume after frames the ring no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

impl Hub {
    /// An empty hub for `epoch`, keeping at most `cap` frames.
    pub fn new(epoch: u64, cap: usize) -> Arc<Hub> {
        Arc::new(Hub {
            epoch,
            ring: Mutex::new(Ring::default()),
            head: watch::channel(0).0,
            ready: AtomicBool::new(false),
            cap: cap.max(1),
        })
    }

    /// The epoch (the relay slot's fencing token).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the relay's stream position is taken, so the feed covers
    /// every write from now on: subscribers are served only then.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The position is taken.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publish `body` as the next frame.
    pub fn publish(&self, body: Body) {
        let mut ring = self.ring();
        let seq = ring.head + 1;
        let text: Arc<str> = json(&Frame {
            e: self.epoch,
            s: seq,
            body,
        })
        .into();
        ring.frames.push_back((seq, text));
        while ring.frames.len() > self.cap {
            ring.frames.pop_front();
        }
        ring.head = seq;
        drop(ring);
        self.head.send_replace(seq);
    }

    /// The newest sequence number published.
    pub fn head(&self) -> u64 {
        self.ring().head
    }

    /// Every frame after `after`, oldest first; [`Lost`] when the ring no
    /// longer holds the one right after it.
    pub fn since(&self, after: u64) -> Result<Vec<(u64, Arc<str>)>, Lost> {
        let ring = self.ring();
        if after > ring.head {
            return Err(Lost);
        }
        let first = ring.frames.front().map_or(ring.head + 1, |(s, _)| *s);
        if after + 1 < first {
            return Err(Lost);
        }
        Ok(ring
            .frames
            .iter()
            .filter(|(s, _)| *s > after)
            .cloned()
            .collect())
    }

    /// A receiver that wakes when a frame is published.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_dense_and_a_subscriber_past_the_ring_is_told_it_lost_some() {
        let hub = Hub::new(7, 3);
        assert_eq!(hub.since(0), Ok(vec![]));
        for age in 1..=5 {
            hub.publish(Body::Beat { age });
        }
        assert_eq!(hub.head(), 5);
        let got: Vec<u64> = hub.since(2).unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(got, vec![3, 4, 5]);
        assert_eq!(hub.since(1), Err(Lost), "frame 2 is gone");
        assert_eq!(hub.since(5), Ok(vec![]));
        assert_eq!(hub.since(6), Err(Lost), "from a future the hub never had");
        assert!(hub.since(4).unwrap()[0].1.contains("\"e\":7"));
    }
}

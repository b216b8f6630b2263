//! A test seam, built only with the `test-support` feature (which the
//! package's own tests turn on): a regenerate held between its provisional
//! tombstone and its DynamoDB transaction, so a test can land a logout in
//! that window on demand. Each store has its own holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::TieredStore;
use crate::token::StorageKey;

/// A regenerate held (see [`TieredStore::hold_regenerate`]).
struct Hold {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The holds armed on one store.
#[derive(Default)]
pub(super) struct Holds {
    /// Whether any is armed (the common case costs one atomic load).
    armed: AtomicBool,
    by_key: Mutex<HashMap<StorageKey, Hold>>,
}

impl Holds {
    /// Wait here if a hold is armed for `key`.
    pub(super) async fn pause_if_held(&self, key: &StorageKey) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let hold = self.by_key.lock().ok().and_then(|mut h| h.remove(key));
        if let Some(hold) = hold {
            let _ = hold.reached.send(());
            let _ = hold.release.await;
        }
    }
}

/// The two ends of a held regenerate: `reached` resolves once it has written
/// its provisional tombstone; sending on (or dropping) `release` lets its
/// transaction go.
pub struct RegenerateHold {
    /// Resolves once the regenerate wrote its provisional tombstone.
    pub reached: oneshot::Receiver<()>,
    /// Lets its transaction go.
    pub release: oneshot::Sender<()>,
}

impl TieredStore {
    /// The next regenerate of the session under `old` on this store stops
    /// between its provisional tombstone and its DynamoDB transaction until
    /// released.
    pub fn hold_regenerate(&self, old: StorageKey) -> RegenerateHold {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let holds = &self.inner.holds;
        if let Ok(mut by_key) = holds.by_key.lock() {
            by_key.insert(
                old,
                Hold {
                    reached: reached_tx,
                    release: release_rx,
                },
            );
        }
        holds.armed.store(true, Ordering::Relaxed);
        RegenerateHold { reached, release }
    }
}

//! Work a store starts and does not wait for (the eviction past
//! `session.max_per_user` after a login, the delete of a session found
//! expired), and [`TieredStore::close`], which waits for it before it lets
//! go of the cache.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::task::JoinHandle;

use super::{Error, TieredStore};
use crate::cache::CacheError;

/// The background tasks of one store.
#[derive(Debug)]
pub(super) struct Background {
    /// Tasks not seen finished yet (finished ones are dropped at each spawn,
    /// so this holds about as many as are running); `None` once `close` has
    /// begun: no new task starts.
    running: Mutex<Option<Vec<JoinHandle<()>>>>,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            running: Mutex::new(Some(Vec::new())),
        }
    }
}

impl TieredStore {
    /// Run `work` in the background, unless the store is closing (then it is
    /// dropped: each caller's work is an optimisation another path covers).
    pub(super) fn spawn_background(&self, work: impl Future<Output = ()> + Send + 'static) {
        let running = &self.inner.background.running;
        let mut guard = running.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(running) = guard.as_mut() else {
            return;
        };
        running.retain(|task| !task.is_finished());
        running.push(tokio::spawn(work));
    }

    /// Close the store: wait for the background work it started, then close
    /// its cache ([`SledCache::close`](crate::cache::SledCache::close)):
    /// flushed, and sled's lock on the directory released, so a store can be
    /// opened on it again at once.
    ///
    /// Every other handle to this store (its clones) must be dropped first:
    /// with one still open this returns an error once the background work
    /// has stopped, and the cache stays open until the last handle goes.
    pub async fn close(self) -> Result<(), Error> {
        let running = &self.inner.background.running;
        let tasks = running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        for task in tasks {
            // A task that panicked has stopped all the same.
            let _ = task.await;
        }
        match std::sync::Arc::try_unwrap(self.inner) {
            Ok(inner) => Ok(inner.cache.close().await?),
            Err(inner) => Err(CacheError::in_use(std::sync::Arc::strong_count(&inner) - 1).into()),
        }
    }
}

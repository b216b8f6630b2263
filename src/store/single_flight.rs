//! [`SingleFlight`]: one call per key at a time; concurrent callers for the
//! same key wait for the first one's answer instead of making their own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

use crate::token::StorageKey;

/// The calls in flight, by key.
pub(super) struct SingleFlight<T> {
    calls: Mutex<HashMap<StorageKey, Arc<OnceCell<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<StorageKey, Arc<OnceCell<T>>>> {
        self.calls.lock().expect("inflight map poisoned by a panic")
    }

    /// The answer of `call` for `key`, or of the call for `key` already in
    /// flight. A call that started after this one's answer makes its own.
    pub(super) async fn run<F>(&self, key: StorageKey, call: impl FnOnce() -> F) -> T
    where
        F: Future<Output = T>,
    {
        let cell = Arc::clone(self.lock().entry(key).or_default());
        let result = cell
            .get_or_init(|| async {
                let result = call().await;
                // Later calls must run afresh, not reuse this answer.
                let mut calls = self.lock();
                if calls.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    calls.remove(&key);
                }
                result
            })
            .await;
        result.clone()
    }
}

//! [`SingleFlight`]: one call per key at a time; concurrent callers for the
//! same key wait for the first one's answer instead of making their own.
//!
//! An entry lives while a call for its key is in flight: it is removed when
//! the call answers, or by the last caller's drop guard when every caller
//! was dropped mid-call (a client gone, a timeout). So the map holds at most
//! one entry per load in flight. Worst case: one entry per concurrent miss,
//! which the HTTP server's connection limit bounds (each connection carries
//! one request at a time); an entry is a 32-byte key, a pointer and the
//! shared cell (≈ 100 bytes with the map's overhead), plus the answer (the
//! item, ≤ 400 KB in DynamoDB, ≈ 1 KB for a session) only between its
//! arrival and the entry's removal.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

use crate::token::StorageKey;

type Cell<T> = Arc<OnceCell<T>>;

/// The calls in flight, by key.
pub(super) struct SingleFlight<T> {
    calls: Mutex<HashMap<StorageKey, Cell<T>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

/// One caller's hold on an entry: the last one dropped removes the entry
/// (if the call never answered), as [`Revoking`](super::revoking::Revoking)
/// does for the revoking set.
struct Caller<'a, T> {
    flight: &'a SingleFlight<T>,
    key: StorageKey,
    cell: Option<Cell<T>>,
}

impl<T> Drop for Caller<'_, T> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else { return };
        if let Ok(mut calls) = self.flight.calls.lock() {
            // Holders: the map and this caller. Others clone under this lock.
            if calls.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &cell))
                && Arc::strong_count(&cell) == 2
            {
                calls.remove(&self.key);
            }
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<StorageKey, Cell<T>>> {
        self.calls.lock().expect("inflight map poisoned by a panic")
    }

    /// The answer of `call` for `key`, or of the call for `key` already in
    /// flight. A call that started after this one's answer makes its own.
    /// If the caller running the call is dropped, a waiting caller runs it.
    pub(super) async fn run<F>(&self, key: StorageKey, call: impl FnOnce() -> F) -> T
    where
        F: Future<Output = T>,
    {
        let caller = Caller {
            flight: self,
            key,
            cell: Some(Arc::clone(self.lock().entry(key).or_default())),
        };
        let cell = caller.cell.as_ref().expect("set above");
        let result = cell
            .get_or_init(|| async {
                let result = call().await;
                // Later calls must run afresh, not reuse this answer.
                let mut calls = self.lock();
                if calls.get(&key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                    calls.remove(&key);
                }
                result
            })
            .await;
        result.clone()
    }

    /// Entries in the map (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> StorageKey {
        StorageKey([b; 32])
    }

    #[tokio::test]
    async fn a_cancelled_call_leaves_no_entry() {
        let flight = SingleFlight::<u32>::default();
        // A call that never answers, dropped after it started.
        let stuck = flight.run(key(1), std::future::pending::<u32>);
        tokio::select! {
            biased;
            _ = stuck => unreachable!("pending never answers"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(flight.len(), 0, "the dropped call's entry is gone");

        // Two callers share a call; the first is dropped; the second runs
        // the call itself and the entry goes once it answers.
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let mut first = Box::pin(flight.run(key(2), std::future::pending::<u32>));
        assert!(futures_poll_once(first.as_mut()).await.is_none());
        let second = flight.run(key(2), || async { rx.await.unwrap() });
        tokio::pin!(second);
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        assert_eq!(flight.len(), 1);
        drop(first);
        assert_eq!(flight.len(), 1, "the waiting caller still holds it");
        tx.send(7).unwrap();
        assert_eq!(second.await, 7);
        assert_eq!(flight.len(), 0);

        // An answered call leaves no entry either.
        assert_eq!(flight.run(key(3), || async { 3 }).await, 3);
        assert_eq!(flight.len(), 0);
    }

    /// Poll `fut` once: its output if it was ready.
    async fn futures_poll_once<F: Future + Unpin>(mut fut: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut fut).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}

//! Group commit: concurrent flushes share one fsync.
//!
//! A caller takes a ticket after its writes, then queues on one lock (FIFO).
//! The holder flushes on behalf of every ticket handed out before it started,
//! so the callers queued behind it find their writes already durable and
//! return without an fsync of their own.
//!
//! Why a ticket taken before the flush starts is covered: the caller's
//! writes happen before it takes the ticket; the flusher reads the ticket
//! counter after taking the lock and only then starts `flush`, which makes
//! every write already in sled's buffers durable. A failed flush covers
//! nothing: the next caller in line flushes again.

use std::sync::atomic::{AtomicU64, Ordering};

/// The shared state of the flushes of one sled database.
#[derive(Default)]
pub struct GroupCommit {
    /// Tickets handed out.
    issued: AtomicU64,
    /// Held by the flush in progress; its value is the highest ticket a
    /// completed flush covers.
    durable: tokio::sync::Mutex<u64>,
}

impl GroupCommit {
    /// Make every write the caller made before this call durable, with
    /// `flush` (blocking: run on the blocking pool) or by waiting for a
    /// flush that covers it. Returns whether this call flushed.
    pub async fn flush<E>(
        &self,
        flush: impl FnOnce() -> Result<(), E> + Send + 'static,
        join_error: impl FnOnce(tokio::task::JoinError) -> E,
    ) -> Result<bool, E>
    where
        E: Send + 'static,
    {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self.durable.lock().await;
        if *durable >= ticket {
            return Ok(false);
        }
        let covers = self.issued.load(Ordering::SeqCst);
        tokio::task::spawn_blocking(flush)
            .await
            .map_err(join_error)??;
        *durable = covers;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn callers_queued_behind_a_flush_share_the_next_one() {
        let group = Arc::new(GroupCommit::default());
        let flushes = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (group, flushes) = (Arc::clone(&group), Arc::clone(&flushes));
            tasks.push(tokio::spawn(async move {
                group
                    .flush(
                        move || {
                            flushes.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            Ok::<(), String>(())
                        },
                        |e| e.to_string(),
                    )
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        // 32 callers at once: the first flush runs alone, the rest queue
        // behind it and share at most a few more.
        assert!((1..=4).contains(&n), "{n} flushes for 32 callers");
    }

    #[tokio::test]
    async fn a_failed_flush_covers_nothing() {
        let group = GroupCommit::default();
        let failed = group
            .flush(|| Err::<(), _>("disk full".to_owned()), |e| e.to_string())
            .await;
        assert!(failed.is_err());
        let again = group
            .flush(|| Ok::<(), String>(()), |e| e.to_string())
            .await;
        assert_eq!(again, Ok(true), "the next caller flushes again");
    }

    #[tokio::test]
    async fn a_caller_after_a_flush_flushes_again() {
        let group = GroupCommit::default();
        assert_eq!(
            group
                .flush(|| Ok::<(), String>(()), |e| e.to_string())
                .await,
            Ok(true)
        );
        assert_eq!(
            group
                .flush(|| Ok::<(), String>(()), |e| e.to_string())
                .await,
            Ok(true)
        );
    }
}

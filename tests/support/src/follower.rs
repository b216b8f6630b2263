//! Followers under test: a follower (of the stream or the journal) run on a
//! task of its own whose sink forwards every batch to the test, and the
//! waits on it (its first read, its invalidations).
//!
//! Every wait gives up after [`WAIT`] with a panic that says what it was
//! waiting for.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use edge_session::sync::{DynamoError, FollowerStatus, Invalidation};
use tokio::sync::{mpsc, oneshot};

/// How long any wait here waits.
pub const WAIT: Duration = Duration::from_secs(15);

/// What a test follower hands its batches to.
pub type Sink = Box<
    dyn FnMut(Vec<Invalidation>) -> Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>>
        + Send,
>;

/// The future a test follower runs until.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running follower (of the stream or the journal) whose sink forwards
/// every batch to `batches`.
pub struct Running {
    /// Stops the follower (its shutdown future completes).
    pub stop: oneshot::Sender<()>,
    /// The follower's `run`.
    pub task: tokio::task::JoinHandle<Result<(), DynamoError>>,
    /// The follower's status.
    pub status: FollowerStatus,
    /// Every batch the follower handed over, in order.
    pub batches: mpsc::UnboundedReceiver<Vec<Invalidation>>,
}

impl Running {
    /// Start `run` (a follower's `run`, given the sink and the shutdown).
    pub fn spawn<F, Fut>(status: FollowerStatus, run: F) -> Running
    where
        F: FnOnce(Sink, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), DynamoError>> + Send + 'static,
    {
        let (tx, batches) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let sink: Sink = Box::new(move |batch: Vec<Invalidation>| {
            let tx = tx.clone();
            Box::pin(async move { tx.send(batch).map_err(|_| "test receiver gone") })
        });
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(sink, shutdown));
        Running {
            stop,
            task,
            status,
            batches,
        }
    }

    /// Wait until the follower's first read succeeded (see [`polled`]).
    pub async fn ready(&self) {
        polled(&self.status).await;
    }

    /// The next `n` invalidations, across batches.
    pub async fn take(&mut self, n: usize) -> Vec<Invalidation> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(WAIT, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} invalidations arrived", out.len()))
                .expect("follower running");
            out.extend(batch);
        }
        out
    }

    /// Invalidations until every key whose first byte is in `want` has
    /// arrived (others, such as repeats after a restart, are kept too).
    pub async fn until(&mut self, want: &[u8]) -> Vec<Invalidation> {
        let mut out: Vec<Invalidation> = Vec::new();
        while !want.iter().all(|w| out.iter().any(|i| i.sid[0] == *w)) {
            let batch = tokio::time::timeout(WAIT, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("waiting for {want:?}, got {out:?}"))
                .expect("follower running");
            out.extend(batch);
        }
        out
    }

    /// Stop the follower; it must return `Ok` promptly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the follower stops promptly")
            .expect("the follower task did not panic");
        result.expect("run returns Ok on shutdown");
    }
}

/// Wait until a follower's first read succeeded (so a stream's LATEST
/// iterator, or the journal's window, is in place before the test writes).
pub async fn polled(status: &FollowerStatus) {
    tokio::time::timeout(WAIT, async {
        while status.last_poll_ok_at().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the follower polls within the deadline");
}
